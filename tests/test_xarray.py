"""xarray / dask integration: mapping, exact round trips, streaming writes, lazy reads,
pickling + dask.distributed, the engine="atlas" backend."""

from __future__ import annotations

import collections
import copy
import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap


import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import atlas
from atlas import Atlas
from atlas import _read
from atlas._frames import FrameReader
from atlas.storage import LocalStorage

HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])


# ================================================================== helpers
def _files(path) -> dict[str, bytes]:
    """Every file under a store directory with its content (to prove nothing was written)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out


def _write(store: Atlas, ds: xr.Dataset, name: str, via: str, chunks=None) -> None:
    if via == "store":
        store.add_xr_dataset(ds, name, chunks=chunks)
    else:
        ds.atlas.write(store, name, chunks=chunks)


def assert_round_trip(ds: xr.Dataset, path, via: str = "both", chunks=None) -> Atlas:
    """Write ``ds`` (both routes), check identity before flush, after flush and after reopen,
    lazily and eagerly. Returns the reopened store."""
    routes = ["store", "accessor"] if via == "both" else [via]
    store = Atlas.create(path)
    for r in routes:
        _write(store, ds, r, r, chunks)
    for r in routes:
        xr.testing.assert_identical(store.to_xarray(r), ds)
    store.flush()
    for r in routes:
        xr.testing.assert_identical(store.to_xarray(r), ds)
    reopened = Atlas.open(path)
    for r in routes:
        xr.testing.assert_identical(reopened.to_xarray(r), ds)
        xr.testing.assert_identical(reopened.to_xarray(r, chunks=None), ds)
    return reopened


class Counter:
    """Counts engine reads per array name, frames decoded and storage range reads."""

    def __init__(self, monkeypatch):
        self.c = collections.Counter()
        read, decode, ranges = _read.read, FrameReader.decode, LocalStorage.read_ranges
        c = self.c

        def counted_read(view, name, *a, **k):
            c["read:" + name] += 1
            return read(view, name, *a, **k)

        def counted_decode(fr, *a, **k):
            c["decode"] += 1
            return decode(fr, *a, **k)

        def counted_ranges(stor, path, starts, ends):
            c["ranges"] += 1
            return ranges(stor, path, starts, ends)

        monkeypatch.setattr(_read, "read", counted_read)
        monkeypatch.setattr(FrameReader, "decode", counted_decode)
        monkeypatch.setattr(LocalStorage, "read_ranges", counted_ranges)

    def __getitem__(self, k):
        return self.c[k]

    def clear(self):
        self.c.clear()

    def total_reads(self):
        return sum(v for k, v in self.c.items() if k.startswith("read:")) + self.c["ranges"]


def sample_ds() -> xr.Dataset:
    return xr.Dataset(
        data_vars={
            "temperature": (["lat", "lon"], np.arange(8 * 16, dtype=np.float32).reshape(8, 16),
                            {"units": "C", "long_name": "surface temperature", "_FillValue": np.float32(-9.0),
                             "flags": [1, 2, 3], "valid_range": np.array([-50.0, 50.0]), "meta": {"a": 1, "b": [1, 2]}}),
            "name": (["lat"], np.array([f"s{i}" for i in range(8)])),
        },
        coords={"lat": np.arange(8, dtype=np.float32), "lon": np.arange(16, dtype=np.float32),
                "time": np.array("2024-01-01T00:00", dtype="datetime64[ns]")},
        attrs={"month": 1, "station": "KNMI", "history": "made", "source.file": "x.nc"},
    )


# ================================================================== 1. mapping
def test_accessor_registered_on_import():
    assert "atlas" in dir(xr.Dataset({}))
    assert hasattr(xr.Dataset({}).atlas, "write")


@pytest.mark.parametrize("via", ["store", "accessor"])
def test_mapping_visible_through_attributes(tmp_path, via):
    ds = sample_ds()
    ds.attrs["a.b"] = 2.5
    store = Atlas.create(tmp_path / "s")
    _write(store, ds, "d", via)
    view = store.open_dataset("d")
    attrs = view.attributes()
    # dataset attrs: plain keys
    assert attrs["month"] == 1 and attrs["station"] == "KNMI" and attrs["history"] == "made" and attrs["a.b"] == 2.5
    assert attrs["source.file"] == "x.nc"
    # variable attrs: "{var}.{attr}"
    assert attrs["temperature.units"] == "C"
    assert attrs["temperature.long_name"] == "surface temperature"
    # _FillValue: the typed fill value of the array, not an attribute
    assert "temperature._FillValue" not in attrs and "_FillValue" not in attrs
    assert view.array_fill_value("temperature") == -9.0
    assert isinstance(view.array_fill_value("temperature"), float)
    assert view.array_fill_value("name") is None
    # coordinate names: a JSON list
    assert sorted(json.loads(attrs["_pyatlas_coords"])) == ["lat", "lon", "time"]
    # list / ndarray / dict attribute values: "json:"-prefixed strings
    for key, expected in [("temperature.flags", [1, 2, 3]), ("temperature.valid_range", [-50.0, 50.0]),
                          ("temperature.meta", {"a": 1, "b": [1, 2]})]:
        assert isinstance(attrs[key], str) and attrs[key].startswith("json:"), key
        assert json.loads(attrs[key][len("json:"):]) == expected, key
    # nothing else but internal bookkeeping
    plain = {k for k in attrs if not k.startswith("_pyatlas")}
    expected_keys = set(ds.attrs) | {f"temperature.{k}" for k in ds.temperature.attrs if k != "_FillValue"}
    assert plain == expected_keys
    # every coordinate and data variable is an array with its dims
    assert sorted(view.list_arrays()) == sorted(ds.variables)
    for v in ds.variables:
        meta = view.array_meta(v)
        assert meta["dimension_names"] == list(ds[v].dims), v
        assert meta["shape"] == list(ds[v].shape), v
    assert view.array_meta("temperature")["dtype"] == "float32"
    assert view.array_meta("time")["dtype"] == "timestamp_nanoseconds"
    assert view.array_meta("name")["dtype"] == "string"


@pytest.mark.parametrize("via", ["store", "accessor"])
def test_source_dataset_not_mutated(tmp_path, via):
    ds = sample_ds()
    ds["temperature"].encoding["_FillValue"] = np.float32(-9.0)
    ds["lat"].encoding["_FillValue"] = np.float32(np.nan)
    before_ds = copy.deepcopy(ds)
    attrs0 = copy.deepcopy(ds.attrs)
    var_attrs0 = {k: list(v.attrs) for k, v in ds.variables.items()}
    enc0 = {k: copy.deepcopy(v.encoding) for k, v in ds.variables.items()}
    store = Atlas.create(tmp_path / "s")
    _write(store, ds, "d", via)
    assert ds.attrs == attrs0
    assert ds["temperature"].attrs["_FillValue"] == np.float32(-9.0)          # not popped
    assert {k: list(v.attrs) for k, v in ds.variables.items()} == var_attrs0  # same keys, same order
    for k, v in ds.variables.items():
        assert v.encoding.keys() == enc0[k].keys(), k
    assert ds["temperature"].encoding["_FillValue"] == np.float32(-9.0)
    xr.testing.assert_identical(ds, before_ds)  # values and every attr value


def test_add_xr_dataset_never_flushes(tmp_path):
    path = tmp_path / "s"
    store = Atlas.create(path)
    before = _files(path)
    ds = sample_ds()
    for i in range(5):
        store.add_xr_dataset(ds, f"a{i}")
        ds.atlas.write(store, f"b{i}")
        store.add_xr_dataset(ds.chunk({"lat": 3}), f"c{i}")
    assert _files(path) == before
    assert Atlas.open(path).list_datasets() == []
    store.flush()
    assert len(Atlas.open(path).list_datasets()) == 15
    xr.testing.assert_identical(Atlas.open(path).to_xarray("c4"), ds)


def _bad_datasets():
    good = np.arange(4.0)
    return {
        "complex-var": xr.Dataset({"ok": ("x", good), "c": ("x", good + 1j)}),
        "set-attr": xr.Dataset({"ok": ("x", good)}, attrs={"fine": 1, "bad": {1, 2}}),
        "set-var-attr": xr.Dataset({"ok": ("x", good), "v": ("x", good, {"bad": {1, 2}})}),
        "object-attr": xr.Dataset({"ok": ("x", good, {"bad": object()})}),
        "object-ints": xr.Dataset({"ok": ("x", good), "o": ("x", np.array([1, "a", 2, 3], dtype=object))}),
        "dask-complex": xr.Dataset({"ok": ("x", good), "c": ("x", da.from_array(good + 1j, chunks=2))}),
        # str mixed with non-UTF-8 bytes (all-bytes object arrays round-trip as bytes)
        "object-bytes-not-utf8": xr.Dataset({"ok": ("x", good), "s": ("x", np.array(["a", b"\xff", "c", "d"], dtype=object))}),
        "late-failure-after-writes": xr.Dataset(
            {"ok": ("x", good), "big": (("x", "y"), np.ones((4, 100))), "o": ("x", np.array(["a", "b", 3, "d"], dtype=object))}),
    }


@pytest.mark.parametrize("kind", list(_bad_datasets()))
@pytest.mark.parametrize("via", ["store", "accessor"])
def test_rejected_dataset_leaves_nothing_behind(tmp_path, kind, via):
    path = tmp_path / "s"
    store = Atlas.create(path)
    keep = xr.Dataset({"ok": ("x", np.arange(4.0))}, attrs={"n": 1})
    store.add_xr_dataset(keep, "keep")
    store.flush()
    names0, arrays0, files0 = store.list_datasets(), store.list_arrays(), _files(path)
    with pytest.raises((TypeError, ValueError)):
        _write(store, _bad_datasets()[kind], "bad", via)
    assert not store.dataset_exists("bad")
    assert store.list_datasets() == names0
    assert store.list_arrays() == arrays0
    assert _files(path) == files0  # still nothing written
    # the store stays usable; the name is free again; a later flush is fine
    store.add_xr_dataset(keep, "bad")
    store.flush()
    re = Atlas.open(path)
    assert re.list_datasets() == ["keep", "bad"]
    xr.testing.assert_identical(re.to_xarray("bad"), keep)
    xr.testing.assert_identical(re.to_xarray("keep"), keep)
    # no segment was written for the rejected dataset's arrays
    assert {p.split("/")[1].rsplit("-", 1)[0] for p in _files(path) if p.startswith("arrays")} == {"ok"}


def test_rejected_dataset_before_any_flush_then_flush(tmp_path):
    path = tmp_path / "s"
    store = Atlas.create(path)
    with pytest.raises(TypeError):
        store.add_xr_dataset(_bad_datasets()["complex-var"], "bad")
    store.flush()
    assert Atlas.open(path).list_datasets() == []
    assert Atlas.open(path).list_arrays() == []


def test_existing_name_is_refused_and_kept(tmp_path):
    store = Atlas.create(tmp_path / "s")
    ds = sample_ds()
    store.add_xr_dataset(ds, "d")
    with pytest.raises(FileExistsError):
        ds.atlas.write(store, "d")
    xr.testing.assert_identical(store.to_xarray("d"), ds)


def test_add_xr_dataset_rejects_non_dataset(tmp_path):
    store = Atlas.create(tmp_path / "s")
    with pytest.raises(TypeError):
        store.add_xr_dataset(xr.DataArray([1, 2]), "d")
    assert store.list_datasets() == []


# ================================================================== 2. exact round trips
INT_FLOAT = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"]


def _extremes(dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        info = np.finfo(dt)
        return np.array([0, -0.0, 1.5, info.min, info.max, info.tiny, np.nan, np.inf, -np.inf, info.eps], dt)
    info = np.iinfo(dt)
    return np.array([0, 1, info.min, info.max, info.max // 3, info.min // 7 if info.min else 5, 2, 3, 4, 5], dt)


@pytest.mark.parametrize("dtype", INT_FLOAT)
def test_round_trip_numeric_dtypes(tmp_path, dtype):
    vals = _extremes(dtype)
    ds = xr.Dataset(
        {"v": (("t",), vals, {"units": "m", "scale": np.dtype(dtype).type(vals[3])}),
         "m": (("y", "x"), np.resize(vals, (3, 4)).astype(dtype)),
         "s": ((), vals[2])},
        coords={"t": np.arange(10, dtype=dtype if np.dtype(dtype).kind in "iu" else "int64")},
        attrs={"dtype": dtype},
    )
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    for v in ("v", "m", "s", "t"):
        assert back[v].dtype == ds[v].dtype, v


@pytest.mark.parametrize("dtype", INT_FLOAT)
def test_round_trip_numeric_dtypes_chunked(tmp_path, dtype):
    vals = np.resize(_extremes(dtype), (7, 9)).astype(dtype)
    ds = xr.Dataset({"v": (("y", "x"), vals)})
    re = assert_round_trip(ds, tmp_path / "s", chunks={"v": [3, 4]})
    assert re.open_dataset("store").array_meta("v")["chunk_shape"] == [3, 4]
    assert isinstance(re.to_xarray("store")["v"].data, da.Array)


def test_round_trip_datetime_coords(tmp_path):
    t = np.array(["1970-01-01", "2000-02-29T12:34:56.123456789", "1677-09-22", "2262-04-11"], "datetime64[ns]")
    ds = xr.Dataset(
        {"v": (("time",), np.arange(4.0)),
         "obs_time": (("time",), np.array(["2020-01-01", "NaT", "1999-12-31T23:59:59.999999999", "NaT"], "datetime64[ns]"))},
        coords={"time": t, "ref": np.array("2000-01-01", "datetime64[ns]"),
                "aux": ("time", np.array(["2001-01-01", "NaT", "2002-01-01", "2003-01-01"], "datetime64[ns]"))},
    )
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    assert back.indexes["time"].dtype == np.dtype("datetime64[ns]")
    assert "time" in back.indexes and "ref" in back.coords and "aux" in back.coords and "obs_time" in back.data_vars


def test_round_trip_strings(tmp_path):
    ds = xr.Dataset(
        {"u": ("i", np.array(["", "héllo", "日本語", "a b", "🌍"])),
         "s": ("i", np.array([b"", b"ab", b"xyz", b"q", b"0123456789"])),
         "o": ("i", np.array(["x", "", "yy", "ünï", "z" * 300], dtype=object)),
         "u2": (("i", "j"), np.array([["a", "bc"]] * 5)),
         "u0": ((), np.array("scalar é")),
         "s0": ((), np.array(b"Y")),
         "o0": ((), np.array("obj", dtype=object))},
        coords={"i": np.array(["r0", "r1", "r2", "r3", "r4"])},
        attrs={"title": "strings ünïcode", "empty": ""},
    )
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    for v in ds.variables:
        assert back[v].dtype == ds[v].dtype, v
    xr.testing.assert_identical(back.chunk({"i": 2}).compute(), ds)


def test_round_trip_strings_chunked(tmp_path):
    words = np.array([["w%d_%d" % (i, j) * (j % 3 + 1) for j in range(7)] for i in range(9)])
    ds = xr.Dataset({"u": (("y", "x"), words), "o": (("y", "x"), words.astype(object)), "s": (("y", "x"), np.char.encode(words))})
    assert_round_trip(ds, tmp_path / "s", chunks={"u": [4, 3], "o": [2, 5], "s": [9, 1]})


@pytest.mark.parametrize("dtype", INT_FLOAT + ["datetime64[ns]", "U5", "S5", "object", "float16", "bool",
                                               "timedelta64[ns]", "datetime64[s]"])
def test_round_trip_zero_d(tmp_path, dtype):
    value = {"datetime64[ns]": np.array("2024-02-29T01:02:03.4", "datetime64[ns]"), "U5": np.array("héllo"),
             "S5": np.array(b"hello"), "object": np.array("obj", dtype=object), "bool": np.array(True),
             "timedelta64[ns]": np.array(-5, "timedelta64[ns]"),
             "datetime64[s]": np.array("2000-01-01T00:00:01", "datetime64[s]")}.get(dtype)
    if value is None:
        value = np.array(_extremes(dtype)[3])
    ds = xr.Dataset({"z": ((), value, {"a": 1})}, coords={"c": ((), value)})
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    assert isinstance(back["z"].data, np.ndarray) and back["z"].shape == ()


def test_round_trip_nan_inf_attrs(tmp_path):
    special = {"nan": np.nan, "inf": np.inf, "ninf": -np.inf, "f32nan": np.float32("nan"), "f32inf": np.float32(np.inf),
               "arr": np.array([1.5, np.nan, np.inf, -np.inf]), "lst": [np.nan, 1.0, -np.inf], "neg0": -0.0}
    ds = xr.Dataset({"v": ("x", np.arange(3.0), dict(special))}, attrs=dict(special))
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("accessor")
    assert np.isnan(back.attrs["nan"]) and back.attrs["inf"] == np.inf and back.v.attrs["ninf"] == -np.inf
    assert np.signbit(back.attrs["neg0"])
    assert back.v.attrs["f32nan"].dtype == np.float32


def test_round_trip_attr_value_kinds(tmp_path):
    kinds = {"i": 7, "i32": np.int32(-4), "u8": np.uint8(200), "big": 2**70, "f": 2.5, "f32": np.float32(0.1),
             "b": True, "s": "text", "empty": "", "bytes": b"\x00ab\xff", "lst": [1, 2.5, "x"], "tup": (1, 2),
             "nested": {"a": [1, {"b": None}], "c": "d"}, "emptylist": [], "arr_i": np.arange(6, dtype=np.int16).reshape(2, 3),
             "arr_u": np.array(["x", "yz"]), "arr_s": np.array([b"a", b"bc"]), "looks_json": "json:[1, 2]",
             "dt": np.datetime64("2020-01-01T00:00:00.5", "ns"), "f16": np.float16(1.5)}
    ds = xr.Dataset({"v": ("x", np.arange(3.0), dict(kinds))}, attrs=dict(kinds))
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    for k, v in kinds.items():
        got = back.attrs[k]
        assert type(got) is type(v) or (isinstance(v, np.generic) and np.asarray(got).dtype == np.asarray(v).dtype), k
        if isinstance(v, np.ndarray):
            assert got.dtype == v.dtype and got.shape == v.shape, k


def test_dataset_attrs_with_dots_are_not_variable_attrs(tmp_path):
    ds = xr.Dataset(
        {"temperature": ("x", np.arange(3.0), {"long_name": "T"}), "x": ("x", np.arange(3))},
        attrs={"temperature.units": "K", "x.axis": "X", "a.b.c": 1, "nosuchvar.attr": "v", ".lead": 1, "trail.": 2},
    )
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    assert back.temperature.attrs == {"long_name": "T"}
    assert back.x.attrs == {}


def test_dataset_attr_colliding_with_flattened_variable_attr(tmp_path):
    """A dataset attr named "{var}.{attr}" next to that variable attr: both must survive
    (or the dataset must be refused with a clear error and leave nothing behind)."""
    ds = xr.Dataset({"t": ("x", [1.0, 2.0], {"units": "C"})}, attrs={"t.units": "K"})
    store = Atlas.create(tmp_path / "s")
    try:
        store.add_xr_dataset(ds, "d")
    except (TypeError, ValueError) as e:
        assert "t.units" in str(e)
        assert not store.dataset_exists("d")
        return
    xr.testing.assert_identical(store.to_xarray("d"), ds)
    store.flush()
    xr.testing.assert_identical(Atlas.open(tmp_path / "s").to_xarray("d"), ds)


@pytest.mark.parametrize("key", ["_pyatlas_coords", "_pyatlas_meta"])
def test_dataset_attr_named_like_internal_bookkeeping(tmp_path, key):
    """A user attr with a reserved name must round-trip or be refused, never silently replaced."""
    ds = xr.Dataset({"t": ("x", [1.0, 2.0])}, coords={"x": [0, 1]}, attrs={key: "user value"})
    store = Atlas.create(tmp_path / "s")
    try:
        store.add_xr_dataset(ds, "d")
    except (TypeError, ValueError) as e:
        assert key in str(e)
        assert not store.dataset_exists("d")
        return
    xr.testing.assert_identical(store.to_xarray("d"), ds)


def test_variables_sharing_names_with_coordinates(tmp_path):
    ds = xr.Dataset(
        {"x": ("x", np.arange(4) * 10, {"axis": "X"}),          # a data var named like its dim -> dimension coord
         "y": ("y", np.array(["a", "b", "c"])),
         "v": (("x", "y"), np.arange(12.0).reshape(4, 3), {"coordinates": "x y"}),
         "w": ("x", np.arange(4, dtype=np.int8))},
        coords={"lon": ("x", np.linspace(0, 1, 4)), "scalar": 3.5, "t": ("t", np.array(["2020-01-01"], "datetime64[ns]"))},
        attrs={"x": "dataset attr named like a variable", "v.units": "dataset attr"},
    )
    ds["v"].attrs["x"] = "var attr named like a coordinate"
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    assert list(back.coords) == list(ds.coords)
    assert list(back.data_vars) == list(ds.data_vars)
    assert set(back.indexes) == {"x", "y", "t"}


def test_variable_order_and_coord_membership_preserved(tmp_path):
    ds = xr.Dataset({"zz": ("a", [1, 2]), "aa": ("a", [3, 4]), "mm": ((), 1.0)},
                    coords={"c2": ("a", [5, 6]), "a": [0, 1], "c1": 0})
    assert_round_trip(ds, tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("store")
    assert list(back.variables) == list(ds.variables)


@pytest.mark.parametrize("kind", ["float16", "bool", "timedelta64[ns]", "timedelta64[ms]", "datetime64[s]",
                                  "datetime64[ms]", "big-endian-i4", "big-endian-f8", "big-endian-u2"])
def test_converted_inputs_round_trip(tmp_path, kind):
    data, stored = {
        "float16": (np.array([0, 1.5, -2.25, np.nan, np.inf, 65504, 6e-8], np.float16), "float32"),
        "bool": (np.array([True, False, True, True, False, False, True]), "uint8"),
        "timedelta64[ns]": (np.array([0, -5, 10**15, "NaT", 1, 2, 3], "timedelta64[ns]"), "int64"),
        "timedelta64[ms]": (np.array([0, -5, 10**9, "NaT", 1, 2, 3], "timedelta64[ms]"), "int64"),
        "datetime64[s]": (np.array(["2020-01-01T00:00:01", "NaT", "1970-01-01", "2262-01-01", "1678-01-01", "2000-02-29", "2001-01-01"],
                                   "datetime64[s]"), "timestamp_nanoseconds"),
        "datetime64[ms]": (np.array(["2020-01-01T00:00:01.5", "NaT", "1970-01-01", "2262-01-01", "1678-01-01", "2000-02-29", "2001-01-01"],
                                    "datetime64[ms]"), "timestamp_nanoseconds"),
        "big-endian-i4": (np.array([1, -2, 2**31 - 1, -(2**31), 0, 5, 6], ">i4"), "int32"),
        "big-endian-f8": (np.array([1.5, np.nan, -np.inf, 1e300, 0, 5, 6], ">f8"), "float64"),
        "big-endian-u2": (np.array([1, 2, 65535, 0, 7, 8, 9], ">u2"), "uint16"),
    }[kind]
    ds = xr.Dataset({"v": ("x", data), "m": (("y", "x"), np.stack([data, data[::-1]])), "z": ((), data[1])})
    re = assert_round_trip(ds, tmp_path / "s")
    assert re.open_dataset("store").array_meta("v")["dtype"] == stored
    back = re.to_xarray("store")
    for v in ("v", "m", "z"):
        assert back[v].dtype == ds[v].dtype.newbyteorder("=") or back[v].dtype == ds[v].dtype, v
        np.testing.assert_array_equal(back[v].values, ds[v].values)
    # the same through dask (streamed blocks, lazily read back)
    dds = ds.chunk({"x": 3})
    st = Atlas.create(tmp_path / "d")
    st.add_xr_dataset(dds, "d")
    st.flush()
    xr.testing.assert_identical(Atlas.open(tmp_path / "d").to_xarray("d"), ds)


def test_converted_attr_fill_values_round_trip(tmp_path):
    ds = xr.Dataset({
        "b": ("x", np.array([True, False]), {"_FillValue": False}),
        "h": ("x", np.array([1.5, -1], np.float16), {"_FillValue": np.float16(-1)}),
        "i": ("x", np.array([1, -99], ">i4"), {"_FillValue": np.int32(-99)}),
        "s": ("x", np.array(["a", "-"]), {"_FillValue": "-"}),
    })
    re = assert_round_trip(ds, tmp_path / "s")
    view = re.open_dataset("store")
    assert view.array_fill_value("i") == -99


def test_out_of_range_datetime_refused(tmp_path):
    """datetime64[s] values outside the datetime64[ns] range cannot be converted losslessly."""
    ds = xr.Dataset({"ok": ("x", [1.0]), "t": ("x", np.array(["2500-01-01"], "datetime64[s]"))})
    store = Atlas.create(tmp_path / "s")
    with pytest.raises((TypeError, OverflowError, ValueError), match="datetime64"):
        store.add_xr_dataset(ds, "d")
    assert not store.dataset_exists("d")


def _unsupported():
    import cftime

    return {
        "complex": np.array([1 + 2j, 3j]),
        "complex64": np.array([1 + 2j, 3j], np.complex64),
        "object-int": np.array([1, 2], dtype=object),
        "object-mixed": np.array(["a", 2], dtype=object),
        "object-none-and-int": np.array([None, 3], dtype=object),  # missing cells beside str are supported
        "cftime": np.array([cftime.DatetimeNoLeap(2000, 1, 1), cftime.DatetimeNoLeap(2000, 2, 28)], dtype=object),
        "void": np.zeros(2, "V4"),
        "structured": np.zeros(2, [("a", "i4"), ("b", "f4")]),
    }


@pytest.mark.parametrize("kind", list(_unsupported()))
def test_unsupported_inputs_clear_type_error(tmp_path, kind):
    ds = xr.Dataset({"fine": ("x", np.arange(2.0)), "bad_var": ("x", _unsupported()[kind])})
    store = Atlas.create(tmp_path / "s")
    with pytest.raises(TypeError) as ei:
        store.add_xr_dataset(ds, "d")
    # a clear message names the offending variable
    assert "bad_var" in str(ei.value), str(ei.value)
    assert not store.dataset_exists("d") and store.list_arrays() == []


def test_unsupported_input_through_accessor(tmp_path):
    ds = xr.Dataset({"fine": ("x", np.arange(2.0)), "bad_var": ("x", np.array([1j, 2]))})
    store = Atlas.create(tmp_path / "s")
    with pytest.raises(TypeError, match="bad_var"):
        ds.atlas.write(store, "d")
    assert store.list_datasets() == []


def test_unsupported_input_in_dask_variable(tmp_path):
    ds = xr.Dataset({"bad_var": ("x", da.from_array(np.array([1 + 1j, 2j, 3, 4]), chunks=2))})
    store = Atlas.create(tmp_path / "s")
    with pytest.raises(TypeError, match="bad_var"):
        store.add_xr_dataset(ds, "d")
    assert store.list_datasets() == []


def test_zero_length_dimensions(tmp_path):
    ds = xr.Dataset(
        {"e1": ("n", np.zeros(0, np.int32)), "e2": (("n", "x"), np.zeros((0, 3))), "e3": (("x", "n"), np.zeros((3, 0), np.float32)),
         "es": ("n", np.zeros(0, "U3")), "full": ("x", np.arange(3))},
        coords={"n": np.zeros(0, "datetime64[ns]")},
    )
    assert_round_trip(ds, tmp_path / "s")


# ------------------------------------------------------------------ hypothesis
DIM_NAMES = ["d0", "d1", "d2"]
H_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64",
            "bool", "datetime64[ns]", "datetime64[s]", "timedelta64[ns]", "<U4", "|S4", "object", ">i4", ">f8"]


@st.composite
def _values(draw, dtype: str, shape: tuple[int, ...]):
    dt = np.dtype(dtype)
    if dt.kind in "Mm":
        ints = draw(hnp.arrays(np.int64, shape, elements=st.one_of(st.integers(-(10**9), 10**9),
                                                                       st.just(np.iinfo(np.int64).min))))
        return ints.view(dt)
    if dt.kind == "O":
        return draw(hnp.arrays(object, shape, elements=st.text(max_size=5)))
    if dt.kind == "S":
        # fill=nothing(): hypothesis must not pad with a fill element (b"\x00" would not survive numpy's S type)
        return draw(hnp.arrays(dt, shape, elements=st.binary(max_size=4).filter(lambda b: b.isascii() and not b.endswith(b"\x00")),
                               fill=st.nothing()))
    return draw(hnp.arrays(dt, shape))


_attr_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=8), st.booleans(),
    st.lists(st.integers(-1000, 1000), max_size=3), st.lists(st.floats(), max_size=3),
    hnp.arrays(np.float64, st.integers(0, 3)), hnp.arrays(np.int32, st.integers(0, 3)),
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(-5, 5), max_size=2),
)
_attr_keys = st.text("abcXYZ. -", min_size=1, max_size=6).filter(lambda k: not k.startswith("_"))


@st.composite
def _datasets(draw, zero_length: bool):
    sizes = draw(st.lists(st.integers(0 if zero_length else 1, 3), min_size=3, max_size=3))
    if zero_length and 0 not in sizes:
        sizes[draw(st.integers(0, 2))] = 0
    dim_size = dict(zip(DIM_NAMES, sizes))
    variables = {}
    coords = {}
    for i in range(draw(st.integers(1, 4))):
        dims = tuple(draw(st.lists(st.sampled_from(DIM_NAMES), unique=True, max_size=3)))
        dtype = draw(st.sampled_from(H_DTYPES))
        shape = tuple(dim_size[d] for d in dims)
        attrs = draw(st.dictionaries(_attr_keys, _attr_values, max_size=3))
        var = (dims, draw(_values(dtype, shape)), attrs)
        (coords if draw(st.booleans()) else variables)[f"v{i}"] = var
    if draw(st.booleans()):  # a dimension coordinate (unique index values)
        d = draw(st.sampled_from(DIM_NAMES))
        coords[d] = (d, np.arange(dim_size[d]).astype(draw(st.sampled_from(["int64", "float32", "datetime64[ns]"]))))
    attrs = draw(st.dictionaries(_attr_keys, _attr_values, max_size=4))
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _hyp_round_trip(ds: xr.Dataset, chunk: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s")
        store = Atlas.create(path)
        store.add_xr_dataset(ds, "a")
        ds.atlas.write(store, "b")
        if chunk and ds.sizes:
            store.add_xr_dataset(ds.chunk({d: 2 for d in ds.dims}), "c")
        for n in store.list_datasets():
            xr.testing.assert_identical(store.to_xarray(n), ds)
        store.flush()
        re = Atlas.open(path)
        for n in re.list_datasets():
            xr.testing.assert_identical(re.to_xarray(n), ds)
            xr.testing.assert_identical(re.to_xarray(n, chunks=None), ds)


@HYP
@given(ds=_datasets(zero_length=False), chunk=st.booleans())
def test_hypothesis_round_trip(ds, chunk):
    _hyp_round_trip(ds, chunk)


@HYP
@given(ds=_datasets(zero_length=True))
def test_hypothesis_round_trip_with_zero_length_dims(ds):
    _hyp_round_trip(ds, chunk=False)


# ================================================================== 3. streaming writes
_STREAM_SCRIPT = textwrap.dedent(r"""
    import gc, json, os, sys, threading, time, tracemalloc
    import numpy as np, psutil, dask, dask.array as da, xarray as xr
    import atlas

    path = sys.argv[1]
    ROWS, NB = 1 << 20, int(sys.argv[2])           # float64 blocks of 8 MiB
    computed = []

    def make(block_info=None):
        i = block_info[None]["chunk-location"][0]
        computed.append(i)
        return (np.random.default_rng(i).random(ROWS) + i).reshape(1, ROWS)

    big = da.map_blocks(make, chunks=((1,) * NB, (ROWS,)), dtype=np.float64, meta=np.empty((0, 0)))
    ds = xr.Dataset({"big": (("t", "x"), big)}, attrs={"n": NB})
    proc = psutil.Process()
    store = atlas.Atlas.create(path)
    # warm up (numba kernels, thread pool) so the measurement sees the write only; blocks
    # large enough to need the kernels (smaller ones run NumPy and leave numba's import for later)
    store.add_xr_dataset(xr.Dataset({"w": (("t", "x"), da.ones((2, 4000), chunks=(1, 4000)))}), "warm")
    store.open_dataset("warm").read_array("w")
    assert "numba" in sys.modules
    gc.collect()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    th = threading.Thread(target=sample)
    th.start()
    tracemalloc.start()
    store.add_xr_dataset(ds, "big")
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    stop.set()
    th.join()
    view = store.open_dataset("big")
    ok = all(np.array_equal(view.read_array("big", [i, 0], [1, ROWS])[0], np.random.default_rng(i).random(ROWS) + i)
             for i in (0, NB // 2, NB - 1))
    print(json.dumps({"rss_growth": peak[0] - base, "traced_peak": traced_peak, "computed": computed,
                      "chunk_shape": view.array_meta("big")["chunk_shape"], "values_ok": ok,
                      "spilled": store._state.txn.pending.spilled}))
""")


def test_streaming_write_memory_stays_near_one_block(tmp_path):
    """~400 MiB of dask data in 8 MiB blocks with a 32 MiB pending budget: memory stays bounded."""
    block, budget, nb = 8 << 20, 32 << 20, 50
    env = dict(os.environ, ATLAS_PENDING_BUDGET=str(budget), MALLOC_ARENA_MAX="2")
    proc = subprocess.run([sys.executable, "-c", _STREAM_SCRIPT, str(tmp_path / "s"), str(nb)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    total = nb * block
    assert r["values_ok"]
    assert sorted(r["computed"]) == list(range(nb))       # every block computed exactly once
    assert r["chunk_shape"] == [1, 1 << 20]
    assert r["spilled"] > 0                                 # more data than the budget went through
    # Python-level allocations (numpy buffers, compressed bytes): the pending budget (spilling
    # copies it once) plus a handful of blocks, nowhere near the 400 MiB of data.
    assert r["traced_peak"] < 2 * budget + 6 * block, r
    # whole-process RSS (allocator slack included): far below the 400 MiB a materialised array needs
    assert r["rss_growth"] < total / 2, r


def test_dask_variable_written_block_by_block(tmp_path, monkeypatch):
    """Each dask block is computed once, separately; the whole array is never materialised."""
    seen = []

    def make(block_info=None):
        loc = block_info[None]["chunk-location"]
        shape = block_info[None]["chunk-shape"]
        seen.append((loc, shape))
        y0, x0 = (r[0] for r in block_info[None]["array-location"])
        return (np.arange(y0, y0 + shape[0])[:, None] * 1000 + np.arange(x0, x0 + shape[1])[None, :]).astype(np.int32)

    arr = da.map_blocks(make, chunks=((4, 4, 2), (5, 5, 5, 1)), dtype=np.int32, meta=np.empty((0, 0), np.int32))
    ds = xr.Dataset({"v": (("y", "x"), arr)})
    expected = np.arange(10)[:, None] * 1000 + np.arange(16)[None, :]
    store = Atlas.create(tmp_path / "s")
    # a whole-array compute would come through here
    monkeypatch.setattr(da.Array, "__array__", lambda *a, **k: pytest.fail("the whole dask array was materialised"))
    store.add_xr_dataset(ds, "d")
    monkeypatch.undo()
    assert sorted(loc for loc, _ in seen) == [(i, j) for i in range(3) for j in range(4)]
    assert store.open_dataset("d").array_meta("v")["chunk_shape"] == [4, 5]
    np.testing.assert_array_equal(store.open_dataset("d").read_array("v"), expected)


def test_dask_chunks_become_chunk_shape(tmp_path):
    v = np.arange(20 * 30 * 4, dtype=np.float32).reshape(20, 30, 4)
    ds = xr.Dataset({"v": (("t", "y", "x"), v), "w": (("t",), np.arange(20.0)), "e": (("y",), np.arange(30))})
    dds = ds.chunk({"t": 5, "y": 10, "x": -1})
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(dds, "d")
    view = store.open_dataset("d")
    assert view.array_meta("v")["chunk_shape"] == [5, 10, 4]
    assert view.array_meta("w")["chunk_shape"] == [5]
    assert view.array_meta("e")["chunk_shape"] == [10]
    store.flush()
    back = Atlas.open(tmp_path / "s").to_xarray("d")
    xr.testing.assert_identical(back, ds)
    assert back["v"].data.chunks == dds["v"].data.chunks
    assert back["v"].encoding["preferred_chunks"] == {"t": 5, "y": 10, "x": 4}


@pytest.mark.parametrize("override", [{"v": [7, 30, 4]}, {"v": {"t": 7, "y": 30}}, {"v": (20, 30, 4)}])
def test_chunks_argument_overrides_dask_chunks(tmp_path, override):
    v = np.arange(20 * 30 * 4, dtype=np.int64).reshape(20, 30, 4)
    ds = xr.Dataset({"v": (("t", "y", "x"), v), "w": (("t",), np.arange(20.0))})
    dds = ds.chunk({"t": 5, "y": 10, "x": 2})
    store = Atlas.create(tmp_path / "s")
    ds_chunks = [7, 30, 4] if override["v"] != (20, 30, 4) else [20, 30, 4]
    dds.atlas.write(store, "d", chunks=override)
    view = store.open_dataset("d")
    assert view.array_meta("v")["chunk_shape"] == ds_chunks
    assert view.array_meta("w")["chunk_shape"] == [5]  # not overridden: dask's
    store.flush()
    xr.testing.assert_identical(Atlas.open(tmp_path / "s").to_xarray("d"), ds)


def test_chunks_argument_on_numpy_data(tmp_path):
    ds = xr.Dataset({"v": (("y", "x"), np.arange(100.0).reshape(10, 10)), "u": (("y",), np.arange(10))})
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(ds, "d", chunks={"v": [3, 4]})
    assert store.open_dataset("d").array_meta("v")["chunk_shape"] == [3, 4]
    assert store.open_dataset("d").array_meta("u")["chunk_shape"] == [10]
    back = store.to_xarray("d")
    assert back["v"].data.chunks == ((3, 3, 3, 1), (4, 4, 2))
    assert isinstance(back["u"].data, np.ndarray)
    xr.testing.assert_identical(back, ds)


@pytest.mark.parametrize("chunks", [{"t": (3, 5, 2), "y": (1, 6)}, {"t": (1, 1, 8), "y": (7,)}, {"t": (9, 1), "y": (2, 2, 3)}])
def test_irregular_dask_chunks(tmp_path, chunks):
    v = np.random.default_rng(1).random((10, 7))
    ds = xr.Dataset({"v": (("t", "y"), v), "s": (("t",), np.array([f"s{i}" for i in range(10)])),
                     "d": (("t",), np.arange(10).astype("datetime64[s]"))}, attrs={"a": 1})
    dds = ds.chunk(chunks)
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(dds, "d")
    assert store.open_dataset("d").array_meta("v")["chunk_shape"] == [max(chunks["t"]), max(chunks["y"])]
    xr.testing.assert_identical(store.to_xarray("d"), ds)
    store.flush()
    xr.testing.assert_identical(Atlas.open(tmp_path / "s").to_xarray("d"), ds)


def test_streaming_from_netcdf_chunks(tmp_path):
    ds = xr.Dataset({"v": (("t", "x"), np.arange(60.0).reshape(12, 5), {"units": "m"})},
                    coords={"t": np.arange(12).astype("datetime64[D]").astype("datetime64[ns]")})
    nc = tmp_path / "f.nc"
    ds.to_netcdf(nc, engine="netcdf4")
    with xr.open_dataset(nc, chunks={"t": 4}) as src:
        store = Atlas.create(tmp_path / "s")
        store.add_xr_dataset(src, "d")
        store.flush()
        assert store.open_dataset("d").array_meta("v")["chunk_shape"] == [4, 5]
        xr.testing.assert_identical(Atlas.open(tmp_path / "s").to_xarray("d"), src.load())


# ================================================================== 4. lazy reads
def _chunked_store(path, extra_coords: bool = True):
    rng = np.random.default_rng(0)
    v = rng.random((400, 300))          # 100x100 float64 chunks: 80 kB each, one frame per chunk
    coords = {"x": np.arange(300)} if extra_coords else {}
    ds = xr.Dataset({"v": (("y", "x"), v, {"units": "K"}), "s": ("y", np.array([f"n{i}" for i in range(400)]))},
                    coords=coords)
    with Atlas.create(path) as store:
        store.add_xr_dataset(ds, "d", chunks={"v": [100, 100], "s": [50]})
        store.add_xr_dataset(ds, "e", chunks={"v": [100, 100], "s": [50]})
    return ds


def test_lazy_read_one_task_per_chunk(tmp_path):
    ds = _chunked_store(tmp_path / "s")
    back = Atlas.open(tmp_path / "s").to_xarray("d")
    arr = back["v"].data
    assert isinstance(arr, da.Array)
    assert arr.chunks == ((100,) * 4, (100,) * 3)
    assert arr.numblocks == (4, 3)
    assert len(arr.__dask_graph__()) == 12
    assert len(dict(arr.__dask_graph__())) == 12
    assert back["s"].data.numblocks == (8,) and len(back["s"].data.__dask_graph__()) == 8
    assert isinstance(back["x"].data, np.ndarray)  # single-chunk arrays come back eager
    xr.testing.assert_identical(back, ds)
    eager = Atlas.open(tmp_path / "s").to_xarray("d", chunks=None)
    assert isinstance(eager["v"].data, np.ndarray)
    xr.testing.assert_identical(eager, ds)


def test_lazy_graph_names_deterministic(tmp_path):
    path = tmp_path / "s"
    _chunked_store(path)
    store = Atlas.open(path)
    n1 = store.to_xarray("d")["v"].data.name
    assert store.to_xarray("d")["v"].data.name == n1
    assert Atlas.open(path).to_xarray("d")["v"].data.name == n1          # another handle, same state
    assert store.to_xarray("e")["v"].data.name != n1                    # another dataset
    assert store.to_xarray("d")["s"].data.name != n1                    # another variable
    # a flush that changes the data changes the name
    store.open_dataset("d").write_array("v", [0, 0], np.full((1, 1), -1.0))
    store.flush()
    n2 = store.to_xarray("d")["v"].data.name
    assert n2 != n1
    assert Atlas.open(path).to_xarray("d")["v"].data.name == n2
    assert float(store.to_xarray("d")["v"][0, 0]) == -1.0


def test_building_graph_reads_no_chunk_data(tmp_path, monkeypatch):
    _chunked_store(tmp_path / "s", extra_coords=False)
    counter = Counter(monkeypatch)
    store = Atlas.open(tmp_path / "s")
    back = store.to_xarray("d")
    many = store.to_xarray_many(["d", "e"], chunks="auto")
    assert isinstance(back["v"].data, da.Array) and isinstance(many["v"].data, da.Array)
    assert counter.total_reads() == 0 and counter["decode"] == 0, dict(counter.c)
    back["v"].data.sum()          # more graph building: still nothing read
    back.isel(y=slice(0, 10))
    assert counter.total_reads() == 0 and counter["decode"] == 0, dict(counter.c)
    # and the counters do see real reads
    back["v"][0, 0].compute()
    assert counter["read:v"] == 1 and counter["decode"] == 1


def test_building_graph_with_eager_coords_reads_no_chunked_data(tmp_path, monkeypatch):
    _chunked_store(tmp_path / "s")
    counter = Counter(monkeypatch)
    back = Atlas.open(tmp_path / "s").to_xarray("d")
    assert counter["read:x"] == 1               # the single-chunk coordinate is read eagerly
    assert counter["read:v"] == 0 and counter["read:s"] == 0
    assert isinstance(back["v"].data, da.Array)


@pytest.mark.parametrize("sel,chunks_touched", [
    (dict(y=slice(0, 100), x=slice(0, 100)), 1),
    (dict(y=slice(150, 250), x=slice(0, 50)), 2),
    (dict(y=5, x=slice(None)), 3),
    (dict(y=slice(None), x=299), 4),
    (dict(y=slice(90, 110), x=slice(90, 110)), 4),
    (dict(y=[0, 399], x=[0]), 2),
])
def test_slicing_reads_only_chunks_touched(tmp_path, monkeypatch, sel, chunks_touched):
    ds = _chunked_store(tmp_path / "s", extra_coords=False)
    store = Atlas.open(tmp_path / "s")
    back = store.to_xarray("d")
    store.open_dataset("d").read_array("s", [0], [1])  # load the chunk indexes, so only frames are counted below
    store.open_dataset("d").read_array("v", [399, 299], [1, 1])
    counter = Counter(monkeypatch)
    with dask.config.set(scheduler="threads"):
        got = back["v"].isel(**sel).compute()
    np.testing.assert_array_equal(got.values, ds["v"].isel(**sel).values)
    assert counter["read:v"] == chunks_touched, dict(counter.c)
    assert counter["decode"] == chunks_touched, dict(counter.c)
    assert counter["ranges"] == chunks_touched, dict(counter.c)


def test_pickle_lazy_dataset_and_store(tmp_path):
    ds = _chunked_store(tmp_path / "s")
    store = Atlas.open(tmp_path / "s")
    lazy = store.to_xarray("d")
    again = pickle.loads(pickle.dumps(lazy))
    assert again["v"].data.name == lazy["v"].data.name
    xr.testing.assert_identical(again.compute(), ds)
    arr = pickle.loads(pickle.dumps(lazy["v"].data))
    np.testing.assert_array_equal(arr[100:300:7].compute(), ds["v"].values[100:300:7])
    s2 = pickle.loads(pickle.dumps(store))
    assert isinstance(s2, Atlas) and s2.list_datasets() == ["d", "e"]
    xr.testing.assert_identical(s2.to_xarray("e"), ds)
    many = pickle.loads(pickle.dumps(store.to_xarray_many(["d", "e"], chunks="auto")))
    xr.testing.assert_identical(many.compute(), store.to_xarray_many(["d", "e"]))


def test_pickled_graph_sees_newer_flushed_data(tmp_path):
    """A pickled store carries its generation: an unpickle after a newer flush reopens, never serves stale data."""
    path = tmp_path / "s"
    _chunked_store(path)
    store = Atlas.open(path)
    pickle.loads(pickle.dumps(store.to_xarray("d"))).compute()   # caches a handle in this process
    store.open_dataset("d").write_array("v", [0, 0], np.full((2, 2), 7.0))
    store.flush()
    back = pickle.loads(pickle.dumps(store.to_xarray("d")))
    np.testing.assert_array_equal(back["v"][:2, :2].values, np.full((2, 2), 7.0))


def _recreate(path, value: float) -> xr.Dataset:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    ds = xr.Dataset({"v": (("y", "x"), np.full((4, 4), value))})
    with Atlas.create(path) as store:
        store.add_xr_dataset(ds, "d", chunks={"v": [2, 2]})
    return ds


def test_store_recreated_at_same_path_is_a_different_store(tmp_path):
    """Deleting a store and creating a new one at the same path (same generation number) must
    neither reuse dask names nor let an unpickled graph read the old store's data."""
    path = tmp_path / "s"
    _recreate(path, 1.0)
    old = Atlas.open(path).to_xarray("d")
    assert pickle.loads(pickle.dumps(old))["v"].values[0, 0] == 1.0
    ds2 = _recreate(path, 2.0)
    new = Atlas.open(path).to_xarray("d")
    xr.testing.assert_identical(new, ds2)
    xr.testing.assert_identical(pickle.loads(pickle.dumps(new)).compute(), ds2)
    assert new["v"].data.name != old["v"].data.name


@pytest.mark.parametrize("n", [3, 70])
def test_to_xarray_many_lazy_equals_eager(tmp_path, n):
    path = tmp_path / "s"
    rng = np.random.default_rng(n)
    with Atlas.create(path) as store:
        for i in range(n):
            ds = xr.Dataset({"v": (("y", "x"), rng.random((6, 5)), {"units": "K"}),
                             "t": (("y",), (np.arange(6) + i).astype("datetime64[D]").astype("datetime64[ns]")),
                             "h": (("x",), np.arange(5, dtype=np.float16))},
                            coords={"x": np.arange(5)}, attrs={"i": 0})
            store.add_xr_dataset(ds, f"d{i:03d}", chunks={"v": [4, 5], "t": [3]})
    store = Atlas.open(path)
    names = store.list_datasets()
    eager = store.to_xarray_many(names)
    lazy = store.to_xarray_many(names, chunks="auto")
    assert all(isinstance(lazy[v].data, da.Array) for v in lazy.data_vars)
    assert all(isinstance(eager[v].data, np.ndarray) for v in eager.data_vars)
    xr.testing.assert_identical(lazy.compute(), eager)
    assert eager.sizes["dataset"] == n and list(eager["dataset"].values) == names
    for i in (0, n - 1):
        xr.testing.assert_identical(eager.isel(dataset=i, drop=True)["v"], store.to_xarray(names[i])["v"].compute())
    assert lazy["v"].data.name == store.to_xarray_many(names, chunks="auto")["v"].data.name


@pytest.mark.parametrize("chunks", [None, "auto"])
def test_to_xarray_many_strings_of_different_lengths(tmp_path, chunks):
    """Fixed-width string variables whose width differs between datasets (<U1 / <U3, |S1 / |S3)."""
    store = Atlas.create(tmp_path / "s")
    a = xr.Dataset({"u": ("i", np.array(["a", "b"])), "s": ("i", np.array([b"a", b"b"]))})
    b = xr.Dataset({"u": ("i", np.array(["ccc", "d"])), "s": ("i", np.array([b"ccc", b"d"]))})
    store.add_xr_dataset(a, "a")
    store.add_xr_dataset(b, "b")
    many = store.to_xarray_many(["a", "b"], chunks=chunks).compute()
    assert many["u"].values.tolist() == [["a", "b"], ["ccc", "d"]]
    assert many["s"].values.tolist() == [[b"a", b"b"], [b"ccc", b"d"]]


@pytest.mark.parametrize("first,second", [
    (np.array([1.5], np.float16), np.array([0.1], np.float32)),
    (np.array(["2000-01-01"], "datetime64[s]"), np.array(["2000-01-01T00:00:00.123456789"], "datetime64[ns]")),
], ids=["float16+float32", "datetime64[s]+[ns]"])
def test_to_xarray_many_mixed_source_dtypes_lose_nothing(tmp_path, first, second):
    """Datasets stored with one atlas dtype but different source dtypes: stacking must not
    narrow the second to the first's source dtype."""
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(xr.Dataset({"v": ("i", first)}), "a")
    store.add_xr_dataset(xr.Dataset({"v": ("i", second)}), "b")
    for chunks in (None, "auto"):
        many = store.to_xarray_many(["a", "b"], chunks=chunks).compute()
        assert many["v"].values[1] == second[0], chunks
        assert many["v"].values[0] == first[0], chunks


# ------------------------------------------------------------------ dask.distributed
@pytest.fixture(scope="module")
def dist_client():
    import distributed

    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0")
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_compute_under_distributed_worker_processes(tmp_path, dist_client):
    ds = _chunked_store(tmp_path / "s")
    store = Atlas.open(tmp_path / "s")
    lazy = store.to_xarray("d")
    # the graph runs on the cluster (the client is the default scheduler inside the fixture)
    got = lazy.compute()
    xr.testing.assert_identical(got, ds)
    total = dist_client.compute(lazy["v"].data.sum()).result()
    assert total == pytest.approx(ds["v"].values.sum())
    # the workers are separate processes and reopened the store themselves
    pids = dist_client.run(os.getpid)
    assert os.getpid() not in pids.values() and len(set(pids.values())) == 2
    opened = dist_client.run(lambda: [loc for (_, loc) in __import__("atlas").store._OPEN])
    assert any(str(tmp_path / "s") in " ".join(locs) for locs in opened.values()), opened
    many = store.to_xarray_many(["d", "e"], chunks="auto").compute()
    xr.testing.assert_identical(many, store.to_xarray_many(["d", "e"]))
    sliced = lazy["v"].isel(y=slice(150, 250)).compute()
    np.testing.assert_array_equal(sliced.values, ds["v"].values[150:250])


def test_distributed_backend_open_dataset(tmp_path, dist_client):
    ds = _chunked_store(tmp_path / "s")
    opened = xr.open_dataset(tmp_path / "s", engine="atlas", group="e", chunks={})
    xr.testing.assert_identical(opened.compute(), ds)


def test_distributed_sees_recreated_store(tmp_path, dist_client):
    """Worker processes are long-lived: a store recreated at the same path must not be served
    from the handle they cached for the old one."""
    path = tmp_path / "s"
    ds1 = _recreate(path, 1.0)
    xr.testing.assert_identical(Atlas.open(path).to_xarray("d").compute(), ds1)
    ds2 = _recreate(path, 2.0)
    xr.testing.assert_identical(Atlas.open(path).to_xarray("d").compute(), ds2)


# ================================================================== 5. xarray backend
def test_backend_registered():
    assert "atlas" in xr.backends.list_engines()


@pytest.mark.parametrize("chunks", [None, {}])
def test_backend_open_dataset_identical(tmp_path, chunks):
    ds = sample_ds()
    path = tmp_path / "s"
    with Atlas.create(path) as store:
        store.add_xr_dataset(ds, "plain")
        store.add_xr_dataset(ds, "chunked", chunks={"temperature": [3, 5]})
    for group in ("plain", "chunked"):
        with xr.open_dataset(path, engine="atlas", group=group, chunks=chunks) as got:
            xr.testing.assert_identical(got, ds)
            if chunks is not None:
                assert isinstance(got["temperature"].data, da.Array)
    with xr.open_dataset(path, engine="atlas", group="chunked", chunks={}) as got:
        assert got["temperature"].data.chunks == ((3, 3, 2), (5, 5, 5, 1))   # preferred_chunks = on-disk chunks
    # str path, and a store handle as filename_or_obj
    xr.testing.assert_identical(xr.open_dataset(str(path), engine="atlas", group="plain"), ds)
    xr.testing.assert_identical(xr.open_dataset(Atlas.open(path), engine="atlas", group="plain"), ds)


def test_backend_single_dataset_needs_no_group(tmp_path):
    ds = xr.Dataset({"v": ("x", np.arange(3))})
    with Atlas.create(tmp_path / "one") as store:
        store.add_xr_dataset(ds, "only")
    xr.testing.assert_identical(xr.open_dataset(tmp_path / "one", engine="atlas"), ds)
    with Atlas.create(tmp_path / "two") as store:
        store.add_xr_dataset(ds, "a")
        store.add_xr_dataset(ds, "b")
    with pytest.raises(ValueError, match="group"):
        xr.open_dataset(tmp_path / "two", engine="atlas")


def test_backend_is_lazy(tmp_path, monkeypatch):
    ds = _chunked_store(tmp_path / "s", extra_coords=False)
    counter = Counter(monkeypatch)
    opened = xr.open_dataset(tmp_path / "s", engine="atlas", group="d")
    assert counter.total_reads() == 0 and counter["decode"] == 0, dict(counter.c)
    assert not opened["v"].variable._in_memory
    sub = opened["v"].isel(y=slice(0, 100), x=slice(100, 200))
    assert counter.total_reads() == 0
    np.testing.assert_array_equal(sub.values, ds["v"].values[0:100, 100:200])
    assert counter["read:v"] == 1 and counter["decode"] == 1  # one box read, one chunk decoded
    xr.testing.assert_identical(opened.load(), ds)


def test_backend_drop_variables(tmp_path):
    ds = sample_ds()
    with Atlas.create(tmp_path / "s") as store:
        store.add_xr_dataset(ds, "d")
    got = xr.open_dataset(tmp_path / "s", engine="atlas", group="d", drop_variables=["name"])
    xr.testing.assert_identical(got, ds.drop_vars("name"))


@pytest.mark.parametrize("key", [
    dict(a=slice(None, None, -1)), dict(a=[0, 3, 6], c=[4, 0]), dict(a=2), dict(a=slice(1, 6, 2), b=slice(9, 2, -3)),
    dict(a=-1, b=[10, 0, 5]), dict(b=slice(20, 30)),
])
def test_backend_indexing(tmp_path, key):
    v = np.arange(7 * 11 * 5, dtype=np.int32).reshape(7, 11, 5)
    ds = xr.Dataset({"v": (("a", "b", "c"), v), "s": (("a",), np.array(list("abcdefg")))}, coords={"b": np.arange(11) * 2})
    with Atlas.create(tmp_path / "s") as store:
        store.add_xr_dataset(ds, "d", chunks={"v": [3, 4, 5]})
    opened = xr.open_dataset(tmp_path / "s", engine="atlas", group="d")
    xr.testing.assert_identical(opened.isel(**{k: val for k, val in key.items()}).load(), ds.isel(**key))
    vec = dict(a=xr.DataArray([1, 2, 6], dims="z"), b=xr.DataArray([3, 4, 0], dims="z"))
    xr.testing.assert_identical(opened["v"].isel(**vec).load(), ds["v"].isel(**vec))


def _mf_stores(tmp_path):
    ds = xr.Dataset({"v": (("y", "x"), np.arange(12.0).reshape(3, 4), {"units": "K"})}, coords={"x": np.arange(4)},
                    attrs={"title": "t"})
    ds2 = ds.copy(deep=True)
    ds2["v"] = ds2["v"] + 100
    with Atlas.create(tmp_path / "s") as store:
        store.add_xr_dataset(ds, "g", chunks={"v": [2, 4]})
    with Atlas.create(tmp_path / "t") as store:
        store.add_xr_dataset(ds2, "g")
    return ds, ds2


def test_backend_open_mfdataset(tmp_path):
    ds, ds2 = _mf_stores(tmp_path)
    # xarray passes group= to every file: the same store twice ...
    got = xr.open_mfdataset([tmp_path / "s", tmp_path / "s"], engine="atlas", group="g", combine="nested", concat_dim="run")
    assert isinstance(got["v"].data, da.Array)
    xr.testing.assert_identical(got.compute(), xr.concat([ds, ds], dim="run"))
    # ... and two separate stores
    got = xr.open_mfdataset([tmp_path / "s", tmp_path / "t"], engine="atlas", group="g", combine="nested", concat_dim="run")
    xr.testing.assert_identical(got.compute(), xr.concat([ds, ds2], dim="run"))


def test_backend_datasets_can_be_closed(tmp_path):
    """``with xr.open_mfdataset(...)`` / ``.close()`` must work (xarray calls each dataset's closer)."""
    ds, ds2 = _mf_stores(tmp_path)
    with xr.open_dataset(tmp_path / "s", engine="atlas", group="g") as one:
        xr.testing.assert_identical(one.load(), ds)
    with xr.open_mfdataset([tmp_path / "s", tmp_path / "t"], engine="atlas", group="g", combine="nested",
                           concat_dim="run") as got:
        xr.testing.assert_identical(got.compute(), xr.concat([ds, ds2], dim="run"))


def test_fixed_width_bytes_that_are_not_utf8_round_trip(tmp_path):
    """S arrays hold arbitrary bytes (netCDF char data): they are stored one byte per character."""
    ds = xr.Dataset({"s": ("x", np.array([b"a", b"\xff", b"\xc3", b"caf\xc3\xa9"]))})
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(ds, "d")
    store.flush()
    back = Atlas.open(tmp_path / "s").to_xarray("d")
    xr.testing.assert_identical(ds, back)
    assert back["s"].dtype == ds["s"].dtype


# ------------------------------------------------------------------------ chunks= on reads
def _five_chunked(tmp_path):
    s = atlas.Atlas.create(tmp_path / "chunks")
    for k in range(5):
        ds = xr.Dataset({"t": (("time", "x"), np.arange(48, dtype=np.float32).reshape(12, 4) + k),
                         "s": ((), np.float64(k))}, coords={"time": np.arange(12)})
        s.add_xr_dataset(ds, f"d{k}", chunks={"t": [3, 4]})
    s.flush()
    return s


def test_to_xarray_honours_chunks_like_xarray(tmp_path):
    s = _five_chunked(tmp_path)
    ref = s.to_xarray("d1", chunks=None)
    cases = {
        "auto": ((3, 3, 3, 3), (4,)),
        None: None,
        (): None,
    }
    assert s.to_xarray("d1")["t"].data.chunks == cases["auto"]
    assert isinstance(s.to_xarray("d1", chunks=None)["t"].data, np.ndarray)
    for spec, want in [({}, ((3, 3, 3, 3), (4,))), ({"time": 6}, ((6, 6), (4,))), ({"time": -1, "x": 3}, ((12,), (3, 1))),
                       (5, ((5, 5, 2), (4,))), ({"time": None}, ((12,), (4,))), ({"nodim": 2}, ((3, 3, 3, 3), (4,)))]:
        got = s.to_xarray("d1", chunks=spec)
        assert got["t"].data.chunks == want, spec
        xr.testing.assert_identical(got.load(), ref)
    # {} makes arrays stored as one chunk lazy too (what xarray's open_dataset(chunks={}) does)
    s.create_dataset("one").define_array("v", "int16", ["x"], [6])
    assert isinstance(s.to_xarray("one")["v"].data, np.ndarray)
    assert s.to_xarray("one", chunks={})["v"].data.chunks == ((6,),)


@pytest.mark.parametrize("bad, exc", [("big", ValueError), ({"time": 0}, ValueError), ({"time": 2.5}, ValueError),
                                      ((3,), TypeError), (object(), TypeError), (True, TypeError)])
def test_to_xarray_rejects_bad_chunks(tmp_path, bad, exc):
    s = _five_chunked(tmp_path)
    with pytest.raises(exc, match="chunks"):
        s.to_xarray("d1", chunks=bad).load()
    with pytest.raises(exc, match="chunks"):
        s.to_xarray_many(["d0", "d1"], chunks=bad)


def test_to_xarray_many_honours_chunks(tmp_path):
    s = _five_chunked(tmp_path)
    names = s.list_datasets()
    ref = s.to_xarray_many(names)
    for spec, want in [("auto", ((5,), (3, 3, 3, 3), (4,))), ({"dataset": 2}, ((2, 2, 1), (3, 3, 3, 3), (4,))),
                       ({"dataset": 2, "time": 12}, ((2, 2, 1), (12,), (4,))), (2, ((2, 2, 1), (2,) * 6, (2, 2))),
                       ({"dataset": -1, "x": None, "time": 6}, ((5,), (6, 6), (4,)))]:
        got = s.to_xarray_many(names, chunks=spec)
        assert got["t"].data.chunks == want, spec
        xr.testing.assert_identical(got.load(), ref)
