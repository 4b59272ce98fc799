"""Plain NumPy / Python references for the Numba kernels in ``atlas._kernels``.

Written from the kernels' docstrings (and from how ``atlas._read`` calls them), not from
their loops: chunk grids are enumerated with ``itertools.product`` and intersected as
ranges, copies are NumPy slice assignments on reshaped byte blocks, statistics are NumPy
masks, and ``lookup`` is a dict.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _grid(shape, chunk):
    """Number of chunks along each axis (ceil division, also for zero-length axes)."""
    return [len(range(0, int(s), int(c))) for s, c in zip(shape, chunk)]


def _chunk_range(s, c, i):
    """The cells ``[lo, hi)`` of chunk ``i`` along an axis of length ``s`` and chunk ``c``."""
    r = range(int(s))[i * int(c):(i + 1) * int(c)]
    return (r.start, r.stop) if len(r) else (i * int(c), i * int(c))


def plan_box(shape, chunk, start, count):
    """Reference of ``grid.plan_box``: every chunk of the grid (row-major) whose cells meet the box."""
    nd = len(shape)
    grid = _grid(shape, chunk)
    ids, src, dst, box = [], [], [], []
    for coords in itertools.product(*(range(g) for g in grid)):  # row-major order
        s_, d_, b_ = [], [], []
        ok = True
        for d, ci in enumerate(coords):
            c0 = ci * int(chunk[d])
            chunk_cells = set(range(c0, c0 + int(chunk[d])))
            box_cells = set(range(int(start[d]), int(start[d]) + int(count[d])))
            inter = chunk_cells & box_cells
            if not inter:
                ok = False
                break
            lo, hi = min(inter), max(inter) + 1
            s_.append(lo - c0)
            d_.append(lo - int(start[d]))
            b_.append(hi - lo)
        if ok:
            ids.append(int(np.ravel_multi_index(coords, grid)))
            src.append(s_)
            dst.append(d_)
            box.append(b_)
    n = len(ids)
    return (np.asarray(ids, np.int64).reshape(n), np.asarray(src, np.int64).reshape(n, nd),
            np.asarray(dst, np.int64).reshape(n, nd), np.asarray(box, np.int64).reshape(n, nd))


def valid_shapes(shape, chunk, ids):
    """Reference of ``grid.valid_shapes``: extent of each chunk inside the array."""
    grid = _grid(shape, chunk)
    table = {}
    for lin, coords in enumerate(itertools.product(*(range(g) for g in grid))):
        ext = []
        for d, ci in enumerate(coords):
            lo, hi = _chunk_range(shape[d], chunk[d], ci)
            ext.append(hi - lo)
        table[lin] = ext
    return np.asarray([table[int(i)] for i in ids], np.int64).reshape(len(ids), len(shape))


def lookup(keys_a, keys_b, q_a, q_b):
    """Reference of ``grid.lookup``: position of each query pair among the (unique) keys, or -1."""
    where = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(keys_a.tolist(), keys_b.tolist()))}
    return np.asarray([where.get((int(a), int(b)), -1) for a, b in zip(q_a.tolist(), q_b.tolist())], np.int64)


def copy_boxes(src, src_off, src_shape, src_start, dst, dst_off, dst_shape, dst_start, box, itemsize):
    """Reference of ``gather.copy_boxes``; returns a modified copy of ``dst`` (pieces applied in order)."""
    out = dst.copy()
    dshape = tuple(int(x) for x in dst_shape)
    dbytes = math.prod(dshape) * itemsize
    for k in range(box.shape[0]):
        b = [int(x) for x in box[k]]
        if any(x <= 0 for x in b):
            continue
        sshape = tuple(int(x) for x in src_shape[k])
        sbytes = math.prod(sshape) * itemsize
        so, do = int(src_off[k]), int(dst_off[k])
        sblock = src[so:so + sbytes].reshape(sshape + (itemsize,))
        dblock = out[do:do + dbytes].reshape(dshape + (itemsize,))  # a view into ``out``
        ssl = tuple(slice(int(a), int(a) + e) for a, e in zip(src_start[k], b))
        dsl = tuple(slice(int(a), int(a) + e) for a, e in zip(dst_start[k], b))
        dblock[dsl] = sblock[ssl]
    return out


def cell_is_null(vals, has_fill, fill, fill_is_nan):
    """Boolean mask: cells that count as null (equal to the fill, or NaN when the fill is NaN)."""
    vals = np.asarray(vals)
    if not has_fill:
        return np.zeros(vals.shape, bool)
    null = vals == fill
    if fill_is_nan and vals.dtype.kind == "f":
        null |= np.isnan(vals)
    return null


def minmax_candidates(vals, skip_nan, skip_value, skip):
    """The values that may become min / max (NaN and the skip value removed)."""
    vals = np.asarray(vals)
    keep = np.ones(vals.shape, bool)
    if skip_nan and vals.dtype.kind == "f":
        keep &= ~np.isnan(vals)
    if skip_value:
        keep &= vals != skip
    return vals[keep]


def chunk_stats(buf, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip):
    """Reference of ``stats.chunk_stats``: ``(non_null, min, max, has)`` per chunk.

    ``min``/``max`` are only meaningful where ``has`` is True (they are 0 elsewhere here).
    """
    return chunk_stats_masked(buf, np.empty(0, np.uint8), chunk_shape, valid, has_fill, fill, fill_is_nan,
                              skip_nan, skip_value, skip)


def chunk_stats_masked(buf, written, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip):
    """Reference of ``stats.chunk_stats_masked``: as :func:`chunk_stats`, and when ``written`` is not
    empty (one byte per cell of ``buf``) cells whose byte is 0 are null."""
    cs = tuple(int(x) for x in chunk_shape)
    size = math.prod(cs)
    k = valid.shape[0]
    nn = np.zeros(k, np.int64)
    mn = np.zeros(k, buf.dtype)
    mx = np.zeros(k, buf.dtype)
    has = np.zeros(k, bool)
    for c in range(k):
        block = buf[c * size:(c + 1) * size].reshape(cs)
        sel = tuple(slice(0, max(0, int(v))) for v in valid[c])
        region = block[sel].ravel()
        null = cell_is_null(region, has_fill, fill, fill_is_nan)
        if len(written):
            null |= written[c * size:(c + 1) * size].reshape(cs)[sel].ravel() == 0
        nonnull = region[~null]
        nn[c] = nonnull.size
        cand = minmax_candidates(nonnull, skip_nan, skip_value, skip)
        if cand.size:
            has[c] = True
            mn[c] = cand.min()
            mx[c] = cand.max()
    return nn, mn, mx, has


def array_stats(data, written, fill, is_timestamp):
    """Reference of ``DatasetView.array_stats`` for a numeric/timestamp array.

    ``data``: the storage-typed (int64 for timestamps) reference array; ``written``: mask of
    cells ever written. ``fill``: the fill value given to ``define_array`` (storage form) or None.
    Returns ``(row_count, null_count, min, max)`` with min/max as storage scalars or None.
    """
    data = np.asarray(data)
    written = np.asarray(written, bool)
    vals = data[written]
    fill_is_nan = fill is not None and data.dtype.kind == "f" and math.isnan(fill)
    fv = data.dtype.type(fill) if fill is not None else data.dtype.type(0)
    null = cell_is_null(vals, fill is not None, fv, fill_is_nan)
    nonnull = vals[~null]
    nat = np.iinfo(np.int64).min
    cand = minmax_candidates(nonnull, data.dtype.kind == "f", is_timestamp, data.dtype.type(nat) if is_timestamp else 0)
    row_count = data.size
    null_count = int((~written).sum() + null.sum())
    if cand.size == 0:
        return row_count, null_count, None, None
    return row_count, null_count, cand.min(), cand.max()
