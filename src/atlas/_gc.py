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
_SETTLE = [False]  # collect the young generations when the current pause ends (see settle_after_pause)


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
        settle = False
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                was = _WAS_ENABLED.pop()
                settle = _SETTLE[0] and was  # (a process that turned the collector off gets no collection)
                _SETTLE[0] = False
                if was:
                    gc.enable()
        if settle:  # outside the lock: finalizers the collection runs may pause it again
            gc.collect(1)


_PAUSED = _Paused()


def paused() -> _Paused:
    """Hold the cyclic collector off for the ``with`` block (reference counting goes on)."""
    return _PAUSED


def settle_after_pause() -> None:
    """Collect the young generations once when the current pause ends (nothing if none runs).

    For one-time work that makes tens of thousands of long-lived objects inside a pause (the
    import of numba and its first compilation, in a flush or a batch): they all land in the
    middle generation at once, and its next collection, at some later call of the user's
    loop, would rescan every one of them (about 30 ms after numba's). Collecting when the
    pause ends pays that scan with the one-time work instead.
    """
    with _LOCK:
        if _DEPTH[0]:
            _SETTLE[0] = True
