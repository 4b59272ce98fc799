#!/usr/bin/env python
"""Per call: each kernel entry point of the engine as a warm Numba kernel and as its NumPy
version for small calls (``atlas._small``), over growing requests: where the thresholds in
``atlas._small`` come from. Medians of timeit repeats, microseconds per call.

    python benchmarks/small_paths.py
"""

from __future__ import annotations

import os
import statistics
import sys
import timeit

import numpy as np

from atlas import _small
from atlas._kernels import gather, grid, stats


def _us(fn, *args) -> float:
    fn(*args)
    n = max(1, int(2000 / (1 + len(args[0]) if hasattr(args[0], "__len__") else 1)))
    return statistics.median(timeit.repeat(lambda: fn(*args), number=n, repeat=5)) / n * 1e6


def _row(label: str, a: float, b: float) -> None:
    print(f"| {label} | {a:.1f} | {b:.1f} | {a / b:.1f} |")


def main() -> int:
    i64 = lambda *x: np.asarray(x, np.int64)  # noqa: E731
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cpu(s)\n")
    print("| call | NumPy (us) | kernel (us) | ratio |\n| --- | ---: | ---: | ---: |")
    for n in (1, 4, 16, 64, 256):  # a (n*4, 8) box over (4, 8) chunks: n pieces
        a = (i64(4 * n, 8), i64(4, 8), i64(0, 0), i64(4 * n, 8))
        _row(f"plan_box, {n} chunks", _us(_small.plan_box, *a), _us(grid.plan_box, *a))
    for n in (4, 64, 1024):
        a = (i64(4 * n, 8), i64(4, 8), np.arange(n, dtype=np.int64))
        _row(f"valid_shapes, {n} ids", _us(_small.valid_shapes, *a), _us(grid.valid_shapes, *a))
    ka = np.repeat(np.arange(10_000, dtype=np.int64), 8)
    kb = np.tile(np.arange(8, dtype=np.int64), 10_000)
    for q in (1, 16, 256, 4096):
        qa, qb = ka[::7][:q].copy(), kb[::7][:q].copy()
        _row(f"lookup, {q} queries in 80,000 keys", _us(_small.lookup, ka, kb, qa, qb), _us(grid.lookup, ka, kb, qa, qb))
    for pieces, side in ((1, 8), (4, 8), (16, 8), (64, 8), (4, 64), (4, 256)):  # pieces of (side, side) float32 chunks
        cells = side * side
        src = np.arange(pieces * cells, dtype=np.uint32)
        dst = np.zeros(pieces * cells, np.uint32)
        sq = np.tile(i64(side, side), (pieces, 1))
        a = (src, np.arange(pieces, dtype=np.int64) * cells, sq, np.zeros((pieces, 2), np.int64), dst,
             np.zeros(pieces, np.int64), i64(pieces * side, side),
             np.stack([np.arange(pieces) * side, np.zeros(pieces, np.int64)], 1).astype(np.int64), sq, 1)
        _row(f"copy_boxes, {pieces} pieces of {side}x{side} float32 ({src.nbytes // 1024} KiB)",
             _us(_small.copy_boxes, *a), _us(gather.copy_boxes, *a))
    for k, c in ((1, 32), (4, 32), (4, 256), (16, 1024)):
        buf = np.arange(k * c, dtype=np.float32)
        a = (buf, i64(c), np.tile(i64(c), (k, 1)), True, np.float32(np.nan), True, True, False, np.float32(0))
        _row(f"chunk_stats, {k} chunks of {c} float32", _us(_small.chunk_stats, *a), _us(stats.chunk_stats, *a))
    print(f"\nthresholds: SMALL_PIECES={_small.SMALL_PIECES}, SMALL_BYTES={_small.SMALL_BYTES}, "
          f"SMALL_QUERIES={_small.SMALL_QUERIES}, SMALL_CELLS={_small.SMALL_CELLS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
