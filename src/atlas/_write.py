"""Writes: a box of data into the chunks it touches, buffered as pending chunks of the transaction.

A chunk the box covers whole is built from the data alone; a chunk it covers in part is
read back first (pending or stored) and merged (read-modify-write). Large chunks are
compressed and summarised here, on the pool; small ones wait for the flush. The caller
serialises writes (the store's write lock), so no update of a chunk is lost.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _executor, codecs
from ._chunks import encode_strings
from ._lazy import K
from ._meta import ArrayMeta
from ._pending import Pending
from ._read import _WORD, PARALLEL_MIN_BYTES, View, load_chunk, pad, pad_count
from ._stats import chunk_stats

SOLO_FRAME = 16 * 1024  # a chunk this large is compressed on its own, when it is written
MAX_CHUNK_BYTES = 2**31 - 2**25  # a chunk is built whole in memory and compressed as one frame (lz4's limit)


def mask_bytes(mask: np.ndarray) -> bytes:
    """A written-cells mask as packed bits, padded to 8 bytes."""
    b = np.packbits(mask.reshape(-1)).tobytes()
    return b + b"\0" * (-len(b) % 8)


def _merge_mask(m: ArrayMeta, had: bool, old: np.ndarray | None, src: np.ndarray, box: np.ndarray,
                valid: np.ndarray) -> np.ndarray | None:
    """Written-cells mask after writing ``box`` at ``src`` into a chunk (None = every cell written).

    An edge chunk keeps its mask even when all its valid cells are written: its padding is
    unwritten, and becomes valid if the array grows (``_resize``). A mask-less chunk loaded
    (``had``) counts as written wherever it is valid.
    """
    if had and old is None:
        if (valid == m.kchunk).all():
            return None
        old = edge_mask(m, valid)
    mask = np.zeros(tuple(m.kchunk.tolist()), bool) if old is None else old
    mask[tuple(slice(a, a + b) for a, b in zip(src, box))] = True
    if mask.all():
        return None
    return mask


def edge_mask(m: ArrayMeta, valid: np.ndarray) -> np.ndarray:
    """The mask of a chunk whose valid cells (extent ``valid``) are all written."""
    mask = np.zeros(tuple(m.kchunk.tolist()), bool)
    mask[tuple(slice(0, int(v)) for v in valid)] = True
    return mask


def check_chunk_size(name: str, m: ArrayMeta) -> None:
    if m.chunk_nbytes > MAX_CHUNK_BYTES:
        raise ValueError(
            f"array {name!r}: its chunks ({list(m.chunk)}, {m.chunk_nbytes / 2**30:.1f} GiB "
            f"of {m.dtype} each) are too large to write (at most {MAX_CHUNK_BYTES / 2**30:.1f} GiB); "
            "define it with a smaller chunk_shape (chunk_shape defaults to the whole shape)"
        )


def small_whole(m: ArrayMeta, data: np.ndarray) -> Pending | None:
    """The pending entry of a write that is a whole small one-chunk numeric array (its bytes are
    the chunk, its summary left for the flush), or None: then :func:`write` takes it."""
    lay = m.layout
    if lay.single_chunk and lay.chunk_nbytes < SOLO_FRAME and data.shape == m.shape and not m.is_string:
        nb = data.nbytes
        if nb:
            return Pending(data.tobytes(), False, nb, -1, 0, 0, False)
    return None


def write(v: View, name: str, m: ArrayMeta, start: Sequence[int], data: np.ndarray) -> None:
    """Buffer ``data`` (storage-typed, C-contiguous) at ``start`` as pending chunks of ``v``."""
    lay = m.layout
    if lay.empty or data.size == 0:
        return
    if lay.chunk_nbytes > MAX_CHUNK_BYTES:
        check_chunk_size(name, m)
    codec = v.frames.codec
    if lay.single_chunk and data.shape == m.shape and not m.is_string:
        # the write is the whole one-chunk array: its bytes are the chunk; small ones get stats at the flush
        entry = small_whole(m, data)
        if entry is None:  # a large chunk: compressed and summarised now
            raw = data.reshape(-1)
            nn, mn, mx, has = chunk_stats(m, raw, m.kchunk.reshape(1, -1))
            entry = Pending(codecs.compress(codec, raw.view(np.uint8).data), True, data.nbytes, int(nn[0]), int(mn[0]),
                            int(mx[0]), bool(has[0]))
        v.pending.put_each([(name, (m.aid, 0), entry)])
        return
    kstart, kcount = pad(start), pad_count(data.shape)
    d = data.reshape(tuple(kcount.tolist()))
    ids, src, dst, box = K.plan_box(m.kshape, m.kchunk, kstart, kcount)
    k = ids.shape[0]
    if k == 0:
        return
    valid = K.valid_shapes(m.kshape, m.kchunk, ids)
    full = (box == valid).all(1) & (src == 0).all(1)
    if m.is_string:
        _write_strings(v, name, m, ids, src, dst, box, valid, full, d)
        return
    ce = m.chunk_elems
    sd = m.sdtype
    isz = sd.itemsize
    cb = ce * isz
    edge = (valid != m.kchunk).any(1)
    buf = np.full(k * ce, m.fill_storage, sd) if ((~full).any() or edge.any()) else np.empty(k * ce, sd)
    track = m.fill is None  # without a fill, written cells must be told from unwritten ones
    masks: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(~full).tolist():
        base, old = load_chunk(v, name, m, int(ids[j]))
        if base is not None:
            buf[j * ce:(j + 1) * ce] = base.reshape(-1)
        if track:
            mk = _merge_mask(m, base is not None, old, src[j], box[j], valid[j])
            if mk is not None:
                masks[j] = mk
    if track:  # edge chunks written whole still mark their padding unwritten
        for j in np.flatnonzero(full & edge).tolist():
            masks[j] = edge_mask(m, valid[j])
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
        nn, mn, mx, has = chunk_stats(m, buf[a * ce:b * ce], valid[a:b], None if written is None else written[a * ce:b * ce])
        out = []
        for i, j in enumerate(range(a, b)):
            body = bu8[j * cb:(j + 1) * cb].tobytes()
            mk = masks.get(j)
            if mk is not None:
                body += mask_bytes(mk)
            payload = codecs.compress(codec, body) if solo else body
            out.append(Pending(payload, solo, len(body), int(nn[i]), int(mn[i]), int(mx[i]), bool(has[i]), mk is not None))
        return out

    nt = _executor.num_threads()
    parallel = k > 1 and k * cb >= PARALLEL_MIN_BYTES and nt > 1
    step = max(1, -(-k // (2 * nt))) if parallel else k
    entries = [e for part in _executor.run(encode, [(a, min(k, a + step)) for a in range(0, k, step)], parallel=parallel)
               for e in part]
    v.pending.put(name, {(m.aid, cid): entries[j] for j, cid in enumerate(ids.tolist())})


def _write_strings(v: View, name: str, m: ArrayMeta, ids: np.ndarray, src: np.ndarray, dst: np.ndarray,
                   box: np.ndarray, valid: np.ndarray, full: np.ndarray, d: np.ndarray) -> None:
    shape = tuple(m.kchunk.tolist())
    entries = {}
    for j, cid in enumerate(ids.tolist()):
        chunk, old = (None, None) if full[j] else load_chunk(v, name, m, cid)
        mk = None
        if not full[j] and m.fill is None:
            mk = _merge_mask(m, chunk is not None, old, src[j], box[j], valid[j])
        elif m.fill is None and (valid[j] != m.kchunk).any():
            mk = edge_mask(m, valid[j])
        if chunk is None:
            chunk = np.full(shape, m.fill_storage, dtype=object)
        ss = tuple(slice(a, a + b) for a, b in zip(src[j], box[j]))
        ds = tuple(slice(a, a + b) for a, b in zip(dst[j], box[j]))
        chunk[ss] = d[ds]
        vsl = tuple(slice(0, x) for x in valid[j])
        vals = (chunk[vsl] if mk is None else chunk[vsl][mk[vsl]]).ravel()
        nn = int(vals.size - (np.count_nonzero(vals == m.fill) if m.fill is not None else 0))
        raw = encode_strings(chunk)
        if mk is not None:
            raw += mask_bytes(mk)
        entries[(m.aid, cid)] = Pending(raw, False, len(raw), nn, 0, 0, nn > 0, mk is not None)
    v.pending.put(name, entries)
