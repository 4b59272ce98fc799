"""A folder of NetCDF files -> one atlas store -> xarray, compared with xr.open_dataset.

Generates the files with netCDF4 (times with units/calendar, packed data with
scale_factor/add_offset and _FillValue, strings, a 0-D char variable), ingests all of them
with `Atlas.ingest` in one `with` block (one flush), reopens the store and checks every dataset is identical to
`xr.open_dataset` of its file.

Run:  python examples/03_netcdf_folder.py [number_of_files]
"""

import os
import sys
import tempfile
import time

import netCDF4
import numpy as np
import xarray as xr

import atlas


def write_file(path: str, i: int, rng: np.random.Generator) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 4)
        nc.createDimension("lon", 6)
        nc.createDimension("station", 2)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "hours since 2024-01-01 00:00:00", "standard"
        t[:] = np.arange(3) + 24 * i
        nc.createVariable("lat", "f4", ("lat",))[:] = np.linspace(50, 53, 4)
        nc.createVariable("lon", "f4", ("lon",))[:] = np.linspace(3, 8, 6)
        sst = nc.createVariable("sst", "i2", ("time", "lat", "lon"), fill_value=np.int16(-32767))
        sst.scale_factor, sst.add_offset, sst.units = np.float32(0.001), np.float32(20.0), "degC"
        sst.set_auto_maskandscale(False)
        raw = rng.integers(-5000, 5000, (3, 4, 6)).astype(np.int16)
        raw[0, 0, 0] = -32767  # a missing value
        sst[:] = raw
        name = nc.createVariable("station_name", str, ("station",))
        name[0], name[1] = f"buoy {i}", "Noordwijk"
        flag = nc.createVariable("quality", "S1", ())  # 0-D char variable
        flag[...] = np.array(b"A", "S1")
        nc.title, nc.file_number = f"observations {i}", np.int32(i)


def main(n_files: int = 200) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "netcdf")
        os.makedirs(folder)
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        for i in range(n_files):
            write_file(os.path.join(folder, f"obs_{i:04d}.nc"), i, rng)
        files = sorted(os.listdir(folder))
        print(f"wrote {len(files)} NetCDF files in {time.perf_counter() - t0:.2f} s")

        store_path = os.path.join(tmp, "store")
        t0 = time.perf_counter()
        with atlas.Atlas.create(store_path) as store:     # one flush for the whole folder
            # one dataset per file, named after the file; the same as the loop
            #   for f in files: store.add_xr_dataset(xr.open_dataset(f).load(), stem of f)
            # with files read ahead on threads while earlier ones are compressed
            added = store.ingest(os.path.join(folder, "*.nc"), progress=True)
        assert added == [os.path.splitext(f)[0] for f in files]
        print(f"ingested into {store_path!r} in {time.perf_counter() - t0:.2f} s")

        store = atlas.Atlas.open(store_path)
        print(store)
        t0 = time.perf_counter()
        for f in files:
            with xr.open_dataset(os.path.join(folder, f)) as ref:
                xr.testing.assert_identical(store.to_xarray(os.path.splitext(f)[0]).load(), ref.load())
        print(f"all {len(files)} datasets identical to xr.open_dataset ({time.perf_counter() - t0:.2f} s)")

        example = store.to_xarray(os.path.splitext(files[1])[0])
        print(example)

        stacked = store.to_xarray_many(store.list_datasets(), concat_dim="file")
        print("stacked sst:", stacked["sst"].shape, "mean:", float(stacked["sst"].mean()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
