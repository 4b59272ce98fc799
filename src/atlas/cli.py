"""The ``atlas`` command line (also ``python -m atlas``).

::

    atlas info STORE                      codec, metadata format, datasets, arrays, sizes on disk
    atlas ls STORE [DATASET]              datasets; or one dataset's arrays and attributes
    atlas ls STORE --where EXPR           the datasets whose catalog row matches EXPR
    atlas catalog STORE [--csv | --json]  one row per dataset: attributes, array min/max/null counts
    atlas stats STORE DATASET [ARRAY]     row/null counts, min and max of the arrays
    atlas ingest STORE GLOB... [--create] files xarray can open -> one dataset each, one flush
                                          (--workers N / --scheduler ADDRESS: in parallel processes)
    atlas compact STORE                   reclaim the space of deleted and overwritten data
    atlas verify STORE                    check the store; exit code 1 when problems are found
    atlas versions                        what a bug report needs (atlas.show_versions())
    atlas log | tag | expire STORE ...    versions: history, tags, expiry (atlas._cli_versions)

``info``, ``ls`` and ``stats`` take ``--version N`` or ``--tag NAME`` to show a past version.

Exit codes: 0 success, 1 error (or problems found by ``verify``), 2 bad usage,
130 interrupted. Errors are one line on stderr; ``-v`` adds the traceback and INFO logs,
``-vv`` DEBUG logs. Built on argparse only: ``main(argv)`` returns the exit code, so it can
be called from Python and tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import traceback
from typing import Any, Optional, Sequence

from ._cli_versions import add_version_options, register as register_versions
from ._version import __version__
from .errors import AtlasError, one_line

log = logging.getLogger(__name__)
_progress_log = logging.getLogger("atlas.progress")

#: exceptions reported as one line (anything else is a bug: reported with its traceback)
_USER_ERRORS = (OSError, KeyError, ValueError, TypeError, AtlasError)


class CliError(AtlasError):
    """An error the command line reports as one line on stderr."""


# ---------------------------------------------------------------------------------- helpers
def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    v = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        v /= 1024.0
        if v < 1024.0 or unit == "PiB":
            return f"{v:.1f} {unit}"
    raise AssertionError("unreachable")


def _fmt_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return repr(v)
    import numpy as np

    if isinstance(v, np.generic):
        v = v.item() if not isinstance(v, np.datetime64) else v
    return str(v)


def _fmt_shape(s: Sequence[int]) -> str:
    return "[" + ", ".join(str(x) for x in s) + "]"


def _json_default(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.datetime64):
        return str(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _table(rows: list[list[str]], indent: str = "") -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def _open(path: str, args: Optional[argparse.Namespace] = None) -> Any:
    from ._cli_versions import open_store

    return open_store(path, args or argparse.Namespace())


def _dataset(store: Any, name: str) -> Any:
    if not store.dataset_exists(name):
        raise KeyError(f"no dataset named {name!r} in {store.location!r}")
    return store.open_dataset(name)


def _store_sizes(store: Any) -> tuple[int, dict[str, tuple[int, int]]]:
    """Bytes of the whole store and ``{array name: (bytes, files)}`` of each array's folder."""
    state = store._state  # the internal interface (atlas._state.StoreState)
    storage = state.storage
    files = storage.list()
    total = storage.size_of(files)
    per: dict[str, tuple[int, int]] = {}
    for name, phys in state.meta.physical.items():
        prefix = phys.dir.rstrip("/") + "/"
        mine = [f for f in files if f.startswith(prefix)]
        per[name] = (storage.size_of(mine) if mine else 0, len(mine))
    return total, per


class _StderrHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` (so redirections and pytest's capsys see it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001
            self.handleError(record)


# ---------------------------------------------------------------------------------- commands
def _cmd_info(args: argparse.Namespace) -> int:
    store = _open(args.store, args)
    names = store.list_datasets()
    per_array: dict[str, dict[str, Any]] = {}
    for a in store.list_arrays():
        per_array[a] = {"name": a, "dtypes": [], "shapes": [], "datasets": 0}
    for n in names:
        ds = store.open_dataset(n)
        for a in ds.list_arrays():
            meta = ds.array_meta(a)
            e = per_array.setdefault(a, {"name": a, "dtypes": [], "shapes": [], "datasets": 0})
            e["datasets"] += 1
            if meta["dtype"] not in e["dtypes"]:
                e["dtypes"].append(meta["dtype"])
            if meta["shape"] not in e["shapes"]:
                e["shapes"].append(meta["shape"])
    total, sizes = _store_sizes(store)
    for a, (b, nfiles) in sizes.items():
        e = per_array.setdefault(a, {"name": a, "dtypes": [], "shapes": [], "datasets": 0})
        e["bytes"], e["files"] = b, nfiles
    arrays = [e for e in per_array.values() if e["datasets"] or e.get("bytes")]
    for e in arrays:
        e.setdefault("bytes", 0)
        e.setdefault("files", 0)
    info = {
        "location": store.location,
        "codec": store.codec,
        "meta_format": store.meta_format,
        "meta_compression": store.meta_compression,
        "generation": store.generation,
        "read_only": store.read_only,
        "datasets": len(names),
        "bytes": total,
        "arrays": arrays,
    }
    if args.json:
        _print_json(info)
        return 0
    print(f"store:       {info['location']}")
    print(f"codec:       {info['codec']}")
    print(f"metadata:    {info['meta_format']} (compression: {info['meta_compression']})")
    print(f"generation:  {info['generation']}" + ("  (a past version, read-only)" if info["read_only"] else ""))
    print(f"datasets:    {info['datasets']}")
    print(f"arrays:      {len([e for e in arrays if e['datasets']])}")
    print(f"on disk:     {_fmt_bytes(total)} ({total} bytes)")
    if arrays:
        rows = [["array", "dtype", "shape", "datasets", "on disk"]]
        for e in arrays:
            shapes = [_fmt_shape(s) for s in e["shapes"][:3]]
            if len(e["shapes"]) > 3:
                shapes.append(f"(+{len(e['shapes']) - 3} more)")
            rows.append([e["name"], ", ".join(e["dtypes"]) or "-", " ".join(shapes) or "-",
                         str(e["datasets"]), _fmt_bytes(e["bytes"])])
        print()
        print(_table(rows))
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    store = _open(args.store, args)
    if args.where is not None and args.dataset is not None:
        raise CliError("give either a DATASET or --where, not both")
    if args.dataset is None:
        names = store.list_datasets() if args.where is None else store.query(args.where)
        if args.json:
            _print_json(names)
        else:
            for n in names:
                print(n)
        return 0
    ds = _dataset(store, args.dataset)
    arrays = []
    for a in ds.list_arrays():
        m = ds.array_meta(a)
        arrays.append({"name": a, "dtype": m["dtype"], "shape": m["shape"], "chunk_shape": m["chunk_shape"],
                       "dims": m["dimension_names"], "fill_value": ds.array_fill_value(a)})
    attrs = ds.attributes()
    if not args.all:  # names starting with "_" are reserved for atlas (e.g. the xarray mapping)
        attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}
    if args.json:
        _print_json({"dataset": ds.name, "arrays": arrays, "attributes": attrs})
        return 0
    print(f"dataset: {ds.name}")
    print(f"arrays ({len(arrays)}):")
    if arrays:
        rows = [["name", "dtype", "shape", "chunk_shape", "dims", "fill_value"]]
        rows += [[e["name"], e["dtype"], _fmt_shape(e["shape"]), _fmt_shape(e["chunk_shape"]),
                  "(" + ", ".join(e["dims"]) + ")", _fmt_value(e["fill_value"])] for e in arrays]
        print(_table(rows, "  "))
    print(f"attributes ({len(attrs)}):")
    for k, v in attrs.items():
        print(f"  {k} = {_fmt_value(v)}")
    return 0


def _cmd_catalog(args: argparse.Namespace) -> int:
    store = _open(args.store)
    df = store.catalog()
    if args.where is not None:
        df = df.loc[store.query(args.where)]
    if args.csv:
        df.to_csv(sys.stdout)
    elif args.json:
        rows = {}
        for name, row in zip(df.index, df.itertuples(index=False, name=None)):
            rows[name] = {c: (None if _is_na(v) else list(v) if isinstance(v, tuple)
                              else v.isoformat() if hasattr(v, "isoformat") else v)
                          for c, v in zip(df.columns, row)}
        _print_json(rows)
    else:
        with _pandas_display():
            print(df.to_string())
    return 0


def _is_na(v: Any) -> bool:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    return not isinstance(v, tuple) and bool(pd.isna(v))


def _pandas_display() -> Any:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    return pd.option_context("display.width", 10**6, "display.max_columns", None, "display.max_rows", None)


def _cmd_stats(args: argparse.Namespace) -> int:
    store = _open(args.store, args)
    ds = _dataset(store, args.dataset)
    if args.array is not None:
        if ds.array_meta(args.array) is None:
            raise KeyError(f"array {args.array!r} is not defined in dataset {ds.name!r}")
        names = [args.array]
    else:
        names = ds.list_arrays()
    result = {a: ds.array_stats(a) for a in names}
    if args.json:
        _print_json(result)
        return 0
    rows = [["array", "dtype", "row_count", "null_count", "min", "max"]]
    for a, s in result.items():
        dt = ds.array_meta(a)["dtype"]
        if s is None:
            rows.append([a, dt, "-", "-", "-", "-"])
        else:
            rows.append([a, dt, str(s["row_count"]), str(s["null_count"]), _fmt_value(s["min"]), _fmt_value(s["max"])])
    print(_table(rows))
    return 0


def _open_for_ingest(args: argparse.Namespace) -> Any:
    from . import _metaio, codecs
    from .store import Atlas

    try:
        store = Atlas.open(args.store)
    except FileNotFoundError:
        if not args.create:
            raise FileNotFoundError(f"no atlas store at {args.store!r} (pass --create to make one)") from None
        return Atlas.create(args.store, codec=args.codec or "zstd", meta_format=args.meta_format or "json",
                            meta_compression=args.meta_compression or "none")
    wanted = [("codec", args.codec, codecs.canonical_codec, store.codec),
              ("meta-format", args.meta_format, _metaio.canonical_meta_format, store.meta_format),
              ("meta-compression", args.meta_compression, _metaio.canonical_meta_compression, store.meta_compression)]
    for opt, value, canon, actual in wanted:
        if value is not None and canon(value) != actual:
            raise ValueError(f"the store at {args.store!r} already exists with {opt} {actual!r}; "
                             f"--{opt} {value!r} only applies to a new store")
    return store


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .integrations import _chunking, _ingest

    paths, _ = _ingest.plan(args.files, args.name_from)  # refuse bad files/names before creating a store
    chunks = _chunking.parse_chunks(args.chunks) if args.chunks else None
    open_kwargs: dict[str, Any] = {}
    if args.no_decode_times:
        open_kwargs["decode_times"] = False
    if args.no_mask_and_scale:
        open_kwargs["mask_and_scale"] = False
    if args.drop_variables:
        open_kwargs["drop_variables"] = [v.strip() for v in args.drop_variables.split(",") if v.strip()]
    existed = os.path.exists(args.store)
    store = _open_for_ingest(args)
    created = not existed and args.create
    try:
        show = sys.stderr.isatty() if args.progress is None else args.progress
        t0 = time.perf_counter()
        kw = dict(name_from=args.name_from, engine=args.engine, jobs=args.jobs, progress=show, open_kwargs=open_kwargs,
                  groups=args.groups, chunks=chunks, on_error="skip" if args.skip_errors else "raise")
        if args.scheduler:
            from distributed import Client

            with Client(args.scheduler) as client:
                added = store.ingest(paths, client=client, **kw)
        else:
            added = store.ingest(paths, workers=args.workers, **kw)
        store.flush()
    except BaseException:
        if created:  # a failed --create leaves no store behind
            store._state.storage.close()  # releases file handles; never flushes
            shutil.rmtree(args.store, ignore_errors=True)
        raise
    dt = time.perf_counter() - t0
    refused = getattr(added, "refused", [])
    for path, reason in refused:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"ingested {len(paths) - len(refused)} files into {store.location} "
          f"({len(store.list_datasets())} datasets, generation {store.generation}) in {dt:.2f} s"
          + (f"; skipped {len(refused)} of {len(paths)} files" if refused else ""))
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    store = _open(args.store)
    before, _ = _store_sizes(store)
    t0 = time.perf_counter()
    show = sys.stderr.isatty() if args.progress is None else args.progress
    store.compact(progress=show)
    after, _ = _store_sizes(store)
    print(f"compacted {store.location}: {_fmt_bytes(before)} -> {_fmt_bytes(after)} "
          f"({before - after} bytes freed) in {time.perf_counter() - t0:.2f} s")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    store = _open(args.store)
    problems = store.verify()
    if problems:
        for p in problems:
            print(p)
        print(f"{store.location}: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{store.location}: OK ({len(store.list_datasets())} datasets, generation {store.generation})")
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    from ._versions import show_versions

    show_versions()
    return 0


# ---------------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``atlas`` command."""
    # -v is accepted before and after the subcommand. The action object is shared by every
    # parser using this parent, so its default must stay SUPPRESS (no set_defaults): that keeps
    # the subparser from resetting a count given before the subcommand.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                         help="more output: -v INFO logs and tracebacks, -vv DEBUG logs")
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                          help="show progress (a tqdm bar when tqdm is installed, else a plain one-line bar); "
                               "default: only when stderr is a terminal")

    p = argparse.ArgumentParser(
        prog="atlas",
        description="Inspect and build atlas stores: many N-dimensional datasets of one schema in one store.",
        parents=[verbose],
    )
    p.add_argument("--version", action="version", version=f"atlas {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("info", parents=[verbose], help="codec, metadata format, datasets, arrays and sizes on disk")
    s.add_argument("store", metavar="STORE", help="path of the store")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_version_options(s)
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("ls", parents=[verbose], help="list datasets, or one dataset's arrays and attributes")
    s.add_argument("store", metavar="STORE")
    s.add_argument("dataset", metavar="DATASET", nargs="?")
    s.add_argument("-a", "--all", action="store_true",
                   help="also show reserved attributes (names starting with '_', e.g. the xarray mapping's)")
    s.add_argument("--where", metavar="EXPR", default=None,
                   help="only the datasets whose catalog row matches EXPR (see 'atlas catalog'), e.g. "
                        "\"platform == 'BO' and `time.min` >= '2020-06-01'\"")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_version_options(s)
    s.set_defaults(func=_cmd_ls)

    s = sub.add_parser("catalog", parents=[verbose],
                       help="one row per dataset: attributes and each array's min, max, null and row counts",
                       description="The table of Atlas.catalog(): built from the metadata alone, no chunk is read.")
    s.add_argument("store", metavar="STORE")
    s.add_argument("--where", metavar="EXPR", default=None, help="only the rows matching EXPR (as in Atlas.query)")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    fmt.add_argument("--json", action="store_true", help="print JSON: {dataset: {column: value}}")
    s.set_defaults(func=_cmd_catalog)

    s = sub.add_parser("stats", parents=[verbose], help="row/null counts, min and max of a dataset's arrays")
    s.add_argument("store", metavar="STORE")
    s.add_argument("dataset", metavar="DATASET")
    s.add_argument("array", metavar="ARRAY", nargs="?")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_version_options(s)
    s.set_defaults(func=_cmd_stats)

    s = sub.add_parser(
        "ingest", parents=[verbose, progress],
        help="add files xarray can open (NetCDF, ...) as datasets, one flush at the end",
        description="Open every file matching the patterns (quote them; ** recurses) with xarray in "
                    "parallel, add each as one dataset in file order, and flush once at the end. "
                    "All or nothing: if a file fails, nothing is written (and a store made by --create "
                    "is removed), unless --skip-errors.",
    )
    s.add_argument("store", metavar="STORE")
    s.add_argument("files", metavar="GLOB", nargs="+", help="file paths or glob patterns")
    s.add_argument("--create", action="store_true", help="create the store if it does not exist")
    s.add_argument("--codec", default=None, help="chunk codec of a new store: zstd (default), lz4, none")
    s.add_argument("--meta-format", default=None, help="metadata format of a new store: json (default), msgpack")
    s.add_argument("--meta-compression", default=None, help="metadata compression of a new store: none (default), zstd, lz4")
    s.add_argument("--jobs", "-j", type=_positive_int, default=None,
                   help="reader threads (default: min(8, CPU count)); NetCDF/HDF5 files are opened one "
                        "at a time (their C libraries are not thread-safe), overlapping the compression "
                        "of the files read before")
    s.add_argument("--name-from", choices=("stem", "name"), default="stem",
                   help="dataset name: the file name without (stem, default) or with (name) its extension")
    s.add_argument("--engine", default=None, help="xarray engine (default: xarray guesses)")
    s.add_argument("--groups", choices=("root", "all"), default="root",
                   help="root (default): the root group of each file; all: every group as its own dataset, "
                        "named NAME.GROUP.SUBGROUP")
    s.add_argument("--chunks", default=None, metavar="DIM=SIZE,...",
                   help="chunk sizes, e.g. time=24,lat=-1 (-1: whole axis); other axes are split into "
                        "chunks of about 1 MiB aligned with the file's own chunks (the default for all axes)")
    s.add_argument("--skip-errors", action="store_true",
                   help="skip files that cannot be opened or stored (nothing of them is added) and list them "
                        "on stderr, instead of ingesting nothing")
    s.add_argument("--no-decode-times", action="store_true", help="open with decode_times=False (times stay numbers)")
    s.add_argument("--no-mask-and-scale", action="store_true",
                   help="open with mask_and_scale=False (fills and packing stay as in the file)")
    s.add_argument("--drop-variables", default=None, metavar="A,B", help="variables not to ingest (comma-separated)")
    par = s.add_mutually_exclusive_group()
    par.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                     help="open, encode and write the files in N worker processes (staged writes, one commit at the end)")
    par.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="run the workers on a running dask.distributed scheduler (e.g. tcp://host:8786)")
    s.set_defaults(func=_cmd_ingest)

    s = sub.add_parser("compact", parents=[verbose, progress],
                       help="reclaim the space of deleted datasets/arrays and overwritten chunks")
    s.add_argument("store", metavar="STORE")
    s.set_defaults(func=_cmd_compact)

    s = sub.add_parser("verify", parents=[verbose], help="check the store; exit code 1 when problems are found")
    s.add_argument("store", metavar="STORE")
    s.set_defaults(func=_cmd_verify)

    s = sub.add_parser("versions", parents=[verbose], help="print versions for bug reports (atlas.show_versions())")
    s.set_defaults(func=_cmd_versions)

    register_versions(sub, verbose)
    return p


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. captured in tests)
        pass


def main(argv: Optional[list[str]] = None) -> int:
    """Run the ``atlas`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)

    args.verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if args.verbose <= 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    pkg = logging.getLogger("atlas")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if args.verbose
                                           else "%(message)s"))
    saved = (pkg.level, _progress_log.level)
    pkg.addHandler(handler)
    pkg.setLevel(level)
    _progress_log.setLevel(min(level, logging.INFO))  # progress lines show whenever progress is on
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("atlas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `atlas ls STORE | head`: stop quietly
        _silence_stdout()
        return 1
    except _USER_ERRORS as e:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"atlas {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    finally:
        pkg.removeHandler(handler)
        pkg.setLevel(saved[0])
        _progress_log.setLevel(saved[1])


__all__ = ["main", "build_parser", "CliError"]
