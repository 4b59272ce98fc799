"""Engine-level promises: bounded pending memory (spill), GIL release, many threads on one store."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import atlas


def _listing(path):
    out = {}
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out


def test_pending_spills_past_budget_and_flushes_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_PENDING_BUDGET", str(64 * 1024))
    path = tmp_path / "s"
    store = atlas.Atlas.create(path)
    before = _listing(path)
    rng = np.random.default_rng(0)
    ref = {}
    for i in range(40):
        ds = store.create_dataset(f"d{i}")
        ds.define_array("big", "float64", ["x", "y"], [64, 64], [32, 32], fill_value=-1.0)
        ds.define_array("small", "int32", ["x"], [100])
        big = rng.random((64, 64))
        big[:5] = -1.0
        small = rng.integers(-5, 5, 100, dtype=np.int32)
        ds.write_array("big", [0, 0], big)
        ds.write_array("small", [0], small)
        ref[f"d{i}"] = (big, small)
    pend = store._state.txn.pending
    assert pend.spilled > 0, "nothing was spilled although pending data exceeds the budget"
    assert pend.mem <= 64 * 1024 + 64 * 64 * 8
    assert _listing(path) == before, "the store changed before flush()"
    # reads see spilled pending writes
    np.testing.assert_array_equal(store.open_dataset("d3").read_array("big"), ref["d3"][0])
    np.testing.assert_array_equal(store.open_dataset("d7").read_array("small", [10], [20]), ref["d7"][1][10:30])
    # a partial overwrite of a spilled chunk
    store.open_dataset("d3").write_array("big", [1, 1], np.full((2, 2), 7.0))
    ref["d3"][0][1:3, 1:3] = 7.0
    store.flush()
    assert not store._state.txn.pending and not store._state.txn.changed
    reopened = atlas.Atlas.open(path)
    for name, (big, small) in ref.items():
        ds = reopened.open_dataset(name)
        np.testing.assert_array_equal(ds.read_array("big"), big)
        np.testing.assert_array_equal(ds.read_array("small"), small)
        st = ds.array_stats("big")
        assert st["null_count"] == int((big == -1.0).sum())


def _max_gap_during(fn):
    """Run ``fn`` here while a thread wakes every millisecond; return (duration, time blocked in long gaps)."""
    stamps = []
    stop = threading.Event()

    def sleeper():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    result = fn()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    inside = [s for s in stamps if t0 <= s <= t1]
    gaps = np.diff([t0] + inside + [t1])
    # time spent in gaps longer than 20 ms: a GIL-holding call makes nearly all of the call such a
    # gap; on a busy machine the OS may still starve the sleeper now and then, but only briefly
    return t1 - t0, float(gaps[gaps > 0.02].sum()), result


def test_kernels_and_codecs_release_the_gil():
    """One long call of each GIL-free piece must not block another thread for its duration."""
    from atlas import codecs
    from atlas._kernels.gather import copy_boxes

    n = 48 * 1024 * 1024
    src = np.frombuffer(np.random.default_rng(0).bytes(n // 8), np.uint8)
    src = np.tile(src, 8)
    dst = np.empty_like(src)
    args = lambda: (src, np.zeros(1, np.int64), np.asarray([[n]], np.int64), np.zeros((1, 1), np.int64),  # noqa: E731
                    dst, np.zeros(1, np.int64), np.asarray([n], np.int64), np.zeros((1, 1), np.int64),
                    np.asarray([[n]], np.int64), 1)
    copy_boxes(*args())  # compile outside the measurement
    rows = np.ascontiguousarray(np.tile(np.arange(256, dtype=np.float32), n // 1024))
    for name, fn in [
        ("copy_boxes", lambda: [copy_boxes(*args()) for _ in range(6)]),
        ("zstd", lambda: [codecs.decompress("zstd", blob_z, rows.nbytes) for _ in range(3)]),
        # python-lz4 allocates the output of a block decompression while holding the GIL (about 60 %
        # of the call for a 48 MB block, measured); its compression is GIL-free, so that is what is
        # checked here, and the README says zstd (the default) is the codec for GIL-free reads
        ("lz4", lambda: [codecs.compress("lz4", rows) for _ in range(6)]),
    ]:
        blob_z = codecs.compress("zstd", rows) if name == "zstd" else None
        blob_l = codecs.compress("lz4", rows) if name == "lz4" else None
        dur, gap, _ = _max_gap_during(fn)
        assert gap < 0.5 * dur, f"{name}: another thread was blocked {gap * 1e3:.1f} ms of a {dur * 1e3:.1f} ms call"


def test_bulk_read_lets_other_threads_run(tmp_path):
    store = atlas.Atlas.create(tmp_path / "s", codec="zstd")
    rng = np.random.default_rng(1)
    base = np.round(rng.random((512, 512)), 2)
    names = []
    for i in range(16):
        ds = store.create_dataset(f"d{i}")
        ds.define_array("v", "float64", ["x", "y"], [512, 512], [256, 256])
        ds.write_array("v", [0, 0], base + i)
        names.append(f"d{i}")
    store.flush()
    store.read_array_across_stacked("v", names[:2])  # compile + warm
    dur, gap, out = _max_gap_during(lambda: [store.read_array_across_stacked("v", names) for _ in range(4)][-1])
    assert out.shape == (16, 512, 512)
    np.testing.assert_array_equal(out[3], base + 3)
    assert gap < 0.5 * dur, f"another thread was blocked {gap * 1e3:.1f} ms of a {dur * 1e3:.1f} ms bulk read"


def test_many_threads_read_one_store(tmp_path):
    store = atlas.Atlas.create(tmp_path / "s")
    rng = np.random.default_rng(2)
    ref = {}
    for i in range(30):
        ds = store.create_dataset(f"d{i}")
        ds.define_array("a", "float32", ["x", "y"], [40, 30], [7, 9], fill_value=float("nan"))
        ds.define_array("s", "string", ["x"], [12], [5])
        a = rng.random((40, 30)).astype(np.float32)
        ds.write_array("a", [0, 0], a)
        s = np.array([f"v{i}-{j}" for j in range(12)], dtype=object)
        ds.write_array("s", [0], s)
        ref[f"d{i}"] = (a, s)
    store.flush()
    store = atlas.Atlas.open(tmp_path / "s")
    names = list(ref)

    def job(seed):
        r = np.random.default_rng(seed)
        for _ in range(30):
            x0, y0 = int(r.integers(0, 40)), int(r.integers(0, 30))
            dx, dy = int(r.integers(0, 40 - x0 + 1)), int(r.integers(0, 30 - y0 + 1))
            pick = [names[k] for k in r.integers(0, len(names), 5)]
            got = store.read_array_across_stacked("a", pick, [x0, y0], [dx, dy])
            for k, n in enumerate(pick):
                np.testing.assert_array_equal(got[k], ref[n][0][x0:x0 + dx, y0:y0 + dy])
            n = names[int(r.integers(0, len(names)))]
            np.testing.assert_array_equal(store.open_dataset(n).read_array("s"), ref[n][1])
        return True

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(job, range(16)))


def test_read_arrays_and_across(tmp_path):
    store = atlas.Atlas.create(tmp_path / "s")
    for i in range(4):
        ds = store.create_dataset(f"d{i}")
        ds.define_array("a", "int16", ["x"], [10], [3])
        ds.write_array("a", [0], np.arange(10, dtype=np.int16) * i)
        if i % 2:
            ds.define_array("b", "float64", ["x"], [10 + i])
            ds.write_array("b", [0], np.ones(10 + i))
    got = store.read_array_across("b", ["d0", "d1", "d2", "d3"], [2], [3])
    assert got[0] is None and got[2] is None
    np.testing.assert_array_equal(got[1], np.ones(3))
    full = store.read_array_across("b", ["d1", "d3"])
    assert [x.shape for x in full] == [(11,), (13,)]
    with pytest.raises(ValueError, match="shape"):
        store.read_array_across_stacked("b", ["d1", "d3"])
    with pytest.raises(KeyError, match="d0"):
        store.read_array_across_stacked("b", ["d0", "d1"])
    with pytest.raises(KeyError, match="nope"):
        store.read_array_across("a", ["d0", "nope"])
    with pytest.raises(ValueError, match="empty"):
        store.read_array_across_stacked("a", [])
    dup = store.read_array_across_stacked("a", ["d2", "d2", "d1"], [1], [4])
    np.testing.assert_array_equal(dup, np.stack([np.arange(1, 5) * 2, np.arange(1, 5) * 2, np.arange(1, 5)]).astype(np.int16))
    r = store.open_dataset("d1").read_arrays(["a", "b", "zz"], [0], [5])
    assert r["zz"] is None and r["a"].tolist() == [0, 1, 2, 3, 4] and r["b"].tolist() == [1.0] * 5
    e = store.create_dataset("e")
    e.define_array("a", "int32", ["x"], [10])
    with pytest.raises(TypeError, match="int32"):
        store.read_array_across_stacked("a", ["d0", "e"])
    # the store still works after every error above
    np.testing.assert_array_equal(store.read_array_across_stacked("a", ["d1"])[0], np.arange(10, dtype=np.int16))


def test_import_atlas_compiles_and_imports_nothing_heavy():
    import subprocess

    code = (
        "import sys, atlas\n"
        "heavy = [m for m in ('numba', 'xarray', 'dask', 'obstore') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "import xarray as xr\n"
        "print(hasattr(xr.Dataset, 'atlas'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "", f"import atlas imported {out[0]}"
    assert out[1] == "True", "ds.atlas was not registered once xarray was imported"
