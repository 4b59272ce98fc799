"""Fuzzing and property tests (issue "Reliability", point 5).

Four families, each driven by hypothesis:

* the metadata file (``_metaio``: header, CRC-32, json/msgpack, compression) and the
  metadata model (``StoreMeta`` / ``DatasetMeta`` decoded from it): random bytes,
  truncations, bit flips of valid files, and *valid-checksum garbage* (a mutated metadata
  dict re-encoded with a correct header and CRC, so the structural validation is what is
  exercised);
* the columnar chunk index of segment footers (``ChunkIndex``): round trips, random bytes,
  bit flips caught by the footer CRC, valid-checksum garbage;
* whole stores: one file of a flushed store is damaged at a random place (bit flips,
  overwrites, truncation, deletion, appended bytes), then every read a user can make and
  ``verify()`` are run and compared with the data that was written;
* random bad arguments to every public method of ``Atlas`` and ``DatasetView``: only the
  documented exception classes, and after every call the store still works (a canary
  write + read, the flushed data intact, a final flush + reopen).

Contracts checked (README "Errors"): bad input raises ``TypeError`` / ``ValueError`` /
``KeyError`` / ``OverflowError`` / ``FileNotFoundError`` / ``FileExistsError``; a damaged
store raises ``CorruptStoreError`` (an ``OSError``) or ``StoreFormatError`` naming the file;
nothing returns different data silently.

The ``@example`` reproducers pin the bugs this file found (zstd frames whose checksum flag was
flipped off, unchecked metadata and index structure, wrapped-around timestamps, a clashing
``concat_dim``, a store path below a plain file); all are fixed, and the examples keep them so.

Example counts scale with the hypothesis profile (``ci``: 25 -> the counts below) and with
``ATLAS_FUZZ_SCALE`` (e.g. ``ATLAS_FUZZ_SCALE=20`` for a long exploratory run).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import os
import shutil
import signal
import struct
import tempfile
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

import atlas
from atlas import _metaio, codecs
from atlas._frames import FrameReader
from atlas._meta import META_PATH, IndexLocation, Physical, StoreMeta
from atlas._segments import CHUNK_COLUMNS, FRAME_COLUMNS, ChunkIndex
from atlas.errors import AtlasError, CorruptStoreError, StoreFormatError

# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
_SCALE = max(settings.default.max_examples, 1) / 25 * float(os.environ.get("ATLAS_FUZZ_SCALE", "1"))


def _n(k: int) -> int:
    return max(1, int(k * _SCALE))


def fuzz(k: int, **kw):
    """Settings of one fuzz test: ``k`` examples under the ci profile, no deadline."""
    return settings(
        max_examples=_n(k),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        **kw,
    )


#: what bad arguments may raise (atlas errors that derive from these are fine too)
API_ERRORS = (TypeError, ValueError, KeyError, OverflowError, FileNotFoundError, FileExistsError)
#: what a damaged store may raise
STORE_ERRORS = (CorruptStoreError, StoreFormatError)
CODECS = ("zstd", "lz4", "none")
META_FORMATS = ("json", "msgpack")
META_COMPRESSIONS = ("none", "zstd", "lz4")
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


@contextlib.contextmanager
def _watchdog(seconds: int = 60):
    """Turn a hang (a loop that never ends, a lock never released) into a test failure."""
    def alarm(signum, frame):
        raise AssertionError(f"no progress for {seconds} s: a hang")

    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - non-POSIX
        yield
        return
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _valid_name(v) -> bool:
    """The README's rule for dataset, array and attribute names (and storable as UTF-8)."""
    if not (isinstance(v, str) and v != "" and "/" not in v and not v.startswith("_") and v not in (".", "..")):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _same(got, want) -> bool:
    """Equal values, NaN == NaN and NaT == NaT, same dtype."""
    if want is None or got is None:
        return got is None and want is None
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if want.dtype.kind == "f":
        return bool(np.array_equal(got, want, equal_nan=True))
    if want.dtype.kind == "M":
        return bool(np.array_equal(got.view(np.int64), want.view(np.int64)))
    return bool(np.array_equal(got, want))


def _same_scalar(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, np.datetime64) or isinstance(b, np.datetime64):
        return isinstance(a, np.datetime64) and isinstance(b, np.datetime64) and (
            (np.isnat(a) and np.isnat(b)) or (not np.isnat(a) and not np.isnat(b) and a == b))
    if isinstance(a, np.generic) or isinstance(b, np.generic):
        return type(a) is type(b) and _same(np.asarray(a), np.asarray(b))
    return type(a) is type(b) and a == b


def _same_dict(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_same_scalar(a[k], b[k]) if not isinstance(a[k], dict) else _same_dict(a[k], b[k])
                                        for k in a)


# ---------------------------------------------------------------------------------------------
# reference stores: written once per module, copied per example
# ---------------------------------------------------------------------------------------------
CONFIGS = (("zstd", "json", "none"), ("lz4", "msgpack", "lz4"), ("none", "json", "zstd"))


class Ref:
    """A flushed store and everything a reader should get back from it."""

    def __init__(self, path: str, cfg: tuple[str, str, str]) -> None:
        self.path = path
        self.cfg = cfg
        self.arrays: dict[tuple[str, str], np.ndarray] = {}
        self.metas: dict[tuple[str, str], dict] = {}
        self.stats: dict[tuple[str, str], dict] = {}
        self.fills: dict[tuple[str, str], object] = {}
        self.attrs: dict[str, dict] = {}
        self.names: list[str] = []
        self.meta_obj: dict = {}


def _build_ref(path: str, cfg: tuple[str, str, str]) -> Ref:
    codec, mf, mc = cfg
    ref = Ref(path, cfg)
    rng = np.random.default_rng(1234)
    s = atlas.Atlas.create(path, codec=codec, meta_format=mf, meta_compression=mc)
    for i in range(3):
        d = f"d{i}"
        ds = s.create_dataset(d)
        g = rng.standard_normal((40, 64)).astype(np.float32)  # 4 small chunks: packed into shared frames
        ds.define_array("grid", "float32", ["y", "x"], [40, 64], [20, 32], fill_value=float("nan"))
        ds.write_array("grid", [0, 0], g)
        ref.arrays[(d, "grid")] = g
        if i < 2:
            b = rng.standard_normal((48, 48))  # 18 KiB: one chunk, compressed alone when written
            ds.define_array("big", "float64", ["y", "x"], [48, 48])
            ds.write_array("big", [0, 0], b)
            ref.arrays[(d, "big")] = b
        ids = np.zeros(10, np.int16)  # partly written, no fill: written-cells masks
        w = (np.arange(6, dtype=np.int16) - 2) * (i + 1)
        ds.define_array("ids", "int16", ["n"], [10], [4])
        ds.write_array("ids", [2], w)
        ids[2:8] = w
        ref.arrays[(d, "ids")] = ids
        names = np.array(["", "a", "\u00fc\u00df", d, "long" * 7, "z"], dtype=object)
        ds.define_array("names", "string", ["n"], [6], [4])
        ds.write_array("names", [0], names)
        ref.arrays[(d, "names")] = names
        when = np.array(["2020-01-01", "NaT", "1970-01-01T00:00:00.000000001"], "M8[ns]")
        ds.define_array("when", "timestamp_ns", ["t"], [3])
        ds.write_array("when", [0], when)
        ref.arrays[(d, "when")] = when
        ds.set_attribute("n", i)
        ds.set_attribute("f", float("nan"))
        ds.set_attribute("s", "x" * i)
        ds.set_attribute("t", np.datetime64("2001-02-03T04:05:06", "ns"))
    s.flush()
    # a second flush: overwritten chunks (dead frames), footers that refer to two segments
    patch = np.full((5, 5), 7.0, np.float32)
    s.open_dataset("d1").write_array("grid", [18, 30], patch)
    ref.arrays[("d1", "grid")][18:23, 30:35] = patch
    s.open_dataset("d2").set_attribute("n", 42)
    s.open_dataset("d0").write_array("ids", [0], np.array([5, 6], np.int16))
    ref.arrays[("d0", "ids")][0:2] = [5, 6]
    s.flush()
    fresh = atlas.Atlas.open(path)
    assert fresh.verify() == []
    ref.names = fresh.list_datasets()
    for d in ref.names:
        ds = fresh.open_dataset(d)
        ref.attrs[d] = ds.attributes()
        for a in ds.list_arrays():
            ref.metas[(d, a)] = ds.array_meta(a)
            ref.stats[(d, a)] = ds.array_stats(a)
            ref.fills[(d, a)] = ds.array_fill_value(a)
            assert _same(ds.read_array(a), ref.arrays[(d, a)]), (d, a)
    with open(os.path.join(path, META_PATH), "rb") as f:
        ref.meta_obj = _metaio.decode(f.read(), "ref")[0]
    return ref


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def refs(workdir):
    return {cfg: _build_ref(os.path.join(workdir, "ref-" + "-".join(cfg)), cfg) for cfg in CONFIGS}


def _copy(src: str, workdir: str) -> str:
    dst = tempfile.mkdtemp(dir=workdir)
    shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("atlas.lock"))
    return dst


def _files(path: str) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(path):
        for f in files:
            if f != "atlas.lock":
                out.append(os.path.relpath(os.path.join(dirpath, f), path).replace(os.sep, "/"))
    return sorted(out)


# =============================================================================================
# 1. the metadata file: _metaio
# =============================================================================================
_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(I64_MIN, 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
_json_values = st.recursive(
    _json_scalars,
    lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(st.text(max_size=6), ch, max_size=4)),
    max_leaves=16,
)
meta_dicts = st.dictionaries(st.text(max_size=8), _json_values, max_size=6)
meta_options = st.tuples(st.sampled_from(META_FORMATS), st.sampled_from(META_COMPRESSIONS))


@fuzz(60)
@given(obj=meta_dicts, opts=meta_options)
def test_metaio_roundtrip(obj, opts):
    fmt, comp = opts
    assert _metaio.decode(_metaio.encode(obj, fmt, comp), "m") == (obj, fmt, comp)


@fuzz(150)
@given(data=st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: _metaio.MAGIC + b),
    # a header with random codes and a correct CRC of a random payload: past every cheap check
    st.tuples(st.integers(0, 255) | st.integers(0, 2), st.integers(0, 255) | st.integers(0, 2),
              st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1) | st.integers(0, 4096), st.binary(max_size=300))
    .map(lambda t: struct.pack("<8sBBHIQ", _metaio.MAGIC, t[0], t[1], t[2], zlib.crc32(t[4]), t[3]) + t[4]),
))
def test_metaio_decode_random_bytes_raises_only_store_errors(data):
    try:
        obj, fmt, comp = _metaio.decode(data, "fuzzed.meta")
    except STORE_ERRORS as e:
        assert "fuzzed.meta" in str(e)
    else:
        assert isinstance(obj, dict) and fmt in META_FORMATS and comp in META_COMPRESSIONS


@fuzz(60)
@given(obj=meta_dicts, opts=meta_options, data=st.data())
def test_metaio_truncation_is_always_detected(obj, opts, data):
    blob = _metaio.encode(obj, *opts)
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    with pytest.raises(CorruptStoreError, match="truncated.meta"):
        _metaio.decode(blob[:cut], "truncated.meta")


@fuzz(200)
@given(obj=meta_dicts, opts=meta_options, data=st.data())
def test_metaio_bit_flips_never_decode_to_different_metadata(obj, opts, data):
    blob = bytearray(_metaio.encode(obj, *opts))
    bits = data.draw(st.lists(st.integers(0, 8 * len(blob) - 1), min_size=1, max_size=4, unique=True), label="bits")
    for b in bits:
        blob[b // 8] ^= 1 << (b % 8)
    try:
        got = _metaio.decode(bytes(blob), "flipped.meta")
    except STORE_ERRORS as e:
        assert "flipped.meta" in str(e)
    else:  # only bits nothing depends on (reserved bytes, an unused length) may be flipped silently
        assert got == (obj, *opts), "a damaged metadata file decoded to different metadata"


# =============================================================================================
# 2. the metadata model with a valid checksum but garbage structure
# =============================================================================================
class _Blob:
    """A dataset's encoded metadata (a json str or msgpack bytes), opened for mutation."""

    def __init__(self, raw):
        self.kind = "json" if isinstance(raw, str) else "msgpack"
        self.v = json.loads(raw) if self.kind == "json" else msgpack.unpackb(raw, raw=False)

    def encode(self):
        if self.kind == "json":
            return json.dumps(_close(self.v), allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        return msgpack.packb(_close(self.v), use_bin_type=True)


def _open_blobs(obj):
    obj = copy.deepcopy(obj)
    if isinstance(obj.get("datasets"), list):
        for row in obj["datasets"]:
            if isinstance(row, list) and len(row) == 2 and isinstance(row[1], (str, bytes)):
                row[1] = _Blob(row[1])
    return obj


def _close(v):
    if isinstance(v, _Blob):
        return v.encode()
    if isinstance(v, dict):
        return {k: _close(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_close(x) for x in v]
    return v


def _paths(v, prefix=()):
    yield prefix
    if isinstance(v, _Blob):
        v = v.v
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _paths(x, prefix + (i,))


def _node(root, path):
    v = root
    for k in path:
        if isinstance(v, _Blob):
            v = v.v
        v = v[k]
    return v.v if isinstance(v, _Blob) else v


_SPECIAL_JUNK = [
    None, True, False, 0, 1, -1, -8, 2, 3, 7, 2**31, 2**40, I64_MAX, I64_MIN, 2**64 - 1, 0.5, -1.5, 1e300,
    "", "x", "nan", "inf", "int8", "float64", "float32", "string", "timestamp_nanoseconds", "bogus", "../..", "/etc",
    "arrays/00000-grid", [], [0], [-1], [1, 2], [-3, 5], [2**40, 2**40], ["a", "b"], {}, {"dtype": "int8"}, [[]], [None, None, None],
]
_meta_junk = st.one_of(st.sampled_from(_SPECIAL_JUNK), _json_values)


@st.composite
def meta_mutations(draw):
    """A list of abstract edits: ``(op, where, value)``; ``where`` picks a node by number."""
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "dup"]))
        ops.append((op, draw(st.integers(0, 10**6)), draw(_meta_junk)))
    return ops


def _mutate(obj, ops):
    """Apply edits to the metadata dict (dataset blobs are edited decoded, then re-encoded)."""
    root = {"": _open_blobs(obj)}
    for op, where, value in ops:
        if isinstance(where, tuple):
            path = ("",) + where
        else:
            paths = [p for p in _paths(root) if p]
            path = paths[where % len(paths)]
        parent = _node(root, path[:-1])
        key = path[-1]
        if op == "set":
            parent[key] = copy.deepcopy(value)
        elif op == "delete" and len(path) > 1:
            del parent[key]
        elif op == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return _close(root[""])


def _touch_everything(m: StoreMeta) -> None:
    """Decode every lazily decoded part of the model and the values derived from it."""
    for name, ds in m.datasets.items():
        for a in ds.arrays.values():
            a.layout, a.kshape, a.kchunk, a.single_chunk, a.sdtype, a.fill_storage, a.row_count  # noqa: B018
        dict(ds.attrs)
    for p in m.physical.values():
        p.dir, p.index  # noqa: B018


_GARBAGE_META_EXAMPLES = [
    [("set", ("physical",), [])],  # AttributeError: 'list' object has no attribute 'items'
    [("set", ("physical", "grid"), [1])],  # AttributeError: 'list' object has no attribute 'get'
    [("set", ("version",), "x")],  # ValueError: invalid literal for int()
    [("set", ("version",), None)],  # TypeError: int() argument must be ... not 'NoneType'
    [("set", ("datasets", 0, 1, 0), [])],  # dataset blob: attributes not a mapping -> AttributeError
]


@fuzz(120)
@given(cfg=st.sampled_from(CONFIGS), ops=meta_mutations())
@example(cfg=CONFIGS[0], ops=_GARBAGE_META_EXAMPLES[0])
@example(cfg=CONFIGS[1], ops=_GARBAGE_META_EXAMPLES[1])
@example(cfg=CONFIGS[0], ops=_GARBAGE_META_EXAMPLES[2])
@example(cfg=CONFIGS[1], ops=_GARBAGE_META_EXAMPLES[3])
@example(cfg=CONFIGS[2], ops=_GARBAGE_META_EXAMPLES[4])
def test_checksummed_garbage_metadata_decodes_or_raises_corrupt(refs, cfg, ops):
    ref = refs[cfg]
    mutated = _mutate(ref.meta_obj, ops)
    note(f"mutated metadata: {mutated!r}")
    blob = _metaio.encode(mutated, cfg[1], cfg[2])
    try:
        obj, _, _ = _metaio.decode(blob, "garbage/atlas.meta")
        _touch_everything(StoreMeta.from_dict(obj, "garbage/atlas.meta"))
    except STORE_ERRORS:
        pass


def _read_everything(s: atlas.Atlas, max_bytes: int = 1 << 20) -> dict:
    """Every read a user can make of a store, for the exception-class contract."""
    out: dict = {}
    out["datasets"] = s.list_datasets()
    out["arrays"] = s.list_arrays()
    for d in out["datasets"]:
        ds = s.open_dataset(d)
        out[(d, "attributes")] = ds.attributes()
        for a in ds.list_arrays():
            am = ds.array_meta(a)
            out[(d, a, "fill")] = ds.array_fill_value(a)
            out[(d, a, "stats")] = ds.array_stats(a)
            shape = am["shape"]
            size = 1
            for x in shape:
                size *= max(int(x), 0)
            if size * 8 > max_bytes:  # a declared-huge array: reading it is an allocation, not a decode
                continue
            out[(d, a)] = ds.read_array(a)
    out["verify"] = s.verify()
    return out


@fuzz(80)
@given(cfg=st.sampled_from(CONFIGS), ops=meta_mutations())
@example(cfg=CONFIGS[0], ops=[("set", ("schemas", 0, "shape", 0), -3)])  # ValueError: negative dimensions
@example(cfg=CONFIGS[0], ops=[("set", ("physical", "grid", "index", 1), -5)])  # OSError: [Errno 22] EINVAL
@example(cfg=CONFIGS[1], ops=[("set", ("datasets", 0, 0), 5)])  # TypeError: a dataset named 5
def test_store_with_checksummed_garbage_metadata_raises_only_store_errors(refs, workdir, cfg, ops):
    ref = refs[cfg]
    path = _copy(ref.path, workdir)
    try:
        mutated = _mutate(ref.meta_obj, ops)
        note(f"mutated metadata: {mutated!r}")
        with open(os.path.join(path, META_PATH), "wb") as f:
            f.write(_metaio.encode(mutated, cfg[1], cfg[2]))
        try:
            _read_everything(atlas.Atlas.open(path))
        except (AtlasError, FileNotFoundError):
            pass
    finally:
        shutil.rmtree(path, ignore_errors=True)


# =============================================================================================
# 3. chunk indexes (segment footers)
# =============================================================================================
@st.composite
def chunk_indexes(draw, max_chunks: int = 24):
    """A valid ChunkIndex: sorted unique (aid, cid), frames and segments that exist, chunks inside frames."""
    nseg = draw(st.integers(1, 3))
    segments = [f"arrays/00000-a/s{k:08d}-{draw(st.text('0123456789abcdef', min_size=8, max_size=8))}.seg"
                for k in range(nseg)]
    nf = draw(st.integers(1, 6))
    rlen = np.asarray(draw(st.lists(st.integers(8, 1 << 20), min_size=nf, max_size=nf)), np.int64)
    clen = rlen.copy()  # stored = decoded size: possible for every codec (decode checks codec bounds)
    frames = {
        "seg": np.asarray(draw(st.lists(st.integers(0, nseg - 1), min_size=nf, max_size=nf)), np.int64),
        "off": np.concatenate([[0], np.cumsum(clen)[:-1]]).astype(np.int64),
        "clen": clen,
        "rlen": rlen,
        "crc": np.asarray(draw(st.lists(st.integers(0, 2**32 - 1), min_size=nf, max_size=nf)), np.uint32),
    }
    keys = sorted(draw(st.sets(st.tuples(st.integers(1, 50), st.integers(0, 1000)), max_size=max_chunks)))
    n = len(keys)
    frame = np.asarray(draw(st.lists(st.integers(0, nf - 1), min_size=n, max_size=n)), np.int64)
    nbytes = np.asarray([draw(st.integers(0, int(rlen[f]))) for f in frame], np.int64)
    foff = np.asarray([draw(st.integers(0, int(rlen[f]) - int(b))) for f, b in zip(frame, nbytes)], np.int64)
    i64 = st.integers(I64_MIN, I64_MAX)
    chunks = {
        "aid": np.asarray([k[0] for k in keys], np.int64),
        "cid": np.asarray([k[1] for k in keys], np.int64),
        "frame": frame,
        "foff": foff,
        "nbytes": nbytes,
        "nn": np.asarray(draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)), np.int64),
        "mn": np.asarray(draw(st.lists(i64, min_size=n, max_size=n)), np.int64),
        "mx": np.asarray(draw(st.lists(i64, min_size=n, max_size=n)), np.int64),
        "has": np.asarray(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8),
        "wmask": np.asarray(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8),
    }
    return ChunkIndex(segments, frames, chunks)


def _same_index(a: ChunkIndex, b: ChunkIndex) -> bool:
    return (a.segments == b.segments
            and all(_same(a.frames[k], b.frames[k]) for k in FRAME_COLUMNS)
            and all(_same(a.chunks[k], b.chunks[k]) for k in CHUNK_COLUMNS))


def _index_problems(idx: ChunkIndex) -> list[str]:
    """Invariants every read relies on; an index violating one must not decode."""
    p = []
    n, nf = len(idx), idx.frames["seg"].shape[0]
    if any(v.shape[0] != n for v in idx.chunks.values()):
        p.append("chunk columns differ in length")
    if any(v.shape[0] != nf for v in idx.frames.values()):
        p.append("frame columns differ in length")
    if p:
        return p
    if not all(isinstance(s, str) for s in idx.segments):
        p.append("segment paths are not str")
    f, c = idx.frames, idx.chunks
    if nf and ((f["seg"] < 0).any() or (f["seg"] >= len(idx.segments)).any()):
        p.append("frames refer to segments that do not exist")
    if nf and ((f["off"] < 0).any() or (f["clen"] < 0).any() or (f["rlen"] < 0).any()):
        p.append("negative frame offsets or lengths")
    if n:
        if (c["frame"] < 0).any() or (c["frame"] >= nf).any():
            p.append("chunks refer to frames that do not exist")
        elif (c["foff"] < 0).any() or (c["nbytes"] < 0).any() or (c["foff"] + c["nbytes"] > f["rlen"][c["frame"]]).any():
            p.append("chunks run outside their frame")
        a, b = c["aid"], c["cid"]
        if n > 1 and not ((a[1:] > a[:-1]) | ((a[1:] == a[:-1]) & (b[1:] > b[:-1]))).all():
            p.append("(aid, cid) keys are not sorted and unique")
    return p


@fuzz(60)
@given(idx=chunk_indexes(), codec=st.sampled_from(CODECS))
def test_chunk_index_roundtrip(idx, codec):
    assert _index_problems(idx) == []
    data, raw = idx.encode(codec)
    back = ChunkIndex.decode(data, codec, raw, "x.seg")
    assert _same_index(back, idx)
    assert _index_problems(back) == []


@fuzz(60)
@given(idx=chunk_indexes(), codec=st.sampled_from(CODECS), probes=st.lists(st.integers(0, 2**40), max_size=8))
def test_lazily_decoded_chunk_index_answers_as_the_checked_one(idx, codec, probes):
    """A lazily decoded index (what a handle caches) finds the same first chunk of every instance,
    present or not, from its stored columns as the eagerly checked one does, gives the same
    rows for a few instances (``part``) without widening, and widens to the same columns."""
    data, raw = idx.encode(codec)
    eager = ChunkIndex.decode(data, codec, raw, "x.seg")
    lazy = ChunkIndex.decode(data, codec, raw, "x.seg", lazy=True)
    assert len(lazy) == len(eager) and lazy.nbytes == eager.nbytes
    for aid in sorted(set(idx.chunks["aid"].tolist()) | set(probes) | {0, 51}):
        assert lazy.first_chunk(aid) == eager.first_chunk(aid)
    for some in (probes[:1], probes[:3], sorted(set(idx.chunks["aid"].tolist()))[::2], idx.chunks["aid"][:2].tolist()):
        part = lazy.part(some + [0])
        keep = np.isin(eager.chunks["aid"], some)
        assert part.uid == lazy.uid and part.frames is lazy.frames and lazy._narrow is not None
        assert all(_same(part.chunks[k], eager.chunks[k][keep]) for k in CHUNK_COLUMNS)
    assert _same_index(lazy, eager)


def _lazy_footer(aid, cid, frame, foff, nbytes, rlen=64):
    raw = msgpack.packb(_footer([0] * len(rlen) if isinstance(rlen, list) else [0], [0],
                                [64] if not isinstance(rlen, list) else rlen,
                                [rlen] if not isinstance(rlen, list) else rlen, 0, aid, cid, frame, foff, nbytes),
                        use_bin_type=True)
    return ChunkIndex.decode(codecs.compress("lz4", raw), "lz4", len(raw), "bad.seg", lazy=True)


@pytest.mark.parametrize("footer, probe, culprit", [
    (([1, 3, 3], [0, 4, 2], [0, 0, 0], [0, 8, 16], [8, 8, 8]), 3, "not sorted"),  # cids of instance 3 out of order
    (([1, 3], [0, 0], [0, 2], [0, 8], [8, 8]), 3, "unknown frame"),
    (([1, 3], [0, 0], [0, 0], [0, 60], [8, 8]), 3, "past the end of its frame"),
    (([1, 3], [0, 0], [0, 0], [0, -8], [8, 8]), 3, "negative"),
])
def test_lazily_decoded_chunk_index_checks_the_rows_it_uses(footer, probe, culprit):
    """A one-chunk lookup on a lazily decoded index checks the rows of the instance it looks up
    (a ``CorruptStoreError`` naming the file, never a read outside a frame), and widening the
    columns checks the whole index; instance ids out of order (a binary search would miss
    rows) are refused when the footer is decoded."""
    idx = _lazy_footer(*footer)
    with pytest.raises(CorruptStoreError, match=f"bad.seg.*{culprit}"):
        idx.first_chunk(probe)
    with pytest.raises(CorruptStoreError, match="bad.seg.*inconsistent"):
        idx.chunks
    with pytest.raises(CorruptStoreError, match=f"bad.seg.*{culprit}"):
        idx.part([1, probe])
    assert idx.first_chunk(1) == (0, 0, 8)  # an intact instance of the same index reads
    assert idx.part([1]).chunks["foff"].tolist() == [0]
    with pytest.raises(CorruptStoreError, match="bad.seg.*not sorted"):
        _lazy_footer([1, 5, 3], [0, 0, 0], [0, 0, 0], [0, 8, 16], [8, 8, 8])


@fuzz(100)
@given(data=st.binary(max_size=400), codec=st.sampled_from(CODECS), raw=st.integers(0, 1 << 20))
def test_chunk_index_decode_of_random_bytes_raises_corrupt(data, codec, raw):
    try:
        idx = ChunkIndex.decode(data, codec, raw, "random.seg")
    except CorruptStoreError as e:
        assert "random.seg" in str(e)
    else:  # pragma: no cover - would need random bytes that are a whole msgpack footer
        assert _index_problems(idx) == []


class _MemStorage:
    """The two things ``FrameReader.read_index`` needs from a storage: ``read_ranges`` and ``location``."""

    location = "mem://store"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read_ranges(self, path, starts, ends):
        data = self.files[path]
        out = []
        for s, e in zip(starts, ends):
            if e > len(data):
                raise CorruptStoreError(f"{self.location}/{path}: truncated")
            out.append(data[s:e])
        return out


@fuzz(120)
@given(idx=chunk_indexes(max_chunks=8), codec=st.sampled_from(CODECS), prefix=st.binary(max_size=64), data=st.data())
def test_chunk_index_footer_damage_is_caught_by_its_checksum(idx, codec, prefix, data):
    footer, raw = idx.encode(codec)
    seg = "arrays/00000-a/s00000001-00000000.seg"
    loc = IndexLocation(seg, len(prefix), len(footer), raw, codecs.checksum(footer))
    # intact: it reads back exactly
    fr = FrameReader(_MemStorage({seg: prefix + footer}), codec)
    assert _same_index(fr.read_index("a", Physical("arrays/00000-a", loc)), idx)
    # damaged: flipped bits anywhere in the footer, or a shortened footer length
    kind = data.draw(st.sampled_from(["flip", "short"]), label="kind")
    blob = bytearray(footer)
    if kind == "flip":
        for b in data.draw(st.lists(st.integers(0, 8 * len(blob) - 1), min_size=1, max_size=3, unique=True), label="bits"):
            blob[b // 8] ^= 1 << (b % 8)
    else:
        loc = IndexLocation(seg, len(prefix), data.draw(st.integers(0, len(footer) - 1), label="len"), raw, loc.crc)
    fr = FrameReader(_MemStorage({seg: prefix + bytes(blob)}), codec)
    with pytest.raises(CorruptStoreError, match="s00000001-00000000.seg"):
        fr.read_index("a", Physical("arrays/00000-a", loc))


_i64_cols = st.lists(st.one_of(st.integers(-3, 40), st.sampled_from([I64_MIN, I64_MAX, 2**40])), max_size=6)


@st.composite
def garbage_footers(draw):
    """Footer dicts shaped like the real ones, with columns of random lengths and values."""
    def col(dtype):
        if dtype == np.uint32:
            return np.asarray(draw(st.lists(st.integers(0, 2**32 - 1), max_size=6)), np.uint32).tobytes()
        if dtype == np.uint8:
            return np.asarray(draw(st.lists(st.integers(0, 255), max_size=6)), np.uint8).tobytes()
        return np.asarray(draw(_i64_cols), np.int64).tobytes()

    return {
        "v": 1,
        "segments": draw(st.lists(st.sampled_from(["arrays/00000-a/s1.seg", "../../etc/passwd", "", "/abs.seg"]), max_size=3)),
        "frames": {k: col(t) for k, t in FRAME_COLUMNS.items()},
        "chunks": {k: col(t) for k, t in CHUNK_COLUMNS.items()},
    }


def _footer(seg, off, clen, rlen, crc, aid, cid, frame, foff, nbytes, segments=("arrays/00000-a/s1.seg",)):
    i = lambda v: np.asarray(v, np.int64).tobytes()  # noqa: E731
    n = len(aid)
    return {"v": 1, "segments": list(segments),
            "frames": {"seg": i(seg), "off": i(off), "clen": i(clen), "rlen": i(rlen), "crc": np.asarray([crc] * len(seg), np.uint32).tobytes()},
            "chunks": {"aid": i(aid), "cid": i(cid), "frame": i(frame), "foff": i(foff), "nbytes": i(nbytes),
                       "nn": i([0] * n), "mn": i([0] * n), "mx": i([0] * n),
                       "has": np.zeros(n, np.uint8).tobytes(), "wmask": np.zeros(n, np.uint8).tobytes()}}


@fuzz(100)
@given(footer=garbage_footers(), codec=st.sampled_from(CODECS))
@example(footer=_footer([5], [0], [10], [64], 0, [1], [0], [0], [0], [8]), codec="none")  # segment 5 of 1
@example(footer=_footer([0], [0], [10], [64], 0, [1], [0], [0], [-8], [8]), codec="zstd")  # negative chunk offset
@example(footer=_footer([0], [0], [10], [64], 0, [1, 1], [3, 1], [0, 0], [0, 8], [8, 8]), codec="lz4")  # unsorted
def test_checksummed_garbage_chunk_index_decodes_consistent_or_raises(footer, codec):
    raw = msgpack.packb(footer, use_bin_type=True)
    try:
        idx = ChunkIndex.decode(codecs.compress(codec, raw), codec, len(raw), "garbage.seg")
    except CorruptStoreError:
        return
    assert _index_problems(idx) == []


@pytest.mark.parametrize("change, culprit", [
    (lambda f: f.update(v=3), "index version 3"),
    (lambda f: f["widths"].update({"c.aid": "<f8"}), "unknown width '<f8'"),
    (lambda f: f["widths"].update({"c.aid": "<u8"}), "column 'aid' of 4 bytes does not hold whole '<u8'"),
    (lambda f: f["widths"].update({"c.aid": "|u1"}), "different lengths"),  # 4 rows where the others have 2
    (lambda f: f.pop("widths"), "widths"),  # version 2 without its widths
])
def test_narrowed_chunk_index_with_bad_widths_raises_corrupt(change, culprit):
    """Version 2 footers keep each column at a narrow width and say which; a footer whose
    version or widths cannot be right is a ``CorruptStoreError`` naming what is wrong."""
    raw0, data0 = _footer_v2()
    idx = ChunkIndex.decode(data0, "zstd", raw0, "x.seg")  # the undamaged footer decodes
    assert idx.chunks["aid"].tolist() == [3, 300] and idx.chunks["aid"].dtype == np.int64
    footer = msgpack.unpackb(codecs.decompress("zstd", data0, raw0), raw=False)
    change(footer)
    raw = msgpack.packb(footer, use_bin_type=True)
    with pytest.raises(CorruptStoreError, match=culprit):
        ChunkIndex.decode(codecs.compress("zstd", raw), "zstd", len(raw), "x.seg")


def _footer_v2() -> tuple[int, bytes]:
    idx = ChunkIndex(["arrays/00000-a/s1.seg"],
                     {"seg": np.zeros(1, np.int64), "off": np.zeros(1, np.int64), "clen": np.asarray([64]),
                      "rlen": np.asarray([64]), "crc": np.zeros(1, np.uint32)},
                     {k: np.zeros(2, t) for k, t in CHUNK_COLUMNS.items()} | {"aid": np.asarray([3, 300]),
                                                                            "cid": np.asarray([0, 0])})
    data, raw = idx.encode("zstd")
    return raw, data


def _one_array_store(path: str, codec: str) -> tuple[str, dict, str, str]:
    """A store with one dataset holding ``x`` = 0..9 in chunks of 4; returns the metadata
    file's path and its decoded document, format and compression."""
    with atlas.Atlas.create(path, codec=codec) as s:
        s.create_dataset("d").define_array("x", "float32", ["i"], [10], [4])
        s.open_dataset("d").write_array("x", [0], np.arange(10, dtype=np.float32))
    mp = os.path.join(path, META_PATH)
    with open(mp, "rb") as f:
        obj, fmt, comp = _metaio.decode(f.read(), "m")
    return mp, obj, fmt, comp


@pytest.mark.parametrize("store_codec", CODECS)
def test_index_footers_name_their_codec_and_a_bad_one_is_refused(tmp_path, store_codec):
    """Footers are written in ``INDEX_CODEC`` whatever the store's codec, and each location in the
    metadata says so; an unknown codec there, or one the footer is not in, is a ``CorruptStoreError``
    naming the file, and the store is readable again once the location is right."""
    from atlas._segments import INDEX_CODEC

    path = str(tmp_path / "s")
    mp, obj, fmt, comp = _one_array_store(path, store_codec)
    loc = obj["physical"]["x"]["index"]
    assert len(loc) == 6 and loc[5] == INDEX_CODEC
    with open(os.path.join(path, *loc[0].split("/")), "rb") as f:
        f.seek(loc[1])
        footer = f.read(loc[2])
    assert ChunkIndex.decode(footer, INDEX_CODEC, loc[3], "x.seg").chunks["cid"].tolist() == [0, 1, 2]

    def put(codec):
        with open(mp, "wb") as f:
            f.write(_metaio.encode({**obj, "physical": {"x": {**obj["physical"]["x"], "index": loc[:5] + [codec]}}},
                                   fmt, comp))

    put("brotli")
    with pytest.raises(CorruptStoreError, match="atlas.meta.*codec"):
        atlas.Atlas.open(path)
    put("zstd" if INDEX_CODEC != "zstd" else "lz4")  # a known codec, but not the footer's
    with pytest.raises(CorruptStoreError, match=os.path.basename(loc[0])):
        atlas.Atlas.open(path).open_dataset("d").read_array("x")
    put(INDEX_CODEC)
    assert atlas.Atlas.open(path).open_dataset("d").read_array("x").tolist() == list(range(10))


@pytest.mark.parametrize("store_codec", CODECS)
def test_an_index_beyond_lz4_is_written_in_the_store_codec(tmp_path, monkeypatch, store_codec):
    """An index more than an lz4 block holds (tens of millions of rows; here the limit is
    lowered) is written in the store's codec (zstd for an lz4 store), its location says so,
    and it reads back; a location claiming more bytes than lz4 can decode is refused before
    decoding."""
    from atlas import _segments

    monkeypatch.setattr(_segments, "LZ4_MAX_INPUT", 64)
    path = str(tmp_path / "s")
    mp, obj, fmt, comp = _one_array_store(path, store_codec)
    loc = obj["physical"]["x"]["index"]
    assert loc[5] == ("zstd" if store_codec == "lz4" else store_codec)
    assert atlas.Atlas.open(path).open_dataset("d").read_array("x").tolist() == list(range(10))
    monkeypatch.undo()
    with open(mp, "wb") as f:
        f.write(_metaio.encode({**obj, "physical": {"x": {**obj["physical"]["x"],
                                                          "index": loc[:3] + [257 * loc[2] + 64, loc[4], "lz4"]}}}, fmt, comp))
    with pytest.raises(CorruptStoreError, match="more than lz4 decodes to"):
        atlas.Atlas.open(path).open_dataset("d").read_array("x")


# =============================================================================================
# 4. damaged stores
# =============================================================================================
@st.composite
def damages(draw, size: int, in_place: bool = True):
    """One way of damaging a file of ``size`` bytes (``in_place``: also changes of its bytes)."""
    kinds = ["flip", "flip", "flip", "overwrite", "zero", "truncate", "append", "delete"]
    kind = draw(st.sampled_from(kinds if in_place else ["truncate", "append", "delete"]))
    if kind == "flip" and size:
        bits = draw(st.lists(st.integers(0, 8 * size - 1), min_size=1, max_size=3, unique=True))
        return ("flip", bits)
    if kind in ("overwrite", "zero") and size:
        pos = draw(st.integers(0, size - 1))
        n = draw(st.integers(1, min(64, size - pos)))
        return (kind, pos, draw(st.binary(min_size=n, max_size=n)) if kind == "overwrite" else bytes(n))
    if kind == "truncate" and size:
        return ("truncate", draw(st.integers(0, size - 1)))
    if kind == "append":
        return ("append", draw(st.binary(min_size=1, max_size=64)))
    return ("delete",)


def _apply_damage(full: str, dmg) -> bool:
    """Damage one file; returns whether its bytes changed."""
    if dmg[0] == "delete":
        os.unlink(full)
        return True
    with open(full, "rb") as f:
        data = bytearray(f.read())
    before = bytes(data)
    if dmg[0] == "flip":
        for b in dmg[1]:
            data[b // 8] ^= 1 << (b % 8)
    elif dmg[0] in ("overwrite", "zero"):
        data[dmg[1]:dmg[1] + len(dmg[2])] = dmg[2]
    elif dmg[0] == "truncate":
        del data[dmg[1]:]
    elif dmg[0] == "append":
        data += dmg[1]
    with open(full, "wb") as f:
        f.write(bytes(data))
    return bytes(data) != before


def _expect_named(e: BaseException, victim: str, deleted: bool) -> None:
    """A damaged store may raise only a store error (or, for a deleted file, FileNotFoundError) naming the file."""
    ok = (STORE_ERRORS + (FileNotFoundError,)) if deleted else STORE_ERRORS
    assert isinstance(e, ok), f"{type(e).__name__} from a damaged {victim}: {e}"
    assert os.path.basename(victim) in str(e), f"the error does not name the damaged file {victim}: {e}"


@fuzz(200)
@given(cfg=st.sampled_from(CONFIGS), data=st.data())
def test_damaged_store_returns_correct_data_or_an_error_naming_the_file(refs, workdir, cfg, data):
    ref = refs[cfg]
    path = _copy(ref.path, workdir)
    try:
        victim = data.draw(st.sampled_from(_files(path)), label="file")
        full = os.path.join(path, *victim.split("/"))
        # bytes changed inside zstd segments: test_damaged_zstd_frames_are_detected (a known bug);
        # once it is fixed, let every damage kind hit zstd segments here too
        in_place = victim == META_PATH or cfg[0] != "zstd"
        dmg = data.draw(damages(os.path.getsize(full), in_place), label="damage")
        changed = _apply_damage(full, dmg)
        with _watchdog():
            _check_damaged_store(ref, path, victim, dmg, changed)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _check_damaged_store(ref: Ref, path: str, victim: str, dmg, changed: bool) -> None:
    """Every read of the damaged store: the written data, or an error naming the damaged file."""
    deleted = dmg[0] == "delete"
    what = "metadata" if victim == META_PATH else "segment"
    try:
        s = atlas.Atlas.open(path)
    except Exception as e:  # noqa: BLE001
        assert victim == META_PATH, f"opening failed although only {victim} was damaged: {e!r}"
        _expect_named(e, victim, deleted)
        event(f"{what} {dmg[0]}: open refused ({type(e).__name__})")
        return
    # the metadata passed its checksum: it is the metadata that was written
    assert s.list_datasets() == ref.names
    failed = []
    for (d, a), want in ref.arrays.items():
        ds = s.open_dataset(d)
        assert ds.array_meta(a) == ref.metas[(d, a)]
        assert _same_dict(ds.array_stats(a), ref.stats[(d, a)])
        assert _same_scalar(ds.array_fill_value(a), ref.fills[(d, a)])
        for box in (None, ([1], [2]) if len(want.shape) == 1 else ([15, 25], [10, 10])):
            try:
                got = ds.read_array(a) if box is None else ds.read_array(a, *box)
            except Exception as e:  # noqa: BLE001
                _expect_named(e, victim, deleted)
                failed.append((d, a))
                continue
            exp = want if box is None else want[tuple(slice(o, o + c) for o, c in zip(*box))]
            assert _same(got, exp), f"{d}/{a} read back different data after damaging {victim} ({dmg[0]})"
    for d in ref.names:
        assert _same_dict(s.open_dataset(d).attributes(), ref.attrs[d])
    try:
        stack = s.read_array_across_stacked("grid", ref.names, [15, 25], [10, 10])
    except Exception as e:  # noqa: BLE001
        _expect_named(e, victim, deleted)
        failed.append("stacked")
    else:
        assert _same(stack, np.stack([ref.arrays[(d, "grid")][15:25, 25:35] for d in ref.names]))
    problems = s.verify()
    note(f"failed reads: {failed}; verify: {problems}")
    event(f"{what} {dmg[0]}: " + ("some reads refused" if failed else "every read correct")
          + (", verify() reports it" if problems else ", verify() clean"))
    assert bool(problems) >= bool(failed), "reads failed but verify() found nothing"
    assert changed or not (failed or problems), "the file's bytes did not change, yet reads failed"
    assert all(isinstance(p, str) and p for p in problems)
    # the damaged store still takes new data, persisted by a flush
    fresh = s.create_dataset("after_damage")
    fresh.define_array("added", "int32", ["n"], [3])
    fresh.write_array("added", [0], np.array([1, 2, 3], np.int32))
    s.flush()
    back = atlas.Atlas.open(path).open_dataset("after_damage").read_array("added")
    assert _same(back, np.array([1, 2, 3], np.int32))


@fuzz(60)
@given(array=st.sampled_from(["grid", "big", "ids", "names", "when"]), first=st.booleans(),
       bits=st.lists(st.integers(0, 2**20), min_size=1, max_size=3, unique=True))
@example(array="grid", first=True, bits=[38])  # one flip: the frame decodes to 0 bytes -> ValueError
@example(array="grid", first=True, bits=[34, 800])  # checksum flag + a payload bit: different data, verify() == []
@example(array="big", first=True, bits=[34, 4000])
def test_damaged_zstd_frames_are_detected(refs, workdir, array, first, bits):
    cfg = CONFIGS[0]
    assert cfg[0] == "zstd"
    ref = refs[cfg]
    path = _copy(ref.path, workdir)
    try:
        segs = [f for f in _files(path) if f.startswith(f"arrays/{array}-")]  # arrays/<name>-<hash>/
        victim = segs[0] if first else segs[-1]
        full = os.path.join(path, *victim.split("/"))
        size = os.path.getsize(full)
        dmg = ("flip", sorted({b % (8 * size) for b in bits}))
        changed = _apply_damage(full, dmg)
        with _watchdog():
            _check_damaged_store(ref, path, victim, dmg, changed)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _rewrite_footer(path: str, array: str, mutate, fmt: str, comp: str) -> None:
    """Give ``array`` a new footer (appended to its current segment) with a valid checksum."""
    with open(os.path.join(path, META_PATH), "rb") as f:
        obj, _, _ = _metaio.decode(f.read(), "m")
    seg, off, ln, raw, _, *rest = obj["physical"][array]["index"]
    codec = rest[0] if rest else obj["codec"]  # format 3 locations name the footer's codec
    full = os.path.join(path, *seg.split("/"))
    with open(full, "rb") as f:
        data = f.read()
    footer = msgpack.unpackb(codecs.decompress(codec, data[off:off + ln], raw), raw=False)
    footer = mutate(footer)
    newraw = msgpack.packb(footer, use_bin_type=True)
    comp_footer = codecs.compress(codec, newraw)
    with open(full, "ab") as f:
        f.write(comp_footer)
    obj["physical"][array]["index"] = [seg, len(data), len(comp_footer), len(newraw), codecs.checksum(comp_footer), *rest]
    with open(os.path.join(path, META_PATH), "wb") as f:
        f.write(_metaio.encode(obj, fmt, comp))


@st.composite
def footer_edits(draw):
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from([("frames", k) for k in FRAME_COLUMNS] + [("chunks", k) for k in CHUNK_COLUMNS]
                                     + [("segments", None)]))
        if where[0] == "segments":
            edits.append((where, draw(st.lists(st.sampled_from(["", "../../x.seg", "arrays", "nope.seg"]), max_size=2))))
        else:
            edits.append((where, draw(st.one_of(
                st.tuples(st.just("fill"), st.sampled_from([-9, -1, 0, 1, 2, 5, 1000, 2**40, I64_MAX, I64_MIN])),
                st.tuples(st.just("reverse"), st.none()),
                st.tuples(st.just("resize"), st.integers(-2, 2))))))
    return edits


def _apply_footer_edits(edits):
    def mutate(footer):
        for where, how in edits:
            if where[0] == "segments":
                footer["segments"] = list(how)
                continue
            grp, k = where
            t = (FRAME_COLUMNS if grp == "frames" else CHUNK_COLUMNS)[k]
            width = footer.get("widths", {}).pop(f"{grp[0]}.{k}", None)  # narrowed: edit at full width
            col = np.frombuffer(footer[grp][k], width or t).astype(t)
            kind, v = how
            if kind == "fill":
                col[:] = np.asarray(v).astype(t) if t != np.int64 else v
            elif kind == "reverse":
                col = col[::-1].copy()
            else:
                col = np.resize(col, max(0, len(col) + v)) if v else col
            footer[grp][k] = col.tobytes()
        return footer
    return mutate


@fuzz(60)
@given(cfg=st.sampled_from(CONFIGS), array=st.sampled_from(["grid", "big", "ids", "names", "when"]), edits=footer_edits())
@example(cfg=CONFIGS[0], array="grid", edits=[(("frames", "seg"), ("fill", 5))])  # IndexError
@example(cfg=CONFIGS[0], array="grid", edits=[(("chunks", "foff"), ("fill", -8))])  # ValueError, verify() == []
@example(cfg=CONFIGS[1], array="big", edits=[(("frames", "off"), ("fill", -9))])  # OSError EINVAL
def test_store_with_checksummed_garbage_chunk_index_raises_only_store_errors(refs, workdir, cfg, array, edits):
    ref = refs[cfg]
    path = _copy(ref.path, workdir)
    try:
        _rewrite_footer(path, array, _apply_footer_edits(edits), cfg[1], cfg[2])
        s = atlas.Atlas.open(path)
        problems = s.verify()
        failed = []
        for d in ref.names:
            ds = s.open_dataset(d)
            if array in ds.list_arrays():
                try:
                    ds.read_array(array)
                    ds.array_stats(array)
                except (AtlasError, FileNotFoundError) as e:
                    failed.append(e)
        # reads that fail must fail with a store error, and verify() must have seen it coming
        assert not failed or problems, f"reads failed ({failed[0]!r}) but verify() found nothing"
        # a partial write (merged with the stored chunk) and a flush (merges the index)
        nd = len(ref.metas[("d0", array)]["shape"])
        try:
            s.open_dataset("d0").write_array(array, [0] * nd, ref.arrays[("d0", array)][(slice(0, 1),) * nd])
            s.flush()
        except (AtlasError, FileNotFoundError):
            pass
    finally:
        shutil.rmtree(path, ignore_errors=True)


# =============================================================================================
# 5. random bad arguments to every public method
# =============================================================================================
_NP_SCALARS = [np.int8(-1), np.int64(3), np.uint8(2), np.uint64(7), np.float32(1.5), np.float64("nan"),
               np.bool_(True), np.str_("a"), np.bytes_(b"a"), np.datetime64("2020-01-01"), np.timedelta64(1, "s"),
               np.complex64(1j), np.int64(-5)]
_OTHER_JUNK = [None, True, False, 0, -1, 1, 2, 1.5, float("nan"), float("inf"), -0.0, 1e300, 2**31, I64_MAX,
               2**63, 2**64, 2**100, -(2**100), complex(1, 2), b"", b"\xff", [], [1], [1, 2], [-1, 0], [0, 2**64],
               [1.5, 0], [None], ["a"], (0, 0), {}, {"a": 1}, {1, 2}, frozenset(), range(2), slice(0, 1), Ellipsis,
               object(), np.array(3), np.array([1, 2]), np.array([[1]]), np.zeros(2, "f4"), np.array(["a"]),
               np.array([], np.int64), bytearray(b"ab"), memoryview(b"ab")]
_JUNK_STR = ["", " ", "x", "/", "a/b", "_x", ".", "..", "a\x00b", "\u00fc", "nope", "\udcff", "a\ud800"]
#: bad values of every kind except str (a str could be a path: see _Session.resolve)
JUNK_NONSTR = st.one_of(
    st.sampled_from(_OTHER_JUNK + [v for v in _NP_SCALARS if not isinstance(v, str)]),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.binary(max_size=6),
    st.lists(st.one_of(st.integers(-(2**65), 2**65), st.none(), st.floats(), st.text(max_size=2)), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
#: bad values of every kind
JUNK = st.one_of(JUNK_NONSTR, st.sampled_from(_JUNK_STR + [np.str_("a")]), st.text(max_size=6))
#: scalar junk (for places where a sequence might be valid)
JUNK_SCALAR = st.one_of(st.sampled_from([v for v in _OTHER_JUNK + _NP_SCALARS
                                          if not isinstance(v, (list, tuple, np.ndarray, range, dict, set, frozenset,
                                                                bytes, bytearray, memoryview, str))]),
                        st.integers(-(2**70), 2**70), st.floats(), st.sampled_from(_JUNK_STR))


def _or_junk(valid, junk=JUNK):
    """Mostly the valid value, sometimes junk: calls are valid but for one or two arguments."""
    return st.tuples(st.integers(0, 3), valid, junk).map(lambda t: t[2] if t[0] == 3 else t[1])


#: names of the store under test that the fuzzer must never delete or write
PROTECTED = {"keep", "canary"}
#: arrays of the store under test: name -> (dtype, shape, fill)
KEEP_SPECS = {"kept_f": ("float32", (6, 8)), "kept_s": ("string", (5,)), "kept_t": ("timestamp_nanoseconds", (3,)),
              "kept_i": ("int32", (4,))}
PLAY_SPECS = {"pf": ("float32", (6, 8)), "ps": ("string", (5,)), "pt": ("timestamp_nanoseconds", (3,)),
              "pi": ("int32", (4,)), "p0": ("float64", ())}
_FREE_NAMES = st.one_of(st.sampled_from(["new1", "new2", "play", "x1"]), st.sampled_from(_JUNK_STR),
                        st.text(max_size=6).filter(lambda s: s not in PROTECTED), JUNK_NONSTR)
DATASET_NAMES = st.one_of(st.sampled_from(["keep", "canary", "play"]), _FREE_NAMES)  # for reads only
DELETABLE_DATASETS = _FREE_NAMES
ARRAY_NAMES = st.one_of(st.sampled_from(list(KEEP_SPECS) + list(PLAY_SPECS) + ["new_a", "nope"]), _FREE_NAMES)


@st.composite
def boxes(draw, shape):
    """(start, count) of a read of an array of ``shape``: in bounds, or broken in one way."""
    start = [draw(st.integers(0, s)) for s in shape]
    count = [draw(st.integers(0, s - o)) for s, o in zip(shape, start)]
    how = draw(st.sampled_from(["ok", "ok", "ok", "ok", "out", "rank", "neg", "huge", "np", "tuple", "none", "junk"]))
    if how == "out" and shape:
        d = draw(st.integers(0, len(shape) - 1))
        count[d] = shape[d] - start[d] + draw(st.integers(1, 3))
    elif how == "rank":
        start, count = start + [0], count + [1]
    elif how == "neg" and shape:
        start[draw(st.integers(0, len(shape) - 1))] = -1
    elif how == "huge" and shape:
        start[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from([2**63, 2**64, I64_MAX, 2**100]))
    elif how == "np":
        return np.asarray(start, np.int64), np.asarray(count, np.uint32)
    elif how == "tuple":
        return tuple(start), tuple(count)
    elif how == "none":
        return draw(st.sampled_from([(None, None), (None, count), (start, None)]))
    elif how == "junk":
        return draw(_or_junk(st.just(start))), draw(_or_junk(st.just(count)))
    return start, count


def _values_for(dtype: str, shape, draw):
    n = int(np.prod(shape)) if shape else 1
    if dtype == "string":
        kind = draw(st.sampled_from(["O", "U", "S"]))
        vals = draw(st.lists(st.text(max_size=4) if kind != "S" else st.text("abc\u00e9", max_size=3), min_size=n, max_size=n))
        if kind == "O":
            a = np.empty(n, dtype=object)
            a[:] = vals
            return a.reshape(shape)
        if kind == "S":
            return np.asarray([v.encode() for v in vals], dtype="S").reshape(shape) if n else np.zeros(shape, "S1")
        return np.asarray(vals, dtype="U").reshape(shape) if n else np.zeros(shape, "U1")
    if dtype == "timestamp_nanoseconds":
        return np.asarray(draw(st.lists(st.integers(I64_MIN, I64_MAX), min_size=n, max_size=n)), np.int64).view("M8[ns]").reshape(shape)
    dt = np.dtype(dtype)
    elems = st.floats(width=dt.itemsize * 8) if dt.kind == "f" else st.integers(np.iinfo(dt).min, np.iinfo(dt).max)
    return np.asarray(draw(st.lists(elems, min_size=n, max_size=n)), dt).reshape(shape)


@st.composite
def bad_data(draw, dtype: str, shape):
    """Data that does not fit ``dtype``/``shape`` in one way (or is not an array at all)."""
    how = draw(st.sampled_from(["dtype", "strided", "bigendian", "objects", "rank", "junk"]))
    if how == "junk":
        return draw(JUNK)
    if how == "rank":
        return np.zeros(tuple(shape) + (1,), np.dtype("f4") if dtype == "float32" else np.int64)
    if how == "objects":
        a = np.empty(2, dtype=object)
        a[:] = draw(st.lists(st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=2), st.text(max_size=2)),
                             min_size=2, max_size=2))
        return a
    if how == "strided":
        return _values_for(dtype, (2, 4), draw)[:, ::2] if dtype != "string" else np.asarray([["a", "b"]] * 2, object)[:, ::2]
    if how == "bigendian":
        return np.zeros(shape, ">f4" if dtype != "float32" else ">i4")
    other = draw(st.sampled_from(["f4", "f8", "i4", "i2", "u8", "M8[ns]", "M8[s]", "U3", "S3", "?", "c8", "V4", "i1", "m8[ns]"]))
    return np.zeros(shape, other)


@st.composite
def write_calls(draw):
    name = draw(st.sampled_from(list(PLAY_SPECS)))
    dtype, shape = PLAY_SPECS[name]
    start, count = draw(boxes(shape))
    ok_count = isinstance(count, list) and len(count) == len(shape) and all(type(c) is int and c >= 0 for c in count)
    data = _values_for(dtype, tuple(count), draw) if ok_count else np.zeros(3)
    return (draw(_or_junk(st.just(name), ARRAY_NAMES)), start, draw(_or_junk(st.just(data), bad_data(dtype, shape))))


_VALID_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64",
                 "string", "timestamp_ns", "timestamp_nanoseconds", "datetime64[ns]", "str", "utf8", " int16 "]
_BAD_DTYPES = st.one_of(st.sampled_from(["float16", "bool", "complex64", "object", "M8[s]", "INT8", "", "int", "float"]),
                        st.sampled_from([np.dtype(">i4"), np.dtype("M8[s]"), np.dtype("c8"), np.dtype("V4"), np.bool_,
                                         float, int, str, np.dtype([("a", "i4")])]),
                        JUNK)
_in_range_datetimes = st.one_of(
    st.integers(-(10**17), 10**17).map(lambda v: np.datetime64(v, "us")),
    st.datetimes(min_value=_dt.datetime(1700, 1, 1), max_value=_dt.datetime(2250, 1, 1)),
)


def _fill_for(dtype: str):
    if dtype == "string":
        return st.one_of(st.text(max_size=3), st.sampled_from([np.str_("f")]))
    if dtype in ("timestamp_ns", "timestamp_nanoseconds", "datetime64[ns]"):
        return st.one_of(st.integers(I64_MIN, I64_MAX), _in_range_datetimes)
    if dtype.strip() in ("float32", "float64"):
        return st.one_of(st.floats(width=32), st.integers(-(2**24), 2**24), st.sampled_from([np.float32(0.5), np.int8(3)]))
    if dtype in ("str", "utf8"):
        return st.text(max_size=3)
    info = np.iinfo(np.dtype(dtype.strip()))
    return st.one_of(st.integers(int(info.min), int(info.max)), st.sampled_from([np.int8(-1), np.uint8(3)]))


#: fill values that are wrong for every or for some dtype (huge ints: OverflowError)
_BAD_FILLS = st.one_of(JUNK, st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, 1e39, np.float64(1e39),
                                              np.uint64(2**64 - 1), 300, -1, 1.5, "s", True]))


@st.composite
def define_calls(draw):
    dtype = draw(st.sampled_from(_VALID_DTYPES))
    rank = draw(st.integers(0, 3))
    dims = draw(st.lists(st.sampled_from(["y", "x", "t", "z", "\u00e9"]), min_size=rank, max_size=rank, unique=True))
    shape = draw(st.lists(st.integers(0, 6), min_size=rank, max_size=rank))
    chunk = draw(st.one_of(st.none(), st.lists(st.integers(1, 7) | st.just(I64_MAX), min_size=rank, max_size=rank)))
    fill = draw(st.one_of(st.none(), _fill_for(dtype)))
    bad_dims = st.one_of(JUNK, st.just(dims + ["y"] if dims else ["y"]), st.just(["", "x"][:max(rank, 1)]),
                         st.lists(JUNK_SCALAR, min_size=rank, max_size=rank), st.just(["\udcff", "y", "x"][:max(rank, 1)]))
    huge = st.sampled_from([2**63, 2**64, 2**100, np.uint64(2**64 - 1), I64_MAX])
    bad_shape = st.one_of(JUNK_SCALAR, st.lists(st.one_of(st.integers(-3, -1), JUNK_SCALAR, huge, st.sampled_from(
        [1.0, "2", True, np.float64(2)])), min_size=max(rank, 1), max_size=max(rank, 1)), st.just(shape + [1]),
        st.lists(huge, min_size=2, max_size=2).map(lambda v: [2**32, 2**32] if rank != 2 else v))
    bad_chunk = st.one_of(JUNK_SCALAR, st.just([0] * max(rank, 1)), st.just([-1] * max(rank, 1)), st.just(shape + [1]),
                          st.lists(huge, min_size=rank, max_size=rank))
    args = (draw(_or_junk(st.sampled_from(["new_a", "new_b", "pf"]), _FREE_NAMES)), draw(_or_junk(st.just(dtype), _BAD_DTYPES)),
            draw(_or_junk(st.just(dims), bad_dims)), draw(_or_junk(st.just(shape), bad_shape)),
            draw(_or_junk(st.just(chunk), bad_chunk)), draw(_or_junk(st.just(fill), _BAD_FILLS)))
    return args[:draw(st.sampled_from([4, 5, 6, 6]))]


_ATTR_VALID = st.one_of(
    st.tuples(st.booleans() | st.sampled_from([np.bool_(False)]), st.sampled_from([None, "bool"])),
    st.tuples(st.integers(I64_MIN, I64_MAX) | st.sampled_from([np.int8(-3), np.uint32(7)]), st.sampled_from([None, "int64"])),
    st.tuples(st.integers(-128, 127), st.sampled_from(["int8", "int16"])),
    st.tuples(st.integers(0, 255), st.sampled_from(["uint8", "uint64"])),
    st.tuples(st.floats() | st.sampled_from([np.float32(0.25), np.float16(1.5)]), st.sampled_from([None, "float64"])),
    st.tuples(st.floats(width=32), st.just("float32")),
    st.tuples(st.text(max_size=5) | st.sampled_from([np.str_("s")]), st.sampled_from([None, "string", "str"])),
    st.tuples(_in_range_datetimes, st.sampled_from([None, "timestamp_ns"])),
    st.tuples(st.integers(I64_MIN + 1, I64_MAX), st.just("timestamp_ns")),
)
_ATTR_BAD_DTYPES = st.one_of(st.sampled_from(["bogus", "", "float16", "complex64", "INT8", "uint8", "int8", "bool",
                                              "string", "float32", "timestamp_ns"]), JUNK_NONSTR)
_ATTR_BAD_VALUES = st.one_of(JUNK, st.sampled_from([2**63, -(2**63) - 1, 2**64, 300, -1, 1e39, 10**400, "x", "notadate",
                                                    np.uint64(2**64 - 1), np.complex64(1), np.timedelta64(1, "s")]))


@st.composite
def attribute_calls(draw):
    value, dtype = draw(_ATTR_VALID)
    key = draw(_or_junk(st.sampled_from(["k1", "k2", "n"]), _FREE_NAMES))
    args = (key, draw(_or_junk(st.just(value), _ATTR_BAD_VALUES)), draw(_or_junk(st.just(dtype), _ATTR_BAD_DTYPES)))
    return args if args[2] is not None or draw(st.booleans()) else args[:2]


@st.composite
def read_calls(draw, specs):
    name = draw(st.sampled_from(list(specs)))
    start, count = draw(boxes(specs[name][1]))
    args = (draw(_or_junk(st.just(name), ARRAY_NAMES)), start, count)
    return args[:draw(st.sampled_from([1, 2, 3, 3, 3]))]


NAME_LISTS = st.one_of(JUNK, st.lists(DATASET_NAMES, max_size=3), st.just(["keep", "play"]),
                       st.lists(st.sampled_from(["keep", "keep", "play", "canary"]), min_size=1, max_size=3),
                       st.lists(st.just("keep"), min_size=1, max_size=3).map(tuple),
                       st.just(np.asarray(["keep", "keep"])), st.just("keep"), st.just([]))


@st.composite
def atlas_calls(draw):
    m = draw(st.sampled_from([
        "create_dataset", "open_dataset", "delete_dataset", "dataset_exists", "list_datasets", "list_arrays",
        "read_array_across", "read_array_across_stacked", "read_array_across", "read_array_across_stacked",
        "verify", "flush", "close", "compact", "to_xarray", "to_xarray_many", "add_xr_dataset", "ingest",
        "Atlas.create", "Atlas.open", "repr", "properties",
    ]))
    progress = _or_junk(st.sampled_from([False, None, True, "<progress_fn>"]), JUNK)
    if m in ("open_dataset", "dataset_exists"):
        args = (draw(DATASET_NAMES),)
    elif m in ("create_dataset", "delete_dataset"):
        args = (draw(DELETABLE_DATASETS),)
    elif m.startswith("read_array_across"):
        name, start, count = (list(draw(read_calls(KEEP_SPECS))) + [None, None])[:3]
        args = (name, draw(NAME_LISTS), start, count, draw(progress))[:draw(st.integers(2, 5))]
    elif m == "to_xarray":
        args = (draw(_or_junk(st.sampled_from(["keep", "play"]), DATASET_NAMES)),
                draw(st.one_of(st.none(), st.just("auto"), JUNK)))[:draw(st.integers(1, 2))]
    elif m == "to_xarray_many":
        # concat_dim: not a dimension the datasets already have (test_to_xarray_many_refuses_a_clashing_concat_dim)
        dims = {"y", "x", "t", "n", "a"}
        concat = st.one_of(st.just("dataset"), st.just("kept_f"), JUNK_NONSTR,
                           st.sampled_from([s for s in _JUNK_STR if s not in dims]))
        args = (draw(NAME_LISTS), draw(concat), draw(JUNK | st.booleans()),
                draw(st.one_of(st.none(), st.just("auto"), JUNK)), draw(progress))[:draw(st.integers(1, 5))]
    elif m == "add_xr_dataset":
        args = (draw(_or_junk(st.sampled_from(["<xr>", "<xr_chunked>"]), st.one_of(st.just("<xr_complex>"), JUNK_NONSTR))),
                draw(_or_junk(st.sampled_from(["new1", "new2"]), DELETABLE_DATASETS)),
                draw(st.one_of(st.none(), JUNK, st.fixed_dictionaries({"v": st.lists(st.integers(-1, 4) | JUNK, max_size=2)}))))
    elif m == "compact":
        args = (draw(progress),)[:draw(st.integers(0, 1))]
    elif m == "ingest":
        files = _or_junk(st.sampled_from(["<nc>", "<nc_glob>", ["<nc>", "<nc>"], "<file>", "<glob_none>", []]), JUNK_NONSTR)
        args = (draw(files), draw(_or_junk(st.sampled_from(["stem", "name"]), JUNK)),
                draw(_or_junk(st.sampled_from([None, "netcdf4", "scipy"]), st.one_of(st.just("bogus"), JUNK_NONSTR))),
                draw(_or_junk(st.sampled_from([None, 1, 2]), JUNK)), draw(progress))[:draw(st.integers(1, 5))]
    elif m in ("Atlas.create", "Atlas.open"):
        # (create under a regular file: test_create_under_a_regular_file_raises_a_documented_error)
        src = draw(_or_junk(st.sampled_from(["<store>", "<fresh>", "<file>", "<missing>", "<nul>"]
                                            + (["<under_file>"] if m == "Atlas.open" else [])), JUNK_NONSTR))
        opts = (draw(_or_junk(st.sampled_from(["zstd", "lz4", "none", "uncompressed", " ZSTD "]),
                              st.one_of(st.just("gzip"), JUNK_NONSTR))),
                draw(_or_junk(st.sampled_from(["json", "msgpack", "mp"]), st.one_of(st.just("yaml"), JUNK_NONSTR))),
                draw(_or_junk(st.sampled_from(["none", "zstd", "lz4"]), st.one_of(st.just("gzip"), JUNK_NONSTR))))
        args = (src,) + (opts[:draw(st.integers(0, 3))] if m == "Atlas.create" else ())
    else:
        args = ()
    return m, args


@st.composite
def view_calls(draw):
    m = draw(st.sampled_from([
        "define_array", "define_array", "write_array", "write_array", "write_array", "read_array", "read_array",
        "read_arrays", "delete_array", "array_meta", "array_fill_value", "array_stats", "set_attribute",
        "set_attribute", "get_attribute", "attributes", "list_arrays", "name", "repr",
    ]))
    readonly = m in ("read_array", "read_arrays", "array_meta", "array_fill_value", "array_stats", "get_attribute",
                     "attributes", "list_arrays", "name", "repr")
    view = draw(st.sampled_from(["play", "keep"])) if readonly else "play"
    specs = KEEP_SPECS if view == "keep" else PLAY_SPECS
    if m == "define_array":
        args = draw(define_calls())
    elif m == "write_array":
        args = draw(write_calls())
    elif m == "read_array":
        args = draw(read_calls(specs))
    elif m == "read_arrays":
        rc = draw(read_calls(specs))
        names = draw(_or_junk(st.lists(st.sampled_from(list(specs)), max_size=3), st.one_of(
            JUNK, st.lists(ARRAY_NAMES, max_size=3))))
        args = (names,) + tuple(rc[1:])
    elif m == "delete_array":
        args = (draw(_or_junk(st.sampled_from(list(PLAY_SPECS) + ["new_a"]), _FREE_NAMES)),)
    elif m in ("array_meta", "array_fill_value", "array_stats"):
        args = (draw(_or_junk(st.sampled_from(list(specs)), ARRAY_NAMES)),)
    elif m == "set_attribute":
        args = draw(attribute_calls())
    elif m == "get_attribute":
        args = (draw(_or_junk(st.sampled_from(["k1", "n", "nope"]), _FREE_NAMES)),)
    else:
        args = ()
    return view, m, args


def _build_api_store(path: str, meta_format: str) -> dict:
    """The store the bad-argument fuzzers start from: kept (flushed) data, a canary, a playground."""
    s = atlas.Atlas.create(path, codec="zstd", meta_format=meta_format)
    kept = {}
    k = s.create_dataset("keep")
    k.define_array("kept_f", "float32", ["y", "x"], [6, 8], [4, 4], fill_value=float("nan"))
    kept["kept_f"] = np.arange(48, dtype=np.float32).reshape(6, 8)
    k.define_array("kept_s", "string", ["n"], [5], [2])
    kept["kept_s"] = np.array(["a", "", "\u00e9t\u00e9", "dd", "e"], dtype=object)
    k.define_array("kept_t", "timestamp_ns", ["t"], [3])
    kept["kept_t"] = np.array(["2000-01-01", "NaT", "2262-01-01"], "M8[ns]")
    k.define_array("kept_i", "int32", ["n"], [4])
    kept["kept_i"] = np.array([-1, 0, 1, 2**31 - 1], np.int32)
    for name, v in kept.items():
        k.write_array(name, [0] * v.ndim, v)
    k.set_attribute("n", 7)
    k.set_attribute("s", "text")
    k.set_attribute("f", float("nan"))
    c = s.create_dataset("canary")
    c.define_array("c", "int64", ["n"], [4])
    c.write_array("c", [0], np.zeros(4, np.int64))
    p = s.create_dataset("play")
    p.define_array("pf", "float32", ["y", "x"], [6, 8], [4, 4], fill_value=float("nan"))
    p.define_array("ps", "string", ["n"], [5], [2])
    p.define_array("pt", "timestamp_ns", ["t"], [3])
    p.define_array("pi", "int32", ["n"], [4], fill_value=-7)
    p.define_array("p0", "float64", [], [])
    p.write_array("pf", [1, 1], np.ones((2, 2), np.float32))
    s.flush()
    return {"kept": kept, "attrs": atlas.Atlas.open(path).open_dataset("keep").attributes()}


@pytest.fixture(scope="module")
def api_refs(workdir):
    out = {}
    for mf in META_FORMATS:
        path = os.path.join(workdir, f"api-{mf}")
        out[mf] = (path, _build_api_store(path, mf))
    return out


class _Session:
    """One store under fuzzing, with the invariants checked after every call."""

    def __init__(self, path: str, ref: dict, workdir: str) -> None:
        self.path = path
        self.ref = ref
        self.workdir = workdir
        self.store = atlas.Atlas.open(path)
        self.canary = 0
        self.file = os.path.join(workdir, "a_plain_file")
        if not os.path.exists(self.file):
            with open(self.file, "w") as f:
                f.write("not a store")

    def resolve(self, v):
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        if isinstance(v, str) and v.startswith("<") and v.endswith(">"):
            if v == "<store>":
                return self.path
            if v == "<fresh>":
                return os.path.join(tempfile.mkdtemp(dir=self.workdir), "new_store")
            if v == "<file>":
                return self.file
            if v == "<missing>":
                return os.path.join(self.workdir, "missing", "nowhere")
            if v == "<nul>":
                return os.path.join(self.workdir, "bad\x00name")
            if v == "<under_file>":
                return os.path.join(self.file, "sub")
            if v == "<progress_fn>":
                return lambda done, total: None
            if v in ("<nc>", "<nc_glob>", "<glob_none>"):
                folder = os.path.join(self.workdir, "ingest_src")
                if not os.path.exists(folder):
                    import xarray as xr

                    os.makedirs(folder)
                    xr.Dataset({"v": ("a", np.arange(3.0))}, attrs={"title": "t"}).to_netcdf(os.path.join(folder, "ing.nc"))
                return {"<nc>": os.path.join(folder, "ing.nc"), "<nc_glob>": os.path.join(folder, "*.nc"),
                        "<glob_none>": os.path.join(folder, "*.nomatch")}[v]
            if v.startswith("<xr"):
                import xarray as xr

                if v == "<xr_complex>":
                    return xr.Dataset({"v": ("a", np.arange(3) * 1j)})
                ds = xr.Dataset({"v": ("a", np.arange(4.0))}, coords={"a": np.arange(4)}, attrs={"k": 1})
                return ds.chunk({"a": 2}) if v == "<xr_chunked>" else ds
        return v

    def check(self) -> None:
        """The store still works: a canary write + read, the flushed data intact."""
        self.canary += 1
        c = self.store.open_dataset("canary")
        c.write_array("c", [0], np.full(4, self.canary, np.int64))
        assert _same(c.read_array("c"), np.full(4, self.canary, np.int64))
        k = self.store.open_dataset("keep")
        for name, v in self.ref["kept"].items():
            assert _same(k.read_array(name), v), f"kept array {name} changed"
        assert _same_dict(k.attributes(), self.ref["attrs"])

    def finish(self) -> None:
        """A final flush must work, and everything read before it reads the same after a reopen."""
        before = {}
        for d in self.store.list_datasets():
            ds = self.store.open_dataset(d)
            before[d] = ({a: (ds.array_meta(a), ds.array_fill_value(a), ds.read_array(a)) for a in ds.list_arrays()},
                         ds.attributes())
        self.store.flush()
        s2 = atlas.Atlas.open(self.path)
        assert s2.list_datasets() == list(before)
        for d, (arrays, attrs) in before.items():
            ds = s2.open_dataset(d)
            assert ds.list_arrays() == list(arrays)
            for a, (am, fill, data) in arrays.items():
                assert ds.array_meta(a) == am
                assert _same_scalar(ds.array_fill_value(a), fill)
                assert _same(ds.read_array(a), data), f"{d}/{a} reads differently after flush + reopen"
            assert _same_dict(ds.attributes(), attrs)
        assert _same(s2.open_dataset("canary").read_array("c"), np.full(4, self.canary, np.int64))
        assert s2.verify() == []


def _call(session: _Session, target, m: str, args: tuple):
    args = tuple(session.resolve(a) for a in args)
    if m == "repr":
        return repr(target)
    if m == "name":
        return target.name
    if m == "properties":
        return (target.codec, target.meta_format, target.meta_compression)
    if m == "Atlas.create":
        return atlas.Atlas.create(*args)
    if m == "Atlas.open":
        return atlas.Atlas.open(*args)
    return getattr(target, m)(*args)


def _expected_attr(value, dtype):
    """What get_attribute must return after set_attribute(key, value, dtype) succeeded (None: not modelled)."""
    if dtype is None:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value)
        if isinstance(value, (str, np.str_)):
            return str(value)
        if isinstance(value, (np.datetime64, _dt.datetime)):
            return np.datetime64(value, "ns")  # in-range values only here
        return None
    d = {"str": "string", "timestamp_ns": "timestamp_nanoseconds"}.get(dtype, dtype)
    if d in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        return int(value)
    if d == "timestamp_nanoseconds":
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return np.datetime64(int(value), "ns")
        if isinstance(value, (np.datetime64, _dt.datetime)):
            return np.datetime64(value, "ns")  # in-range values only here
        return None  # strings: parsed by numpy, not modelled
    if d == "float64":
        return float(value)
    if d == "float32":
        return float(np.float32(value))
    if d == "bool":
        return bool(value)
    if d == "string":
        return str(value)
    return None


def _check_atlas_result(session: _Session, m: str, args: tuple) -> None:
    """Model checks after an Atlas call that succeeded."""
    if m in ("create_dataset", "add_xr_dataset"):
        name = args[0] if m == "create_dataset" else args[1]
        assert _valid_name(name), f"{m} accepted the invalid dataset name {name!r}"
        assert session.store.dataset_exists(name)
    elif m == "delete_dataset":
        assert not session.store.dataset_exists(args[0])


def _check_view_result(session: _Session, view, m: str, args: tuple) -> None:
    """Model checks after a call that succeeded: nothing may be stored differently from what was given."""
    if m in ("define_array", "set_attribute"):
        assert _valid_name(args[0]), f"{m} accepted the invalid name {args[0]!r}"
    if m == "write_array":
        name, start, data = args
        got = view.read_array(name, list(start), list(data.shape))
        if data.dtype.kind in "SO" or data.dtype.kind == "U":
            want = np.empty(data.shape, dtype=object)
            want[...] = [x.decode() if isinstance(x, bytes) else str(x) for x in data.reshape(-1).tolist()] \
                if data.size else []
        else:
            want = data
        assert _same(got, want), f"write_array({name!r}, {start!r}) reads back different data"
    elif m == "set_attribute":
        key, value = args[0], args[1]
        dtype = args[2] if len(args) > 2 else None
        want = _expected_attr(value, dtype)
        if want is not None:
            assert _same_scalar(view.get_attribute(key), want), f"set_attribute({key!r}, {value!r}, {dtype!r})"
    elif m == "define_array":
        name = args[0]
        am = view.array_meta(name)
        assert am is not None and len(am["shape"]) == len(am["dimension_names"]) == len(am["chunk_shape"])
        assert am["shape"] == [int(x) for x in args[3]] and am["dimension_names"] == list(args[2])
        assert all(_valid_name(d) or (isinstance(d, str) and d) for d in am["dimension_names"])
        full = view.read_array(name)
        assert full.shape == tuple(am["shape"])
        fill = view.array_fill_value(name)
        if fill is not None and full.size:
            cell = full.reshape(-1)[0]
            if am["dtype"] == "timestamp_nanoseconds":
                assert int(cell.view(np.int64)) == fill
            elif am["dtype"] == "string":
                assert cell == fill
            else:
                assert _same(np.asarray(cell), np.asarray(fill, dtype=full.dtype))


@fuzz(60)
@given(mf=st.sampled_from(META_FORMATS), calls=st.lists(atlas_calls(), min_size=1, max_size=6))
def test_atlas_methods_with_random_bad_arguments(api_refs, workdir, mf, calls):
    path0, ref = api_refs[mf]
    path = _copy(path0, workdir)
    try:
        session = _Session(path, ref, workdir)
        with _watchdog():
            for m, args in calls:
                note(f"Atlas.{m}{args!r}")
                try:
                    _call(session, session.store, m, args)
                except API_ERRORS as e:
                    event(f"Atlas.{m}: {type(e).__name__}")
                else:
                    event(f"Atlas.{m}: accepted")
                    _check_atlas_result(session, m, args)
                session.check()
            session.finish()
    finally:
        shutil.rmtree(path, ignore_errors=True)


@fuzz(100)
@given(mf=st.sampled_from(META_FORMATS), calls=st.lists(view_calls(), min_size=1, max_size=8))
def test_dataset_view_methods_with_random_bad_arguments(api_refs, workdir, mf, calls):
    path0, ref = api_refs[mf]
    path = _copy(path0, workdir)
    try:
        session = _Session(path, ref, workdir)
        with _watchdog():
            for view_name, m, args in calls:
                note(f"DatasetView({view_name!r}).{m}{args!r}")
                try:
                    view = session.store.open_dataset(view_name)
                except KeyError:  # "play" was deleted by an earlier call
                    continue
                try:
                    _call(session, view, m, args)
                except API_ERRORS as e:
                    event(f"DatasetView.{m}: {type(e).__name__}")
                else:
                    event(f"DatasetView.{m}: accepted")
                    _check_view_result(session, view, m, args)
                session.check()
            session.finish()
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- bugs found by the bad-argument fuzzers, each with its own focused test -------------------
# Found by this file and fixed meanwhile (commit 9d9d4eb): names, dims and attribute strings with
# lone surrogates, shape extents >= 2**63 and (msgpack) chunk extents >= 2**64 were accepted, and
# every later flush() then failed (the schema table being append-only, even after delete_array).
_UNPERSISTABLE = st.one_of(
    st.tuples(st.sampled_from(["dataset", "array", "dim", "attr_key", "attr_value"]),
              st.text(min_size=1, max_size=3).map(lambda s: "a" + s) | st.just("a"),
              st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
    st.tuples(st.sampled_from(["shape", "chunk"]), st.integers(I64_MAX + 1, 2**70) | st.just(2**64), st.none()),
)


@fuzz(30)
@given(mf=st.sampled_from(META_FORMATS), case=_UNPERSISTABLE)
@example(mf="json", case=("dim", "a", "\udcff"))
@example(mf="json", case=("dataset", "a", "\ud800"))
@example(mf="msgpack", case=("attr_value", "a", "\udfff"))
@example(mf="json", case=("shape", 2**64, None))
@example(mf="msgpack", case=("chunk", 2**64, None))
def test_values_that_cannot_be_persisted_are_refused(workdir, mf, case):
    path = tempfile.mkdtemp(dir=workdir)
    try:
        s = atlas.Atlas.create(path, meta_format=mf)
        ds = s.create_dataset("d")
        s.flush()
        kind, a, b = case
        bad = (a + b) if isinstance(a, str) else a
        try:
            if kind == "dataset":
                s.create_dataset(bad)
            elif kind == "array":
                ds.define_array(bad, "int8", ["n"], [2])
            elif kind == "dim":
                ds.define_array("arr", "int8", [bad], [2])
            elif kind == "attr_key":
                ds.set_attribute(bad, 1)
            elif kind == "attr_value":
                ds.set_attribute("k", bad)
            elif kind == "shape":
                ds.define_array("arr", "int8", ["n"], [bad], [4])
            elif kind == "chunk":
                ds.define_array("arr", "int8", ["n"], [3], [bad])
        except API_ERRORS:
            return  # refused up front: fine
        s.flush()  # accepted: it must then be persistable
        assert atlas.Atlas.open(path).list_datasets() == s.list_datasets()
    finally:
        shutil.rmtree(path, ignore_errors=True)


_NS = {"D": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3}
_EPOCH = _dt.datetime(1970, 1, 1)


@st.composite
def timestamps_with_exact_ns(draw):
    """A datetime-like value and its exact nanoseconds since the epoch (Python ints: no wrapping)."""
    kind = draw(st.sampled_from(["datetime64", "datetime", "str"]))
    if kind == "datetime64":
        unit = draw(st.sampled_from(sorted(_NS)))
        v = draw(st.integers(-(2**62), 2**62) | st.integers(-(10**6), 10**6))
        return np.datetime64(v, unit), v * _NS[unit]
    d = draw(st.datetimes(min_value=_dt.datetime(1, 1, 1), max_value=_dt.datetime(9999, 12, 31)))
    ns = (d - _EPOCH) // _dt.timedelta(microseconds=1) * 1000
    return (d, ns) if kind == "datetime" else (d.isoformat(), ns)


@fuzz(60)
@given(ts=timestamps_with_exact_ns(), where=st.sampled_from(["attribute", "fill"]))
@example(ts=(np.datetime64("9999-01-01", "D"), (_dt.datetime(9999, 1, 1) - _EPOCH) // _dt.timedelta(microseconds=1) * 1000),
         where="attribute")
@example(ts=(_dt.datetime(1000, 1, 1), (_dt.datetime(1000, 1, 1) - _EPOCH) // _dt.timedelta(microseconds=1) * 1000),
         where="fill")
def test_out_of_range_timestamps_are_refused_not_wrapped(workdir, ts, where):
    value, ns = ts
    s = atlas.Atlas.create(tempfile.mkdtemp(dir=workdir))
    ds = s.create_dataset("d")
    try:
        if where == "attribute":
            ds.set_attribute("t", value, dtype="timestamp_ns" if isinstance(value, str) else None)
            got = int(ds.get_attribute("t").astype(np.int64))
        else:
            if isinstance(value, str):
                value = np.datetime64(value)
            ds.define_array("a", "timestamp_ns", ["t"], [2], fill_value=value)
            got = ds.array_fill_value("a")
    except (OverflowError, ValueError):
        assert not (I64_MIN < ns <= I64_MAX), f"{value!r} is in range but was refused"
        return
    assert got == ns, f"{value!r} was stored as {np.datetime64(got, 'ns')} ({got} ns instead of {ns})"


@fuzz(10)
@given(dim=st.sampled_from(["y", "x", "n"]))
@example(dim="y")
def test_to_xarray_many_refuses_a_clashing_concat_dim(api_refs, dim):
    pytest.importorskip("xarray")
    path, _ = api_refs["json"]
    s = atlas.Atlas.open(path)
    try:
        out = s.to_xarray_many(["keep", "keep"], concat_dim=dim)
    except ValueError:
        return
    for v in out.data_vars.values():
        assert len(set(v.dims)) == len(v.dims), f"duplicated dimension in {v.dims}"


@fuzz(5)
@given(depth=st.integers(1, 3))
@example(depth=1)
def test_create_under_a_regular_file_raises_a_documented_error(workdir, depth):
    parent = os.path.join(tempfile.mkdtemp(dir=workdir), "plain_file")
    with open(parent, "w") as f:
        f.write("x")
    with pytest.raises(API_ERRORS):
        atlas.Atlas.create(os.path.join(parent, *["sub"] * depth))
