"""asv benchmarks: appending a few time steps to many existing datasets in one flush.

``AppendMany``: a store of ``N_APPEND`` stations, each with two float32 series ``temp`` and
``rh`` of ``HISTORY`` steps (chunks of ``CHUNK`` steps) is copied fresh for every sample;
the timed part opens it, appends ``STEPS`` steps to both series of every station with
``append_array`` under one ``with`` block (one flush), and is compared with
``time_fresh_ingest_same_bytes``: the same new bytes written as new datasets into an empty
store. ``track_segments_per_append`` counts the segment files the append flush adds (one
per array name).

Sizes: ``ATLAS_BENCH_SMALL=1`` shrinks them.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

import atlas

from . import _common as C

N_APPEND = 50 if C.SMALL else 5000
HISTORY = 365
CHUNK = 64
STEPS = 3
SERIES = ("temp", "rh")


def _build(path: str) -> None:
    rng = np.random.default_rng(3)
    with atlas.Atlas.create(path) as st:
        for i in range(N_APPEND):
            ds = st.create_dataset(C.dataset_name(i))
            for v in SERIES:
                ds.define_array(v, "float32", ["time"], [HISTORY], [CHUNK])
                ds.write_array(v, [0], rng.standard_normal(HISTORY, dtype=np.float32))


def _segments(path: str) -> int:
    return sum(len([f for f in fs if f.endswith(".seg")]) for _, _, fs in os.walk(path))


class AppendMany:
    number = 1
    repeat = (3, 10, 60.0)
    timeout = 600

    def setup_cache(self):
        C.warm_kernels()
        path = os.path.abspath("append-base")
        _build(path)
        return path

    def setup(self, base):
        C.warm_kernels()
        self.tmp = C.fresh_dir("append")
        self.path = os.path.join(self.tmp, "store")
        shutil.copytree(base, self.path)
        self.new = np.random.default_rng(5).standard_normal((N_APPEND, STEPS), dtype=np.float32)
        warm = os.path.join(self.tmp, "warm")  # append_array's code paths compiled outside the timing
        shutil.copytree(base, warm)
        with atlas.Atlas.open(warm) as st:
            ds = st.open_dataset(C.dataset_name(0))
            for v in SERIES:
                ds.append_array(v, self.new[0])

    def teardown(self, base):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_append_steps(self, base):
        with atlas.Atlas.open(self.path) as st:
            for i in range(N_APPEND):
                ds = st.open_dataset(C.dataset_name(i))
                for v in SERIES:
                    ds.append_array(v, self.new[i])

    def time_fresh_ingest_same_bytes(self, base):
        with atlas.Atlas.create(os.path.join(self.tmp, "fresh")) as st:
            for i in range(N_APPEND):
                ds = st.create_dataset(C.dataset_name(i))
                for v in SERIES:
                    ds.define_array(v, "float32", ["time"], [STEPS])
                    ds.write_array(v, [0], self.new[i])

    def track_segments_per_append(self, base):
        before = _segments(self.path)
        self.time_append_steps(base)
        return _segments(self.path) - before

    track_segments_per_append.unit = "segments"  # type: ignore[attr-defined]
