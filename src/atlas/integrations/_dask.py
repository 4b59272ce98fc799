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


def _user_dtype(am: dict[str, Any], orig: Optional[str]) -> np.dtype:
    from .. import dtypes as D

    if orig:
        return np.dtype(orig)
    return D.user_dtype(am["dtype"])


def _read_block(store: "Atlas", ds: str, var: str, start: list[int], shape: list[int], orig: Optional[str],
                enc: Optional[str] = None) -> np.ndarray:
    data = cast(np.ndarray, store.open_dataset(ds).read_array(var, start, shape))  # the graph was built from it
    return M.from_storage_values(data, orig, enc) if orig else data


def _read_stack(store: "Atlas", names: list[str], var: str, start: list[int], shape: list[int], orig: Optional[str],
                enc: Optional[str] = None) -> np.ndarray:
    data = store.read_array_across_stacked(var, names, start, shape)
    return M.from_storage_values(data, orig, enc) if orig else data


def lazy_array(store: "Atlas", ds: str, var: str, orig: Optional[str], enc: Optional[str] = None) -> da.Array:
    """A dask array over one stored array: one task per on-disk chunk; building it reads no data."""
    view = store.open_dataset(ds)
    am = view.array_meta(var)
    assert am is not None
    chunks = _regular(am["shape"], am["chunk_shape"])
    aid = view._ds().arrays[var].aid
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
               enc: Optional[str] = None, datasets_per_block: int = 64) -> da.Array:
    """A dask array ``(N, ...)`` over one array of many datasets: a task per (dataset block, chunk)."""
    n = len(names)
    lead = tuple([datasets_per_block] * (n // datasets_per_block) + ([n % datasets_per_block] if n % datasets_per_block else []))
    chunks = (lead,) + _regular(am["shape"], am["chunk_shape"])
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
