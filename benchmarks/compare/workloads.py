"""The table of workloads: what is stored, and the boxes every operation reads.

Only NumPy is imported here, so a child process of any system (including the reference
implementation in its own virtual environment) can build the same data from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Workload:
    """N datasets of the same arrays; ``data(i)`` is dataset ``i``'s ``{array: ndarray}``."""

    name: str
    n: int
    arrays: tuple[str, ...]        # float32 data arrays (the ones slices, stats and stacks use)
    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    dims: tuple[str, ...]
    data: Callable[[int, "Workload"], dict[str, np.ndarray]]
    time_axis: bool = False        # plus a datetime64[ns] ``time`` array of shape (shape[0],)

    def names(self) -> list[str]:
        return [f"ds{i:06d}" for i in range(self.n)]

    def all_arrays(self) -> tuple[str, ...]:
        return self.arrays + (("time",) if self.time_axis else ())

    @property
    def first_chunk(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(start, count) of the first chunk: the box of the slice and stacked operations."""
        return tuple(0 for _ in self.shape), tuple(min(c, s) for c, s in zip(self.chunk, self.shape))

    def scaled(self, n: int) -> "Workload":
        return Workload(self.name, n, self.arrays, self.shape, self.chunk, self.dims, self.data, self.time_axis)

    def describe(self) -> str:
        extra = " + time datetime64[ns]" if self.time_axis else ""
        return (f"{self.n} datasets x {len(self.arrays)} float32 {self.shape} in {self.chunk} chunks{extra}")


def grid_array(i: int, k: int, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth float32 field plus noise, 10 mantissa bits kept (zstd about 2x), deterministic."""
    rng = np.random.default_rng([7, i, k])
    t = np.arange(shape[0], dtype=np.float32)[:, None, None]
    y = np.linspace(-1.5, 1.5, shape[1], dtype=np.float32)[None, :, None]
    x = np.linspace(0, 2 * np.pi, shape[2], dtype=np.float32)[None, None, :]
    f = np.float32(10 + 5 * k) + np.float32(10) * np.cos(y) * np.sin(np.float32(2) * x + np.float32(i) + np.float32(0.1) * t)
    f = (f + rng.standard_normal(shape, dtype=np.float32) * np.float32(0.5)).astype(np.float32)
    return np.ascontiguousarray((f.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32))


def _grid_data(i: int, w: Workload) -> dict[str, np.ndarray]:
    return {v: grid_array(i, k, w.shape) for k, v in enumerate(w.arrays)}


def _small_data(i: int, w: Workload) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([11, i])
    out = {v: rng.standard_normal(w.shape, dtype=np.float32) for v in w.arrays}
    t0 = np.datetime64("2024-01-01", "ns") + np.timedelta64(100 * i, "h")
    out["time"] = t0 + np.arange(w.shape[0]) * np.timedelta64(3600 * 10**9, "ns")
    return out


WORKLOADS: dict[str, Workload] = {
    "small": Workload("small", 1000, ("a", "b", "c"), (100,), (100,), ("obs",), _small_data, time_axis=True),
    "gridded": Workload("gridded", 200, ("temp", "salt", "u"), (24, 90, 180), (6, 45, 90), ("time", "lat", "lon"),
                        _grid_data),
}

# name -> what it measures (the rows of the table, in order)
OPS: dict[str, str] = {
    "ingest": "ingest: create, write every dataset, flush/close (s)",
    "open_list": "reopen and list datasets (s)",
    "read_one": "read one dataset, fresh handle (s)",
    "read_all": "read every dataset (s)",
    "slices": "3 one-chunk slices x N, read_arrays-style (s)",
    "stats": "stats (count, min, max) of every dataset (s)",
    "stacked": "stacked: first chunk of one array x N (s)",
    "ingest_rss": "peak RSS of ingest over baseline (MB)",
}
