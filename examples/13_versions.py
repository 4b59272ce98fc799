"""Versions: every flush is a version; history, opening the store as it was, tags, expiry.

Shows ``flush(message=)`` and ``history()``, re-reading exactly what an earlier version held
(``Atlas.open(path, version=N)``, also through ``xr.open_dataset(..., version=N)``), undoing a
bad ingest by copying the old values back, tagging the version a model run used, and
``expire`` + ``compact`` reclaiming the space only expired versions needed.

Run:  python examples/13_versions.py
"""

import os
import tempfile

import numpy as np

import atlas


def tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "obs.atlas")
    store = atlas.Atlas.create(path)

    # three ingests, one version each
    for day in range(3):
        ds = store.create_dataset(f"day{day}")
        ds.define_array("temp", "float32", ["y", "x"], [50, 60], [25, 30])
        ds.write_array("temp", [0, 0], np.full((50, 60), 10.0 + day, np.float32))
        store.flush(message=f"ingest day {day}")
    good = store.generation
    store.tag("model-run-42")  # the version a model evaluation used: kept until the tag is deleted

    # a bad ingest overwrites day1 with garbage
    store.open_dataset("day1").write_array("temp", [0, 0], np.full((50, 60), -999.0, np.float32))
    store.flush(message="bad re-ingest of day 1")

    print("history:")
    for h in store.history():
        print(f"  v{h['version']}  {h['time']:%Y-%m-%d %H:%M:%S}  +{h['added']} ~{h['changed']} -{h['deleted']}"
              f"  {h['message'] or ''}")

    # what did day1 hold before the bad ingest?  open that version (read-only)
    before = atlas.Atlas.open(path, version=good)
    old = before.open_dataset("day1").read_array("temp")
    print(f"day1 now: {store.open_dataset('day1').array_stats('temp')['min']}, in v{good}: {old.min()}")
    assert old.min() == 11.0
    try:
        before.open_dataset("day1").write_array("temp", [0, 0], old)
    except atlas.ReadOnlyError as e:
        print(f"a past version is read-only: {type(e).__name__}")

    # undo: write the old values back as a new version
    store.open_dataset("day1").write_array("temp", [0, 0], old)
    store.flush(message="restore day 1 from v%d" % good)
    assert store.open_dataset("day1").array_stats("temp")["min"] == 11.0

    # the model run re-reads exactly its data, by tag, also through xarray
    run = atlas.Atlas.open(path, tag="model-run-42")
    stacked = run.read_array_across_stacked("temp", ["day0", "day1", "day2"])
    print(f"model-run-42 sees per-day means {stacked.mean(axis=(1, 2)).tolist()}")
    try:
        import xarray as xr

        x = xr.open_dataset(path, engine="atlas", group="day1", version=good)
        print(f"xr.open_dataset(..., version={good}): day1 mean {float(x['temp'].mean()):.1f}")
        x.close()
    except ImportError:
        pass

    # retention: every version is kept until expired; compact reclaims what only expired ones needed
    size = tree_bytes(path)
    store.compact()
    print(f"compact with every version kept: {size} -> {tree_bytes(path)} bytes (nothing reclaimable)")
    gone = store.expire(keep_last=1)  # the tagged version and the latest stay
    size = tree_bytes(path)
    store.compact()
    print(f"expired versions {gone}; compact: {size} -> {tree_bytes(path)} bytes")
    print(f"kept: {[h['version'] for h in store.history()]}, tags: {store.tags()}")
    assert atlas.Atlas.open(path, tag="model-run-42").verify() == []
    try:
        atlas.Atlas.open(path, version=1)
    except atlas.VersionNotFoundError as e:
        print(f"expired: {e}")


if __name__ == "__main__":
    main()
