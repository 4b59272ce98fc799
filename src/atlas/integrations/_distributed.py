"""Parallel ingest: worker processes open, encode and write files; one commit publishes them.

``Atlas.ingest(files, workers=N)`` runs a local pool of N processes (forked from a fork
server, never from this threaded process); ``Atlas.ingest(files, client=Client)`` runs on a ``dask.distributed``
cluster. Files go out in contiguous batches; each batch is one task with one staged writer
(``atlas._staged``), so each task writes one segment per array name. The coordinator
reports progress as batches finish, then commits every result at once in file order (the
store gets the same datasets, in the same order, as a serial ingest). All or nothing: if any
file fails, nothing is committed and the files the workers wrote are deleted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Generator, Optional, Sequence

from .. import _staged
from .._progress import Progress, ProgressArg, check
from ..errors import IngestError, one_line
from . import _ingest

if TYPE_CHECKING:
    from ..store import Atlas

log = logging.getLogger(__name__)

#: at most this many files per task (a task's files share its segments; smaller tasks balance better)
MAX_BATCH = 32
#: about this many tasks per worker (progress steps and load balance)
TASKS_PER_WORKER = 4

#: modules the fork server imports once, so worker processes start without importing them
PRELOAD = ["atlas.integrations._distributed", "xarray", "netCDF4"]

Batch = list[tuple[str, str]]


def batches(paths: Sequence[str], names: Sequence[str], workers: int) -> list[Batch]:
    """Contiguous batches of ``(path, name)``: about ``TASKS_PER_WORKER`` per worker, at most ``MAX_BATCH`` files."""
    size = max(1, min(MAX_BATCH, math.ceil(len(paths) / (workers * TASKS_PER_WORKER))))
    items = list(zip(paths, names))
    return [items[i:i + size] for i in range(0, len(items), size)]


def ingest_batch(stage: _staged.Stage, batch: Batch, engine: Optional[str],
                 options: dict[str, Any]) -> tuple[_staged.StagedResult, _ingest.IngestResult]:
    """The task a worker runs: one staged writer for the batch's files; its result, and the
    names added with the files refused (``on_error="skip"``)."""
    w = stage.writer()
    out = _ingest.IngestResult()
    out.refused = []
    for path, name in batch:
        one = _ingest.ingest_file(w, path, name, engine, **options)
        out.extend(one)
        out.refused.extend(one.refused)
    return w.finish(), out


def ingest_parallel(store: "Atlas", files: Sequence[str], name_from: str = "stem", engine: Optional[str] = None,
                    jobs: Optional[int] = None, progress: ProgressArg = False, *, workers: Optional[int] = None,
                    client: Any = None, open_kwargs: Optional[dict[str, Any]] = None, groups: str = "root",
                    chunks: Optional[dict[str, Any]] = None, on_error: str = "raise") -> _ingest.IngestResult:
    """``Atlas.ingest`` with ``workers=`` or ``client=``; the options reach each file's ``ingest_file``."""
    check(progress)
    if workers is not None and client is not None:
        raise ValueError("pass workers= (a local process pool) or client= (dask.distributed), not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if client is not None and not (hasattr(client, "submit") and hasattr(client, "nthreads")):
        raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}: {client!r}")
    if jobs is not None:
        raise ValueError("jobs= sets the reader threads of a serial ingest; with workers= or client= each worker "
                         "opens one file at a time")
    options = {"open_kwargs": open_kwargs, "groups": groups, "on_error": on_error,
               "fixed": _ingest.check_options(groups, on_error, open_kwargs, chunks)}
    paths, names = _ingest.plan(files, name_from)
    _ingest.refuse_taken(store, names)
    nworkers = workers if workers is not None else max(1, sum(client.nthreads().values()))
    work = batches(paths, names, nworkers)
    stage = store.stage()
    log.info("ingesting %d files into %s: %d tasks on %d %s", len(paths), store.location, len(work), nworkers,
             "processes" if workers is not None else "dask threads")
    done: dict[int, tuple[_staged.StagedResult, _ingest.IngestResult]] = {}
    try:
        with Progress(progress, len(paths), "ingest", "file") as bar:
            run = _run_pool(stage, work, engine, options, workers) if workers is not None else \
                _run_dask(stage, work, engine, options, client)
            with contextlib.closing(run):  # on any error, the workers stop before their files are deleted
                for i, out in run:
                    done[i] = out
                    bar.update(len(work[i]))
        results = [done[i][0] for i in range(len(work))]
        store.commit_staged(results)
    except BaseException:
        try:
            n = stage.discard()
            log.info("ingest failed: deleted %d staged files", n)
        except Exception as e:  # noqa: BLE001 - the ingest error matters more; compact() reclaims the rest
            log.warning("could not delete the staged files of a failed ingest (compact() reclaims them): %s", e)
        raise
    try:
        _staged.sweep_after_commit(stage, results)  # files of tasks that were retried
    except Exception as e:  # noqa: BLE001 - committed already; compact() reclaims orphans
        log.warning("could not delete orphan staged files (compact() reclaims them): %s", e)
    added = _ingest.IngestResult(n for i in range(len(work)) for n in done[i][1])
    added.refused = [r for i in range(len(work)) for r in done[i][1].refused]
    for path, reason in added.refused:
        log.warning("skipped %s: %s", path, reason)
    return added


def _run_pool(stage: _staged.Stage, work: list[Batch], engine: Optional[str], options: dict[str, Any],
              workers: int) -> Generator[tuple[int, tuple[_staged.StagedResult, _ingest.IngestResult]], None, None]:
    """Batches on a local process pool; yields ``(batch number, result)`` as they finish."""
    ex = ProcessPoolExecutor(max_workers=min(workers, len(work)), mp_context=_context())
    futs: dict[Future[Any], int] = {ex.submit(ingest_batch, stage, b, engine, options): i for i, b in enumerate(work)}
    try:
        pending = set(futs)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                yield futs[f], _result(f, work[futs[f]])
    finally:
        # on error: drop the queued tasks and wait for the running ones, so that no worker
        # still writes files when the caller deletes them
        ex.shutdown(wait=True, cancel_futures=True)


def _context() -> Any:
    """Worker processes never fork this (maybe threaded) process: they fork from a server
    that imported atlas and xarray once (the first pool of a process starts it), or are
    spawned where there is no fork server."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)  # no effect once the server runs
        return ctx
    return multiprocessing.get_context("spawn")


def _result(f: "Future[Any]", batch: Batch) -> Any:
    try:
        return f.result()
    except BrokenProcessPool as e:
        raise IngestError(f"a worker process died while ingesting files {batch[0][0]!r} to {batch[-1][0]!r} "
                          f"({one_line(e)}); nothing was ingested") from e


def _run_dask(stage: _staged.Stage, work: list[Batch], engine: Optional[str], options: dict[str, Any],
              client: Any) -> Generator[tuple[int, tuple[_staged.StagedResult, _ingest.IngestResult]], None, None]:
    """Batches as tasks of a dask.distributed client; yields ``(batch number, result)`` as they finish."""
    from distributed import as_completed

    futs = [client.submit(ingest_batch, stage, b, engine, options, pure=False, key=f"atlas-ingest-{stage.token}-{i}")
            for i, b in enumerate(work)]
    number = {f.key: i for i, f in enumerate(futs)}
    try:
        for f in as_completed(futs):
            i = number[f.key]
            try:
                out = f.result()
            except IngestError:
                raise
            except Exception as e:
                if type(e).__name__ == "KilledWorker":
                    raise IngestError(f"dask workers died while ingesting files {work[i][0][0]!r} to "
                                      f"{work[i][-1][0]!r} ({one_line(e)}); nothing was ingested") from e
                raise
            yield i, out
    finally:
        client.cancel([f for f in futs if not f.done()])  # tasks already running finish on their own
