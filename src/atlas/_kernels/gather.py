"""Copy kernels between chunk buffers and caller boxes.

The loop works on bytes: :func:`copy_boxes` views both buffers as ``uint8`` and the row
copy is one ``memmove``, so a single compiled kernel serves every dtype and every
buffer (read-only decoded frames as well as writable arrays).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import BYTES_IN, BYTES_OUT, I64, IN1, IN2, OUT2, kernel


@intrinsic
def _move(typingctx, dst, doff, src, soff, nbytes):  # pragma: no cover - compiled
    """``memmove(&dst[doff], &src[soff], nbytes)`` on two byte arrays."""
    sig = types.void(dst, types.int64, src, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        d, do, s, so, nb = args
        dp = context.make_array(signature.args[0])(context, builder, d).data
        sp = context.make_array(signature.args[2])(context, builder, s).data
        cgutils.raw_memmove(builder, builder.gep(dp, [do]), builder.gep(sp, [so]), nb, 1)

    return sig, codegen


@kernel(sig=types.void(BYTES_IN, IN1, IN2, IN2, BYTES_OUT, IN1, IN1, IN2, IN2, I64, I64, OUT2))
def _copy(src, src_off, src_shape, src_start, dst, dst_off, dst_shape, dst_start, box, cell, unit, scratch):  # pragma: no cover - compiled
    """:func:`copy_boxes` on byte buffers: offsets in units of ``unit`` bytes, cells of ``cell`` bytes.

    ``scratch`` is ``(3, ndim)`` int64 (the kernel allocates nothing: cheaper to compile).
    """
    n = box.shape[0]
    nd = box.shape[1]
    sstride = scratch[0]
    dstride = scratch[1]
    idx = scratch[2]
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
        s = cell
        t = cell
        for d in range(nd - 1, -1, -1):
            sstride[d] = s
            dstride[d] = t
            s *= src_shape[k, d]
            t *= dst_shape[d]
        rowlen = box[k, nd - 1] * cell
        for d in range(nd):
            idx[d] = 0
        for _ in range(rows):
            so = src_off[k] * unit
            do = dst_off[k] * unit
            for d in range(nd):
                so += (src_start[k, d] + idx[d]) * sstride[d]
                do += (dst_start[k, d] + idx[d]) * dstride[d]
            if so < 0 or so + rowlen > src.shape[0] or do < 0 or do + rowlen > dst.shape[0]:
                raise IndexError("copy_boxes: a piece lies outside its buffer")
            _move(dst, do, src, so, rowlen)  # type: ignore[call-arg]  # the typing context is numba's argument
            d = nd - 2
            while d >= 0:
                idx[d] += 1
                if idx[d] < box[k, d]:
                    break
                idx[d] = 0
                d -= 1


def copy_boxes(src, src_off, src_shape, src_start, dst, dst_off, dst_shape, dst_start, box, itemsize):
    """Copy ``n`` boxes from ``src`` to ``dst`` (flat C-contiguous buffers of one element width).

    Piece ``k`` reads the box ``box[k]`` starting at ``src_start[k]`` of the C-ordered block
    of shape ``src_shape[k]`` found at element ``src_off[k]`` of ``src``, and writes it at
    ``dst_start[k]`` of the block of shape ``dst_shape`` at element ``dst_off[k]`` of ``dst``.
    A cell is ``itemsize`` buffer elements. All 2-D arguments are ``(n, ndim)`` int64;
    ``ndim >= 1``. A piece outside its buffer raises ``IndexError`` (nothing is written
    out of bounds).
    """
    w = src.dtype.itemsize
    if dst.dtype.itemsize != w:
        raise TypeError(f"copy_boxes: buffers of {src.dtype} and {dst.dtype} differ in element width")
    _copy(src.view(np.uint8), src_off, src_shape, src_start, dst.view(np.uint8), dst_off, dst_shape,
          dst_start, box, itemsize * w, w, np.empty((3, box.shape[1]), np.int64))
