"""``paused()``: the cyclic garbage collector held off while atlas builds many small objects.

Parsing metadata, building a catalog or a flush's new metadata creates tens of thousands of
containers with no reference cycles; each generation-0 collection on the way rescans them,
and for big stores that was more than half of the time. The pause nests and is safe from
several threads (the collector runs again when the last pause ends).
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

_LOCK = threading.Lock()
_DEPTH = [0]
_WAS_ENABLED: list[bool] = []


@contextmanager
def paused() -> Iterator[None]:
    """Hold the cyclic collector off for the ``with`` block (reference counting goes on)."""
    with _LOCK:
        if _DEPTH[0] == 0:
            _WAS_ENABLED.append(gc.isenabled())
            gc.disable()
        _DEPTH[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0 and _WAS_ENABLED.pop():
                gc.enable()
