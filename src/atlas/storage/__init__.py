"""Storage backends: a small synchronous contract and one private module per backend."""

from __future__ import annotations

from typing import Any

from ._base import Storage
from ._local import LocalStorage


def storage_for(source: Any, *, create: bool) -> Storage:
    """Return the :class:`Storage` for a path-like ``source`` (object stores come later)."""
    import os

    if isinstance(source, Storage):
        return source
    if isinstance(source, (str, os.PathLike)):
        return LocalStorage(os.fspath(source), create=create)
    if type(source).__module__.startswith("obstore"):
        from ._object import ObjectStorage

        return ObjectStorage(source, create=create)
    raise TypeError(
        f"source must be a path (str or os.PathLike) or an obstore store, got {type(source).__name__}: {source!r}"
    )


__all__ = ["Storage", "LocalStorage", "storage_for"]
