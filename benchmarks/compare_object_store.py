#!/usr/bin/env python
"""The gridded stacked read on object storage: moto's S3 server vs local disk, in one run.

Workload (the gridded one of ``benchmarks/compare``): N datasets (default 200), each with three float32
arrays ``temp``, ``salt``, ``u`` of shape (24, 90, 180) chunked (6, 45, 90), smooth fields plus
noise with 10 mantissa bits kept (zstd compresses them about 2x), written with one flush. The
read is ``temp[0:6, 0:45, 0:90]`` (one chunk) of every dataset into one (N, 6, 45, 90) array with
``read_array_across_stacked``.

Backends, same data, same process:

* ``local disk``: a path (atlas's own pread storage);
* ``LocalStore``: the same kind of directory through obstore's ``LocalStore`` (get_ranges);
* ``S3 (moto)``: obstore ``S3Store`` against moto's S3 server, started by this script in its own
  process on 127.0.0.1 (port 0), so serving requests does not compete with the reader for the GIL.
  moto is a Python server on loopback: it shows request counts and per-request overhead, not
  real S3 latency or bandwidth.

Timings (medians over ``--repeats``): ``cold`` = ``Atlas.open`` + the stacked read on a fresh
handle (metadata GET, chunk-index read, data); ``warm`` = the stacked read again on an open
handle (the index is cached; data frames of this size are not). Counted per cold read:
``read_ranges`` calls atlas made on its storage (and the byte ranges they asked for: the
compressed bytes the read needs, index included), the HTTP GETs moto served for segment objects,
and the bytes those GETs asked for (their Range headers, logged by the moto child). obstore's
``get_ranges`` merges ranges less than 1 MiB apart (its ``coalesce`` default) into one request,
so on S3 the bytes fetched can exceed the bytes needed; local reads fetch exactly the ranges.

    python benchmarks/compare_object_store.py [--datasets 200] [--repeats 5] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Callable

import numpy as np

MOTO_CHILD = r"""
import logging, sys
from moto.server import ThreadedMotoServer
from werkzeug.serving import WSGIRequestHandler
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
_log_request = WSGIRequestHandler.log_request

def log_request(self, code="-", size="-"):  # also log the Range header of every request
    _log_request(self, code, size)
    logging.getLogger("ranges").info("RANGE %s %s %s", self.command, self.path, self.headers.get("Range"))

WSGIRequestHandler.log_request = log_request
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # run until the parent closes our stdin
server.stop()
"""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _gridded() -> Any:
    """The gridded workload of the comparison harness (benchmarks/compare/workloads.py)."""
    from types import SimpleNamespace

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here not in sys.path:
        sys.path.insert(0, here)
    from benchmarks.compare.workloads import WORKLOADS, grid_array

    w = WORKLOADS["gridded"]
    start, count = w.first_chunk
    box = tuple(slice(a, a + b) for a, b in zip(start, count))

    def stack_source(n: int) -> np.ndarray:
        return np.stack([w.data(i, w)[w.arrays[0]][box] for i in range(n)])

    return SimpleNamespace(VARS=w.arrays, DIMS=w.dims, SHAPE=w.shape, CHUNK=w.chunk, STACK_VAR=w.arrays[0],
                           STACK_START=start, STACK_COUNT=count, stack_source=stack_source,
                           make_array=lambda i, k: grid_array(i, k, w.shape),
                           dataset_name=lambda i: w.names()[0][:2] + f"{i:06d}")


# --------------------------------------------------------------------------- moto in a child process
class MotoProcess:
    def __init__(self, workdir: str) -> None:
        self.log_path = os.path.join(workdir, "moto.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", MOTO_CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip():
            self.close()
            raise RuntimeError(f"moto server did not start; see {self.log_path}")
        self.endpoint = f"http://127.0.0.1:{int(line)}"

    def create_bucket(self, bucket: str) -> None:
        with urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT"), timeout=30):
            pass

    def store(self, bucket: str, prefix: str) -> Any:
        from datetime import timedelta

        from obstore.store import S3Store

        return S3Store(bucket, prefix=prefix, endpoint=self.endpoint, region="us-east-1",
                       access_key_id="testing", secret_access_key="testing",
                       client_options={"allow_http": True, "timeout": timedelta(seconds=300)},
                       retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=300)})

    def log_size(self) -> int:
        return os.path.getsize(self.log_path)

    def segment_gets(self, since: int) -> tuple[int, int]:
        """GETs of segment objects logged since byte ``since`` of the log, and the bytes their
        Range headers asked for (every segment GET atlas makes is ranged)."""
        with open(self.log_path, errors="replace") as f:
            f.seek(since)
            text = _ANSI.sub("", f.read())
        gets = len(re.findall(r'"GET \S+\.seg HTTP/[0-9.]+" 20[06]', text))
        ranged = re.findall(r"^RANGE GET \S+\.seg bytes=(\d+)-(\d+)$", text, re.M)
        if len(ranged) != gets:
            raise RuntimeError(f"{gets} segment GETs but {len(ranged)} with a single byte range")
        return gets, sum(int(b) - int(a) + 1 for a, b in ranged)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------- counting
class Counter:
    """Wraps the read_ranges of both storage classes: calls, ranges and the bytes they asked for."""

    def __init__(self) -> None:
        from atlas.storage._local import LocalStorage
        from atlas.storage._object import ObjectStorage

        self.calls = self.ranges = self.asked = 0
        self._orig: list[tuple[type, Callable[..., Any]]] = []
        for cls in (LocalStorage, ObjectStorage):
            real = cls.read_ranges
            self._orig.append((cls, real))
            setattr(cls, "read_ranges", self._wrap(real))

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        counter = self

        def read_ranges(storage: Any, path: str, starts: Any, ends: Any) -> Any:
            if path.endswith(".seg"):
                counter.calls += 1
                counter.ranges += len(starts)
                counter.asked += sum(int(b) - int(a) for a, b in zip(starts, ends))
            return real(storage, path, starts, ends)

        return read_ranges

    def reset(self) -> None:
        self.calls = self.ranges = self.asked = 0

    def restore(self) -> None:
        for cls, real in self._orig:
            setattr(cls, "read_ranges", real)


# --------------------------------------------------------------------------- the workload
def ingest(source: Any, n: int, G: Any) -> float:
    import atlas

    rows_time = 0.0
    st = atlas.Atlas.create(source, codec="zstd")
    for i in range(n):
        row = {v: G.make_array(i, k) for k, v in enumerate(G.VARS)}  # generated outside the clock
        t0 = time.perf_counter()
        ds = st.create_dataset(G.dataset_name(i))
        for v in G.VARS:
            ds.define_array(v, "float32", G.DIMS, G.SHAPE, chunk_shape=G.CHUNK)
            ds.write_array(v, (0, 0, 0), row[v])
        rows_time += time.perf_counter() - t0
    t0 = time.perf_counter()
    st.flush()
    return rows_time + time.perf_counter() - t0


def measure(name: str, make_source: Callable[[], Any], n: int, repeats: int, want: np.ndarray, G: Any,
            counter: Counter, moto: MotoProcess | None) -> dict[str, Any]:
    import atlas

    names = [G.dataset_name(i) for i in range(n)]
    ingest_s = ingest(make_source(), n, G)

    def read(st: Any) -> np.ndarray:
        return st.read_array_across_stacked(G.STACK_VAR, names, G.STACK_START, G.STACK_COUNT)

    # one untimed cold read: correctness and the request counts
    counter.reset()
    mark = moto.log_size() if moto else 0
    got = read(atlas.Atlas.open(make_source()))
    np.testing.assert_array_equal(got, want)
    gets, fetched = moto.segment_gets(mark) if moto else (None, counter.asked)  # local reads: exactly the ranges
    counts = {"calls": counter.calls, "ranges": counter.ranges, "needed": counter.asked, "fetched": fetched,
              "http_gets": gets}
    cold, warm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        st = atlas.Atlas.open(make_source())
        read(st)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read(st)
        warm.append(time.perf_counter() - t0)
    return {"backend": name, "datasets": n, "ingest_s": ingest_s, "cold_s": statistics.median(cold),
            "warm_s": statistics.median(warm), "cold_all": cold, "warm_all": warm, **counts}


def warm_up() -> None:
    """Compile/load the kernels with a throwaway round trip, so no row pays for it."""
    import atlas

    with tempfile.TemporaryDirectory() as tmp:
        with atlas.Atlas.create(os.path.join(tmp, "w"), codec="zstd") as st:
            for i in range(2):
                ds = st.create_dataset(f"w{i}")
                ds.define_array("a", "float32", ["t", "y", "x"], [4, 8, 8], chunk_shape=[2, 4, 4])
                ds.write_array("a", (0, 0, 0), np.ones((4, 8, 8), np.float32))
        atlas.Atlas.open(os.path.join(tmp, "w")).read_array_across_stacked("a", ["w0", "w1"], [0, 0, 0], [2, 4, 4])


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB"


def table(rows: list[dict[str, Any]], repeats: int) -> str:
    out = [
        f"| backend | ingest + flush (s) | cold open + stacked read (ms) | warm stacked read (ms) | "
        f"read_ranges calls | ranges asked | HTTP GETs (segments) | bytes needed | bytes fetched |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['backend']} | {r['ingest_s']:.2f} | {r['cold_s'] * 1e3:.1f} | {r['warm_s'] * 1e3:.1f} | "
            f"{r['calls']} | {r['ranges']} | {r['http_gets'] if r['http_gets'] is not None else '-'} | "
            f"{fmt_bytes(r['needed'])} | {fmt_bytes(r['fetched'])} |"
        )
    n = rows[0]["datasets"] if rows else 0
    out.append("")
    out.append(f"N = {n} datasets, read = temp[0:6, 0:45, 0:90] of each, stacked to ({n}, 6, 45, 90) float32; "
               f"medians of {repeats} repeats. Counts are for one cold read; ingest is a single run.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: 12 datasets, 2 repeats")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--skip-s3", action="store_true", help="local backends only (no moto)")
    args = ap.parse_args(argv)
    n, repeats = (12, 2) if args.quick else (args.datasets, args.repeats)

    import atlas  # noqa: F401
    from obstore.store import LocalStore

    G = _gridded()
    want = G.stack_source(n)
    warm_up()
    work = tempfile.mkdtemp(prefix="atlas-objbench-")
    counter = Counter()
    moto = None
    rows = []
    try:
        rows.append(measure("local disk (path)", lambda: os.path.join(work, "path_store"), n, repeats, want, G,
                            counter, None))
        rows.append(measure("LocalStore (obstore)", lambda: LocalStore(os.path.join(work, "ls_store"), mkdir=True),
                            n, repeats, want, G, counter, None))
        shutil.rmtree(work + "/path_store", ignore_errors=True)
        shutil.rmtree(work + "/ls_store", ignore_errors=True)
        if not args.skip_s3:
            moto = MotoProcess(work)
            moto.create_bucket("atlas-bench")
            rows.append(measure("S3 (moto, 127.0.0.1)", lambda: moto.store("atlas-bench", "gridded"), n, repeats,
                                want, G, counter, moto))
    finally:
        counter.restore()
        if moto is not None:
            moto.close()
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows, repeats))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
