"""asv: ``Atlas.catalog()`` and ``Atlas.query()`` on a store of many datasets.

The store holds ``N_CATALOG`` datasets (100,000; 200 with ``ATLAS_BENCH_SMALL=1``), each
with four attributes (``platform`` str, ``month`` int, ``depth`` float,
``temperature.units`` str) and four (24,) arrays (``time`` timestamps, ``lat``/``lon``
float64, ``temperature`` float32), flushed once. Timed:

- ``time_catalog_build``: the table built from the metadata (every dataset's entry parsed),
  then returned as a DataFrame: what the first ``catalog()`` or ``query()`` after opening,
  a flush or an edit costs;
- ``time_catalog_cached``: ``catalog()`` again (the DataFrame made from the cached columns);
- ``time_query_cached``: ``query()`` with four conditions on the cached table.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

import atlas
from atlas import _catalog

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
        self.store.query(QUERY)  # builds and caches the table (and imports pandas via catalog below)
        self.store.catalog(arrays=[], attributes=[])

    def time_catalog_build(self, path):
        _catalog._CACHE.pop(self.store, None)  # as after a flush or an edit
        self.store.catalog()

    def time_catalog_cached(self, path):
        self.store.catalog()

    def time_query_cached(self, path):
        self.store.query(QUERY)

    def track_catalog_columns(self, path):
        return len(self.store.catalog().columns)

    track_catalog_columns.unit = "columns"  # type: ignore[attr-defined]
