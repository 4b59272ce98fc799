"""Dask streaming: reduce over every dataset of a store without loading the store into memory.

Builds 128 gridded datasets (time x lat x lon, float32, chunked on disk), then reads them
lazily: ``to_xarray`` gives one dask task per on-disk chunk, ``to_xarray_many(...,
chunks="auto")`` one task per (block of 64 datasets, on-disk chunk). Building a graph reads
no data; computing it streams block by block through dask's threaded scheduler, so only a
few blocks are in memory at a time. A task counter shows what each computation really reads.
Finally the same graph runs on a ``dask.distributed`` LocalCluster (its worker process reopens
the store from its location), when distributed is installed.

Run:  python examples/04_dask_streaming.py            (add --no-distributed to skip the cluster)
"""

import logging
import os
import sys
import tempfile
import time

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.callbacks import Callback

import atlas

N_DATASETS = 128
SHAPE = (24, 36, 72)            # time, lat, lon of one dataset
CHUNKS = [6, 36, 72]            # on-disk chunk: 6 time steps of the whole grid (62 KB)


def make_dataset(k: int) -> xr.Dataset:
    """Dataset k: a smooth field, warmer with k, plus noise; the same coordinates everywhere."""
    rng = np.random.default_rng(k)
    lat = np.linspace(-87.5, 87.5, SHAPE[1])
    base = 25 * np.cos(np.deg2rad(lat))[None, :, None] + np.zeros(SHAPE)
    temp = (base + 0.01 * k + rng.standard_normal(SHAPE)).astype(np.float32)
    return xr.Dataset(
        {"temperature": (("time", "lat", "lon"), temp, {"units": "degC"})},
        coords={
            "time": np.datetime64("2024-01-01", "ns") + np.arange(SHAPE[0]) * np.timedelta64(1, "h"),
            "lat": lat,
            "lon": np.linspace(0, 355, SHAPE[2]),
        },
        attrs={"member": k},
    )


class ReadCounter(Callback):
    """Counts the atlas read tasks (their keys start with "atlas-") that a computation runs."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        name = key[0] if isinstance(key, tuple) else key
        if str(name).startswith("atlas-"):
            self.reads += 1


def on_local_cluster(temp: xr.DataArray, expected: np.ndarray, scratch: str) -> None:
    """Compute the per-member means on a LocalCluster with a worker process: the graph's tasks
    hold the store, which pickles as its location; the worker reopens it (flushed data only)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        print("\ndask.distributed is not installed: skipping the LocalCluster run")
        return
    t0 = time.perf_counter()
    with dask.config.set({"temporary-directory": scratch}), \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                         silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        started = time.perf_counter() - t0
        result = client.compute(temp.mean(("time", "lat", "lon"))).result()
        print(f"\nLocalCluster (1 worker process, 2 threads, started in {started:.1f} s): "
              f"same per-member means in {time.perf_counter() - t0 - started:.2f} s")
    np.testing.assert_allclose(result.values, expected, rtol=1e-6)


def main(use_distributed: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ensemble_store")

        # 1. Ingest: one dataset at a time, one flush at the end. The running sums give the
        #    reference answers the lazy computations are checked against below.
        t0 = time.perf_counter()
        ref_mean = np.zeros(N_DATASETS)           # mean of each dataset
        ref_clim = np.zeros(SHAPE)                # mean over datasets, per cell
        ref_max = -np.inf
        with atlas.Atlas.create(path) as store:
            for k in range(N_DATASETS):
                ds = make_dataset(k)
                t = ds["temperature"].values.astype(np.float64)
                ref_mean[k], ref_max = t.mean(), max(ref_max, t.max())
                ref_clim += t / N_DATASETS
                store.add_xr_dataset(ds, f"member_{k:03d}", chunks={"temperature": CHUNKS})
        store = atlas.Atlas.open(path)
        names = store.list_datasets()
        total_mb = N_DATASETS * np.prod(SHAPE) * 4 / 1e6
        print(f"ingested {len(names)} datasets ({total_mb:.1f} MB of float32) in {time.perf_counter() - t0:.2f} s")
        print(store)

        # 2. One dataset, lazily: one dask task per on-disk chunk; building it reads nothing.
        one = store.to_xarray(names[0])["temperature"]
        assert isinstance(one.data, da.Array)
        print(f"\n{names[0]}: temperature is dask-backed, chunks {one.data.chunks}")
        assert one.data.chunks[0] == (6, 6, 6, 6)

        # 3. Every dataset as one lazy (dataset, time, lat, lon) array.
        t0 = time.perf_counter()
        lazy = store.to_xarray_many(names, concat_dim="member", chunks="auto")
        temp = lazy["temperature"]
        block_mb = np.prod(temp.data.chunksize) * 4 / 1e6
        print(f"lazy stack: {dict(temp.sizes)}, {temp.data.npartitions} blocks of at most {block_mb:.1f} MB, "
              f"graph built in {1000 * (time.perf_counter() - t0):.0f} ms (no data read)")
        assert temp.data.chunks[0] == (64, 64)           # 64 datasets per block

        # 4. Stream reductions with the threaded scheduler. dask.compute evaluates several
        #    results in one pass, so every block is read once and dropped after use.
        with dask.config.set(scheduler="threads", num_workers=2), ReadCounter() as counter:
            t0 = time.perf_counter()
            per_member, overall_max, clim = dask.compute(
                temp.mean(("time", "lat", "lon")),      # one number per dataset
                temp.max(),                             # one number for everything
                temp.mean("member"),                    # a (time, lat, lon) climatology
            )
            elapsed = time.perf_counter() - t0
        print(f"\nthree reductions over {total_mb:.1f} MB in {elapsed:.2f} s, {counter.reads} read tasks "
              f"(= {temp.data.npartitions} blocks: each read once)")
        assert counter.reads == temp.data.npartitions
        np.testing.assert_allclose(per_member.values, ref_mean, rtol=1e-5)
        np.testing.assert_allclose(clim.values, ref_clim, rtol=1e-4, atol=1e-4)
        assert np.float32(overall_max.values) == np.float32(ref_max)
        print("per-member means:", np.round(per_member.values[:4], 3), "...", np.round(per_member.values[-2:], 3))
        print(f"warmest cell anywhere: {float(overall_max):.3f} degC;  climatology shape: {clim.shape}")
        warming = np.polyfit(np.arange(N_DATASETS), per_member.values, 1)[0]
        print(f"trend across members: {warming:.4f} degC per member (built in: 0.01)")
        assert abs(warming - 0.01) < 1e-3

        # 5. Selections are lazy too: only the chunks they touch are read.
        with dask.config.set(scheduler="threads"), ReadCounter() as counter:
            first_hour = temp.isel(time=0).mean(("lat", "lon")).compute()
        print(f"\nmean of hour 0 for every member: {counter.reads} read tasks (the first time chunk of each "
              f"of the 2 dataset blocks)")
        assert counter.reads == 2
        assert first_hour.shape == (N_DATASETS,)

        # 6. The same reduction built from one lazy array per dataset (to_xarray): the graph
        #    has one read task per dataset chunk instead of one per block of 64 datasets.
        #    Both give the same answer; the stacked graph is smaller and reads in bulk.
        per_dataset = da.stack([store.to_xarray(n)["temperature"].data for n in names])
        with dask.config.set(scheduler="threads"), ReadCounter() as counter:
            t0 = time.perf_counter()
            means = per_dataset.mean(axis=(1, 2, 3)).compute()
            t_single = time.perf_counter() - t0
        print(f"\nper-dataset graph: {counter.reads} read tasks, {t_single:.2f} s")
        assert counter.reads == N_DATASETS * 4
        np.testing.assert_allclose(means, per_member.values, rtol=1e-6)
        print("same means as the stacked graph")

        # 7. The same graph on a dask.distributed cluster (when installed).
        if use_distributed:
            on_local_cluster(temp, per_member.values, scratch=tmp)
        print("ok")


if __name__ == "__main__":
    main(use_distributed="--no-distributed" not in sys.argv[1:])
