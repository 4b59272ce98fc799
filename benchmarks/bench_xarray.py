"""asv benchmarks: the xarray integration.

A store of ``N_XR`` xarray datasets (float32 ``temp``/``salt`` (24, 45, 90) chunked
(6, 45, 90), float64 lat/lon and datetime64 time coordinates, attributes), written with
``add_xr_dataset``.

* ``to_xarray`` eager (``chunks=None``), lazy (building the dask graph only) and lazy + load;
* ``to_xarray_many`` over every dataset (one stacked read per variable);
* ``add_xr_dataset`` + flush of ``N_XR`` datasets into a new store.

Sizes: ``_common`` (``ATLAS_BENCH_SMALL=1`` shrinks them).
"""

from __future__ import annotations

import os
import shutil

import atlas

from . import _common as C

_XR_CHUNKS = {v: C.XR_CHUNK for v in ("temp", "salt")}


class ToXarray:
    timeout = 600

    def setup_cache(self):
        return C.build_xr_store(os.path.abspath("xr_store"), C.N_XR)

    def setup(self, path):
        C.warm_kernels()
        self.store = atlas.Atlas.open(path)
        self.names = self.store.list_datasets()
        self.one = self.names[len(self.names) // 2]
        self.store.to_xarray(self.one, chunks=None)  # chunk indexes loaded, xarray imported

    def time_to_xarray_eager(self, path):
        self.store.to_xarray(self.one, chunks=None)

    def time_to_xarray_lazy_graph(self, path):
        self.store.to_xarray(self.one)

    def time_to_xarray_lazy_load(self, path):
        self.store.to_xarray(self.one).load()

    def time_to_xarray_many(self, path):
        self.store.to_xarray_many(self.names)

    def time_to_xarray_many_lazy_graph(self, path):
        self.store.to_xarray_many(self.names, chunks="auto")

    def peakmem_to_xarray_many(self, path):
        self.store.to_xarray_many(self.names)


class AddXrDataset:
    number = 1
    repeat = (3, 10, 20.0)
    timeout = 300

    def setup(self):
        C.warm_kernels()
        self.datasets = [C.xr_dataset(i) for i in range(C.N_XR)]
        self.tmp = C.fresh_dir("xr-ingest")
        self.count = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_add_xr_dataset_and_flush(self):
        self.count += 1
        store = atlas.Atlas.create(os.path.join(self.tmp, f"s{self.count}"), codec="zstd")
        for i, ds in enumerate(self.datasets):
            store.add_xr_dataset(ds, C.dataset_name(i), chunks=_XR_CHUNKS)
        store.flush()
