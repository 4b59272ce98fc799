"""asv benchmarks: first-call latency in a fresh interpreter (``timeraw_``).

* ``timeraw_first_read_cold``: ``import atlas`` and ``Atlas.open`` untimed, then the first
  ``read_array`` (a box over 2 x 2 x 2 chunks of a (24, 90, 180) float32 array, 43 KB)
  timed, with ``NUMBA_CACHE_DIR`` pointed at a new, empty directory. A request this small
  runs the NumPy versions of the kernels (``atlas._small``): numba is not imported.
* ``timeraw_first_read_warm``: the same with a cache directory populated in
  ``setup_cache``.
* ``timeraw_first_large_read_cold`` / ``_warm``: the first read of the whole array
  (16 chunks, 1.5 MB): the copy kernel's size, so numba is imported and the kernel is
  compiled (cold) or loaded from the cache (warm).
* ``timeraw_script_warm``: ``import atlas`` + open + the first read, all timed, warm cache
  (what a short script pays).

* ``timeraw_quickstart_cold`` / ``timeraw_quickstart_warm``: everything
  ``examples/01_quickstart.py`` does (create, write, flush, reopen, stats, reads, a stacked
  read), ``import atlas`` included, with an empty and with a populated Numba cache: the
  time to the quick start's results in a fresh process.

``import atlas`` alone is ``bench_small.timeraw_import_atlas``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from . import _common as C

_READ = 'ds.read_array("temp", (3, 30, 60), (6, 30, 60))'
_READ_LARGE = 'ds.read_array("temp")\nimport sys\nassert "numba" in sys.modules, "a large read ran no kernel"'
_QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "01_quickstart.py")


def _quickstart_code(cache_dir: str) -> str:
    return (
        "import contextlib, io, os, runpy\n"
        f"os.environ['NUMBA_CACHE_DIR'] = {cache_dir!r}\n"
        "os.environ['ATLAS_NUMBA_CACHE'] = '1'\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    runpy.run_path({_QUICKSTART!r}, run_name='__main__')\n"
    )


def _setup_code(cache_dir: str, store: str) -> str:
    return (
        "import os\n"
        f"os.environ['NUMBA_CACHE_DIR'] = {cache_dir!r}\n"
        "os.environ['ATLAS_NUMBA_CACHE'] = '1'\n"
        "import atlas\n"
        f"store = atlas.Atlas.open({store!r})\n"
        f"ds = store.open_dataset({C.dataset_name(0)!r})\n"
    )


class FirstCall:
    timeout = 600
    repeat = (2, 5, 60.0)

    def setup_cache(self):
        store = C.build_grid_store(os.path.abspath("latency_store"), 1)
        warm = os.path.abspath("numba_warm")
        shutil.rmtree(warm, ignore_errors=True)
        os.makedirs(warm)
        proc = subprocess.run([sys.executable, "-c", _setup_code(warm, store) + _READ_LARGE + "\n"],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"populating the numba cache failed:\n{proc.stderr}")
        if not any(f.endswith(".nbi") for _, _, fs in os.walk(warm) for f in fs):
            raise RuntimeError(f"the first large read wrote no numba cache index under {warm}")
        proc = subprocess.run([sys.executable, "-c", _quickstart_code(warm)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"running the quick start failed:\n{proc.stderr}")
        return {"store": store, "warm": warm}

    def setup(self, paths):
        self.tmp = tempfile.mkdtemp(prefix="atlas-bench-numba-cold-")

    def teardown(self, paths):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def timeraw_first_read_cold(self, paths):
        cold = tempfile.mkdtemp(dir=self.tmp)  # a new empty cache for every sample
        return _READ, _setup_code(cold, paths["store"])

    def timeraw_first_read_warm(self, paths):
        return _READ, _setup_code(paths["warm"], paths["store"])

    def timeraw_first_large_read_cold(self, paths):
        return _READ_LARGE, _setup_code(tempfile.mkdtemp(dir=self.tmp), paths["store"])

    def timeraw_first_large_read_warm(self, paths):
        return _READ_LARGE, _setup_code(paths["warm"], paths["store"])

    def timeraw_script_warm(self, paths):
        return _setup_code(paths["warm"], paths["store"]) + _READ, ""

    def timeraw_quickstart_cold(self, paths):
        return _quickstart_code(tempfile.mkdtemp(dir=self.tmp)), ""

    def timeraw_quickstart_warm(self, paths):
        return _quickstart_code(paths["warm"]), ""
