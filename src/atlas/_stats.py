"""Statistics: per-chunk summaries (the index's nn/mn/mx/has columns) and per-instance stats from them.

A chunk's summary is computed when it is written (large chunks) or, for small ones, in one
kernel call per layout at the flush. An instance's ``null_count`` / ``min`` / ``max`` are
reduced from the summaries of its chunks in the index, so ``array_stats`` never reads data
(strings excepted: their min/max need the values).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._lazy import K
from ._meta import ArrayMeta
from ._pending import Pending
from ._segments import ChunkIndex

_WIDE: dict[str, np.dtype[Any]] = {"f": np.dtype(np.float64), "u": np.dtype(np.uint64), "i": np.dtype(np.int64)}

#: ``load(m, cid) -> (chunk or None, written-cells mask or None)``: one whole chunk of an instance
ChunkLoader = Callable[[ArrayMeta, int], tuple[Any, Any]]


def wide_dtype(sd: np.dtype) -> np.dtype:
    """The 64-bit type per-chunk min/max are kept in (as int64 bit patterns)."""
    return _WIDE[sd.kind]


def chunk_stats(m: ArrayMeta, buf: np.ndarray, valid: np.ndarray, written: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """``(nn, mn, mx, has)`` of consecutive chunks in ``buf`` (valid shapes ``valid``), one kernel call."""
    sd = m.sdtype
    has_fill = m.fill is not None
    fill = sd.type(m.fill_storage)
    fill_is_nan = sd.kind == "f" and bool(np.isnan(fill))
    is_ts = m.dtype == "timestamp_nanoseconds"
    skip = sd.type(np.iinfo(np.int64).min) if is_ts else sd.type(0)
    if written is None:
        nn, mn, mx, has = K.chunk_stats(buf, m.kchunk, valid, has_fill, fill, fill_is_nan, sd.kind == "f", is_ts, skip)
    else:
        nn, mn, mx, has = K.chunk_stats_masked(buf, written, m.kchunk, valid, has_fill, fill, fill_is_nan,
                                               sd.kind == "f", is_ts, skip)
    w = wide_dtype(sd)
    return nn, mn.astype(w).view(np.int64), mx.astype(w).view(np.int64), has


def stats_columns(items: Sequence[tuple[tuple[int, int], Pending]],
                  metas: Mapping[int, ArrayMeta] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``(nn, mn, mx, has)`` index columns of a segment's chunks ``[((aid, cid), entry)]``.

    Large chunks were summarised when written (the entry holds it); the small ones left for
    the flush (``nn < 0``) are summarised here as whole columns, one kernel call per layout
    (dtype, chunk, fill) over their payloads joined (``metas``: aid -> instance).
    """
    n = len(items)
    groups: dict[Any, tuple[ArrayMeta, list[int]]] = {}
    known: list[int] = []
    last = rows = None
    for j, (k, p) in enumerate(items):
        if p.nn < 0:
            m = metas[k[0]]  # type: ignore[index]
            lay = m.layout
            if lay is not last:  # items come in runs of one layout (the instances of one array name)
                g = groups.get(lay)
                if g is None:
                    g = groups[lay] = (m, [])
                last, rows = lay, g[1]
            rows.append(j)  # type: ignore[union-attr]
        else:
            known.append(j)
    if not groups:  # every summary known (compaction, large chunks)
        ps = [p for _, p in items]
        return (np.array([p.nn for p in ps], np.int64), np.array([p.mn for p in ps], np.int64),
                np.array([p.mx for p in ps], np.int64), np.array([p.has for p in ps], np.uint8))
    nn = np.empty(n, np.int64)
    mn = np.empty(n, np.int64)
    mx = np.empty(n, np.int64)
    has = np.empty(n, np.uint8)
    for m, rows in groups.values():
        ps = [items[j][1] for j in rows] if len(rows) < n else [p for _, p in items]
        buf = np.frombuffer(b"".join([p.payload() if p.data is None else p.data for p in ps]), m.sdtype)
        a, b, c, d = chunk_stats(m, buf, np.tile(m.kchunk, (len(ps), 1)))
        if len(rows) == n:
            nn, mn, mx, has = a, b, c, d.astype(np.uint8, copy=False)
        else:
            nn[rows], mn[rows], mx[rows], has[rows] = a, b, c, d
    if known:
        ps = [items[j][1] for j in known]
        nn[known] = [p.nn for p in ps]
        mn[known] = [p.mn for p in ps]
        mx[known] = [p.mx for p in ps]
        has[known] = [p.has for p in ps]
    return nn, mn, mx, has


def instance_stats(metas: list[ArrayMeta], idx: ChunkIndex, load: ChunkLoader,
                   pending_cids: Callable[[int], set[int]]) -> list[dict[str, Any]]:
    """``{"null_count", "min", "max"}`` of many instances of one array name, from the index columns."""
    out: list[Any] = [None] * len(metas)
    a = idx.chunks["aid"]
    aids = np.fromiter((m.aid for m in metas), np.int64, len(metas))
    lo = np.searchsorted(a, aids, "left")
    hi = np.searchsorted(a, aids, "right")
    csum = np.concatenate([[0], np.cumsum(idx.chunks["nn"])])
    nn = (csum[hi] - csum[lo]).tolist()
    has = idx.chunks["has"].astype(bool)
    single = ((hi - lo) == 1).tolist()
    lo_l = lo.tolist()
    r1 = np.minimum(lo, max(len(a) - 1, 0))
    has1 = (has[r1] if len(a) else np.zeros(len(metas), bool)).tolist()
    views: dict[str, tuple[list[Any], list[Any]]] = {}
    kinds: dict[Any, tuple[Any, int]] = {}  # layout -> (wide dtype, None for strings; cells): one lookup per layout
    for i, m in enumerate(metas):
        k = kinds.get(m.layout)
        if k is None:
            k = kinds[m.layout] = (None if m.is_string else wide_dtype(m.sdtype), m.row_count)
        w = k[0]
        if w is None:
            out[i] = string_stats(m, idx, load, pending_cids(m.aid))
            continue
        mn = mx = None
        if single[i]:
            if has1[i]:
                v = views.get(w.char)
                if v is None:
                    v = views[w.char] = (idx.chunks["mn"].view(w)[r1].tolist(), idx.chunks["mx"].view(w)[r1].tolist())
                mn, mx = v[0][i], v[1][i]
        elif hi[i] > lo_l[i]:
            sl = slice(lo_l[i], int(hi[i]))
            h = has[sl]
            if h.any():
                mn = idx.chunks["mn"].view(w)[sl][h].min().item()
                mx = idx.chunks["mx"].view(w)[sl][h].max().item()
        out[i] = {"null_count": k[1] - nn[i], "min": mn, "max": mx}
    return out


def string_stats(m: ArrayMeta, idx: ChunkIndex, load: ChunkLoader, extra_cids: set[int]) -> dict[str, Any]:
    """``null_count`` / ``min`` / ``max`` of one string instance (its chunks are read back)."""
    rows = idx.rows_of(m.aid)
    cids = set(idx.chunks["cid"][rows].tolist()) | extra_cids
    order = np.asarray(sorted(cids), np.int64)
    valid = K.valid_shapes(m.kshape, m.kchunk, order) if order.size else None
    lo = hi = None
    for j, cid in enumerate(order.tolist()):
        arr, mk = load(m, cid)
        if arr is None:
            continue
        vsl = tuple(slice(0, int(v)) for v in valid[j])  # type: ignore[index]
        vals = (arr[vsl] if mk is None else arr[vsl][mk[vsl]]).ravel().tolist()
        if m.fill is not None:
            vals = [x for x in vals if x != m.fill]
        if vals:
            a_, b_ = min(vals), max(vals)
            lo = a_ if lo is None or a_ < lo else lo
            hi = b_ if hi is None or b_ > hi else hi
    return {"null_count": m.row_count - int(idx.chunks["nn"][rows].sum()), "min": lo, "max": hi}
