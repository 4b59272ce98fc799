"""Exception classes.

Every atlas error derives from :class:`AtlasError` *and* from the builtin exception
users already catch (``ValueError``, ``OSError``, ...), so ``except ValueError`` keeps
working while ``except atlas.AtlasError`` catches everything the library raises on purpose.
"""

from __future__ import annotations


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a ``KeyError``'s without the quotes ``str`` adds)."""
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    else:
        text = str(e) or type(e).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


class AtlasError(Exception):
    """Root of every error raised deliberately by atlas."""


class CorruptStoreError(AtlasError, OSError):
    """A file of the store is damaged: bad checksum, truncated, or unparsable."""


class StoreFormatError(AtlasError, ValueError):
    """The store was written in a format (or a format version) this library cannot read."""


class ConcurrentWriteError(AtlasError, RuntimeError):
    """Another writer changed the store since this handle opened it; reopen and retry."""


class StaleStoreError(AtlasError, RuntimeError):
    """A pickled store handle refers to a store that was since deleted and created again."""


class IngestError(AtlasError, ValueError):
    """A file could not be opened or stored by :meth:`atlas.Atlas.ingest`; nothing of that call was kept."""


class ReadOnlyError(AtlasError, PermissionError):
    """A change was asked of a read-only handle (a past version opened with ``version=`` or ``tag=``)."""


class VersionNotFoundError(AtlasError, LookupError):
    """The version or tag asked for never existed, or was expired (and its files reclaimed)."""
