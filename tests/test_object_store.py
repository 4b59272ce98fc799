"""Object storage: one conformance suite over four backends, plus the object-store specifics.

Backends: a local path, obstore ``LocalStore``, obstore ``MemoryStore`` and ``S3Store`` on
moto's S3 server (127.0.0.1, port 0; see ``conftest.py``). On top of the conformance class:

* a second writer on the same store is detected, on every backend, and keeps its changes;
* flush on S3 uploads one object per touched array name and commits the metadata last;
* a stacked read across 200 datasets written in one flush costs a handful of range reads
  (counted both at the obstore call level and as HTTP requests received by moto);
* a read-only ``HTTPStore`` over a store served by a range-capable server on 127.0.0.1;
* lazy ``to_xarray`` of S3 and LocalStore stores computed on a ``dask.distributed`` process
  cluster (one per module);
* the bulk-read I/O concurrency setting, the ImportError without obstore, and the example
  ``examples/08_object_store.py`` (LocalStore, and S3 on moto).

No network beyond 127.0.0.1; the only credentials are moto's dummy keys.
"""

from __future__ import annotations

import email.utils
import os
import pickle
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

obstore = pytest.importorskip("obstore", reason="obstore is not installed (pip install 'atlas-python[cloud]')")
from obstore.store import HTTPStore, LocalStore, MemoryStore  # noqa: E402

import dask.array as da  # noqa: E402
import xarray as xr  # noqa: E402

import atlas  # noqa: E402
import atlas.storage._object as atlas_object  # noqa: E402
from atlas import Atlas  # noqa: E402

BACKENDS = ["path", "localstore", "memory", "s3"]


# ============================================================================ backends
class Backend:
    """Makes named, independent stores of one backend kind; ``source(name)`` is what
    ``Atlas.create``/``Atlas.open`` get (a fresh obstore handle per call, except for
    MemoryStore, whose data lives in the handle)."""

    def __init__(self, kind, tmp_path, moto=None, bucket=None):
        self.kind = kind
        self.tmp = tmp_path
        self.moto = moto
        self.bucket = bucket
        self._memory: dict[str, MemoryStore] = {}

    def source(self, name="store"):
        if self.kind == "path":
            return str(self.tmp / name)
        if self.kind == "localstore":
            return LocalStore(str(self.tmp / name), mkdir=True)
        if self.kind == "memory":
            return self._memory.setdefault(name, MemoryStore())
        return self.moto.s3_store(self.bucket, prefix=f"stores/{name}")

    def obstore(self, name="store"):
        """An obstore view of the same store, for listing its objects."""
        if self.kind == "path":
            return LocalStore(str(self.tmp / name), mkdir=True)
        return self.source(name)

    def objects(self, name="store", prefix=None):
        """``{path: size}`` of every object of the store (under ``prefix``); on a local path
        and LocalStore without the writers' lock file ``atlas.lock`` (local-disk bookkeeping, never data)."""
        out = {}
        for batch in obstore.list(self.obstore(name), prefix=prefix):
            for m in batch:
                if not (self.kind in ("path", "localstore") and m["path"] == "atlas.lock"):
                    out[m["path"]] = int(m["size"])
        return out


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    kind = request.param
    if kind == "s3":
        return Backend(kind, tmp_path, request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket"))
    return Backend(kind, tmp_path)


@pytest.fixture(params=BACKENDS)
def writer_backend(request, tmp_path):
    """Every backend: obstore ones detect a second writer with conditional puts (or an ETag check
    where the backend has no conditional update), local paths with a lock plus a file-stamp check."""
    kind = request.param
    if kind == "s3":
        return Backend(kind, tmp_path, request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket"))
    return Backend(kind, tmp_path)


# ============================================================================ data
def schema_data(k: int) -> dict[str, dict]:
    """Arrays of several dtypes (with fills, partial writes, strings, timestamps, a 0-d array)."""
    rng = np.random.default_rng(1000 + k)
    temp = rng.standard_normal((6, 20, 24)).astype(np.float32) + k
    temp[1, 2, 3] = np.nan
    full_temp = np.full((6, 20, 30), np.nan, np.float32)
    full_temp[:, :, :24] = temp
    count = rng.integers(0, 1000, 33).astype(np.int16)
    full_count = np.full(40, -1, np.int16)
    full_count[:33] = count
    big = (np.arange(35, dtype=np.uint64).reshape(5, 7) * np.uint64(2**58)) + np.uint64(k)
    f64 = rng.random((3, 4, 5))
    label = np.array(["a", "β-unicode", "", "long " * 20, "日本語", f"ds{k}", "z"], dtype=object)
    time = (np.datetime64("2024-01-01T00:00:00", "ns") + np.arange(10) * np.timedelta64(3_600_000_000_123, "ns")
            + np.timedelta64(k, "D"))
    time[4] = np.datetime64("NaT")
    return {
        "temp": dict(dtype="float32", dims=["t", "y", "x"], shape=[6, 20, 30], chunk=[2, 10, 15], fill=float("nan"),
                     write=temp, expect=full_temp),
        "count": dict(dtype="int16", dims=["n"], shape=[40], chunk=[16], fill=-1, write=count, expect=full_count),
        "big": dict(dtype="uint64", dims=["a", "b"], shape=[5, 7], chunk=None, fill=None, write=big, expect=big),
        "f64": dict(dtype="float64", dims=["a", "b", "c"], shape=[3, 4, 5], chunk=[2, 2, 5], fill=None, write=f64,
                    expect=f64),
        "label": dict(dtype="string", dims=["s"], shape=[7], chunk=[3], fill=None, write=label, expect=label),
        "time": dict(dtype="timestamp_nanoseconds", dims=["h"], shape=[10], chunk=[4], fill=None, write=time,
                     expect=time),
        "scalar": dict(dtype="int8", dims=[], shape=[], chunk=None, fill=None, write=np.array(k - 3, np.int8),
                       expect=np.array(k - 3, np.int8)),
        "empty": dict(dtype="int32", dims=["e", "f"], shape=[0, 4], chunk=[2, 2], fill=None,
                      write=np.zeros((0, 4), np.int32), expect=np.zeros((0, 4), np.int32)),
    }


ATTRS = {
    "flag": True,
    "n": 42,
    "neg": -(2**40),
    "x": 2.5,
    "who": "moto ☁ store",
    "when": np.datetime64("2024-01-02T03:04:05.123456789", "ns"),
}


def fill_dataset(st: Atlas, name: str, k: int) -> dict[str, np.ndarray]:
    ds = st.create_dataset(name)
    out = {}
    for arr, spec in schema_data(k).items():
        ds.define_array(arr, spec["dtype"], spec["dims"], spec["shape"], spec["chunk"], fill_value=spec["fill"])
        ds.write_array(arr, [0] * len(spec["shape"]), spec["write"])
        out[arr] = spec["expect"]
    for key, v in ATTRS.items():
        ds.set_attribute(key, v)
    ds.set_attribute("k", k)
    return out


def assert_same(got, want):
    assert got is not None
    got = np.asarray(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype == object:
        assert got.dtype == object
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want)


def check_dataset(st: Atlas, name: str, expect: dict[str, np.ndarray], k: int):
    ds = st.open_dataset(name)
    assert ds.list_arrays() == list(expect)
    for arr, want in expect.items():
        assert_same(ds.read_array(arr), want)
    assert ds.attributes() == {**ATTRS, "k": k}


def sample_xr(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    time = np.datetime64("2024-03-01", "ns") + np.arange(6) * np.timedelta64(6, "h")
    lat = np.linspace(-45, 45, 20)
    lon = np.linspace(0, 87, 30)
    temp = rng.standard_normal((6, 20, 30)).astype(np.float32)
    temp[0, 0, 0] = np.nan
    return xr.Dataset(
        {
            "temp": (("time", "lat", "lon"), temp, {"units": "K", "long_name": "air temperature"}),
            "mask": (("lat", "lon"), rng.integers(0, 2, (20, 30)).astype(np.int32)),
            "station": (("s",), np.array(["de Bilt", "Zürich", "東京"], dtype=object)),
        },
        coords={"time": time, "lat": ("lat", lat, {"units": "degrees_north"}), "lon": lon},
        attrs={"title": "object-store round trip", "version": 3, "scale": 0.5},
    )


XR_CHUNKS = {"temp": [2, 10, 15], "mask": [10, 30]}


def new_filled_store(backend: Backend, name="store", n=3) -> dict[str, dict[str, np.ndarray]]:
    expect = {}
    with Atlas.create(backend.source(name)) as st:
        for k in range(n):
            expect[f"d{k}"] = fill_dataset(st, f"d{k}", k)
    return expect


# ============================================================================ conformance
class TestConformance:
    """Every store-level operation behaves identically on every backend."""

    def test_create_open_datasets_arrays_attributes(self, backend):
        st = Atlas.create(backend.source(), codec="lz4", meta_format="msgpack", meta_compression="zstd")
        expect = {f"d{k}": fill_dataset(st, f"d{k}", k) for k in range(3)}
        for k in range(3):  # pending data is visible before the flush
            check_dataset(st, f"d{k}", expect[f"d{k}"], k)
        st.flush()
        re_ = Atlas.open(backend.source())
        assert (re_.codec, re_.meta_format, re_.meta_compression) == ("lz4", "msgpack", "zstd")
        assert re_.list_datasets() == ["d0", "d1", "d2"]
        assert re_.list_arrays() == list(schema_data(0))
        for k in range(3):
            check_dataset(re_, f"d{k}", expect[f"d{k}"], k)
        ds = re_.open_dataset("d1")
        assert ds.array_meta("temp") == {"dtype": "float32", "shape": [6, 20, 30], "chunk_shape": [2, 10, 15],
                                         "dimension_names": ["t", "y", "x"]}
        assert np.isnan(ds.array_fill_value("temp")) and ds.array_fill_value("count") == -1
        # boxes across chunk boundaries
        assert_same(ds.read_array("temp", [1, 8, 13], [3, 5, 4]), expect["d1"]["temp"][1:4, 8:13, 13:17])
        assert_same(ds.read_array("label", [2], [4]), expect["d1"]["label"][2:6])
        assert_same(ds.read_array("time", [3], [5]), expect["d1"]["time"][3:8])
        assert ds.read_array("nope") is None
        # a second round of changes on the reopened handle, then a third handle
        ds.set_attribute("n", 7)
        ds.write_array("count", [35], np.array([5, 6, 7], np.int16))
        re_.delete_dataset("d0")
        re_.create_dataset("empty")
        re_.flush()
        third = Atlas.open(backend.source())
        assert third.list_datasets() == ["d1", "d2", "empty"]
        d1 = third.open_dataset("d1")
        assert d1.get_attribute("n") == 7
        want = expect["d1"]["count"].copy()
        want[35:38] = [5, 6, 7]
        assert_same(d1.read_array("count"), want)
        assert third.open_dataset("empty").list_arrays() == []

    def test_stats(self, backend):
        new_filled_store(backend)
        st = Atlas.open(backend.source())
        exp = schema_data(2)
        ds = st.open_dataset("d2")
        t = ds.array_stats("temp")
        tv = exp["temp"]["expect"]
        assert t["row_count"] == tv.size and t["null_count"] == int(np.isnan(tv).sum())
        assert t["min"] == np.nanmin(tv) and t["max"] == np.nanmax(tv)
        assert isinstance(t["min"], np.float32)
        c = ds.array_stats("count")
        cv = exp["count"]["write"]
        assert c == {"row_count": 40, "null_count": 7, "min": cv.min(), "max": cv.max()}
        b = ds.array_stats("big")
        assert b["min"] == np.uint64(2) and b["max"] == np.uint64(34 * 2**58 + 2) and b["null_count"] == 0
        s = ds.array_stats("label")
        assert (s["min"], s["max"]) == (min(exp["label"]["write"]), max(exp["label"]["write"]))
        tm = ds.array_stats("time")
        tt = exp["time"]["write"]
        assert tm["min"] == tt[~np.isnat(tt)].min() and tm["max"] == tt[~np.isnat(tt)].max()
        # stats are "as of the last flush": unchanged by a pending write, updated by the flush
        ds.write_array("count", [0], np.array([-500], np.int16))
        assert ds.array_stats("count")["min"] == cv.min()
        st.flush()
        assert Atlas.open(backend.source()).open_dataset("d2").array_stats("count")["min"] == -500

    def test_flush_writes_one_object_per_array_name_and_nothing_before(self, backend):
        st = Atlas.create(backend.source())
        assert {p for p in backend.objects() if not p.startswith("versions/")} == {"atlas.meta"}
        for k in range(2):
            ds = st.create_dataset(f"d{k}")
            ds.define_array("a", "float32", ["x"], [100], [10])
            ds.write_array("a", [0], np.arange(100, dtype=np.float32) + k)
            ds.define_array("b", "string", ["x"], [4], [2])
            ds.write_array("b", [0], np.array(["p", "q", "r", str(k)], dtype=object))
        assert {p for p in backend.objects() if not p.startswith("versions/")} == {"atlas.meta"}  # nothing reaches storage before flush
        assert Atlas.open(backend.source()).list_datasets() == []
        st.flush()
        segs1 = set(backend.objects(prefix="arrays"))
        assert len(segs1) == 2 and len({p.split("/")[1] for p in segs1}) == 2  # one segment per array name
        ds = st.open_dataset("d1")
        ds.write_array("a", [50], np.full(5, -1, np.float32))
        st.flush()
        segs2 = set(backend.objects(prefix="arrays"))
        assert len(segs2 - segs1) == 1 and segs1 <= segs2  # only the touched array name, old segments kept
        before = backend.objects()
        st.flush()  # nothing pending: nothing written
        assert backend.objects() == before
        got = Atlas.open(backend.source()).open_dataset("d1").read_array("a")
        want = np.arange(100, dtype=np.float32) + 1
        want[50:55] = -1
        assert_same(got, want)

    def test_delete_and_compact_reclaim_space(self, backend):
        st = Atlas.create(backend.source())
        rng = np.random.default_rng(5)
        data = {}
        for k in range(12):
            ds = st.create_dataset(f"d{k}")
            for arr in ("u", "v"):
                ds.define_array(arr, "float64", ["y", "x"], [32, 32], [16, 16])
                data[(k, arr)] = rng.random((32, 32))
                ds.write_array(arr, [0, 0], data[(k, arr)])
            st.flush()  # one flush per dataset: 12 segments per array name
        objs = backend.objects(prefix="arrays")
        assert len(objs) == 24
        for k in range(0, 12, 2):
            st.delete_dataset(f"d{k}")
        st.open_dataset("d1").delete_array("v")
        st.flush()
        assert backend.objects(prefix="arrays") == objs  # deletes free nothing before compact
        st.expire(keep_last=1)  # nor while the versions before them are kept
        assert backend.objects(prefix="arrays") == objs
        st.compact()
        after = backend.objects(prefix="arrays")
        assert len(after) == 2  # one segment per array name
        assert sum(after.values()) < sum(objs.values()) * 0.6
        for handle in (st, Atlas.open(backend.source())):
            assert handle.list_datasets() == [f"d{k}" for k in range(1, 12, 2)]
            for k in range(1, 12, 2):
                ds = handle.open_dataset(f"d{k}")
                for arr in ("u", "v"):
                    if (k, arr) == (1, "v"):
                        assert ds.read_array("v") is None
                    else:
                        assert_same(ds.read_array(arr), data[(k, arr)])
        objs = set(backend.objects())
        assert len([p for p in objs if p.startswith("versions/")]) == 1  # the one version kept
        assert {p for p in objs if not p.startswith("versions/")} == {"atlas.meta", *after}

    def test_bulk_reads(self, backend):
        expect = new_filled_store(backend, n=4)
        st = Atlas.open(backend.source())
        names = ["d3", "d0", "d2"]
        s = st.read_array_across_stacked("temp", names, [1, 5, 10], [4, 10, 12])
        assert_same(s, np.stack([expect[n]["temp"][1:5, 5:15, 10:22] for n in names]))
        assert_same(st.read_array_across_stacked("time", names), np.stack([expect[n]["time"] for n in names]))
        assert_same(st.read_array_across_stacked("label", names), np.stack([expect[n]["label"] for n in names]))
        assert_same(st.read_array_across_stacked("scalar", names), np.stack([expect[n]["scalar"] for n in names]))
        across = st.read_array_across("count", names, [30], [10])
        for n, got in zip(names, across):
            assert_same(got, expect[n]["count"][30:40])
        got = st.open_dataset("d2").read_arrays(["temp", "f64", "nope"], [0, 0, 0], [2, 3, 4])
        assert_same(got["temp"], expect["d2"]["temp"][:2, :3, :4])
        assert_same(got["f64"], expect["d2"]["f64"][:2, :3, :4])
        assert got["nope"] is None

    def test_xarray_round_trip_eager_and_lazy(self, backend):
        src = sample_xr()
        with Atlas.create(backend.source()) as st:
            st.add_xr_dataset(src, "xr", chunks=XR_CHUNKS)
            st.add_xr_dataset(sample_xr(1), "xr1", chunks=XR_CHUNKS)
            st.add_xr_dataset(src.chunk({"time": 3}), "from_dask", chunks=XR_CHUNKS)  # streamed block by block
        st = Atlas.open(backend.source())
        xr.testing.assert_identical(st.to_xarray("xr", chunks=None), src)
        lazy = st.to_xarray("xr")
        assert isinstance(lazy["temp"].data, da.Array)
        assert lazy["temp"].data.chunks == ((2, 2, 2), (10, 10), (15, 15))
        xr.testing.assert_identical(lazy.compute(), src)
        xr.testing.assert_identical(st.to_xarray("from_dask").compute(scheduler="threads"), src)
        many = st.to_xarray_many(["xr", "xr1"])
        assert_same(many["temp"].values, np.stack([src["temp"].values, sample_xr(1)["temp"].values]))
        lazy_many = st.to_xarray_many(["xr", "xr1"], chunks="auto")
        assert isinstance(lazy_many["temp"].data, da.Array)
        xr.testing.assert_identical(lazy_many.compute(), many)

    def test_create_over_existing_store_raises_and_keeps_it(self, backend):
        expect = new_filled_store(backend, n=1)
        before = backend.objects()
        with pytest.raises(FileExistsError):
            Atlas.create(backend.source())
        assert backend.objects() == before
        check_dataset(Atlas.open(backend.source()), "d0", expect["d0"], 0)

    def test_open_empty_location_raises_file_not_found(self, backend):
        new_filled_store(backend, "other", n=1)  # a store next to it does not count
        if backend.kind == "path":
            os.makedirs(backend.tmp / "empty")
        with pytest.raises(FileNotFoundError):
            Atlas.open(backend.source("empty"))
        assert not backend.objects("empty")  # opening wrote nothing

    def test_pickle_store_view_and_lazy_xarray(self, backend):
        expect = new_filled_store(backend, n=2)
        with Atlas.open(backend.source()) as st:
            st.add_xr_dataset(sample_xr(), "xr", chunks=XR_CHUNKS)
        st = Atlas.open(backend.source())
        view = st.open_dataset("d1")
        lazy = st.to_xarray("xr")
        if backend.kind == "memory":
            for obj in (st, view, lazy):
                with pytest.raises(TypeError, match="MemoryStore.*LocalStore"):
                    pickle.dumps(obj)
            return
        st2 = pickle.loads(pickle.dumps(st))
        assert st2.list_datasets() == ["d0", "d1", "xr"]
        check_dataset(st2, "d0", expect["d0"], 0)
        view2 = pickle.loads(pickle.dumps(view))
        assert view2.name == "d1"
        assert_same(view2.read_array("temp"), expect["d1"]["temp"])
        assert_same(view2.read_array("label"), expect["d1"]["label"])
        lazy2 = pickle.loads(pickle.dumps(lazy))
        assert isinstance(lazy2["temp"].data, da.Array)
        xr.testing.assert_identical(lazy2.compute(), sample_xr())


# ============================================================================ second writer
def test_second_writer_is_detected_and_keeps_its_pending_changes(writer_backend):
    b = writer_backend
    with Atlas.create(b.source()) as st:
        ds = st.create_dataset("base")
        ds.define_array("a", "int32", ["x"], [8], [4])
        ds.write_array("a", [0], np.arange(8, dtype=np.int32))
    first = Atlas.open(b.source())
    second = Atlas.open(b.source())

    d = first.create_dataset("from_first")
    d.define_array("a", "int32", ["x"], [8], [4])
    d.write_array("a", [0], np.full(8, 1, np.int32))
    first.open_dataset("base").set_attribute("by", "first")
    first.flush()
    first_state = b.objects()

    d2 = second.create_dataset("from_second")
    d2.define_array("a", "int32", ["x"], [8], [4])
    d2.write_array("a", [0], np.full(8, 2, np.int32))
    second.open_dataset("base").write_array("a", [0], np.array([-9], np.int32))
    second.open_dataset("base").set_attribute("by", "second")
    with pytest.raises(atlas.ConcurrentWriteError, match="another writer"):
        second.flush()
    # the loser keeps its pending changes (reads see them) ...
    assert second.list_datasets() == ["base", "from_second"]
    assert_same(second.open_dataset("from_second").read_array("a"), np.full(8, 2, np.int32))
    assert second.open_dataset("base").read_array("a")[0] == -9
    assert second.open_dataset("base").get_attribute("by") == "second"
    # ... and a retry on the stale handle fails again instead of overwriting
    with pytest.raises(atlas.ConcurrentWriteError):
        second.flush()
    assert second.list_datasets() == ["base", "from_second"]

    # the store holds exactly the first writer's state (the loser's segment is unreferenced garbage)
    now = b.objects()
    assert now["atlas.meta"] == first_state["atlas.meta"]
    assert set(now) - set(first_state) <= {p for p in now if p.startswith(("arrays/", "versions/"))}
    fresh = Atlas.open(b.source())
    assert fresh.list_datasets() == ["base", "from_first"]
    assert fresh.open_dataset("base").get_attribute("by") == "first"
    assert_same(fresh.open_dataset("base").read_array("a"), np.arange(8, dtype=np.int32))
    assert_same(fresh.open_dataset("from_first").read_array("a"), np.full(8, 1, np.int32))

    # the winner keeps writing; compaction drops the loser's orphan segment
    first.open_dataset("from_first").write_array("a", [0], np.array([5], np.int32))
    first.flush()
    first.expire(keep_last=1)
    first.compact()
    assert len(b.objects(prefix="arrays")) == 1
    again = Atlas.open(b.source())
    assert again.list_datasets() == ["base", "from_first"]
    assert again.open_dataset("from_first").read_array("a")[0] == 5


def test_second_create_on_same_location_loses(writer_backend):
    """Two handles racing to create a store: exactly one store results and the loser gets an error."""
    a = Atlas.create(writer_backend.source())
    with pytest.raises(FileExistsError):
        Atlas.create(writer_backend.source())
    a.create_dataset("x")
    a.flush()
    assert Atlas.open(writer_backend.source()).list_datasets() == ["x"]


# ============================================================================ S3 specifics
def test_s3_flush_is_one_upload_per_segment_then_metadata_last(moto_server, s3_store, s3_bucket):
    st = Atlas.create(s3_store)
    for k in range(3):
        ds = st.create_dataset(f"d{k}")
        for arr in ("a", "b", "c"):
            ds.define_array(arr, "float32", ["x", "y"], [64, 64], [32, 32])
            ds.write_array(arr, [0, 0], np.full((64, 64), k, np.float32))
    moto_server.log.clear()
    st.flush()
    writes = [e for e in moto_server.log.requests() if e[0] in ("PUT", "POST", "DELETE")]
    assert all(status == 200 for _, _, status in writes), writes
    assert not [e for e in writes if e[0] == "DELETE"]
    objects = [urllib.parse.urlsplit(t).path for _, t, _ in writes]
    segs = sorted({p for p in objects if p.endswith(".seg")})
    assert len(segs) == 3, segs  # one object per touched array name
    # one upload per segment: a single PUT, or one multipart upload (initiate, parts, complete)
    for seg in segs:
        mine = [(m, t) for m, t, _ in writes if urllib.parse.urlsplit(t).path == seg]
        if len(mine) > 1:
            assert mine[0][0] == "POST" and mine[0][1].endswith("?uploads=")
            assert mine[-1][0] == "POST" and "uploadId=" in mine[-1][1]
            assert sum(1 for m, t in mine if "uploads=" in t) == 1
    assert objects[-1].endswith("/atlas.meta")  # the metadata is committed last ...
    assert sum(1 for p in objects if p.endswith("/atlas.meta")) == 1  # ... with a single PUT
    assert Atlas.open(moto_server.s3_store(s3_bucket, prefix="atlas/store")).list_datasets() == ["d0", "d1", "d2"]
    # a metadata-only change is one PUT of the metadata, nothing else
    st.open_dataset("d1").set_attribute("note", "attribute only")
    moto_server.log.clear()
    st.flush()
    writes = [(m, urllib.parse.urlsplit(t).path) for m, t, _ in moto_server.log.requests() if m in ("PUT", "POST", "DELETE")]
    assert [m for m, _ in writes] == ["PUT", "PUT"], writes  # the version's file, then the metadata
    assert writes[0][1].startswith(f"/{s3_bucket}/atlas/store/versions/")
    assert writes[1][1] == f"/{s3_bucket}/atlas/store/atlas.meta"


def test_s3_store_at_bucket_root(moto_server, s3_bucket):
    """No prefix: the store is the whole bucket (listing, compaction and reopen still work)."""
    with Atlas.create(moto_server.s3_store(s3_bucket)) as st:
        for k in range(3):
            ds = st.create_dataset(f"d{k}")
            ds.define_array("a", "float64", ["x"], [1000], [100])
            ds.write_array("a", [0], np.arange(1000.0) * k)
            st.flush()
        st.delete_dataset("d0")
    st = Atlas.open(moto_server.s3_store(s3_bucket))
    st.expire(keep_last=1)
    st.compact()
    root = moto_server.s3_store(s3_bucket)
    paths = sorted(m["path"] for batch in obstore.list(root) for m in batch if not m["path"].startswith("versions/"))
    assert paths[-1] == "atlas.meta" and len(paths) == 2 and paths[0].startswith("arrays/")
    re_ = Atlas.open(moto_server.s3_store(s3_bucket))
    assert re_.list_datasets() == ["d1", "d2"]
    assert_same(re_.read_array_across_stacked("a", ["d1", "d2"]), np.stack([np.arange(1000.0), np.arange(1000.0) * 2]))


class _CallCounter:
    """Counts obstore read calls made by atlas's ObjectStorage (and the ranges each asked for)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, str, int]] = []
        for fn in ("get", "get_range", "get_ranges"):
            real = getattr(atlas_object.obstore, fn)
            monkeypatch.setattr(atlas_object.obstore, fn, self._wrap(fn, real))

    def _wrap(self, fn, real):
        def counted(store, path, *args, **kwargs):
            n = len(kwargs["starts"]) if fn == "get_ranges" else 1
            self.calls.append((fn, path, n))
            return real(store, path, *args, **kwargs)

        return counted


def test_s3_stacked_read_across_200_datasets_costs_a_handful_of_requests(moto_server, s3_store, s3_bucket,
                                                                         monkeypatch):
    n = 200
    rng = np.random.default_rng(7)
    # random float32 is incompressible: each (1, 64, 64) chunk is a 16 KiB frame of its own, and the
    # chunks the read wants lie 80 KiB apart in the segment (too far for atlas to merge them itself)
    data = rng.random((n, 6, 64, 64), dtype=np.float32)
    with Atlas.create(s3_store) as st:
        for k in range(n):
            ds = st.create_dataset(f"d{k:03d}")
            ds.define_array("temp", "float32", ["t", "y", "x"], [6, 64, 64], [1, 64, 64])
            ds.write_array("temp", [0, 0, 0], data[k])
    segs = [m["path"] for batch in obstore.list(s3_store) for m in batch if m["path"].endswith(".seg")]
    assert len(segs) == 1  # written in one flush: one segment

    names = [f"d{k:03d}" for k in range(n)]
    counter = _CallCounter(monkeypatch)
    reader = Atlas.open(moto_server.s3_store(s3_bucket, prefix="atlas/store"))
    moto_server.log.clear()
    counter.calls.clear()
    got = reader.read_array_across_stacked("temp", names, [2, 0, 0], [1, 64, 64])
    assert_same(got, data[:, 2:3])
    seg_calls = [c for c in counter.calls if c[1].endswith(".seg")]
    assert 1 <= len(seg_calls) <= 3, counter.calls  # index footer + coalesced chunk ranges: not N
    assert sum(c[2] for c in seg_calls) >= 2  # the ranges really went through get_ranges/get_range
    http = moto_server.log.requests("GET", ".seg")
    assert 1 <= len(http) <= 6, http  # HTTP requests moto actually served (obstore merges nearby ranges)
    assert all(status in (200, 206) for *_, status in http)

    # the second stacked read on the same handle (index cached): one call, still not N
    counter.calls.clear()
    moto_server.log.clear()
    got = reader.read_array_across_stacked("temp", names[::3], [5, 10, 0], [1, 20, 64])
    assert_same(got, data[::3, 5:6, 10:30])
    assert len([c for c in counter.calls if c[1].endswith(".seg")]) == 1, counter.calls
    assert 1 <= len(moto_server.log.requests("GET", ".seg")) <= 6


def test_s3_stacked_read_over_two_flushes_is_a_handful_per_segment(moto_server, s3_store, monkeypatch):
    rng = np.random.default_rng(8)
    data = rng.random((60, 6, 64, 64), dtype=np.float32)
    st = Atlas.create(s3_store)
    for half in (range(0, 30), range(30, 60)):
        for k in half:
            ds = st.create_dataset(f"d{k}")
            ds.define_array("v", "float32", ["t", "y", "x"], [6, 64, 64], [1, 64, 64])
            ds.write_array("v", [0, 0, 0], data[k])
        st.flush()
    reader = Atlas.open(s3_store)
    counter = _CallCounter(monkeypatch)
    got = reader.read_array_across_stacked("v", [f"d{k}" for k in range(60)], [3, 0, 0], [1, 64, 64])
    assert_same(got, data[:, 3:4])
    seg_calls = [c for c in counter.calls if c[1].endswith(".seg")]
    assert len({c[1] for c in seg_calls}) == 2
    assert len(seg_calls) <= 2 * 3, seg_calls  # index + data per segment; the index lives in the newest one


# ============================================================================ read-only HTTP
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _RangeHandler(BaseHTTPRequestHandler):
    """GET (whole file, or one byte range -> 206) and HEAD over a directory; every write is 405."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _record(self):
        with self.server.lock:
            self.server.requests.append((self.command, self.path, self.headers.get("Range")))

    def _empty(self, code, extra=()):
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body):
        self._record()
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        full = os.path.realpath(os.path.join(self.server.root, rel))
        if "//" in rel or not full.startswith(self.server.root + os.sep) or not os.path.isfile(full):
            return self._empty(404)  # keys are literal, like an object store's (no '//' merging)
        st = os.stat(full)
        size, start, end, code = st.st_size, 0, st.st_size, 200
        rng = self.headers.get("Range")
        if rng is not None:
            m = _RANGE.match(rng.strip())
            if not m or not (m[1] or m[2]):
                return self._empty(400)  # multi-range requests are not served (obstore never sends them)
            if m[1]:
                start, end = int(m[1]), (min(size, int(m[2]) + 1) if m[2] else size)
            else:
                start = max(0, size - int(m[2]))
            if start >= size or end <= start:
                return self._empty(416, [("Content-Range", f"bytes */{size}")])
            code = 206
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("ETag", f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{size:x}"')
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if body:
            with open(full, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start))

    def _refuse(self):
        self._record()
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self._empty(405)

    do_PUT = do_POST = do_DELETE = do_PATCH = do_PROPFIND = do_MKCOL = do_COPY = do_MOVE = _refuse


class RangeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root):
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = os.path.realpath(root)
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        self._thread.join()


def test_http_store_is_read_only_and_reads_everything(tmp_path):
    path = tmp_path / "site" / "store"
    expect = {}
    with Atlas.create(str(path)) as st:
        for k in range(3):
            expect[f"d{k}"] = fill_dataset(st, f"d{k}", k)
        st.add_xr_dataset(sample_xr(), "xr", chunks=XR_CHUNKS)
    local = Atlas.open(str(path))
    files_before = sorted(p.relative_to(path) for p in path.rglob("*"))

    with RangeHTTPServer(tmp_path / "site") as srv:
        http = HTTPStore.from_url(f"{srv.url}/store", client_options={"allow_http": True},
                                  retry_config={"max_retries": 1})
        st = Atlas.open(http)
        assert st.list_datasets() == local.list_datasets()
        for k in range(3):
            check_dataset(st, f"d{k}", expect[f"d{k}"], k)
        names = ["d0", "d1", "d2"]
        assert_same(st.read_array_across_stacked("temp", names, [0, 3, 4], [6, 10, 20]),
                    local.read_array_across_stacked("temp", names, [0, 3, 4], [6, 10, 20]))
        assert_same(st.read_array_across_stacked("label", names), local.read_array_across_stacked("label", names))
        assert st.open_dataset("d1").array_stats("temp") == local.open_dataset("d1").array_stats("temp")
        xr.testing.assert_identical(st.to_xarray("xr", chunks=None), sample_xr())
        lazy = st.to_xarray("xr")
        assert isinstance(lazy["temp"].data, da.Array)
        xr.testing.assert_identical(lazy.compute(), sample_xr())

        ranged = [r for r in srv.requests if r[0] == "GET" and r[2] is not None]
        assert ranged and all(re.fullmatch(r"bytes=\d+-\d+", r[2]) for r in ranged)  # one range per request

        # writing: the flush is refused and nothing reaches the server
        d = st.open_dataset("d0")
        d.set_attribute("n", -1)
        st.create_dataset("new")
        with pytest.raises(PermissionError, match="read-only"):
            st.flush()
        with pytest.raises(PermissionError):
            st.compact()
        with pytest.raises(PermissionError):
            Atlas.create(HTTPStore.from_url(f"{srv.url}/elsewhere", client_options={"allow_http": True}))
        with pytest.raises(FileExistsError):
            Atlas.create(http)
        with pytest.raises(FileNotFoundError):
            Atlas.open(HTTPStore.from_url(f"{srv.url}/elsewhere", client_options={"allow_http": True}))
        assert {m for m, _, _ in srv.requests} <= {"GET", "HEAD"}, srv.requests
        # ... and the handle keeps working for reads (its pending changes included)
        assert st.list_datasets() == ["d0", "d1", "d2", "xr", "new"]
        assert d.get_attribute("n") == -1
        assert_same(st.open_dataset("d2").read_array("temp"), expect["d2"]["temp"])
        assert Atlas.open(http).open_dataset("d0").get_attribute("n") == 42
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == files_before


# ============================================================================ dask.distributed
@pytest.fixture(scope="module")
def process_cluster():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    # dashboard_address=None still starts the scheduler's HTTP server on the default port 8787; when
    # another process holds it, distributed warns ("Port 8787 is already in use") and tornado leaks
    # the failed socket (ResourceWarning), both errors under filterwarnings=error. A loopback
    # address with port 0 binds a free port instead (no dashboard is served: bokeh is not needed).
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address="127.0.0.1:0") as c:
        yield c


def _read_temp_in_worker(view):
    return os.getpid(), view.read_array("temp")


@pytest.mark.parametrize("kind", ["s3", "localstore"])
def test_distributed_process_cluster_computes_lazy_reads(process_cluster, kind, request, tmp_path):
    import distributed

    if kind == "s3":
        b = Backend(kind, tmp_path, request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket"))
    else:
        b = Backend(kind, tmp_path)
    src = sample_xr()
    with Atlas.create(b.source()) as st:
        st.add_xr_dataset(src, "xr", chunks=XR_CHUNKS)
        st.add_xr_dataset(sample_xr(1), "xr1", chunks=XR_CHUNKS)
    st = Atlas.open(b.source())
    lazy = st.to_xarray("xr")
    lazy_many = st.to_xarray_many(["xr", "xr1"], chunks="auto")
    with distributed.Client(process_cluster) as client:
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids  # really other processes
        if kind == "s3":
            b.moto.log.clear()
        xr.testing.assert_identical(lazy.compute(), src)
        if kind == "s3":
            assert b.moto.log.requests("GET", ".seg")  # the workers read from S3 themselves
        xr.testing.assert_identical(lazy_many.compute(), st.to_xarray_many(["xr", "xr1"]))
        # a dataset view travels to a worker too
        pid, temp = client.submit(_read_temp_in_worker, st.open_dataset("xr1"), pure=False).result()
        assert pid in pids
        assert_same(temp, sample_xr(1)["temp"].values)


# ============================================================================ misc
def test_io_concurrency_is_configurable_and_defaults_above_the_core_count(s3_store, monkeypatch):
    from atlas.storage import storage_for

    monkeypatch.delenv("ATLAS_IO_CONCURRENCY", raising=False)
    assert storage_for(s3_store, create=False).io_concurrency >= 8  # sized for network latency, not 2 cores
    rng = np.random.default_rng(3)
    data = rng.random((4, 128, 256), dtype=np.float32)  # 128 KiB chunks: too big for the frame cache
    st = Atlas.create(s3_store)
    for k in range(4):  # four flushes: four segments
        ds = st.create_dataset(f"d{k}")
        ds.define_array("v", "float32", ["y", "x"], [128, 256], [128, 256])
        ds.write_array("v", [0, 0], data[k])
        st.flush()
    seen: list[str] = []
    real = atlas_object.ObjectStorage.read_ranges

    def spy(self, path, starts, ends):
        if path.endswith(".seg"):
            seen.append(threading.current_thread().name)
        return real(self, path, starts, ends)

    monkeypatch.setattr(atlas_object.ObjectStorage, "read_ranges", spy)
    for n, pooled in (("1", False), ("3", True)):
        monkeypatch.setenv("ATLAS_IO_CONCURRENCY", n)
        reader = Atlas.open(s3_store)
        assert reader._storage.io_concurrency == int(n)
        reader.read_array_across_stacked("v", ["d0"])  # loads the index (newest segment)
        seen.clear()
        assert_same(reader.read_array_across_stacked("v", ["d0", "d1", "d2", "d3"]), data)
        assert len(seen) == 4  # one range read per segment
        assert all(t.startswith("atlas-io") for t in seen) == pooled, seen
        assert any(t.startswith("atlas-io") for t in seen) == pooled, seen


def test_store_handle_without_obstore_raises_import_error_naming_the_extra(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['obstore'] = None  # as if obstore were not installed\n"
        "import numpy as np, atlas\n"
        f"st = atlas.Atlas.create({str(tmp_path / 'local')!r})  # paths keep working\n"
        "st.create_dataset('d'); st.flush()\n"
        "assert atlas.Atlas.open({0!r}).list_datasets() == ['d']\n".format(str(tmp_path / "local"))
        + "S3Store = type('S3Store', (), {'__module__': 'obstore.store'})\n"
        "try:\n"
        "    atlas.Atlas.open(S3Store())\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORTERROR:" in out.stdout and "atlas-python[cloud]" in out.stdout, out.stdout


# ============================================================================ the example
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "08_object_store.py")


@pytest.mark.parametrize("where", ["localstore", "s3"])
def test_example_08_runs(where, request):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_EXAMPLE_")}
    if where == "s3":
        moto, bucket = request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket")
        env.update(ATLAS_EXAMPLE_S3_BUCKET=bucket, ATLAS_EXAMPLE_S3_ENDPOINT=moto.endpoint,
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    out = subprocess.run([sys.executable, "-W", "error", EXAMPLE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("ok")
    assert ("backend: S3 s3://" if where == "s3" else "backend: LocalStore") in out.stdout
    if where == "s3":  # the example removed what it wrote
        assert not [m for batch in obstore.list(moto.s3_store(bucket)) for m in batch]
