"""DatasetView: the handle on one dataset of a store."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np

from . import dtypes as D
from . import _batch
from ._batch import to_user
from ._box import int_tuple, read_box, write_box
from ._meta import ArrayMeta, DatasetMeta, validate_name
from ._resize import shape_after_append

if TYPE_CHECKING:
    from .store import Atlas


_I64 = 2**63 - 1



class DatasetView:
    """A handle on one dataset of an :class:`~atlas.Atlas`.

    Every mutation (``define_array``, ``write_array``, ``set_attribute``, ...) changes the
    parent store's in-memory state only; nothing reaches storage before ``Atlas.flush()``.
    Reads see pending writes at once.
    """

    __slots__ = ("_atlas", "_name")

    def __init__(self, atlas: "Atlas", name: str) -> None:
        """Internal: use :meth:`Atlas.create_dataset` or :meth:`Atlas.open_dataset`."""
        self._atlas = atlas
        self._name = name

    @property
    def name(self) -> str:
        """The dataset name."""
        return self._name

    def _ds(self) -> DatasetMeta:
        return self._atlas._state.dataset(self._name)

    def _array(self, name: str) -> ArrayMeta:
        m = self._ds().arrays.get(name) if isinstance(name, str) else None
        if m is None:
            if not isinstance(name, str):
                raise TypeError(f"array name must be a str, got {type(name).__name__}: {name!r}")
            raise KeyError(f"array {name!r} is not defined in dataset {self._name!r}")
        return m

    def __repr__(self) -> str:
        """The dataset name and its arrays (or that it was deleted)."""
        ds = self._atlas._state.meta.datasets.get(self._name)
        if ds is None:
            return f"DatasetView(name={self._name!r}, deleted)"
        return f"DatasetView(name={self._name!r}, arrays={list(ds.arrays)!r}, attributes={len(ds.attrs)})"

    # ------------------------------------------------------------------ schema
    def list_arrays(self) -> list[str]:
        """Names of the arrays defined in this dataset, in definition order."""
        return list(self._ds().arrays)

    def define_array(self, name: str, dtype: str, dims: Sequence[str], shape: Sequence[int],
                     chunk_shape: Optional[Sequence[int]] = None, fill_value: Optional[Any] = None) -> None:
        """Declare an N-dimensional array (no data is allocated).

        ``dims``, ``shape`` and ``chunk_shape`` share one rank; ``chunk_shape`` defaults to
        ``shape`` (one chunk). ``fill_value`` must match ``dtype`` (``TypeError``) and fit it
        (``OverflowError``); unwritten cells read back as it, or as 0 / "" / NaT without one.
        Raises ``FileExistsError`` if the dataset already has an array of that name.
        """
        self._atlas._state.define_arrays(self._name, [_schema(name, dtype, dims, shape, chunk_shape, fill_value)])

    def define_arrays(self, specs: Mapping[str, Mapping[str, Any]]) -> None:
        """Declare several arrays at once: ``{name: {"dtype", "dims", "shape", "chunk_shape", "fill_value"}}``.

        Each spec takes :meth:`define_array`'s keywords (``chunk_shape`` and ``fill_value``
        optional). All are checked before any is defined: one bad spec defines none.
        """
        if type(specs) is not dict and not isinstance(specs, Mapping):
            raise TypeError(f"specs must be a mapping of array name to keywords, got {type(specs).__name__}")
        made = []
        same: dict[int, tuple[Any, Callable[[int], ArrayMeta]]] = {}  # id(spec) -> (spec, make): one spec, many arrays
        for name, spec in specs.items():
            hit = same.get(id(spec))
            if hit is not None and hit[0] is spec:  # the same mapping again: only the name is new
                made.append((validate_name(name, "array"), hit[1]))
                continue
            if type(spec) is not dict and not isinstance(spec, Mapping):
                raise TypeError(f"spec of array {name!r} must be a mapping of define_array keywords, got {spec!r}")
            keys = spec.keys()
            if not (_REQUIRED <= keys <= _KEYWORDS):
                raise TypeError(f"spec of array {name!r} needs dtype, dims, shape (optional chunk_shape, fill_value); "
                                f"got {sorted(spec)}")
            one = _schema(name, spec["dtype"], spec["dims"], spec["shape"], spec.get("chunk_shape"), spec.get("fill_value"))
            same[id(spec)] = (spec, one[1])
            made.append(one)
        self._atlas._state.define_arrays(self._name, made)

    def array_meta(self, array: str) -> Optional[dict[str, Any]]:
        """``{"dtype", "shape", "chunk_shape", "dimension_names"}``, or None if not defined here."""
        m = self._ds().arrays.get(array)
        if m is None:
            return None
        return {"dtype": m.dtype, "shape": list(m.shape), "chunk_shape": list(m.chunk), "dimension_names": list(m.dims)}

    def array_fill_value(self, array: str) -> Optional[Any]:
        """The fill value given to ``define_array``, or None (no fill, or no such array)."""
        m = self._ds().arrays.get(array)
        return None if m is None else m.fill

    def array_stats(self, array: str) -> Optional[dict[str, Any]]:
        """``{"row_count", "null_count", "min", "max"}`` as of the last flush, or None.

        ``row_count`` is the number of cells of the array; ``null_count`` counts unwritten
        cells and cells equal to the fill value (NaN cells when the fill is NaN); NaN and NaT
        are never min or max. None before the array's first flush or if not defined here.
        """
        m = self._ds().arrays.get(array)
        if m is None or m.stats is None:
            return None
        s = m.stats
        mn, mx = s["min"], s["max"]
        if m.dtype == D.TIMESTAMP:
            mn = None if mn is None else np.datetime64(int(mn), "ns")
            mx = None if mx is None else np.datetime64(int(mx), "ns")
        elif not m.is_string:
            mn = None if mn is None else m.sdtype.type(mn)
            mx = None if mx is None else m.sdtype.type(mx)
        return {"row_count": m.row_count, "null_count": int(s["null_count"]), "min": mn, "max": mx}

    def delete_array(self, name: str) -> None:
        """Remove the array from this dataset (its chunks become garbage for ``compact``)."""
        self._array(name)  # the right error for a bad name
        self._atlas._state.delete_array(self._name, name)

    # ------------------------------------------------------------------ data
    def write_array(self, name: str, start: Sequence[int], data: np.ndarray) -> None:
        """Write ``data`` (exact dtype, C-contiguous) into the box starting at ``start``."""
        st = self._atlas._state
        with st.write_lock:  # the instance looked up, checked and written in one step
            m = self._array(name)
            arr = D.to_storage(m.dtype, data, name)
            st.write(self._name, [(name, m, write_box(m.shape, start, arr.shape, name), arr)])

    def write_arrays(self, data: Mapping[str, np.ndarray], start: Optional[Sequence[int]] = None) -> None:
        """Write several arrays at once: ``{name: ndarray}``, each at ``start`` (default: the origin).

        Every array and every box is checked before anything is written (one bad entry
        writes none), and no flush can fall between two of the writes.
        """
        if type(data) is not dict and not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping of array name to ndarray, got {type(data).__name__}")
        st = self._atlas._state
        with st.write_lock:
            arrays = self._ds().arrays
            checked = []
            for name, arr in data.items():
                m = arrays.get(name) if isinstance(name, str) else None
                if m is None:
                    m = self._array(name)  # raises the right error
                a = D.to_storage(m.dtype, arr, name)
                checked.append((name, m, write_box(m.shape, start, a.shape, name, True), a))
            st.write(self._name, checked)

    def resize_array(self, name: str, shape: Sequence[int]) -> None:
        """Give the array a new shape (same rank): grow or shrink any axis.

        Cells added by growth read as the fill value (0 / "" / NaT without one) until
        written; cells cut by a shrink are gone for good (growing again does not bring them
        back). The chunk grid is fixed by ``chunk_shape``: growing rewrites no stored chunk
        (shrinking rewrites only the edge chunks it cuts). ``array_meta`` reports the new
        shape at once; ``array_stats`` counts the new cells as nulls at once after a growth
        and is None after a shrink until the next flush (then exact again).
        """
        self._array(name)  # the right error for a bad name
        shp = int_tuple(shape, f"new shape of array {name!r}")
        self._atlas._state.resize(self._name, name, lambda m: (shp, None))

    def append_array(self, name: str, data: np.ndarray, axis: int = 0) -> None:
        """Grow the array along ``axis`` by ``data.shape[axis]`` and write ``data`` there, in one step.

        ``data`` must match the array's dtype (``TypeError``) and its shape on every other
        axis (``ValueError``); on error nothing changes.
        """
        self._array(name)

        def plan(m: ArrayMeta) -> tuple[Sequence[int], Any]:
            arr = D.to_storage(m.dtype, data, name)
            shp = shape_after_append(name, m, arr.shape, axis)
            start = [0] * len(shp)
            ax = int(axis) % len(shp)
            start[ax] = m.shape[ax]
            return shp, (start, arr)

        def then(m: ArrayMeta, extra: Any) -> None:
            start, arr = extra
            self._atlas._state.write(self._name, [(name, m, start, arr)])

        self._atlas._state.resize(self._name, name, plan, then)

    def read_array(self, name: str, start: Optional[Sequence[int]] = None,
                   shape: Optional[Sequence[int]] = None) -> Optional[np.ndarray]:
        """Read the whole array, or the box ``start``/``shape``; None if not defined here.

        A box of the wrong rank, negative, or out of bounds raises ``ValueError``.
        """
        if not isinstance(name, str):
            raise TypeError(f"array name must be a str, got {type(name).__name__}: {name!r}")
        st = self._atlas._state
        txn = st.txn
        m = st.dataset(self._name, txn).arrays.get(name)
        if m is None:
            return None
        s, c = read_box(m.shape, start, shape, name)
        out = st.read(txn, name, [m], s, c)
        return to_user(m, out[0, ...])

    def read_arrays(self, names: Sequence[str], start: Optional[Sequence[int]] = None,
                    shape: Optional[Sequence[int]] = None) -> dict[str, Optional[np.ndarray]]:
        """Read several arrays with the same ``start``/``shape``: ``{name: ndarray | None}``.

        One request: every array is read from the same state of the store, and the reads
        run side by side on the thread pool when they are large enough.
        """
        return _batch.dataset_reads(self._atlas._state, self._name, names, start, shape)

    # ------------------------------------------------------------------ attributes
    def set_attribute(self, key: str, value: Any, dtype: Optional[str] = None) -> None:
        """Set a typed attribute (bool, int64, float64, string, timestamp_nanoseconds).

        The type is inferred from ``value``; ``dtype`` forces one and is range-checked
        (``dtype="int8"`` stores an int64 that must fit int8).
        """
        validate_name(key, "attribute")
        self._set_attr(key, value, dtype)

    def _set_attr(self, key: str, value: Any, dtype: Optional[str] = None) -> None:
        kind, v = D.coerce_attribute(key, value, dtype)
        self._atlas._state.set_attribute(self._name, key, (kind, v))

    def get_attribute(self, key: str) -> Any:
        """The attribute's value, or None if it is not set."""
        a = self._ds().attrs.get(key)
        return None if a is None else D.attribute_value(*a)

    def attributes(self) -> dict[str, Any]:
        """Every attribute: ``{name: value}``."""
        return {k: D.attribute_value(*a) for k, a in list(self._ds().attrs.items())}


_CHECKED: dict[Any, ArrayMeta] = {}  # definitions already checked -> their schema (an instance with id 0)
_REQUIRED = frozenset({"dtype", "dims", "shape"})
_KEYWORDS = _REQUIRED | {"chunk_shape", "fill_value"}


def _schema(name: str, dtype: str, dims: Sequence[str], shape: Sequence[int], chunk_shape: Optional[Sequence[int]],
            fill_value: Any) -> tuple[str, Callable[[int], ArrayMeta]]:
    """Check one array definition; returns its name and ``make(aid) -> ArrayMeta``.

    Ingest defines the same few arrays in thousands of datasets: a definition made of plain
    values (str, int, float, None and tuples/lists of them) is checked once per process, and
    its instances are copies of one schema whose derived layout is computed once.
    """
    key: Any = None
    try:
        key = (name, dtype, tuple(dims), tuple(shape), None if chunk_shape is None else tuple(chunk_shape),
               type(fill_value), fill_value)
        if type(fill_value) not in _PLAIN:
            key = None
        else:
            for v in key[3] + (key[4] or ()) + key[2]:  # (a loop, not all() over a generator: per call)
                if type(v) not in _PLAIN:
                    key = None
                    break
        hit = _CHECKED.get(key) if key is not None else None
    except TypeError:  # unhashable or not iterable: the full check below names the problem
        key = hit = None
    if hit is None:
        hit = ArrayMeta(0, *_check_schema(name, dtype, dims, shape, chunk_shape, fill_value))
        hit.layout  # noqa: B018 - computed once, shared by every instance made from it
        if key is not None:
            if len(_CHECKED) >= 1024:
                _CHECKED.clear()
            _CHECKED[key] = hit
    return name, hit.instance


_PLAIN = {str, int, float, type(None)}


def _check_schema(name: str, dtype: str, dims: Sequence[str], shape: Sequence[int], chunk_shape: Optional[Sequence[int]],
                  fill_value: Any) -> tuple[Any, ...]:
    validate_name(name, "array")
    dt = D.canonical_dtype(dtype)
    if isinstance(dims, str) or not hasattr(dims, "__len__"):
        raise TypeError(f"dims of array {name!r} must be a sequence of str, got {dims!r}")
    dims_t = tuple(dims)
    for dname in dims_t:
        if not isinstance(dname, str):
            raise TypeError(f"dims of array {name!r} must be str, got {type(dname).__name__}: {dname!r}")
        if not dname:
            raise ValueError(f"dims of array {name!r} must be non-empty, got {list(dims_t)!r}")
        D.check_unicode(dname, f"dimension name of array {name!r}")
    if len(set(dims_t)) != len(dims_t):
        raise ValueError(f"dims of array {name!r} repeat a name: {list(dims_t)!r}")
    shp = int_tuple(shape, f"shape of array {name!r}")
    if len(shp) != len(dims_t):
        raise ValueError(f"array {name!r}: dims {list(dims_t)!r} and shape {list(shp)!r} differ in rank")
    if chunk_shape is None:
        chk = tuple(max(1, s) for s in shp)
    else:
        chk = int_tuple(chunk_shape, f"chunk_shape of array {name!r}")
        if len(chk) != len(shp):
            raise ValueError(f"array {name!r}: chunk_shape {list(chk)!r} and shape {list(shp)!r} differ in rank")
        if any(c < 1 for c in chk):
            raise ValueError(f"array {name!r}: chunk sizes must be >= 1, got {list(chk)!r}")
    # cell and chunk ids, counts and offsets are int64 everywhere (kernels, index, stats)
    if (any(v > _I64 for v in shp + chk) or math.prod(shp) > _I64
            or any(-(-s // c) * c > _I64 for s, c in zip(shp, chk))):  # the chunk grid's end too
        raise ValueError(f"array {name!r}: shape {list(shp)!r} / chunk_shape {list(chk)!r} too large: every size "
                         f"and the number of cells must stay below 2**63")
    fill = D.coerce_fill(dt, fill_value, name)
    return dt, dims_t, shp, chk, fill

