"""Stacked box reads over ingested fields: one chunk per variable vs ingest's default chunking.

Run: ``python benchmarks/ingest_chunking.py [N_FILES]``. Writes N small NetCDF files (one
512x1024 float32 field each, 2 MiB), ingests them twice (``chunks={"y": -1, "x": -1}``: one
chunk per variable, as ingest did before; and the default, chunks of <= 1 MiB) and times a
10x10 box read across all of them (median of 7).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from atlas import Atlas


def main(n: int = 100) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "nc"
        folder.mkdir()
        for i in range(n):
            field = rng.normal(size=(1, 512, 1024)).astype("f4")
            xr.Dataset({"sst": (("time", "y", "x"), field)}).to_netcdf(folder / f"f{i:04d}.nc")
        for label, chunks in (("one chunk per variable", {"y": -1, "x": -1}), ("default (<= 1 MiB)", None)):
            store = Atlas.create(Path(tmp) / label.split()[0])
            t0 = time.perf_counter()
            names = store.ingest(str(folder / "*.nc"), chunks=chunks)
            store.flush()
            t_ingest = time.perf_counter() - t0
            chunk = store.open_dataset(names[0]).array_meta("sst")["chunk_shape"]
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                store.read_array_across_stacked("sst", names, [0, 200, 300], [1, 10, 10])
                times.append(time.perf_counter() - t0)
            print(f"{label:24s} chunk {chunk}: ingest {t_ingest:.2f} s, stacked 10x10 box over {n} fields "
                  f"{statistics.median(times) * 1000:.1f} ms (median of 7)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
