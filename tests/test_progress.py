"""``progress=`` on long operations, and ``Atlas.ingest`` (the library side of ``atlas ingest``)."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
import xarray as xr

import atlas
from atlas._progress import Progress


def _store(tmp_path, n=45):
    s = atlas.Atlas.create(tmp_path / "s")
    rng = np.random.default_rng(0)
    data = {}
    for i in range(n):
        d = s.create_dataset(f"d{i:03d}")
        for a, chunks in (("x", [4, 5]), ("y", [8, 10])):
            d.define_array(a, "float32", ["r", "c"], [8, 10], chunks)
            v = rng.random((8, 10), dtype=np.float32)
            d.write_array(a, [0, 0], v)
            data[(i, a)] = v
    s.flush()
    return s, data


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))

    def check(self, total):
        assert self.calls, "the callback was never called"
        assert all(t == total for _, t in self.calls)
        done = [d for d, _ in self.calls]
        assert done == sorted(done) and done[-1] == total and len(set(done)) == len(done)


@pytest.mark.parametrize("bad", [1, "yes", 0.5, [True]])
def test_progress_must_be_bool_none_or_callable(tmp_path, bad):
    s, _ = _store(tmp_path, 2)
    names = s.list_datasets()
    for call in (lambda: s.compact(progress=bad),
                 lambda: s.read_array_across("x", names, progress=bad),
                 lambda: s.read_array_across_stacked("x", names, progress=bad),
                 lambda: s.to_xarray_many(names, progress=bad),
                 lambda: s.ingest([str(tmp_path / "*.nc")], progress=bad)):
        with pytest.raises(TypeError, match="progress"):
            call()
    assert s.read_array_across_stacked("x", names).shape == (2, 8, 10)  # still usable


@pytest.mark.parametrize("box", [(None, None), ([1, 2], [5, 7])])
def test_stacked_read_with_progress_equals_without(tmp_path, box):
    s, data = _store(tmp_path)
    names = s.list_datasets()
    names = names + names[:3]  # duplicates are read twice
    rec = Recorder()
    got = s.read_array_across_stacked("x", names, box[0], box[1], progress=rec)
    ref = s.read_array_across_stacked("x", names, box[0], box[1])
    np.testing.assert_array_equal(got, ref)
    sl = (slice(None), slice(None)) if box[0] is None else (slice(1, 6), slice(2, 9))
    np.testing.assert_array_equal(got[0], data[(0, "x")][sl])
    rec.check(len(names))
    assert len(rec.calls) > 5  # reported in steps, not once at the end


def test_stacked_read_with_progress_sees_pending_writes_and_strings(tmp_path):
    s, _ = _store(tmp_path, 30)
    names = s.list_datasets()
    for i, n in enumerate(names):
        d = s.open_dataset(n)
        d.define_array("label", "string", ["k"], [3], [2])
        d.write_array("label", [0], np.array([f"a{i}", "", "é"], dtype=object))
    s.open_dataset(names[4]).write_array("x", [0, 0], np.full((8, 10), 7, np.float32))  # pending
    rec = Recorder()
    got = s.read_array_across_stacked("label", names, progress=rec)
    assert got[5].tolist() == ["a5", "", "é"]
    rec.check(len(names))
    x = s.read_array_across_stacked("x", names, progress=lambda d, t: None)
    assert (x[4] == 7).all()


def test_read_array_across_progress_counts_missing_datasets_too(tmp_path):
    s, data = _store(tmp_path, 25)
    names = s.list_datasets()
    s.create_dataset("empty")
    rec = Recorder()
    got = s.read_array_across("y", names + ["empty"], progress=rec)
    assert got[-1] is None
    np.testing.assert_array_equal(got[3], data[(3, "y")])
    rec.check(len(names) + 1)


def test_compact_progress_counts_array_names(tmp_path):
    s, data = _store(tmp_path, 6)
    s.delete_dataset("d002")
    s.flush()
    rec = Recorder()
    s.compact(progress=rec)
    rec.check(2)
    np.testing.assert_array_equal(s.open_dataset("d005").read_array("y"), data[(5, "y")])


def test_to_xarray_many_progress_counts_variables(tmp_path):
    s, data = _store(tmp_path, 5)
    rec = Recorder()
    ds = s.to_xarray_many(s.list_datasets(), progress=rec)
    rec.check(2)
    np.testing.assert_array_equal(ds["x"].values[1], data[(1, "x")])


def test_progress_true_draws_a_plain_bar_without_tqdm(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    s, _ = _store(tmp_path, 40)
    capsys.readouterr()
    s.read_array_across_stacked("x", s.list_datasets(), progress=True)
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1  # one line, redrawn with \r
    frames = [f for f in err.strip("\n").split("\r") if f]
    assert frames[-1].startswith("read: 40/40 datasets [########################] 100%"), frames
    assert 2 <= len(frames) <= 101
    done = [int(f.split()[1].split("/")[0]) for f in frames]
    assert done == sorted(done)


def test_progress_true_uses_tqdm_when_installed(tmp_path, monkeypatch):
    bars = []

    class FakeBar:
        def __init__(self, total, desc, unit, **kw):
            self.total, self.desc, self.unit, self.n, self.closed = total, desc, unit, 0, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    s, _ = _store(tmp_path, 3)
    s.compact(progress=True)
    assert [(b.desc, b.total, b.n, b.closed) for b in bars] == [("compact", 2, 2, True)]


def test_progress_off_reports_nothing(tmp_path, caplog):
    p = Progress(False, 10, "x", "thing")
    assert not p.enabled
    with caplog.at_level(logging.DEBUG, logger="atlas"):
        p.update(10)
    assert caplog.records == []


# ----------------------------------------------------------------------------- Atlas.ingest
def _write_files(d, n=6):
    d.mkdir()
    for i in range(n):
        xr.Dataset({"v": (("t", "x"), np.arange(12.0).reshape(3, 4) + i)}, attrs={"i": i}).to_netcdf(
            d / f"f{i}.nc", engine="scipy")


def test_ingest_adds_every_file_with_progress(tmp_path):
    _write_files(tmp_path / "in")
    s = atlas.Atlas.create(tmp_path / "s")
    rec = Recorder()
    added = s.ingest(str(tmp_path / "in" / "*.nc"), jobs=2, progress=rec)
    assert added == [f"f{i}" for i in range(6)] == s.list_datasets()
    rec.check(6)
    s.flush()
    again = atlas.Atlas.open(tmp_path / "s")
    with xr.open_dataset(tmp_path / "in" / "f4.nc", engine="scipy") as ref:
        xr.testing.assert_identical(again.to_xarray("f4").load(), ref.load())


def test_ingest_is_all_or_nothing(tmp_path):
    _write_files(tmp_path / "in")
    (tmp_path / "in" / "f3.nc").write_bytes(b"not a netcdf file")
    s = atlas.Atlas.create(tmp_path / "s")
    s.create_dataset("kept").define_array("a", "int8", ["x"], [2], [2])
    s.flush()
    with pytest.raises(atlas.IngestError, match="f3.nc.*nothing was ingested"):
        s.ingest([tmp_path / "in" / "*.nc"], jobs=2)
    assert s.list_datasets() == ["kept"]
    s.flush()
    assert atlas.Atlas.open(tmp_path / "s").list_datasets() == ["kept"]
    (tmp_path / "in" / "f3.nc").unlink()
    assert s.ingest([str(tmp_path / "in" / "f*.nc")], name_from="name") == [f"f{i}.nc" for i in (0, 1, 2, 4, 5)]


def test_ingest_errors(tmp_path):
    _write_files(tmp_path / "in", 2)
    s = atlas.Atlas.create(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no files match"):
        s.ingest([str(tmp_path / "nothing" / "*.nc")])
    with pytest.raises(ValueError, match="name_from"):
        s.ingest([str(tmp_path / "in" / "*.nc")], name_from="path")
    with pytest.raises(ValueError, match="jobs"):
        s.ingest([str(tmp_path / "in" / "*.nc")], jobs=0)
    s.create_dataset("f1")
    with pytest.raises(FileExistsError, match="'f1'"):
        s.ingest([str(tmp_path / "in" / "*.nc")])
    assert s.list_datasets() == ["f1"]
