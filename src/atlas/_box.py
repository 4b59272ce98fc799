"""Validation of the ``start`` / ``shape`` boxes of reads and writes."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def int_tuple(value: Any, what: str, ndim: int | None = None) -> tuple[int, ...]:
    """A tuple of non-negative ints, checked for rank; ``TypeError``/``ValueError`` otherwise."""
    if type(value) in (list, tuple):
        for v in value:  # (a loop, not all() over a generator: a write's start costs this per call)
            if type(v) is not int or v < 0:
                break
        else:
            if ndim is not None and len(value) != ndim:
                raise ValueError(f"{what} has rank {len(value)} but the array has {ndim} dimension(s): {list(value)!r}")
            return tuple(value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{what} must be a sequence of ints, got {type(value).__name__}: {value!r}")
    out = []
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{what} must contain ints, got {type(v).__name__}: {v!r} in {list(value)!r}")
        if v < 0:
            raise ValueError(f"{what} must not be negative: {list(value)!r}")
        out.append(int(v))
    if ndim is not None and len(out) != ndim:
        raise ValueError(f"{what} has rank {len(out)} but the array has {ndim} dimension(s): {out!r}")
    return tuple(out)


def read_box(shape: Sequence[int], start: Any, count: Any, array: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Resolve a read's ``start``/``shape`` (either may be None) against the array shape."""
    nd = len(shape)
    if start is None and count is None:
        return (0,) * nd, tuple(shape)
    s = (0,) * nd if start is None else int_tuple(start, f"start of read of {array!r}", nd)
    c = tuple(a - b for a, b in zip(shape, s)) if count is None else int_tuple(count, f"shape of read of {array!r}", nd)
    for d in range(nd):
        if s[d] + c[d] > shape[d] or (s[d] > shape[d]):
            raise ValueError(
                f"read of {array!r} out of bounds on axis {d}: start {list(s)} + shape {list(c)} "
                f"exceeds the array shape {list(shape)}"
            )
    return s, c


def write_box(shape: tuple[int, ...], start: Any, data_shape: tuple[int, ...], array: str,
              default_origin: bool = False) -> tuple[int, ...]:
    """The checked ``start`` of a write of ``data_shape`` (``default_origin``: None means the origin)."""
    nd = len(shape)
    if len(data_shape) != nd:
        raise ValueError(f"data for {array!r} has {len(data_shape)} dimension(s), the array has {nd}")
    s = (0,) * nd if start is None and default_origin else int_tuple(start, f"start of write to {array!r}", nd)
    if data_shape == shape and not any(s):  # the whole array: nothing more to check
        return s
    for d in range(nd):
        if s[d] + data_shape[d] > shape[d]:
            raise ValueError(
                f"write to {array!r} does not fit on axis {d}: start {list(s)} + data shape "
                f"{list(data_shape)} exceeds the array shape {list(shape)}"
            )
    return s
