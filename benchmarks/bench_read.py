"""asv benchmarks: open, read_array (full and partial), read_array_across_stacked, read_arrays,
array_stats and compact.

* ``OpenStore``: ``Atlas.open`` of a store with ``N_OPEN`` small datasets (three arrays
  each), open + a stacked read of every dataset, peak memory, and (``track_``) what the
  open store keeps alive: gc-tracked objects, and tracemalloc blocks and bytes (per dataset).
* ``ReadGridded``: a store of ``N_GRID_STORE`` gridded datasets (three float32
  (24, 90, 180) arrays chunked (6, 45, 90)); whole arrays, one chunk, a box straddling
  chunks, ``read_arrays``, stacked reads across every dataset, and the first read after
  an open (which loads the chunk index).
* ``ReadSmallStacked``: stacked and one-by-one reads over ``N_SMALL_STORE`` small datasets.
* ``Stats``: ``array_stats`` of one array and of every dataset.
* ``Compact``: ``compact()`` of a store where half the datasets were deleted and a quarter
  of the rest rewritten (setup copies a template store, asv re-runs it before every sample).

Sizes: ``_common`` (``ATLAS_BENCH_SMALL=1`` shrinks them).
"""

from __future__ import annotations

import gc
import os
import shutil

import atlas

from . import _common as C


# --------------------------------------------------------------------------- open
class OpenStore:
    """``Atlas.open`` of a store holding ``N_OPEN`` small datasets."""

    timeout = 600

    def setup_cache(self):
        return C.build_small_store(os.path.abspath("open_store"), C.N_OPEN)

    def setup(self, path):
        C.warm_kernels()
        atlas.Atlas.open(path)  # page cache warm, imports done

    def time_open(self, path):
        atlas.Atlas.open(path)

    def time_open_list_datasets(self, path):
        atlas.Atlas.open(path).list_datasets()

    def peakmem_open(self, path):
        atlas.Atlas.open(path)

    def time_open_and_stacked_slice(self, path):
        """Open + a stacked slice of every dataset (touches every dataset's metadata)."""
        store = atlas.Atlas.open(path)
        store.read_array_across_stacked("a", store.list_datasets(), [0], [25])

    def track_open_gc_objects(self, path):
        """gc-tracked containers (dicts, lists, instances) the open store holds; excludes str/bytes."""
        gc.collect()
        before = len(gc.get_objects())
        store = atlas.Atlas.open(path)
        gc.collect()
        after = len(gc.get_objects())
        del store
        return after - before

    track_open_gc_objects.unit = "objects"

    def track_open_allocated_blocks(self, path):
        """Memory blocks (about: Python objects of any type, str included) the open store holds (tracemalloc)."""
        return _retained(lambda: atlas.Atlas.open(path))[0]

    track_open_allocated_blocks.unit = "blocks"

    def track_open_allocated_blocks_per_dataset(self, path):
        return _retained(lambda: atlas.Atlas.open(path))[0] / C.N_OPEN

    track_open_allocated_blocks_per_dataset.unit = "blocks/dataset"

    def track_open_retained_bytes_per_dataset(self, path):
        return _retained(lambda: atlas.Atlas.open(path))[1] / C.N_OPEN

    track_open_retained_bytes_per_dataset.unit = "bytes/dataset"


def _retained(make):
    """(blocks, bytes) still allocated while the object ``make()`` returns is alive (tracemalloc)."""
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        s0 = tracemalloc.take_snapshot()
        obj = make()
        gc.collect()
        s1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    diff = s1.compare_to(s0, "filename")
    del obj
    return sum(d.count_diff for d in diff), sum(d.size_diff for d in diff)


# --------------------------------------------------------------------------- gridded reads
class ReadGridded:
    """Reads from ``N_GRID_STORE`` gridded datasets (chunk indexes loaded in setup)."""

    timeout = 600

    def setup_cache(self):
        return C.build_grid_store(os.path.abspath("grid_store"), C.N_GRID_STORE)

    def setup(self, path):
        C.warm_kernels()
        self.path = path
        self.store = atlas.Atlas.open(path)
        self.names = self.store.list_datasets()
        self.ds = self.store.open_dataset(self.names[len(self.names) // 2])
        for v in C.GRID_VARS:  # load the chunk indexes: the per-call benchmarks are steady state
            self.ds.read_array(v, (0, 0, 0), (1, 1, 1))

    def time_read_array_full(self, path):
        self.ds.read_array("temp")

    def time_read_array_one_chunk(self, path):
        self.ds.read_array("temp", (6, 45, 0), C.GRID_CHUNK)

    def time_read_array_partial_straddling(self, path):
        # a (6, 30, 60) box over 2 x 2 x 2 chunks
        self.ds.read_array("temp", (3, 30, 60), (6, 30, 60))

    def time_read_array_point(self, path):
        self.ds.read_array("temp", (5, 44, 89), (1, 1, 1))

    def time_read_arrays_full(self, path):
        self.ds.read_arrays(list(C.GRID_VARS))

    def time_read_arrays_one_chunk(self, path):
        self.ds.read_arrays(list(C.GRID_VARS), (0, 0, 0), C.GRID_CHUNK)

    def time_read_arrays_every_dataset(self, path):
        store = self.store
        for n in self.names:
            store.open_dataset(n).read_arrays(list(C.GRID_VARS))

    def time_stacked_one_chunk(self, path):
        self.store.read_array_across_stacked("temp", self.names, (0, 0, 0), C.GRID_CHUNK)

    def time_stacked_time_series_point(self, path):
        # one grid point's whole time series from every dataset: touches 4 chunks per dataset
        self.store.read_array_across_stacked("temp", self.names, (0, 10, 20), (24, 1, 1))

    def time_stacked_full(self, path):
        self.store.read_array_across_stacked("temp", self.names)

    def peakmem_stacked_full(self, path):
        self.store.read_array_across_stacked("temp", self.names)

    def time_open_and_first_read(self, path):
        """Open + first read_array (reads the chunk index of ``temp``)."""
        atlas.Atlas.open(path).open_dataset(self.names[0]).read_array("temp", (0, 0, 0), C.GRID_CHUNK)


# --------------------------------------------------------------------------- small reads
class ReadSmallStacked:
    """Stacked and one-by-one reads over ``N_SMALL_STORE`` small datasets."""

    timeout = 600

    def setup_cache(self):
        return C.build_small_store(os.path.abspath("small_store"), C.N_SMALL_STORE)

    def setup(self, path):
        C.warm_kernels()
        self.store = atlas.Atlas.open(path)
        self.names = self.store.list_datasets()
        self.ds = self.store.open_dataset(self.names[-1])
        for v in C.SMALL_VARS:
            self.ds.read_array(v)

    def time_read_array_full(self, path):
        self.ds.read_array("b")

    def time_read_array_partial(self, path):
        self.ds.read_array("b", [10], [25])

    def time_read_arrays(self, path):
        self.ds.read_arrays(list(C.SMALL_VARS))

    def time_read_every_dataset_one_by_one(self, path):
        store = self.store
        for n in self.names:
            ds = store.open_dataset(n)
            for v in C.SMALL_VARS:
                ds.read_array(v)

    def time_stacked_slice(self, path):
        self.store.read_array_across_stacked("a", self.names, [0], [25])

    def time_stacked_full(self, path):
        self.store.read_array_across_stacked("a", self.names)

    def time_stacked_subset_every_tenth(self, path):
        self.store.read_array_across_stacked("a", self.names[::10])

    def time_read_array_across_list(self, path):
        self.store.read_array_across("a", self.names, [0], [25])


# --------------------------------------------------------------------------- stats
class Stats:
    """``array_stats`` (from the metadata written by flush)."""

    def setup_cache(self):
        return C.build_small_store(os.path.abspath("stats_store"), C.N_SMALL_STORE)

    def setup(self, path):
        C.warm_kernels()
        self.store = atlas.Atlas.open(path)
        self.names = self.store.list_datasets()
        self.ds = self.store.open_dataset(self.names[0])

    def time_array_stats_one(self, path):
        self.ds.array_stats("a")

    def time_array_stats_every_dataset(self, path):
        store = self.store
        for n in self.names:
            store.open_dataset(n).array_stats("a")


# --------------------------------------------------------------------------- compact
class Compact:
    """``compact()`` of a store with ``N_COMPACT`` datasets, half deleted, a quarter of the rest rewritten."""

    number = 1
    repeat = (3, 10, 30.0)
    warmup_time = 0  # every sample needs a fresh copy (asv re-runs setup before each)
    timeout = 600

    def setup_cache(self):
        return C.build_garbage_store(os.path.abspath("garbage_store"), C.N_COMPACT)

    def setup(self, path):
        C.warm_kernels()
        self.tmp = C.fresh_dir("compact")
        copy = os.path.join(self.tmp, "store")
        shutil.copytree(path, copy)
        self.store = atlas.Atlas.open(copy)

    def teardown(self, path):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_compact(self, path):
        self.store.compact()
