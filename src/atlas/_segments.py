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


class ChunkIndex:
    """Columnar index of every live chunk of one array name, sorted by ``(aid, cid)``.

    ``segments`` (paths), ``frames`` and ``chunks`` (dicts of int64 columns, ``FRAME_COLUMNS``
    and ``CHUNK_COLUMNS``). An index decoded with ``lazy=True`` keeps its chunk columns at
    their stored widths until something uses them whole: a fresh handle reading a few
    one-chunk arrays (:meth:`first_chunk`) then checks only the rows it uses, and the
    columns are widened and checked in full (``CorruptStoreError``) on first use of
    ``chunks``.
    """

    __slots__ = ("segments", "frames", "_chunks", "_narrow", "uid", "_first", "_lookups")

    def __init__(self, segments: list[str] | None = None, frames: dict[str, np.ndarray] | None = None,
                 chunks: dict[str, np.ndarray] | None = None, uid: int | None = None) -> None:
        self.segments: list[str] = [] if segments is None else segments
        self.frames: dict[str, np.ndarray] = (
            {k: np.empty(0, t) for k, t in FRAME_COLUMNS.items()} if frames is None else frames)
        self._chunks: dict[str, np.ndarray] | None = (
            {k: np.empty(0, t) for k, t in CHUNK_COLUMNS.items()} if chunks is None
            else None if chunks is _LAZY else chunks)
        #: ``(columns at stored widths, the "small" set of check(), where)`` until widened
        self._narrow: tuple[dict[str, np.ndarray], frozenset[str], str] | None = None
        #: identifies the frame numbering: merged() keeps it (old frames keep their numbers)
        self.uid: int = next(_uids) if uid is None else uid
        #: ``{aid: (frame, foff, nbytes)}`` of each instance's first chunk, built on first use (one-chunk reads)
        self._first: Optional[dict[int, tuple[int, int, int]]] = None
        self._lookups = 0

    @property
    def chunks(self) -> dict[str, np.ndarray]:
        """The chunk columns at int64 (uint8 flags); a lazily decoded index widens and checks them now."""
        c = self._chunks
        return c if c is not None else self._widen()

    def _widen(self) -> dict[str, np.ndarray]:
        narrow = self._narrow
        if narrow is None:  # another thread widened it meanwhile (it sets _chunks first)
            assert self._chunks is not None
            return self._chunks
        cols, small, where = narrow
        chunks = {k: _wide(cols[k], t) for k, t in CHUNK_COLUMNS.items()}
        problem = _check_chunks(chunks, self.frames, small)
        if problem:
            raise CorruptStoreError(f"{where}: chunk index is inconsistent: {problem}")
        self._chunks = chunks
        self._narrow = None
        return chunks

    def __len__(self) -> int:
        narrow = self._narrow  # read before _chunks: _widen sets _chunks, then clears _narrow
        c = self._chunks
        return int((c if c is not None else narrow[0])["aid"].shape[0])  # type: ignore[index]

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns (once widened)."""
        f = sum(v.nbytes for v in self.frames.values())
        c = self._chunks
        if c is None:
            return f + len(self) * sum(np.dtype(t).itemsize for t in CHUNK_COLUMNS.values())
        return f + sum(v.nbytes for v in c.values())

    def first_chunk(self, aid: int) -> Optional[tuple[int, int, int]]:
        """``(frame, offset in the frame, bytes)`` of the lowest chunk id of instance ``aid``, or None.

        The first lookups binary-search the columns (a fresh handle reading one dataset pays
        no more); on a lazily decoded index they search the stored columns and check the rows
        of the instance (chunk ids in order, the first one inside its frame) rather than the
        whole index. After ``FIRST_DICT_AFTER`` of them a dict is built once, so reading thousands
        of one-chunk arrays one by one costs a dict lookup each.
        """
        first = self._first
        if first is not None:
            return first.get(aid)
        self._lookups += 1
        if self._lookups <= FIRST_DICT_AFTER:
            narrow = self._narrow
            c = self._chunks if narrow is None else narrow[0]
            if c is None:  # widened by another thread between the two reads
                c = self.chunks
            a = c["aid"]
            n = a.shape[0]
            i = int(a.searchsorted(np.int64(aid)))  # (int64: an id above a narrow column's range sorts last)
            if narrow is not None:
                problem = self._row_problem(c, i, aid)
                if problem:
                    raise CorruptStoreError(f"{narrow[2]}: chunk index is inconsistent: {problem}")
            if i == n or int(a[i]) != aid:
                return None
            return int(c["frame"][i]), int(c["foff"][i]), int(c["nbytes"][i])
        c = self.chunks
        a = c["aid"]
        rows = np.flatnonzero(np.concatenate(([True], a[1:] != a[:-1]))) if a.shape[0] else np.zeros(0, np.int64)
        first = dict(zip(a[rows].tolist(), zip(c["frame"][rows].tolist(), c["foff"][rows].tolist(), c["nbytes"][rows].tolist())))
        self._first = first
        return first.get(aid)

    def _row_problem(self, c: dict[str, np.ndarray], i: int, aid: int) -> str:
        """What is wrong with the rows of instance ``aid`` from row ``i`` on (decoding checked that
        instance ids never decrease): their chunk ids must increase, and the first row, the one
        returned, must lie inside a frame that exists."""
        a = c["aid"]
        if i == a.shape[0] or int(a[i]) != aid:
            return ""
        j = int(np.searchsorted(a, aid, "right"))
        if j - i > 1 and not bool((c["cid"][i + 1:j] > c["cid"][i:j - 1]).all()):
            return "chunks not sorted by (array, chunk id)"
        fr, off, nb = int(c["frame"][i]), int(c["foff"][i]), int(c["nbytes"][i])
        if not 0 <= fr < self.frames["rlen"].shape[0]:
            return "chunk in an unknown frame"
        if off < 0 or nb < 0 or int(c["cid"][i]) < 0:
            return "negative chunk id, offset or size"
        if off + nb > int(self.frames["rlen"][fr]):
            return "chunk runs past the end of its frame"
        return ""

    def part(self, aids: Any) -> "ChunkIndex":
        """The index restricted to the rows of instances ``aids``, for a read of a few of them.

        On a lazily decoded index (its first ``FIRST_DICT_AFTER`` lookups) only those rows are
        widened and checked, and the part shares the segments, frames and frame numbering
        (``uid``, so the frame cache too); otherwise this index itself, widened.
        """
        narrow = self._narrow
        if narrow is None or self._lookups >= FIRST_DICT_AFTER:
            self.chunks  # noqa: B018 - widened (and checked) once a handle keeps coming back
            return self
        self._lookups += 1
        cols, small, where = narrow
        a = cols["aid"]
        q = np.unique(np.asarray(aids, np.int64))
        lo, hi = a.searchsorted(q, "left").tolist(), a.searchsorted(q, "right").tolist()
        rows: Any = slice(lo[0], hi[0]) if len(lo) == 1 else np.concatenate(
            [np.arange(x, y) for x, y in zip(lo, hi)] or [np.zeros(0, np.int64)])
        sub = {k: _wide(cols[k][rows], t) for k, t in CHUNK_COLUMNS.items()}
        problem = _check_chunks(sub, self.frames, small)
        if problem:
            raise CorruptStoreError(f"{where}: chunk index is inconsistent: {problem}")
        return ChunkIndex(self.segments, self.frames, sub, self.uid)

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
               frame_codec: str | None = None, lazy: bool = False) -> "ChunkIndex":
        """Parse an index footer stored with ``codec`` and check its structure (``CorruptStoreError``
        naming ``where``); with ``folder``, every segment must lie in that folder. Frame sizes are
        checked against what ``frame_codec`` (the store's codec; default ``codec``) can produce.

        With ``lazy``, the chunk columns stay at their stored widths and are checked when first
        used (see the class); segments and frames are checked now either way.
        """
        try:
            obj = msgpack.unpackb(codecs.decompress(codec, data, raw_size), raw=False)
            version = obj.get("v", 1)
            if version not in (1, 2):
                raise ValueError(f"index version {version!r} is not one this library reads")
            widths = obj["widths"] if version >= 2 else {}
            small: set[str] = set()  # columns stored unsigned in at most 4 bytes: 0 <= value < 2**32
            frames = {k: _wide(np.frombuffer(*_stored(obj["frames"][k], widths.get(_KEY_F[k]), k, t, small, _KEY_F[k])), t)
                      for k, t in FRAME_COLUMNS.items()}
            raw = obj["chunks"]
            narrow = _Stored({k: _stored(raw[k], widths.get(_KEY_C[k]), k, t, small, _KEY_C[k])
                              for k, t in CHUNK_COLUMNS.items() if k in raw})
            idx = cls(list(obj["segments"]), frames, _LAZY)
        except Exception as e:  # noqa: BLE001
            raise CorruptStoreError(f"{where}: chunk index is inconsistent: {e}" if isinstance(e, _Inconsistent)
                                    else f"{where}: chunk index cannot be decoded: {e}") from e
        aid = narrow["aid"]
        problem = idx._check_frames(folder, frame_codec or codec, frozenset(small))
        if not problem and aid.shape[0] > 1 and not bool((aid[1:] >= aid[:-1]).all()):  # a binary search needs it
            problem = "chunks not sorted by (array, chunk id)"
        if problem:
            raise CorruptStoreError(f"{where}: chunk index is inconsistent: {problem}")
        idx._narrow = (narrow, frozenset(small), where)
        if not lazy:
            idx._widen()
        return idx

    def check(self, folder: str | None = None, codec: str | None = None, small: frozenset[str] = frozenset()) -> str:
        """What is structurally wrong with this index ("" if nothing): column lengths, ranges,
        chunk pieces inside their frames, ``(aid, cid)`` strictly increasing, segment paths.

        ``small`` names columns (``"c.aid"``, ``"f.off"``, as the footer's widths) known to hold
        values in ``[0, 2**32)`` (stored unsigned in at most 4 bytes): their range checks are
        implied and skipped (a fresh handle decodes every index it reads, so each NumPy pass
        here is paid per array name).
        """
        c = self.chunks
        if any(v.shape[0] != len(self) for v in c.values()):
            return "columns of different lengths"
        return self._check_frames(folder, codec, small) or _check_chunks(c, self.frames, small)

    def _check_frames(self, folder: str | None, codec: str | None, small: frozenset[str]) -> str:
        """The part of :meth:`check` about segments and frames."""
        f = self.frames
        nf = f["seg"].shape[0]
        if any(v.shape[0] != nf for v in f.values()):
            return "columns of different lengths"
        if not all(isinstance(s, str) and s and ".." not in s.split("/") for s in self.segments):
            return "bad segment path"
        if folder is not None and not all(s.startswith(folder + "/") for s in self.segments):
            return "segment outside the array's folder"
        if nf and _out_of(small, "f.seg", f["seg"], len(self.segments)):
            return "frame in an unknown segment"
        if nf and any(_out_of(small, "f." + k, f[k], 2**62 + 1) for k in ("off", "clen", "rlen")):
            return "frame offset or length out of range"
        if nf:  # compressed vs decoded sizes within what the codec can produce
            clen, rlen = f["clen"], f["rlen"]
            if codec == "none" and (clen != rlen).any():
                return "stored and decoded sizes of an uncompressed frame differ"
            if (clen > rlen + rlen // 128 + 1024).any():
                return "frame larger than its codec's worst case"
            if codec == "lz4" and (rlen > 256 * clen + 64).any():
                return "frame decodes to more than lz4 can"
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


_KEY_F = {k: "f." + k for k in FRAME_COLUMNS}  # a column's key in a footer's widths
_KEY_C = {k: "c." + k for k in CHUNK_COLUMNS}
_LAZY: Any = object()  # ChunkIndex(chunks=_LAZY): chunk columns not widened yet (decode sets _narrow)


class _Inconsistent(ValueError):
    """Stored columns that cannot belong together (reported as an inconsistent index)."""


def _stored(b: Any, w: str | None, k: str, t: Any, small: set[str], key: str) -> tuple[Any, str]:
    """``(bytes, width)`` of a stored column, its width and length checked (``ValueError``);
    adds ``key`` to ``small`` when the width keeps its values in ``[0, 2**32)``."""
    if w is None:
        w = np.dtype(t).str  # version 1: every column at its full width
    elif w not in _WIDTHS:
        raise ValueError(f"column {k!r} has an unknown width {w!r}")
    size = int(w[2])
    if len(b) % size:
        raise ValueError(f"column {k!r} of {len(b)} bytes does not hold whole {w!r} values")
    if w[1] == "u" and size <= 4:
        small.add(key)
    return b, w


class _Stored(dict):  # type: ignore[type-arg]
    """Chunk columns at their stored widths, each made a NumPy array on first use (a one-chunk
    lookup needs five of the ten); a column the footer lacks (version 1) reads as zeros."""

    def __init__(self, raw: dict[str, tuple[Any, str]]) -> None:
        super().__init__()
        self.raw = raw
        aid = raw.get("aid")
        if aid is None:
            raise ValueError("no column 'aid'")
        self.n = len(aid[0]) // int(aid[1][2])
        if any(len(b) // int(w[2]) != self.n for b, w in raw.values()):
            raise _Inconsistent("columns of different lengths")

    def __missing__(self, k: str) -> np.ndarray:
        got = self.raw.get(k)
        v = np.zeros(self.n, CHUNK_COLUMNS[k]) if got is None else np.frombuffer(*got)
        self[k] = v
        return v


def _wide(v: np.ndarray, t: Any) -> np.ndarray:
    """A stored column at its full width ``t``, read-only (straight off the buffer when stored at it)."""
    if v.dtype.itemsize == np.dtype(t).itemsize:
        return v.view(t)
    v = v.astype(t)
    v.flags.writeable = False  # as read-only as full-width columns
    return v


def _out_of(small: frozenset[str], k: str, col: np.ndarray, hi: int) -> bool:
    """Any value of column ``k`` outside ``[0, hi)`` (columns in ``small`` are known to be in ``[0, 2**32)``)."""
    if k in small:
        return hi < 2**32 and int(col.max()) >= hi
    return int(col.min()) < 0 or int(col.max()) >= hi


def _check_chunks(c: dict[str, np.ndarray], f: dict[str, np.ndarray], small: frozenset[str]) -> str:
    """The part of :meth:`ChunkIndex.check` about the chunk rows (wide columns ``c``, frames ``f``)."""
    n, nf = c["aid"].shape[0], f["seg"].shape[0]
    if not n:
        return ""
    fr = c["frame"]
    if _out_of(small, "c.frame", fr, nf):
        return "chunk in an unknown frame"
    if any(_out_of(small, "c." + k, c[k], 2**63) for k in ("foff", "nbytes", "aid", "cid")):
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


def _narrow(v: np.ndarray) -> tuple[str, bytes]:
    """``(width, bytes)`` of an integer column at the narrowest width that holds its values."""
    if v.size and v.dtype.itemsize > 1:
        lo, hi = int(v.min()), int(v.max())
        for t in ("u1", "u2", "u4") if lo >= 0 else ("i1", "i2", "i4"):
            info = np.iinfo(t)
            if info.min <= lo and hi <= info.max:
                return np.dtype(t).str, v.astype(t).tobytes()
    return v.dtype.str, np.ascontiguousarray(v).tobytes()
