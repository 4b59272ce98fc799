"""Not a peer: the floor of a Python reader of zstd chunks, measured beside the peers.

``floor`` stores every chunk as one zstd frame (level 3), all frames of one array name back
to back in one file, with a NumPy table of offsets and a JSON list of dataset names. Its
operations do nothing but what any Python store of these bytes must do: read the byte
ranges, decompress with python-zstandard on a pool of one thread per core (the GIL is
released while it works) and place the chunks with NumPy slicing. No metadata, checksums
beyond zstd's own, pending writes, versions or statistics. Where atlas's time is close to
this floor and a peer is faster than both, the gap is the codec and the language, not
atlas's machinery. Statistics are not measured (atlas keeps them in its metadata; a floor
that decodes the data would not be one).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .drivers import Driver
from .workloads import Workload

_local = threading.local()


def _zc() -> Any:
    import zstandard

    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=3)
    return c


def _zd() -> Any:
    import zstandard

    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def _boxes(shape: tuple[int, ...], chunk: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The chunk grid in C order, as boxes of slices."""
    ranges = [range(0, s, c) for s, c in zip(shape, chunk)]
    return [tuple(slice(a, min(a + c, s)) for a, c, s in zip(corner, chunk, shape)) for corner in itertools.product(*ranges)]


def _layout(w: Workload, var: str) -> tuple[tuple[int, ...], tuple[int, ...], Any]:
    if var == "time":
        return (w.shape[0],), (w.shape[0],), np.int64
    return w.shape, w.chunk, np.float32


class FloorDriver(Driver):
    name = "floor"
    packages = ("zstandard",)
    note = "not a peer: zstd 3 frames + NumPy on one thread per core, no store logic"
    peer = False
    skip = ("stats",)

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            self._pool = ThreadPoolExecutor(max_workers=n)
        return self._pool

    def ingest(self, path: str, w: Workload) -> None:
        os.makedirs(path)
        names = w.names()
        files = {v: open(os.path.join(path, f"{v}.bin"), "wb") for v in w.all_arrays()}
        offsets = {v: np.zeros((len(names), len(_boxes(*_layout(w, v)[:2])) + 1), np.int64) for v in w.all_arrays()}
        pos = dict.fromkeys(files, 0)
        try:
            for i in range(len(names)):
                data = w.data(i, w)
                for v, f in files.items():
                    shape, chunk, dt = _layout(w, v)
                    a = data[v].view(np.int64) if v == "time" else data[v]
                    parts = [np.ascontiguousarray(a[b]) for b in _boxes(shape, chunk)]
                    frames = list(self.pool().map(lambda p: _zc().compress(p), parts))
                    sizes = np.fromiter(map(len, frames), np.int64, len(frames))
                    offsets[v][i] = pos[v] + np.concatenate([[0], np.cumsum(sizes)])
                    pos[v] += int(sizes.sum())
                    f.writelines(frames)
        finally:
            for f in files.values():
                f.close()
        for v, o in offsets.items():
            np.save(os.path.join(path, f"{v}.idx.npy"), o)
        with open(os.path.join(path, "names.json"), "w") as f:
            json.dump(names, f)

    def open(self, path: str) -> Any:
        with open(os.path.join(path, "names.json")) as f:
            names = json.load(f)
        return {"path": path, "names": names, "row": {n: i for i, n in enumerate(names)}, "idx": {}, "fd": {},
                "lock": threading.Lock()}

    def close(self, h: Any) -> None:
        for fd in h["fd"].values():
            os.close(fd)

    def list(self, h: Any) -> list[str]:
        return list(h["names"])

    def _frames(self, h: Any, var: str, row: int, first: int, last: int) -> list[bytes]:
        """Compressed frames ``first..last-1`` of dataset ``row`` (one read)."""
        idx = h["idx"].get(var)
        if idx is None:
            with h["lock"]:  # the pool's threads open an array name once
                if var not in h["idx"]:
                    h["fd"][var] = os.open(os.path.join(h["path"], f"{var}.bin"), os.O_RDONLY)
                    h["idx"][var] = np.load(os.path.join(h["path"], f"{var}.idx.npy"))
                idx = h["idx"][var]
        o = idx[row]
        buf = memoryview(os.pread(h["fd"][var], int(o[last] - o[first]), int(o[first])))
        base = int(o[first])
        return [buf[int(o[k]) - base:int(o[k + 1]) - base] for k in range(first, last)]

    def _read_array(self, h: Any, row: int, var: str, w: Workload) -> np.ndarray:
        shape, chunk, dt = _layout(w, var)
        boxes = _boxes(shape, chunk)
        out = np.empty(shape, dt)
        for b, fr in zip(boxes, self._frames(h, var, row, 0, len(boxes))):
            out[b] = np.frombuffer(_zd().decompress(fr), dt).reshape([s.stop - s.start for s in b])
        return out

    def _first_chunk(self, h: Any, row: int, var: str, w: Workload) -> np.ndarray:
        shape, chunk, dt = _layout(w, var)
        b = _boxes(shape, chunk)[0]
        (fr,) = self._frames(h, var, row, 0, 1)
        return np.frombuffer(_zd().decompress(fr), dt).reshape([s.stop - s.start for s in b])

    def read(self, h: Any, name: str, w: Workload) -> dict[str, np.ndarray]:
        row = h["row"][name]
        vs = w.all_arrays()
        got = self.pool().map(lambda v: self._read_array(h, row, v, w), vs)
        out = dict(zip(vs, got))
        if "time" in out:
            out["time"] = out["time"].view("datetime64[ns]")
        return out

    def read_all(self, h: Any, names: list[str], w: Workload) -> int:
        tasks = [(h["row"][n], v) for n in names for v in w.all_arrays()]
        return sum(1 for _ in self.pool().map(lambda t: self._read_array(h, t[0], t[1], w), tasks))

    def slices_all(self, h: Any, names: list[str], w: Workload) -> int:
        tasks = [(h["row"][n], v) for n in names for v in w.arrays]
        return sum(1 for _ in self.pool().map(lambda t: self._first_chunk(h, t[0], t[1], w), tasks))

    def stacked(self, h: Any, names: list[str], w: Workload) -> np.ndarray:
        rows = [h["row"][n] for n in names]
        return np.stack(list(self.pool().map(lambda r: self._first_chunk(h, r, w.arrays[0], w), rows)))
