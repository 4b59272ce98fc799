"""Read, write, flush and compact: the machinery under every public call.

Python works here at the level of whole requests and whole chunks; the kernels in
``_kernels`` do the per-element work with the GIL released, and the shared pool runs
decompression + gathers (reads) and compression (writes, flush) in parallel.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from . import _executor, codecs
from ._chunks import Pending, PendingStore, decode_strings, encode_strings, strings_nbytes
from ._meta import ArrayMeta, Physical, StoreMeta
from ._segments import CHUNK_COLUMNS, ChunkIndex
from .errors import CorruptStoreError
from .storage import Storage

SOLO_FRAME = 16 * 1024  # a chunk this large is compressed on its own, when it is written
FRAME_TARGET = 64 * 1024  # smaller chunks are packed into frames of about this raw size
MAX_CHUNK_BYTES = 2**31 - 2**25  # a chunk is built whole in memory and compressed as one frame (lz4's limit)
FRAME_CACHE_BYTES = 32 * 1024 * 1024  # decoded packed frames kept for neighbouring small-chunk reads
COALESCE_GAP = 64 * 1024  # frames of one segment closer than this are fetched in one read
COALESCE_MAX = 2 * 1024 * 1024  # ... as long as the read stays below this size (so decoding can start early)
PARALLEL_MIN_BYTES = 256 * 1024  # below this much decoded data a request stays on the caller's thread
FLUSH_BATCH_BYTES = 16 * 1024 * 1024  # a flush compresses and writes frames in batches of about this size


def default_pending_budget() -> int:
    """Bytes of pending chunk data kept in memory before spilling (``ATLAS_PENDING_BUDGET``)."""
    env = os.environ.get("ATLAS_PENDING_BUDGET")
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            raise ValueError(f"ATLAS_PENDING_BUDGET must be a number of bytes, got {env!r}") from None
    return 16 * 1024 * 1024  # ingest memory stays ~50-75 MB above the baseline (benchmarks/compare_gridded.py)


class _Kernels:
    """Kernels resolved on first use, so ``import atlas`` does not import numba."""

    def __getattr__(self, name: str) -> Any:
        from ._kernels import gather, grid, stats

        for mod in (grid, gather, stats):
            if hasattr(mod, name):
                fn = getattr(mod, name)
                setattr(self, name, fn)
                return fn
        raise AttributeError(name)


K = _Kernels()


_WORD: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}
_WIDE: dict[str, np.dtype[Any]] = {"f": np.dtype(np.float64), "u": np.dtype(np.uint64), "i": np.dtype(np.int64)}


def wide_dtype(sd: np.dtype) -> np.dtype:
    """The 64-bit type per-chunk min/max are kept in (as int64 bit patterns)."""
    return _WIDE[sd.kind]


def _pad(t: Sequence[int]) -> np.ndarray:
    """A box start as kernels take it: 0-D arrays are treated as shape (1,)."""
    return np.asarray(t, np.int64) if len(t) else np.zeros(1, np.int64)


def _pad_count(t: Sequence[int]) -> np.ndarray:
    return np.asarray(tuple(t), np.int64) if len(t) else np.ones(1, np.int64)



class Engine:
    """Chunk indexes, pending chunks and the request machinery of one open store."""

    def __init__(self, storage: Storage, codec: str) -> None:
        self.storage = storage
        self.codec = codec
        self.lock = threading.RLock()
        self._indexes: dict[str, ChunkIndex] = {}
        self.pending = PendingStore(default_pending_budget())
        self._cache: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._cache_bytes = 0

    # ------------------------------------------------------------------ index
    def index(self, name: str, phys: Physical | None) -> ChunkIndex:
        """The chunk index of array name ``name``, read on first use (one range read)."""
        idx = self._indexes.get(name)
        if idx is not None:
            return idx
        with self.lock:
            idx = self._indexes.get(name)
            if idx is None:
                if phys is None or phys.index is None:
                    idx = ChunkIndex()
                else:
                    seg, off, ln, raw, crc = phys.index
                    where = f"{self.storage.location}/{seg}"
                    try:
                        (buf,) = self.storage.read_ranges(seg, [off], [off + ln])
                    except FileNotFoundError:
                        raise self._gone(seg) from None
                    if codecs.checksum(buf) != crc:
                        raise CorruptStoreError(f"{where}: checksum mismatch in the chunk index of array {name!r}")
                    idx = ChunkIndex.decode(buf, self.codec, raw, where, phys.dir)
                self._indexes[name] = idx
        return idx

    # ------------------------------------------------------------------ frames
    def _fetch_jobs(self, idx: ChunkIndex, frames: np.ndarray) -> list[tuple[Any, ...]]:
        """Coalesced range reads for ``frames`` (sorted unique ids): one job per segment."""
        seg = idx.frames["seg"][frames]
        off = idx.frames["off"][frames]
        end = off + idx.frames["clen"][frames]
        jobs = []
        for s in np.unique(seg).tolist():
            sel = np.flatnonzero(seg == s)
            sel = sel[np.argsort(off[sel], kind="stable")]
            o, e = off[sel], end[sel]
            brk = _breaks(o, e)
            gs = np.concatenate([[0], brk])
            ge = np.concatenate([brk, [len(sel)]])
            jobs.append((idx.segments[s], sel, o, e, gs, ge, o[gs], np.maximum.reduceat(e, gs)))
        return jobs

    @staticmethod
    def _split_job(job: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One job per coalesced range (so local reads can overlap with decoding)."""
        path, sel, o, e, gs, ge, rs, re_ = job
        return [(path, sel[a:b], o[a:b], e[a:b], np.zeros(1, np.int64), np.asarray([b - a]), rs[g:g + 1], re_[g:g + 1])
                for g, (a, b) in enumerate(zip(gs.tolist(), ge.tolist()))]

    def _run_job(self, job: tuple[Any, ...], out: list[Any]) -> None:
        path, sel, o, e, gs, ge, rs, re_ = job
        try:
            bufs = self.storage.read_ranges(path, rs.tolist(), re_.tolist())
        except FileNotFoundError:
            raise self._gone(path) from None
        for g, buf in enumerate(bufs):
            mv = memoryview(buf)
            base = int(rs[g])
            for j in range(int(gs[g]), int(ge[g])):
                out[int(sel[j])] = mv[int(o[j]) - base:int(e[j]) - base]

    def _gone(self, path: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.storage.location}/{path} is gone: another handle compacted the store; reopen it")

    def _fetch(self, idx: ChunkIndex, frames: np.ndarray) -> list[Any]:
        """Compressed bytes of ``frames`` (sorted unique ids), with coalesced range reads."""
        out: list[Any] = [None] * len(frames)
        jobs = self._fetch_jobs(idx, frames)
        conc = getattr(self.storage, "io_concurrency", 1)
        if len(jobs) > 1 and conc > 1:
            list(_executor.io_pool(conc).map(lambda j: self._run_job(j, out), jobs))
        else:
            for job in jobs:
                self._run_job(job, out)
        return out

    def _cached(self, idx: ChunkIndex, f: int) -> Any:
        """A decoded packed frame from the cache, or None."""
        return self._cache.get((idx.uid, f))

    def _remember(self, idx: ChunkIndex, f: int, raw: Any) -> None:
        """Keep a decoded frame that packs small chunks (frames are immutable: never stale); FIFO eviction."""
        n = len(raw)
        if n > FRAME_TARGET:
            return
        key = (idx.uid, f)
        with self.lock:
            if key not in self._cache:
                self._cache[key] = raw
                self._cache_bytes += n
                while self._cache_bytes > FRAME_CACHE_BYTES and self._cache:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= len(old)

    def _decode(self, idx: ChunkIndex, f: int, data: Any) -> Any:
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

    def _short_chunk(self, idx: ChunkIndex, f: int, what: str) -> None:
        seg = idx.segments[int(idx.frames["seg"][f])]
        raise CorruptStoreError(f"{self.storage.location}/{seg}: the index gives a chunk of {what} fewer "
                                "bytes than its shape needs (damaged index)")

    def _pending_bytes(self, p: Pending) -> Any:
        data = self.pending.payload(p)
        return codecs.decompress(self.codec, data, p.nbytes) if p.compressed else data

    # ------------------------------------------------------------------ reads
    def read(self, name: str, phys: Physical | None, metas: Sequence[ArrayMeta], start: Sequence[int], count: Sequence[int],
             out: np.ndarray | None = None) -> np.ndarray:
        """Read the same box of array ``name`` from every instance in ``metas`` into one ``(N, *count)`` array.

        Instances may differ in shape and chunking (the box must fit each) but share a dtype.
        Returns storage-typed data (int64 for timestamps), in ``out`` when given (C-contiguous,
        shape ``(N, *count)``, the storage dtype).
        """
        n = len(metas)
        m0 = metas[0]
        if out is None and n == 1 and m0.single_chunk and not m0.is_string:
            return self._read_single_chunk(name, phys, m0, start, count)[None]
        kstart, kcount = _pad(start), _pad_count(count)
        sd = m0.sdtype
        kshape = (n,) + tuple(kcount.tolist())
        out = np.empty(kshape, sd) if out is None else out.reshape(kshape)
        idx = self.index(name, phys)
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
            hits: list[tuple[int, Pending]] = []
            pend = self.pending.get(name)
            if pend:
                with self.lock:
                    for j, key in enumerate(zip(qa.tolist(), qc.tolist())):
                        p = pend.get(key)
                        if p is not None:
                            hits.append((j, p))
                            pos[j] = -2
            miss = pos == -1
            if miss.any():
                for s in np.unique(pslot[miss]).tolist():
                    out[s] = metas[s].fill_storage
            present = np.flatnonzero(pos >= 0)
            if present.size:
                self._gather(idx, m, pos[present], pslot[present], pc[present], src, dst, box, out, kcount)
            for j, p in hits:
                sel = np.asarray([pc[j]])
                self._copy_from_chunk(m, self._pending_bytes(p), np.zeros(1, np.int64), sel, np.asarray([pslot[j]]), src, dst, box, out, kcount)
        return out.reshape((n,) + tuple(count))

    def _read_single_chunk(self, name: str, phys: Physical | None, m: ArrayMeta, start: Sequence[int], count: Sequence[int]) -> np.ndarray:
        """Fast path: a box of an array stored as one chunk (numpy slices the decoded chunk)."""
        pend = self.pending.get(name)
        p = pend.get((m.aid, 0)) if pend else None
        if p is not None:
            raw, o = self._pending_bytes(p), 0
        else:
            idx = self.index(name, phys)
            loc = idx.first_chunk(m.aid)
            if loc is None:
                return np.full(tuple(count), m.fill_storage, m.sdtype)
            f, o, nb = loc
            if nb < m.chunk_nbytes:
                self._short_chunk(idx, f, f"array {name!r}")
            raw = self._cached(idx, f) if self._cache else None
            if raw is None:
                raw = self._decode(idx, f, self._fetch(idx, np.asarray([f]))[0])
                if int(idx.frames["rlen"][f]) <= FRAME_TARGET:
                    self._remember(idx, f, raw)
        chunk = np.frombuffer(raw, m.sdtype, m.chunk_elems, o)
        if not m.shape:
            return chunk.reshape(()).copy()
        chunk = chunk.reshape(m.shape)
        if tuple(count) != m.shape:
            chunk = chunk[tuple(slice(a, a + b) for a, b in zip(start, count))]
        return chunk.copy()

    def _copy_from_chunk(self, m: ArrayMeta, raw: Any, foff: np.ndarray, pcs: np.ndarray, slots: np.ndarray,
                         src: np.ndarray, dst: np.ndarray, box: np.ndarray, out: np.ndarray, kcount: np.ndarray) -> None:
        """Copy pieces (chunk-local boxes) out of one decoded chunk buffer or frame into ``out``."""
        if m.is_string:
            mv = memoryview(raw)
            for k in range(len(pcs)):
                j = int(pcs[k])
                o = int(foff[k])
                chunk = decode_strings(mv[o:], tuple(m.kchunk.tolist()), f"array {m.aid}")
                ss = tuple(slice(a, a + b) for a, b in zip(src[j], box[j]))
                ds = tuple(slice(a, a + b) for a, b in zip(dst[j], box[j]))
                out[int(slots[k])][ds] = chunk[ss]
            return
        isz = m.sdtype.itemsize
        npc = len(pcs)
        self._copy_pieces(m, raw, foff // isz, np.tile(m.kchunk, (npc, 1)), src[pcs], slots.astype(np.int64, copy=False) * int(np.prod(kcount)),
                          dst[pcs], box[pcs], out, kcount)

    @staticmethod
    def _copy_pieces(m: ArrayMeta, raw: Any, soff: np.ndarray, sshape: np.ndarray, sstart: np.ndarray, doff: np.ndarray,
                     dstart: np.ndarray, pbox: np.ndarray, out: np.ndarray, kcount: np.ndarray) -> None:
        """One kernel call: pieces of a decoded frame (offsets in cells) into ``out``, whole cells at a time."""
        isz = m.sdtype.itemsize
        word = _WORD[isz]  # chunks start at multiples of 8 bytes in frames
        K.copy_boxes(np.frombuffer(raw, word, len(raw) // isz), soff, sshape, sstart, out.reshape(-1).view(word),
                     doff, kcount, dstart, pbox, 1)

    def _gather(self, idx: ChunkIndex, m: ArrayMeta, pos: np.ndarray, pslot: np.ndarray, pc: np.ndarray,
                src: np.ndarray, dst: np.ndarray, box: np.ndarray, out: np.ndarray, kcount: np.ndarray) -> None:
        fr = idx.chunks["frame"][pos]
        order = np.argsort(fr, kind="stable")
        fr, pos, pslot, pc = fr[order], pos[order], pslot[order], pc[order]
        uf, first = np.unique(fr, return_index=True)
        bounds = np.append(first, len(fr)).tolist()
        nf = len(uf)
        blobs: list[Any] = [self._cached(idx, f) for f in uf.tolist()] if self._cache else [None] * nf
        decoded = [b is not None for b in blobs]
        todo = np.asarray([k for k in range(nf) if not decoded[k]], np.int64)
        foff = idx.chunks["foff"][pos]
        if not m.is_string:  # the copy kernel reads a whole chunk at foff: it must be inside the frame
            short = idx.chunks["nbytes"][pos] < m.chunk_nbytes
            if short.any():
                self._short_chunk(idx, int(fr[np.argmax(short)]), f"array instance {m.aid}")
        packed = (idx.frames["rlen"][uf] <= FRAME_TARGET).tolist()
        big = int(idx.frames["rlen"][uf].sum()) >= PARALLEL_MIN_BYTES
        if not m.is_string:  # every piece's kernel arguments, computed once for the whole request
            isz = m.sdtype.itemsize
            n = len(pc)
            soff = foff // isz
            sshape = np.tile(m.kchunk, (n, 1))
            sstart, dstart, pbox = src[pc], dst[pc], box[pc]
            doff = pslot * int(np.prod(kcount))

        def finish(k: int) -> None:
            raw = blobs[k]
            if not decoded[k]:
                raw = self._decode(idx, int(uf[k]), raw)
                if packed[k]:
                    self._remember(idx, int(uf[k]), raw)
            a, b = bounds[k], bounds[k + 1]
            if m.is_string:
                self._copy_from_chunk(m, raw, foff[a:b], pc[a:b], pslot[a:b], src, dst, box, out, kcount)
            else:
                self._copy_pieces(m, raw, soff[a:b], sshape[a:b], sstart[a:b], doff[a:b], dstart[a:b], pbox[a:b], out, kcount)

        local = getattr(self.storage, "io_concurrency", 1) <= 1
        nt = _executor.num_threads()
        if todo.size > 1 and local and big and nt > 1:
            # local disk: each task reads its coalesced ranges one by one, decoding and gathering
            # as it goes, so reads overlap with decompression; a few tasks per thread, not one per range
            got: list[Any] = [None] * todo.size
            jobs = [j for job in self._fetch_jobs(idx, uf[todo]) for j in self._split_job(job)]
            per = max(1, -(-len(jobs) // (2 * nt)))

            def work(batch: list[Any]) -> None:
                for job in batch:
                    self._run_job(job, got)
                    for i in job[1].tolist():
                        k = int(todo[i])
                        blobs[k] = got[i]
                        finish(k)

            _executor.run(work, [jobs[i:i + per] for i in range(0, len(jobs), per)], parallel=True)
            for k in range(nf):
                if decoded[k]:
                    finish(k)
            return
        if todo.size:
            for k, b in zip(todo.tolist(), self._fetch(idx, uf[todo])):
                blobs[k] = b
        _executor.run(finish, range(nf), parallel=big)

    def load_chunk(self, name: str, phys: Physical | None, m: ArrayMeta, cid: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """One whole chunk (padded shape, storage dtype, writable) and its written-cells mask.

        Returns ``(None, None)`` if the chunk was never written; the mask is None when every
        cell of the chunk was written.
        """
        shape = tuple(m.kchunk.tolist())
        with self.lock:
            p = self.pending.get(name, {}).get((m.aid, cid))
        if p is not None:
            raw: Any = self._pending_bytes(p)
            o, nbytes, masked = 0, p.nbytes, p.masked
        else:
            idx = self.index(name, phys)
            pos = int(K.lookup(idx.chunks["aid"], idx.chunks["cid"], np.asarray([m.aid]), np.asarray([cid]))[0])
            if pos < 0:
                return None, None
            f = int(idx.chunks["frame"][pos])
            raw = self._decode(idx, f, self._fetch(idx, np.asarray([f]))[0])
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
            raise CorruptStoreError(f"{self.storage.location}: chunk {cid} of array {name!r} cannot be decoded: {e}") from e
        return arr, mask

    @staticmethod
    def _merge_mask(m: ArrayMeta, had: bool, old: np.ndarray | None, src: np.ndarray, box: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
        """Written-cells mask after writing ``box`` at ``src`` into a chunk (None = all valid cells written)."""
        shape = tuple(m.kchunk.tolist())
        if had and old is None:
            return None
        mask = np.zeros(shape, bool) if old is None else old
        mask[tuple(slice(a, a + b) for a, b in zip(src, box))] = True
        if mask[tuple(slice(0, v) for v in valid)].all():
            return None
        return mask

    # ------------------------------------------------------------------ writes
    def write(self, name: str, phys: Physical | None, m: ArrayMeta, start: Sequence[int], data: np.ndarray) -> None:
        """Buffer ``data`` (storage-typed, C-contiguous) at ``start`` as pending chunks."""
        if m.layout.empty or data.size == 0:
            return
        if m.chunk_nbytes > MAX_CHUNK_BYTES:
            raise ValueError(
                f"array {name!r}: its chunks ({list(m.chunk)}, {m.chunk_nbytes / 2**30:.1f} GiB "
                f"of {m.dtype} each) are too large to write (at most {MAX_CHUNK_BYTES / 2**30:.1f} GiB); "
                "define it with a smaller chunk_shape (chunk_shape defaults to the whole shape)"
            )
        if m.single_chunk and not m.is_string and data.shape == m.shape:
            # the write is the whole one-chunk array: its bytes are the chunk; stats wait for the flush
            nb = data.nbytes
            if nb >= SOLO_FRAME:
                raw = data.reshape(-1)
                nn, mn, mx, has = self._chunk_stats(m, raw, m.kchunk.reshape(1, -1))
                entry = Pending(codecs.compress(self.codec, raw.view(np.uint8).data), True, nb, int(nn[0]), int(mn[0]), int(mx[0]), bool(has[0]))
            else:
                entry = Pending(data.tobytes(), False, nb, -1, 0, 0, False)
            with self.lock:
                self.pending.put(name, {(m.aid, 0): entry})
            return
        kstart, kcount = _pad(start), _pad_count(data.shape)
        d = data.reshape(tuple(kcount.tolist()))
        ids, src, dst, box = K.plan_box(m.kshape, m.kchunk, kstart, kcount)
        k = ids.shape[0]
        if k == 0:
            return
        valid = K.valid_shapes(m.kshape, m.kchunk, ids)
        full = (box == valid).all(1) & (src == 0).all(1)
        if m.is_string:
            self._write_strings(name, phys, m, ids, src, dst, box, valid, full, d)
            return
        ce = m.chunk_elems
        sd = m.sdtype
        isz = sd.itemsize
        cb = ce * isz
        edge = (valid != m.kchunk).any(1)
        if (~full).any() or edge.any():
            buf = np.full(k * ce, m.fill_storage, sd)
        else:
            buf = np.empty(k * ce, sd)
        track = m.fill is None  # without a fill, written cells must be told from unwritten ones
        masks: dict[int, np.ndarray] = {}
        for j in np.flatnonzero(~full).tolist():
            base, old = self.load_chunk(name, phys, m, int(ids[j]))
            if base is not None:
                buf[j * ce:(j + 1) * ce] = base.reshape(-1)
            if track:
                mk = self._merge_mask(m, base is not None, old, src[j], box[j], valid[j])
                if mk is not None:
                    masks[j] = mk
        bu8 = buf.view(np.uint8)
        word = _WORD[isz]
        dw = d.reshape(-1).view(word)
        bw = buf.view(word)
        written = None
        if masks:
            written = np.ones(k * ce, np.uint8)
            for j, mk in masks.items():
                written[j * ce:(j + 1) * ce] = mk.reshape(-1)
        solo = cb >= SOLO_FRAME

        def encode(rng: tuple[int, int]) -> list[Pending]:
            """Copy, summarise and (large chunks) compress chunks a..b: one task of the pool."""
            a, b = rng
            n = b - a
            K.copy_boxes(dw, np.zeros(n, np.int64), np.tile(kcount, (n, 1)), dst[a:b],
                         bw, np.arange(a, b, dtype=np.int64) * ce, m.kchunk, src[a:b], box[a:b], 1)
            nn, mn, mx, has = self._chunk_stats(m, buf[a * ce:b * ce], valid[a:b],
                                                None if written is None else written[a * ce:b * ce])
            out = []
            for i, j in enumerate(range(a, b)):
                body = bu8[j * cb:(j + 1) * cb].tobytes()
                mk = masks.get(j)
                if mk is not None:
                    body += _mask_bytes(mk)
                data = codecs.compress(self.codec, body) if solo else body
                out.append(Pending(data, solo, len(body), int(nn[i]), int(mn[i]), int(mx[i]), bool(has[i]), mk is not None))
            return out

        nt = _executor.num_threads()
        parallel = k > 1 and k * cb >= PARALLEL_MIN_BYTES and nt > 1
        step = max(1, -(-k // (2 * nt))) if parallel else k
        entries = [e for part in _executor.run(encode, [(a, min(k, a + step)) for a in range(0, k, step)], parallel=parallel)
                   for e in part]
        with self.lock:
            self.pending.put(name, {(m.aid, cid): entries[j] for j, cid in enumerate(ids.tolist())})

    def _chunk_stats(self, m: ArrayMeta, buf: np.ndarray, valid: np.ndarray, written: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
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

    def _write_strings(self, name: str, phys: Physical | None, m: ArrayMeta, ids: np.ndarray, src: np.ndarray,
                       dst: np.ndarray, box: np.ndarray, valid: np.ndarray, full: np.ndarray, d: np.ndarray) -> None:
        shape = tuple(m.kchunk.tolist())
        fill = m.fill_storage
        entries = {}
        for j, cid in enumerate(ids.tolist()):
            chunk, old = (None, None) if full[j] else self.load_chunk(name, phys, m, cid)
            mk = None
            if not full[j] and m.fill is None:
                mk = self._merge_mask(m, chunk is not None, old, src[j], box[j], valid[j])
            if chunk is None:
                chunk = np.full(shape, fill, dtype=object)
            ss = tuple(slice(a, a + b) for a, b in zip(src[j], box[j]))
            ds = tuple(slice(a, a + b) for a, b in zip(dst[j], box[j]))
            chunk[ss] = d[ds]
            vsl = tuple(slice(0, x) for x in valid[j])
            v = chunk[vsl] if mk is None else chunk[vsl][mk[vsl]]
            v = v.ravel()
            nn = int(v.size - (np.count_nonzero(v == m.fill) if m.fill is not None else 0))
            raw = encode_strings(chunk)
            if mk is not None:
                raw += _mask_bytes(mk)
            entries[(m.aid, cid)] = Pending(raw, False, len(raw), nn, 0, 0, nn > 0, mk is not None)
        with self.lock:
            self.pending.put(name, entries)

    # ------------------------------------------------------------------ flush
    def _segment(self, phys: Physical, gen: int, token: str, base: ChunkIndex, items: list[tuple[tuple[int, int], Pending]],
                 dead: np.ndarray, payload: Callable[[Pending], bytes]) -> tuple[str, Any, dict[str, Any]]:
        """Plan a segment of ``items`` (sorted by key); returns ``(path, frames, result)``.

        ``frames`` is a generator yielding the segment's bytes frame by frame (compressed in
        batches on the pool, so memory stays bounded) and finally the index footer; once it
        is exhausted, ``result`` holds ``"index"`` (the merged ChunkIndex) and ``"loc"``.
        """
        path = f"{phys.dir}/s{gen:08d}-{token}.seg"
        # frames go to the segment in (chunk id, instance) order: the same chunk of every dataset
        # written in one flush sits side by side, so a stacked read is a few contiguous ranges
        items = sorted(items, key=lambda kp: (kp[0][1], kp[0][0]))
        n = len(items)
        cols = {k: np.zeros(n, t) for k, t in CHUNK_COLUMNS.items()}
        groups: list[list[int]] = []  # item numbers per frame; a compressed item is a frame alone
        rlens: list[int] = []
        cur: list[int] = []
        cur_size = 0
        for j, ((aid, cid), p) in enumerate(items):
            cols["aid"][j] = aid
            cols["cid"][j] = cid
            cols["nbytes"][j] = p.nbytes
            cols["nn"][j] = p.nn
            cols["mn"][j] = p.mn
            cols["mx"][j] = p.mx
            cols["has"][j] = p.has
            cols["wmask"][j] = p.masked
            if p.compressed or (cur and cur_size + p.nbytes > FRAME_TARGET):
                if cur:
                    groups.append(cur)
                    rlens.append(cur_size)
                    cur, cur_size = [], 0
            cur_size = (cur_size + 7) & ~7  # every chunk starts 8-byte aligned in its frame
            cols["frame"][j] = len(groups)
            cols["foff"][j] = cur_size
            cur.append(j)
            cur_size += p.nbytes
            if p.compressed:
                groups.append(cur)
                rlens.append(cur_size)
                cur, cur_size = [], 0
        if cur:
            groups.append(cur)
            rlens.append(cur_size)
        result: dict[str, Any] = {}

        def enc(g: list[int]) -> tuple[bytes, int]:
            first = items[g[0]][1]
            if first.compressed:
                b = payload(first)
            else:
                parts: list[bytes] = []
                size = 0
                for j in g:
                    pad = int(cols["foff"][j]) - size
                    if pad:
                        parts.append(b"\0" * pad)
                    data = payload(items[j][1])
                    parts.append(data)
                    size += pad + len(data)
                b = codecs.compress(self.codec, b"".join(parts))
            return b, codecs.frame_checksum(self.codec, b)

        def frames() -> Any:
            off = np.zeros(len(groups), np.int64)
            clen = np.zeros(len(groups), np.int64)
            crc = np.zeros(len(groups), np.uint32)
            pos = 0
            g0 = 0
            while g0 < len(groups):
                g1, size = g0, 0
                while g1 < len(groups) and (g1 == g0 or size < FLUSH_BATCH_BYTES):
                    size += rlens[g1]
                    g1 += 1
                encoded = _executor.run(enc, groups[g0:g1], parallel=size >= PARALLEL_MIN_BYTES)
                for i, (b, c) in enumerate(encoded, g0):
                    off[i], clen[i], crc[i] = pos, len(b), c
                    pos += len(b)
                    yield b
                g0 = g1
            fr: dict[str, np.ndarray] = {"off": off, "clen": clen, "rlen": np.asarray(rlens, np.int64), "crc": crc}
            new = base.merged(path, fr, cols, dead)
            footer, rawlen = new.encode(self.codec)
            result["index"] = new
            result["loc"] = (path, pos, len(footer), rawlen, codecs.checksum(footer))
            yield footer

        return path, frames(), result

    def _deferred_stats(self, metas: dict[int, ArrayMeta]) -> None:
        """Compute the chunk stats left for the flush, one kernel call per layout (dtype, chunk, fill)."""
        groups: dict[Any, tuple[ArrayMeta, list[Pending]]] = {}
        for pend in self.pending.values():
            for (aid, _), p in pend.items():
                if p.nn < 0:
                    m = metas.get(aid)
                    if m is not None:
                        lay = m.layout
                        g = groups.get(lay)
                        if g is None:
                            g = groups[lay] = (m, [])
                        g[1].append(p)
        for m, ps in groups.values():
            buf = np.frombuffer(b"".join([self.pending.payload(p) for p in ps]), m.sdtype)
            nn, mn, mx, has = self._chunk_stats(m, buf, np.tile(m.kchunk, (len(ps), 1)))
            for p, a, b, c, d in zip(ps, nn.tolist(), mn.tolist(), mx.tolist(), has.tolist()):
                p.nn = a
                p.mn = b
                p.mx = c
                p.has = d

    def batch_stats(self, name: str, phys: Physical | None, metas: list[ArrayMeta], idx: ChunkIndex) -> list[dict[str, Any]]:
        """Stats of many instances of one array name, from the index columns (vectorised)."""
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
        for i, m in enumerate(metas):
            if m.is_string:
                out[i] = self.string_stats(name, phys, m, idx)
                continue
            mn = mx = None
            if single[i]:
                if has1[i]:
                    w = wide_dtype(m.sdtype)
                    v = views.get(w.char)
                    if v is None:
                        v = views[w.char] = (idx.chunks["mn"].view(w)[r1].tolist(), idx.chunks["mx"].view(w)[r1].tolist())
                    mn, mx = v[0][i], v[1][i]
            elif hi[i] > lo_l[i]:
                w = wide_dtype(m.sdtype)
                sl = slice(lo_l[i], int(hi[i]))
                h = has[sl]
                if h.any():
                    mn = idx.chunks["mn"].view(w)[sl][h].min().item()
                    mx = idx.chunks["mx"].view(w)[sl][h].max().item()
            out[i] = {"null_count": m.row_count - nn[i], "min": mn, "max": mx}
        return out

    def string_stats(self, name: str, phys: Physical | None, m: ArrayMeta, idx: ChunkIndex) -> dict[str, Any]:
        """``null_count`` / ``min`` / ``max`` of one string instance (its chunks are read back)."""
        rows = idx.rows_of(m.aid)
        with self.lock:
            cids = set(idx.chunks["cid"][rows].tolist()) | {c for (a, c) in self.pending.get(name, {}) if a == m.aid}
        order = np.asarray(sorted(cids), np.int64)
        valid = K.valid_shapes(m.kshape, m.kchunk, order) if order.size else None
        lo = hi = None
        for j, cid in enumerate(order.tolist()):
            arr, mk = self.load_chunk(name, phys, m, cid)
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

    def flush(self, meta: StoreMeta, dirty: dict[int, tuple[str, ArrayMeta]], dead: set[int], commit: Callable[[], None]) -> None:
        """Write one segment per touched array name, then commit the metadata (via ``commit``).

        ``dirty``: the array instances defined or written since the last flush (aid -> (name,
        meta)); ``dead``: the instances deleted since then, whose rows leave the indexes.
        """
        with self.lock:
            gen = meta.generation + 1
            token = uuid.uuid4().hex[:8]
            new_idx: dict[str, ChunkIndex] = {}
            new_loc: dict[str, tuple[str, int, int, int, int]] = {}
            metas = {aid: m for aid, (_, m) in dirty.items()}
            dead_arr = np.asarray(sorted(dead), np.int64)
            self._deferred_stats(metas)
            for name, pend in self.pending.items():
                items = sorted((k, p) for k, p in pend.items() if k[0] in metas)
                if not items:
                    continue
                phys = meta.physical_for(name)
                path, frames, res = self._segment(phys, gen, token, self.index(name, phys), items, dead_arr, self.pending.payload)
                self.storage.write(path, frames)
                new_idx[name], new_loc[name] = res["index"], res["loc"]
            self.storage.barrier()
            old_stats: list[tuple[ArrayMeta, Any]] = []
            by_name: dict[str, list[ArrayMeta]] = {}
            for name, m in dirty.values():
                by_name.setdefault(name, []).append(m)
            for name, ms in by_name.items():
                idx = new_idx.get(name) or self.index(name, meta.physical.get(name))
                for m, st in zip(ms, self.batch_stats(name, meta.physical.get(name), ms, idx)):
                    old_stats.append((m, m.stats))
                    m.stats = st
            try:
                _commit_locations(meta, new_loc, gen, commit)
            except BaseException:
                for m, st in old_stats:
                    m.stats = st
                raise
            self._indexes.update(new_idx)
            self.pending.reset()

    # ------------------------------------------------------------------ verify
    def verify(self, meta: StoreMeta) -> list[str]:
        """Check every index footer and every frame (checksums, sizes, offsets); one line per problem."""
        problems: list[str] = []
        live = _live_aids(meta)
        need: dict[str, dict[int, int]] = {}  # bytes a numeric chunk of each live instance must have
        strings: dict[str, dict[int, ArrayMeta]] = {}  # string instances: their chunks are parsed
        for ds in meta.datasets.values():
            for a, m in ds.arrays.items():
                if m.is_string:
                    strings.setdefault(a, {})[m.aid] = m
                else:
                    need.setdefault(a, {})[m.aid] = m.chunk_nbytes
        for name, phys in meta.physical.items():
            self._indexes.pop(name, None)  # re-read the footer from storage
            try:
                idx = self.index(name, phys)
            except Exception as e:  # noqa: BLE001 - report and go on
                problems.append(f"array {name!r}: index unreadable: {e}")
                continue
            c = idx.chunks  # its structure was checked when it was decoded
            rows = np.flatnonzero(np.isin(c["aid"], live.get(name, np.empty(0, np.int64))))
            want = need.get(name, {})
            short = sorted({a for a, nb in zip(c["aid"][rows].tolist(), c["nbytes"][rows].tolist()) if nb < want.get(a, 0)})
            if short:
                problems.append(f"array {name!r}: the index gives chunks of instance(s) {short[:5]} fewer bytes than "
                                "their shape needs (damaged index)")
            frames = np.unique(c["frame"][rows])
            for start in range(0, len(frames), 256):
                part = frames[start:start + 256]
                try:
                    blobs = self._fetch(idx, part)
                except Exception as e:  # noqa: BLE001
                    problems.append(f"array {name!r}: cannot read frames: {e}")
                    continue
                for fno, blob in zip(part.tolist(), blobs):
                    try:
                        raw = self._decode(idx, fno, blob)  # checks its checksum and its decoded size
                    except Exception as e:  # noqa: BLE001
                        problems.append(f"array {name!r}: {e}")
                        continue
                    smetas = strings.get(name)
                    if smetas:
                        mv = memoryview(raw)
                        for r in rows[c["frame"][rows] == fno].tolist():
                            sm = smetas.get(int(c["aid"][r]))
                            if sm is None:
                                continue
                            o = int(c["foff"][r])
                            try:
                                decode_strings(mv[o:o + int(c["nbytes"][r])], tuple(sm.kchunk.tolist()), f"array {name!r}")
                            except Exception as e:  # noqa: BLE001
                                problems.append(f"array {name!r}: chunk {int(c['cid'][r])} of instance {sm.aid}: {e}")
        return problems

    # ------------------------------------------------------------------ compact
    def compact(self, meta: StoreMeta, commit: Callable[[], None], tick: Callable[[], None] = lambda: None) -> int:
        """Rewrite every array name's live chunks into one fresh segment; returns bytes freed.

        ``tick()`` is called after each array name is rewritten (progress reporting).
        """
        with self.lock:
            live = _live_aids(meta)
            gen = meta.generation + 1
            token = uuid.uuid4().hex[:8]
            new_idx: dict[str, ChunkIndex] = {}
            new_loc: dict[str, Any] = {}
            for name, phys in meta.physical.items():
                idx = self.index(name, phys)
                la = live.get(name, np.empty(0, np.int64))
                rows = np.flatnonzero(np.isin(idx.chunks["aid"], la))
                if rows.size == 0:
                    new_idx[name], new_loc[name] = ChunkIndex(), None
                else:
                    items = self._reload(idx, rows)
                    path, frames, res = self._segment(phys, gen, token, ChunkIndex(), items, np.empty(0, np.int64), self.pending.payload)
                    self.storage.write(path, frames)
                    new_idx[name], new_loc[name] = res["index"], res["loc"]
                tick()
            self.storage.barrier()
            before = self.storage.list("arrays")
            size_before = self.storage.size_of(before)
            _commit_locations(meta, new_loc, gen, commit)
            self._indexes.update(new_idx)
            keep = {p.index[0] for p in meta.physical.values() if p.index}
            for path in before:
                if path not in keep:
                    self.storage.delete(path)
            return size_before - self.storage.size_of(self.storage.list("arrays"))

    def _reload(self, idx: ChunkIndex, rows: np.ndarray) -> list[tuple[tuple[int, int], Pending]]:
        frames = idx.chunks["frame"][rows]
        uf = np.unique(frames)
        blobs = self._fetch(idx, uf)
        raws = _executor.run(lambda k: self._decode(idx, int(uf[k]), blobs[k]), range(len(uf)))
        where = {int(f): k for k, f in enumerate(uf.tolist())}
        c = idx.chunks
        items = []
        for r, f in zip(rows.tolist(), frames.tolist()):
            o, nb = int(c["foff"][r]), int(c["nbytes"][r])
            raw = bytes(memoryview(raws[where[f]])[o:o + nb])
            comp = codecs.compress(self.codec, raw) if nb >= SOLO_FRAME else None
            items.append(((int(c["aid"][r]), int(c["cid"][r])),
                          Pending(comp if comp else raw, comp is not None, nb, int(c["nn"][r]), int(c["mn"][r]), int(c["mx"][r]),
                                  bool(c["has"][r]), bool(c["wmask"][r]))))
        return items


def _breaks(o: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Where to split a run of frames (sorted by offset) into separate range reads."""
    if len(o) < 2:
        return np.zeros(0, np.int64)
    gap = o[1:] - np.maximum.accumulate(e)[:-1] > COALESCE_GAP
    out = []
    start = int(o[0])
    for j in range(1, len(o)):  # per frame, not per element: frames are few compared with cells
        if gap[j - 1] or int(e[j]) - start > COALESCE_MAX:
            out.append(j)
            start = int(o[j])
    return np.asarray(out, np.int64)


def _mask_bytes(mask: np.ndarray) -> bytes:
    """A written-cells mask as packed bits, padded to 8 bytes."""
    b = np.packbits(mask.reshape(-1)).tobytes()
    return b + b"\0" * (-len(b) % 8)


def _commit_locations(meta: StoreMeta, new_loc: dict[str, Any], gen: int, commit: Callable[[], None]) -> None:
    """Point the metadata at the new index footers and commit it; on failure restore the old state."""
    old_loc = {name: meta.physical[name].index for name in new_loc}
    old_gen = meta.generation
    try:
        for name, loc in new_loc.items():
            meta.physical[name].index = loc
        meta.generation = gen
        commit()
    except BaseException:
        for name, loc0 in old_loc.items():
            meta.physical[name].index = loc0
        meta.generation = old_gen
        raise


def _live_aids(meta: StoreMeta) -> dict[str, np.ndarray]:
    live: dict[str, list[int]] = {}
    for ds in meta.datasets.values():
        for name, m in ds.arrays.items():
            live.setdefault(name, []).append(m.aid)
    return {k: np.asarray(sorted(v), np.int64) for k, v in live.items()}
