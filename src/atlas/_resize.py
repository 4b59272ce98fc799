"""Resizing an array instance inside a transaction: grow or shrink any axis.

The chunk grid of an array is fixed by its ``chunk_shape``; a chunk id is the row-major
number of the chunk in the grid ``ceil(shape / kchunk)`` (``kchunk = min(chunk, shape)``).
A resize from shape ``S`` to ``S2`` therefore sorts every existing chunk of the instance
into one of four cases:

- **dropped**: its origin lies outside ``S2`` on some axis (its cells never come back);
- **cut**: it reaches past ``S2`` on an axis that shrank and held data there, or the
  effective chunk ``kchunk`` changed (an axis whose ``chunk_shape`` exceeds the smaller
  of the two sizes), or it needs a written-cells mask (below): it is rewritten as a
  pending chunk, cells outside ``S2`` reset to the fill value and marked unwritten;
- **kept**: its bytes stay where they are.

Growing along the first axis keeps every chunk id: the instance keeps its id and nothing is
rewritten. Any other change (growing a later axis changes the ids of existing chunks;
a shrink must hide the cells it drops from readers of the old shape until the commit) gives
the instance a new id: its kept chunks are *re-keyed* in the transaction's chunk index
(``Transaction.overlays``: the snapshot's index plus rows for the new id that point at the
same stored frames, so no data is copied; the flush writes that index with the next
segment), kept pending chunks are re-keyed in the pending table, and the old id becomes
dead (its rows leave the index at the flush, as for a deleted array).

Written-cells masks: an array without a fill value tells unwritten cells from written
ones with a per-chunk mask; a mask-less chunk counts as "every cell written". Edge chunks
are written with a mask (so cells beyond the shape, which become valid after a growth,
stay unwritten); edge chunks written before that rule (older stores) are rewritten with
one when a growth makes their padding valid.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from . import codecs
from ._chunks import encode_strings
from ._lazy import K
from ._meta import ArrayMeta
from ._pending import Pending
from ._read import load_chunk
from ._segments import CHUNK_COLUMNS, ChunkIndex
from ._stats import chunk_stats
from ._write import SOLO_FRAME, check_chunk_size, mask_bytes

if TYPE_CHECKING:
    from ._state import Transaction

_I64 = 2**63 - 1


def grid(shape: tuple[int, ...], kchunk: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks per axis (0 on a zero-length axis)."""
    return tuple(-(-s // c) for s, c in zip(shape, kchunk))


def check_shape(name: str, m: ArrayMeta, shape: tuple[int, ...]) -> None:
    """``ValueError`` naming the array when ``shape`` cannot be the array's new shape."""
    if len(shape) != len(m.shape):
        raise ValueError(f"array {name!r}: new shape {list(shape)!r} has rank {len(shape)}, the array has "
                         f"{len(m.shape)} dimension(s) {list(m.dims)!r}")
    if (any(v > _I64 for v in shape) or math.prod(shape) > _I64
            or any(-(-s // c) * c > _I64 for s, c in zip(shape, m.chunk))):
        raise ValueError(f"array {name!r}: shape {list(shape)!r} too large: every size and the number of cells "
                         "must stay below 2**63")


class _Undo:
    """What ``resize`` changed in a transaction, to put back if the step that follows it fails."""

    def __init__(self, t: "Transaction", ds_name: str, name: str, m: ArrayMeta) -> None:
        self.t, self.ds_name, self.name, self.m = t, ds_name, name, m
        self.ds = t.meta.datasets[ds_name]
        self.overlay = t.overlays.get(name)
        self.was_dirty = t.dirty.get(m.aid)
        self.was_dead = m.aid in t.dead
        self.new_aid: Optional[int] = None

    def __call__(self) -> None:
        t = self.t
        t.working().datasets[self.ds_name] = self.ds  # the entry as it was (never mutated since)
        if self.overlay is None:
            t.overlays.pop(self.name, None)
        else:
            t.overlays[self.name] = self.overlay
        if self.new_aid is not None:
            t.dirty.pop(self.new_aid, None)
            t.pending.drop(self.name, self.new_aid)
        if self.was_dirty is None:
            t.dirty.pop(self.m.aid, None)
        else:
            t.dirty[self.m.aid] = self.was_dirty
        if not self.was_dead:
            t.dead.discard(self.m.aid)


def resize(t: "Transaction", ds_name: str, name: str, m: ArrayMeta, shape: tuple[int, ...],
           then: Optional[Callable[[ArrayMeta], None]] = None) -> ArrayMeta:
    """Give instance ``m`` (array ``name`` of dataset ``ds_name``) the shape ``shape`` in ``t``.

    ``then(new_meta)`` runs afterwards (``append_array``'s write); if it raises, the resize
    is undone and the exception propagates. The caller holds the store's write lock.
    """
    check_shape(name, m, shape)
    if shape == m.shape:
        if then is not None:
            then(m)
        return m
    nm = ArrayMeta(m.aid, m.dtype, m.dims, shape, m.chunk, m.fill, None)
    check_chunk_size(name, nm)
    undo = _Undo(t, ds_name, name, m)
    try:
        nm = _apply(t, ds_name, name, m, nm, undo)
        if then is not None:
            then(nm)
    except BaseException:
        undo()
        raise
    return nm


def _apply(t: "Transaction", ds_name: str, name: str, m: ArrayMeta, nm: ArrayMeta, undo: _Undo) -> ArrayMeta:
    S, S2 = m.shape, nm.shape
    kc, kc2 = m.layout.kchunk_t, nm.layout.kchunk_t
    g, g2 = grid(S, kc), grid(S2, kc2)
    grow_only = all(b >= a for a, b in zip(S, S2))
    relayout = kc != kc2
    same_ids = not relayout and g[1:] == g2[1:]
    idx = t.index(name)
    rows = idx.rows_of(m.aid)
    stored = idx.chunks["cid"][rows]
    if grow_only and same_ids:  # the common append: ids stay, nothing is rewritten (older stores aside)
        if m.stats is not None:
            nm.stats = {**m.stats, "null_count": m.stats["null_count"] + nm.row_count - m.row_count}
        if m.fill is None and stored.size and not m.layout.empty:
            _mask_legacy_edges(t, name, m, nm, idx, rows, kc, g)
        t.edit_dataset(ds_name).arrays[name] = nm
        t.dirty[nm.aid] = (ds_name, name)
        return nm
    pend = _pending_of(t, name, m, g)
    rekey = (stored.size > 0 or bool(pend)) and not (grow_only and same_ids)
    if m.stats is not None and grow_only:
        nm.stats = {**m.stats, "null_count": m.stats["null_count"] + nm.row_count - m.row_count}
    if rekey:
        nm.aid = undo.new_aid = t.working().new_id()
    cids = np.union1d(stored, np.fromiter(pend, np.int64, len(pend))) if (stored.size or pend) else np.empty(0, np.int64)
    if cids.size and not m.layout.empty:
        coords = np.stack(np.unravel_index(cids, g), 1).astype(np.int64)  # (n, ndim) chunk coordinates
        kca, Sa, S2a = np.asarray(kc, np.int64), np.asarray(S, np.int64), np.asarray(S2, np.int64)
        origin = coords * kca
        old_end = np.minimum(origin + kca, Sa)  # where each chunk's old valid cells end
        alive = (origin < S2a).all(1)
        redo = np.zeros(cids.size, bool) | relayout
        redo |= (old_end > S2a).any(1)  # cut by a shrink
        if m.fill is None and not relayout:  # padding that becomes valid must read as unwritten: a mask
            needs = (((old_end - origin) < kca) & (S2a > Sa)[None, :]).any(1)
            if needs.any():
                redo |= needs & ~_masked(idx, rows, cids, pend)
        redo &= alive
        new_cids = np.ravel_multi_index(tuple(np.minimum(coords, np.asarray(g2) - 1).T), g2) if alive.any() else cids
        new_cids = np.where(alive, new_cids, -1)
        _rewrite(t, name, m, nm, cids[redo], new_cids[redo])
        if rekey:
            keep = alive & ~redo
            old_to_new = dict(zip(cids[keep].tolist(), new_cids[keep].tolist()))
            _rekey_stored(t, name, idx, rows, nm.aid, old_to_new)
            moved = {(nm.aid, old_to_new[c]): _clone(p) for c, p in pend.items() if c in old_to_new}
            if moved:
                t.pending.put(name, moved)
    ds = t.edit_dataset(ds_name)
    ds.arrays[name] = nm
    if rekey:
        t.dirty.pop(m.aid, None)
        t.dead.add(m.aid)
    t.dirty[nm.aid] = (ds_name, name)
    return nm


def _mask_legacy_edges(t: "Transaction", name: str, m: ArrayMeta, nm: ArrayMeta, idx: ChunkIndex, rows: slice,
                       kc: tuple[int, ...], g: tuple[int, ...]) -> None:
    """Give a mask to stored edge chunks written without one (older stores) whose padding becomes valid.

    Pending chunks never need it: this version writes every edge chunk of a fill-less array
    with its mask.
    """
    axes = [d for d, (a, b) in enumerate(zip(m.shape, nm.shape)) if b > a and a % kc[d]]
    if not axes:
        return
    cids = idx.chunks["cid"][rows]
    legacy = ~idx.chunks["wmask"][rows].astype(bool)
    coords = np.unravel_index(cids, g)
    edge = np.zeros(cids.size, bool)
    for d in axes:
        edge |= coords[d] == g[d] - 1
    sel = cids[edge & legacy]
    sel = sel[[t.pending.get(name, (m.aid, c)) is None for c in sel.tolist()]] if sel.size else sel
    _rewrite(t, name, m, nm, sel, sel)


def _pending_of(t: "Transaction", name: str, m: ArrayMeta, g: tuple[int, ...]) -> dict[int, Pending]:
    """``{cid: entry}`` of the pending chunks of instance ``m``."""
    if not t.pending.has(name) or m.layout.empty:
        return {}
    total = math.prod(g)
    if total <= 4096:  # look the grid up rather than scan every pending chunk of the name
        cids = np.arange(total, dtype=np.int64)
        return {int(cids[j]): p for j, p in t.pending.lookup(name, np.full(total, m.aid, np.int64), cids)}
    return {c: p for c in t.pending.cids_of(name, m.aid) if (p := t.pending.get(name, (m.aid, c))) is not None}


def _masked(idx: ChunkIndex, rows: slice, cids: np.ndarray,
            pend: dict[int, Pending]) -> np.ndarray:
    """Whether each chunk ``cids`` of ``m`` (pending first, else stored) carries a written-cells mask."""
    stored_c = idx.chunks["cid"][rows]
    stored_m = idx.chunks["wmask"][rows].astype(bool)
    pos = np.searchsorted(stored_c, cids)
    pos_c = np.minimum(pos, max(stored_c.size - 1, 0))
    out = np.zeros(cids.size, bool)
    if stored_c.size:
        hit = stored_c[pos_c] == cids
        out[hit] = stored_m[pos_c[hit]]
    for j, c in enumerate(cids.tolist()):
        p = pend.get(c)
        if p is not None:
            out[j] = p.masked
    return out


def _clone(p: Pending) -> Pending:
    """A new entry with the same payload (read back into memory if it was spilled)."""
    return Pending(p.payload(), p.compressed, p.nbytes, p.nn, p.mn, p.mx, p.has, p.masked)


def _rewrite(t: "Transaction", name: str, m: ArrayMeta, nm: ArrayMeta, cids: np.ndarray, new_cids: np.ndarray) -> None:
    """Rebuild chunks ``cids`` of ``m`` in the layout of ``nm`` as pending chunks ``new_cids`` of ``nm``."""
    if cids.size == 0:
        return
    kshape = tuple(m.kchunk.tolist())
    kshape2 = tuple(nm.kchunk.tolist())
    valid_old = K.valid_shapes(m.kshape, m.kchunk, cids)
    valid_new = K.valid_shapes(nm.kshape, nm.kchunk, new_cids)
    entries = {}
    for j, (c, c2) in enumerate(zip(cids.tolist(), new_cids.tolist())):
        arr, mask = load_chunk(t, name, m, c)
        if arr is None:
            continue
        if mask is None:  # every valid cell written (padding never counts, whatever the chunk's age)
            mask = np.zeros(kshape, bool)
            mask[tuple(slice(0, int(v)) for v in valid_old[j])] = True
        keep = tuple(slice(0, min(int(a), int(b), int(v))) for a, b, v in zip(valid_old[j], kshape2, valid_new[j]))
        out = np.full(kshape2, nm.fill_storage, dtype=object if nm.is_string else nm.sdtype)
        out[keep] = arr[keep]
        written = np.zeros(kshape2, bool)
        written[keep] = mask[keep]
        entries[(nm.aid, c2)] = chunk_entry(t.frames.codec, nm, out, None if (nm.fill is not None or written.all())
                                            else written, valid_new[j])
    if entries:
        t.pending.put(name, entries)


def chunk_entry(codec: str, m: ArrayMeta, chunk: np.ndarray, mask: Optional[np.ndarray], valid: np.ndarray) -> Pending:
    """A pending entry of one whole chunk (layout ``m.kchunk``) with its stats, mask appended if any."""
    vsl = tuple(slice(0, int(v)) for v in valid)
    if m.is_string:
        vals = (chunk[vsl] if mask is None else chunk[vsl][mask[vsl]]).ravel()
        nvals = int(vals.size - (np.count_nonzero(vals == m.fill) if m.fill is not None else 0))
        raw = encode_strings(chunk) + (mask_bytes(mask) if mask is not None else b"")
        return Pending(raw, False, len(raw), nvals, 0, 0, nvals > 0, mask is not None)
    flat = np.ascontiguousarray(chunk).reshape(-1)
    nn, mn, mx, has = chunk_stats(m, flat, np.asarray(valid, np.int64).reshape(1, -1),
                                  None if mask is None else mask.reshape(-1).astype(np.uint8))
    body = flat.tobytes() + (mask_bytes(mask) if mask is not None else b"")
    solo = m.chunk_nbytes >= SOLO_FRAME
    payload = codecs.compress(codec, body) if solo else body
    return Pending(payload, solo, len(body), int(nn[0]), int(mn[0]), int(mx[0]), bool(has[0]), mask is not None)


def _rekey_stored(t: "Transaction", name: str, idx: ChunkIndex, rows: slice, new_aid: int,
                  old_to_new: dict[int, int]) -> None:
    """Add rows for ``new_aid`` pointing at the stored frames of the kept chunks (no data is copied).

    The old instance's rows stay until the flush drops them (its id is dead then), so a read
    that took the old metadata a moment before still finds its chunks.
    """
    c = idx.chunks
    sel = np.arange(rows.start, rows.stop)
    sel = sel[np.isin(c["cid"][sel], np.fromiter(old_to_new, np.int64, len(old_to_new)))]
    if sel.size == 0:
        return
    add = {k: c[k][sel] for k in CHUNK_COLUMNS}
    add["aid"] = np.full(sel.size, new_aid, np.int64)
    add["cid"] = np.fromiter((old_to_new[x] for x in c["cid"][sel].tolist()), np.int64, sel.size)
    order = np.argsort(add["cid"], kind="stable")
    cols = {k: np.concatenate([c[k], add[k][order]]) for k, v in CHUNK_COLUMNS.items()}
    a = cols["aid"]
    if a.size > sel.size and a[-sel.size - 1] >= new_aid:  # new ids are the largest so far; keep it a check
        o = np.lexsort((cols["cid"], a))
        cols = {k: v[o] for k, v in cols.items()}
    t.overlays[name] = ChunkIndex(idx.segments, idx.frames, cols, idx.uid)


def shape_after_append(name: str, m: ArrayMeta, data_shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """The shape array ``m`` has once ``data`` (shape ``data_shape``) is appended along ``axis``."""
    nd = len(m.shape)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis of append to {name!r} must be an int, got {type(axis).__name__}: {axis!r}")
    if nd == 0:
        raise ValueError(f"array {name!r} is 0-dimensional: nothing to append along")
    ax = int(axis) + nd if axis < 0 else int(axis)
    if not 0 <= ax < nd:
        raise ValueError(f"axis {axis} of append to {name!r} is out of range for {nd} dimension(s) {list(m.dims)!r}")
    if len(data_shape) != nd:
        raise ValueError(f"data appended to {name!r} has {len(data_shape)} dimension(s), the array has {nd}")
    for d in range(nd):
        if d != ax and data_shape[d] != m.shape[d]:
            raise ValueError(f"data appended to {name!r} along axis {ax} has shape {list(data_shape)}: axis {d} "
                             f"({m.dims[d]!r}) must be {m.shape[d]} as in the array {list(m.shape)}")
    return tuple(s + (data_shape[d] if d == ax else 0) for d, s in enumerate(m.shape))
