"""Stacked reads across datasets whose arrays differ in shape (``read_array_across_stacked(pad=True)``).

The box (by default from 0 to the largest size on each axis) is read from every dataset
where it lies inside that dataset's shape; the rest of each dataset's row is the pad value:
the array's fill value, else NaN (floats), NaT (timestamps), "" (strings) or 0 (integers).
Datasets are aligned by position (index 0 with index 0), not by coordinate labels.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import dtypes as D
from ._box import int_tuple
from ._meta import ArrayMeta


def pad_value(m: ArrayMeta) -> Any:
    """Storage value of the cells beyond a dataset's shape."""
    if m.fill is not None:
        return m.fill_storage
    if m.layout.is_float:
        return m.sdtype.type("nan")
    return D.default_fill(m.dtype)


def padded_box(array: str, metas: Sequence[ArrayMeta], names: Sequence[str], start: Any,
               shape: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The box of a padded read: ``start`` (default 0) and ``shape`` (default: up to the largest size)."""
    nd = len(metas[0].shape)
    for n, m in zip(names, metas):
        if len(m.shape) != nd:
            raise ValueError(f"array {array!r} has {len(m.shape)} dimension(s) in dataset {n!r} but {nd} in "
                             f"{names[0]!r}: a padded read needs one rank")
    s = (0,) * nd if start is None else int_tuple(start, f"start of read of {array!r}", nd)
    if shape is not None:
        return s, int_tuple(shape, f"shape of read of {array!r}", nd)
    top = [max(m.shape[d] for m in metas) for d in range(nd)]
    return s, tuple(max(0, t - a) for t, a in zip(top, s))


def read_padded(read: Callable[[list[ArrayMeta], tuple[int, ...], tuple[int, ...]], np.ndarray],
                metas: list[ArrayMeta], start: tuple[int, ...], count: tuple[int, ...],
                tick: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """``(N, *count)`` storage-typed: each dataset's part of the box, padded beyond its shape.

    ``read(metas, start, count)`` is one stacked read of a box that fits every dataset given.
    Datasets are grouped by the part of the box inside them: one stacked read per group.
    """
    m0 = metas[0]
    out = np.empty((len(metas),) + tuple(count), m0.sdtype)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(metas):
        inside = tuple(max(0, min(c, s - a)) for a, c, s in zip(start, count, m.shape))
        groups.setdefault(inside, []).append(i)
    for inside, slots in groups.items():
        sl = np.asarray(slots)
        if inside != tuple(count):
            for i in slots:
                out[i] = pad_value(metas[i])
        if all(inside):
            part = read([metas[i] for i in slots], start, inside)
            out[(sl,) + tuple(slice(0, c) for c in inside)] = part
        if tick is not None:
            tick(len(slots))
    return out


def read_padded_across(state: Any, txn: Any, array: str, names: Sequence[str], metas: Sequence[Optional[ArrayMeta]],
                       start: Any, shape: Any, progress: Any) -> np.ndarray:
    """``Atlas.read_array_across_stacked(..., pad=True)``: checks, then :func:`read_padded` as ``txn`` sees it."""
    from ._progress import Progress
    from .dataset import to_user

    ms: list[ArrayMeta] = []
    for n, m in zip(names, metas):
        if m is None:
            raise KeyError(f"dataset {n!r} has no array {array!r}")
        if ms and m.dtype != ms[0].dtype:
            raise TypeError(f"array {array!r} is {m.dtype} in dataset {n!r} but {ms[0].dtype} in {names[0]!r}")
        ms.append(m)
    s, c = padded_box(array, ms, names, start, shape)
    with Progress(progress, len(ms), "read", "dataset") as bar:
        out = read_padded(lambda part, a, b: state.read(txn, array, part, a, b), ms, s, c, bar.update)
    return to_user(ms[0], out)
