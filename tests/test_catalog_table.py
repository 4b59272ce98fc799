"""The persisted catalog table (catalog files) and its incremental maintenance.

Every state's table, whether read from its catalog file, merged at a flush or overlaid with
pending edits, must equal the table built from every dataset's metadata (and the brute-force
scan of test_catalog).
"""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlas
from atlas import _catalog, _catfile, _cattable, _meta
from atlas.store import _forget_process_caches
from test_catalog import HERE, CountingStorage, assert_matches_brute_force  # noqa: E402 (tests/ is on sys.path)

T0 = np.datetime64("2020-01-01", "ns")


@pytest.fixture
def files(monkeypatch):
    """Catalog files for stores of any size (the default leaves small stores without one)."""
    monkeypatch.setattr(_meta, "CATALOG_MIN_DATASETS", 0)


def _same_values(a, b, kind):
    if kind == "float":
        return np.array_equal(a, b, equal_nan=True)
    if kind != "object":
        return a.dtype == b.dtype and np.array_equal(a, b)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if type(x) is not type(y):
            return False
        if isinstance(x, float) and math.isnan(x) and math.isnan(y):
            continue
        if not (x == y):
            return False
    return True


def assert_same_table(got, want):
    assert got.names == want.names
    assert list(got.columns) == list(want.columns)
    assert got.attr_columns == want.attr_columns and got.array_columns == want.array_columns
    for c, w in want.columns.items():
        g = got.columns[c]
        assert g.kind == w.kind, c
        assert np.array_equal(g.valid, w.valid), c
        assert _same_values(g.values, w.values, w.kind), (c, g.values, w.values)


def rebuilt(store):
    """The table built from every dataset's metadata as the handle sees it now (no file, no merge)."""
    return _cattable.build(_cattable.capture(store._state.txn.meta)).table()


def check(store):
    assert_same_table(_catalog.table(store), rebuilt(store))


def cat_files(path):
    d = os.path.join(path, "catalog")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def _fill(store, n, start=0):
    for i in range(start, start + n):
        ds = store.create_dataset(f"d{i}")
        ds.set_attribute("platform", "ABC"[i % 3])
        ds.set_attribute("month", i % 12 + 1)
        ds.define_array("temp", "float32", ["t"], [4])
        ds.write_array("temp", [0], np.arange(4, dtype=np.float32) + i)


# ------------------------------------------------------------------------------- the file
def test_small_store_gets_no_file_big_one_does(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    s = atlas.Atlas.create(path)
    _fill(s, 5)
    s.flush()
    assert cat_files(path) == [] and s._state.txn.base.meta.catalog is None
    monkeypatch.setattr(_meta, "CATALOG_MIN_DATASETS", 6)
    _fill(s, 1, 5)
    s.flush()
    assert len(cat_files(path)) == 1 and s._state.txn.base.meta.catalog.rows == 6
    check(s)
    assert atlas.Atlas.open(path).verify() == []


def test_committed_catalog_is_one_read_and_no_chunk(tmp_path, files):
    path = str(tmp_path / "s")
    with atlas.Atlas.create(path) as s:
        _fill(s, 8)
    want = rebuilt(s)
    _forget_process_caches()
    storage = CountingStorage(path)
    h = atlas.Atlas.open(storage)
    storage.calls.clear()
    df = h.catalog()
    assert h.query("platform == 'B' and `temp.max` > 4") == ["d4", "d7"]
    loc = h._state.txn.base.meta.catalog
    assert storage.calls == [("read", loc.path)]  # the catalog file, once; no chunk, no listing
    assert len(df) == 8
    assert_same_table(_catalog.table(h), want)
    assert_matches_brute_force(h, df)


def test_flush_merges_only_what_changed(tmp_path, files, monkeypatch):
    path = str(tmp_path / "s")
    s = atlas.Atlas.create(path)
    _fill(s, 6)
    s.flush()
    built = []
    real = _cattable.build
    monkeypatch.setattr(_catfile, "build", lambda rows: built.append(len(rows.names)) or real(rows))
    monkeypatch.setattr(_cattable, "build", lambda rows: built.append(len(rows.names)) or real(rows))
    s.open_dataset("d2").set_attribute("month", "May")  # int -> str: the column turns mixed
    s.delete_dataset("d4")
    _fill(s, 1, 6)
    s.flush()
    assert built == [2]  # d2 and d6 re-derived; d4 dropped; the other rows came from the old table
    check(s)
    _forget_process_caches()
    h = atlas.Atlas.open(path)
    assert_same_table(_catalog.table(h), rebuilt(h))
    assert h.catalog().at["d2", "month"] == "May"


def test_column_renamed_when_an_array_name_arrives_later(tmp_path, files):
    s = atlas.Atlas.create(str(tmp_path / "s"))
    s.create_dataset("a").set_attribute("x.max", 1)
    s.flush()
    assert list(s.catalog().columns) == ["x.max"]
    s.create_dataset("b").define_array("x", "int8", ["t"], [1])
    check(s)  # pending: overlaid on the committed table
    s.flush()
    check(s)
    assert list(s.catalog().columns)[0] == "attr:x.max"
    s.delete_dataset("b")
    s.flush()
    check(s)
    assert list(s.catalog().columns) == ["x.max"]


def test_damaged_file_is_reported_and_not_used(tmp_path, files, caplog):
    path = str(tmp_path / "s")
    with atlas.Atlas.create(path) as s:
        _fill(s, 4)
    (f,) = cat_files(path)
    p = os.path.join(path, "catalog", f)
    with open(p, "rb") as fh:
        data = bytearray(fh.read())
    data[-3] ^= 0xFF
    with open(p, "wb") as fh:
        fh.write(bytes(data))
    _forget_process_caches()
    h = atlas.Atlas.open(path)
    problems = h.verify()
    assert len(problems) == 1 and f in problems[0] and "checksum" in problems[0]
    with caplog.at_level("WARNING", logger="atlas._catfile"):
        check(h)  # built from the metadata instead
    assert f in caplog.text
    h.open_dataset("d1").set_attribute("month", 99)
    h.flush()  # the next state gets a sound file again
    assert atlas.Atlas.open(path).verify() == []


def test_malformed_catalog_file_names_the_file(tmp_path):
    with pytest.raises(atlas.errors.CorruptStoreError, match="x.cat"):
        _catfile.decode(_catfile.MAGIC + b"\x00" * 8 + b"junk", "x.cat")
    raw = _cattable.build(_cattable.Rows(["a"], ['[{"k":["int64",1]},{}]'], []))
    data, _ = _catfile.encode(raw)
    assert _catfile.decode(data, "ok").names == ["a"]
    with pytest.raises(atlas.errors.CorruptStoreError, match="y.cat"):
        _catfile.decode(data[:-4], "y.cat")


def test_golden_stores_query_then_get_a_file(tmp_path, files):
    for name in ("v1_json", "v1_msgpack_lz4", "v1_uncompressed"):
        path = tmp_path / name
        shutil.copytree(os.path.join(HERE, name), path)
        s = atlas.Atlas.open(path)
        assert s._state.txn.base.meta.catalog is None
        assert s.query("when >= '2020-02-29' or site == 'KNMI'") == ["alpha", "beta"]
        s.open_dataset("alpha").set_attribute("site", "KNMI")
        s.flush()
        assert len(cat_files(str(path))) == 1
        _forget_process_caches()
        h = atlas.Atlas.open(path)
        assert "alpha" in h.query("site == 'KNMI'")
        assert h.query("site == 'KNMI'") == s.query("site == 'KNMI'")
        assert_same_table(_catalog.table(h), rebuilt(h))
        assert_matches_brute_force(h, h.catalog())


# ------------------------------------------------------------------------------- versions
def test_versions_see_their_own_table_and_compaction_keeps_what_they_need(tmp_path, files):
    path = str(tmp_path / "s")
    s = atlas.Atlas.create(path)
    _fill(s, 3)
    s.flush()
    v1 = s.generation
    s.open_dataset("d0").set_attribute("month", 7)
    s.flush()
    s.delete_dataset("d1")
    s.flush()
    orphan = os.path.join(path, "catalog", f"{s.generation:012d}-deadbeef0000.cat")
    with open(orphan, "wb") as fh:
        fh.write(b"left by a crashed flush")
    assert len(cat_files(path)) == 4
    s.tag("first", v1)
    s.compact()
    assert len(cat_files(path)) == 3  # the orphan went; every retained version keeps its file
    _forget_process_caches()
    old = atlas.Atlas.open(path, version=v1)
    assert old.query("month == 1") == ["d0"] and len(old.catalog()) == 3
    assert_same_table(_catalog.table(old), rebuilt(old))
    s.expire(keep_last=1)
    s.compact()
    assert len(cat_files(path)) == 2  # the tagged version's and the current one's
    s.delete_tag("first")
    s.expire(keep_last=1)
    s.compact()
    assert cat_files(path) == [os.path.basename(s._state.txn.base.meta.catalog.path)]
    _forget_process_caches()
    h = atlas.Atlas.open(path)
    assert h.query("month == 7") == ["d0"] and h.list_datasets() == ["d0", "d2"]
    assert h.verify() == []


def test_staged_commit_appends_rows(tmp_path, files):
    path = str(tmp_path / "s")
    s = atlas.Atlas.create(path)
    _fill(s, 2)
    s.flush()
    w = s.stage().writer()
    ds = w.create_dataset("staged")
    ds.set_attribute("month", 12)
    ds.define_array("temp", "float64", ["t"], [2])
    ds.write_array("temp", [0], np.array([5.0, 6.0]))
    s.commit_staged([w.finish()])
    assert s._state.txn.base.meta.catalog.rows == 3
    check(s)
    _forget_process_caches()
    h = atlas.Atlas.open(path)
    assert h.query("`temp.max` == 6") == ["staged"]
    assert_same_table(_catalog.table(h), rebuilt(h))


def test_s3_catalog_file(s3_store, monkeypatch):
    monkeypatch.setattr(_meta, "CATALOG_MIN_DATASETS", 0)
    with atlas.Atlas.create(s3_store) as s:
        _fill(s, 5)
    files = s._storage.list("catalog")
    assert len(files) == 1 and files[0] == s._state.txn.base.meta.catalog.path
    _forget_process_caches()
    h = atlas.Atlas.open(s3_store)
    assert h.query("month > 3") == ["d3", "d4"]
    assert_same_table(_catalog.table(h), rebuilt(h))
    assert h.verify() == []


# ------------------------------------------------------------------------------- random operations
ATTR_VALUES = {
    "int": st.integers(-5, 5),
    "float": st.sampled_from([0.5, 2.0, float("nan"), float("inf")]),
    "str": st.sampled_from(["a", "b", ""]),
    "bool": st.booleans(),
    "time": st.integers(0, 3).map(lambda d: T0 + np.timedelta64(d, "D")),
}
DTYPES = ["float64", "int32", "uint64", "timestamp_ns", "string"]


def _data(dtype, n, seed):
    if dtype == "string":
        return np.array([f"s{seed + i}" for i in range(n)], dtype=object)
    if dtype.startswith("timestamp"):
        return T0 + np.arange(n).astype("timedelta64[D]").astype("timedelta64[ns]") + np.timedelta64(seed, "h")
    return (np.arange(n) + seed).astype(dtype)


@settings(max_examples=int(os.environ.get("ATLAS_CATALOG_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_incremental_table_equals_rebuild(tmp_path_factory, data):
    _catfile_min = _meta.CATALOG_MIN_DATASETS
    _meta.CATALOG_MIN_DATASETS = 0
    try:
        _random_run(str(tmp_path_factory.mktemp("cat") / "s"), data)
    finally:
        _meta.CATALOG_MIN_DATASETS = _catfile_min


def _random_run(path, data):
    s = atlas.Atlas.create(path)
    seq = 0
    ops = data.draw(st.lists(st.sampled_from(
        ["create", "create", "delete", "attr", "attr", "define", "write", "delarray", "append", "flush", "flush",
         "reopen", "staged", "compact"]), min_size=3, max_size=14))
    for op in ops:
        names = s.list_datasets()
        name = data.draw(st.sampled_from(names)) if names else None
        if op == "create" or name is None:
            seq += 1
            ds = s.create_dataset(f"n{seq}")
            if data.draw(st.booleans()):
                ds.set_attribute(data.draw(st.sampled_from(["a", "b"])), 1)
        elif op == "delete":
            s.delete_dataset(name)
        elif op == "attr":
            kind = data.draw(st.sampled_from(sorted(ATTR_VALUES)))
            s.open_dataset(name).set_attribute(data.draw(st.sampled_from(["a", "b", "c"])), data.draw(ATTR_VALUES[kind]))
        elif op in ("define", "write", "delarray", "append"):
            ds = s.open_dataset(name)
            arr = data.draw(st.sampled_from(["temp", "x"]))
            have = arr in ds.list_arrays()
            if op == "define" or not have:
                if have:
                    ds.delete_array(arr)
                dtype = data.draw(st.sampled_from(DTYPES))
                ds.define_array(arr, dtype, ["t"], [data.draw(st.integers(1, 3))])
            elif op == "delarray":
                ds.delete_array(arr)
            else:
                m = ds.array_meta(arr)
                seq += 1
                d = _data(m["dtype"], m["shape"][0] if op == "write" else 2, seq)
                (ds.write_array(arr, [0], d) if op == "write" else ds.append_array(arr, d))
        elif op == "flush":
            s.flush()
        elif op == "reopen":
            s.flush()
            _forget_process_caches()
            s = atlas.Atlas.open(path)
        elif op == "staged":
            w = s.stage().writer()
            seq += 1
            ds = w.create_dataset(f"w{seq}")
            ds.set_attribute("a", data.draw(ATTR_VALUES["str"]))
            ds.define_array("x", "int32", ["t"], [2])
            ds.write_array("x", [0], np.array([seq, -seq], np.int32))
            s.commit_staged([w.finish()])
        elif op == "compact":
            s.expire(keep_last=1)
            s.compact()
        check(s)
    s.flush()
    _forget_process_caches()
    h = atlas.Atlas.open(path)
    assert_same_table(_catalog.table(h), rebuilt(h))
    assert_matches_brute_force(h, h.catalog())
    assert h.verify() == []
