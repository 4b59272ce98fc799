#!/usr/bin/env python
"""How ingest, open and stacked reads scale with the number of datasets in one store.

    python benchmarks/scaling.py                    # 100, 1,000, 10,000, 100,000 datasets
    python benchmarks/scaling.py --max 10000        # stop at 10,000
    python benchmarks/scaling.py --sizes 100,1000 --out /tmp/scaling.md --json /tmp/scaling.json

Every dataset holds three float32 (100,) arrays ``a``, ``b``, ``c`` (zstd). For each size N,
two fresh processes (imports and a tiny warm-up round trip, which compiles or loads the
Numba kernels, before any clock):

1. ``ingest``: create the store, ``create_dataset`` + ``define_array`` + ``write_array``
   for every dataset (``write``), one ``flush()`` (``flush``); the store and metadata sizes.
2. ``read``: ``Atlas.open`` (the first one in the process, then the median of 5 more);
   what an open store keeps alive: gc-tracked objects (``gc.get_objects()``, which leaves
   out str/bytes) and tracemalloc blocks and bytes (every allocation, str included); then on
   a fresh open, ``read_array_across_stacked("a", all names)`` twice (the first call also
   decodes each dataset's metadata and reads the chunk index) and the slice ``a[0:25]``.

The table gives seconds and microseconds per dataset; "growth" is the per-dataset cost
relative to the previous size (1.0 = linear, below 1 = better than linear). Results go to
stdout, to ``--out`` (markdown, default ``benchmarks/results/scaling.md``) and ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VARS = ("a", "b", "c")
LENGTH = 100
SIZES = (100, 1_000, 10_000, 100_000)
OPEN_REPEATS = 5
CHILD_TIMEOUT = 3600


def dataset_name(i: int) -> str:
    return f"ds{i:06d}"


def make_data(n: int, seed: int = 3) -> np.ndarray:
    """``(n, 3, 100)`` float32 with 10 mantissa bits kept (compressible like real data)."""
    d = np.random.default_rng(seed).standard_normal((n, len(VARS), LENGTH), dtype=np.float32)
    return (d.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def write_all(store: Any, data: np.ndarray) -> None:
    for i in range(data.shape[0]):
        ds = store.create_dataset(dataset_name(i))
        for k, v in enumerate(VARS):
            ds.define_array(v, "float32", ["obs"], [LENGTH])
            ds.write_array(v, [0], data[i, k])


def tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def warmup() -> None:
    import atlas

    tmp = tempfile.mkdtemp(prefix="atlas-scaling-warm-")
    try:
        p = os.path.join(tmp, "w")
        st = atlas.Atlas.create(p, codec="zstd")
        write_all(st, make_data(3, seed=1))
        st.flush()
        st = atlas.Atlas.open(p)
        names = st.list_datasets()
        st.read_array_across_stacked("a", names)
        st.read_array_across_stacked("a", names, [0], [25])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def retained(make: Any) -> tuple[int, int, int]:
    """(gc-tracked objects, tracemalloc blocks, tracemalloc bytes) alive while ``make()``'s result is."""
    import tracemalloc

    gc.collect()
    g0 = len(gc.get_objects())
    obj = make()
    gc.collect()
    g1 = len(gc.get_objects())
    del obj
    gc.collect()
    tracemalloc.start()
    try:
        s0 = tracemalloc.take_snapshot()
        obj = make()
        gc.collect()
        s1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    diff = s1.compare_to(s0, "filename")
    del obj
    return g1 - g0, sum(d.count_diff for d in diff), sum(d.size_diff for d in diff)


# --------------------------------------------------------------------------- child
def child(phase: str, n: int, path: str) -> dict[str, Any]:
    import atlas

    warmup()
    res: dict[str, Any] = {"phase": phase, "n": n}
    if phase == "ingest":
        data = make_data(n)
        gc.collect()
        t0 = time.perf_counter()
        store = atlas.Atlas.create(path, codec="zstd")
        write_all(store, data)
        t1 = time.perf_counter()
        store.flush()
        t2 = time.perf_counter()
        res.update(write=t1 - t0, flush=t2 - t1, ingest=t2 - t0, store_bytes=tree_bytes(path),
                   meta_bytes=os.path.getsize(os.path.join(path, "atlas.meta")))
        return res
    t0 = time.perf_counter()
    store = atlas.Atlas.open(path)
    res["open_first"] = time.perf_counter() - t0
    del store
    times = []
    for _ in range(OPEN_REPEATS):
        t0 = time.perf_counter()
        store = atlas.Atlas.open(path)
        times.append(time.perf_counter() - t0)
        del store
    res["open"] = statistics.median(times)
    res["open_gc_objects"], res["open_blocks"], res["open_bytes"] = retained(lambda: atlas.Atlas.open(path))
    store = atlas.Atlas.open(path)
    t0 = time.perf_counter()
    names = store.list_datasets()
    out = store.read_array_across_stacked("a", names)
    res["stacked_first"] = time.perf_counter() - t0
    assert out.shape == (n, LENGTH)
    t0 = time.perf_counter()
    store.read_array_across_stacked("a", names)
    res["stacked_second"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sl = store.read_array_across_stacked("a", names, [0], [25])
    res["stacked_slice"] = time.perf_counter() - t0
    src = make_data(n)[:, 0, :]
    if not (np.array_equal(out, src) and np.array_equal(sl, src[:, :25])):
        raise AssertionError("stacked read differs from the written data")
    res["gc_objects_after_stacked"] = retained(lambda: _open_and_touch(path))[0]
    return res


def _open_and_touch(path: str) -> Any:
    import atlas

    store = atlas.Atlas.open(path)
    store.read_array_across_stacked("a", store.list_datasets(), [0], [1])
    return store


def run_child(phase: str, n: int, path: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", phase, str(n), path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"child {phase} n={n} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


# --------------------------------------------------------------------------- report
def render(rows: list[dict[str, Any]], machine: str, note: str) -> str:
    def us(x: float, n: int) -> str:
        return f"{x / n * 1e6:.1f}"

    def growth(key: str, i: int) -> str:
        if i == 0:
            return "-"
        a, b = rows[i - 1], rows[i]
        return f"{(b[key] / b['n']) / (a[key] / a['n']):.2f}"

    lines = [
        "### scaling: N datasets x three float32 (100,) arrays (zstd), one store",
        "",
        "| datasets | ingest (s) | write (s) | flush (s) | ingest µs/ds | growth | open (s) | open µs/ds | growth "
        "| first stacked a, all (s) | µs/ds | growth | second stacked (s) | stacked a[0:25] (s) |",
        "| ---: |" + " ---: |" * 13,
    ]
    for i, r in enumerate(rows):
        lines.append(
            f"| {r['n']:,} | {r['ingest']:.3f} | {r['write']:.3f} | {r['flush']:.3f} | {us(r['ingest'], r['n'])} | "
            f"{growth('ingest', i)} | {r['open']:.4f} | {us(r['open'], r['n'])} | {growth('open', i)} | "
            f"{r['stacked_first']:.4f} | {us(r['stacked_first'], r['n'])} | {growth('stacked_first', i)} | "
            f"{r['stacked_second']:.4f} | {r['stacked_slice']:.4f} |")
    lines += [
        "",
        "| datasets | first open in the process (s) | open: gc-tracked objects | open: tracemalloc blocks | per dataset "
        "| open: retained bytes per dataset | gc objects after a stacked read | atlas.meta (MB) | store (MB) |",
        "| ---: |" + " ---: |" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['open_first']:.4f} | {r['open_gc_objects']:,} | {r['open_blocks']:,} | "
            f"{r['open_blocks'] / r['n']:.2f} | {r['open_bytes'] / r['n']:.0f} | {r['gc_objects_after_stacked']:,} | "
            f"{r['meta_bytes'] / 1e6:.2f} | {r['store_bytes'] / 1e6:.1f} |")
    lines += [
        "",
        f"open = median of {OPEN_REPEATS} opens after the first one in a fresh process (page cache warm); "
        "'first stacked' is the first read after an open (decodes each dataset's metadata, loads the chunk index); "
        "growth = per-dataset cost / the previous row's (1.0 = linear).",
        "gc-tracked objects leave out str/bytes; tracemalloc blocks count every allocation the open store keeps "
        "(about one per Python object of any type).",
    ]
    if note:
        lines.append(note)
    lines.append(machine)
    return "\n".join(lines)


def machine_line() -> str:
    import numba

    import atlas

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        git = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip() or "unknown"
        if subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--", "../src"], capture_output=True, text=True,
                          timeout=10).stdout.strip():
            git += "+dirty"
    except (OSError, subprocess.SubprocessError):
        git = "unknown"
    return (f"machine: {os.cpu_count()} cpu(s), {cpu}, load {tuple(round(x, 2) for x in os.getloadavg())}, "
            f"{platform.platform()}; python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__}, atlas {atlas.__version__} @ {git} ({atlas.num_threads()} thread(s))")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max", type=int, default=SIZES[-1], help="largest N (default 100000)")
    p.add_argument("--sizes", help="comma-separated N values instead of 100,1000,10000,100000")
    p.add_argument("--out", default=os.path.join(HERE, "results", "scaling.md"), help="markdown output ('' for none)")
    p.add_argument("--json", help="also write the numbers to this json file")
    p.add_argument("--workdir", help="where stores go (default: a temporary directory, removed at the end)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.child[2])), flush=True)
        return 0
    sizes = [int(x) for x in a.sizes.split(",")] if a.sizes else [s for s in SIZES if s <= a.max]
    if not sizes or min(sizes) < 1:
        p.error("no sizes to run")
    own = a.workdir is None
    workdir = tempfile.mkdtemp(prefix="atlas-scaling-") if own else os.path.abspath(a.workdir)
    os.makedirs(workdir, exist_ok=True)
    t_all = time.perf_counter()
    rows = []
    try:
        for n in sizes:
            path = os.path.join(workdir, f"store-{n}")
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            r = run_child("ingest", n, path)
            r.update({k: v for k, v in run_child("read", n, path).items() if k not in ("phase", "n")})
            shutil.rmtree(path, ignore_errors=True)
            rows.append(r)
            print(f"  n={n:>7,}: ingest {r['ingest']:.3f} s, open {r['open']:.4f} s, first stacked "
                  f"{r['stacked_first']:.4f} s ({time.perf_counter() - t0:.0f} s wall)", file=sys.stderr, flush=True)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - t_all
    note = f"sizes: {', '.join(f'{n:,}' for n in sizes)}; total wall time {wall:.0f} s."
    text = render(rows, machine_line(), note)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(f"## scaling\n\nMade by `python benchmarks/scaling.py {' '.join(sys.argv[1:] if argv is None else argv)}`."
                    f"\n\n{text}\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "wall_seconds": wall}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
