"""Crash safety: SIGKILL a writer at random moments of a flush loop, many times.

Requirement: "Flush is atomic and durable: data fsynced, metadata replaced by rename,
directory fsynced. A process killed at any moment of a flush leaves the previous or the new
state, readable and whole."

A child process runs rounds r = 0, 1, 2, ... on one store. Round r's mutations are a pure
function of r (and of which datasets exist, itself a function of the previous rounds), so
the parent rebuilds the exact expected state of any round with an in-memory model. After
each flush the child appends r to a fsync'd progress file. The parent SIGKILLs the child at
a random moment, reopens the store and requires it to equal, byte for byte, the state after
the last recorded round P or after P + 1 (the kill may land between the metadata rename and
the progress write). The next trial reopens the same, crashed, store and keeps going.

Markers written by the child just before/after ``flush()`` and ``compact()`` tell which
kills landed inside a flush; the test asserts that enough of them did.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import atlas

# --------------------------------------------------------------------------- the round plan
# Shared verbatim by the child (written to a file and imported) and the parent (exec'd).
PLAN_SRC = r'''
import numpy as np

COMPACT_EVERY = 9   # compact() after the flush of rounds r % COMPACT_EVERY == 4
TAG_EVERY = 3       # tag the version of rounds r % TAG_EVERY == 0 as "r<r>" (kept for 4 tags)
KEEP_VERSIONS = 3   # expire(keep_last=...) before each compact
KEEP = 10           # datasets older than this many rounds are deleted


def x_values(r):
    return (np.arange(50, dtype=np.float32) * np.float32(r + 1) + np.float32(r) / np.float32(7)).astype(np.float32)


def n_values(r):
    return (np.int64(r) * 1_000_003 + np.arange(12, dtype=np.int64).reshape(3, 4) * (r % 5 + 1) + 1).astype(np.int64)


def s_values(r):
    return np.array([f"r{r}-{i}" + "\u00e9" * (i % 3) + "x" * ((r + i) % 5) for i in range(7)], dtype=object)


def ts_values(r):
    return (np.arange(r % 3 + 1, dtype=np.float64) + r * 10.0).astype(np.float64)


def g_values(r):
    return (np.arange(2 * (r % 2 + 1), dtype=np.int32).reshape(2, r % 2 + 1) + r).astype(np.int32)


def big_values(r):
    return np.sin(np.arange(3 * 4000, dtype=np.float64) * (r + 1) * 1e-3).reshape(3, 4000) + r


def plan(r, exists):
    """The mutations of round r: a list of ops; ``exists(name)`` says whether a dataset exists now."""
    d = f"d{r}"
    ops = []
    if not exists("state"):
        ops.append(("create", "state"))
    ops.append(("create", d))
    # float32 (50,) chunked (10,), fill -1; every third round the last 7 cells stay unwritten
    ops.append(("define", d, "x", "float32", ["i"], [50], [10], -1.0))
    xs = x_values(r)
    if r % 3 == 0:
        ops.append(("write", d, "x", [0], np.ascontiguousarray(xs[:43])))
    else:
        ops.append(("write", d, "x", [0], xs))
    # int64 (3, 4) chunked (2, 2), written in two boxes
    nv = n_values(r)
    ops.append(("define", d, "n", "int64", ["a", "b"], [3, 4], [2, 2], None))
    ops.append(("write", d, "n", [0, 0], np.ascontiguousarray(nv[:2])))
    ops.append(("write", d, "n", [2, 0], np.ascontiguousarray(nv[2:])))
    # strings (7,) chunked (3,)
    ops.append(("define", d, "s", "string", ["k"], [7], [3], None))
    ops.append(("write", d, "s", [0], s_values(r)))
    # a larger float64 array (chunks >= 16 KiB are compressed at write time) every other round
    if r % 2 == 1:
        ops.append(("define", d, "big", "float64", ["p", "q"], [3, 4000], [1, 4000], None))
        ops.append(("write", d, "big", [0, 0], big_values(r)))
    # a series that grows every round (appends along the first and a later axis), and resizes
    if not exists("series"):
        ops.append(("create", "series"))
        ops.append(("define", "series", "ts", "float64", ["time"], [0], [4], None))
        ops.append(("define", "series", "g", "int32", ["a", "t"], [2, 0], [2, 3], -7))
    ops.append(("append", "series", "ts", 0, ts_values(r)))
    ops.append(("append", "series", "g", 1, g_values(r)))
    e = f"d{r - 1}"
    if r % 3 == 2 and exists(e):
        ops.append(("resize", e, "x", [30]))  # cuts chunk 3 of (10,)-chunks, drops chunks 3 and 4
        ops.append(("resize", e, "x", [45]))  # the cut cells stay gone
        ops.append(("resize", e, "n", [3, 6]))  # a later axis: chunk ids change (re-keyed)
    ops.append(("attr", d, "round", int(r)))
    ops.append(("attr", d, "label", f"dataset {r} \u2713"))
    ops.append(("attr", d, "scale", float(r) / 3.0))
    ops.append(("attr", d, "odd", bool(r % 2)))
    # overwrite part of an earlier dataset's arrays (crosses chunk boundaries: read-modify-write)
    e = f"d{r - 2}"
    if r % 4 == 1 and exists(e):
        ops.append(("write", e, "x", [5], (np.arange(20, dtype=np.float32) - np.float32(r)).astype(np.float32)))
        ops.append(("write", e, "n", [1, 1], np.full((2, 2), -r - 1, np.int64)))
        ops.append(("write", e, "s", [2], np.array([f"over{r}", f"w{r}\u00fc"], dtype=object)))
        ops.append(("attr", e, "overwritten_by", int(r)))
    # delete earlier datasets
    e = f"d{r - 5}"
    if r % 5 == 2 and exists(e):
        ops.append(("delete", e))
    e = f"d{r - KEEP}"
    if exists(e):
        ops.append(("delete", e))
    e = f"d{r - 1}"
    if exists(e):
        ops.append(("attr", e, "next", f"d{r}"))
    ops.append(("attr", "state", "round", int(r)))
    return ops


def version_ops(a, r, mark):
    """After round r's flush: tag it every TAG_EVERY rounds (dropping an old tag), expire before a compact."""
    if r % TAG_EVERY == 0:
        mark(f"tagging {r}")
        a.tag(f"r{r}")
        old = f"r{r - 4 * TAG_EVERY}"
        if old in a.tags():
            a.delete_tag(old)
        mark(f"tagged {r}")
    if r % COMPACT_EVERY == 4:
        mark(f"expiring {r}")
        a.expire(keep_last=KEEP_VERSIONS)
        mark(f"expired {r}")


def apply_to_atlas(a, ops):
    for op in ops:
        kind = op[0]
        if kind == "create":
            a.create_dataset(op[1])
        elif kind == "define":
            _, d, name, dtype, dims, shape, chunk, fill = op
            a.open_dataset(d).define_array(name, dtype, dims, shape, chunk, fill)
        elif kind == "write":
            _, d, name, start, data = op
            a.open_dataset(d).write_array(name, start, data)
        elif kind == "attr":
            _, d, key, value = op
            a.open_dataset(d).set_attribute(key, value)
        elif kind == "delete":
            a.delete_dataset(op[1])
        elif kind == "append":
            _, d, name, axis, data = op
            a.open_dataset(d).append_array(name, data, axis)
        elif kind == "resize":
            _, d, name, shape = op
            a.open_dataset(d).resize_array(name, shape)
        else:
            raise AssertionError(op)
'''

# the end of every writer script (it defines ``scratch``, ``one_round`` and ``loop``): warm up, then
# run the loop once ("fresh"), or serve forked writers
FORK_SERVER_SRC = r'''
def warm_up():
    # numba compiles (or loads from its cache) every kernel on a local scratch store, before
    # "ready"; no obstore call happens before a fork (its runtime threads would not survive it)
    shutil.rmtree(scratch, ignore_errors=True)
    fsync, os.fsync = os.fsync, lambda fd: None  # the scratch store need not be durable
    try:
        w = atlas.Atlas.create(scratch)
        for r in range(6):
            one_round(w, r, lambda s: None)
        w = atlas.Atlas.open(scratch)
        for name in w.list_datasets():
            ds = w.open_dataset(name)
            for arr in ds.list_arrays():
                ds.read_array(arr)
                ds.array_stats(arr)
        del w
    finally:
        os.fsync = fsync
    shutil.rmtree(scratch, ignore_errors=True)


warm_up()
if mode == "fresh":
    loop(sys.argv[5])
else:
    # fork server: each "run <markers> <budget>" line forks a writer, waits, reports its status
    print("server-ready", flush=True)
    for line in sys.stdin:
        _, markers, budget = line.split()
        if budget == "-":
            os.environ.pop("ATLAS_PENDING_BUDGET", None)
        else:
            os.environ["ATLAS_PENDING_BUDGET"] = budget
        pid = os.fork()
        if pid == 0:
            try:
                loop(markers)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                with open(markers, "a") as f:
                    f.write("error\n")
                os._exit(1)
            os._exit(0)
        sys.stdin.readline()  # "reap": the writer was killed (until reaped, its pid cannot be reused)
        _, status = os.waitpid(pid, 0)
        print(f"status {status}", flush=True)
'''

CHILD_SRC = r'''
import os, shutil, sys, traceback

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
mode, store, progress, scratch = sys.argv[1:5]

import atlas
from crash_plan import COMPACT_EVERY, apply_to_atlas, plan, version_ops


def one_round(a, r, mark):
    apply_to_atlas(a, plan(r, a.dataset_exists))
    mark(f"flushing {r}")
    a.flush(message=f"round {r}")
    mark(f"flushed {r}")
    version_ops(a, r, mark)
    if r % COMPACT_EVERY == 4:
        mark(f"compacting {r}")
        a.compact()
        mark(f"compacted {r}")


def loop(markers):
    # the process that gets killed: resume the store after its last committed round, forever
    mfd = os.open(markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def mark(s):
        os.write(mfd, (s + "\n").encode())

    if os.path.exists(os.path.join(store, "atlas.meta")):
        a = atlas.Atlas.open(store)
    else:
        a = atlas.Atlas.create(store)
    start = a.open_dataset("state").get_attribute("round") + 1 if a.dataset_exists("state") else 0
    pfd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    mark(f"ready {os.getpid()} {start}")
    r = start
    while True:
        one_round(a, r, mark)
        os.write(pfd, f"{r}\n".encode())
        os.fsync(pfd)
        mark(f"done {r}")
        r += 1


''' + FORK_SERVER_SRC


def _load_plan() -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(compile(PLAN_SRC, "crash_plan.py", "exec"), ns)
    return ns


# --------------------------------------------------------------------------- the model
_DEFAULT_FILL = {"float32": np.float32(0), "float64": np.float64(0), "int64": np.int64(0), "int32": np.int32(0),
                 "string": ""}
_NP = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32, "string": object}


class Model:
    """The expected logical content of the store after a given round."""

    def __init__(self, plan: Callable[..., list]) -> None:
        self.plan = plan
        self.round = -1
        # dataset -> {"attrs": {k: v}, "arrays": {name: {"spec":..., "data": ndarray, "written": bool mask}}}
        self.datasets: dict[str, dict[str, Any]] = {}

    def advance_to(self, r: int) -> None:
        assert r >= self.round, f"committed state went back from round {self.round} to {r}"
        while self.round < r:
            self.round += 1
            self._apply(self.plan(self.round, lambda n: n in self.datasets))

    def _apply(self, ops: list) -> None:
        for op in ops:
            kind = op[0]
            if kind == "create":
                self.datasets[op[1]] = {"attrs": {}, "arrays": {}}
            elif kind == "define":
                _, d, name, dtype, dims, shape, chunk, fill = op
                fv = _DEFAULT_FILL[dtype] if fill is None else fill
                data = np.empty(tuple(shape), _NP[dtype])
                data[...] = fv
                self.datasets[d]["arrays"][name] = {
                    "spec": (dtype, list(dims), list(shape), list(chunk), fill),
                    "data": data, "written": np.zeros(tuple(shape), bool),
                }
            elif kind == "write":
                _, d, name, start, val = op
                arr = self.datasets[d]["arrays"][name]
                box = tuple(slice(s, s + n) for s, n in zip(start, val.shape))
                arr["data"][box] = val
                arr["written"][box] = True
            elif kind == "attr":
                _, d, key, value = op
                self.datasets[d]["attrs"][key] = value
            elif kind == "delete":
                del self.datasets[op[1]]
            elif kind == "append":
                _, d, name, axis, val = op
                arr = self.datasets[d]["arrays"][name]
                shape = list(arr["data"].shape)
                start = [0] * len(shape)
                start[axis] = shape[axis]
                shape[axis] += val.shape[axis]
                self._resize(arr, shape)
                box = tuple(slice(s, s + n) for s, n in zip(start, val.shape))
                arr["data"][box] = val
                arr["written"][box] = True
            elif kind == "resize":
                _, d, name, shape = op
                self._resize(self.datasets[d]["arrays"][name], shape)
            else:
                raise AssertionError(op)

    @staticmethod
    def _resize(arr: dict[str, Any], shape: list[int]) -> None:
        dtype, dims, _, chunk, fill = arr["spec"]
        data = np.empty(tuple(shape), _NP[dtype])
        data[...] = _DEFAULT_FILL[dtype] if fill is None else fill
        written = np.zeros(tuple(shape), bool)
        box = tuple(slice(0, min(a, b)) for a, b in zip(arr["data"].shape, shape))
        data[box] = arr["data"][box]
        written[box] = arr["written"][box]
        arr.update(spec=(dtype, dims, list(shape), chunk, fill), data=data, written=written)


def _expected_stats(spec: tuple, data: np.ndarray, written: np.ndarray) -> tuple[int, Any, Any]:
    fill = spec[4]
    vals = data[written]
    if fill is not None:
        vals = vals[vals != fill]
    null = data.size - vals.size
    if vals.size == 0:
        return null, None, None
    return null, min(vals.tolist()), max(vals.tolist())


def check_store(path: Path, model: Model, where: str, handle: Any = None) -> None:
    """The store at ``path`` (or the open ``handle``) holds exactly ``model``'s state (byte-for-byte array contents)."""
    a = handle if handle is not None else atlas.Atlas.open(str(path))
    assert a.list_datasets() == list(model.datasets), where
    for dname, dexp in model.datasets.items():
        ds = a.open_dataset(dname)
        got_attrs = ds.attributes()
        assert got_attrs == dexp["attrs"], f"{where}: attributes of {dname}"
        for k, v in dexp["attrs"].items():
            assert type(got_attrs[k]) is type(v), f"{where}: type of attribute {dname}.{k}"
        assert ds.list_arrays() == list(dexp["arrays"]), f"{where}: arrays of {dname}"
        for aname, aexp in dexp["arrays"].items():
            dtype, dims, shape, chunk, fill = aexp["spec"]
            ctx = f"{where}: {dname}/{aname}"
            assert ds.array_meta(aname) == {"dtype": dtype, "shape": shape, "chunk_shape": chunk,
                                            "dimension_names": dims}, ctx
            got = ds.read_array(aname)
            exp = aexp["data"]
            assert got is not None, ctx
            assert got.dtype == exp.dtype and got.shape == exp.shape, ctx
            np.testing.assert_array_equal(got, exp, err_msg=ctx)
            if dtype != "string":
                assert got.tobytes() == exp.tobytes(), ctx
            else:
                assert [type(v) for v in got.ravel().tolist()] == [str] * got.size, ctx
            st = ds.array_stats(aname)
            assert st is not None, f"{ctx}: no stats after flush"
            null, mn, mx = _expected_stats(aexp["spec"], exp, aexp["written"])
            assert (st["row_count"], st["null_count"]) == (exp.size, null), f"{ctx}: stats {st}"
            assert st["min"] == mn and st["max"] == mx, f"{ctx}: stats {st} != {(null, mn, mx)}"
    assert a.verify() == [], f"{where}: verify()"


def check_versions(open_store: Callable[..., Any], plan: Callable[..., list], where: str) -> int:
    """Every retained version opens and verifies; a flushed round's version holds that round, and
    each tag ``r<r>`` exactly the model's state after round r. Returns how many versions were checked."""
    a = open_store()
    tags = a.tags()
    n = 0
    for h in a.history():
        v = open_store(version=h["version"])
        assert v.verify() == [], f"{where}: version {h['version']} does not verify: {v.verify()}"
        m = h["message"] or ""
        if m.startswith("round "):
            assert v.open_dataset("state").get_attribute("round") == int(m.split()[1]), f"{where}: version {h}"
        n += 1
    for name in tags:
        t = open_store(tag=name)
        assert t.verify() == [], f"{where}: tag {name} does not verify"
        model = Model(plan)
        model.advance_to(int(name[1:]))
        check_store(Path("-"), model, f"{where}: tag {name}", handle=t)
        n += 1
    return n


# --------------------------------------------------------------------------- the driver
def _read_lines(p: Path) -> list[str]:
    if not p.exists():
        return []
    text = p.read_text()
    return text.split("\n")[:-1]  # a trailing partial line (no newline) is not a record


def _last_progress(p: Path) -> int:
    lines = _read_lines(p)
    return int(lines[-1]) if lines else -1


class _Writers:
    """Starts the writer process of each trial: a fresh interpreter, or a fork of a warmed-up server.

    A fresh ``python`` pays interpreter start, numba import and warm-up (~1.5 s) per kill; the
    fork server pays them once, so many more kills fit in the time. Both kinds are used.
    """

    def __init__(self, tmp_path: Path, child: Path, store: Path, progress: Path) -> None:
        self.args = [str(store), str(progress), str(tmp_path / "scratch")]
        self.child = child
        self.tmp_path = tmp_path
        self.server_log = tmp_path / "server.log"
        self._log = open(self.server_log, "wb")
        self.server = subprocess.Popen(
            [sys.executable, str(child), "server", *self.args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
        )
        line = self.server.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "server-ready":
            self.close()
            pytest.fail(f"fork server did not start ({line!r}):\n{self.server_log.read_text()}")

    def start(self, markers: Path, budget: str | None, fresh: bool, log: Path) -> subprocess.Popen | None:
        if fresh:
            env = dict(os.environ)
            env.pop("ATLAS_PENDING_BUDGET", None)
            if budget is not None:
                env["ATLAS_PENDING_BUDGET"] = budget
            with open(log, "wb") as lf:
                return subprocess.Popen([sys.executable, str(self.child), "fresh", *self.args, str(markers)],
                                        stdout=lf, stderr=subprocess.STDOUT, env=env)
        self.server.stdin.write(f"run {markers} {budget or '-'}\n")  # type: ignore[union-attr]
        self.server.stdin.flush()  # type: ignore[union-attr]
        return None

    def kill(self, proc: subprocess.Popen | None, pid: int) -> None:
        """SIGKILL the writer (not yet reaped by anyone, so ``pid`` is still ours)."""
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
            self.server.stdin.write("reap\n")  # type: ignore[union-attr]
            self.server.stdin.flush()  # type: ignore[union-attr]

    def failure_log(self, proc: subprocess.Popen | None, log: Path) -> str:
        return log.read_text() if proc is not None and log.exists() else self.server_log.read_text()

    def status(self, proc: subprocess.Popen | None) -> int:
        """Wait for the writer to end: its returncode (negative signal number if killed)."""
        if proc is not None:
            return proc.wait(60)
        line = self.server.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("status "):
            pytest.fail(f"fork server said {line!r}:\n{self.server_log.read_text()}")
        st = int(line.split()[1])
        return -os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)

    def close(self) -> None:
        try:
            self.server.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        if self.server.poll() is None:
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server.stdout.close()  # type: ignore[union-attr]
        self._log.close()


def run_crash_trials(tmp_path: Path, kills: int, seed: int, min_mid_flush: int, fresh_every: int = 8) -> dict[str, Any]:
    plan_ns = _load_plan()
    (tmp_path / "crash_plan.py").write_text(PLAN_SRC)
    child = tmp_path / "crash_child.py"
    child.write_text(CHILD_SRC)
    store = tmp_path / "store"
    progress = tmp_path / "progress.txt"
    rng = random.Random(seed)
    model = Model(plan_ns["plan"])
    committed = -1  # highest round known to be in the store
    lo, hi = 0.03, 1.0  # kill delay after "ready", seconds
    stats: dict[str, Any] = {"kills": 0, "fresh": 0, "flushing": 0, "compacting": 0, "between": 0, "building": 0,
                             "tagging": 0, "expiring": 0, "rounds": 0, "no_progress": 0, "post_rename": 0,
                             "versions_checked": 0}
    t0 = time.monotonic()
    writers = _Writers(tmp_path, child, store, progress)
    try:
        for trial in range(kills):
            markers = tmp_path / f"markers-{trial}.txt"
            log = tmp_path / f"child-{trial}.log"
            fresh = trial % fresh_every == 0
            budget = "0" if trial % 3 == 2 else None  # spill every pending payload to a temp file
            proc = writers.start(markers, budget, fresh, log)
            deadline = time.monotonic() + 120
            pid = None
            while pid is None:
                lines = _read_lines(markers)
                if lines and lines[0].startswith("ready"):
                    pid = int(lines[0].split()[1])
                    ready_round = int(lines[0].split()[2])
                    break
                if lines and lines[-1] == "error":
                    pytest.fail(f"trial {trial}: writer failed before ready:\n{writers.failure_log(proc, log)}")
                if proc is not None and proc.poll() is not None:
                    pytest.fail(f"trial {trial}: writer exited ({proc.returncode}) before ready:\n{log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"trial {trial}: writer not ready after 120 s:\n{writers.failure_log(proc, log)}")
                time.sleep(0.002)
            time.sleep(rng.uniform(lo, hi))
            writers.kill(proc, pid)
            rc = writers.status(proc)
            if rc != -signal.SIGKILL:
                pytest.fail(f"trial {trial}: writer ended with {rc} before the kill:\n{writers.failure_log(proc, log)}")
            stats["kills"] += 1
            stats["fresh"] += fresh
            lines = _read_lines(markers)
            last = lines[-1].split()[0]
            if last == "flushing":
                stats["flushing"] += 1
            elif last == "compacting":
                stats["compacting"] += 1
            elif last in ("tagging", "expiring"):
                stats[last] += 1
            elif last in ("flushed", "compacted", "tagged", "expired"):
                stats["between"] += 1  # flush returned, progress not yet written
            else:
                stats["building"] += 1  # "ready"/"done": building the next round in memory
            assert ready_round == committed + 1, f"trial {trial}: writer resumed at {ready_round}, store had {committed}"

            p = max(_last_progress(progress), committed)
            allowed = {p, p + 1}
            a = atlas.Atlas.open(str(store))
            got = a.open_dataset("state").get_attribute("round") if a.dataset_exists("state") else -1
            del a
            where = f"trial {trial} (seed {seed}, fresh={fresh}, budget={budget}, last marker {lines[-1]!r})"
            assert got in allowed, f"{where}: store is at round {got}, expected one of {sorted(allowed)}"
            stats["no_progress"] += got == committed
            stats["post_rename"] += got == p + 1
            stats["rounds"] += got - committed
            model.advance_to(got)
            check_store(store, model, f"{where}, round {got}")
            stats["versions_checked"] += check_versions(
                lambda **kw: atlas.Atlas.open(str(store), **kw), plan_ns["plan"], where)
            committed = got
            # keep kills landing inside flushes: if too few did so far, aim earlier
            if trial == 10 and stats["flushing"] + stats["compacting"] < 3:
                lo, hi = 0.01, 0.4
            markers.unlink()
            if log.exists():
                log.unlink()
    finally:
        writers.close()
    # the crashed store is still a working store: one more round, a compact, and a final check
    a = atlas.Atlas.open(str(store))
    plan_ns["apply_to_atlas"](a, plan_ns["plan"](committed + 1, a.dataset_exists))
    a.flush()
    a.compact()
    del a
    model.advance_to(committed + 1)
    check_store(store, model, "after the final compact")
    check_versions(lambda **kw: atlas.Atlas.open(str(store), **kw), plan_ns["plan"], "after the final compact")
    stats["seconds"] = round(time.monotonic() - t0, 1)
    print(f"\ncrash trials: {stats}")
    mid = stats["flushing"] + stats["compacting"]
    assert stats["flushing"] >= 1 and mid >= min_mid_flush, f"only {mid} kills landed inside flush/compact: {stats}"
    return stats


def test_sigkill_during_flush_loop(tmp_path: Path) -> None:
    run_crash_trials(tmp_path, kills=32, seed=20240601, min_mid_flush=8)


@pytest.mark.slow
def test_sigkill_during_flush_loop_many(tmp_path: Path) -> None:
    run_crash_trials(tmp_path, kills=300, seed=7, min_mid_flush=60)
