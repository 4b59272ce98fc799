#!/usr/bin/env python
"""atlas vs h5py, netCDF4 and zarr v3 on many gridded datasets: ingest, stacked read, full reads.

Workload: N datasets (default 200), each with three float32 arrays ``temp``, ``salt``, ``u`` of
shape (time=24, lat=90, lon=180), chunked (6, 45, 90) (16 chunks of 97,200 bytes per array).
Values are smooth fields plus noise, quantized to 10 mantissa bits, so that zstd (level 3)
compresses them about 2x; the script measures and prints the ratio. Every child generates the
same data from a fixed seed (before its clock starts).

Systems (zstd level 3 everywhere it is available):

* ``atlas``: one store (codec zstd), ``create_dataset`` + ``define_array`` + ``write_array``
  per dataset, one ``flush()`` at the end (which fsyncs; the peers do not, see the
  ``+ fsync`` row, where the peers' written files are fsynced after they are closed).
* ``h5py``: one file, a group per dataset, chunked datasets; hdf5plugin's Zstd(3) if
  hdf5plugin is importable, else gzip level 1 (the table says which). Reads use ``read_direct``.
* ``netCDF4``: one file per dataset, ``compression="zstd", complevel=3`` if the netCDF library
  supports it (probed), else zlib level 1 (said in the table); ``set_fill_off()``.
* ``zarr``: zarr v3, one LocalStore directory per dataset, ZstdCodec(level=3).
* ``zarr-grp``: zarr v3, one LocalStore, one group per dataset.

Phases, each timed in its own fresh subprocess per repeat (imports and a tiny throwaway
round trip of the same system, which for atlas compiles/loads the Numba kernels, happen
before the clock; the page cache is warm: stores were just written):

1. ``ingest``: create, write all datasets, flush/close. Also the child's peak RSS
   (VmHWM, reset just before the clock with ``/proc/self/clear_refs``, else ``ru_maxrss``); the
   source data, about N x 4.7 MB, is resident before the clock, so the "over pre-ingest RSS"
   row is what the system itself added.
2. ``stacked``: ``temp[0:6, 0:45, 0:90]`` (one chunk) of every dataset into one
   (N, 6, 45, 90) array. atlas: ``read_array_across_stacked``; others: a loop into a
   preallocated array.
3. ``read_arrays``: the three variables, full, of every dataset (reopen first).
   atlas: ``open_dataset(n).read_arrays([...])`` per dataset; others: a loop.
4. ``floor`` (in the atlas stacked child, after the timed read): the same (6, 45, 90) block of
   ``temp`` of every dataset compressed with zstandard level 3 in setup, then decompressed
   with a ``ThreadPoolExecutor`` of ``os.cpu_count()`` threads (pre-started); median of 5
   in-process runs. The table reports atlas stacked / floor.

Medians over ``--repeats`` (default 5). The stacked results of every system are checked
against atlas's and the source data, and full reads of the first and last dataset too.

    python benchmarks/compare_gridded.py [--repeats 5] [--datasets 200] [--json out.json] [--quick]
    python benchmarks/compare_gridded.py --profile ingest|stacked|read_arrays [--profiler pyinstrument|cprofile]

With ``--profile``, only atlas is run: the phase once timed, then ``--profile-loops`` more
times under the profiler (``--profiler none`` runs them unprofiled, e.g. under
``py-spy record -- python benchmarks/compare_gridded.py --child atlas stacked ...``).
Note that cProfile and pyinstrument only see the main thread, not atlas's pool threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

VARS = ("temp", "salt", "u")
DIMS = ("time", "lat", "lon")
SHAPE = (24, 90, 180)
CHUNK = (6, 45, 90)
STACK_VAR = "temp"
STACK_START = (0, 0, 0)
STACK_COUNT = (6, 45, 90)
STACK_SLICE = tuple(slice(a, a + b) for a, b in zip(STACK_START, STACK_COUNT))
KEEP_MANTISSA_BITS = 10
ZSTD_LEVEL = 3
SEED = 20240917
SYSTEMS = ("atlas", "h5py", "netcdf4", "zarr", "zarr-grp")
PEERS = SYSTEMS[1:]
PHASES = ("ingest", "stacked", "read_arrays")
FLOOR_RUNS = 5
CHILD_TIMEOUT = 3600


# --------------------------------------------------------------------------- data
def dataset_name(i: int) -> str:
    return f"ds{i:05d}"


_GRID: dict[str, np.ndarray] = {}


def make_array(i: int, var: int, seed: int = SEED) -> np.ndarray:
    """Dataset ``i``'s array number ``var``: float32 SHAPE, smooth + noise, 10 mantissa bits kept."""
    if not _GRID:
        _GRID["t"] = np.arange(SHAPE[0], dtype=np.float32)[:, None, None]
        _GRID["y"] = np.linspace(-1.5, 1.5, SHAPE[1], dtype=np.float32)[None, :, None]
        _GRID["x"] = np.linspace(0, 2 * np.pi, SHAPE[2], dtype=np.float32)[None, None, :]
    t, y, x = _GRID["t"], _GRID["y"], _GRID["x"]
    rng = np.random.default_rng([seed, i, var])
    p = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    scale = np.float32((15.0, 35.0, 1.0)[var % 3])
    f = scale + np.float32(10) * np.cos(y) * np.sin(np.float32(2) * x + p[0] + np.float32(0.1) * t)
    f = f + np.float32(3) * np.sin(np.float32(3) * y + p[1]) * np.cos(x + p[2] - np.float32(0.05) * t)
    f = (f + rng.standard_normal(SHAPE, dtype=np.float32) * np.float32(0.5)).astype(np.float32)
    mask = np.uint32((0xFFFFFFFF << (23 - KEEP_MANTISSA_BITS)) & 0xFFFFFFFF)
    return np.ascontiguousarray((f.view(np.uint32) & mask).view(np.float32))


def make_rows(n: int) -> list[dict[str, np.ndarray]]:
    return [{v: make_array(i, k) for k, v in enumerate(VARS)} for i in range(n)]


def stack_source(n: int) -> np.ndarray:
    k = VARS.index(STACK_VAR)
    return np.stack([make_array(i, k)[STACK_SLICE] for i in range(n)])


def compression_ratio(n: int = 4) -> float:
    """zstd level-3 ratio of the chunks of the first ``n`` datasets (raw / compressed)."""
    import zstandard

    zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    raw = comp = 0
    for row in make_rows(n):
        for a in row.values():
            for t0 in range(0, SHAPE[0], CHUNK[0]):
                for y0 in range(0, SHAPE[1], CHUNK[1]):
                    for x0 in range(0, SHAPE[2], CHUNK[2]):
                        b = np.ascontiguousarray(a[t0:t0 + CHUNK[0], y0:y0 + CHUNK[1], x0:x0 + CHUNK[2]]).tobytes()
                        raw += len(b)
                        comp += len(zc.compress(b))
    return raw / comp


# --------------------------------------------------------------------------- atlas
def atlas_ingest(path: str, rows: list[dict[str, np.ndarray]], shape: tuple[int, ...] = SHAPE) -> None:
    import atlas

    store = atlas.Atlas.create(path, codec="zstd")
    for i, row in enumerate(rows):
        ds = store.create_dataset(dataset_name(i))
        for v in VARS:
            ds.define_array(v, "float32", DIMS, shape, chunk_shape=CHUNK)
            ds.write_array(v, (0, 0, 0), row[v])
    store.flush()


def atlas_stacked(path: str, names: list[str]) -> np.ndarray:
    import atlas

    store = atlas.Atlas.open(path)
    return store.read_array_across_stacked(STACK_VAR, names, STACK_START, STACK_COUNT)


def atlas_read_arrays(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import atlas

    store = atlas.Atlas.open(path)
    out = []
    for n in names:
        d = store.open_dataset(n).read_arrays(list(VARS))
        out.append([d[v] for v in VARS])
    return out


# --------------------------------------------------------------------------- h5py
def h5py_codec() -> tuple[dict[str, Any], str]:
    try:
        import hdf5plugin
    except ImportError:
        return {"compression": "gzip", "compression_opts": 1}, "gzip 1, no hdf5plugin"
    return dict(hdf5plugin.Zstd(clevel=ZSTD_LEVEL)), f"zstd {ZSTD_LEVEL}, hdf5plugin"


def h5py_ingest(path: str, rows: list[dict[str, np.ndarray]], shape: tuple[int, ...] = SHAPE) -> None:
    import h5py

    kw, _ = h5py_codec()
    with h5py.File(path, "w") as f:
        for i, row in enumerate(rows):
            g = f.create_group(dataset_name(i))
            for v in VARS:
                g.create_dataset(v, data=row[v], chunks=CHUNK, **kw)


def h5py_stacked(path: str, names: list[str]) -> np.ndarray:
    import h5py

    h5py_codec()  # registers the hdf5plugin filters
    out = np.empty((len(names),) + STACK_COUNT, np.float32)
    with h5py.File(path, "r") as f:
        for i, n in enumerate(names):
            f[n][STACK_VAR].read_direct(out, STACK_SLICE, np.s_[i])
    return out


def h5py_read_arrays(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import h5py

    h5py_codec()
    out = []
    with h5py.File(path, "r") as f:
        for n in names:
            g = f[n]
            row = []
            for v in VARS:
                d = g[v]
                a = np.empty(d.shape, np.float32)
                d.read_direct(a)
                row.append(a)
            out.append(row)
    return out


# --------------------------------------------------------------------------- netCDF4
def netcdf_codec() -> tuple[dict[str, Any], str]:
    """zstd level 3 if this netCDF library can write and read it back, else zlib level 1."""
    import netCDF4

    tmp = tempfile.mkdtemp(prefix="nc-probe-")
    try:
        p = os.path.join(tmp, "probe.nc")
        with netCDF4.Dataset(p, "w") as d:
            d.createDimension("x", 64)
            var = d.createVariable("a", "f4", ("x",), compression="zstd", complevel=ZSTD_LEVEL, chunksizes=(64,))
            var[:] = np.arange(64, dtype=np.float32)
        with netCDF4.Dataset(p, "r") as d:
            ok = bool(d["a"].filters().get("zstd")) and np.array_equal(d["a"][:], np.arange(64, dtype=np.float32))
        if ok:
            return {"compression": "zstd", "complevel": ZSTD_LEVEL}, f"zstd {ZSTD_LEVEL}"
    except Exception:  # noqa: BLE001 - any failure means: no zstd
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"compression": "zlib", "complevel": 1}, "zlib 1, no zstd in netCDF"


_NC_KW: list[dict[str, Any]] = []


def nc_file(path: str, name: str) -> str:
    return os.path.join(path, name + ".nc")


def netcdf4_ingest(path: str, rows: list[dict[str, np.ndarray]], shape: tuple[int, ...] = SHAPE) -> None:
    import netCDF4

    if not _NC_KW:
        _NC_KW.append(netcdf_codec()[0])
    kw = _NC_KW[0]
    os.makedirs(path, exist_ok=True)
    for i, row in enumerate(rows):
        with netCDF4.Dataset(nc_file(path, dataset_name(i)), "w") as d:
            d.set_fill_off()
            for dim, size in zip(DIMS, shape):
                d.createDimension(dim, size)
            for v in VARS:
                var = d.createVariable(v, "f4", DIMS, chunksizes=CHUNK, **kw)
                var[:] = row[v]


def netcdf4_stacked(path: str, names: list[str]) -> np.ndarray:
    import netCDF4

    out = np.empty((len(names),) + STACK_COUNT, np.float32)
    for i, n in enumerate(names):
        with netCDF4.Dataset(nc_file(path, n), "r") as d:
            d.set_auto_mask(False)
            out[i] = d[STACK_VAR][STACK_SLICE]
    return out


def netcdf4_read_arrays(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import netCDF4

    out = []
    for n in names:
        with netCDF4.Dataset(nc_file(path, n), "r") as d:
            d.set_auto_mask(False)
            out.append([d[v][:] for v in VARS])
    return out


# --------------------------------------------------------------------------- zarr
def _zarr_write_group(g: Any, row: dict[str, np.ndarray], shape: tuple[int, ...]) -> None:
    from zarr.codecs import ZstdCodec

    for v in VARS:
        a = g.create_array(v, shape=shape, chunks=CHUNK, dtype="float32", compressors=ZstdCodec(level=ZSTD_LEVEL),
                           fill_value=0.0, dimension_names=DIMS)
        a[...] = row[v]


def zarr_dir(path: str, name: str) -> str:
    return os.path.join(path, name + ".zarr")


def zarr_ingest(path: str, rows: list[dict[str, np.ndarray]], shape: tuple[int, ...] = SHAPE) -> None:
    import zarr
    from zarr.storage import LocalStore

    os.makedirs(path, exist_ok=True)
    for i, row in enumerate(rows):
        g = zarr.open_group(LocalStore(zarr_dir(path, dataset_name(i))), mode="w")
        _zarr_write_group(g, row, shape)


def zarr_stacked(path: str, names: list[str]) -> np.ndarray:
    import zarr
    from zarr.storage import LocalStore

    out = np.empty((len(names),) + STACK_COUNT, np.float32)
    for i, n in enumerate(names):
        out[i] = zarr.open_array(LocalStore(zarr_dir(path, n), read_only=True), path=STACK_VAR)[STACK_SLICE]
    return out


def zarr_read_arrays(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import zarr
    from zarr.storage import LocalStore

    out = []
    for n in names:
        st = LocalStore(zarr_dir(path, n), read_only=True)
        out.append([zarr.open_array(st, path=v)[...] for v in VARS])
    return out


def zarr_grp_ingest(path: str, rows: list[dict[str, np.ndarray]], shape: tuple[int, ...] = SHAPE) -> None:
    import zarr
    from zarr.storage import LocalStore

    root = zarr.open_group(LocalStore(path), mode="w")
    for i, row in enumerate(rows):
        _zarr_write_group(root.create_group(dataset_name(i)), row, shape)


def zarr_grp_stacked(path: str, names: list[str]) -> np.ndarray:
    import zarr
    from zarr.storage import LocalStore

    st = LocalStore(path, read_only=True)
    out = np.empty((len(names),) + STACK_COUNT, np.float32)
    for i, n in enumerate(names):
        out[i] = zarr.open_array(st, path=f"{n}/{STACK_VAR}")[STACK_SLICE]
    return out


def zarr_grp_read_arrays(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import zarr
    from zarr.storage import LocalStore

    st = LocalStore(path, read_only=True)
    return [[zarr.open_array(st, path=f"{n}/{v}")[...] for v in VARS] for n in names]


IMPL: dict[str, dict[str, Callable[..., Any]]] = {
    "atlas": {"ingest": atlas_ingest, "stacked": atlas_stacked, "read_arrays": atlas_read_arrays},
    "h5py": {"ingest": h5py_ingest, "stacked": h5py_stacked, "read_arrays": h5py_read_arrays},
    "netcdf4": {"ingest": netcdf4_ingest, "stacked": netcdf4_stacked, "read_arrays": netcdf4_read_arrays},
    "zarr": {"ingest": zarr_ingest, "stacked": zarr_stacked, "read_arrays": zarr_read_arrays},
    "zarr-grp": {"ingest": zarr_grp_ingest, "stacked": zarr_grp_stacked, "read_arrays": zarr_grp_read_arrays},
}
IMPORTS = {"atlas": ("atlas",), "h5py": ("h5py",), "netcdf4": ("netCDF4",), "zarr": ("zarr",), "zarr-grp": ("zarr",)}


def store_path(workdir: str, system: str, tag: str) -> str:
    return os.path.join(workdir, f"{system}-{tag}" + (".h5" if system == "h5py" else ""))


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def tree_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    return [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]


def tree_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in tree_files(path))


def fsync_tree(path: str) -> None:
    """fsync every file and directory under ``path`` (what atlas's flush does for its own files)."""
    dirs = {path} if os.path.isdir(path) else {os.path.dirname(path)}
    for p in tree_files(path):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dirs.add(os.path.dirname(p))
    for d in sorted(dirs):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def warmup(system: str) -> None:
    """A tiny throwaway round trip of every call the phases use (for atlas: compiles/loads the Numba kernels)."""
    tmp = tempfile.mkdtemp(prefix=f"{system}-warm-")
    try:
        shape = (CHUNK[0], CHUNK[1], 2 * CHUNK[2])  # two full chunks per array, float32 like the real data
        rows = [{v: np.ascontiguousarray(make_array(i, k, seed=1)[:shape[0], :shape[1], :shape[2]])
                 for k, v in enumerate(VARS)} for i in range(2)]
        path = store_path(tmp, system, "warm")
        impl = IMPL[system]
        impl["ingest"](path, rows, shape)
        names = [dataset_name(i) for i in range(2)]
        impl["stacked"](path, names)
        impl["read_arrays"](path, names)
        if system == "atlas":
            import atlas

            store = atlas.Atlas.open(path)
            store.open_dataset(names[0]).read_array("temp", (0, 0, 0), (2, 3, 4))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- floor
def floor_blobs(n: int) -> list[bytes]:
    import zstandard

    zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return [zc.compress(np.ascontiguousarray(b).tobytes()) for b in stack_source(n)]


def measure_floor(blobs: list[bytes], runs: int = FLOOR_RUNS) -> dict[str, Any]:
    """Decompress every blob with a pre-started pool of os.cpu_count() threads; median of ``runs``."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import zstandard

    local = threading.local()
    raw = int(np.prod(STACK_COUNT)) * 4

    def dec(b: bytes) -> int:
        d = getattr(local, "d", None)
        if d is None:
            d = local.d = zstandard.ZstdDecompressor()
        return len(d.decompress(b, max_output_size=raw))

    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(dec, blobs[:threads]))  # start the threads, create their decompressors
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            total = sum(pool.map(dec, blobs))
            times.append(time.perf_counter() - t0)
    assert total == raw * len(blobs)
    return {"floor_seconds": statistics.median(times), "floor_min": min(times), "floor_threads": threads,
            "floor_compressed_bytes": sum(len(b) for b in blobs)}


# --------------------------------------------------------------------------- child
def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(was_reset: bool) -> int:
    """Peak RSS since the last reset (VmHWM); else ``ru_maxrss``, which may include the generation peak
    and, after a fork + exec, the parent's peak."""
    hwm = _vm_kib("VmHWM") if was_reset else None
    if hwm is not None:
        return hwm * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child_main(args: argparse.Namespace) -> int:
    """One timed phase of one system; prints a json line with ``seconds`` (and extras)."""
    system, phase = args.child
    for mod in IMPORTS[system]:
        __import__(mod)
    warmup(system)
    n = args.datasets
    names = [dataset_name(i) for i in range(n)]
    impl = IMPL[system]
    res: dict[str, Any] = {"system": system, "phase": phase}
    if phase == "ingest":
        rows = make_rows(n)

        def once(k: int = 0) -> None:
            target = args.target if k == 0 else f"{args.target}.p{k}"
            impl["ingest"](target, rows)
            if k:
                remove(target)

        was_reset = reset_peak_rss()
        res["base_rss_mb"] = rss_bytes() / 1e6
        t0 = time.perf_counter()
        once()
        res["seconds"] = time.perf_counter() - t0
        res["peak_rss_mb"] = peak_rss_bytes(was_reset) / 1e6
        res["peak_rss_source"] = "VmHWM reset before the clock" if was_reset else "ru_maxrss"
        if system != "atlas":
            t0 = time.perf_counter()
            fsync_tree(args.target)
            res["fsync_seconds"] = time.perf_counter() - t0
        res["store_bytes"] = tree_bytes(args.target)
    else:
        def once(k: int = 0) -> None:
            result = impl[phase](args.target, names)
            assert len(result) == n

        t0 = time.perf_counter()
        once()
        res["seconds"] = time.perf_counter() - t0
        if system == "atlas" and phase == "stacked":
            t0 = time.perf_counter()
            once()
            res["second_call_seconds"] = time.perf_counter() - t0
            res.update(measure_floor(floor_blobs(n)))
    print(json.dumps(res), flush=True)
    if args.profile_loops:
        loops = args.profile_loops
        if args.profiler == "none":
            t0 = time.perf_counter()
            for k in range(1, loops + 1):
                once(k)
            print(f"{loops} more unprofiled runs: {(time.perf_counter() - t0) / loops:.4f} s each", flush=True)
        else:
            print(profile_report(lambda: [once(k) for k in range(1, loops + 1)], args.profiler), flush=True)
    return 0


def profile_report(fn: Callable[[], Any], profiler: str) -> str:
    """Run ``fn`` under pyinstrument (if installed and asked for / auto) or cProfile; the text report."""
    if profiler in ("auto", "pyinstrument"):
        try:
            from pyinstrument import Profiler
        except ImportError:
            if profiler == "pyinstrument":
                raise
        else:
            prof = Profiler(interval=0.0005)
            prof.start()
            fn()
            prof.stop()
            return prof.output_text(unicode=False, color=False, show_all=False)
    import cProfile
    import io
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


def child_cmd(system: str, phase: str, workdir: str, n: int, target: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--child", system, phase, "--workdir", workdir,
            "--datasets", str(n), "--target", target]


def run_child(system: str, phase: str, workdir: str, n: int, target: str) -> dict[str, Any]:
    proc = subprocess.run(child_cmd(system, phase, workdir, n, target), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"child {system}/{phase} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def profile_main(args: argparse.Namespace, workdir: str) -> int:
    """``--profile PHASE``: one atlas child for PHASE with a profiler report."""
    n, phase = args.datasets, args.profile
    if phase == "ingest":
        target = store_path(workdir, "atlas", "profile")
    else:
        target = store_path(workdir, "atlas", "read")
        run_child("atlas", "ingest", workdir, n, target)
    cmd = child_cmd("atlas", phase, workdir, n, target) + [
        "--profile-loops", str(args.profile_loops or (3 if phase != "stacked" else 50)), "--profiler", args.profiler]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


# --------------------------------------------------------------------------- verify
def verify(n: int, paths: dict[str, str]) -> str:
    """Every system's stacked read == atlas's == the source; full reads of the first and last dataset too."""
    names = [dataset_name(i) for i in range(n)]
    src = stack_source(n)
    ref = atlas_stacked(paths["atlas"], names)
    if ref.dtype != np.float32 or ref.shape != (n,) + STACK_COUNT or not np.array_equal(ref, src):
        raise AssertionError("atlas stacked read differs from the source data")
    for s in PEERS:
        got = IMPL[s]["stacked"](paths[s], names)
        if got.dtype != ref.dtype or got.shape != ref.shape or not np.array_equal(got, ref):
            raise AssertionError(f"stacked read: {s} != atlas")
    some = sorted({0, n - 1})
    for s in SYSTEMS:
        got = IMPL[s]["read_arrays"](paths[s], [names[i] for i in some])
        for row, i in zip(got, some):
            for k, v in enumerate(VARS):
                a = np.asarray(row[k])
                if a.dtype != np.float32 or not np.array_equal(a, make_array(i, k)):
                    raise AssertionError(f"{s}: {names[i]}/{v} differs from the source data")
    return (f"ok: stacked {STACK_VAR} of {n} datasets equal in atlas, {', '.join(PEERS)} and the source; "
            f"full reads of {', '.join(names[i] for i in some)} equal the source in every system")


# --------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    import h5py
    import netCDF4
    import numba
    import numcodecs
    import zarr
    import zstandard

    import atlas

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:
        mem = None
    try:
        import hdf5plugin

        hp = hdf5plugin.version
    except ImportError:
        hp = None
    return {
        "cpu_count": os.cpu_count(), "cpu_affinity": affinity, "cpu_model": _cpu_model(), "memory_bytes": mem,
        "loadavg_at_start": os.getloadavg(), "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__, "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version, "hdf5plugin": hp, "netCDF4": netCDF4.__version__,
        "netcdf_lib": netCDF4.__netcdf4libversion__, "netcdf_hdf5": netCDF4.__hdf5libversion__,
        "zarr": zarr.__version__, "numcodecs": numcodecs.__version__, "zstandard": zstandard.__version__,
        "atlas": atlas.__version__, "atlas_num_threads": atlas.num_threads(), "atlas_git": _git_state(),
    }


def _git_state() -> str:
    import atlas

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(atlas.__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _med(vals: list[float]) -> float:
    return statistics.median(vals) if vals else float("nan")


def render_table(r: dict[str, Any]) -> str:
    n, reps = r["datasets"], r["repeats"]
    raw_mb = n * len(VARS) * int(np.prod(SHAPE)) * 4 / 1e6
    labels = {"atlas": "atlas (zstd 3)", "h5py": f"h5py ({r['codecs']['h5py']})",
              "netcdf4": f"netCDF4 ({r['codecs']['netcdf4']})", "zarr": "zarr v3 store/ds (zstd 3)",
              "zarr-grp": "zarr v3 group/ds (zstd 3)"}
    m = r["metrics"]

    def fmt(x: float, unit: str) -> str:
        if x != x:  # nan
            return "-"
        return f"{x:.1f}" if unit == "MB" else f"{x:.4f}"

    rows = [
        ("ingest: create, write all, flush/close (s)", "ingest", "s"),
        ("ingest + fsync of the written files (s)", "ingest_fsync", "s"),
        (f"stacked: {STACK_VAR}[0:6,0:45,0:90] x N -> (N,6,45,90) (s)", "stacked", "s"),
        ("read_arrays: 3 vars full x N (s)", "read_arrays", "s"),
        ("ingest peak RSS (MB)", "peak_rss_mb", "MB"),
        ("ingest peak RSS over pre-ingest RSS (MB)", "rss_added_mb", "MB"),
        ("store size on disk (MB)", "store_mb", "MB"),
    ]
    lines = [
        f"### gridded: {n} datasets x 3 float32 {SHAPE} arrays chunked {CHUNK} ({raw_mb:.0f} MB raw), "
        f"median of {reps} fresh-process repeat(s)",
        "",
        "| phase | " + " | ".join(labels[s] for s in SYSTEMS) + " | atlas/h5py | atlas/netCDF4 |",
        "| --- |" + " ---: |" * (len(SYSTEMS) + 2),
    ]
    for title, key, unit in rows:
        vals = {s: m[key].get(s, float("nan")) for s in SYSTEMS}
        rh = vals["atlas"] / vals["h5py"] if vals["h5py"] else float("nan")
        rn = vals["atlas"] / vals["netcdf4"] if vals["netcdf4"] else float("nan")
        lines.append(f"| {title} | " + " | ".join(fmt(vals[s], unit) for s in SYSTEMS)
                     + f" | {rh:.3f}x | {rn:.3f}x |")
    fl = r["floor"]
    lines.append(f"| floor: zstd-decompress the N touched chunks, {fl['threads']} threads (s) | {fl['seconds']:.4f} |"
                 + " - |" * (len(SYSTEMS) - 1) + " - | - |")
    mi = r["machine"]
    lines += [
        "",
        f"atlas stacked / floor = {fl['ratio']:.2f}x (floor: {fl['compressed_mb']:.2f} MB compressed, median of "
        f"{FLOOR_RUNS} in-process runs per child); atlas stacked second call in the same process: "
        f"{fl['second_call']:.4f} s",
        f"data: zstd level {ZSTD_LEVEL} ratio of the source chunks {r['zstd_ratio']:.2f}x "
        f"(float32, {KEEP_MANTISSA_BITS} mantissa bits kept)",
        "notes: page cache warm; atlas's flush fsyncs, the peers' closes do not (see the '+ fsync' row); "
        "peak RSS includes the source data resident before the clock.",
        f"machine: {mi['cpu_count']} cpu(s) (affinity {mi['cpu_affinity']}, {mi['cpu_model']}), "
        f"{(mi['memory_bytes'] or 0) / 2**30:.1f} GiB, load at start "
        f"{tuple(round(x, 2) for x in mi['loadavg_at_start'])}, at end {tuple(round(x, 2) for x in r['loadavg_at_end'])}, "
        f"{mi['platform']}",
        f"python {mi['python']}, numpy {mi['numpy']}, numba {mi['numba']}, h5py {mi['h5py']} (HDF5 {mi['hdf5']}, "
        f"hdf5plugin {mi['hdf5plugin']}), netCDF4 {mi['netCDF4']} (netCDF {mi['netcdf_lib']}, HDF5 {mi['netcdf_hdf5']}), "
        f"zarr {mi['zarr']} (numcodecs {mi['numcodecs']}), zstandard {mi['zstandard']}, atlas {mi['atlas']} @ "
        f"{mi['atlas_git']} ({mi['atlas_num_threads']} thread(s))",
        f"verify: {r['verify']}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=None, help="fresh-process repeats per system and phase (default 5)")
    p.add_argument("--datasets", type=int, default=None, help="number of datasets (default 200)")
    p.add_argument("--quick", action="store_true", help="smoke test: 20 datasets, 1 repeat (unless given)")
    p.add_argument("--json", metavar="OUT", help="also write the results (every repeat) to this json file")
    p.add_argument("--workdir", help="where stores are written (default: a new temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--profile", choices=PHASES, help="instead of the comparison: profile atlas's child for this phase")
    p.add_argument("--profile-loops", type=int, default=0, metavar="K", help="runs under the profiler")
    p.add_argument("--profiler", choices=("auto", "pyinstrument", "cprofile", "none"), default="auto")
    p.add_argument("--child", nargs=2, metavar=("SYSTEM", "PHASE"), help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.repeats is None:
        a.repeats = 1 if a.quick else 5
    if a.datasets is None:
        a.datasets = 20 if a.quick else 200
    if a.repeats < 1 or a.datasets < 1:
        p.error("--repeats and --datasets must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    n, reps = args.datasets, args.repeats
    own_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="atlas-gridded-") if own_workdir else os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    try:
        if args.profile:
            return profile_main(args, workdir)
        machine = machine_info()
        codecs_used = {"h5py": h5py_codec()[1], "netcdf4": netcdf_codec()[1]}
        ratio = compression_ratio(min(n, 4))
        print(f"data: zstd-{ZSTD_LEVEL} ratio {ratio:.2f}x; h5py {codecs_used['h5py']}; "
              f"netCDF4 {codecs_used['netcdf4']}; workdir {workdir}", file=sys.stderr, flush=True)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {ph: {s: [] for s in SYSTEMS} for ph in PHASES}
        read_store = {s: store_path(workdir, s, "read") for s in SYSTEMS}

        def order(r: int) -> tuple[str, ...]:
            k = r % len(SYSTEMS)
            return SYSTEMS[k:] + SYSTEMS[:k]

        for r in range(reps):  # every repeat writes a fresh store; the first one is kept for the reads
            for s in order(r):
                target = read_store[s] if r == 0 else store_path(workdir, s, f"ingest{r}")
                res = run_child(s, "ingest", workdir, n, target)
                runs["ingest"][s].append(res)
                if r:
                    remove(target)
                print(f"  ingest      {r + 1}/{reps} {s:8s} {res['seconds']:.4f} s  peak {res['peak_rss_mb']:.0f} MB",
                      file=sys.stderr, flush=True)
        for phase in ("stacked", "read_arrays"):
            for r in range(reps):
                for s in order(r):
                    res = run_child(s, phase, workdir, n, read_store[s])
                    runs[phase][s].append(res)
                    extra = f"  floor {res['floor_seconds']:.4f} s" if "floor_seconds" in res else ""
                    print(f"  {phase:11s} {r + 1}/{reps} {s:8s} {res['seconds']:.4f} s{extra}", file=sys.stderr, flush=True)
        verdict = verify(n, read_store)

        def col(phase: str, key: str) -> dict[str, float]:
            return {s: _med([x[key] for x in runs[phase][s] if key in x]) for s in SYSTEMS}

        metrics = {ph: col(ph, "seconds") for ph in PHASES}
        metrics["ingest_fsync"] = {s: _med([x["seconds"] + x.get("fsync_seconds", 0.0) for x in runs["ingest"][s]])
                                   for s in SYSTEMS}
        metrics["peak_rss_mb"] = col("ingest", "peak_rss_mb")
        metrics["rss_added_mb"] = {s: _med([x["peak_rss_mb"] - x["base_rss_mb"] for x in runs["ingest"][s]])
                                   for s in SYSTEMS}
        metrics["store_mb"] = {s: _med([x["store_bytes"] / 1e6 for x in runs["ingest"][s]]) for s in SYSTEMS}
        a_st = runs["stacked"]["atlas"]
        floor = {
            "seconds": _med([x["floor_seconds"] for x in a_st]),
            "ratio": _med([x["seconds"] / x["floor_seconds"] for x in a_st]),
            "threads": a_st[0]["floor_threads"],
            "compressed_mb": a_st[0]["floor_compressed_bytes"] / 1e6,
            "second_call": _med([x["second_call_seconds"] for x in a_st]),
        }
        results: dict[str, Any] = {
            "datasets": n, "repeats": reps, "machine": machine, "codecs": codecs_used, "zstd_ratio": ratio,
            "verify": verdict, "metrics": metrics, "floor": floor, "runs": runs, "loadavg_at_end": os.getloadavg(),
        }
        print(render_table(results))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
        return 0
    finally:
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
