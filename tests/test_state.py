"""The state model under threads: one handle shared by writers, flushers, compactors and readers.

Each race of issue #12 has a stress test here, bounded in time (loops stop after a few
seconds, whatever the machine's speed, but only after a minimum number of rounds), plus the
memory bound of the write buffer (measured in a subprocess) and the warning for a handle
dropped with pending changes.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas

SECONDS = 3.0  # each stress loop runs about this long


def _until(t_end: float, rounds: int, done: int) -> bool:
    """Go on while time remains, or until a minimum number of rounds was reached."""
    return time.monotonic() < t_end or done < rounds


def _run(threads: list[threading.Thread], timeout: float = 120) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread hangs"


def _flusher(store: atlas.Atlas, stop: threading.Event, errors: list[BaseException], count: list[int],
             pause: float = 0.0) -> None:
    """Flush until ``stop`` is set, counting flushes in ``count[0]``; errors go to ``errors``."""
    try:
        while not stop.is_set():
            store.flush()
            count[0] += 1
            if pause:
                time.sleep(pause)
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


def test_writes_racing_flushes_are_never_lost(tmp_path):
    """Single-cell writes while another thread flushes: every write that returned is stored."""
    store = atlas.Atlas.create(tmp_path / "s")
    ds = store.create_dataset("d")
    n = 3000
    ds.define_array("v", "int32", ["x"], [n], [50], fill_value=-1)
    store.flush()
    errors: list[BaseException] = []
    stop = threading.Event()
    want = np.full(n, -1, np.int32)
    flushes = [0]
    t_end = time.monotonic() + SECONDS

    def writer() -> None:
        try:
            k = 0
            # at least one pass over every cell, and on until the flusher has raced it many times
            while k < n or _until(t_end, 0, 0) or flushes[0] < 20:
                i = (k * 7919) % n  # cells in a scattered order: writes land in many chunks
                ds.write_array("v", [i], np.asarray([k], np.int32))
                want[i] = k
                k += 1
                if k > 50 * n:
                    break
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    _run([threading.Thread(target=writer), threading.Thread(target=_flusher, args=(store, stop, errors, flushes))])
    assert not errors, errors
    store.flush()
    assert flushes[0] >= 20, "the flusher never raced the writer"
    back = atlas.Atlas.open(tmp_path / "s").open_dataset("d")
    got = back.read_array("v")
    lost = np.flatnonzero(got != want)
    assert lost.size == 0, f"{lost.size} writes lost, first at {lost[:5]}"
    assert back.array_stats("v")["null_count"] == 0


def test_reads_never_see_older_data_than_finished_writes(tmp_path):
    """A read started after a write returned sees it, whatever flushes run meanwhile."""
    store = atlas.Atlas.create(tmp_path / "s")
    n = 400
    ds = store.create_dataset("d")
    ds.define_array("v", "float64", ["x"], [n], [16], fill_value=float("nan"))
    ds.define_array("whole", "float64", ["x"], [8])
    done = [-1]
    errors: list[BaseException] = []
    stop = threading.Event()
    t_end = time.monotonic() + SECONDS

    def writer() -> None:
        try:
            r = 0
            while _until(t_end, 2, r):
                for i in range(n):
                    ds.write_array("v", [i], np.asarray([r * n + i], np.float64))
                    done[0] = r * n + i
                r += 1
                store.open_dataset("d").write_array("whole", [0], np.full(8, float(r)))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    checks = [0]

    def reader() -> None:
        try:
            view = store.open_dataset("d")
            while not stop.is_set():
                d = done[0]
                got = view.read_array("v")
                if d >= 0:  # every cell written by a finished write reads at least that value
                    r, i = divmod(d, n)
                    want = np.where(np.arange(n) <= i, r * n + np.arange(n), (r - 1) * n + np.arange(n))
                    ok = got >= want if r else (got[:i + 1] >= want[:i + 1])
                    assert np.all(ok), f"stale read after write {d}"
                w = store.read_array_across_stacked("whole", ["d"])
                assert not np.isnan(w).any()
                checks[0] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    _run([threading.Thread(target=writer), threading.Thread(target=_flusher, args=(store, stop, errors, [0], 0.001))]
         + [threading.Thread(target=reader) for _ in range(3)])
    assert not errors, errors[0]
    assert checks[0] > 20


def test_reads_on_the_compacting_handle_never_fail(tmp_path):
    store = atlas.Atlas.create(tmp_path / "s")
    rng = np.random.default_rng(0)
    ref = {}
    for i in range(20):
        d = store.create_dataset(f"d{i}")
        d.define_array("v", "float32", ["x", "y"], [32, 32], [8, 8])
        ref[f"d{i}"] = rng.random((32, 32), dtype=np.float32)
        d.write_array("v", [0, 0], ref[f"d{i}"])
    store.flush()
    names = list(ref)
    want = np.stack([ref[n] for n in names])
    errors: list[BaseException] = []
    stop = threading.Event()
    t_end = time.monotonic() + SECONDS
    compactions = [0]

    def compactor() -> None:
        try:
            k = 0
            while _until(t_end, 10, k):
                # garbage to reclaim: rewrite one dataset's values with the same values
                store.open_dataset(names[k % len(names)]).write_array("v", [0, 0], ref[names[k % len(names)]])
                store.flush()
                store.expire(keep_last=1)  # only the latest version is kept: compact reclaims the rest
                store.compact()
                k += 1
            compactions[0] = k
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    reads = [0]

    def reader() -> None:
        try:
            fresh = atlas.Atlas.open(tmp_path / "s")  # a second handle of this process, reading too
            while not stop.is_set():
                np.testing.assert_array_equal(store.read_array_across_stacked("v", names), want)
                np.testing.assert_array_equal(store.open_dataset("d3").read_array("v", [4, 4], [9, 9]), ref["d3"][4:13, 4:13])
                reads[0] += 1
            assert fresh.list_datasets() == names
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    _run([threading.Thread(target=compactor)] + [threading.Thread(target=reader) for _ in range(2)])
    assert not errors, errors[0]
    assert compactions[0] >= 10 and reads[0] > 10
    # nothing leaks: once no read runs, only the live segments remain
    gc.collect()
    segs = [f for _, _, fs in os.walk(tmp_path / "s" / "arrays") for f in fs]
    assert len(segs) == 1, segs
    assert atlas.Atlas.open(tmp_path / "s").verify() == []


def test_compaction_waits_for_a_running_read(tmp_path):
    """A read that holds an older state keeps its files until it ends; then they go."""
    from atlas import _read

    store = atlas.Atlas.create(tmp_path / "s")
    d = store.create_dataset("d")
    d.define_array("v", "float64", ["x"], [1000], [100])
    d.write_array("v", [0], np.arange(1000.0))
    store.flush()
    d.write_array("v", [0], np.arange(1000.0) + 1)
    store.flush()
    entered, release = threading.Event(), threading.Event()
    real = _read.read
    out: list[np.ndarray] = []

    def slow_read(view, name, *a, **k):
        entered.set()
        release.wait(30)
        return real(view, name, *a, **k)

    def reader() -> None:
        out.append(d.read_array("v"))

    _read.read = slow_read  # type: ignore[assignment]
    try:
        t = threading.Thread(target=reader)
        t.start()
        assert entered.wait(30)
        _read.read = real  # type: ignore[assignment]
        before = sorted(f for _, _, fs in os.walk(tmp_path / "s" / "arrays") for f in fs)
        store.expire(keep_last=1)
        store.compact()
        during = sorted(f for _, _, fs in os.walk(tmp_path / "s" / "arrays") for f in fs)
        assert set(before) <= set(during), "files deleted under a running read"
        release.set()
        t.join(30)
    finally:
        _read.read = real  # type: ignore[assignment]
        release.set()
    np.testing.assert_array_equal(out[0], np.arange(1000.0) + 1)
    gc.collect()
    after = [f for _, _, fs in os.walk(tmp_path / "s" / "arrays") for f in fs]
    assert len(after) == 1, after


def test_writers_of_one_chunk_from_eight_threads_lose_no_row(tmp_path):
    store = atlas.Atlas.create(tmp_path / "s")
    rows, cols = 64, 32
    t_end = time.monotonic() + SECONDS
    trials = 0
    while _until(t_end, 5, trials):
        d = store.create_dataset(f"t{trials}")
        d.define_array("v", "float64", ["r", "c"], [rows, cols], [rows, cols], fill_value=-1.0)

        def write(k: int, d=d) -> None:
            for r in range(k, rows, 8):
                d.write_array("v", [r, 0], np.full((1, cols), float(r)))

        _run([threading.Thread(target=write, args=(k,)) for k in range(8)])
        got = d.read_array("v")
        missing = np.flatnonzero((got != np.arange(rows)[:, None]).any(1))
        assert missing.size == 0, f"trial {trials}: rows {missing.tolist()} lost"
        trials += 1
    store.flush()
    back = atlas.Atlas.open(tmp_path / "s")
    for i in range(trials):
        np.testing.assert_array_equal(back.open_dataset(f"t{i}").read_array("v")[:, 0], np.arange(rows))


_MEMORY_SCRIPT = r"""
import gc, json, os, sys
import numpy as np
import psutil
import atlas

mode, path = sys.argv[1], sys.argv[2]
proc = psutil.Process()
peak = [0]

def sample():
    peak[0] = max(peak[0], proc.memory_info().rss)

store = atlas.Atlas.create(path)
d = store.create_dataset("d")
rng = np.random.default_rng(0)
# warm up: compile the kernels and touch the code paths before the baseline (a write large
# enough to need the kernels: smaller ones run NumPy and would leave numba's import for later)
d.define_array("w", "float64", ["r", "c"], [4, 4096], [2, 4096])
d.write_array("w", [1, 0], rng.random((1, 4096)))
assert "numba" in sys.modules
gc.collect()
base = proc.memory_info().rss
with store:
    if mode == "rewrite":  # one 64 KiB chunk rewritten 4,000 times
        d.define_array("v", "float64", ["c"], [8192])
        for i in range(4000):
            d.write_array("v", [0], rng.random(8192))
            if i % 50 == 0:
                sample()
    elif mode == "rows":  # a 256 MiB array written row by row (1 MiB chunks of 16 rows)
        n, m = 4096, 8192
        d.define_array("v", "float64", ["r", "c"], [n, m], [16, m])
        for r in range(n):
            d.write_array("v", [r, 0], rng.random((1, m)))
            if r % 64 == 0:
                sample()
    elif mode == "batches":  # 128 writes of 16 chunks each (64 KiB, compressed as written), one request each
        d.define_array("v", "float64", ["r", "c"], [128 * 16, 8192], [1, 8192])
        for r in range(128):
            d.write_array("v", [16 * r, 0], rng.random((16, 8192)))
            if r % 4 == 0:
                sample()
    sample()
    pend = store._state.txn.pending
    info = {"growth": peak[0] - base, "mem": pend.mem, "spill_end": pend._file.end if pend._file else 0,
            "live_spill": pend.live_spill}
sample()
back = atlas.Atlas.open(path).open_dataset("d")
info["ok"] = bool(np.isfinite(back.read_array("v")).all())
print(json.dumps(info))
"""


@pytest.mark.parametrize("mode", ["rewrite", "rows", "batches"])
def test_pending_memory_is_bounded_under_rewrites(tmp_path, mode):
    """Rewrites of one chunk, a large array row by row, and writes of many chunks per request
    (each crossing a small budget part-way: the chunks after the spill must stay tracked)."""
    pytest.importorskip("psutil")
    budget = 2 * 2**20 if mode == "batches" else 16 * 2**20
    env = dict(os.environ, ATLAS_PENDING_BUDGET=str(budget))
    r = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, mode, str(tmp_path / "s")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["ok"]
    # the budget plus a few 1 MiB chunks (the one being rewritten, its decoded copy, the compressor's)
    assert info["growth"] < budget + 24 * 2**20, info
    assert info["mem"] <= budget
    # the spill file keeps no more garbage than the budget plus what is live
    assert info["spill_end"] <= 2 * (budget + info["live_spill"]) + 2**20, info


def test_dropping_a_handle_with_pending_changes_warns(tmp_path):
    store = atlas.Atlas.create(tmp_path / "s")
    d = store.create_dataset("a")
    d.define_array("v", "int8", ["x"], [4])
    d.write_array("v", [0], np.zeros(4, np.int8))
    store.create_dataset("b")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del store, d
        gc.collect()
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(msgs) == 1 and "2 dataset(s) and 1 array(s) abandoned" in msgs[0], msgs
    # a flushed handle, or one that changed nothing, says nothing
    s2 = atlas.Atlas.open(tmp_path / "s")
    s2.list_datasets()
    with atlas.Atlas.open(tmp_path / "s") as s3:
        s3.create_dataset("c")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del s2, s3
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_snapshots_are_never_changed_by_later_edits(tmp_path):
    """What a reader took (metadata and stats) stays as it was while the handle moves on."""
    store = atlas.Atlas.create(tmp_path / "s")
    d = store.create_dataset("a")
    d.define_array("v", "int32", ["x"], [10], fill_value=0)
    d.write_array("v", [0], np.arange(10, dtype=np.int32))
    d.set_attribute("k", 1)
    store.flush()
    before = store._state.txn
    snap_ds = before.base.meta.datasets["a"]
    arrays, attrs, stats = dict(snap_ds.arrays), dict(snap_ds.attrs), snap_ds.arrays["v"].stats
    d.set_attribute("k", 2)
    d.define_array("w", "int8", ["x"], [3])
    d.write_array("v", [0], np.full(10, 5, np.int32))
    store.flush()
    assert snap_ds.arrays == arrays and snap_ds.attrs == attrs and snap_ds.arrays["v"].stats == stats
    assert store.generation == before.base.generation + 1
    assert d.get_attribute("k") == 2 and d.array_stats("v")["min"] == 5


def test_gc_pause_nests_across_threads_and_restores_the_collector():
    """``_gc.paused()``: the collector is off while any pause is open (nested, from several
    threads at once) and comes back as it was when the last one ends."""
    import gc
    import threading

    from atlas import _gc

    barrier = threading.Barrier(8)
    seen: list[bool] = []

    def work() -> None:
        for _ in range(200):
            with _gc.paused():
                with _gc.paused():
                    seen.append(gc.isenabled())
            barrier.wait(timeout=30) if _ == 0 else None

    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            threads = [threading.Thread(target=work) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            barrier.reset()
            assert not any(seen) and len(seen) == 8 * 200
            assert gc.isenabled() is enabled
            seen.clear()
    finally:
        (gc.enable if was else gc.disable)()


def test_gc_settle_after_pause_collects_the_young_generations_once_when_the_pause_ends():
    """``_gc.settle_after_pause()``: objects made in the pause end up in the oldest generation
    when it ends (not all together in the middle one); without it, or with the collector
    turned off by the process, nothing is collected."""
    import gc

    from atlas import _gc

    def in_young(objs: list) -> bool:
        young = {id(o) for g in (0, 1) for o in gc.get_objects(g)}
        return all(id(o) in young for o in objs)

    was = gc.isenabled()
    try:
        gc.enable()
        _gc.settle_after_pause()  # outside a pause: nothing to do
        assert not _gc._SETTLE[0]
        for settle, enabled in ((True, True), (False, True), (True, False)):
            (gc.enable if enabled else gc.disable)()
            with _gc.paused():
                if settle:
                    _gc.settle_after_pause()
                with _gc.paused():  # a nested pause ending collects nothing yet
                    made = [[i] for i in range(2000)]
                assert in_young(made)
            assert in_young(made) is not (settle and enabled), (settle, enabled)
            assert not _gc._SETTLE[0] and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_first_kernel_import_in_a_pause_leaves_no_crowd_in_the_middle_generation(tmp_path):
    """numba's import and first compilation inside a flush (the collector paused) make tens of
    thousands of long-lived objects; they must not all wait in the middle generation for its
    next collection (a ~30 ms stall in some later call of the user's loop)."""
    import subprocess
    import sys
    import textwrap

    src = textwrap.dedent(f"""
        import gc, sys
        import numpy as np
        import atlas
        assert "numba" not in sys.modules
        gc.set_threshold(700, 10**9, 10**9)  # no automatic collection of the middle generation
        with atlas.Atlas.create({str(tmp_path / "s")!r}) as st:
            for i in range(300):  # enough small chunks that the flush's statistics take the kernel
                d = st.create_dataset(f"d{{i}}")
                d.define_array("a", "float32", ["x"], [64], fill_value=float("nan"))
                d.write_array("a", [0], np.arange(64, dtype=np.float32))
        assert "atlas._kernels.stats" in sys.modules, "the flush did not need a kernel: make it bigger"
        print(len(gc.get_objects(0)) + len(gc.get_objects(1)))
    """)
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 10_000


def test_frame_bytes_of_aligned_chunks_join_the_payloads_as_the_general_layout_does():
    """``_commit.frame_bytes``: entries whose sizes are whole multiples of 8 are joined back to
    back in one step; the bytes equal the general layout's (each entry at its offset, zeros
    between), including payloads spilled to the spill file."""
    from atlas._commit import frame_bytes
    from atlas._pending import Pending, SpillFile

    rng = np.random.default_rng(2)
    spill = SpillFile()
    for sizes in ([8, 16, 400], [800] * 7, [24]):
        ps = []
        for n in sizes:
            p = Pending(rng.bytes(n), False, n, -1, 0, 0, False)
            if len(ps) % 3 == 1:  # some spilled
                p = p.moved(spill, spill.append([p.data]))
            ps.append(p)
        ps = [Pending(b"zz", True, 2, 0, 0, 0, False)] + ps  # a compressed frame before them
        foff, size = [0], 0
        for p in ps[1:]:
            foff.append(size)
            size += p.nbytes
        g = list(range(1, len(ps)))
        assert frame_bytes(ps, foff, g, True) == frame_bytes(ps, foff, g, False) == b"".join(p.payload() for p in ps[1:])
    # odd sizes: padding between (the general layout only)
    ps = [Pending(b"abc", False, 3, -1, 0, 0, False), Pending(b"de", False, 2, -1, 0, 0, False)]
    assert frame_bytes(ps, [0, 8], [0, 1]) == b"abc" + b"\0" * 5 + b"de"


@settings(max_examples=40, deadline=None)
@given(budget=st.integers(100, 2000), batches=st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=40), max_size=8))
def test_pending_bytes_in_memory_stay_within_the_budget_whatever_the_batch(budget, batches):
    """A ``put_each`` that crosses the pending budget spills at once and goes on tracking what
    it adds after the spill: at no point do payloads in memory exceed the budget plus the last
    one (a batch's later entries once escaped every later spill and stayed in memory, 55 MB in
    the gridded ingest), and every payload still reads back."""
    from atlas._pending import Pending, PendingStore

    store = PendingStore(budget)
    want = {}
    for b, sizes in enumerate(batches):
        entries = []
        for j, n in enumerate(sizes):
            data = bytes([(b * 31 + j) % 251]) * n
            entries.append(("x", (b, j), Pending(data, False, n, -1, 0, 0, False)))
            want[(b, j)] = data
        store.put_each(entries)
        in_memory = [p for p in store.entries() if p.data is not None]
        assert sum(p.slen for p in in_memory) == store.mem <= budget + max(sizes)
        assert all(id(p) in store._hot for p in in_memory)
    assert {k: bytes(p.payload()) for k, p in store.items("x")} == want
