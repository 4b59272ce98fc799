"""asv: ``Atlas.catalog()`` and ``Atlas.query()`` on a store of many datasets.

The store holds ``N_CATALOG`` datasets (100,000; 200 with ``ATLAS_BENCH_SMALL=1``), each
with four attributes (``platform`` str, ``month`` int, ``depth`` float,
``temperature.units`` str) and four (24,) arrays (``time`` timestamps, ``lat``/``lon``
float64, ``temperature`` float32), flushed once. Timed:

- ``time_catalog_first_after_open``: the first ``catalog()`` of a handle opened with the
  process's caches forgotten (as in a fresh process): the state's catalog file read and
  decoded, then the DataFrame (the open itself is not timed);
- ``time_catalog_build``: the table built from every dataset's metadata entry, then returned
  as a DataFrame: what a store without a catalog file (written before they existed, or with
  fewer than ``atlas._meta.CATALOG_MIN_DATASETS`` datasets) costs once per state;
- ``time_catalog_cached``: ``catalog()`` again (the DataFrame made from the cached columns);
- ``time_query_cached``: ``query()`` with four conditions on the cached table;
- ``time_flush_one_dataset``: one attribute of one dataset changed, then ``flush()``: the
  metadata commit plus the catalog file (the old table merged with the one re-derived row).
"""

from __future__ import annotations

import os
import shutil

import numpy as np

import atlas
from atlas import _catalog, _cattable
from atlas.store import _forget_process_caches

from ._common import SMALL

N_CATALOG = 200 if SMALL else 100_000
QUERY = "platform == 'BO' and month >= 6 and `temperature.max` > 30 and `time.min` >= '2020-03-01'"


def build_catalog_store() -> str:
    path = os.path.abspath("atlas_bench_catalog")
    if os.path.exists(path):
        shutil.rmtree(path)
    rng = np.random.default_rng(15)
    hour = np.timedelta64(3600, "s").astype("timedelta64[ns]")
    t0 = np.datetime64("2020-01-01", "ns")
    store = atlas.Atlas.create(path)
    for i in range(N_CATALOG):
        ds = store.create_dataset(f"ds{i:06d}")
        ds.set_attribute("platform", ("BO", "GL", "MO")[i % 3])
        ds.set_attribute("month", i % 12 + 1)
        ds.set_attribute("depth", float(i % 100))
        ds.set_attribute("temperature.units", "degC")
        ds.define_array("time", "timestamp_ns", ["obs"], [24])
        ds.write_array("time", [0], t0 + (np.arange(24) + 24 * (i % 1000)) * hour)
        for v in ("lat", "lon"):
            ds.define_array(v, "float64", ["obs"], [24])
            ds.write_array(v, [0], rng.uniform(-80, 80, 24))
        ds.define_array("temperature", "float32", ["obs"], [24])
        ds.write_array("temperature", [0], rng.normal(15, 8, 24).astype(np.float32))
    store.flush()
    return path


class Catalog:
    """Catalog and queries over ``N_CATALOG`` datasets (the metadata only; no chunk is read)."""

    timeout = 900
    number = 1
    repeat = (3, 7, 60.0)

    def setup_cache(self):
        return build_catalog_store()

    def setup(self, path):
        self.store = atlas.Atlas.open(path)
        self.store.query(QUERY)  # loads the table (and imports pandas via catalog below)
        self.store.catalog(arrays=[], attributes=[])
        self.edits = 0
        _forget_process_caches()
        self.fresh = atlas.Atlas.open(path)  # as opened by a new process: no table loaded

    def time_catalog_first_after_open(self, path):
        self.fresh.catalog()

    def time_catalog_build(self, path):
        t = _cattable.build(_cattable.capture(self.store._state.txn.base.meta)).table()
        _catalog.to_frame(t, list(t.columns))

    def time_flush_one_dataset(self, path):
        self.edits += 1
        self.store.open_dataset("ds000042").set_attribute("month", self.edits % 12 + 1)
        self.store.flush()

    def time_catalog_cached(self, path):
        self.store.catalog()

    def time_query_cached(self, path):
        self.store.query(QUERY)

    def track_catalog_columns(self, path):
        return len(self.store.catalog().columns)

    track_catalog_columns.unit = "columns"  # type: ignore[attr-defined]
