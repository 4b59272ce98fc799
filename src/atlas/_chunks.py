"""Byte encodings of one chunk (pending chunks live in ``_pending``).

A numeric chunk is its cells in C order (native little-endian). A string chunk is
``[u64 count][u64 offsets * (count + 1)][UTF-8 bytes]``.
"""

from __future__ import annotations

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
