"""Chunk codecs: zstd, lz4 and none.

Codec objects hold no shared mutable state: zstd contexts live in a ``threading.local``
(python-zstandard contexts must never be used by two threads at once), lz4 block calls
are stateless. All three release the GIL while they work on large buffers.
"""

from __future__ import annotations

import threading
import zlib
from typing import Union

import lz4.block
import zstandard

Buffer = Union[bytes, bytearray, memoryview]

CODECS = ("zstd", "lz4", "none")
CODEC_ALIASES = {"uncompressed": "none"}
ZSTD_LEVEL = 3


def canonical_codec(name: object, what: str = "codec") -> str:
    """Return the canonical codec name, or raise ``ValueError`` listing the accepted ones."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    key = CODEC_ALIASES.get(key, key)
    if key not in CODECS:
        accepted = ", ".join(repr(c) for c in CODECS + tuple(CODEC_ALIASES))
        raise ValueError(f"unknown {what} {name!r}; accepted: {accepted}")
    return key


_local = threading.local()


def _zc() -> zstandard.ZstdCompressor:
    c = getattr(_local, "zc", None)
    if c is None:
        c = _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    return c


def _zd() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def compress(codec: str, data: Buffer) -> bytes:
    """Compress ``data`` with ``codec``."""
    if codec == "zstd":
        return _zc().compress(data)
    if codec == "lz4":
        return lz4.block.compress(data, store_size=False)
    return bytes(data)


def decompress(codec: str, data: Buffer, raw_size: int) -> Buffer:
    """Decompress ``data``, whose decoded size must be ``raw_size`` (``ValueError`` otherwise).

    zstd frames must carry their content checksum (atlas always writes one, and the index
    relies on it): a damaged header bit that switches it off is refused, not trusted.
    """
    if codec == "zstd":
        if len(data) < 5 or not data[4] & 0x04:
            raise ValueError("zstd frame without its content checksum (damaged frame header)")
        out: Buffer = _zd().decompress(data, max_output_size=raw_size)
    elif codec == "lz4":
        out = lz4.block.decompress(data, uncompressed_size=raw_size)
    else:
        out = data
    if len(out) != raw_size:
        raise ValueError(f"frame decodes to {len(out)} bytes, expected {raw_size}")
    return out


def checksum(data: Buffer) -> int:
    """CRC-32 of ``data`` (zlib's, which releases the GIL on large buffers)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def frame_checksum(codec: str, frame: Buffer) -> int:
    """The checksum kept in the index for a compressed frame.

    zstd frames carry their own content checksum (XXH64, verified by the decompressor),
    so the index keeps 0 for them; lz4 and uncompressed frames use CRC-32.
    """
    return 0 if codec == "zstd" else checksum(frame)
