"""The physical layout of one array name: segments, frames and the columnar chunk index.

Every flush writes one new immutable *segment* file per touched array name::

    [frame 0][frame 1]...[frame k-1][index footer]

A *frame* is one compressed block holding one or more whole chunks back to back (small
chunks are packed together so a read of many small chunks decompresses a few frames; a
large chunk is a frame of its own). The *index footer* is the complete index of the array
name as of that flush (every live chunk in every segment), stored as NumPy columns, so
opening a store costs one read per array name, made lazily on first use.

Chunk keys are ``(aid, cid)``: ``aid`` is the store-unique id of one array instance (one
``define_array`` call in one dataset), ``cid`` the row-major chunk id in its grid. A
re-created array gets a new ``aid`` and so never sees the chunks of a deleted one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Optional

import msgpack
import numpy as np

from . import codecs
from .errors import CorruptStoreError

FRAME_COLUMNS = {"seg": np.int64, "off": np.int64, "clen": np.int64, "rlen": np.int64, "crc": np.uint32}
CHUNK_COLUMNS = {
    "aid": np.int64,
    "cid": np.int64,
    "frame": np.int64,
    "foff": np.int64,
    "nbytes": np.int64,
    "nn": np.int64,
    "mn": np.int64,
    "mx": np.int64,
    "has": np.uint8,
    "wmask": np.uint8,
}
INDEX_CODEC = "lz4"
"""Codec of every index footer written (whatever the store's codec): a fresh handle decodes the
whole footer of each array name it reads, and lz4 decodes these columns about 4x faster than
zstd (27 KB in 6 against 27 us) for about 40% more bytes. Each footer's location says its codec."""
LZ4_MAX_INPUT = 0x7E000000  # the most an lz4 block compresses (LZ4_MAX_INPUT_SIZE)
INDEX_VERSION = 2  # 1: every column at its full width; 2: each column at the narrowest width holding its values
_WIDTHS = {np.dtype(t).str for t in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8")}
FIRST_DICT_AFTER = 32  # one-chunk lookups by binary search before the per-instance dict is built
_uids = itertools.count(1)


@dataclass
class ChunkIndex:
    """Columnar index of every live chunk of one array name, sorted by ``(aid, cid)``."""

    segments: list[str] = field(default_factory=list)
    frames: dict[str, np.ndarray] = field(default_factory=lambda: {k: np.empty(0, t) for k, t in FRAME_COLUMNS.items()})
    chunks: dict[str, np.ndarray] = field(default_factory=lambda: {k: np.empty(0, t) for k, t in CHUNK_COLUMNS.items()})
    #: identifies the frame numbering: merged() keeps it (old frames keep their numbers)
    uid: int = field(default_factory=lambda: next(_uids))
    #: ``{aid: (frame, foff)}`` of each instance's first chunk, built on first use (one-chunk reads)
    _first: Optional[dict[int, tuple[int, int, int]]] = field(default=None, init=False, repr=False, compare=False)
    _lookups: int = field(default=0, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.chunks["aid"].shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        return sum(v.nbytes for v in self.chunks.values()) + sum(v.nbytes for v in self.frames.values())

    def first_chunk(self, aid: int) -> Optional[tuple[int, int, int]]:
        """``(frame, offset in the frame, bytes)`` of the lowest chunk id of instance ``aid``, or None.

        The first lookups binary-search the columns (a fresh handle reading one dataset pays
        no more); after ``FIRST_DICT_AFTER`` of them a dict is built once, so reading thousands
        of one-chunk arrays one by one costs a dict lookup each.
        """
        first = self._first
        if first is not None:
            return first.get(aid)
        c = self.chunks
        self._lookups += 1
        if self._lookups <= FIRST_DICT_AFTER:
            a = c["aid"]
            i = int(np.searchsorted(a, aid))
            if i == a.shape[0] or int(a[i]) != aid:
                return None
            return int(c["frame"][i]), int(c["foff"][i]), int(c["nbytes"][i])
        a = c["aid"]
        rows = np.flatnonzero(np.concatenate(([True], a[1:] != a[:-1]))) if a.shape[0] else np.zeros(0, np.int64)
        first = dict(zip(a[rows].tolist(), zip(c["frame"][rows].tolist(), c["foff"][rows].tolist(), c["nbytes"][rows].tolist())))
        self._first = first
        return first.get(aid)

    def rows_of(self, aid: int) -> slice:
        """Row slice of one array instance (rows are sorted by aid first)."""
        a = self.chunks["aid"]
        return slice(int(np.searchsorted(a, aid, "left")), int(np.searchsorted(a, aid, "right")))

    def encode(self, codec: str) -> tuple[bytes, int]:
        """The index footer: msgpack of the columns, each at the narrowest integer width that
        holds its values (decoding costs in proportion to the decoded size: most columns are
        small ids, offsets and sizes, so this is about a third of full width), compressed."""
        frames = {k: _narrow(np.asarray(v, FRAME_COLUMNS[k])) for k, v in self.frames.items()}
        chunks = {k: _narrow(np.asarray(v, CHUNK_COLUMNS[k])) for k, v in self.chunks.items()}
        obj = {
            "v": INDEX_VERSION,
            "segments": self.segments,
            "frames": {k: b for k, (_, b) in frames.items()},
            "chunks": {k: b for k, (_, b) in chunks.items()},
            "widths": {**{"f." + k: t for k, (t, _) in frames.items()}, **{"c." + k: t for k, (t, _) in chunks.items()}},
        }
        raw = msgpack.packb(obj, use_bin_type=True)
        if codec == "lz4" and len(raw) > LZ4_MAX_INPUT:
            raise ValueError(f"an index of {len(raw)} bytes is more than lz4 compresses")
        return codecs.compress(codec, raw), len(raw)

    def encode_footer(self, store_codec: str) -> tuple[bytes, int, str]:
        """The footer as a flush writes it: ``(bytes, decoded length, codec)``, in
        ``INDEX_CODEC`` unless the index is more than lz4 holds (tens of millions of chunk
        rows), then in the store's codec, or zstd for an lz4 store (each footer's location
        names its codec)."""
        try:
            return (*self.encode(INDEX_CODEC), INDEX_CODEC)
        except ValueError:
            codec = "zstd" if store_codec == "lz4" else store_codec
            return (*self.encode(codec), codec)

    @classmethod
    def decode(cls, data: Any, codec: str, raw_size: int, where: str, folder: str | None = None,
               frame_codec: str | None = None) -> "ChunkIndex":
        """Parse an index footer stored with ``codec`` and check its structure (``CorruptStoreError``
        naming ``where``); with ``folder``, every segment must lie in that folder. Frame sizes are
        checked against what ``frame_codec`` (the store's codec; default ``codec``) can produce."""
        try:
            obj = msgpack.unpackb(codecs.decompress(codec, data, raw_size), raw=False)
            version = obj.get("v", 1)
            if version not in (1, 2):
                raise ValueError(f"index version {version!r} is not one this library reads")
            widths = obj["widths"] if version >= 2 else {}
            small: set[str] = set()  # columns stored unsigned in at most 4 bytes: 0 <= value < 2**32

            def column(part: str, k: str, t: Any) -> np.ndarray:
                b = obj[part][k]
                w = widths.get(part[0] + "." + k)
                if w is None:
                    return np.frombuffer(b, t)
                if w not in _WIDTHS:
                    raise ValueError(f"column {k!r} has an unknown width {w!r}")
                size = int(w[2])
                if len(b) % size:
                    raise ValueError(f"column {k!r} of {len(b)} bytes does not hold whole {w!r} values")
                if w[1] == "u" and size <= 4:
                    small.add(part[0] + "." + k)
                a = np.frombuffer(b, w)
                if size == np.dtype(t).itemsize:
                    return a.view(t)  # stored at full width: read-only, straight off the buffer
                a = a.astype(t)
                a.flags.writeable = False  # as read-only as full-width columns
                return a

            aid = column("chunks", "aid", np.int64)
            chunks = {k: aid if k == "aid" else column("chunks", k, t) if k in obj["chunks"] else np.zeros(len(aid), t)
                      for k, t in CHUNK_COLUMNS.items()}
            idx = cls(
                segments=list(obj["segments"]),
                frames={k: column("frames", k, t) for k, t in FRAME_COLUMNS.items()},
                chunks=chunks,
            )
        except Exception as e:  # noqa: BLE001
            raise CorruptStoreError(f"{where}: chunk index cannot be decoded: {e}") from e
        problem = idx.check(folder, frame_codec or codec, frozenset(small))
        if problem:
            raise CorruptStoreError(f"{where}: chunk index is inconsistent: {problem}")
        return idx

    def check(self, folder: str | None = None, codec: str | None = None, small: frozenset[str] = frozenset()) -> str:
        """What is structurally wrong with this index ("" if nothing): column lengths, ranges,
        chunk pieces inside their frames, ``(aid, cid)`` strictly increasing, segment paths.

        ``small`` names columns (``"c.aid"``, ``"f.off"``, as the footer's widths) known to hold
        values in ``[0, 2**32)`` (stored unsigned in at most 4 bytes): their range checks are
        implied and skipped (a fresh handle decodes
        every index it reads, so each NumPy pass here is paid per array name).
        """
        c, f = self.chunks, self.frames
        n, nf = len(self), f["seg"].shape[0]
        if any(v.shape[0] != n for v in c.values()) or any(v.shape[0] != nf for v in f.values()):
            return "columns of different lengths"
        if not all(isinstance(s, str) and s and ".." not in s.split("/") for s in self.segments):
            return "bad segment path"
        if folder is not None and not all(s.startswith(folder + "/") for s in self.segments):
            return "segment outside the array's folder"

        def out_of(k: str, col: np.ndarray, hi: int) -> bool:  # any value outside [0, hi)
            if k in small:
                return hi < 2**32 and int(col.max()) >= hi
            return int(col.min()) < 0 or int(col.max()) >= hi

        if nf and out_of("f.seg", f["seg"], len(self.segments)):
            return "frame in an unknown segment"
        if nf and any(out_of("f." + k, f[k], 2**62 + 1) for k in ("off", "clen", "rlen")):
            return "frame offset or length out of range"
        if nf:  # compressed vs decoded sizes within what the codec can produce
            clen, rlen = f["clen"], f["rlen"]
            if codec == "none" and (clen != rlen).any():
                return "stored and decoded sizes of an uncompressed frame differ"
            if (clen > rlen + rlen // 128 + 1024).any():
                return "frame larger than its codec's worst case"
            if codec == "lz4" and (rlen > 256 * clen + 64).any():
                return "frame decodes to more than lz4 can"
        if n:
            fr = c["frame"]
            if out_of("c.frame", fr, nf):
                return "chunk in an unknown frame"
            if any(out_of("c." + k, c[k], 2**63) for k in ("foff", "nbytes", "aid", "cid")):
                return "negative chunk id, offset or size"
            rlen = f["rlen"][fr]
            if (c["foff"] > rlen).any() or (c["nbytes"] > rlen - c["foff"]).any():  # no int64 overflow
                return "chunk runs past the end of its frame"
            a, k = c["aid"], c["cid"]
            if n > 1:
                if "c.aid" in small and "c.cid" in small:  # one key per row: aid * 2**32 + cid < 2**64 fits unsigned
                    key = (a.view(np.uint64) << np.uint64(32)) | k.view(np.uint64)
                    ordered = bool((key[1:] > key[:-1]).all())
                else:
                    ordered = bool(((a[1:] > a[:-1]) | ((a[1:] == a[:-1]) & (k[1:] > k[:-1]))).all())
                if not ordered:
                    return "chunks not sorted by (array, chunk id)"
        return ""

    def merged(self, new_segment: str, frames: dict[str, np.ndarray], chunks: dict[str, np.ndarray], dead_aids: np.ndarray) -> "ChunkIndex":
        """A new index with a segment's frames and chunks added; newer rows win, rows of ``dead_aids`` go."""
        seg_no = len(self.segments)
        nf = self.frames["seg"].shape[0]
        frames = dict(frames)
        frames["seg"] = np.full(frames["off"].shape[0], seg_no, np.int64)
        chunks = dict(chunks)
        chunks["frame"] = chunks["frame"] + nf
        keep = ~np.isin(self.chunks["aid"], dead_aids)
        cols = {k: np.concatenate([self.chunks[k][keep], chunks[k].astype(t, copy=False)]) for k, t in CHUNK_COLUMNS.items()}
        order = np.lexsort((cols["cid"], cols["aid"]))  # stable: for equal keys, new rows stay last
        cols = {k: v[order] for k, v in cols.items()}
        a, c = cols["aid"], cols["cid"]
        if a.shape[0] > 1:
            last = np.ones(a.shape[0], bool)
            last[:-1] = (a[1:] != a[:-1]) | (c[1:] != c[:-1])
            cols = {k: v[last] for k, v in cols.items()}
        fr = {k: np.concatenate([self.frames[k], frames[k].astype(t, copy=False)]) for k, t in FRAME_COLUMNS.items()}
        return ChunkIndex(self.segments + [new_segment], fr, cols, self.uid)

    def appended(self, parts: "list[tuple[ChunkIndex, int]]") -> "ChunkIndex":
        """A new index with the rows of ``parts`` after these: ``(index, shift)`` pairs whose
        instance ids move up by ``shift``, each above every id before it (a staged commit).

        Segments and frames are renumbered; nothing is re-sorted, so ``ValueError`` if the
        shifted ids do not follow on. Costs a concatenation of the columns (no I/O).
        """
        segs = list(self.segments)
        frames = [self.frames]
        chunks = [self.chunks]
        nf = self.frames["seg"].shape[0]
        for idx, shift in parts:
            f = dict(idx.frames)
            f["seg"] = f["seg"] + len(segs)
            c = dict(idx.chunks)
            c["frame"] = c["frame"] + nf
            c["aid"] = c["aid"] + shift
            segs += idx.segments
            nf += idx.frames["seg"].shape[0]
            frames.append(f)
            chunks.append(c)
        out = ChunkIndex(segs, {k: np.concatenate([f[k] for f in frames]).astype(t, copy=False) for k, t in FRAME_COLUMNS.items()},
                         {k: np.concatenate([c[k] for c in chunks]).astype(t, copy=False) for k, t in CHUNK_COLUMNS.items()})
        problem = out.check()
        if problem:
            raise ValueError(f"staged chunk indexes do not fit together: {problem}")
        return out


def _narrow(v: np.ndarray) -> tuple[str, bytes]:
    """``(width, bytes)`` of an integer column at the narrowest width that holds its values."""
    if v.size and v.dtype.itemsize > 1:
        lo, hi = int(v.min()), int(v.max())
        for t in ("u1", "u2", "u4") if lo >= 0 else ("i1", "i2", "i4"):
            info = np.iinfo(t)
            if info.min <= lo and hi <= info.max:
                return np.dtype(t).str, v.astype(t).tobytes()
    return v.dtype.str, np.ascontiguousarray(v).tobytes()
