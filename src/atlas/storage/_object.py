"""Object storage through obstore (S3, GCS, Azure, HTTP, LocalStore, MemoryStore).

The only module that imports obstore. Reads use ``get_ranges`` (obstore coalesces nearby
ranges and runs requests in parallel); a segment is one PUT (multipart when it is
streamed in parts); the metadata is one PUT, conditional on the ETag this handle last saw
where the backend supports it, so a second writer is detected instead of overwritten.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConcurrentWriteError
from ._base import Buffer, Storage

try:
    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "object stores need obstore: pip install \"atlas-python[cloud]\""
    ) from e


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
        if not len(starts):
            return []
        if len(starts) == 1:
            return [memoryview(obstore.get_range(self.store, path, start=int(starts[0]), end=int(ends[0])))]
        # atlas already merged ranges closer than its own gap; obstore must not merge the rest
        # (its 1 MiB default would turn a sparse stacked read into one download of the segment)
        return [memoryview(b) for b in obstore.get_ranges(self.store, path, starts=[int(s) for s in starts], ends=[int(e) for e in ends],
                                       coalesce=0)]

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
        # backends without conditional updates: compare the ETag just before writing (best effort)
        now = obstore.head(self.store, path).get("e_tag")
        if now != etag:
            raise ConcurrentWriteError(
                f"{self.location}/{path} was changed by another writer since this store was opened; reopen it and retry"
            )
        return obstore.put(self.store, path, data)

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
        return sorted(out)

    def size_of(self, paths: Sequence[str]) -> int:
        want = set(paths)
        total = 0
        for batch in obstore.list(self.store):
            for m in batch:
                if m["path"] in want:
                    total += int(m["size"])
        return total
