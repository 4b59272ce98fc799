"""Shared pytest configuration."""

from __future__ import annotations

import os
import warnings

from hypothesis import settings

with warnings.catch_warnings():
    # Hypothesis imports libcst (which imports mypy_extensions) to print a patch for a failing
    # example; under filterwarnings=error that import's DeprecationWarning would turn a plain
    # test failure into an INTERNALERROR. Import it once, quietly, before any test runs.
    warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # pragma: no cover
        pass

# Hypothesis: a CI-sized profile, loaded by default (HYPOTHESIS_PROFILE picks another registered one).
# "ci" (the default) replays the same examples every run, so CI is reproducible; "explore" draws
# new random examples (HYPOTHESIS_PROFILE=explore python -m pytest, ideally with ATLAS_FUZZ_SCALE)
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("explore", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ``slow`` tests (e.g. the 300-kill crash loop) run only with --runslow; otherwise reported as skipped.
def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    import pytest

    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


# ---------------------------------------------------------------------------------------------
# Object storage: moto's S3 server on 127.0.0.1 (port 0) and a fresh bucket per test.
# No network beyond the loopback interface and no real credentials: the keys are dummies.
# ---------------------------------------------------------------------------------------------
import logging as _logging
import re as _re
import threading as _threading
import urllib.request as _urlreq
import uuid as _uuid
from dataclasses import dataclass as _dataclass, field as _field
from datetime import timedelta as _timedelta

import pytest as _pytest

_DUMMY_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_ANSI = _re.compile(r"\x1b\[[0-9;]*m")
_REQUEST_LINE = _re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')


class MotoRequestLog(_logging.Handler):
    """Records every HTTP request moto's (werkzeug) server logs: ``(method, target, status)``.

    werkzeug logs one INFO line per request on the ``werkzeug`` logger, with the request line
    and the status code; counting those counts the requests the S3 server actually received.
    """

    def __init__(self) -> None:
        super().__init__(_logging.INFO)
        self._lock_ = _threading.Lock()
        self.entries: list[tuple[str, str, int]] = []

    def emit(self, record: _logging.LogRecord) -> None:
        m = _REQUEST_LINE.search(_ANSI.sub("", record.getMessage()))  # werkzeug colours some lines
        if m:
            with self._lock_:
                self.entries.append((m["method"], m["target"], int(m["status"])))

    def clear(self) -> None:
        with self._lock_:
            self.entries.clear()

    def requests(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, int]]:
        with self._lock_:
            return [e for e in self.entries if (method is None or e[0] == method) and contains in e[1]]


@_dataclass
class MotoServer:
    endpoint: str
    log: MotoRequestLog = _field(repr=False)

    def s3_store(self, bucket: str, prefix: str | None = None):
        """An obstore ``S3Store`` on ``bucket`` of this server (dummy keys, short retries)."""
        from obstore.store import S3Store

        return S3Store(
            bucket,
            prefix=prefix,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
            client_options={"allow_http": True},
            retry_config={"max_retries": 1, "retry_timeout": _timedelta(seconds=5)},
        )

    def create_bucket(self, bucket: str) -> None:
        """A plain path-style ``PUT /<bucket>`` (obstore cannot create buckets)."""
        with _urlreq.urlopen(_urlreq.Request(f"{self.endpoint}/{bucket}", method="PUT"), timeout=10) as r:
            assert r.status == 200, r.status


@_pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server in a thread on 127.0.0.1, on a free port (port 0: no clashes under xdist)."""
    _pytest.importorskip("obstore", reason="obstore is not installed (pip install 'atlas-python[cloud]')")
    threaded = _pytest.importorskip(
        "moto.moto_server.threaded_moto_server", reason="moto[server] is not installed (pip install 'moto[server]')"
    )
    for k, v in _DUMMY_KEYS.items():
        os.environ.setdefault(k, v)
    log = MotoRequestLog()
    wlog = _logging.getLogger("werkzeug")
    old = (wlog.level, wlog.propagate)
    wlog.addHandler(log)
    wlog.setLevel(_logging.INFO)
    wlog.propagate = False  # keep per-request lines out of pytest's captured logs
    server = threaded.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoServer(f"http://{host}:{port}", log)
    finally:
        server.stop()
        wlog.removeHandler(log)
        wlog.setLevel(old[0])
        wlog.propagate = old[1]


@_pytest.fixture
def s3_bucket(moto_server):
    """A fresh, uniquely named bucket on the moto server (its name); emptied and removed afterwards."""
    import obstore

    bucket = f"atlas-test-{_uuid.uuid4().hex[:12]}"
    moto_server.create_bucket(bucket)
    yield bucket
    store = moto_server.s3_store(bucket)
    for batch in obstore.list(store):
        obstore.delete(store, [m["path"] for m in batch])
    with _urlreq.urlopen(_urlreq.Request(f"{moto_server.endpoint}/{bucket}", method="DELETE"), timeout=10) as r:
        assert r.status in (200, 204), r.status


@_pytest.fixture
def s3_store(moto_server, s3_bucket):
    """An obstore ``S3Store`` on a fresh bucket (prefix ``atlas/store``) of the moto server."""
    return moto_server.s3_store(s3_bucket, prefix="atlas/store")


# ---------------------------------------------------------------------------------------------
# Read strategies: the one place that knows how the engine picks one (re-point it here when the
# engine's modules move). Today ``Engine._gather`` reads in parallel only when the pool has more
# than one thread and a request decodes at least ``PARALLEL_MIN_BYTES``; a storage with
# ``io_concurrency > 1`` (object stores) fetches on the I/O pool, local disk on the CPU pool.
# ---------------------------------------------------------------------------------------------
@_pytest.fixture
def read_strategy(monkeypatch):
    """``read_strategy(threads, pooled=None) -> int``: see :func:`_force_read_strategy`."""
    import atlas._executor as executor_mod

    before = executor_mod._pool
    yield lambda threads, pooled=None: _force_read_strategy(monkeypatch, threads, pooled)
    made = executor_mod._pool  # still the test's own pool: monkeypatch restores the old one after this
    if made is not None and made is not before:
        made.shutdown(wait=True)


def _force_read_strategy(monkeypatch, threads: int, pooled: bool | None) -> int:
    """Run the rest of the test with a pool of ``threads`` threads (``ATLAS_NUM_THREADS``) and,
    with ``pooled`` True/False, every multi-frame request on the pooled/inline path whatever its
    size (None keeps the size rule). Returns the size threshold then in effect (bytes decoded).
    Undone by ``monkeypatch``."""
    import atlas._read as engine_mod
    import atlas._executor as executor_mod

    monkeypatch.setenv("ATLAS_NUM_THREADS", str(threads))
    monkeypatch.setattr(executor_mod, "_size", None)  # else atlas.set_num_threads() overrides the variable
    monkeypatch.setattr(executor_mod, "_pool", None)  # the pool is made with ``threads`` workers on first use
    if pooled is not None:
        monkeypatch.setattr(engine_mod, "PARALLEL_MIN_BYTES", 0 if pooled else 2**62)
    assert executor_mod.num_threads() == threads
    return int(engine_mod.PARALLEL_MIN_BYTES)
