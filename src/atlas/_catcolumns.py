"""The catalog's columns: a raw table (``atlas._cattable.RawTable``) finalized into typed ``Column`` objects.

The decisions that depend on every row are taken here, and only here: a column's kind (an
attribute key with one kind gets that kind, several make an object column of Python values;
an array name's min/max kind follows the dtypes it has across the datasets), its name
(``attr:`` before an attribute key equal to a statistics column) and, already in the raw
table, the column order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import dtypes as D
from ._query import Column

if TYPE_CHECKING:
    from ._cattable import ArrayRaw, AttrRaw, RawTable

STAT_FIELDS = ("min", "max", "null_count", "row_count", "shape")
#: attribute kinds; a raw table codes them 1.. in this order (0: absent)
ATTR_KINDS = ("bool", "int64", D.TIMESTAMP, "float64", "string")


def family(dtype: str) -> str:
    """The value family of an array dtype's min/max."""
    if dtype == D.STRING:
        return "s"
    if dtype == D.TIMESTAMP:
        return "i"
    k = D.NUMERIC[dtype].kind
    return "f" if k == "f" else "u" if dtype == "uint64" else "i"


class Table:
    """The finalized catalog: dataset names, columns (``{name: Column}``) and their kinds of origin."""

    __slots__ = ("names", "columns", "attr_columns", "array_columns")

    def __init__(self, names: list[str], columns: dict[str, Column], attr_columns: dict[str, str],
                 array_columns: dict[str, list[str]]) -> None:
        self.names = names
        self.columns = columns
        self.attr_columns = attr_columns  # attribute key -> column name
        self.array_columns = array_columns  # array name -> its column names


def finalize(raw: "RawTable") -> Table:
    """The typed columns of ``raw``."""

    n = len(raw.names)
    columns: dict[str, Column] = {}
    attr_columns: dict[str, str] = {}
    array_columns: dict[str, list[str]] = {}
    stat_names = {f"{a}.{f}" for a in raw.arrays for f in STAT_FIELDS}
    for key, a in raw.attrs.items():
        cname = f"attr:{key}" if key in stat_names else key
        columns[cname] = _attr_column(a, n)
        attr_columns[key] = cname
    for name, x in raw.arrays.items():
        present = x.dt >= 0
        kind = _stat_kind({x.dtypes[i] for i in np.unique(x.dt[present]).tolist()})
        tab_rows = np.array([math.prod(s) for s in x.shapes] + [0], dtype=np.int64)  # [-1]: not defined
        tab_shape = np.empty(len(x.shapes) + 1, dtype=object)
        tab_shape[:] = x.shapes + [None]
        cols = (_stat_column(x, x.mn, x.mnv, kind), _stat_column(x, x.mx, x.mxv, kind),
                Column("int", x.nn, x.has), Column("int", tab_rows[x.sh], present), Column("object", tab_shape[x.sh], present))
        array_columns[name] = [f"{name}.{f}" for f in STAT_FIELDS]
        columns.update(zip(array_columns[name], cols))
    return Table(raw.names, columns, attr_columns, array_columns)


def _attr_column(a: AttrRaw, n: int) -> Column:
    present = a.kind != 0
    if len(a.vals) == 1:
        code, v = next(iter(a.vals.items()))
        kind = ATTR_KINDS[code - 1]
        if kind == "float64":
            return Column("float", v, present & ~np.isnan(v))
        if kind == "int64":
            return Column("int", v, present)
        if kind == D.TIMESTAMP:
            return Column("time", v, present & (v != D.NAT_BITS))
        if kind == "bool":
            return Column("bool", v, present)
        return Column("str", v, present)
    # mixed kinds: Python values (timestamps as datetime64[ns]) in an object column
    mixed = np.empty(n, dtype=object)
    for code, v in a.vals.items():
        kind = ATTR_KINDS[code - 1]
        rows = np.flatnonzero(a.kind == code)
        conv = _ATTR_CONV[kind]
        for r, x in zip(rows.tolist(), v[rows].tolist()):
            mixed[r] = conv(x)  # one by one: a list would be made an array first (datetime64 -> int)
    return Column("object", mixed, present)


_ATTR_CONV: dict[str, Callable[[Any], Any]] = {"float64": float, "int64": int, "bool": bool, "string": str,
                                               D.TIMESTAMP: lambda x: np.datetime64(x, "ns")}


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


def _stat_column(x: ArrayRaw, vals: dict[str, np.ndarray], has_value: np.ndarray, kind: str) -> Column:
    valid = x.has & has_value
    if kind == "float":
        if len(vals) == 1 and "f" in vals:
            f = vals["f"]
            if not (valid | np.isnan(f)).all():  # rows without a value hold NaN (as a build from metadata)
                f = np.where(valid, f, np.nan)
        else:
            f = np.full(len(valid), np.nan)
            for fam, v in vals.items():
                rows = _family_rows(x, fam) & valid
                f[rows] = v[rows].astype(np.float64)
        return Column("float", f, valid & ~np.isnan(f))
    if kind in ("int", "uint", "time", "str"):
        v = vals["u" if kind == "uint" else "s" if kind == "str" else "i"]
        return Column(kind, v, valid)
    # one array name with several kinds of dtype: Python values
    obj = np.full(len(valid), None, dtype=object)
    for fam, v in vals.items():
        for i, dtype in enumerate(x.dtypes):
            if family(dtype) != fam:
                continue
            rows = np.flatnonzero((x.dt == i) & valid)
            conv: Callable[[Any], Any] = _ns if dtype == D.TIMESTAMP else float if family(dtype) == "f" else _same
            for r, t in zip(rows.tolist(), v[rows].tolist()):
                obj[r] = conv(t)
    return Column("object", obj, valid)


def _ns(t: int) -> Any:
    return np.datetime64(t, "ns")


def _same(t: Any) -> Any:
    return t


def _family_rows(x: ArrayRaw, fam: str) -> np.ndarray:
    return np.isin(x.dt, [i for i, d in enumerate(x.dtypes) if family(d) == fam])
