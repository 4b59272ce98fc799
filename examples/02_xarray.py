"""xarray round trips: store.add_xr_dataset, the ds.atlas accessor, lazy dask reads,
to_xarray_many and xr.open_dataset(..., engine="atlas").

Run:  python examples/02_xarray.py
"""

import os
import tempfile

import numpy as np
import xarray as xr

import atlas  # importing atlas registers the ds.atlas accessor


def month(m: int) -> xr.Dataset:
    rng = np.random.default_rng(m)
    return xr.Dataset(
        data_vars={
            "temperature": (["time", "lat", "lon"], (15 + rng.standard_normal((4, 8, 16))).astype(np.float32),
                            {"units": "C", "long_name": "surface temperature", "_FillValue": np.float32(np.nan)}),
            "station": (["lat"], np.array([f"st{i}" for i in range(8)])),
        },
        coords={
            "time": np.arange(4).astype("datetime64[W]").astype("datetime64[ns]") + np.timedelta64(m * 31, "D"),
            "lat": np.linspace(50, 54, 8, dtype=np.float32),
            "lon": np.linspace(3, 7, 16, dtype=np.float32),
        },
        attrs={"month": m, "source": "synthetic", "history.note": "dataset attr with a dot"},
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "xr_store")
        jan, feb, mar = month(1), month(2), month(3)

        # 1. Two ways in; nothing is written before the with block ends (one flush).
        with atlas.Atlas.create(path) as store:
            store.add_xr_dataset(jan, "2024-01")                               # store-side method
            feb.atlas.write(store, "2024-02")                                  # the accessor, same effect
            store.add_xr_dataset(mar.chunk({"time": 1, "lat": 4}), "2024-03")  # dask-backed: streamed block by block
            print("pending datasets:", store.list_datasets())
        print("flushed:", atlas.Atlas.open(path))

        # 2. How the mapping looks in the store.
        store = atlas.Atlas.open(path)
        view = store.open_dataset("2024-01")
        print("arrays:", view.list_arrays())
        attrs = {k: v for k, v in view.attributes().items() if k != "_pyatlas_meta"}
        print("attributes:", attrs)
        print("temperature fill value:", view.array_fill_value("temperature"))
        print("2024-03 on-disk chunks (from dask):", store.open_dataset("2024-03").array_meta("temperature")["chunk_shape"])

        # 3. Exact round trips.
        for name, ds in [("2024-01", jan), ("2024-02", feb), ("2024-03", mar)]:
            back = store.to_xarray(name)
            xr.testing.assert_identical(back, ds)
            kind = type(back["temperature"].data).__module__.split(".")[0]
            print(f"{name}: identical (temperature is {kind}-backed)")

        # 4. Lazy reads: one dask task per on-disk chunk; slicing reads only the chunks touched.
        lazy = store.to_xarray("2024-03")["temperature"]
        print("dask chunks:", lazy.data.chunks, "tasks:", len(lazy.data.__dask_graph__()))
        print("mean of week 0:", float(lazy.isel(time=0).mean().compute()))

        # 5. Many datasets of one schema as one stacked dataset (eager, or lazy with chunks="auto").
        stacked = store.to_xarray_many(["2024-01", "2024-02", "2024-03"], concat_dim="month")
        print("stacked:", dict(stacked.sizes), "months:", stacked["month"].values.tolist())
        lazy_stack = store.to_xarray_many(["2024-01", "2024-02", "2024-03"], concat_dim="month", chunks="auto")
        xr.testing.assert_identical(lazy_stack.compute(), stacked)
        print("lazy stack == eager stack")

        # 6. The xarray backend: engine="atlas", group=<dataset name>.
        with xr.open_dataset(path, engine="atlas", group="2024-02") as opened:
            xr.testing.assert_identical(opened.load(), feb)
            print("xr.open_dataset(engine='atlas') identical:", list(opened.data_vars))
        opened = xr.open_dataset(path, engine="atlas", group="2024-03", chunks={})
        print("with chunks={}:", opened["temperature"].data.chunks)


if __name__ == "__main__":
    main()
