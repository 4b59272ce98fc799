"""Edges (issue "Reliability", point 6): unicode and very long names, zero-length dimensions,
very large logical shapes written sparsely, and 100,000 datasets in one store.

Golden stores of the previous format release are covered by ``tests/test_golden.py``.
Bugs found while writing this file (chunk ids wrapping past int64, lone surrogates that broke
every later flush, an empty dimension name raising TypeError) are fixed; their tests stay.
"""

from __future__ import annotations

import os
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import Atlas

FORMATS = ["json", "msgpack"]
NUMERIC = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"]
ALL_DTYPES = NUMERIC + ["timestamp_ns", "string"]
NAME_MAX = 255  # bytes per path component on ext4, xfs, btrfs, APFS, NTFS (UTF-16 units)


def user_dtype(dtype: str) -> np.dtype:
    if dtype == "timestamp_ns":
        return np.dtype("datetime64[ns]")
    if dtype == "string":
        return np.dtype(object)
    return np.dtype(dtype)


def values(dtype: str, shape, seed: int = 0) -> np.ndarray:
    """Deterministic non-null data of the user dtype."""
    n = int(np.prod(shape)) if len(shape) else 1
    base = np.arange(1, n + 1, dtype=np.int64) + seed
    if dtype == "string":
        out = np.empty(n, object)
        out[:] = [f"s{v}é" for v in base.tolist()]
        return out.reshape(shape)
    if dtype == "timestamp_ns":
        return base.view("datetime64[ns]").reshape(shape)
    return (base % 100).astype(dtype).reshape(shape)


def store_files(path: Path) -> list[Path]:
    return [Path(r) / f for r, _, fs in os.walk(path) for f in fs]


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in store_files(path))


def relative_components(path: Path) -> list[str]:
    """Every file and directory name below ``path``."""
    out = []
    for r, ds, fs in os.walk(path):
        out += ds + fs
    return out


# =============================================================================================
# Unicode names
# =============================================================================================
# Names are opaque strings: atlas does not normalise them (NFC "é" and NFD "e\u0301" are two
# names), stores them verbatim in the metadata and never uses them as file names (an array
# name's directory is "arrays/<ascii slug of at most 40 chars>-<hash of the name>").
TRICKY = {
    "cjk": "日本語の名前",
    "hangul": "한국어",
    "emoji": "\U0001F600",
    "zwj_family": "\U0001F469\u200d\U0001F469\u200d\U0001F467",
    "flag": "\U0001F1EB\U0001F1F7",
    "combining": "e\u0301\u0302\u0323",
    "nfc": "\u00e9",
    "nfd": "e\u0301",
    "hebrew": "שלום",
    "arabic": "مرحبا",
    "rlo_override": "\u202eabc\u202c",
    "zero_width": "\u200b",
    "bom": "\ufeff",
    "noncharacters": "\uffff\U0010ffff",
    "astral_math": "\U0001D518\U0001D52B\U0001D526",
    "spaces": " a  b ",
    "one_space": " ",
    "dots": "a.b.c",
    "three_dots": "...",
    "dot_space": ". ",
    "dot_dot_x": "..x",
    "c0_controls": "\x01\t\n\r\x1b[31m\x7f",
    "c1_controls": "\x85\x9f",
    "quotes": "\"'`",
    "json_like": '{"a": [1, "\\u0000"]}',
    "backslashes": "a\\b\\",
    "format_specs": "%s %(x)s {0}",
    "line_separators": "a\u2028b\u2029c",
    "fullwidth_low_line": "\uff3fx",
    "division_slash": "a\u2215b",
    "nul_symbol": "\u2400",
    "windows_reserved": "CON",
    "case_a": "Temp",
    "case_b": "temp",
    "json_words": "null",
    "bool_word": "true",
    "float_words": "nan",
    "neg_inf_word": "-inf",
    "digits": "0123",
}


def _unicode_store(path: Path, fmt: str, compression: str) -> None:
    with Atlas.create(path, meta_format=fmt, meta_compression=compression) as s:
        every = s.create_dataset("every")
        for i, name in enumerate(TRICKY.values()):
            d = s.create_dataset(name)
            # the name as dataset, array, attribute and dimension name, and as a string value
            d.define_array(name, "string", [name, name + "2"], [2, 2], fill_value=name)
            d.write_array(name, [0, 0], np.array([[name, "x"]], object))
            d.define_array("v", "int32", [name], [3], [2])
            d.write_array("v", [0], np.array([i, -i, i * 7], np.int32))
            d.set_attribute(name, name)
            every.define_array(name, "int64", ["x"], [2])
            every.write_array(name, [0], np.array([i, 1000 + i], np.int64))
            every.set_attribute(name, i)


@pytest.mark.parametrize("fmt, compression", [("json", "none"), ("msgpack", "none"), ("json", "zstd"), ("msgpack", "lz4")])
def test_unicode_names_roundtrip_verbatim(tmp_path, fmt, compression):
    path = tmp_path / "st\u00f6re \u65e5\u672c"  # a unicode store directory too
    _unicode_store(path, fmt, compression)
    names = list(TRICKY.values())
    s = Atlas.open(path)
    assert s.meta_format == fmt and s.meta_compression == compression
    assert s.list_datasets() == ["every"] + names  # verbatim, creation order
    every = s.open_dataset("every")
    assert every.list_arrays() == names
    assert every.attributes() == {n: i for i, n in enumerate(names)}
    for i, name in enumerate(names):
        assert s.dataset_exists(name)
        d = s.open_dataset(name)
        assert d.name == name
        assert d.list_arrays() == [name, "v"]
        meta = d.array_meta(name)
        assert meta["dimension_names"] == [name, name + "2"]
        assert d.array_fill_value(name) == name
        assert d.read_array(name).tolist() == [[name, "x"], [name, name]]
        assert d.get_attribute(name) == name and d.attributes() == {name: name}
        assert d.array_meta("v")["dimension_names"] == [name]
        np.testing.assert_array_equal(every.read_array(name), [i, 1000 + i])
        st = d.array_stats(name)
        assert st["row_count"] == 4 and st["null_count"] == 3  # 2 unwritten + 1 written equal to the fill
        assert st["min"] == st["max"] == "x"
    # stacked reads across every unicode dataset name, in the order asked
    order = names[::-1]
    stack = s.read_array_across_stacked("v", order)
    idx = [names.index(n) for n in order]
    np.testing.assert_array_equal(stack, [[i, -i, i * 7] for i in idx])
    assert s.list_arrays() == names + ["v"]
    assert s.verify() == []
    # the file system only ever sees ASCII slugs of bounded length (safe on macOS/Windows, which
    # would normalise or refuse some of these names)
    comps = relative_components(path)
    assert comps and all(c.isascii() and len(os.fsencode(c)) <= 64 for c in comps), comps
    arrays_dirs = os.listdir(path / "arrays")
    assert len(arrays_dirs) == len(names) + 1  # one per distinct array name: no two collapsed


@pytest.mark.parametrize("fmt", FORMATS)
def test_unicode_names_survive_a_second_flush_compact_and_reopen(tmp_path, fmt):
    """Datasets decoded lazily are written back verbatim; compact keeps every name."""
    path = tmp_path / "s"
    _unicode_store(path, fmt, "none")
    s = Atlas.open(path)
    names = list(TRICKY.values())
    s.delete_dataset(names[0])
    s.open_dataset(names[1]).set_attribute("touched", True)
    s.flush()
    s.compact()
    s2 = Atlas.open(path)
    assert s2.list_datasets() == ["every"] + names[1:]
    assert s2.open_dataset(names[1]).attributes() == {names[1]: names[1], "touched": True}
    for name in names[1:]:
        assert s2.open_dataset(name).read_array(name)[0].tolist() == [name, "x"]
    assert s2.verify() == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_nfc_and_nfd_are_distinct_names_everywhere(tmp_path, fmt):
    """atlas does not normalise: canonically equivalent spellings are different names."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert unicodedata.normalize("NFC", nfd) == nfc and nfc != nfd
    path = tmp_path / "s"
    with Atlas.create(path, meta_format=fmt) as s:
        a = s.create_dataset(nfc)
        b = s.create_dataset(nfd)  # not a duplicate
        for d, k in ((a, 1), (b, 2)):
            d.define_array(nfc, "int8", [nfc, nfd], [1, 2])  # two distinct dims, not a repeat
            d.write_array(nfc, [0, 0], np.array([[k, k]], np.int8))
            d.define_array(nfd, "int8", ["x"], [1])
            d.write_array(nfd, [0], np.array([10 * k], np.int8))
            d.set_attribute(nfc, f"c{k}")
            d.set_attribute(nfd, f"d{k}")
        with pytest.raises(FileExistsError):
            s.create_dataset(unicodedata.normalize("NFC", nfd))
    s = Atlas.open(path)
    got = s.list_datasets()
    assert got == [nfc, nfd]
    assert [unicodedata.is_normalized("NFC", n) for n in got] == [True, False]  # forms preserved
    for name, k in ((nfc, 1), (nfd, 2)):
        d = s.open_dataset(name)
        assert d.list_arrays() == [nfc, nfd]
        assert d.array_meta(nfc)["dimension_names"] == [nfc, nfd]
        assert d.read_array(nfc).tolist() == [[k, k]] and d.read_array(nfd).tolist() == [10 * k]
        assert d.attributes() == {nfc: f"c{k}", nfd: f"d{k}"}
    # a spelling that does not exist is not found, whatever it normalises to
    only = tmp_path / "only"
    with Atlas.create(only, meta_format=fmt) as s1:
        d = s1.create_dataset(nfc)
        d.define_array(nfc, "int8", ["x"], [1])
        d.set_attribute(nfc, 1)
    s1 = Atlas.open(only)
    assert not s1.dataset_exists(nfd)
    with pytest.raises(KeyError):
        s1.open_dataset(nfd)
    with pytest.raises(KeyError):
        s1.delete_dataset(nfd)
    d = s1.open_dataset(nfc)
    assert d.read_array(nfd) is None and d.array_meta(nfd) is None and d.get_attribute(nfd) is None
    with pytest.raises(KeyError):
        d.write_array(nfd, [0], np.zeros(1, np.int8))
    with pytest.raises(KeyError):
        s1.read_array_across_stacked(nfc, [nfd])


LONG_NAMES = {
    "ascii_1000": "n" * 1000,
    "ascii_100k": "abcdefghij" * 10_000,
    "cjk_300_bytes": "\u65e5" * 100,  # 100 chars, 300 UTF-8 bytes
    "emoji_1200_bytes": "\U0001F600" * 300,
    "mixed_2000": ("x\u00e9\u65e5\U0001F600" * 500),
    "dots_spaces_300": ". " * 150,
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_very_long_names_never_reach_the_file_system(tmp_path, fmt):
    path = tmp_path / "s"
    names = list(LONG_NAMES.values())
    assert all(len(n.encode("utf-8")) > NAME_MAX for n in names)
    # long names that share their first 40 (slugged) characters still get their own data
    twins = ["p" * 300 + "-one", "p" * 300 + "-two"]
    with Atlas.create(path, meta_format=fmt) as s:
        for i, name in enumerate(names):
            d = s.create_dataset(name)
            d.define_array(name, "float32", [name], [4], [3])
            d.write_array(name, [0], np.arange(4, dtype=np.float32) + i)
            d.define_array("common", "int16", [name], [2])
            d.write_array("common", [0], np.array([i, i], np.int16))
            d.set_attribute(name, name)
        t = s.create_dataset("twins")
        for k, name in enumerate(twins):
            t.define_array(name, "int8", ["x"], [1])
            t.write_array(name, [0], np.array([k + 1], np.int8))
    for c in relative_components(path):
        assert len(os.fsencode(c)) <= 64, c
    s = Atlas.open(path)
    assert s.list_datasets() == names + ["twins"]
    for i, name in enumerate(names):
        d = s.open_dataset(name)
        np.testing.assert_array_equal(d.read_array(name), np.arange(4, dtype=np.float32) + i)
        assert d.array_meta(name)["dimension_names"] == [name]
        assert d.get_attribute(name) == name
    np.testing.assert_array_equal(s.read_array_across_stacked("common", names), [[i, i] for i in range(len(names))])
    t = s.open_dataset("twins")
    assert [t.read_array(n).tolist() for n in twins] == [[1], [2]]
    s.compact()
    assert Atlas.open(path).open_dataset(names[1]).read_array(names[1]).tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "name",
    ["\x01", "\t", "a\nb", "\r", "\x1b", "\x7f", "\x85", " ", "  x  ", "a.b", "...", "..x", "x..", ". ", " .", ".\u200b"],
    ids=repr,
)
def test_odd_but_valid_names_are_accepted_and_roundtrip(tmp_path, name):
    """Validation refuses only '', '/', NUL, a leading '_', '.' and '..'; control characters,
    spaces and dots are ordinary characters (they only ever appear inside the metadata)."""
    path = tmp_path / "s"
    for fmt in FORMATS:
        p = path / fmt
        with Atlas.create(p, meta_format=fmt) as s:
            d = s.create_dataset(name)
            d.define_array(name, "uint16", [name], [2])
            d.write_array(name, [0], np.array([7, 8], np.uint16))
            d.set_attribute(name, 1.5)
        d = Atlas.open(p).open_dataset(name)
        assert (d.name, d.list_arrays(), d.attributes()) == (name, [name], {name: 1.5})
        assert d.read_array(name).tolist() == [7, 8]


@pytest.mark.parametrize("name", ["", "/", "a/b", "\x00", "a\x00b", "_", "_\u00e9", "__", ".", "..", "\u65e5/\u672c"], ids=repr)
def test_invalid_names_refused_with_value_error_everywhere(tmp_path, name):
    s = Atlas.create(tmp_path / "s")
    with pytest.raises(ValueError):
        s.create_dataset(name)
    d = s.create_dataset("d")
    with pytest.raises(ValueError):
        d.define_array(name, "int8", ["x"], [1])
    with pytest.raises(ValueError):
        d.set_attribute(name, 1)
    assert s.list_datasets() == ["d"] and d.list_arrays() == [] and d.attributes() == {}
    s.flush()
    assert Atlas.open(tmp_path / "s").list_datasets() == ["d"]


def test_dimension_names_are_free_form_but_not_empty(tmp_path):
    """Dimension names are not file names nor reserved: '/', '_x', '.', NUL-free controls are fine."""
    path = tmp_path / "s"
    dims = ["a/b", "_x", ".", "..", "\t", "\u65e5 \U0001F600"]
    with Atlas.create(path) as s:
        s.create_dataset("d").define_array("a", "int8", dims, [1] * len(dims))
    assert Atlas.open(path).open_dataset("d").array_meta("a")["dimension_names"] == dims


def test_empty_dimension_name_raises_value_error(tmp_path):
    d = Atlas.create(tmp_path / "s").create_dataset("d")
    with pytest.raises(ValueError):
        d.define_array("a", "int8", ["x", ""], [1, 1])
    assert d.list_arrays() == []


# ---- strings that are not valid unicode (lone surrogates: possible in a Python str, e.g. from
# os.fsdecode of undecodable bytes or from surrogateescape) cannot be written as UTF-8.
LONE = "bad\udcff"  # what os.fsdecode(b"bad\xff") returns


def _put_lone_surrogate(s: Atlas, where: str) -> None:
    if where == "dataset":
        s.create_dataset(LONE)
        return
    d = s.create_dataset("victim")
    if where == "array_defined":
        d.define_array(LONE, "int8", ["x"], [2])
    elif where == "array_written":
        d.define_array(LONE, "int8", ["x"], [2])
        d.write_array(LONE, [0], np.ones(2, np.int8))
    elif where == "dimension":
        d.define_array("a", "int8", [LONE], [2])
        d.write_array("a", [0], np.ones(2, np.int8))
    elif where == "attribute_name":
        d.set_attribute(LONE, 1)
    elif where == "attribute_value":
        d.set_attribute("k", LONE)
    elif where == "string_fill":
        d.define_array("a", "string", ["x"], [2], fill_value=LONE)
    elif where == "string_data":
        d.define_array("a", "string", ["x"], [2])
        d.write_array("a", [0], np.array([LONE, "ok"], object))
    else:  # pragma: no cover
        raise AssertionError(where)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", [
    "dataset",
    "array_defined",
    "array_written",
    "dimension",
    "attribute_name",
    "attribute_value",
    "string_fill",
    "string_data",
])
def test_lone_surrogates_are_refused_at_the_call_and_never_break_flush(tmp_path, fmt, where):
    """An unencodable string is refused by the call itself (ValueError naming it), so the
    store never holds something it cannot write and stays flushable."""
    path = tmp_path / "s"
    s = Atlas.create(path, meta_format=fmt)
    good = s.create_dataset("good")
    good.define_array("a", "int8", ["x"], [2])
    good.write_array("a", [0], np.array([1, 2], np.int8))
    with pytest.raises(ValueError, match="Unicode|UTF-8|utf-8|surrogate"):
        _put_lone_surrogate(s, where)
    s.flush()
    s2 = Atlas.open(path)
    assert s2.open_dataset("good").read_array("a").tolist() == [1, 2]


# =============================================================================================
# Zero-length dimensions
# =============================================================================================
FILLS = {"float32": float("nan"), "float64": 1.5, "int8": -1, "uint64": 2**64 - 1,
         "timestamp_ns": np.datetime64(5, "ns"), "string": "zz"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_zero_length_axes_every_dtype(tmp_path, fmt, dtype):
    path = tmp_path / "s"
    ud = user_dtype(dtype)
    chunkings = [None, [2, 2, 2], [1, 5, 1]]
    s = Atlas.create(path, meta_format=fmt)
    for k, chunk in enumerate(chunkings):
        d = s.create_dataset(f"d{k}")
        d.define_array("e", dtype, ["x", "y", "z"], [3, 0, 4], chunk, fill_value=FILLS.get(dtype))
        d.define_array("e1", dtype, ["x"], [0])
        d.define_array("e00", dtype, ["x", "y"], [0, 0], [3, 3])
        # empty writes are accepted (anywhere the empty box fits) and change nothing
        d.write_array("e", [1, 0, 2], np.empty((2, 0, 2), ud))
        d.write_array("e", [3, 0, 4], np.empty((0, 0, 0), ud))
        d.write_array("e1", [0], np.empty(0, ud))
        with pytest.raises(ValueError):
            d.write_array("e", [0, 0, 0], values(dtype, (1, 1, 1)))
        with pytest.raises(ValueError):
            d.write_array("e1", [1], np.empty(0, ud))
        with pytest.raises(ValueError):
            d.read_array("e", [0, 1, 0], [1, 0, 1])
        # pending state reads fine
        r = d.read_array("e")
        assert r.shape == (3, 0, 4) and r.dtype == ud
        assert d.array_stats("e") is None  # before the first flush
    s.flush()

    def check(st: Atlas) -> None:
        for k in range(len(chunkings)):
            d = st.open_dataset(f"d{k}")
            for name, shape in (("e", (3, 0, 4)), ("e1", (0,)), ("e00", (0, 0))):
                r = d.read_array(name)
                assert r.shape == shape and r.dtype == ud, (name, r.shape, r.dtype)
                assert d.array_stats(name) == {"row_count": 0, "null_count": 0, "min": None, "max": None}
                assert d.array_meta(name)["shape"] == list(shape)
            assert d.read_array("e", [2, 0, 1], [1, 0, 3]).shape == (1, 0, 3)
            assert d.read_array("e", [3, 0, 4], [0, 0, 0]).shape == (0, 0, 0)
            if dtype in FILLS:
                fv = d.array_fill_value("e")
                if dtype == "float32":
                    assert fv != fv  # NaN
                elif dtype == "timestamp_ns":
                    assert fv == 5  # the canonical form of a timestamp fill: int ns since the epoch
                else:
                    assert fv == FILLS[dtype]
        names = st.list_datasets()
        stack = st.read_array_across_stacked("e", names)
        assert stack.shape == (3, 3, 0, 4) and stack.dtype == ud
        assert st.read_array_across_stacked("e1", names).shape == (3, 0)
        assert st.read_array_across_stacked("e", names + names[:1], [1, 0, 0], [2, 0, 3]).shape == (4, 2, 0, 3)
        parts = st.read_array_across("e00", names)
        assert [p.shape for p in parts] == [(0, 0)] * 3 and all(p.dtype == ud for p in parts)
        assert st.verify() == []

    check(s)
    s2 = Atlas.open(path)
    check(s2)
    s2.compact()
    check(Atlas.open(path))


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_length_instances_mixed_with_non_empty_ones_of_the_same_name(tmp_path, fmt):
    """One array name, some datasets with a 0-length axis and some with data, in one flush."""
    path = tmp_path / "s"
    with Atlas.create(path, meta_format=fmt) as s:
        for k in range(6):
            d = s.create_dataset(f"d{k}")
            n = 0 if k % 2 else 5
            d.define_array("v", "float64", ["t", "x"], [n, 4], [2, 2], fill_value=-1.0)
            if n:
                d.write_array("v", [0, 0], np.full((n, 4), float(k)))
            d.define_array("s", "string", ["t"], [n], [2])
            if n:
                d.write_array("s", [1], np.array([f"k{k}"] * (n - 1), object))
    s = Atlas.open(path)
    names = s.list_datasets()
    empty, full = names[1::2], names[0::2]
    # the same empty box from every instance works; the whole-array box differs and is refused
    assert s.read_array_across_stacked("v", names, [0, 0], [0, 4]).shape == (6, 0, 4)
    assert s.read_array_across_stacked("s", names, [0], [0]).shape == (6, 0)
    with pytest.raises(ValueError):
        s.read_array_across_stacked("v", names)
    assert s.read_array_across_stacked("v", empty).shape == (3, 0, 4)
    np.testing.assert_array_equal(s.read_array_across_stacked("v", full, [3, 1], [2, 3]),
                                  [np.full((2, 3), float(k)) for k in (0, 2, 4)])
    parts = s.read_array_across("s", names)
    assert [p.shape for p in parts] == [(5,), (0,)] * 3
    assert parts[2].tolist() == ["", "k2", "k2", "k2", "k2"]
    for k, n in enumerate(names):
        d = s.open_dataset(n)
        if k % 2:
            assert d.array_stats("v") == {"row_count": 0, "null_count": 0, "min": None, "max": None}
            assert d.array_stats("s") == {"row_count": 0, "null_count": 0, "min": None, "max": None}
        else:
            assert d.array_stats("v") == {"row_count": 20, "null_count": 0, "min": float(k), "max": float(k)}
            assert d.array_stats("s") == {"row_count": 5, "null_count": 1, "min": f"k{k}", "max": f"k{k}"}
    # replacing an empty instance by a non-empty one and back
    d = s.open_dataset(empty[0])
    d.delete_array("v")
    d.define_array("v", "float64", ["t", "x"], [1, 4])
    d.write_array("v", [0, 0], np.ones((1, 4)))
    d2 = s.open_dataset(full[0])
    d2.delete_array("v")
    d2.define_array("v", "float64", ["t", "x"], [0, 4])
    s.compact()
    s3 = Atlas.open(path)
    assert s3.open_dataset(empty[0]).read_array("v").tolist() == [[1.0] * 4]
    assert s3.open_dataset(full[0]).read_array("v").shape == (0, 4)
    assert s3.open_dataset(full[0]).array_stats("v")["row_count"] == 0
    assert s3.verify() == []


def test_zero_length_dimension_through_xarray(tmp_path):
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset(
        {"t": (("time", "x"), np.empty((0, 3), np.float32)), "s": (("time",), np.array([], dtype=object))},
        coords={"time": np.array([], "datetime64[ns]"), "x": [1, 2, 3]},
        attrs={"title": "empty \u65e5"},
    )
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        s.add_xr_dataset(ds, "a")
        s.add_xr_dataset(ds, "b")
    s = Atlas.open(path)
    xr.testing.assert_identical(s.to_xarray("a", chunks=None), ds)
    xr.testing.assert_identical(s.to_xarray("a").compute(), ds)
    many = s.to_xarray_many(["a", "b"])
    assert many["t"].shape == (2, 0, 3) and many.sizes["time"] == 0


# =============================================================================================
# A very large logical array written sparsely
# =============================================================================================
class PeakRSS:
    """Samples this process's RSS in a thread: the peak growth over the baseline."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> "PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


N = 100_000  # float64 (N, N) = 80 GB logical
C = 1000  # chunks (C, C) = 8 MB


def test_80gb_logical_array_with_a_few_chunks_written(tmp_path):
    pytest.importorskip("psutil")
    path = tmp_path / "s"
    rng = np.random.default_rng(7)
    # written boxes: whole chunks at the corners and in the middle, plus a partial box across
    # four chunks (with NaN cells, the fill); int32 without a fill: written-cell masks
    blocks = {(0, 0): rng.random((C, C)), (N - C, N - C): rng.random((C, C)), (50 * C, 73 * C): rng.random((C, C))}
    part = rng.random((10, 20))
    part[0, :5] = np.nan
    part_at = (2 * C - 5, 7 * C - 10)  # straddles chunk rows 1-2 and columns 6-7
    ipart = np.arange(70, dtype=np.int32).reshape(7, 10) - 3
    ipart_at = (N - 7, C - 5)  # the last row of chunks, straddling two chunk columns
    spart = np.array(["b\u00e9", "a", "\u65e5", "zz"], object)
    written_f = 3 * C * C + part.size
    nan_written = 5

    # warm the kernels up so the memory baseline includes Numba and the thread pool
    with Atlas.create(tmp_path / "warm") as w:
        wd = w.create_dataset("d")
        wd.define_array("f", "float64", ["y", "x"], [4, 4], [2, 2], fill_value=float("nan"))
        wd.write_array("f", [1, 1], np.ones((2, 2)))
        wd.define_array("i", "int32", ["y", "x"], [4, 4], [2, 2])
        wd.write_array("i", [1, 1], np.ones((2, 2), np.int32))
    w.open_dataset("d").read_array("f")
    w.compact()

    with PeakRSS() as mem:
        s = Atlas.create(path)
        d = s.create_dataset("big")
        d.define_array("f", "float64", ["y", "x"], [N, N], [C, C], fill_value=float("nan"))
        d.define_array("i", "int32", ["y", "x"], [N, N], [C, C])
        d.define_array("s", "string", ["i"], [10**12], [10_000])  # a trillion cells
        d.define_array("one", "float64", ["y", "x"], [N, N])  # default chunking: one 80 GB chunk, never written
        for (a, b), v in blocks.items():
            d.write_array("f", [a, b], v)
        d.write_array("f", list(part_at), part)
        d.write_array("i", list(ipart_at), ipart)
        d.write_array("s", [10**12 - 2], spart[:2])
        d.write_array("s", [123_456_789], spart[2:])
        # pending reads
        np.testing.assert_array_equal(d.read_array("f", [0, 0], [C, C]), blocks[(0, 0)])
        s.flush()
        other = s.create_dataset("other")  # the same names, nothing written
        other.define_array("f", "float64", ["y", "x"], [N, N], [C, C], fill_value=float("nan"))
        s.flush()

        s2 = Atlas.open(path)
        d2 = s2.open_dataset("big")
        for (a, b), v in blocks.items():
            np.testing.assert_array_equal(d2.read_array("f", [a, b], [C, C]), v)
        # a box across a written chunk and unwritten ones
        box = d2.read_array("f", [C // 2, C // 2], [C, C])
        np.testing.assert_array_equal(box[: C // 2, : C // 2], blocks[(0, 0)][C // 2:, C // 2:])
        assert np.isnan(box[C // 2:, :]).all() and np.isnan(box[:, C // 2:]).all()
        got = d2.read_array("f", list(part_at), list(part.shape))
        np.testing.assert_array_equal(got, part)  # NaN == NaN for assert_array_equal
        np.testing.assert_array_equal(d2.read_array("f", [part_at[0] - 1, part_at[1]], [1, 20]), np.full((1, 20), np.nan))
        # unwritten boxes far away: the fill (NaN), or 0 without a fill
        assert np.isnan(d2.read_array("f", [12_345, 67_890], [300, 2_000])).all()
        assert not d2.read_array("i", [40_000, 40_000], [500, 500]).any()
        assert not d2.read_array("one", [N - 3, N - 3], [3, 3]).any()
        ib = d2.read_array("i", [N - 8, C - 6], [8, 12])
        assert (ib[1:, 1:-1] == ipart).all() and not ib[0].any() and not ib[:, 0].any() and not ib[:, -1].any()
        sb = d2.read_array("s", [10**12 - 4], [4])
        assert sb.tolist() == ["", "", "b\u00e9", "a"]
        assert d2.read_array("s", [123_456_788], [4]).tolist() == ["", "\u65e5", "zz", ""]
        # stacked: the same chunk from a dataset that wrote it and one that did not
        st = s2.read_array_across_stacked("f", ["big", "other", "big"], [N - C, N - C], [C, C])
        np.testing.assert_array_equal(st[0], blocks[(N - C, N - C)])
        assert np.isnan(st[1]).all()
        np.testing.assert_array_equal(st[2], st[0])

        stats = {k: d2.array_stats(k) for k in ("f", "i", "s", "one")}
        other_stats = s2.open_dataset("other").array_stats("f")
        fmin = min(float(np.nanmin(v)) for v in [*blocks.values(), part])
        fmax = max(float(np.nanmax(v)) for v in [*blocks.values(), part])
        assert stats["f"] == {"row_count": N * N, "null_count": N * N - written_f + nan_written, "min": fmin, "max": fmax}
        assert stats["i"] == {"row_count": N * N, "null_count": N * N - ipart.size, "min": -3, "max": 66}
        assert stats["s"] == {"row_count": 10**12, "null_count": 10**12 - 4, "min": "a", "max": "\u65e5"}
        assert stats["one"] == {"row_count": N * N, "null_count": N * N, "min": None, "max": None}
        assert other_stats == {"row_count": N * N, "null_count": N * N, "min": None, "max": None}

        size = disk_bytes(path)
        assert size < 4 * C * C * 8, size  # about the 3 chunks written, not 80 GB
        # overwrite a chunk (the old copy is garbage), then compact reclaims it
        d2.write_array("f", [0, 0], np.zeros((C, C)))
        s2.flush()
        grown = disk_bytes(path)
        s2.expire(keep_last=1)
        s2.compact()
        after = disk_bytes(path)
        assert after < grown
        s3 = Atlas.open(path)
        d3 = s3.open_dataset("big")
        assert not d3.read_array("f", [0, 0], [C, C]).any()
        np.testing.assert_array_equal(d3.read_array("f", [50 * C, 73 * C], [C, C]), blocks[(50 * C, 73 * C)])
        np.testing.assert_array_equal(d3.read_array("f", list(part_at), list(part.shape)), part)
        assert d3.array_stats("f")["min"] == 0.0
        assert d3.array_stats("f")["null_count"] == N * N - written_f + nan_written
        assert d3.read_array("s", [10**12 - 2], [2]).tolist() == ["b\u00e9", "a"]
        assert s3.verify() == []
    print(f"\n80 GB logical array: peak RSS growth {mem.growth / 2**20:.0f} MiB, on disk {size / 2**20:.1f} MiB "
          f"(after overwrite {grown / 2**20:.1f}, after compact {after / 2**20:.1f})")
    # nothing proportional to the logical size (80 GB, or even one row of chunks: 800 MB);
    # the data involved is ~32 MB of chunks plus the 8 MB read boxes
    assert mem.growth < 400 * 2**20, f"RSS grew by {mem.growth / 2**20:.0f} MiB"


# ---- shapes at the limits of 64-bit chunk/cell numbering
def _roundtrip_cells(path: Path, fmt: str, shape, chunk, cells) -> None:
    """Define, write one distinct value per cell, flush, reopen and read each cell back; an
    up-front refusal of the shape (ValueError/OverflowError from define_array) is also fine."""
    s = Atlas.create(path, meta_format=fmt)
    d = s.create_dataset("d")
    try:
        d.define_array("a", "int8", [f"d{i}" for i in range(len(shape))], shape, chunk)
    except (ValueError, OverflowError):
        assert d.list_arrays() == []
        return
    one = [1] * len(shape)
    for v, c in enumerate(cells, 1):
        d.write_array("a", c, np.full(one, v, np.int8))
    assert [int(d.read_array("a", c, one).item()) for c in cells] == list(range(1, len(cells) + 1))
    s.flush()
    d2 = Atlas.open(path).open_dataset("d")
    assert [int(d2.read_array("a", c, one).item()) for c in cells] == list(range(1, len(cells) + 1))
    st = d2.array_stats("a")
    assert st["row_count"] == int(np.prod(np.asarray(shape, dtype=object)))
    assert st["null_count"] == st["row_count"] - len(cells)


@pytest.mark.parametrize("fmt", FORMATS)
def test_huge_sparse_shapes_within_int64_chunk_numbering(tmp_path, fmt):
    # 2**60 cells, 2**40 chunks; the far corner and the middle
    _roundtrip_cells(tmp_path / "a", fmt, [2**30, 2**30], [2**10, 2**10], [[0, 0], [2**30 - 1, 2**30 - 1], [2**29, 3]])
    # 2**62 chunks of one cell
    _roundtrip_cells(tmp_path / "b", fmt, [2**31, 2**31], [1, 1], [[0, 0], [2**31 - 1, 2**31 - 1], [1, 0]])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape, chunk", [
    ([2**62, 8], [1, 1]),  # 2**65 cells: chunk ids would wrap around int64 and alias
    ([2**31] * 3, [1, 1, 1]),
    ([10**8] * 3, [10] * 3),  # 10**24 cells
    ([2**63], [1]),  # one dimension past int64
    ([2**40, 2**40], [2**10, 2**10]),  # 2**80 cells: the null count would not fit msgpack's ints either
    ([0, 2**70], [1, 1]),  # no cells, but a size past int64
    ([4], [2**63]),  # a chunk size past int64
])
def test_shapes_past_int64_are_refused_at_define(tmp_path, fmt, shape, chunk):
    """Cell and chunk numbering is int64 throughout: larger shapes get a ValueError up front."""
    path = tmp_path / "s"
    s = Atlas.create(path, meta_format=fmt)
    d = s.create_dataset("d")
    with pytest.raises(ValueError, match=r"2\*\*63"):
        d.define_array("a", "int8", ["y", "x", "z"][:len(shape)], shape, chunk)
    assert d.list_arrays() == []
    d.define_array("ok", "int8", ["x"], [2**62], [2**20])  # just inside the limit
    d.write_array("ok", [2**62 - 2], np.array([7, 8], np.int8))
    s.flush()
    got = Atlas.open(path).open_dataset("d")
    assert got.read_array("ok", [2**62 - 3], [3]).tolist() == [0, 7, 8]
    assert got.array_stats("ok")["row_count"] == 2**62


# =============================================================================================
# 100,000 datasets
# =============================================================================================
N_DATASETS = 100_000


@pytest.mark.parametrize("fmt", FORMATS)
def test_100k_datasets(tmp_path, fmt):
    path = tmp_path / "s"
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[what] = now - t
        t = now

    # a few unicode names among them, in an order that is not sorted
    names = [f"ds{(i * 7919) % N_DATASETS:06d}" + ("-\u00e9\u65e5" if i % 1000 == 0 else "") for i in range(N_DATASETS)]
    assert len(set(names)) == N_DATASETS and names != sorted(names)
    s = Atlas.create(path, meta_format=fmt)
    for i, n in enumerate(names):
        d = s.create_dataset(n)
        d.define_array("v", "int32", ["x"], [4])
        d.write_array("v", [0], np.arange(i, i + 4, dtype=np.int32))
        if i % 10 == 0:
            d.set_attribute("i", i)
    lap("create 100k + write")
    s.flush()
    lap("flush")

    s2 = Atlas.open(path)
    lap("open")
    assert s2.list_datasets() == names
    lap("list_datasets")
    stack = s2.read_array_across_stacked("v", names)
    lap("stacked read of all (N, 4)")
    expected = np.arange(N_DATASETS, dtype=np.int32)[:, None] + np.arange(4, dtype=np.int32)
    np.testing.assert_array_equal(stack, expected)
    rev = names[::-1]
    np.testing.assert_array_equal(s2.read_array_across_stacked("v", rev, [2], [1]), expected[::-1, 2:3])
    lap("stacked read of a box, reversed order")
    some = names[::997]
    assert [a.tolist() for a in s2.read_array_across("v", some)] == expected[::997].tolist()
    d = s2.open_dataset(names[54_321])
    assert d.read_array("v").tolist() == [54_321, 54_322, 54_323, 54_324]
    assert d.array_stats("v") == {"row_count": 4, "null_count": 0, "min": 54_321, "max": 54_324}
    assert s2.open_dataset(names[99_990]).get_attribute("i") == 99_990
    assert s2.list_arrays() == ["v"]
    lap("spot checks")

    # delete a tenth, re-create one of them (it moves to the end), compact
    gone = set(names[::10])
    for n in names[::10]:
        s2.delete_dataset(n)
    back = s2.create_dataset(names[0])
    back.define_array("v", "int32", ["x"], [4])
    back.write_array("v", [0], np.full(4, -1, np.int32))
    lap("delete 10k + recreate one")
    kept = [n for n in names if n not in gone] + [names[0]]
    assert s2.list_datasets() == kept
    before = disk_bytes(path)
    s2.expire(keep_last=1)
    s2.compact()
    lap("compact")
    assert disk_bytes(path) < before

    s3 = Atlas.open(path)
    assert s3.list_datasets() == kept
    lap("reopen")
    stack = s3.read_array_across_stacked("v", kept)
    lap("stacked read of all after compact")
    keep_idx = [i for i in range(N_DATASETS) if i % 10]
    np.testing.assert_array_equal(stack[:-1], expected[keep_idx])
    np.testing.assert_array_equal(stack[-1], [-1] * 4)
    assert not s3.dataset_exists(names[10]) and s3.dataset_exists(names[0])
    with pytest.raises(KeyError):
        s3.read_array_across_stacked("v", [names[1], names[10]])
    assert s3.verify() == []
    lap("verify")
    print(f"\n100k datasets ({fmt}): " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
          + f"; metadata {os.path.getsize(path / 'atlas.meta') / 1e6:.1f} MB")
    assert sum(timings.values()) < 120, timings  # generous: ~12 s on a 2-core VM


def test_writing_into_a_chunk_too_large_to_build_is_refused(tmp_path):
    """A chunk is built whole in memory: writing one cell of an 80 GB one-chunk array must fail
    clearly (before allocating anything), not exhaust the machine; reads and stats still work."""
    s = Atlas.create(tmp_path / "s")
    d = s.create_dataset("d")
    d.define_array("huge", "float64", ["y", "x"], [100_000, 100_000], fill_value=float("nan"))  # one 80 GB chunk
    d.define_array("words", "string", ["x"], [2**29])
    with pytest.raises(ValueError, match="'huge'.*chunk_shape"):
        d.write_array("huge", [5, 5], np.ones((1, 1)))
    with pytest.raises(ValueError, match="'words'.*chunk_shape"):
        d.write_array("words", [0], np.array(["a"], dtype=object))
    d.define_array("ok", "float64", ["y", "x"], [100_000, 100_000], [1000, 1000])
    d.write_array("ok", [5, 5], np.ones((1, 1)))
    s.flush()
    back = Atlas.open(tmp_path / "s").open_dataset("d")
    assert np.isnan(back.read_array("huge", [0, 0], [2, 2])).all()
    assert back.read_array("ok", [5, 5], [1, 1]).tolist() == [[1.0]]
    assert back.array_stats("huge") == {"row_count": 10**10, "null_count": 10**10, "min": None, "max": None}


def test_name_and_box_checks_remembered_or_not_give_the_same_answers():
    """``validate_name`` remembers array/attribute names that passed and ``int_tuple`` takes
    plain lists by a loop: the answers (value, or error class and message) are those of the
    full checks, first time or again."""
    from atlas import _meta
    from atlas._box import int_tuple

    def outcome(fn, *args):
        try:
            return ("ok", fn(*args))
        except Exception as e:  # noqa: BLE001
            return (type(e), str(e))

    names = ["a", "time", "x" * 300, "_a", "a/b", "", ".", "..", "\ud800", "é", 3, None, b"a"]
    for what in ("array", "attribute", "dataset"):
        _meta._VALID_NAMES.clear()
        first = [outcome(_meta.validate_name, n, what) for n in names]
        again = [outcome(_meta.validate_name, n, what) for n in names]
        assert first == again
        assert [r[0] for r in first] == ["ok", "ok", "ok"] + [ValueError] * 6 + ["ok", TypeError, TypeError, TypeError]
        assert ("a" in _meta._VALID_NAMES) is (what != "dataset") and "x" * 300 not in _meta._VALID_NAMES
    boxes = [[0], [1, 2], (3,), [], [-1], [1, -1], [True], [1.0], [np.int64(2)], "ab", 5, [None]]
    got = [outcome(int_tuple, b, "start") for b in boxes]
    assert got[:4] == [("ok", (0,)), ("ok", (1, 2)), ("ok", (3,)), ("ok", ())]
    assert [r[0] for r in got[4:]] == [ValueError, ValueError, TypeError, TypeError, "ok", TypeError, TypeError, TypeError]
    assert got[8] == ("ok", (2,)) and type(got[8][1][0]) is int
    assert outcome(int_tuple, [1, 2], "start", 1)[0] is ValueError


def test_dataset_entry_json_written_directly_equals_the_json_encoders():
    """The json entry of a dataset formats its usual rows (ints, finite floats) directly: the
    text equals the json encoder's over the plain form, whatever the stats hold."""
    import math

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from atlas._meta import ArrayMeta, DatasetMeta, StoreMeta, entry_json
    from atlas._metaio import dumps_entry

    store = StoreMeta("zstd")
    schemas = [ArrayMeta(0, "float32", ("x",), (4,), (4,), float("nan")), ArrayMeta(0, "int64", ("x", "y"), (2, 3), (1, 3)),
               ArrayMeta(0, "string", ("x",), (2,), (2,), "")]
    value = st.one_of(st.none(), st.integers(-2**63, 2**64), st.floats(allow_nan=True, allow_infinity=True),
                      st.booleans(), st.text(max_size=5), st.sampled_from([-0.0, 1e16, 1e-7, 5e-324, np.float64(1.5),
                                                                            np.float32(2.5), np.int64(3), math.pi]))
    stats = st.one_of(st.none(), st.fixed_dictionaries({"null_count": st.one_of(st.integers(0, 2**40), st.just(True)),
                                                        "min": value, "max": value}))
    names = st.text(min_size=1, max_size=6)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(names, st.integers(0, 2), st.integers(0, 2**62), stats), max_size=5),
           st.dictionaries(st.text(max_size=4), st.tuples(st.sampled_from(["int64", "float64", "string", "bool"]),
                                                          value), max_size=2))
    def check(rows, attrs):
        arrays = {}
        for name, sno, aid, s in rows:
            m = schemas[sno].instance(aid)
            arrays[name] = m.with_stats(s)
        ds = DatasetMeta("d", {k: v for k, v in attrs.items()}, arrays)
        try:
            want = dumps_entry(ds.plain(store.schema_number))
        except (TypeError, ValueError) as e:  # not json-encodable (numpy scalars): the same error either way
            with pytest.raises(type(e)):
                entry_json(ds, store.schema_number)
            return
        assert entry_json(ds, store.schema_number) == want

    check()


@settings(max_examples=300, deadline=None)
@given(path=st.text(alphabet="a/.\\b", max_size=12), prefix=st.sampled_from(["", "a/", "arrays/"]))
def test_paths_inside_a_folder_as_split_parts_say(path, prefix):
    """``_inside`` (substring searches between slashes) agrees with splitting the path into parts:
    below ``prefix``, no backslash, and no part empty, ``.`` or ``..``."""
    from atlas._meta import _inside

    parts = path.split("/")
    want = path.startswith(prefix) and "\\" not in path and all(p not in ("", ".", "..") for p in parts)
    assert _inside(path, prefix) == want
