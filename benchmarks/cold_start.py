#!/usr/bin/env python
"""Time to the quick start's results in a fresh process, with an empty and a populated
Numba cache, next to the floor numba itself sets (medians of ``--repeats`` processes).

* ``cold``: ``examples/01_quickstart.py`` (imports included) with ``NUMBA_CACHE_DIR`` a new
  empty directory: every kernel it needs is compiled.
* ``warm``: the same with the cache the cold runs filled.
* ``floor, warm``: ``import numba`` and one trivial cached ``@njit`` function loaded from
  its cache: numba's own start-up (its import and the target registries it loads on the
  first call, which import scipy.linalg to probe for BLAS when scipy is installed).
* ``floor, cold``: the same trivial function compiled: what any first compilation costs.

Wall and CPU seconds (CPU: this process and its threads; the machine may be shared).

    python benchmarks/cold_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "examples", "01_quickstart.py")
_CLOCK = "import time\nw0, c0 = time.perf_counter(), time.process_time()\n"
_REPORT = "print(time.perf_counter() - w0, time.process_time() - c0)\n"
_QUICK = ("import contextlib, io, runpy\nwith contextlib.redirect_stdout(io.StringIO()):\n"
          f"    runpy.run_path({QUICKSTART!r}, run_name='__main__')\n")


def _floor_code(d: str) -> str:
    mod = os.path.join(d, "numba_floor_probe.py")
    if not os.path.exists(mod):
        with open(mod, "w") as f:
            f.write("from numba import njit\n\n@njit(cache=True)\ndef first(a):\n    return a[0]\n")
    return f"import sys\nsys.path.insert(0, {d!r})\nimport numpy as np\nimport numba_floor_probe\nnumba_floor_probe.first(np.zeros(1))\n"


def _run(code: str, cache: str) -> tuple[float, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, ATLAS_NUMBA_CACHE="1")
    p = subprocess.run([sys.executable, "-c", _CLOCK + code + _REPORT], capture_output=True, text=True, env=env,
                       check=True, timeout=600)
    wall, cpu = p.stdout.split()[-2:]
    return float(wall), float(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="atlas-coldstart-")
    try:
        rows: dict[str, list[tuple[float, float]]] = {"quick start, cold cache": [], "quick start, warm cache": [],
                                                      "floor (numba alone), cold": [], "floor (numba alone), warm": []}
        warm = os.path.join(tmp, "warm")
        for i in range(a.repeats):
            cold = os.path.join(tmp, f"cold{i}")
            rows["quick start, cold cache"].append(_run(_QUICK, cold))
            rows["floor (numba alone), cold"].append(_run(_floor_code(tmp), os.path.join(tmp, f"fcold{i}")))
            shutil.rmtree(warm, ignore_errors=True)
            shutil.copytree(cold, warm) if os.path.isdir(cold) else os.makedirs(warm)
            rows["quick start, warm cache"].append(_run(_QUICK, warm))
            rows["floor (numba alone), warm"].append(_run(_floor_code(tmp), os.path.join(tmp, f"fcold{i}")))
        print(f"load average {os.getloadavg()}, {os.cpu_count()} cpu(s), median of {a.repeats}\n")
        print("| first result in a fresh process | wall (s) | CPU (s) |\n| --- | ---: | ---: |")
        for k, v in rows.items():
            print(f"| {k} | {statistics.median(x[0] for x in v):.2f} | {statistics.median(x[1] for x in v):.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
