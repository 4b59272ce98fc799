"""Lazy, dask-backed reads: one task per on-disk chunk, deterministic graph names.

Tasks hold the ``Atlas`` object; it pickles as its storage location plus generation, so
graphs run under the threaded scheduler and under ``dask.distributed`` worker processes
(which reopen the store). Only flushed data is visible to other processes.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Optional, Sequence, cast

import dask.array as da
import numpy as np
from dask.base import tokenize

from . import _mapping as M

if TYPE_CHECKING:
    from ..store import Atlas


def _regular(shape: Sequence[int], chunk: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    out = []
    for s, c in zip(shape, chunk):
        c = max(1, min(int(c), int(s))) if s else 1
        n, r = divmod(int(s), c)
        out.append(tuple([c] * n + ([r] if r else [])) if s else (0,))
    return tuple(out)


def block_shape(chunks: Any, dims: Sequence[str], shape: Sequence[int], disk: Sequence[int]) -> tuple[int, ...]:
    """Dask block sizes of one variable from a ``chunks=`` argument (xarray's conventions).

    ``{}`` or ``"auto"``: the on-disk chunks; an int: that size along every axis; a dict
    ``{dim: size}``: per dimension, the others keep their on-disk chunks. A size of ``-1``
    or ``None`` means the whole axis.
    """
    def size(v: Any, d: int, what: str) -> int:
        if v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) == -1):
            return max(1, int(shape[d]))
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
            raise ValueError(f"chunks: size for {what} must be an int >= 1, -1 or None, got {v!r}")
        return int(v)

    if isinstance(chunks, str):
        if chunks == "auto":
            return tuple(int(c) for c in disk)
        raise ValueError(f"chunks must be None, 'auto', an int or a dict {{dim: size}}, got {chunks!r}")
    if isinstance(chunks, dict):
        return tuple(size(chunks[dim], d, f"dimension {dim!r}") if dim in chunks else int(disk[d])
                     for d, dim in enumerate(dims))
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        return tuple(size(chunks, d, f"axis {d}") for d in range(len(shape)))
    raise TypeError(f"chunks must be None, 'auto', an int or a dict {{dim: size}}, got {type(chunks).__name__}: {chunks!r}")


def _user_dtype(am: dict[str, Any], orig: Optional[str]) -> np.dtype:
    from .. import dtypes as D

    if orig:
        return np.dtype(orig)
    return D.user_dtype(am["dtype"])


def _read_block(store: "Atlas", ds: str, var: str, start: list[int], shape: list[int], orig: Optional[str],
                enc: Any = None) -> np.ndarray:
    data = cast(np.ndarray, store.open_dataset(ds).read_array(var, start, shape))  # the graph was built from it
    return M.from_storage_values(data, orig, enc) if orig else data


def _read_stack(store: "Atlas", names: list[str], var: str, start: list[int], shape: list[int], orig: Optional[str],
                enc: Any = None) -> np.ndarray:
    data = store.read_array_across_stacked(var, names, start, shape)
    return M.from_storage_values(data, orig, enc) if orig else data


def lazy_array(store: "Atlas", ds: str, var: str, orig: Optional[str], enc: Any = None,
               blocks: Optional[Sequence[int]] = None) -> da.Array:
    """A dask array over one stored array: one task per block (default: per on-disk chunk);
    building it reads no data."""
    view = store.open_dataset(ds)
    am = view.array_meta(var)
    assert am is not None
    chunks = _regular(am["shape"], am["chunk_shape"] if blocks is None else blocks)
    aid = store._state.dataset(ds).arrays[var].aid  # the internal interface (atlas._state)
    name = f"atlas-{var}-" + tokenize(store, ds, var, aid, chunks, orig)
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int).tolist() for c in chunks]
    dsk = {}
    for idx in itertools.product(*[range(len(c)) for c in chunks]):
        start = [offsets[d][i] for d, i in enumerate(idx)]
        shape = [chunks[d][i] for d, i in enumerate(idx)]
        dsk[(name,) + tuple(idx)] = (_read_block, store, ds, var, start, shape, orig, enc)
    dt = _user_dtype(am, orig)
    return da.Array(dsk, name, chunks, meta=np.empty((0,) * len(chunks), dt))


def lazy_stack(store: "Atlas", names: list[str], var: str, orig: Optional[str], am: dict[str, Any],
               enc: Any = None, datasets_per_block: int = 64, blocks: Optional[Sequence[int]] = None) -> da.Array:
    """A dask array ``(N, ...)`` over one array of many datasets: a task per (dataset block,
    block of the array; default: its on-disk chunks)."""
    n = len(names)
    lead = tuple([datasets_per_block] * (n // datasets_per_block) + ([n % datasets_per_block] if n % datasets_per_block else []))
    chunks = (lead,) + _regular(am["shape"], am["chunk_shape"] if blocks is None else blocks)
    name = f"atlas-stack-{var}-" + tokenize(store, names, var, chunks, orig)
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int).tolist() for c in chunks]
    dsk = {}
    for idx in itertools.product(*[range(len(c)) for c in chunks]):
        i0 = offsets[0][idx[0]]
        block_names = names[i0:i0 + chunks[0][idx[0]]]
        start = [offsets[d][i] for d, i in enumerate(idx)][1:]
        shape = [chunks[d][i] for d, i in enumerate(idx)][1:]
        dsk[(name,) + tuple(idx)] = (_read_stack, store, block_names, var, start, shape, orig, enc)
    dt = _user_dtype(am, orig)
    return da.Array(dsk, name, chunks, meta=np.empty((0,) * len(chunks), dt))
