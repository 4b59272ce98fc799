"""Stores written by earlier releases of the format keep opening (tests/data/make_golden.py)."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

import atlas

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
sys.path.insert(0, HERE)
from make_golden import STORES, content  # noqa: E402


@pytest.mark.parametrize("name", sorted(STORES))
def test_golden_store_reads_back(tmp_path, name):
    path = tmp_path / name
    shutil.copytree(os.path.join(HERE, name), path)  # never touch the committed files
    store = atlas.Atlas.open(path)
    assert store.codec == STORES[name]["codec"]
    assert store.meta_format == STORES[name]["meta_format"]
    assert store.list_datasets() == ["alpha", "beta"]
    assert store.verify() == []
    for dname, spec in content().items():
        ds = store.open_dataset(dname)
        for a, (dtype, dims, shape, chunk, fill, data) in spec["arrays"].items():
            want = np.array(data)
            if dname == "alpha" and a == "count":
                want[0] = 9
            got = ds.read_array(a)
            assert ds.array_meta(a)["shape"] == shape
            if want.dtype.kind == "f":
                np.testing.assert_array_equal(got, want)
            else:
                assert got.tolist() == want.tolist()
        for k, v in spec["attrs"].items():
            got = ds.get_attribute(k)
            assert (got == v) or (v != v and got != got)
    st = store.open_dataset("alpha").array_stats("count")
    assert st["min"] == -2 and st["max"] == 9
    # the old store can be written by the current library
    store.open_dataset("beta").write_array("temp", [0, 0], np.zeros((3, 3)))
    store.flush()
    assert atlas.Atlas.open(path).open_dataset("beta").read_array("temp").sum() == 0
