"""Ingest files xarray can open (NetCDF, Zarr, ...) as datasets: ``Atlas.ingest`` and ``atlas ingest``."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .._meta import validate_name
from .._progress import Progress, ProgressArg, check
from ..errors import IngestError, one_line

if TYPE_CHECKING:
    from ..store import Atlas

log = logging.getLogger(__name__)


def expand(patterns: Sequence[str]) -> list[str]:
    """Files matching any pattern (``**`` recurses), in pattern order, each pattern sorted."""
    seen: dict[str, None] = {}
    for pat in patterns:
        for p in sorted(glob.glob(os.path.expanduser(os.fspath(pat)), recursive=True)):
            if os.path.isfile(p):
                seen.setdefault(p, None)
    return list(seen)


def dataset_name(path: str, how: str) -> str:
    """The dataset name of a file: its name without (``"stem"``) or with (``"name"``) the extension."""
    base = os.path.basename(path)
    if how == "name":
        return base
    if how == "stem":
        return os.path.splitext(base)[0]
    raise ValueError(f"name_from must be 'stem' or 'name', got {how!r}")


#: netCDF-C and HDF5 are not thread-safe and xarray does not lock all of their calls
#: (pydata/xarray#9779, #7079; Unidata/netcdf4-python#844): concurrent opens segfault. Files
#: of any engine not known to be thread-safe are therefore opened and loaded one at a time;
#: reading the next file still overlaps the compression of the previous ones.
_SERIAL_OPEN = threading.Lock()
_THREAD_SAFE_ENGINES = frozenset({"scipy", "zarr", "atlas"})


def _engine_for(path: str, engine: Optional[str]) -> Optional[str]:
    if engine:
        return engine
    try:
        from xarray.backends.plugins import guess_engine

        guessed = guess_engine(path)
    except Exception:  # noqa: BLE001 - open_dataset will report the real problem
        return None
    return guessed if isinstance(guessed, str) else None


def load(path: str, engine: Optional[str]) -> Any:
    """Open ``path`` with xarray, load it into memory and close the file (in a worker thread)."""
    import xarray as xr

    safe = _engine_for(path, engine) in _THREAD_SAFE_ENGINES
    with contextlib.nullcontext() if safe else _SERIAL_OPEN:
        with xr.open_dataset(path, engine=engine) as ds:
            return ds.load()


def ingest_file(target: Any, path: str, name: str, engine: Optional[str] = None, **options: Any) -> list[str]:
    """Open ``path`` and add it to ``target`` (a store, or a staged writer in a worker process)
    as dataset ``name``; returns the names added. ``IngestError`` names the file.

    The per-file step of a parallel ingest (``integrations._distributed``); ``options`` are
    the ingest options that shape one file's opening and adding (none are defined here yet).
    """
    if options:
        raise TypeError(f"unknown ingest option(s): {', '.join(sorted(options))}")
    try:
        ds = load(path, engine)
    except Exception as e:
        raise IngestError(f"cannot open {path!r}: {one_line(e)}; nothing was ingested") from e
    try:
        target.add_xr_dataset(ds, name)
    except Exception as e:
        raise IngestError(f"cannot ingest {path!r} as dataset {name!r}: {one_line(e)}; nothing was ingested") from e
    return [name]


def refuse_taken(store: "Atlas", names: Sequence[str]) -> None:
    """``FileExistsError`` listing the names the store already has."""
    taken = [n for n in names if store.dataset_exists(n)]
    if taken:
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise FileExistsError(f"the store already has dataset(s) {', '.join(map(repr, taken[:3]))}{more}; "
                              "nothing was ingested")


def plan(files: Sequence[str], name_from: str = "stem") -> tuple[list[str], list[str]]:
    """The files matching ``files`` and their dataset names, checked (no store is touched)."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    paths = expand(files)
    if not paths:
        raise FileNotFoundError(f"no files match {' '.join(repr(os.fspath(p)) for p in files)}")
    names = [dataset_name(p, name_from) for p in paths]
    first: dict[str, str] = {}
    for p, n in zip(paths, names):
        validate_name(n, "dataset")
        if n in first:
            raise ValueError(f"{first[n]!r} and {p!r} both map to dataset name {n!r} (name_from={name_from!r})")
        first[n] = p
    return paths, names


def ingest(store: "Atlas", files: Sequence[str], name_from: str = "stem", engine: Optional[str] = None,
           jobs: Optional[int] = None, progress: ProgressArg = False) -> list[str]:
    """Add every file matching ``files`` as one dataset; all or nothing. Returns the names added."""
    check(progress)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    paths, names = plan(files, name_from)
    refuse_taken(store, names)
    jobs = jobs or min(8, os.cpu_count() or 1)
    log.info("ingesting %d files into %s with %d reader threads", len(paths), store.location, jobs)
    todo = iter(zip(paths, names))
    window: deque[tuple[str, str, Future[Any]]] = deque()
    added: list[str] = []
    with Progress(progress, len(paths), "ingest", "file") as bar, \
            ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="atlas-ingest") as ex:

        def submit() -> None:
            nxt = next(todo, None)
            if nxt is not None:
                window.append((nxt[0], nxt[1], ex.submit(load, nxt[0], engine)))

        try:
            for _ in range(2 * jobs):  # bounded read-ahead: memory stays ~2*jobs files
                submit()
            while window:
                path, name, fut = window.popleft()
                try:
                    ds = fut.result()
                except Exception as e:
                    raise IngestError(f"cannot open {path!r}: {one_line(e)}; nothing was ingested") from e
                submit()
                try:
                    store.add_xr_dataset(ds, name)
                except Exception as e:
                    raise IngestError(f"cannot ingest {path!r} as dataset {name!r}: {one_line(e)}; "
                                      "nothing was ingested") from e
                added.append(name)
                log.debug("added %s as %r", path, name)
                bar.update()
        except BaseException:
            for _, _, f in window:
                f.cancel()
            for name in reversed(added):  # all or nothing: drop what this call added (never flushed)
                store.delete_dataset(name)
            raise
    return added
