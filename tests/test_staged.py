"""Staged writes (Atlas.stage / StagedWriter / Atlas.commit_staged) and parallel ingest
(workers=N, a dask.distributed LocalCluster, the CLI): the same store as a serial ingest,
all or nothing, killed workers, conflicting names, object stores."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import atlas
from atlas import cli
from atlas.errors import IngestError

N_FILES = 10


def _make_files(folder, n=N_FILES):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        ds = xr.Dataset(
            {"temp": (("time", "lat", "lon"), rng.random((3, 6, 8)).astype("float32"), {"units": "K"}),
             "count": (("lat",), rng.integers(0, 100, 6).astype("int32")),
             "label": ((), f"file {i}")},
            coords={"time": pd.date_range("2001-01-01", periods=3) + pd.Timedelta(days=3 * i),
                    "lat": np.linspace(-50, 50, 6), "lon": np.arange(8.0)},
            attrs={"source": f"synthetic {i}", "number": i},
        )
        if i % 3 == 0:  # files with an extra variable: array names that not every file has
            ds["extra"] = (("lon",), np.arange(8, dtype="int16") + i)
        ds.to_netcdf(os.path.join(folder, f"f{i:03d}.nc"))
    return os.path.join(folder, "*.nc")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _make_files(str(tmp_path_factory.mktemp("nc")))


@pytest.fixture(scope="module")
def serial(files, tmp_path_factory):
    store = atlas.Atlas.create(str(tmp_path_factory.mktemp("serial") / "store"))
    store.ingest([files])
    store.flush()
    return store


def _assert_same(a, b):
    assert b.list_datasets() == a.list_datasets()
    for n in a.list_datasets():
        xr.testing.assert_identical(a.to_xarray(n, chunks=None), b.to_xarray(n, chunks=None))
        for arr in a.open_dataset(n).list_arrays():
            assert b.open_dataset(n).array_stats(arr) == a.open_dataset(n).array_stats(arr)
    assert b.verify() == []


def _staged_files(root):
    return [os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if "/stage-" in os.path.join(r, f)]


def _used_files(store):
    """Every segment / index file the committed state refers to."""
    from atlas._frames import FrameReader

    st = store._state
    fr = FrameReader(st.storage, st.meta.codec)
    used = set()
    for name, phys in st.meta.physical.items():
        if phys.index:
            used.add(phys.index.segment)
            used.update(fr.load_index(name, phys).segments)
    return used


# ---------------------------------------------------------------------- parallel ingest
def test_workers_ingest_matches_serial(files, serial, tmp_path):
    path = tmp_path / "par"
    store = atlas.Atlas.create(str(path))
    seen = []
    names = store.ingest([files], workers=2, progress=lambda done, total: seen.append((done, total)))
    assert names == serial.list_datasets()
    assert store.generation == 1  # one commit
    assert seen[-1] == (N_FILES, N_FILES) and len(seen) > 1  # progress from the coordinator, batch by batch
    _assert_same(serial, store)
    _assert_same(serial, atlas.Atlas.open(str(path)))
    # no orphan: every staged file is used by the committed state
    used = {os.path.join(str(path), p) for p in _used_files(store)}
    assert _staged_files(str(path)) and set(_staged_files(str(path))) <= used


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield c, client


def test_dask_cluster_ingest_matches_serial(files, serial, tmp_path, cluster):
    _, client = cluster
    store = atlas.Atlas.create(str(tmp_path / "dask"))
    names = store.ingest([files], client=client, progress=True)
    assert names == serial.list_datasets()
    _assert_same(serial, store)
    workers = {w for w in client.run(os.getpid).values()}
    assert os.getpid() not in workers  # the files were written by other processes


def test_cli_workers_and_scheduler(files, serial, tmp_path, cluster, capsys):
    c, _ = cluster
    assert cli.main(["ingest", str(tmp_path / "w"), files, "--create", "--workers", "2"]) == 0
    assert cli.main(["ingest", str(tmp_path / "s"), files, "--create", "--scheduler", c.scheduler_address]) == 0
    out = capsys.readouterr().out
    assert out.count(f"ingested {N_FILES} files") == 2
    for name in ("w", "s"):
        _assert_same(serial, atlas.Atlas.open(str(tmp_path / name)))


def test_parallel_ingest_bad_arguments(files, tmp_path, cluster):
    store = atlas.Atlas.create(str(tmp_path / "s"))
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        store.ingest([files], workers=0)
    with pytest.raises(ValueError, match="not both"):
        store.ingest([files], workers=2, client=cluster[1])
    with pytest.raises(ValueError, match="jobs="):
        store.ingest([files], workers=2, jobs=2)
    with pytest.raises(TypeError, match="dask.distributed.Client"):
        store.ingest([files], client="tcp://nowhere")
    store.create_dataset("f003")
    store.flush()
    with pytest.raises(FileExistsError, match="'f003'"):
        store.ingest([files], workers=2)
    assert store.list_datasets() == ["f003"] and store.generation == 1


def test_parallel_ingest_passes_the_ingest_options(tmp_path):
    folder = tmp_path / "nc"
    _make_files(str(folder), 5)
    (folder / "f002.nc").write_bytes(b"not a netcdf file")
    opts = dict(on_error="skip", chunks={"lat": 3}, open_kwargs={"drop_variables": ["count"]})
    serial = atlas.Atlas.create(str(tmp_path / "serial"))
    want = serial.ingest([str(folder / "*.nc")], **opts)
    serial.flush()
    par = atlas.Atlas.create(str(tmp_path / "par"))
    got = par.ingest([str(folder / "*.nc")], workers=2, **opts)
    assert list(got) == list(want) == ["f000", "f001", "f003", "f004"]
    assert [p for p, _ in got.refused] == [p for p, _ in want.refused] == [str(folder / "f002.nc")]
    assert par.open_dataset("f001").array_meta("temp")["chunk_shape"] == [3, 3, 8]  # chunks= reached the workers
    assert "count" not in par.open_dataset("f001").list_arrays()  # and open_kwargs=
    _assert_same(serial, par)
    with pytest.raises(ValueError, match="on_error must be"):
        par.ingest([str(folder / "*.nc")], workers=2, on_error="ignore")


class DyingBackend(xr.backends.BackendEntrypoint):
    """An xarray engine whose worker process dies (os._exit) on a file named *die*; else netCDF."""

    def open_dataset(self, filename_or_obj, *, drop_variables=None):
        if "die" in os.path.basename(str(filename_or_obj)):
            os._exit(3)
        return xr.open_dataset(filename_or_obj, engine="netcdf4", drop_variables=drop_variables)


def test_killed_worker_commits_nothing(tmp_path):
    folder = tmp_path / "nc"
    _make_files(str(folder), 6)
    with xr.open_dataset(folder / "f000.nc") as ds:
        ds.load().to_netcdf(folder / "f003die.nc")
    store = atlas.Atlas.create(str(tmp_path / "s"))
    store.create_dataset("before").set_attribute("x", 1)
    store.flush()
    with pytest.raises(IngestError, match="worker process died.*nothing was ingested"):
        store.ingest([str(folder / "*.nc")], workers=2, engine=DyingBackend)
    assert store.list_datasets() == ["before"] and store.generation == 1
    again = atlas.Atlas.open(str(tmp_path / "s"))
    assert again.list_datasets() == ["before"] and again.verify() == []
    assert _staged_files(str(tmp_path / "s")) == []  # the other workers' files were deleted
    # the store stays usable: a good ingest afterwards
    os.remove(folder / "f003die.nc")
    assert len(store.ingest([str(folder / "*.nc")], workers=2, engine=DyingBackend)) == 6
    assert store.verify() == []


def test_failing_file_commits_nothing(tmp_path):
    folder = tmp_path / "nc"
    _make_files(str(folder), 5)
    (folder / "f002.nc").write_bytes(b"not a netcdf file")
    store = atlas.Atlas.create(str(tmp_path / "s"))
    with pytest.raises(IngestError, match="cannot open .*f002.nc.*nothing was ingested"):
        store.ingest([str(folder / "*.nc")], workers=2)
    assert store.list_datasets() == [] and store.generation == 0
    assert _staged_files(str(tmp_path / "s")) == []


# ---------------------------------------------------------------------- the staging API
def _write(writer, name, value, extra=False):
    ds = writer.create_dataset(name)
    ds.define_array("t", "float64", ["x"], [10], [4], fill_value=-1.0)
    ds.write_array("t", [2], np.full(5, float(value)))
    if extra:
        ds.define_array("e", "int16", ["y"], [3])
        ds.write_array("e", [0], np.array([value, value + 1, value + 2], "int16"))
    ds.set_attribute("value", value)
    return ds


def test_stage_roundtrip_ids_and_later_writes(tmp_path):
    store = atlas.Atlas.create(str(tmp_path / "s"))
    _write(store, "own", 100)
    store.flush()
    stage = pickle.loads(pickle.dumps(store.stage()))
    results = []
    for k in range(3):
        w = stage.writer()
        for j in range(4):
            ds = _write(w, f"w{k}{j}", 10 * k + j, extra=j % 2 == 0)
            assert ds.read_array("t")[2] == 10 * k + j  # a writer reads back what it wrote
            if j == 1:
                w.flush()  # more than one segment per writer
        gone = _write(w, f"gone{k}", 99)
        w.delete_dataset(gone.name)  # deleted again: not committed, its chunks dropped
        results.append(pickle.loads(pickle.dumps(w.finish())))
    assert [r.datasets for r in results][0] == ["w00", "w01", "w02", "w03"]
    assert store.commit_staged(results) == [f"w{k}{j}" for k in range(3) for j in range(4)]
    assert store.generation == 2
    aids = [m.aid for d in store._state.meta.datasets.values() for m in d.arrays.values()]
    assert len(aids) == len(set(aids))  # instance ids unique store-wide
    # the coordinator goes on writing: new instances never see staged chunks
    _write(store, "after", 7, extra=True)
    store.open_dataset("w11").write_array("t", [0], np.array([5.0]))
    store.flush()
    again = atlas.Atlas.open(str(tmp_path / "s"))
    for k in range(3):
        for j in range(4):
            t = again.open_dataset(f"w{k}{j}").read_array("t")
            want = np.array([-1, -1] + [10 * k + j] * 5 + [-1] * 3, float)
            if (k, j) == (1, 1):
                want[0] = 5
            np.testing.assert_array_equal(t, want)
            assert again.open_dataset(f"w{k}{j}").get_attribute("value") == 10 * k + j
            assert again.open_dataset(f"w{k}{j}").array_stats("t")["min"] == (5 if (k, j) == (1, 1) else 10 * k + j)
    e = again.read_array_across_stacked("e", ["w00", "w12", "after"])
    np.testing.assert_array_equal(e, [[0, 1, 2], [12, 13, 14], [7, 8, 9]])
    np.testing.assert_array_equal(again.open_dataset("own").read_array("t")[2:7], [100] * 5)
    assert again.verify() == []
    store.compact()  # the staged files stay while older versions need them...
    assert _staged_files(str(tmp_path / "s")) and store.verify() == []
    store.expire(keep_last=1)
    store.compact()  # ...and go with them
    assert _staged_files(str(tmp_path / "s")) == [] and store.verify() == []
    np.testing.assert_array_equal(store.read_array_across_stacked("e", ["w00", "w12", "after"]), e)


def test_staged_commit_is_a_version_kept_by_compaction(tmp_path):
    path = str(tmp_path / "s")
    store = atlas.Atlas.create(path)
    _write(store, "own", 1)
    store.flush()
    stage = store.stage()
    w = stage.writer()
    _write(w, "staged", 2, extra=True)
    store.commit_staged([w.finish()], message="from the workers")
    v = store.generation
    last = store.history()[-1]
    assert last["version"] == v and last["message"] == "from the workers"
    store.delete_dataset("staged")
    store.flush()
    store.compact()  # the staged files leave the current state; the version still needs them
    assert stage.discard() == 0  # so discard() keeps them
    old = atlas.Atlas.open(path, version=v)
    np.testing.assert_array_equal(old.open_dataset("staged").read_array("e"), [2, 3, 4])
    assert old.verify() == [] and store.verify() == []
    assert store.list_datasets() == ["own"]


def test_conflicting_names_commit_nothing(tmp_path):
    store = atlas.Atlas.create(str(tmp_path / "s"))
    _write(store, "taken", 1)
    store.flush()
    stage = store.stage()
    a, b, c = stage.writer(), stage.writer(), stage.writer()
    for n in ("x", "dup1", "dup2"):
        _write(a, n, 1)
    for n in ("dup1", "dup2", "y"):
        _write(b, n, 2)
    _write(c, "taken", 3)
    ra, rb, rc = a.finish(), b.finish(), c.finish()
    with pytest.raises(FileExistsError, match=r"'dup1', 'dup2'.*nothing was committed"):
        store.commit_staged([ra, rb])
    with pytest.raises(FileExistsError, match=r"'taken'.*nothing was committed"):
        store.commit_staged([rc])
    assert store.list_datasets() == ["taken"] and store.generation == 1
    assert atlas.Atlas.open(str(tmp_path / "s")).list_datasets() == ["taken"]
    assert store.commit_staged([ra]) == ["x", "dup1", "dup2"]  # the store stays usable
    with pytest.raises(FileExistsError, match="'x'"):
        store.commit_staged([ra])  # a result commits once
    assert stage.discard() > 0  # the files of rb and rc: never committed
    assert store.verify() == [] and sorted(store.list_datasets()) == ["dup1", "dup2", "taken", "x"]
    np.testing.assert_array_equal(store.open_dataset("dup1").read_array("t")[2], 1.0)


def test_commit_checks_results(tmp_path):
    one = atlas.Atlas.create(str(tmp_path / "one"))
    other = atlas.Atlas.create(str(tmp_path / "two"))
    w = other.stage().writer()
    _write(w, "a", 1)
    with pytest.raises(ValueError, match="another store"):
        one.commit_staged([w.finish()])
    with pytest.raises(TypeError, match="StagedResult"):
        one.commit_staged(["not a result"])
    assert one.generation == 0


def test_compaction_during_staging_is_detected(tmp_path):
    store = atlas.Atlas.create(str(tmp_path / "s"))
    _write(store, "own", 1)
    store.flush()
    w = store.stage().writer()
    _write(w, "staged", 2)
    result = w.finish()
    store.compact()  # breaks the rule: it deletes the staged files (unused by the committed state)
    with pytest.raises(FileNotFoundError, match="staged segment.*missing.*nothing was committed"):
        store.commit_staged([result])
    assert store.list_datasets() == ["own"] and store.verify() == []


def _die_after_writing(stage):
    w = stage.writer()
    _write(w, "half", 1, extra=True)
    w.flush()  # segment files are on disk...
    _write(w, "more", 2)
    os._exit(7)  # ...and the worker dies before returning a result


def test_dead_writer_leaves_store_unchanged(tmp_path):
    store = atlas.Atlas.create(str(tmp_path / "s"))
    _write(store, "own", 1)
    store.flush()
    stage = store.stage()
    p = multiprocessing.get_context("spawn").Process(target=_die_after_writing, args=(stage,))
    p.start()
    p.join(120)
    assert p.exitcode == 7
    orphans = _staged_files(str(tmp_path / "s"))
    assert orphans  # the dead writer's segments
    again = atlas.Atlas.open(str(tmp_path / "s"))
    assert again.list_datasets() == ["own"] and again.generation == 1 and again.verify() == []
    assert stage.discard() == len(orphans)
    assert _staged_files(str(tmp_path / "s")) == [] and again.verify() == []


# ---------------------------------------------------------------------- object stores
def test_staged_ingest_on_s3(files, serial, s3_store):
    store = atlas.Atlas.create(s3_store)
    names = store.ingest([files], workers=2)
    assert names == serial.list_datasets()
    _assert_same(serial, store)
    _assert_same(serial, atlas.Atlas.open(s3_store))
    # a dead writer on S3: nothing committed; discard deletes its objects
    stage = store.stage()
    w = stage.writer()
    _write(w, "lost", 1)
    w.flush()
    del w
    import obstore

    listed = [m["path"] for b in obstore.list(s3_store) for m in b]
    assert any(f"/stage-{stage.token}/" in p for p in listed)
    assert stage.discard() > 0
    listed = [m["path"] for b in obstore.list(s3_store) for m in b]
    assert not any(f"/stage-{stage.token}/" in p for p in listed)
    assert atlas.Atlas.open(s3_store).verify() == []
