"""Batched calls equal the loops they replace: read_arrays_across, array_stats_across,
DatasetView.read_arrays / define_arrays / write_arrays; and their reads overlap on the pool."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas
from atlas import _read

DTYPES = {"a": ("float32", float("nan")), "b": ("int16", -1), "t": ("timestamp_nanoseconds", None), "s": ("string", "")}


def _data(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name == "a":
        return rng.random(shape).astype(np.float32)
    if name == "b":
        return rng.integers(-5, 50, shape).astype(np.int16)
    if name == "t":
        return rng.integers(0, 10**12, shape).astype("datetime64[ns]")
    return np.asarray(rng.choice(["x", "yy", "zzz"], size=shape), dtype=object)


def _build(path, seed: int, n: int, flush_every: int) -> tuple[atlas.Atlas, list[str]]:
    rng = np.random.default_rng(seed)
    store = atlas.Atlas.create(path)
    names = []
    for i in range(n):
        d = store.create_dataset(f"d{i}")
        names.append(d.name)
        rows = int(rng.integers(4, 12))
        arrays = [a for a in DTYPES if rng.random() < 0.8]
        d.define_arrays({a: dict(dtype=DTYPES[a][0], dims=["r", "c"], shape=[rows, 6],
                                 chunk_shape=[int(rng.integers(1, 5)), 3], fill_value=DTYPES[a][1]) for a in arrays})
        if arrays and rng.random() < 0.9:  # some arrays stay unwritten (fill values)
            d.write_arrays({a: _data(a, (rows - 1, 6), rng) for a in arrays}, start=[1, 0])
        if i % flush_every == flush_every - 1:
            store.flush()
    return store, names


def _same(x, y) -> None:
    assert (x is None) == (y is None)
    if x is not None:
        assert type(x) is type(y) and x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_across_reads_of_0d_arrays_are_0d_arrays(tmp_path):
    """Each dataset's part of a batched read is what ``read_array`` returns: a 0-D array
    (not a NumPy scalar) for a scalar array, datetime64 for timestamps."""
    store = atlas.Atlas.create(tmp_path / "s")
    for i, n in enumerate("xyz"):
        d = store.create_dataset(n)
        d.define_array("v", "float64", [], [])
        d.write_array("v", [], np.array(i + 0.5))
        d.define_array("t", "timestamp_ns", ["i"], [2])
        d.write_array("t", [0], np.array([i, 2 * i], "datetime64[ns]"))
    got = store.read_arrays_across(["v", "t"], list("xyz"))
    for i, n in enumerate("xyz"):
        for a in ("v", "t"):
            _same(got[a][i], store.open_dataset(n).read_array(a))
        assert got["v"][i].shape == () and float(got["v"][i]) == i + 0.5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 12), flush_every=st.integers(1, 5),
       box=st.sampled_from([(None, None), ([0, 0], [3, 6]), ([1, 2], [2, 3])]))
def test_batched_reads_equal_the_loops(tmp_path_factory, seed, n, flush_every, box):
    store, names = _build(tmp_path_factory.mktemp("b") / "s", seed, n, flush_every)  # some flushed, some pending
    start, shape = box
    arrays = list(DTYPES) + ["missing"]
    got = store.read_arrays_across(arrays, names, start, shape)
    for a in arrays:
        want = [store.open_dataset(n).read_array(a, start, shape) if store.open_dataset(n).array_meta(a) else None
                for n in names]
        assert len(got[a]) == len(names)
        for x, y in zip(got[a], want):
            _same(x, y)
    for n_ in names:
        ds = store.open_dataset(n_)
        both = ds.read_arrays(arrays, start, shape)
        assert list(both) == arrays
        for a in arrays:
            _same(both[a], ds.read_array(a, start, shape))
    # stacked: same rules as read_array_across_stacked, same results or the same error
    with_all = [n_ for n_ in names if all(store.open_dataset(n_).array_meta(a) for a in DTYPES)]
    if with_all:
        sbox = ([0, 0], [3, 6])
        got = store.read_arrays_across(list(DTYPES), with_all, *sbox, stacked=True)
        for a in DTYPES:
            _same(got[a], store.read_array_across_stacked(a, with_all, *sbox))
    if len(names) > 1 and len(with_all) < len(names):
        with pytest.raises(KeyError, match="has no array"):
            store.read_arrays_across(list(DTYPES), names, [0, 0], [3, 6], stacked=True)


def test_stats_across_equal_array_stats(tmp_path):
    store, names = _build(tmp_path / "s", 7, 14, 3)
    store.create_dataset("pending").define_array("a", "float32", ["r", "c"], [2, 6])  # never flushed: masked
    names.append("pending")
    for a in DTYPES:
        cols = store.array_stats_across(a, names)
        for i, n_ in enumerate(names):
            want = store.open_dataset(n_).array_stats(a)
            if want is None:
                assert cols["row_count"].mask[i] and cols["min"].mask[i]
                continue
            assert cols["row_count"][i] == want["row_count"] and cols["null_count"][i] == want["null_count"]
            if want["min"] is None:
                assert cols["min"].mask[i] and cols["max"].mask[i]
            else:
                assert cols["min"][i] == want["min"] and cols["max"][i] == want["max"]
        if a == "t":
            assert cols["min"].dtype == np.dtype("datetime64[ns]")
    with pytest.raises(KeyError, match="nope"):
        store.array_stats_across("a", ["nope"])


def test_define_and_write_arrays_are_all_or_nothing(tmp_path):
    store = atlas.Atlas.create(tmp_path / "s")
    d = store.create_dataset("d")
    d.define_arrays({"x": dict(dtype="int8", dims=["t"], shape=[4])})
    with pytest.raises(FileExistsError, match="'x'"):
        d.define_arrays({"y": dict(dtype="int8", dims=["t"], shape=[4]), "x": dict(dtype="int8", dims=["t"], shape=[4])})
    with pytest.raises(ValueError, match="'z'"):
        d.define_arrays({"y": dict(dtype="int8", dims=["t"], shape=[4]), "z": dict(dtype="int8", dims=["t"], shape=[4, 4])})
    with pytest.raises(TypeError, match="'w'"):
        d.define_arrays({"w": dict(dtype="int8", shape=[4])})
    assert d.list_arrays() == ["x"]
    d.define_arrays({"y": dict(dtype="float64", dims=["t"], shape=[4], fill_value=0.5)})
    with pytest.raises(TypeError, match="'y'"):
        d.write_arrays({"x": np.ones(4, np.int8), "y": np.ones(4, np.float32)})  # wrong dtype for y
    with pytest.raises(ValueError, match="'x'"):
        d.write_arrays({"y": np.ones(4), "x": np.ones(5, np.int8)})  # does not fit
    np.testing.assert_array_equal(d.read_array("x"), np.zeros(4, np.int8))  # nothing was written
    np.testing.assert_array_equal(d.read_array("y"), np.full(4, 0.5))
    d.write_arrays({"x": np.ones(2, np.int8), "y": np.arange(2.0)}, start=[2])
    store.flush()
    back = atlas.Atlas.open(tmp_path / "s").open_dataset("d")
    np.testing.assert_array_equal(back.read_array("x"), [0, 0, 1, 1])
    np.testing.assert_array_equal(back.read_array("y"), [0.5, 0.5, 0.0, 1.0])


def test_one_spec_shared_by_several_arrays(tmp_path):
    """One spec mapping for many arrays (how ingest loops call it): each name is still checked,
    each array is an instance of its own, and one bad name defines none."""
    store = atlas.Atlas.create(tmp_path / "s")
    d = store.create_dataset("d")
    spec = dict(dtype="float32", dims=["t"], shape=[3], fill_value=float("nan"))
    with pytest.raises(ValueError, match="'_b'"):
        d.define_arrays({"a": spec, "_b": spec})
    with pytest.raises(TypeError, match="array name must be a str"):
        d.define_arrays({"a": spec, 7: spec})  # type: ignore[dict-item]
    store.create_dataset("e").define_arrays({"a": spec, "b": spec, "c": spec})
    d.define_arrays({"a": spec, "b": spec})
    with pytest.raises(FileExistsError, match="'b'"):
        d.define_arrays({"c": spec, "b": spec})
    assert d.list_arrays() == ["a", "b"]
    d.write_arrays({"a": np.arange(3, dtype=np.float32)})
    with pytest.raises(TypeError, match="start of write"):
        d.write_array("b", None, np.ones(3, np.float32))  # type: ignore[arg-type]  # only write_arrays defaults it
    store.flush()
    assert d.array_stats("a")["min"] == 0 and d.array_stats("a")["max"] == 2
    assert d.array_stats("b")["null_count"] == 3 and d.array_stats("b")["min"] is None
    e = store.open_dataset("e")
    assert e.list_arrays() == ["a", "b", "c"] and e.array_stats("a")["null_count"] == 3
    np.testing.assert_array_equal(atlas.Atlas.open(tmp_path / "s").open_dataset("d").read_array("a"), [0, 1, 2])


def _overlap_spy(monkeypatch):
    """Make the first decompression wait (up to 10 s) until a second one runs at the same moment;
    returns the set of thread names that decompressed and the barrier (broken: no overlap)."""
    seen: set[str] = set()
    real = atlas.codecs.decompress
    barrier = threading.Barrier(2, timeout=10)

    calls = itertools.count()

    def spy(*a, **k):
        seen.add(threading.current_thread().name)
        if next(calls) < 2:  # the first two decompressions must meet
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
        return real(*a, **k)

    monkeypatch.setattr(atlas.codecs, "decompress", spy)
    return seen, barrier, lambda: monkeypatch.setattr(atlas.codecs, "decompress", real)


def _big_store(tmp_path, arrays, n_datasets):
    store = atlas.Atlas.create(tmp_path / "s")
    rng = np.random.default_rng(0)
    for i in range(n_datasets):
        d = store.create_dataset(f"d{i}")
        for a in arrays:
            d.define_array(a, "float64", ["x"], [2**16], [2**13])
            d.write_array(a, [0], rng.random(2**16))
    store.flush()
    return atlas.Atlas.open(tmp_path / "s")  # a fresh handle: no frame cached, indexes read before the spy


def test_batched_reads_overlap_on_the_pool(tmp_path, monkeypatch):
    """The parts of one batch are decoded on several pool threads at once."""
    monkeypatch.setattr(atlas._executor, "_size", 2)
    arrays = [f"v{k}" for k in range(4)]
    store = _big_store(tmp_path, arrays, 4)
    names = store.list_datasets()
    for a in arrays:
        store.open_dataset(names[0]).array_meta(a)
        store._state.txn.base.index(a)  # chunk indexes loaded before the spy counts decodes
    seen, barrier, undo = _overlap_spy(monkeypatch)
    got = store.read_arrays_across(arrays, names, stacked=True)
    assert not barrier.broken, "the reads of one batch were not decoded concurrently"
    assert len(seen) >= 2 and all(t.startswith("atlas") for t in seen), seen
    undo()
    for a in arrays:
        np.testing.assert_array_equal(got[a], store.read_array_across_stacked(a, names))


def test_one_big_array_is_decoded_on_several_threads(tmp_path, monkeypatch):
    """A single array whose frames lie back to back in one segment (one coalesced range) still
    spreads its decoding over the pool."""
    monkeypatch.setattr(atlas._executor, "_size", 2)
    store = _big_store(tmp_path, ["v"], 1)
    d = store.open_dataset("d0")
    store._state.txn.base.index("v")
    seen, barrier, undo = _overlap_spy(monkeypatch)
    got = d.read_array("v")
    assert not barrier.broken, "the frames of one array were decoded one after the other"
    assert len(seen) >= 2 and all(t.startswith("atlas") for t in seen), seen
    undo()
    np.testing.assert_array_equal(got, atlas.Atlas.open(tmp_path / "s").open_dataset("d0").read_array("v"))


def _first_cells(todo, bounds, pslot, pdst, kcount):
    """Flat output position of the first piece of each frame in ``todo``."""
    starts = np.asarray(bounds[:-1])[todo]
    return pslot[starts] * int(np.prod(kcount)) + np.ravel_multi_index(pdst[starts].T, kcount)


def test_units_of_a_grid_read_fill_slabs_of_their_own(monkeypatch):
    """Reading a (24, 90, 180) array in (6, 45, 90) chunks on two threads: each unit takes the
    four chunks of one slab of rows, never a chunk whose rows interleave with another unit's
    (the halves of every row would otherwise be written, and first touched, by two threads)."""
    monkeypatch.setattr(atlas._executor, "_size", 2)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(2), np.arange(2), indexing="ij"), -1).reshape(-1, 3)
    pdst = grid * np.array([6, 45, 90])
    order = np.random.default_rng(1).permutation(16)  # frames in any file order
    pdst = pdst[order]
    units = _read._regions(np.arange(16), list(range(17)), np.zeros(16, np.int64), pdst, np.array([24, 90, 180]),
                           np.full(16, 6 * 45 * 90 * 4), 2 * 6 * 45 * 90 * 4)
    assert len(units) == 4
    for u in units:
        assert len(u) == 4 and len(set(pdst[u, 0].tolist())) == 1, pdst[u]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_units_partition_the_frames_into_runs_of_the_output(data):
    """``_regions``: every frame in exactly one unit, and each unit a run of consecutive frames
    in output order (what makes units write regions of their own)."""
    ndim = data.draw(st.integers(1, 3))
    kcount = np.array(data.draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    nslots = data.draw(st.integers(1, 4))
    nf = data.draw(st.integers(1, 30))
    npieces = data.draw(st.lists(st.integers(1, 3), min_size=nf, max_size=nf))
    bounds = np.concatenate([[0], np.cumsum(npieces)]).tolist()
    total = bounds[-1]
    pslot = np.array(data.draw(st.lists(st.integers(0, nslots - 1), min_size=total, max_size=total)), np.int64)
    pdst = np.stack([np.array(data.draw(st.lists(st.integers(0, int(c) - 1), min_size=total, max_size=total)), np.int64)
                     for c in kcount], 1)
    todo = np.array(sorted(data.draw(st.sets(st.integers(0, nf - 1), min_size=1))), np.int64)
    rlen = np.array(data.draw(st.lists(st.integers(1, 1000), min_size=nf, max_size=nf)), np.int64)
    per = data.draw(st.integers(1, 3000))
    units = _read._regions(todo, bounds, pslot, pdst, kcount, rlen, per)
    got = np.concatenate(units)
    assert sorted(got.tolist()) == todo.tolist()
    assert all((np.diff(u) > 0).all() for u in units)
    pos = dict(zip(todo.tolist(), _first_cells(todo, bounds, pslot, pdst, kcount).tolist()))
    spans = [(min(pos[k] for k in u.tolist()), max(pos[k] for k in u.tolist())) for u in units]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    assert all(int(rlen[u].sum()) >= per for u in units[:-1])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_range_reads_cover_each_frame_once_and_coalesce_by_the_rules(data):
    """``FrameReader.plan``: every requested frame is served by exactly one read of its own
    segment, inside that read; frames of one read are less than ``COALESCE_GAP`` apart and a
    read spans at most ``max_read`` bytes unless it holds one frame; reads of a segment do not
    overlap. Checked against the frame table it plans from."""
    from atlas._frames import COALESCE_GAP, FrameReader
    from atlas._segments import FRAME_COLUMNS, ChunkIndex

    nseg = data.draw(st.integers(1, 3))
    nf = data.draw(st.integers(1, 40))
    segs = data.draw(st.lists(st.integers(0, nseg - 1), min_size=nf, max_size=nf))
    sizes = data.draw(st.lists(st.integers(1, 3 * COALESCE_GAP), min_size=nf, max_size=nf))
    gaps = data.draw(st.lists(st.integers(0, 2 * COALESCE_GAP), min_size=nf, max_size=nf))
    pos = [0] * nseg
    off = []
    for s, n, g in zip(segs, sizes, gaps):  # frames of a segment back to back with gaps, in any table order
        off.append(pos[s] + g)
        pos[s] += g + n
    frames = {k: np.zeros(nf, t) for k, t in FRAME_COLUMNS.items()}
    frames.update(seg=np.array(segs, np.int64), off=np.array(off, np.int64), clen=np.array(sizes, np.int64))
    idx = ChunkIndex([f"arrays/x/s{i}.seg" for i in range(nseg)], frames)
    want = np.array(sorted(data.draw(st.sets(st.integers(0, nf - 1), min_size=1))), np.int64)
    max_read = data.draw(st.integers(1, 8 * COALESCE_GAP))
    reads = FrameReader(None, "zstd").plan(idx, want, max_read)
    served = sorted(j for r in reads for j, _, _ in r.parts)
    assert served == list(range(len(want)))
    for r in reads:
        for j, o, e in r.parts:
            f = int(want[j])
            assert r.path == idx.segments[segs[f]] and (o, e) == (off[f], off[f] + sizes[f])
            assert r.start <= o and e <= r.end
        assert r.end - r.start <= max_read or len(r.parts) == 1
        ends = sorted((o, e) for _, o, e in r.parts)
        assert all(b[0] - a[1] <= COALESCE_GAP for a, b in zip(ends, ends[1:]))
        assert r.start == ends[0][0] and r.end == max(e for _, e in ends)
    for p in {r.path for r in reads}:
        mine = sorted((r for r in reads if r.path == p), key=lambda r: r.start)
        assert all(a.end <= b.start for a, b in zip(mine, mine[1:]))
        for a, b in zip(mine, mine[1:]):  # and as few reads as the rules allow: b's first frame could not join a
            first_end = min((o, e) for _, o, e in b.parts)[1]
            assert b.start - a.end > COALESCE_GAP or max(a.end, first_end) - a.start > max_read


def test_small_chunks_are_packed_into_16_kb_frames_and_one_read_decodes_one(tmp_path, monkeypatch):
    """A flush packs chunks smaller than ``SOLO_FRAME`` into frames of about ``FRAME_TARGET``
    bytes, so a fresh handle reading one small dataset decompresses one such frame per array
    (not the whole segment), looks its chunk up without widening the index, and neighbours
    come from the frame cache; reading everything then checks the whole index."""
    from atlas._frames import FRAME_TARGET
    from atlas._write import SOLO_FRAME

    rng = np.random.default_rng(1)
    data = {f"d{i:03d}": rng.random(200).astype(np.float32) for i in range(300)}  # 800 B chunks, 240 KB in all
    with atlas.Atlas.create(tmp_path / "s") as s:
        for k, v in data.items():
            s.create_dataset(k).define_array("x", "float32", ["i"], [200])
            s.open_dataset(k).write_array("x", [0], v)
    atlas.store._forget_process_caches()
    store = atlas.Atlas.open(tmp_path / "s")
    idx = store._state.txn.base.index("x")
    rlen = idx.frames["rlen"]
    assert 800 < SOLO_FRAME and len(rlen) == -(-len(data) * 800 // FRAME_TARGET)  # as few as the target allows
    assert int(rlen.max()) <= FRAME_TARGET and int(rlen[:-1].min()) > FRAME_TARGET - 800
    sizes = []
    real = atlas.codecs.decompress
    monkeypatch.setattr(atlas.codecs, "decompress", lambda codec, buf, n: sizes.append(n) or real(codec, buf, n))
    np.testing.assert_array_equal(store.open_dataset("d150").read_array("x"), data["d150"])
    assert len(sizes) == 1 and sizes[0] <= FRAME_TARGET and idx._narrow is not None  # not widened by one read
    np.testing.assert_array_equal(store.open_dataset("d151").read_array("x"), data["d151"])  # same frame: cached
    assert len(sizes) == 1
    got = store.read_array_across("x", list(data))
    assert idx._narrow is None and all(np.array_equal(g, data[k]) for g, k in zip(got, data))


def test_fresh_handles_shared_by_threads_read_right_while_indexes_widen(tmp_path):
    """Stress: 8 threads share each fresh handle (no process caches) and mix one-chunk reads
    (lazy row checks), few-instance reads (``ChunkIndex.part``), reads across every dataset
    (which widen the shared index whole) and opens of their own handles (metadata read
    buffers handed out and back), many rounds, every value checked."""
    import time

    names = [f"d{i:03d}" for i in range(120)]
    with atlas.Atlas.create(tmp_path / "s") as s:
        for k, n in enumerate(names):
            d = s.create_dataset(n)
            d.define_array("x", "float32", ["i"], [100])
            d.write_array("x", [0], np.arange(100, dtype=np.float32) + k)
            d.define_array("g", "int64", ["j"], [64], [16])
            d.write_array("g", [0], np.arange(64, dtype=np.int64) * k)
    errors: list[BaseException] = []
    deadline = time.monotonic() + 60
    rounds = 0
    while rounds < 25 and time.monotonic() < deadline:
        atlas.store._forget_process_caches()
        store = atlas.Atlas.open(tmp_path / "s")
        barrier = threading.Barrier(8)

        def work(t: int, store=store, barrier=barrier) -> None:
            try:
                rng = np.random.default_rng(rounds * 8 + t)
                barrier.wait()
                for _ in range(12):
                    k = int(rng.integers(len(names)))
                    op = int(rng.integers(4))
                    if op == 0:
                        got = store.open_dataset(names[k]).read_array("x")
                        assert np.array_equal(got, np.arange(100, dtype=np.float32) + k)
                    elif op == 1:
                        got = store.open_dataset(names[k]).read_array("g", [8], [40])
                        assert np.array_equal(got, np.arange(8, 48, dtype=np.int64) * k)
                    elif op == 2:
                        got = store.read_array_across_stacked("g", names, [0], [16])
                        assert np.array_equal(got, np.arange(len(names))[:, None] * np.arange(16))
                    else:
                        own = atlas.Atlas.open(tmp_path / "s")
                        assert np.array_equal(own.open_dataset(names[k]).read_array("x")[:3], [k, k + 1, k + 2])
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not any(th.is_alive() for th in threads), "a reader hung"
        assert not errors, errors[:3]
        rounds += 1
    assert rounds >= 5
