"""The ``atlas`` command line (atlas.cli.main), ``python -m atlas`` and ``atlas.show_versions()``."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import types

import netCDF4
import numpy as np
import pytest
import xarray as xr

import atlas
from atlas import cli
from atlas.integrations import _ingest
from atlas._versions import show_versions

NAN = float("nan")


# ------------------------------------------------------------------------------- helpers
def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def disk_bytes(root, sub=""):
    total = 0
    for d, _, files in os.walk(os.path.join(root, sub)):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total


def array_dir(root, name):
    hits = [d for d in os.listdir(os.path.join(root, "arrays")) if d.startswith(name + "-")]  # <slug>-<hash>
    assert len(hits) == 1, hits
    return os.path.join("arrays", hits[0])


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


TEMP = np.arange(8 * 16, dtype=np.float32).reshape(8, 16) - 40
TEMP[2, 3] = NAN


@pytest.fixture
def store_path(tmp_path):
    """Two datasets; 'temperature' has two shapes and 'count' two dtypes across them."""
    path = tmp_path / "store"
    with atlas.Atlas.create(path) as s:
        jan = s.create_dataset("jan")
        jan.define_array("temperature", "float32", ["lat", "lon"], [8, 16], [4, 8], fill_value=NAN)
        jan.write_array("temperature", [0, 0], TEMP)
        jan.define_array("count", "int32", ["lat"], [8])
        jan.write_array("count", [0], np.arange(8, dtype=np.int32) * 3)
        jan.define_array("station", "string", ["s"], [2])
        jan.write_array("station", [0], np.array(["De Bilt", "Cabauw"], dtype=object))
        jan.set_attribute("month", 1)
        jan.set_attribute("title", "January")
        feb = s.create_dataset("feb")
        feb.define_array("temperature", "float32", ["lat", "lon"], [4, 8], [4, 8], fill_value=NAN)
        feb.write_array("temperature", [0, 0], np.full((4, 8), 5.5, np.float32))
        feb.define_array("count", "int64", ["lat"], [4])
        feb.write_array("count", [0], np.arange(4, dtype=np.int64))
    return path


# ------------------------------------------------------------------------------- --version
def test_version_flag(capsys):
    code, out, err = run(capsys, "--version")
    assert code == 0
    assert out == f"atlas {atlas.__version__}\n"


def test_python_m_atlas_version():
    r = subprocess.run([sys.executable, "-m", "atlas", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"atlas {atlas.__version__}"


def test_python_m_atlas_error_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "atlas", "ls", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "no atlas store" in one_error_line(r.stderr)


# ------------------------------------------------------------------------------- usage
@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["info"], ["ingest", "s"], ["ingest", "s", "*.nc", "--jobs", "0"],
                                  ["stats", "s"]])
def test_usage_errors_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "usage: atlas" in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for cmd in ("info", "ls", "stats", "ingest", "compact", "verify"):
        assert cmd in out


# ------------------------------------------------------------------------------- info
def test_info_text(capsys, store_path):
    code, out, err = run(capsys, "info", store_path)
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert f"store:       {os.path.abspath(store_path)}" in lines
    assert "codec:       zstd" in lines
    assert "metadata:    json (compression: none)" in lines
    assert "generation:  1" in lines
    assert "datasets:    2" in lines
    assert "arrays:      3" in lines
    total = disk_bytes(store_path)
    assert f"({total} bytes)" in out
    row = next(line for line in lines if line.startswith("temperature "))
    assert "float32" in row and "[8, 16] [4, 8]" in row
    row = next(line for line in lines if line.startswith("count "))
    assert "int32, int64" in row


def test_info_json_counts_and_sizes(capsys, store_path):
    code, out, _ = run(capsys, "info", store_path, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["location"] == os.path.abspath(store_path)
    assert (info["codec"], info["meta_format"], info["meta_compression"]) == ("zstd", "json", "none")
    assert info["datasets"] == 2
    assert info["generation"] == 1
    assert info["bytes"] == disk_bytes(store_path) > 0
    arrays = {a["name"]: a for a in info["arrays"]}
    assert list(arrays) == ["temperature", "count", "station"]
    assert arrays["temperature"]["shapes"] == [[8, 16], [4, 8]]
    assert arrays["temperature"]["dtypes"] == ["float32"]
    assert arrays["count"]["dtypes"] == ["int32", "int64"]
    assert arrays["station"]["datasets"] == 1
    for name, a in arrays.items():
        assert a["bytes"] == disk_bytes(store_path, array_dir(store_path, name)) > 0, name
    assert sum(a["bytes"] for a in arrays.values()) < info["bytes"]  # + the metadata file


def test_info_other_codec_and_metadata(capsys, tmp_path):
    path = tmp_path / "s"
    with atlas.Atlas.create(path, codec="lz4", meta_format="msgpack", meta_compression="zstd") as s:
        s.create_dataset("only")
    code, out, _ = run(capsys, "info", path, "--json")
    info = json.loads(out)
    assert (info["codec"], info["meta_format"], info["meta_compression"]) == ("lz4", "msgpack", "zstd")
    assert info["datasets"] == 1 and info["arrays"] == []
    code, out, _ = run(capsys, "info", path)
    assert "metadata:    msgpack (compression: zstd)" in out


# ------------------------------------------------------------------------------- ls
def test_ls_datasets_in_creation_order(capsys, store_path):
    code, out, _ = run(capsys, "ls", store_path)
    assert code == 0
    assert out.splitlines() == ["jan", "feb"]
    code, out, _ = run(capsys, "ls", store_path, "--json")
    assert json.loads(out) == ["jan", "feb"]


def test_ls_dataset(capsys, store_path):
    code, out, _ = run(capsys, "ls", store_path, "jan")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "dataset: jan"
    row = next(line for line in lines if line.strip().startswith("temperature"))
    assert row.split() == ["temperature", "float32", "[8,", "16]", "[4,", "8]", "(lat,", "lon)", "nan"]
    row = next(line for line in lines if line.strip().startswith("station"))
    assert row.split()[:2] == ["station", "string"]
    assert "  month = 1" in lines
    assert "  title = 'January'" in lines

    code, out, _ = run(capsys, "ls", store_path, "feb", "--json")
    d = json.loads(out)
    assert d["dataset"] == "feb"
    assert d["attributes"] == {}
    assert [(a["name"], a["dtype"], a["shape"], a["chunk_shape"], a["dims"]) for a in d["arrays"]] == [
        ("temperature", "float32", [4, 8], [4, 8], ["lat", "lon"]),
        ("count", "int64", [4], [4], ["lat"]),
    ]


def test_ls_hides_reserved_attributes_unless_all(capsys, tmp_path):
    path = tmp_path / "s"
    with atlas.Atlas.create(path) as s:
        s.add_xr_dataset(xr.Dataset({"v": ("x", np.arange(3.0))}, attrs={"title": "t"}), "d")
    code, out, _ = run(capsys, "ls", path, "d", "--json")
    assert json.loads(out)["attributes"] == {"title": "t"}
    code, out, _ = run(capsys, "ls", path, "d", "--json", "--all")
    attrs = json.loads(out)["attributes"]
    assert attrs["title"] == "t" and any(k.startswith("_") for k in attrs)


def test_ls_missing_dataset(capsys, store_path):
    code, out, err = run(capsys, "ls", store_path, "mar")
    assert code == 1 and out == ""
    assert one_error_line(err) == f"atlas ls: error: no dataset named 'mar' in {os.path.abspath(store_path)!r}"


# ------------------------------------------------------------------------------- stats
def test_stats_all_arrays(capsys, store_path):
    code, out, _ = run(capsys, "stats", store_path, "jan", "--json")
    assert code == 0
    st = json.loads(out)
    assert list(st) == ["temperature", "count", "station"]
    valid = TEMP[~np.isnan(TEMP)]
    assert st["temperature"] == {"row_count": 128, "null_count": 1, "min": float(valid.min()), "max": float(valid.max())}
    assert st["count"] == {"row_count": 8, "null_count": 0, "min": 0, "max": 21}
    assert st["station"]["min"] == "Cabauw" and st["station"]["max"] == "De Bilt"

    code, out, _ = run(capsys, "stats", store_path, "jan")
    row = next(line for line in out.splitlines() if line.startswith("temperature"))
    assert row.split() == ["temperature", "float32", "128", "1", "-40.0", "87.0"]


def test_stats_one_array_and_errors(capsys, store_path):
    code, out, _ = run(capsys, "stats", store_path, "feb", "count", "--json")
    assert code == 0
    assert json.loads(out) == {"count": {"row_count": 4, "null_count": 0, "min": 0, "max": 3}}
    code, out, err = run(capsys, "stats", store_path, "feb", "station")
    assert code == 1 and out == ""
    assert "array 'station' is not defined in dataset 'feb'" in one_error_line(err)
    code, _, err = run(capsys, "stats", store_path, "nope")
    assert code == 1 and "no dataset named 'nope'" in one_error_line(err)


# ------------------------------------------------------------------------------- errors
def test_missing_store_one_line_and_traceback_with_v(capsys, tmp_path):
    missing = tmp_path / "nothing_here"
    for cmd in ("info", "ls", "compact", "verify"):
        code, out, err = run(capsys, cmd, missing)
        assert code == 1 and out == ""
        assert one_error_line(err).startswith(f"atlas {cmd}: error: no atlas store")
    assert not missing.exists()  # nothing was created
    code, _, err = run(capsys, "-v", "info", missing)
    assert code == 1
    assert "Traceback" in err and "FileNotFoundError" in err
    code, _, err = run(capsys, "info", missing, "-v")  # -v also after the subcommand
    assert code == 1 and "Traceback" in err


def test_not_a_store_directory(capsys, tmp_path):
    code, _, err = run(capsys, "info", tmp_path)
    assert code == 1 and "no atlas store" in one_error_line(err)


def test_corrupt_metadata_is_one_line(capsys, store_path):
    (store_path / "atlas.meta").write_bytes(b"garbage" * 10)
    code, _, err = run(capsys, "info", store_path)
    assert code == 1
    assert one_error_line(err).startswith("atlas info: error: ")


def test_keyboard_interrupt_exits_130(capsys, store_path, monkeypatch):
    def boom(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_ls", boom)
    code, _, err = run(capsys, "ls", store_path)
    assert code == 130 and "interrupted" in err


def test_bugs_are_not_swallowed(capsys, store_path, monkeypatch):
    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_cmd_info", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["info", str(store_path)])


def test_logging_setup_is_undone(capsys, store_path):
    pkg = logging.getLogger("atlas")
    before = (pkg.level, list(pkg.handlers))
    code, _, err = run(capsys, "-vv", "compact", store_path)
    assert code == 0
    assert "INFO atlas.store: compacted" in err
    assert (pkg.level, list(pkg.handlers)) == before
    code, _, err = run(capsys, "compact", store_path)  # quiet without -v
    assert code == 0 and err == ""


# ------------------------------------------------------------------------------- compact / verify
def test_compact_reclaims_space(capsys, store_path):
    s = atlas.Atlas.open(store_path)
    s.delete_dataset("jan")
    s.flush()
    code, out, err = run(capsys, "expire", store_path, "--keep-last", "1")  # versions are kept until expired
    assert code == 0, err
    before = disk_bytes(store_path)
    code, out, err = run(capsys, "compact", store_path)
    assert code == 0, err
    after = disk_bytes(store_path)
    assert after < before
    assert out.startswith(f"compacted {os.path.abspath(store_path)}: ")
    assert f"({before - after} bytes freed)" in out
    back = atlas.Atlas.open(store_path)
    assert back.list_datasets() == ["feb"]
    np.testing.assert_array_equal(back.open_dataset("feb").read_array("temperature"), np.full((4, 8), 5.5, np.float32))


def test_verify_ok(capsys, store_path):
    if not hasattr(atlas.Atlas, "verify"):
        pytest.skip("Atlas.verify not available")
    code, out, err = run(capsys, "verify", store_path)
    assert code == 0, err
    assert out.startswith(f"{os.path.abspath(store_path)}: OK")


def test_verify_finds_a_flipped_byte(capsys, store_path):
    if not hasattr(atlas.Atlas, "verify"):
        pytest.skip("Atlas.verify not available")
    d = os.path.join(store_path, array_dir(store_path, "temperature"))
    seg = os.path.join(d, sorted(os.listdir(d))[0])
    with open(seg, "rb") as f:
        data = bytearray(f.read())
    data[40] ^= 0x10  # inside the first frame
    with open(seg, "wb") as f:
        f.write(bytes(data))
    code, out, err = run(capsys, "verify", store_path)
    assert code == 1
    assert out.strip(), "the problems are listed on stdout"
    assert "problem(s) found" in err


def test_verify_reports_problems(capsys, store_path, monkeypatch):
    monkeypatch.setattr(atlas.Atlas, "verify", lambda self: ["arrays/x: bad frame", "arrays/y: truncated"], raising=False)
    code, out, err = run(capsys, "verify", store_path)
    assert code == 1
    assert out.splitlines() == ["arrays/x: bad frame", "arrays/y: truncated"]
    assert "2 problem(s) found" in err


# ------------------------------------------------------------------------------- ingest
def write_nc(path, i):
    """A small NetCDF-4 file: CF times, packed ints with _FillValue, floats, vlen strings, attributes."""
    rng = np.random.default_rng(i)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 3)
        nc.createDimension("lon", 4)
        nc.createDimension("station", 2)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "hours since 2024-01-01 00:00:00", "standard"
        t[:] = np.arange(2) + 24 * i
        nc.createVariable("lat", "f4", ("lat",))[:] = [50.0, 51.5, 53.0]
        nc.createVariable("lon", "f4", ("lon",))[:] = np.arange(4) * 0.5 + 3
        sst = nc.createVariable("sst", "i2", ("time", "lat", "lon"), fill_value=np.int16(-32767))
        sst.scale_factor, sst.add_offset, sst.units = np.float32(0.01), np.float32(20.0), "degC"
        sst.set_auto_maskandscale(False)
        raw = rng.integers(-3000, 3000, (2, 3, 4)).astype(np.int16)
        raw[0, 0, i % 4] = -32767
        sst[:] = raw
        nc.createVariable("wind", "f8", ("time", "lat", "lon"))[:] = rng.random((2, 3, 4))
        name = nc.createVariable("station_name", str, ("station",))
        name[0], name[1] = f"buoy {i}", "Noordwijk"
        nc.title, nc.file_number = f"observations {i}", np.int32(i)


@pytest.fixture
def nc_dir(tmp_path):
    d = tmp_path / "nc"
    d.mkdir()
    for i in range(4):
        write_nc(str(d / f"obs_{i:02d}.nc"), i)
    # one written by xarray itself (netCDF4 engine), same schema family
    xr.Dataset({"wind": (("time", "lat", "lon"), np.ones((1, 3, 4)))}, attrs={"title": "xr"}).to_netcdf(d / "obs_99.nc")
    return d


def assert_matches_files(store_path, files, names=None):
    store = atlas.Atlas.open(store_path)
    names = names or [os.path.splitext(os.path.basename(f))[0] for f in files]
    assert store.list_datasets() == names
    for f, n in zip(files, names):
        with xr.open_dataset(f) as ref:
            xr.testing.assert_identical(store.to_xarray(n).load(), ref.load())


def test_ingest_creates_store_and_matches_xarray(capsys, tmp_path, nc_dir):
    files = sorted(str(p) for p in nc_dir.glob("*.nc"))
    path = tmp_path / "s"
    code, out, err = run(capsys, "ingest", path, str(nc_dir / "*.nc"), "--create", "--jobs", "3")
    assert code == 0, err
    assert err == ""  # no progress output when stderr is not a terminal
    assert out.startswith(f"ingested 5 files into {os.path.abspath(path)} (5 datasets, generation 1)")
    assert_matches_files(path, files)
    assert atlas.Atlas.open(path).codec == "zstd"


def test_ingest_into_existing_store_flushes_once(capsys, store_path, nc_dir):
    files = [str(nc_dir / "obs_00.nc"), str(nc_dir / "obs_01.nc")]
    gen = atlas.Atlas.open(store_path).generation
    code, out, err = run(capsys, "ingest", store_path, *files)  # plain paths work as patterns
    assert code == 0, err
    s = atlas.Atlas.open(store_path)
    assert s.generation == gen + 1  # one flush for the whole ingest
    assert s.list_datasets() == ["jan", "feb", "obs_00", "obs_01"]
    with xr.open_dataset(files[1]) as ref:
        xr.testing.assert_identical(s.to_xarray("obs_01").load(), ref.load())


def test_ingest_options_for_a_new_store(capsys, tmp_path, nc_dir):
    path = tmp_path / "s"
    code, _, err = run(capsys, "ingest", path, nc_dir / "obs_0*.nc", "--create", "--codec", "lz4",
                       "--meta-format", "msgpack", "--meta-compression", "zstd", "--name-from", "name", "-j", "1")
    assert code == 0, err
    s = atlas.Atlas.open(path)
    assert (s.codec, s.meta_format, s.meta_compression) == ("lz4", "msgpack", "zstd")
    files = sorted(str(p) for p in nc_dir.glob("obs_0*.nc"))
    assert_matches_files(path, files, [os.path.basename(f) for f in files])


def test_ingest_recursive_glob_and_duplicate_names(capsys, tmp_path, nc_dir):
    sub = nc_dir / "sub"
    sub.mkdir()
    write_nc(str(sub / "deep.nc"), 7)
    path = tmp_path / "s"
    code, _, err = run(capsys, "ingest", path, nc_dir / "**" / "*.nc", "--create")
    assert code == 0, err
    assert "deep" in atlas.Atlas.open(path).list_datasets()

    write_nc(str(sub / "obs_00.nc"), 8)  # same stem as nc/obs_00.nc
    path2 = tmp_path / "s2"
    code, _, err = run(capsys, "ingest", path2, nc_dir / "**" / "*.nc", "--create")
    assert code == 1
    assert "both map to dataset name 'obs_00'" in one_error_line(err)
    assert not path2.exists()  # checked before anything is created


def test_ingest_errors(capsys, tmp_path, store_path, nc_dir):
    missing = tmp_path / "missing"
    code, _, err = run(capsys, "ingest", missing, nc_dir / "*.nc")
    assert code == 1 and "pass --create" in one_error_line(err)
    assert not missing.exists()

    code, _, err = run(capsys, "ingest", store_path, tmp_path / "nomatch" / "*.nc")
    assert code == 1 and "no files match" in one_error_line(err)

    code, _, err = run(capsys, "ingest", store_path, nc_dir / "*.nc", "--codec", "lz4")
    assert code == 1 and "already exists with codec 'zstd'" in one_error_line(err)

    code, _, err = run(capsys, "ingest", store_path, nc_dir / "*.nc", "--create", "--codec", "zstd")
    assert code == 0, err  # the same codec as the existing store is fine
    code, _, err = run(capsys, "ingest", store_path, nc_dir / "obs_00.nc")
    assert code == 1 and "already has dataset(s) 'obs_00'" in one_error_line(err)

    (nc_dir / "_hidden.nc").write_bytes(b"x")
    code, _, err = run(capsys, "ingest", tmp_path / "s3", nc_dir / "_hidden.nc", "--create")
    assert code == 1 and "must not start with '_'" in one_error_line(err)


def test_ingest_is_all_or_nothing(capsys, store_path, nc_dir):
    (nc_dir / "obs_02.nc").write_bytes(b"this is not a netCDF file")
    before = atlas.Atlas.open(store_path)
    gen, names = before.generation, before.list_datasets()
    code, out, err = run(capsys, "ingest", store_path, nc_dir / "*.nc", "-j", "2")
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert "cannot open" in line and "obs_02.nc" in line and "nothing was ingested" in line
    after = atlas.Atlas.open(store_path)
    assert (after.generation, after.list_datasets()) == (gen, names)
    code, _, err = run(capsys, "-v", "ingest", store_path, nc_dir / "*.nc")
    assert code == 1 and "Traceback" in err


def test_ingest_refused_dataset_is_reported(capsys, tmp_path, nc_dir):
    # opens fine with xarray, but atlas refuses the variable name (reserved "_" prefix)
    xr.Dataset({"_x": ("x", np.arange(3.0))}).to_netcdf(nc_dir / "zz_bad.nc")
    path = tmp_path / "s"
    code, _, err = run(capsys, "ingest", path, nc_dir / "*.nc", "--create")
    assert code == 1
    line = one_error_line(err)
    assert "cannot ingest" in line and "zz_bad.nc" in line and "'_x'" in line and "nothing was ingested" in line
    assert not path.exists()  # the store --create made is removed again


def test_ingest_reads_in_worker_threads(capsys, tmp_path, nc_dir, monkeypatch):
    seen = []
    real = _ingest.load

    def spy(path, *a):
        seen.append(threading.current_thread().name)
        return real(path, *a)

    monkeypatch.setattr(_ingest, "load", spy)
    code, _, err = run(capsys, "ingest", tmp_path / "s", nc_dir / "*.nc", "--create", "-j", "2")
    assert code == 0, err
    assert len(seen) == 5 and all(n.startswith("atlas-ingest") for n in seen), seen


def _concurrency_probe(monkeypatch):
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    real = xr.open_dataset

    def probe(*a, **k):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.1)
        with lock:
            state["now"] -= 1
        return real(*a, **k)

    monkeypatch.setattr(xr, "open_dataset", probe)
    return state


def test_ingest_netcdf4_files_open_one_at_a_time(capsys, tmp_path, nc_dir, monkeypatch):
    # netCDF-C/HDF5 are not thread-safe: concurrent opens segfault (pydata/xarray#9779)
    state = _concurrency_probe(monkeypatch)
    code, _, err = run(capsys, "ingest", tmp_path / "s", nc_dir / "*.nc", "--create", "-j", "4")
    assert code == 0, err
    assert state["max"] == 1


def test_ingest_thread_safe_engine_opens_in_parallel(capsys, tmp_path, monkeypatch):
    d = tmp_path / "nc3"
    d.mkdir()
    files = []
    for i in range(4):
        f = str(d / f"f{i}.nc")
        xr.Dataset({"v": ("x", np.arange(5.0) + i)}, attrs={"i": i}).to_netcdf(f, engine="scipy")
        files.append(f)
    state = _concurrency_probe(monkeypatch)
    code, _, err = run(capsys, "ingest", tmp_path / "s", d / "*.nc", "--create", "-j", "4", "--engine", "scipy")
    assert code == 0, err
    assert state["max"] >= 2
    store = atlas.Atlas.open(tmp_path / "s")
    for f in files:
        with xr.open_dataset(f, engine="scipy") as ref:
            xr.testing.assert_identical(store.to_xarray(os.path.splitext(os.path.basename(f))[0]).load(), ref.load())


# ------------------------------------------------------------------------------- progress
def _no_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm.auto -> ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


def test_ingest_progress_bar_without_tqdm(capsys, tmp_path, nc_dir, monkeypatch):
    _no_tqdm(monkeypatch)
    code, _, err = run(capsys, "ingest", tmp_path / "s", nc_dir / "*.nc", "--create", "--progress")
    assert code == 0
    lines = [line for line in err.replace("\n", "\r").split("\r") if line.startswith("ingest: ")]
    assert [line.split()[1] for line in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    code, _, err = run(capsys, "ingest", tmp_path / "s2", nc_dir / "*.nc", "--create", "--no-progress")
    assert code == 0 and err == ""


def test_ingest_progress_uses_tqdm(capsys, tmp_path, nc_dir, monkeypatch):
    bars = []

    class FakeTqdm:
        def __init__(self, total, desc, unit, file, dynamic_ncols):
            self.total, self.n, self.closed, self.thread = total, 0, False, threading.current_thread()
            bars.append(self)

        def update(self, k):
            assert threading.current_thread() is self.thread  # updated from the submitting thread
            self.n += k

        def close(self):
            self.closed = True

    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeTqdm
    pkg = types.ModuleType("tqdm")
    pkg.auto = auto
    monkeypatch.setitem(sys.modules, "tqdm", pkg)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    code, _, err = run(capsys, "ingest", tmp_path / "s", nc_dir / "*.nc", "--create", "--progress", "-j", "3")
    assert code == 0, err
    assert len(bars) == 1
    assert (bars[0].total, bars[0].n, bars[0].closed) == (5, 5, True)


# ------------------------------------------------------------------------------- show_versions
def test_show_versions(monkeypatch):
    import numpy

    monkeypatch.setenv("ATLAS_NUM_THREADS", "3")
    monkeypatch.setenv("ATLAS_SOMETHING", "xyz")
    monkeypatch.setattr("atlas._versions._DEPENDENCIES",
                        (("numpy", "numpy"), ("no-such-package-atlas", "no_such_package_atlas")))
    buf = io.StringIO()
    show_versions(file=buf)
    text = buf.getvalue()
    rows = {}
    for line in text.splitlines():
        if " : " in line:
            k, v = line.split(" : ", 1)
            rows[k.strip()] = v.strip()
    assert rows["atlas"] == atlas.__version__
    assert rows["python"].startswith(".".join(map(str, sys.version_info[:3])))
    assert rows["numpy"] == numpy.__version__
    assert rows["no-such-package-atlas"] == "None"
    assert rows["ATLAS_NUM_THREADS"] == "3" and rows["ATLAS_SOMETHING"] == "xyz"
    assert rows["atlas threads"] == "3"
    assert rows["cpu count"] == str(os.cpu_count())
    for key in ("platform", "numba threading layer (configured)", "NUMBA_CACHE_DIR"):
        assert key in rows


def test_show_versions_defaults_to_stdout_and_cli(capsys):
    import numba

    show_versions()
    out, _ = capsys.readouterr()
    assert "INSTALLED VERSIONS" in out and "numba" in out and numba.__version__ in out
    code, out2, _ = run(capsys, "versions")
    assert code == 0 and "INSTALLED VERSIONS" in out2
