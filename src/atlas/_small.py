"""NumPy versions of the kernels for small requests, and the one rule choosing between them.

Importing numba and loading its registries costs a process about 0.7 s of CPU before the
first kernel runs, and compiling a kernel without a cache another 0.2-0.5 s each, while a
quick start's requests (a few chunks of a few hundred cells) take microseconds either way.
So every kernel entry point the engine calls through :data:`atlas._lazy.K` has a plain
NumPy / Python twin here, used when the request is small; large requests keep the GIL-free
Numba kernels. A process whose requests are all small never imports numba.

Until a process needs its first kernel, a call is small when it is under every threshold
below; after that, every call runs the kernels (:data:`atlas._lazy.K` switches once numba's
start-up is paid, since a warm kernel is faster at every size). The thresholds, all here,
come from ``benchmarks/small_paths.py``: a NumPy version costs about 2-3 us per piece,
chunk or query (a warm kernel call about 2-4 us in all), so at these limits a small call
costs some tens of microseconds more than a warm kernel, while importing numba costs about 0.7 s of CPU
and compiling a kernel 0.2-0.5 s more:

* :data:`SMALL_PIECES`: ``plan_box`` of a box touching at most this many chunks,
  ``valid_shapes`` of at most this many chunk ids, ``copy_boxes`` of at most this many
  pieces (and at most :data:`SMALL_BYTES` in its smaller buffer);
* :data:`SMALL_QUERIES`: ``lookup`` of at most this many query pairs (the key columns may
  be any size: the search is O(queries x log keys));
* :data:`SMALL_CELLS`: ``chunk_stats`` / ``chunk_stats_masked`` over at most this many cells.

Every NumPy version returns what its kernel returns (same dtypes, same values, the same
``IndexError`` for a copy outside its buffer); tests/test_kernels.py checks both against
tests/reference.py.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

SMALL_PIECES = 16
"""plan_box (touched chunks), valid_shapes (ids), copy_boxes (pieces): NumPy at or below this."""
SMALL_BYTES = 64 * 1024
"""copy_boxes: NumPy only when the smaller of its two buffers holds at most this many bytes."""
SMALL_QUERIES = 64
"""lookup: NumPy at or below this many query pairs."""
SMALL_CELLS = 1024
"""chunk_stats(_masked): NumPy at or below this many cells in ``buf``."""

_NO_MASK = np.empty(0, np.uint8)


# ---------------------------------------------------------------------------- grid
def _touched(chunk: list[int], start: list[int], count: list[int]) -> int:
    """How many chunks the box meets (0 when a count is <= 0)."""
    n = 1
    for c, a, k in zip(chunk, start, count):
        if k <= 0:
            return 0
        n *= (a + k - 1) // c - a // c + 1
    return n


def plan_box(shape: np.ndarray, chunk: np.ndarray, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, ...]:
    """``grid.plan_box`` in Python: the touched chunks enumerated axis by axis (row-major)."""
    nd = shape.shape[0]
    sh, ch, st, ct = shape.tolist(), chunk.tolist(), start.tolist(), count.tolist()
    if _touched(ch, st, ct) == 0:
        e = np.empty((0, nd), np.int64)
        return np.empty(0, np.int64), e, e.copy(), e.copy()
    # one row per touched chunk: [linear id, src..., dst..., box...], built one axis at a time
    rows: list[list[int]] = [[0]]
    for d in range(nd):
        c, a, k = ch[d], st[d], ct[d]
        g = (sh[d] + c - 1) // c
        hi_box = a + k
        axis = []
        for i in range(a // c, (hi_box - 1) // c + 1):
            c0 = i * c
            lo = a if a > c0 else c0
            hi = hi_box if hi_box < c0 + c else c0 + c
            axis.append((i, lo - c0, lo - a, hi - lo))
        rows = [[r[0] * g + i] + r[1:] + [s, t, b] for r in rows for i, s, t, b in axis]
    p = np.asarray(rows, np.int64)
    return p[:, 0].copy(), p[:, 1::3].copy(), p[:, 2::3].copy(), p[:, 3::3].copy()


def valid_shapes(shape: np.ndarray, chunk: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``grid.valid_shapes`` in NumPy: chunk coordinates from the ids, extents clipped to the array."""
    n, nd = ids.shape[0], shape.shape[0]
    out = np.empty((n, nd), np.int64)
    if n == 0:
        return out
    lin = ids.astype(np.int64, copy=True)
    sh, ch = shape.tolist(), chunk.tolist()
    for d in range(nd - 1, -1, -1):
        g = (sh[d] + ch[d] - 1) // ch[d]
        lin, c = np.divmod(lin, g)
        np.minimum(sh[d] - c * ch[d], ch[d], out=out[:, d])
    return out


_SCAN = 16  # runs of equal first keys up to this long are scanned at once, longer ones bisected
_AR = np.arange(_SCAN, dtype=np.int64)


def lookup(keys_a: np.ndarray, keys_b: np.ndarray, q_a: np.ndarray, q_b: np.ndarray) -> np.ndarray:
    """``grid.lookup`` in NumPy: ``searchsorted`` on the first column finds each query's run of
    equal first keys; the second column is then searched within the runs (all queries at once)."""
    n, q = keys_a.shape[0], q_a.shape[0]
    if n == 0 or q == 0:
        return np.full(q, -1, np.int64)
    lo = keys_a.searchsorted(q_a, "left")
    hi = keys_a.searchsorted(q_a, "right")
    longest = int((hi - lo).max())
    if longest <= _SCAN:  # count the run's keys below the query in one (q, longest) comparison
        j = lo[:, None] + _AR[:longest]
        inside = j < hi[:, None]
        np.minimum(j, n - 1, out=j)
        pos = lo + ((keys_b[j] < q_b[:, None]) & inside).sum(1)
    else:  # bisection, every query one step per pass
        pos, top = lo.copy(), hi.copy()
        act = pos < top
        while act.any():
            mid = (pos + top) >> 1
            np.minimum(mid, n - 1, out=mid)
            right = act & (keys_b[mid] < q_b)
            pos = np.where(right, mid + 1, pos)
            top = np.where(act & ~right, mid, top)
            act = pos < top
    at = np.minimum(pos, n - 1)
    return np.where((pos < hi) & (keys_b[at] == q_b), pos, -1).astype(np.int64, copy=False)


# ---------------------------------------------------------------------------- copies
def _strides(shape: list[int], cell: int) -> list[int]:
    out = [0] * len(shape)
    s = cell
    for d in range(len(shape) - 1, -1, -1):
        out[d] = s
        s *= shape[d]
    return out


def copy_boxes(src: np.ndarray, src_off: np.ndarray, src_shape: np.ndarray, src_start: np.ndarray, dst: np.ndarray,
               dst_off: np.ndarray, dst_shape: np.ndarray, dst_start: np.ndarray, box: np.ndarray, itemsize: int) -> None:
    """``gather.copy_boxes`` in NumPy: each piece is one strided byte view assigned to another."""
    w = src.dtype.itemsize
    if dst.dtype.itemsize != w:
        raise TypeError(f"copy_boxes: buffers of {src.dtype} and {dst.dtype} differ in element width")
    n = box.shape[0]
    if n == 0:
        return
    s8, d8 = src.reshape(-1).view(np.uint8), dst.reshape(-1).view(np.uint8)
    cell = itemsize * w
    dstr = _strides(dst_shape.tolist(), cell)
    sshapes = src_shape.tolist()
    same = sshapes.count(sshapes[0]) == n  # the usual case: pieces of equal chunks
    sstr = _strides(sshapes[0], cell)
    slen, dlen = s8.shape[0], d8.shape[0]
    for k, (so, do, s0, d0, b) in enumerate(zip(src_off.tolist(), dst_off.tolist(), src_start.tolist(),
                                                 dst_start.tolist(), box.tolist())):
        if min(b) <= 0:
            continue
        if not same:
            sstr = _strides(sshapes[k], cell)
        so *= w
        do *= w
        sext = dext = cell
        for x, a, c, ss, ds in zip(b, s0, d0, sstr, dstr):
            so += a * ss
            do += c * ds
            sext += (x - 1) * ss
            dext += (x - 1) * ds
        if so < 0 or so + sext > slen or do < 0 or do + dext > dlen:
            raise IndexError("copy_boxes: a piece lies outside its buffer")
        b.append(cell)
        np.ndarray(b, np.uint8, d8, do, dstr + [1])[...] = np.ndarray(b, np.uint8, s8, so, sstr + [1])


# ---------------------------------------------------------------------------- statistics
def chunk_stats(buf: np.ndarray, chunk_shape: np.ndarray, valid: np.ndarray, has_fill: bool, fill: Any, fill_is_nan: bool,
                skip_nan: bool, skip_value: bool, skip: Any) -> tuple[np.ndarray, ...]:
    """``stats.chunk_stats`` in NumPy (no written-cells mask)."""
    return chunk_stats_masked(buf, _NO_MASK, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip)


def chunk_stats_masked(buf: np.ndarray, written: np.ndarray, chunk_shape: np.ndarray, valid: np.ndarray, has_fill: bool,
                       fill: Any, fill_is_nan: bool, skip_nan: bool, skip_value: bool, skip: Any) -> tuple[np.ndarray, ...]:
    """``stats.chunk_stats_masked`` in NumPy, chunk by chunk."""
    k = valid.shape[0]
    shape = tuple(int(x) for x in chunk_shape)
    size = math.prod(shape)
    nn = np.zeros(k, np.int64)
    mn = np.zeros(k, buf.dtype)
    mx = np.zeros(k, buf.dtype)
    has = np.zeros(k, np.bool_)
    for c in range(k):
        if size == 0:
            continue
        mn[c] = mx[c] = buf[c * size]
        region = tuple(slice(0, max(0, int(x))) for x in valid[c])
        v = buf[c * size:(c + 1) * size].reshape(shape)[region]
        counted = np.ones(v.shape, np.bool_)
        if written.shape[0]:
            counted &= written[c * size:(c + 1) * size].reshape(shape)[region] != 0
        isnan = v != v
        if has_fill:
            counted &= ~((v == fill) | (isnan & bool(fill_is_nan)))
        nn[c] = int(counted.sum())
        if skip_nan:
            counted &= ~isnan
        if skip_value:
            counted &= v != skip
        if counted.any():
            has[c] = True
            mn[c] = v[counted].min()
            mx[c] = v[counted].max()
    return nn, mn, mx, has


# ---------------------------------------------------------------------------- the rule
def _plan_fits(shape: np.ndarray, chunk: np.ndarray, start: np.ndarray, count: np.ndarray) -> bool:
    return _touched(chunk.tolist(), start.tolist(), count.tolist()) <= SMALL_PIECES


def _copy_fits(src: np.ndarray, src_off: np.ndarray, src_shape: np.ndarray, src_start: np.ndarray, dst: np.ndarray,
               *rest: Any) -> bool:
    return src_off.shape[0] <= SMALL_PIECES and min(src.nbytes, dst.nbytes) <= SMALL_BYTES


#: kernel name -> (is this call small?, its NumPy version); read by :data:`atlas._lazy.K`
SMALL: dict[str, tuple[Callable[..., bool], Callable[..., Any]]] = {
    "plan_box": (_plan_fits, plan_box),
    "valid_shapes": (lambda shape, chunk, ids: ids.shape[0] <= SMALL_PIECES, valid_shapes),
    "lookup": (lambda ka, kb, qa, qb: qa.shape[0] <= SMALL_QUERIES, lookup),
    "copy_boxes": (_copy_fits, copy_boxes),
    "chunk_stats": (lambda buf, *rest: buf.shape[0] <= SMALL_CELLS, chunk_stats),
    "chunk_stats_masked": (lambda buf, *rest: buf.shape[0] <= SMALL_CELLS, chunk_stats_masked),
}
