"""Object storage through obstore (S3, GCS, Azure, HTTP, LocalStore, MemoryStore).

The only module that imports obstore. Reads use ``get_ranges`` (obstore coalesces nearby
ranges and runs requests in parallel); a segment is one PUT (multipart when it is
streamed in parts); the metadata is one PUT, conditional on the ETag this handle last saw
where the backend supports it, so a second writer is detected instead of overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConcurrentWriteError, CorruptStoreError
from ._base import Buffer, Storage

try:
    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "object stores need obstore: pip install \"atlas-python[cloud]\""
    ) from e


_PROCESS_LOCK = threading.Lock()


def default_io_concurrency() -> int:
    env = os.environ.get("ATLAS_IO_CONCURRENCY")
    return max(1, int(env)) if env else 16


class ObjectStorage(Storage):
    """An obstore store handle (its prefix is the store root)."""

    def __init__(self, store: Any, *, create: bool = False) -> None:
        self.store = store
        self._etags: dict[str, str | None] = {}
        self._unsure: dict[str, bytes] = {}  # metadata bytes whose PUT failed with an unknown outcome
        self.io_concurrency = default_io_concurrency()
        name = type(store).__name__
        self.writable = name not in ("HTTPStore", "HttpStore")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        if type(self.store).__name__ == "MemoryStore":
            raise TypeError("a store on obstore's MemoryStore lives in one process and cannot be pickled; "
                            "use LocalStore on a temporary directory to share it with other processes")
        return (ObjectStorage, (self.store,))

    @property
    def location(self) -> str:
        return repr(self.store)

    def read(self, path: str) -> Buffer:
        res = obstore.get(self.store, path)
        self._etags[path] = res.meta.get("e_tag")
        return memoryview(res.bytes())

    def read_ranges(self, path: str, starts: Sequence[int], ends: Sequence[int]) -> list[Buffer]:
        spans = [(int(a), int(b)) for a, b in zip(starts, ends)]
        want = [k for k, (lo, hi) in enumerate(spans) if hi > lo]  # obstore refuses empty ranges: they are b""
        out: list[Buffer] = [b""] * len(spans)
        if not want:
            return out
        try:
            if len(want) == 1:
                lo, hi = spans[want[0]]
                got = [obstore.get_range(self.store, path, start=lo, end=hi)]
            else:
                # atlas already merged ranges closer than its own gap; obstore must not merge the rest
                # (its 1 MiB default would turn a sparse stacked read into one download of the segment)
                got = obstore.get_ranges(self.store, path, starts=[spans[k][0] for k in want],
                                         ends=[spans[k][1] for k in want], coalesce=0)
        except FileNotFoundError:
            raise
        except Exception as err:  # a range starting past the end: tell a damaged index from a failing store
            size = self._size_or_none(path)
            bad = [spans[k] for k in want if size is not None and spans[k][1] > size]
            if bad:
                raise self._truncated(path, *bad[0]) from err
            raise
        for k, b in zip(want, got):
            lo, hi = spans[k]
            if len(b) != hi - lo:  # obstore clips a range that ends past the object's end
                raise self._truncated(path, lo, hi)
            out[k] = memoryview(b)
        return out

    def _truncated(self, path: str, start: int, end: int) -> CorruptStoreError:
        return CorruptStoreError(f"{self.location}/{path}: truncated (wanted bytes {start}..{end}, file ends early)")

    def _size_or_none(self, path: str) -> int | None:
        try:
            return int(obstore.head(self.store, path)["size"])
        except Exception:  # noqa: BLE001 - the caller re-raises the original error
            return None

    def write(self, path: str, data: Buffer | Iterable[Buffer]) -> None:
        self._check_writable(path)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                obstore.put(self.store, path, data)
            else:
                obstore.put(self.store, path, iter(data))
        except FileNotFoundError as e:
            # a PUT cannot miss its object: obstore reports a multipart upload whose completion
            # reply was lost (it then aborts the finished upload) as "not found"
            raise OSError(errno.EIO, f"{self.location}/{path}: upload failed, its outcome is unknown: {e}") from e

    def commit(self, path: str, data: Buffer) -> None:
        """Replace the metadata object, refusing to overwrite another writer's commit.

        Every commit's bytes are unique (a new generation and segment token), so when a PUT's
        outcome is unclear (lost reply, timeout, or obstore retrying a PUT that had landed)
        reading the object back tells this handle's own write apart from another writer's.
        """
        self._check_writable(path)
        payload = bytes(data)
        try:
            if path not in self._etags:
                # atomic on every backend; on a LocalStore also under the lock local-disk handles of the folder hold
                with self._writer_lock() if self._local_root() is not None else contextlib.nullcontext():
                    res = obstore.put(self.store, path, payload, mode="create")
            else:
                res = self._update(path, payload, self._etags.get(path))
        except (AlreadyExistsError, PreconditionError, ConcurrentWriteError) as e:
            now = self._current(path)
            if now is not None and now[0] == payload:  # our own PUT landed (retried by obstore)
                self._adopt(path, now[1])
                return
            if now is not None and self._unsure.get(path) == now[0]:
                # an earlier attempt of this handle landed after all: build on top of it
                self._adopt(path, now[1])
                return self.commit(path, payload)
            if isinstance(e, ConcurrentWriteError):
                raise
            how = "created" if isinstance(e, AlreadyExistsError) else "changed"
            raise ConcurrentWriteError(
                f"{self.location}/{path} was {how} by another writer since this store was opened; "
                "reopen it and retry (the pending changes are kept)"
            ) from None
        except Exception:
            try:
                now = self._current(path)
            except Exception:  # noqa: BLE001 - the store is unreachable: the original error says why
                now = None
            if now is not None and now[0] == payload:  # the reply was lost, the PUT landed
                self._adopt(path, now[1])
                return
            self._unsure[path] = payload
            raise
        self._adopt(path, res.get("e_tag"))

    def create(self, path: str, data: Buffer) -> None:
        """One conditional PUT (``If-None-Match``): a second writer gets ``FileExistsError``.

        When the outcome is unclear (a lost reply, or obstore retrying a PUT that had
        landed), the object is read back: the caller's bytes must be unique (tags carry a
        random token), so finding them means this PUT created it.
        """
        self._check_writable(path)
        payload = bytes(data)
        try:
            obstore.put(self.store, path, payload, mode="create")
        except AlreadyExistsError:
            now = self._current(path)
            if now is None or now[0] != payload:
                raise FileExistsError(f"{self.location}/{path} already exists") from None
        except Exception:
            try:
                now = self._current(path)
            except Exception:  # noqa: BLE001 - unreachable: the original error says why
                now = None
            if now is None or now[0] != payload:
                raise

    def peek(self, path: str) -> Buffer:
        return memoryview(obstore.get(self.store, path).bytes())

    def _adopt(self, path: str, etag: str | None) -> None:
        self._etags[path] = etag
        self._unsure.pop(path, None)

    def _current(self, path: str) -> tuple[bytes, str | None] | None:
        """The object's bytes and ETag now, or None if there is none."""
        try:
            r = obstore.get(self.store, path)
        except FileNotFoundError:
            return None
        return bytes(r.bytes()), r.meta.get("e_tag")

    def _update(self, path: str, data: Buffer, etag: str | None) -> Any:
        if etag is not None:
            try:
                return obstore.put(self.store, path, data, mode={"e_tag": etag})
            except NotImplementedError:
                pass
        # backends without conditional updates (obstore's LocalStore): compare the ETag and write
        # under the writers' lock, so that the check and the write are one step for every writer
        with self._writer_lock():
            now = obstore.head(self.store, path).get("e_tag")
            if now != etag:
                raise ConcurrentWriteError(
                    f"{self.location}/{path} was changed by another writer since this store was opened; "
                    "reopen it and retry (the pending changes are kept)"
                )
            return obstore.put(self.store, path, data)

    def _local_root(self) -> str | None:
        """The folder of a ``LocalStore`` with a prefix (None for every other store)."""
        prefix = getattr(self.store, "prefix", None) if type(self.store).__name__ == "LocalStore" else None
        return os.fspath(prefix) if prefix is not None else None

    def _writer_lock(self) -> Any:
        """The lock local-disk stores take to commit (``atlas.lock`` in the root folder, shared with
        :class:`~atlas.storage.LocalStorage` on the same folder); a process-wide lock elsewhere."""
        root = self._local_root()
        if root is None:
            return _PROCESS_LOCK
        from ._local import LOCK_NAME, _Flock

        return _Flock(os.path.join(root, LOCK_NAME))

    def _check_writable(self, path: str) -> None:
        if not self.writable:
            raise PermissionError(f"{self.location} is read-only; cannot write {path}")

    def barrier(self) -> None:
        return None  # a completed PUT is durable

    def exists(self, path: str) -> bool:
        try:
            obstore.head(self.store, path)
        except FileNotFoundError:
            return False
        return True

    def delete(self, path: str) -> None:
        try:
            obstore.delete(self.store, path)
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        for batch in obstore.list(self.store, prefix=prefix or None):
            out.extend(m["path"] for m in batch)
        if not prefix and self._local_root() is not None:
            from ._local import LOCK_NAME

            out = [p for p in out if p != LOCK_NAME]  # the writers' lock is bookkeeping, never a file of the store
        return sorted(out)

    def size_of(self, paths: Sequence[str]) -> int:
        want = set(paths)
        total = 0
        for batch in obstore.list(self.store):
            for m in batch:
                if m["path"] in want:
                    total += int(m["size"])
        return total
