"""Batched requests: many independent reads of one state run as one request, overlapped on the pool.

A user loop (``read_arrays`` per dataset, ``array_stats`` per dataset, ``read_array`` per
array) pays Python per call and runs its reads one after the other. Here a batch is
planned once against one transaction (so every part sees the same state) and its reads run
side by side on the shared pool when they are worth it, keeping every core busy the way
tensorstore's asynchronous reads do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Sequence

import numpy as np

from . import dtypes as D
from ._box import read_box
from ._meta import ArrayMeta

if TYPE_CHECKING:
    from ._state import StoreState, Transaction


class ReadTask(NamedTuple):
    """One read of a batch: the same box of array ``array`` from the instances ``metas``."""

    array: str
    metas: list[ArrayMeta]
    start: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return len(self.metas) * math.prod(self.shape) * self.metas[0].sdtype.itemsize


def run(state: "StoreState", txn: "Transaction", tasks: Sequence[ReadTask]) -> list[np.ndarray]:
    """The storage-typed ``(N, *shape)`` result of every task, as ``txn`` sees the store.

    The tasks are planned one after the other and their decoding runs as one pool of units
    (see ``atlas._read.Work``): three big arrays or six hundred one-chunk slices alike keep
    every core busy; a request with little to decode stays on the caller's thread.
    """
    return state.read_many(txn, [(t.array, t.metas, t.start, t.shape) for t in tasks])


def to_user(m: ArrayMeta, data: np.ndarray) -> np.ndarray:
    """Storage-typed data -> what reads return (datetime64[ns] for timestamps)."""
    if m.dtype == D.TIMESTAMP:
        return data.view("datetime64[ns]")
    return data


def instances(txn: "Transaction", array: str, dataset_names: Sequence[str]) -> list[Optional[ArrayMeta]]:
    """The instance of ``array`` in each named dataset (None where a dataset lacks it)."""
    if not isinstance(array, str):
        raise TypeError(f"array name must be a str, got {type(array).__name__}: {array!r}")
    if isinstance(dataset_names, str):
        raise TypeError("dataset_names must be a sequence of names, not a single str")
    names = list(dataset_names)
    if not names:
        raise ValueError("dataset_names is empty")
    out = []
    for n, ds in zip(names, txn.meta.datasets.get_many(names)):
        if ds is None:
            raise KeyError(f"no dataset named {n!r}")
        out.append(ds.arrays.get(array))
    return out


def dataset_reads(state: "StoreState", ds_name: str, arrays: Sequence[str], start: Any,
                  shape: Any) -> dict[str, Optional[np.ndarray]]:
    """``DatasetView.read_arrays``: several arrays of one dataset, one state, reads overlapped."""
    if isinstance(arrays, str):
        raise TypeError("names must be a sequence of array names, not a single str")
    txn = state.txn
    have = state.dataset(ds_name, txn).arrays
    out: dict[str, Optional[np.ndarray]] = {}
    tasks: list[ReadTask] = []
    for a in arrays:
        if not isinstance(a, str):
            raise TypeError(f"array name must be a str, got {type(a).__name__}: {a!r}")
        m = have.get(a)
        out[a] = None
        if m is not None:
            s, c = read_box(m.shape, start, shape, a)
            tasks.append(ReadTask(a, [m], s, c))
    for t, data in zip(tasks, run(state, txn, tasks)):
        out[t.array] = to_user(t.metas[0], data[0, ...])
    return out


def across(state: "StoreState", arrays: Sequence[str], dataset_names: Sequence[str], start: Any, shape: Any,
           stacked: bool) -> dict[str, Any]:
    """``Atlas.read_arrays_across``: each array from each dataset, one state, one request."""
    if isinstance(arrays, str):
        raise TypeError("arrays must be a sequence of array names, not a single str")
    if not isinstance(dataset_names, str):
        dataset_names = list(dataset_names)  # a generator is read once
    txn = state.txn
    tasks: list[ReadTask] = []
    places: list[tuple[str, list[int]]] = []  # per task: its array and the dataset positions it fills
    result: dict[str, Any] = {}
    for a in arrays:
        metas = instances(txn, a, dataset_names)
        if stacked:
            s, c = stacked_box(a, dataset_names, metas, start, shape)
            tasks.append(ReadTask(a, metas, s, c))  # type: ignore[arg-type]
            places.append((a, list(range(len(metas)))))
            continue
        result[a] = [None] * len(metas)
        groups: dict[Any, list[int]] = {}
        boxes: dict[Any, tuple[Any, ...]] = {}  # one check per distinct (dtype, shape), not per dataset
        for i, m in enumerate(metas):
            if m is not None:
                key = boxes.get((m.dtype, m.shape))
                if key is None:
                    key = boxes[(m.dtype, m.shape)] = (m.dtype, *read_box(m.shape, start, shape, a))
                groups.setdefault(key, []).append(i)
        for (_, s, c), idxs in groups.items():
            tasks.append(ReadTask(a, [metas[i] for i in idxs], s, c))  # type: ignore[misc]
            places.append((a, idxs))
    for t, (a, idxs), data in zip(tasks, places, run(state, txn, tasks)):
        if stacked:
            result[a] = to_user(t.metas[0], data)
        else:
            out, data = result[a], to_user(t.metas[0], data)  # one dtype per task
            # iterating makes the views in C, but yields scalars where each result is 0-d
            for i, d in zip(idxs, data if data.ndim > 1 else (data[k, ...] for k in range(len(idxs)))):
                out[i] = d
    return result


def stacked_box(array: str, dataset_names: Sequence[str], metas: Sequence[Optional[ArrayMeta]], start: Any,
                shape: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The one box a stacked read takes from every dataset (errors name the first dataset that differs)."""
    m0: Optional[ArrayMeta] = None
    box: Any = None
    boxes: dict[tuple[int, ...], Any] = {}
    for n, m in zip(dataset_names, metas):
        if m is None:
            raise KeyError(f"dataset {n!r} has no array {array!r}")
        b = boxes.get(m.shape)
        if b is None:  # one check per distinct shape, not per dataset
            b = boxes[m.shape] = read_box(m.shape, start, shape, array)
        if m0 is None:
            m0, box = m, b
            continue
        if m.dtype != m0.dtype:
            raise TypeError(f"array {array!r} is {m.dtype} in dataset {n!r} but {m0.dtype} in {dataset_names[0]!r}")
        if b[1] != box[1]:
            raise ValueError(f"array {array!r} reads as shape {list(b[1])} in dataset {n!r} but {list(box[1])} in "
                             f"{dataset_names[0]!r}; pass an explicit start/shape")
    return box


def stats_across(txn: "Transaction", array: str, dataset_names: Sequence[str]) -> dict[str, Any]:
    """``Atlas.array_stats_across``: the stats of one array in many datasets, as columns."""
    metas = instances(txn, array, dataset_names)
    n = len(metas)
    rows = np.zeros(n, np.int64)
    nulls = np.zeros(n, np.int64)
    known = np.zeros(n, bool)
    m0 = next((m for m in metas if m is not None), None)
    kinds = {m.dtype for m in metas if m is not None}
    if len(kinds) > 1:
        raise TypeError(f"array {array!r} has several dtypes across these datasets: {sorted(kinds)}")
    if m0 is None or m0.is_string:
        mn: np.ndarray = np.empty(n, object)
        mx: np.ndarray = np.empty(n, object)
    else:
        mn, mx = np.zeros(n, m0.sdtype), np.zeros(n, m0.sdtype)
    has = np.zeros(n, bool)
    for i, m in enumerate(metas):
        if m is None or m.stats is None:
            continue
        st = m.stats
        known[i] = True
        rows[i] = m.row_count
        nulls[i] = st["null_count"]
        if st["min"] is not None:
            has[i] = True
            mn[i], mx[i] = st["min"], st["max"]
    if m0 is not None and m0.dtype == D.TIMESTAMP:
        mn, mx = mn.view("datetime64[ns]"), mx.view("datetime64[ns]")
    return {
        "row_count": np.ma.masked_array(rows, ~known),
        "null_count": np.ma.masked_array(nulls, ~known),
        "min": np.ma.masked_array(mn, ~has),
        "max": np.ma.masked_array(mx, ~has),
    }
