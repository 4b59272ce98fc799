"""Entry point of the comparison harness (``python -m benchmarks.compare --help``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from .workloads import OPS, WORKLOADS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READ_OPS = ("open_list", "read_one", "read_all", "slices", "stats", "stacked")
WARM_CELLS = 4096  # cells per array in the warm-up store, at least
MIN_RUNS, MAX_RUNS, BUDGET_S = 3, 7, 2.0  # in-process runs of a read operation (each with a fresh handle)


# ------------------------------------------------------------------ child side
def _rss_reset() -> float:
    """Reset the peak RSS (Linux) and return the current RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024
    except OSError:
        return float("nan")


def _rss_peak() -> float:
    try:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
    except OSError:
        return float("nan")


def _run_op(drv: Any, op: str, path: str, w: Any) -> Any:
    h = drv.open(path)
    try:
        if op == "open_list":
            return drv.list(h)
        names = drv.list(h)
        if op == "read_one":
            return drv.read(h, names[len(names) // 2], w)
        if op == "read_all":
            return drv.read_all(h, names, w)
        if op == "slices":
            return drv.slices_all(h, names, w)
        if op == "stats":
            return drv.stats_all(h, names, w)
        if op == "stacked":
            return drv.stacked(h, names, w)
        raise ValueError(f"unknown operation {op!r}")
    finally:
        drv.close(h)


def child(system: str, workload: str, op: str, path: str, n: int) -> dict[str, Any]:
    """Warm up on a throwaway 2-dataset store, then time ``op`` (prints one JSON line)."""
    import numpy as np

    from .drivers import all_drivers

    drv = all_drivers()[system]
    w = WORKLOADS[workload].scaled(n)
    tmp = tempfile.mkdtemp(prefix="atlas-compare-warm-")
    try:
        # enough datasets that batched work (e.g. atlas's flush statistics) takes its large-input path too
        tiny = w.scaled(min(w.n, max(2, -(-WARM_CELLS // math.prod(w.shape)))))
        drv.ingest(os.path.join(tmp, "s"), tiny)
        for o in READ_OPS:
            if o not in drv.skip:
                _run_op(drv, o, os.path.join(tmp, "s"), tiny)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {"version": drv.version(), "note": drv.note}
    if op == "ingest":
        base = _rss_reset()
        t = time.perf_counter()
        drv.ingest(path, w)
        out["s"] = time.perf_counter() - t
        out["rss_mb"] = _rss_peak() - base
        return out
    times = []
    t_end = time.perf_counter() + BUDGET_S
    while len(times) < MIN_RUNS or (len(times) < MAX_RUNS and time.perf_counter() < t_end):
        drv.forget()
        t = time.perf_counter()
        got = _run_op(drv, op, path, w)
        times.append(time.perf_counter() - t)
    out["s"] = statistics.median(times)
    if op == "read_one":  # the data read equals the source data
        i = len(w.names()) // 2
        src = w.data(i, w)
        out["ok"] = all(np.array_equal(np.asarray(got[v]).view(np.int64) if v == "time" else got[v], src[v].view(np.int64)
                                       if v == "time" else src[v]) for v in w.all_arrays())
    return out


# ------------------------------------------------------------------ parent side
def _spawn(system: str, workload: str, op: str, path: str, n: int) -> dict[str, Any]:
    env = dict(os.environ)
    py = sys.executable
    if system == "reference":
        py = os.environ["ATLAS_REFERENCE_PYTHON"]
        env["PYTHONPATH"] = ROOT  # the harness only; atlas is the reference's own
    else:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    cmd = [py, "-m", "benchmarks.compare", "--child", system, workload, op, path, str(n)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    if p.returncode < 0:  # killed by a signal (seen once from a peer under heavy load): say so, try once more
        print(f"{system} {workload} {op}: the child died of signal {-p.returncode}; running it again",
              file=sys.stderr, flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"{system} {workload} {op} failed (exit status {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(workload: str, systems: list[str], repeats: int, n: int, work: str, log: Any) -> dict[str, Any]:
    from .drivers import all_drivers

    drivers = all_drivers()
    res: dict[str, Any] = {"workload": workload, "n": n, "repeats": repeats, "systems": {}}
    for s in systems:
        drv = drivers[s]
        if not drv.available():
            res["systems"][s] = {"missing": True}
            print(f"{workload}: {s} not installed", file=log, flush=True)
            continue
        base = os.path.join(work, workload, s)
        r: dict[str, Any] = {op: [] for op in OPS}
        for k in range(repeats):
            path = os.path.join(base, f"store{k}")
            got = _spawn(s, workload, "ingest", path, n)
            r["ingest"].append(got["s"])
            r["ingest_rss"].append(got["rss_mb"])
            r["version"], r["note"] = got["version"], got["note"]
            if k:
                shutil.rmtree(path, ignore_errors=True)
        store = os.path.join(base, "store0")
        for op in READ_OPS:
            if op in drv.skip:
                r[op] = [math.nan]
                continue
            for _ in range(repeats):
                got = _spawn(s, workload, op, store, n)
                r[op].append(got["s"])
                if "ok" in got:
                    r.setdefault("ok", []).append(got["ok"])
        shutil.rmtree(base, ignore_errors=True)
        res["systems"][s] = {"median": {op: statistics.median(v) for op, v in r.items() if op in OPS},
                             "runs": {op: r[op] for op in OPS}, "version": r["version"], "note": r["note"],
                             "verified": all(r.get("ok", [False]))}
        print(f"{workload}: {s} done", file=log, flush=True)
    return res


def _is_peer(system: str) -> bool:
    from .drivers import all_drivers

    return all_drivers()[system].peer


def _fmt(x: float, mb: bool) -> str:
    if math.isnan(x):
        return "-"
    if mb:
        return f"{x:.0f}"
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def markdown(res: dict[str, Any], machine: str) -> str:
    w = WORKLOADS[res["workload"]].scaled(res["n"])
    sy = res["systems"]
    cols = list(sy)
    peers = [s for s in cols if s != "atlas" and not sy[s].get("missing") and _is_peer(s)]
    lines = [f"### {res['workload']}: {w.describe()}", "",
             f"Median of {res['repeats']} fresh processes (each: the median of {MIN_RUNS}-{MAX_RUNS} runs with a fresh "
             "handle; ingest once). Times; RSS in MB.", "",
             "| operation | " + " | ".join(cols) + " | best peer | atlas / best peer |",
             "| --- | " + " | ".join("---:" for _ in cols) + " | --- | ---: |"]
    for op, label in OPS.items():
        mb = op == "ingest_rss"
        cells = ["not installed" if sy[s].get("missing") else _fmt(sy[s]["median"][op], mb) for s in cols]
        ok = [s for s in peers if not math.isnan(sy[s]["median"][op])]
        row = f"| {label.replace(' (s)', '').replace(' (MB)', ' (MB)')} | " + " | ".join(cells)
        if ok and "atlas" in sy and not sy["atlas"].get("missing"):
            best = min(ok, key=lambda s: sy[s]["median"][op])
            a, b = sy["atlas"]["median"][op], sy[best]["median"][op]
            row += f" | {best} | {a / b:.2f}x |" if b > 0 else f" | {best} | - |"
        else:
            row += " | - | - |"
        lines.append(row)
    lines.append("")
    notes = [f"{s}: {sy[s]['version']}" + (f", {sy[s]['note']}" if sy[s]["note"] else "") +
             ("" if sy[s]["verified"] else " (READ CHECK FAILED)") for s in cols if not sy[s].get("missing")]
    lines += ["Systems: " + "; ".join(notes) + ". Reads of one dataset were checked against the source data.", "",
              machine, ""]
    return "\n".join(lines)


def chart(res: dict[str, Any], path: str) -> bool:
    """A bar per operation: atlas time / best peer time (log scale); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sy = res["systems"]
    peers = [s for s in sy if s != "atlas" and not sy[s].get("missing") and _is_peer(s)]
    if "atlas" not in sy or sy["atlas"].get("missing") or not peers:
        return False
    ops = [op for op in OPS if op != "ingest_rss"]
    ratios = [sy["atlas"]["median"][op] / min(sy[s]["median"][op] for s in peers if not math.isnan(sy[s]["median"][op]))
              for op in ops]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ops) + 1))
    ax.barh([OPS[o].replace(" (s)", "") for o in ops][::-1], ratios[::-1],
            color=["tab:green" if r <= 1 else "tab:red" for r in ratios][::-1])
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("atlas time / best peer time (below 1: atlas is faster)")
    ax.set_title(f"{res['workload']}: atlas vs the best of {', '.join(peers)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def machine_line(load0: tuple[float, ...], load1: tuple[float, ...], wall: float) -> str:
    return (f"Machine: {os.cpu_count()} cpu(s), {platform.platform()}, Python {platform.python_version()}; "
            f"load average at start {tuple(round(x, 2) for x in load0)}, at end {tuple(round(x, 2) for x in load1)} "
            f"(a shared machine); wall time {wall:.0f} s.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    ap.add_argument("--workload", default="small", help="comma-separated: " + ", ".join(WORKLOADS))
    ap.add_argument("--systems", default="atlas,reference,h5py,netCDF4,zarr,tensorstore,icechunk")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per operation")
    ap.add_argument("--datasets", type=int, default=0, help="override the workload's dataset count")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"), help="directory for compare-<workload>.md/.json")
    ap.add_argument("--child", nargs=5, metavar=("SYSTEM", "WORKLOAD", "OP", "PATH", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        s, wl, op, path, n = a.child
        print(json.dumps(child(s, wl, op, path, int(n))))
        return 0
    from .drivers import all_drivers

    known = all_drivers()
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    for s in systems:
        if s not in known:
            ap.error(f"unknown system {s!r}; choose from {', '.join(known)}")
    os.makedirs(a.out, exist_ok=True)
    for wl in a.workload.split(","):
        if wl not in WORKLOADS:
            ap.error(f"unknown workload {wl!r}; choose from {', '.join(WORKLOADS)}")
        n = a.datasets or WORKLOADS[wl].n
        work = tempfile.mkdtemp(prefix="atlas-compare-")
        load0, t0 = os.getloadavg(), time.perf_counter()
        try:
            res = run(wl, systems, a.repeats, n, work, sys.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        md = markdown(res, machine_line(load0, os.getloadavg(), time.perf_counter() - t0))
        with open(os.path.join(a.out, f"compare-{wl}.json"), "w") as f:
            json.dump(res, f, indent=1)
        if chart(res, os.path.join(a.out, f"compare-{wl}.png")):
            md += f"\n![atlas / best peer, {wl}](compare-{wl}.png)\n"
        with open(os.path.join(a.out, f"compare-{wl}.md"), "w") as f:
            f.write(md)
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
