"""Array statistics: row_count, null_count, min and max, kept per chunk and combined at flush.

Shows what counts as null (unwritten cells; cells equal to the fill value; NaN cells when the
fill is NaN), that NaN and NaT are never min or max, statistics of integers with a sentinel
fill, of strings and of timestamps, that statistics are "as of the last flush", and how to
screen many datasets by their statistics without reading their data.

Run:  python examples/06_stats.py
"""

import os
import tempfile

import numpy as np

import atlas


def show(ds: atlas.DatasetView, name: str) -> dict:
    """Print one array's statistics next to what it reads back; return the statistics."""
    s = ds.array_stats(name)
    data, fill = ds.read_array(name), ds.array_fill_value(name)
    if data.dtype.kind == "M":  # timestamps: show dates (the fill value is kept as int ns since the epoch)
        data, fill = [str(v) for v in data], np.datetime64(fill, "ns")
    else:
        data = data.tolist()
    print(f"  {name:10s} fill={fill!r:28}  data={data}")
    print(f"  {'':10s} stats={s}")
    return s


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stats_store")
        store = atlas.Atlas.create(path)
        ds = store.create_dataset("buoy")

        # Floats, NaN fill: 8 cells, 5 written (one of them NaN), 3 never written.
        ds.define_array("sst", dtype="float32", dims=["t"], shape=[8], chunk_shape=[4], fill_value=float("nan"))
        ds.write_array("sst", [0], np.array([14.5, np.nan, 15.25, 13.0, 16.5], dtype=np.float32))
        # Floats, no fill value: a written NaN is a value (not null), but never the min or max.
        ds.define_array("wind", dtype="float64", dims=["t"], shape=[4])
        ds.write_array("wind", [0], np.array([3.5, np.nan, 7.25, 0.5]))
        # Integers with a sentinel fill: written -999 cells are null like unwritten ones.
        ds.define_array("depth", dtype="int16", dims=["t"], shape=[6], chunk_shape=[3], fill_value=-999)
        ds.write_array("depth", [0], np.array([12, -999, 40, 7], dtype=np.int16))
        # Integers without a fill value: unwritten cells read as 0 and are null; a written 0 is a value.
        ds.define_array("count", dtype="int32", dims=["t"], shape=[6], chunk_shape=[3])
        ds.write_array("count", [1], np.array([0, 5, 9], dtype=np.int32))
        # Strings: min/max compare as Python str; the fill "n/a" is null also where written.
        ds.define_array("crew", dtype="string", dims=["t"], shape=[5], fill_value="n/a")
        ds.write_array("crew", [0], np.array(["Maria", "n/a", "Ade", "Zoë"], dtype=object))
        # Timestamps with a NaT fill: NaT cells are null; min/max come back as datetime64[ns].
        ds.define_array("visit", dtype="timestamp_ns", dims=["t"], shape=[4], fill_value=np.datetime64("NaT"))
        ds.write_array("visit", [0], np.array(["2024-03-01T12:00", "NaT", "2023-11-20"], dtype="datetime64[ns]"))
        # Nothing written at all: every cell is null, min and max are None.
        ds.define_array("salinity", dtype="float32", dims=["t"], shape=[4], fill_value=float("nan"))

        # 1. Statistics are computed at flush: before the first one there are none.
        assert ds.array_stats("sst") is None
        print("before the first flush: array_stats('sst') ->", ds.array_stats("sst"))
        store.flush()

        print("\nafter the flush:")
        s = show(ds, "sst")
        assert (s["row_count"], s["null_count"]) == (8, 4)         # 3 unwritten + 1 NaN
        assert s["min"] == np.float32(13.0) and s["max"] == np.float32(16.5)
        assert type(s["min"]) is np.float32                         # in the array's own dtype
        sst = ds.read_array("sst")
        assert s["null_count"] == np.isnan(sst).sum() and s["max"] == np.nanmax(sst)

        s = show(ds, "wind")
        assert (s["null_count"], s["min"], s["max"]) == (0, 0.5, 7.25)

        s = show(ds, "depth")
        assert (s["null_count"], s["min"], s["max"]) == (3, 7, 40)  # -999 twice unwritten, once written

        s = show(ds, "count")
        assert (s["null_count"], s["min"], s["max"]) == (3, 0, 9)   # reads show four zeros, one is data
        assert (ds.read_array("count") == 0).sum() == 4

        s = show(ds, "crew")
        assert (s["null_count"], s["min"], s["max"]) == (2, "Ade", "Zoë")

        s = show(ds, "visit")
        assert s["null_count"] == 2
        assert s["min"] == np.datetime64("2023-11-20", "ns") and s["max"] == np.datetime64("2024-03-01T12:00", "ns")

        s = show(ds, "salinity")
        assert s == {"row_count": 4, "null_count": 4, "min": None, "max": None}

        # 2. "As of the last flush": a pending write is visible to reads at once, to the
        #    statistics only after the next flush.
        ds.write_array("sst", [5], np.array([21.0, 9.5], dtype=np.float32))
        print("\nwrote 21.0 and 9.5 into sst[5:7], not flushed yet:")
        print("  read_array:", ds.read_array("sst").tolist())
        print("  stats:     ", ds.array_stats("sst"))
        assert ds.array_stats("sst")["max"] == np.float32(16.5)
        store.flush()
        s = ds.array_stats("sst")
        print("  after flush:", s)
        assert (s["null_count"], s["min"], s["max"]) == (2, 9.5, 21.0)

        #    Overwriting cells replaces their chunk's statistics: the max can go down.
        ds.write_array("sst", [5], np.array([15.0, 15.5], dtype=np.float32))
        store.flush()
        s = ds.array_stats("sst")
        print("overwrote them with 15.0 and 15.5:", s)
        assert (s["min"], s["max"]) == (13.0, 16.5)

        # 3. Statistics are stored with the chunk index, so they survive a reopen, and a scan
        #    of many datasets' statistics reads no array data at all.
        for day in range(30):
            d = store.create_dataset(f"day_{day:02d}")
            d.define_array("sst", dtype="float32", dims=["t"], shape=[24], chunk_shape=[6], fill_value=float("nan"))
            values = 12 + 3 * np.sin(np.arange(24) / 24 * 2 * np.pi + day).astype(np.float32)
            values[day % 24] = np.nan                           # one missing hour per day
            if day in (4, 17):
                values[12] = 25.0                               # two days with a spike
            d.write_array("sst", [0], values.astype(np.float32))
        store.close()

        store = atlas.Atlas.open(path)
        days = [n for n in store.list_datasets() if n.startswith("day_")]
        stats = {n: store.open_dataset(n).array_stats("sst") for n in days}
        hot = [n for n, s in stats.items() if s["max"] > 20]
        print(f"\nreopened; {len(days)} days screened by statistics, max > 20 on: {hot}")
        assert hot == ["day_04", "day_17"]
        assert all(s["null_count"] == 1 and s["row_count"] == 24 for s in stats.values())
        spikes = store.read_array_across_stacked("sst", hot)    # then read only those
        assert np.nanmax(spikes, axis=1).tolist() == [25.0, 25.0]
        print("read only those:", spikes.shape, "max per day:", np.nanmax(spikes, axis=1).tolist())
        print("ok")


if __name__ == "__main__":
    main()
