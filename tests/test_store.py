"""Atlas lifecycle: create / open, codecs and metadata formats, the dataset registry,
the context manager and repr."""

from __future__ import annotations

import json
import os
import uuid
import zlib
from pathlib import Path



import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlas
from atlas import Atlas, _metaio
from atlas.errors import CorruptStoreError

CODECS = {"zstd": "zstd", "lz4": "lz4", "none": "none", "uncompressed": "none"}
META_FORMATS = {"json": "json", "msgpack": "msgpack", "mp": "msgpack"}
META_COMPRESSIONS = ["none", "zstd", "lz4"]

HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root``: relative path -> (size, mtime_ns, bytes)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            st_ = p.stat()
            out[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns, p.read_bytes())
    return out


def seg_files(root: Path) -> list[Path]:
    return sorted((root / "arrays").glob("*/*.seg"))


def fresh(tmp_path: Path) -> Path:
    return tmp_path / f"store-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- create / open, every codec & format
@pytest.mark.parametrize("meta_compression", META_COMPRESSIONS)
@pytest.mark.parametrize("meta_format", list(META_FORMATS))
@pytest.mark.parametrize("codec", list(CODECS))
def test_create_open_roundtrip_every_codec_and_format(tmp_path, codec, meta_format, meta_compression):
    path = tmp_path / "s"
    rng = np.random.default_rng(0)
    small = rng.integers(-1000, 1000, size=(5, 7), dtype=np.int32)
    big = rng.standard_normal((64, 128))  # 64 KiB chunks: compressed on their own
    s = Atlas.create(path, codec=codec, meta_format=meta_format, meta_compression=meta_compression)
    ds = s.create_dataset("d")
    ds.define_array("small", "int32", ["y", "x"], [5, 7], [2, 3], fill_value=-1)
    ds.write_array("small", [0, 0], small)
    ds.define_array("big", "float64", ["y", "x"], [128, 128], [64, 128])
    ds.write_array("big", [0, 0], big)
    ds.define_array("txt", "string", ["i"], [3], [3], fill_value="-")  # one chunk (multi-chunk strings: test_arrays)
    ds.write_array("txt", [1], np.array(["é", "日本"], dtype=object))
    ds.set_attribute("x", 1.5)
    ds.set_attribute("nan", float("nan"))
    s.close()

    s2 = Atlas.open(path)
    assert s2.codec == CODECS[codec]
    assert s2.meta_format == META_FORMATS[meta_format]
    assert s2.meta_compression == meta_compression
    r = repr(s2)
    assert repr(CODECS[codec]) in r and repr(META_FORMATS[meta_format]) in r
    ds2 = s2.open_dataset("d")
    np.testing.assert_array_equal(ds2.read_array("small"), small)
    np.testing.assert_array_equal(ds2.read_array("big", [0, 0], [64, 128]), big)
    np.testing.assert_array_equal(ds2.read_array("big", [64, 0], [64, 128]), np.zeros((64, 128)))
    assert ds2.read_array("txt").tolist() == ["-", "é", "日本"]
    assert ds2.get_attribute("x") == 1.5
    assert np.isnan(ds2.get_attribute("nan"))

    # a flush from the reopened store keeps the detected formats
    ds3 = s2.create_dataset("e")
    ds3.set_attribute("k", 7)
    s2.flush()
    s3 = Atlas.open(path)
    assert (s3.codec, s3.meta_format, s3.meta_compression) == (CODECS[codec], META_FORMATS[meta_format], meta_compression)
    assert s3.list_datasets() == ["d", "e"]
    assert s3.open_dataset("e").get_attribute("k") == 7
    np.testing.assert_array_equal(s3.open_dataset("d").read_array("small"), small)


@pytest.mark.parametrize("codec", list(CODECS))
def test_codec_is_really_applied_to_segments(tmp_path, codec):
    """Highly compressible data: the segment is small with zstd/lz4 and full size with none."""
    path = tmp_path / "s"
    with Atlas.create(path, codec=codec) as s:
        ds = s.create_dataset("d")
        ds.define_array("z", "float64", ["i"], [1 << 17], [1 << 15])
        ds.write_array("z", [0], np.zeros(1 << 17))
    raw_bytes = (1 << 17) * 8
    size = sum(p.stat().st_size for p in seg_files(path))
    if CODECS[codec] == "none":
        assert size >= raw_bytes
    else:
        assert size < raw_bytes // 20
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("d").read_array("z"), np.zeros(1 << 17))


@pytest.mark.parametrize("meta_compression", META_COMPRESSIONS)
@pytest.mark.parametrize("meta_format", ["json", "msgpack"])
def test_metadata_files_differ_by_format_and_are_detected(tmp_path, meta_format, meta_compression):
    """The choices change what is on disk, and open() finds them without being told."""
    paths = {}
    for fmt, comp in dict.fromkeys([(meta_format, meta_compression), ("json", "none")]):
        p = tmp_path / f"{fmt}-{comp}"
        with Atlas.create(p, meta_format=fmt, meta_compression=comp) as s:
            s.create_dataset("dataset_with_a_long_recognisable_name").set_attribute("k", "v" * 200)
        paths[(fmt, comp)] = p
    if (meta_format, meta_compression) != ("json", "none"):
        # (version files are named with a random token: compared by their generation)
        a = {k.split("-")[0]: v for k, v in snapshot(paths[(meta_format, meta_compression)]).items()}
        b = {k.split("-")[0]: v for k, v in snapshot(paths[("json", "none")]).items()}
        assert a.keys() == b.keys()
        assert any(a[k][2] != b[k][2] for k in a)
    # the plain-json store holds its names readably; a compressed one does not
    plain = b"".join(v[2] for v in snapshot(paths[("json", "none")]).values())
    assert b"dataset_with_a_long_recognisable_name" in plain
    if meta_compression != "none":
        comp_bytes = b"".join(v[2] for v in snapshot(paths[(meta_format, meta_compression)]).values())
        assert b"v" * 200 not in comp_bytes
    s = Atlas.open(paths[(meta_format, meta_compression)])
    assert s.open_dataset("dataset_with_a_long_recognisable_name").get_attribute("k") == "v" * 200


# ---------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    "kwargs, accepted",
    [
        ({"codec": "gzip"}, ["zstd", "lz4", "none"]),
        ({"codec": "snappy"}, ["zstd", "lz4", "none", "uncompressed"]),
        ({"codec": ""}, ["zstd", "lz4", "none"]),
        ({"meta_format": "yaml"}, ["json", "msgpack", "mp"]),
        ({"meta_format": "pickle"}, ["json", "msgpack"]),
        ({"meta_compression": "gzip"}, ["none", "zstd", "lz4"]),
        ({"meta_compression": "uncompressed-ish"}, ["none", "zstd", "lz4"]),
    ],
)
def test_unknown_option_raises_value_error_listing_accepted(tmp_path, kwargs, accepted):
    path = tmp_path / "s"
    bad = next(iter(kwargs.values()))
    with pytest.raises(ValueError) as ei:
        Atlas.create(path, **kwargs)
    msg = str(ei.value)
    for a in accepted:
        assert a in msg, (a, msg)
    if bad:
        assert bad in msg
    # nothing usable was created
    with pytest.raises(FileNotFoundError):
        Atlas.open(path)


@pytest.mark.parametrize("kwargs", [{"codec": 3}, {"meta_format": None}, {"meta_compression": 1.0}])
def test_non_string_options_rejected(tmp_path, kwargs):
    with pytest.raises((TypeError, ValueError)):
        Atlas.create(tmp_path / "s", **kwargs)
    with pytest.raises(FileNotFoundError):
        Atlas.open(tmp_path / "s")


# ---------------------------------------------------------------- existing / missing stores
@pytest.mark.parametrize("codec2", ["zstd", "lz4", "none"])
@pytest.mark.parametrize("flushed_data", [True, False])
def test_create_over_existing_store_raises_and_leaves_it_intact(tmp_path, codec2, flushed_data):
    path = tmp_path / "s"
    data = np.arange(20, dtype=np.int64).reshape(4, 5)
    s = Atlas.create(path, codec="lz4", meta_format="msgpack")
    if flushed_data:
        ds = s.create_dataset("d")
        ds.define_array("a", "int64", ["y", "x"], [4, 5], [3, 2])
        ds.write_array("a", [0, 0], data)
        ds.set_attribute("who", "me")
        s.flush()
    before = snapshot(path)
    with pytest.raises(FileExistsError):
        Atlas.create(path, codec=codec2)
    with pytest.raises(FileExistsError):
        Atlas.create(str(path), codec=codec2, meta_format="json", meta_compression="zstd")
    assert snapshot(path) == before
    s2 = Atlas.open(path)
    assert s2.codec == "lz4" and s2.meta_format == "msgpack"
    if flushed_data:
        ds2 = s2.open_dataset("d")
        np.testing.assert_array_equal(ds2.read_array("a"), data)
        assert ds2.get_attribute("who") == "me"
    else:
        assert s2.list_datasets() == []


def test_create_in_existing_empty_directory_and_str_path(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with Atlas.create(str(d)) as s:
        s.create_dataset("a")
    assert Atlas.open(str(d)).list_datasets() == ["a"]


def test_open_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        Atlas.open(tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError):
        Atlas.open(str(tmp_path / "nested" / "does-not-exist"))
    assert not (tmp_path / "does-not-exist").exists()
    assert not (tmp_path / "nested").exists()


def test_open_empty_directory_raises_file_not_found(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(FileNotFoundError):
        Atlas.open(tmp_path / "e")


def test_create_writes_an_openable_empty_store_immediately(tmp_path):
    path = tmp_path / "s"
    Atlas.create(path, codec="none", meta_format="mp", meta_compression="lz4")  # never flushed explicitly
    s = Atlas.open(path)
    assert s.list_datasets() == [] and s.list_arrays() == []
    assert (s.codec, s.meta_format, s.meta_compression) == ("none", "msgpack", "lz4")


# ---------------------------------------------------------------- dataset registry
def test_dataset_registry_basics(tmp_path):
    s = Atlas.create(tmp_path / "s")
    assert s.list_datasets() == []
    assert not s.dataset_exists("a")
    a = s.create_dataset("a")
    assert isinstance(a, atlas.DatasetView)
    assert a.name == "a"
    assert s.dataset_exists("a")
    with pytest.raises(FileExistsError):
        s.create_dataset("a")
    with pytest.raises(KeyError):
        s.open_dataset("b")
    b = s.create_dataset("b")
    b.set_attribute("k", 1)
    assert s.open_dataset("b").get_attribute("k") == 1
    assert s.open_dataset("b").name == "b"
    s.delete_dataset("a")
    assert not s.dataset_exists("a")
    assert s.list_datasets() == ["b"]
    with pytest.raises(KeyError):
        s.open_dataset("a")
    with pytest.raises(KeyError):
        s.delete_dataset("a")
    s.flush()
    s2 = Atlas.open(tmp_path / "s")
    assert s2.list_datasets() == ["b"]
    assert not s2.dataset_exists("a") and s2.dataset_exists("b")


def test_duplicate_dataset_raises_also_after_reopen(tmp_path):
    with Atlas.create(tmp_path / "s") as s:
        s.create_dataset("a").set_attribute("v", 1)
    s = Atlas.open(tmp_path / "s")
    with pytest.raises(FileExistsError):
        s.create_dataset("a")
    assert s.open_dataset("a").get_attribute("v") == 1  # the failed create did not reset it


def test_delete_dataset_persists_on_flush_only(tmp_path):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        s.create_dataset("a")
        s.create_dataset("b")
    s = Atlas.open(path)
    s.delete_dataset("a")
    assert Atlas.open(path).list_datasets() == ["a", "b"]  # not yet persisted
    s.flush()
    assert Atlas.open(path).list_datasets() == ["b"]


_name_chars = st.sampled_from(list("abcXYZ019-. é日"))
_ds_name = st.text(_name_chars, min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))


@HYP
@given(
    names=st.lists(_ds_name, min_size=1, max_size=12, unique=True),
    deletes=st.lists(st.integers(0, 11), max_size=4),
    meta_format=st.sampled_from(["json", "msgpack"]),
)
def test_list_datasets_keeps_creation_order_after_reopen(tmp_path, names, deletes, meta_format):
    path = fresh(tmp_path)
    s = Atlas.create(path, meta_format=meta_format)
    for n in names:
        s.create_dataset(n)
    expected = list(names)
    for i in deletes:
        if i < len(names) and names[i] in expected:
            s.delete_dataset(names[i])
            expected.remove(names[i])
    # re-create the first deleted one: it goes to the end
    gone = [n for n in names if n not in expected]
    if gone:
        s.create_dataset(gone[0])
        expected.append(gone[0])
    assert s.list_datasets() == expected
    s.flush()
    s2 = Atlas.open(path)
    assert s2.list_datasets() == expected
    for n in names:
        assert s2.dataset_exists(n) == (n in expected)
    # order survives a second round trip through a flush that changes nothing else
    s2.create_dataset("zz-last")
    s2.flush()
    assert Atlas.open(path).list_datasets() == expected + ["zz-last"]


def test_list_arrays_is_distinct_in_first_definition_order(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    a = s.create_dataset("a")
    b = s.create_dataset("b")
    c = s.create_dataset("c")
    a.define_array("temp", "float32", ["x"], [3])
    a.define_array("pres", "float64", ["x"], [3])
    b.define_array("pres", "int32", ["x", "y"], [2, 2])
    b.define_array("time", "timestamp_ns", ["t"], [4])
    c.define_array("temp", "string", [], [])
    assert s.list_arrays() == ["temp", "pres", "time"]
    assert a.list_arrays() == ["temp", "pres"]
    assert b.list_arrays() == ["pres", "time"]
    s.flush()
    s2 = Atlas.open(path)
    assert s2.list_arrays() == ["temp", "pres", "time"]
    assert s2.open_dataset("c").list_arrays() == ["temp"]
    # a name disappears once no dataset defines it
    s2.open_dataset("b").delete_array("time")
    assert s2.list_arrays() == ["temp", "pres"]
    s2.delete_dataset("a")
    assert sorted(s2.list_arrays()) == ["pres", "temp"]
    s2.delete_dataset("c")
    assert s2.list_arrays() == ["pres"]
    s2.flush()
    assert Atlas.open(path).list_arrays() == ["pres"]


def test_dataset_exists_with_odd_input(tmp_path):
    s = Atlas.create(tmp_path / "s")
    s.create_dataset("a")
    assert s.dataset_exists("a") is True
    assert s.dataset_exists("A") is False
    assert s.dataset_exists("") is False


# ---------------------------------------------------------------- context manager
def test_context_manager_flushes_on_normal_exit(tmp_path):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        assert isinstance(s, Atlas)
        ds = s.create_dataset("d")
        ds.define_array("a", "int16", ["x"], [4])
        ds.write_array("a", [1], np.array([7, 8], np.int16))
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("d").read_array("a"), [0, 7, 8, 0])


def test_context_manager_flushes_when_block_raises_and_exception_propagates(tmp_path):
    path = tmp_path / "s"

    class Boom(Exception):
        pass

    err = Boom("boom")
    with pytest.raises(Boom) as ei:
        with Atlas.create(path) as s:
            ds = s.create_dataset("d")
            ds.define_array("a", "int16", ["x"], [4])
            ds.write_array("a", [0], np.array([1, 2], np.int16))
            ds.set_attribute("k", "v")
            raise err
    assert ei.value is err
    s2 = Atlas.open(path)
    ds2 = s2.open_dataset("d")
    np.testing.assert_array_equal(ds2.read_array("a"), [1, 2, 0, 0])
    assert ds2.get_attribute("k") == "v"
    assert ds2.array_stats("a") is not None  # the exit really flushed (stats exist after a flush)


def test_context_manager_on_opened_store_and_error_inside(tmp_path):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        s.create_dataset("d").define_array("a", "float64", ["x"], [3], fill_value=-1.0)
    with pytest.raises(TypeError):
        with Atlas.open(path) as s:
            ds = s.open_dataset("d")
            ds.write_array("a", [0], np.array([1.5]))
            ds.write_array("a", [1], np.array([1], np.int64))  # wrong dtype -> TypeError
    np.testing.assert_array_equal(Atlas.open(path).open_dataset("d").read_array("a"), [1.5, -1.0, -1.0])


def test_store_usable_after_close(tmp_path):
    path = tmp_path / "s"
    s = Atlas.create(path)
    s.create_dataset("a")
    s.close()
    s.create_dataset("b")
    s.close()
    s.close()  # idempotent
    assert Atlas.open(path).list_datasets() == ["a", "b"]


def test_dropping_without_flush_abandons_changes(tmp_path):
    path = tmp_path / "s"
    with Atlas.create(path) as s:
        s.create_dataset("kept")
    s = Atlas.open(path)
    s.create_dataset("lost")
    del s
    assert Atlas.open(path).list_datasets() == ["kept"]


# ---------------------------------------------------------------- repr
def test_repr(tmp_path):
    path = tmp_path / "my-store"
    s = Atlas.create(path, codec="lz4")
    r0 = repr(s)
    assert r0.startswith("Atlas(")
    assert "my-store" in r0
    assert "lz4" in r0
    ds = s.create_dataset("jan_2024")
    ds.define_array("temperature", "float32", ["x"], [2])
    r1 = repr(s)
    assert r1 != r0  # reflects the content
    rd = repr(ds)
    assert "jan_2024" in rd
    assert "temperature" in rd
    s.delete_dataset("jan_2024")
    assert "jan_2024" in repr(ds)  # repr of a view of a deleted dataset does not raise


# ---------------------------------------------------------------- the json metadata layout
_ODD_NAMES = ["tab\tin it", "new\nline", 'quote"and\\backslash', 'ends with ",', "sep\u2028arator", "日本", "x"]


def _layout_byte(path) -> int:
    return (Path(path) / "atlas.meta").read_bytes()[8]


def test_json_metadata_lines_round_trip_odd_names_and_read_the_one_document_layout(tmp_path):
    """Names and attributes with tabs, newlines, quotes, backslashes and line separators survive
    the line layout; a store written as one json document (before) opens the same and its next
    flush rewrites it in the line layout."""
    path = fresh(tmp_path)
    with Atlas.create(path) as s:
        for n in _ODD_NAMES:
            d = s.create_dataset(n)
            d.set_attribute("note", f"{n}\n\t\"value\"")
            d.define_array("v", "int32", ["x"], [3])
            d.write_array("v", [0], np.arange(3, dtype=np.int32))
    assert _layout_byte(path) == 2

    def check(p):
        st = Atlas.open(p)
        assert st.list_datasets() == _ODD_NAMES
        for n in _ODD_NAMES:
            d = st.open_dataset(n)
            assert d.get_attribute("note") == f"{n}\n\t\"value\""
            np.testing.assert_array_equal(d.read_array("v"), np.arange(3))

    check(path)
    # the same metadata as one json document (layout 0, as stores were written before)
    meta_file = Path(path) / "atlas.meta"
    obj, fmt, comp = _metaio.decode(meta_file.read_bytes(), "test")
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    meta_file.write_bytes(_metaio._HEADER.pack(_metaio.MAGIC, 0, 0, 0, zlib.crc32(raw), len(raw)) + raw)
    assert _layout_byte(path) == 0
    check(path)
    with Atlas.open(path) as st:
        st.open_dataset("x").set_attribute("k", 1)
    assert _layout_byte(path) == 2
    check(path)


def test_json_metadata_lines_damaged_or_unwritable(tmp_path):
    """A line layout whose names and entries do not pair up is corrupt (named); metadata whose
    entry holds a raw newline (no store writes one) falls back to the one-document layout."""
    path = fresh(tmp_path)
    with Atlas.create(path) as s:
        for n in ("a", "b"):
            s.create_dataset(n).set_attribute("k", n)
    meta_file = Path(path) / "atlas.meta"
    raw = meta_file.read_bytes()[24:]
    cut = raw[:raw.rindex(b"\n")]  # the last entry's line removed, checksum made valid again
    meta_file.write_bytes(_metaio._HEADER.pack(_metaio.MAGIC, 2, 0, 0, zlib.crc32(cut), len(cut)) + cut)
    st = Atlas.open(path)  # the names are the first line: opening and listing never split the entries
    assert st.list_datasets() == ["a", "b"]
    with pytest.raises(CorruptStoreError, match="atlas.meta.*2 dataset names but 1 entries"):
        st.open_dataset("a").get_attribute("k")  # the first use of an entry counts the lines
    with pytest.raises(CorruptStoreError, match="atlas.meta.*2 dataset names but 1 entries"):
        _metaio.decode(meta_file.read_bytes(), str(meta_file))  # the eager parse (history, staged commits)
    assert st.list_datasets() == ["a", "b"]
    obj = {"format": "atlas", "datasets": [["a", "[{},\n{}]"], ["b", "[{},{}]"]]}
    data = _metaio.encode(obj, "json", "none")
    assert data[8] == 0 and _metaio.decode(data, "x")[0] == obj
    obj["datasets"][0][1] = "[{},{}]"
    data = _metaio.encode(obj, "json", "zstd")
    assert data[8] == 2 and _metaio.decode(data, "x") == (obj, "json", "zstd")


@pytest.mark.parametrize("writer", [True, False])
def test_first_uses_of_unsplit_entries_from_many_threads(tmp_path, writer):
    """A fresh handle leaves the dataset entries unsplit until one is used, then decodes the
    first few one by one and splits the rest at once; threads that use entries at the same
    moment (and, with ``writer``, one that creates and deletes datasets meanwhile) all see
    every dataset whole. Twenty fresh handles, eight threads each."""
    import threading

    path = fresh(tmp_path)
    names = [f"d{i:03d}" for i in range(200)]
    with Atlas.create(path) as s:
        for n in names:
            s.create_dataset(n).set_attribute("k", n)
    for it in range(20):
        st = Atlas.open(path)
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def use(k: int) -> None:
            try:
                barrier.wait(timeout=30)
                if k == 0 and writer:
                    st.create_dataset(f"new{it}").set_attribute("k", "new")
                    st.delete_dataset(names[it])
                for n in names[20 + k::7]:
                    assert st.open_dataset(n).get_attribute("k") == n
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=use, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        if writer:
            assert sorted(st.list_datasets()) == sorted(names[it + 1:] + [f"new{j}" for j in range(it + 1)])
            assert st.open_dataset(f"new{it}").get_attribute("k") == "new"
        else:
            assert all(st.open_dataset(n).get_attribute("k") == n for n in names)
        st.close()


def test_entries_are_decoded_one_by_one_then_split(tmp_path):
    """Reading one dataset of a fresh handle decodes its entry alone; after ``ONE_BY_ONE``
    of them the rest are split at once, and the entries decoded before stay the same objects."""
    from atlas import _meta
    from atlas.store import _forget_process_caches

    path = fresh(tmp_path)
    names = [f"d{i:03d}" for i in range(100)]
    with Atlas.create(path) as s:
        for n in names:
            s.create_dataset(n).set_attribute("k", n)
    _forget_process_caches()
    st = Atlas.open(path)
    ds = st._state.meta.datasets
    first = [ds[n] for n in names[50:50 + _meta.ONE_BY_ONE]]
    assert ds._lines is not None and list(ds._lines.loaded) == names[50:50 + _meta.ONE_BY_ONE]
    assert [dict.get(ds, n) for n in names[:50]] == [_meta._UNSPLIT] * 50
    ds[names[0]]
    assert ds._lines is None  # the next one split them all
    assert all(ds[n] is d for n, d in zip(names[50:], first))
    assert [st.open_dataset(n).get_attribute("k") for n in names] == names


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(0, 90), min_size=1, max_size=40), window=st.sampled_from([16, 64, 4096]),
       data=st.data())
def test_one_by_one_entries_across_windows_match_the_split(monkeypatch, lengths, window, data):
    """``Lines.entry`` counts line ends per window and locates them only in the windows a
    lookup lands in: every entry, looked up in any order with lines crossing and filling
    windows, equals the whole split; a body with one line too many or too few is refused."""
    monkeypatch.setattr(_metaio, "_WINDOW", window)
    entries = [("é" * (n % 3) + "x" * n)[:n] for n in lengths]
    names = [f"d{i}" for i in range(len(entries))]
    body = memoryview("\n".join(entries).encode("utf-8"))
    lines = _metaio.Lines(names, body, "m.meta")
    for i in data.draw(st.permutations(range(len(names))), label="order"):
        assert lines.entry(names[i]) == entries[i]
    assert lines.entries() == entries
    for extra in (names + ["more"], names[:-1]):
        if extra:
            with pytest.raises(CorruptStoreError, match="m.meta.*dataset names"):
                _metaio.Lines(extra, body, "m.meta").entry(extra[0])


def test_an_entry_that_is_not_utf8_is_corrupt_and_named(tmp_path):
    """A dataset entry with bytes that are not UTF-8 (a crafted file with a valid checksum)
    raises ``CorruptStoreError`` naming the file and the dataset; the others still read."""
    from atlas.store import _forget_process_caches

    path = fresh(tmp_path)
    with Atlas.create(path) as s:
        for n in ("a", "b", "c"):
            s.create_dataset(n).set_attribute("k", n)
    meta_file = Path(path) / "atlas.meta"
    raw = bytearray(meta_file.read_bytes()[24:])
    at = raw.index(b'"b"]', raw.index(b"\n") + 1)  # inside dataset b's entry (the second line)
    raw[at + 1] = 0xFF
    meta_file.write_bytes(_metaio._HEADER.pack(_metaio.MAGIC, 2, 0, 0, zlib.crc32(raw), len(raw)) + bytes(raw))
    _forget_process_caches()
    st = Atlas.open(path)
    assert st.open_dataset("a").get_attribute("k") == "a"  # one by one: a's line is fine
    with pytest.raises(CorruptStoreError, match="atlas.meta.*dataset 'b'.*not UTF-8"):
        st.open_dataset("b").get_attribute("k")
    _forget_process_caches()
    with pytest.raises(CorruptStoreError, match="atlas.meta.*not UTF-8"):
        Atlas.open(path).read_arrays_across(["x"], ["a", "b", "c"])


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["take", "view", "release"]), st.integers(1, 64)), max_size=40))
def test_read_buffers_never_hand_out_a_buffer_still_viewed(ops):
    """``ReadBuffers`` hands a buffer out again only once no view of it is alive, and then
    reuses it rather than allocating (what lets a reopened store skip fresh pages)."""
    pool = _metaio.ReadBuffers(keep=3)
    views: list[memoryview] = []
    mine: list[bytearray] = []
    for op, n in ops:
        if op == "take":
            free = [b for b in pool.free if len(b) >= n and not any(v.obj is b for v in views)]
            b = pool.take(n)
            assert len(b) == n and not any(v.obj is b for v in views)
            assert (b is free[0]) if free else all(b is not x for x in mine)
            b[:] = bytes([n % 251]) * n
            mine.append(b)
            views.append(memoryview(b))  # what a parse keeps of it
            pool.give(b)
        elif op == "view" and mine:
            views.append(memoryview(mine[n % len(mine)]))
        elif op == "release" and views:
            views.pop(n % len(views)).release()
    for v in views:
        assert bytes(v) == bytes([len(v) % 251]) * len(v)  # nothing handed out twice was overwritten
    small = _metaio.ReadBuffers(keep=2, largest=16)
    small.give(bytearray(17))  # too large to keep
    small.give(bytearray(16))
    assert [len(b) for b in small.free] == [16]


def test_a_dropped_handle_is_freed_at_once_and_its_read_buffer_reused(tmp_path):
    """No handle is part of a reference cycle: with the cyclic collector off, dropping a handle
    (read, written, or on a past version) frees it and the metadata it parsed at once, so the
    next open reads the metadata file into the same buffer."""
    import gc
    import weakref

    from atlas.store import _forget_process_caches

    path = fresh(tmp_path)
    with Atlas.create(path) as s:
        for i in range(20):
            s.create_dataset(f"d{i}").define_array("x", "float32", ["i"], [4])
            s.open_dataset(f"d{i}").write_array("x", [0], np.arange(4, dtype=np.float32))
    was = gc.isenabled()
    gc.disable()
    try:
        _forget_process_caches()
        h = Atlas.open(path)
        h.open_dataset("d3").read_array("x")
        buf = h._state.meta.datasets._lines.body.obj
        refs = [weakref.ref(h)]
        _forget_process_caches()
        del h
        h = Atlas.open(path)
        assert refs[0]() is None and h._state.meta.datasets._lines.body.obj is buf
        with h:
            h.open_dataset("d1").write_array("x", [0], np.ones(4, np.float32))
        v = Atlas.open(path, version=1)
        v.open_dataset("d1").read_array("x")
        refs += [weakref.ref(h), weakref.ref(v)]
        del h, v
        assert all(r() is None for r in refs)
    finally:
        if was:
            gc.enable()
