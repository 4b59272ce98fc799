"""Atlas.catalog() and Atlas.query(): checked against a brute-force scan through the per-dataset API."""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlas
from atlas.errors import CorruptStoreError
from atlas.storage import LocalStorage

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
T0 = np.datetime64("2020-01-01", "ns")
HOUR = np.timedelta64(3600 * 10**9, "ns")


class CountingStorage(LocalStorage):
    """Local storage that counts every request made to it."""

    def __init__(self, root, *, create=False):
        super().__init__(root, create=create)
        self.calls: list[tuple[str, str]] = []

    def read(self, path):
        self.calls.append(("read", path))
        return super().read(path)

    def read_ranges(self, path, starts, ends):
        self.calls.append(("read_ranges", path))
        return super().read_ranges(path, starts, ends)

    def exists(self, path):
        self.calls.append(("exists", path))
        return super().exists(path)

    def list(self, prefix=""):
        self.calls.append(("list", prefix))
        return super().list(prefix)


# ------------------------------------------------------------------------------- brute force
def _missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, np.datetime64) and np.isnat(v))


def brute_rows(store):
    """``{dataset: {column: python value or None}}`` from get_attribute / array_stats / array_meta."""
    out = {}
    for name in store.list_datasets():
        ds = store.open_dataset(name)
        row = {k: v for k, v in ds.attributes().items() if not k.startswith("_")}
        for a in ds.list_arrays():
            s = ds.array_stats(a)
            m = ds.array_meta(a)
            row[f"{a}.row_count"] = int(np.prod(m["shape"], dtype=np.int64))
            row[f"{a}.shape"] = tuple(m["shape"])
            row[f"{a}.min"] = None if s is None else s["min"]
            row[f"{a}.max"] = None if s is None else s["max"]
            row[f"{a}.null_count"] = None if s is None else s["null_count"]
        out[name] = {k: (None if _missing(v) else v) for k, v in row.items()}
    return out


def _cell(v):
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, pd.Timestamp):
        return np.datetime64(v.value, "ns")
    if isinstance(v, np.generic) and not isinstance(v, np.datetime64):
        return v.item()
    return v


def assert_matches_brute_force(store, df):
    rows = brute_rows(store)
    assert list(df.index) == store.list_datasets()
    cols = set(df.columns)
    for name, row in rows.items():
        assert set(row) <= cols, (name, set(row) - cols)
        for c in cols:
            got, want = _cell(df.at[name, c]), row.get(c)
            if isinstance(want, np.generic) and not isinstance(want, np.datetime64):
                want = want.item()
            assert (got is None and want is None) or got == want, (name, c, got, want)


# ------------------------------------------------------------------------------- fixtures
def _make(path, meta_format="json"):
    st_ = atlas.Atlas.create(path, meta_format=meta_format)
    rng = np.random.default_rng(5)
    for i in range(6):
        ds = st_.create_dataset(f"d{i}")
        ds.set_attribute("platform", ["BO", "GL"][i % 2])
        if i != 3:
            ds.set_attribute("month", i + 1)
        ds.set_attribute("depth", float(i) if i != 2 else float("nan"))
        ds.set_attribute("good", i % 3 == 0)
        ds.set_attribute("start", T0 + i * 24 * HOUR)
        ds.set_attribute("temperature.units", "degC")
        ds.define_array("time", "timestamp_ns", ["obs"], [4])
        ds.write_array("time", [0], T0 + (np.arange(4) + 24 * i) * HOUR)
        ds.define_array("temperature", "float32", ["obs"], [4], fill_value=float("nan"))
        vals = rng.normal(20, 10, 4).astype(np.float32)
        if i == 4:
            vals[:] = np.nan  # all null: no min/max
        ds.write_array("temperature", [0], vals)
        if i < 4:
            ds.define_array("count", "int16", ["obs"], [4])
            ds.write_array("count", [0], np.arange(4, dtype=np.int16) - i)
        if i == 1:
            ds.define_array("label", "string", ["obs"], [2])
            ds.write_array("label", [0], np.array(["b", "a"], dtype=object))
    st_.flush()
    return st_


@pytest.fixture
def store(tmp_path):
    return _make(str(tmp_path / "s"))


# ------------------------------------------------------------------------------- catalog
@pytest.mark.parametrize("meta_format", ["json", "msgpack"])
def test_catalog_equals_brute_force_and_has_typed_columns(tmp_path, meta_format):
    s = _make(str(tmp_path / "s"), meta_format)
    s = atlas.Atlas.open(str(tmp_path / "s"))  # every dataset undecoded
    df = s.catalog()
    assert df.index.name == "dataset"
    assert list(df.columns[:6]) == ["platform", "month", "depth", "good", "start", "temperature.units"]
    want = {"platform": "str", "month": "Int64", "depth": "float64", "good": "boolean", "start": "datetime64[ns]",
            "time.min": "datetime64[ns]", "time.max": "datetime64[ns]", "temperature.min": "float64",
            "count.min": "Int64", "count.null_count": "Int64", "count.row_count": "Int64", "label.max": "str",
            "count.shape": "object"}
    assert {c: str(df[c].dtype) for c in want} == want
    assert df["month"].isna().tolist() == [False, False, False, True, False, False]
    assert df["count.row_count"].isna().tolist() == [False] * 4 + [True] * 2
    assert df.at["d4", "temperature.null_count"] == 4 and pd.isna(df.at["d4", "temperature.min"])
    # the catalog left the datasets undecoded (a later flush writes their strings back as they were)
    assert all(isinstance(v, (str, bytes)) for _, v in s._state.meta.datasets.raw_items())
    assert_matches_brute_force(s, df)


def test_catalog_reads_no_chunk(tmp_path):
    path = str(tmp_path / "s")
    _make(path)
    storage = CountingStorage(path)
    s = atlas.Atlas.open(storage)
    assert [c[0] for c in storage.calls] == ["read"]  # the metadata file
    storage.calls.clear()
    df = s.catalog()
    assert len(df) == 6
    assert s.query("`temperature.max` > 0 and month >= 2") != []
    # a store this small has no catalog file; a big one reads its catalog file once (test_catalog_table)
    assert storage.calls == []


def test_restricted_columns(store):
    df = store.catalog(arrays=["count"], attributes=["month", "platform"])
    assert list(df.columns) == ["month", "platform", "count.min", "count.max", "count.null_count",
                                "count.row_count", "count.shape"]
    assert list(store.catalog(arrays=[], attributes=[]).columns) == []
    assert len(store.catalog(arrays=[], attributes=[])) == 6
    with pytest.raises(ValueError, match="'nope'"):
        store.catalog(arrays=["nope"])
    with pytest.raises(ValueError, match="'colour'"):
        store.catalog(attributes=["colour"])
    with pytest.raises(TypeError, match="list of names"):
        store.catalog(arrays="count")


def test_variable_attributes_are_columns_and_reserved_ones_hidden(tmp_path):
    xr = pytest.importorskip("xarray")
    s = atlas.Atlas.create(str(tmp_path / "s"))
    ds = xr.Dataset({"sst": ("t", np.arange(3.0), {"units": "K", "valid_max": 40.0})}, attrs={"cruise": "C1"})
    s.add_xr_dataset(ds, "x")
    s.flush()
    df = s.catalog()
    assert df.at["x", "sst.units"] == "K" and df.at["x", "sst.valid_max"] == 40.0 and df.at["x", "cruise"] == "C1"
    assert not [c for c in df.columns if c.startswith("_")]
    assert s.query("`sst.units` == 'K' and `sst.max` == 2") == ["x"]


def test_attribute_named_like_a_stats_column_is_renamed(store):
    store.open_dataset("d0").set_attribute("count.max", "an attribute")
    df = store.catalog()
    assert df.at["d0", "attr:count.max"] == "an attribute"
    assert df.at["d0", "count.max"] == 3
    assert store.query("`attr:count.max` == 'an attribute'") == ["d0"]


def test_mixed_kinds_become_object_columns(store):
    store.open_dataset("d1").set_attribute("platform", 7)
    store.open_dataset("d2").define_array("mixed", "int32", ["x"], [1])
    store.open_dataset("d3").define_array("mixed", "string", ["x"], [1])
    store.open_dataset("d2").write_array("mixed", [0], np.array([5], np.int32))
    store.open_dataset("d3").write_array("mixed", [0], np.array(["q"], object))
    store.flush()
    df = store.catalog()
    assert df["platform"].dtype == object and df.at["d1", "platform"] == 7
    assert df.at["d2", "mixed.max"] == 5 and df.at["d3", "mixed.max"] == "q"
    assert store.query("platform == 'GL'") == ["d3", "d5"]  # d1's 7 is not a string: unknown, no match
    assert store.query("platform == 7") == ["d1"]
    assert store.query("`mixed.min` == 'q'") == ["d3"]
    assert_matches_brute_force(store, df)


def test_golden_stores_catalog_and_query(tmp_path):
    for name in ("v1_json", "v1_msgpack_lz4", "v1_uncompressed", "v2_json"):
        path = tmp_path / name
        shutil.copytree(os.path.join(HERE, name), path)
        s = atlas.Atlas.open(path)
        df = s.catalog()
        assert_matches_brute_force(s, df)
        assert str(df["scalar.max"].dtype) == "UInt64" and df.at["alpha", "scalar.max"] == 2**63 + 5
        assert s.query("`scalar.max` > 9223372036854775807") == ["alpha"]
        assert s.query("when >= '2020-02-29' or site == 'KNMI'") == ["alpha", "beta"]


# ------------------------------------------------------------------------------- pending changes
def test_pending_changes_and_cache(store):
    df0 = store.catalog()
    d0 = store.open_dataset("d0")
    d0.set_attribute("month", 11)  # attributes: as set
    d0.write_array("count", [0], np.array([100, 100, 100, 100], np.int16))  # stats: as of the last flush
    d0.define_array("extra", "float64", ["x"], [5])
    store.delete_dataset("d5")
    store.create_dataset("new")
    df = store.catalog()
    assert df.at["d0", "month"] == 11 and df0.at["d0", "month"] == 1
    assert df.at["d0", "count.max"] == 3
    assert df.at["d0", "extra.row_count"] == 5 and pd.isna(df.at["d0", "extra.min"])
    assert list(df.index) == ["d0", "d1", "d2", "d3", "d4", "new"]
    assert_matches_brute_force(store, df)
    assert store.query("month == 11") == ["d0"]
    store.flush()
    assert store.catalog().at["d0", "count.max"] == 100
    assert store.query("`count.min` == 100") == ["d0"]
    d0.delete_array("extra")
    assert "extra.min" not in store.catalog().columns


def test_returned_frame_is_a_copy(store):
    df = store.catalog()
    df.loc["d0", "month"] = 99
    df["temperature.max"] = 0.0
    assert store.catalog().at["d0", "month"] == 1
    assert store.query("month == 99") == []


# ------------------------------------------------------------------------------- queries
def test_query_examples_feed_the_bulk_reads(store):
    names = store.query("platform == 'BO' and month >= 2 and `time.min` >= '2020-01-02'")
    assert names == ["d2", "d4"]
    stacked = store.read_array_across_stacked("temperature", names)
    assert stacked.shape == (2, 4)
    assert [a is None for a in store.read_array_across("count", names)] == [False, True]
    same_schema = store.query("`count.row_count` == 4 and platform == 'BO'")
    xr_ds = store.to_xarray_many(same_schema)
    assert list(xr_ds["dataset"].values) == same_schema == ["d0", "d2"]
    assert store.query("platform in ['GL', 'XX'] and not good") == ["d1", "d5"]
    assert store.query("`count.max` - `count.min` == 3 and 1 < month <= 3") == ["d1", "d2"]
    assert store.query("'2020-01-03' <= `time.min`") == ["d2", "d3", "d4", "d5"]


def test_query_missing_values_never_match(store):
    assert "d3" not in store.query("month != 99")
    assert "d3" not in store.query("not (month == 4)")
    assert store.query("month.isna()") == ["d3"]
    assert store.query("month.notna() and month < 3") == ["d0", "d1"]
    assert store.query("month == 4 or platform == 'GL'") == ["d1", "d3", "d5"]  # True or unknown is True
    assert store.query("depth != 2") == ["d0", "d1", "d3", "d4", "d5"]  # NaN depth: missing
    assert store.query("`count.min` > -10") == ["d0", "d1", "d2", "d3"]


@pytest.mark.parametrize("expr,culprit", [
    ("colour == 'red'", "'colour'"),
    ("`temperature.mean` > 3", "'temperature.mean'"),
    ("temperature.max > 3", "temperature.max"),
    ("month >=", "not a valid expression"),
    ("`month > 3", "unclosed backtick"),
    ("month", "not a condition"),
    ("`time.min` > 5", "ISO strings"),
    ("`time.min` > 'yesterday-ish'", "not an ISO timestamp"),
    ("platform > 3", "platform"),
    ("month in platform", "list of literals"),
    ("month.max() > 1", "unsupported call"),
    ("month == None", "unsupported literal"),
    ("platform + 1 > 2", "arithmetic needs numbers"),
    ("", "empty"),
])
def test_bad_queries_raise_value_error_naming_the_culprit(store, expr, culprit):
    with pytest.raises(ValueError) as e:
        store.query(expr)
    assert culprit in str(e.value)
    assert store.query("month == 1") == ["d0"]  # the store stays usable


def test_query_needs_a_str(store):
    with pytest.raises(TypeError):
        store.query(3)  # type: ignore[arg-type]


def test_empty_store(tmp_path):
    s = atlas.Atlas.create(str(tmp_path / "e"))
    assert s.catalog().shape == (0, 0)
    with pytest.raises(ValueError, match="unknown column 'x'"):
        s.query("x > 1")


def test_malformed_metadata_names_the_dataset(store):
    for blob in ('[{"month":["int64","one"]},{}]', '{}],[{}', '[{},{"x":[1,999,null]}]'):
        dict.__setitem__(store._state.meta.datasets, "d2", blob)  # damage the metadata in memory
        store._state.txn.touched.add("d2")  # as a pending edit of d2 (a committed catalog file would not see it)
        store._state.txn.edits += 1
        with pytest.raises(CorruptStoreError, match="'d2'"):
            store.catalog()


# ------------------------------------------------------------------------------- hypothesis
KINDS = ("int", "float", "str", "bool", "time")
OPS = ("==", "!=", "<", "<=", ">", ">=")


def _literal(kind, draw):
    if kind == "int":
        return draw(st.integers(-3, 3))
    if kind == "float":
        return draw(st.sampled_from([-1.5, 0.0, 0.5, 2.0]))
    if kind == "str":
        return draw(st.sampled_from(["a", "b", "c"]))
    if kind == "bool":
        return draw(st.booleans())
    return str(T0 + draw(st.integers(-2, 4)) * 24 * HOUR)


def _attr_value(kind, lit):
    return {"time": lambda v: np.datetime64(v, "ns")}.get(kind, lambda v: v)(lit)


@st.composite
def catalogs(draw):
    n = draw(st.integers(1, 6))
    attr_kinds = {k: draw(st.sampled_from(KINDS)) for k in ("p", "q.r")}
    datasets = []
    for _ in range(n):
        attrs = {k: _attr_value(kd, _literal(kd, draw)) for k, kd in attr_kinds.items() if draw(st.booleans())}
        if "p" in attrs and attr_kinds["p"] == "float" and draw(st.integers(0, 5)) == 0:
            attrs["p"] = float("nan")
        x = draw(st.one_of(st.none(), st.lists(st.sampled_from([-2.0, 0.0, 1.0, 3.0, float("nan")]),
                                               min_size=3, max_size=3)))
        t = draw(st.one_of(st.none(), st.lists(st.integers(-2, 4), min_size=2, max_size=2)))
        flushed = draw(st.booleans())
        datasets.append((attrs, x, t, flushed))
    columns = {"p": attr_kinds["p"], "q.r": attr_kinds["q.r"], "x.min": "float", "x.max": "float",
               "x.null_count": "int", "t.min": "time", "t.max": "time", "t.row_count": "int"}
    return datasets, columns


@st.composite
def expressions(draw, columns, depth=0):
    """``(text, fn(row) -> True/False/None, columns used)`` with SQL's three-valued logic."""
    choice = draw(st.integers(0, 5 if depth < 2 else 2))
    if choice <= 2:
        col = draw(st.sampled_from(sorted(columns)))
        kind = columns[col]
        name = f"`{col}`" if "." in col else col
        if choice == 1:
            lits = [_literal(kind, draw) for _ in range(draw(st.integers(1, 3)))]
            neg = draw(st.booleans())

            def fn_in(row, col=col, lits=lits, kind=kind, neg=neg):
                v = row.get(col)
                if v is None:
                    return None
                hit = any(v == _attr_value(kind, x) for x in lits)
                return (not hit) if neg else hit
            return f"{name} {'not in' if neg else 'in'} {lits!r}", fn_in, {col}
        if choice == 2:
            isna = draw(st.booleans())
            return (f"{name}.{'isna' if isna else 'notna'}()",
                    lambda row, col=col, isna=isna: (row.get(col) is None) == isna, {col})
        op = draw(st.sampled_from(OPS if kind != "bool" else ("==", "!=")))
        lit = _literal(kind, draw)
        flip = draw(st.booleans())  # literal on the left

        def fn(row, col=col, op=op, lit=lit, kind=kind):
            v = row.get(col)
            if v is None:
                return None
            return bool(eval(f"a {op} b", {}, {"a": v, "b": _attr_value(kind, lit)}))  # noqa: S307 - test oracle
        if flip:
            mirrored = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
            return f"{lit!r} {mirrored} {name}", fn, {col}
        return f"{name} {op} {lit!r}", fn, {col}
    if choice == 3:
        text, fn, used = draw(expressions(columns, depth + 1))
        word = draw(st.sampled_from(["not", "~"]))
        return f"{word} ({text})", (lambda row, fn=fn: None if fn(row) is None else not fn(row)), used
    a_text, a, ua = draw(expressions(columns, depth + 1))
    b_text, b, ub = draw(expressions(columns, depth + 1))
    if choice == 4:
        word = draw(st.sampled_from(["and", "&"]))

        def fn_and(row, a=a, b=b):
            x, y = a(row), b(row)
            if x is False or y is False:
                return False
            return None if x is None or y is None else True
        return f"({a_text}) {word} ({b_text})", fn_and, ua | ub
    word = draw(st.sampled_from(["or", "|"]))

    def fn_or(row, a=a, b=b):
        x, y = a(row), b(row)
        if x is True or y is True:
            return True
        return None if x is None or y is None else False
    return f"({a_text}) {word} ({b_text})", fn_or, ua | ub


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_query_equals_brute_force_scan(data):
    datasets, columns = data.draw(catalogs())
    tmp = tempfile.mkdtemp(prefix="atlas-cat-")
    try:
        s = atlas.Atlas.create(os.path.join(tmp, "s"))
        later = []
        for i, (attrs, x, t, flushed) in enumerate(datasets):
            ds = s.create_dataset(f"n{i}")
            for k, v in attrs.items():
                ds.set_attribute(k, v)
            if x is not None:
                ds.define_array("x", "float64", ["i"], [3], fill_value=float("nan"))
                if flushed:
                    ds.write_array("x", [0], np.array(x))
                else:
                    later.append((ds, np.array(x)))
            if t is not None:
                ds.define_array("t", "timestamp_ns", ["i"], [2])
                ds.write_array("t", [0], T0 + np.array(t) * 24 * HOUR)
        s.flush()
        for ds, x in later:  # written after the flush: the catalog keeps the flushed stats
            ds.write_array("x", [0], x)
        rows = brute_rows(s)
        assert_matches_brute_force(s, s.catalog())
        present = {c for r in rows.values() for c in r}
        for _ in range(8):
            text, fn, used = data.draw(expressions(columns))
            if not used <= present:  # a column no dataset has
                with pytest.raises(ValueError, match="unknown column"):
                    s.query(text)
                continue
            want = [n for n, r in rows.items() if fn(r) is True]
            assert s.query(text) == want, text
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------- command line
def test_cli_ls_where_and_catalog(store, tmp_path, capsys):
    import io
    import json

    from atlas.cli import main

    path = str(tmp_path / "s")
    assert main(["ls", path, "--where", "platform == 'GL' and month >= 2"]) == 0
    assert capsys.readouterr().out.split() == ["d1", "d5"]  # d3 has no month: no match
    assert main(["ls", path, "--where", "mnth > 1"]) == 1
    err = capsys.readouterr().err
    assert "unknown column 'mnth'" in err and "Traceback" not in err
    assert main(["catalog", path, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(rows) == store.list_datasets()
    assert rows["d3"]["month"] is None and rows["d0"]["time.min"] == "2020-01-01T00:00:00"
    assert rows["d0"]["count.shape"] == [4]
    assert main(["catalog", path, "--csv", "--where", "month == 2"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col=0)
    assert list(df.index) == ["d1"] and df.at["d1", "platform"] == "GL"
    assert main(["catalog", path]) == 0
    out = capsys.readouterr().out
    assert "temperature.max" in out and "d5" in out
    assert main(["catalog", path, "--csv", "--json"]) == 2  # one format at a time
