"""Staged writes: parallel ingest of NetCDF files, and the cost of one commit as it grows.

    python benchmarks/staged.py [--files 200] [--repeat 3] [--quick]

1. Ingest ``--files`` NetCDF files (three float32 (12, 45, 90) variables with time/lat/lon
   coordinates, about 0.6 MB each) into a new store: serial ``Atlas.ingest`` (reader
   threads; NetCDF opens serialised) and ``Atlas.ingest(workers=N)`` with 1 and 2 worker
   processes (each run includes starting them; the pool's fixed cost is
   measured on its own with two tiny files). Wall time, and CPU time of this process plus
   its worker processes (psutil; on a loaded machine the wall time mostly measures the
   others' load). The first pool of a process also starts the fork server (that imports
   atlas and xarray once); it is measured on its own, once, before the other pools.
2. ``Atlas.commit_staged`` of 1,000 / 10,000 / 100,000 staged small datasets (three float32
   (100,) arrays each) spread over 100 writer results (a 100-node ingest): the commit
   alone, plus the pickled size of the results the coordinator receives.

Medians of ``--repeat`` runs; writes ``benchmarks/results/staged.md`` and ``staged.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

import atlas

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SHAPE = (12, 45, 90)


def make_files(folder: str, n: int) -> str:
    import pandas as pd
    import xarray as xr

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        data = {v: (("time", "lat", "lon"), (rng.standard_normal(SHAPE) * 10).astype("float32").round(2))
                for v in ("temp", "salt", "u")}
        ds = xr.Dataset(data, coords={"time": pd.date_range("2000-01-01", periods=SHAPE[0], freq="h") + pd.Timedelta(days=i),
                                      "lat": np.linspace(-60, 60, SHAPE[1]), "lon": np.linspace(0, 356, SHAPE[2])},
                        attrs={"file": i})
        ds.to_netcdf(os.path.join(folder, f"f{i:04d}.nc"))
    return os.path.join(folder, "*.nc")


def ingest_seconds(pattern: str, tmp: str, workers: int | None, repeat: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (this process + its worker processes)."""
    times, cpus = [], []
    for r in range(repeat):
        path = os.path.join(tmp, f"ingest-{workers}-{r}")
        c0 = time.process_time()
        t0 = time.perf_counter()
        with _WorkerCPU() as workers_cpu:
            store = atlas.Atlas.create(path)
            store.ingest([pattern], workers=workers)
            store.flush()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0 + workers_cpu.total)
        shutil.rmtree(path)
    return statistics.median(times), statistics.median(cpus)


class _WorkerCPU:
    """CPU seconds used by the worker processes (descendants that start after entering): polled
    every 50 ms with psutil (the last few ms of a worker may be missed; 0 without psutil)."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.total = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "_WorkerCPU":
        try:
            import psutil
        except ImportError:
            return self
        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}  # e.g. a fork server, already running

        def poll() -> None:
            while not self._stop.wait(0.05):
                for p in me.children(recursive=True):
                    if p.pid in before:
                        continue
                    try:
                        t = p.cpu_times()
                        self.seen[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if hasattr(self, "_thread"):
            self._thread.join()
        self.total = sum(self.seen.values())


def staged_results(store: atlas.Atlas, n: int, writers: int = 100) -> list[atlas.StagedResult]:
    data = np.random.default_rng(1).standard_normal((3, 100)).astype("float32")
    stage = store.stage()
    out = []
    per = -(-n // writers)
    for w in range(writers):
        wr = stage.writer()
        for i in range(w * per, min(n, (w + 1) * per)):
            ds = wr.create_dataset(f"ds{i:07d}")
            for k, v in enumerate(("a", "b", "c")):
                ds.define_array(v, "float32", ["x"], [100])
                ds.write_array(v, [0], data[k])
        out.append(wr.finish())
    return out


def commit_seconds(tmp: str, n: int, repeat: int) -> tuple[float, int]:
    base = os.path.join(tmp, f"commit-{n}")
    store = atlas.Atlas.create(base)
    results = staged_results(store, n)
    size = len(pickle.dumps(results))
    times = []
    for r in range(repeat):
        path = f"{base}-{r}"
        shutil.copytree(base, path)
        s = atlas.Atlas.open(path)
        t0 = time.perf_counter()
        s.commit_staged(results)
        times.append(time.perf_counter() - t0)
        assert len(s.list_datasets()) == n
        shutil.rmtree(path)
    shutil.rmtree(base)
    return statistics.median(times), size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    a = p.parse_args(argv)
    files = 6 if a.quick else a.files
    commits = (100, 1000) if a.quick else (1_000, 10_000, 100_000)
    repeat = 1 if a.quick else a.repeat
    out: dict[str, object] = {"files": files, "shape": SHAPE, "repeat": repeat, "cpus": os.cpu_count(),
                              "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="atlas-staged-") as tmp:
        pattern = make_files(os.path.join(tmp, "nc"), files)
        tiny = make_files(os.path.join(tmp, "tiny"), 2)
        ingest = {"serial": ingest_seconds(pattern, tmp, None, repeat)}
        ingest["first pool of the process (starts the fork server) + 2 tiny files, workers=2"] = \
            ingest_seconds(tiny, tmp, 2, 1)
        for w in (1, 2):
            ingest[f"workers={w}"] = ingest_seconds(pattern, tmp, w, repeat)
        ingest["pool start + 2 tiny files, workers=2"] = ingest_seconds(tiny, tmp, 2, repeat)
        out["ingest_s"] = ingest
        out["commit"] = {}
        for n in commits:
            t, size = commit_seconds(tmp, n, repeat)
            out["commit"][n] = {"seconds": t, "results_bytes": size}  # type: ignore[index]
            print(f"commit of {n} staged datasets: {t:.3f} s (results: {size / 1e6:.1f} MB pickled)", flush=True)
    out["load_after"] = os.getloadavg()[0]
    lines = [f"# Staged writes ({files} NetCDF files of 3 float32 {SHAPE}; medians of {repeat}; "
             f"{os.cpu_count()} CPUs, load {out['load']:.1f} before, {out['load_after']:.1f} after)", "",
             "| ingest | wall (s) | files/s | CPU (s), all processes |", "| --- | ---: | ---: | ---: |"]
    for k, (wall, cpu) in ingest.items():
        nf = 2 if "tiny" in k else files
        lines.append(f"| {k} | {wall:.2f} | {nf / wall:.1f} | {cpu:.2f} |")
    lines += ["", "| staged datasets (100 results) | commit (s) | results pickled (MB) |", "| ---: | ---: | ---: |"]
    for n, c in out["commit"].items():  # type: ignore[attr-defined]
        lines.append(f"| {n:,} | {c['seconds']:.3f} | {c['results_bytes'] / 1e6:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.quick:
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "staged.md"), "w") as f:
            f.write(text)
        with open(os.path.join(RESULTS, "staged.json"), "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
