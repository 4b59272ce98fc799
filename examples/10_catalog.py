"""Find datasets without reading them: the catalog, queries, then one stacked read.

Builds a store of 48 profile-like datasets (a platform, a month, a position and a time
series of temperature each), then:

1. ``store.catalog()``: one row per dataset with its attributes and each array's min, max,
   null and row counts, all from the metadata (no chunk is read);
2. ``store.query(...)``: the datasets of one region (a lat/lon box, from the position
   arrays' min/max) and one season (June to August, from the time array's range);
3. ``store.read_array_across_stacked(...)`` on exactly those names.

Run:  python examples/10_catalog.py
"""

import os
import tempfile

import numpy as np

import atlas

HOUR = np.timedelta64(3600, "s").astype("timedelta64[ns]")


def build(path: str) -> atlas.Atlas:
    rng = np.random.default_rng(10)
    store = atlas.Atlas.create(path)
    for i in range(48):
        ds = store.create_dataset(f"profile{i:03d}")
        month = i % 12 + 1
        start = np.datetime64(f"2021-{month:02d}-10", "ns")
        ds.set_attribute("platform", ["BO", "GL", "MO"][i % 3])
        ds.set_attribute("month", month)
        ds.define_array("time", "timestamp_ns", ["obs"], [24])
        ds.write_array("time", [0], start + np.arange(24) * HOUR)
        lat0, lon0 = rng.uniform(45, 65), rng.uniform(-10, 15)
        ds.define_array("lat", "float64", ["obs"], [24])
        ds.write_array("lat", [0], lat0 + np.cumsum(rng.normal(0, 0.05, 24)))
        ds.define_array("lon", "float64", ["obs"], [24])
        ds.write_array("lon", [0], lon0 + np.cumsum(rng.normal(0, 0.05, 24)))
        ds.define_array("temperature", "float32", ["obs"], [24], fill_value=float("nan"))
        temp = (8 + 12 * np.sin(np.pi * (month - 3) / 6) + rng.normal(0, 1, 24)).astype(np.float32)
        temp[rng.random(24) < 0.1] = np.nan  # a few missing values
        ds.write_array("temperature", [0], temp)
    store.flush()
    return store


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "profiles.atlas")
        build(path)
        store = atlas.Atlas.open(path)

        cat = store.catalog(arrays=["time", "lat", "lon", "temperature"])
        print(f"catalog: {len(cat)} datasets x {cat.shape[1]} columns")
        print(cat[["platform", "month", "time.min", "lat.min", "lat.max", "temperature.max",
                   "temperature.null_count"]].head(4).to_string())

        # the North Sea box, in summer: whole datasets inside the box and the season
        where = ("`lat.min` >= 50 and `lat.max` <= 62 and `lon.min` >= -5 and `lon.max` <= 10"
                 " and `time.min` >= '2021-06-01' and `time.max` < '2021-09-01'")
        names = store.query(where)
        print(f"\nquery: {where}\n  -> {names}")

        stacked = store.read_array_across_stacked("temperature", names)
        print(f"stacked read: temperature {stacked.shape} {stacked.dtype}; "
              f"summer mean {np.nanmean(stacked):.2f} degC")
        assert all(cat.at[n, "time.min"] >= np.datetime64("2021-06-01") for n in names)

        # the same from the command line:
        #   atlas ls profiles.atlas --where "platform == 'GL' and month in [6, 7, 8]"
        #   atlas catalog profiles.atlas --csv > catalog.csv
        print("\nglider datasets in summer:", store.query("platform == 'GL' and month in [6, 7, 8]"))


if __name__ == "__main__":
    main()
