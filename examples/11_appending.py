"""Growing datasets: a daily append to many stations, then a padded stacked read.

Every station is one dataset with a ``time`` coordinate and two variables. Each "day"
appends one step to every station that reported (not all do), under one ``with`` block:
one flush, one new segment per array name. Stations therefore end with different lengths;
``read_array_across_stacked(..., pad=True)`` and ``to_xarray_many(..., pad=True)`` stack
them anyway, padding the missing steps (NaN for floats without a fill value).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
import xarray as xr

import atlas

N_STATIONS = 20
DAYS = 10
START = np.datetime64("2024-03-01", "ns")


def observation(station: int, day: int) -> xr.Dataset:
    """One day's data of one station (a real pipeline would read a file or an API here)."""
    t = np.asarray([START + np.timedelta64(day, "D")], dtype="datetime64[ns]")
    temp = np.asarray([10.0 + station + 0.5 * day], dtype="float32")
    rh = np.asarray([50 + (station * 7 + day) % 40], dtype="int16")
    return xr.Dataset({"temp": ("time", temp), "rh": ("time", rh)}, coords={"time": t},
                      attrs={"station": f"st{station:03d}"})


def reports(station: int, day: int) -> bool:
    return (station * 3 + day) % 7 != 0 or day == 0  # some stations miss some days


with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "stations")
    names = [f"st{s:03d}" for s in range(N_STATIONS)]
    with atlas.Atlas.create(path) as store:
        for s, name in enumerate(names):
            # time grows: choose a chunk length along it (the default would be the first shape, 1)
            store.add_xr_dataset(observation(s, 0), name, chunks={v: {"time": 64} for v in ("time", "temp", "rh")})
    counts = {n: 1 for n in names}
    for day in range(1, DAYS):
        with atlas.Atlas.open(path) as store:  # one flush per day, whatever the number of stations
            for s, name in enumerate(names):
                if reports(s, day):
                    store.add_xr_dataset(observation(s, day), name, append_dim="time")
                    counts[name] += 1
    store = atlas.Atlas.open(path)
    print(f"{len(names)} stations, {DAYS} days, generation {store.generation}")

    # the whole series of one station, and its exact statistics
    st0 = store.to_xarray(names[0], chunks=None)
    print(f"{names[0]}: {st0.sizes['time']} steps, temp {st0.temp.values.min():.1f}..{st0.temp.values.max():.1f}")
    assert st0.sizes["time"] == counts[names[0]]
    assert pd.Index(st0.time.values).is_monotonic_increasing
    stats = store.open_dataset(names[0]).array_stats("temp")
    assert stats["row_count"] == counts[names[0]] and stats["null_count"] == 0

    # a repeated day is refused and changes nothing
    try:
        store.add_xr_dataset(observation(0, DAYS - 1), names[0], append_dim="time")
    except ValueError as e:
        print("refused:", str(e)[:90], "...")
    assert store.open_dataset(names[0]).array_meta("temp")["shape"] == [counts[names[0]]]

    # stations differ in length: a strict stacked read refuses, a padded one fills with NaN
    lengths = [store.open_dataset(n).array_meta("temp")["shape"][0] for n in names]  # each one's valid length
    temp = store.read_array_across_stacked("temp", names, pad=True)
    print(f"stacked temp {temp.shape}; lengths {min(lengths)}..{max(lengths)}; NaN cells {int(np.isnan(temp).sum())}")
    assert temp.shape == (N_STATIONS, max(lengths))
    for i, n in enumerate(lengths):
        assert not np.isnan(temp[i, :n]).any() and np.isnan(temp[i, n:]).all()
    both = store.to_xarray_many(names, concat_dim="station", pad=True)
    print(both.temp.isel(station=slice(0, 3)).to_pandas().round(1).to_string(max_cols=6))
    assert both.sizes == {"station": N_STATIONS, "time": max(lengths)}
    assert store.verify() == []
print("done")
