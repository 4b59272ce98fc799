"""Every asv benchmark in benchmarks/ runs once (small sizes); the comparison harness is
tested in test_compare_scripts.py.

The asv suite is loaded with ``ATLAS_BENCH_SMALL=1`` so its stores are tiny; each
benchmark goes through the asv life cycle once: ``setup_cache`` (once per class, in its
own temporary working directory, as asv does), ``setup``, the benchmark, ``teardown``.
``timeraw_*`` benchmarks return code, which is run in a fresh interpreter. A benchmark
whose timed call compiles a Numba kernel signature that its setup did not fails (kernels
compile in setup, never in the timed part).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
BENCH_PREFIX = re.compile(r"^(time|timeraw|mem|peakmem|track)_")
SMALL_ENV = {"ATLAS_BENCH_SMALL": "1"}


def _load(path: Path):
    """Import one benchmark module (as ``benchmarks.<name>``, the way asv does, so relative
    imports work) with the small sizes in effect."""
    name = f"benchmarks.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    old = {k: os.environ.get(k) for k in SMALL_ENV}
    os.environ.update(SMALL_ENV)
    try:
        if "benchmarks" not in sys.modules:
            spec = importlib.util.spec_from_file_location("benchmarks", BENCH_DIR / "__init__.py",
                                                          submodule_search_locations=[str(BENCH_DIR)])
            pkg = importlib.util.module_from_spec(spec)
            sys.modules["benchmarks"] = pkg
            spec.loader.exec_module(pkg)
        mod = importlib.import_module(name)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return mod


def _modules():
    return [_load(p) for p in sorted(BENCH_DIR.glob("*.py")) if p.name != "__init__.py"]


def _discover():
    """``(id, module, class or None, attribute name)`` of every benchmark, the way asv finds them."""
    found = []
    for mod in _modules():
        for name, obj in vars(mod).items():
            if inspect.isfunction(obj) and BENCH_PREFIX.match(name) and obj.__module__ == mod.__name__:
                found.append((f"{mod.__name__}.{name}", mod, None, name))
            elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
                for attr in dir(obj):
                    if BENCH_PREFIX.match(attr) and callable(getattr(obj, attr)):
                        found.append((f"{mod.__name__}.{name}.{attr}", mod, obj, attr))
    return found


BENCHMARKS = _discover()


def _param_sets(holder) -> list[tuple]:
    params = getattr(holder, "params", None)
    if params is None:
        return [()]
    if not isinstance(params, list) or (params and not isinstance(params[0], (list, tuple))):
        params = [params]  # a single parameter given as a flat list
    return list(itertools.product(*params))


def _run_timeraw(code) -> None:
    stmt, setup = (code, "") if isinstance(code, str) else (code[0], code[1])
    src = textwrap.dedent(setup) + "\n" + textwrap.dedent(stmt) + "\n"
    env = dict(os.environ, **SMALL_ENV)
    proc = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _kernel_signatures() -> dict[str, int]:
    """Compiled (or cache-loaded) signatures per atlas Numba kernel in this process."""
    out = {}
    for modname in ("atlas._kernels.grid", "atlas._kernels.gather", "atlas._kernels.stats"):
        mod = sys.modules.get(modname)
        for k, v in vars(mod).items() if mod is not None else ():
            sigs = getattr(v, "signatures", None)
            if isinstance(sigs, list):
                out[f"{modname}.{k}"] = len(sigs)
    return out


def _call_checked(bench_id: str, fn, *args):
    """Run the benchmark body; fail if it compiled (or loaded) a kernel signature its setup did not."""
    before = _kernel_signatures()
    result = fn(*args)
    after = _kernel_signatures()
    new = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    assert not new, f"{bench_id}: the timed call compiled/loaded Numba kernels {new} (warm them in setup)"
    return result


@pytest.fixture(scope="module")
def cache_dirs(tmp_path_factory):
    """One setup_cache result per class, each made in its own directory (asv's cwd for the class)."""
    return {"dirs": {}, "results": {}, "factory": tmp_path_factory}


def test_benchmarks_were_found():
    names = {b[0] for b in BENCHMARKS}
    assert any(".time_" in n for n in names), names
    assert "benchmarks.bench_small.timeraw_import_atlas" in names


@pytest.mark.parametrize("bench", BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_asv_benchmark_runs_once(bench, cache_dirs, monkeypatch):
    bench_id, mod, cls, attr = bench
    if cls is None:
        func = getattr(mod, attr)
        setup = getattr(mod, "setup", None)
        teardown = getattr(mod, "teardown", None)
        for args in _param_sets(func):
            if setup is not None:
                setup(*args)
            try:
                result = _call_checked(bench_id, func, *args)
                if attr.startswith("timeraw_"):
                    _run_timeraw(result)
            finally:
                if teardown is not None:
                    teardown(*args)
        return

    key = (mod.__name__, cls.__qualname__)
    workdir = cache_dirs["dirs"].get(key)
    if workdir is None:
        workdir = cache_dirs["dirs"][key] = cache_dirs["factory"].mktemp(cls.__name__)
    monkeypatch.chdir(workdir)
    cache_args: tuple = ()
    if hasattr(cls, "setup_cache"):
        if key not in cache_dirs["results"]:
            cache_dirs["results"][key] = cls().setup_cache()
        cache_args = (cache_dirs["results"][key],)
    for args in _param_sets(cls):
        inst = cls()
        full = cache_args + tuple(args)
        if hasattr(inst, "setup"):
            try:
                inst.setup(*full)
            except NotImplementedError:
                continue  # asv's way of skipping a parameter combination
        try:
            result = _call_checked(bench_id, getattr(inst, attr), *full)
            if attr.startswith("timeraw_"):
                _run_timeraw(result)
            if attr.startswith("track_"):
                assert isinstance(result, (int, float)), f"{bench_id} returned {result!r}"
        finally:
            if hasattr(inst, "teardown"):
                inst.teardown(*full)
