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
from functools import cached_property
from typing import Any

import numpy as np

from . import dtypes as D
from .errors import CorruptStoreError, StoreFormatError

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

    # ---- derived values (arrays are padded to rank 1 so kernels never see 0-D)
    @cached_property
    def kshape(self) -> np.ndarray:
        return np.asarray(self.shape or (1,), np.int64)

    @cached_property
    def kchunk(self) -> np.ndarray:
        """Effective chunk shape: never larger than the array (so padding stays bounded)."""
        if not self.shape:
            return np.ones(1, np.int64)
        return np.asarray([max(1, min(c, s)) for c, s in zip(self.chunk, self.shape)], np.int64)

    @cached_property
    def sdtype(self) -> np.dtype:
        return D.storage_dtype(self.dtype)

    @cached_property
    def chunk_elems(self) -> int:
        return int(np.prod(self.kchunk))

    @cached_property
    def fill_storage(self) -> Any:
        return D.fill_storage_value(self.dtype, self.fill)

    @property
    def is_string(self) -> bool:
        return self.dtype == D.STRING

    @property
    def row_count(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def layout_key(self) -> tuple[Any, ...]:
        return (self.dtype, self.shape, tuple(self.kchunk.tolist()))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "aid": self.aid,
            "dtype": self.dtype,
            "dims": list(self.dims),
            "shape": list(self.shape),
            "chunk": list(self.chunk),
        }
        if self.fill is not None:
            d["fill"] = f2j(self.fill)
        if self.stats is not None:
            s = dict(self.stats)
            for k in ("min", "max"):
                s[k] = f2j(s[k])
            d["stats"] = s
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArrayMeta":
        dtype = d["dtype"]
        fill = d.get("fill")
        if fill is not None and dtype in D.NUMERIC and D.NUMERIC[dtype].kind == "f":
            fill = j2f(fill)
        stats = d.get("stats")
        if stats is not None and dtype in D.NUMERIC and D.NUMERIC[dtype].kind == "f":
            stats = dict(stats)
            for k in ("min", "max"):
                if stats[k] is not None:
                    stats[k] = j2f(stats[k])
        return cls(int(d["aid"]), dtype, tuple(d["dims"]), tuple(int(x) for x in d["shape"]),
                   tuple(int(x) for x in d["chunk"]), fill, stats)


@dataclass
class DatasetMeta:
    name: str
    attrs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    arrays: dict[str, ArrayMeta] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "attrs": {k: [t, f2j(v)] for k, (t, v) in self.attrs.items()},
            "arrays": {k: a.to_dict() for k, a in self.arrays.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetMeta":
        attrs = {}
        for k, (t, v) in d["attrs"].items():
            attrs[k] = (t, j2f(v) if t == "float64" else v)
        return cls(d["name"], attrs, {k: ArrayMeta.from_dict(a) for k, a in d["arrays"].items()})


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
        return {
            "format": "atlas",
            "version": FORMAT_VERSION,
            "codec": self.codec,
            "generation": self.generation,
            "next_id": self.next_id,
            "datasets": [d.to_dict() for d in self.datasets.values()],
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
            ds = [DatasetMeta.from_dict(x) for x in d["datasets"]]
            return cls(
                codec=d["codec"],
                datasets={x.name: x for x in ds},
                physical={k: Physical.from_dict(p) for k, p in d["physical"].items()},
                next_id=int(d["next_id"]),
                generation=int(d["generation"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptStoreError(f"{where}: metadata is malformed: {e!r}") from e
