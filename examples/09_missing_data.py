"""Missing data: fill values, unwritten cells, datasets that lack an array, NaN fills.

Shows what unwritten cells read as (the fill value, or 0 / "" / NaT without one), that
unwritten chunks take no space, which fill values are accepted, what the bulk reads do when
some datasets lack an array (None in ``read_array_across``, ``KeyError`` in the stacked form)
or use different fill values, and how to mask missing cells in NumPy and xarray.

Run:  python examples/09_missing_data.py
"""

import os
import tempfile

import numpy as np

import atlas


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gaps_store")
        store = atlas.Atlas.create(path)

        # 1. No fill value: never-written cells read as 0, "" or NaT, depending on the dtype.
        ds = store.create_dataset("defaults")
        for dtype in ("int8", "uint64", "float32", "string", "timestamp_ns"):
            ds.define_array(f"a_{dtype}", dtype=dtype, dims=["x"], shape=[3])
        print("never written, no fill value:")
        for name, arr in ds.read_arrays(ds.list_arrays()).items():
            print(f"  {name:15s} {arr!r}")
        got = ds.read_arrays(ds.list_arrays())
        assert (got["a_int8"] == 0).all() and (got["a_uint64"] == 0).all() and (got["a_float32"] == 0).all()
        assert got["a_string"].tolist() == ["", "", ""]
        assert np.isnat(got["a_timestamp_ns"]).all()
        #    A 0 read back can be data or a gap: give arrays with gaps a fill value.

        # 2. Fill values: unwritten cells, in unwritten chunks and in partly written ones, read as it.
        ds = store.create_dataset("station_A")
        ds.define_array("temperature", dtype="float32", dims=["t"], shape=[8], chunk_shape=[4],
                        fill_value=float("nan"))
        ds.write_array("temperature", [0], np.array([11.5, 12.0, 12.5], dtype=np.float32))
        ds.define_array("rain_mm", dtype="int16", dims=["t"], shape=[8], chunk_shape=[4], fill_value=-1)
        ds.write_array("rain_mm", [2], np.array([0, 3, 0], dtype=np.int16))
        ds.define_array("observer", dtype="string", dims=["shift"], shape=[4], fill_value="unknown")
        ds.write_array("observer", [1], np.array(["Ana"], dtype=object))
        ds.define_array("checked", dtype="timestamp_ns", dims=["inspection"], shape=[3],
                        fill_value=np.datetime64("1970-01-01", "ns"))
        ds.write_array("checked", [0], np.array(["2024-05-02T08:30"], dtype="datetime64[ns]"))
        print("\nwith fill values (station_A):")
        for name in ds.list_arrays():
            data = np.array2string(ds.read_array(name), max_line_width=120)
            print(f"  {name:12s} fill={ds.array_fill_value(name)!r:10} {data}")
        temp = ds.read_array("temperature")
        assert np.isnan(temp[3:]).all() and temp[2] == 12.5
        assert ds.read_array("rain_mm").tolist() == [-1, -1, 0, 3, 0, -1, -1, -1]
        assert ds.read_array("observer").tolist() == ["unknown", "Ana", "unknown", "unknown"]
        assert ds.read_array("checked")[1] == np.datetime64(0, "ns")
        #    A timestamp fill value is kept as int nanoseconds since the epoch.
        assert ds.array_fill_value("checked") == 0 and isinstance(ds.array_fill_value("checked"), int)

        #    Fill values must match the dtype; nothing is converted silently.
        for dtype, fill, error in (("int8", 300, OverflowError), ("int16", 1.5, TypeError),
                                   ("int16", float("nan"), TypeError), ("float32", "nan", TypeError)):
            try:
                ds.define_array("probe", dtype=dtype, dims=["t"], shape=[1], fill_value=fill)
            except (TypeError, OverflowError) as e:
                print(f"  fill_value={fill!r} for {dtype}: {type(e).__name__}: {e}")
                assert type(e) is error
            else:
                raise AssertionError(f"fill_value={fill!r} must be refused for {dtype}")

        # 3. Unwritten chunks are not stored: a 2000 x 2000 float64 grid (32 MB) with one chunk written.
        sparse = store.create_dataset("sparse")
        sparse.define_array("grid", dtype="float64", dims=["row", "col"], shape=[2000, 2000],
                            chunk_shape=[100, 100], fill_value=float("nan"))
        sparse.write_array("grid", [300, 500], np.random.default_rng(0).standard_normal((100, 100)))  # 80 kB
        store.flush()
        on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(path, "arrays"))
                      for f in fs)
        grid = sparse.read_array("grid")
        print(f"\nsparse grid: {grid.nbytes / 1e6:.0f} MB when read, {on_disk / 1e3:.0f} kB on disk for the whole "
              f"store; {np.count_nonzero(~np.isnan(grid))} cells written (one 80 kB chunk)")
        assert on_disk < 120_000 and np.count_nonzero(~np.isnan(grid)) == 100 * 100
        s = sparse.array_stats("grid")
        assert s["null_count"] == 2000 * 2000 - 100 * 100
        print(f"its stats: row_count {s['row_count']:,}, null_count {s['null_count']:,}")

        # 4. Datasets that lack an array. station_B has no rain gauge; station_C's
        #    temperature uses -99 as fill instead of NaN.
        b = store.create_dataset("station_B")
        b.define_array("temperature", dtype="float32", dims=["t"], shape=[8], chunk_shape=[4],
                       fill_value=float("nan"))
        b.write_array("temperature", [4], np.array([9.0, 9.5], dtype=np.float32))
        c = store.create_dataset("station_C")
        c.define_array("temperature", dtype="float32", dims=["t"], shape=[8], chunk_shape=[4], fill_value=-99.0)
        c.write_array("temperature", [0], np.array([15.0, 15.5], dtype=np.float32))
        c.define_array("rain_mm", dtype="int16", dims=["t"], shape=[8], chunk_shape=[4], fill_value=-1)
        c.write_array("rain_mm", [0], np.array([7, 7, 7, 7, 7, 7, 7, 7], dtype=np.int16))
        store.close()

        store = atlas.Atlas.open(path)
        stations = ["station_A", "station_B", "station_C"]
        print("\nstation_B.read_array('rain_mm'):", store.open_dataset("station_B").read_array("rain_mm"))
        assert store.open_dataset("station_B").read_array("rain_mm") is None
        assert store.open_dataset("station_B").read_arrays(["rain_mm"]) == {"rain_mm": None}

        #    read_array_across: a list, None for the datasets without the array.
        rain = store.read_array_across("rain_mm", stations)
        print("read_array_across('rain_mm'):", rain)
        assert rain[1] is None and rain[2].tolist() == [7] * 8

        #    read_array_across_stacked needs the array everywhere: KeyError names the culprit ...
        try:
            store.read_array_across_stacked("rain_mm", stations)
        except KeyError as e:
            print("read_array_across_stacked('rain_mm') -> KeyError:", e)
        else:
            raise AssertionError("a stacked read must refuse a dataset without the array")
        #    ... so select the datasets that have it first (metadata only, no data read).
        having = [n for n in stations if store.open_dataset(n).array_meta("rain_mm") is not None]
        print("datasets with rain_mm:", having, "->", store.read_array_across_stacked("rain_mm", having).shape)
        assert having == ["station_A", "station_C"]
        #    An unknown dataset name is a KeyError in both forms.
        try:
            store.read_array_across("rain_mm", ["station_A", "station_Z"])
        except KeyError as e:
            print("unknown dataset -> KeyError:", e)

        # 5. Each dataset's unwritten cells read as its own fill value, also in a stacked read:
        #    station_C's gaps are -99, the others' NaN. Mask each with its own fill value.
        temps = store.read_array_across_stacked("temperature", stations)
        print("\nstacked temperature, as read:\n", temps)
        assert np.isnan(temps[0, 3]) and temps[2, 3] == -99.0
        missing = np.zeros(temps.shape, dtype=bool)
        for i, name in enumerate(stations):
            fill = store.open_dataset(name).array_fill_value("temperature")
            missing[i] = np.isnan(temps[i]) if np.isnan(fill) else temps[i] == fill   # NaN != NaN: use isnan
        masked = np.ma.masked_array(temps, mask=missing)
        print("masked with each dataset's fill:\n", masked)
        print("mean of the real values per station:", masked.mean(axis=1).round(2).tolist())
        assert masked.mean(axis=1).round(2).tolist() == [12.0, 9.25, 15.25]
        assert missing.sum() == sum(store.open_dataset(n).array_stats("temperature")["null_count"] for n in stations)

        # 6. xarray: NaN fills are NaN; other fills stay as values, with the fill in
        #    .encoding["_FillValue"] (as xarray keeps it for data it has already decoded).
        xa = store.to_xarray("station_A", chunks=None)
        fill = xa["rain_mm"].encoding["_FillValue"]
        rain_xr = xa["rain_mm"].where(xa["rain_mm"] != fill)
        print(f"\nto_xarray: rain_mm {xa['rain_mm'].values.tolist()} (_FillValue {fill}) "
              f"-> .where(): {rain_xr.values.tolist()}")
        assert fill == -1 and int(rain_xr.count()) == 3 and float(rain_xr.sum()) == 3.0

        # 7. A deleted and re-created array starts empty: it reads as its fill value,
        #    never as the old data.
        a = store.open_dataset("station_A")
        a.delete_array("rain_mm")
        a.define_array("rain_mm", dtype="int16", dims=["t"], shape=[8], fill_value=-1)
        store.flush()
        print("\nrain_mm deleted and defined again:", a.read_array("rain_mm"))
        assert (a.read_array("rain_mm") == -1).all()
        print("ok")


if __name__ == "__main__":
    main()
