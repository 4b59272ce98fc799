"""Growing and shrinking arrays (resize_array / append_array), padded stacked reads, and flush costs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlas

_NP = {"float32": np.float32, "int16": np.int16, "uint8": np.uint8, "string": object,
       "timestamp_nanoseconds": np.int64}


class ModelArray:
    """What an array should hold: values, which cells were written, and the fill."""

    def __init__(self, dtype: str, shape: tuple[int, ...], fill) -> None:
        self.dtype, self.fill = dtype, fill
        self.default = {"string": "", "timestamp_nanoseconds": np.iinfo(np.int64).min}.get(dtype, 0) if fill is None else fill
        self.data = np.full(shape, self.default, dtype=_NP[dtype])
        self.written = np.zeros(shape, bool)

    def resize(self, shape: tuple[int, ...]) -> None:
        data = np.full(shape, self.default, dtype=_NP[self.dtype])
        written = np.zeros(shape, bool)
        box = tuple(slice(0, min(a, b)) for a, b in zip(self.data.shape, shape))
        data[box] = self.data[box]
        written[box] = self.written[box]
        self.data, self.written = data, written

    def write(self, start, vals) -> None:
        box = tuple(slice(s, s + n) for s, n in zip(start, vals.shape))
        self.data[box] = vals
        self.written[box] = True

    def stats(self) -> tuple[int, int, object, object]:
        vals = self.data[self.written]
        if self.fill is not None:
            vals = vals[vals != self.fill]
        if vals.size == 0:
            return self.data.size, self.data.size, None, None
        return self.data.size, self.data.size - vals.size, min(vals.tolist()), max(vals.tolist())


def _values(dtype: str, shape, seed: int) -> np.ndarray:
    n = int(np.prod(shape))
    base = (np.arange(n) * 7 + seed * 13) % 97 + 1
    if dtype == "string":
        return np.array([f"v{x}" for x in base.tolist()], dtype=object).reshape(shape)
    return base.astype(_NP[dtype]).reshape(shape)


def _user(dtype: str, arr: np.ndarray) -> np.ndarray:
    return arr.view("datetime64[ns]") if dtype == "timestamp_nanoseconds" else arr


def _check(ds, name: str, model: ModelArray, flushed: bool, where: str) -> None:
    got = ds.read_array(name)
    assert ds.array_meta(name)["shape"] == list(model.data.shape), where
    np.testing.assert_array_equal(got, _user(model.dtype, model.data), err_msg=where)
    if flushed:
        s = ds.array_stats(name)
        rc, nc, mn, mx = model.stats()
        assert (s["row_count"], s["null_count"]) == (rc, nc), f"{where}: {s} vs {(rc, nc, mn, mx)}"
        if model.dtype == "timestamp_nanoseconds":
            mn = None if mn is None else np.datetime64(mn, "ns")
            mx = None if mx is None else np.datetime64(mx, "ns")
        assert (s["min"], s["max"]) == (mn, mx), f"{where}: {s} vs {(rc, nc, mn, mx)}"


_op = st.one_of(
    st.tuples(st.just("resize"), st.lists(st.integers(0, 9), min_size=2, max_size=2)),
    st.tuples(st.just("append"), st.integers(0, 1), st.integers(1, 4), st.integers(0, 99)),
    st.tuples(st.just("write"), st.lists(st.integers(0, 8), min_size=2, max_size=2),
              st.lists(st.integers(1, 3), min_size=2, max_size=2), st.integers(0, 99)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=int(os.environ.get("ATLAS_APPEND_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["float32", "int16", "string", "timestamp_nanoseconds", "uint8"]),
       fill=st.booleans(), shape=st.lists(st.integers(0, 6), min_size=2, max_size=2),
       chunk=st.lists(st.integers(1, 4), min_size=2, max_size=2), ops=st.lists(_op, max_size=12))
def test_resize_append_against_numpy_model(tmp_path_factory, dtype, fill, shape, chunk, ops):
    path = str(tmp_path_factory.mktemp("s") / "store")
    a = atlas.Atlas.create(path)
    ds = a.create_dataset("d")
    fv = {"string": "-", "float32": -1.0, "int16": -1, "uint8": 255, "timestamp_nanoseconds": 5}[dtype] if fill else None
    ds.define_array("x", dtype, ["i", "j"], shape, chunk, fv)
    model = ModelArray(dtype, tuple(shape), fv)
    flushed = False
    for k, op in enumerate(ops):
        where = f"op {k} {op[:3]}"
        if op[0] == "resize":
            ds.resize_array("x", op[1])
            model.resize(tuple(op[1]))
            flushed = False
        elif op[0] == "append":
            _, axis, n, seed = op
            sh = list(model.data.shape)
            sh[axis] = n
            vals = _values(dtype, sh, seed)
            ds.append_array("x", _user(dtype, vals), axis=axis)
            start = [0, 0]
            start[axis] = model.data.shape[axis]
            model.resize(tuple(s + (n if d == axis else 0) for d, s in enumerate(model.data.shape)))
            model.write(start, vals)
            flushed = False
        elif op[0] == "write":
            _, start, count, seed = op
            count = [max(0, min(c, s - st_)) for c, s, st_ in zip(count, model.data.shape, start)]
            if any(st_ > s for st_, s in zip(start, model.data.shape)) or 0 in count:
                continue
            vals = _values(dtype, count, seed)
            ds.write_array("x", start, _user(dtype, vals))
            model.write(start, vals)
            flushed = False
        elif op[0] == "flush":
            a.flush()
            flushed = True
        else:
            a.flush()
            a = atlas.Atlas.open(path)
            ds = a.open_dataset("d")
            flushed = True
        _check(ds, "x", model, flushed, where)
    a.flush()
    _check(ds, "x", model, True, "end")
    assert a.verify() == []
    a.compact()
    b = atlas.Atlas.open(path)
    _check(b.open_dataset("d"), "x", model, True, "after compact")


# --------------------------------------------------------------------------- deterministic cases
@pytest.fixture
def store(tmp_path):
    return atlas.Atlas.create(str(tmp_path / "s"))


def test_append_array_errors_leave_the_array_unchanged(store):
    ds = store.create_dataset("d")
    ds.define_array("x", "float32", ["t", "k"], [2, 3], [4, 2])
    ds.write_array("x", [0, 0], np.ones((2, 3), np.float32))
    before = ds.read_array("x")
    with pytest.raises(TypeError, match="'x'"):
        ds.append_array("x", np.ones((1, 3), np.float64))
    with pytest.raises(ValueError, match=r"axis 1 \('k'\) must be 3"):
        ds.append_array("x", np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        ds.append_array("x", np.ones((1, 3), np.float32), axis=2)
    with pytest.raises(TypeError, match="axis"):
        ds.append_array("x", np.ones((1, 3), np.float32), axis="t")
    with pytest.raises(ValueError, match="rank"):
        ds.resize_array("x", [3])
    with pytest.raises(KeyError, match="'nope'"):
        ds.resize_array("nope", [3])
    with pytest.raises(ValueError, match="negative"):
        ds.resize_array("x", [-1, 3])
    assert ds.array_meta("x")["shape"] == [2, 3]
    np.testing.assert_array_equal(ds.read_array("x"), before)
    ds.append_array("x", np.full((2, 2), 5, np.float32), axis=-1)
    assert ds.array_meta("x")["shape"] == [2, 5]


def test_shrunk_cells_never_come_back_and_chunks_are_dropped(store, tmp_path):
    ds = store.create_dataset("d")
    ds.define_array("x", "int64", ["t"], [20], [4], fill_value=-1)
    ds.write_array("x", [0], np.arange(20, dtype=np.int64))
    store.flush()
    ds.resize_array("x", [6])  # cuts chunk 1 at 6, drops chunks 2..4
    assert ds.array_stats("x") is None  # until the next flush
    store.flush()
    assert ds.array_stats("x") == {"row_count": 6, "null_count": 0, "min": 0, "max": 5}
    ds.resize_array("x", [20])
    exp = np.full(20, -1, np.int64)
    exp[:6] = np.arange(6)
    np.testing.assert_array_equal(ds.read_array("x"), exp)
    store.flush()
    assert ds.array_stats("x") == {"row_count": 20, "null_count": 14, "min": 0, "max": 5}
    b = atlas.Atlas.open(str(tmp_path / "s"))
    np.testing.assert_array_equal(b.open_dataset("d").read_array("x"), exp)
    assert b.verify() == []


@pytest.mark.parametrize("budget", ["0", None])
def test_rekey_of_pending_and_stored_chunks(tmp_path, monkeypatch, budget):
    if budget is not None:
        monkeypatch.setenv("ATLAS_PENDING_BUDGET", budget)  # every pending payload spilled
    a = atlas.Atlas.create(str(tmp_path / "s"))
    ds = a.create_dataset("d")
    ds.define_array("x", "float64", ["a", "b"], [3, 5], [2, 2])
    full = np.arange(15, dtype=np.float64).reshape(3, 5)
    ds.write_array("x", [0, 0], np.ascontiguousarray(full[:, :3]))
    a.flush()
    ds.write_array("x", [0, 3], np.ascontiguousarray(full[:, 3:]))  # pending chunks, then a growth of axis 1 re-keys both kinds
    ds.append_array("x", np.full((3, 2), 9.0), axis=1)
    exp = np.concatenate([full, np.full((3, 2), 9.0)], 1)
    np.testing.assert_array_equal(ds.read_array("x"), exp)
    a.flush()
    np.testing.assert_array_equal(atlas.Atlas.open(str(tmp_path / "s")).open_dataset("d").read_array("x"), exp)
    assert ds.array_stats("x")["null_count"] == 0
    a.compact()
    np.testing.assert_array_equal(atlas.Atlas.open(str(tmp_path / "s")).open_dataset("d").read_array("x"), exp)


def test_one_chunk_array_with_default_chunking_grows_in_chunks_of_its_first_shape(store):
    ds = store.create_dataset("d")
    ds.define_array("x", "float32", ["t"], [4])  # chunk_shape defaults to [4]
    ds.write_array("x", [0], np.arange(4, dtype=np.float32))
    store.flush()
    ds.append_array("x", np.arange(4, 10, dtype=np.float32))
    assert ds.array_meta("x") == {"dtype": "float32", "shape": [10], "chunk_shape": [4], "dimension_names": ["t"]}
    store.flush()
    np.testing.assert_array_equal(ds.read_array("x"), np.arange(10, dtype=np.float32))
    ds.define_array("y", "int16", ["t"], [3], [8])  # chunk larger than the shape: growth re-lays the chunk
    ds.write_array("y", [0], np.array([1, 2, 3], np.int16))
    store.flush()
    ds.append_array("y", np.array([4, 5, 6, 7, 8, 9, 10], np.int16))
    store.flush()
    np.testing.assert_array_equal(ds.read_array("y"), np.arange(1, 11, dtype=np.int16))
    assert ds.array_stats("y") == {"row_count": 10, "null_count": 0, "min": 1, "max": 10}


def test_many_datasets_one_flush_one_segment_per_array_name(tmp_path):
    path = tmp_path / "s"
    with atlas.Atlas.create(str(path)) as a:
        for i in range(40):
            ds = a.create_dataset(f"st{i}")
            ds.define_array("temp", "float32", ["time"], [10], [4])
            ds.define_array("flag", "string", ["time"], [10], [4])
            ds.write_array("temp", [0], np.arange(10, dtype=np.float32))
            ds.write_array("flag", [0], np.array(["ok"] * 10, dtype=object))
    segs = lambda: sorted(str(p) for p in path.rglob("*.seg"))  # noqa: E731
    before = segs()
    with atlas.Atlas.open(str(path)) as a:
        for i in range(40):
            ds = a.open_dataset(f"st{i}")
            ds.append_array("temp", np.array([i, i + 1], np.float32))
            ds.append_array("flag", np.array(["new", "new"], dtype=object))
    assert len(set(segs()) - set(before)) == 2
    a = atlas.Atlas.open(str(path))
    for i in (0, 39):
        ds = a.open_dataset(f"st{i}")
        np.testing.assert_array_equal(ds.read_array("temp")[-3:], np.array([9, i, i + 1], np.float32))
        assert ds.read_array("flag")[-3:].tolist() == ["ok", "new", "new"]
        assert ds.array_stats("flag") == {"row_count": 12, "null_count": 0, "min": "new", "max": "ok"}
    assert a.verify() == []


# --------------------------------------------------------------------------- padded stacked reads
def test_padded_stacked_read_fills_per_dtype(store):
    lens = [3, 5, 0]
    for i, n in enumerate(lens):
        ds = store.create_dataset(f"d{i}")
        ds.define_array("f", "float32", ["t"], [n], [2])
        ds.define_array("g", "int32", ["t"], [n], [2], fill_value=-9 if i == 0 else None)
        ds.define_array("ts", "timestamp_nanoseconds", ["t"], [n], [2])
        ds.define_array("s", "string", ["t"], [n], [2])
        ds.write_array("f", [0], np.arange(n, dtype=np.float32))
        ds.write_array("g", [0], np.arange(n, dtype=np.int32))
        ds.write_array("ts", [0], np.arange(n).astype("datetime64[ns]"))
        ds.write_array("s", [0], np.array(["a"] * n, dtype=object))
    names = ["d0", "d1", "d2"]
    with pytest.raises(ValueError, match="'d1'"):
        store.read_array_across_stacked("f", names)  # strict by default
    f = store.read_array_across_stacked("f", names, pad=True)
    assert f.shape == (3, 5)
    np.testing.assert_array_equal(f[0], [0, 1, 2, np.nan, np.nan])
    assert np.isnan(f[2]).all()
    g = store.read_array_across_stacked("g", names, pad=True)
    assert g[0].tolist() == [0, 1, 2, -9, -9] and g[2].tolist() == [0] * 5
    ts = store.read_array_across_stacked("ts", names, pad=True)
    assert np.isnat(ts[0, 3:]).all() and not np.isnat(ts[1]).any()
    s = store.read_array_across_stacked("s", names, pad=True)
    assert s[0].tolist() == ["a", "a", "a", "", ""]
    part = store.read_array_across_stacked("f", names, [2], [2], pad=True)
    np.testing.assert_array_equal(part, [[2, np.nan], [2, 3], [np.nan, np.nan]])
    store.create_dataset("d3").define_array("f", "float32", ["t", "u"], [2, 2])
    with pytest.raises(ValueError, match="'d3'"):
        store.read_array_across_stacked("f", names + ["d3"], pad=True)


# --------------------------------------------------------------------------- xarray
def _day(i: int, n: int = 3, station: str = "A"):
    import pandas as pd
    import xarray as xr

    t = pd.date_range("2024-01-01", periods=n, freq="D").values.astype("datetime64[ns]") + np.timedelta64(i, "D")
    return xr.Dataset({"temp": ("time", np.arange(n, dtype="float32") + i),
                       "levels": ("level", np.array([1.0, 2.0])),
                       "code": ("time", np.array([f"c{i + k}" for k in range(n)], dtype=object))},
                      coords={"time": t, "level": [10, 20]}, attrs={"station": station})


def _snapshot(store, name):
    ds = store.open_dataset(name)
    return {v: (ds.array_meta(v), ds.read_array(v)) for v in ds.list_arrays()}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0] == b[k][0], k
        np.testing.assert_array_equal(a[k][1], b[k][1], err_msg=k)


def test_xarray_append_dim_extends_and_round_trips(store):
    import xarray as xr

    store.add_xr_dataset(_day(0), "st", chunks={"temp": [4], "time": [4], "code": [4]})
    store.add_xr_dataset(_day(3), "st", append_dim="time")
    _day(6, 2).atlas.write(store, "st", append_dim="time")
    store.add_xr_dataset(_day(0, 2), "new", append_dim="time")  # absent: created as usual
    got = store.to_xarray("st", chunks=None)
    exp = xr.concat([_day(0), _day(3), _day(6, 2)], dim="time", data_vars="minimal")
    xr.testing.assert_identical(got, exp)
    store.flush()
    xr.testing.assert_identical(store.to_xarray("st"), exp)
    assert store.open_dataset("st").array_stats("temp")["row_count"] == 8


def test_xarray_append_dask_backed(store):
    import xarray as xr

    store.add_xr_dataset(_day(0, 5), "st", chunks={"temp": [2], "time": [2], "code": [2]})
    store.add_xr_dataset(_day(5, 7).chunk({"time": 3}), "st", append_dim="time")
    exp = xr.concat([_day(0, 5), _day(5, 7)], dim="time", data_vars="minimal")
    xr.testing.assert_identical(store.to_xarray("st", chunks=None), exp)


@pytest.mark.parametrize("bad, match", [
    (lambda: _day(2), r"new value .*2024-01-03.* repeats the value before it"),
    (lambda: _day(-5), r"goes back before"),
    (lambda: _day(3).assign(levels=("level", np.array([1.0, 3.0]))), r"\['levels'\] have no dimension 'time'"),
    (lambda: _day(3).assign(temp=_day(3).temp.astype("float64")), r"variable 'temp' is float64, stored as float32"),
    (lambda: _day(3).drop_vars("code"), r"missing: \['code'\]"),
    (lambda: _day(3).assign(extra=("time", np.zeros(3))), r"not stored: \['extra'\]"),
    (lambda: _day(3).rename({"time": "when"}), r"append_dim 'time' is not a dimension"),
    (lambda: _day(3).assign(temp=_day(3).temp.assign_attrs(_FillValue=np.float32(-1))), r"'temp' has the fill value"),
])
def test_refused_xarray_append_leaves_the_dataset_as_it_was(store, bad, match):
    store.add_xr_dataset(_day(0), "st")
    store.flush()
    before = _snapshot(store, "st")
    with pytest.raises(ValueError, match=match):
        store.add_xr_dataset(bad(), "st", append_dim="time")
    _same(_snapshot(store, "st"), before)
    assert store._state.pending_count() == (0, 0)  # nothing changed, nothing to flush


def test_xarray_append_failing_midway_is_undone(store, monkeypatch):
    from atlas.integrations import _append

    store.add_xr_dataset(_day(0), "st")
    store.flush()
    before = _snapshot(store, "st")
    calls = []
    real = _append._write_at

    def flaky(view, v, *args):
        calls.append(v)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(view, v, *args)

    monkeypatch.setattr(_append, "_write_at", flaky)
    with pytest.raises(OSError, match="disk gone"):
        store.add_xr_dataset(_day(3), "st", append_dim="time")
    _same(_snapshot(store, "st"), before)
    store.flush()
    _same(_snapshot(store, "st"), before)


def test_to_xarray_many_pad(store):
    store.add_xr_dataset(_day(0, 5), "a")
    store.add_xr_dataset(_day(0, 2), "b")
    with pytest.raises(ValueError):
        store.to_xarray_many(["a", "b"])
    x = store.to_xarray_many(["a", "b"], pad=True)
    assert x.sizes["time"] == 5 and x.time.values.tolist() == _day(0, 5).time.values.tolist()
    np.testing.assert_array_equal(x.temp.values[1], [0, 1, np.nan, np.nan, np.nan])
    assert x.code.values[1].tolist() == ["c0", "c1", "", "", ""]
    lengths = [store.open_dataset(n).array_meta("temp")["shape"][0] for n in ["a", "b"]]
    assert lengths == [5, 2]
    with pytest.raises(ValueError, match="chunks=None"):
        store.to_xarray_many(["a", "b"], pad=True, chunks="auto")


def test_growth_of_a_store_written_before_edge_masks(tmp_path):
    # the golden stores' "time" (6,) in chunks of (4,), no fill: its edge chunk was written
    # without a written-cells mask; growing must still count the new cells as unwritten
    import shutil
    from pathlib import Path

    path = tmp_path / "g"
    shutil.copytree(Path(__file__).parent / "data" / "v1_json", path)
    a = atlas.Atlas.open(str(path))
    ds = a.open_dataset("alpha")
    old = ds.read_array("time")
    ds.resize_array("time", [9])  # cells 6 and 7 were the edge chunk's padding
    ds.write_array("time", [6], np.array(["2030-01-01"], dtype="datetime64[ns]"))  # the chunk is rewritten
    a.flush()
    st = ds.array_stats("time")
    assert (st["row_count"], st["null_count"]) == (9, 2)  # cells 7 and 8 were never written
    assert st["max"] == np.datetime64("2030-01-01", "ns")
    np.testing.assert_array_equal(ds.read_array("time")[:6], old)
    assert np.isnat(ds.read_array("time")[7:]).all()
    assert a.verify() == []
