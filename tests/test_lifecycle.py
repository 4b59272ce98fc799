"""Delete / re-create, compact, shared physical arrays and the flush model, recovery from errors."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path



import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas import Atlas

HYP = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            s = p.stat()
            out[str(p.relative_to(root))] = (s.st_size, s.st_mtime_ns, p.read_bytes())
    return out


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def segments(root: Path) -> dict[str, set[str]]:
    """array folder -> names of its segment files."""
    out: dict[str, set[str]] = {}
    for p in (root / "arrays").glob("*/*.seg"):
        out.setdefault(p.parent.name, set()).add(p.name)
    return out


def all_segment_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "arrays").glob("*/*.seg")}


def read_everything(s: Atlas) -> dict:
    """Every array of every dataset (plus stats and attributes), as comparable Python data."""
    out = {}
    for dname in s.list_datasets():
        d = s.open_dataset(dname)
        out[(dname, "__attrs__")] = repr(d.attributes())
        for a in d.list_arrays():
            arr = d.read_array(a)
            out[(dname, a)] = (str(arr.dtype), arr.shape, arr.tolist() if arr.dtype == object else arr.tobytes(),
                               repr(d.array_stats(a)), repr(d.array_meta(a)))
    return out


# ---------------------------------------------------------------- delete + re-create
@pytest.mark.parametrize("when", ["pending", "flushed", "flushed-then-compacted", "reopened"])
@pytest.mark.parametrize("dtype, data, fill, expected_fill", [
    ("int32", np.arange(1, 13, dtype=np.int32).reshape(3, 4), None, 0),
    ("float64", np.linspace(1, 2, 12).reshape(3, 4), -1.0, -1.0),
    ("string", np.array([[f"v{i}{j}" for j in range(4)] for i in range(3)], dtype=object), "", ""),
])
def test_recreated_array_never_sees_deleted_data(tmp_path, when, dtype, data, fill, expected_fill):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    other = s.create_dataset("other")  # a second dataset keeps the name alive in the shared files
    for view in (d, other):
        view.define_array("a", dtype, ["y", "x"], [3, 4], [2, 3], fill_value=fill)
        view.write_array("a", [0, 0], data)
    if when != "pending":
        s.flush()
    d.delete_array("a")
    assert d.read_array("a") is None
    assert d.array_meta("a") is None and d.list_arrays() == []
    if when == "flushed-then-compacted":
        s.compact()
    if when == "reopened":
        s.flush()
        s = Atlas.open(path)
        d = s.open_dataset("d")
        assert d.read_array("a") is None
    d.define_array("a", dtype, ["y", "x"], [3, 4], [2, 3], fill_value=fill)
    fresh = d.read_array("a")
    assert fresh.tolist() == np.full((3, 4), expected_fill, dtype=data.dtype).tolist()
    s.flush()
    assert d.read_array("a").tolist() == fresh.tolist()
    assert d.array_stats("a")["null_count"] == 12 or fill is None
    assert d.array_stats("a")["max"] in (None, expected_fill)
    s.compact()
    s2 = Atlas.open(path)
    assert s2.open_dataset("d").read_array("a").tolist() == fresh.tolist()
    # the other dataset's copy of the same name is untouched throughout
    assert s2.open_dataset("other").read_array("a").tolist() == data.tolist()


@pytest.mark.parametrize("compact_before", [False, True])
def test_recreated_with_different_layout_sees_nothing_old(tmp_path, compact_before):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", "int64", ["x"], [10], [3])
    d.write_array("a", [0], np.arange(100, 110, dtype=np.int64))
    s.flush()
    d.delete_array("a")
    s.flush()
    if compact_before:
        s.compact()
    d.define_array("a", "int64", ["x"], [12], [3], fill_value=-1)  # same dtype & chunking, bigger
    np.testing.assert_array_equal(d.read_array("a"), np.full(12, -1))
    d.write_array("a", [11], np.array([5], np.int64))
    s.flush()
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("d").read_array("a"), [-1] * 11 + [5])


@pytest.mark.parametrize("when", ["pending", "flushed", "compacted", "reopened"])
def test_recreated_dataset_never_sees_deleted_data(tmp_path, when):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", "uint8", ["x"], [5], [2])
    d.write_array("a", [0], np.arange(1, 6, dtype=np.uint8))
    d.set_attribute("old", 1)
    keep = s.create_dataset("keep")
    keep.define_array("a", "uint8", ["x"], [5], [2])
    keep.write_array("a", [0], np.full(5, 9, np.uint8))
    if when != "pending":
        s.flush()
    s.delete_dataset("d")
    if when == "compacted":
        s.compact()
    if when == "reopened":
        s.flush()
        s = Atlas.open(path)
    assert not s.dataset_exists("d")
    d = s.create_dataset("d")
    assert d.list_arrays() == [] and d.attributes() == {} and d.read_array("a") is None
    d.define_array("a", "uint8", ["x"], [5], [2])
    np.testing.assert_array_equal(d.read_array("a"), np.zeros(5, np.uint8))
    s.flush()
    s.compact()
    s2 = Atlas.open(path)
    np.testing.assert_array_equal(s2.open_dataset("d").read_array("a"), np.zeros(5, np.uint8))
    assert s2.open_dataset("d").attributes() == {}
    np.testing.assert_array_equal(s2.open_dataset("keep").read_array("a"), np.full(5, 9, np.uint8))


def test_view_of_deleted_dataset_raises(tmp_path):
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("a", "int8", ["x"], [1])
    s.delete_dataset("d")
    with pytest.raises(KeyError):
        d.list_arrays()
    with pytest.raises(KeyError):
        d.write_array("a", [0], np.zeros(1, np.int8))


def test_delete_array_errors(tmp_path):
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    with pytest.raises(KeyError):
        d.delete_array("missing")
    d.define_array("a", "int8", ["x"], [1])
    d.delete_array("a")
    with pytest.raises(KeyError):
        d.delete_array("a")


# ---------------------------------------------------------------- compact
def _populate_with_garbage(path: Path) -> Atlas:
    rng = np.random.default_rng(7)
    s = Atlas.create(path)
    for i in range(6):
        d = s.create_dataset(f"ds{i}")
        d.define_array("temp", "float64", ["y", "x"], [40, 50], [16, 16], fill_value=float("nan"))
        d.write_array("temp", [0, 0], rng.standard_normal((40, 50)))
        d.define_array("name", "string", ["i"], [30], [7], fill_value="-")
        d.write_array("name", [0], np.array([f"n{i}-{j}-{'x' * j}" for j in range(30)], dtype=object))
        d.define_array("count", "int32", ["i"], [1000], [100])
        d.write_array("count", [0], rng.integers(-10**6, 10**6, 1000).astype(np.int32))
        d.set_attribute("i", i)
    s.flush()
    # overwrite chunks (garbage in old segments), delete datasets and arrays (tombstones)
    for i in range(6):
        d = s.open_dataset(f"ds{i}")
        d.write_array("temp", [5, 5], rng.standard_normal((30, 30)))
        d.write_array("count", [0], rng.integers(0, 5, 1000).astype(np.int32))
    s.flush()
    s.delete_dataset("ds1")
    s.delete_dataset("ds4")
    s.open_dataset("ds2").delete_array("temp")
    s.open_dataset("ds3").delete_array("name")
    s.flush()
    return s


def test_compact_shrinks_store_and_keeps_every_read(tmp_path):
    path = tmp_path / "s"
    s = _populate_with_garbage(path)
    before_reads = read_everything(s)
    before_bytes = store_bytes(path)
    before_segs = all_segment_paths(path)
    s.expire(keep_last=1)  # every version is kept until expired: only then is their space reclaimed
    s.compact()
    after_bytes = store_bytes(path)
    assert after_bytes < before_bytes * 0.7, (before_bytes, after_bytes)
    assert read_everything(s) == before_reads
    s2 = Atlas.open(path)
    assert read_everything(s2) == before_reads
    # the old segments are gone, one segment per live array name is left
    after_segs = all_segment_paths(path)
    assert not (after_segs & before_segs)
    assert sorted(Counter(Path(p).parent.name for p in after_segs).values()) == [1, 1, 1]
    # and the store keeps working after compaction
    d = s2.open_dataset("ds0")
    d.write_array("count", [990], np.arange(10, dtype=np.int32))
    s2.flush()
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("ds0").read_array("count", [990], [10]), np.arange(10))
    assert Atlas.open(path).open_dataset("ds5").read_array("temp").tolist() == s.open_dataset("ds5").read_array("temp").tolist()


def test_compact_after_deleting_everything_frees_the_space(tmp_path):
    path = tmp_path / "s"
    s = _populate_with_garbage(path)
    full = store_bytes(path)
    for n in s.list_datasets():
        s.delete_dataset(n)
    s.flush()
    s.expire(keep_last=1)
    s.compact()
    assert store_bytes(path) < full / 20
    assert not all_segment_paths(path)
    s2 = Atlas.open(path)
    assert s2.list_datasets() == [] and s2.list_arrays() == []
    d = s2.create_dataset("ds0")  # a re-created name starts empty
    d.define_array("temp", "float64", ["y", "x"], [40, 50], [16, 16])
    assert not d.read_array("temp").any()


def test_compact_flushes_pending_changes_and_is_repeatable(tmp_path):
    path = tmp_path / "s"
    s = _populate_with_garbage(path)
    d = s.open_dataset("ds0")
    d.write_array("count", [0], np.full(3, 77, np.int32))
    s.compact()
    expected = read_everything(s)
    assert read_everything(Atlas.open(path)) == expected
    size1 = store_bytes(path)
    s.compact()  # nothing to reclaim
    assert read_everything(Atlas.open(path)) == expected
    assert store_bytes(path) <= size1 + 256  # metadata may grow by a few bytes (generation)
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("ds0").read_array("count", [0], [3]), [77, 77, 77])


def test_compact_on_empty_and_unwritten_store(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    s.compact()
    d = s.create_dataset("d")
    d.define_array("a", "int8", ["x"], [3], fill_value=4)
    s.compact()
    assert Atlas.open(path).open_dataset("d").read_array("a").tolist() == [4, 4, 4]


# ---------------------------------------------------------------- shared physical arrays, flush model
LAYOUTS = [
    ("float32", [10], [4]),
    ("int64", [3, 5], [2, 2]),
    ("string", [4], [3]),
    ("timestamp_ns", [2, 2, 2], [1, 2, 1]),
    ("uint8", [], []),
    ("float64", [300, 100], [128, 100]),  # large chunks
]


def _data(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) if shape else 1
    if dtype == "string":
        a = np.empty(n, dtype=object)
        a[:] = [f"s{seed}-{i}" for i in range(n)]
        return a.reshape(shape)
    if dtype in ("timestamp_ns", "timestamp_nanoseconds"):
        return rng.integers(0, 10**18, n).astype("datetime64[ns]").reshape(shape)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    return rng.integers(0, 100, n).astype(dtype).reshape(shape)


def test_one_segment_per_touched_name_and_old_files_untouched(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    expected = {}
    names = ["temp", "pres", "flag"]
    for i in range(12):
        d = s.create_dataset(f"ds{i:02d}")
        for k, name in enumerate(names):
            dtype, shape, chunk = LAYOUTS[(i + k) % len(LAYOUTS)]
            d.define_array(name, dtype, [f"d{j}" for j in range(len(shape))], shape, chunk)
            v = _data(dtype, shape, i * 10 + k)
            d.write_array(name, [0] * len(shape), v)
            expected[(d.name, name)] = v
    assert segments(path) == {}  # nothing before the flush
    s.flush()
    segs1 = segments(path)
    assert len(segs1) == len(names)  # one folder per array name
    assert all(len(v) == 1 for v in segs1.values()), segs1  # exactly one segment each
    snap1 = {k: v for k, v in snapshot(path).items() if k.endswith(".seg")}

    # second flush touching two of the names in a few datasets
    for i in (0, 5, 7):
        d = s.open_dataset(f"ds{i:02d}")
        for name in ("temp", "flag"):
            m = d.array_meta(name)
            v = _data(m["dtype"], m["shape"], 1000 + i)
            d.write_array(name, [0] * len(m["shape"]), v)
            expected[(d.name, name)] = v
    s.flush()
    segs2 = segments(path)
    assert segs2.keys() == segs1.keys()
    added = {k: segs2[k] - segs1[k] for k in segs2}
    assert sorted(len(v) for v in added.values()) == [0, 1, 1], added
    assert all(segs1[k] <= segs2[k] for k in segs1)  # nothing removed
    snap2 = snapshot(path)
    for rel, (size, mtime, data) in snap1.items():
        assert snap2[rel] == (size, mtime, data), rel  # bytes and mtime unchanged

    # a flush without changes writes no segment and touches none
    segs_before_noop = {k: v for k, v in snapshot(path).items() if k.endswith(".seg")}
    s.flush()
    assert {k: v for k, v in snapshot(path).items() if k.endswith(".seg")} == segs_before_noop

    # every read is right, in this handle and after reopening
    for s_ in (s, Atlas.open(path)):
        for (dname, name), v in expected.items():
            got = s_.open_dataset(dname).read_array(name)
            assert got.tolist() == v.tolist(), (dname, name)


def test_attribute_only_flush_adds_no_segment(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", "int8", ["x"], [4])
    d.write_array("a", [0], np.ones(4, np.int8))
    s.flush()
    segs = all_segment_paths(path)
    d.set_attribute("k", 1)
    s.create_dataset("e").define_array("b", "int8", ["x"], [4])  # defined, never written
    s.flush()
    assert all_segment_paths(path) == segs
    assert Atlas.open(path).open_dataset("d").get_attribute("k") == 1


@HYP
@given(
    n_datasets=st.integers(1, 6),
    plan=st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4), min_size=1, max_size=3),
    data=st.data(),
)
def test_segments_per_flush_match_touched_names(tmp_path, n_datasets, plan, data):
    """For a random series of flushes: each flush adds exactly one segment for every array name
    written since the previous one, none for the others, and never changes existing files."""
    path = tmp_path / f"s-{uuid.uuid4().hex[:8]}"
    s = Atlas.create(path, codec=data.draw(st.sampled_from(["zstd", "lz4", "none"])))
    layouts = {}
    for i in range(n_datasets):
        d = s.create_dataset(f"d{i}")
        for name in "abcd":
            dtype, shape, chunk = data.draw(st.sampled_from(LAYOUTS[:5]))
            d.define_array(name, dtype, [f"x{j}" for j in range(len(shape))], shape, chunk)
            layouts[(i, name)] = (dtype, shape)
    s.flush()
    expected = {}
    for step, touched in enumerate(plan):
        before = snapshot(path)
        segs_before = segments(path)
        for name in touched:
            i = data.draw(st.integers(0, n_datasets - 1))
            dtype, shape = layouts[(i, name)]
            v = _data(dtype, shape, step * 100 + i)
            s.open_dataset(f"d{i}").write_array(name, [0] * len(shape), v)
            expected[(i, name)] = v
        s.flush()
        segs_after = segments(path)
        new_per_name = Counter()
        for folder, files in segs_after.items():
            new_per_name[folder] = len(files - segs_before.get(folder, set()))
        assert sum(new_per_name.values()) == len(set(touched))
        assert all(c <= 1 for c in new_per_name.values())
        after = snapshot(path)
        for rel, v in before.items():
            if rel.endswith(".seg"):
                assert after[rel] == v
    s2 = Atlas.open(path)
    for (i, name), v in expected.items():
        assert s2.open_dataset(f"d{i}").read_array(name).tolist() == v.tolist()


def test_flush_replaces_metadata_atomically_no_temp_files_left(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    for i in range(3):
        d = s.create_dataset(f"d{i}")
        d.define_array("a", "int8", ["x"], [2])
        d.write_array("a", [0], np.array([i, i], np.int8))
        s.flush()
    files = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
    assert not [f for f in files if "tmp" in f.lower()], files
    assert all(f.endswith(".seg") or "/" not in f or (f.startswith("versions/") and f.endswith(".meta"))
               or (f.startswith("catalog/") and f.endswith(".cat")) for f in files), files


# ---------------------------------------------------------------- errors leave the store usable
def test_store_usable_after_errors_and_flushed_data_intact(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", "int32", ["y", "x"], [4, 6], [3, 4], fill_value=-1)
    ref = np.arange(24, dtype=np.int32).reshape(4, 6)
    d.write_array("a", [0, 0], ref)
    d.define_array("s", "string", ["i"], [3], [2])
    d.write_array("s", [0], np.array(["x", "y", "z"]))
    d.set_attribute("k", 1)
    s.flush()
    flushed = read_everything(s)

    bad_calls = [
        (TypeError, lambda: d.write_array("a", [0, 0], ref.astype(np.int64))),
        (ValueError, lambda: d.write_array("a", [3, 3], np.ones((2, 2), np.int32))),
        (ValueError, lambda: d.write_array("a", [0, 0], np.ones((4, 12), np.int32)[:, ::2])),
        (ValueError, lambda: d.write_array("a", [-1, 0], np.ones((1, 1), np.int32))),
        (TypeError, lambda: d.write_array("s", [0], np.array([1, 2]))),
        (ValueError, lambda: d.read_array("a", [0, 0], [5, 1])),
        (ValueError, lambda: d.read_array("a", [0], [1])),
        (ValueError, lambda: d.define_array("b", "int8", ["x"], [2, 2])),
        (ValueError, lambda: d.define_array("b", "float8", ["x"], [2])),
        (ValueError, lambda: d.define_array("b", "int8", ["x"], [2], [0])),
        (OverflowError, lambda: d.define_array("b", "int8", ["x"], [2], fill_value=1000)),
        (TypeError, lambda: d.define_array("b", "int8", ["x"], [2], fill_value="x")),
        (FileExistsError, lambda: d.define_array("a", "int8", ["x"], [2])),
        (FileExistsError, lambda: s.create_dataset("d")),
        (ValueError, lambda: s.create_dataset("_bad")),
        (OverflowError, lambda: d.set_attribute("k", 300, dtype="int8")),
        (TypeError, lambda: d.set_attribute("k", [1])),
        (KeyError, lambda: s.open_dataset("nope")),
        (KeyError, lambda: d.delete_array("nope")),
    ]
    for exc, call in bad_calls:
        with pytest.raises(exc):
            call()
        assert read_everything(s) == flushed  # the failed call changed nothing
    assert d.list_arrays() == ["a", "s"]
    s.flush()
    assert read_everything(Atlas.open(path)) == flushed

    # and the store still works
    d.write_array("a", [1, 1], np.full((2, 2), 99, np.int32))
    d.define_array("b", "int8", ["x"], [2], fill_value=3)
    s.flush()
    s2 = Atlas.open(path)
    ref[1:3, 1:3] = 99
    np.testing.assert_array_equal(s2.open_dataset("d").read_array("a"), ref)
    np.testing.assert_array_equal(s2.open_dataset("d").read_array("b"), [3, 3])
    assert s2.open_dataset("d").read_array("s").tolist() == ["x", "y", "z"]


def test_pending_writes_survive_a_failed_call_in_between(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", "float64", ["x"], [5], [2])
    d.write_array("a", [0], np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        d.write_array("a", [2], np.array([3, 4], np.int64))
    with pytest.raises(ValueError):
        d.write_array("a", [4], np.array([5.0, 6.0]))
    d.write_array("a", [4], np.array([5.0]))
    np.testing.assert_array_equal(d.read_array("a"), [1, 2, 0, 0, 5])
    s.flush()
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("d").read_array("a"), [1, 2, 0, 0, 5])
