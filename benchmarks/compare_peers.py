#!/usr/bin/env python
"""atlas vs zarr v3, netCDF4 and h5py on three workloads: one command, tables, JSON and a chart.

    python benchmarks/compare_peers.py                      # full run, 3 repeats (about 10-20 min)
    python benchmarks/compare_peers.py --quick              # smoke test: tiny sizes, 1 repeat
    python benchmarks/compare_peers.py --workloads gridded --repeats 5 --png /tmp/g.png

Workloads (the same data for every system, generated deterministically in each child
before its clock starts):

* ``small``: 1,000 datasets x three float32 (100,) arrays ``a``, ``b``, ``c`` + a ``time``
  (100,) coordinate (atlas: datetime64[ns]; the peers store its int64 nanoseconds and the
  read views them back as datetime64[ns]). Data and atlas code from ``compare_small.py``.
* ``profile``: 1,000 datasets x four float32 (level=50, hour=168) arrays ``temp``,
  ``salt``, ``oxygen``, ``chla`` (one chunk each).
* ``gridded``: 200 datasets x three float32 (24, 90, 180) arrays chunked (6, 45, 90).
  Data and every system's code from ``compare_gridded.py``.

Systems: ``atlas`` (one store, zstd 3); ``h5py`` (one file, a group per dataset; zstd 3 via
hdf5plugin when importable, else gzip 1; the table says which); ``netcdf4`` (one file per
dataset; zstd 3 if the netCDF library has it, else zlib 1); ``zarr`` (zarr v3, one
LocalStore per dataset, ZstdCodec 3) and ``zarr-grp`` (zarr v3, one LocalStore, a group
per dataset). Every array is compressed, chunked as the workload says.

Phases (each workload): ``ingest`` (create, write everything, flush/close; the peers' files
are fsynced afterwards and that time is reported on its own row, since atlas's flush
fsyncs), ``read`` (reopen, read every array of every dataset, one by one), ``stacked``
(the same box of one array from every dataset into one (N, ...) array: atlas
``read_array_across_stacked``, the peers a loop into a preallocated array) and, for
``gridded``, ``read_arrays`` (atlas ``read_arrays`` per dataset, the peers a loop).

Each system runs in its own fresh process: by default one process per phase (imports and a
tiny warm-up round trip of the same system, which for atlas compiles or loads the Numba
kernels, happen before the clock; the page cache is warm); ``--process-per system`` runs
all phases of a system in one process (the ``--quick`` default). Every repeat writes a
fresh store. Medians over ``--repeats`` (default 3). The first repeat's reads are checked
against the source data in the child, after the clock.

Output: one markdown table per workload (times and atlas/peer ratios, < 1 means atlas is
faster) on stdout and in ``--md``, all numbers in ``--json``, and a bar chart of the ratios
(log scale) in ``--png`` (default ``benchmarks/results/peers.png``; needs matplotlib).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable

import numpy as np

try:  # as benchmarks.compare_peers (asv discovery, pytest)
    from . import compare_gridded as CG
    from . import compare_small as CS
except ImportError:  # as a script
    import compare_gridded as CG  # type: ignore[no-redef]
    import compare_small as CS  # type: ignore[no-redef]

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SYSTEMS = ("atlas", "h5py", "netcdf4", "zarr", "zarr-grp")
PEERS = SYSTEMS[1:]
LABELS = {"atlas": "atlas", "h5py": "h5py", "netcdf4": "netCDF4", "zarr": "zarr store/ds", "zarr-grp": "zarr group/ds"}
IMPORTS = CG.IMPORTS
ZSTD_LEVEL = CG.ZSTD_LEVEL
CHILD_TIMEOUT = 3600
dataset_name = CS.dataset_name


# =========================================================================== schemas
class Var:
    """One array of a workload: name, dtype as written by atlas, dims, shape, chunk."""

    def __init__(self, name: str, dtype: str, dims: tuple[str, ...], shape: tuple[int, ...], chunk: tuple[int, ...]):
        self.name, self.dtype, self.dims, self.shape, self.chunk = name, dtype, dims, shape, chunk

    @property
    def peer_dtype(self) -> np.dtype:
        """What the peers store: int64 nanoseconds for datetime64[ns]."""
        return np.dtype(np.int64) if self.dtype == "datetime64[ns]" else np.dtype(self.dtype)


SMALL_SCHEMA = [Var(k, "float32", ("obs",), (CS.LENGTH,), (CS.LENGTH,)) for k in CS.FLOAT_ARRAYS] + [
    Var("time", "datetime64[ns]", ("obs",), (CS.LENGTH,), (CS.LENGTH,))]
SMALL_STACK = ("a", (slice(CS.STACK_START, CS.STACK_STOP),))

PROFILE_VARS = ("temp", "salt", "oxygen", "chla")
PROFILE_DIMS = ("level", "hour")
PROFILE_SHAPE = (50, 168)
PROFILE_SCHEMA = [Var(v, "float32", PROFILE_DIMS, PROFILE_SHAPE, PROFILE_SHAPE) for v in PROFILE_VARS]
PROFILE_STACK = ("temp", (slice(0, 10), slice(0, 168)))


def _box(sl: tuple[slice, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(s.start for s in sl), tuple(s.stop - s.start for s in sl)


# =========================================================================== data
def small_rows(n: int) -> list[dict[str, np.ndarray]]:
    return CS.per_dataset(CS.make_data(n))


def profile_array(i: int, k: int) -> np.ndarray:
    """Dataset ``i``'s variable ``k``: a smooth vertical profile with a daily cycle + noise, 10 mantissa bits."""
    rng = np.random.default_rng([20250101, i, k])
    lev = np.linspace(0.0, 1.0, PROFILE_SHAPE[0], dtype=np.float32)[:, None]
    hour = np.arange(PROFILE_SHAPE[1], dtype=np.float32)[None, :]
    base = np.float32((20.0, 35.0, 6.0, 0.5)[k % 4])
    f = base * (np.float32(1) - np.float32(0.5) * lev) + np.float32(0.3 * base) * np.exp(-lev * np.float32(4)) * np.sin(
        np.float32(2 * np.pi / 24) * hour + np.float32(rng.uniform(0, 6.28)))
    f = (f + rng.standard_normal(PROFILE_SHAPE, dtype=np.float32) * np.float32(0.02 * base)).astype(np.float32)
    return np.ascontiguousarray((f.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32))


def profile_rows(n: int) -> list[dict[str, np.ndarray]]:
    return [{v: profile_array(i, k) for k, v in enumerate(PROFILE_VARS)} for i in range(n)]


# =========================================================================== generic implementations
# (small and profile: the peers, and atlas for profile; gridded uses compare_gridded's)
def atlas_ingest(schema: list[Var], path: str, rows: list[dict[str, np.ndarray]]) -> None:
    import atlas

    store = atlas.Atlas.create(path, codec="zstd")
    for i, row in enumerate(rows):
        ds = store.create_dataset(dataset_name(i))
        for v in schema:
            ds.define_array(v.name, v.dtype, v.dims, v.shape, chunk_shape=v.chunk)
            ds.write_array(v.name, (0,) * len(v.shape), row[v.name])
    store.flush()


def atlas_read(schema: list[Var], path: str, names: list[str]) -> list[list[np.ndarray]]:
    import atlas

    store = atlas.Atlas.open(path)
    out = []
    for n in names:
        ds = store.open_dataset(n)
        out.append([ds.read_array(v.name) for v in schema])
    return out


def atlas_stacked(stack: tuple[str, tuple[slice, ...]], path: str, names: list[str]) -> np.ndarray:
    import atlas

    start, count = _box(stack[1])
    return atlas.Atlas.open(path).read_array_across_stacked(stack[0], names, start, count)


def _to_peer(v: Var, a: np.ndarray) -> np.ndarray:
    return a.view(np.int64) if v.dtype == "datetime64[ns]" else a


def _from_peer(v: Var, a: np.ndarray) -> np.ndarray:
    return a.view("datetime64[ns]") if v.dtype == "datetime64[ns]" else a


def _stack_out(schema: list[Var], stack: tuple[str, tuple[slice, ...]], n: int) -> tuple[Var, np.ndarray]:
    var = next(v for v in schema if v.name == stack[0])
    return var, np.empty((n,) + _box(stack[1])[1], var.peer_dtype)


# ---- h5py: one file, a group per dataset
def h5py_ingest(schema: list[Var], path: str, rows: list[dict[str, np.ndarray]]) -> None:
    import h5py

    kw, _ = CG.h5py_codec()
    with h5py.File(path, "w") as f:
        for i, row in enumerate(rows):
            g = f.create_group(dataset_name(i))
            for v in schema:
                g.create_dataset(v.name, data=_to_peer(v, row[v.name]), chunks=v.chunk, **kw)


def h5py_read(schema: list[Var], path: str, names: list[str]) -> list[list[np.ndarray]]:
    import h5py

    CG.h5py_codec()  # registers the hdf5plugin filters
    out = []
    with h5py.File(path, "r") as f:
        for n in names:
            g = f[n]
            row = []
            for v in schema:
                a = np.empty(v.shape, v.peer_dtype)
                g[v.name].read_direct(a)
                row.append(_from_peer(v, a))
            out.append(row)
    return out


def h5py_stacked(schema: list[Var], stack: tuple[str, tuple[slice, ...]], path: str, names: list[str]) -> np.ndarray:
    import h5py

    CG.h5py_codec()
    var, out = _stack_out(schema, stack, len(names))
    with h5py.File(path, "r") as f:
        for i, n in enumerate(names):
            f[n][var.name].read_direct(out, stack[1], np.s_[i])
    return _from_peer(var, out)


# ---- netCDF4: one file per dataset
_NC_KW: list[dict[str, Any]] = []


def netcdf4_ingest(schema: list[Var], path: str, rows: list[dict[str, np.ndarray]]) -> None:
    import netCDF4

    if not _NC_KW:
        _NC_KW.append(CG.netcdf_codec()[0])
    kw = _NC_KW[0]
    os.makedirs(path, exist_ok=True)
    for i, row in enumerate(rows):
        with netCDF4.Dataset(CG.nc_file(path, dataset_name(i)), "w") as d:
            d.set_fill_off()
            dims: dict[str, int] = {}
            for v in schema:
                for dim, size in zip(v.dims, v.shape):
                    if dim not in dims:
                        dims[dim] = size
                        d.createDimension(dim, size)
            for v in schema:
                var = d.createVariable(v.name, v.peer_dtype, v.dims, chunksizes=v.chunk, **kw)
                var[:] = _to_peer(v, row[v.name])


def netcdf4_read(schema: list[Var], path: str, names: list[str]) -> list[list[np.ndarray]]:
    import netCDF4

    out = []
    for n in names:
        with netCDF4.Dataset(CG.nc_file(path, n), "r") as d:
            d.set_auto_mask(False)
            out.append([_from_peer(v, d[v.name][:]) for v in schema])
    return out


def netcdf4_stacked(schema: list[Var], stack: tuple[str, tuple[slice, ...]], path: str, names: list[str]) -> np.ndarray:
    import netCDF4

    var, out = _stack_out(schema, stack, len(names))
    for i, n in enumerate(names):
        with netCDF4.Dataset(CG.nc_file(path, n), "r") as d:
            d.set_auto_mask(False)
            out[i] = d[var.name][stack[1]]
    return _from_peer(var, out)


# ---- zarr v3: a store per dataset, or one store with a group per dataset
def _zarr_write(schema: list[Var], g: Any, row: dict[str, np.ndarray]) -> None:
    from zarr.codecs import ZstdCodec

    for v in schema:
        a = g.create_array(v.name, shape=v.shape, chunks=v.chunk, dtype=v.peer_dtype,
                           compressors=ZstdCodec(level=ZSTD_LEVEL), fill_value=0, dimension_names=v.dims)
        a[...] = _to_peer(v, row[v.name])


def zarr_ingest(schema: list[Var], path: str, rows: list[dict[str, np.ndarray]]) -> None:
    import zarr
    from zarr.storage import LocalStore

    os.makedirs(path, exist_ok=True)
    for i, row in enumerate(rows):
        _zarr_write(schema, zarr.open_group(LocalStore(CG.zarr_dir(path, dataset_name(i))), mode="w"), row)


def zarr_read(schema: list[Var], path: str, names: list[str]) -> list[list[np.ndarray]]:
    import zarr
    from zarr.storage import LocalStore

    out = []
    for n in names:
        st = LocalStore(CG.zarr_dir(path, n), read_only=True)
        out.append([_from_peer(v, zarr.open_array(st, path=v.name)[...]) for v in schema])
    return out


def zarr_stacked(schema: list[Var], stack: tuple[str, tuple[slice, ...]], path: str, names: list[str]) -> np.ndarray:
    import zarr
    from zarr.storage import LocalStore

    var, out = _stack_out(schema, stack, len(names))
    for i, n in enumerate(names):
        out[i] = zarr.open_array(LocalStore(CG.zarr_dir(path, n), read_only=True), path=var.name)[stack[1]]
    return _from_peer(var, out)


def zarr_grp_ingest(schema: list[Var], path: str, rows: list[dict[str, np.ndarray]]) -> None:
    import zarr
    from zarr.storage import LocalStore

    root = zarr.open_group(LocalStore(path), mode="w")
    for i, row in enumerate(rows):
        _zarr_write(schema, root.create_group(dataset_name(i)), row)


def zarr_grp_read(schema: list[Var], path: str, names: list[str]) -> list[list[np.ndarray]]:
    import zarr
    from zarr.storage import LocalStore

    st = LocalStore(path, read_only=True)
    return [[_from_peer(v, zarr.open_array(st, path=f"{n}/{v.name}")[...]) for v in schema] for n in names]


def zarr_grp_stacked(schema: list[Var], stack: tuple[str, tuple[slice, ...]], path: str, names: list[str]) -> np.ndarray:
    import zarr
    from zarr.storage import LocalStore

    st = LocalStore(path, read_only=True)
    var, out = _stack_out(schema, stack, len(names))
    for i, n in enumerate(names):
        out[i] = zarr.open_array(st, path=f"{n}/{var.name}")[stack[1]]
    return _from_peer(var, out)


_GENERIC = {
    "h5py": (h5py_ingest, h5py_read, h5py_stacked),
    "netcdf4": (netcdf4_ingest, netcdf4_read, netcdf4_stacked),
    "zarr": (zarr_ingest, zarr_read, zarr_stacked),
    "zarr-grp": (zarr_grp_ingest, zarr_grp_read, zarr_grp_stacked),
}


def generic_impl(schema: list[Var], stack: tuple[str, tuple[slice, ...]], system: str) -> dict[str, Callable[..., Any]]:
    if system == "atlas" and schema is SMALL_SCHEMA:  # compare_small's atlas code, the same calls
        return {"ingest": CS.atlas_ingest, "read": CS.atlas_read, "stacked": CS.atlas_stacked}
    if system == "atlas":
        return {"ingest": partial(atlas_ingest, schema), "read": partial(atlas_read, schema),
                "stacked": partial(atlas_stacked, stack)}
    ing, rd, stk = _GENERIC[system]
    return {"ingest": partial(ing, schema), "read": partial(rd, schema), "stacked": partial(stk, schema, stack)}


# ---- gridded: compare_gridded's implementations, plus atlas's read one by one
def atlas_read_grid(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import atlas

    store = atlas.Atlas.open(path)
    out = []
    for n in names:
        ds = store.open_dataset(n)
        out.append([ds.read_array(v) for v in CG.VARS])
    return out


def gridded_impl(system: str) -> dict[str, Callable[..., Any]]:
    impl = dict(CG.IMPL[system])
    impl["read"] = atlas_read_grid if system == "atlas" else impl["read_arrays"]
    return impl


# =========================================================================== workloads
class Workload:
    def __init__(self, name: str, default_n: int, quick_n: int, phases: tuple[str, ...], describe: Callable[[int], str],
                 rows: Callable[[int], list[dict[str, np.ndarray]]], impl: Callable[[str], dict[str, Callable[..., Any]]],
                 var_names: tuple[str, ...], stack_title: str):
        self.name, self.default_n, self.quick_n, self.phases = name, default_n, quick_n, phases
        self.describe, self.rows, self.impl, self.var_names, self.stack_title = describe, rows, impl, var_names, stack_title

    def source_rows(self, n: int, which: list[int]) -> dict[int, dict[str, np.ndarray]]:
        if self.name == "gridded":
            return {i: {v: CG.make_array(i, k) for k, v in enumerate(CG.VARS)} for i in which}
        rows = self.rows(n)
        return {i: rows[i] for i in which}

    def stack_source(self, n: int) -> np.ndarray:
        if self.name == "gridded":
            return CG.stack_source(n)
        var, sl = SMALL_STACK if self.name == "small" else PROFILE_STACK
        return np.stack([r[var][sl] for r in self.rows(n)])

    def warmup(self, system: str) -> None:
        """A tiny throwaway round trip of every call the phases use (atlas: compiles/loads the kernels)."""
        if self.name == "gridded":
            CG.warmup(system)
            return
        tmp = tempfile.mkdtemp(prefix=f"{system}-warm-")
        try:
            impl = self.impl(system)
            path = store_path(tmp, self.name, system, "warm")
            impl["ingest"](path, self.rows(2))
            names = [dataset_name(i) for i in range(2)]
            impl["read"](path, names)
            impl["stacked"](path, names)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def verify(self, phase: str, result: Any, n: int) -> str:
        """The phase's result equals the source data (every dataset; gridded: first and last for full reads)."""
        if phase == "stacked":
            src = self.stack_source(n)
            if result.dtype != src.dtype or result.shape != src.shape or not np.array_equal(result, src):
                raise AssertionError(f"{self.name}/stacked: {result.dtype}{result.shape} differs from the source "
                                     f"{src.dtype}{src.shape}")
            return f"stacked {src.shape} equal to the source"
        which = sorted({0, n - 1}) if self.name == "gridded" else list(range(n))
        src = self.source_rows(n, which)
        for i in which:
            got = result[i]
            if isinstance(got, dict):
                got = [got[v] for v in self.var_names]
            for k, v in enumerate(self.var_names):
                a, b = np.asarray(got[k]), src[i][v]
                if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
                    raise AssertionError(f"{self.name}/{phase}: {dataset_name(i)}/{v} {a.dtype}{a.shape} differs "
                                         f"from the source {b.dtype}{b.shape}")
        return f"{len(which)} dataset(s) x {len(self.var_names)} arrays equal to the source"


WORKLOADS: dict[str, Workload] = {
    "small": Workload(
        "small", 1000, 10, ("ingest", "read", "stacked"),
        lambda n: f"{n} datasets x (a, b, c float32 (100,) + time datetime64[ns] (100,))",
        small_rows, partial(generic_impl, SMALL_SCHEMA, SMALL_STACK), tuple(v.name for v in SMALL_SCHEMA),
        f"a[{CS.STACK_START}:{CS.STACK_STOP}] x N -> (N, {CS.STACK_STOP - CS.STACK_START})"),
    "profile": Workload(
        "profile", 1000, 10, ("ingest", "read", "stacked"),
        lambda n: f"{n} datasets x 4 float32 (level=50, hour=168) arrays, one chunk each",
        profile_rows, partial(generic_impl, PROFILE_SCHEMA, PROFILE_STACK), PROFILE_VARS,
        "temp[0:10, 0:168] x N -> (N, 10, 168)"),
    "gridded": Workload(
        "gridded", 200, 2, ("ingest", "read", "stacked", "read_arrays"),
        lambda n: f"{n} datasets x 3 float32 {CG.SHAPE} arrays chunked {CG.CHUNK}",
        CG.make_rows, gridded_impl, CG.VARS,
        f"{CG.STACK_VAR}[0:6, 0:45, 0:90] (one chunk) x N -> (N, 6, 45, 90)"),
}

PHASE_TITLES = {
    "ingest": "ingest: create, write all, flush/close",
    "ingest_fsync": "ingest + fsync of the peers' files",
    "read": "read every dataset one by one (reopen, every array)",
    "stacked": "stacked: {stack}",
    "read_arrays": "read_arrays: every var full, per dataset",
}
CHART_PHASES = ("ingest", "ingest_fsync", "read", "stacked", "read_arrays")


def store_path(workdir: str, workload: str, system: str, tag: str) -> str:
    return os.path.join(workdir, f"{workload}-{system}-{tag}" + (".h5" if system == "h5py" else ""))


# =========================================================================== child
def child_main(args: argparse.Namespace) -> int:
    """Phases of one system on one workload, in this process; a json line per phase."""
    wname, system, phases = args.child[0], args.child[1], args.child[2].split(",")
    wl = WORKLOADS[wname]
    for mod in IMPORTS[system]:
        __import__(mod)
    wl.warmup(system)
    impl = wl.impl(system)
    n = args.datasets
    names = [dataset_name(i) for i in range(n)]
    for phase in phases:
        res: dict[str, Any] = {"workload": wname, "system": system, "phase": phase}
        if phase == "ingest":
            rows = wl.rows(n)
            gc.collect()
            t0 = time.perf_counter()
            impl["ingest"](args.target, rows)
            res["seconds"] = time.perf_counter() - t0
            del rows
            if system != "atlas":
                t0 = time.perf_counter()
                CG.fsync_tree(args.target)
                res["fsync_seconds"] = time.perf_counter() - t0
            res["store_bytes"] = CG.tree_bytes(args.target)
        else:
            gc.collect()
            t0 = time.perf_counter()
            out = impl[phase](args.target, names)
            res["seconds"] = time.perf_counter() - t0
            if len(out) != n:
                raise AssertionError(f"{wname}/{system}/{phase}: {len(out)} results for {n} datasets")
            if args.verify:
                res["verify"] = wl.verify(phase, out, n)
            del out
        print(json.dumps(res), flush=True)
    return 0


def run_child(wname: str, system: str, phases: list[str], workdir: str, n: int, target: str,
              verify: bool) -> list[dict[str, Any]]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", wname, system, ",".join(phases),
           "--workdir", workdir, "--datasets", str(n), "--target", target] + (["--verify"] if verify else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"child {wname}/{system}/{phases} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if [r["phase"] for r in out] != phases:
        raise RuntimeError(f"child {wname}/{system} reported {out!r} for phases {phases}")
    return out


# =========================================================================== report
def _med(vals: list[float]) -> float:
    return statistics.median(vals) if vals else float("nan")


def summarize(wl: Workload, runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    med: dict[str, dict[str, float]] = {}
    for ph in wl.phases:
        med[ph] = {s: _med([r["seconds"] for r in runs[ph][s]]) for s in runs[ph]}
    med["ingest_fsync"] = {s: _med([r["seconds"] + r.get("fsync_seconds", 0.0) for r in runs["ingest"][s]])
                           for s in runs["ingest"]}
    store_mb = {s: _med([r["store_bytes"] / 1e6 for r in runs["ingest"][s]]) for s in runs["ingest"]}
    ratios = {ph: {p: (med[ph]["atlas"] / med[ph][p] if med[ph].get(p) else float("nan"))
                   for p in med[ph] if p != "atlas"} for ph in med if "atlas" in med[ph]}
    return {"medians": med, "ratios": ratios, "store_mb": store_mb}


def render_table(wl: Workload, w: dict[str, Any], reps: int, codecs_used: dict[str, str]) -> str:
    systems = [s for s in SYSTEMS if s in w["medians"]["ingest"]]
    peers = [s for s in systems if s != "atlas"]
    head = [LABELS[s] + " (s)" for s in systems] + [f"atlas/{LABELS[p]}" for p in peers]
    lines = [
        f"### {wl.name}: {wl.describe(w['datasets'])}, median of {reps} fresh-process repeat(s)",
        "",
        "| phase | " + " | ".join(head) + " |",
        "| --- |" + " ---: |" * len(head),
    ]
    order = ["ingest", "ingest_fsync"] + [p for p in wl.phases if p != "ingest"]
    for ph in order:
        m, r = w["medians"][ph], w["ratios"].get(ph, {})
        title = PHASE_TITLES[ph].format(stack=wl.stack_title)
        cells = [f"{m[s]:.4f}" for s in systems] + [f"**{r[p]:.3g}x**" if r[p] == r[p] else "-" for p in peers]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    sizes = [f"{w['store_mb'][s]:.1f}" for s in systems] + [
        f"{w['store_mb']['atlas'] / w['store_mb'][p]:.3g}x" if "atlas" in systems else "-" for p in peers]
    lines.append("| store size on disk (MB) | " + " | ".join(sizes) + " |")
    lines += ["", f"verify: {w['verify']}"]
    return "\n".join(lines)


def render_header(res: dict[str, Any]) -> str:
    mi, cu = res["machine"], res["codecs"]
    return "\n".join([
        f"codecs: atlas zstd {ZSTD_LEVEL}; h5py {cu['h5py']}; netCDF4 {cu['netcdf4']}; zarr zstd {ZSTD_LEVEL}. "
        "Ratios are atlas time / peer time: below 1 atlas is faster. Page cache warm; atlas's flush fsyncs, "
        "the peers' closes do not (see the '+ fsync' row).",
        f"processes: one per {res['process_per']} (imports and a warm-up round trip before the clock), "
        + ("one at a time" if res["jobs"] == 1 else f"**{res['jobs']} at once: a smoke test, the timings are not "
                                                    "comparable**")
        + f"; total wall time {res['wall_seconds']:.0f} s",
        f"machine: {mi['cpu_count']} cpu(s) (affinity {mi['cpu_affinity']}, {mi['cpu_model']}), "
        f"{(mi['memory_bytes'] or 0) / 2**30:.1f} GiB, load at start {tuple(round(x, 2) for x in mi['loadavg_at_start'])}, "
        f"at end {tuple(round(x, 2) for x in res['loadavg_at_end'])}, {mi['platform']}",
        f"python {mi['python']}, numpy {mi['numpy']}, numba {mi['numba']}, h5py {mi['h5py']} (HDF5 {mi['hdf5']}, "
        f"hdf5plugin {mi['hdf5plugin']}), netCDF4 {mi['netCDF4']} (netCDF {mi['netcdf_lib']}), zarr {mi['zarr']} "
        f"(numcodecs {mi['numcodecs']}), zstandard {mi['zstandard']}, atlas {mi['atlas']} @ {mi['atlas_git']} "
        f"({mi['atlas_num_threads']} thread(s))",
    ])


def write_chart(res: dict[str, Any], png: str) -> None:
    """One panel per workload: atlas/peer time ratio per phase and peer, bars from 1 on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    wls = list(res["workloads"])
    fig, axes = plt.subplots(1, len(wls), figsize=(5.6 * len(wls), 5.0), squeeze=False)
    colors = {"h5py": "#1f77b4", "netcdf4": "#ff7f0e", "zarr": "#2ca02c", "zarr-grp": "#9467bd"}
    ticks = {"ingest": "ingest", "ingest_fsync": "ingest\n+ fsync", "read": "read\none by one",
             "stacked": "stacked\nslice", "read_arrays": "read_arrays"}
    allv = [v for w in res["workloads"].values() for ph in w["ratios"].values() for v in ph.values() if v == v and v > 0]
    lo, hi = min(allv + [0.5]) / 1.6, max(allv + [2.0]) * 1.6
    for ax, wname in zip(axes[0], wls):
        w = res["workloads"][wname]
        phases = [p for p in CHART_PHASES if p in w["ratios"]]
        peers = [p for p in PEERS if p in w["medians"]["ingest"]]
        width = 0.8 / max(1, len(peers))
        for j, p in enumerate(peers):
            xs = [i + (j - (len(peers) - 1) / 2) * width for i in range(len(phases))]
            ys = [w["ratios"][ph][p] for ph in phases]
            ax.bar(xs, [y - 1 for y in ys], bottom=1, width=width * 0.92, color=colors[p], label=f"atlas / {LABELS[p]}")
            for x, y in zip(xs, ys):
                if y == y:
                    ax.annotate(f"{y:.2g}", (x, y), ha="center", va="bottom" if y >= 1 else "top", fontsize=6,
                                xytext=(0, 1 if y >= 1 else -1), textcoords="offset points")
        ax.axhline(1.0, color="black", linewidth=0.9)
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xticks(range(len(phases)))
        ax.set_xticklabels([ticks[p] for p in phases], fontsize=8)
        ax.set_title(f"{wname}: {w['datasets']} datasets", fontsize=10)
        ax.grid(axis="y", which="major", alpha=0.3)
    axes[0][0].set_ylabel("atlas time / peer time (log)\nbelow 1: atlas faster")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    mi = res["machine"]
    fig.suptitle(f"atlas vs peers: median of {res['repeats']} fresh-process repeat(s); "
                 f"{mi['cpu_count']} cpu(s) {mi['cpu_model']}, python {mi['python']}, atlas {mi['atlas']} @ {mi['atlas_git']}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


# =========================================================================== main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=None, help="fresh-process repeats per system and phase (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 10/10/2 datasets, 1 repeat, one process per system, 3 at once (unless given)")
    p.add_argument("--workloads", default="small,profile,gridded", help="comma-separated subset of small,profile,gridded")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset (atlas is always run)")
    for w in WORKLOADS.values():
        p.add_argument(f"--n-{w.name}", type=int, default=None, metavar="N",
                       help=f"datasets of the {w.name} workload (default {w.default_n}, --quick {w.quick_n})")
    p.add_argument("--process-per", choices=("phase", "system"), default=None,
                   help="a fresh process per phase (default) or per system and repeat (--quick default)")
    p.add_argument("--jobs", type=int, default=None,
                   help="children run at once (default 1; --quick: 3). Above 1 the timings are not comparable")
    p.add_argument("--json", metavar="OUT", help="results (every repeat); default benchmarks/results/peers.json "
                   "(with --quick: no json unless given)")
    p.add_argument("--md", metavar="OUT", help="the tables and machine as markdown; default benchmarks/results/peers.md "
                   "(with --quick: none unless given)")
    p.add_argument("--png", metavar="OUT", help="the chart; default benchmarks/results/peers.png "
                   "(with --quick: none unless given)")
    p.add_argument("--no-chart", action="store_true", help="do not draw the chart (no matplotlib needed)")
    p.add_argument("--render", metavar="JSON", help="run nothing: print the tables and write --md/--png from a results json")
    p.add_argument("--workdir", help="where stores are written (default: a new temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--child", nargs=3, metavar=("WORKLOAD", "SYSTEM", "PHASES"), help=argparse.SUPPRESS)
    p.add_argument("--datasets", type=int, help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return a
    a.repeats = a.repeats if a.repeats is not None else (1 if a.quick else 3)
    a.process_per = a.process_per or ("system" if a.quick else "phase")
    a.jobs = a.jobs if a.jobs is not None else (3 if a.quick else 1)
    a.workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    a.systems = ["atlas"] + [s.strip() for s in a.systems.split(",") if s.strip() and s.strip() != "atlas"]
    bad = [w for w in a.workloads if w not in WORKLOADS] + [s for s in a.systems if s not in SYSTEMS]
    if bad or not a.workloads:
        p.error(f"unknown workload(s)/system(s): {bad}")
    a.counts = {}
    for w in a.workloads:
        n = getattr(a, f"n_{w}")
        a.counts[w] = n if n is not None else (WORKLOADS[w].quick_n if a.quick else WORKLOADS[w].default_n)
    if a.repeats < 1 or a.jobs < 1 or min(a.counts.values()) < 1:
        p.error("--repeats and dataset counts must be >= 1")
    for key in ("json", "md", "png"):
        if getattr(a, key) is None and not a.quick:
            setattr(a, key, os.path.join(RESULTS, f"peers.{key}"))
    return a


def write_outputs(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The tables on stdout, and the json, chart and markdown files asked for."""
    wls = list(results["workloads"])
    tables = [render_table(WORKLOADS[wn], results["workloads"][wn], results["repeats"], results["codecs"]) for wn in wls]
    text = "\n\n".join(tables) + "\n\n" + render_header(results)
    print(text)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    chart = ""
    if args.png and not args.no_chart:
        write_chart(results, args.png)
        print(f"chart: {args.png}", file=sys.stderr)
        rel = os.path.relpath(os.path.abspath(args.png), os.path.dirname(os.path.abspath(args.md or args.png)))
        chart = f"\n\n![atlas/peer time ratios per phase, log scale]({rel})\n"
    if args.md:
        os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
        cmd = results.get("command", "python benchmarks/compare_peers.py").strip()
        with open(args.md, "w") as f:
            f.write(f"## atlas vs peers\n\nMade by `{cmd}`.\n\n{text}{chart}\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        if args.json and os.path.abspath(args.json) == os.path.abspath(args.render):
            args.json = None
        write_outputs(results, args)
        return 0
    t_start = time.perf_counter()
    reps = args.repeats
    own_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="atlas-peers-") if own_workdir else os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    try:
        machine = CG.machine_info()
        codecs_used = {"h5py": CG.h5py_codec()[1], "netcdf4": CG.netcdf_codec()[1]}
        results: dict[str, Any] = {"repeats": reps, "process_per": args.process_per, "jobs": args.jobs, "machine": machine,
                                   "codecs": codecs_used, "workloads": {}}
        for wname in args.workloads:
            wl, n = WORKLOADS[wname], args.counts[wname]
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {ph: {s: [] for s in args.systems} for ph in wl.phases}
            verdicts: list[str] = []
            jobs = []
            for r in range(reps):
                k = r % len(args.systems)
                jobs += [(r, s) for s in args.systems[k:] + args.systems[:k]]

            def one(job: tuple[int, str]) -> list[dict[str, Any]]:
                r, s = job
                target = store_path(workdir, wname, s, f"r{r}")
                try:
                    if args.process_per == "system":
                        return run_child(wname, s, list(wl.phases), workdir, n, target, verify=r == 0)
                    return [run_child(wname, s, [ph], workdir, n, target, verify=r == 0)[0] for ph in wl.phases]
                finally:
                    CG.remove(target)

            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                for (r, s), got in zip(jobs, pool.map(one, jobs)):
                    for res in got:
                        runs[res["phase"]][s].append(res)
                        if "verify" in res:
                            verdicts.append(f"{s}/{res['phase']}: {res['verify']}")
                    print(f"  {wname:8s} {r + 1}/{reps} {s:8s} " + "  ".join(
                        f"{x['phase']} {x['seconds']:.3f}s" for x in got), file=sys.stderr, flush=True)
            w = summarize(wl, runs)
            w.update({"datasets": n, "runs": runs,
                      "verify": f"ok: every system's reads in repeat 1 equal the source data ({len(verdicts)} checks)"})
            w["verify_details"] = verdicts
            results["workloads"][wname] = w
        results["loadavg_at_end"] = os.getloadavg()
        results["wall_seconds"] = time.perf_counter() - t_start
        results["command"] = "python benchmarks/compare_peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_outputs(results, args)
        return 0
    finally:
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
