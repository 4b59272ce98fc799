"""Commits: a transaction (flush) or a snapshot's live chunks (compact) -> new segments -> new metadata.

Each function builds the next state from an old one without changing it: new segment
files are written, then ``commit(meta)`` makes every file written so far durable (one
``barrier``) and publishes the new metadata in one atomic step. If anything fails, the old state and the transaction are
intact (the new segment files are orphans that ``compact`` reclaims). ``verify`` checks a
snapshot's files.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from . import _executor, codecs
from ._chunks import decode_strings
from ._frames import FRAME_TARGET, FrameReader
from ._meta import ArrayMeta, DatasetMeta, IndexLocation, Physical, StoreMeta
from ._pending import Pending
from ._read import View, load_chunk
from ._segments import CHUNK_COLUMNS, ChunkIndex
from ._stats import instance_stats, stats_columns
from ._write import SOLO_FRAME

#: raw bytes a batch must have to compress on the pool (a 64 KiB frame compresses in about 0.1 ms,
#: less than handing it to another thread and back costs on a busy machine)
PARALLEL_COMPRESS_BYTES = 1024 * 1024
FLUSH_BATCH_BYTES = 4 * 1024 * 1024  # a flush compresses and writes frames in batches of about this size (bounds its memory)

#: publishes a new metadata: makes every file written so far durable (``storage.barrier()``),
#: then replaces the metadata atomically (``_history.commit``)
Commit = Callable[[StoreMeta], None]
Items = list[tuple[tuple[int, int], Pending]]


class NewSegment:
    """One segment being written: its path, its bytes as a generator, then its merged index."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.index: ChunkIndex | None = None
        self.location: IndexLocation | None = None


def build_segment(fr: FrameReader, phys: Physical, gen: int, token: str, base: ChunkIndex, items: Items,
                  dead: np.ndarray, metas: Mapping[int, ArrayMeta] | None = None) -> tuple[NewSegment, Iterator[bytes]]:
    """Plan a segment of ``items``; returns the segment record and a generator of its bytes.

    Chunks whose summary was left for the flush are summarised here (``metas``: their
    instances by aid, see ``_stats.stats_columns``).

    The generator yields the frames (compressed in batches on the pool, so memory stays
    bounded) and finally the index footer; once it is exhausted, the record holds the index
    (``base`` merged with the new chunks, rows of ``dead`` instances dropped) and its location.
    """
    codec = fr.codec
    seg = NewSegment(f"{phys.dir}/s{gen:08d}-{token}.seg")
    # frames go to the segment in (chunk id, instance) order: the same chunk of every dataset
    # written in one flush sits side by side, so a stacked read is a few contiguous ranges
    items = sorted(items, key=lambda kp: (kp[0][1], kp[0][0]))
    ps = [p for _, p in items]
    nbytes = [p.nbytes for p in ps]
    comp = [p.compressed for p in ps]
    frame: list[int] = []
    foff: list[int] = []
    groups: list[list[int]] = []  # item numbers per frame; a compressed item is a frame alone
    rlens: list[int] = []
    cur: list[int] = []
    cur_size = 0
    for j, nb in enumerate(nbytes):  # plain Python on lists: thousands of tiny chunks per flush
        c = comp[j]
        if cur and (c or cur_size + nb > FRAME_TARGET):
            groups.append(cur)
            rlens.append(cur_size)
            cur, cur_size = [], 0
        cur_size = (cur_size + 7) & ~7  # every chunk starts 8-byte aligned in its frame
        frame.append(len(groups))
        foff.append(cur_size)
        cur.append(j)
        cur_size += nb
        if c:
            groups.append(cur)
            rlens.append(cur_size)
            cur, cur_size = [], 0
    if cur:
        groups.append(cur)
        rlens.append(cur_size)
    col = {"aid": [k[0] for k, _ in items], "cid": [k[1] for k, _ in items], "frame": frame, "foff": foff,
           "nbytes": nbytes, "wmask": [p.masked for p in ps]}
    cols = {k: np.array(col[k], t) for k, t in CHUNK_COLUMNS.items() if k in col}
    cols["nn"], cols["mn"], cols["mx"], cols["has"] = stats_columns(items, metas)
    aligned = not any(nb & 7 for nb in nbytes)  # every chunk a whole number of 8 bytes: no padding anywhere

    def enc(g: list[int]) -> tuple[bytes, int]:
        first = ps[g[0]]
        b = first.payload() if first.compressed else codecs.compress(codec, frame_bytes(ps, foff, g, aligned))
        return b, codecs.frame_checksum(codec, b)

    def frames() -> Iterator[bytes]:
        off = np.zeros(len(groups), np.int64)
        clen = np.zeros(len(groups), np.int64)
        crc = np.zeros(len(groups), np.uint32)
        pos = 0
        g0 = 0
        while g0 < len(groups):
            g1, size, work = g0, 0, 0
            while g1 < len(groups) and (g1 == g0 or size < FLUSH_BATCH_BYTES):
                size += rlens[g1]
                work += 0 if comp[groups[g1][0]] else rlens[g1]
                g1 += 1
            for i, (b, c) in enumerate(_executor.run(enc, groups[g0:g1], parallel=work >= PARALLEL_COMPRESS_BYTES), g0):
                off[i], clen[i], crc[i] = pos, len(b), c
                pos += len(b)
                yield b
            g0 = g1
        fr_cols: dict[str, np.ndarray] = {"off": off, "clen": clen, "rlen": np.asarray(rlens, np.int64), "crc": crc}
        new = base.merged(seg.path, fr_cols, cols, dead)
        footer, rawlen, fcodec = new.encode_footer(codec)
        seg.index = new
        seg.location = IndexLocation(seg.path, pos, len(footer), rawlen, codecs.checksum(footer), fcodec)
        yield footer

    return seg, frames()


def frame_bytes(ps: list[Pending], foff: list[int], g: list[int], aligned: bool = False) -> bytes:
    """The raw bytes of a frame of uncompressed entries: ``ps[j]`` at ``foff[j]`` for the item
    numbers ``g`` (consecutive), zeros between; ``aligned``: no entry is followed by padding
    (the payloads back to back, in one join)."""
    if aligned:
        return b"".join([p.payload() if p.data is None else p.data for p in ps[g[0]:g[-1] + 1]])
    parts: list[bytes] = []
    size = 0
    for j in g:
        pad = foff[j] - size
        if pad:
            parts.append(b"\0" * pad)
        data = ps[j].payload()
        parts.append(data)
        size += pad + len(data)
    return b"".join(parts)


def _write_segment(fr: FrameReader, phys: Physical, gen: int, token: str, base: ChunkIndex, items: Items,
                   dead: np.ndarray, metas: Mapping[int, ArrayMeta] | None = None) -> NewSegment:
    seg, data = build_segment(fr, phys, gen, token, base, items, dead, metas)
    fr.storage.write(seg.path, data)
    return seg


def flush(v: View, meta: StoreMeta, dirty: dict[int, tuple[str, str]], dead: set[int],
          commit: Commit, reindexed: Iterable[str] = ()) -> tuple[StoreMeta, dict[str, ChunkIndex]]:
    """The next committed state of transaction ``v`` (working metadata ``meta``), published by ``commit``.

    ``dirty``: the instances defined or written since the last flush (aid -> (dataset,
    array)); ``dead``: the instances deleted since then, whose rows leave the indexes;
    ``reindexed``: array names whose index ``v`` changed without new chunks (a resize re-keyed
    chunks): they get a new segment too (an index footer alone, if nothing else is pending).
    Returns the new metadata and the new chunk indexes of the array names written.
    """
    fr = v.frames
    new = meta.copy()
    new.generation = gen = meta.generation + 1
    token = uuid.uuid4().hex[:8]
    metas: dict[int, ArrayMeta] = {}
    by_name: dict[str, list[tuple[str, ArrayMeta]]] = {}
    touched: dict[str, DatasetMeta] = {}  # the datasets of dirty instances
    ds: DatasetMeta | None = None
    for aid, (dsn, an) in dirty.items():  # an ingest dirties a dataset's instances one after another
        if ds is None or ds.name != dsn:
            ds = touched.get(dsn)
            if ds is None:
                ds = touched[dsn] = meta.datasets[dsn]
        m = ds.arrays[an]
        metas[aid] = m
        pairs = by_name.get(an)
        if pairs is None:
            pairs = by_name[an] = []
        pairs.append((dsn, m))
    dead_arr = np.asarray(sorted(dead), np.int64)
    written: dict[str, Items] = {}
    for name in v.pending.names():
        items = [(k, p) for k, p in v.pending.items(name) if k[0] in metas]
        if items:
            written[name] = items
    for name in reindexed:
        written.setdefault(name, [])
    new_idx: dict[str, ChunkIndex] = {}
    for name, items in written.items():
        phys = new.physical_for(name)
        seg = _write_segment(fr, phys, gen, token, v.index(name), items, dead_arr, metas)
        new_idx[name] = seg.index  # type: ignore[assignment]
        new.physical[name] = Physical(phys.dir, seg.location)
    updates: dict[str, dict[str, ArrayMeta]] = {dsn: {} for dsn in touched}
    for name, pairs in by_name.items():
        idx = new_idx.get(name) or v.index(name)
        stats = instance_stats([m for _, m in pairs], idx, lambda m, cid: load_chunk(v, name, m, cid),
                               lambda aid: v.pending.cids_of(name, aid))
        for (dsn, m), st in zip(pairs, stats):
            updates[dsn][name] = m.with_stats(st)
    for dsn, ds in touched.items():  # a new entry per dataset: the transaction's stays as it is
        new.datasets[dsn] = DatasetMeta(dsn, dict(ds.attrs), {**ds.arrays, **updates[dsn]})
    commit(new)
    return new, new_idx


def compact(v: View, meta: StoreMeta, commit: Commit,
            tick: Callable[[], None] = lambda: None) -> tuple[StoreMeta, dict[str, ChunkIndex], list[str]]:
    """Rewrite every array name's live chunks of snapshot ``v`` into one fresh segment; commit.

    An array name whose index is one segment of live chunks only is left as it is (nothing
    to gain); when no name needs a rewrite, nothing is committed and ``meta`` is returned.
    Returns the new metadata, the new indexes and the files of ``arrays/`` no longer needed
    by the new state (the caller keeps those older retained versions need, and deletes the
    rest once no reader of an older state needs them).
    ``tick()`` is called after each array name (progress reporting).
    """
    fr = v.frames
    live = live_aids(meta)
    new = meta.copy()
    new.generation = gen = meta.generation + 1
    token = uuid.uuid4().hex[:8]
    new_idx: dict[str, ChunkIndex] = {}
    for name, phys in meta.physical.items():
        idx = v.index(name)
        rows = np.flatnonzero(np.isin(idx.chunks["aid"], live.get(name, np.empty(0, np.int64))))
        if len(idx.segments) <= 1 and rows.size == len(idx):
            new_idx[name] = idx  # already compact
        elif rows.size == 0:
            new_idx[name] = ChunkIndex()
            new.physical[name] = Physical(phys.dir, None)
        else:
            seg = _write_segment(fr, phys, gen, token, ChunkIndex(), _reload(fr, idx, rows), np.empty(0, np.int64))
            new_idx[name] = seg.index  # type: ignore[assignment]
            new.physical[name] = Physical(phys.dir, seg.location)
        tick()
    before = fr.storage.list("arrays")
    if new.physical == meta.physical:
        new = meta  # nothing rewritten: no new version
    else:
        commit(new)
    keep = {s for i in new_idx.values() for s in i.segments}
    return new, new_idx, [p for p in before if p not in keep]


def _reload(fr: FrameReader, idx: ChunkIndex, rows: np.ndarray) -> Items:
    """Rows of an index as pending entries again (compact rewrites them)."""
    frames = idx.chunks["frame"][rows]
    uf = np.unique(frames)
    blobs = fr.fetch(idx, uf)
    raws = _executor.run(lambda k: fr.decode(idx, int(uf[k]), blobs[k]), range(len(uf)))
    where = {int(f): k for k, f in enumerate(uf.tolist())}
    c = idx.chunks
    items = []
    for r, f in zip(rows.tolist(), frames.tolist()):
        o, nb = int(c["foff"][r]), int(c["nbytes"][r])
        raw = bytes(memoryview(raws[where[f]])[o:o + nb])
        comp = codecs.compress(fr.codec, raw) if nb >= SOLO_FRAME else None
        items.append(((int(c["aid"][r]), int(c["cid"][r])),
                      Pending(comp if comp else raw, comp is not None, nb, int(c["nn"][r]), int(c["mn"][r]), int(c["mx"][r]),
                              bool(c["has"][r]), bool(c["wmask"][r]))))
    return items


def verify(fr: FrameReader, meta: StoreMeta) -> list[str]:
    """Check every index footer and every live frame of ``meta`` (checksums, sizes, offsets); one line per problem."""
    problems: list[str] = []
    live = live_aids(meta)
    need: dict[str, dict[int, int]] = {}  # bytes a numeric chunk of each live instance must have
    strings: dict[str, dict[int, ArrayMeta]] = {}  # string instances: their chunks are parsed
    for ds in meta.datasets.values():
        for a, m in ds.arrays.items():
            if m.is_string:
                strings.setdefault(a, {})[m.aid] = m
            else:
                need.setdefault(a, {})[m.aid] = m.chunk_nbytes
    for name, phys in meta.physical.items():
        try:
            idx = fr.read_index(name, phys)  # re-read from storage, not from a cache
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
                blobs = fr.fetch(idx, part)
            except Exception as e:  # noqa: BLE001
                problems.append(f"array {name!r}: cannot read frames: {e}")
                continue
            for fno, blob in zip(part.tolist(), blobs):
                try:
                    raw = fr.decode(idx, fno, blob)  # checks its checksum and its decoded size
                except Exception as e:  # noqa: BLE001
                    problems.append(f"array {name!r}: {e}")
                    continue
                problems.extend(_check_strings(name, strings.get(name), idx, rows, fno, raw))
    return problems


def _check_strings(name: str, smetas: dict[int, ArrayMeta] | None, idx: ChunkIndex, rows: np.ndarray, fno: int,
                   raw: Any) -> list[str]:
    if not smetas:
        return []
    out = []
    c = idx.chunks
    mv = memoryview(raw)
    for r in rows[c["frame"][rows] == fno].tolist():
        sm = smetas.get(int(c["aid"][r]))
        if sm is None:
            continue
        o = int(c["foff"][r])
        try:
            decode_strings(mv[o:o + int(c["nbytes"][r])], tuple(sm.kchunk.tolist()), f"array {name!r}")
        except Exception as e:  # noqa: BLE001
            out.append(f"array {name!r}: chunk {int(c['cid'][r])} of instance {sm.aid}: {e}")
    return out


def live_aids(meta: StoreMeta) -> dict[str, np.ndarray]:
    """The instance ids of every array name that some dataset still has, sorted."""
    live: dict[str, list[int]] = {}
    for ds in meta.datasets.values():
        for name, m in ds.arrays.items():
            live.setdefault(name, []).append(m.aid)
    return {k: np.asarray(sorted(v), np.int64) for k, v in live.items()}
