"""Loading many gridded datasets as one stacked xarray dataset: atlas vs xr.open_mfdataset.

    python benchmarks/compare_xarray.py [--datasets 200] [--repeats 3] [--quick]

Writes the same data as N netCDF4 files (zstd level 3 when the netCDF library has it, else
zlib 1) and as one atlas store, then times, each in a fresh process:
  * atlas:  Atlas.open(path).to_xarray_many(names)            (eager, one stacked read per variable)
  * netCDF: xr.open_mfdataset(files, combine="nested", concat_dim="dataset").load()
and, in the atlas process, the time to build the lazy graph of a variable with 1,000 chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SHAPE = (24, 90, 180)
CHUNK = (6, 45, 90)
VARS = ("temp", "salt", "u")


def make_ds(i: int):
    import numpy as np
    import xarray as xr

    rng = np.random.default_rng(i)
    base = np.cumsum(rng.normal(size=SHAPE), axis=2).astype(np.float32)
    data = {v: (("time", "lat", "lon"), np.round((base + k) * 16) / 16) for k, v in enumerate(VARS)}
    coords = {"time": np.arange(SHAPE[0]).astype("datetime64[h]").astype("datetime64[ns]"),
              "lat": np.linspace(-89, 89, SHAPE[1]).astype(np.float32),
              "lon": np.linspace(0, 358, SHAPE[2]).astype(np.float32)}
    return xr.Dataset(data, coords=coords, attrs={"run": i})


def build(work: str, n: int) -> None:
    import atlas

    files = os.path.join(work, "nc")
    os.makedirs(files, exist_ok=True)
    with atlas.Atlas.create(os.path.join(work, "store")) as store:
        for i in range(n):
            ds = make_ds(i)
            enc = {v: {"zlib": True, "complevel": 1, "chunksizes": CHUNK} for v in VARS}
            try:
                enc = {v: {"compression": "zstd", "complevel": 3, "chunksizes": CHUNK} for v in VARS}
                ds.to_netcdf(os.path.join(files, f"ds{i:05d}.nc"), engine="netcdf4", encoding=enc)
            except Exception:  # noqa: BLE001 - older netCDF without zstd
                enc = {v: {"zlib": True, "complevel": 1, "chunksizes": CHUNK} for v in VARS}
                ds.to_netcdf(os.path.join(files, f"ds{i:05d}.nc"), engine="netcdf4", encoding=enc)
            store.add_xr_dataset(ds, f"ds{i:05d}", chunks={v: list(CHUNK) for v in VARS})


def child(system: str, work: str) -> None:
    import numpy as np
    import xarray as xr

    out = {}
    if system == "atlas":
        import atlas

        w = atlas.Atlas.create(tempfile.mkdtemp() + "/w")  # warm the kernels outside the clock
        w.add_xr_dataset(make_ds(0).isel(time=slice(0, 6)), "w", chunks={v: list(CHUNK) for v in VARS})
        w.flush()
        w.to_xarray_many(["w"])
        t = time.perf_counter()
        store = atlas.Atlas.open(os.path.join(work, "store"))
        ds = store.to_xarray_many(store.list_datasets())
        out["load"] = time.perf_counter() - t
        out["checksum"] = float(ds["temp"].values[:, 0, 0, 0].sum())
        big = atlas.Atlas.create(tempfile.mkdtemp() + "/g")
        v = big.create_dataset("g")
        v.define_array("x", "float32", ["a", "b"], [1000, 10], [1, 10])
        t = time.perf_counter()
        lazy = big.to_xarray("g")
        out["graph_1000_chunks"] = time.perf_counter() - t
        out["tasks"] = len(lazy["x"].data.__dask_graph__())
    else:
        files = sorted(os.listdir(os.path.join(work, "nc")))
        t = time.perf_counter()
        ds = xr.open_mfdataset([os.path.join(work, "nc", f) for f in files], combine="nested", concat_dim="dataset",
                               engine="netcdf4").load()
        out["load"] = time.perf_counter() - t
        out["checksum"] = float(ds["temp"].values[:, 0, 0, 0].sum())
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20 datasets, 1 repeat")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    n, reps = (20, 1) if a.quick else (a.datasets, a.repeats)
    with tempfile.TemporaryDirectory() as work:
        build(work, n)
        res: dict[str, list[dict]] = {"atlas": [], "open_mfdataset": []}
        for _ in range(reps):
            for system in res:
                p = subprocess.run([sys.executable, __file__, "--child", system, work], capture_output=True, text=True, check=True)
                res[system].append(json.loads(p.stdout.strip().splitlines()[-1]))
    a_t = statistics.median(r["load"] for r in res["atlas"])
    m_t = statistics.median(r["load"] for r in res["open_mfdataset"])
    assert abs(res["atlas"][0]["checksum"] - res["open_mfdataset"][0]["checksum"]) < 1e-3, "the two systems read different data"
    g = statistics.median(r["graph_1000_chunks"] for r in res["atlas"])
    print(f"### {n} gridded datasets x {len(VARS)} float32 {SHAPE} chunked {CHUNK}, median of {reps}\n")
    print("| | atlas to_xarray_many | xr.open_mfdataset(...).load() | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| load as one stacked dataset (s) | {a_t:.3f} | {m_t:.3f} | {a_t / m_t:.3f}x |")
    print(f"\nlazy graph of a variable with 1,000 chunks: {g * 1e3:.1f} ms ({res['atlas'][0]['tasks']} tasks)")
    print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
