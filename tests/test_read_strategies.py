"""The same reads under every read strategy of the engine, each compared with a NumPy model.

Strategies (forced through ``read_strategy`` in ``conftest.py``, the one place that knows how
the engine chooses): one thread; many threads with requests small enough to stay on the
caller's thread (inline) and large enough for the pool (pooled), by size and forced either
way; and the object-store path (obstore ``LocalStore``: ranges fetched on the I/O pool) with
one and many threads. Which path ran is observed, not assumed: the threads that fetch ranges
(``Storage.read_ranges``) and decode frames (``atlas.codecs.decompress``) are recorded for
probe reads whose size is checked against the engine's threshold.

The data: numeric arrays with fill values and never-written chunks, strings, an incompressible
float64 array large enough for several coalesced ranges, six datasets, two flushes (two
segments per array name), then pending writes on top (a mix of pending and flushed chunks),
read whole, in partial boxes, stacked and across datasets; then flushed and read again.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

obstore = pytest.importorskip("obstore", reason="obstore is not installed (pip install 'atlas-python[cloud]')")
from obstore.store import LocalStore  # noqa: E402

import atlas  # noqa: E402
import atlas.codecs  # noqa: E402
from atlas import Atlas  # noqa: E402
from atlas.storage import LocalStorage  # noqa: E402
from atlas.storage._object import ObjectStorage  # noqa: E402

NAMES = [f"ds{k}" for k in range(6)]
BIG = NAMES[:4]  # the datasets holding the large array
SPECS = {  # dtype, shape, chunk, fill
    "temp": ("float32", [8, 40, 60], [2, 16, 32], float("nan")),
    "count": ("int32", [300], [64], -1),
    "label": ("string", [40], [8], None),
    "big": ("float64", [2, 256, 256], [1, 128, 128], None),
}
DIMS = {"temp": ["t", "y", "x"], "count": ["n"], "label": ["s"], "big": ["b", "y2", "x2"]}
WORDS = ["", "a", "β-unicode", "日本語", "long " * 30, "x\ny", "z"]


def _labels(rng, n):
    return np.array([WORDS[i] + str(j) for j, i in enumerate(rng.integers(0, len(WORDS), n))], dtype=object)


def _write(st: Atlas, model: dict, ds: str, arr: str, start, data) -> None:
    st.open_dataset(ds).write_array(arr, start, data)
    model[(ds, arr)][tuple(slice(a, a + n) for a, n in zip(start, data.shape))] = data


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store of two flushes on disk and its model ``{(dataset, array): ndarray}``."""
    path = tmp_path_factory.mktemp("strategies") / "base"
    rng = np.random.default_rng(7)
    model: dict = {}
    with Atlas.create(str(path)) as st:
        for k, ds in enumerate(NAMES):
            d = st.create_dataset(ds)
            for arr, (dtype, shape, chunk, fill) in SPECS.items():
                if arr == "big" and ds not in BIG:
                    continue
                d.define_array(arr, dtype, DIMS[arr], shape, chunk, fill_value=fill)
                if dtype == "string":
                    model[(ds, arr)] = np.array([""] * shape[0], dtype=object)
                else:
                    model[(ds, arr)] = np.full(shape, fill if fill is not None else 0, dtype)
            if k < 5:  # ds5's temp stays all fill
                _write(st, model, ds, "temp", [0, 0, 0], rng.standard_normal((6, 30, 50)).astype(np.float32))
            _write(st, model, ds, "count", [0], np.arange(200, dtype=np.int32) + 1000 * k)
            _write(st, model, ds, "label", [0], _labels(rng, 40))
            if ds in BIG:
                _write(st, model, ds, "big", [0, 0, 0], rng.random((2, 256, 256)))
    with Atlas.open(str(path)) as st:  # the second flush: a second segment of every array name
        for ds in ("ds1", "ds3"):
            _write(st, model, ds, "temp", [4, 20, 30], rng.standard_normal((4, 20, 30)).astype(np.float32))
        for ds in ("ds0", "ds2", "ds4"):
            _write(st, model, ds, "count", [150], -np.arange(150, dtype=np.int32))
        for ds in NAMES[1:5]:
            _write(st, model, ds, "label", [16], _labels(rng, 14))
        _write(st, model, "ds2", "big", [1, 0, 0], rng.random((1, 128, 128)))
    return path, model


# ------------------------------------------------------------------------------------ observation
def _role() -> str:
    """Who runs this: the caller, the shared CPU pool, or the I/O pool (the pools' thread names)."""
    name = threading.current_thread().name
    if name.startswith("atlas-io"):
        return "io"
    return "pool" if name.startswith("atlas") else "caller"


class Observer:
    """Records which threads fetch ranges and decode frames."""

    def __init__(self, monkeypatch):
        self.reads: set[str] = set()
        self.decodes: set[str] = set()
        self._lock = threading.Lock()
        real = atlas.codecs.decompress

        def decompress(*a, **k):
            with self._lock:
                self.decodes.add(_role())
            return real(*a, **k)

        monkeypatch.setattr(atlas.codecs, "decompress", decompress)

    def storage(self, kind: str, path) -> object:
        st = LocalStorage(str(path)) if kind == "local" else ObjectStorage(LocalStore(str(path)))
        real = st.read_ranges

        def read_ranges(p, starts, ends):
            with self._lock:
                self.reads.add(_role())
            return real(p, starts, ends)

        st.read_ranges = read_ranges  # type: ignore[method-assign]
        return st

    def run(self, fn):
        self.reads.clear()
        self.decodes.clear()
        return fn(), set(self.reads), set(self.decodes)


def _check_role(seen: set[str], want: str, what: str) -> None:
    # the caller also reads and decodes each array name's chunk index once: it may appear beside a pool
    if want == "caller":
        assert seen == {"caller"}, (what, seen)
    else:
        assert want in seen and ({"pool", "io"} - {want}).isdisjoint(seen), (what, want, seen)


# ------------------------------------------------------------------------------------ reads
def check_all(st: Atlas, model: dict) -> int:
    """Every read kind against the model; returns how many arrays were compared."""
    n = 0

    def same(got, want):
        nonlocal n
        assert got is not None and got.shape == want.shape and got.dtype == want.dtype, (got, want)
        np.testing.assert_array_equal(got, want)
        n += 1

    for (ds, arr), want in model.items():
        d = st.open_dataset(ds)
        same(d.read_array(arr), want)
    boxes = {"temp": ([1, 5, 7], [5, 30, 50]), "count": ([50], [200]), "label": ([5], [20]),
             "big": ([1, 100, 60], [1, 100, 150])}
    for arr, (start, shape) in boxes.items():
        sl = tuple(slice(a, a + b) for a, b in zip(start, shape))
        names = BIG if arr == "big" else NAMES
        for ds in names:
            same(st.open_dataset(ds).read_array(arr, start, shape), model[(ds, arr)][sl])
        same(st.read_array_across_stacked(arr, names, start, shape), np.stack([model[(ds, arr)][sl] for ds in names]))
        same(st.read_array_across_stacked(arr, names[::-1]), np.stack([model[(ds, arr)] for ds in names[::-1]]))
    across = st.read_array_across("big", ["ds5", "ds3", "ds0", "ds4"], [0, 7, 0], [2, 200, 256])
    assert across[0] is None and across[3] is None
    same(across[1], model[("ds3", "big")][:, 7:207])
    same(across[2], model[("ds0", "big")][:, 7:207])
    got = st.open_dataset("ds2").read_arrays(["count", "label"], [10], [25])
    same(got["count"], model[("ds2", "count")][10:35])
    same(got["label"], model[("ds2", "label")][10:35])
    return n


def pending_writes(st: Atlas, model: dict) -> None:
    """Writes left pending on top of the two flushes (partial chunks merge with flushed ones)."""
    rng = np.random.default_rng(99)
    _write(st, model, "ds0", "temp", [1, 10, 20], np.full((2, 25, 21), 7.5, np.float32))
    _write(st, model, "ds5", "temp", [7, 39, 59], np.ones((1, 1, 1), np.float32))  # a never-written chunk
    _write(st, model, "ds1", "count", [60], np.arange(10, dtype=np.int32) - 5)
    _write(st, model, "ds3", "count", [299], np.array([42], np.int32))
    _write(st, model, "ds0", "label", [3], np.array(["pending", "ü"], dtype=object))
    _write(st, model, "ds5", "label", [39], np.array(["last"], dtype=object))
    _write(st, model, "ds1", "big", [0, 100, 0], rng.random((1, 40, 256)))  # crosses two large chunks


# ------------------------------------------------------------------------------------ the matrix
CASES = [  # storage, threads, pooled (None: by size)
    ("local", 1, None), ("local", 4, None), ("local", 4, False), ("local", 4, True),
    ("localstore", 1, None), ("localstore", 4, None), ("localstore", 4, False), ("localstore", 4, True),
]


@pytest.mark.parametrize("kind, threads, pooled", CASES,
                         ids=[f"{k}-{t}threads-{ {None: 'bysize', False: 'inline', True: 'pooled'}[p]}" for k, t, p in CASES])
def test_same_results_under_every_read_strategy(base, tmp_path, monkeypatch, read_strategy, kind, threads, pooled):
    src, base_model = base
    path = tmp_path / "s"
    shutil.copytree(src, path)
    model = {k: v.copy() for k, v in base_model.items()}
    threshold = read_strategy(threads, pooled)
    obs = Observer(monkeypatch)

    def expect(large: bool) -> tuple[str, str]:
        """(who fetches, who decodes) for a multi-frame request of flushed chunks."""
        parallel = threads > 1 and (pooled is True or (pooled is None and large))
        decode = "pool" if parallel else "caller"
        return ("io" if kind == "localstore" else decode), decode

    with Atlas.open(obs.storage(kind, path)) as st:
        # probes on a fresh handle (nothing cached): a large request and two small ones
        big_bytes = len(BIG) * model[("ds0", "big")].nbytes
        count_bytes = 2 * len(NAMES) * model[("ds0", "count")].nbytes  # all of it, both segments
        if pooled is None:
            assert big_bytes >= 4 * threshold and count_bytes * 4 < threshold, (big_bytes, count_bytes, threshold)
        for arr, names, large in (("big", BIG, True), ("count", NAMES, False), ("label", NAMES, False)):
            got, reads, decodes = obs.run(lambda: st.read_array_across_stacked(arr, names))
            np.testing.assert_array_equal(got, np.stack([model[(ds, arr)] for ds in names]))
            want_read, want_decode = expect(large)
            _check_role(reads, want_read, f"{arr}: fetch")
            _check_role(decodes, want_decode, f"{arr}: decode")
        assert check_all(st, model) > len(model)  # flushed only
        pending_writes(st, model)
        assert check_all(st, model) > len(model)  # pending + flushed
    with Atlas.open(obs.storage(kind, path)) as st:  # after the flush: three segments per array name
        assert check_all(st, model) > len(model)
        assert st.verify() == []
