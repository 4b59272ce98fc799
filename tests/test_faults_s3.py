"""Object-store faults: a failed S3 request raises, keeps pending changes, and loses nothing flushed.

The S3 twin of ``test_faults.py``. Faults are injected in moto's server (``conftest.moto_server``,
127.0.0.1), so the real obstore client sees a real failure: the server's WSGI app is wrapped to
fail the k-th request of one kind (PUT, conditional PUT, multipart start/part/complete, GET,
range GET, list, delete, HEAD) sent by the store under test, which is told apart by its
User-Agent. The kinds of failure:

* ``http500``: an S3 ``InternalError`` reply, nothing applied;
* ``reset``: the connection is dropped before the request is applied;
* ``timeout``: no reply until after the client's timeout, nothing applied;
* ``reset_after`` / ``timeout_after``: the request *is applied*, then the reply is lost (dropped
  connection or a reply later than the client's timeout): the client cannot tell it happened.

The calls: a flush, a compact, an ``Atlas.create``, read-modify-writes and the reads of a freshly
opened store; the requests each one sends come from a fault-free dry run of the same scenario.
By default every one of them fails once with ``http500`` and the last of each kind with the
other faults (a timeout at chosen places); with --runslow every request with every fault. Each
case checks: the call raised obstore's error, naming the object of the failed request (not a
misleading FileNotFoundError, CorruptStoreError or ConcurrentWriteError); the pending changes
are still visible through the handle; the store as another handle opens it is exactly the state
before the call; a retry of the call on the same handle succeeds; the store reopens with the new
state and ``verify()`` finds nothing wrong. With obstore's retries on, the same transient faults
must be invisible. A lost reply of a request that *did* land and matters (the metadata commit,
the completion of a segment upload) has its own tests at the end.

No network beyond 127.0.0.1; the only credentials are moto's dummy keys.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
import urllib.parse
import uuid
from datetime import timedelta
from typing import Any, Callable

import numpy as np
import pytest

obstore = pytest.importorskip("obstore", reason="obstore is not installed (pip install 'atlas-python[cloud]')")
from obstore.exceptions import GenericError  # noqa: E402
from obstore.store import S3Store  # noqa: E402

import atlas  # noqa: E402
from atlas.errors import ConcurrentWriteError, CorruptStoreError  # noqa: E402
from test_faults import _fill, _state  # noqa: E402  (tests/ is on sys.path: pytest's "prepend" import mode)

FAULTY_UA = "atlas-fault-injection"
CLIENT_TIMEOUT = 2.0  # seconds: the faulty handle's request timeout (1 s gave spurious timeouts late in a warm full run, when the moto server thread in the test process stalled)
LATE = 2.4  # seconds: how late a "timeout" reply comes (after the client gave up)
_ERROR_XML = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
              b'<Message>We encountered an internal error. Please try again. (injected)</Message></Error>')

# every fault injected in this module, for the summary printed at its end: (phase, action, op) -> n
INJECTED: collections.Counter = collections.Counter()


def classify(environ: dict[str, Any]) -> str:
    """The kind of an S3 request, as obstore sends them."""
    method = environ["REQUEST_METHOD"]
    q = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if method == "HEAD":
        return "head"
    if method == "GET":
        if "list-type" in q:
            return "list"
        return "get_range" if environ.get("HTTP_RANGE") else "get"
    if method == "PUT":
        if "partNumber" in q:
            return "mpu_part"
        if environ.get("HTTP_IF_MATCH"):
            return "put_if_match"
        if environ.get("HTTP_IF_NONE_MATCH"):
            return "put_create"
        return "put"
    if method == "POST":
        if "uploads" in q:
            return "mpu_start"
        if "uploadId" in q:
            return "mpu_complete"
        if "delete" in q:
            return "delete"
    if method == "DELETE":
        return "mpu_abort" if "uploadId" in q else "delete"
    return method.lower()


class S3Faults:
    """Fails the ``k``-th request of kind ``op`` sent with the faulty User-Agent (one fault per arming)."""

    def __init__(self, moto_server, bucket: str) -> None:
        self.moto = moto_server
        self.bucket = bucket
        self._lock = threading.Lock()
        self._plan: tuple[str, int, str] | None = None
        self.counts: collections.Counter = collections.Counter()
        self.injected: list[tuple[str, int, str, str]] = []  # (op, k, action, request path)
        self._busy = 0  # injected requests whose server thread has not finished yet

    # -------------------------------------------------------------- stores
    def faulty(self, prefix: str, retries: int = 0) -> S3Store:
        """The store under test: as conftest builds it, plus a User-Agent and a short timeout."""
        return S3Store(self.bucket, prefix=prefix, endpoint=self.moto.endpoint, region="us-east-1",
                       access_key_id="testing", secret_access_key="testing",
                       client_options={"allow_http": True, "user_agent": FAULTY_UA,
                                       "timeout": timedelta(seconds=CLIENT_TIMEOUT)},
                       retry_config={"max_retries": retries, "retry_timeout": timedelta(seconds=10),
                                     "backoff": {"init_backoff": timedelta(milliseconds=10),
                                                 "max_backoff": timedelta(milliseconds=50), "base": 2}})

    def clean(self, prefix: str) -> S3Store:
        return self.moto.s3_store(self.bucket, prefix=prefix)

    # -------------------------------------------------------------- plan
    def arm(self, op: str | None = None, k: int = 0, action: str | None = None) -> None:
        """Start counting the faulty handle's requests; fail the ``k``-th of kind ``op`` with ``action``."""
        with self._lock:
            self.counts.clear()
            self.injected.clear()
            self._plan = (op, k, action) if action else None

    def disarm(self) -> None:
        with self._lock:
            self._plan = None
        deadline = time.monotonic() + 30
        while True:  # a late reply's server thread must be done before anything is checked
            with self._lock:
                if self._busy == 0:
                    return
            assert time.monotonic() < deadline, "an injected request is still being handled after 30 s"
            time.sleep(0.01)

    def _decide(self, environ: dict[str, Any]) -> str | None:
        if environ.get("HTTP_USER_AGENT") != FAULTY_UA:
            return None
        if urllib.parse.unquote(environ.get("PATH_INFO", "")).split("/")[1:2] != [self.bucket]:
            return None
        op = classify(environ)
        with self._lock:
            self.counts[op] += 1
            plan = self._plan
            if plan is None or plan[0] != op or plan[1] != self.counts[op]:
                return None
            self._plan = None
            self._busy += 1
            self.injected.append((op, plan[1], plan[2], urllib.parse.unquote(environ["PATH_INFO"])))
            return plan[2]

    def app(self, real: Callable[..., Any]) -> Callable[..., Any]:
        """``DomainDispatcherApplication.__call__`` with the faults."""
        faults = self

        def __call__(app_self, environ, start_response):
            action = faults._decide(environ)
            if action is None:
                return real(app_self, environ, start_response)
            try:
                return faults._inject(action, real, app_self, environ, start_response)
            finally:
                with faults._lock:
                    faults._busy -= 1

        return __call__

    @staticmethod
    def _inject(action, real, app_self, environ, start_response):
        from werkzeug.wsgi import get_input_stream

        if action.endswith("_after"):  # apply the request, then lose the reply
            b"".join(real(app_self, environ, lambda *a, **k: (lambda data: None)))
        else:
            get_input_stream(environ).read()  # the whole body arrived; it is not applied
        if action.startswith("timeout"):
            time.sleep(LATE)
        if action.startswith("http"):
            status, code = {"http500": ("500 Internal Server Error", b"InternalError"),
                            "http503": ("503 Slow Down", b"SlowDown")}[action]
            body = _ERROR_XML.replace(b"InternalError", code)
            start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        # no reply at all: the connection is closed under the client (werkzeug treats the
        # ConnectionResetError as a dropped connection and stays quiet)
        try:
            environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise ConnectionResetError(f"injected {action}")


@pytest.fixture
def faults(moto_server, s3_bucket, monkeypatch):
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    f = S3Faults(moto_server, s3_bucket)
    monkeypatch.setattr(DomainDispatcherApplication, "__call__", f.app(DomainDispatcherApplication.__call__))
    yield f
    f.disarm()


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if INJECTED:
        by: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for (phase, action, op), n in sorted(INJECTED.items()):
            by[f"{phase}/{action}"][op] += n
        lines = [f"  {k}: {dict(v)}" for k, v in by.items()]
        print(f"\nS3 faults injected: {sum(INJECTED.values())}\n" + "\n".join(lines))


def _objects(store: S3Store) -> list[str]:
    return sorted(m["path"] for batch in obstore.list(store) for m in batch)


def _assert_compacted(f: S3Faults, prefix: str) -> None:
    """After a compact (of a store with one version kept): the metadata, the file of that version
    and one segment per array name, nothing else."""
    objs = _objects(f.clean(prefix))
    segs = [o for o in objs if o.startswith("arrays/")]
    vers = [o for o in objs if o.startswith("versions/")]
    names = atlas.Atlas.open(f.clean(prefix)).list_arrays()
    assert set(objs) == {"atlas.meta", *segs, *vers} and len(segs) == len(names) and len(vers) == 1, objs


# ============================================================================ scenarios
class Scenario:
    """One call under test on a fresh store (a fresh prefix): set up unarmed, then ``op()``.

    ``after_fault()`` checks what must hold once ``op()`` has failed, ``retry()`` repeats the
    call and ``final()`` checks the end state.
    """

    phase = ""

    def __init__(self, f: S3Faults, retries: int = 0) -> None:
        self.f = f
        self.prefix = f"{self.phase}-{uuid.uuid4().hex[:10]}"
        self.retries = retries

    _references: dict[str, Any] = {}

    def reference(self) -> Any:
        """The state of the store just set up, read once per scenario (the setup is deterministic)."""
        ref = Scenario._references.get(self.phase)
        if ref is None:
            ref = Scenario._references[self.phase] = _state(atlas.Atlas.open(self.f.clean(self.prefix)))
        return ref

    def op(self) -> None:
        raise NotImplementedError

    def after_fault(self, applied: bool) -> None:
        raise NotImplementedError

    def retry(self) -> None:
        self.op()

    def final(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Delete the scenario's objects (a bucket of thousands of keys slows moto's listings)."""
        store = self.f.clean(self.prefix)
        for batch in obstore.list(store):
            obstore.delete(store, [m["path"] for m in batch])


class FlushScenario(Scenario):
    """New datasets, an overwrite and a delete over a flushed store; the call is ``flush()``."""

    phase = "flush"

    def __init__(self, f: S3Faults, retries: int = 0) -> None:
        super().__init__(f, retries)
        base = atlas.Atlas.create(f.clean(self.prefix))
        _fill(base, "old")
        base.flush()
        self.flushed = self.reference()
        self.store = atlas.Atlas.open(f.faulty(self.prefix, retries))
        _fill(self.store, "new")
        self.store.open_dataset("old1").write_array("v", [10], np.full(13, -1, np.float32))  # across chunks
        self.store.open_dataset("old1").write_array("s", [1], np.array(["changed"], dtype=object))
        self.store.open_dataset("old0").set_attribute("note", "pending")
        self.store.delete_dataset("old2")
        self.before = _state(self.store)
        assert self.before != self.flushed

    def op(self) -> None:
        self.store.flush()

    def after_fault(self, applied: bool) -> None:
        assert _state(self.store) == self.before, "the pending changes are gone from the handle"
        want = self.before if applied else self.flushed
        assert _state(atlas.Atlas.open(self.f.clean(self.prefix))) == want, "the store changed"

    def final(self) -> None:
        assert _state(self.store) == self.before
        again = atlas.Atlas.open(self.f.clean(self.prefix))
        assert _state(again) == self.before
        assert again.verify() == []


class CompactScenario(Scenario):
    """A store with a deleted dataset and overwritten chunks (garbage to reclaim); ``compact()``."""

    phase = "compact"

    def __init__(self, f: S3Faults, retries: int = 0) -> None:
        super().__init__(f, retries)
        s = atlas.Atlas.create(f.clean(self.prefix))
        _fill(s, "d", 3)
        s.flush()
        s.delete_dataset("d1")
        s.open_dataset("d2").write_array("v", [0], np.full(20, 7, np.float32))
        s.flush()
        s.expire(keep_last=1)  # versions are kept until expired: only then is there garbage
        self.want = self.reference()
        self.store = atlas.Atlas.open(f.faulty(self.prefix, retries))

    def op(self) -> None:
        self.store.compact()

    def after_fault(self, applied: bool) -> None:
        assert _state(self.store) == self.want
        assert _state(atlas.Atlas.open(self.f.clean(self.prefix))) == self.want

    def final(self) -> None:
        assert _state(self.store) == self.want
        again = atlas.Atlas.open(self.f.clean(self.prefix))
        assert _state(again) == self.want
        assert again.verify() == []
        _assert_compacted(self.f, self.prefix)


class ReadScenario(Scenario):
    """Open a flushed store and read everything (single and stacked reads, stats)."""

    phase = "read"

    def __init__(self, f: S3Faults, retries: int = 0) -> None:
        super().__init__(f, retries)
        s = atlas.Atlas.create(f.clean(self.prefix))
        _fill(s, "d", 3)
        s.flush()
        self.want = self.reference()
        self.store: atlas.Atlas | None = None

    def _read(self) -> tuple[Any, ...]:
        if self.store is None:
            self.store = atlas.Atlas.open(self.f.faulty(self.prefix, self.retries))
        s = self.store
        stacked = s.read_array_across_stacked("v", ["d0", "d1", "d2"], [5], [30])
        return (_state(s), stacked.tolist(), [s.open_dataset(n).array_stats("v") for n in s.list_datasets()])

    def op(self) -> None:
        self.got = self._read()

    def after_fault(self, applied: bool) -> None:
        assert _state(atlas.Atlas.open(self.f.clean(self.prefix))) == self.want

    def final(self) -> None:
        state, stacked, stats = self.got
        assert state == self.want
        assert stacked == [(np.arange(5, 35, dtype=np.float32) + i).tolist() for i in range(3)]
        assert [(st["null_count"], st["min"], st["max"]) for st in stats] == [(0, float(i), 39.0 + i) for i in range(3)]
        assert self._read() == self.got  # the handle keeps working


class WriteScenario(Scenario):
    """Partial writes into flushed chunks: each reads the old chunk first (read-modify-write)."""

    phase = "write"

    def __init__(self, f: S3Faults, retries: int = 0) -> None:
        super().__init__(f, retries)
        s = atlas.Atlas.create(f.clean(self.prefix))
        _fill(s, "d", 2)
        s.flush()
        self.flushed = self.reference()
        self.store = atlas.Atlas.open(f.faulty(self.prefix, retries))
        self.writes = [("d0", "v", [3], np.full(20, -5, np.float32)), ("d1", "s", [1], np.array(["w"], dtype=object)),
                       ("d1", "v", [30], np.full(3, 9, np.float32))]
        self.done = 0

    def _expected(self, n: int) -> dict[str, Any]:
        exp = {k: (list(v), list(s), dict(a)) for k, (v, s, a) in self.flushed.items()}
        for d, arr, (start,), data in self.writes[:n]:
            col = exp[d][0 if arr == "v" else 1]
            col[start:start + len(data)] = data.tolist()
        return exp

    def op(self) -> None:
        for d, arr, start, data in self.writes[self.done:]:
            self.store.open_dataset(d).write_array(arr, start, data)
            self.done += 1

    def after_fault(self, applied: bool) -> None:
        assert self.done < len(self.writes)
        assert _state(self.store) == self._expected(self.done), "a failed write left a partial change"
        assert _state(atlas.Atlas.open(self.f.clean(self.prefix))) == self.flushed

    def final(self) -> None:
        want = self._expected(len(self.writes))
        assert _state(self.store) == want
        self.store.flush()
        again = atlas.Atlas.open(self.f.clean(self.prefix))
        assert _state(again) == want
        assert again.verify() == []


class CreateScenario(Scenario):
    """``Atlas.create`` on an empty prefix (a HEAD, then a PUT If-None-Match)."""

    phase = "create"

    def op(self) -> None:
        self.store = atlas.Atlas.create(self.f.faulty(self.prefix, self.retries))

    def after_fault(self, applied: bool) -> None:
        if applied:
            assert atlas.Atlas.open(self.f.clean(self.prefix)).list_datasets() == []
        else:
            assert _objects(self.f.clean(self.prefix)) == []
            with pytest.raises(FileNotFoundError):
                atlas.Atlas.open(self.f.clean(self.prefix))

    def final(self) -> None:
        ds = self.store.create_dataset("x")
        ds.define_array("v", "int64", ["i"], [3])
        ds.write_array("v", [0], np.arange(3))
        self.store.flush()
        again = atlas.Atlas.open(self.f.clean(self.prefix))
        assert again.open_dataset("x").read_array("v").tolist() == [0, 1, 2]
        assert again.verify() == []


SCENARIOS = {s.phase: s for s in (FlushScenario, CompactScenario, ReadScenario, WriteScenario, CreateScenario)}
COMMITS = ("put_if_match", "put_create")  # the metadata commit: a lost reply of one that landed is tested apart
LOST_REPLY_APART = COMMITS + ("mpu_complete",)  # ... and so is a lost reply of a segment upload's completion


def dry_run(f: S3Faults, scenario: type[Scenario], retries: int = 0) -> collections.Counter:
    """The faulty handle's requests, by kind, in one fault-free run of the call."""
    sc = scenario(f, retries)
    f.arm()
    sc.op()
    counts = collections.Counter(f.counts)
    f.disarm()
    sc.final()
    sc.cleanup()
    return counts


def positions(counts: collections.Counter, which: str) -> list[tuple[str, int]]:
    """(kind, k) to fail: ``every`` request, the ``ends`` (first and last) or the ``last`` of each kind."""
    out = []
    for op, n in sorted(counts.items()):
        ks = {"every": range(1, n + 1), "ends": sorted({1, n}), "last": [n]}[which]
        out.extend((op, k) for k in ks)
    return out


def assert_clear(err: BaseException, path: str, where: str) -> None:
    """A failed request surfaces as an I/O error that names its object, not as a misleading one
    (a missing file, a damaged store, another writer)."""
    assert not isinstance(err, (FileNotFoundError, CorruptStoreError, ConcurrentWriteError)), \
        f"{where}: misleading {type(err).__name__}: {err}"
    parts = path.split("?")[0].split("/", 2)  # /<bucket>/<key>, or /<bucket> for a list or a bulk delete
    name = parts[2] if len(parts) > 2 else f"/{parts[1]}?"
    assert name in str(err), f"{where}: the error does not name {name}: {err}"


def inject(f: S3Faults, scenario: type[Scenario], op: str, k: int, action: str, applied: bool = False,
           retries: int = 0, clear: bool = True) -> Scenario:
    """One case: the call fails at request ``(op, k)``; every check of the module docstring."""
    sc = scenario(f, retries)
    where = f"{sc.phase}: {action} on {op} #{k}"
    f.arm(op, k, action)
    try:
        with pytest.raises((GenericError, OSError)) as err:
            sc.op()
    finally:
        f.disarm()
    assert len(f.injected) == 1, f"{where}: fault not injected ({dict(f.counts)})"
    INJECTED[(sc.phase, action, op)] += 1
    if clear:
        assert_clear(err.value, f.injected[0][3], where)
    sc.after_fault(applied)
    sc.retry()
    sc.final()
    sc.cleanup()
    return sc


# ============================================================================ the sweeps
# By default every request fails with ``http500`` and the last of each kind with the others; with
# --runslow every request with every kind of fault.
@pytest.mark.parametrize("phase", list(SCENARIOS))
def test_failing_requests_raise_keep_pending_and_retry_succeeds(faults, phase, request):
    """``http500``, ``reset`` and ``reset_after`` on the requests of the call (except a lost reply
    of a metadata commit or of a segment upload's completion that landed: see the tests below)."""
    scenario = SCENARIOS[phase]
    counts = dry_run(faults, scenario)
    assert counts, f"{phase}: the dry run sent no request"
    every = request.config.getoption("--runslow")
    cases = 0
    for action in ("http500", "reset", "reset_after"):
        for op, k in positions(counts, "every" if every or action == "http500" else "last"):
            if action == "reset_after" and op in LOST_REPLY_APART:
                continue
            inject(faults, scenario, op, k, action)
            cases += 1
    print(f"\n{phase}: {cases} faults over {dict(counts)}")


TIMEOUTS = [("create", "put_create", "timeout"), ("flush", "mpu_part", "timeout"), ("flush", "put_if_match", "timeout"),
            ("flush", "mpu_part", "timeout_after"), ("compact", "get_range", "timeout"),
            ("compact", "delete", "timeout_after"), ("read", "get", "timeout"), ("read", "get_range", "timeout")]


@pytest.mark.parametrize("phase,op,action", TIMEOUTS)
def test_timeout_raises_keeps_pending_and_retry_succeeds(faults, phase, op, action):
    """A reply later than the client's timeout, on the first request of a kind; the request is
    not applied (``timeout``) or is (``timeout_after``)."""
    t = time.monotonic()
    inject(faults, SCENARIOS[phase], op, 1, action)
    assert time.monotonic() - t < 10 * CLIENT_TIMEOUT + LATE + 5


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(SCENARIOS))
def test_timeouts_everywhere(faults, phase):
    scenario = SCENARIOS[phase]
    for op, k in positions(dry_run(faults, scenario), "ends"):
        inject(faults, scenario, op, k, "timeout")
        if op not in LOST_REPLY_APART:
            inject(faults, scenario, op, k, "timeout_after")


@pytest.mark.parametrize("phase", list(SCENARIOS))
def test_transient_faults_are_retried_by_obstore(faults, phase, request):
    """With obstore's retries on, a 503 SlowDown or a dropped connection (before the request is applied)
    is invisible: the call succeeds and stores exactly what it should. By default the first
    request of each kind, with a 503 or a drop in turn; with --runslow every request, both."""
    scenario = SCENARIOS[phase]
    counts = dry_run(faults, scenario, retries=2)
    every = request.config.getoption("--runslow")
    cases = [(op, k, a) for op, k in positions(counts, "every") for a in ("http503", "reset")] if every else \
        [(op, 1, ("http503", "reset")[i % 2]) for i, op in enumerate(sorted(counts))]
    for op, k, action in cases:
        sc = scenario(faults, retries=2)
        faults.arm(op, k, action)
        try:
            sc.op()
        finally:
            faults.disarm()
        assert len(faults.injected) == 1, f"{phase}: {action} on {op} #{k} not injected"
        INJECTED[(phase + "+retries", action, op)] += 1
        sc.final()
        sc.cleanup()


# ============================================================================ lost replies
# The request lands, but the client sees an error (a dropped connection, a late reply). The call
# may then raise (a clear error: the store is whole, the handle keeps its pending changes and a
# retry succeeds) or find out that its request landed and succeed; it must not report another
# writer or a missing file.
def lost_reply(f: S3Faults, scenario: type[Scenario], op: str, action: str, applied: bool,
               retries: int = 0) -> Scenario:
    sc = scenario(f, retries)
    where = f"{sc.phase}: {action} on {op} #1 (retries={retries})"
    f.arm(op, 1, action)
    raised: BaseException | None = None
    try:
        sc.op()
    except (GenericError, OSError) as e:  # anything else (ConcurrentWriteError) fails the test
        raised = e
    finally:
        f.disarm()
    assert len(f.injected) == 1, f"{where}: fault not injected ({dict(f.counts)})"
    INJECTED[(sc.phase + ("+retries" if retries else ""), action, op)] += 1
    if raised is not None:
        assert_clear(raised, f.injected[0][3], where)
        sc.after_fault(applied)
        sc.retry()
    sc.final()
    sc.cleanup()
    return sc


# Fixed bug, kept as documentation of what these tests pin:
AMBIGUOUS = ("a metadata commit (conditional PUT of atlas.meta) that landed but whose reply was lost leaves "
             "the handle's ETag stale: the next conditional PUT, the retry's (or obstore's own retry of the same "
             "PUT), gets 412 and atlas raises ConcurrentWriteError although there is no other writer "
             "(storage/_object.py ObjectStorage.commit)")


@pytest.mark.parametrize("action,retries", [("reset_after", 0), ("timeout_after", 0), ("reset_after", 2)])
@pytest.mark.parametrize("phase", ["flush", "compact"])
def test_lost_commit_reply_then_retry_succeeds(faults, phase, action, retries):
    lost_reply(faults, SCENARIOS[phase], "put_if_match", action, applied=True, retries=retries)


def test_lost_create_reply_with_obstore_retries_is_not_a_concurrent_write(faults):
    lost_reply(faults, CreateScenario, "put_create", "reset_after", applied=True, retries=2)


@pytest.mark.parametrize("phase", ["flush", "compact"])
def test_lost_commit_reply_loses_nothing(faults, phase):
    """Whatever the retry says (see above), nothing is lost or torn: the store holds the new state,
    whole, and the handle its pending changes."""
    sc = SCENARIOS[phase](faults)
    faults.arm("put_if_match", 1, "reset_after")
    raised = False
    try:
        sc.op()
    except GenericError:
        raised = True
    finally:
        faults.disarm()
    assert len(faults.injected) == 1
    INJECTED[(phase, "reset_after", "put_if_match")] += 1
    if raised:
        sc.after_fault(applied=True)
    sc.retry()
    again = atlas.Atlas.open(faults.clean(sc.prefix))
    assert _state(again) == (sc.before if isinstance(sc, FlushScenario) else sc.want)
    assert again.verify() == []
    sc.cleanup()


@pytest.mark.parametrize("action", ["reset_after", "timeout_after"])
def test_lost_create_reply(faults, action):
    """``Atlas.create`` whose PUT landed but whose reply was lost: if the call raises, the store
    exists, is empty and opens, and creating it again is refused (an existing store is never
    replaced)."""
    sc = CreateScenario(faults)
    faults.arm("put_create", 1, action)
    try:
        sc.op()
        raised = False
    except GenericError as e:
        assert "atlas.meta" in str(e)
        raised = True
    finally:
        faults.disarm()
    assert len(faults.injected) == 1
    INJECTED[("create", action, "put_create")] += 1
    if raised:
        sc.after_fault(applied=True)
        with pytest.raises(FileExistsError):
            atlas.Atlas.create(faults.faulty(sc.prefix))
        sc.store = atlas.Atlas.open(faults.faulty(sc.prefix))
    sc.final()
    sc.cleanup()


# The last request of a segment upload (CompleteMultipartUpload) lands, its reply is lost; the
# metadata is not committed, so the store is unchanged.
# Fixed bug, kept as documentation of what these tests pin:
LOST_UPLOAD = ("a segment upload whose CompleteMultipartUpload landed but whose reply was lost makes "
               "flush/compact raise FileNotFoundError ('Object at location .../sNNN.seg not found'): obstore "
               "then aborts the finished upload, gets 404 NoSuchUpload and raises that instead of the I/O "
               "error; ObjectStorage.write (storage/_object.py) passes it on")


@pytest.mark.parametrize("action", ["reset_after", "timeout_after"])
@pytest.mark.parametrize("phase", ["flush", "compact"])
def test_lost_upload_completion_reply_raises_a_clear_error(faults, phase, action):
    lost_reply(faults, SCENARIOS[phase], "mpu_complete", action, applied=False)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("phase", ["flush", "compact"])
def test_lost_upload_completion_reply_loses_nothing(faults, phase, k):
    """The same fault, whatever the error says: pending changes kept, store unchanged, retry succeeds."""
    inject(faults, SCENARIOS[phase], "mpu_complete", k, "reset_after", clear=False)


def test_injector_can_fail(faults):
    """The harness itself: an injected fault that atlas swallowed would fail ``inject``."""
    sc = FlushScenario(faults)
    faults.arm("put_if_match", 1, "http500")
    with pytest.raises(GenericError):
        sc.op()
    faults.disarm()
    assert faults.injected and faults.injected[0][:3] == ("put_if_match", 1, "http500")
    # a fault on a request the call never sends is reported as not injected
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        inject(faults, FlushScenario, "head", 99, "http500")


# ============================================================================ versions
def _versioned(f: S3Faults, prefix: str) -> atlas.Atlas:
    s = atlas.Atlas.create(f.clean(prefix))
    for i in range(4):
        _fill(s, f"r{i}-", 2)
        s.flush(message=f"round {i}")
    return s


@pytest.mark.parametrize("action", ["http500", "reset", "reset_after", "timeout_after"])
def test_tag_put_fault_leaves_one_tag_or_none_and_a_retry_settles_it(faults, action):
    """A tag is one conditional PUT: a failure before it landed leaves no tag; a lost reply of one
    that landed is recognised (the bytes read back are this call's) and is no concurrent tag."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    _versioned(faults, prefix)
    s = atlas.Atlas.open(faults.faulty(prefix))
    faults.arm("put_create", 1, action)
    try:
        s.tag("t", version=2)
        ok = True
    except (GenericError, OSError):
        ok = False
    finally:
        faults.disarm()
    assert len(faults.injected) == 1
    tags = atlas.Atlas.open(faults.clean(prefix)).tags()
    if ok:
        assert tags == {"t": 2}
    else:
        assert tags in ({}, {"t": 2})
        if not tags:
            s.tag("t", version=2)
    assert atlas.Atlas.open(faults.clean(prefix)).tags() == {"t": 2}
    assert atlas.Atlas.open(faults.clean(prefix), tag="t").verify() == []


@pytest.mark.parametrize("op,k", [("put_if_match", 1), ("delete", 1), ("delete", 2)])
def test_expire_fault_keeps_every_retained_version_and_compact_cleans_up(faults, op, k):
    """A failed expiry commit changes nothing; a failed delete of an expired version's file leaves
    an orphan file that the next compact removes. Every retained version verifies throughout."""
    prefix = f"e-{uuid.uuid4().hex[:8]}"
    _versioned(faults, prefix)
    s = atlas.Atlas.open(faults.faulty(prefix))
    faults.arm(op, k, "http500")
    with pytest.raises((GenericError, OSError)):
        s.expire(keep_last=1)
    faults.disarm()
    clean = atlas.Atlas.open(faults.clean(prefix))
    kept = [h["version"] for h in clean.history()]
    assert kept == ([1, 2, 3, 4] if op == "put_if_match" else [4])
    for v in kept:
        assert atlas.Atlas.open(faults.clean(prefix), version=v).verify() == []
    s.expire(keep_last=1)
    s.compact()
    _assert_compacted(faults, prefix)
    assert atlas.Atlas.open(faults.clean(prefix), version=4).verify() == []
