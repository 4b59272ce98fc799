"""The in-memory metadata model and its plain-dict (json/msgpack) form.

``StoreMeta`` holds every dataset, array schema, attribute and the location of each array
name's chunk index. It is loaded once by ``Atlas.open``, mutated by every call, and written
whole (last) by ``flush``. Non-finite floats are spelled ``"nan"``, ``"inf"``, ``"-inf"``
so json metadata stays strict JSON.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

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
    return name


class Layout:
    """Values derived from a schema, computed once per distinct schema (kernels use rank >= 1)."""

    __slots__ = ("kshape", "kchunk", "kchunk_t", "single_chunk", "empty", "sdtype", "chunk_elems", "fill_storage")

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
        if st is not None:
            mn, mx = st[1], st[2]
            if schema.dtype in D.NUMERIC and D.NUMERIC[schema.dtype].kind == "f":
                mn = None if mn is None else j2f(mn)
                mx = None if mx is None else j2f(mx)
            stats = {"null_count": int(st[0]), "min": mn, "max": mx}
        m = cls(int(row[0]), schema.dtype, schema.dims, schema.shape, schema.chunk, schema.fill, stats)
        m.__dict__["layout"] = schema.layout
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

    def to_dict(self, schema_no: Any) -> dict[str, Any]:
        return {
            "name": self.name,
            "attrs": {k: [t, f2j(v)] for k, (t, v) in self.attrs.items()},
            "arrays": {k: a.to_row(schema_no(a)) for k, a in self.arrays.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], schemas: list[ArrayMeta]) -> "DatasetMeta":
        attrs = {}
        for k, (t, v) in d["attrs"].items():
            attrs[k] = (t, j2f(v) if t == "float64" else v)
        return cls(d["name"], attrs, {k: ArrayMeta.from_row(r, schemas[r[1]]) for k, r in d["arrays"].items()})


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
    datasets: dict[str, DatasetMeta] = field(default_factory=dict)
    physical: dict[str, Physical] = field(default_factory=dict)
    next_id: int = 1
    generation: int = 0
    #: identifies this store for ever (a store re-created at the same path gets a new one)
    uid: str = ""

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def physical_for(self, array: str) -> Physical:
        p = self.physical.get(array)
        if p is None:
            slug = _SLUG.sub("_", array)[:40].strip("._") or "a"
            p = self.physical[array] = Physical(f"arrays/{len(self.physical):05d}-{slug}")
        return p

    def to_dict(self) -> dict[str, Any]:
        schemas: dict[tuple[Any, ...], int] = {}
        table: list[dict[str, Any]] = []

        def schema_no(a: ArrayMeta) -> int:
            key = a.schema_key()
            n = schemas.get(key)
            if n is None:
                n = schemas[key] = len(table)
                table.append(a.schema_dict())
            return n

        datasets = [d.to_dict(schema_no) for d in self.datasets.values()]
        return {
            "format": "atlas",
            "version": FORMAT_VERSION,
            "codec": self.codec,
            "generation": self.generation,
            "uid": self.uid,
            "next_id": self.next_id,
            "schemas": table,
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
            ds = [DatasetMeta.from_dict(x, schemas) for x in d["datasets"]]
            return cls(
                codec=d["codec"],
                datasets={x.name: x for x in ds},
                physical={k: Physical.from_dict(p) for k, p in d["physical"].items()},
                next_id=int(d["next_id"]),
                generation=int(d["generation"]),
                uid=str(d.get("uid", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CorruptStoreError(f"{where}: metadata is malformed: {e!r}") from e
