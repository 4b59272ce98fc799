"""Checksums, verify(), and one writer at a time."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

import atlas


def _store(path, codec="zstd"):
    s = atlas.Atlas.create(path, codec=codec)
    for i in range(3):
        ds = s.create_dataset(f"d{i}")
        ds.define_array("big", "float64", ["x", "y"], [64, 64], [32, 32])
        ds.write_array("big", [0, 0], np.arange(64 * 64, dtype=np.float64).reshape(64, 64) + i)
        ds.define_array("small", "int16", ["x"], [10])
        ds.write_array("small", [0], np.arange(10, dtype=np.int16) * i)
    s.flush()
    return s


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
def test_verify_reports_a_flipped_bit_and_reads_refuse_it(tmp_path, codec):
    path = tmp_path / "s"
    _store(path, codec)
    assert atlas.Atlas.open(path).verify() == []
    seg = sorted(glob.glob(str(path / "arrays" / "*big*" / "*.seg")))[0]
    with open(seg, "rb") as f:
        data = bytearray(f.read())
    data[100] ^= 0x10  # inside the first frame
    with open(seg, "wb") as f:
        f.write(bytes(data))
    store = atlas.Atlas.open(path)
    problems = store.verify()
    assert problems and all("big" in p for p in problems), problems
    with pytest.raises(atlas.CorruptStoreError) as e:
        store.read_array_across_stacked("big", ["d0", "d1", "d2"])
    assert isinstance(e.value, OSError) and ".seg" in str(e.value)
    np.testing.assert_array_equal(store.open_dataset("d1").read_array("small"), np.arange(10, dtype=np.int16))


def test_truncated_segment_and_damaged_metadata(tmp_path):
    path = tmp_path / "s"
    _store(path)
    seg = sorted(glob.glob(str(path / "arrays" / "*small*" / "*.seg")))[0]
    with open(seg, "r+b") as f:
        f.truncate(os.path.getsize(seg) // 2)
    store = atlas.Atlas.open(path)
    assert any("small" in p for p in store.verify())
    with pytest.raises(atlas.CorruptStoreError, match="small|seg"):
        store.open_dataset("d0").read_array("small")
    meta = path / "atlas.meta"
    raw = bytearray(meta.read_bytes())
    raw[-3] ^= 0x01
    meta.write_bytes(bytes(raw))
    with pytest.raises(atlas.CorruptStoreError, match="atlas.meta"):
        atlas.Atlas.open(path)


def test_second_writer_is_refused_and_keeps_its_changes(tmp_path):
    path = tmp_path / "s"
    _store(path)
    a = atlas.Atlas.open(path)
    b = atlas.Atlas.open(path)
    a.create_dataset("from_a")
    a.flush()
    b.create_dataset("from_b")
    b.open_dataset("d0").write_array("small", [0], np.full(10, 7, np.int16))
    with pytest.raises(atlas.ConcurrentWriteError, match="another writer"):
        b.flush()
    assert b.dataset_exists("from_b")  # pending changes stay in memory
    np.testing.assert_array_equal(b.open_dataset("d0").read_array("small"), np.full(10, 7, np.int16))
    fresh = atlas.Atlas.open(path)
    assert fresh.dataset_exists("from_a") and not fresh.dataset_exists("from_b")
    np.testing.assert_array_equal(fresh.open_dataset("d0").read_array("small"), np.zeros(10, np.int16))
    assert fresh.verify() == []
    a.create_dataset("again")
    a.flush()  # the first writer goes on
    assert atlas.Atlas.open(path).dataset_exists("again")
