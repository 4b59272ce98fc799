"""Chunk-grid kernels: which chunks a box touches, and chunk-index lookups.

The jitted loops allocate nothing (arrays allocated inside a kernel cost numba extra
compilations of its allocation helpers, about doubling the compile time); the public
wrappers allocate the outputs and scratch space.
"""

from __future__ import annotations

import numpy as np
from numba import types

from . import I64, IN1, OUT1, OUT2, OUT3, kernel

_NO_IDS = np.empty(0, np.int64)
_NO_PIECES = np.empty((3, 0, 1), np.int64)


def plan_box(shape, chunk, start, count):
    """Intersect the box ``[start, start+count)`` with the chunk grid of an array.

    ``shape``, ``chunk``, ``start``, ``count`` are int64 arrays of one rank (>= 1).
    Returns ``(chunk_ids, src_start, dst_start, box)``: for each touched chunk in row-major
    grid order its linear id, where the piece starts inside the chunk, where it starts
    inside the box, and its extent (the last three ``(n, ndim)`` int64).
    """
    nd = shape.shape[0]
    scratch = np.empty(4 * nd, np.int64)
    n = _plan(shape, chunk, start, count, _NO_IDS, _NO_PIECES, scratch)
    ids = np.empty(n, np.int64)
    pieces = np.empty((3, n, nd), np.int64)
    _plan(shape, chunk, start, count, ids, pieces, scratch)
    return ids, pieces[0], pieces[1], pieces[2]


@kernel(sig=I64(IN1, IN1, IN1, IN1, OUT1, OUT3, OUT1))
def _plan(shape, chunk, start, count, ids, pieces, scratch):  # pragma: no cover - compiled
    """Returns the number ``n`` of touched chunks; fills ``ids`` and ``pieces`` (3, n, nd) when they hold ``n``."""
    nd = shape.shape[0]
    n = 1
    for d in range(nd):
        scratch[3 * nd + d] = (shape[d] + chunk[d] - 1) // chunk[d]  # grid
        scratch[d + nd] = 0  # idx
        if count[d] <= 0:
            n = 0
            scratch[d] = 0  # first
            scratch[2 * nd + d] = 0  # span
        else:
            scratch[d] = start[d] // chunk[d]
            scratch[2 * nd + d] = (start[d] + count[d] - 1) // chunk[d] - scratch[d] + 1
            n *= scratch[2 * nd + d]
    if n > ids.shape[0]:
        return n
    for k in range(n):
        lin = 0
        for d in range(nd):
            c = scratch[d] + scratch[d + nd]
            c0 = c * chunk[d]
            lo = start[d] if start[d] > c0 else c0
            hi = start[d] + count[d]
            if hi > c0 + chunk[d]:
                hi = c0 + chunk[d]
            pieces[0, k, d] = lo - c0
            pieces[1, k, d] = lo - start[d]
            pieces[2, k, d] = hi - lo
            lin = lin * scratch[3 * nd + d] + c
        ids[k] = lin
        d = nd - 1
        while d >= 0:
            scratch[d + nd] += 1
            if scratch[d + nd] < scratch[2 * nd + d]:
                break
            scratch[d + nd] = 0
            d -= 1
    return n


def valid_shapes(shape, chunk, ids):
    """For each linear chunk id, the extent of the chunk that lies inside the array (``(n, ndim)`` int64)."""
    out = np.empty((ids.shape[0], shape.shape[0]), np.int64)
    _valid(shape, chunk, ids, out, np.empty(shape.shape[0], np.int64))
    return out


@kernel(sig=types.void(IN1, IN1, IN1, OUT2, OUT1))
def _valid(shape, chunk, ids, out, grid):  # pragma: no cover - compiled
    nd = shape.shape[0]
    for d in range(nd):
        grid[d] = (shape[d] + chunk[d] - 1) // chunk[d]
    for k in range(ids.shape[0]):
        lin = ids[k]
        for d in range(nd - 1, -1, -1):
            c = lin % grid[d]
            lin //= grid[d]
            e = shape[d] - c * chunk[d]
            out[k, d] = chunk[d] if chunk[d] < e else e


def lookup(keys_a, keys_b, q_a, q_b):
    """Positions of the query pairs in the lexicographically sorted key columns (-1 if absent)."""
    out = np.empty(q_a.shape[0], np.int64)
    _lookup(keys_a, keys_b, q_a, q_b, out)
    return out


@kernel(sig=types.void(IN1, IN1, IN1, IN1, OUT1))
def _lookup(keys_a, keys_b, q_a, q_b, out):  # pragma: no cover - compiled
    """:func:`lookup` into ``out`` (one compiled copy for every caller)."""
    n = keys_a.shape[0]
    for i in range(q_a.shape[0]):
        a = q_a[i]
        b = q_b[i]
        lo = 0
        hi = n
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys_a[mid] < a or (keys_a[mid] == a and keys_b[mid] < b):
                lo = mid + 1
            else:
                hi = mid
        if lo < n and keys_a[lo] == a and keys_b[lo] == b:
            out[i] = lo
        else:
            out[i] = -1
