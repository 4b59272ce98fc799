"""Extend a stored dataset with an ``xarray.Dataset`` along one dimension (``add_xr_dataset(append_dim=...)``).

Everything is checked before anything changes: the same variables (coordinates included)
with the same dims, dtypes and fill values; variables without the dimension equal to what
is stored; the other axes of appended variables of the stored sizes; a monotonic stored
coordinate of the dimension continued by the new values. Then each appended variable is
grown with ``resize_array`` and written block by block (dask blocks are computed one at a
time). If a write fails part way, every variable is shrunk back to its old shape, so the
dataset reads as before (its ``array_stats`` are None until the next flush).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import xarray as xr

from . import _mapping as M
from ._xarray import _layout, stored_fill

if TYPE_CHECKING:
    from ..dataset import DatasetView
    from ..store import Atlas


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    try:
        return bool(np.array_equal(a, b, equal_nan=True))
    except TypeError:  # strings / objects: no NaN
        return bool(np.array_equal(a, b))


def _same_fill(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b) and type(a) is type(b)


def _check_monotonic(name: str, dim: str, old: np.ndarray, new: np.ndarray) -> None:
    """A strictly monotonic stored coordinate must go on in the same direction."""
    if old.size == 0 or new.size == 0:
        return
    if old.size >= 2:
        inc = bool((old[1:] > old[:-1]).all())
        dec = bool((old[1:] < old[:-1]).all())
        if not (inc or dec):
            return  # not monotonic: nothing to continue
    else:
        inc = bool(new[0] > old[-1]) or not bool(new[0] < old[-1])  # equal: a duplicate, caught below
    seq = np.concatenate([old[-1:], new])
    ok = (seq[1:] > seq[:-1]) if inc else (seq[1:] < seq[:-1])
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValueError(
            f"append to dataset {name!r}: coordinate {dim!r} must keep {'increasing' if inc else 'decreasing'}; "
            f"the new value {new[i]!r} (position {i} of the appended data) "
            f"{'repeats' if seq[i + 1] == seq[i] else 'goes back before'} the value before it, {seq[i]!r}")


def append_xr_dataset(store: "Atlas", ds: xr.Dataset, name: str, append_dim: str) -> None:
    """Extend dataset ``name`` with ``ds`` along ``append_dim`` (never flushes; all or nothing)."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"add_xr_dataset needs an xarray.Dataset, got {type(ds).__name__}")
    if not isinstance(append_dim, str) or not append_dim:
        raise TypeError(f"append_dim must be a non-empty str, got {type(append_dim).__name__}: {append_dim!r}")
    if append_dim not in ds.dims:
        raise ValueError(f"append_dim {append_dim!r} is not a dimension of the dataset to append "
                         f"(it has {[str(d) for d in ds.dims]!r})")
    view = store.open_dataset(name)
    order, _coords, meta = _layout(view)
    stored = [v for v in order if view.array_meta(v) is not None]
    new_vars = {**{str(k): ds.coords[k].variable for k in ds.coords}, **{str(k): ds[k].variable for k in ds.data_vars}}
    missing = [v for v in stored if v not in new_vars]
    extra = [v for v in new_vars if v not in stored]
    if missing or extra:
        raise ValueError(f"append to dataset {name!r}: the variables differ from the stored ones "
                         f"(missing: {missing!r}, not stored: {extra!r})")
    vmeta = meta.get("vars", {})
    plan: list[tuple[str, xr.Variable, Any, Optional[str], int, list[int]]] = []
    unequal = []
    for v in stored:
        var, am = new_vars[v], view.array_meta(v)
        assert am is not None
        vm = vmeta.get(v, {})
        if [str(d) for d in var.dims] != list(am["dimension_names"]):
            raise ValueError(f"append to dataset {name!r}: variable {v!r} has dims {[str(d) for d in var.dims]!r}, "
                             f"stored as {am['dimension_names']!r}")
        dtype, conv, orig = M.storage_form(v, np.empty(0, var.dtype))
        if dtype != am["dtype"] or orig != vm.get("dtype", orig):
            raise ValueError(f"append to dataset {name!r}: variable {v!r} is {var.dtype}, stored as "
                             f"{np.dtype(vm['dtype']) if vm.get('dtype') else am['dtype']}")
        _, _, fill = stored_fill(v, var, dtype, orig)
        if not _same_fill(fill, view.array_fill_value(v)):
            raise ValueError(f"append to dataset {name!r}: variable {v!r} has the fill value (_FillValue) {fill!r}, "
                             f"stored with {view.array_fill_value(v)!r}")
        if append_dim in am["dimension_names"]:
            axis = list(am["dimension_names"]).index(append_dim)
            for d, (a, b) in enumerate(zip(var.shape, am["shape"])):
                if d != axis and a != b:
                    raise ValueError(f"append to dataset {name!r}: variable {v!r} has {a} along {var.dims[d]!r}, "
                                     f"stored with {b}")
            plan.append((v, var, conv, vm.get("enc"), axis, list(am["shape"])))
        else:
            old = view.read_array(v)
            if old is not None and orig:
                old = M.from_storage_values(old, orig, vm.get("enc"))
            if old is None or not _equal(np.asarray(old), np.asarray(var.values)):
                unequal.append(v)
    if unequal:
        raise ValueError(f"append to dataset {name!r}: variable(s) {unequal!r} have no dimension {append_dim!r} "
                         "and differ from what is stored")
    coord = next((p for p in plan if p[0] == append_dim and len(p[5]) == 1), None)
    if coord is not None:
        vm = vmeta.get(append_dim, {})
        old = view.read_array(append_dim)
        if old is not None and vm.get("dtype"):
            old = M.from_storage_values(old, vm["dtype"], vm.get("enc"))
        _check_monotonic(name, append_dim, np.asarray(old), np.asarray(coord[1].values))
    done: list[tuple[str, list[int]]] = []
    try:
        for v, var, conv, enc, axis, shape in plan:
            n = int(var.shape[axis])
            if n == 0:
                continue
            grown = list(shape)
            grown[axis] += n
            done.append((v, shape))
            view.resize_array(v, grown)
            _write_at(view, v, var, conv, enc, axis, shape[axis])
    except BaseException:
        for v, shape in done:
            view.resize_array(v, shape)
        raise


def _write_at(view: "DatasetView", v: str, var: xr.Variable, conv: Any, enc: Optional[str], axis: int, at: int) -> None:
    """Write a variable's data with its ``axis`` starting at ``at`` (dask: one block at a time)."""
    data = var.data
    if hasattr(data, "blocks") and hasattr(data, "numblocks"):
        offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in data.chunks]
        for idx in np.ndindex(*data.numblocks):
            block = np.asarray(data.blocks[idx].compute())
            start = [int(offsets[d][i]) + (at if d == axis else 0) for d, i in enumerate(idx)]
            view.write_array(v, start, M.to_storage_values(block, conv, v, enc))
        return
    arr = np.asarray(var.values)
    start = [at if d == axis else 0 for d in range(arr.ndim)]
    view.write_array(v, start, M.to_storage_values(arr, conv, v, enc))


def longest(store: "Atlas", names: Sequence[str], v: str) -> "DatasetView":
    """The first dataset of ``names`` whose array ``v`` has the most cells (a padded stack's coordinates)."""
    best, size = store.open_dataset(names[0]), -1
    for n in names:
        view = store.open_dataset(n)
        am = view.array_meta(v)
        if am is not None and int(np.prod(am["shape"])) > size:
            best, size = view, int(np.prod(am["shape"]))
    return best
