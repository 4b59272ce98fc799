"""Ingest xarray datasets into a store and read them back (eager or dask-backed)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, cast

import numpy as np
import xarray as xr

from . import _cf
from . import _mapping as M

if TYPE_CHECKING:
    from ..store import Atlas


def _chunk_shape(name: str, var: xr.Variable, chunks: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in var.shape)
    if chunks is not None and not isinstance(chunks, Mapping):
        raise TypeError(f"chunks must be a mapping {{variable: chunk shape}}, got {type(chunks).__name__}: {chunks!r}")
    if chunks is not None and name in chunks and chunks[name] is not None:
        c = chunks[name]
        if isinstance(c, Mapping):
            c = [c.get(d, s) for d, s in zip(var.dims, shape)]
        if len(c) != len(shape):
            raise ValueError(f"chunks for {name!r} have rank {len(c)}, the variable has {len(shape)} dims")
        return tuple(int(x) if x not in (None, -1) else max(1, s) for x, s in zip(c, shape))
    data = var.data
    if hasattr(data, "chunks") and getattr(data, "chunks", None) is not None and not isinstance(data, np.ndarray):
        return tuple(max(1, max(cs) if len(cs) else 1) for cs in data.chunks)
    return tuple(max(1, s) for s in shape)


def stored_fill(vname: str, var: Any, dtype: str, orig: str) -> tuple[Any, Any, Any]:
    """How a variable is stored: ``(var with missing strings marked, the marker or None, atlas fill)``.

    Decoded data (NaN / NaT where the source was masked) is stored with NaN / NaT as fill,
    whatever the source's encoded fill; otherwise the variable's own ``_FillValue``.
    """
    var, missing = _mark_missing(var)
    decoded, fill = _cf.decoded_missing(var)
    if missing is not None:
        return var, missing, missing[0]
    if not decoded:
        fill = _fill_value(var)
        if fill is not None:
            fill = _coerce_fill_for(dtype, fill, orig, vname)
    return var, missing, fill


def _fill_value(var: xr.Variable) -> Any:
    fv = var.attrs.get("_FillValue", var.encoding.get("_FillValue"))
    if fv is None:
        return None
    if isinstance(fv, np.ndarray):
        fv = fv.reshape(-1)[0] if fv.size else None
    return fv.item() if isinstance(fv, np.generic) else fv


def add_xr_dataset(store: "Atlas", ds: xr.Dataset, name: str, chunks: Optional[Mapping[str, Any]] = None,
                   append_dim: Optional[str] = None) -> None:
    """Store ``ds`` as a new dataset ``name`` (never flushes; all-or-nothing on error).

    With ``append_dim``, extend the existing dataset ``name`` along that dimension instead
    (see ``_append``).
    """
    if append_dim is not None and store.dataset_exists(name):
        from ._append import append_xr_dataset

        return append_xr_dataset(store, ds, name, append_dim)
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"add_xr_dataset needs an xarray.Dataset, got {type(ds).__name__}")
    from .._meta import validate_name

    validate_name(name, "dataset")
    if store.dataset_exists(name):
        raise FileExistsError(f"dataset {name!r} already exists")
    plan = []
    keys = _Keys()
    var_meta: dict[str, Any] = {}
    attr_kinds: dict[str, str] = {}
    variables = {**{k: ds.coords[k].variable for k in ds.coords}, **{k: ds[k].variable for k in ds.data_vars}}
    order = list(ds.variables)  # xarray's own order: round trips reproduce it
    for vname in order:
        var = variables[vname]
        if not isinstance(vname, str):
            raise TypeError(f"variable name {vname!r} is not a str")
        validate_name(vname, "variable")
        for dim in var.dims:
            if not isinstance(dim, str):
                raise TypeError(f"variable {vname!r}: dimension name {dim!r} is not a str")
        dtype, conv, orig = M.storage_form(vname, _probe(var))
        var, missing, fill = stored_fill(vname, var, dtype, orig)
        attrs = {}
        for k, v in var.attrs.items():
            if k == "_FillValue":
                continue
            attrs[keys.key(f"{vname}.{k}")] = (str(k), *_encode_attr(_cf.repair_attr(v),
                                                                     f"attribute {k!r} of variable {vname!r}"))
        vm: dict[str, Any] = {"dtype": orig, "attrs": [[key, a[0]] for key, a in attrs.items()],
                              "fill_attr": "_FillValue" in var.attrs}
        var_meta[vname] = vm
        vm["encoding"] = _cf.capture(var)
        if "_FillValue" in var.attrs and isinstance(var.attrs["_FillValue"], bytes):
            vm["fill"] = list(M.encode_attr(var.attrs["_FillValue"]))
        if np.dtype(orig).kind == "S" or (np.dtype(orig).kind == "O" and _all_bytes(var, missing)):
            vm["enc"] = "latin-1"  # bytes <-> str one to one, whatever the bytes are
        if missing is not None:
            vm["missing"] = list(missing)
        plan.append((vname, var, dtype, conv, fill, _chunk_shape(vname, var, chunks), attrs))
    ds_attrs = {}
    for k, v in ds.attrs.items():
        if not isinstance(k, str):
            raise TypeError(f"dataset attribute name {k!r} is not a str")
        ds_attrs[keys.key(k)] = (k, *_encode_attr(_cf.repair_attr(v), f"dataset attribute {k!r}"))
    view = store.create_dataset(name)
    try:
        for vname, var, dtype, conv, fill, chunk, attrs in plan:
            view.define_array(vname, dtype, [str(d) for d in var.dims], list(var.shape), list(chunk), fill_value=fill)
            for key, (_, v, kind) in attrs.items():
                view._set_attr(key, v)
                attr_kinds[key] = kind
            _write_variable(view, vname, var, conv, M.read_spec(var_meta[vname]))
        for key, (_, v, kind) in ds_attrs.items():
            view._set_attr(key, v)
            attr_kinds[key] = kind
        view._set_attr(M.COORDS_ATTR, json.dumps([c for c in ds.coords]))
        view._set_attr(M.META_ATTR, json.dumps({
            "v": M.MAPPING_VERSION, "order": order, "vars": var_meta,
            "attrs": [[key, a[0]] for key, a in ds_attrs.items()], "kinds": attr_kinds,
        }))
    except BaseException:
        store.delete_dataset(name)
        raise


class _Keys:
    """Attribute keys of one dataset: the natural key where it is free, else a reserved one."""

    def __init__(self) -> None:
        self.used = {M.COORDS_ATTR, M.META_ATTR}

    def key(self, natural: str) -> str:
        k = natural
        if k in self.used or k.startswith("_pyatlas") or "/" in k:
            k = f"_pyatlas_attr{len(self.used)}"
        self.used.add(k)
        return k


def _encode_attr(v: Any, what: str) -> tuple[Any, str]:
    try:
        return M.encode_attr(v)
    except TypeError as e:
        raise TypeError(f"{what}: {e}") from None


def _all_bytes(var: xr.Variable, missing: Optional[tuple[str, str]]) -> bool:
    """Whether an object variable in memory holds bytes only (they come back as bytes)."""
    if not isinstance(var.data, np.ndarray) or not var.size:
        return False
    ph = missing[0] if missing else None
    return all(isinstance(x, bytes) or (ph is not None and x == ph) for x in var.data.reshape(-1).tolist())


def _is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and x != x)


def _mark_missing(var: xr.Variable) -> tuple[xr.Variable, Optional[tuple[str, str]]]:
    """An object (string) variable whose missing cells (NaN or None, as xarray leaves masked
    char variables) are replaced by a placeholder string, and ``(placeholder, "nan"|"none")``.

    The placeholder is the source ``_FillValue`` when it has one (no other cell equals it,
    xarray masked those), else a string no cell holds; it becomes the atlas fill, so the
    missing cells are the nulls of the statistics, and reads turn it back into NaN / None.
    """
    if var.dtype.kind != "O" or not isinstance(var.data, np.ndarray) or not var.size:
        return var, None
    flat = var.data.reshape(-1).tolist()
    miss = [i for i, x in enumerate(flat) if _is_missing(x)]
    if not miss:
        return var, None
    kind = "none" if flat[miss[0]] is None else "nan"
    present = {x.decode("latin-1") if isinstance(x, bytes) else x for x in flat if not _is_missing(x)}
    fv = var.encoding.get("_FillValue")
    as_bytes = all(isinstance(x, bytes) for x in flat if not _is_missing(x))
    # else a private-use character (str) or bytes that are not UTF-8 (bytes, stored as Latin-1)
    mark = "\xfe\xff" if as_bytes else "\ue000"
    candidates = ([fv.decode("latin-1") if isinstance(fv, bytes) else fv] if isinstance(fv, (str, bytes)) else []) \
        + [f"{mark}{i}" for i in range(len(present) + 1)]
    ph = next(c for c in candidates if c not in present)
    cell: Any = ph.encode("latin-1") if as_bytes else ph
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    out[miss] = cell
    return var.copy(data=out.reshape(var.shape)), (ph, kind)


def _probe(var: xr.Variable) -> np.ndarray:
    """A zero-size array of the variable's dtype (no data is computed)."""
    return np.empty(0, var.dtype)


def _coerce_fill_for(dtype: str, fill: Any, orig: str, vname: str) -> Any:
    odt = np.dtype(orig)
    if odt.kind == "b":
        return int(bool(fill))
    if odt.kind == "M":
        return int(np.datetime64(fill, np.datetime_data(odt)[0])  # type: ignore[call-overload]
                   .astype("datetime64[ns]").astype(np.int64)) if not isinstance(fill, int) else fill
    if odt.kind == "m":
        return int(np.timedelta64(fill, np.datetime_data(odt)[0])  # type: ignore[call-overload]
                   .astype("timedelta64[ns]").astype(np.int64)) if not isinstance(fill, int) else fill
    if odt.kind in "USO" and isinstance(fill, bytes):
        return fill.decode("latin-1")  # as the cells of an S array (its read-back is bytes again)
    if odt.kind in "US":
        return str(fill)
    if odt.kind == "f" and isinstance(fill, (int, float)):
        return float(fill)
    if odt.kind in "iu" and isinstance(fill, float) and float(fill).is_integer():
        return int(fill)
    return fill


def _write_variable(view: Any, vname: str, var: xr.Variable, conv: Any, enc: Any) -> None:
    data = var.data
    if hasattr(data, "blocks") and hasattr(data, "numblocks"):  # dask: one block at a time
        offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in data.chunks]
        for idx in np.ndindex(*data.numblocks):
            block = np.asarray(data.blocks[idx].compute())
            start = [int(offsets[d][i]) for d, i in enumerate(idx)]
            view.write_array(vname, start, M.to_storage_values(block, conv, vname, enc))
        return
    arr = np.asarray(var.values)
    view.write_array(vname, [0] * arr.ndim, M.to_storage_values(arr, conv, vname, enc))


# ------------------------------------------------------------------ read back
def _layout(view: Any) -> tuple[list[str], list[str], dict[str, Any]]:
    meta_raw = view.get_attribute(M.META_ATTR)
    coords_raw = view.get_attribute(M.COORDS_ATTR)
    coords = json.loads(coords_raw) if coords_raw else []
    meta = json.loads(meta_raw) if meta_raw else {}
    order = meta.get("order") or view.list_arrays()
    return order, coords, meta


def _attrs_for(view: Any, meta: dict[str, Any], order: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    all_attrs = view.attributes()
    kinds = meta.get("kinds", {})
    var_attrs: dict[str, dict[str, Any]] = {v: {} for v in order}
    ds_attrs: dict[str, Any] = {}
    if meta:
        for v, vm in meta.get("vars", {}).items():
            for key, k in vm.get("attrs", []):
                var_attrs.setdefault(v, {})[k] = M.decode_attr(all_attrs[key], kinds.get(key))
        for key, k in meta.get("attrs", []):
            ds_attrs[k] = M.decode_attr(all_attrs[key], kinds.get(key))
        return ds_attrs, var_attrs
    for k, v in all_attrs.items():  # a dataset written without the mapping: best effort
        if k.startswith("_pyatlas"):
            continue
        head, dot, tail = k.partition(".")
        if dot and head in var_attrs:
            var_attrs[head][tail] = M.decode_attr(v, None)
        else:
            ds_attrs[k] = M.decode_attr(v, None)
    return ds_attrs, var_attrs


def to_xarray(store: "Atlas", name: str, chunks: Any = "auto") -> xr.Dataset:
    """The dataset ``name`` as an ``xr.Dataset``; chunked arrays come back dask-backed.

    ``chunks="auto"``: dask-backed where the on-disk chunking differs from the shape (one
    task per on-disk chunk); ``chunks=None``: everything eager; ``chunks={}``: every
    variable dask-backed with its on-disk chunks; an int or a ``{dim: size}`` dict: every
    variable dask-backed with those block sizes (xarray's conventions).
    """
    view = store.open_dataset(name)
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, (str, dict, int))):
        raise TypeError(f"chunks must be None, 'auto', an int or a dict {{dim: size}}, got {type(chunks).__name__}: {chunks!r}")
    if isinstance(chunks, str) and chunks != "auto":
        raise ValueError(f"chunks must be None, 'auto', an int or a dict {{dim: size}}, got {chunks!r}")

    def make(v: str, am: dict[str, Any], orig: Optional[str], enc: Any) -> tuple[Any, bool]:
        if chunks is None or not am["shape"]:
            lazy = False
        elif isinstance(chunks, str):  # "auto": only arrays stored in several chunks
            lazy = list(am["chunk_shape"]) != list(am["shape"])
        else:
            lazy = True
        if lazy:
            from ._dask import block_shape, lazy_array

            blocks = block_shape(chunks, am["dimension_names"], am["shape"], am["chunk_shape"])
            return lazy_array(store, name, v, orig, enc, blocks), True
        data = cast(np.ndarray, view.read_array(v))  # v is one of the view's arrays
        return (M.from_storage_values(data, orig, enc) if orig else data), False

    return build_dataset(view, make)


def build_dataset(view: Any, make: Any, drop: Sequence[str] = ()) -> xr.Dataset:
    """Assemble an ``xr.Dataset`` from a dataset view.

    ``make(var, array_meta, orig_dtype, byte_encoding)`` gives each variable's data.
    """
    order, coords, meta = _layout(view)
    ds_attrs, var_attrs = _attrs_for(view, meta, order)
    variables = {}
    for v in order:
        if v in drop:
            continue
        am = view.array_meta(v)
        if am is None:
            continue
        vm = meta.get("vars", {}).get(v, {})
        orig = vm.get("dtype")
        data, lazy = make(v, am, orig, M.read_spec(vm))
        attrs = dict(var_attrs.get(v, {}))
        fill = view.array_fill_value(v)
        encoding: dict[str, Any] = _cf.restore(vm["encoding"]) if "encoding" in vm else {}
        if "fill" in vm:
            fill = M.decode_attr(*vm["fill"])
        if fill is not None:
            if vm.get("fill_attr", False):
                attrs = {"_FillValue": _fill_back(fill, orig), **attrs}
            elif "encoding" not in vm:  # a store written before source encodings were kept
                encoding["_FillValue"] = _fill_back(fill, orig)
        if list(am["chunk_shape"]) != list(am["shape"]):
            encoding["preferred_chunks"] = dict(zip(am["dimension_names"], am["chunk_shape"]))
        variables[v] = xr.Variable(am["dimension_names"], data, attrs, encoding=encoding)
    coord_vars = {k: variables[k] for k in order if k in coords and k in variables}
    data_vars = {k: variables[k] for k in order if k not in coords and k in variables}
    return xr.Dataset(data_vars, coords=coord_vars, attrs=ds_attrs)


def _fill_back(fill: Any, orig: Optional[str]) -> Any:
    if orig is None:
        return fill
    dt = np.dtype(orig)
    if dt.kind in "iufb":
        return dt.type(fill)
    if dt.kind == "S":
        return fill.encode() if isinstance(fill, str) else fill
    return fill


def to_xarray_many(store: "Atlas", names: Sequence[str], concat_dim: str = "dataset", parallel: bool = True,
                   chunks: Any = None, progress: Any = False, pad: bool = False) -> xr.Dataset:
    """Stack many datasets of one schema: each data variable gets a leading ``concat_dim``.

    ``pad=True`` (eager reads only) stacks variables whose lengths differ: see
    ``read_array_across_stacked(pad=True)``; each coordinate then comes from the dataset
    where it is longest.

    Coordinates and dataset attributes come from the first dataset; the ``concat_dim``
    coordinate holds the dataset names. ``chunks=None`` reads eagerly with one stacked read
    per variable; ``chunks="auto"`` or ``{}`` returns dask-backed variables (64 datasets
    and one on-disk chunk per task); an int or a ``{dim: size}`` dict (``concat_dim``
    included) sets the block sizes as in xarray. ``progress`` counts the data variables done.
    """
    from .._progress import Progress, check

    check(progress)
    if isinstance(names, str):
        raise TypeError("names must be a sequence of dataset names, not a single str")
    if not isinstance(concat_dim, str):
        raise TypeError(f"concat_dim must be a str, got {type(concat_dim).__name__}: {concat_dim!r}")
    if not concat_dim:
        raise ValueError("concat_dim must not be empty")
    names = list(names)
    if not names:
        raise ValueError("names is empty")
    if pad and chunks is not None:
        raise ValueError("pad=True reads eagerly: pass chunks=None")
    for n in names:
        if not store.dataset_exists(n):
            raise KeyError(f"no dataset named {n!r}")
    first = store.open_dataset(names[0])
    order, coords, meta = _layout(first)
    taken = set(order) | {d for v in order for d in ((first.array_meta(v) or {}).get("dimension_names") or [])}
    if concat_dim in taken:
        raise ValueError(f"concat_dim {concat_dim!r} is already a dimension or variable of dataset {names[0]!r}; "
                         "choose another name")
    metas = [meta] + [_layout(store.open_dataset(n))[2] for n in names[1:]]

    def common(v: str) -> tuple[Optional[str], Any]:
        """The dtype every dataset's variable ``v`` reads back as, and its byte encoding."""
        origs = {m.get("vars", {}).get(v, {}).get("dtype") for m in metas}
        encs = {M.read_spec(m.get("vars", {}).get(v, {})) for m in metas}
        if None in origs:
            return None, None
        try:
            dt = np.result_type(*[np.dtype(o) for o in origs])
        except TypeError:
            return None, None
        return dt.str, (encs.pop() if len(encs) == 1 else None)

    ds_attrs, var_attrs = _attrs_for(first, meta, order)
    variables: dict[str, xr.Variable] = {}
    coord_vars: dict[str, xr.Variable] = {}
    data_vars = [v for v in order if v not in coords and first.array_meta(v) is not None]
    with Progress(progress, len(data_vars), "to_xarray_many", "variable") as bar:
        for v in order:
            am = first.array_meta(v)
            if am is None:
                continue
            orig = meta.get("vars", {}).get(v, {}).get("dtype")
            data: Any
            if v in coords:
                data = (_longest(store, names, v) if pad else first).read_array(v)
                if orig:
                    data = M.from_storage_values(data, orig, M.read_spec(meta.get("vars", {}).get(v, {})))
                coord_vars[v] = xr.Variable(am["dimension_names"], data, var_attrs.get(v, {}))
                continue
            orig, enc = common(v)
            if chunks is not None:
                from ._dask import block_shape, lazy_stack

                spec: Any = chunks
                lead = 64
                if isinstance(chunks, dict) and concat_dim in chunks:
                    spec = {k: c for k, c in chunks.items() if k != concat_dim}
                    lead = block_shape({concat_dim: chunks[concat_dim]}, [concat_dim], [len(names)], [64])[0]
                elif isinstance(chunks, int) and not isinstance(chunks, bool):
                    lead = block_shape(chunks, [concat_dim], [len(names)], [64])[0]
                blocks = block_shape(spec, am["dimension_names"], am["shape"], am["chunk_shape"])
                data = lazy_stack(store, names, v, orig, am, enc, lead, blocks)
            else:
                data = store.read_array_across_stacked(v, names, pad=pad)
                if orig:
                    data = M.from_storage_values(data, orig, enc)
            variables[v] = xr.Variable([concat_dim, *am["dimension_names"]], data, var_attrs.get(v, {}))
            bar.update()
    coord_vars[concat_dim] = xr.Variable([concat_dim], np.asarray(names, dtype=object))
    return xr.Dataset(variables, coords=coord_vars, attrs=ds_attrs)


def _longest(store: "Atlas", names: Sequence[str], v: str) -> Any:
    """The view of the dataset (first of equals) whose array ``v`` has the most cells."""
    from ._append import longest

    return longest(store, names, v)
