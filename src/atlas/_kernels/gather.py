"""Copy kernels between chunk buffers and caller boxes.

Buffers are flat ``uint8`` views; shapes and offsets are in elements, and ``itemsize``
turns the innermost axis into bytes, so one compiled kernel serves every numeric dtype.
"""

from __future__ import annotations

import numpy as np

from . import kernel


@kernel
def copy_boxes(src, src_off, src_shape, src_start, dst, dst_off, dst_shape, dst_start, box, itemsize):  # pragma: no cover - compiled
    """Copy ``n`` boxes from ``src`` to ``dst``.

    Piece ``k`` reads the box ``box[k]`` starting at ``src_start[k]`` of the C-ordered block
    of shape ``src_shape[k]`` found at byte ``src_off[k]`` of ``src``, and writes it at
    ``dst_start[k]`` of the block of shape ``dst_shape`` at byte ``dst_off[k]`` of ``dst``.
    All 2-D arguments are ``(n, ndim)`` int64; ``ndim >= 1``.
    """
    n = box.shape[0]
    nd = box.shape[1]
    sstride = np.empty(nd, np.int64)
    dstride = np.empty(nd, np.int64)
    idx = np.empty(nd, np.int64)
    for k in range(n):
        rows = 1
        empty = False
        for d in range(nd):
            if box[k, d] <= 0:
                empty = True
            if d < nd - 1:
                rows *= box[k, d]
        if empty:
            continue
        s = itemsize
        t = itemsize
        for d in range(nd - 1, -1, -1):
            sstride[d] = s
            dstride[d] = t
            s *= src_shape[k, d]
            t *= dst_shape[d]
        rowlen = box[k, nd - 1] * itemsize
        for d in range(nd):
            idx[d] = 0
        for _ in range(rows):
            so = src_off[k]
            do = dst_off[k]
            for d in range(nd):
                so += (src_start[k, d] + idx[d]) * sstride[d]
                do += (dst_start[k, d] + idx[d]) * dstride[d]
            dst[do:do + rowlen] = src[so:so + rowlen]
            d = nd - 2
            while d >= 0:
                idx[d] += 1
                if idx[d] < box[k, d]:
                    break
                idx[d] = 0
                d -= 1
