"""Growing and shrinking arrays (resize_array / append_array), padded stacked reads, and flush costs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlas

_NP = {"float32": np.float32, "int16": np.int16, "uint8": np.uint8, "string": object,
       "timestamp_nanoseconds": np.int64}


class ModelArray:
    """What an array should hold: values, which cells were written, and the fill."""

    def __init__(self, dtype: str, shape: tuple[int, ...], fill) -> None:
        self.dtype, self.fill = dtype, fill
        self.default = {"string": "", "timestamp_nanoseconds": np.iinfo(np.int64).min}.get(dtype, 0) if fill is None else fill
        self.data = np.full(shape, self.default, dtype=_NP[dtype])
        self.written = np.zeros(shape, bool)

    def resize(self, shape: tuple[int, ...]) -> None:
        data = np.full(shape, self.default, dtype=_NP[self.dtype])
        written = np.zeros(shape, bool)
        box = tuple(slice(0, min(a, b)) for a, b in zip(self.data.shape, shape))
        data[box] = self.data[box]
        written[box] = self.written[box]
        self.data, self.written = data, written

    def write(self, start, vals) -> None:
        box = tuple(slice(s, s + n) for s, n in zip(start, vals.shape))
        self.data[box] = vals
        self.written[box] = True

    def stats(self) -> tuple[int, int, object, object]:
        vals = self.data[self.written]
        if self.fill is not None:
            vals = vals[vals != self.fill]
        if vals.size == 0:
            return self.data.size, self.data.size, None, None
        return self.data.size, self.data.size - vals.size, min(vals.tolist()), max(vals.tolist())


def _values(dtype: str, shape, seed: int) -> np.ndarray:
    n = int(np.prod(shape))
    base = (np.arange(n) * 7 + seed * 13) % 97 + 1
    if dtype == "string":
        return np.array([f"v{x}" for x in base.tolist()], dtype=object).reshape(shape)
    return base.astype(_NP[dtype]).reshape(shape)


def _user(dtype: str, arr: np.ndarray) -> np.ndarray:
    return arr.view("datetime64[ns]") if dtype == "timestamp_nanoseconds" else arr


def _check(ds, name: str, model: ModelArray, flushed: bool, where: str) -> None:
    got = ds.read_array(name)
    assert ds.array_meta(name)["shape"] == list(model.data.shape), where
    np.testing.assert_array_equal(got, _user(model.dtype, model.data), err_msg=where)
    if flushed:
        s = ds.array_stats(name)
        rc, nc, mn, mx = model.stats()
        assert (s["row_count"], s["null_count"]) == (rc, nc), f"{where}: {s} vs {(rc, nc, mn, mx)}"
        if model.dtype == "timestamp_nanoseconds":
            mn = None if mn is None else np.datetime64(mn, "ns")
            mx = None if mx is None else np.datetime64(mx, "ns")
        assert (s["min"], s["max"]) == (mn, mx), f"{where}: {s} vs {(rc, nc, mn, mx)}"


_op = st.one_of(
    st.tuples(st.just("resize"), st.lists(st.integers(0, 9), min_size=2, max_size=2)),
    st.tuples(st.just("append"), st.integers(0, 1), st.integers(1, 4), st.integers(0, 99)),
    st.tuples(st.just("write"), st.lists(st.integers(0, 8), min_size=2, max_size=2),
              st.lists(st.integers(1, 3), min_size=2, max_size=2), st.integers(0, 99)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=int(os.environ.get("ATLAS_APPEND_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["float32", "int16", "string", "timestamp_nanoseconds", "uint8"]),
       fill=st.booleans(), shape=st.lists(st.integers(0, 6), min_size=2, max_size=2),
       chunk=st.lists(st.integers(1, 4), min_size=2, max_size=2), ops=st.lists(_op, max_size=12))
def test_resize_append_against_numpy_model(tmp_path_factory, dtype, fill, shape, chunk, ops):
    path = str(tmp_path_factory.mktemp("s") / "store")
    a = atlas.Atlas.create(path)
    ds = a.create_dataset("d")
    fv = {"string": "-", "float32": -1.0, "int16": -1, "uint8": 255, "timestamp_nanoseconds": 5}[dtype] if fill else None
    ds.define_array("x", dtype, ["i", "j"], shape, chunk, fv)
    model = ModelArray(dtype, tuple(shape), fv)
    flushed = False
    for k, op in enumerate(ops):
        where = f"op {k} {op[:3]}"
        if op[0] == "resize":
            ds.resize_array("x", op[1])
            model.resize(tuple(op[1]))
            flushed = False
        elif op[0] == "append":
            _, axis, n, seed = op
            sh = list(model.data.shape)
            sh[axis] = n
            vals = _values(dtype, sh, seed)
            ds.append_array("x", _user(dtype, vals), axis=axis)
            start = [0, 0]
            start[axis] = model.data.shape[axis]
            model.resize(tuple(s + (n if d == axis else 0) for d, s in enumerate(model.data.shape)))
            model.write(start, vals)
            flushed = False
        elif op[0] == "write":
            _, start, count, seed = op
            count = [max(0, min(c, s - st_)) for c, s, st_ in zip(count, model.data.shape, start)]
            if any(st_ > s for st_, s in zip(start, model.data.shape)) or 0 in count:
                continue
            vals = _values(dtype, count, seed)
            ds.write_array("x", start, _user(dtype, vals))
            model.write(start, vals)
            flushed = False
        elif op[0] == "flush":
            a.flush()
            flushed = True
        else:
            a.flush()
            a = atlas.Atlas.open(path)
            ds = a.open_dataset("d")
            flushed = True
        _check(ds, "x", model, flushed, where)
    a.flush()
    _check(ds, "x", model, True, "end")
    assert a.verify() == []
    a.compact()
    b = atlas.Atlas.open(path)
    _check(b.open_dataset("d"), "x", model, True, "after compact")
