"""Metadata file encoding: a small binary header, then json or msgpack, optionally compressed.

Header (24 bytes, little-endian): magic ``ATLASMD1``, layout byte, compression byte (0 none,
1 zstd, 2 lz4), 2 reserved bytes, CRC-32 of the stored payload, and the decoded payload
length. ``Atlas.open`` reads format and compression from it.

Layouts: 1 is one msgpack document. 0 is one json document (written before; still read).
2 is json as written now: the document without its ``datasets``, one line, then one line
per dataset, ``<name as a json string>\t<its entry>``. A dataset's entry is itself json
text that is parsed only when the dataset is used, so keeping it out of the outer document
spares escaping and unescaping every quote in it: opening a store of 1,000 small datasets
parses its metadata in about a fifth of the time. Compact json never holds a raw tab or
newline, which is what makes the lines unambiguous (checked when writing; metadata that
could not be written so falls back to layout 0).
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any

import msgpack
import numpy as np

from . import codecs
from .errors import CorruptStoreError, StoreFormatError

MAGIC = b"ATLASMD1"
_HEADER = struct.Struct("<8sBBHIQ")
META_FORMATS = ("json", "msgpack")
META_FORMAT_ALIASES = {"mp": "msgpack"}
META_COMPRESSIONS = ("none", "zstd", "lz4")
_FMT_CODE = {"json": 0, "msgpack": 1}
_LAYOUTS = ("json", "msgpack", "json")  # layout byte -> format
_JSON_LINES = 2
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
    code = _FMT_CODE[fmt]
    if fmt == "json":
        raw, code = _json_lines(obj)
    else:
        raw = msgpack.packb(obj, use_bin_type=True)
    payload = codecs.compress(compression, raw)
    header = _HEADER.pack(MAGIC, code, _COMP_CODE[compression], 0, codecs.checksum(payload), len(raw))
    return header + payload


_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)  # one encoder, reused
_dumps = _JSON.encode  # compact, strict json of a whole metadata document


def _one_shot_encoder() -> Any:
    """``_JSON.encode`` without its per-call set-up: CPython's C encoder made once (a flush
    encodes one entry per dataset), if this Python has one that writes the same text."""
    try:
        from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

        enc = c_make_encoder(None, _JSON.default, encode_basestring, None, ":", ",", False, False, False)
        probe: list[Any] = [{"k\u00e9\"": [1, -2.5, None, "x\ty", True, [], {}]}, {}]
        if "".join(enc(probe, 0)) == _JSON.encode(probe):
            return lambda obj: "".join(enc(obj, 0))
    except Exception:  # noqa: BLE001 - another Python: the public encoder
        pass
    return _JSON.encode


#: ``dumps_entry(obj) -> str``: compact, strict json of one dataset's entry (``atlas._meta.encode_blob``)
dumps_entry = _one_shot_encoder()


def _json_lines(obj: dict[str, Any]) -> tuple[bytes, int]:
    """Layout 2 when every dataset entry is a string (as the metadata keeps them), else layout 0."""
    entries = obj.get("datasets") if isinstance(obj, dict) else None
    if isinstance(entries, list) and all(type(e) is list and len(e) == 2 and type(e[1]) is str for e in entries):
        head = {k: v for k, v in obj.items() if k != "datasets"}
        head["datasets"] = [e[0] for e in entries]
        body = "\n".join([e[1] for e in entries])
        if body.count("\n") == max(0, len(entries) - 1):  # no entry holds a raw newline
            return (_dumps(head) + "\n" + body).encode("utf-8"), _JSON_LINES
    return _dumps(obj).encode("utf-8"), _FMT_CODE["json"]


class Lines:
    """The dataset entries of a line-layout file, split when first needed.

    Opening a store and listing its datasets needs only the names (the first line): the
    entries stay one ``bytes`` until something asks for any of them, then :meth:`entries`
    splits them all at once (``CorruptStoreError`` naming the file if they do not pair up
    with the names).
    """

    __slots__ = ("names", "body", "where", "loaded", "_cum", "_wins", "_pos")

    def __init__(self, names: list[Any], body: memoryview, where: str) -> None:
        self.names, self.body, self.where = names, body, where
        #: entries taken one by one before the split (``atlas._meta.Datasets`` keeps them here)
        self.loaded: dict[str, Any] = {}
        self._cum: Any = None  # newlines before each window of the body, counted on the first one-by-one lookup
        self._wins: dict[int, Any] = {}  # window -> positions of its newlines, found when a lookup lands there
        self._pos: dict[str, int] | None = None  # name -> line, for stores too big to scan the names

    def _text(self, data: Any, what: str) -> str:
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError as e:
            raise CorruptStoreError(f"{self.where}: metadata cannot be decoded: {what} is not UTF-8 ({e})") from None

    def _mismatch(self, entries: int) -> CorruptStoreError:
        return CorruptStoreError(f"{self.where}: metadata cannot be decoded: {len(self.names)} dataset names "
                                 f"but {entries} entries")

    def _newline(self, k: int) -> int:
        """Position of the ``k``-th ``\\n`` of the body (counted from 0)."""
        cum = self._cum
        w = int(np.searchsorted(cum, k, "right")) - 1
        pos = self._wins.get(w)
        if pos is None:
            a = w * _WINDOW
            pos = self._wins[w] = np.flatnonzero(_mask(np.frombuffer(self.body, np.uint8)[a:a + _WINDOW])) + a
        return int(pos[k - int(cum[w])])

    def entries(self) -> list[str]:
        entries = self._text(self.body, "a dataset entry").split("\n") if self.names else []
        if len(entries) != len(self.names) or (not self.names and len(self.body)):
            raise self._mismatch(len(entries))
        return entries

    def entry(self, name: str) -> str:
        """The entry of the first dataset called ``name``, without splitting the others.

        Splitting 1,000 entries of a 250 KB file costs a fresh process about 0.1 ms (a fresh
        string per entry). Line ends are counted with NumPy per window of ``_WINDOW`` bytes
        (in a small per-thread mask: a whole-file one would be 250 KB of fresh pages to fault
        in, each time) and located only in the windows a lookup lands in.
        """
        cum = self._cum
        if cum is None:
            cum = _newline_counts(self.body)
            if int(cum[-1]) + 1 != len(self.names):
                raise self._mismatch(int(cum[-1]) + 1)
            self._cum = cum
        names = self.names  # unique: StoreMeta.from_dict refuses a file that repeats one
        if len(names) <= SCAN_NAMES:
            i = names.index(name)
        else:  # a scan of 100,000 names costs ~1 ms a lookup; the map ~5 ms once
            if self._pos is None:
                self._pos = dict(zip(names, range(len(names))))
            i = self._pos[name]
        start = self._newline(i - 1) + 1 if i else 0
        end = self._newline(i) if i < len(names) - 1 else len(self.body)
        return self._text(self.body[start:end], f"the entry of dataset {name!r}")


_WINDOW = 64 * 1024
SCAN_NAMES = 4096  # Lines.entry finds a name by scanning the list up to this many names (~20 us)
_scratch = threading.local()


def _mask(win: np.ndarray) -> np.ndarray:
    """``win == "\\n"`` in this thread's scratch mask."""
    mask = getattr(_scratch, "mask", None)
    if mask is None:
        mask = _scratch.mask = np.empty(_WINDOW, bool)
    m = mask[:len(win)]
    np.equal(win, 10, out=m)
    return m


def _newline_counts(body: memoryview) -> np.ndarray:
    """``c[w]``: the ``\\n`` in ``body`` before window ``w`` (``c[-1]``: all of them)."""
    data = np.frombuffer(body, np.uint8)
    counts = [0] + [int(np.count_nonzero(_mask(data[a:a + _WINDOW]))) for a in range(0, len(data), _WINDOW)]
    return np.cumsum(np.asarray(counts, np.int64))


class ReadBuffers:
    """Buffers that metadata files are read into, reused once nothing uses them.

    A fresh process, or a fresh handle after the last one was dropped, would read a 250 KB
    metadata file into memory never touched before: on this kind of VM about 2 us per 4 KB
    page, half the cost of opening a store of 1,000 small datasets. A decoded file keeps
    only memoryviews of its buffer (the entries of :class:`Lines`), so a buffer is free
    exactly when it has no buffer exports, which resizing it tests (``BufferError``).
    """

    def __init__(self, keep: int = 2, largest: int = 8 * 1024 * 1024) -> None:
        self.keep = keep  # buffers remembered: at most keep * largest bytes outlive their handles
        self.largest = largest  # a larger buffer (a store of ~30,000+ datasets) is not kept
        self.free: list[bytearray] = []  # the last buffers handed out, in use or not
        self.lock = threading.Lock()

    def take(self, n: int) -> bytearray:
        """A buffer of ``n`` bytes (contents undefined); hand it back with :meth:`give`."""
        with self.lock:
            for i, b in enumerate(self.free):
                if len(b) >= n and _unexported(b):
                    del self.free[i]
                    del b[n:]
                    return b
        return bytearray(n)

    def give(self, b: bytearray) -> None:
        """``b`` may be handed out again once every view of it is gone."""
        if len(b) > self.largest:
            return
        with self.lock:
            self.free.append(b)
            del self.free[:-self.keep]


def _unexported(b: bytearray) -> bool:
    """No memoryview (or other buffer export) of ``b`` is alive. Shrinking by one byte is refused
    while one is (and moves nothing: a bytearray keeps its allocation), so the byte is put back."""
    if not b:
        return True
    try:
        del b[-1]
    except BufferError:
        return False
    b.append(0)
    return True


READ_BUFFERS = ReadBuffers()


def _from_lines(buf: bytes | bytearray, start: int, where: str, lazy: bool) -> dict[str, Any]:
    """The line layout held in ``buf[start:]``; the entries stay a view of ``buf`` (no copy:
    a fresh 250 KB block per open is a fresh set of pages to fault in)."""
    nl = buf.find(b"\n", start)
    end = len(buf) if nl < 0 else nl
    view = memoryview(buf)
    obj = json.loads(str(view[start:end], "utf-8"))
    if not isinstance(obj, dict) or not isinstance(obj.get("datasets"), list):
        raise ValueError("metadata is not a mapping with dataset names")
    lines = Lines(obj["datasets"], view[end + 1:], where)
    if lazy:
        obj["datasets"] = lines
    else:
        obj["datasets"] = list(map(list, zip(lines.names, lines.entries())))
    return obj


def decode(data: bytes | bytearray | memoryview, where: str, lazy: bool = False) -> tuple[dict[str, Any], str, str]:
    """Parse a metadata file; returns ``(dict, format, compression)``.

    With ``lazy``, the dataset entries of a line-layout file are left as one :class:`Lines`
    (``StoreMeta.from_dict`` takes it; they are split on first use) instead of a list of
    ``[name, entry]`` pairs.
    """
    if len(data) < _HEADER.size:
        raise CorruptStoreError(f"{where}: metadata file truncated ({len(data)} bytes)")
    magic, f, c, _, crc, rawlen = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StoreFormatError(f"{where}: not an atlas metadata file (bad magic {magic!r})")
    try:
        fmt = _LAYOUTS[f]
        comp = META_COMPRESSIONS[c]
    except IndexError:
        raise StoreFormatError(f"{where}: unknown metadata format/compression codes {f}/{c}") from None
    payload = memoryview(data)[_HEADER.size:]
    if codecs.checksum(payload) != crc:
        raise CorruptStoreError(f"{where}: metadata checksum mismatch (file is damaged)")
    try:
        if comp == "none" and f == _JSON_LINES and isinstance(data, (bytes, bytearray)):
            if len(payload) != rawlen:
                raise ValueError(f"payload of {len(payload)} bytes, expected {rawlen}")
            obj = _from_lines(data, _HEADER.size, where, lazy)  # the file's own bytes: no copy
        else:
            raw = codecs.decompress(comp, payload, rawlen)
            if f == _JSON_LINES:
                obj = _from_lines(bytes(raw), 0, where, lazy)
            elif fmt == "json":
                obj = json.loads(bytes(raw).decode("utf-8"))
            else:
                obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except CorruptStoreError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is corruption
        raise CorruptStoreError(f"{where}: metadata cannot be decoded: {e}") from e
    if not isinstance(obj, dict):
        raise CorruptStoreError(f"{where}: metadata is not a mapping")
    return obj, fmt, comp
