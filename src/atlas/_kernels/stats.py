"""Fill-aware statistics over chunks.

The statistics are the one kernel whose compiled code depends on the element type, so each
dtype a process writes costs a compilation (about 0.5 s). Small calls never get here: the
engine's ``K.chunk_stats`` summarises them with NumPy (:mod:`atlas._small`).
"""

from __future__ import annotations

import numpy as np

from . import kernel

_NO_MASK = np.empty(0, np.uint8)


def chunk_stats(buf, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip):
    """:func:`chunk_stats_masked` without a written-cells mask (every valid cell was written)."""
    return chunk_stats_masked(buf, _NO_MASK, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip)


def chunk_stats_masked(buf, written, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip):
    """Per-chunk ``(non_null, min, max, has)`` over the valid region of ``k`` equal chunks.

    ``written`` is empty, or one byte per cell of ``buf``: cells whose byte is 0 were never
    written and count as null (they are not counted in ``non_null``).

    ``buf`` holds ``k`` C-ordered chunks of shape ``chunk_shape`` back to back; ``valid``
    ``(k, ndim)`` is the extent of each chunk inside the array. A cell is null when
    ``has_fill`` and it equals ``fill`` (or is NaN when ``fill_is_nan``). NaN (``skip_nan``)
    and the value ``skip`` (``skip_value``, NaT for timestamps) never become min or max.
    ``has[c]`` tells whether chunk ``c`` had a value eligible for min/max; where it is False,
    ``min``/``max`` are meaningless.
    """
    k, nd = valid.shape
    nn = np.zeros(k, np.int64)
    mn = np.empty(k, buf.dtype)
    mx = np.empty(k, buf.dtype)
    has = np.zeros(k, np.bool_)
    _stats(buf, written, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip,
           nn, mn, mx, has, np.empty((2, nd), np.int64))
    return nn, mn, mx, has


@kernel
def _stats(buf, written, chunk_shape, valid, has_fill, fill, fill_is_nan, skip_nan, skip_value, skip,
           nn, mn, mx, has, scratch):  # pragma: no cover - compiled
    """The loop of :func:`chunk_stats_masked` into ``nn, mn, mx, has`` (``scratch``: (2, ndim) int64).

    One compiled copy per element type; the kernel allocates nothing (cheaper to compile).
    """
    k = valid.shape[0]
    nd = chunk_shape.shape[0]
    size = 1
    for d in range(nd):
        size *= chunk_shape[d]
    stride = scratch[0]
    s = 1
    for d in range(nd - 1, -1, -1):
        stride[d] = s
        s *= chunk_shape[d]
    idx = scratch[1]
    use_mask = written.shape[0] > 0
    for c in range(k):
        rows = 1
        empty = False
        for d in range(nd):
            if valid[c, d] <= 0:
                empty = True
            if d < nd - 1:
                rows *= valid[c, d]
        if size > 0:
            mn[c] = buf[c * size]
            mx[c] = buf[c * size]
        if empty:
            continue
        rowlen = valid[c, nd - 1]
        for d in range(nd):
            idx[d] = 0
        first = True
        count = 0
        lo = mn[c]
        hi = mx[c]
        for _ in range(rows):
            off = c * size
            for d in range(nd - 1):
                off += idx[d] * stride[d]
            for j in range(off, off + rowlen):
                if use_mask and written[j] == 0:
                    continue
                v = buf[j]
                isnan = v != v
                if has_fill and (v == fill or (fill_is_nan and isnan)):
                    continue
                count += 1
                if (skip_nan and isnan) or (skip_value and v == skip):
                    continue
                if first:
                    lo = v
                    hi = v
                    first = False
                else:
                    if v < lo:
                        lo = v
                    if v > hi:
                        hi = v
            d = nd - 2
            while d >= 0:
                idx[d] += 1
                if idx[d] < valid[c, d]:
                    break
                idx[d] = 0
                d -= 1
        nn[c] = count
        has[c] = not first
        mn[c] = lo
        mx[c] = hi
