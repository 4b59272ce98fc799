"""asv benchmarks: staged writes (``benchmarks/staged.py`` is the stand-alone script).

* ``StagedCommit``: ``Atlas.commit_staged`` of 1,000 / 10,000 / 100,000 staged small
  datasets (three float32 (100,) arrays each) spread over 100 writer results; the staged
  files and results are made once (``setup_cache``), each sample commits into a fresh
  copy of the store.
* ``ParallelIngest``: ``Atlas.ingest(files, workers=N)`` of ``N_FILES`` NetCDF files with 1
  and 2 worker processes (started in the timed call: the pool's start-up is included).

Sizes shrink with ``ATLAS_BENCH_SMALL=1``.
"""

from __future__ import annotations

import os
import pickle
import shutil

import atlas

from . import _common as C
from . import staged as S

COMMIT_SIZES = [50] if C.SMALL else [1_000, 10_000, 100_000]
N_FILES = 4 if C.SMALL else 200


class StagedCommit:
    params = [COMMIT_SIZES]
    param_names = ["datasets"]
    number = 1
    repeat = (3, 5, 60.0)
    timeout = 900

    def setup_cache(self):
        out = {}
        for n in COMMIT_SIZES:
            base = os.path.abspath(f"commit-{n}")
            store = atlas.Atlas.create(base)
            results = S.staged_results(store, n)
            with open(f"{base}.pickle", "wb") as f:
                pickle.dump(results, f)
            out[n] = base
        return out

    def setup(self, cache, n):
        with open(f"{cache[n]}.pickle", "rb") as f:
            self.results = pickle.load(f)
        self.tmp = C.fresh_dir("commit")
        path = os.path.join(self.tmp, "store")
        shutil.copytree(cache[n], path)
        self.store = atlas.Atlas.open(path)

    def teardown(self, cache, n):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_commit_staged(self, cache, n):
        self.store.commit_staged(self.results)


class ParallelIngest:
    params = [[1, 2]]
    param_names = ["workers"]
    number = 1
    repeat = (2, 3, 120.0)
    timeout = 900

    def setup_cache(self):
        return S.make_files(os.path.abspath("nc"), N_FILES)

    def setup(self, pattern, workers):
        C.warm_kernels()
        self.tmp = C.fresh_dir("pingest")
        self.count = 0

    def teardown(self, pattern, workers):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_ingest_workers(self, pattern, workers):
        self.count += 1
        store = atlas.Atlas.create(os.path.join(self.tmp, f"s{self.count}"))
        store.ingest([pattern], workers=workers)
