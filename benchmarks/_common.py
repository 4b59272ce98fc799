"""Shared data, store builders and the kernel warm-up of the asv modules (no benchmarks here).

Sizes are module constants; ``ATLAS_BENCH_SMALL=1`` (read at import) shrinks them so the
whole suite runs once in seconds (``tests/test_benchmarks.py`` uses it). Every store is
built in ``setup_cache`` (asv's per-class working directory) or ``setup``; ``warm_kernels``
compiles, or loads from numba's on-disk cache, every kernel signature the benchmarks use,
so no timed call includes compilation.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

import atlas

from .compare.workloads import grid_array as _grid_array

SMALL = os.environ.get("ATLAS_BENCH_SMALL", "0") not in ("", "0", "false", "no")

# ---- many small datasets: three float32 (100,) arrays each
SMALL_VARS = ("a", "b", "c")
SMALL_LEN = 100
N_SMALL_INGEST = 20 if SMALL else 500  # datasets written per small-ingest call
N_SMALL_STORE = 50 if SMALL else 2000  # datasets in the store of the small read benchmarks
N_OPEN = 200 if SMALL else 10_000  # datasets in the store that OpenStore opens

# ---- gridded: three float32 (24, 90, 180) arrays chunked (6, 45, 90)
GRID_VARS = ("temp", "salt", "u")
GRID_DIMS = ("time", "lat", "lon")
GRID_SHAPE = (24, 90, 180)
GRID_CHUNK = (6, 45, 90)
N_GRID_INGEST = 1 if SMALL else 4  # datasets written per gridded-ingest call
N_GRID_STORE = 2 if SMALL else 16  # datasets in the store of the gridded read benchmarks

# ---- xarray: (24, 45, 90) variables with time/lat/lon coordinates
XR_SHAPE = (24, 45, 90)
XR_CHUNK = (6, 45, 90)
N_XR = 3 if SMALL else 20

# ---- compact: a store with deleted datasets and overwritten chunks
N_COMPACT = 40 if SMALL else 1000


def dataset_name(i: int) -> str:
    return f"ds{i:06d}"


# --------------------------------------------------------------------------- data
def small_data(n: int, seed: int = 11) -> np.ndarray:
    """``(n, 3, 100)`` float32: dataset ``i``'s arrays are ``data[i, 0..2]`` (rows are C-contiguous)."""
    return np.random.default_rng(seed).standard_normal((n, len(SMALL_VARS), SMALL_LEN), dtype=np.float32)


def grid_array(i: int, k: int, shape: tuple[int, ...] = GRID_SHAPE) -> np.ndarray:
    """The gridded field of the comparison harness (benchmarks/compare/workloads.py), one definition."""
    return _grid_array(i, k, shape)


def grid_rows(n: int, shape: tuple[int, ...] = GRID_SHAPE) -> list[dict[str, np.ndarray]]:
    return [{v: grid_array(i, k, shape) for k, v in enumerate(GRID_VARS)} for i in range(n)]


def xr_dataset(i: int, shape: tuple[int, ...] = XR_SHAPE):
    """An ``xarray.Dataset``: float32 ``temp``/``salt`` with float64 lat/lon and datetime64 time coords."""
    import xarray as xr

    t = np.datetime64("2024-01-01", "ns") + np.arange(shape[0]) * np.timedelta64(1, "h").astype("timedelta64[ns]")
    lat = np.linspace(-89.0, 89.0, shape[1])
    lon = np.linspace(0.0, 358.0, shape[2])
    data = {v: (GRID_DIMS, grid_array(i, k, shape), {"units": u})
            for k, (v, u) in enumerate((("temp", "degC"), ("salt", "psu")))}
    return xr.Dataset(data, coords={"time": t, "lat": lat, "lon": lon}, attrs={"member": i, "source": "bench"})


# --------------------------------------------------------------------------- builders
def define_small(ds: "atlas.DatasetView") -> None:
    for v in SMALL_VARS:
        ds.define_array(v, "float32", ["obs"], [SMALL_LEN])


def write_small(store: "atlas.Atlas", data: np.ndarray, first: int = 0) -> None:
    """Create datasets ``first .. first + len(data)`` holding the rows of ``data`` (not flushed)."""
    for i in range(data.shape[0]):
        ds = store.create_dataset(dataset_name(first + i))
        define_small(ds)
        for k, v in enumerate(SMALL_VARS):
            ds.write_array(v, [0], data[i, k])


def write_grid(store: "atlas.Atlas", rows: list[dict[str, np.ndarray]], shape: tuple[int, ...] = GRID_SHAPE,
               chunk: tuple[int, ...] = GRID_CHUNK) -> None:
    for i, row in enumerate(rows):
        ds = store.create_dataset(dataset_name(i))
        for v in GRID_VARS:
            ds.define_array(v, "float32", GRID_DIMS, shape, chunk_shape=chunk, fill_value=float("nan"))
            ds.write_array(v, (0, 0, 0), row[v])


def build_small_store(path: str, n: int, seed: int = 11) -> str:
    if os.path.exists(path):
        shutil.rmtree(path)
    store = atlas.Atlas.create(path, codec="zstd")
    write_small(store, small_data(n, seed))
    store.flush()
    return path


def build_grid_store(path: str, n: int) -> str:
    if os.path.exists(path):
        shutil.rmtree(path)
    store = atlas.Atlas.create(path, codec="zstd")
    write_grid(store, grid_rows(n))
    store.flush()
    return path


def build_xr_store(path: str, n: int) -> str:
    if os.path.exists(path):
        shutil.rmtree(path)
    store = atlas.Atlas.create(path, codec="zstd")
    for i in range(n):
        store.add_xr_dataset(xr_dataset(i), dataset_name(i), chunks={v: XR_CHUNK for v in ("temp", "salt")})
    store.flush()
    return path


def build_garbage_store(path: str, n: int) -> str:
    """``n`` small datasets in two flushes; then every other dataset deleted and a quarter rewritten."""
    if os.path.exists(path):
        shutil.rmtree(path)
    store = atlas.Atlas.create(path, codec="zstd")
    half = n // 2
    write_small(store, small_data(half, seed=1))
    store.flush()
    write_small(store, small_data(n - half, seed=2), first=half)
    store.flush()
    for i in range(0, n, 2):
        store.delete_dataset(dataset_name(i))
    fresh = small_data(n, seed=3)
    for i in range(1, n, 4):
        store.open_dataset(dataset_name(i)).write_array("a", [0], fresh[i, 0])
    store.flush()
    return path


def fresh_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"atlas-bench-{prefix}-")


# --------------------------------------------------------------------------- warm-up
_warmed = False


def _warm_stats() -> None:
    """The statistics kernel for the dtypes the benchmarks write (a tiny round trip's few
    cells alone would be summarised with NumPy: atlas._small)."""
    from atlas import _small
    from atlas._kernels import stats

    n = _small.SMALL_CELLS + 1
    for dt in (np.float32, np.float64, np.int64):
        for writable in (True, False):
            buf = np.zeros(n, dt)
            buf.flags.writeable = writable
            stats.chunk_stats(buf, np.asarray([n], np.int64), np.asarray([[n]], np.int64), False, dt(0), False,
                              False, False, dt(0))


def warm_kernels() -> None:
    """A tiny throwaway round trip through every code path the benchmarks time (once per process).

    Compiles (or loads from numba's cache) each kernel for each signature used later:
    writes and flush stats of float32/float64/int64 data, chunked 3-D and 1-D reads,
    stacked reads, read_arrays, array_stats, xarray in and out, compact.
    """
    global _warmed
    if _warmed:
        return
    tmp = fresh_dir("warm")
    try:
        p = build_small_store(os.path.join(tmp, "small"), 4)
        st = atlas.Atlas.open(p)
        names = st.list_datasets()
        ds = st.open_dataset(names[0])
        ds.read_array("a")
        ds.read_array("a", [10], [20])
        ds.read_arrays(list(SMALL_VARS))
        ds.array_stats("a")
        st.read_array_across_stacked("a", names)
        st.read_array_across_stacked("a", names, [0], [25])

        shape = (GRID_CHUNK[0] * 2, GRID_CHUNK[1], GRID_CHUNK[2] * 2)
        st = atlas.Atlas.create(os.path.join(tmp, "grid"), codec="zstd")
        write_grid(st, grid_rows(2, shape), shape)
        st.flush()
        st = atlas.Atlas.open(os.path.join(tmp, "grid"))
        names = st.list_datasets()
        ds = st.open_dataset(names[0])
        ds.read_array("temp")
        ds.read_array("temp", (1, 5, 50), (6, 30, 60))
        ds.read_arrays(list(GRID_VARS))
        ds.read_arrays(list(GRID_VARS), (0, 0, 0), GRID_CHUNK)
        ds.array_stats("temp")
        st.read_array_across_stacked("temp", names, (0, 0, 0), GRID_CHUNK)

        xshape = (XR_CHUNK[0] * 2,) + XR_SHAPE[1:]
        st = atlas.Atlas.create(os.path.join(tmp, "xr"), codec="zstd")
        for i in range(2):
            st.add_xr_dataset(xr_dataset(i, xshape), dataset_name(i), chunks={v: XR_CHUNK for v in ("temp", "salt")})
        st.flush()
        st = atlas.Atlas.open(os.path.join(tmp, "xr"))
        st.to_xarray(dataset_name(0), chunks=None)
        st.to_xarray(dataset_name(0)).load()
        st.to_xarray_many([dataset_name(0), dataset_name(1)])

        p = build_garbage_store(os.path.join(tmp, "garbage"), 8)
        atlas.Atlas.open(p).compact()
        _warm_stats()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _warmed = True
