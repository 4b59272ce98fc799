"""The storage contract every backend implements.

Paths are ``/``-separated keys relative to the store root. Files are written once and
never modified (segments), except the metadata file, which is replaced atomically.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]


class Storage(abc.ABC):
    """Synchronous byte storage under one root."""

    #: whether this backend can be written to
    writable: bool = True

    @abc.abstractmethod
    def read(self, path: str) -> Buffer:
        """Whole file; ``FileNotFoundError`` when it does not exist."""

    @abc.abstractmethod
    def read_ranges(self, path: str, starts: Sequence[int], ends: Sequence[int]) -> list[Buffer]:
        """Byte ranges ``[start, end)`` of one file, in the order asked."""

    @abc.abstractmethod
    def write(self, path: str, data: Buffer | Iterable[Buffer]) -> None:
        """Create a new immutable file from bytes or an iterable of parts (durable once :meth:`barrier` returns)."""

    @abc.abstractmethod
    def commit(self, path: str, data: Buffer) -> None:
        """Replace ``path`` atomically and durably: readers see the old or the new content."""

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
        """Whether ``path`` exists."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove ``path``; a missing file is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every file path under ``prefix``."""

    def size_of(self, paths: Sequence[str]) -> int:
        """Total bytes of ``paths`` (for reporting)."""
        return sum(len(self.read(p)) for p in paths)

    def close(self) -> None:
        """Release cached handles (the storage stays usable)."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Human-readable location, used in reprs and error messages."""
