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
from ._chunking import check_chunks, chunk_shape

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


def load(path: str, engine: Optional[str], open_kwargs: Optional[dict[str, Any]] = None,
         groups: str = "root") -> list[tuple[str, Any]]:
    """Open ``path`` with xarray, load it into memory and close the file (in a worker thread).

    Returns ``[(group path, dataset), ...]``: the root group alone (``groups="root"``) or
    every group of the file (``"all"``), root first.
    """
    import xarray as xr

    kw = dict(open_kwargs or {})
    safe = _engine_for(path, engine) in _THREAD_SAFE_ENGINES
    with contextlib.nullcontext() if safe else _SERIAL_OPEN:
        if groups == "all" and _has_groups(path, engine):
            tree = xr.open_groups(path, engine=engine, **kw)
            try:
                return [(g, ds.load()) for g, ds in tree.items()]
            finally:
                for ds in tree.values():
                    ds.close()
        with xr.open_dataset(path, engine=engine, **kw) as ds:
            ds = ds.load()
        if not ds.variables and groups == "root" and _has_groups(path, engine):
            raise ValueError("the root group is empty and the file has groups; pass groups='all' (CLI --groups all)")
        return [("/", ds)]


def _has_groups(path: str, engine: Optional[str]) -> bool:
    """Whether the file has groups below its root (False for formats without groups)."""
    eng = _engine_for(path, engine)
    if eng not in ("netcdf4", "h5netcdf"):
        return False
    try:
        if eng == "netcdf4":
            import netCDF4

            with netCDF4.Dataset(path) as nc:
                return bool(nc.groups)
        import h5netcdf  # type: ignore[import-not-found,unused-ignore]

        with h5netcdf.File(path, "r") as f:
            return bool(f.groups)
    except ImportError:
        return False


def group_name(name: str, group: str) -> str:
    """The dataset name of a group: the file's name for the root, ``name.a.b`` for group ``/a/b``."""
    parts = [p for p in group.split("/") if p]
    return ".".join([name, *parts])


def ingest_file(target: Any, path: str, name: str, engine: Optional[str] = None,
                open_kwargs: Optional[dict[str, Any]] = None, groups: str = "root",
                fixed: Optional[dict[str, Any]] = None, on_error: str = "raise") -> "IngestResult":
    """Open ``path`` and add it to ``target`` (a store, or a staged writer in a worker process)
    as dataset ``name`` (its groups as ``name.group``); the per-file step of a parallel ingest.

    Options as checked by :func:`check_options`. Returns the names added, with ``refused``
    listing the file if it was skipped (``on_error="skip"``); else ``IngestError`` names it.
    """
    out = IngestResult()
    out.refused = []
    try:
        parts = load(path, engine, open_kwargs, groups)
    except Exception as e:
        if on_error == "raise":
            raise IngestError(f"cannot open {path!r}: {one_line(e)}; nothing was ingested") from e
        _refuse(out, path, f"cannot open: {one_line(e)}")
        return out
    _add_file(target, path, name, parts, fixed or {}, on_error, out)
    return out


def check_options(groups: str, on_error: str, open_kwargs: Optional[dict[str, Any]],
                  chunks: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Check the ingest options (the right exception, naming the value); returns the fixed chunk sizes."""
    if groups not in ("root", "all"):
        raise ValueError(f"groups must be 'root' or 'all', got {groups!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if open_kwargs is not None and not isinstance(open_kwargs, dict):
        raise TypeError(f"open_kwargs must be a dict of xarray.open_dataset keywords, got {type(open_kwargs).__name__}")
    if open_kwargs and ("engine" in open_kwargs or "chunks" in open_kwargs):
        raise ValueError("open_kwargs: pass engine= to ingest itself; chunks= sets the stored chunking")
    return check_chunks(chunks)


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


class IngestResult(list):  # type: ignore[type-arg]
    """The names of the datasets added (a list), and ``refused``: ``[(file, reason), ...]``
    of the files skipped with ``on_error="skip"``."""

    refused: list[tuple[str, str]]


def ingest(store: "Atlas", files: Sequence[str], name_from: str = "stem", engine: Optional[str] = None,
           jobs: Optional[int] = None, progress: ProgressArg = False, open_kwargs: Optional[dict[str, Any]] = None,
           groups: str = "root", chunks: Optional[dict[str, Any]] = None, on_error: str = "raise") -> IngestResult:
    """Add every file matching ``files`` as datasets; see :meth:`atlas.Atlas.ingest`."""
    check(progress)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    fixed = check_options(groups, on_error, open_kwargs, chunks)
    paths, names = plan(files, name_from)
    refuse_taken(store, names)
    jobs = jobs or min(8, os.cpu_count() or 1)
    log.info("ingesting %d files into %s with %d reader threads", len(paths), store.location, jobs)
    todo = iter(zip(paths, names))
    window: deque[tuple[str, str, Future[Any]]] = deque()
    added = IngestResult()
    added.refused = []
    with Progress(progress, len(paths), "ingest", "file") as bar, \
            ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="atlas-ingest") as ex:

        def submit() -> None:
            nxt = next(todo, None)
            if nxt is not None:
                window.append((nxt[0], nxt[1], ex.submit(load, nxt[0], engine, open_kwargs, groups)))

        try:
            for _ in range(2 * jobs):  # bounded read-ahead: memory stays ~2*jobs files
                submit()
            while window:
                path, name, fut = window.popleft()
                try:
                    parts = fut.result()
                except Exception as e:
                    if on_error == "raise":
                        raise IngestError(f"cannot open {path!r}: {one_line(e)}; nothing was ingested") from e
                    _refuse(added, path, f"cannot open: {one_line(e)}")
                    parts = []
                submit()
                if parts:
                    _add_file(store, path, name, parts, fixed, on_error, added)
                bar.update()
        except BaseException:
            for _, _, f in window:
                f.cancel()
            for n in reversed(added):  # all or nothing: drop what this call added (never flushed)
                store.delete_dataset(n)
            raise
    return added


def _refuse(result: IngestResult, path: str, reason: str) -> None:
    result.refused.append((path, reason))
    log.warning("skipped %s: %s", path, reason)


def _add_file(store: Any, path: str, name: str, parts: list[tuple[str, Any]], fixed: dict[str, Any],
              on_error: str, added: IngestResult) -> None:
    """Add the groups of one file (all of them or, on error, none)."""
    mine: list[str] = []
    try:
        for group, ds in parts:
            gname = group_name(name, group)
            validate_name(gname, "dataset")
            if store.dataset_exists(gname):
                raise FileExistsError(f"dataset {gname!r} already exists")
            missing = [d for d in fixed if d not in ds.dims and all(d not in p.dims for _, p in parts)]
            if missing:
                raise ValueError(f"chunks names dimension(s) {', '.join(map(repr, missing))} that the file does not have")
            store.add_xr_dataset(ds, gname, chunks={v: chunk_shape(ds[v].variable, fixed) for v in ds.variables})
            mine.append(gname)
            log.debug("added %s (group %s) as %r", path, group, gname)
    except Exception as e:
        for n in reversed(mine):
            store.delete_dataset(n)
        where = f"as dataset {name!r}" if len(parts) == 1 else f"(groups as datasets {name!r}.*)"
        if on_error == "raise":
            raise IngestError(f"cannot ingest {path!r} {where}: {one_line(e)}; nothing was ingested") from e
        _refuse(added, path, f"cannot ingest: {one_line(e)}")
        return
    added.extend(mine)
