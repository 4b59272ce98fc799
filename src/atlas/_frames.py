"""Frames on storage: chunk index footers, coalesced range reads, checksum + decode, the frame cache.

A frame is one compressed block of a segment file (see ``_segments``). Everything here
works on immutable files, so it needs no lock but the one that guards the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from . import _executor, codecs
from ._meta import Physical
from ._segments import ChunkIndex
from .errors import CorruptStoreError
from .storage import Storage

FRAME_TARGET = 64 * 1024  # small chunks are packed into frames of about this raw size
FRAME_CACHE_BYTES = 32 * 1024 * 1024  # decoded packed frames kept for neighbouring small-chunk reads (per process)
INDEX_CACHE_BYTES = 64 * 1024 * 1024  # decoded chunk indexes kept for handles opened again (per process)
COALESCE_GAP = 64 * 1024  # frames of one segment closer than this are fetched in one read
COALESCE_MAX = 2 * 1024 * 1024  # ... as long as the read stays below this size (so decoding can start early)


class RangeReads(NamedTuple):
    """Coalesced reads of some frames of one segment.

    Frame ``sel[j]`` of the request spans ``[off[j], end[j])``; frames ``gs[g]:ge[g]`` (in
    ``sel`` order) are served by the one read ``[rs[g], re[g])``.
    """

    path: str
    sel: np.ndarray
    off: np.ndarray
    end: np.ndarray
    gs: np.ndarray
    ge: np.ndarray
    rs: np.ndarray
    re: np.ndarray

    def split(self) -> list["RangeReads"]:
        """One record per coalesced read (so local reads can overlap with decoding)."""
        one = np.zeros(1, np.int64)
        return [RangeReads(self.path, self.sel[a:b], self.off[a:b], self.end[a:b], one, np.asarray([b - a]),
                           self.rs[g:g + 1], self.re[g:g + 1])
                for g, (a, b) in enumerate(zip(self.gs.tolist(), self.ge.tolist()))]


class _Cache:
    """A byte-bounded FIFO of immutable values, shared by every handle of the process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        hit = self.items.get(key)
        return None if hit is None else hit[0]

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.size = 0

    def put(self, key: Any, value: Any, n: int) -> None:
        with self.lock:
            if key not in self.items:
                self.items[key] = (value, n)
                self.size += n
                while self.size > self.limit and self.items:
                    _, (_, old) = self.items.popitem(last=False)
                    self.size -= old


# Segment files never change once written, so what is decoded from them holds for every
# handle: decoded packed frames (keyed by the index's uid and frame number) and chunk
# indexes (keyed by the store and the footer's location, checksum included).
_FRAMES = _Cache(FRAME_CACHE_BYTES)
_INDEXES = _Cache(INDEX_CACHE_BYTES)


class FrameReader:
    """Reads and decodes frames of one store; small decoded frames go to the process's frame cache."""

    def __init__(self, storage: Storage, codec: str) -> None:
        self.storage = storage
        self.codec = codec

    # ---------------------------------------------------------------- index footers
    def load_index(self, name: str, phys: Physical | None) -> ChunkIndex:
        """The chunk index of array name ``name`` as ``phys`` locates it (one range read).

        Decoded indexes are shared by the handles of this process while their segment file
        is unchanged (same stamp; backends without a cheap stamp always read).
        """
        if phys is None or phys.index is None:
            return ChunkIndex()
        stamp = self.storage.stamp(phys.index.segment)
        if stamp is None:
            return self.read_index(name, phys)
        key = (type(self.storage).__name__, self.storage.location, self.codec, phys.dir, phys.index, stamp)
        idx = _INDEXES.get(key)
        if idx is None:
            idx = self.read_index(name, phys)
            _INDEXES.put(key, idx, idx.nbytes)
        return idx

    def read_index(self, name: str, phys: Physical) -> ChunkIndex:
        """The chunk index as ``phys`` locates it, read and checked now (no cache)."""
        loc = phys.index
        if loc is None:
            return ChunkIndex()
        where = f"{self.storage.location}/{loc.segment}"
        try:
            (buf,) = self.storage.read_ranges(loc.segment, [loc.offset], [loc.offset + loc.length])
        except FileNotFoundError:
            raise self.gone(loc.segment) from None
        if codecs.checksum(buf) != loc.crc:
            raise CorruptStoreError(f"{where}: checksum mismatch in the chunk index of array {name!r}")
        return ChunkIndex.decode(buf, loc.codec or self.codec, loc.raw_length, where, phys.dir, self.codec)

    # ---------------------------------------------------------------- fetching
    def plan(self, idx: ChunkIndex, frames: np.ndarray, max_read: int = COALESCE_MAX) -> list[RangeReads]:
        """Coalesced range reads for ``frames`` (sorted unique ids): one record per segment; a
        read spans at most ``max_read`` bytes unless one frame is larger."""
        seg = idx.frames["seg"][frames]
        off = idx.frames["off"][frames]
        end = off + idx.frames["clen"][frames]
        out = []
        for s in np.unique(seg).tolist():
            sel = np.flatnonzero(seg == s)
            sel = sel[np.argsort(off[sel], kind="stable")]
            o, e = off[sel], end[sel]
            brk = _breaks(o, e, max_read)
            gs = np.concatenate([[0], brk])
            ge = np.concatenate([brk, [len(sel)]])
            out.append(RangeReads(idx.segments[s], sel, o, e, gs, ge, o[gs], np.maximum.reduceat(e, gs)))
        return out

    def run(self, rr: RangeReads, out: list[Any]) -> None:
        """Perform the reads of ``rr``; frame ``sel[j]``'s bytes go to ``out[sel[j]]``."""
        try:
            bufs = self.storage.read_ranges(rr.path, rr.rs.tolist(), rr.re.tolist())
        except FileNotFoundError:
            raise self.gone(rr.path) from None
        for g, buf in enumerate(bufs):
            mv = memoryview(buf)
            base = int(rr.rs[g])
            for j in range(int(rr.gs[g]), int(rr.ge[g])):
                out[int(rr.sel[j])] = mv[int(rr.off[j]) - base:int(rr.end[j]) - base]

    def fetch(self, idx: ChunkIndex, frames: np.ndarray) -> list[Any]:
        """Compressed bytes of ``frames`` (sorted unique ids), with coalesced range reads."""
        out: list[Any] = [None] * len(frames)
        plan = self.plan(idx, frames)
        conc = getattr(self.storage, "io_concurrency", 1)
        if len(plan) > 1 and conc > 1:
            list(_executor.io_pool(conc).map(lambda rr: self.run(rr, out), plan))
        else:
            for rr in plan:
                self.run(rr, out)
        return out

    def gone(self, path: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.storage.location}/{path} is gone: another handle compacted the store; reopen it")

    # ---------------------------------------------------------------- decoding
    def decode(self, idx: ChunkIndex, f: int, data: Any) -> Any:
        """Frame ``f`` decompressed, its checksum and decoded size checked (``CorruptStoreError``)."""
        if codecs.frame_checksum(self.codec, data) != int(idx.frames["crc"][f]):
            seg = idx.segments[int(idx.frames["seg"][f])]
            raise CorruptStoreError(
                f"{self.storage.location}/{seg}: checksum mismatch in frame at byte {int(idx.frames['off'][f])}"
            )
        try:
            return codecs.decompress(self.codec, data, int(idx.frames["rlen"][f]))
        except Exception as e:  # noqa: BLE001
            seg = idx.segments[int(idx.frames["seg"][f])]
            raise CorruptStoreError(f"{self.storage.location}/{seg}: frame cannot be decompressed: {e}") from e

    def short_chunk(self, idx: ChunkIndex, f: int, what: str) -> CorruptStoreError:
        seg = idx.segments[int(idx.frames["seg"][f])]
        return CorruptStoreError(f"{self.storage.location}/{seg}: the index gives a chunk of {what} fewer "
                                 "bytes than its shape needs (damaged index)")

    # ---------------------------------------------------------------- cache
    @property
    def caching(self) -> bool:
        return bool(_FRAMES.items)

    def cached(self, idx: ChunkIndex, f: int) -> Any:
        """A decoded packed frame from the cache, or None."""
        return _FRAMES.get((idx.uid, f))

    def remember(self, idx: ChunkIndex, f: int, raw: Any) -> None:
        """Keep a decoded frame that packs small chunks (frames are immutable: never stale); FIFO eviction."""
        n = len(raw)
        if n <= FRAME_TARGET:
            _FRAMES.put((idx.uid, f), raw, n)

    def chunk_bytes(self, idx: ChunkIndex, f: int) -> Any:
        """Frame ``f`` decoded, through the cache."""
        raw = _FRAMES.get((idx.uid, f))
        if raw is None:
            raw = self.decode(idx, f, self.fetch(idx, np.asarray([f]))[0])
            if int(idx.frames["rlen"][f]) <= FRAME_TARGET:
                self.remember(idx, f, raw)
        return raw


def _breaks(o: np.ndarray, e: np.ndarray, max_read: int = COALESCE_MAX) -> np.ndarray:
    """Where to split a run of frames (sorted by offset) into separate range reads."""
    if len(o) < 2:
        return np.zeros(0, np.int64)
    gap = o[1:] - np.maximum.accumulate(e)[:-1] > COALESCE_GAP
    out = []
    start = int(o[0])
    for j in range(1, len(o)):  # per frame, not per element: frames are few compared with cells
        if gap[j - 1] or int(e[j]) - start > max_read:
            out.append(j)
            start = int(o[j])
    return np.asarray(out, np.int64)
