"""Typed attributes and name validation for datasets, arrays and attributes."""

from __future__ import annotations

import datetime as dt
import math
import uuid



import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas import Atlas

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

META = [("json", "none"), ("json", "zstd"), ("msgpack", "none"), ("msgpack", "lz4")]


@pytest.fixture
def ds(tmp_path):
    return Atlas.create(tmp_path / "s").create_dataset("d")


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# ---------------------------------------------------------------- typed values
VALUES = {
    "t": (True, bool, True),
    "f": (False, bool, False),
    "zero": (0, int, 0),
    "big": (2**63 - 1, int, 2**63 - 1),
    "small": (-(2**63), int, -(2**63)),
    "pi": (3.141592653589793, float, 3.141592653589793),
    "tiny": (5e-324, float, 5e-324),
    "whole_float": (2.0, float, 2.0),
    "neg0": (-0.0, float, -0.0),
    "s": ("hello", str, "hello"),
    "empty": ("", str, ""),
    "uni": ("日本語 é \U0001F600", str, "日本語 é \U0001F600"),
    "when": (np.datetime64("2024-01-02T03:04:05.123456789", "ns"), np.datetime64,
             np.datetime64("2024-01-02T03:04:05.123456789", "ns")),
    "when_s": (np.datetime64("1999-12-31T23:59:59", "s"), np.datetime64, np.datetime64("1999-12-31T23:59:59", "ns")),
    "pydt": (dt.datetime(2020, 5, 6, 7, 8, 9, 10), np.datetime64, np.datetime64("2020-05-06T07:08:09.000010", "ns")),
    "before_epoch": (np.datetime64("1900-01-01", "D"), np.datetime64, np.datetime64("1900-01-01", "ns")),
}


@pytest.mark.parametrize("meta_format, meta_compression", META)
def test_attribute_types_roundtrip(tmp_path, meta_format, meta_compression):
    path = tmp_path / "s"
    s = Atlas.create(path, meta_format=meta_format, meta_compression=meta_compression)
    d = s.create_dataset("d")
    for k, (v, _, _) in VALUES.items():
        d.set_attribute(k, v)
    for stage in ("memory", "reopened"):
        if stage == "reopened":
            s.flush()
            d = Atlas.open(path).open_dataset("d")
        attrs = d.attributes()
        assert list(attrs) == list(VALUES), stage
        for k, (_, typ, expected) in VALUES.items():
            got = d.get_attribute(k)
            assert type(got) is typ or (typ is np.datetime64 and isinstance(got, np.datetime64)), (stage, k, type(got))
            if typ is np.datetime64:
                assert np.datetime_data(got.dtype)[0] == "ns", (stage, k, got.dtype)
            assert got == expected, (stage, k, got)
            assert type(attrs[k]) is type(got) and attrs[k] == got
        assert math.copysign(1.0, d.get_attribute("neg0")) == -1.0


def test_bool_is_not_stored_as_int_and_int_not_as_float(tmp_path):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        d = s.create_dataset("d")
        d.set_attribute("b", True)
        d.set_attribute("i", 1)
        d.set_attribute("f", 1.0)
    d = Atlas.open(path).open_dataset("d")
    assert type(d.get_attribute("b")) is bool
    assert type(d.get_attribute("i")) is int
    assert type(d.get_attribute("f")) is float


def test_get_missing_attribute_is_none_and_overwrite_replaces(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    assert d.get_attribute("nope") is None
    assert d.attributes() == {}
    d.set_attribute("k", 1)
    d.set_attribute("k", "now a string")
    assert d.get_attribute("k") == "now a string"
    s.flush()
    d.set_attribute("k", 2.5)  # not flushed
    assert Atlas.open(path).open_dataset("d").get_attribute("k") == "now a string"
    s.flush()
    assert Atlas.open(path).open_dataset("d").attributes() == {"k": 2.5}


def test_attributes_are_per_dataset(tmp_path):
    s = Atlas.create(tmp_path / "s")
    a = s.create_dataset("a")
    b = s.create_dataset("b")
    a.set_attribute("x", 1)
    assert b.get_attribute("x") is None
    assert b.attributes() == {}


@pytest.mark.parametrize("meta_format, meta_compression", META)
def test_non_finite_floats_survive_reopen(tmp_path, meta_format, meta_compression):
    path = tmp_path / "s"
    with Atlas.create(path, meta_format=meta_format, meta_compression=meta_compression) as s:
        d = s.create_dataset("d")
        d.set_attribute("nan", float("nan"))
        d.set_attribute("pinf", float("inf"))
        d.set_attribute("ninf", -math.inf)
        d.set_attribute("np_nan", np.float32("nan"))
        d.set_attribute("f32_inf", float("inf"), dtype="float32")
        # strings that spell the same things must stay strings
        d.set_attribute("s_nan", "nan")
        d.set_attribute("s_inf", "inf")
        d.set_attribute("s_ninf", "-inf")
        d.set_attribute("s_NaN", "NaN")
    d = Atlas.open(path).open_dataset("d")
    assert type(d.get_attribute("nan")) is float and math.isnan(d.get_attribute("nan"))
    assert d.get_attribute("pinf") == math.inf and type(d.get_attribute("pinf")) is float
    assert d.get_attribute("ninf") == -math.inf
    assert math.isnan(d.get_attribute("np_nan"))
    assert d.get_attribute("f32_inf") == math.inf
    for k, v in {"s_nan": "nan", "s_inf": "inf", "s_ninf": "-inf", "s_NaN": "NaN"}.items():
        assert type(d.get_attribute(k)) is str and d.get_attribute(k) == v


@pytest.mark.parametrize(
    "text",
    ["2024-01-01", "2024-01-01T00:00:00", "2024-01-01T00:00:00.000000000Z", "1970-01-01", "NaT", "123", "1.5",
     "true", "True", "null", "json:[1, 2]", "", " "],
)
def test_string_that_looks_like_something_else_stays_a_string(tmp_path, text):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        s.create_dataset("d").set_attribute("k", text)
    got = Atlas.open(path).open_dataset("d").get_attribute("k")
    assert type(got) is str and got == text


@pytest.mark.parametrize(
    "value, expected_type, expected",
    [
        (np.int8(-5), int, -5),
        (np.uint16(65535), int, 65535),
        (np.int32(7), int, 7),
        (np.int64(-(2**63)), int, -(2**63)),
        (np.uint64(2**63 - 1), int, 2**63 - 1),
        (np.float32(1.5), float, 1.5),
        (np.float64(-2.25), float, -2.25),
        (np.bool_(True), bool, True),
        (np.bool_(False), bool, False),
        (np.str_("npstr"), str, "npstr"),
        (np.datetime64("2000-01-01", "D"), np.datetime64, np.datetime64("2000-01-01", "ns")),
    ],
)
def test_numpy_scalars_accepted(tmp_path, value, expected_type, expected):
    path = tmp_path / "s"
    s = Atlas.create(path)
    d = s.create_dataset("d")
    d.set_attribute("k", value)
    for view in (d, None):
        if view is None:
            s.flush()
            view = Atlas.open(path).open_dataset("d")
        got = view.get_attribute("k")
        assert isinstance(got, expected_type)
        if expected_type is not np.datetime64:
            assert type(got) is expected_type, type(got)
        assert got == expected


def test_int_outside_int64_rejected(ds):
    with pytest.raises(OverflowError):
        ds.set_attribute("k", 2**63)
    with pytest.raises(OverflowError):
        ds.set_attribute("k", -(2**63) - 1)
    assert ds.get_attribute("k") is None


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, (1,), object(), None, b"bytes", 1 + 2j, np.arange(3)],
                         ids=["list", "dict", "tuple", "object", "None", "bytes", "complex", "ndarray"])
def test_unsupported_attribute_value_type_raises_type_error(ds, value):
    with pytest.raises(TypeError):
        ds.set_attribute("k", value)
    assert ds.get_attribute("k") is None
    assert ds.attributes() == {}


# ---------------------------------------------------------------- dtype overrides
@pytest.mark.parametrize(
    "value, dtype, exc",
    [
        (300, "int8", OverflowError),
        (-129, "int8", OverflowError),
        (128, "int8", OverflowError),
        (40000, "int16", OverflowError),
        (2**31, "int32", OverflowError),
        (2**63, "int64", OverflowError),
        (-1, "uint8", OverflowError),
        (256, "uint8", OverflowError),
        (-1, "uint64", OverflowError),
        (2**32, "uint32", OverflowError),
        (np.int64(300), "int8", OverflowError),
        (1e300, "float32", OverflowError),
        (-1e300, "float32", OverflowError),
        (3.5e38, "float32", OverflowError),
        (1.5, "int8", TypeError),
        ("1", "int32", TypeError),
        (True, "int64", TypeError),
        ("x", "float64", TypeError),
        (1, "bool", TypeError),
        (1, "string", TypeError),
        (1.5, "timestamp_nanoseconds", TypeError),
        (1, "complex128", ValueError),
        (1, "no-such-type", ValueError),
    ],
)
def test_dtype_override_is_checked(ds, value, dtype, exc):
    ds.set_attribute("k", "before")
    with pytest.raises(exc) as ei:
        ds.set_attribute("k", value, dtype=dtype)
    assert "'k'" in str(ei.value)  # names the culprit
    assert ds.get_attribute("k") == "before"  # unchanged


@pytest.mark.parametrize(
    "value, dtype, expected_type, expected",
    [
        (127, "int8", int, 127),
        (-128, "int8", int, -128),
        (255, "uint8", int, 255),
        (np.int16(-3), "int16", int, -3),
        (2**32 - 1, "uint32", int, 2**32 - 1),
        (5, "int64", int, 5),
        (1.5, "float32", float, 1.5),
        (3, "float32", float, 3.0),
        (3, "float64", float, 3.0),
        (-math.inf, "float32", float, -math.inf),
        (3.4e38, "float32", float, float(np.float32(3.4e38))),
        (True, "bool", bool, True),
        ("x", "string", str, "x"),
        (0, "timestamp_nanoseconds", np.datetime64, np.datetime64(0, "ns")),
        (np.datetime64("2021-01-01"), "timestamp_ns", np.datetime64, np.datetime64("2021-01-01", "ns")),
    ],
)
def test_dtype_override_accepted_values(tmp_path, value, dtype, expected_type, expected):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        s.create_dataset("d").set_attribute("k", value, dtype=dtype)
    got = Atlas.open(path).open_dataset("d").get_attribute("k")
    assert isinstance(got, expected_type) and got == expected
    if expected_type is not np.datetime64:
        assert type(got) is expected_type


def test_float32_override_rounds_to_float32(ds):
    ds.set_attribute("k", 0.1, dtype="float32")
    assert ds.get_attribute("k") == float(np.float32(0.1))
    assert ds.get_attribute("k") != 0.1


@HYP
@given(
    value=st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.integers(-(2**62), 2**62).map(lambda n: np.datetime64(n, "ns")),
    ),
    meta=st.sampled_from(META),
)
def test_any_supported_value_roundtrips(tmp_path, value, meta):
    path = tmp_path / f"s-{uuid.uuid4().hex[:8]}"
    with Atlas.create(path, meta_format=meta[0], meta_compression=meta[1]) as s:
        s.create_dataset("d").set_attribute("k", value)
    got = Atlas.open(path).open_dataset("d").get_attribute("k")
    if isinstance(value, np.datetime64):
        assert isinstance(got, np.datetime64) and got == value
    else:
        assert type(got) is type(value)
        assert _same(got, value)
        if isinstance(value, float) and value == 0:
            assert math.copysign(1, got) == math.copysign(1, value)


@HYP
@given(value=st.integers(-(2**70), 2**70), dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]))
def test_int_override_range_matches_numpy(ds, value, dtype):
    info = np.iinfo(dtype)
    key = f"k{uuid.uuid4().hex[:6]}"
    if info.min <= value <= info.max:
        ds.set_attribute(key, value, dtype=dtype)
        assert ds.get_attribute(key) == value
    else:
        with pytest.raises(OverflowError):
            ds.set_attribute(key, value, dtype=dtype)
        assert ds.get_attribute(key) is None


# ---------------------------------------------------------------- names
BAD_NAMES = ["", "a/b", "/", "/a", "a/", "_", "_x", "__init__", ".", ".."]
NON_STR = [1, None, b"x", 1.5, ("a",)]
GOOD_NAMES = ["a", "a.b", "x_", "..a", "a..", "...", "-", "é", "a b", "A1", "2024-01-01", "x" * 100]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_dataset_name(tmp_path, name):
    s = Atlas.create(tmp_path / "s")
    with pytest.raises(ValueError):
        s.create_dataset(name)
    assert s.list_datasets() == []
    s.flush()
    assert Atlas.open(tmp_path / "s").list_datasets() == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_array_name(ds, name):
    with pytest.raises(ValueError):
        ds.define_array(name, "int8", ["x"], [2])
    assert ds.list_arrays() == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_attribute_name(ds, name):
    with pytest.raises(ValueError):
        ds.set_attribute(name, 1)
    assert ds.attributes() == {}


@pytest.mark.parametrize("name", NON_STR, ids=repr)
def test_non_str_names_raise_type_error(tmp_path, name):
    s = Atlas.create(tmp_path / "s")
    with pytest.raises(TypeError):
        s.create_dataset(name)
    d = s.create_dataset("d")
    with pytest.raises(TypeError):
        d.define_array(name, "int8", ["x"], [2])
    with pytest.raises(TypeError):
        d.set_attribute(name, 1)
    assert s.list_datasets() == ["d"] and d.list_arrays() == [] and d.attributes() == {}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_names_accepted_everywhere_and_roundtrip(tmp_path, name):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        d = s.create_dataset(name)
        d.define_array(name, "int16", ["x"], [3])
        d.write_array(name, [0], np.array([1, 2, 3], np.int16))
        d.set_attribute(name, name)
    s2 = Atlas.open(path)
    assert s2.list_datasets() == [name]
    d2 = s2.open_dataset(name)
    assert d2.name == name
    assert d2.list_arrays() == [name]
    np.testing.assert_array_equal(d2.read_array(name), [1, 2, 3])
    assert d2.get_attribute(name) == name


def test_array_names_that_slug_alike_stay_separate(tmp_path):
    """Names that differ only in characters a file name cannot hold keep their own data."""
    path = tmp_path / "s"
    names = ["a b", "a:b", "a*b", "a?b", "a\\b", "a.b", "A b"]
    with Atlas.create(path) as s:
        d = s.create_dataset("d")
        for i, n in enumerate(names):
            d.define_array(n, "int32", ["x"], [2])
            d.write_array(n, [0], np.array([i, -i], np.int32))
    d = Atlas.open(path).open_dataset("d")
    for i, n in enumerate(names):
        np.testing.assert_array_equal(d.read_array(n), [i, -i])


def test_error_messages_name_the_culprit(ds):
    with pytest.raises(ValueError, match="_hidden"):
        ds.define_array("_hidden", "int8", ["x"], [2])
    with pytest.raises(ValueError, match="a/b"):
        ds.set_attribute("a/b", 1)
