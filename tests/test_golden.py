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


def test_format_2_store_flushed_by_this_library_keeps_every_version(tmp_path):
    """A format-2 store (footers in the store's codec, five-field locations) flushed by this
    library: the flushed array gets a footer in the index codec, the others keep theirs, every
    array reads back, ``verify()`` is clean, and the versions from before the flush open as
    they were, before and after ``compact()``."""
    from atlas import _metaio
    from atlas._segments import INDEX_CODEC

    path = tmp_path / "v2"
    shutil.copytree(os.path.join(HERE, "v2_json"), path)
    store = atlas.Atlas.open(path)
    before = {v["version"]: _read_all(atlas.Atlas.open(path, version=v["version"])) for v in store.history()}
    assert len(before) == 2
    store.open_dataset("beta").write_array("temp", [0, 0], np.zeros((3, 3)))
    store.flush()
    with open(path / "atlas.meta", "rb") as f:
        obj, _, _ = _metaio.decode(f.read(), "m")
    assert obj["version"] == 3
    locs = {a: p["index"] for a, p in obj["physical"].items()}
    assert locs["temp"][5:] == [INDEX_CODEC] and all(len(v) == 5 for a, v in locs.items() if a != "temp")
    now = _read_all(atlas.Atlas.open(path))
    assert now["beta"]["temp"].sum() == 0 and _same(now["alpha"], before[max(before)]["alpha"])
    assert atlas.Atlas.open(path).verify() == []
    for step in ("flushed", "compacted"):
        for v, want in before.items():
            got = _read_all(atlas.Atlas.open(path, version=v))
            assert all(_same(got[d], want[d]) for d in want), (step, v)
        atlas.Atlas.open(path).compact()
    assert _same(_read_all(atlas.Atlas.open(path))["alpha"], now["alpha"])


def _read_all(store):
    return {d: {a: store.open_dataset(d).read_array(a) for a in store.open_dataset(d).list_arrays()}
            for d in store.list_datasets()}


def _same(x, y) -> bool:
    return x.keys() == y.keys() and all(
        np.array_equal(x[a], y[a], equal_nan=x[a].dtype.kind == "f") if x[a].dtype != object
        else x[a].tolist() == y[a].tolist() for a in x)
