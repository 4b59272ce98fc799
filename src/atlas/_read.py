"""Reads: a box of one array name out of many instances, into one preallocated output.

``read`` plans with one kernel call per chunk layout (which chunks, which piece of each
goes where), takes the pending chunks it needs at one moment, fetches the stored frames
with coalesced range reads, and decodes + gathers them on the shared pool (GIL released in
the kernels). What it reads is a :class:`View`: one committed snapshot's chunk indexes plus
one transaction's pending chunks, both immutable for the duration of the call.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from . import _executor, codecs
from ._chunks import decode_strings, strings_nbytes
from ._frames import FrameReader
from ._lazy import K
from ._meta import ArrayMeta
from ._pending import Pending, PendingStore
from ._segments import ChunkIndex
from .errors import CorruptStoreError

PARALLEL_MIN_BYTES = 256 * 1024  # below this much decoded data a request stays on the caller's thread
PART_MAX = 8  # a read of at most this many instances looks them up in ChunkIndex.part

_WORD: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}


class View(Protocol):
    """What a read sees: the chunk indexes of one snapshot and the pending chunks of one transaction."""

    frames: FrameReader
    pending: PendingStore

    def index(self, name: str) -> ChunkIndex: ...


def pad(t: Sequence[int]) -> np.ndarray:
    """A box start as kernels take it: 0-D arrays are treated as shape (1,)."""
    return np.asarray(t, np.int64) if len(t) else np.zeros(1, np.int64)


def pad_count(t: Sequence[int]) -> np.ndarray:
    return np.asarray(tuple(t), np.int64) if len(t) else np.ones(1, np.int64)


def pending_bytes(codec: str, p: Pending) -> Any:
    """The decoded chunk bytes of a pending entry."""
    data = p.payload()
    return codecs.decompress(codec, data, p.nbytes) if p.compressed else data


class Work:
    """The decode-and-copy units of one or more reads, run together on the pool.

    Planning a read (which chunks, fill, pending chunks, fetches from object stores) happens
    on the caller's thread; what costs CPU (reading local ranges, decompressing, copying into
    the output) becomes units here. A batch plans all its reads into one ``Work`` and runs
    their units side by side, so one big array and many small ones alike keep every core
    busy; ``held`` counts the fetched bytes the units keep alive (a batch runs its units
    before that grows large).
    """

    __slots__ = ("units", "nbytes", "held")

    def __init__(self) -> None:
        self.units: list[Callable[[], None]] = []
        self.nbytes = 0  # decoded bytes the units produce
        self.held = 0  # fetched bytes the units hold

    def add(self, fn: Callable[[], None], nbytes: int, held: int = 0) -> None:
        self.units.append(fn)
        self.nbytes += nbytes
        self.held += held

    def run(self) -> None:
        """Run every unit (on the pool when there is enough to decode); the first error propagates."""
        units, big = self.units, self.nbytes >= PARALLEL_MIN_BYTES
        self.units, self.nbytes, self.held = [], 0, 0
        if units:
            _executor.run(_call, units, parallel=big)


def _call(fn: Callable[[], None]) -> None:
    fn()


def read(v: View, name: str, metas: Sequence[ArrayMeta], start: Sequence[int], count: Sequence[int],
         out: np.ndarray | None = None, work: Work | None = None) -> np.ndarray:
    """Read the same box of array ``name`` from every instance in ``metas`` into one ``(N, *count)`` array.

    Instances may differ in shape and chunking (the box must fit each) but share a dtype.
    Returns storage-typed data (int64 for timestamps), in ``out`` when given (C-contiguous,
    shape ``(N, *count)``, the storage dtype). With ``work``, the decoding is left in it
    and the result is complete only once the caller ran ``work`` (the view's files must
    stay pinned until then).
    """
    n = len(metas)
    m0 = metas[0]
    if out is None and n == 1 and m0.single_chunk and not m0.is_string:
        return _read_single_chunk(v, name, m0, start, count)[None]
    own = work is None
    w = Work() if work is None else work
    kstart, kcount = pad(start), pad_count(count)
    kshape = (n,) + tuple(kcount.tolist())
    out = np.empty(kshape, m0.sdtype) if out is None else out.reshape(kshape)
    idx = v.index(name)
    if n <= PART_MAX:  # the rows of these instances alone (a fresh index is not widened whole for them)
        idx = idx.part([m.aid for m in metas])
    codec = v.frames.codec
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, m in enumerate(metas):
        groups.setdefault(m.layout_key(), []).append(i)
    for slots in groups.values():
        m = metas[slots[0]]
        ids, src, dst, box = K.plan_box(m.kshape, m.kchunk, kstart, kcount)
        c = ids.shape[0]
        if c == 0:
            continue
        g = len(slots)
        aids = np.fromiter((metas[s].aid for s in slots), np.int64, g)
        qa = np.repeat(aids, c)
        qc = np.tile(ids, g)
        pslot = np.repeat(np.asarray(slots, np.int64), c)
        pc = np.tile(np.arange(c, dtype=np.int64), g)
        pos = K.lookup(idx.chunks["aid"], idx.chunks["cid"], qa, qc)
        hits = v.pending.lookup(name, qa, qc)
        for j, _ in hits:
            pos[j] = -2
        miss = pos == -1
        if miss.any():
            for s in np.unique(pslot[miss]).tolist():
                out[s] = metas[s].fill_storage
        present = np.flatnonzero(pos >= 0)
        if present.size:
            _gather(v.frames, idx, m, pos[present], pslot[present], pc[present], src, dst, box, out, kcount, w)
        for j, p in hits:
            sel = np.asarray([pc[j]])
            _copy_from_chunk(m, pending_bytes(codec, p), np.zeros(1, np.int64), sel, np.asarray([pslot[j]]),
                             src, dst, box, out, kcount)
    if own:
        w.run()
    return out.reshape((n,) + tuple(count))


def _read_single_chunk(v: View, name: str, m: ArrayMeta, start: Sequence[int], count: Sequence[int]) -> np.ndarray:
    """Fast path: a box of an array stored as one chunk (numpy slices the decoded chunk)."""
    p = v.pending.get(name, (m.aid, 0))
    if p is not None:
        raw, o = pending_bytes(v.frames.codec, p), 0
    else:
        idx = v.index(name)
        loc = idx.first_chunk(m.aid)
        if loc is None:
            return np.full(tuple(count), m.fill_storage, m.sdtype)
        f, o, nb = loc
        if nb < m.chunk_nbytes:
            raise v.frames.short_chunk(idx, f, f"array {name!r}")
        raw = v.frames.chunk_bytes(idx, f)
    chunk = np.frombuffer(raw, m.sdtype, m.chunk_elems, o)
    if not m.shape:
        return chunk.reshape(()).copy()
    chunk = chunk.reshape(m.shape)
    if tuple(count) != m.shape:
        chunk = chunk[tuple(slice(a, a + b) for a, b in zip(start, count))]
    return chunk.copy()


def _copy_from_chunk(m: ArrayMeta, raw: Any, foff: np.ndarray, pcs: np.ndarray, slots: np.ndarray,
                     src: np.ndarray, dst: np.ndarray, box: np.ndarray, out: np.ndarray, kcount: np.ndarray) -> None:
    """Copy pieces (chunk-local boxes) out of one decoded chunk buffer or frame into ``out``."""
    if m.is_string:
        mv = memoryview(raw)
        for k in range(len(pcs)):
            j = int(pcs[k])
            chunk = decode_strings(mv[int(foff[k]):], tuple(m.kchunk.tolist()), f"array {m.aid}")
            ss = tuple(slice(a, a + b) for a, b in zip(src[j], box[j]))
            ds = tuple(slice(a, a + b) for a, b in zip(dst[j], box[j]))
            out[int(slots[k])][ds] = chunk[ss]
        return
    npc = len(pcs)
    _copy_pieces(m, raw, foff // m.sdtype.itemsize, np.tile(m.kchunk, (npc, 1)), src[pcs],
                 slots.astype(np.int64, copy=False) * int(np.prod(kcount)), dst[pcs], box[pcs], out, kcount)


def _copy_pieces(m: ArrayMeta, raw: Any, soff: np.ndarray, sshape: np.ndarray, sstart: np.ndarray, doff: np.ndarray,
                 dstart: np.ndarray, pbox: np.ndarray, out: np.ndarray, kcount: np.ndarray) -> None:
    """One kernel call: pieces of a decoded frame (offsets in cells) into ``out``, whole cells at a time."""
    isz = m.sdtype.itemsize
    word = _WORD[isz]  # chunks start at multiples of 8 bytes in frames
    K.copy_boxes(np.frombuffer(raw, word, len(raw) // isz), soff, sshape, sstart, out.reshape(-1).view(word),
                 doff, kcount, dstart, pbox, 1)


UNIT_MIN, UNIT_MAX = 128 * 1024, 4 * 1024 * 1024  # decoded bytes per unit of work


def _unit_bytes(total: int) -> int:
    """Decoded bytes per unit: a few units per thread, neither tiny (pool overhead) nor huge (balance);
    the floor never exceeds the size that sends a request to the pool, so such a request splits."""
    return min(UNIT_MAX, max(min(UNIT_MIN, PARALLEL_MIN_BYTES), total // (4 * _executor.num_threads())))


def _gather(fr: FrameReader, idx: ChunkIndex, m: ArrayMeta, pos: np.ndarray, pslot: np.ndarray, pc: np.ndarray,
            src: np.ndarray, dst: np.ndarray, box: np.ndarray, out: np.ndarray, kcount: np.ndarray, w: Work) -> None:
    """Plan the fetch, decode and copy of the stored chunks at index rows ``pos`` into ``out`` as units of ``w``."""
    frame = idx.chunks["frame"][pos]
    order = np.argsort(frame, kind="stable")
    frame, pos, pslot, pc = frame[order], pos[order], pslot[order], pc[order]
    uf, first = np.unique(frame, return_index=True)
    bounds = np.append(first, len(frame)).tolist()
    nf = len(uf)
    blobs: list[Any] = [fr.cached(idx, f) for f in uf.tolist()] if fr.caching else [None] * nf
    decoded = [b is not None for b in blobs]
    todo = np.asarray([k for k in range(nf) if not decoded[k]], np.int64)
    foff = idx.chunks["foff"][pos]
    if not m.is_string:  # the copy kernel reads a whole chunk at foff: it must be inside the frame
        short = idx.chunks["nbytes"][pos] < m.chunk_nbytes
        if short.any():
            raise fr.short_chunk(idx, int(frame[np.argmax(short)]), f"array instance {m.aid}")
    rlen = idx.frames["rlen"][uf]
    if not m.is_string:  # every piece's kernel arguments, computed once for the whole request
        n = len(pc)
        soff = foff // m.sdtype.itemsize
        sshape = np.tile(m.kchunk, (n, 1))
        sstart, dstart, pbox = src[pc], dst[pc], box[pc]
        doff = pslot * int(np.prod(kcount))

    def finish(k: int) -> None:
        raw = blobs[k]
        if not decoded[k]:
            raw = fr.decode(idx, int(uf[k]), raw)
            blobs[k] = None  # the compressed bytes are not needed any more
            fr.remember(idx, int(uf[k]), raw)  # (kept if it packs small chunks)
        a, b = bounds[k], bounds[k + 1]
        if m.is_string:
            _copy_from_chunk(m, raw, foff[a:b], pc[a:b], pslot[a:b], src, dst, box, out, kcount)
        else:
            _copy_pieces(m, raw, soff[a:b], sshape[a:b], sstart[a:b], doff[a:b], dstart[a:b], pbox[a:b], out, kcount)

    def finish_all(ks: list[int]) -> Callable[[], None]:
        def unit() -> None:
            for k in ks:
                finish(k)
        return unit

    per = _unit_bytes(int(rlen.sum()))
    if any(decoded):
        done = [k for k in range(nf) if decoded[k]]
        w.add(finish_all(done), int(rlen[done].sum()))
    if not todo.size:
        return
    units = _regions(todo, bounds, pslot, dst[pc], kcount, rlen, per)
    if getattr(fr.storage, "io_concurrency", 1) <= 1:
        # local disk: each unit reads its own frames (coalesced ranges) and decodes as it goes,
        # so reads overlap with decompression and nothing is held early
        for ks in units:
            # the reads are planned here, so a unit spends its time in code that releases the GIL
            reads = fr.plan(idx, uf[ks])
            kl = ks.tolist()

            def unit(kl: list[int] = kl, reads: list[Any] = reads) -> None:
                got: list[Any] = [None] * len(kl)
                for rr in reads:
                    fr.run([rr], got)
                    for i, _, _ in rr.parts:
                        blobs[kl[i]] = got[i]
                        got[i] = None
                        finish(kl[i])
            w.add(unit, int(rlen[ks].sum()))
        return
    # object stores: fetched now, concurrently
    held = 0
    for k, b in zip(todo.tolist(), fr.fetch(idx, uf[todo])):
        blobs[k] = b
        held += len(b)
    for ks in units:
        w.add(finish_all(ks.tolist()), int(rlen[ks].sum()))
    w.held += held


def _regions(todo: np.ndarray, bounds: list[int], pslot: np.ndarray, pdst: np.ndarray, kcount: np.ndarray,
             rlen: np.ndarray, per: int) -> list[np.ndarray]:
    """Frames ``todo`` (pieces ``bounds[k]:bounds[k + 1]`` of frame ``k``) cut into units of about
    ``per`` decoded bytes, each filling one region of the output.

    Frames are ordered by where their first piece lands (C order over slot, then the box's
    axes) and a unit never ends inside a region: a slot, or for fewer slots than units, a
    slab along the leading axes. Two threads copying chunks that interleave in memory (the
    halves of every row of a grid) would fault and write the same pages; regions keep each
    thread on pages of its own.
    """
    starts = np.asarray(bounds[:-1], np.int64)[todo]
    corner = pdst[starts]
    strides = np.cumprod(np.concatenate([[1], kcount[:0:-1]]))[::-1]  # C-order strides of the box, in cells
    pos = pslot[starts] * int(np.prod(kcount)) + corner @ strides  # flat output position of each frame
    order = np.argsort(pos, kind="stable")
    want = min(len(todo), 2 * _executor.num_threads())
    pos = pos[order]
    for level in range(len(kcount) + 1):  # region = the slot and the first ``level`` coordinates of the corner
        key = pos // (int(strides[level - 1]) if level else int(np.prod(kcount)))  # each frame's, in output order
        if level == len(kcount) or len(np.unique(key)) >= want:
            break
    new_region = np.ones(len(order), bool)
    new_region[1:] = key[1:] != key[:-1]
    out: list[np.ndarray] = []
    acc, first = 0, 0
    sizes = rlen[todo[order]].tolist()
    for j in range(len(order)):
        if acc >= per and new_region[j]:
            out.append(np.sort(todo[order[first:j]]))
            acc, first = 0, j
        acc += sizes[j]
    out.append(np.sort(todo[order[first:]]))
    return out


def load_chunk(v: View, name: str, m: ArrayMeta, cid: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One whole chunk (padded shape, storage dtype, writable) and its written-cells mask.

    Returns ``(None, None)`` if the chunk was never written; the mask is None when every
    cell of the chunk was written.
    """
    shape = tuple(m.kchunk.tolist())
    fr = v.frames
    p = v.pending.get(name, (m.aid, cid))
    if p is not None:
        raw: Any = pending_bytes(fr.codec, p)
        o, nbytes, masked = 0, p.nbytes, p.masked
    else:
        idx = v.index(name).part([m.aid])
        pos = int(K.lookup(idx.chunks["aid"], idx.chunks["cid"], np.asarray([m.aid]), np.asarray([cid]))[0])
        if pos < 0:
            return None, None
        f = int(idx.chunks["frame"][pos])
        raw = fr.chunk_bytes(idx, f)  # through the frame cache: appends to many datasets share frames
        o, nbytes, masked = int(idx.chunks["foff"][pos]), int(idx.chunks["nbytes"][pos]), bool(idx.chunks["wmask"][pos])
    mv = memoryview(raw)[o:o + nbytes]
    try:
        if m.is_string:
            arr = decode_strings(mv, shape, f"array {name!r}")
            dlen = strings_nbytes(mv)
        else:
            arr = np.frombuffer(mv, m.sdtype, m.chunk_elems).reshape(shape).copy()
            dlen = m.chunk_nbytes
        mask = None
        if masked:
            bits = np.frombuffer(mv[dlen:], np.uint8)
            if bits.size * 8 < m.chunk_elems:
                raise ValueError("written-cells mask is short")
            mask = np.unpackbits(bits, count=m.chunk_elems).astype(bool).reshape(shape)
    except ValueError as e:
        raise CorruptStoreError(f"{fr.storage.location}: chunk {cid} of array {name!r} cannot be decoded: {e}") from e
    return arr, mask
