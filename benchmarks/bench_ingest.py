"""asv benchmarks: ingest (many small datasets, a few gridded ones) and flush alone.

* ``IngestSmall``: create a store, ``N_SMALL_INGEST`` datasets of three float32 (100,)
  arrays, flush.
* ``IngestGridded``: create a store, ``N_GRID_INGEST`` datasets of three float32
  (24, 90, 180) arrays chunked (6, 45, 90), flush.
* ``Flush``: only the ``flush()`` of the same pending writes (setup does the writes; asv
  re-runs setup before every sample, so every timed flush has the same work).

Sizes: ``_common`` (``ATLAS_BENCH_SMALL=1`` shrinks them).
"""

from __future__ import annotations

import os
import shutil

import atlas

from . import _common as C


class _FreshStores:
    number = 1
    repeat = (3, 10, 20.0)
    timeout = 300

    def setup(self, *params):
        C.warm_kernels()
        self.tmp = C.fresh_dir("ingest")
        self.count = 0

    def teardown(self, *params):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _next_path(self) -> str:
        self.count += 1
        return os.path.join(self.tmp, f"store{self.count}")


class IngestSmall(_FreshStores):
    """Create, write ``N_SMALL_INGEST`` small datasets (three float32 (100,) arrays), flush."""

    def setup(self):
        super().setup()
        self.data = C.small_data(C.N_SMALL_INGEST)

    def time_ingest_small(self):
        store = atlas.Atlas.create(self._next_path(), codec="zstd")
        C.write_small(store, self.data)
        store.flush()

    def peakmem_ingest_small(self):
        store = atlas.Atlas.create(self._next_path(), codec="zstd")
        C.write_small(store, self.data)
        store.flush()

    def time_write_small_no_flush(self):
        """The in-memory part alone: create_dataset + define_array + write_array."""
        store = atlas.Atlas.create(self._next_path(), codec="zstd")
        C.write_small(store, self.data)


class IngestGridded(_FreshStores):
    """Create, write ``N_GRID_INGEST`` gridded datasets (three (24, 90, 180) arrays), flush."""

    def setup(self):
        super().setup()
        self.rows = C.grid_rows(C.N_GRID_INGEST)

    def time_ingest_gridded(self):
        store = atlas.Atlas.create(self._next_path(), codec="zstd")
        C.write_grid(store, self.rows)
        store.flush()

    def peakmem_ingest_gridded(self):
        store = atlas.Atlas.create(self._next_path(), codec="zstd")
        C.write_grid(store, self.rows)
        store.flush()


class Flush(_FreshStores):
    """``flush()`` of pending writes: small datasets into a new store, and into a store with data."""

    params = ["small_new", "small_append", "gridded_new"]
    param_names = ["pending"]
    warmup_time = 0  # every sample needs fresh pending writes (asv re-runs setup before each)

    def setup(self, pending):
        super().setup()
        path = self._next_path()
        if pending == "small_append":
            C.build_small_store(path, C.N_SMALL_INGEST)
        self.store = atlas.Atlas.create(path, codec="zstd") if pending != "small_append" else atlas.Atlas.open(path)
        if pending == "gridded_new":
            C.write_grid(self.store, C.grid_rows(C.N_GRID_INGEST))
        else:
            first = C.N_SMALL_INGEST if pending == "small_append" else 0
            C.write_small(self.store, C.small_data(C.N_SMALL_INGEST, seed=5), first=first)

    def time_flush(self, pending):
        self.store.flush()
