"""Real NetCDF collections: every CF encoding xarray reads goes in and comes back identical.

A corpus written here with xarray and netCDF4 (one file per case: float/int-encoded times
and time bounds with NaN/int fills, bytes fills on char variables, packed and _Unsigned
variables, missing_value beside _FillValue, groups, unlimited dims, string coordinates)
plus the sample files scipy and xarray ship as test data go through add_xr_dataset,
Atlas.ingest, the CLI and engine="atlas", each compared with xr.open_dataset.
"""

from __future__ import annotations

import glob
import os
import shutil

import netCDF4
import numpy as np
import pandas as pd
import pytest
import scipy
import xarray as xr

import atlas
from atlas import Atlas
from atlas.cli import main
from atlas.errors import IngestError
from atlas.integrations import _chunking

# xarray warns when it decodes a variable with two fill values (it masks both): expected here
pytestmark = pytest.mark.filterwarnings("ignore:variable .* has multiple fill values:xarray.SerializationWarning")

CF_KEYS = ("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned", "units", "calendar")


def _times_file(path: str) -> None:
    t = pd.date_range("2001-01-01", periods=6, freq="6h").values.copy()
    t[2] = np.datetime64("NaT")
    bounds = np.stack([t - np.timedelta64(3, "h"), t + np.timedelta64(3, "h")], axis=1)
    bounds[4, 1] = np.datetime64("NaT")
    ds = xr.Dataset({"t_float": ("n", t), "t_bnds": (("n", "nv"), bounds), "x": ("n", np.arange(6.0))},
                    attrs={"title": "float-encoded times with NaN fills"})
    for v in ("t_float", "t_bnds"):  # what xarray writes for float-encoded times with a missing value
        ds[v].encoding = {"dtype": "float64", "units": "hours since 2001-01-01", "_FillValue": np.nan}
    ds.to_netcdf(path, format="NETCDF4")
    with netCDF4.Dataset(path, "a") as nc:  # an int-encoded time with an int fill
        v = nc.createVariable("t_int", "i4", ("n",), fill_value=np.int32(-9999))
        v.units = "days since 1990-01-01"
        v.calendar = "standard"
        v[:] = np.ma.masked_equal(np.array([0, 1, -9999, 3, 4, 5], "i4"), -9999)


def _packed_file(path: str) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)  # unlimited
        nc.createDimension("y", 4)
        p = nc.createVariable("sst", "i2", ("time", "y"), fill_value=np.int16(-32767))
        p.scale_factor = np.float32(0.01)
        p.add_offset = np.float32(20.0)
        p.units = "degC"
        p.set_auto_maskandscale(False)
        raw = np.arange(-600, 600, 50, dtype="i2").reshape(6, 4)
        raw[1, 2] = raw[4, 0] = -32767
        p[:] = raw
        u = nc.createVariable("count", "i1", ("time", "y"), fill_value=np.int8(-1))
        u._Unsigned = "true"
        u.set_auto_maskandscale(False)
        c = np.arange(24, dtype="i1").reshape(6, 4) * 10  # wraps past 127: the unsigned values are > 127
        c[0, 0] = -1
        u[:] = c
        m = nc.createVariable("depth", "f4", ("time", "y"), fill_value=np.float32(-1e30))
        m.missing_value = np.float32(-999.0)
        m.set_auto_maskandscale(False)
        d = np.linspace(1, 10, 24, dtype="f4").reshape(6, 4)
        d[0, 1], d[5, 3] = -999.0, -1e30
        m[:] = d
        big = nc.createVariable("dens", "f8", ("time", "y"), fill_value=-1e30)
        big.set_auto_maskandscale(False)
        b = np.ones((6, 4))
        b[2:, 1] = -1e30
        big[:] = b


def _chars_file(path: str) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("station", 3)
        nc.createDimension("strlen", 4)
        s = nc.createVariable("station", str, ("station",))  # a string dimension coordinate
        for i, name in enumerate(["De Bilt", "Ukkel", "Zürich"]):
            s[i] = name
        c = nc.createVariable("flag", "S1", ("station",), fill_value=b"b")  # masked chars: NaN in object data
        c[:] = np.array([b"a", b"b", b"c"])
        code = nc.createVariable("code", "S1", ("station", "strlen"))
        code[:] = netCDF4.stringtochar(np.array([b"ab", b"cdef", b"g"], "S4"))
        v = nc.createVariable("temp", "f4", ("station",))
        v[:] = [1.5, np.nan, 3.0]
        v.coordinates = "station"


def _groups_file(path: str) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = "groups"
        for gname, n in (("sensors", 3), ("sensors/deep", 2), ("meta", 1)):
            g = nc.createGroup(gname)
            g.createDimension("k", n)
            v = g.createVariable("v", "f8", ("k",), fill_value=-1.0)
            v.set_auto_mask(False)
            vals = np.arange(n, dtype="f8")
            vals[0] = -1.0
            v[:] = vals


def _empty_root_file(path: str) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        g = nc.createGroup("only")
        g.createDimension("k", 2)
        g.createVariable("v", "f8", ("k",))[:] = [1.0, 2.0]


CORPUS = {"times": _times_file, "packed": _packed_file, "chars": _chars_file}


def _shipped() -> list[str]:
    """The sample .nc files scipy and xarray ship as test data (whatever of them is installed)."""
    found = []
    for mod in (scipy, xr):
        root = os.path.dirname(mod.__file__)
        found += sorted(glob.glob(os.path.join(root, "**", "tests", "data", "*.nc"), recursive=True))
    return found


SHIPPED = _shipped()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    files = {}
    for name, make in CORPUS.items():
        files[name] = str(folder / f"{name}.nc")
        make(files[name])
    for i, src in enumerate(SHIPPED):  # copies: file names unique as dataset names
        dst = folder / f"shipped{i}_{os.path.basename(src)}"
        shutil.copyfile(src, dst)
        files[dst.stem] = str(dst)
    return folder, files


def _ref(path: str, **kw) -> xr.Dataset:
    with xr.open_dataset(path, **kw) as ds:
        return ds.load()


def _check_stats(view, ds: xr.Dataset, where: str) -> None:
    """null_count is the number of cells that read as missing (NaN, NaT, masked strings)."""
    for v in ds.variables:
        s = view.array_stats(v)
        expected = int(ds[v].isnull().sum())
        assert s is not None and s["null_count"] == expected, (where, v, s, expected)
        if expected < ds[v].size and ds[v].dtype.kind in "fM":
            vals = ds[v].values[~ds[v].isnull().values]
            assert s["min"] == vals.min() and s["max"] == vals.max(), (where, v, s)


def _check_encoding(back: xr.Dataset, ref: xr.Dataset, where: str) -> None:
    for v in ref.variables:
        want = {k: ref[v].encoding[k] for k in CF_KEYS if k in ref[v].encoding}
        got = {k: back[v].encoding.get(k) for k in want}
        for k in want:
            w, g = np.asarray(want[k]), np.asarray(got[k])
            assert w.dtype == g.dtype or k == "dtype", (where, v, k, want[k], got[k])
            assert (w == g).all() or (np.isnan(w).all() and np.isnan(g).all() if w.dtype.kind == "f" else False), \
                (where, v, k, want[k], got[k])


def test_shipped_samples_found():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"example_1.nc", "example_3_maskedvals.nc", "bears.nc"} <= names, names


def test_corpus_through_add_xr_dataset(corpus, tmp_path):
    _, files = corpus
    with Atlas.create(tmp_path / "s") as store:
        for name, path in files.items():
            store.add_xr_dataset(_ref(path), name)
    store = Atlas.open(tmp_path / "s")
    for name, path in files.items():
        ref = _ref(path)
        back = store.to_xarray(name).load()
        xr.testing.assert_identical(back, ref)
        _check_encoding(back, ref, name)
        _check_stats(store.open_dataset(name), ref, name)
        lazy = store.to_xarray(name, chunks={}).load()  # dask reads decode the same way
        xr.testing.assert_identical(lazy, ref)


def test_features_are_really_exercised(corpus):
    _, files = corpus
    times, packed, chars = (_ref(files[k]) for k in ("times", "packed", "chars"))
    assert times["t_float"].encoding["dtype"] == np.float64 and np.isnan(times["t_float"].encoding["_FillValue"])
    assert int(times["t_bnds"].isnull().sum()) == 3 and int(times["t_int"].isnull().sum()) == 1
    assert packed["sst"].encoding["dtype"] == np.int16 and "scale_factor" in packed["sst"].encoding
    assert packed["count"].encoding["_Unsigned"] == "true" and float(packed["count"].max()) > 127
    assert "missing_value" in packed["depth"].encoding and int(packed["depth"].isnull().sum()) == 2
    assert chars["flag"].dtype == object and isinstance(chars["flag"].encoding["_FillValue"], bytes)
    assert chars["flag"].isnull().values.tolist() == [False, True, False]
    assert chars["station"].dtype.kind == "U" and "station" in chars.indexes


def test_null_count_counts_decoded_missing_cells(corpus, tmp_path):
    """A float decoded from a -1e30 fill: NaN is the atlas fill, so null_count counts the NaN cells."""
    _, files = corpus
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(_ref(files["packed"]), "p")
    store.flush()
    view = store.open_dataset("p")
    assert np.isnan(view.array_fill_value("dens"))
    assert view.array_stats("dens")["null_count"] == 4
    assert view.array_stats("dens")["max"] == 1.0


def test_packing_reproduced_by_to_netcdf(corpus, tmp_path):
    _, files = corpus
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(_ref(files["packed"]), "p")
    back = store.to_xarray("p")
    back.drop_vars("depth").to_netcdf(tmp_path / "again.nc")  # depth: xarray cannot write two fills (nor the source)
    with netCDF4.Dataset(tmp_path / "again.nc") as nc:
        assert nc["sst"].dtype == np.int16 and nc["count"].dtype == np.int8
        assert float(nc["sst"].scale_factor) == pytest.approx(0.01) and nc["count"]._Unsigned == "true"
        assert nc["sst"]._FillValue == -32767 and nc["dens"]._FillValue == -1e30
    xr.testing.assert_identical(_ref(str(tmp_path / "again.nc")), _ref(files["packed"]).drop_vars("depth"))


def test_ingest_api_and_cli_and_backend(corpus, tmp_path):
    folder, files = corpus
    store = Atlas.create(tmp_path / "api")
    added = store.ingest([str(folder / "*.nc")], groups="all")
    store.flush()
    assert sorted(added) == sorted(files) and added.refused == []
    code = main(["ingest", str(tmp_path / "cli"), str(folder / "*.nc"), "--create", "--groups", "all", "--no-progress"])
    assert code == 0
    for where in ("api", "cli"):
        st = Atlas.open(tmp_path / where)
        for name, path in files.items():
            ref = _ref(path)
            xr.testing.assert_identical(st.to_xarray(name).load(), ref)
            _check_stats(st.open_dataset(name), ref, f"{where}:{name}")
            with xr.open_dataset(tmp_path / where, engine="atlas", group=name) as via_engine:
                xr.testing.assert_identical(via_engine.load(), ref)


# xarray keeps one fill when it encodes a variable that had two: the cells masked by
# missing_value come back as _FillValue when not decoded (the store holds decoded data)
TWO_FILLS = {"depth", "var3_fillvalAndMissingValue"}


@pytest.mark.parametrize("kw", [{"decode_times": False}, {"mask_and_scale": False}, {"decode_cf": False},
                                {"concat_characters": False}, {"decode_coords": False}, {"use_cftime": True},
                                {"decode_timedelta": False}, {"drop_variables": ["x", "code", "temp"]},
                                {"decode_times": False, "mask_and_scale": False, "chunks": {}}])
@pytest.mark.filterwarnings("ignore:Usage of 'use_cftime' as a kwarg is deprecated:FutureWarning")  # xarray's, both sides
def test_backend_takes_xarray_decoding_keywords(corpus, tmp_path, kw):
    _, files = corpus
    store = Atlas.create(tmp_path / "s")
    for name, path in files.items():
        store.add_xr_dataset(_ref(path), name)
    store.flush()
    for name, path in files.items():
        try:
            ref = _ref(path, **kw)
        except OverflowError:  # xarray cannot decode the int-encoded time with a fill as cftime: nor can we
            with pytest.raises(OverflowError):
                xr.open_dataset(tmp_path / "s", engine="atlas", group=name, **kw).load()
            continue
        with xr.open_dataset(tmp_path / "s", engine="atlas", group=name, **kw) as back:
            if "chunks" in kw:
                assert all(v.chunks is not None for v in back.data_vars.values() if v.ndim)
            back = back.load()
        if kw.get("mask_and_scale") is False or kw.get("decode_cf") is False:
            ref, back = ref.drop_vars(TWO_FILLS, errors="ignore"), back.drop_vars(TWO_FILLS, errors="ignore")
        xr.testing.assert_identical(back, ref)


def test_groups_become_datasets(tmp_path):
    path = str(tmp_path / "g.nc")
    _groups_file(path)
    store = Atlas.create(tmp_path / "s")
    assert sorted(store.ingest(path, groups="all")) == ["g", "g.meta", "g.sensors", "g.sensors.deep"]
    for group, name in (("sensors/deep", "g.sensors.deep"), ("meta", "g.meta")):
        ref = _ref(path, group=group)
        xr.testing.assert_identical(store.to_xarray(name), ref)
    store.flush()
    assert store.open_dataset("g.sensors").array_stats("v")["null_count"] == 1
    assert store.open_dataset("g").attributes()["title"] == "groups"


def test_empty_root_with_groups_is_refused_not_silent(tmp_path):
    path = str(tmp_path / "e.nc")
    _empty_root_file(path)
    store = Atlas.create(tmp_path / "s")
    with pytest.raises(IngestError, match=r"e\.nc.*groups='all'"):
        store.ingest(path)
    assert store.list_datasets() == []
    assert store.ingest(path, groups="all") == ["e", "e.only"]


def test_ingest_open_kwargs_and_cli_flags(corpus, tmp_path, capsys):
    _, files = corpus
    store = Atlas.create(tmp_path / "s")
    store.ingest(files["times"], open_kwargs={"decode_times": False, "drop_variables": ["x"]})
    xr.testing.assert_identical(store.to_xarray("times"), _ref(files["times"], decode_times=False, drop_variables=["x"]))
    code = main(["ingest", str(tmp_path / "c"), files["packed"], "--create", "--no-decode-times",
                 "--no-mask-and-scale", "--drop-variables", "count,depth", "--engine", "netcdf4"])
    assert code == 0, capsys.readouterr().err
    ref = _ref(files["packed"], mask_and_scale=False, drop_variables=["count", "depth"])
    assert ref["sst"].dtype == np.int16
    xr.testing.assert_identical(Atlas.open(tmp_path / "c").to_xarray("packed"), ref)


def test_skip_errors_reports_refused_files(corpus, tmp_path, capsys):
    folder, files = corpus
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "a_garbage.nc").write_bytes(b"not a netcdf file at all")
    _noleap_file(str(bad / "b_noleap.nc"))
    shutil.copyfile(files["packed"], bad / "c_good.nc")
    store = Atlas.create(tmp_path / "s")
    with pytest.raises(IngestError, match="a_garbage.nc"):
        store.ingest(str(bad / "*.nc"))
    assert store.list_datasets() == []
    added = store.ingest(str(bad / "*.nc"), on_error="skip")
    assert added == ["c_good"]
    refused = dict(added.refused)
    assert sorted(os.path.basename(p) for p in refused) == ["a_garbage.nc", "b_noleap.nc"]
    assert "'when'" in refused[str(bad / "b_noleap.nc")] and "cftime" in refused[str(bad / "b_noleap.nc")]
    assert all("\n" not in r for r in refused.values())
    code = main(["ingest", str(tmp_path / "cli"), str(bad / "*.nc"), "--create", "--skip-errors"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "skipped" in err and "a_garbage.nc" in err and "b_noleap.nc" in err and "skipped 2 of 3 files" in out
    assert Atlas.open(tmp_path / "cli").list_datasets() == ["c_good"]
    code = main(["ingest", str(tmp_path / "gone"), str(bad / "*.nc"), "--create"])
    assert code == 1 and not (tmp_path / "gone").exists()  # a failed --create leaves no store


def _noleap_file(path: str) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", 2)
        v = nc.createVariable("when", "f8", ("t",))
        v.units, v.calendar = "days since 2000-01-01", "noleap"
        v[:] = [0, 59]


def test_cftime_calendar_error_names_file_and_variable(tmp_path):
    path = str(tmp_path / "noleap.nc")
    _noleap_file(path)
    with pytest.raises(IngestError, match=r"noleap\.nc.*'when'.*decode_times=False"):
        Atlas.create(tmp_path / "s").ingest(path)


def test_default_chunking_caps_chunk_size(tmp_path):
    f32 = np.dtype("f4")
    v = xr.Variable(("time", "lat", "lon"), np.empty((300, 180, 360), f32))
    c = _chunking.chunk_shape(v, {})
    assert np.prod(c) * 4 <= _chunking.TARGET and np.prod(c) * 4 > _chunking.TARGET // 8, c
    small = xr.Variable(("x",), np.empty(1000, f32))
    assert _chunking.chunk_shape(small, {}) == [1000]
    aligned = xr.Variable(("time", "lat", "lon"), np.empty((300, 180, 360), f32),
                          encoding={"chunksizes": (10, 90, 90)})
    c = _chunking.chunk_shape(aligned, {})
    assert [a % b for a, b in zip(c, (10, 90, 90))] == [0, 0, 0] and np.prod(c) * 4 <= _chunking.CAP, c
    assert _chunking.chunk_shape(v, {"time": 24, "lat": None})[:2] == [24, 180]
    assert _chunking.parse_chunks("time=24,lat=-1") == {"time": 24, "lat": None}
    with pytest.raises(ValueError, match="lat"):
        _chunking.parse_chunks("time=24,lat=x")
    # through ingest: a 12 MiB variable is no longer one chunk; chunks= fixes the named dims
    path = str(tmp_path / "big.nc")
    xr.Dataset({"f": (("time", "y", "x"), np.zeros((48, 256, 256), f32))}).to_netcdf(path)
    store = Atlas.create(tmp_path / "s")
    store.ingest(path)
    assert np.prod(store.open_dataset("big").array_meta("f")["chunk_shape"]) * 4 <= _chunking.TARGET
    store.ingest(path, name_from="name", chunks={"time": 24, "y": -1})
    assert store.open_dataset("big.nc").array_meta("f")["chunk_shape"][:2] == [24, 256]
    with pytest.raises(IngestError, match="'tim'"):
        Atlas.create(tmp_path / "s2").ingest(path, chunks={"tim": 24})


def test_lone_surrogates_in_attributes(tmp_path):
    ds = xr.Dataset({"o2": ("x", np.arange(2.0), {"units": "\udcc2\udcb5mol kg-1"})},
                    attrs={"institution": "Universit\udce9", "odd": "a\ud800b"})
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(ds, "d")
    back = store.to_xarray("d")
    assert back["o2"].attrs["units"] == "µmol kg-1"  # UTF-8 bytes, surrogate-escaped
    assert back.attrs["institution"] == "Université"  # not UTF-8: read as Latin-1
    assert back.attrs["odd"] == "a\ufffdb"
    with pytest.raises(ValueError, match="not valid Unicode"):  # the direct API keeps refusing them
        store.open_dataset("d").set_attribute("units", "\udcc2\udcb5mol")


def test_strings_with_missing_cells_round_trip(tmp_path):
    ds = xr.Dataset({"s": ("x", np.array(["a", None, "", "b"], dtype=object)),
                     "b": ("x", np.array([b"\xff", b"z", float("nan"), b""], dtype=object))})
    store = Atlas.create(tmp_path / "s")
    store.add_xr_dataset(ds, "d")
    store.flush()
    xr.testing.assert_identical(store.to_xarray("d"), ds)
    assert store.open_dataset("d").array_stats("s")["null_count"] == 1
    assert store.open_dataset("d").array_stats("b")["null_count"] == 1


def test_reference_compatibility(tmp_path):
    store = Atlas.create(tmp_path / "s", codec="uncompressed", meta_compression="uncompressed")
    assert store.codec == "none" and store.meta_compression == "none"
    view = store.create_dataset("d")
    for short, full in (("i8", "int8"), ("i16", "int16"), ("i32", "int32"), ("i64", "int64"), ("u8", "uint8"),
                        ("u16", "uint16"), ("u32", "uint32"), ("u64", "uint64"), ("f32", "float32"), ("f64", "float64")):
        view.define_array(f"a_{short}", short, ["x"], [2])
        assert view.array_meta(f"a_{short}")["dtype"] == full
    view.define_array("t", "timestamp_nanoseconds", ["x"], [2])
    ns = np.array([0, 1_700_000_000_123_456_789], np.int64)
    view.write_array("t", [0], ns)
    np.testing.assert_array_equal(view.read_array("t"), ns.view("datetime64[ns]"))
    assert atlas.Atlas.open(tmp_path / "s").meta_compression == "none"
