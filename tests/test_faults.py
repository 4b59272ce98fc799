"""Storage faults: a failed write or read raises, keeps pending changes, and loses nothing flushed."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import atlas
from atlas.storage import LocalStorage


class FaultyStorage(LocalStorage):
    """Local storage that fails the k-th call of one kind (write, commit, read_ranges) with an OSError."""

    def __init__(self, root, *, create=False, kind="write", k=1, err=errno.ENOSPC):
        super().__init__(root, create=create)
        self.kind, self.k, self.err, self.calls = kind, k, err, 0

    def _tick(self, kind):
        if kind == self.kind:
            self.calls += 1
            if self.calls == self.k:
                raise OSError(self.err, f"injected {errno.errorcode[self.err]} on {kind} #{self.k}")

    def write(self, path, data):
        self._tick("write")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = b"".join(data)
        return super().write(path, data)

    def commit(self, path, data):
        self._tick("commit")
        return super().commit(path, data)

    def read_ranges(self, path, starts, ends):
        self._tick("read_ranges")
        return super().read_ranges(path, starts, ends)


def _fill(store, tag, n=3):
    for i in range(n):
        ds = store.create_dataset(f"{tag}{i}")
        ds.define_array("v", "float32", ["x"], [40], [16])
        ds.write_array("v", [0], np.arange(40, dtype=np.float32) + i)
        ds.define_array("s", "string", ["x"], [3])
        ds.write_array("s", [0], np.array([tag, str(i), "z"], dtype=object))
        ds.set_attribute("i", i)


def _state(store):
    return {n: (store.open_dataset(n).read_array("v").tolist(), store.open_dataset(n).read_array("s").tolist(),
                store.open_dataset(n).attributes()) for n in store.list_datasets()}


@pytest.mark.parametrize("kind,k", [("write", 1), ("write", 2), ("commit", 1)])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_flush_keeps_pending_and_retry_succeeds(tmp_path, kind, k, err):
    path = str(tmp_path / "s")
    base = atlas.Atlas.create(path)
    _fill(base, "old")
    base.flush()
    flushed = _state(atlas.Atlas.open(path))

    store = atlas.Atlas.open(FaultyStorage(path, kind=kind, k=k, err=err))
    _fill(store, "new")
    store.open_dataset("old1").write_array("v", [0], np.full(5, -1, np.float32))
    store.delete_dataset("old2")
    before = _state(store)
    with pytest.raises(OSError) as e:
        store.flush()
    assert e.value.errno == err
    assert _state(store) == before  # pending changes are still there
    assert _state(atlas.Atlas.open(path)) == flushed  # nothing flushed was lost or changed
    store.flush()  # the retry succeeds
    after = _state(atlas.Atlas.open(path))
    assert after == before
    assert atlas.Atlas.open(path).verify() == []


def test_failed_read_raises_and_the_store_keeps_working(tmp_path):
    path = str(tmp_path / "s")
    s = atlas.Atlas.create(path)
    _fill(s, "d")
    s.flush()
    store = atlas.Atlas.open(FaultyStorage(path, kind="read_ranges", k=3, err=errno.EIO))
    store.open_dataset("d0").read_array("v")  # calls 1-2: the index footer of "v", then its frame
    with pytest.raises(OSError):
        store.open_dataset("d0").read_array("s")  # call 3: the index footer of "s" fails
    np.testing.assert_array_equal(store.open_dataset("d1").read_array("v"), np.arange(40, dtype=np.float32) + 1)
    assert store.open_dataset("d2").read_array("s").tolist() == ["d", "2", "z"]  # the failed load is retried
    assert store.read_array_across_stacked("v", ["d0", "d1", "d2"]).shape == (3, 40)


def test_failed_compact_keeps_every_read(tmp_path):
    path = str(tmp_path / "s")
    s = atlas.Atlas.create(path)
    _fill(s, "d", 4)
    s.flush()
    s.delete_dataset("d1")
    s.flush()
    want = _state(atlas.Atlas.open(path))
    store = atlas.Atlas.open(FaultyStorage(path, kind="commit", k=1))
    with pytest.raises(OSError):
        store.compact()
    assert _state(store) == want
    assert _state(atlas.Atlas.open(path)) == want
    store.compact()
    assert _state(atlas.Atlas.open(path)) == want
