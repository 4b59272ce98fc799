"""define_array / write_array / read_array: every dtype, 0-D arrays, partial boxes over chunk
boundaries against a NumPy reference, pending writes, and input validation."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path



import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas import Atlas

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NUMERIC = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"]
TIMESTAMP_NAMES = ["timestamp_nanoseconds", "timestamp_ns", "datetime64[ns]"]
ALL_DTYPES = NUMERIC + TIMESTAMP_NAMES + ["string"]


def canonical(dtype: str) -> str:
    return "timestamp_nanoseconds" if dtype in TIMESTAMP_NAMES else dtype


def user_dtype(dtype: str) -> np.dtype:
    d = canonical(dtype)
    if d == "timestamp_nanoseconds":
        return np.dtype("datetime64[ns]")
    if d == "string":
        return np.dtype(object)
    return np.dtype(d)


def default_fill(dtype: str):
    d = canonical(dtype)
    if d == "string":
        return ""
    if d == "timestamp_nanoseconds":
        return np.datetime64("NaT", "ns")
    return np.dtype(d).type(0)


def sample(dtype: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Random data of the user dtype, with extreme values mixed in for integers."""
    d = canonical(dtype)
    n = int(np.prod(shape)) if len(shape) else 1
    if d == "string":
        pool = ["", "a", "zz", "é", "日本語", "emoji \U0001F600", "x" * 40, "line\nbreak"]
        vals = [pool[i] + str(j) for j, i in enumerate(rng.integers(0, len(pool), n))]
        out = np.empty(n, dtype=object)
        out[:] = vals
        return out.reshape(shape)
    if d == "timestamp_nanoseconds":
        v = rng.integers(-(2**62), 2**62, n, dtype=np.int64)
        return v.view("datetime64[ns]").reshape(shape)
    nd = np.dtype(d)
    if nd.kind == "f":
        return (rng.standard_normal(n) * 1e3).astype(nd).reshape(shape)
    info = np.iinfo(nd)
    v = rng.integers(info.min, info.max, n, dtype=nd, endpoint=True)
    if n >= 2:
        v[0], v[-1] = info.min, info.max
    return v.reshape(shape)


def assert_same(actual, expected, dtype: str):
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.shape == expected.shape
    assert actual.dtype == user_dtype(dtype), actual.dtype
    if canonical(dtype) == "string":
        assert all(type(v) is str for v in actual.ravel().tolist())
        assert actual.tolist() == expected.tolist()
    else:
        np.testing.assert_array_equal(actual, expected)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            s = p.stat()
            out[str(p.relative_to(root))] = (s.st_size, s.st_mtime_ns, p.read_bytes())
    return out


@pytest.fixture
def store(tmp_path):
    return Atlas.create(tmp_path / "s")


# ---------------------------------------------------------------- every dtype
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_roundtrip_every_dtype(tmp_path, dtype):
    path = tmp_path / "s"
    rng = np.random.default_rng(1)
    data = sample(dtype, (6, 5), rng)
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("a", dtype, ["y", "x"], [6, 5])  # one chunk
    ds.write_array("a", [0, 0], data)
    assert ds.array_meta("a") == {"dtype": canonical(dtype), "shape": [6, 5], "chunk_shape": [6, 5],
                                  "dimension_names": ["y", "x"]}
    assert_same(ds.read_array("a"), data, dtype)  # pending
    s.flush()
    assert_same(ds.read_array("a"), data, dtype)  # flushed, same handle
    ds2 = Atlas.open(path).open_dataset("d")
    assert_same(ds2.read_array("a"), data, dtype)  # reopened
    assert ds2.array_meta("a")["dtype"] == canonical(dtype)
    assert_same(ds2.read_array("a", [2, 1], [3, 3]), data[2:5, 1:4], dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_roundtrip_every_dtype_multi_chunk(tmp_path, dtype):
    """Several chunks per array (edge chunks included): pending, flushed, reopened."""
    path = tmp_path / "s"
    rng = np.random.default_rng(2)
    data = sample(dtype, (7, 5), rng)
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("a", dtype, ["y", "x"], [7, 5], [3, 2])
    ds.write_array("a", [0, 0], data)
    assert_same(ds.read_array("a"), data, dtype)
    s.flush()
    assert_same(ds.read_array("a"), data, dtype)
    ds2 = Atlas.open(path).open_dataset("d")
    assert_same(ds2.read_array("a"), data, dtype)
    assert_same(ds2.read_array("a", [2, 1], [4, 3]), data[2:6, 1:4], dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_dtype_accepts_numpy_dtype_objects_too(store, dtype):
    """define_array(dtype=...) with the alias names gives the canonical name back."""
    ds = store.create_dataset("d")
    ds.define_array("a", dtype, ["x"], [2])
    assert ds.array_meta("a")["dtype"] == canonical(dtype)


def test_timestamp_reads_are_datetime64_ns_and_nat_roundtrips(tmp_path):
    path = tmp_path / "s"
    data = np.array(["1677-09-22T00:00:00", "1970-01-01", "NaT", "2262-04-11T00:00:00.5"], "datetime64[ns]")
    with Atlas.create(path) as s:
        ds = s.create_dataset("d")
        ds.define_array("t", "timestamp_ns", ["t"], [4], [3])
        ds.write_array("t", [0], data)
    out = Atlas.open(path).open_dataset("d").read_array("t")
    assert out.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(out, data)
    assert np.isnat(out[2])


@pytest.mark.parametrize("unit", ["datetime64[us]", "datetime64[s]", "datetime64[ms]", "int32", "float64"])  # int64 ns: accepted
def test_timestamp_rejects_other_units(store, unit):
    ds = store.create_dataset("d")
    ds.define_array("t", "timestamp_nanoseconds", ["t"], [2])
    with pytest.raises(TypeError):
        ds.write_array("t", [0], np.array([1, 2]).astype(unit))
    np.testing.assert_array_equal(ds.read_array("t"), np.array(["NaT", "NaT"], "datetime64[ns]"))


# ---------------------------------------------------------------- strings
def _obj(*vals):
    a = np.empty(len(vals), dtype=object)
    a[:] = list(vals)
    return a


STRING_INPUTS = {
    "object-str": (_obj("a", "", "é", "日本語"), ["a", "", "é", "日本語"]),
    "object-bytes": (_obj(b"a", b"", "é".encode(), "日本語".encode()), ["a", "", "é", "日本語"]),
    "object-mixed": (_obj("a", b"b", "c", b"\xc3\xa9"), ["a", "b", "c", "é"]),
    "unicode-U": (np.array(["a", "", "é", "日本語"]), ["a", "", "é", "日本語"]),
    "bytes-S": (np.array([b"a", b"", b"xyz", b"0123456789"]), ["a", "", "xyz", "0123456789"]),
}


@pytest.mark.parametrize("kind", list(STRING_INPUTS))
@pytest.mark.parametrize("chunk", [4, 3, 1])
def test_string_inputs_read_back_as_object_str(tmp_path, kind, chunk):
    data, expected = STRING_INPUTS[kind]
    path = tmp_path / "s"
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("s", "string", ["i"], [4], [chunk])
    ds.write_array("s", [0], data)
    for stage in ("pending", "flushed", "reopened"):
        if stage == "flushed":
            s.flush()
        if stage == "reopened":
            ds = Atlas.open(path).open_dataset("d")
        out = ds.read_array("s")
        assert out.dtype == object, stage
        assert [type(v) for v in out.tolist()] == [str] * 4, stage
        assert out.tolist() == expected, stage


def test_string_2d_partial_writes_multi_chunk(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("s", "string", ["y", "x"], [5, 4], [2, 3], fill_value="?")
    ref = np.full((5, 4), "?", dtype=object)
    ds.write_array("s", [1, 1], np.array([["ab", "c"], ["", "日"]]))
    ref[1:3, 1:3] = [["ab", "c"], ["", "日"]]
    s.flush()
    ds.write_array("s", [2, 2], np.array([[b"x", b"y"], [b"z", b"w"]]))
    ref[2:4, 2:4] = [["x", "y"], ["z", "w"]]
    assert ds.read_array("s").tolist() == ref.tolist()
    s.flush()
    assert ds.read_array("s").tolist() == ref.tolist()
    assert Atlas.open(path).open_dataset("d").read_array("s", [1, 1], [3, 3]).tolist() == ref[1:4, 1:4].tolist()


@pytest.mark.parametrize(
    "bad",
    [np.array([1, 2], np.int64), np.array([1.0, 2.0]), _obj("a", 3), _obj(None, "b"), _obj("a", 1.5)],
    ids=["int", "float", "obj-int", "obj-none", "obj-float"],
)
def test_string_array_rejects_non_strings(store, bad):
    ds = store.create_dataset("d")
    ds.define_array("s", "string", ["i"], [2])
    with pytest.raises(TypeError):
        ds.write_array("s", [0], bad)
    assert ds.read_array("s").tolist() == ["", ""]


def test_string_array_rejects_invalid_utf8_bytes(store):
    ds = store.create_dataset("d")
    ds.define_array("s", "string", ["i"], [2])
    with pytest.raises(ValueError):
        ds.write_array("s", [0], _obj(b"\xff\xfe", b"ok"))
    assert ds.read_array("s").tolist() == ["", ""]


# ---------------------------------------------------------------- 0-D
def _scalar(dtype: str) -> np.ndarray:
    d = canonical(dtype)
    if d == "string":
        a = np.empty((), dtype=object)
        a[()] = "scalar é"
        return a
    if d == "timestamp_nanoseconds":
        return np.array("2024-02-29T12:34:56.789", "datetime64[ns]")
    nd = np.dtype(d)
    if nd.kind == "f":
        return np.array(-3.25, nd)
    return np.array(np.iinfo(nd).max, nd)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_zero_d_arrays_every_dtype(tmp_path, dtype):
    path = tmp_path / "s"
    value = _scalar(dtype)
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("v", dtype, [], [])
    ds.define_array("unwritten", dtype, [], [])
    assert ds.array_meta("v")["shape"] == []
    ds.write_array("v", [], value)
    for stage in ("pending", "flushed", "reopened"):
        if stage == "flushed":
            s.flush()
        if stage == "reopened":
            ds = Atlas.open(path).open_dataset("d")
        out = ds.read_array("v")
        assert isinstance(out, np.ndarray), (stage, type(out))
        assert out.shape == ()
        assert out.dtype == user_dtype(dtype)
        assert out[()] == value[()]
        assert type(out[()]) is type(value[()])
        u = ds.read_array("unwritten")
        assert isinstance(u, np.ndarray) and u.shape == () and u.dtype == user_dtype(dtype), (stage, type(u))
        if canonical(dtype) == "timestamp_nanoseconds":
            assert np.isnat(u[()])
        else:
            assert u[()] == default_fill(dtype)
        explicit = ds.read_array("v", [], [])
        assert isinstance(explicit, np.ndarray) and explicit.shape == ()


@pytest.mark.parametrize("dtype", ["int32", "string", "timestamp_ns"])
def test_zero_d_value_is_correct_even_if_container_is_not(tmp_path, dtype):
    """The value part of 0-D round trips, independent of the container type returned."""
    path = tmp_path / "s"
    value = _scalar(dtype)
    with Atlas.create(path) as s:
        ds = s.create_dataset("d")
        ds.define_array("v", dtype, [], [])
        ds.write_array("v", [], value)
    out = Atlas.open(path).open_dataset("d").read_array("v")
    assert np.asarray(out)[()] == value[()]


@pytest.mark.parametrize("bad_start", [[0], [1], [0, 0]])
def test_zero_d_rejects_non_empty_box(store, bad_start):
    ds = store.create_dataset("d")
    ds.define_array("v", "int8", [], [])
    with pytest.raises(ValueError):
        ds.read_array("v", bad_start, [1] * len(bad_start))
    with pytest.raises(ValueError):
        ds.write_array("v", bad_start, np.ones([1] * len(bad_start), np.int8))


# ---------------------------------------------------------------- partial reads / writes vs NumPy
@st.composite
def layouts(draw):
    nd = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 7), min_size=nd, max_size=nd))
    chunk = [draw(st.integers(1, s + 1)) for s in shape]
    return shape, chunk


@st.composite
def boxes(draw, shape):
    start = [draw(st.integers(0, s)) for s in shape]
    count = [draw(st.integers(0, s - a)) for s, a in zip(shape, start)]
    return start, count


def _sl(start, count):
    return tuple(slice(a, a + c) for a, c in zip(start, count))


@HYP
@given(
    layout=layouts(),
    dtype=st.sampled_from(["int16", "uint64", "float32", "float64", "timestamp_ns", "string"]),
    use_fill=st.booleans(),
    codec=st.sampled_from(["zstd", "lz4", "none"]),
    data=st.data(),
)
def test_partial_writes_and_reads_match_numpy(tmp_path, layout, dtype, use_fill, codec, data):
    shape, chunk = layout
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    fill_user = None
    if use_fill:
        fill_user = {"int16": -7, "uint64": 2**64 - 1, "float32": 2.5, "float64": float("nan"),
                     "timestamp_ns": 123, "string": "<fill>"}[dtype]
    path = tmp_path / f"s-{uuid.uuid4().hex[:8]}"
    s = Atlas.create(path, codec=codec)
    ds = s.create_dataset("d")
    ds.define_array("a", dtype, [f"d{i}" for i in range(len(shape))], shape, chunk, fill_value=fill_user)
    if fill_user is None:
        ref = np.full(shape, default_fill(dtype), dtype=user_dtype(dtype))
    elif dtype == "timestamp_ns":
        ref = np.full(shape, np.datetime64(fill_user, "ns"), dtype=user_dtype(dtype))
    else:
        ref = np.full(shape, fill_user, dtype=user_dtype(dtype))

    def check_reads(view):
        assert_same(view.read_array("a"), ref, dtype)
        for _ in range(3):
            b0, c0 = data.draw(boxes(shape))
            assert_same(view.read_array("a", b0, c0), ref[_sl(b0, c0)], dtype)

    n_writes = data.draw(st.integers(1, 5))
    for _ in range(n_writes):
        b, c = data.draw(boxes(shape))
        w = sample(dtype, tuple(c), rng)
        ds.write_array("a", b, w)
        ref[_sl(b, c)] = w
        check_reads(ds)
        if data.draw(st.booleans()):
            s.flush()
            check_reads(ds)
    s.flush()
    check_reads(Atlas.open(path).open_dataset("d"))


def test_overlapping_writes_across_chunk_boundaries_2d(tmp_path):
    path = tmp_path / "s"
    ref = np.full((9, 11), -1, np.int32)
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("a", "int32", ["y", "x"], [9, 11], [4, 3], fill_value=-1)
    writes = [([0, 0], (9, 11)), ([1, 2], (5, 7)), ([3, 3], (1, 1)), ([8, 0], (1, 11)), ([0, 10], (9, 1)), ([2, 1], (4, 4))]
    for i, (b, c) in enumerate(writes):
        w = (np.arange(np.prod(c), dtype=np.int32).reshape(c) + 100 * i)
        ds.write_array("a", b, w)
        ref[b[0]:b[0] + c[0], b[1]:b[1] + c[1]] = w
        if i % 2:
            s.flush()
    np.testing.assert_array_equal(ds.read_array("a"), ref)
    ds2 = Atlas.open(path).open_dataset("d")
    np.testing.assert_array_equal(ds2.read_array("a"), ref)
    for y0 in range(0, 9, 2):
        for x0 in range(0, 11, 3):
            np.testing.assert_array_equal(ds2.read_array("a", [y0, x0], [9 - y0, 2]if x0 + 2 <= 11 else [9 - y0, 11 - x0]),
                                          ref[y0:, x0:x0 + 2])


def test_large_chunks_pending_and_flushed(tmp_path):
    """Chunks large enough to be compressed as they are written."""
    path = tmp_path / "s"
    rng = np.random.default_rng(3)
    ref = np.zeros((256, 300), np.float64)
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("a", "float64", ["y", "x"], [256, 300], [128, 100])
    w = rng.standard_normal((200, 250))
    ds.write_array("a", [10, 20], w)
    ref[10:210, 20:270] = w
    np.testing.assert_array_equal(ds.read_array("a"), ref)
    w2 = rng.standard_normal((50, 300))
    ds.write_array("a", [100, 0], w2)  # partial overwrite of pending compressed chunks
    ref[100:150] = w2
    np.testing.assert_array_equal(ds.read_array("a"), ref)
    s.flush()
    w3 = rng.standard_normal((3, 3))
    ds.write_array("a", [127, 99], w3)  # partial overwrite of flushed chunks, four of them
    ref[127:130, 99:102] = w3
    np.testing.assert_array_equal(ds.read_array("a", [120, 90], [20, 20]), ref[120:140, 90:110])
    s.flush()
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("d").read_array("a"), ref)


def test_zero_sized_arrays_and_boxes(store):
    ds = store.create_dataset("d")
    ds.define_array("e", "float32", ["x", "y"], [0, 3])
    out = ds.read_array("e")
    assert out.shape == (0, 3) and out.dtype == np.float32
    ds.define_array("a", "int8", ["x"], [4], [2])
    ds.write_array("a", [2], np.empty(0, np.int8))
    empty = ds.read_array("a", [1], [0])
    assert empty.shape == (0,) and empty.dtype == np.int8
    store.flush()
    np.testing.assert_array_equal(ds.read_array("a"), np.zeros(4, np.int8))


# ---------------------------------------------------------------- pending writes vs disk
def test_reads_see_pending_writes_and_disk_is_untouched_before_flush(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    ds = s.create_dataset("base")
    ds.define_array("a", "int64", ["x"], [10], [3], fill_value=-1)
    ds.write_array("a", [0], np.arange(10, dtype=np.int64))
    s.flush()
    before = snapshot(path)

    ds.write_array("a", [2], np.array([100, 101, 102, 103], np.int64))
    np.testing.assert_array_equal(ds.read_array("a"), [0, 1, 100, 101, 102, 103, 6, 7, 8, 9])
    new = s.create_dataset("new")
    new.define_array("a", "float32", ["y", "x"], [4, 4], [2, 2])
    new.write_array("a", [1, 1], np.ones((2, 2), np.float32))
    new.define_array("s", "string", ["i"], [3])
    new.write_array("s", [0], np.array(["p", "q", "r"]))
    new.set_attribute("k", 1)
    ds.set_attribute("k2", "v")
    assert new.read_array("s").tolist() == ["p", "q", "r"]
    assert new.read_array("a")[1:3, 1:3].tolist() == [[1, 1], [1, 1]]
    assert ds.read_arrays(["a"], [2], [2])["a"].tolist() == [100, 101]
    s.create_dataset("tmp")
    s.delete_dataset("tmp")
    assert snapshot(path) == before  # nothing on disk changed (names, bytes, mtimes)
    # another handle on the same directory sees only the flushed state
    other = Atlas.open(path)
    assert other.list_datasets() == ["base"]
    np.testing.assert_array_equal(other.open_dataset("base").read_array("a"), np.arange(10))
    s.flush()
    assert snapshot(path) != before
    ds3 = Atlas.open(path)
    np.testing.assert_array_equal(ds3.open_dataset("base").read_array("a"), [0, 1, 100, 101, 102, 103, 6, 7, 8, 9])
    assert ds3.open_dataset("new").get_attribute("k") == 1


def test_nothing_on_disk_changes_before_first_flush(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    before = snapshot(path)
    ds = s.create_dataset("d")
    ds.define_array("a", "uint16", ["x"], [1000], [10])
    ds.write_array("a", [0], np.arange(1000, dtype=np.uint16))
    np.testing.assert_array_equal(ds.read_array("a", [990], [10]), np.arange(990, 1000))
    assert snapshot(path) == before
    assert not list(path.glob("arrays/*/*.seg"))


# ---------------------------------------------------------------- write validation
@pytest.mark.parametrize(
    "dtype, bad",
    [
        ("int64", np.arange(3, dtype=np.int32)),
        ("int32", np.arange(3, dtype=np.int64)),
        ("uint8", np.arange(3, dtype=np.int8)),
        ("float32", np.arange(3, dtype=np.float64)),
        ("float64", np.arange(3, dtype=np.float32)),
        ("int16", np.arange(3, dtype=np.float64)),
        ("float64", np.array(["a", "b", "c"])),
        ("int64", np.array(["a", "b", "c"], dtype=object)),
        ("timestamp_ns", np.arange(3, dtype=np.uint64)),  # int64 ns are accepted (reference compatibility)
        ("int64", np.zeros(3, dtype="datetime64[ns]")),
        ("float64", np.zeros(3, dtype=bool)),
        ("int64", [1, 2, 3]),
    ],
)
def test_write_with_wrong_dtype_raises_type_error(store, dtype, bad):
    ds = store.create_dataset("d")
    ds.define_array("a", dtype, ["x"], [3])
    before = ds.read_array("a")
    with pytest.raises(TypeError) as ei:
        ds.write_array("a", [0], bad)
    assert "'a'" in str(ei.value)  # the message names the array
    np.testing.assert_array_equal(ds.read_array("a"), before)


@pytest.mark.parametrize(
    "dtype, make",
    [
        ("int32", lambda: np.arange(12, dtype=np.int32).reshape(3, 4).T.copy().T),
        ("float64", lambda: np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2]),
        ("timestamp_ns", lambda: np.arange(16).reshape(4, 4).astype("datetime64[ns]")[::2, :2]),
        ("string", lambda: np.array([["a", "b", "c", "d"]] * 3, dtype=object)[:, 1:3].T.T[:2]),
        ("string", lambda: np.asfortranarray(np.array([["a", "b"], ["c", "d"]]))),
    ],
)
def test_non_contiguous_data_refused_with_hint(store, dtype, make):
    data = make()
    assert not data.flags.c_contiguous
    ds = store.create_dataset("d")
    ds.define_array("a", dtype, ["y", "x"], list(data.shape))
    before = ds.read_array("a")
    with pytest.raises(ValueError, match="ascontiguousarray"):
        ds.write_array("a", [0, 0], data)
    np.testing.assert_array_equal(ds.read_array("a"), before)
    ds.write_array("a", [0, 0], np.ascontiguousarray(data))  # the advice works
    assert ds.read_array("a").tolist() == data.tolist()


@pytest.mark.parametrize(
    "start, shape",
    [([3, 0], (2, 2)), ([0, 4], (1, 2)), ([4, 5], (1, 1)), ([0, 0], (5, 6)), ([5, 0], (1, 1)), ([0, 0], (6, 5))],
)
def test_write_box_that_does_not_fit_raises(store, start, shape):
    ds = store.create_dataset("d")
    ds.define_array("a", "int8", ["y", "x"], [4, 5], [2, 2], fill_value=3)
    with pytest.raises(ValueError):
        ds.write_array("a", start, np.ones(shape, np.int8))
    np.testing.assert_array_equal(ds.read_array("a"), np.full((4, 5), 3, np.int8))


@pytest.mark.parametrize(
    "start, data",
    [
        ([0], np.ones((2, 2), np.int8)),          # rank of start
        ([0, 0, 0], np.ones((2, 2), np.int8)),
        ([0, 0], np.ones(2, np.int8)),            # rank of data
        ([0, 0], np.ones((1, 1, 1), np.int8)),
        ([-1, 0], np.ones((1, 1), np.int8)),      # negative
        ([0, -2], np.ones((1, 1), np.int8)),
    ],
)
def test_write_with_bad_start_or_rank_raises_value_error(store, start, data):
    ds = store.create_dataset("d")
    ds.define_array("a", "int8", ["y", "x"], [4, 5])
    with pytest.raises(ValueError):
        ds.write_array("a", start, data)
    np.testing.assert_array_equal(ds.read_array("a"), np.zeros((4, 5), np.int8))


def test_write_to_undefined_array_raises_key_error(store):
    ds = store.create_dataset("d")
    with pytest.raises(KeyError):
        ds.write_array("nope", [0], np.zeros(1))


# ---------------------------------------------------------------- read validation
@pytest.mark.parametrize(
    "start, shape",
    [
        ([0], [1, 1]),            # rank of start
        ([0, 0, 0], None),
        ([0, 0], [1]),            # rank of shape
        (None, [1, 1, 1]),
        ([-1, 0], [1, 1]),        # negative
        ([0, 0], [-1, 1]),
        (None, [2, -3]),
        ([3, 0], [2, 1]),         # out of bounds, never clamped
        ([0, 0], [4, 6]),
        ([0, 0], [5, 5]),
        ([5, 0], None),
        ([0, 6], [0, 0]),
        (None, [5, 5]),
        ([4, 4], [1, 2]),
    ],
)
def test_bad_read_box_raises_value_error(tmp_path, start, shape):
    s = Atlas.create(tmp_path / "s")
    ds = s.create_dataset("d")
    ds.define_array("a", "int8", ["y", "x"], [4, 5], [3, 3])
    ds.write_array("a", [0, 0], np.ones((4, 5), np.int8))
    for _ in range(2):
        with pytest.raises(ValueError):
            ds.read_array("a", start, shape)
        with pytest.raises(ValueError):
            ds.read_arrays(["a"], start, shape)
        s.flush()


def test_read_box_defaults(store):
    ds = store.create_dataset("d")
    ds.define_array("a", "int16", ["y", "x"], [4, 5], [3, 2])
    ref = np.arange(20, dtype=np.int16).reshape(4, 5)
    ds.write_array("a", [0, 0], ref)
    np.testing.assert_array_equal(ds.read_array("a", [1, 2]), ref[1:, 2:])  # start only: to the end
    np.testing.assert_array_equal(ds.read_array("a", None, [2, 3]), ref[:2, :3])  # shape only: from 0
    np.testing.assert_array_equal(ds.read_array("a", [4, 5], [0, 0]), ref[4:, 5:])
    np.testing.assert_array_equal(ds.read_array("a", (1, 1), (2, 2)), ref[1:3, 1:3])  # tuples / np ints
    np.testing.assert_array_equal(ds.read_array("a", np.array([1, 1]), np.array([3, 4])), ref[1:4, 1:5])


def test_read_result_is_independent_of_the_store(store):
    ds = store.create_dataset("d")
    ds.define_array("a", "int32", ["x"], [4])
    ds.write_array("a", [0], np.arange(4, dtype=np.int32))
    out = ds.read_array("a")
    out[:] = 99
    np.testing.assert_array_equal(ds.read_array("a"), np.arange(4))
    src = np.arange(4, dtype=np.int32)
    ds.write_array("a", [0], src)
    src[:] = -5  # mutating the caller's buffer after the write does not change the store
    np.testing.assert_array_equal(ds.read_array("a"), np.arange(4))


# ---------------------------------------------------------------- define_array validation
@pytest.mark.parametrize(
    "dims, shape, chunk",
    [
        (["x"], [2, 3], None),
        (["x", "y"], [2], None),
        ([], [2], None),
        (["x"], [], None),
        (["x", "y"], [2, 3], [1]),
        (["x", "y"], [2, 3], [1, 1, 1]),
        (["x"], [3], []),
        (["x", "y"], [2, 3], [0, 1]),
        (["x"], [3], [0]),
        (["x"], [0], [0]),
        (["x"], [-1], None),
        (["x", "y"], [2, 3], [1, -1]),
        (["x", "x"], [2, 3], None),
    ],
)
def test_define_array_shape_validation(store, dims, shape, chunk):
    ds = store.create_dataset("d")
    with pytest.raises(ValueError):
        ds.define_array("a", "float32", dims, shape, chunk)
    assert ds.array_meta("a") is None
    assert ds.list_arrays() == []
    ds.define_array("a", "float32", ["x"], [3])  # the name is still free
    assert ds.array_meta("a")["shape"] == [3]


@pytest.mark.parametrize("dtype", ["float16", "complex64", "bool", "int128", "", "object", "binary", "list[int32]"])
def test_define_array_unknown_dtype_raises_value_error(store, dtype):
    ds = store.create_dataset("d")
    with pytest.raises(ValueError):
        ds.define_array("a", dtype, ["x"], [3])
    assert ds.list_arrays() == []


def test_define_array_twice_raises_and_keeps_first(store):
    ds = store.create_dataset("d")
    ds.define_array("a", "int8", ["x"], [2])
    ds.write_array("a", [0], np.array([1, 2], np.int8))
    with pytest.raises(FileExistsError):
        ds.define_array("a", "float64", ["x"], [5])
    assert ds.array_meta("a")["dtype"] == "int8"
    np.testing.assert_array_equal(ds.read_array("a"), [1, 2])


def test_chunk_shape_defaults_to_shape_and_may_exceed_it(tmp_path):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        ds = s.create_dataset("d")
        ds.define_array("a", "int32", ["y", "x"], [3, 4])
        ds.define_array("b", "int32", ["y", "x"], [3, 4], [10, 10])
        ds.write_array("b", [1, 1], np.ones((2, 2), np.int32))
    ds = Atlas.open(path).open_dataset("d")
    assert ds.array_meta("a") == {"dtype": "int32", "shape": [3, 4], "chunk_shape": [3, 4], "dimension_names": ["y", "x"]}
    assert ds.array_meta("b")["chunk_shape"] == [10, 10]
    ref = np.zeros((3, 4), np.int32)
    ref[1:3, 1:3] = 1
    np.testing.assert_array_equal(ds.read_array("b"), ref)


# ---------------------------------------------------------------- missing arrays
def test_read_of_undefined_array_is_none(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    a = s.create_dataset("a")
    b = s.create_dataset("b")
    a.define_array("x", "int8", ["i"], [2])
    assert b.read_array("x") is None  # defined in another dataset only
    assert b.read_array("nothing") is None
    assert b.read_array("nothing", [0], [1]) is None
    assert b.array_meta("x") is None
    assert b.array_stats("x") is None
    assert b.array_fill_value("x") is None
    s.flush()
    assert Atlas.open(path).open_dataset("b").read_array("x") is None


def test_read_arrays_returns_dict_with_none_for_missing(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    ds = s.create_dataset("d")
    ds.define_array("a", "int32", ["y", "x"], [3, 4], [2, 2])
    ds.define_array("b", "float64", ["y", "x"], [3, 4], [3, 1], fill_value=0.5)
    ds.define_array("c", "string", ["y", "x"], [3, 4], fill_value="c")
    ra = np.arange(12, dtype=np.int32).reshape(3, 4)
    ds.write_array("a", [0, 0], ra)
    for stage in range(2):
        out = ds.read_arrays(["a", "missing", "b", "c"], [1, 1], [2, 2])
        assert list(out) == ["a", "missing", "b", "c"]
        assert out["missing"] is None
        np.testing.assert_array_equal(out["a"], ra[1:3, 1:3])
        np.testing.assert_array_equal(out["b"], np.full((2, 2), 0.5))
        assert out["c"].tolist() == [["c", "c"], ["c", "c"]]
        full = ds.read_arrays(["b", "a"])
        assert list(full) == ["b", "a"]
        np.testing.assert_array_equal(full["a"], ra)
        assert full["b"].shape == (3, 4)
        assert ds.read_arrays([]) == {}
        s.flush()
        ds = Atlas.open(path).open_dataset("d")


@pytest.mark.parametrize("dtype, shape, chunk, box", [
    ("float32", (100,), None, None), ("int8", (3, 4), None, None), ("timestamp_ns", (5,), None, None),
    ("float64", (0,), None, None), ("uint16", (2048, 4), None, None),  # 16 KiB: summarised when written
    ("int32", (10,), (4,), None), ("float32", (6,), None, (2,)), ("string", (3,), None, None),
])
def test_small_whole_write_entries_equal_the_general_write(tmp_path, dtype, shape, chunk, box):
    """A write that is a whole small one-chunk numeric array becomes its pending entry
    directly (``_write.small_whole``, the batched writes' path); the entry equals the one the
    general write makes, and every other write is left to the general path."""
    import atlas
    from atlas import _write
    from atlas import dtypes as D

    rng = np.random.default_rng(1)
    s = atlas.Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("v", dtype, ["x", "y"][: len(shape)], list(shape), chunk_shape=None if chunk is None else list(chunk))
    m = d._array("v")
    n = box or shape
    if dtype == "string":
        data = np.array(["a", "bb", "c"], object)
    else:
        sd = np.dtype("int64") if dtype == "timestamp_ns" else np.dtype(dtype)
        data = (rng.standard_normal(n) * 50).astype(sd)
    arr = D.to_storage(m.dtype, data, "v")
    fast = _write.small_whole(m, arr)
    applies = chunk is None and box is None and dtype != "string" and math.prod(shape) > 0 and arr.nbytes < _write.SOLO_FRAME
    assert (fast is not None) is applies
    txn = s._state.txn
    _write.write(txn, "v", m, (0,) * len(shape), arr)
    general = txn.pending.get("v", (m.aid, 0))
    if fast is not None:
        assert [getattr(fast, k) for k in fast.__slots__] == [getattr(general, k) for k in general.__slots__]
    d.write_arrays({"v": data})  # the batched path end to end
    s.flush()
    back = d.read_array("v")
    if dtype != "string":
        want = np.asarray(data) if box is None else np.concatenate([data, np.zeros(shape[0] - box[0], data.dtype)])
        assert np.array_equal(back.view(np.int64) if dtype == "timestamp_ns" else back, want)
