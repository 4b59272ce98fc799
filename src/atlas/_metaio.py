"""Metadata file encoding: a small binary header, then json or msgpack, optionally compressed.

Header (24 bytes, little-endian): magic ``ATLASMD1``, format byte (0 json, 1 msgpack),
compression byte (0 none, 1 zstd, 2 lz4), 2 reserved bytes, CRC-32 of the stored payload,
and the decoded payload length. ``Atlas.open`` reads format and compression from it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack

from . import codecs
from .errors import CorruptStoreError, StoreFormatError

MAGIC = b"ATLASMD1"
_HEADER = struct.Struct("<8sBBHIQ")
META_FORMATS = ("json", "msgpack")
META_FORMAT_ALIASES = {"mp": "msgpack"}
META_COMPRESSIONS = ("none", "zstd", "lz4")
_FMT_CODE = {"json": 0, "msgpack": 1}
_COMP_CODE = {"none": 0, "zstd": 1, "lz4": 2}


def canonical_meta_format(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"meta_format must be a string, got {type(name).__name__}: {name!r}")
    key = META_FORMAT_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in META_FORMATS:
        raise ValueError(f"unknown meta_format {name!r}; accepted: 'json', 'msgpack' (alias 'mp')")
    return key


def canonical_meta_compression(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"meta_compression must be a string, got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    key = codecs.CODEC_ALIASES.get(key, key)
    if key not in META_COMPRESSIONS:
        raise ValueError(f"unknown meta_compression {name!r}; accepted: 'none' (alias 'uncompressed'), 'zstd', 'lz4'")
    return key


def encode(obj: dict[str, Any], fmt: str, compression: str) -> bytes:
    """Serialise the metadata dict to the bytes of the metadata file."""
    if fmt == "json":
        raw = json.dumps(obj, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    else:
        raw = msgpack.packb(obj, use_bin_type=True)
    payload = codecs.compress(compression, raw)
    header = _HEADER.pack(MAGIC, _FMT_CODE[fmt], _COMP_CODE[compression], 0, codecs.checksum(payload), len(raw))
    return header + payload


def decode(data: bytes | bytearray | memoryview, where: str) -> tuple[dict[str, Any], str, str]:
    """Parse a metadata file; returns ``(dict, format, compression)``."""
    if len(data) < _HEADER.size:
        raise CorruptStoreError(f"{where}: metadata file truncated ({len(data)} bytes)")
    magic, f, c, _, crc, rawlen = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StoreFormatError(f"{where}: not an atlas metadata file (bad magic {magic!r})")
    try:
        fmt = META_FORMATS[f]
        comp = META_COMPRESSIONS[c]
    except IndexError:
        raise StoreFormatError(f"{where}: unknown metadata format/compression codes {f}/{c}") from None
    payload = memoryview(data)[_HEADER.size:]
    if codecs.checksum(payload) != crc:
        raise CorruptStoreError(f"{where}: metadata checksum mismatch (file is damaged)")
    try:
        raw = codecs.decompress(comp, payload, rawlen)
        if fmt == "json":
            obj = json.loads(bytes(raw).decode("utf-8"))
        else:
            obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is corruption
        raise CorruptStoreError(f"{where}: metadata cannot be decoded: {e}") from e
    if not isinstance(obj, dict):
        raise CorruptStoreError(f"{where}: metadata is not a mapping")
    return obj, fmt, comp
