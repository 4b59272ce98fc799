#!/usr/bin/env python
"""atlas vs h5py on many small datasets: ingest, read one by one, stacked slice.

Workload: N datasets (default 1,000), each with three float32 arrays ``a``, ``b``, ``c`` of
shape (100,) and a ``time`` coordinate (datetime64[ns], shape (100,)). Both systems get
the same data (generated once, saved to ``data.npz`` in the work directory and loaded by
every child before its clock starts).

Phases, each timed in its own fresh subprocess per repeat (page cache warm, Python state
fresh; imports and a tiny throwaway warm-up, which for atlas compiles or loads the Numba
kernels, happen before the clock starts):

* ``ingest``: create the store / file, write every dataset, flush / close.
  atlas: one ``Atlas``, ``create_dataset`` + ``define_array`` + ``write_array`` per
  dataset, then ``flush()``. h5py: one HDF5 file, a group per dataset, datasets created
  with their data (``time`` as ``h5py.opaque_dtype`` datetime64[ns]), file closed.
* ``read``: reopen, then read every array of every dataset fully.
  atlas: ``store.open_dataset(name).read_array(array)``; h5py: ``f[group][array][...]``.
* ``stacked``: slice [0:25] of ``a`` from every dataset into one (N, 25) array.
  atlas: ``read_array_across_stacked``; h5py: a loop into a preallocated array.

The script prints a markdown table of the medians over ``--repeats`` and the machine,
and writes everything (every repeat) to ``--json`` when given. The read results of atlas
are checked once against h5py's and against the source data.

    python benchmarks/compare_small.py [--repeats 5] [--datasets 1000] [--json out.json]
    python benchmarks/compare_small.py --profile ingest|read|stacked [--profiler cprofile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

FLOAT_ARRAYS = ("a", "b", "c")
ALL_ARRAYS = FLOAT_ARRAYS + ("time",)
LENGTH = 100
STACK_ARRAY = "a"
STACK_START, STACK_STOP = 0, 25
SYSTEMS = ("atlas", "h5py")
PHASES = ("ingest", "read", "stacked")
PHASE_TITLES = {
    "ingest": "ingest (create, write all, flush/close)",
    "read": "read one by one (reopen, every array fully)",
    "stacked": f"stacked: {STACK_ARRAY}[{STACK_START}:{STACK_STOP}] of all datasets -> (N, {STACK_STOP - STACK_START})",
}
TARGETS = {"ingest": 0.13, "read": 0.06}


# --------------------------------------------------------------------------- data
def dataset_name(i: int) -> str:
    return f"ds{i:05d}"


def make_data(n: int, seed: int = 20240601) -> dict[str, np.ndarray]:
    """``{"a": (n, 100) float32, "b": ..., "c": ..., "time": (n, 100) datetime64[ns]}``."""
    rng = np.random.default_rng(seed)
    out = {k: rng.standard_normal((n, LENGTH), dtype=np.float32) for k in FLOAT_ARRAYS}
    base = np.datetime64("2020-01-01T00:00:00", "ns")
    step = np.timedelta64(3600, "s").astype("timedelta64[ns]")
    day = np.timedelta64(1, "D").astype("timedelta64[ns]")
    out["time"] = (base + np.arange(n)[:, None] * day + np.arange(LENGTH)[None, :] * step).astype("datetime64[ns]")
    return out


def save_data(path: str, n: int) -> None:
    d = make_data(n)
    np.savez(path, **{k: (v.view(np.int64) if k == "time" else v) for k, v in d.items()})


def load_data(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        d = {k: np.ascontiguousarray(z[k]) for k in ALL_ARRAYS}
    d["time"] = d["time"].view("datetime64[ns]")
    return d


def per_dataset(data: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Rows as separate C-contiguous arrays, so neither system pays for a copy while timed."""
    n = data["a"].shape[0]
    return [{k: np.ascontiguousarray(data[k][i]) for k in ALL_ARRAYS} for i in range(n)]


# --------------------------------------------------------------------------- atlas
def atlas_ingest(path: str, rows: list[dict[str, np.ndarray]]) -> None:
    import atlas

    store = atlas.Atlas.create(path, codec="zstd")
    for i, row in enumerate(rows):
        ds = store.create_dataset(dataset_name(i))
        for k in FLOAT_ARRAYS:
            ds.define_array(k, "float32", ["obs"], [LENGTH])
        ds.define_array("time", "datetime64[ns]", ["obs"], [LENGTH])
        for k in ALL_ARRAYS:
            ds.write_array(k, [0], row[k])
    store.flush()


def atlas_read(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import atlas

    store = atlas.Atlas.open(path)
    out = []
    for name in names:
        out.append([store.open_dataset(name).read_array(k) for k in ALL_ARRAYS])
    return out


def atlas_stacked(path: str, names: list[str]) -> np.ndarray:
    import atlas

    store = atlas.Atlas.open(path)
    return store.read_array_across_stacked(STACK_ARRAY, names, [STACK_START], [STACK_STOP - STACK_START])


def atlas_warmup() -> None:
    """A tiny throwaway store: compiles (or loads from the numba cache) every kernel the phases use."""
    tmp = tempfile.mkdtemp(prefix="atlas-warm-")
    try:
        rows = per_dataset(make_data(2, seed=1))
        path = os.path.join(tmp, "warm")
        atlas_ingest(path, rows)
        names = [dataset_name(i) for i in range(2)]
        atlas_read(path, names)
        atlas_stacked(path, names)
        import atlas

        atlas.Atlas.open(path).open_dataset(names[0]).array_stats("a")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- h5py
def h5py_ingest(path: str, rows: list[dict[str, np.ndarray]]) -> None:
    import h5py

    tdt = h5py.opaque_dtype(np.dtype("datetime64[ns]"))
    with h5py.File(path, "w") as f:
        for i, row in enumerate(rows):
            g = f.create_group(dataset_name(i))
            for k in FLOAT_ARRAYS:
                g.create_dataset(k, data=row[k])
            g.create_dataset("time", data=row["time"].astype(tdt))


def h5py_read(path: str, names: list[str]) -> list[list[np.ndarray]]:
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        for name in names:
            out.append([f[name][k][...] for k in ALL_ARRAYS])
    return out


def h5py_stacked(path: str, names: list[str]) -> np.ndarray:
    import h5py

    out = np.empty((len(names), STACK_STOP - STACK_START), np.float32)
    with h5py.File(path, "r") as f:
        for i, name in enumerate(names):
            out[i] = f[name][STACK_ARRAY][STACK_START:STACK_STOP]
    return out


def h5py_warmup() -> None:
    """The same throwaway round trip for h5py, so both systems start equally warm."""
    tmp = tempfile.mkdtemp(prefix="h5py-warm-")
    try:
        rows = per_dataset(make_data(2, seed=1))
        path = os.path.join(tmp, "warm.h5")
        h5py_ingest(path, rows)
        names = [dataset_name(i) for i in range(2)]
        h5py_read(path, names)
        h5py_stacked(path, names)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


IMPL = {
    "atlas": {"ingest": atlas_ingest, "read": atlas_read, "stacked": atlas_stacked, "warmup": atlas_warmup},
    "h5py": {"ingest": h5py_ingest, "read": h5py_read, "stacked": h5py_stacked, "warmup": h5py_warmup},
}


def store_path(workdir: str, system: str, tag: str) -> str:
    return os.path.join(workdir, f"{system}-{tag}" + (".h5" if system == "h5py" else ".atlas"))


# --------------------------------------------------------------------------- child
def child_main(args: argparse.Namespace) -> int:
    """One timed phase of one system; prints a json line ``{"seconds": ...}``.

    With ``--profile-loops K`` (K >= 1) the phase runs K more times under a profiler after
    the timed run (ingest into fresh paths next to the target) and the report follows.
    """
    system, phase = args.child
    impl = IMPL[system]
    if system == "atlas":
        import atlas  # noqa: F401
    else:
        import h5py  # noqa: F401
    impl["warmup"]()
    n = args.datasets
    names = [dataset_name(i) for i in range(n)]
    if phase == "ingest":
        rows = per_dataset(load_data(os.path.join(args.workdir, "data.npz")))
        assert len(rows) == n

        def once(k: int = 0) -> None:
            impl["ingest"](args.target if k == 0 else f"{args.target}.p{k}", rows)
    else:
        def once(k: int = 0) -> None:
            result = impl[phase](args.target, names)
            assert len(result) == n

    t0 = time.perf_counter()
    once()
    dt = time.perf_counter() - t0
    print(json.dumps({"system": system, "phase": phase, "seconds": dt}), flush=True)
    if args.profile_loops:
        print(profile_report(lambda: [once(k) for k in range(1, args.profile_loops + 1)], args.profiler))
    return 0


def profile_report(fn: Any, profiler: str) -> str:
    """Run ``fn`` under pyinstrument (sampling, if installed) or cProfile; the text report."""
    if profiler in ("auto", "pyinstrument"):
        try:
            from pyinstrument import Profiler
        except ImportError:
            if profiler == "pyinstrument":
                raise
        else:
            prof = Profiler(interval=0.0005)
            prof.start()
            fn()
            prof.stop()
            return prof.output_text(unicode=False, color=False)
    import cProfile
    import io
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


def profile_main(args: argparse.Namespace, workdir: str) -> int:
    """``--profile PHASE``: one atlas child for PHASE with a profiler report (needs no h5py)."""
    n, phase = args.datasets, args.profile
    save_data(os.path.join(workdir, "data.npz"), n)
    target = store_path(workdir, "atlas", "read")
    if phase != "ingest":
        run_child("atlas", "ingest", workdir, n, target)
    else:
        target = store_path(workdir, "atlas", "profile")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "atlas", phase, "--workdir", workdir,
           "--datasets", str(n), "--target", target, "--profile-loops", str(args.profile_loops or 5),
           "--profiler", args.profiler]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def run_child(system: str, phase: str, workdir: str, n: int, target: str) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", system, phase, "--workdir", workdir,
           "--datasets", str(n), "--target", target]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {system}/{phase} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return float(json.loads(line)["seconds"])


# --------------------------------------------------------------------------- verify
def verify(workdir: str, n: int, atlas_path: str, h5_path: str) -> str:
    """Atlas reads == h5py reads == the source data (every array of every dataset, and the stacked slice)."""
    data = load_data(os.path.join(workdir, "data.npz"))
    names = [dataset_name(i) for i in range(n)]
    ra, rh = atlas_read(atlas_path, names), h5py_read(h5_path, names)
    for i in range(n):
        for j, k in enumerate(ALL_ARRAYS):
            a, h = ra[i][j], rh[i][j]
            if a.dtype != h.dtype or a.shape != h.shape or not np.array_equal(a, h):
                raise AssertionError(f"{names[i]}/{k}: atlas {a.dtype}{a.shape} != h5py {h.dtype}{h.shape}")
            if not np.array_equal(a, data[k][i]):
                raise AssertionError(f"{names[i]}/{k}: atlas differs from the source data")
    sa, sh = atlas_stacked(atlas_path, names), h5py_stacked(h5_path, names)
    if sa.dtype != sh.dtype or sa.shape != sh.shape or not np.array_equal(sa, sh):
        raise AssertionError("stacked slice: atlas != h5py")
    if not np.array_equal(sa, data[STACK_ARRAY][:, STACK_START:STACK_STOP]):
        raise AssertionError("stacked slice: atlas differs from the source data")
    return f"ok: {n} datasets x {len(ALL_ARRAYS)} arrays and the stacked slice equal in atlas, h5py and the source"


# --------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    import h5py
    import numba

    import atlas

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        import psutil

        load = os.getloadavg()
        mem = psutil.virtual_memory().total
    except Exception:  # noqa: BLE001
        load, mem = None, None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_model": _cpu_model(),
        "memory_bytes": mem,
        "loadavg_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "atlas": atlas.__version__,
        "atlas_num_threads": atlas.num_threads(),
        "atlas_path": os.path.dirname(os.path.abspath(atlas.__file__)),
        "atlas_git": _git_state(),
        "atlas_src_sha1": _src_fingerprint(),
    }


def _src_fingerprint() -> str:
    """SHA-1 over atlas's .py sources, to notice the library changing during a run."""
    import hashlib

    import atlas

    pkg = os.path.dirname(os.path.abspath(atlas.__file__))
    h = hashlib.sha1()
    for dirpath, dirnames, files in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(files):
            if fn.endswith(".py"):
                full = os.path.join(dirpath, fn)
                h.update(os.path.relpath(full, pkg).encode())
                with open(full, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:12]


def _git_state() -> str:
    """``<commit>`` of the checkout atlas is imported from, ``+dirty`` if src/ has uncommitted changes."""
    import atlas

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(atlas.__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render_table(results: dict[str, Any]) -> str:
    n, reps = results["datasets"], results["repeats"]
    lines = [
        f"### atlas vs h5py: {n} datasets x (a, b, c float32[100] + time datetime64[ns][100]), "
        f"median of {reps} fresh-process repeat(s)",
        "",
        "| phase | atlas (s) | h5py (s) | atlas/h5py | target |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for phase in PHASES:
        r = results["phases"][phase]
        tgt = TARGETS.get(phase)
        tgt_s = "-" if tgt is None else (f"<= {tgt:.2f}x " + ("(met)" if r["ratio"] <= tgt else "(missed)"))
        lines.append(f"| {PHASE_TITLES[phase]} | {r['atlas']['median']:.4f} | {r['h5py']['median']:.4f} | "
                     f"{r['ratio']:.3f}x | {tgt_s} |")
    m = results["machine"]
    lines += [
        "",
        f"machine: {m['cpu_count']} cpu(s) (affinity {m['cpu_affinity']}, {m['cpu_model']}), "
        f"load {tuple(round(x, 2) for x in m['loadavg_at_start']) if m['loadavg_at_start'] else '?'}, "
        f"{m['platform']}",
        f"python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, h5py {m['h5py']} (HDF5 {m['hdf5']}), "
        f"atlas {m['atlas']} from {m['atlas_path']} @ {m['atlas_git']} (src sha1 {m['atlas_src_sha1']}, "
        f"{m['atlas_num_threads']} thread(s))",
        f"verify: {results['verify']}",
    ]
    if results.get("warning"):
        lines.append(f"WARNING: {results['warning']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="fresh-process repeats per system and phase (default 5)")
    p.add_argument("--datasets", type=int, default=1000, help="number of datasets (default 1000)")
    p.add_argument("--json", metavar="OUT", help="also write the results (every repeat) to this json file")
    p.add_argument("--workdir", help="where stores are written (default: a new temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--profile", choices=PHASES, help="instead of the comparison: profile atlas's child for this phase")
    p.add_argument("--profile-loops", type=int, default=0, metavar="K",
                   help="with --profile: runs under the profiler (default 5)")
    p.add_argument("--profiler", choices=("auto", "pyinstrument", "cprofile"), default="auto",
                   help="with --profile: pyinstrument if installed (auto), or cProfile")
    p.add_argument("--child", nargs=2, metavar=("SYSTEM", "PHASE"), help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.repeats < 1 or a.datasets < 1:
        p.error("--repeats and --datasets must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    n, reps = args.datasets, args.repeats
    own_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="atlas-compare-") if own_workdir else os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    try:
        if args.profile:
            return profile_main(args, workdir)
        machine = machine_info()
        save_data(os.path.join(workdir, "data.npz"), n)
        times: dict[str, dict[str, list[float]]] = {ph: {s: [] for s in SYSTEMS} for ph in PHASES}
        read_store = {s: store_path(workdir, s, "read") for s in SYSTEMS}
        # ingest: every repeat writes a fresh store; the first one is kept for the read phases
        for r in range(reps):
            for s in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:
                target = read_store[s] if r == 0 else store_path(workdir, s, f"ingest{r}")
                times["ingest"][s].append(run_child(s, "ingest", workdir, n, target))
                if r:
                    _remove(target)
                print(f"  ingest  repeat {r + 1}/{reps} {s:5s} {times['ingest'][s][-1]:.4f} s", file=sys.stderr, flush=True)
        for phase in ("read", "stacked"):
            for r in range(reps):
                for s in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:
                    times[phase][s].append(run_child(s, phase, workdir, n, read_store[s]))
                    print(f"  {phase:7s} repeat {r + 1}/{reps} {s:5s} {times[phase][s][-1]:.4f} s", file=sys.stderr, flush=True)
        verdict = verify(workdir, n, read_store["atlas"], read_store["h5py"])
        results: dict[str, Any] = {"datasets": n, "repeats": reps, "machine": machine, "verify": verdict, "phases": {}}
        if _src_fingerprint() != machine["atlas_src_sha1"]:
            results["warning"] = "the atlas sources changed during this run: the atlas timings mix versions"
        for phase in PHASES:
            row: dict[str, Any] = {}
            for s in SYSTEMS:
                v = times[phase][s]
                row[s] = {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v}
            row["ratio"] = row["atlas"]["median"] / row["h5py"]["median"]
            row["target"] = TARGETS.get(phase)
            results["phases"][phase] = row
        print(render_table(results))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
        return 0
    finally:
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


if __name__ == "__main__":
    sys.exit(main())
