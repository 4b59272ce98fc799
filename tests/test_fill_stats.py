"""Fill values (typed, range-checked, read back for unwritten cells) and array statistics."""

from __future__ import annotations

import datetime as dt
import math
import uuid



import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas import Atlas

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOATS = ["float32", "float64"]


@pytest.fixture
def ds(tmp_path):
    return Atlas.create(tmp_path / "s").create_dataset("d")


# ---------------------------------------------------------------- fill value validation
BAD_FILLS = [
    # (dtype, fill, exception)
    ("int8", 1.5, TypeError),
    ("int8", 1.0, TypeError),
    ("int8", "1", TypeError),
    ("int32", b"1", TypeError),
    ("int64", True, TypeError),
    ("uint8", [1], TypeError),
    ("int8", 128, OverflowError),
    ("int8", -129, OverflowError),
    ("int16", 2**15, OverflowError),
    ("int32", -(2**31) - 1, OverflowError),
    ("int64", 2**63, OverflowError),
    ("int64", -(2**63) - 1, OverflowError),
    ("uint8", -1, OverflowError),
    ("uint8", 256, OverflowError),
    ("uint16", 2**16, OverflowError),
    ("uint32", 2**32, OverflowError),
    ("uint64", 2**64, OverflowError),
    ("uint64", -1, OverflowError),
    ("int8", np.int64(200), OverflowError),
    ("float32", "x", TypeError),
    ("float64", "nan", TypeError),
    ("float64", b"1.0", TypeError),
    ("float32", 1e300, OverflowError),
    ("float32", -1e39, OverflowError),
    ("string", 1, TypeError),
    ("string", b"x", TypeError),
    ("string", 1.5, TypeError),
    ("timestamp_nanoseconds", 1.5, TypeError),
    ("timestamp_nanoseconds", "2020-01-01", TypeError),
    ("timestamp_nanoseconds", 2**63, OverflowError),
]


@pytest.mark.parametrize("dtype, fill, exc", BAD_FILLS, ids=[f"{d}-{f!r}" for d, f, _ in BAD_FILLS])
def test_bad_fill_value_raises(ds, dtype, fill, exc):
    with pytest.raises(exc) as ei:
        ds.define_array("a", dtype, ["x"], [3], fill_value=fill)
    assert "'a'" in str(ei.value) or "fill" in str(ei.value)
    assert ds.array_meta("a") is None  # nothing was defined
    ds.define_array("a", dtype, ["x"], [3])  # and the name is still free


GOOD_FILLS = [
    # (dtype, fill, what a read of an unwritten cell returns)
    ("int8", 127, np.int8(127)),
    ("int8", -128, np.int8(-128)),
    ("int16", -(2**15), np.int16(-(2**15))),
    ("int32", 2**31 - 1, np.int32(2**31 - 1)),
    ("int64", -(2**63), np.int64(-(2**63))),
    ("int64", 2**63 - 1, np.int64(2**63 - 1)),
    ("uint8", 255, np.uint8(255)),
    ("uint16", 65535, np.uint16(65535)),
    ("uint32", 2**32 - 1, np.uint32(2**32 - 1)),
    ("uint64", 2**64 - 1, np.uint64(2**64 - 1)),
    ("uint64", np.uint64(7), np.uint64(7)),
    ("int32", np.int16(-3), np.int32(-3)),
    ("float32", 3, np.float32(3.0)),
    ("float32", -1.5, np.float32(-1.5)),
    ("float32", float("inf"), np.float32(np.inf)),
    ("float64", -math.inf, -np.inf),
    ("float64", 1e300, 1e300),
    ("float64", np.float32(0.25), 0.25),
    ("string", "", ""),
    ("string", "n/a é", "n/a é"),
    ("string", np.str_("np"), "np"),
    ("timestamp_nanoseconds", 0, np.datetime64(0, "ns")),
    ("timestamp_nanoseconds", -5, np.datetime64(-5, "ns")),
    ("timestamp_ns", np.datetime64("2020-01-02T03:04:05", "s"), np.datetime64("2020-01-02T03:04:05", "ns")),
    ("datetime64[ns]", dt.datetime(2001, 2, 3, 4, 5, 6), np.datetime64("2001-02-03T04:05:06", "ns")),
]


def _user_dtype(dtype):
    if dtype in ("timestamp_nanoseconds", "timestamp_ns", "datetime64[ns]"):
        return np.dtype("datetime64[ns]")
    if dtype == "string":
        return np.dtype(object)
    return np.dtype(dtype)


def _sample(dtype, n):
    if dtype in ("timestamp_nanoseconds", "timestamp_ns", "datetime64[ns]"):
        return np.arange(1000, 1000 + n).astype("datetime64[ns]")
    if dtype == "string":
        return np.array([f"s{i}" for i in range(n)], dtype=object)
    return np.arange(1, n + 1).astype(dtype)


@pytest.mark.parametrize("dtype, fill, expected", GOOD_FILLS, ids=[f"{d}-{f!r}" for d, f, _ in GOOD_FILLS])
def test_unwritten_cells_read_as_fill_every_dtype(tmp_path, dtype, fill, expected):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", dtype, ["y", "x"], [5, 4], [2, 3], fill_value=fill)
    d.define_array("untouched", dtype, ["x"], [3], fill_value=fill)
    w = _sample(dtype, 4).reshape(2, 2)
    d.write_array("a", [1, 1], w)
    ref = np.full((5, 4), expected, dtype=_user_dtype(dtype))
    ref[1:3, 1:3] = w
    for stage in ("pending", "flushed", "reopened"):
        if stage == "flushed":
            s.flush()
        if stage == "reopened":
            d = Atlas.open(path).open_dataset("d")
        out = d.read_array("a")
        assert out.dtype == _user_dtype(dtype)
        _assert_equal(out, ref, stage)
        _assert_equal(d.read_array("untouched"), np.full(3, expected, dtype=_user_dtype(dtype)), stage)
        _assert_equal(d.read_array("a", [3, 0], [2, 4]), ref[3:5], stage)


def _assert_equal(out, ref, msg):
    assert out.dtype == ref.dtype and out.shape == ref.shape, msg
    if out.dtype == object:
        assert out.tolist() == ref.tolist(), msg
        assert all(type(v) is str for v in out.ravel().tolist()), msg
    else:
        np.testing.assert_array_equal(out, ref, err_msg=msg)


@pytest.mark.parametrize(
    "dtype, expected",
    [(d, np.dtype(d).type(0)) for d in INTS + FLOATS] + [("string", ""), ("timestamp_ns", None)],
)
def test_without_fill_unwritten_cells_are_zero_empty_or_nat(tmp_path, dtype, expected):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", dtype, ["x"], [7], [3])
    d.write_array("a", [4], _sample(dtype, 1))
    assert d.array_fill_value("a") is None
    for stage in range(3):
        if stage == 1:
            s.flush()
        if stage == 2:
            d = Atlas.open(path).open_dataset("d")
        out = d.read_array("a")
        rest = np.delete(out, 4)
        if expected is None:
            assert np.isnat(rest).all()
        else:
            assert rest.tolist() == [expected] * 6
            assert all(type(v) is type(expected) for v in rest.tolist()) if dtype == "string" else True
        assert out[4] == _sample(dtype, 1)[0]


def test_array_fill_value_roundtrips(tmp_path):
    path = tmp_path / "s"
    with Atlas.create(path, meta_format="json") as s:
        d = s.create_dataset("d")
        d.define_array("i", "int64", ["x"], [1], fill_value=-(2**63))
        d.define_array("u", "uint64", ["x"], [1], fill_value=2**64 - 1)
        d.define_array("f", "float64", ["x"], [1], fill_value=float("nan"))
        d.define_array("g", "float32", ["x"], [1], fill_value=float("-inf"))
        d.define_array("s", "string", ["x"], [1], fill_value="nan")
        d.define_array("n", "int8", ["x"], [1])
    for fmt_store in (Atlas.open(path),):
        d = fmt_store.open_dataset("d")
        assert d.array_fill_value("i") == -(2**63)
        assert d.array_fill_value("u") == 2**64 - 1
        assert math.isnan(d.array_fill_value("f"))
        assert d.array_fill_value("g") == -math.inf
        assert d.array_fill_value("s") == "nan" and isinstance(d.array_fill_value("s"), str)
        assert d.array_fill_value("n") is None
        assert d.array_fill_value("missing") is None
        assert np.isnan(d.read_array("f")).all()
        assert d.read_array("s").tolist() == ["nan"]


# ---------------------------------------------------------------- statistics
def test_stats_none_before_first_flush_then_dict(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.define_array("a", "int32", ["x"], [4], fill_value=-1)
    assert d.array_stats("a") is None
    d.write_array("a", [0], np.array([3, -1, 5, 7], np.int32))
    assert d.array_stats("a") is None
    assert d.array_stats("missing") is None
    s.flush()
    st_ = d.array_stats("a")
    assert set(st_) == {"row_count", "null_count", "min", "max"}
    assert st_ == {"row_count": 4, "null_count": 1, "min": 3, "max": 7}
    # a later write is reflected only after the next flush
    d.write_array("a", [0], np.array([-9], np.int32))
    assert d.array_stats("a")["min"] == 3
    s.flush()
    assert d.array_stats("a") == {"row_count": 4, "null_count": 1, "min": -9, "max": 7}
    s2 = Atlas.open(path)
    assert s2.open_dataset("d").array_stats("a") == {"row_count": 4, "null_count": 1, "min": -9, "max": 7}


def test_stats_of_defined_but_unwritten_array(tmp_path):
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("a", "float64", ["y", "x"], [3, 5], [2, 2], fill_value=0.0)
    d.define_array("z", "int8", [], [])
    s.flush()
    assert d.array_stats("a") == {"row_count": 15, "null_count": 15, "min": None, "max": None}
    assert d.array_stats("z")["row_count"] == 1
    assert d.array_stats("z")["null_count"] == 1


def reference_stats(dtype, values, written, fill):
    """The spec's stats: nulls = unwritten + written cells equal to fill (NaN if fill is NaN)."""
    vals = values[written]
    if dtype == "string":
        null = np.zeros(vals.shape, bool) if fill is None else (vals == fill)
        nonnull = vals[~null]
        mn = min(nonnull.tolist()) if nonnull.size else None
        mx = max(nonnull.tolist()) if nonnull.size else None
        return int(values.size - nonnull.size), mn, mx
    if dtype == "timestamp_ns":
        iv = vals.view(np.int64)
        null = np.zeros(iv.shape, bool) if fill is None else iv == fill
        nonnull = iv[~null]
        ok = nonnull[nonnull != np.iinfo(np.int64).min]  # NaT is never min/max
        mn = np.datetime64(int(ok.min()), "ns") if ok.size else None
        mx = np.datetime64(int(ok.max()), "ns") if ok.size else None
        return int(values.size - nonnull.size), mn, mx
    if np.dtype(dtype).kind == "f":
        if fill is None:
            null = np.zeros(vals.shape, bool)
        elif math.isnan(fill):
            null = np.isnan(vals)
        else:
            null = vals == np.dtype(dtype).type(fill)
        nonnull = vals[~null]
        ok = nonnull[~np.isnan(nonnull)]
        mn = ok.min() if ok.size else None
        mx = ok.max() if ok.size else None
        return int(values.size - nonnull.size), mn, mx
    null = np.zeros(vals.shape, bool) if fill is None else vals == fill
    nonnull = vals[~null]
    return int(values.size - nonnull.size), (nonnull.min() if nonnull.size else None), (nonnull.max() if nonnull.size else None)


def _gen_values(dtype, shape, rng, fill):
    """Random values with the fill value and (for floats) NaN and inf sprinkled in."""
    n = int(np.prod(shape))
    if dtype == "string":
        pool = ["", "b", "a", "zz", "é", "日", "A"] + ([fill] if fill is not None else [])
        out = np.empty(n, dtype=object)
        out[:] = [pool[i] for i in rng.integers(0, len(pool), n)]
        return out.reshape(shape)
    if dtype == "timestamp_ns":
        v = rng.integers(-(10**12), 10**12, n, dtype=np.int64)
        if fill is not None:
            v[rng.random(n) < 0.3] = fill
        return v.view("datetime64[ns]").reshape(shape)
    nd = np.dtype(dtype)
    if nd.kind == "f":
        v = (rng.standard_normal(n) * 100).astype(nd)
        r = rng.random(n)
        v[r < 0.15] = np.nan
        v[(r >= 0.15) & (r < 0.2)] = np.inf
        v[(r >= 0.2) & (r < 0.25)] = -np.inf
        if fill is not None:
            v[(r >= 0.25) & (r < 0.45)] = fill
        return v.reshape(shape)
    info = np.iinfo(nd)
    lo, hi = max(info.min, -50), min(info.max, 50)
    if rng.random() < 0.3:
        lo, hi = info.min, info.max
    v = rng.integers(lo, hi, n, dtype=nd, endpoint=True)
    if fill is not None:
        v[rng.random(n) < 0.3] = fill
    return v.reshape(shape)


FILL_CHOICES = {
    "int8": [-128, 0, 5, None],
    "uint64": [2**64 - 1, 0, None],
    "int64": [-(2**63), 3, None],
    "uint16": [0, 7, None],
    "float32": [float("nan"), 0.0, -1.5, None],
    "float64": [float("nan"), 2.0, None],
    "timestamp_ns": [0, -5, None],
    "string": ["", "a", "-", None],
}


def _check_stats(got, dtype, shape, exp):
    nulls, mn, mx = exp
    assert set(got) == {"row_count", "null_count", "min", "max"}
    assert got["row_count"] == int(np.prod(shape))
    assert got["null_count"] == nulls, (got, exp)
    for key, e in (("min", mn), ("max", mx)):
        g = got[key]
        if e is None:
            assert g is None, (key, got, exp)
            continue
        if dtype == "string":
            assert type(g) is str
            assert g == e
        elif dtype == "timestamp_ns":
            assert isinstance(g, np.datetime64) and np.datetime_data(g.dtype)[0] == "ns", type(g)
            assert g == e
        else:
            assert not (isinstance(g, (float, np.floating)) and np.isnan(g)), (key, got)
            assert g == e, (key, got, exp)
            assert np.asarray(g).dtype.kind == np.dtype(dtype).kind, type(g)


@HYP
@given(
    dtype=st.sampled_from(sorted(FILL_CHOICES)),
    nd=st.integers(1, 3),
    data=st.data(),
)
def test_stats_match_reference(tmp_path, dtype, nd, data):
    """Random shape/chunking/writes, with or without a fill value: stats equal a NumPy
    reference after every flush, also across reopens and a compact."""
    shape = data.draw(st.lists(st.integers(1, 6), min_size=nd, max_size=nd))
    chunk = [data.draw(st.integers(1, s + 1)) for s in shape]
    fill = data.draw(st.sampled_from(FILL_CHOICES[dtype]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    path = tmp_path / f"s-{uuid.uuid4().hex[:8]}"
    s = Atlas.create(path, meta_format=data.draw(st.sampled_from(["json", "msgpack"])))
    d = s.create_dataset("d")
    d.define_array("a", dtype, [f"d{i}" for i in range(nd)], shape, chunk, fill_value=fill)
    values = d.read_array("a").copy()
    written = np.zeros(shape, bool)
    for _ in range(data.draw(st.integers(0, 4))):
        start = [data.draw(st.integers(0, x - 1)) for x in shape]
        count = [data.draw(st.integers(1, x - a)) for x, a in zip(shape, start)]
        w = _gen_values(dtype, tuple(count), rng, fill)
        d.write_array("a", start, w)
        box = tuple(slice(a, a + c) for a, c in zip(start, count))
        values[box] = w
        written[box] = True
        action = data.draw(st.sampled_from(["none", "flush", "reopen", "compact"]))
        if action != "none":
            s.flush()
            _check_stats(d.array_stats("a"), dtype, shape, reference_stats(dtype, values, written, fill))
        if action == "reopen":
            s = Atlas.open(path)
            d = s.open_dataset("d")
        if action == "compact":
            s.compact()
            _check_stats(d.array_stats("a"), dtype, shape, reference_stats(dtype, values, written, fill))
    s.flush()
    exp = reference_stats(dtype, values, written, fill)
    _check_stats(d.array_stats("a"), dtype, shape, exp)
    _check_stats(Atlas.open(path).open_dataset("d").array_stats("a"), dtype, shape, exp)


@pytest.mark.parametrize("chunk", [[4], [2], [1], [3]])
@pytest.mark.parametrize(
    "dtype, written, mn, mx",
    [
        ("int32", np.array([5, 6], np.int32), 5, 6),
        ("uint8", np.array([5, 6], np.uint8), 5, 6),
        ("float64", np.array([-5.0, 6.0]), -5.0, 6.0),
        ("float32", np.array([5.0, 6.0], np.float32), 5.0, 6.0),
        ("string", np.array(["b", "c"], dtype=object), "b", "c"),
    ],
)
def test_stats_without_fill_count_unwritten_cells_as_null_whatever_the_chunking(tmp_path, chunk, dtype, written, mn, mx):
    """README: null_count = unwritten cells + written cells equal to the fill value; min/max
    are over non-null cells. Unwritten cells (read as 0 / "") must neither be counted as
    non-null nor become the min, and the answer must not depend on the chunk shape."""
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("a", dtype, ["x"], [4], chunk)
    d.write_array("a", [0], written)
    s.flush()
    got = d.array_stats("a")
    assert got["row_count"] == 4
    assert got["null_count"] == 2, got
    assert got["min"] == mn, got
    assert got["max"] == mx, got


def test_stats_without_fill_fully_written(tmp_path):
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("a", "int16", ["y", "x"], [3, 4], [2, 3])
    d.write_array("a", [0, 0], np.arange(-6, 6, dtype=np.int16).reshape(3, 4))
    d.define_array("t", "timestamp_ns", ["x"], [3], [2])
    d.write_array("t", [0], np.array(["2001-01-01", "NaT", "1999-12-31"], "datetime64[ns]"))
    s.flush()
    assert d.array_stats("a") == {"row_count": 12, "null_count": 0, "min": -6, "max": 5}
    t = d.array_stats("t")
    assert t["min"] == np.datetime64("1999-12-31", "ns") and t["max"] == np.datetime64("2001-01-01", "ns")
    assert isinstance(t["min"], np.datetime64) and isinstance(t["max"], np.datetime64)


def test_nan_fill_counts_nan_cells_and_nan_never_min_max(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path, meta_format="json")
    d = s.create_dataset("d")
    d.define_array("a", "float32", ["x"], [8], [3], fill_value=float("nan"))
    d.write_array("a", [0], np.array([np.nan, 2, np.nan, -1, np.inf, 0.5], np.float32))
    d.define_array("b", "float64", ["x"], [4], fill_value=0.0)
    d.write_array("b", [0], np.array([np.nan, np.nan, 0.0, 0.0]))
    d.define_array("c", "float64", ["x"], [4], fill_value=float("nan"))
    d.write_array("c", [0], np.array([np.nan, np.nan, np.nan, np.nan]))
    s.flush()
    for view in (d, Atlas.open(path).open_dataset("d")):
        a = view.array_stats("a")
        # 2 unwritten + 2 NaN written
        assert a["null_count"] == 4
        assert a["min"] == -1.0 and a["max"] == np.inf
        b = view.array_stats("b")
        assert b["null_count"] == 2  # the two 0.0 cells; NaN cells are not null with a 0.0 fill
        assert b["min"] is None and b["max"] is None  # only NaN left: no min/max
        c = view.array_stats("c")
        assert c == {"row_count": 4, "null_count": 4, "min": None, "max": None}


def test_stats_min_max_kinds(tmp_path):
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("t", "timestamp_ns", ["x"], [4], [3], fill_value=0)
    d.write_array("t", [0], np.array(["2024-01-02", "1970-01-01", "2023-05-06"], "datetime64[ns]"))
    d.define_array("s", "string", ["x"], [4], [3], fill_value="")
    d.write_array("s", [0], np.array(["pear", "", "apple", "Zebra"], dtype=object))
    d.define_array("u", "uint64", ["x"], [3], fill_value=0)
    d.write_array("u", [0], np.array([2**64 - 1, 2**63, 1], np.uint64))
    d.define_array("i", "int64", ["x"], [2])
    d.write_array("i", [0], np.array([-(2**63), 2**63 - 1], np.int64))
    s.flush()
    t = d.array_stats("t")
    assert isinstance(t["min"], np.datetime64) and isinstance(t["max"], np.datetime64)
    assert (t["min"], t["max"]) == (np.datetime64("2023-05-06", "ns"), np.datetime64("2024-01-02", "ns"))
    assert t["null_count"] == 2  # one epoch (== fill 0) and one unwritten
    st_ = d.array_stats("s")
    assert type(st_["min"]) is str and type(st_["max"]) is str
    assert (st_["min"], st_["max"], st_["null_count"]) == ("Zebra", "pear", 1)
    u = d.array_stats("u")
    assert int(u["max"]) == 2**64 - 1 and int(u["min"]) == 1
    i = d.array_stats("i")
    assert int(i["min"]) == -(2**63) and int(i["max"]) == 2**63 - 1


def test_stats_follow_overwrites_back_to_fill(tmp_path):
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("a", "int8", ["x"], [6], [4], fill_value=-1)
    d.write_array("a", [0], np.array([1, 2, 3, 4, 5, 6], np.int8))
    s.flush()
    assert d.array_stats("a") == {"row_count": 6, "null_count": 0, "min": 1, "max": 6}
    d.write_array("a", [0], np.array([-1, -1], np.int8))
    d.write_array("a", [5], np.array([-1], np.int8))
    s.flush()
    assert d.array_stats("a") == {"row_count": 6, "null_count": 3, "min": 3, "max": 5}
    d.write_array("a", [0], np.full(6, -1, np.int8))
    s.flush()
    assert d.array_stats("a") == {"row_count": 6, "null_count": 6, "min": None, "max": None}


def test_stats_are_per_dataset_for_a_shared_array_name(tmp_path):
    s = Atlas.create(tmp_path / "s")
    a = s.create_dataset("a")
    b = s.create_dataset("b")
    a.define_array("v", "int32", ["x"], [3], fill_value=0)
    b.define_array("v", "int32", ["x"], [5], [2], fill_value=0)
    a.write_array("v", [0], np.array([1, 2, 3], np.int32))
    b.write_array("v", [1], np.array([-7, 70], np.int32))
    s.flush()
    assert a.array_stats("v") == {"row_count": 3, "null_count": 0, "min": 1, "max": 3}
    assert b.array_stats("v") == {"row_count": 5, "null_count": 3, "min": -7, "max": 70}


def test_chunk_summaries_of_one_segment_mix_layouts_and_chunks_summarised_when_written(tmp_path):
    """A flush summarises the small chunks left for it as whole columns, one kernel call per
    layout of each array name; chunks summarised when written (large ones) keep their
    summary. Every instance's stats equal NumPy's over its data, whatever the mix in a segment."""
    from atlas import _write

    rng = np.random.default_rng(5)
    s = Atlas.create(tmp_path / "s")
    want = {}
    big = _write.SOLO_FRAME // 4 + 10  # float32 cells of a chunk summarised when written
    for i in range(40):
        d = s.create_dataset(f"d{i}")
        kind = i % 4
        if kind == 0:  # small, one chunk, NaN fill
            n, chunk, fill = 50, 50, float("nan")
        elif kind == 1:  # small chunks, another layout of the same name, a number fill
            n, chunk, fill = 30, 7, -1.0
        elif kind == 2:  # large chunks: summarised when written
            n, chunk, fill = 2 * big, big, float("nan")
        else:  # large and small chunks in one instance (an edge chunk)
            n, chunk, fill = big + 5, big, 0.5
        v = rng.standard_normal(n).astype(np.float32)
        v[rng.random(n) < 0.2] = np.float32(fill)
        if i == 5:
            v[:] = np.float32(fill)  # all null
        d.define_array("v", "float32", ["x"], [n], [chunk], fill_value=fill)
        d.write_array("v", [0], v)
        ok = ~np.isnan(v) & (v != np.float32(fill))
        want[d.name] = (n, int(n - ok.sum()), float(v[ok].min()) if ok.any() else None,
                        float(v[ok].max()) if ok.any() else None)
    s.flush()
    for _ in range(2):
        for name, (n, nulls, mn, mx) in want.items():
            st = s.open_dataset(name).array_stats("v")
            got = (st["row_count"], st["null_count"], None if st["min"] is None else float(st["min"]),
                   None if st["max"] is None else float(st["max"]))
            assert got == (n, nulls, mn, mx), name
        s = Atlas.open(tmp_path / "s")  # and as stored
