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

FRAME_TARGET = 16 * 1024
"""A flush packs chunks smaller than ``_write.SOLO_FRAME`` into frames of about this raw size.
A frame decodes whole, so this is what reading one small chunk decompresses: 16 KB takes
~15 us with zstd where 64 KB took ~75 (four times the bytes, five times the time). zstd 3
compresses noisy float and timestamp data as well or better in 16 KB frames (level 3 tunes
itself to small inputs); only highly compressible data loses (ratio 338 vs 531 for
quantized floats: bytes that are tiny either way)."""
PACKED_MAX = 64 * 1024  # decoded frames up to this size are packed ones (stores before 16 KB frames: 64 KB)
FRAME_CACHE_BYTES = 32 * 1024 * 1024  # decoded packed frames kept for neighbouring small-chunk reads (per process)
INDEX_CACHE_BYTES = 64 * 1024 * 1024  # decoded chunk indexes kept for handles opened again (per process)
COALESCE_GAP = 64 * 1024  # frames of one segment closer than this are fetched in one read
COALESCE_MAX = 2 * 1024 * 1024  # ... as long as the read stays below this size (so decoding can start early)


class RangeRead(NamedTuple):
    """One read of bytes ``[start, end)`` of segment ``path``, serving the frames ``parts``:
    ``(position in the request, frame start, frame end)`` each."""

    path: str
    start: int
    end: int
    parts: list[tuple[int, int, int]]


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
            return self.read_index(name, phys, lazy=True)
        key = (type(self.storage).__name__, self.storage.location, self.codec, phys.dir, phys.index, stamp)
        idx = _INDEXES.get(key)
        if idx is None:
            idx = self.read_index(name, phys, lazy=True)
            _INDEXES.put(key, idx, idx.nbytes)
        return idx

    def read_index(self, name: str, phys: Physical, lazy: bool = False) -> ChunkIndex:
        """The chunk index as ``phys`` locates it, read now (no cache) and checked now (with
        ``lazy``, its chunk rows are checked on first use: see ``ChunkIndex``)."""
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
        codec = loc.codec or self.codec
        if codec == "lz4" and loc.raw_length > 256 * loc.length + 64:  # before allocating what it claims
            raise CorruptStoreError(f"{where}: the chunk index of array {name!r} claims {loc.raw_length} bytes "
                                    f"from {loc.length}, more than lz4 decodes to")
        return ChunkIndex.decode(buf, codec, loc.raw_length, where, phys.dir, self.codec, lazy)

    # ---------------------------------------------------------------- fetching
    def plan(self, idx: ChunkIndex, frames: np.ndarray, max_read: int = COALESCE_MAX) -> list[RangeRead]:
        """Coalesced range reads for ``frames``: frames of one segment less than ``COALESCE_GAP``
        apart share a read spanning at most ``max_read`` bytes (unless one frame is larger).

        Plain Python over the requested frames (about 3 us for the few frames of one unit of
        work, where the NumPy version took 20): a read plans one list per unit.
        """
        fc = idx.frames
        off = fc["off"][frames]
        end = (off + fc["clen"][frames]).tolist()
        seg, off = fc["seg"][frames].tolist(), off.tolist()
        reads: list[list[Any]] = []
        cur: list[Any] = [-1, 0, 0, None]
        for j in sorted(range(len(seg)), key=lambda j: (seg[j], off[j])):
            s, o, e = seg[j], off[j], end[j]
            if s == cur[0] and o - cur[2] <= COALESCE_GAP and max(cur[2], e) - cur[1] <= max_read:
                cur[2] = max(cur[2], e)
                cur[3].append((j, o, e))
            else:
                cur = [s, o, e, [(j, o, e)]]
                reads.append(cur)
        return [RangeRead(idx.segments[s], a, b, parts) for s, a, b, parts in reads]

    def run(self, reads: list[RangeRead], out: list[Any]) -> None:
        """Perform ``reads`` (all of one segment: one storage call); frame ``j``'s bytes go to ``out[j]``."""
        path = reads[0].path
        try:
            bufs = self.storage.read_ranges(path, [r.start for r in reads], [r.end for r in reads])
        except FileNotFoundError:
            raise self.gone(path) from None
        for r, buf in zip(reads, bufs):
            mv = memoryview(buf)
            for j, o, e in r.parts:
                out[j] = mv[o - r.start:e - r.start]

    def fetch(self, idx: ChunkIndex, frames: np.ndarray) -> list[Any]:
        """Compressed bytes of ``frames``, with coalesced range reads (one storage call per segment)."""
        out: list[Any] = [None] * len(frames)
        per_path: dict[str, list[RangeRead]] = {}
        for r in self.plan(idx, frames):
            per_path.setdefault(r.path, []).append(r)
        conc = getattr(self.storage, "io_concurrency", 1)
        if len(per_path) > 1 and conc > 1:
            list(_executor.io_pool(conc).map(lambda reads: self.run(reads, out), per_path.values()))
        else:
            for reads in per_path.values():
                self.run(reads, out)
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
        if n <= PACKED_MAX:
            _FRAMES.put((idx.uid, f), raw, n)

    def chunk_bytes(self, idx: ChunkIndex, f: int) -> Any:
        """Frame ``f`` decoded, through the cache."""
        raw = _FRAMES.get((idx.uid, f))
        if raw is None:
            raw = self.decode(idx, f, self.fetch(idx, np.asarray([f]))[0])
            self.remember(idx, f, raw)
        return raw
