"""The Numba kernels and their NumPy versions for small calls (atlas._small) against plain-NumPy
references (tests/reference.py) and against each other, the rule choosing between them, and
the public API end to end (both ways) against a NumPy model of the array."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import from_dtype

import atlas
from atlas import _small
from atlas._kernels import gather, grid, stats
from atlas._lazy import K

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

NUMERIC = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"]
TS = "timestamp_nanoseconds"
NAT = int(np.iinfo(np.int64).min)
I64 = st.integers(-(2**63), 2**63 - 1)

#: every entry point of the engine, as the Numba kernel and as its NumPy version for small calls
IMPL = {"kernel": {"plan_box": grid.plan_box, "valid_shapes": grid.valid_shapes, "lookup": grid.lookup,
                   "copy_boxes": gather.copy_boxes, "chunk_stats": stats.chunk_stats,
                   "chunk_stats_masked": stats.chunk_stats_masked},
        "numpy": {name: small for name, (_, small) in _small.SMALL.items()}}
PATHS = pytest.mark.parametrize("path", ["kernel", "numpy"])


def test_every_engine_entry_point_has_both_versions():
    assert set(IMPL["numpy"]) == set(IMPL["kernel"])


def storage_dtype(kind: str) -> np.dtype:
    return np.dtype(np.int64) if kind == TS else np.dtype(kind)


def specials(kind: str) -> list:
    """Edge values of a storage dtype (as dtype scalars)."""
    dt = storage_dtype(kind)
    t = dt.type
    if dt.kind == "f":
        fi = np.finfo(dt)
        return [t(0.0), t(-0.0), t(1.0), t(-1.0), t(np.nan), t(np.inf), t(-np.inf), fi.max, fi.min, fi.tiny]
    ii = np.iinfo(dt)
    out = [t(0), t(1), t(ii.min), t(ii.max), t(ii.max - 1)]
    if dt.kind == "i":
        out += [t(-1), t(ii.min + 1)]
    if kind == TS:
        out.append(t(NAT))
    return out


def values(kind: str):
    dt = storage_dtype(kind)
    return st.one_of(st.sampled_from(specials(kind)), from_dtype(dt).map(dt.type))


@st.composite
def value_pool(draw, kind, extra=()):
    """A small pool of values the data is drawn from (so repeats, fill hits and NaNs are common)."""
    pool = draw(st.lists(values(kind), min_size=1, max_size=6))
    pool += [v for v in extra if v is not None]
    return np.asarray(pool, dtype=storage_dtype(kind))


def data_from_pool(pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pool[rng.integers(0, len(pool), size)] if size else pool[:0].copy()


@st.composite
def fill_choice(draw, kind, allow_none=True):
    """A fill value as given to define_array (Python scalar), or None."""
    dt = storage_dtype(kind)
    opts = [None, 0] if allow_none else [0]
    if dt.kind == "f":
        opts += [math.nan, -0.0, float(np.finfo(dt).max), -math.inf]
    else:
        ii = np.iinfo(dt)
        opts += [int(ii.max), int(ii.min)]
        if kind == TS:
            opts.append(NAT)
    # edge fills twice as likely as arbitrary values of the dtype
    f = draw(st.one_of(st.sampled_from(opts), st.sampled_from(opts), values(kind).map(lambda v: v.item())))
    if f is not None and dt.kind == "f" and kind == "float32" and math.isfinite(f):
        f = float(np.float32(f))
    return f


def kernel_fill_args(kind: str, fill):
    """Arguments ``(has_fill, fill, fill_is_nan, skip_nan, skip_value, skip)`` the way atlas._stats passes them."""
    dt = storage_dtype(kind)
    fv = dt.type(0 if fill is None else fill)
    fill_is_nan = dt.kind == "f" and bool(np.isnan(fv))
    is_ts = kind == TS
    skip = dt.type(NAT) if is_ts else dt.type(0)
    return fill is not None, fv, fill_is_nan, dt.kind == "f", is_ts, skip


# ---------------------------------------------------------------------------- grid kernels
@st.composite
def grid_case(draw, min_count=0):
    nd = draw(st.integers(1, 4))
    maxd = {1: 40, 2: 12, 3: 7, 4: 5}[nd]
    shape = [draw(st.integers(0, maxd)) for _ in range(nd)]
    chunk = [draw(st.one_of(st.integers(1, 3), st.integers(1, maxd + 2))) for _ in range(nd)]  # many chunks, or few
    start, count = [], []
    for s in shape:
        a = draw(st.one_of(st.just(0), st.integers(0, s)))
        start.append(a)
        count.append(draw(st.one_of(st.just(s - a), st.integers(min(min_count, s - a), s - a))))
    a64 = lambda x: np.asarray(x, np.int64)  # noqa: E731
    return a64(shape), a64(chunk), a64(start), a64(count)


@PATHS
@settings(max_examples=40, deadline=None)
@given(case=grid_case())
def test_plan_box_matches_reference(case, path):
    shape, chunk, start, count = case
    got = IMPL[path]["plan_box"](shape, chunk, start, count)
    exp = ref.plan_box(shape, chunk, start, count)
    for name, g, e in zip(("chunk_ids", "src_start", "dst_start", "box"), got, exp):
        assert g.dtype == np.int64, name
        np.testing.assert_array_equal(g, e, err_msg=name)
    # the pieces tile the box exactly
    assert int(got[3].prod(axis=1).sum()) == int(np.prod(count))


@PATHS
@settings(max_examples=40, deadline=None)
@given(case=grid_case(), data=st.data())
def test_valid_shapes_matches_reference(case, data, path):
    shape, chunk, start, count = case
    valid_shapes = IMPL[path]["valid_shapes"]
    ng = math.prod(ref._grid(shape, chunk))
    ids = np.asarray(data.draw(st.lists(st.integers(0, max(ng - 1, 0)), max_size=8)) if ng else [], np.int64)
    got = valid_shapes(shape, chunk, ids)
    assert got.dtype == np.int64 and got.shape == (len(ids), len(shape))
    np.testing.assert_array_equal(got, ref.valid_shapes(shape, chunk, ids))
    every = np.arange(ng, dtype=np.int64)
    v = valid_shapes(shape, chunk, every)
    np.testing.assert_array_equal(v, ref.valid_shapes(shape, chunk, every))
    assert int(v.prod(axis=1).sum()) == int(np.prod(shape))  # the chunks tile the array
    ids2, _, _, _ = IMPL[path]["plan_box"](shape, chunk, start, count)
    np.testing.assert_array_equal(valid_shapes(shape, chunk, ids2), ref.valid_shapes(shape, chunk, ids2))


@st.composite
def lookup_case(draw):
    small = st.integers(-3, 6)
    key_el = st.one_of(small, I64)
    keys = sorted(set(draw(st.lists(st.tuples(key_el, key_el), max_size=30))))
    present = [draw(st.sampled_from(keys)) for _ in range(draw(st.integers(0, 10)))] if keys else []
    absent = draw(st.lists(st.tuples(key_el, key_el), max_size=10))
    queries = present + absent
    queries = draw(st.permutations(queries))
    ka = np.asarray([k[0] for k in keys], np.int64)
    kb = np.asarray([k[1] for k in keys], np.int64)
    qa = np.asarray([q[0] for q in queries], np.int64)
    qb = np.asarray([q[1] for q in queries], np.int64)
    return ka, kb, qa, qb


@PATHS
@settings(max_examples=40, deadline=None)
@given(case=lookup_case())
def test_lookup_matches_reference(case, path):
    ka, kb, qa, qb = case
    got = IMPL[path]["lookup"](ka, kb, qa, qb)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref.lookup(ka, kb, qa, qb))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(0, 80), st.integers(0, 2**32 - 1))
def test_lookup_long_runs_numpy_equals_kernel(n_first, run, seed):
    """Runs of equal first keys longer than the NumPy version scans at once (it bisects them)."""
    rng = np.random.default_rng(seed)
    ka = np.repeat(np.arange(n_first, dtype=np.int64), run)
    kb = np.concatenate([np.sort(rng.choice(1000, run, replace=False)) for _ in range(n_first)]).astype(np.int64)
    qa = rng.integers(-1, n_first + 1, 40).astype(np.int64)
    qb = np.where(rng.random(40) < 0.5, rng.integers(0, 1000, 40), kb[rng.integers(0, max(len(kb), 1), 40)]
                  if len(kb) else 0).astype(np.int64)
    got = _small.lookup(ka, kb, qa, qb)
    np.testing.assert_array_equal(got, grid.lookup(ka, kb, qa, qb))
    np.testing.assert_array_equal(got, ref.lookup(ka, kb, qa, qb))


# ---------------------------------------------------------------------------- copy_boxes
@st.composite
def copy_case(draw, kind):
    dt = np.dtype(kind)
    isz = dt.itemsize
    nd = draw(st.integers(1, 4))
    maxd = {1: 9, 2: 6, 3: 4, 4: 3}[nd]
    dim = st.integers(0, maxd)
    dst_shape = [draw(dim) for _ in range(nd)]
    n = draw(st.integers(0, 4))
    src_shape, src_start, dst_start, box = [], [], [], []
    for _ in range(n):
        ss = [draw(dim) for _ in range(nd)]
        s0, d0, b = [], [], []
        for d in range(nd):
            a = draw(st.one_of(st.just(0), st.integers(0, ss[d])))
            c = draw(st.one_of(st.just(0), st.integers(0, dst_shape[d])))
            s0.append(a)
            d0.append(c)
            top = min(ss[d] - a, dst_shape[d] - c)
            b.append(draw(st.one_of(st.just(top), st.integers(0, top))))
        src_shape.append(ss)
        src_start.append(s0)
        dst_start.append(d0)
        box.append(b)
    # source blocks back to back with random byte gaps (offsets need not be aligned)
    src_off, pos = [], 0
    for ss in src_shape:
        pos += draw(st.integers(0, 2 * isz))
        src_off.append(pos)
        pos += math.prod(ss) * isz
    src_len = pos + draw(st.integers(0, isz))
    nblocks = draw(st.integers(1, 3))
    dbytes = math.prod(dst_shape) * isz
    base = draw(st.integers(0, isz))
    dst_off = [base + draw(st.integers(0, nblocks - 1)) * dbytes for _ in range(n)]
    dst_len = base + nblocks * dbytes + draw(st.integers(0, isz))
    pool = draw(value_pool(kind))
    seed = draw(st.integers(0, 2**32 - 1))
    nsrc = -(-src_len // isz)
    src = data_from_pool(pool, nsrc, seed).view(np.uint8)[:src_len].copy()
    dst = np.random.default_rng(seed + 1).integers(0, 256, dst_len, dtype=np.uint8)
    a2 = lambda x: np.asarray(x, np.int64).reshape(n, nd)  # noqa: E731
    return (src, np.asarray(src_off, np.int64), a2(src_shape), a2(src_start), dst, np.asarray(dst_off, np.int64),
            np.asarray(dst_shape, np.int64), a2(dst_start), a2(box), isz)


@PATHS
@pytest.mark.parametrize("kind", NUMERIC)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_copy_boxes_matches_reference(kind, data, path):
    case = data.draw(copy_case(kind))
    src, src_off, src_shape, src_start, dst, dst_off, dst_shape, dst_start, box, isz = case
    exp = ref.copy_boxes(src, src_off, src_shape, src_start, dst, dst_off, dst_shape, dst_start, box, isz)
    src_before = src.copy()
    got = dst.copy()
    IMPL[path]["copy_boxes"](src, src_off, src_shape, src_start, got, dst_off, dst_shape, dst_start, box, isz)
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(src, src_before)


@PATHS
@pytest.mark.parametrize("where", ["src_off", "dst_off", "src_start", "dst_start", "box"])
def test_copy_boxes_outside_its_buffer_raises_index_error(where, path):
    """Both versions refuse a piece that would read or write past its buffer."""
    one = lambda *x: np.asarray([x], np.int64)  # noqa: E731
    args = {"src_off": np.zeros(1, np.int64), "src_shape": one(2, 4), "src_start": one(0, 0),
            "dst_off": np.zeros(1, np.int64), "dst_shape": np.asarray([2, 4], np.int64), "dst_start": one(0, 0),
            "box": one(2, 4)}
    bad = {"src_off": np.asarray([1], np.int64), "dst_off": np.asarray([-1], np.int64), "src_start": one(1, 0),
           "dst_start": one(0, 1), "box": one(3, 4)}
    args[where] = bad[where]
    src = np.arange(8, dtype=np.float32)
    dst = np.zeros(8, np.float32)
    with pytest.raises(IndexError, match="outside its buffer"):
        IMPL[path]["copy_boxes"](src, args["src_off"], args["src_shape"], args["src_start"], dst, args["dst_off"],
                                 args["dst_shape"], args["dst_start"], args["box"], 1)


@st.composite
def chunked_array_case(draw):
    """An array split into padded chunks (as the engine stores them) and a box to gather."""
    kind = draw(st.sampled_from(NUMERIC))
    shape, chunk, start, count = draw(grid_case())
    pool = draw(value_pool(kind))
    seed = draw(st.integers(0, 2**32 - 1))
    arr = data_from_pool(pool, int(np.prod(shape)), seed).reshape(tuple(shape.tolist()))
    return kind, arr, shape, chunk, start, count


@PATHS
@settings(max_examples=30, deadline=None)
@given(case=chunked_array_case())
def test_plan_box_and_copy_boxes_gather_a_box(case, path):
    """plan_box + copy_boxes as _read.read uses them == NumPy slicing of the whole array."""
    kind, arr, shape, chunk, start, count = case
    grid_, gather_ = (grid, gather) if path == "kernel" else (_small, _small)
    dt = arr.dtype
    isz = dt.itemsize
    ce = int(np.prod(chunk))
    g = ref._grid(shape, chunk)
    ng = math.prod(g)
    # chunk store: every chunk padded to the chunk shape, garbage in the padding
    chunks = np.random.default_rng(1).integers(0, 256, ng * ce * isz, dtype=np.uint8)
    cv = chunks.view(dt).reshape((ng,) + tuple(chunk.tolist())) if ng else None
    for lin, coords in enumerate(np.ndindex(*g)):
        sl = tuple(slice(c * k, min((c + 1) * k, s)) for c, k, s in zip(coords, chunk.tolist(), shape.tolist()))
        piece = arr[sl]
        cv[lin][tuple(slice(0, e) for e in piece.shape)] = piece
    ids, src, dst, box = grid_.plan_box(shape, chunk, start, count)
    out = np.zeros(tuple(count.tolist()), dt)
    n = ids.shape[0]
    gather_.copy_boxes(chunks, ids * ce * isz, np.tile(chunk, (n, 1)), src, out.reshape(-1).view(np.uint8),
                      np.zeros(n, np.int64), count, dst, box, isz)
    exp = arr[tuple(slice(a, a + c) for a, c in zip(start.tolist(), count.tolist()))]
    np.testing.assert_array_equal(out.view(np.uint8), np.ascontiguousarray(exp).view(np.uint8))
    # and scatter back (the write direction): chunks built from the box == the box
    if n:
        buf = np.zeros(n * ce * isz, np.uint8)
        gather_.copy_boxes(np.ascontiguousarray(exp).reshape(-1).view(np.uint8), np.zeros(n, np.int64),
                          np.tile(count, (n, 1)), dst, buf, np.arange(n, dtype=np.int64) * ce * isz, chunk, src, box, isz)
        bv = buf.view(dt).reshape((n,) + tuple(chunk.tolist()))
        for j in range(n):
            got = bv[j][tuple(slice(a, a + b) for a, b in zip(src[j], box[j]))]
            want = exp[tuple(slice(a, a + b) for a, b in zip(dst[j], box[j]))]
            np.testing.assert_array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


# ---------------------------------------------------------------------------- chunk_stats

@contextlib.contextmanager
def stats_path(path):
    """chunk_stats / chunk_stats_masked as the compiled kernel or as the NumPy version for small calls."""
    global _stats_impl
    old = _stats_impl
    _stats_impl = stats if path == "kernel" else _small
    try:
        yield
    finally:
        _stats_impl = old


_stats_impl = stats
STATS_PATHS = PATHS


@st.composite
def stats_case(draw, kind):
    dt = storage_dtype(kind)
    nd = draw(st.integers(1, 4))
    maxd = {1: 12, 2: 6, 3: 4, 4: 3}[nd]
    zero_ok = draw(st.integers(0, 9)) == 0  # rarely: a zero-length chunk axis (size-0 chunks)
    chunk = [draw(st.integers(0 if zero_ok else 1, maxd)) for _ in range(nd)]
    k = draw(st.integers(0, 4))
    valid = [[draw(st.one_of(st.just(c), st.integers(0, c))) for c in chunk] for _ in range(k)]
    fill = draw(fill_choice(kind))
    has_fill, fv, fill_is_nan, skip_nan, skip_value, skip = kernel_fill_args(kind, fill)
    if kind != TS and draw(st.booleans()):  # the skip value is independent of the dtype
        skip_value, skip = True, draw(values(kind))
    pool = draw(value_pool(kind, extra=[fv if has_fill else None, skip if skip_value else None]))
    size = math.prod(chunk)
    buf = data_from_pool(pool, k * size, draw(st.integers(0, 2**32 - 1)))
    for c in range(k):
        if has_fill and draw(st.integers(0, 3)) == 0:  # an all-fill chunk
            buf[c * size:(c + 1) * size] = fv
    return buf, np.asarray(chunk, np.int64), np.asarray(valid, np.int64).reshape(k, nd), has_fill, fv, fill_is_nan, skip_nan, skip_value, skip


def _check_chunk_stats(args):
    buf = args[0]
    nn, mn, mx, has = _stats_impl.chunk_stats(*args)
    rnn, rmn, rmx, rhas = ref.chunk_stats(*args)
    assert mn.dtype == buf.dtype and mx.dtype == buf.dtype
    np.testing.assert_array_equal(nn, rnn, err_msg="non_null")
    np.testing.assert_array_equal(has.astype(bool), rhas, err_msg="has")
    # min/max: equal values (-0.0 == +0.0), never NaN
    assert (mn[rhas] == rmn[rhas]).all(), (mn, rmn, rhas)
    assert (mx[rhas] == rmx[rhas]).all(), (mx, rmx, rhas)
    return nn, mn, mx, has


@STATS_PATHS
@pytest.mark.parametrize("kind", NUMERIC + [TS])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_chunk_stats_matches_reference(kind, data, path):
    with stats_path(path):
        case = data.draw(stats_case(kind))
        before = case[0].copy()
        _check_chunk_stats(case)
        np.testing.assert_array_equal(case[0].view(np.uint8), before.view(np.uint8))


@STATS_PATHS
@pytest.mark.parametrize("kind", NUMERIC + [TS])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_chunk_stats_masked_matches_reference(kind, data, path):
    """The written-cells mask: one byte per cell of buf, 0 = never written (null); empty = all written."""
    with stats_path(path):
        case = data.draw(stats_case(kind))
        buf = case[0]
        mode = data.draw(st.sampled_from(["empty", "random", "all", "none"]))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        if mode == "empty":
            written = np.empty(0, np.uint8)
        elif mode == "all":
            written = np.full(buf.size, 1, np.uint8)
        elif mode == "none":
            written = np.zeros(buf.size, np.uint8)
        else:
            written = rng.integers(0, 2, buf.size).astype(np.uint8) * rng.integers(1, 256, buf.size).astype(np.uint8)
        args = (buf, written) + tuple(case[1:])
        nn, mn, mx, has = _stats_impl.chunk_stats_masked(*args)
        rnn, rmn, rmx, rhas = ref.chunk_stats_masked(*args)
        assert mn.dtype == buf.dtype and mx.dtype == buf.dtype
        np.testing.assert_array_equal(nn, rnn, err_msg="non_null")
        np.testing.assert_array_equal(has.astype(bool), rhas, err_msg="has")
        assert (mn[rhas] == rmn[rhas]).all(), (mn, rmn, rhas)
        assert (mx[rhas] == rmx[rhas]).all(), (mx, rmx, rhas)
        if mode == "none" and buf.size:
            assert not nn.any() and not has.any()


@STATS_PATHS
@pytest.mark.parametrize("kind", NUMERIC + [TS])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_chunk_stats_edge_chunks_and_fill(kind, data, path):
    """Edge chunks (valid < chunk): cells past the valid region never count, whatever they hold."""
    with stats_path(path):
        dt = storage_dtype(kind)
        fill = data.draw(fill_choice(kind))
        has_fill, fv, fill_is_nan, skip_nan, skip_value, skip = kernel_fill_args(kind, fill)
        chunk = np.asarray([3, 4], np.int64)
        sp = specials(kind)
        inside = data.draw(values(kind))
        outside = data.draw(st.sampled_from(sp))
        buf = np.full(2 * 12, outside, dt)
        b = buf.reshape(2, 3, 4)
        b[0, :2, :3] = inside      # chunk 0: valid (2, 3)
        b[1, :1, :1] = fv          # chunk 1: valid (1, 1), the one cell is the fill
        valid = np.asarray([[2, 3], [1, 1]], np.int64)
        nn, mn, mx, has = _check_chunk_stats((buf, chunk, valid, has_fill, fv, fill_is_nan, skip_nan, skip_value, skip))
        null_inside = bool(ref.cell_is_null(np.asarray([inside]), has_fill, fv, fill_is_nan)[0])
        assert nn[0] == (0 if null_inside else 6)
        assert nn[1] == (0 if has_fill else 1)


@STATS_PATHS
def test_chunk_stats_signed_zero_nan_and_nat(path):
    """Hand-written cases: -0.0 equals a 0.0 fill; NaN counts but is never min/max; NaT likewise."""
    with stats_path(path):
        f = np.asarray([-0.0, 0.0, np.nan, 2.5, -1.0, np.nan], np.float64)
        ch = np.asarray([6], np.int64)
        one = np.asarray([[6]], np.int64)
        nn, mn, mx, has = _stats_impl.chunk_stats(f, ch, one, True, np.float64(0.0), False, True, False, np.float64(0))
        assert (nn[0], mn[0], mx[0], has[0]) == (4, -1.0, 2.5, True)
        nn, mn, mx, has = _stats_impl.chunk_stats(f, ch, one, True, np.float64(np.nan), True, True, False, np.float64(0))
        assert (nn[0], mn[0], mx[0], has[0]) == (4, -1.0, 2.5, True)
        allnan = np.full(4, np.nan, np.float32)
        nn, _, _, has = _stats_impl.chunk_stats(allnan, np.asarray([4], np.int64), np.asarray([[4]], np.int64), False,
                                          np.float32(0), False, True, False, np.float32(0))
        assert nn[0] == 4 and not has[0]
        t = np.asarray([NAT, 5, NAT, -7], np.int64)
        nn, mn, mx, has = _stats_impl.chunk_stats(t, np.asarray([4], np.int64), np.asarray([[4]], np.int64), False,
                                            np.int64(0), False, False, True, np.int64(NAT))
        assert (nn[0], mn[0], mx[0], has[0]) == (4, -7, 5, True)
        u = np.asarray([np.iinfo(np.uint64).max, 3, np.iinfo(np.uint64).max - 1], np.uint64)
        nn, mn, mx, has = _stats_impl.chunk_stats(u, np.asarray([3], np.int64), np.asarray([[3]], np.int64), True,
                                            np.uint64(np.iinfo(np.uint64).max), False, False, False, np.uint64(0))
        assert (nn[0], int(mn[0]), int(mx[0]), has[0]) == (2, 3, 2**64 - 2, True)


# ---------------------------------------------------------------------------- threads
def test_kernels_concurrently_from_threads():
    """After one warm-up call each, the kernels give reference results from many threads at once."""
    rng = np.random.default_rng(12345)
    jobs = []
    for i in range(48):
        nd = int(rng.integers(1, 5))
        shape = rng.integers(0, 7, nd).astype(np.int64)
        chunk = rng.integers(1, 5, nd).astype(np.int64)
        start = np.asarray([rng.integers(0, s + 1) for s in shape], np.int64)
        count = np.asarray([rng.integers(0, s - a + 1) for s, a in zip(shape, start)], np.int64)
        kind = NUMERIC[i % len(NUMERIC)]
        dt = np.dtype(kind)
        arr = rng.integers(0, 256, int(np.prod(shape)) * dt.itemsize, dtype=np.uint8).view(dt)
        if dt.kind == "f":
            arr[::3] = np.nan
        cs = math.prod(chunk.tolist())
        buf = rng.integers(0, 256, 3 * cs * dt.itemsize, dtype=np.uint8).view(dt)
        valid = np.asarray([[rng.integers(0, c + 1) for c in chunk] for _ in range(3)], np.int64)
        sargs = (buf, chunk, valid) + kernel_fill_args(kind, 0 if i % 2 else None)
        keys = np.unique(rng.integers(0, 40, 30))
        ka, kb = keys // 7, keys % 7
        qa, qb = rng.integers(0, 7, 20), rng.integers(0, 7, 20)
        jobs.append((shape, chunk, start, count, arr, sargs, (ka, kb, qa, qb)))

    def expected(job):
        shape, chunk, start, count, arr, sargs, lk = job
        box = arr.reshape(tuple(shape.tolist()))[tuple(slice(a, a + c) for a, c in zip(start.tolist(), count.tolist()))]
        return ref.plan_box(shape, chunk, start, count), np.ascontiguousarray(box), ref.chunk_stats(*sargs), ref.lookup(*lk)

    def run(job):
        shape, chunk, start, count, arr, sargs, lk = job
        plan = grid.plan_box(shape, chunk, start, count)
        ids, src, dst, box = plan
        vs = grid.valid_shapes(shape, chunk, ids)
        isz = arr.dtype.itemsize
        out = np.zeros(tuple(count.tolist()), arr.dtype)
        n = ids.shape[0]
        # gather straight from the whole array seen as one block (src_start = dst_start + start)
        gather.copy_boxes(arr.view(np.uint8), np.zeros(n, np.int64), np.tile(shape, (n, 1)), dst + start,
                          out.reshape(-1).view(np.uint8), np.zeros(n, np.int64), count, dst, box, isz)
        return plan, vs, out, stats.chunk_stats(*sargs), grid.lookup(*lk)

    for job in jobs[:len(NUMERIC)]:  # warm-up: compile every specialization once
        run(job)
    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(run, jobs * 4))
    for job, (plan, vs, out, st_, lk) in zip(jobs * 4, results):
        eplan, ebox, est, elk = expected(job)
        for g, e in zip(plan, eplan):
            np.testing.assert_array_equal(g, e)
        np.testing.assert_array_equal(vs, ref.valid_shapes(job[0], job[1], plan[0]))
        np.testing.assert_array_equal(out.view(np.uint8), ebox.view(np.uint8))
        np.testing.assert_array_equal(st_[0], est[0])
        np.testing.assert_array_equal(st_[3].astype(bool), est[3])
        h = est[3]
        assert (st_[1][h] == est[1][h]).all() and (st_[2][h] == est[2][h]).all()
        np.testing.assert_array_equal(lk, elk)


# ---------------------------------------------------------------------------- end to end
@st.composite
def box_in(draw, shape, nonempty=False):
    start, count = [], []
    for s in shape:
        a = draw(st.integers(0, max(s - 1, 0) if nonempty else s))
        start.append(a)
        count.append(draw(st.integers(1 if nonempty and s else 0, s - a)))
    return start, count


@st.composite
def e2e_case(draw, kind, fill_mode="any", zero_dims=False, min_rank=1):
    nd = draw(st.integers(min_rank, 4))
    maxd = {0: 1, 1: 60, 2: 12, 3: 6, 4: 4}[nd]
    shape = [draw(st.integers(1, maxd)) for _ in range(nd)]
    if zero_dims:
        shape[draw(st.integers(0, nd - 1))] = 0
    if draw(st.integers(0, 4)) == 0:
        chunk = None  # default: one chunk
    else:
        chunk = [draw(st.integers(1, s + 2)) for s in shape]
    if fill_mode == "none":
        fill = None
    else:
        fill = draw(fill_choice(kind, allow_none=fill_mode == "any"))
    codec = draw(st.sampled_from(["zstd", "lz4", "none"]))
    dt = storage_dtype(kind)
    extra = [None if fill is None else dt.type(fill)]
    pool = draw(value_pool(kind, extra=extra))
    phases = []
    for _ in range(3):
        writes = [(draw(box_in(shape, nonempty=draw(st.booleans()))), draw(st.integers(0, 2**32 - 1)))
                  for _ in range(draw(st.integers(0, 4)))]
        reads = [draw(box_in(shape)) for _ in range(draw(st.integers(1, 3)))]
        phases.append((writes, reads))
    return kind, shape, chunk, fill, codec, pool, phases


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _same(got: np.ndarray, exp: np.ndarray) -> None:
    assert got.shape == exp.shape and got.dtype == exp.dtype, (got.shape, got.dtype, exp.shape, exp.dtype)
    np.testing.assert_array_equal(bits(got), bits(exp))  # bit for bit (NaN, -0.0)


def _check_reads(ds, kind, model, reads):
    user = model.view("datetime64[ns]") if kind == TS else model
    _same(ds.read_array("x"), user)
    for start, count in reads:
        _same(ds.read_array("x", start, count), user[tuple(slice(a, a + c) for a, c in zip(start, count))])


def _check_stats(ds, kind, model, written, fill):
    got = ds.array_stats("x")
    assert got is not None
    rc, nc, mn, mx = ref.array_stats(model, written, fill, kind == TS)
    assert got["row_count"] == rc
    assert got["null_count"] == nc, (got, nc)
    for key, e in (("min", mn), ("max", mx)):
        g = got[key]
        if e is None:
            assert g is None, (key, got)
        elif kind == TS:
            assert g == np.datetime64(int(e), "ns"), (key, got, e)
        else:
            assert isinstance(g, model.dtype.type) and g == e, (key, got, e)


def _run_e2e(case, check_reads=True, check_stats=True):
    kind, shape, chunk, fill, codec, pool, phases = case
    dt = storage_dtype(kind)
    model = np.full(tuple(shape), dt.type(0 if fill is None else fill) if kind != TS or fill is not None else NAT, dt)
    written = np.zeros(tuple(shape), bool)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        store = atlas.Atlas.create(path, codec=codec)
        ds = store.create_dataset("d")
        ds.define_array("x", kind, [f"d{i}" for i in range(len(shape))], shape, chunk, fill)
        for p, (writes, reads) in enumerate(phases):
            if p == 2:  # the last phase runs on a reopened store
                store = atlas.Atlas.open(path)
                ds = store.open_dataset("d")
                if check_reads:
                    _check_reads(ds, kind, model, reads)
                if check_stats:
                    _check_stats(ds, kind, model, written, fill)
            for (start, count), seed in writes:
                data = data_from_pool(pool, math.prod(count), seed).reshape(count)
                ds.write_array("x", start, data.view("datetime64[ns]") if kind == TS else data)
                sl = tuple(slice(a, a + c) for a, c in zip(start, count))
                model[sl] = data
                written[sl] = True
            if check_reads:
                _check_reads(ds, kind, model, reads)  # pending writes visible
            store.flush()
            if check_reads:
                _check_reads(ds, kind, model, reads)
            if check_stats:
                _check_stats(ds, kind, model, written, fill)
        reopened = atlas.Atlas.open(path)
        ds = reopened.open_dataset("d")
        if check_reads:
            _check_reads(ds, kind, model, phases[-1][1])
        if check_stats:
            _check_stats(ds, kind, model, written, fill)


E2E_KINDS = pytest.mark.parametrize("kind", NUMERIC + [TS])


@contextlib.contextmanager
def engine_path(path):
    """Run the engine's kernel calls (``K``) all through NumPy or all through the kernels.

    "numpy": every call counts as small and ``K`` starts over as in a fresh process; the
    block must end without ``K`` having needed a kernel. "kernel": no call counts as small.
    """
    names = ("SMALL_PIECES", "SMALL_BYTES", "SMALL_QUERIES", "SMALL_CELLS")
    old = {n: getattr(_small, n) for n in names}
    for n in names:
        setattr(_small, n, 1 << 62 if path == "numpy" else -1)
    K.reset()
    try:
        yield
        if path == "numpy":
            assert not K.loaded, "a call of the block ran a kernel"
    finally:
        for n, v in old.items():
            setattr(_small, n, v)
        K.reset()


@E2E_KINDS
@PATHS
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_e2e_reads_match_numpy_model(kind, data, path):
    """Reads (whole array and boxes) before/after flush and after reopen == the NumPy model."""
    with engine_path(path):
        _run_e2e(data.draw(e2e_case(kind, min_rank=0)), check_stats=False)


@E2E_KINDS
@PATHS
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_e2e_stats_with_fill_value(kind, data, path):
    with engine_path(path):
        _run_e2e(data.draw(e2e_case(kind, fill_mode="some")), check_reads=False)


@E2E_KINDS
@PATHS
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_e2e_stats_without_fill_value(kind, data, path):
    """README: null_count counts unwritten cells also when there is no fill value."""
    with engine_path(path):
        _run_e2e(data.draw(e2e_case(kind, fill_mode="none")), check_reads=False)


@PATHS
@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(NUMERIC + [TS]), data=st.data())
def test_e2e_zero_length_axis_reads(kind, data, path):
    with engine_path(path):
        _run_e2e(data.draw(e2e_case(kind, zero_dims=True)), check_stats=False)


@PATHS
@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(NUMERIC + [TS]), data=st.data())
def test_e2e_zero_length_axis_stats(kind, data, path):
    with engine_path(path):
        _run_e2e(data.draw(e2e_case(kind, zero_dims=True)), check_reads=False)


def test_first_calls_from_many_threads_compile_once():
    """A kernel with a canonical signature, first called from many threads at once: every
    call returns its result, one signature is compiled, and later calls convert arguments
    (writable or read-only, any layout) instead of compiling."""
    from numba import types

    from atlas._kernels import IN1, OUT1, kernel

    def _sum_into(a, out):  # pragma: no cover - compiled
        t = 0
        for i in range(a.shape[0]):
            t += a[i]
        out[0] = t

    k = kernel(_sum_into, sig=types.void(IN1, OUT1))
    disp = k.__closure__ and next(c.cell_contents for c in k.__closure__ if hasattr(c.cell_contents, "signatures"))
    inputs = [np.arange(i, dtype=np.int64) for i in range(64)]

    def call(a):
        out = np.zeros(1, np.int64)
        k(a, out)
        return int(out[0])

    with ThreadPoolExecutor(16) as ex:
        got = list(ex.map(call, inputs))
    assert got == [int(a.sum()) for a in inputs]
    ro = np.arange(10, dtype=np.int64)
    ro.flags.writeable = False
    out = np.zeros(1, np.int64)
    disp(ro, out)
    disp(np.arange(20, dtype=np.int64)[::2], out)
    assert int(out[0]) == sum(range(0, 20, 2))
    assert len(disp.signatures) == 1


# ---------------------------------------------------------------------------- the rule
def _in_fresh_process(code: str) -> list[str]:
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return out.stdout.split()


def test_quickstart_imports_no_numba():
    """The quick start's requests are all small: a fresh process runs it without importing numba."""
    qs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "01_quickstart.py")
    code = ("import contextlib, io, runpy, sys\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    runpy.run_path({qs!r}, run_name='__main__')\n"
            "print('numba' in sys.modules, any(m.startswith('atlas._kernels') for m in sys.modules))\n")
    assert _in_fresh_process(code) == ["False", "False"]


def test_large_request_loads_the_kernels_then_every_call_uses_them():
    """A read touching more chunks than SMALL_PIECES imports numba; from then on K is the kernels."""
    code = ("import os, sys, tempfile, numpy as np, atlas\n"
            "from atlas import _small\n"
            "from atlas._lazy import K\n"
            "n = _small.SMALL_PIECES + 1\n"
            "s = atlas.Atlas.create(os.path.join(tempfile.mkdtemp(), 's'))\n"
            "d = s.create_dataset('d')\n"
            "d.define_array('a', 'int32', ['x'], [n], [1])\n"
            "d.write_array('a', [0], np.arange(2, dtype=np.int32))\n"  # two chunks: small
            "s.flush()\n"
            "a = d.read_array('a', [0], [2])\n"
            "print('numba' in sys.modules, K.loaded)\n"
            "d.write_array('a', [0], np.arange(n, dtype=np.int32))\n"  # n chunks: the kernels
            "s.flush()\n"
            "b = d.read_array('a')\n"
            "from atlas._kernels import grid\n"
            "print('numba' in sys.modules, K.loaded, K.plan_box is grid.plan_box, a.tolist() == [0, 1],\n"
            "      b.tolist() == list(range(n)))\n")
    assert _in_fresh_process(code) == ["False", "False", "True", "True", "True", "True", "True"]
