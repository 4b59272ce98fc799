"""The in-memory metadata model and its plain-dict (json/msgpack) form.

``StoreMeta`` holds every dataset, array schema, attribute and the location of each array
name's chunk index. It is loaded once by ``Atlas.open``, mutated by every call, and written
whole (last) by ``flush``. Non-finite floats are spelled ``"nan"``, ``"inf"``, ``"-inf"``
so json metadata stays strict JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import numpy as np

from . import _gc, codecs
from ._metaio import Lines, dumps_entry
from . import dtypes as D
from .errors import CorruptStoreError, StoreFormatError

class cached_property:  # noqa: N801 - functools' version takes a lock per first access on 3.10/3.11
    """A lock-free cached property (values are pure functions of immutable fields)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        v = obj.__dict__[self.name] = self.fn(obj)
        return v


FORMAT_VERSION = 3  # an older atlas must refuse a newer store ("upgrade"), not misread it
# 2: chunk indexes with narrowed columns; 3: index footers in their own codec (``IndexLocation.codec``)
META_PATH = "atlas.meta"
CATALOG_DIR = "catalog"  # catalog files (see ``atlas._catfile``)
#: stores with fewer datasets get no catalog file: building their catalog from the metadata takes
#: at most ~75 ms there (about what reading the file takes at 100,000 datasets), while the file
#: adds ~10% to every flush (measured: see README "catalog"). Read at call time (tests change it).
CATALOG_MIN_DATASETS = 5000


def f2j(x: Any) -> Any:
    """A float in a json-safe form."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def j2f(x: Any) -> float:
    return float(x)


def validate_name(name: Any, what: str) -> str:
    """Dataset, array and attribute names: non-empty str, no '/', no leading '_', not '.'/'..'."""
    if type(name) is str and name in _VALID_NAMES:  # (the same few array names, thousands of times)
        return name
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, got {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError(f"{what} name must not be empty")
    if "/" in name or "\x00" in name:
        raise ValueError(f"{what} name {name!r} must not contain '/' or NUL")
    if name.startswith("_"):
        raise ValueError(f"{what} name {name!r} must not start with '_' (reserved for atlas)")
    if name in (".", ".."):
        raise ValueError(f"{what} name {name!r} is not allowed")
    D.check_unicode(name, f"{what} name")
    if type(name) is str and len(name) <= 256 and what != "dataset":  # (a dataset name is checked once)
        if len(_VALID_NAMES) >= 4096:
            _VALID_NAMES.clear()
        _VALID_NAMES.add(name)
    return name


#: array and attribute names that passed :func:`validate_name` (the rules do not depend on ``what``)
_VALID_NAMES: set[str] = set()


def _plain_names(names: list[Any], keys: Any = None) -> bool:
    """Whether every name passes :func:`validate_name` (checked in bulk: opening a big store checks
    thousands); ``keys``, a dict or set of the same names, saves building one."""
    try:
        flat = "".join(names)
        flat.encode("utf-8")  # TypeError for a non-str, UnicodeEncodeError for lone surrogates
    except (TypeError, UnicodeEncodeError):
        return False
    if "/" in flat or "\x00" in flat:
        return False
    if keys is None:
        keys = set(names)
    if "" in keys or "." in keys or ".." in keys:
        return False
    # a leading '_': searched between NULs only when there is an '_' at all (a two-character
    # search over every name costs ~7 us per thousand names)
    return "_" not in flat or "\x00_" not in "\x00" + "\x00".join(names)


class Layout:
    """Values derived from a schema, computed once per distinct schema (kernels use rank >= 1)."""

    __slots__ = ("kshape", "kchunk", "kchunk_t", "single_chunk", "empty", "sdtype", "chunk_elems", "chunk_nbytes",
                 "fill_storage", "is_float",
                 "stat_types", "stat_range")

    def __init__(self, dtype: str, shape: tuple[int, ...], chunk: tuple[int, ...], fill: Any) -> None:
        kc = tuple(max(1, min(c, s)) for c, s in zip(chunk, shape)) if shape else (1,)
        self.kshape = np.asarray(shape or (1,), np.int64)
        self.kchunk = np.asarray(kc, np.int64)
        self.kchunk_t = kc
        self.empty = any(s == 0 for s in shape)  # a zero-length axis: no cells, no chunks
        self.single_chunk = not self.empty and all(c >= s for c, s in zip(kc, shape or (1,)))
        self.sdtype = D.storage_dtype(dtype)
        self.chunk_elems = math.prod(kc)
        self.chunk_nbytes = self.chunk_elems * self.sdtype.itemsize  # of the cells (strings: their pointers)
        self.fill_storage = D.fill_storage_value(dtype, fill)
        self.is_float = self.sdtype.kind == "f"
        # what a stored min/max may be (checked when metadata is decoded)
        kind = self.sdtype.kind
        self.stat_types: tuple[type, ...] = (int, float, str) if kind == "f" else (str,) if kind == "O" else (int,)
        self.stat_range = (int(np.iinfo(self.sdtype).min), int(np.iinfo(self.sdtype).max)) if kind in "iu" else None


_LAYOUTS: dict[tuple[Any, ...], Layout] = {}


@dataclass
class ArrayMeta:
    """Schema of one array instance inside one dataset."""

    aid: int
    dtype: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    fill: Any = None
    stats: dict[str, Any] | None = None

    # ---- derived values, shared by every instance of the same layout
    @cached_property
    def layout(self) -> "Layout":
        key = (self.dtype, self.shape, self.chunk, repr(self.fill))
        lay = _LAYOUTS.get(key)
        if lay is None:
            lay = _LAYOUTS[key] = Layout(self.dtype, self.shape, self.chunk, self.fill)
        return lay

    @property
    def kshape(self) -> np.ndarray:
        return self.layout.kshape

    @property
    def kchunk(self) -> np.ndarray:
        """Effective chunk shape: never larger than the array (so padding stays bounded)."""
        return self.layout.kchunk

    @property
    def single_chunk(self) -> bool:
        """The whole array is one chunk (the default chunking)."""
        return self.layout.single_chunk

    @property
    def sdtype(self) -> np.dtype:
        return self.layout.sdtype

    @property
    def chunk_elems(self) -> int:
        return self.layout.chunk_elems

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of one decoded numeric chunk's cells (for strings: 8 per cell, an in-memory estimate)."""
        return self.layout.chunk_nbytes

    @property
    def fill_storage(self) -> Any:
        return self.layout.fill_storage

    @property
    def is_string(self) -> bool:
        return self.dtype == D.STRING

    @property
    def row_count(self) -> int:
        return math.prod(self.shape)

    def layout_key(self) -> tuple[Any, ...]:
        return (self.dtype, self.shape, self.layout.kchunk_t)

    def schema_key(self) -> tuple[Any, ...]:
        return (self.layout, self.dims)

    def schema_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "dims": list(self.dims), "shape": list(self.shape), "chunk": list(self.chunk)}
        if self.fill is not None:
            d["fill"] = f2j(self.fill)
        return d

    def to_row(self, schema_no: int) -> list[Any]:
        """``[aid, schema number, stats]`` with stats ``[null_count, min, max]`` or None."""
        st = self.stats
        return [self.aid, schema_no, None if st is None else [st["null_count"], f2j(st["min"]), f2j(st["max"])]]

    @classmethod
    def from_row(cls, row: list[Any], schema: "ArrayMeta") -> "ArrayMeta":
        st = row[2]
        stats = None
        lay = schema.layout
        if st is not None:
            nn, mn, mx = st
            types, rng = lay.stat_types, lay.stat_range
            for v in (mn, mx):
                if v is not None and (type(v) not in types or (rng is not None and not rng[0] <= v <= rng[1])):
                    raise ValueError(f"stored min/max {v!r} does not fit dtype {schema.dtype}")
            if type(nn) is not int or nn < 0:
                raise ValueError(f"stored null count {nn!r}")
            if lay.is_float:  # non-finite floats are spelled as strings in json
                if mn.__class__ is str:
                    mn = float(mn)
                if mx.__class__ is str:
                    mx = float(mx)
            stats = {"null_count": nn, "min": mn, "max": mx}
        # the schema's fields and its cached layout, copied in one step (opening a dataset of a
        # big store decodes thousands of these; the dataclass __init__ would cost several times more)
        d = schema.__dict__.copy()  # (copy-and-set: faster than a dict display with ** on this path)
        d["aid"] = row[0]
        d["stats"] = stats
        d["layout"] = lay
        m = cls.__new__(cls)
        m.__dict__ = d
        return m

    def instance(self, aid: int) -> "ArrayMeta":
        """A new instance of this schema: id ``aid``, no stats, the schema's layout already cached."""
        d = self.__dict__.copy()  # (copy-and-set: half the time of a dict display on this path)
        d["aid"] = aid
        d["stats"] = None
        d["layout"] = self.layout
        m = ArrayMeta.__new__(ArrayMeta)
        m.__dict__ = d
        return m

    def with_stats(self, stats: dict[str, Any] | None) -> "ArrayMeta":
        """A copy of this instance with other stats (instances in a snapshot are never mutated)."""
        d = self.__dict__.copy()
        d["stats"] = stats
        m = ArrayMeta.__new__(ArrayMeta)
        m.__dict__ = d
        return m

    @classmethod
    def schema_from_dict(cls, d: dict[str, Any]) -> "ArrayMeta":
        """Decode one schema of the metadata table, checked (``ValueError``/``TypeError`` if malformed)."""
        dtype = d["dtype"]
        if dtype not in D.ARRAY_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}")
        dims, shape, chunk = tuple(d["dims"]), tuple(d["shape"]), tuple(d["chunk"])
        if not all(isinstance(x, str) and x for x in dims) or not (len(dims) == len(shape) == len(chunk)):
            raise ValueError(f"bad dims {dims!r} for shape {shape!r} / chunk {chunk!r}")
        if (any(type(x) is not int or x < 0 or x >= 2**63 for x in shape) or math.prod(shape) >= 2**63
                or any(type(x) is not int or x < 1 or x >= 2**63 for x in chunk)):
            raise ValueError(f"bad shape {shape!r} / chunk {chunk!r}")
        fill = d.get("fill")
        if fill is not None and dtype in D.NUMERIC and D.NUMERIC[dtype].kind == "f":
            fill = j2f(fill)
        fill = D.coerce_fill(dtype, fill)
        return cls(0, dtype, dims, shape, chunk, fill)


@dataclass
class DatasetMeta:
    name: str
    attrs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    arrays: dict[str, ArrayMeta] = field(default_factory=dict)

    def copy(self) -> "DatasetMeta":
        """A copy whose attribute and array tables can be changed without touching this one."""
        return DatasetMeta(self.name, dict(self.attrs), dict(self.arrays))

    def to_blob(self, schema_no: Any, fmt: str) -> Any:
        """This dataset as one opaque value of the metadata file (decoded only when used)."""
        if fmt == "json":
            return entry_json(self, schema_no)
        return encode_blob(self.plain(schema_no), fmt)

    def plain(self, schema_no: Any) -> list[Any]:
        """``[attrs, {array: row}]``: the plain form of this dataset's entry."""
        return [{k: [t, f2j(v)] for k, (t, v) in self.attrs.items()},
                {k: a.to_row(schema_no(a)) for k, a in self.arrays.items()}]

    @classmethod
    def from_blob(cls, name: str, blob: Any, schemas: list[ArrayMeta]) -> "DatasetMeta":
        """Decode one dataset's entry; a malformed one raises ``ValueError`` (the caller names the file)."""
        attrs_d, arrays_d = decode_blob(blob)
        attrs = {}
        for k, (t, v) in attrs_d.items():
            if t not in _ATTR_CHECK or not _ATTR_CHECK[t](v):
                raise ValueError(f"attribute {k!r} has a bad type/value {t!r}/{v!r}")
            attrs[k] = (t, j2f(v) if t == "float64" else v)
        arrays = {}
        ns = len(schemas)
        for k, r in arrays_d.items():
            aid, sno, st = r
            if type(aid) is not int or type(sno) is not int or not 0 <= sno < ns or not 0 <= aid < 2**63:
                raise ValueError(f"array {k!r} has a bad entry {r!r}")
            arrays[k] = ArrayMeta.from_row(r, schemas[sno])
        return cls(name, attrs, arrays)


_KEY_JSON: dict[str, str] = {}  # array name -> its json string (a few names, thousands of entries)


def entry_json(ds: DatasetMeta, schema_no: Any) -> str:
    """``dumps_entry(ds.plain(schema_no))``: the same text, the usual rows formatted directly.

    A flush encodes an entry per dataset it touched. Most rows hold only ints and finite
    floats (ids, schema numbers, null counts, min/max), which json spells as their ``repr``:
    those are formatted here in one step each; attributes and rows with any other value
    (strings, non-finite floats, ...) go through the json encoder.
    """
    keys = _KEY_JSON
    parts = []
    for k, a in ds.arrays.items():
        kj = keys.get(k)
        if kj is None:
            if len(keys) >= 4096:
                keys.clear()
            kj = keys[k] = dumps_entry(k)
        st = a.stats
        sno = schema_no(a)
        if st is not None and type(a.aid) is int and type(sno) is int:
            nn, mn, mx = st["null_count"], st["min"], st["max"]
            t1, t2 = type(mn), type(mx)
            # exact ints and finite floats only (bool is no int here; a float subclass's repr may differ)
            if (type(nn) is int and (t1 is int or (t1 is float and mn - mn == 0))
                    and (t2 is int or (t2 is float and mx - mx == 0))):
                parts.append("%s:[%d,%d,[%d,%r,%r]]" % (kj, a.aid, sno, nn, mn, mx))
                continue
        parts.append(kj + ":" + dumps_entry(a.to_row(sno)))
    attrs = dumps_entry({k: [t, f2j(v)] for k, (t, v) in ds.attrs.items()}) if ds.attrs else "{}"
    return "[%s,{%s}]" % (attrs, ",".join(parts))


def encode_blob(obj: list[Any], fmt: str) -> Any:
    """A dataset's plain form ``[attrs, {array: row}]`` as its value in a ``fmt`` metadata file."""
    if fmt == "json":
        return dumps_entry(obj)
    return msgpack.packb(obj, use_bin_type=True)


_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads without its wrapper (1 us of 4 per entry)


def decode_blob(blob: Any) -> Any:
    """The plain form of a dataset's value in a metadata file (json str or msgpack bytes)."""
    if isinstance(blob, str):
        try:
            obj, end = _SCAN(blob, 0)
            if end == len(blob):  # the whole entry is one json value: what json.loads returns
                return obj
        except StopIteration:
            pass
        return json.loads(blob)  # surrounding whitespace, or the error naming what is wrong
    return msgpack.unpackb(blob, raw=False)


def _exact_int(v: Any) -> bool:
    return type(v) is int


_ATTR_CHECK = {
    "bool": lambda v: type(v) is bool,
    "int64": _exact_int,
    D.TIMESTAMP: _exact_int,
    "float64": lambda v: type(v) in (int, float) or v in ("NaN", "Infinity", "-Infinity", "nan", "inf", "-inf"),
    "string": lambda v: type(v) is str,
}


class Datasets(dict):  # type: ignore[type-arg]
    """``{name: DatasetMeta}`` whose entries are decoded from the metadata file on first access.

    Opening a store with 100,000 datasets parses one string per dataset; a dataset's
    arrays and attributes become Python objects only when something asks for them, and an
    untouched dataset is written back as the same string.
    """

    def __init__(self, schemas: list[ArrayMeta], lines: Any = None) -> None:
        super().__init__()
        self.schemas = schemas
        #: entries of a line-layout file not split yet (``atlas._metaio.Lines``): until then
        #: every name maps to ``_UNSPLIT``; listing the names never splits them
        self._lines = lines
        if lines is not None:
            dict.update(self, dict.fromkeys(lines.names, _UNSPLIT))  # (from_dict refuses repeated names)

    def _split(self) -> None:
        """Put every dataset's entry in place of ``_UNSPLIT`` (once; safe from several threads).

        Every change to the mapping splits first, so until then every value is ``_UNSPLIT`` or
        an entry decoded one by one (``Lines.loaded``): the entries, with the decoded ones
        over their text, go in with one ``dict.update``."""
        with _SPLIT_LOCK:
            lines = self._lines
            if lines is None:
                return
            entries = dict(zip(lines.names, lines.entries()))
            entries.update(lines.loaded)
            dict.update(self, entries)  # one step: no reader sees a decoded entry as its text again
            self._lines = None

    def _load_unsplit(self, name: str) -> DatasetMeta:
        """Decode one entry still in the unsplit lines: the first few one by one (a fresh
        handle reading one dataset decodes one entry), then all of them are split at once."""
        lines = self._lines
        if lines is not None and len(lines.loaded) < ONE_BY_ONE:
            d = self._decode(name, lines.entry(name))
            with _SPLIT_LOCK:
                if self._lines is lines and dict.get(self, name) is _UNSPLIT:
                    dict.__setitem__(self, name, d)
                    lines.loaded[name] = d
                    return d
        else:
            self._split()
        return self._load(name, dict.__getitem__(self, name))  # split, or loaded by another thread

    def __setitem__(self, name: str, v: Any) -> None:
        if self._lines is not None:
            self._split()
        dict.__setitem__(self, name, v)

    def __delitem__(self, name: str) -> None:
        if self._lines is not None:
            self._split()
        dict.__delitem__(self, name)

    def raw(self, name: str) -> Any:
        """The entry of ``name`` as it is (decoded or its metadata-file form), or None."""
        v = dict.get(self, name)
        if v is _UNSPLIT:
            self._split()
            v = dict.get(self, name)
        return v

    def _decode(self, name: str, v: Any) -> DatasetMeta:
        if type(v) is DatasetMeta:
            return v
        try:
            return DatasetMeta.from_blob(name, v, self.schemas)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
            raise CorruptStoreError(f"metadata of dataset {name!r} is malformed: {e!r}") from e

    def _load(self, name: str, v: Any) -> DatasetMeta:
        if type(v) is not DatasetMeta:
            if v is _UNSPLIT:
                return self._load_unsplit(name)
            v = self._decode(name, v)
            dict.__setitem__(self, name, v)
        return v

    def __getitem__(self, name: str) -> DatasetMeta:
        return self._load(name, dict.__getitem__(self, name))

    def get(self, name: Any, default: Any = None) -> Any:
        v = dict.get(self, name, _MISSING)
        return default if v is _MISSING else self._load(name, v)

    def get_many(self, names: list[Any]) -> list[DatasetMeta | None]:
        """``[self.get(n) for n in names]`` (None for a name that is not a str). A batch decodes
        thousands of entries, each a dozen containers without cycles: the cyclic collector is
        held off meanwhile (at 1,000 entries it ran about 20 times per batch, and every few
        batches a full collection of the process's objects took longer than the batch)."""
        if len(names) > ONE_BY_ONE and self._lines is not None:
            self._split()
        with _gc.paused():
            get = self.get
            return [get(n) if isinstance(n, str) else None for n in names]

    def values(self) -> list[DatasetMeta]:  # type: ignore[override]
        return [v for _, v in self.items()]

    def items(self) -> list[tuple[str, DatasetMeta]]:  # type: ignore[override]
        """Every entry, decoded (with the collector paused, as :meth:`get_many`)."""
        if self._lines is not None:
            self._split()
        with _gc.paused():
            return [(k, self._load(k, v)) for k, v in list(dict.items(self))]  # list(): one atomic step under the GIL

    def pop(self, name: Any, *default: Any) -> Any:
        if self._lines is not None:
            self._split()
        v = dict.pop(self, name, *default)
        return v if v is None or (default and v is default[0]) else self._decode(name, v)

    def raw_items(self) -> Any:
        if self._lines is not None:
            self._split()
        return dict.items(self)

    def set_raw(self, name: str, blob: Any) -> None:
        """Add a dataset in its metadata-file form (decoded, and checked, when first used)."""
        self[name] = blob

    def copy(self) -> "Datasets":
        """A shallow copy (entries are shared; decoded or not) over the same schema table."""
        d = Datasets(self.schemas)
        dict.update(d, self.raw_items())
        return d


_MISSING = object()
_UNSPLIT = object()  # an entry still inside its Datasets' unsplit lines
_SPLIT_LOCK = threading.Lock()
ONE_BY_ONE = 32  # entries decoded one by one before a Datasets splits all of its lines


class IndexLocation(NamedTuple):
    """Where the chunk index footer of one array name lies: a byte range of one segment."""

    segment: str
    offset: int
    length: int
    raw_length: int
    crc: int
    #: the footer's codec; "" for footers of stores before format 3 (they use the store's codec)
    codec: str = ""

    def to_list(self) -> list[Any]:
        return list(self) if self.codec else list(self[:5])


class CatalogLocation(NamedTuple):
    """The catalog file of a committed state (see ``atlas._catfile``): path, stored and decoded
    length, CRC-32 of the stored bytes, and its row count (the number of datasets)."""

    path: str
    length: int
    raw_length: int
    crc: int
    rows: int

    @classmethod
    def from_list(cls, v: Any) -> "CatalogLocation":
        """Decode the metadata's entry (``ValueError`` if malformed or outside ``catalog/``)."""
        path, length, raw, crc, rows = v
        if not isinstance(path, str) or not _inside(path, CATALOG_DIR + "/"):
            raise ValueError(f"bad catalog path {path!r}")
        if any(type(x) is not int or x < 0 for x in (length, raw, crc, rows)) or crc >= 2**32:
            raise ValueError(f"bad catalog location {v!r}")
        return cls(path, length, raw, crc, rows)


@dataclass(frozen=True)
class Physical:
    """Where the data of one array name lives: its folder and its current index footer (immutable)."""

    dir: str
    index: IndexLocation | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"dir": self.dir, "index": self.index.to_list() if self.index else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Physical":
        """Decode one entry; paths must stay inside the store (``ValueError`` otherwise)."""
        folder = d["dir"]
        if not isinstance(folder, str) or not _inside(folder, "arrays/"):
            raise ValueError(f"bad array folder {folder!r}")
        idx = d.get("index")
        if not idx:
            return cls(folder, None)
        seg, off, ln, raw, crc, *rest = idx
        if not isinstance(seg, str) or not _inside(seg, folder + "/"):
            raise ValueError(f"bad index segment path {seg!r} for folder {folder!r}")
        if not type(off) is type(ln) is type(raw) is type(crc) is int or min(off, ln, raw, crc) < 0 or crc >= 2**32 \
                or off + ln > 2**62:
            raise ValueError(f"bad index location {idx!r}")
        if rest and (len(rest) > 1 or rest[0] not in codecs.CODECS):
            raise ValueError(f"bad index location {idx!r}: unknown codec")
        return cls(folder, IndexLocation(seg, off, ln, raw, crc, *rest))


def _history_record(h: Any) -> bool:
    """A well-formed record of the version log (``atlas._history`` writes them)."""
    return (isinstance(h, dict) and type(h.get("v")) is int and h["v"] >= 0 and isinstance(h.get("k"), str)
            and isinstance(h.get("t"), str) and isinstance(h.get("f"), dict)
            and type(h.get("a")) is type(h.get("c")) is type(h.get("d")) is int and isinstance(h.get("cat", ""), str))


def _inside(path: str, prefix: str) -> bool:
    """``path`` is a relative path below ``prefix`` with no ``.``/``..``/empty parts."""
    if not path.startswith(prefix) or "\\" in path:
        return False
    s = "/" + path + "/"  # a part that is empty, '.' or '..' shows as one of these between slashes
    return "//" not in s and "/./" not in s and "/../" not in s


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def array_dir(array: str) -> str:
    """The folder of a new array name: an ASCII slug of the name and a hash of it.

    A function of the name alone, so every process that writes the name first (a staged
    writer on another machine, or this handle) picks the same folder. Stores made before
    keep the folders they recorded (``arrays/NNNNN-<slug>``).
    """
    slug = _SLUG.sub("_", array)[:40].strip("._") or "a"
    digest = hashlib.blake2b(array.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"arrays/{slug}-{digest}"


@dataclass
class StoreMeta:
    codec: str
    datasets: Datasets = field(default_factory=lambda: Datasets([]))
    physical: dict[str, Physical] = field(default_factory=dict)
    next_id: int = 1
    generation: int = 0
    #: identifies this store for ever (a store re-created at the same path gets a new one)
    uid: str = ""
    #: the version log: one record per retained version, oldest first (see ``atlas._history``)
    history: tuple[dict[str, Any], ...] = ()
    #: the catalog file of this state, if one was written (older stores and small ones have none)
    catalog: CatalogLocation | None = None
    _schema_index: dict[Any, int] = field(default_factory=dict, repr=False)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def physical_for(self, array: str) -> Physical:
        p = self.physical.get(array)
        if p is None:
            p = self.physical[array] = Physical(array_dir(array))
        return p

    def copy(self) -> "StoreMeta":
        """A copy-on-write copy: its own dataset and physical tables over shared, unchanged entries.

        A committed snapshot's metadata is never changed; a transaction edits a copy (and
        copies a dataset's entry before changing it, see ``DatasetMeta.copy``).
        """
        return StoreMeta(codec=self.codec, datasets=self.datasets.copy(), physical=dict(self.physical),
                         next_id=self.next_id, generation=self.generation, uid=self.uid,
                         history=self.history, catalog=self.catalog, _schema_index=self._schema_index)

    def schema_number(self, a: ArrayMeta) -> int:
        """The number of ``a``'s schema in the schema table (added if new)."""
        table = self.datasets.schemas  # append-only, so undecoded datasets keep valid numbers
        index = self._schema_index
        if len(index) != len(table):
            index.clear()
            index.update({s.schema_key(): n for n, s in enumerate(table)})
        key = a.schema_key()
        n = index.get(key)
        if n is None:
            n = index[key] = len(table)
            table.append(a)
        return n

    def to_dict(self, fmt: str = "json") -> dict[str, Any]:
        number = self.schema_number
        memo: dict[tuple[int, int], int] = {}  # (layout, dims) objects -> schema number: instances share them

        def schema_no(a: ArrayMeta) -> int:
            key = (id(a.layout), id(a.dims))  # (every instance is alive until this returns: ids stay theirs)
            n = memo.get(key)
            if n is None:
                n = memo[key] = number(a)
            return n

        table = self.datasets.schemas
        datasets = [[k, v.to_blob(schema_no, fmt) if type(v) is DatasetMeta else v] for k, v in self.datasets.raw_items()]
        d: dict[str, Any] = {
            "format": "atlas",
            "version": FORMAT_VERSION,
            "codec": self.codec,
            "generation": self.generation,
            "uid": self.uid,
            "next_id": self.next_id,
            "schemas": [a.schema_dict() for a in table],
            "datasets": datasets,
            "physical": {k: p.to_dict() for k, p in self.physical.items()},
            "history": list(self.history),
        }
        if self.catalog is not None:  # optional: a reader that does not know it builds the catalog from "datasets"
            d["catalog"] = list(self.catalog)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "StoreMeta":
        if not isinstance(d, dict) or d.get("format") != "atlas":
            raise StoreFormatError(f"{where}: not an atlas store")
        version = d.get("version", 0)
        if type(version) is not int:
            raise CorruptStoreError(f"{where}: metadata is malformed: format version {version!r}")
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{where}: store format version {version} is newer than this library "
                f"supports ({FORMAT_VERSION}); upgrade atlas-python"
            )
        try:
            codec = d["codec"]
            if codec not in codecs.CODECS:
                raise ValueError(f"unknown codec {codec!r}")
            schemas = [ArrayMeta.schema_from_dict(x) for x in d["schemas"]]
            entries = d["datasets"]
            lines = entries if isinstance(entries, Lines) else None  # left unsplit by _metaio
            names = lines.names if lines is not None else [e[0] for e in entries]
            ds = Datasets(schemas, lines)  # (a line-layout file: its names, all str, as keys)
            if not _plain_names(names, ds if lines is not None else None):  # the slow, precise check only to name the culprit
                for name in names:
                    validate_name(name, "dataset")
            if lines is None:
                dict.update(ds, entries)  # pairs (ValueError for an entry that is not one)
            if len(ds) != len(names):
                raise ValueError("a dataset name appears twice")
            if lines is None and not set(map(type, dict.values(ds))) <= {str, bytes}:
                name, blob = next((k, v) for k, v in dict.items(ds) if type(v) not in (str, bytes))
                raise ValueError(f"dataset {name!r}: entry is a {type(blob).__name__}")
            physical = {}
            for k, p in d["physical"].items():
                validate_name(k, "array")
                physical[k] = Physical.from_dict(p)
            next_id, generation = d["next_id"], d["generation"]
            if type(next_id) is not int or type(generation) is not int or next_id < 1 or generation < 0:
                raise ValueError(f"bad next_id/generation {next_id!r}/{generation!r}")
            history = d.get("history") or []
            if not isinstance(history, list) or not all(_history_record(h) for h in history):
                raise ValueError("bad version log")
            cat = d.get("catalog")
            return cls(codec=codec, datasets=ds, physical=physical, next_id=next_id, generation=generation,
                       uid=str(d.get("uid", "")), history=tuple(history),
                       catalog=None if cat is None else CatalogLocation.from_list(cat))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
            raise CorruptStoreError(f"{where}: metadata is malformed: {e!r}") from e
