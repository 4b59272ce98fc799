"""The catalog file: a committed state's catalog rows, one immutable file per state that changed them.

Each commit that creates, changes or deletes datasets (a flush, a staged commit) writes
``catalog/<generation>-<token>.cat`` before the metadata is replaced (the commit's one
barrier makes it durable with the segments and the version file), and the new metadata
records where it is (:class:`~atlas._meta.CatalogLocation`: path, lengths, CRC-32, rows).
The file is the previous state's table (its file read once, or the table already in memory)
with the rows of the touched datasets re-derived from their metadata (``_cattable.merge``):
a flush costs what changed plus a concatenation of columns, not a parse of every dataset.

A store with fewer than :data:`atlas._meta.CATALOG_MIN_DATASETS` datasets gets no file (building its catalog
from the metadata is cheaper than a file write per flush); neither do stores written before
catalog files existed, until their next flush. Without a file, the catalog is built from
every dataset's metadata, as before; an unreadable or damaged file is logged and replaced by
that build too (``verify()`` reports it).

Layout: 16-byte header (magic ``ATLASCT1``, decoded length, little-endian), then zstd of one
msgpack map: ``n`` rows, ``names``, ``attrs`` ``[[key, kind bytes, [[kind code, values]...]]...]``
and ``arrays`` ``[[name, dtypes, dt bytes, shapes, sh bytes, has bytes, nn bytes,
[[family, min values]...], mnv bytes, [[family, max values]...], mxv bytes]...]``: numbers as
little-endian array bytes, strings as lists (see ``_cattable`` for what each holds).
"""

from __future__ import annotations

import logging
import struct
import threading
import uuid
from typing import Any, Callable, Optional

import msgpack
import numpy as np
import zstandard

from . import codecs
from . import dtypes as D
from ._cattable import ACODE, ADTYPE, FAMILIES, ArrayRaw, AttrRaw, RawTable, build, capture, family, merge
from . import _meta
from ._meta import CATALOG_DIR, CatalogLocation, StoreMeta
from .errors import CorruptStoreError
from .storage import Storage

log = logging.getLogger(__name__)

MAGIC = b"ATLASCT1"
_HEADER = struct.Struct("<8sQ")


def catalog_path(generation: int) -> str:
    return f"{CATALOG_DIR}/{generation:012d}-{uuid.uuid4().hex[:12]}.cat"


# ---------------------------------------------------------------------------- encoding
def _col(v: np.ndarray) -> Any:
    if v.dtype.kind == "O":
        return v.tolist()
    return v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes()


def encode(raw: RawTable) -> tuple[bytes, int]:
    """The file's bytes and the decoded payload length."""
    obj = {
        "n": len(raw.names),
        "names": raw.names,
        "attrs": [[k, a.kind.tobytes(), [[c, _col(v)] for c, v in a.vals.items()]] for k, a in raw.attrs.items()],
        "arrays": [[k, x.dtypes, x.dt.tobytes(), [list(s) for s in x.shapes], _col(x.sh), x.has.tobytes(), _col(x.nn),
                    [[f, _col(v)] for f, v in x.mn.items()], x.mnv.tobytes(),
                    [[f, _col(v)] for f, v in x.mx.items()], x.mxv.tobytes()] for k, x in raw.arrays.items()],
    }
    payload = msgpack.packb(obj, use_bin_type=True)
    # level 1: as small as level 3 on these columns at half the time (a flush writes the whole table)
    packed = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(payload)
    return _HEADER.pack(MAGIC, len(payload)) + packed, len(payload)


class _Bad(ValueError):
    pass


def _uncol(b: Any, dt: np.dtype, n: int, what: str) -> np.ndarray:
    if dt.kind == "O":
        if not isinstance(b, list) or len(b) != n or not all(type(s) is str for s in b):
            raise _Bad(f"{what}: {n} strings expected")
        out = np.empty(n, dtype=object)
        out[:] = b
        return out
    if not isinstance(b, bytes) or len(b) != n * dt.itemsize:
        raise _Bad(f"{what}: {n} values of {dt} expected")
    arr = np.frombuffer(b, dt.newbyteorder("<"))
    if dt.kind == "b" and np.frombuffer(b, np.uint8).max(initial=0) > 1:
        raise _Bad(f"{what}: not booleans")
    return arr


def _codes(b: Any, n: int, lo: int, hi: int, what: str, dt: Any = np.int8) -> np.ndarray:
    v = _uncol(b, np.dtype(dt), n, what)
    if v.size and not lo <= int(v.min()) <= int(v.max()) < hi:
        raise _Bad(f"{what}: code out of range")
    return v


def decode(data: Any, where: str) -> RawTable:
    """The rows of a catalog file (``CorruptStoreError`` naming ``where`` if anything is wrong)."""
    try:
        if len(data) < _HEADER.size:
            raise _Bad(f"truncated ({len(data)} bytes)")
        magic, rawlen = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise _Bad(f"bad magic {magic!r}")
        payload = codecs.decompress("zstd", memoryview(data)[_HEADER.size:], rawlen)
        obj = msgpack.unpackb(payload, raw=False)
        n, names = obj["n"], obj["names"]
        if type(n) is not int or not isinstance(names, list) or len(names) != n or not all(type(s) is str for s in names):
            raise _Bad("bad names")
        attrs: dict[str, AttrRaw] = {}
        for key, kb, vals in obj["attrs"]:
            kind = _codes(kb, n, 0, len(ACODE) + 1, f"attribute {key!r}")
            cols = {int(c): _uncol(v, ADTYPE[c], n, f"attribute {key!r}") for c, v in vals if c in ADTYPE}
            if set(cols) != set(np.unique(kind).tolist()) - {0} or len(cols) != len(vals):
                raise _Bad(f"attribute {key!r}: kinds do not match their values")
            attrs[str(key)] = AttrRaw(kind, cols)
        arrays: dict[str, ArrayRaw] = {}
        for k, dts, dtb, shapes, shb, hasb, nnb, mn, mnvb, mx, mxvb in obj["arrays"]:
            what = f"array {k!r}"
            if not all(d in D.ARRAY_DTYPES for d in dts) or not all(
                    isinstance(s, list) and all(type(x) is int and x >= 0 for x in s) for s in shapes):
                raise _Bad(f"{what}: bad dtypes or shapes")
            dt = _codes(dtb, n, -1, len(dts), what)
            sh = _codes(shb, n, -1, len(shapes), what, np.int64)
            if not np.array_equal(dt >= 0, sh >= 0):
                raise _Bad(f"{what}: dtypes and shapes disagree")
            fams = {family(d) for d in dts}
            stats: list[dict[str, np.ndarray]] = []
            for part in (mn, mx):
                fcols = {str(f): _uncol(v, FAMILIES[f], n, what) for f, v in part if f in FAMILIES}
                if set(fcols) != fams or len(fcols) != len(part):
                    raise _Bad(f"{what}: value families do not match the dtypes")
                stats.append(fcols)
            arrays[str(k)] = ArrayRaw(list(dts), dt, [tuple(s) for s in shapes], sh, _uncol(hasb, np.dtype(bool), n, what),
                                      _uncol(nnb, np.dtype(np.int64), n, what), stats[0],
                                      _uncol(mnvb, np.dtype(bool), n, what), stats[1], _uncol(mxvb, np.dtype(bool), n, what))
        return RawTable(names, attrs, arrays)
    except CorruptStoreError as e:
        raise CorruptStoreError(f"{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoding failure is a damaged file
        raise CorruptStoreError(f"{where}: catalog file is malformed: {e}") from None


# ---------------------------------------------------------------------------- reading
_LOADED: dict[tuple[str, str], tuple[str, RawTable]] = {}  # store -> (path, rows) of the last catalog file read
_LOADED_LOCK = threading.Lock()


def forget() -> None:
    """Drop the process-wide cache of catalog files."""
    with _LOADED_LOCK:
        _LOADED.clear()


def _key(storage: Storage) -> tuple[str, str]:
    return (type(storage).__name__, storage.location)


def remember(storage: Storage, path: str, raw: RawTable) -> None:
    """Keep the rows of catalog file ``path`` for other handles of this process (files never change)."""
    with _LOADED_LOCK:
        _LOADED[_key(storage)] = (path, raw)


def read(storage: Storage, loc: CatalogLocation, names: Optional[list[str]] = None) -> RawTable:
    """The rows of the catalog file at ``loc``, checked (length, checksum, rows, and ``names`` if given)."""
    where = f"{storage.location}/{loc.path}"
    data = storage.read(loc.path)
    if len(data) != loc.length or codecs.checksum(data) != loc.crc:
        raise CorruptStoreError(f"{where}: catalog file checksum or length mismatch (file is damaged)")
    raw = decode(data, where)
    if len(raw.names) != loc.rows or (names is not None and raw.names != names):
        raise CorruptStoreError(f"{where}: catalog file rows do not match the store's datasets")
    return raw


def load(storage: Storage, meta: StoreMeta) -> RawTable:
    """The catalog rows of the committed state ``meta``: its file (one read; none if this process
    read it already), else built from every dataset's metadata."""
    loc = meta.catalog
    if loc is not None:
        with _LOADED_LOCK:
            hit = _LOADED.get(_key(storage))
        if hit is not None and hit[0] == loc.path:
            return hit[1]
        try:
            raw = read(storage, loc, list(meta.datasets))
        except (FileNotFoundError, CorruptStoreError) as e:
            log.warning("catalog file of %s not used, building the catalog from the metadata: %s", storage.location, e)
        else:
            remember(storage, loc.path, raw)
            return raw
    return build(capture(meta))


def verify(storage: Storage, meta: StoreMeta) -> list[str]:
    """Problems of the catalog file of ``meta`` (re-read): checksum, decoding, rows = datasets."""
    loc = meta.catalog
    if loc is None:
        return []
    try:
        read(storage, loc, list(meta.datasets))
    except Exception as e:  # noqa: BLE001 - report and go on
        return [f"catalog file {loc.path!r}: {e}"]
    return []


# ---------------------------------------------------------------------------- writing
class NextCatalog:
    """The catalog of the state a commit is about to publish.

    ``attach(meta)`` runs inside the commit, before the metadata is replaced: it writes the
    catalog file of ``meta`` (the next state, whose ``touched`` datasets were created, changed
    or deleted since ``base_meta``) and records it in ``meta``. Afterwards ``raw`` is the new
    table (None: none was made), ``same`` tells that the rows did not change.
    """

    def __init__(self, storage: Storage, base_meta: StoreMeta, base_raw: Callable[[], RawTable],
                 touched: set[str] | frozenset[str]) -> None:
        self.storage = storage
        self.base_meta = base_meta
        self.base_raw = base_raw
        self.touched = touched
        self.raw: Optional[RawTable] = None
        self.same = not touched

    def attach(self, meta: StoreMeta) -> StoreMeta:
        self.raw = None
        if self.same:
            return meta  # same datasets: the base's catalog file (carried by the metadata copy)
        meta.catalog = None
        if len(meta.datasets) < _meta.CATALOG_MIN_DATASETS:
            return meta
        try:
            raw = self._rows(meta)
        except CorruptStoreError as e:  # a damaged dataset entry: the catalog will name it when asked
            log.warning("no catalog file written for %s: %s", self.storage.location, e)
            return meta
        data, rawlen = encode(raw)
        path = catalog_path(meta.generation)
        self.storage.write(path, data)
        meta.catalog = CatalogLocation(path, len(data), rawlen, codecs.checksum(data), len(raw.names))
        self.raw = raw
        remember(self.storage, path, raw)  # a path never reused: harmless if the commit fails
        return meta

    def _rows(self, meta: StoreMeta) -> RawTable:
        names = list(meta.datasets)
        try:
            return merge(self.base_raw(), self.base_meta, names, self.touched, capture(meta, set(self.touched)))
        except ValueError as e:  # rows that do not line up: correctness first
            log.warning("catalog of %s rebuilt from the metadata: %s", self.storage.location, e)
            return build(capture(meta))
