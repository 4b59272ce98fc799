"""The catalog's rows in their stored form: built from metadata, merged row-wise, finalized into columns.

A :class:`RawTable` keeps, per attribute key and per array name, what each dataset (row)
has, *before* the per-column decisions that depend on every row (which kind a column gets,
its name, the column order). Those are taken by :meth:`RawTable.table`, the one place that
turns raw rows into the :class:`Table` ``catalog()`` and ``query()`` use. So a table merged
from an old one and a few re-derived rows (:func:`merge`) finalizes exactly like one built
from every dataset's metadata (:func:`build`), whatever kinds the rows bring.

- an attribute key: ``kind`` (int8 per row: 0 absent, else ``ATTR_KINDS`` index + 1) and one
  value array per kind present (int64 for ints and timestamps, float64, bool, object for str);
- an array name: ``dt`` (int8 per row: index into its ``dtypes`` table, -1 absent), ``sh``
  (index into its ``shapes`` table), ``has`` (stats recorded), ``nn``, and min/max as one
  array per value family present (``i`` int64: signed ints and timestamps, ``u`` uint64,
  ``f`` float64, ``s`` str) with ``mnv``/``mxv`` (a value, not None).

Values where a row lacks them hold a fixed default (0, NaN, False, ""), so merged and
rebuilt tables are equal array for array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, Callable, Optional, Sequence

import json

import msgpack
import numpy as np

from . import _gc
from . import dtypes as D
from ._meta import ArrayMeta, DatasetMeta, StoreMeta, decode_blob
from ._catcolumns import ATTR_KINDS, Table, family, finalize
from .errors import CorruptStoreError

ACODE = {k: i + 1 for i, k in enumerate(ATTR_KINDS)}
ADTYPE = {1: np.dtype(bool), 2: np.dtype(np.int64), 3: np.dtype(np.int64), 4: np.dtype(np.float64), 5: np.dtype(object)}
FAMILIES = {"i": np.dtype(np.int64), "u": np.dtype(np.uint64), "f": np.dtype(np.float64), "s": np.dtype(object)}
_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError)


def default_filled(dt: np.dtype, n: int) -> np.ndarray:
    """``n`` default values (what a row without a value holds)."""
    if dt.kind == "f":
        return np.full(n, np.nan, dt)
    if dt.kind == "O":
        return np.full(n, "", dt)
    return np.zeros(n, dt)


@dataclass
class AttrRaw:
    """One attribute key over every row."""

    kind: np.ndarray
    vals: dict[int, np.ndarray]


@dataclass
class ArrayRaw:
    """One array name over every row."""

    dtypes: list[str]
    dt: np.ndarray
    shapes: list[tuple[int, ...]]
    sh: np.ndarray
    has: np.ndarray
    nn: np.ndarray
    mn: dict[str, np.ndarray]
    mnv: np.ndarray
    mx: dict[str, np.ndarray]
    mxv: np.ndarray


@dataclass
class RawTable:
    """Rows in store order; ``attrs`` and ``arrays`` in column order."""

    names: list[str]
    attrs: dict[str, AttrRaw]
    arrays: dict[str, ArrayRaw]
    _table: Optional[Table] = field(default=None, repr=False, compare=False)
    _rows: Optional[dict[str, int]] = field(default=None, repr=False, compare=False)

    def row_of(self) -> dict[str, int]:
        """``{dataset name: row}`` (made once; shared by the next table when the names stay)."""
        r = self._rows
        if r is None:
            r = self._rows = {n: i for i, n in enumerate(self.names)}
        return r

    def table(self) -> Table:
        """The finalized columns (computed once; a pure function of the rows)."""
        t = self._table
        if t is None:
            t = self._table = finalize(self)
        return t


# ---------------------------------------------------------------------------- capture
@dataclass
class Rows:
    """Some datasets' entries, copied out of a metadata: names (store order), entries (a blob
    or ``[attrs, arrays]``) and the schema table the entries' schema numbers point into."""

    names: list[str]
    entries: list[Any]
    schemas: list[ArrayMeta]


def capture(meta: StoreMeta, only: Optional[set[str]] = None) -> Rows:
    """Entries of ``meta`` (all, or the names in ``only`` that it has), safe to use after the
    lock is released: decoded (mutable) datasets are copied in their plain form."""
    schemas = meta.datasets.schemas[:]
    names: list[str] = []
    entries: list[Any] = []
    if only is None:
        items: Any = meta.datasets.raw_items()
    else:
        raw = meta.datasets.raw
        items = [(n, v) for n, v in ((n, raw(n)) for n in only) if v is not None]
    for name, v in items:
        names.append(name)
        entries.append(v if type(v) is not DatasetMeta else _plain(v, schemas))
    return Rows(names, entries, schemas)


def _plain(ds: DatasetMeta, schemas: list[ArrayMeta]) -> list[Any]:
    """A decoded dataset in the form of a parsed blob: ``[attrs, {array: (aid, schema no., stats)}]``."""
    arrays = {}
    for k, m in list(ds.arrays.items()):
        s = m.stats
        arrays[k] = (m.aid, len(schemas), None if s is None else (s["null_count"], s["min"], s["max"]))
        schemas.append(m)
    return [dict(ds.attrs), arrays]


# ---------------------------------------------------------------------------- building
def build(rows: Rows) -> RawTable:
    """The raw table of ``rows`` (every dataset of a store, or a few to merge)."""
    names, entries, schemas = rows.names, rows.entries, rows.schemas
    with _gc.paused():
        parsed = _parse(entries)
        if parsed or not entries:
            try:
                return _transpose(names, parsed, schemas)
            except _ERRORS:
                pass
        # something malformed slipped through the fast path: decode one by one, which names it
        checked = [_checked(n, v, schemas) if isinstance(v, (str, bytes)) else v for n, v in zip(names, entries)]
        return _transpose(names, checked, schemas)


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
    except _ERRORS as e:
        raise CorruptStoreError(f"metadata of dataset {name!r} is malformed: {e!r}") from e
    return _plain(ds, schemas)


_NO_ATTR = (None, None)
_NO_ARRAY = (None, -1, None)
_NO_STATS = (0, None, None)


def _transpose(names: list[str], parsed: list[Any], schemas: list[ArrayMeta]) -> RawTable:
    n = len(names)
    attrs, arrays = zip(*parsed) if parsed else ((), ())
    araw: dict[str, AttrRaw] = {}
    for key in dict.fromkeys(chain.from_iterable(attrs)):
        if not key.startswith("_"):  # atlas's own (the xarray mapping)
            araw[key] = _attr_raw(list(map(dict.get, attrs, repeat(key), repeat(_NO_ATTR))), n, key)
    xraw: dict[str, ArrayRaw] = {}
    for a in dict.fromkeys(chain.from_iterable(arrays)):  # first-definition order
        xraw[a] = _array_raw(list(map(dict.get, arrays, repeat(a), repeat(_NO_ARRAY))), a, schemas)
    return RawTable(list(names), araw, xraw)


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


def _attr_values(kind: str, vals: Sequence[Any], present: np.ndarray, key: str, single: bool) -> np.ndarray:
    """The values of one kind as that kind's array; rows not ``present`` hold None (``single``:
    the key has one kind) or values of other kinds."""
    if single:
        types = set(map(type, vals)) - {type(None)}
    else:
        types = set(map(type, (v for v, p in zip(vals, present) if p)))
    if not types <= _ATTR_TYPES[kind]:
        raise ValueError(f"attribute {key!r}: unexpected kind/type {kind!r}/{types!r}")
    if kind == "float64":
        sub = vals if single else [v if p else None for v, p in zip(vals, present)]
        if str in types and not {v for v in sub if type(v) is str} <= _FLOAT_WORDS:
            raise ValueError(f"attribute {key!r}: bad float")
        return np.array(sub, dtype=np.float64)  # None -> NaN; "nan"/"inf" spelled as strings in json
    if kind in ("int64", D.TIMESTAMP):
        return _ints(vals, present)
    if kind == "bool":
        obj = np.array(vals, dtype=object)
        obj[~present] = False
        return obj.astype(bool)
    obj = np.array(vals, dtype=object)
    obj[~present] = ""
    return obj


def _attr_raw(entries: list[Any], n: int, key: str) -> AttrRaw:
    kinds, vals = zip(*entries) if entries else ((), ())
    kobj = np.array(kinds, dtype=object)
    kind_set = set(kinds) - {None}
    if not kind_set <= ACODE.keys():
        raise ValueError(f"attribute {key!r}: unknown kind(s) {kind_set - ACODE.keys()!r}")
    code = np.zeros(n, np.int8)
    out: dict[int, np.ndarray] = {}
    for k in kind_set:
        present = kobj == k if len(kind_set) > 1 else kobj != None  # noqa: E711 - element-wise
        code[present] = ACODE[k]
        out[ACODE[k]] = _attr_values(k, vals, present, key, len(kind_set) == 1)
    return AttrRaw(code, out)


def _array_raw(entries: list[Any], a: str, schemas: list[ArrayMeta]) -> ArrayRaw:
    _, refs, stats = zip(*entries)
    ref = np.array(refs, dtype=np.int64)
    if ref.size and not -1 <= ref.min() <= ref.max() < len(schemas):
        raise ValueError(f"array {a!r}: schema number out of range")
    used = sorted(set(refs) - {-1})
    dtypes = list(dict.fromkeys(schemas[i].dtype for i in used))
    shapes = list(dict.fromkeys(schemas[i].shape for i in used))
    dno = {d: i for i, d in enumerate(dtypes)}
    sno = {s: i for i, s in enumerate(shapes)}
    dlut = np.full(len(schemas) + 1, -1, np.int8)  # [-1]: not defined
    slut = np.full(len(schemas) + 1, -1, np.int64)
    for i in used:
        dlut[i] = dno[schemas[i].dtype]
        slut[i] = sno[schemas[i].shape]
    dt = dlut[ref]
    has = np.array([s is not None for s in stats], dtype=bool)
    nn, mn, mx = zip(*[_NO_STATS if s is None else s for s in stats])
    mn_d, mnv = _stat_raw(mn, dt, dtypes, has)
    mx_d, mxv = _stat_raw(mx, dt, dtypes, has)
    return ArrayRaw(dtypes, dt, shapes, slut[ref], has, _ints(nn, has), mn_d, mnv, mx_d, mxv)


def _stat_raw(values: Sequence[Any], dt: np.ndarray, dtypes: list[str],
              has: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    obj = np.array(values, dtype=object)
    valid = has & (obj != None)  # noqa: E711 - element-wise; min/max are None when every cell is null
    fams = [family(d) for d in dtypes]
    out: dict[str, np.ndarray] = {}
    for f in dict.fromkeys(fams):
        if len(set(fams)) == 1:
            rows = None
            sub, ok = obj, valid
        else:
            rows = np.isin(dt, [i for i, g in enumerate(fams) if g == f])
            sub, ok = obj[rows], valid[rows]
        vals = _family_values(f, sub, ok)
        if rows is None:
            out[f] = vals
        else:
            full = default_filled(FAMILIES[f], len(obj))
            full[rows] = vals
            out[f] = full
    return out, valid


def _family_values(f: str, obj: Any, valid: np.ndarray) -> np.ndarray:
    if f == "f":
        sub = obj.copy()
        sub[~valid] = None
        if not set(map(type, sub)) <= {int, float, str, type(None)}:
            raise ValueError("float stats must be numbers")
        return np.array(sub.tolist(), dtype=np.float64)  # None -> NaN; "inf" spelled as a string in json
    if f in ("i", "u"):
        return _ints(obj, valid, FAMILIES[f])
    sub = obj.copy()
    sub[~valid] = ""
    if not set(map(type, sub)) <= {str}:
        raise ValueError("string stats must be str")
    return sub


# ---------------------------------------------------------------------------- merging
def merge(base: RawTable, base_meta: StoreMeta, new_names: list[str], touched: set[str] | frozenset[str],
          delta: Rows) -> RawTable:
    """The table of the next state: ``base`` (the table of ``base_meta``) with the rows of the
    ``touched`` datasets (created, changed or deleted) replaced by those of ``delta`` (their
    entries in the next state, whose names are ``new_names`` in store order).

    Every other dataset must be in both states, unchanged and in the same relative order (a
    dataset only changes in a transaction that touches it); ``ValueError`` if the rows do
    not line up.
    """
    if not touched:
        return base
    d = build(delta)
    n_old = len(base.names)
    order = {n: i for i, n in enumerate(d.names)}
    if len(new_names) == n_old and len(d.names) == len(touched):
        # the usual flush: datasets changed where they are (none created, deleted or moved)
        row_of = base.row_of()
        rows = [row_of.get(n, -1) for n in d.names]
        if all(r >= 0 and new_names[r] == n for n, r in zip(d.names, rows)):
            src = np.arange(n_old, dtype=np.int64)
            src[rows] = n_old + np.arange(len(rows))
            return _assemble(base, base_meta, d, delta, src, base.names, row_of)
    is_new = np.fromiter((n in touched for n in new_names), bool, len(new_names))
    keep = np.fromiter((n not in touched for n in base.names), bool, len(base.names))
    newpos = [order.get(n, -1) for n in (new_names[i] for i in np.flatnonzero(is_new).tolist())]
    kept = np.flatnonzero(keep)
    if (len(kept) != len(new_names) - len(newpos) or len(newpos) != len(d.names) or -1 in newpos
            or [base.names[i] for i in kept.tolist()] != [new_names[i] for i in np.flatnonzero(~is_new).tolist()]):
        raise ValueError("catalog merge: the rows do not line up with the store")
    src = np.empty(len(new_names), np.int64)
    src[~is_new] = kept
    src[is_new] = n_old + np.asarray(newpos, np.int64)
    return _assemble(base, base_meta, d, delta, src, new_names, None)


def _assemble(base: RawTable, base_meta: StoreMeta, d: RawTable, delta: Rows, src: np.ndarray, new_names: list[str],
              row_of: Optional[dict[str, int]]) -> RawTable:
    """Row ``i`` of the result is row ``src[i]`` of ``base`` followed by ``d`` (the rows of ``delta``)."""
    n_old, n_d = len(base.names), len(d.names)
    attrs = {}
    for k in dict.fromkeys(chain(base.attrs, d.attrs)):
        a = _merge_attr(base.attrs.get(k), d.attrs.get(k), n_old, n_d, src)
        if a is not None:
            attrs[k] = a
    arrays = {}
    for k in dict.fromkeys(chain(base.arrays, d.arrays)):
        x = _merge_array(base.arrays.get(k), d.arrays.get(k), n_old, n_d, src)
        if x is not None:
            arrays[k] = x

    def row_keys(which: int) -> Callable[[int], list[str]]:
        def keys(row: int) -> list[str]:
            s = int(src[row])
            if s >= n_old:
                entry = delta.entries[s - n_old]
            else:
                entry = base_meta.datasets.raw(base.names[s])
            return _entry_keys(entry, which)
        return keys

    attrs = _ordered(attrs, {k: a.kind != 0 for k, a in attrs.items()}, row_keys(0))
    arrays = _ordered(arrays, {k: x.dt >= 0 for k, x in arrays.items()}, row_keys(1))
    return RawTable(new_names, attrs, arrays, _rows=row_of)


def _entry_keys(entry: Any, which: int) -> list[str]:
    if type(entry) is DatasetMeta:
        return list(entry.attrs if which == 0 else entry.arrays)
    if isinstance(entry, list):
        return list(entry[which])
    return list(decode_blob(entry)[which])


def _ordered(cols: dict[str, Any], present: dict[str, np.ndarray], row_keys: Callable[[int], list[str]]) -> dict[str, Any]:
    """Columns in the order a build from every row gives: by the first row that has them, then
    in that row's own order (read from its entry: ties are few)."""
    first = {k: int(np.argmax(p)) for k, p in present.items()}
    by_row: dict[int, list[str]] = {}
    for k in cols:
        by_row.setdefault(first[k], []).append(k)
    out: dict[str, Any] = {}
    for r in sorted(by_row):
        ks = by_row[r]
        if len(ks) > 1:
            pos = {k: i for i, k in enumerate(row_keys(r))}
            ks = sorted(ks, key=lambda k: pos.get(k, math.inf))
        for k in ks:
            out[k] = cols[k]
    return out


def _cat(a: Optional[np.ndarray], b: Optional[np.ndarray], dt: np.dtype, n_a: int, n_b: int, src: np.ndarray,
         fill: Any = None) -> np.ndarray:
    if a is None:
        a = default_filled(dt, n_a) if fill is None else np.full(n_a, fill, dt)
    if b is None:
        b = default_filled(dt, n_b) if fill is None else np.full(n_b, fill, dt)
    return np.concatenate([a, b])[src]


def _merge_attr(o: Optional[AttrRaw], d: Optional[AttrRaw], n_o: int, n_d: int, src: np.ndarray) -> Optional[AttrRaw]:
    kind = _cat(None if o is None else o.kind, None if d is None else d.kind, np.dtype(np.int8), n_o, n_d, src)
    codes = set(np.unique(kind).tolist()) - {0}
    if not codes:
        return None
    # (rows of another kind hold the default in each side's arrays, so they do here too)
    vals = {c: _cat(o.vals.get(c) if o else None, d.vals.get(c) if d else None, ADTYPE[c], n_o, n_d, src)
            for c in sorted(codes)}
    return AttrRaw(kind, vals)


def _merge_array(o: Optional[ArrayRaw], d: Optional[ArrayRaw], n_o: int, n_d: int, src: np.ndarray) -> Optional[ArrayRaw]:
    dtypes = list(o.dtypes) if o else []
    dtypes += [x for x in (d.dtypes if d else []) if x not in dtypes]
    shapes = list(o.shapes) if o else []
    seen = set(shapes)
    shapes += [s for s in (d.shapes if d else []) if s not in seen]
    d_dt = d_sh = None
    if d is not None:
        d_dt = np.array([dtypes.index(x) for x in d.dtypes] + [-1], np.int8)[d.dt]
        sno = {s: i for i, s in enumerate(shapes)}
        d_sh = np.array([sno[s] for s in d.shapes] + [-1], np.int64)[d.sh]
    dt = _cat(None if o is None else o.dt, d_dt, np.dtype(np.int8), n_o, n_d, src, -1)
    used = np.unique(dt[dt >= 0])
    if used.size == 0:
        return None
    sh = _cat(None if o is None else o.sh, d_sh, np.dtype(np.int64), n_o, n_d, src, -1)
    if used.size < len(dtypes):  # forget dtypes no row has any more
        lut = np.full(len(dtypes) + 1, -1, np.int8)
        lut[used] = np.arange(used.size)
        dtypes = [dtypes[i] for i in used.tolist()]
        dt = lut[dt]
    sused = np.unique(sh[sh >= 0])
    if sused.size < len(shapes):
        slut = np.full(len(shapes) + 1, -1, np.int64)
        slut[sused] = np.arange(sused.size)
        shapes = [shapes[i] for i in sused.tolist()]
        sh = slut[sh]
    fams = {family(x) for x in dtypes}
    has = _cat(None if o is None else o.has, None if d is None else d.has, np.dtype(bool), n_o, n_d, src)
    nn = _cat(None if o is None else o.nn, None if d is None else d.nn, np.dtype(np.int64), n_o, n_d, src)

    def stat(om: Optional[dict[str, np.ndarray]], dm: Optional[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        out = {}
        for f in sorted(fams):
            out[f] = _cat(om.get(f) if om else None, dm.get(f) if dm else None, FAMILIES[f], n_o, n_d, src)
        return out

    mn = stat(None if o is None else o.mn, None if d is None else d.mn)
    mx = stat(None if o is None else o.mx, None if d is None else d.mx)
    mnv = _cat(None if o is None else o.mnv, None if d is None else d.mnv, np.dtype(bool), n_o, n_d, src)
    mxv = _cat(None if o is None else o.mxv, None if d is None else d.mxv, np.dtype(bool), n_o, n_d, src)
    return ArrayRaw(dtypes, dt, shapes, sh, has, nn, mn, mnv, mx, mxv)
