"""Pending (unflushed) chunks of one transaction, with memory accounting and spilling.

Every chunk written since the last flush is one :class:`Pending` entry, keyed by array name
and ``(aid, cid)``. A rewrite of the same chunk replaces its entry: the old payload is
freed at once (in memory) or counted as garbage in the spill file, which is rewritten when
garbage outgrows what is live. Entries are never changed in place once they can be seen by a
reader, except that spilling moves their payload from memory to the spill file (readers
that took an entry before still read it: the file lives as long as any entry refers to it).
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from typing import Any, Iterator

import numpy as np

Key = tuple[int, int]  # (aid, cid)


class SpillFile:
    """An anonymous temporary file (outside the store) closed when nothing refers to it."""

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="atlas-spill-", dir=os.environ.get("ATLAS_SPILL_DIR"))
        os.unlink(path)
        self.fd = fd
        self.end = 0
        weakref.finalize(self, os.close, fd)

    def append(self, bufs: list[bytes]) -> int:
        """Write ``bufs`` back to back at the end; returns where they start."""
        start = self.end
        data = b"".join(bufs)
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, memoryview(data)[done:], start + done)
        self.end += len(data)
        return start

    def read(self, off: int, n: int) -> bytes:
        return os.pread(self.fd, n, off)


class Pending:
    """One unflushed chunk.

    Its payload is the raw chunk bytes (small chunks, packed into frames at flush) or an
    already compressed frame (large chunks, ``compressed``); it lives in ``data`` or, once
    spilled past the memory budget, at ``soff`` (``slen`` bytes) of ``spill``.
    Stats (``nn`` < 0 means not computed yet) are the per-chunk columns of the index.
    """

    __slots__ = ("data", "compressed", "nbytes", "spill", "soff", "slen", "nn", "mn", "mx", "has", "masked")

    def __init__(self, data: bytes, compressed: bool, nbytes: int, nn: int, mn: int, mx: int, has: bool,
                 masked: bool = False) -> None:
        self.masked = masked  # the payload ends with a packed bitmask of the cells written so far
        self.data: bytes | None = data
        self.compressed = compressed
        self.nbytes = nbytes
        self.spill: SpillFile | None = None
        self.soff = -1
        self.slen = len(data)
        self.nn = nn
        self.mn = mn
        self.mx = mx
        self.has = has

    def payload(self) -> bytes:
        """The payload bytes, from memory or from the spill file."""
        data = self.data
        if data is not None:
            return data
        return self.spill.read(self.soff, self.slen)  # type: ignore[union-attr]

    def moved(self, spill: SpillFile, off: int) -> "Pending":
        """A copy of this entry whose payload lies at ``off`` of ``spill``."""
        p = Pending.__new__(Pending)
        for k in Pending.__slots__:
            setattr(p, k, getattr(self, k))
        p.data, p.spill, p.soff = None, spill, off
        return p


class PendingStore:
    """``{array name: {(aid, cid): Pending}}`` of one transaction, bounded in memory.

    When the payload bytes held in memory exceed ``budget``, every in-memory payload is
    appended to the spill file and dropped from memory. ``lock`` guards the tables (the
    owner's state lock: readers take the entries they need under it).
    """

    def __init__(self, budget: int, lock: Any = None) -> None:
        self.budget = budget
        self.lock = lock if lock is not None else threading.RLock()
        self._by_name: dict[str, dict[Key, Pending]] = {}
        self.mem = 0  # payload bytes held in memory
        self.spilled = 0  # entries moved to the spill file so far
        self.live_spill = 0  # spill-file bytes of entries still pending
        self.garbage = 0  # spill-file bytes of entries replaced or dropped since
        self._file: SpillFile | None = None
        self._hot: dict[int, Pending] = {}  # entries whose payload is in memory, by id (each entry is one object)

    # ---------------------------------------------------------------- queries
    def __bool__(self) -> bool:
        return any(self._by_name.values())

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_name.values())

    def names(self) -> list[str]:
        return [n for n, d in self._by_name.items() if d]

    def has(self, name: str) -> bool:
        return bool(self._by_name.get(name))

    def get(self, name: str, key: Key) -> Pending | None:
        d = self._by_name.get(name)
        return None if d is None else d.get(key)

    def lookup(self, name: str, aids: np.ndarray, cids: np.ndarray) -> list[tuple[int, Pending]]:
        """``[(position, entry)]`` of the keys ``zip(aids, cids)`` that are pending, taken at one moment."""
        d = self._by_name.get(name)
        if not d:
            return []
        with self.lock:
            get = d.get
            return [(j, p) for j, p in enumerate(map(get, zip(aids.tolist(), cids.tolist()))) if p is not None]

    def cids_of(self, name: str, aid: int) -> set[int]:
        with self.lock:
            return {c for (a, c) in self._by_name.get(name, {}) if a == aid}

    def items(self, name: str) -> list[tuple[Key, Pending]]:
        with self.lock:
            return list(self._by_name.get(name, {}).items())

    def entries(self) -> Iterator[Pending]:
        for d in list(self._by_name.values()):
            yield from list(d.values())

    # ---------------------------------------------------------------- changes
    def put(self, name: str, entries: dict[Key, Pending]) -> None:
        """Add or replace entries (a replaced payload is freed, or counted as spill garbage)."""
        self.put_each([(name, k, p) for k, p in entries.items()])

    def put_each(self, entries: list[tuple[str, Key, Pending]]) -> None:
        """Add or replace each ``(name, k, p)`` in one step (a batched small write puts one chunk
        per array); past the budget, payloads are spilled as soon as it is exceeded."""
        with self.lock:
            by_name = self._by_name
            for name, k, p in entries:
                d = by_name.get(name)
                if d is None:
                    d = by_name[name] = {}
                old = d.get(k)
                if old is not None:
                    self._forget(name, k, old)
                d[k] = p
                self._hot[id(p)] = p  # (not a local: spill() starts a new dict)
                self.mem += p.slen
                if self.mem > self.budget:
                    self.spill()

    def drop(self, name: str, aid: int) -> None:
        """Forget every pending chunk of instance ``aid`` of array ``name`` (it was deleted)."""
        with self.lock:
            d = self._by_name.get(name)
            if not d:
                return
            for k in [k for k in d if k[0] == aid]:
                self._forget(name, k, d.pop(k))

    def _forget(self, name: str, k: Key, old: Pending) -> None:
        if self._hot.pop(id(old), None) is not None and old.data is not None:
            self.mem -= old.slen
        else:
            self.garbage += old.slen
            self.live_spill -= old.slen

    def spill(self) -> None:
        """Move every in-memory payload to the spill file (rewriting the file first if it is mostly garbage)."""
        with self.lock:
            if self._file is not None and self.garbage > max(self.budget, self.live_spill):
                self._rewrite()
            if self._file is None:
                self._file = SpillFile()
            f = self._file
            batch = [p for p in self._hot.values() if p.data is not None]
            self._hot = {}
            for i in range(0, len(batch), 512):
                part = batch[i:i + 512]
                off = f.append([p.data for p in part])  # type: ignore[misc]
                for p in part:
                    p.spill, p.soff = f, off  # location first: a reader seeing data=None finds it
                    off += p.slen
                    p.data = None
                    self.live_spill += p.slen
            self.spilled += len(batch)
            self.mem = 0

    def _rewrite(self) -> None:
        """Copy the live spilled payloads into a new spill file; the old one closes once unreferenced."""
        new = SpillFile()
        for d in self._by_name.values():
            moved = [(k, p) for k, p in d.items() if p.data is None]
            for i in range(0, len(moved), 512):
                part = moved[i:i + 512]
                off = new.append([p.payload() for _, p in part])
                for k, p in part:
                    d[k] = p.moved(new, off)
                    off += p.slen
        self._file = new
        self.garbage = 0
