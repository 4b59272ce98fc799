"""Byte encodings of one chunk, and pending (unflushed) chunks.

A numeric chunk is its cells in C order (native little-endian). A string chunk is
``[u64 count][u64 offsets * (count + 1)][UTF-8 bytes]``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

import numpy as np

from .errors import CorruptStoreError


def encode_strings(arr: np.ndarray) -> bytes:
    parts = [s.encode("utf-8") for s in arr.ravel().tolist()]
    lens = np.fromiter((len(p) for p in parts), np.uint64, len(parts))
    offs = np.zeros(len(parts) + 1, np.uint64)
    np.cumsum(lens, out=offs[1:])
    return np.uint64(len(parts)).tobytes() + offs.tobytes() + b"".join(parts)


def strings_nbytes(buf: Any) -> int:
    """Length of the string chunk encoding at the start of ``buf``."""
    mv = memoryview(buf)
    n = int(np.frombuffer(mv[:8], np.uint64)[0])
    return 8 + 8 * (n + 1) + int(np.frombuffer(mv[8 + 8 * n:8 + 8 * (n + 1)], np.uint64)[0])


def decode_strings(buf: Any, shape: tuple[int, ...], where: str = "") -> np.ndarray:
    mv = memoryview(buf)
    try:
        n = int(np.frombuffer(mv[:8], np.uint64)[0])
        offs = np.frombuffer(mv[8:8 + 8 * (n + 1)], np.uint64).astype(np.int64)
        end = 8 + 8 * (n + 1) + int(offs[-1]) if n >= 0 else 0
        blob = bytes(mv[8 + 8 * (n + 1):end])
        if n != int(np.prod(shape)) or offs[-1] != len(blob):
            raise ValueError("length mismatch")
        out = np.empty(n, dtype=object)
        out[:] = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    except Exception as e:  # noqa: BLE001
        raise CorruptStoreError(f"{where}: string chunk cannot be decoded: {e}") from e
    return out.reshape(shape)


class Pending:
    """One unflushed chunk.

    Its payload is the raw chunk bytes (small chunks, packed into frames at flush) or an
    already compressed frame (large chunks, ``compressed``); it lives in ``data`` or, once
    spilled past the memory budget, at ``soff`` (``slen`` bytes) of the spill file.
    Stats (``nn`` < 0 means not computed yet) are the per-chunk columns of the index.
    """

    __slots__ = ("data", "compressed", "nbytes", "soff", "slen", "nn", "mn", "mx", "has", "masked")

    def __init__(self, data: bytes, compressed: bool, nbytes: int, nn: int, mn: int, mx: int, has: bool,
                 masked: bool = False) -> None:
        self.masked = masked  # the payload ends with a packed bitmask of the cells written so far
        self.data: bytes | None = data
        self.compressed = compressed
        self.nbytes = nbytes
        self.soff = -1
        self.slen = len(data)
        self.nn = nn
        self.mn = mn
        self.mx = mx
        self.has = has


class PendingStore(dict):  # type: ignore[type-arg]
    """``{array name: {(aid, cid): Pending}}`` with memory accounting and spilling.

    When the payload bytes held in memory exceed ``budget``, every in-memory payload is
    appended to an anonymous temporary file (outside the store, deleted on close) and
    dropped from memory. Nothing in the store changes before a flush.
    """

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.mem = 0
        self.spilled = 0
        self._file: Any = None
        self._end = 0
        self._hot: list[Pending] = []  # entries whose payload may still be in memory
        self._lock = threading.Lock()

    def put(self, name: str, entries: dict[tuple[int, int], Pending]) -> None:
        d = self.setdefault(name, {})
        for k, p in entries.items():
            old = d.get(k)
            if old is not None and old.data is not None:
                self.mem -= old.slen
            d[k] = p
            self.mem += p.slen
            self._hot.append(p)
        if self.mem > self.budget:
            self.spill()

    def payload(self, p: Pending) -> bytes:
        data = p.data
        if data is not None:
            return data
        return os.pread(self._file.fileno(), p.slen, p.soff)

    def spill(self) -> None:
        """Move every in-memory payload to the spill file."""
        with self._lock:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="atlas-spill-", dir=os.environ.get("ATLAS_SPILL_DIR"))
            fd = self._file.fileno()
            batch: list[Pending] = [p for p in self._hot if p.data is not None]
            self._hot = []
            for i in range(0, len(batch), 512):
                part = batch[i:i + 512]
                bufs = [p.data for p in part]
                n = _writev_all(fd, bufs, self._end)  # type: ignore[arg-type]
                off = self._end
                for p in part:
                    p.soff = off
                    off += p.slen
                    p.data = None
                self._end += n
            self.spilled += len(batch)
            self.mem = 0

    def reset(self) -> None:
        """Forget everything (after a successful flush)."""
        self.clear()
        self.mem = 0
        self._hot = []
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                self._end = 0


def _writev_all(fd: int, bufs: list[bytes], offset: int) -> int:
    total = sum(len(b) for b in bufs)
    done = 0
    while done < total:
        data = b"".join(bufs) if done == 0 else b"".join(bufs)[done:]
        done += os.pwrite(fd, data, offset + done)
    return total
