"""The storage contract every backend implements.

Paths are ``/``-separated keys relative to the store root. Files are written once and
never modified (segments), except the metadata file, which is replaced atomically.
Every backend passes ``tests/test_storage_contract.py``; what it checks is stated here.
A handle is used from many threads at once (the engine's pools read ranges in parallel).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]


class Storage(abc.ABC):
    """Synchronous byte storage under one root.

    Picklable (a copy is a new handle on the same location, with no commit history), except
    where the data lives in one process (obstore's ``MemoryStore``: ``TypeError``).
    """

    #: whether this backend can be written to (``write`` and ``commit`` raise ``PermissionError`` if not)
    writable: bool = True

    @abc.abstractmethod
    def read(self, path: str) -> Buffer:
        """Whole file; ``FileNotFoundError`` when it does not exist."""

    @abc.abstractmethod
    def read_ranges(self, path: str, starts: Sequence[int], ends: Sequence[int]) -> list[Buffer]:
        """Byte ranges ``[start, end)`` of one file, in the order asked.

        Ranges may repeat or overlap; an empty range (``start == end``, also at the end of the
        file) is ``b""``. A range ending past the end of the file means a damaged index:
        :class:`~atlas.errors.CorruptStoreError` naming the file, never short data. A missing
        file raises ``FileNotFoundError``.
        """

    @abc.abstractmethod
    def write(self, path: str, data: Buffer | Iterable[Buffer]) -> None:
        """Create a new immutable file from bytes or an iterable of parts (durable once :meth:`barrier` returns).

        Writing a path again replaces it (a retried flush rewrites its orphans), also for
        ranged reads that follow.
        """

    @abc.abstractmethod
    def commit(self, path: str, data: Buffer) -> None:
        """Replace ``path`` atomically and durably: readers see the old or the new content.

        Only on top of the content this handle last read or committed (a path it never saw
        must not exist yet); otherwise another writer got there first and
        :class:`~atlas.errors.ConcurrentWriteError` is raised, changing nothing. Of several
        handles committing on top of the same content, exactly one wins.
        """

    def create(self, path: str, data: Buffer) -> None:
        """Create ``path`` atomically and durably unless it exists (``FileExistsError`` then):
        of two writers creating the same path, exactly one succeeds (tags use it)."""
        raise NotImplementedError(f"{type(self).__name__} cannot create files exclusively")

    def peek(self, path: str) -> Buffer:
        """Whole file, read without making it the base of this handle's next :meth:`commit`
        (so a look at a newer metadata file never hides another writer's commit)."""
        return self.read(path)

    @abc.abstractmethod
    def barrier(self) -> None:
        """Make every file written so far durable (fsync of the directories on local disk)."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a file exists at ``path`` (a folder is not a file)."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove ``path``; a missing file is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every file path under the folder ``prefix`` (whole path segments: ``"a"`` holds ``"a/x"``,
        not ``"ab/x"``), sorted; backend bookkeeping such as a lock file is not listed."""

    def size_of(self, paths: Sequence[str]) -> int:
        """Total bytes of ``paths`` (for reporting); a missing file counts 0."""
        return sum(len(self.read(p)) for p in paths)

    def stamp(self, path: str) -> Hashable | None:
        """A cheap token that changes whenever ``path`` is replaced or rewritten (None: unknown),
        so what was decoded from a file can be reused while it holds."""
        return None

    def read_unless(self, path: str, stamp: Hashable | None,
                    into: Callable[[int], bytearray] | None = None) -> tuple[Hashable | None, Buffer | None]:
        """``(stamp, bytes)`` of a whole file, or ``(stamp, None)`` when it is still the one ``stamp``
        names (so a parse of it can be reused). ``stamp`` None means unknown: always read.
        Backends that cannot tell cheaply always read (and return a None stamp).

        ``into(n)``, when given, returns a ``bytearray`` of ``n`` bytes that a backend reading
        into memory it chooses may fill and return instead of allocating (others ignore it)."""
        return None, self.read(path)

    def close(self) -> None:
        """Release cached handles (the storage stays usable)."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Human-readable location, used in reprs and error messages."""
