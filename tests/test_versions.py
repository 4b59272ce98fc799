"""Versions: history, opening the store as it was, tags, expiry, and compaction that keeps retained versions."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from atlas import Atlas, ReadOnlyError, VersionNotFoundError
from atlas.cli import main
from atlas.storage import LocalStorage

HERE = Path(__file__).parent / "data"


def _build(path):
    """Versions 1..4: create a, write b (overwrite a), delete a + attribute on b, create c. Returns the handle."""
    s = Atlas.create(path)
    a = s.create_dataset("a")
    a.define_array("x", "float64", ["i"], [20], [8])
    a.write_array("x", [0], np.arange(20.0))
    a.set_attribute("k", "one")
    s.flush(message="add a")  # 1
    b = s.create_dataset("b")
    b.define_array("x", "float64", ["i"], [20], [8])
    b.write_array("x", [0], -np.arange(20.0))
    a.write_array("x", [4], np.full(6, 99.0))
    s.flush(message="add b, fix a")  # 2
    s.delete_dataset("a")
    s.open_dataset("b").set_attribute("k", "two")
    s.flush()  # 3
    c = s.create_dataset("c")
    c.define_array("y", "int32", ["j"], [5])
    c.write_array("y", [0], np.arange(5, dtype=np.int32))
    s.flush(message="add c")  # 4
    return s


A1 = np.arange(20.0)
A2 = A1.copy()
A2[4:10] = 99.0


def _content(store):
    out = {}
    for n in store.list_datasets():
        d = store.open_dataset(n)
        out[n] = ({a: d.read_array(a).tolist() for a in d.list_arrays()}, d.attributes(),
                  {a: d.array_stats(a) for a in d.list_arrays()})
    return out


# ---------------------------------------------------------------------------- history
def test_history_records_every_commit_newest_last(tmp_path):
    t0 = datetime.now(timezone.utc)
    s = _build(tmp_path / "s")
    h = s.history()
    assert [v["version"] for v in h] == [1, 2, 3, 4] and s.generation == 4  # creating a store is no version
    assert [v["message"] for v in h] == ["add a", "add b, fix a", None, "add c"]
    assert [(v["added"], v["changed"], v["deleted"]) for v in h] == [(1, 0, 0), (1, 1, 0), (0, 1, 1), (1, 0, 0)]
    times = [v["time"] for v in h]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)
    assert times == sorted(times) and t0 - timedelta(seconds=1) <= times[0] <= datetime.now(timezone.utc)
    assert Atlas.open(tmp_path / "s").history() == h  # persisted
    s.flush(message="nothing pending")  # no change, no version
    assert len(s.history()) == 4
    with pytest.raises(TypeError, match="message"):
        s.flush(message=3)


# ---------------------------------------------------------------------------- time travel
def test_open_version_is_exactly_that_state(tmp_path):
    path = tmp_path / "s"
    s = _build(path)
    states = {}
    for v in range(1, 5):
        states[v] = _content(Atlas.open(path, version=v))
    assert list(states[1]) == ["a"] and states[1]["a"][0]["x"] == A1.tolist() and states[1]["a"][1] == {"k": "one"}
    assert states[1]["a"][2]["x"] == {"row_count": 20, "null_count": 0, "min": 0.0, "max": 19.0}
    assert list(states[2]) == ["a", "b"] and states[2]["a"][0]["x"] == A2.tolist()
    assert states[2]["a"][2]["x"]["max"] == 99.0
    assert list(states[3]) == ["b"] and states[3]["b"][1] == {"k": "two"}
    assert states[4] == _content(s)
    old = Atlas.open(path, version=2)
    assert old.generation == 2 and old.read_only and not s.read_only
    assert old.read_array_across_stacked("x", ["a", "b"]).tolist() == [A2.tolist(), (-A1).tolist()]
    assert old.history()[-1]["version"] == 2


def test_every_change_on_a_version_handle_is_refused(tmp_path):
    path = tmp_path / "s"
    _build(path)
    old = Atlas.open(path, version=2)
    d = old.open_dataset("a")
    calls = [
        lambda: old.create_dataset("z"),
        lambda: old.delete_dataset("a"),
        lambda: d.define_array("w", "int8", ["i"], [3]),
        lambda: d.write_array("x", [0], np.zeros(2)),
        lambda: d.set_attribute("k", "v"),
        lambda: d.delete_array("x"),
        lambda: old.compact(),
        lambda: old.expire(keep_last=1),
        lambda: old.tag("t"),
        lambda: old.delete_tag("t"),
        lambda: old.add_xr_dataset(__import__("xarray").Dataset({"q": ("i", np.arange(3))}), "new"),
    ]
    before = sorted(os.listdir(path / "versions"))
    for call in calls:
        with pytest.raises(ReadOnlyError, match="version 2 .* read-only"):
            call()
    assert isinstance(ReadOnlyError("x"), PermissionError)
    old.flush()  # nothing is pending: harmless, as are close() and a with block
    with Atlas.open(path, version=2) as again:
        assert again.list_datasets() == ["a", "b"]
    assert _content(old) == _content(Atlas.open(path, version=2))
    assert sorted(os.listdir(path / "versions")) == before
    assert Atlas.open(path).generation == 4


def test_missing_and_expired_versions_are_named(tmp_path):
    path = tmp_path / "s"
    s = _build(path)
    with pytest.raises(VersionNotFoundError, match=r"version 9 .* does not exist; the retained versions are 1, 2, 3, 4"):
        Atlas.open(path, version=9)
    with pytest.raises(VersionNotFoundError, match="version -1 .* does not exist"):
        Atlas.open(path, version=-1)
    with pytest.raises(TypeError, match="version must be an int"):
        Atlas.open(path, version="2")
    with pytest.raises(VersionNotFoundError, match="no tag 'nope'"):
        Atlas.open(path, tag="nope")
    with pytest.raises(ValueError, match="not both"):
        Atlas.open(path, version=1, tag="x")
    assert s.expire(keep_last=2) == [1, 2]
    with pytest.raises(VersionNotFoundError, match=r"version 1 .* was expired.*retained versions are 3, 4"):
        Atlas.open(path, version=1)
    assert isinstance(VersionNotFoundError("x"), LookupError)


def test_xarray_and_dask_on_a_version(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("dask")
    path = tmp_path / "s"
    s = Atlas.create(path)
    s.add_xr_dataset(xr.Dataset({"t": (("y", "x"), np.arange(12.0).reshape(3, 4))}, attrs={"n": 1}), "d")
    s.flush()
    v1 = s.generation
    s.open_dataset("d").write_array("t", [0, 0], np.full((3, 4), -1.0))
    s.flush()
    ds = xr.open_dataset(str(path), engine="atlas", group="d", version=v1)
    np.testing.assert_array_equal(ds["t"].values, np.arange(12.0).reshape(3, 4))
    ds.close()
    ds = xr.open_dataset(s, engine="atlas", group="d", version=v1)  # a handle: its store at that version
    np.testing.assert_array_equal(ds["t"].values, np.arange(12.0).reshape(3, 4))
    old = Atlas.open(path, version=v1)
    lazy = old.to_xarray("d", chunks="auto")
    s.open_dataset("d").write_array("t", [0, 0], np.full((3, 4), -2.0))
    s.flush()
    np.testing.assert_array_equal(lazy["t"].compute(scheduler="processes").values, np.arange(12.0).reshape(3, 4))
    back = pickle.loads(pickle.dumps(old))
    assert back.read_only and back.generation == v1
    np.testing.assert_array_equal(xr.open_dataset(str(path), engine="atlas", group="d")["t"].values, np.full((3, 4), -2.0))


def test_a_store_from_before_versions_opens_and_starts_its_history(tmp_path):
    path = tmp_path / "g"
    shutil.copytree(HERE / "v1_json", path)
    s = Atlas.open(path)
    assert s.history() == []
    cur = Atlas.open(path, version=s.generation)  # the current state has no version file: atlas.meta serves it
    assert cur.read_only and cur.list_datasets() == s.list_datasets()
    with pytest.raises(VersionNotFoundError, match="before version history"):
        Atlas.open(path, version=s.generation - 1)
    with pytest.raises(VersionNotFoundError):
        s.tag("old")
    before = _content(s)
    s.open_dataset("alpha").set_attribute("new", 1)
    s.flush()
    assert [h["version"] for h in s.history()] == [s.generation]
    s.expire(keep_last=1)
    s.compact()
    assert s.verify() == []
    back = _content(Atlas.open(path, version=s.generation))
    assert {k: v[0] for k, v in back.items()} == {k: v[0] for k, v in before.items()}


# ---------------------------------------------------------------------------- tags
def test_tags(tmp_path):
    path = tmp_path / "s"
    s = _build(path)
    s.tag("release")  # the current version
    s.tag("with-a", version=2)
    assert s.tags() == {"release": 4, "with-a": 2}
    assert Atlas.open(path).tags() == {"release": 4, "with-a": 2}
    assert _content(Atlas.open(path, tag="with-a")) == _content(Atlas.open(path, version=2))
    with pytest.raises(FileExistsError, match=r"tag 'with-a' already exists \(version 2\)"):
        Atlas.open(path).tag("with-a", version=3)  # tags never move
    with pytest.raises(VersionNotFoundError, match="version 11"):
        s.tag("x", version=11)
    for bad in ("", "a/b", "_x"):
        with pytest.raises(ValueError, match="tag name"):
            s.tag(bad)
    s.delete_tag("with-a")
    assert s.tags() == {"release": 4}
    with pytest.raises(KeyError, match="no tag 'with-a'"):
        s.delete_tag("with-a")
    s.tag("with-a", version=3)  # a deleted name can be used again
    assert s.tags()["with-a"] == 3
    assert not [f for f in os.listdir(path / "tags") if not f.endswith(".tag")]  # no temporary file left


def test_one_of_two_racing_taggers_wins(tmp_path):
    path = tmp_path / "s"
    _build(path)
    handles = [Atlas.open(path) for _ in range(8)]
    results: list = []
    barrier = threading.Barrier(len(handles))

    def go(i, h):
        barrier.wait()
        try:
            h.tag("race", version=i % 4 + 1)
            results.append(("ok", i))
        except FileExistsError:
            results.append(("exists", i))

    threads = [threading.Thread(target=go, args=(i, h)) for i, h in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [i for r, i in results if r == "ok"]
    assert len(won) == 1 and len(results) == len(handles)
    assert Atlas.open(path).tags() == {"race": won[0] % 4 + 1}


def test_a_tag_racing_an_expiry_is_not_left_dangling(tmp_path):
    path = tmp_path / "s"
    _build(path)
    stale = Atlas.open(path)  # still sees version 1 in its log
    Atlas.open(path).expire(keep_last=1)
    with pytest.raises(VersionNotFoundError, match="version 1 .* was expired while tag 'late'"):
        stale.tag("late", version=1)
    assert Atlas.open(path).tags() == {}


# ---------------------------------------------------------------------------- expiry
def test_expire_keep_last_older_than_tags_and_latest(tmp_path):
    path = tmp_path / "s"
    s = _build(path)
    s.tag("keep", version=1)
    with pytest.raises(ValueError, match="older_than and/or keep_last"):
        s.expire()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="keep_last"):
            s.expire(keep_last=bad)
    with pytest.raises(TypeError, match="older_than"):
        s.expire(older_than=5)
    with pytest.raises(ValueError, match="time zone"):
        s.expire(older_than=datetime.now())
    assert s.expire(older_than=timedelta(days=1)) == []  # all are younger
    assert s.expire(older_than=timedelta(0), keep_last=2) == [2]  # both conditions must hold; 1 is tagged
    assert [h["version"] for h in s.history()] == [1, 3, 4]
    assert s.expire(older_than=datetime.now(timezone.utc) + timedelta(seconds=5)) == [3]  # tag and latest stay
    assert [h["version"] for h in s.history()] == [1, 4]
    assert [h["version"] for h in Atlas.open(path).history()] == [1, 4]
    assert len(os.listdir(path / "versions")) == 2  # expired version files are deleted at once
    assert _content(Atlas.open(path, tag="keep")) == _content(Atlas.open(path, version=1))


class CountingStorage(LocalStorage):
    def __init__(self, root, *, create=False):
        super().__init__(root, create=create)
        self.calls: list[tuple[str, str]] = []

    def __reduce__(self):
        return (CountingStorage, (self.root,))

    def read(self, path):
        self.calls.append(("read", path))
        return super().read(path)

    def peek(self, path):
        self.calls.append(("peek", path))
        return super().peek(path)

    def read_ranges(self, path, starts, ends):
        self.calls.append(("read_ranges", path))
        return super().read_ranges(path, starts, ends)

    def delete(self, path):
        self.calls.append(("delete", path))
        return super().delete(path)

    def list(self, prefix=""):
        self.calls.append(("list", prefix))
        return super().list(prefix)


def test_expiry_costs_the_expired_versions_not_the_store(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    for i in range(12):
        for k in range(4):
            d = s.create_dataset(f"d{i}-{k}") if i == 0 else s.open_dataset(f"d0-{k}")
            if i == 0:
                d.define_array("x", "int32", ["i"], [100], [10])
            d.write_array("x", [i], np.full(5, i, np.int32))
        s.flush()
    st = CountingStorage(str(path))
    h = Atlas.open(st)
    st.calls.clear()
    gone = h.expire(keep_last=8)
    assert gone == [1, 2, 3, 4]
    # no chunk index, data or version file is read: the tags are listed (twice), four files deleted
    assert sorted(k for k, _ in st.calls) == ["delete"] * 4 + ["list"] * 2, st.calls
    assert all(p.startswith("versions/0000000000") for k, p in st.calls if k == "delete")
    assert len(os.listdir(path / "versions")) == 8


# ---------------------------------------------------------------------------- compaction
def _segments(path):
    return {str(p.relative_to(path)) for p in (path / "arrays").rglob("*.seg")}


def test_compact_keeps_every_retained_version_and_reclaims_what_only_expired_ones_needed(tmp_path):
    path = tmp_path / "s"
    s = _build(path)
    states = {v: _content(Atlas.open(path, version=v)) for v in range(1, 5)}
    segs = _segments(path)
    s.compact()  # every version is kept: nothing can go
    assert segs <= _segments(path)
    assert s.generation == 5 and s.history()[-1]["same_as"] == [4] and s.history()[-1]["message"] == "compact"
    for v in range(1, 5):
        old = Atlas.open(path, version=v)
        assert _content(old) == states[v] and old.verify() == []
    assert Atlas.open(path, version=4).generation == 5  # the compaction replaced version 4: same state
    n = len(_segments(path))
    s.compact()  # nothing to gain: nothing rewritten, no new version
    assert s.generation == 5 and len(_segments(path)) == n
    s.tag("two", version=2)
    s.expire(keep_last=1)
    assert [h["version"] for h in s.history()] == [2, 5]
    s.compact()
    assert _content(Atlas.open(path, tag="two")) == states[2] and Atlas.open(path, tag="two").verify() == []
    assert _content(s) == states[4] and s.verify() == []
    with pytest.raises(VersionNotFoundError, match="version 3"):
        Atlas.open(path, version=3)
    kept = _segments(path)
    s.delete_tag("two")
    s.expire(keep_last=1)
    s.compact()
    assert len(_segments(path)) < len(kept)
    assert sorted(Path(p).parent.name.rsplit("-", 1)[0] for p in _segments(path)) == ["x", "y"]  # one per live name (<name>-<hash>)
    assert len(os.listdir(path / "versions")) == 1
    assert _content(Atlas.open(path)) == states[4]


def test_a_reader_on_a_version_survives_writers_and_fails_clearly_once_its_files_are_gone(tmp_path):
    path = tmp_path / "s"
    s = _build(path)
    old = Atlas.open(path, version=2)
    late = Atlas.open(path, version=2)  # nothing read yet (files already open, frames already decoded may serve it)
    d = s.open_dataset("b")
    for i in range(3):
        d.write_array("x", [i], np.array([100.0 + i]))
        s.flush()
        s.expire(keep_last=2)  # other versions go ...
        assert old.history() and s.tags() == {}
    s.tag("hold", version=s.generation)
    s.compact()
    # version 2 was expired, but the versions kept still list its segments: it reads right
    assert old.open_dataset("a").read_array("x").tolist() == A2.tolist()
    # a version still retained keeps reading while others are expired and compacted
    held = Atlas.open(path, tag="hold")
    hold_state = _content(held)
    for i in range(3):
        d.write_array("x", [0], np.array([float(i)]))
        s.flush()
        s.expire(keep_last=1)
        s.compact()
        assert _content(held) == hold_state
    # now nothing retained needs version 2's files: a reader that had not opened them fails clearly
    with pytest.raises(VersionNotFoundError, match="version 2 .* is gone: it was expired and compacted away"):
        late.open_dataset("a").read_array("x")


def test_a_read_running_on_an_expired_version_finishes_before_its_files_go(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    big = np.arange(200_000.0)  # one chunk above the size of frames kept decoded in the cache
    s.create_dataset("d").define_array("x", "float64", ["i"], [big.size])
    s.open_dataset("d").write_array("x", [0], big)
    s.flush()
    s.open_dataset("d").write_array("x", [0], -big)
    s.flush()
    old = Atlas.open(path, version=1)
    other = Atlas.open(path, version=1)
    t = old._state.txn
    pin = t.base.pin()  # what a running read holds
    s.expire(keep_last=1)
    s.compact()
    np.testing.assert_array_equal(old.open_dataset("d").read_array("x"), big)  # deletion deferred
    del pin, t
    with pytest.raises(VersionNotFoundError, match="version 1 .* is gone"):
        other.open_dataset("d").read_array("x")
    try:  # a handle may still hold the deleted file open (POSIX): then it reads it, never anything else
        np.testing.assert_array_equal(old.open_dataset("d").read_array("x"), big)
    except VersionNotFoundError:
        pass
    np.testing.assert_array_equal(s.open_dataset("d").read_array("x"), -big)


# ---------------------------------------------------------------------------- faults
class FailingStorage(LocalStorage):
    """Fails the first write of a version file (ENOSPC)."""

    def __init__(self, root, *, create=False):
        super().__init__(root, create=create)
        self.failed = False

    def write(self, path, data):
        if path.startswith("versions/") and not self.failed:
            self.failed = True
            raise OSError(errno.ENOSPC, "injected ENOSPC on a version file")
        return super().write(path, data)

    def create(self, path, data):
        if not self.failed:
            self.failed = True
            raise OSError(errno.EIO, "injected EIO on a tag")
        return super().create(path, data)


def test_a_failed_version_file_or_tag_write_changes_nothing_and_a_retry_succeeds(tmp_path):
    path = tmp_path / "s"
    _build(path)
    st = FailingStorage(str(path))
    s = Atlas.open(st)
    s.open_dataset("b").write_array("x", [0], np.array([7.0]))
    with pytest.raises(OSError, match="ENOSPC"):
        s.flush(message="retry me")
    assert Atlas.open(path).generation == 4
    s.flush(message="retry me")
    assert s.history()[-1]["message"] == "retry me" and Atlas.open(path, version=5).open_dataset("b").read_array("x")[0] == 7.0
    st.failed = False
    with pytest.raises(OSError, match="EIO"):
        s.tag("t")
    assert s.tags() == {}
    s.tag("t")
    assert s.tags() == {"t": 5}
    s.expire(keep_last=1)
    s.compact()
    for v in [h["version"] for h in s.history()] + list(s.tags().values()):
        assert Atlas.open(path, version=v).verify() == []


# ---------------------------------------------------------------------------- object stores
def test_versions_on_s3(moto_server, s3_bucket):
    src = lambda: moto_server.s3_store(s3_bucket, prefix="v")  # noqa: E731
    s = _build(src())
    states = {v: _content(Atlas.open(src(), version=v)) for v in range(1, 5)}
    assert list(states[2]) == ["a", "b"] and states[2]["a"][0]["x"] == A2.tolist()
    s.tag("t2", version=2)
    with pytest.raises(FileExistsError, match="already exists"):
        Atlas.open(src()).tag("t2", version=3)  # conditional PUT: the first tag stays
    assert Atlas.open(src()).tags() == {"t2": 2}
    assert s.expire(keep_last=1) == [1, 3]
    s.compact()
    assert _content(Atlas.open(src(), tag="t2")) == states[2] and Atlas.open(src(), tag="t2").verify() == []
    assert _content(Atlas.open(src())) == states[4]
    with pytest.raises(VersionNotFoundError):
        Atlas.open(src(), version=3)
    with pytest.raises(ReadOnlyError):
        Atlas.open(src(), version=2).create_dataset("z")


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_storage_create_is_exclusive(kind, tmp_path, request):
    if kind == "local":
        st = LocalStorage(str(tmp_path), create=True)
    else:
        from atlas.storage._object import ObjectStorage

        ms = request.getfixturevalue("moto_server")
        st = ObjectStorage(ms.s3_store(request.getfixturevalue("s3_bucket"), prefix="c"))
    st.create("tags/a.tag", b"one")
    with pytest.raises(FileExistsError):
        st.create("tags/a.tag", b"two")
    assert bytes(st.peek("tags/a.tag")) == b"one"
    assert st.list("tags") == ["tags/a.tag"]


# ---------------------------------------------------------------------------- command line
def test_cli_log_tag_expire_and_version_options(tmp_path, capsys):
    path = str(tmp_path / "s")
    _build(path)

    def run(*argv):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("tag", path, "v2", "--version", "2")
    assert code == 0 and "tagged version 2" in out
    code, out, _ = run("log", path)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["version", "time"] and len(lines) == 5
    assert "v2" in lines[2] and "add b, fix a" in lines[2] and lines[4].split()[0] == "4"
    code, out, _ = run("ls", path, "--version", "1")
    assert code == 0 and out.split() == ["a"]
    code, out, _ = run("ls", path, "--tag", "v2", "--json")
    assert code == 0 and out.count('"') == 4  # ["a", "b"]
    code, out, _ = run("stats", path, "a", "x", "--version", "2", "--json")
    assert code == 0 and '"max": 99.0' in out
    code, out, _ = run("info", path, "--version", "3")
    assert code == 0 and "generation:  3  (a past version, read-only)" in out
    code, _, err = run("info", path, "--version", "30")
    assert code == 1 and "version 30" in err and "does not exist" in err
    code, _, err = run("expire", path)
    assert code == 1 and "--keep-last" in err
    code, out, _ = run("expire", path, "--keep-last", "1")
    assert code == 0 and "expired 2 version(s)" in out and "1, 3" in out
    code, out, _ = run("expire", path, "--older-than", "7d")
    assert code == 0 and "expired 0 version(s)" in out
    code, _, err = run("expire", path, "--older-than", "soon")
    assert code == 2
    code, out, _ = run("tag", path, "v2", "--delete")
    assert code == 0 and Atlas.open(path).tags() == {}
    code, out, _ = run("log", path, "--json")
    assert code == 0 and '"version": 2' in out and '"version": 4' in out
