"""The in-memory metadata model and its plain-dict (json/msgpack) form.

``StoreMeta`` holds every dataset, array schema, attribute and the location of each array
name's chunk index. It is loaded once by ``Atlas.open``, mutated by every call, and written
whole (last) by ``flush``. Non-finite floats are spelled ``"nan"``, ``"inf"``, ``"-inf"``
so json metadata stays strict JSON.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

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


FORMAT_VERSION = 1
META_PATH = "atlas.meta"


def f2j(x: Any) -> Any:
    """A float in a json-safe form."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def j2f(x: Any) -> float:
    return float(x)


def validate_name(name: Any, what: str) -> str:
    """Dataset, array and attribute names: non-empty str, no '/', no leading '_', not '.'/'..'."""
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
    return name


class Layout:
    """Values derived from a schema, computed once per distinct schema (kernels use rank >= 1)."""

    __slots__ = ("kshape", "kchunk", "kchunk_t", "single_chunk", "empty", "sdtype", "chunk_elems", "fill_storage", "is_float")

    def __init__(self, dtype: str, shape: tuple[int, ...], chunk: tuple[int, ...], fill: Any) -> None:
        kc = tuple(max(1, min(c, s)) for c, s in zip(chunk, shape)) if shape else (1,)
        self.kshape = np.asarray(shape or (1,), np.int64)
        self.kchunk = np.asarray(kc, np.int64)
        self.kchunk_t = kc
        self.empty = any(s == 0 for s in shape)  # a zero-length axis: no cells, no chunks
        self.single_chunk = not self.empty and all(c >= s for c, s in zip(kc, shape or (1,)))
        self.sdtype = D.storage_dtype(dtype)
        self.chunk_elems = math.prod(kc)
        self.fill_storage = D.fill_storage_value(dtype, fill)
        self.is_float = self.sdtype.kind == "f"


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
            mn, mx = st[1], st[2]
            if lay.is_float:  # non-finite floats are spelled as strings in json
                if mn.__class__ is str:
                    mn = float(mn)
                if mx.__class__ is str:
                    mx = float(mx)
            stats = {"null_count": st[0], "min": mn, "max": mx}
        # the schema's fields and its cached layout, copied in one step (opening a dataset of a
        # big store decodes thousands of these; the dataclass __init__ would cost several times more)
        m = cls.__new__(cls)
        m.__dict__ = {**schema.__dict__, "aid": row[0], "stats": stats, "layout": lay}
        return m

    @classmethod
    def schema_from_dict(cls, d: dict[str, Any]) -> "ArrayMeta":
        dtype = d["dtype"]
        fill = d.get("fill")
        if fill is not None and dtype in D.NUMERIC and D.NUMERIC[dtype].kind == "f":
            fill = j2f(fill)
        return cls(0, dtype, tuple(d["dims"]), tuple(int(x) for x in d["shape"]), tuple(int(x) for x in d["chunk"]), fill)


@dataclass
class DatasetMeta:
    name: str
    attrs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    arrays: dict[str, ArrayMeta] = field(default_factory=dict)

    def to_blob(self, schema_no: Any, fmt: str) -> Any:
        """This dataset as one opaque value of the metadata file (decoded only when used)."""
        obj = [{k: [t, f2j(v)] for k, (t, v) in self.attrs.items()},
               {k: a.to_row(schema_no(a)) for k, a in self.arrays.items()}]
        if fmt == "json":
            return _JSON.encode(obj)
        return msgpack.packb(obj, use_bin_type=True)

    @classmethod
    def from_blob(cls, name: str, blob: Any, schemas: list[ArrayMeta]) -> "DatasetMeta":
        attrs_d, arrays_d = json.loads(blob) if isinstance(blob, str) else msgpack.unpackb(blob, raw=False)
        attrs = {}
        for k, (t, v) in attrs_d.items():
            attrs[k] = (t, j2f(v) if t == "float64" else v)
        return cls(name, attrs, {k: ArrayMeta.from_row(r, schemas[r[1]]) for k, r in arrays_d.items()})


_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)  # one encoder, reused


class Datasets(dict):  # type: ignore[type-arg]
    """``{name: DatasetMeta}`` whose entries are decoded from the metadata file on first access.

    Opening a store with 100,000 datasets parses one string per dataset; a dataset's
    arrays and attributes become Python objects only when something asks for them, and an
    untouched dataset is written back as the same string.
    """

    def __init__(self, schemas: list[ArrayMeta]) -> None:
        super().__init__()
        self.schemas = schemas

    def _decode(self, name: str, v: Any) -> DatasetMeta:
        if type(v) is DatasetMeta:
            return v
        try:
            return DatasetMeta.from_blob(name, v, self.schemas)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CorruptStoreError(f"metadata of dataset {name!r} is malformed: {e!r}") from e

    def _load(self, name: str, v: Any) -> DatasetMeta:
        if type(v) is not DatasetMeta:
            v = self._decode(name, v)
            dict.__setitem__(self, name, v)
        return v

    def __getitem__(self, name: str) -> DatasetMeta:
        return self._load(name, dict.__getitem__(self, name))

    def get(self, name: Any, default: Any = None) -> Any:
        v = dict.get(self, name, _MISSING)
        return default if v is _MISSING else self._load(name, v)

    def values(self) -> list[DatasetMeta]:  # type: ignore[override]
        return [self._load(k, v) for k, v in dict.items(self)]

    def items(self) -> list[tuple[str, DatasetMeta]]:  # type: ignore[override]
        return [(k, self._load(k, v)) for k, v in dict.items(self)]

    def pop(self, name: Any, *default: Any) -> Any:
        v = dict.pop(self, name, *default)
        return v if v is None or (default and v is default[0]) else self._decode(name, v)

    def raw_items(self) -> Any:
        return dict.items(self)


_MISSING = object()


@dataclass
class Physical:
    """Where the data of one array name lives: its folder and its current index footer."""

    dir: str
    index: tuple[str, int, int, int, int] | None = None  # (segment path, offset, length, raw length, crc)

    def to_dict(self) -> dict[str, Any]:
        return {"dir": self.dir, "index": list(self.index) if self.index else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Physical":
        idx = d.get("index")
        return cls(d["dir"], (str(idx[0]), int(idx[1]), int(idx[2]), int(idx[3]), int(idx[4])) if idx else None)


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class StoreMeta:
    codec: str
    datasets: Datasets = field(default_factory=lambda: Datasets([]))
    physical: dict[str, Physical] = field(default_factory=dict)
    next_id: int = 1
    generation: int = 0
    #: identifies this store for ever (a store re-created at the same path gets a new one)
    uid: str = ""
    _schema_index: dict[Any, int] = field(default_factory=dict, repr=False)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def physical_for(self, array: str) -> Physical:
        p = self.physical.get(array)
        if p is None:
            slug = _SLUG.sub("_", array)[:40].strip("._") or "a"
            p = self.physical[array] = Physical(f"arrays/{len(self.physical):05d}-{slug}")
        return p

    def to_dict(self, fmt: str = "json") -> dict[str, Any]:
        table = self.datasets.schemas  # append-only, so undecoded datasets keep valid numbers
        index = self._schema_index
        if len(index) != len(table):
            index.clear()
            index.update({a.schema_key(): n for n, a in enumerate(table)})

        def schema_no(a: ArrayMeta) -> int:
            key = a.schema_key()
            n = index.get(key)
            if n is None:
                n = index[key] = len(table)
                table.append(a)
            return n

        datasets = [[k, v.to_blob(schema_no, fmt) if type(v) is DatasetMeta else v] for k, v in self.datasets.raw_items()]
        return {
            "format": "atlas",
            "version": FORMAT_VERSION,
            "codec": self.codec,
            "generation": self.generation,
            "uid": self.uid,
            "next_id": self.next_id,
            "schemas": [a.schema_dict() for a in table],
            "datasets": datasets,
            "physical": {k: p.to_dict() for k, p in self.physical.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "StoreMeta":
        if d.get("format") != "atlas":
            raise StoreFormatError(f"{where}: not an atlas store")
        if int(d.get("version", 0)) > FORMAT_VERSION:
            raise StoreFormatError(
                f"{where}: store format version {d.get('version')} is newer than this library "
                f"supports ({FORMAT_VERSION}); upgrade atlas-python"
            )
        try:
            schemas = [ArrayMeta.schema_from_dict(x) for x in d["schemas"]]
            ds = Datasets(schemas)
            for name, blob in d["datasets"]:
                dict.__setitem__(ds, name, blob)
            return cls(
                codec=d["codec"],
                datasets=ds,
                physical={k: Physical.from_dict(p) for k, p in d["physical"].items()},
                next_id=int(d["next_id"]),
                generation=int(d["generation"]),
                uid=str(d.get("uid", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CorruptStoreError(f"{where}: metadata is malformed: {e!r}") from e
