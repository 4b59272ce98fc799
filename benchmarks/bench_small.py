"""asv benchmarks: many small datasets (ingest, read_array full/partial, stacked reads, stats, import).

Every dataset holds three float32 arrays ``a``, ``b``, ``c`` of shape (100,) and a ``time``
coordinate (datetime64[ns], shape (100,)); a few datasets also hold a chunked 2-D
``field`` (float32 (256, 256), chunks (64, 64)) for partial reads across chunk borders.

Sizes are module constants; ``ATLAS_BENCH_SMALL=1`` (read at import) shrinks them so the
whole suite runs once in a few seconds (``tests/test_benchmarks.py`` uses it).
Numba kernels are compiled (or loaded from numba's cache) in ``setup`` by a throwaway
round trip, so no timing includes compilation.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import numpy as np

import atlas

SMALL = os.environ.get("ATLAS_BENCH_SMALL", "0") not in ("", "0", "false", "no")

N_INGEST = 20 if SMALL else 200  # datasets written per ingest call
N_STORE = 50 if SMALL else 1000  # datasets in the store read by the read/stacked/stats benchmarks
N_FIELD = 2 if SMALL else 10  # datasets that also hold the 2-D chunked "field"
LENGTH = 100
FLOAT_ARRAYS = ("a", "b", "c")
ALL_ARRAYS = FLOAT_ARRAYS + ("time",)
FIELD_SHAPE = (256, 256)
FIELD_CHUNK = (64, 64)


def dataset_name(i: int) -> str:
    return f"ds{i:05d}"


@functools.lru_cache(maxsize=4)
def make_rows(n: int, seed: int = 7) -> tuple[dict[str, np.ndarray], ...]:
    """Per-dataset arrays (C-contiguous, exact dtypes), deterministic."""
    rng = np.random.default_rng(seed)
    base = np.datetime64("2020-01-01T00:00:00", "ns")
    step = np.timedelta64(3600, "s").astype("timedelta64[ns]")
    day = np.timedelta64(1, "D").astype("timedelta64[ns]")
    rows = []
    for i in range(n):
        row = {k: rng.standard_normal(LENGTH, dtype=np.float32) for k in FLOAT_ARRAYS}
        row["time"] = (base + i * day + np.arange(LENGTH) * step).astype("datetime64[ns]")
        rows.append(row)
    return tuple(rows)


def ingest(path: str, rows, with_field: int = 0) -> "atlas.Atlas":
    """Create a store at ``path`` holding ``rows`` (one dataset each), flushed."""
    store = atlas.Atlas.create(path, codec="zstd")
    for i, row in enumerate(rows):
        ds = store.create_dataset(dataset_name(i))
        for k in FLOAT_ARRAYS:
            ds.define_array(k, "float32", ["obs"], [LENGTH])
        ds.define_array("time", "datetime64[ns]", ["obs"], [LENGTH])
        for k in ALL_ARRAYS:
            ds.write_array(k, [0], row[k])
        if i < with_field:
            ds.define_array("field", "float32", ["y", "x"], list(FIELD_SHAPE), chunk_shape=list(FIELD_CHUNK),
                            fill_value=float("nan"))
            f = np.arange(FIELD_SHAPE[0] * FIELD_SHAPE[1], dtype=np.float32).reshape(FIELD_SHAPE) + i
            ds.write_array("field", [0, 0], f)
    store.flush()
    return store


_warmed = False


def warm_kernels() -> None:
    """Compile/load every numba kernel the benchmarks use with a tiny throwaway store (once per process)."""
    global _warmed
    if _warmed:
        return
    tmp = tempfile.mkdtemp(prefix="atlas-bench-warm-")
    try:
        path = os.path.join(tmp, "warm")
        ingest(path, make_rows(2, seed=1), with_field=1)
        store = atlas.Atlas.open(path)
        names = [dataset_name(i) for i in range(2)]
        ds = store.open_dataset(names[0])
        for k in ALL_ARRAYS:
            ds.read_array(k)
        ds.read_array("a", [10], [25])
        ds.read_array("field", [30, 50], [64, 100])
        ds.array_stats("a")
        store.read_array_across_stacked("a", names, [0], [25])
        store.read_array_across_stacked("time", names)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _warmed = True


def build_read_store() -> str:
    """The shared store of the read benchmarks, built in asv's setup_cache directory (the cwd)."""
    path = os.path.abspath("atlas_bench_store")
    if os.path.exists(path):
        shutil.rmtree(path)
    ingest(path, make_rows(N_STORE), with_field=N_FIELD)
    return path


# --------------------------------------------------------------------------- ingest
class Ingest:
    """Create a store, write ``N_INGEST`` small datasets, flush."""

    number = 1
    repeat = (3, 10, 20.0)
    timeout = 300

    def setup(self):
        warm_kernels()
        self.rows = make_rows(N_INGEST)
        self.tmp = tempfile.mkdtemp(prefix="atlas-bench-ingest-")
        self.count = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _next_path(self) -> str:
        self.count += 1
        return os.path.join(self.tmp, f"store{self.count}")

    def time_ingest_small_datasets(self):
        ingest(self._next_path(), self.rows)

    def peakmem_ingest_small_datasets(self):
        ingest(self._next_path(), self.rows)


# --------------------------------------------------------------------------- reads
class _ReadBase:
    timeout = 600

    def setup_cache(self):
        return build_read_store()

    def setup(self, path):
        warm_kernels()
        self.path = path
        self.store = atlas.Atlas.open(path)
        self.names = [dataset_name(i) for i in range(N_STORE)]
        self.ds = self.store.open_dataset(self.names[N_STORE // 2])
        self.fds = self.store.open_dataset(self.names[0])
        # load the chunk indexes once, so the per-call benchmarks measure steady-state reads
        for k in ALL_ARRAYS:
            self.ds.read_array(k)
        self.fds.read_array("field", [0, 0], [1, 1])


class ReadArray(_ReadBase):
    """``DatasetView.read_array`` on an open store, whole arrays and boxes."""

    def time_read_full_float32(self, path):
        self.ds.read_array("a")

    def time_read_full_time(self, path):
        self.ds.read_array("time")

    def time_read_partial_float32(self, path):
        self.ds.read_array("a", [10], [25])

    def time_read_full_field_2d(self, path):
        self.fds.read_array("field")

    def time_read_partial_field_2d(self, path):
        # 64x100 box straddling 2x3 chunks of 64x64
        self.fds.read_array("field", [30, 50], [64, 100])

    def time_read_all_arrays_one_by_one(self, path):
        store = self.store
        for name in self.names:
            ds = store.open_dataset(name)
            for k in ALL_ARRAYS:
                ds.read_array(k)

    def time_open_and_read_one(self, path):
        atlas.Atlas.open(path).open_dataset(self.names[-1]).read_array("a")


class FreshHandle(_ReadBase):
    """A fresh handle, as a new process has it: every sample starts without the process's
    caches (parsed metadata, chunk indexes, frames), then opens the store and reads one
    dataset's four arrays (the comparison harness's "read one dataset, fresh handle")."""

    number = 1  # setup (which drops the caches) runs before every sample
    repeat = 60

    def setup(self, path):
        super().setup(path)
        atlas.store._forget_process_caches()

    def time_open_and_read_one_dataset(self, path):
        atlas.Atlas.open(path).open_dataset(self.names[N_STORE // 2]).read_arrays(list(ALL_ARRAYS))

    def time_open_and_list(self, path):
        atlas.Atlas.open(path).list_datasets()


class ReadAcrossStacked(_ReadBase):
    """``Atlas.read_array_across_stacked`` over every dataset of the store."""

    def time_stacked_slice_float32(self, path):
        self.store.read_array_across_stacked("a", self.names, [0], [25])

    def time_stacked_full_float32(self, path):
        self.store.read_array_across_stacked("a", self.names)

    def time_stacked_full_time(self, path):
        self.store.read_array_across_stacked("time", self.names)

    def time_open_and_stacked_slice(self, path):
        atlas.Atlas.open(path).read_array_across_stacked("a", self.names, [0], [25])

    def peakmem_stacked_full_float32(self, path):
        self.store.read_array_across_stacked("a", self.names)


class ArrayStats(_ReadBase):
    """``DatasetView.array_stats`` (served from metadata written by flush)."""

    def time_array_stats_one(self, path):
        self.ds.array_stats("a")

    def time_array_stats_time(self, path):
        self.ds.array_stats("time")

    def time_array_stats_all_datasets(self, path):
        store = self.store
        for name in self.names:
            store.open_dataset(name).array_stats("a")


# --------------------------------------------------------------------------- import
def timeraw_import_atlas():
    """Fresh-interpreter ``import atlas`` (must not import numba)."""
    return "import atlas"
