"""The catalog: one row per dataset, built from the metadata alone (no chunk is read).

Columns: every dataset attribute key (``{var}.{attr}`` keys of the xarray mapping included;
keys starting with ``_`` are atlas's own and left out), then for every array name
``{array}.min``, ``.max``, ``.null_count``, ``.row_count`` and ``.shape``. Statistics are
those of the last flush (as ``DatasetView.array_stats``); attributes, array definitions and
deletions are as they are now, pending changes included.

Speed: the metadata keeps each dataset as one undecoded string (or msgpack bytes). The
catalog parses all of them in one ``json.loads`` / msgpack stream (with the cyclic garbage
collector paused: it would otherwise rescan the millions of young containers the parse
creates), transposes them into NumPy columns key by key, and caches the result per store
handle, keyed by (store uid, generation, pending edit count): repeated queries reuse it.
Parsing here leaves the datasets undecoded in the metadata, so the next flush still writes
their strings back untouched.
"""

from __future__ import annotations

import json
import weakref
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Optional, Sequence

import msgpack
import numpy as np

from . import _gc
from . import dtypes as D
from ._meta import ArrayMeta, DatasetMeta, StoreMeta
from ._query import NUMERIC_KINDS, Column, evaluate
from .errors import CorruptStoreError

if TYPE_CHECKING:
    from .store import Atlas

STAT_FIELDS = ("min", "max", "null_count", "row_count", "shape")


class Table:
    """The built catalog: dataset names, columns (``{name: Column}``) and their kinds of origin."""

    __slots__ = ("names", "columns", "attr_columns", "array_columns")

    def __init__(self, names: list[str], columns: dict[str, Column], attr_columns: dict[str, str],
                 array_columns: dict[str, list[str]]) -> None:
        self.names = names
        self.columns = columns
        self.attr_columns = attr_columns  # attribute key -> column name
        self.array_columns = array_columns  # array name -> its column names


# ---------------------------------------------------------------------------- the state
_CACHE: "weakref.WeakKeyDictionary[Atlas, tuple[Any, Table]]" = weakref.WeakKeyDictionary()


def table(store: "Atlas") -> Table:
    """The catalog of ``store``, from the cache when neither a flush nor an edit happened since."""
    found: list[Any] = []

    def take(key: Any, meta: StoreMeta) -> None:  # runs under the store lock
        hit = _CACHE.get(store)
        if hit is not None and hit[0] == key:
            found.append(hit[1])
        else:
            found.extend((key, _snapshot(meta)))

    store._catalog_source(take)
    if len(found) == 1:
        return found[0]
    key, snap = found
    t = _build(*snap)
    _CACHE[store] = (key, t)
    return t


def _snapshot(meta: StoreMeta) -> tuple[list[str], list[Any], list[ArrayMeta]]:
    """Dataset names, their entries (a blob, or ``[attrs, arrays]`` copied from a decoded,
    mutable dataset) and the schema table the entries' schema numbers point into (decoded
    arrays are appended to a copy of it, so every entry refers to its schema by number)."""
    schemas = meta.datasets.schemas[:]
    names: list[str] = []
    entries: list[Any] = []
    for name, v in meta.datasets.raw_items():
        names.append(name)
        entries.append(v if type(v) is not DatasetMeta else _plain(v, schemas))
    return names, entries, schemas


def _plain(ds: DatasetMeta, schemas: list[ArrayMeta]) -> list[Any]:
    """A decoded dataset in the form of a parsed blob: ``[attrs, {array: (aid, schema no., stats)}]``."""
    arrays = {}
    for k, m in ds.arrays.items():
        s = m.stats
        arrays[k] = (m.aid, len(schemas), None if s is None else (s["null_count"], s["min"], s["max"]))
        schemas.append(m)
    return [dict(ds.attrs), arrays]


# ---------------------------------------------------------------------------- building
def _parse(entries: list[Any]) -> list[Any]:
    """Every entry as ``[attrs, arrays]``: the blobs parsed in one json / msgpack stream.

    Returns ``[]`` when the stream does not split into one well-formed pair per blob (the
    caller then decodes one by one, which names the malformed dataset).
    """
    raw_idx = [i for i, v in enumerate(entries) if type(v) is str or type(v) is bytes]
    if not raw_idx:
        return entries
    blobs = [entries[i] for i in raw_idx]
    objs: list[Any] = []
    try:
        if all(type(b) is str for b in blobs):
            objs = json.loads("[" + ",".join(blobs) + "]")
        elif all(type(b) is bytes for b in blobs):
            u = msgpack.Unpacker(raw=False, max_buffer_size=0)
            u.feed(b"".join(blobs))
            objs = list(u)
    except ValueError:
        return []
    # (that both halves are dicts is checked when the columns are built: dict.get refuses anything else)
    if len(objs) != len(blobs) or (objs and (set(map(type, objs)) != {list} or set(map(len, objs)) != {2})):
        return []
    if len(raw_idx) == len(entries):
        return objs
    out = entries[:]
    for i, o in zip(raw_idx, objs):
        out[i] = o
    return out


def _checked(name: str, blob: Any, schemas: list[ArrayMeta]) -> list[Any]:
    """One dataset decoded and checked the way opening it does (``CorruptStoreError`` naming it)."""
    try:
        ds = DatasetMeta.from_blob(name, blob, schemas)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise CorruptStoreError(f"metadata of dataset {name!r} is malformed: {e!r}") from e
    return _plain(ds, schemas)


def _build(names: list[str], entries: list[Any], schemas: list[ArrayMeta]) -> Table:
    with _gc.paused():
        parsed = _parse(entries)
        if parsed or not entries:
            try:
                return _columns(names, parsed, schemas)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError):
                pass
        # something malformed slipped through the fast path: decode one by one, which names it
        checked = [_checked(n, v, schemas) if isinstance(v, (str, bytes)) else v for n, v in zip(names, entries)]
        return _columns(names, checked, schemas)


_NO_ATTR = (None, None)
_NO_ARRAY = (None, -1, None)
_NO_STATS = (0, None, None)


def _columns(names: list[str], parsed: list[Any], schemas: list[ArrayMeta]) -> Table:
    n = len(names)
    attrs, arrays = zip(*parsed) if parsed else ((), ())
    columns: dict[str, Column] = {}
    attr_columns: dict[str, str] = {}
    array_columns: dict[str, list[str]] = {}
    array_names = list(dict.fromkeys(chain.from_iterable(arrays)))  # first-definition order
    stat_names = {f"{a}.{f}" for a in array_names for f in STAT_FIELDS}
    for key in dict.fromkeys(chain.from_iterable(attrs)):
        if key.startswith("_"):
            continue  # atlas's own (the xarray mapping)
        cname = f"attr:{key}" if key in stat_names else key
        columns[cname] = _attr_column(list(map(dict.get, attrs, repeat(key), repeat(_NO_ATTR))), n, key)
        attr_columns[key] = cname
    if array_names:
        tab_rows = np.array([s.row_count for s in schemas] + [0], dtype=np.int64)  # [-1]: not defined
        tab_shape = np.empty(len(schemas) + 1, dtype=object)
        tab_shape[:] = [s.shape for s in schemas] + [None]
    for a in array_names:
        _, refs, stats = zip(*map(dict.get, arrays, repeat(a), repeat(_NO_ARRAY)))
        ref = np.array(refs, dtype=np.int64)
        if ref.size and not -1 <= ref.min() <= ref.max() < len(schemas):
            raise ValueError(f"array {a!r}: schema number out of range")
        present = ref >= 0
        kind = _stat_kind({schemas[i].dtype for i in set(refs) if i >= 0})
        has_stats = np.array([s is not None for s in stats], dtype=bool)
        nn, mn, mx = zip(*[_NO_STATS if s is None else s for s in stats])
        if kind == "object":  # one array name with several kinds of dtype: Python values
            mn, mx = (tuple(_py_stat(schemas[i], v) for i, v in zip(refs, vs)) for vs in (mn, mx))
        cols = (_stat_column(mn, kind, has_stats), _stat_column(mx, kind, has_stats),
                Column("int", _ints(nn, has_stats), has_stats),
                Column("int", tab_rows[ref], present), Column("object", tab_shape[ref], present))
        array_columns[a] = [f"{a}.{f}" for f in STAT_FIELDS]
        columns.update(zip(array_columns[a], cols))
    return Table(names, columns, attr_columns, array_columns)


def _ints(values: Sequence[Any], valid: np.ndarray, dtype: Any = np.int64) -> np.ndarray:
    """Python ints (None or anything where not ``valid``) as an exact int64/uint64 array."""
    obj = np.array(values, dtype=object)
    obj[~valid] = 0
    if not set(map(type, obj)) <= {int}:
        raise ValueError("integer expected")
    return obj.astype(dtype)


_ATTR_TYPES: dict[str, set[type]] = {
    "bool": {bool}, "int64": {int}, D.TIMESTAMP: {int}, "float64": {int, float, str}, "string": {str},
}
_FLOAT_WORDS = {"nan", "inf", "-inf", "NaN", "Infinity", "-Infinity"}


def _attr_column(entries: list[Any], n: int, key: str) -> Column:
    kinds, vals = zip(*entries) if entries else ((), ())
    valid = np.array(kinds, dtype=object) != None  # noqa: E711 - element-wise
    kind_set = set(kinds) - {None}
    if len(kind_set) == 1:
        kind = kind_set.pop()
        types = set(map(type, vals)) - {type(None)}
        if kind not in _ATTR_TYPES or not types <= _ATTR_TYPES[kind]:
            raise ValueError(f"attribute {key!r}: unexpected kind/type {kind!r}/{types!r}")
        if kind == "float64":
            if str in types and not {v for v in vals if type(v) is str} <= _FLOAT_WORDS:
                raise ValueError(f"attribute {key!r}: bad float")
            f = np.array(vals, dtype=np.float64)  # None -> NaN; "nan"/"inf" spelled as strings in json
            return Column("float", f, valid & ~np.isnan(f))
        if kind == "int64":
            return Column("int", _ints(vals, valid), valid)
        if kind == D.TIMESTAMP:
            i = _ints(vals, valid)
            return Column("time", i, valid & (i != D.NAT_BITS))
        if kind == "bool":
            return Column("bool", np.array(vals, dtype=object).astype(bool), valid)
        obj = np.array(vals, dtype=object)
        obj[~valid] = ""  # so that comparisons never meet None (the mask hides these)
        return Column("str", obj, valid)
    # mixed kinds: Python values (timestamps as datetime64[ns]) in an object column
    mixed = np.empty(n, dtype=object)
    for row, (k, v) in enumerate(entries):
        if k is not None:
            mixed[row] = D.attribute_value(k, float(v) if k == "float64" else v)
    return Column("object", mixed, valid)


def _py_stat(s: ArrayMeta, v: Any) -> Any:
    if v is None:
        return None
    if s.dtype == D.TIMESTAMP:
        return np.datetime64(int(v), "ns")
    return float(v) if s.sdtype.kind == "f" else v


def _stat_kind(dtypes: set[str]) -> str:
    """The column kind of an array name's min/max, from the dtypes it has across the datasets."""
    if dtypes == {D.TIMESTAMP}:
        return "time"
    if dtypes == {D.STRING}:
        return "str"
    if not dtypes or D.TIMESTAMP in dtypes or D.STRING in dtypes:
        return "object"
    kinds = {D.NUMERIC[d].kind for d in dtypes}
    if "f" in kinds:
        return "float"
    if "uint64" in dtypes:
        return "uint" if dtypes == {"uint64"} else "float"
    return "int"


def _stat_column(values: Sequence[Any], kind: str, has_stats: np.ndarray) -> Column:
    obj = np.array(values, dtype=object)
    valid = has_stats & (obj != None)  # noqa: E711 - element-wise; min/max are None when every cell is null
    if kind == "float":
        f = np.array(values, dtype=np.float64)  # None -> NaN; "inf" spelled as a string in json
        return Column("float", f, valid & ~np.isnan(f))
    if kind in ("int", "uint", "time"):
        return Column(kind, _ints(values, valid, np.uint64 if kind == "uint" else np.int64), valid)
    if kind == "str":
        obj[~valid] = ""  # so that comparisons never meet None (the mask hides these)
        if not set(map(type, obj)) <= {str}:
            raise ValueError("string stats must be str")
    return Column(kind, obj, valid)


# ---------------------------------------------------------------------------- public entry points
def catalog(store: "Atlas", arrays: Optional[Sequence[str]] = None, attributes: Optional[Sequence[str]] = None) -> Any:
    """``Atlas.catalog``: the table as a ``pandas.DataFrame``."""
    t = table(store)
    cols: list[str] = []
    if attributes is None:
        cols += t.attr_columns.values()
    else:
        for key in _names(attributes, "attributes"):
            if key not in t.attr_columns:
                raise ValueError(f"catalog: no dataset has the attribute {key!r}")
            cols.append(t.attr_columns[key])
    if arrays is None:
        for c in t.array_columns.values():
            cols += c
    else:
        for a in _names(arrays, "arrays"):
            if a not in t.array_columns:
                raise ValueError(f"catalog: no dataset has the array {a!r}")
            cols += t.array_columns[a]
    return to_frame(t, cols)


def _names(v: Any, what: str) -> list[str]:
    if isinstance(v, str) or not all(isinstance(x, str) for x in v):
        raise TypeError(f"catalog: {what}= must be a list of names, got {v!r}")
    return list(dict.fromkeys(v))


def to_frame(t: Table, cols: list[str]) -> Any:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    data = {}
    for c in cols:
        col = t.columns[c]
        data[c] = _to_pandas(pd, col)
    return pd.DataFrame(data, index=pd.Index(t.names, name="dataset", dtype=object))


def _to_pandas(pd: Any, col: Column) -> Any:
    miss = ~col.valid
    if col.kind == "float":
        v = col.values.copy()
        v[miss] = np.nan
        return v
    if col.kind in ("int", "uint"):
        return pd.arrays.IntegerArray(col.values.copy(), miss.copy())
    if col.kind == "bool":
        return pd.arrays.BooleanArray(col.values.copy(), miss.copy())
    if col.kind == "time":
        v = col.values.copy()
        v[miss] = D.NAT_BITS
        return v.view("datetime64[ns]")
    v = col.values.copy()
    v[miss] = None
    if col.kind == "str":
        return pd.array(v, dtype="str")
    return v


def query(store: "Atlas", expr: str) -> list[str]:
    """``Atlas.query``: the names of the matching datasets, in store order."""
    t = table(store)
    sel = evaluate(expr, t.columns, len(t.names))
    names = t.names
    return [names[i] for i in np.flatnonzero(sel)]


__all__ = ["catalog", "query", "table", "Table", "Column", "NUMERIC_KINDS"]
