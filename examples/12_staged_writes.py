"""Staged writes: worker processes write datasets, one atomic commit publishes them all.

1. ``store.ingest(files, workers=2)``: NetCDF files opened, encoded and written by two
   worker processes, committed at once (``client=`` does the same on a dask cluster).
2. The staging API underneath, with your own process pool: ``store.stage()`` is a picklable
   handle; a worker makes a writer, creates datasets as on a store, and returns
   ``writer.finish()``; the coordinator commits every result with ``commit_staged``.
3. A worker that fails leaves the store unchanged; ``stage.discard()`` deletes its files.

Worker processes import this script (as multiprocessing does), so its main code sits under
``if __name__ == "__main__"``.
"""

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import xarray as xr

import atlas


def simulate(stage, member):
    """A worker: one ensemble member of 3 runs, written through a staged writer."""
    writer = stage.writer()
    rng = np.random.default_rng(member)
    for run in range(3):
        ds = writer.create_dataset(f"member{member:02d}-run{run}")
        ds.define_array("temp", "float32", ["time", "site"], [24, 50], chunk_shape=[24, 50])
        ds.write_array("temp", [0, 0], (15 + rng.standard_normal((24, 50))).astype("float32"))
        ds.set_attribute("member", member)
    return writer.finish()  # small: metadata and chunk indexes, no data


def failing_worker(stage):
    writer = stage.writer()
    ds = writer.create_dataset("doomed")
    ds.define_array("x", "int8", ["i"], [4])
    ds.write_array("x", [0], np.arange(4, dtype="int8"))
    writer.flush()  # files are written...
    raise RuntimeError("this worker fails before returning its result")


def main():
    root = tempfile.mkdtemp(prefix="atlas-staged-")
    for i in range(8):  # some NetCDF files
        xr.Dataset({"temp": (("time", "lat"), np.random.default_rng(i).random((4, 10)).astype("float32"))},
                   coords={"time": pd.date_range("2024-01-01", periods=4) + pd.Timedelta(days=4 * i),
                           "lat": np.linspace(-45, 45, 10)}).to_netcdf(os.path.join(root, f"obs{i}.nc"))

    # 1. parallel ingest: one commit at the end, all or nothing
    store = atlas.Atlas.create(os.path.join(root, "store"))
    names = store.ingest([os.path.join(root, "*.nc")], workers=2)
    print(f"ingested {len(names)} files with 2 worker processes; generation {store.generation}")

    # 2. the staging API with a process pool of our own
    stage = store.stage()
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(simulate, [stage] * 4, range(4)))
    added = store.commit_staged(results)  # one atomic commit of 12 datasets
    print(f"committed {len(added)} staged datasets in one step; generation {store.generation}")
    temps = store.read_array_across_stacked("temp", added, start=[0, 0], shape=[1, 5])
    print("first cells of every run:", temps.shape, float(temps.mean().round(1)))

    # 3. a failed worker: nothing of it is committed; discard() deletes the files it wrote
    stage2 = store.stage()
    with ProcessPoolExecutor(1) as pool:
        try:
            pool.submit(failing_worker, stage2).result()
        except RuntimeError as e:
            print("worker failed:", e)
    print("store unchanged:", "doomed" not in store.list_datasets(), "| files deleted:", stage2.discard())
    print("verify:", store.verify() or "ok")


if __name__ == "__main__":
    main()
