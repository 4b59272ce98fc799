"""Crash safety on S3: SIGKILL a writer at random moments of create, flush and compact.

The object-store twin of ``test_crash.py``, on moto's S3 server (``conftest.moto_server``,
127.0.0.1). The round plan, the in-memory model, the byte-for-byte store check and the
writer launcher (fresh interpreter or fork server) are imported from ``test_crash``; only
the child differs: it opens an ``S3Store`` at the server's endpoint (passed in the
environment) instead of a directory. The server runs in this (pytest) process, so it
outlives every kill.

Trials on the main store alternate between a kill at a random moment and a kill aimed at a
random moment inside a flush or a compact (the parent waits for the child's "flushing" /
"compacting" marker, then sleeps up to the duration such a call has taken so far). Other
trials create stores on fresh prefixes and kill during ``Atlas.create``; a store whose
create was killed is resumed by the next such trial. After each kill the parent waits until
the server has finished every request the dead writer had sent (a request the server is
still applying could otherwise land after the check), reopens the store and requires it to
equal, byte for byte, the state after the last round the child recorded, P, or after P + 1.
Before the first round the states are "no store" (nothing under the prefix) and "an empty
store".
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

obstore = pytest.importorskip("obstore", reason="obstore is not installed (pip install 'atlas-python[cloud]')")

import atlas  # noqa: E402
import test_crash  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative "prepend" import mode)
from test_crash import (FORK_SERVER_SRC, PLAN_SRC, Model, _load_plan, _read_lines, _Writers, check_store,  # noqa: E402
                        check_versions)

# --------------------------------------------------------------------------- the child
# The protocol of test_crash's child ("fresh" or fork "server"; run/reap lines), so that
# test_crash._Writers starts it. The parent seeds each markers file with "store <sid>": the
# store is s3://<bucket>/<base>/<sid>, its progress file <progress>-<sid>.txt.
CHILD_SRC = r'''
import os, shutil, sys, time, traceback
from datetime import timedelta

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
mode, base, progress, scratch = sys.argv[1:5]

import atlas
import obstore  # imported before any fork; its runtime starts on first use, in each writer
from obstore.store import S3Store
from crash_plan import COMPACT_EVERY, apply_to_atlas, plan, version_ops

ENDPOINT = os.environ["ATLAS_CRASH_S3_ENDPOINT"]
BUCKET = os.environ["ATLAS_CRASH_S3_BUCKET"]


def s3_store(prefix):
    # as conftest.MotoServer.s3_store builds it: dummy keys, plain http on 127.0.0.1
    return S3Store(BUCKET, prefix=prefix, endpoint=ENDPOINT, region="us-east-1", access_key_id="testing",
                   secret_access_key="testing", client_options={"allow_http": True},
                   retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=5)})


def one_round(a, r, mark):
    apply_to_atlas(a, plan(r, a.dataset_exists))
    mark(f"flushing {r}")
    t = time.monotonic()
    a.flush(message=f"round {r}")
    mark(f"flushed {r} {time.monotonic() - t:.4f}")
    version_ops(a, r, mark)
    if r % COMPACT_EVERY == 4:
        mark(f"compacting {r}")
        t = time.monotonic()
        a.compact()
        mark(f"compacted {r} {time.monotonic() - t:.4f}")


def loop(markers):
    # the process that gets killed: open (or create) its store, then rounds until killed
    with open(markers) as f:
        sid = f.readline().split()[1]
    mfd = os.open(markers, os.O_WRONLY | os.O_APPEND)

    def mark(s):
        os.write(mfd, (s + "\n").encode())

    pfd = os.open(f"{progress}-{sid}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(r):
        os.write(pfd, f"{r}\n".encode())
        os.fsync(pfd)

    mark(f"ready {os.getpid()}")
    store = s3_store(f"{base}/{sid}")
    try:
        a = atlas.Atlas.open(store)
    except FileNotFoundError:
        mark("creating")
        t = time.monotonic()
        a = atlas.Atlas.create(store)
        mark(f"created {time.monotonic() - t:.4f}")
        record(-1)
    r = a.open_dataset("state").get_attribute("round") + 1 if a.dataset_exists("state") else 0
    mark(f"start {r}")
    while True:
        one_round(a, r, mark)
        record(r)
        mark(f"done {r}")
        r += 1


''' + FORK_SERVER_SRC


# --------------------------------------------------------------------------- the server side
class MotoActivity:
    """Counts the requests moto's server is handling (werkzeug closes every connection after
    one response, so one handler call is one request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.total = 0

    def wrap(self, handle):
        tracker = self

        def counted_handle(handler):
            with tracker._lock:
                tracker.active += 1
                tracker.total += 1
            try:
                return handle(handler)
            finally:
                with tracker._lock:
                    tracker.active -= 1

        return counted_handle

    def wait_idle(self, quiet: float = 0.05, timeout: float = 30.0) -> int:
        """Return once no request has been in progress, and none has started, for ``quiet`` seconds.

        A dead writer's last requests may still be queued (accept backlog) or being applied by
        the server when the parent has reaped it; the check must come after them. Returns how
        many requests were in progress, or started, since the call.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            first = self.total - self.active
        while True:
            with self._lock:
                seen = (self.active, self.total)
            if seen[0] == 0:
                time.sleep(quiet)
                with self._lock:
                    if (self.active, self.total) == seen:
                        return seen[1] - first
            elif time.monotonic() > deadline:
                raise AssertionError(f"moto still handles {seen[0]} request(s) {timeout} s after the kill")
            else:
                time.sleep(0.005)


@pytest.fixture
def moto_activity(moto_server, monkeypatch):
    from werkzeug.serving import WSGIRequestHandler

    tracker = MotoActivity()
    monkeypatch.setattr(WSGIRequestHandler, "handle", tracker.wrap(WSGIRequestHandler.handle))
    return tracker


class _AtlasOnS3:
    """Stands in for the ``atlas`` module inside ``test_crash.check_store`` (which opens
    ``atlas.Atlas.open(str(path))``): opens the S3 store instead of a directory."""

    def __init__(self, source) -> None:
        self.Atlas = self
        self._source = source

    def open(self, _path: str) -> atlas.Atlas:
        return atlas.Atlas.open(self._source())


def check_s3_store(source, model: Model, where: str) -> None:
    """``test_crash.check_store`` on an S3 store (``source()`` makes a fresh obstore handle)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_crash, "atlas", _AtlasOnS3(source))
        check_store(Path("s3"), model, where)


def _objects(store) -> list[str]:
    return sorted(m["path"] for batch in obstore.list(store) for m in batch)


def _store_round(store) -> int:
    """-2: no store; -1: an empty store (created, no round flushed); else the last round flushed."""
    try:
        a = atlas.Atlas.open(store)
    except FileNotFoundError:
        return -2
    return a.open_dataset("state").get_attribute("round") if a.dataset_exists("state") else -1


class _Tracked:
    """One store of the run: its model and the highest state known to be committed."""

    def __init__(self, sid: str, plan: Any, progress: Path) -> None:
        self.sid = sid
        self.plan = plan
        self.model = Model(plan)
        self.committed = -2
        self.progress = progress

    def last_progress(self) -> int:
        lines = _read_lines(self.progress)
        return int(lines[-1]) if lines else -2


def _typical(durations: list[float]) -> float:
    """How long the call takes: the largest of its last five durations (0.1 s before any)."""
    return max(durations[-5:]) if durations else 0.1


def _wait_for(markers: Path, pred, proc, writers: _Writers, log: Path, what: str, timeout: float = 120,
              poll: float = 0.002):
    deadline = time.monotonic() + timeout
    while True:
        lines = _read_lines(markers)
        hit = pred(lines)
        if hit is not None:
            return hit
        if lines and lines[-1] == "error":
            pytest.fail(f"writer failed waiting for {what}:\n{writers.failure_log(proc, log)}")
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"writer exited ({proc.returncode}) waiting for {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"writer: no {what} after {timeout} s:\n{writers.failure_log(proc, log)}")
        time.sleep(poll)


def _last_marker(lines: list[str], word: str) -> str | None:
    for line in reversed(lines):
        if line.split()[0] == word:
            return line
    return None


def run_s3_crash_trials(tmp_path: Path, moto_server, activity: MotoActivity, bucket: str, monkeypatch,
                        kills: int, seed: int, fresh_every: int = 12) -> dict[str, Any]:
    plan_ns = _load_plan()
    (tmp_path / "crash_plan.py").write_text(PLAN_SRC)
    child = tmp_path / "crash_child_s3.py"
    child.write_text(CHILD_SRC)
    monkeypatch.setenv("ATLAS_CRASH_S3_ENDPOINT", moto_server.endpoint)
    monkeypatch.setenv("ATLAS_CRASH_S3_BUCKET", bucket)
    base = "crash"
    progress = tmp_path / "progress"

    def source(sid: str):
        return lambda: moto_server.s3_store(bucket, prefix=f"{base}/{sid}")

    rng = random.Random(seed)
    stores: dict[str, _Tracked] = {}

    def tracked(sid: str) -> _Tracked:
        if sid not in stores:
            stores[sid] = _Tracked(sid, plan_ns["plan"], Path(f"{progress}-{sid}.txt"))
        return stores[sid]

    main = tracked("main")
    side: _Tracked | None = None
    # how long these calls took so far (the children report it): aimed kills land within them
    took: dict[str, list[float]] = {"flushed": [], "compacted": [], "created": []}
    stats: dict[str, Any] = {"kills": 0, "fresh": 0, "creating": 0, "flushing": 0, "compacting": 0, "between": 0,
                             "tagging": 0, "expiring": 0, "versions_checked": 0,
                             "building": 0, "opening": 0, "rounds": 0, "post_commit": 0, "stores_created": 0,
                             "late_requests": 0,
                             "aimed": {"random": 0, "flush": 0, "compact": 0, "create": 0}}
    t0 = time.monotonic()
    writers = _Writers(tmp_path, child, Path(base), progress)
    try:
        for trial in range(kills):
            # trial kinds: 1 in 5 creates a store; the rest random / aimed at a flush / at a compact
            kind = ("create", "random", "flush", "random", "compact")[trial % 5] if trial else "random"
            if kind == "create":
                if side is None or side.committed >= -1:  # a new store, unless the last create never landed
                    side = tracked(f"c{trial}")
                st = side
            else:
                st = main
            markers = tmp_path / f"markers-{trial}.txt"
            markers.write_text(f"store {st.sid}\n")
            log = tmp_path / f"child-{trial}.log"
            fresh = trial % fresh_every == fresh_every - 1
            budget = "0" if trial % 3 == 2 else None  # spill every pending payload to a temp file
            proc = writers.start(markers, budget, fresh, log)
            pid = _wait_for(markers, lambda ls: int(ls[1].split()[1]) if len(ls) > 1 and ls[1].startswith("ready")
                            else None, proc, writers, log, "ready")
            if kind == "random":
                time.sleep(rng.uniform(0.03, 1.0))
            elif kind == "create":
                # Atlas.create is a HEAD and a PUT If-None-Match (a few ms): poll without sleeping
                _wait_for(markers, lambda ls: _last_marker(ls, "creating"), proc, writers, log, "creating", poll=0)
                time.sleep(rng.uniform(0.0, _typical(took["created"])))
            else:
                word, done = ("flushing", "flushed") if kind == "flush" else ("compacting", "compacted")
                # a flush of any round, a compact of the first round that compacts (r % 9 == 4)
                _wait_for(markers, lambda ls: _last_marker(ls, word), proc, writers, log, word)
                time.sleep(rng.uniform(0.0, 1.1 * _typical(took[done])))
            writers.kill(proc, pid)
            rc = writers.status(proc)
            if rc != -signal.SIGKILL:
                pytest.fail(f"trial {trial}: writer ended with {rc} before the kill:\n{writers.failure_log(proc, log)}")
            # every request the writer sent has been answered (or dropped) before the check
            stats["late_requests"] += activity.wait_idle()
            stats["kills"] += 1
            stats["fresh"] += fresh
            stats["aimed"][kind] += 1
            lines = _read_lines(markers)
            for line in lines:
                w = line.split()
                if w[0] in took and len(w) >= 2:
                    took[w[0]].append(float(w[-1]))
            last = lines[-1].split()[0]
            if last in ("flushing", "compacting", "creating"):
                stats[last] += 1
            elif last in ("tagging", "expiring"):
                stats[last] += 1
            elif last in ("flushed", "compacted", "created", "tagged", "expired"):
                stats["between"] += 1  # the call returned, its progress record not yet written
            elif last in ("store", "ready"):
                stats["opening"] += 1  # building the S3Store / reading the metadata
            else:
                stats["building"] += 1  # "start"/"done": building the next round in memory
            start = _last_marker(lines, "start")
            if start is not None:
                want = max(st.committed, -1) + 1
                assert int(start.split()[1]) == want, \
                    f"trial {trial}: writer resumed at {start!r}, store had {st.committed}"

            p = max(st.last_progress(), st.committed)
            allowed = {p, p + 1}
            where = (f"trial {trial} (seed {seed}, {kind}, store {st.sid}, fresh={fresh}, budget={budget}, "
                     f"last marker {lines[-1]!r})")
            got = _store_round(source(st.sid)())
            assert got in allowed, f"{where}: store is at round {got}, expected one of {sorted(allowed)}"
            stats["post_commit"] += got == p + 1
            stats["stores_created"] += st.committed == -2 and got >= -1
            if got >= 0:
                stats["rounds"] += got - max(st.committed, -1)
            if got == -2:
                assert _objects(source(st.sid)()) == [], f"{where}: objects left by a create that never happened"
            else:
                st.model.advance_to(got)
                check_s3_store(source(st.sid), st.model, f"{where}, round {got}")
                stats["versions_checked"] += check_versions(
                    lambda _s=source(st.sid), **kw: atlas.Atlas.open(_s(), **kw), st.plan, where)
            st.committed = got
            markers.unlink()
            if log.exists():
                log.unlink()
    finally:
        writers.close()
    # the crashed store is still a working store: one more round, a compact, a final check, and
    # the compact left one segment per array name (the crashes' orphans are gone)
    a = atlas.Atlas.open(source("main")())
    plan_ns["apply_to_atlas"](a, plan_ns["plan"](main.committed + 1, a.dataset_exists))
    a.flush()
    check_versions(lambda **kw: atlas.Atlas.open(source("main")(), **kw), main.plan, "before the final compact")
    for t in a.tags():
        a.delete_tag(t)
    a.expire(keep_last=1)
    a.compact()
    names = a.list_arrays()
    del a
    main.model.advance_to(main.committed + 1)
    check_s3_store(source("main"), main.model, "after the final compact")
    objs = _objects(source("main")())
    segs = [o for o in objs if o.startswith("arrays/")]
    vers = [o for o in objs if o.startswith("versions/")]
    assert set(objs) == {"atlas.meta", *segs, *vers} and len(segs) == len(names), f"after the final compact: {objs}"
    assert len(vers) == 1, f"after the final compact: {objs}"  # the one version kept
    stats["seconds"] = round(time.monotonic() - t0, 1)
    stats["main_rounds"] = main.committed + 1
    print(f"\nS3 crash trials: {stats}")
    return stats


def _assert_coverage(stats: dict[str, Any], flushing: int, compacting: int, creating: int) -> None:
    assert stats["flushing"] >= flushing, f"only {stats['flushing']} kills landed inside a flush: {stats}"
    assert stats["compacting"] >= compacting, f"only {stats['compacting']} kills landed inside a compact: {stats}"
    assert stats["creating"] >= creating, f"only {stats['creating']} kills landed inside Atlas.create: {stats}"
    assert stats["stores_created"] >= 1, f"no create trial ever created its store: {stats}"


def test_sigkill_during_create_flush_compact_on_s3(tmp_path, moto_server, moto_activity, s3_bucket,
                                                   monkeypatch) -> None:
    stats = run_s3_crash_trials(tmp_path, moto_server, moto_activity, s3_bucket, monkeypatch, kills=28, seed=20240602)
    _assert_coverage(stats, flushing=8, compacting=3, creating=1)


@pytest.mark.slow
def test_sigkill_during_create_flush_compact_on_s3_many(tmp_path, moto_server, moto_activity, s3_bucket,
                                                        monkeypatch) -> None:
    stats = run_s3_crash_trials(tmp_path, moto_server, moto_activity, s3_bucket, monkeypatch, kills=300, seed=8)
    _assert_coverage(stats, flushing=60, compacting=25, creating=10)
