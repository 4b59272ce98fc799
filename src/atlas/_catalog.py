"""The catalog: one row per dataset, built from the metadata alone (no chunk is read).

Columns: every dataset attribute key (``{var}.{attr}`` keys of the xarray mapping included;
keys starting with ``_`` are atlas's own and left out), then for every array name
``{array}.min``, ``.max``, ``.null_count``, ``.row_count`` and ``.shape``. Statistics are
those of the last flush (as ``DatasetView.array_stats``); attributes, array definitions and
deletions are as they are now, pending changes included.

Speed: a committed state's table is its catalog file (``atlas._catfile``: written by each
commit that changes datasets, read once per state), kept by the snapshot; a store without
one (older or small stores) builds it from every dataset's metadata (``atlas._cattable``:
the blobs parsed in one stream, transposed key by key), once per state. Pending edits are
overlaid on it: only the touched datasets' rows are re-derived, and the result is cached per
handle, keyed by (store uid, generation, transaction, pending edit count).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from . import dtypes as D
from ._catcolumns import STAT_FIELDS, Table
from ._cattable import Rows, build, capture, merge
from ._query import NUMERIC_KINDS, Column, evaluate

if TYPE_CHECKING:
    from ._state import Snapshot, Transaction
    from .store import Atlas

# ---------------------------------------------------------------------------- the state
_CACHE: "weakref.WeakKeyDictionary[Atlas, tuple[Any, Table]]" = weakref.WeakKeyDictionary()


def table(store: "Atlas") -> Table:
    """The catalog of ``store`` as its handle sees it now.

    Without catalog-visible pending edits: the committed snapshot's table (its catalog file,
    read once). With some: that table with the touched datasets' rows re-derived (cached
    per handle until the next flush or edit).
    """
    found: list[Any] = []

    def take(key: Any, txn: "Transaction") -> None:  # runs under the store lock
        if not txn.edits:
            found.append(txn.base)
            return
        hit = _CACHE.get(store)
        if hit is not None and hit[0] == key:
            found.append(hit[1])
        else:  # the touched datasets' entries are copied while no edit can change them
            meta = txn.meta
            found.extend((key, txn.base, list(meta.datasets), set(txn.touched), capture(meta, set(txn.touched))))

    store._catalog_source(take)
    if len(found) == 1:
        got = found[0]
        return got if isinstance(got, Table) else got.catalog().table()
    key, base, names, touched, rows = found
    t = overlay(store, base, names, touched, rows)
    _CACHE[store] = (key, t)
    return t


def overlay(store: "Atlas", base: "Snapshot", names: list[str], touched: set[str], rows: Rows) -> Table:
    """The table of ``base`` with pending changes: rows of ``touched`` datasets replaced by ``rows``."""
    try:
        return merge(base.catalog(), base.meta, names, touched, rows).table()
    except ValueError:  # rows that do not line up (never expected): correctness first, from every entry
        full: list[Rows] = []
        store._catalog_source(lambda key, txn: full.append(capture(txn.meta)))
        return build(full[0]).table()


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


__all__ = ["catalog", "query", "table", "Table", "Column", "NUMERIC_KINDS", "STAT_FIELDS"]
