"""Chunk-grid kernels: which chunks a box touches, and chunk-index lookups."""

from __future__ import annotations

import numpy as np

from . import kernel, readonly


@kernel
def plan_box(shape, chunk, start, count):  # pragma: no cover - compiled
    """Intersect the box ``[start, start+count)`` with the chunk grid of an array.

    ``shape``, ``chunk``, ``start``, ``count`` are int64 arrays of one rank (>= 1).
    Returns ``(chunk_ids, src_start, dst_start, box)``: for each touched chunk in row-major
    grid order its linear id, where the piece starts inside the chunk, where it starts
    inside the box, and its extent.
    """
    nd = shape.shape[0]
    first = np.empty(nd, np.int64)
    span = np.empty(nd, np.int64)
    grid = np.empty(nd, np.int64)
    n = 1
    for d in range(nd):
        grid[d] = (shape[d] + chunk[d] - 1) // chunk[d]
        if count[d] <= 0:
            n = 0
            span[d] = 0
            first[d] = 0
        else:
            first[d] = start[d] // chunk[d]
            span[d] = (start[d] + count[d] - 1) // chunk[d] - first[d] + 1
            n *= span[d]
    ids = np.empty(n, np.int64)
    src = np.empty((n, nd), np.int64)
    dst = np.empty((n, nd), np.int64)
    box = np.empty((n, nd), np.int64)
    idx = np.zeros(nd, np.int64)
    for k in range(n):
        lin = 0
        for d in range(nd):
            c = first[d] + idx[d]
            c0 = c * chunk[d]
            lo = max(start[d], c0)
            hi = min(start[d] + count[d], c0 + chunk[d])
            src[k, d] = lo - c0
            dst[k, d] = lo - start[d]
            box[k, d] = hi - lo
            lin = lin * grid[d] + c
        ids[k] = lin
        d = nd - 1
        while d >= 0:
            idx[d] += 1
            if idx[d] < span[d]:
                break
            idx[d] = 0
            d -= 1
    return ids, src, dst, box


@kernel
def valid_shapes(shape, chunk, ids):  # pragma: no cover - compiled
    """For each linear chunk id, the extent of the chunk that lies inside the array."""
    nd = shape.shape[0]
    n = ids.shape[0]
    grid = np.empty(nd, np.int64)
    for d in range(nd):
        grid[d] = (shape[d] + chunk[d] - 1) // chunk[d]
    out = np.empty((n, nd), np.int64)
    for k in range(n):
        lin = ids[k]
        for d in range(nd - 1, -1, -1):
            c = lin % grid[d]
            lin //= grid[d]
            out[k, d] = min(chunk[d], shape[d] - c * chunk[d])
    return out


def lookup(keys_a, keys_b, q_a, q_b):
    """Positions of the query pairs in the lexicographically sorted key columns (-1 if absent)."""
    return _lookup(readonly(keys_a), readonly(keys_b), readonly(q_a), readonly(q_b))


@kernel
def _lookup(keys_a, keys_b, q_a, q_b):  # pragma: no cover - compiled
    """:func:`lookup` on read-only inputs (one compiled copy for every caller)."""
    n = keys_a.shape[0]
    out = np.empty(q_a.shape[0], np.int64)
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
    return out
