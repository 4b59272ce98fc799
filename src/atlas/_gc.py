"""``paused()``: the cyclic garbage collector held off while atlas builds many small objects.

Parsing metadata, building a catalog or a flush's new metadata creates tens of thousands of
containers with no reference cycles; each generation-0 collection on the way rescans them,
and for big stores that was more than half of the time. The pause nests and is safe from
several threads (the collector runs again when the last pause ends).
"""

from __future__ import annotations

import gc
import threading
from typing import Any

_LOCK = threading.Lock()
_DEPTH = [0]
_WAS_ENABLED: list[bool] = []


class _Paused:
    """The ``with`` block of :func:`paused` (a class: a generator-based context manager costs
    a few microseconds per use, and opening a store uses one)."""

    __slots__ = ()

    def __enter__(self) -> None:
        with _LOCK:
            if _DEPTH[0] == 0:
                _WAS_ENABLED.append(gc.isenabled())
                gc.disable()
            _DEPTH[0] += 1

    def __exit__(self, *exc: Any) -> None:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0 and _WAS_ENABLED.pop():
                gc.enable()


_PAUSED = _Paused()


def paused() -> _Paused:
    """Hold the cyclic collector off for the ``with`` block (reference counting goes on)."""
    return _PAUSED
