"""Bulk reads across datasets: the same slice out of hundreds of datasets in one call.

Builds 400 ocean profiles (temperature and salinity over depth x time, a 0-D latitude and
longitude each) plus 20 shorter ones, then reads them back with:

- ``Atlas.read_array_across_stacked``: the hot path, one ``(N, ...)`` array, compared with a
  loop of ``read_array`` calls;
- ``Atlas.read_array_across``: a list, one array (or None) per dataset, shapes may differ;
- ``DatasetView.read_arrays``: several arrays of one dataset with one box;
- ``Atlas.to_xarray_many``: many datasets as one stacked ``xarray.Dataset``.

Run:  python examples/05_bulk_reads.py
"""

import os
import tempfile
import time

import numpy as np
import xarray as xr

import atlas

N_PROFILES = 400
DEPTH, HOURS = 50, 168
CHUNK = [10, HOURS]               # 10 depth levels x one week per on-disk chunk


def profile(k: int, hours: int) -> tuple[np.ndarray, np.ndarray]:
    """Temperature and salinity of profile k: colder and saltier with depth, a daily cycle on top."""
    depth = np.arange(DEPTH)[:, None]
    hour = np.arange(hours)[None, :]
    temp = 20 - 0.3 * depth + np.sin(2 * np.pi * hour / 24) * np.exp(-depth / 10) + 0.001 * k
    sal = np.broadcast_to(35 + 0.02 * depth + 0.0001 * k, temp.shape)   # constant in time
    return temp.astype(np.float32), sal.astype(np.float32)


def add_profile(store: atlas.Atlas, name: str, k: int, hours: int) -> None:
    ds = store.create_dataset(name)
    temp, sal = profile(k, hours)
    for var, data in (("temperature", temp), ("salinity", sal)):
        ds.define_array(var, dtype="float32", dims=["depth", "time"], shape=[DEPTH, hours],
                        chunk_shape=[CHUNK[0], min(CHUNK[1], hours)])
        ds.write_array(var, [0, 0], data)
    for var, value in (("lat", 50 + k / 100), ("lon", -20 + k / 50)):
        ds.define_array(var, dtype="float64", dims=[], shape=[])      # 0-D arrays
        ds.write_array(var, [], np.array(value))
    ds.set_attribute("platform", f"float-{k:04d}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "profiles_store")
        t0 = time.perf_counter()
        with atlas.Atlas.create(path) as store:       # one flush: datasets sit side by side on disk
            for k in range(N_PROFILES):
                add_profile(store, f"profile_{k:04d}", k, HOURS)
            for k in range(20):                        # a few shorter deployments (4 days)
                add_profile(store, f"short_{k:02d}", N_PROFILES + k, 96)
        print(f"wrote {N_PROFILES + 20} datasets in {time.perf_counter() - t0:.2f} s")

        store = atlas.Atlas.open(path)
        names = [n for n in store.list_datasets() if n.startswith("profile_")]
        short = [n for n in store.list_datasets() if n.startswith("short_")]

        # 1. The hot path: the top 10 levels of every profile, one (N, 10, 168) array.
        #    (The first read of an array name loads its chunk index and the Numba kernels: do it
        #    once before timing.)
        store.open_dataset(names[0]).read_array("temperature")
        t0 = time.perf_counter()
        top = store.read_array_across_stacked("temperature", names, start=[0, 0], shape=[10, HOURS])
        t_stacked = time.perf_counter() - t0
        print(f"\nstacked read: {top.shape} {top.dtype} in {1000 * t_stacked:.1f} ms")
        assert top.shape == (N_PROFILES, 10, HOURS) and top.dtype == np.float32

        #    The same data with one read_array call per dataset: identical, and slower.
        t0 = time.perf_counter()
        looped = np.stack([store.open_dataset(n).read_array("temperature", [0, 0], [10, HOURS]) for n in names])
        t_loop = time.perf_counter() - t0
        np.testing.assert_array_equal(top, looped)
        print(f"loop of {len(names)} read_array calls: same data in {1000 * t_loop:.1f} ms "
              f"({t_loop / t_stacked:.1f}x the stacked read)")
        expected_surface = profile(123, HOURS)[0][0]
        np.testing.assert_array_equal(top[123, 0], expected_surface)
        print("surface temperature of profile_0123, first 4 hours:", top[123, 0, :4])

        #    0-D arrays stack to (N,): every position in one call each.
        lat = store.read_array_across_stacked("lat", names)
        lon = store.read_array_across_stacked("lon", names)
        assert lat.shape == (N_PROFILES,) and lat[7] == 50.07
        print(f"positions: lat {lat.min():.2f}..{lat.max():.2f}, lon {lon.min():.2f}..{lon.max():.2f}")

        #    Duplicated names are read twice; the order of the output follows the names.
        picked = store.read_array_across_stacked("salinity", ["profile_0002", "profile_0001", "profile_0002"],
                                                 [49, 0], [1, 1])
        print("salinity at 49 m of profiles 2, 1, 2:", picked.ravel())
        assert picked[0] == picked[2] != picked[1]

        # 2. Datasets of different shapes: the stacked form needs one box shape ...
        mixed = names[:3] + short[:3]
        try:
            store.read_array_across_stacked("temperature", mixed)
        except ValueError as e:
            print(f"\nstacked read of mixed shapes -> ValueError: {e}")
        else:
            raise AssertionError("a stacked read of mixed shapes must raise")
        #    ... so read a box that fits all of them (the first 4 days) ...
        first_days = store.read_array_across_stacked("temperature", mixed, [0, 0], [DEPTH, 96])
        print("with an explicit box:", first_days.shape)
        assert first_days.shape == (6, DEPTH, 96)
        #    ... or use read_array_across: a list, each dataset read whole, shapes as stored.
        parts = store.read_array_across("temperature", mixed)
        print("read_array_across:", [p.shape for p in parts])
        assert [p.shape for p in parts] == [(DEPTH, HOURS)] * 3 + [(DEPTH, 96)] * 3
        np.testing.assert_array_equal(parts[4], profile(N_PROFILES + 1, 96)[0])

        # 3. Several arrays of one dataset with one box: a dict (None for arrays it lacks).
        ds = store.open_dataset("profile_0010")
        got = ds.read_arrays(["temperature", "salinity", "oxygen"], start=[0, 0], shape=[3, 2])
        print("\nread_arrays on profile_0010, box [0:3, 0:2]:")
        for var, arr in got.items():
            print(f"  {var:11s}", None if arr is None else np.array2string(arr, precision=3).replace("\n", ""))
        assert got["oxygen"] is None and got["salinity"].shape == (3, 2)

        # 4. Many datasets as one xarray.Dataset: each array gets a leading "profile" dimension
        #    and is read with one stacked read; dataset attributes come from the first dataset.
        xds = store.to_xarray_many(names, concat_dim="profile")
        assert isinstance(xds, xr.Dataset)
        print(f"\nto_xarray_many of {len(names)} datasets:")
        print(xds)
        assert xds["temperature"].dims == ("profile", "depth", "time")
        np.testing.assert_array_equal(xds["temperature"].values[:, :10, :], top)
        np.testing.assert_array_equal(xds["lat"].values, lat)
        assert xds.attrs == {"platform": "float-0000"}
        print("its attributes are the first dataset's; each dataset keeps its own:",
              store.open_dataset(names[5]).attributes())
        warmest = xds["temperature"].isel(depth=0).mean("time").idxmax("profile").item()
        print("warmest surface (weekly mean):", warmest)
        assert warmest == names[-1]                      # the built-in offset grows with k
        print("ok")


if __name__ == "__main__":
    main()
