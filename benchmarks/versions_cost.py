"""What versions cost: a small flush on a store of many datasets, expire() and compact() with retained versions.

Run:  python benchmarks/versions_cost.py [--datasets 10000] [--versions 200]

1. the median time of a flush that changes one attribute, on a store of ``--datasets``
   datasets (every flush now also writes the version's metadata file): compare with the same
   script run against a checkout without versions (the version part is skipped there);
2. ``expire(keep_last=1)`` of ``--versions`` versions, and how its time grows with the
   number of datasets (it should not);
3. ``compact()`` with every version kept (nothing rewritten: the keep set alone) and after
   ``expire(keep_last=1)``.
Times are medians of a few runs on a shared machine: compare, do not quote as absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import atlas


def build(path: str, n: int) -> atlas.Atlas:
    s = atlas.Atlas.create(path)
    for i in range(n):
        d = s.create_dataset(f"d{i:06d}")
        d.define_array("v", "float32", ["x"], [16])
        d.write_array("v", [0], np.full(16, i, np.float32))
    s.flush()
    return s


def median_flush(s: atlas.Atlas, runs: int = 15) -> float:
    ts = []
    for k in range(runs):
        s.open_dataset("d000000").set_attribute("k", k)
        t = time.perf_counter()
        s.flush()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=10_000)
    ap.add_argument("--versions", type=int, default=200)
    args = ap.parse_args()
    root = tempfile.mkdtemp()
    has_versions = hasattr(atlas.Atlas, "expire")
    for n in (100, args.datasets):
        path = os.path.join(root, f"s{n}")
        s = build(path, n)
        meta = os.path.getsize(os.path.join(path, "atlas.meta"))
        print(f"{n:>7} datasets: metadata {meta / 1e6:.2f} MB, one-attribute flush {median_flush(s) * 1e3:.1f} ms (median)")
        if not has_versions:
            continue
        d = s.open_dataset("d000001")
        for k in range(args.versions):
            d.write_array("v", [k % 16], np.array([k], np.float32))
            s.flush()
        t = time.perf_counter()
        s.compact()
        print(f"{'':>7} compact with {len(s.history())} versions kept: {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        gone = s.expire(keep_last=1)
        print(f"{'':>7} expire of {len(gone)} versions: {(time.perf_counter() - t) * 1e3:.1f} ms")
        t = time.perf_counter()
        s.compact()
        print(f"{'':>7} compact after expiry: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
