"""The one shared thread pool (decompression, gathers, compression).

Sized from ``ATLAS_NUM_THREADS`` or the number of cores; change it with
:func:`atlas.set_num_threads`. Created lazily and recreated after ``fork``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_size: int | None = None


def num_threads() -> int:
    """Current pool size."""
    if _size is not None:
        return _size
    env = os.environ.get("ATLAS_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"ATLAS_NUM_THREADS must be an integer, got {env!r}") from None
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def set_num_threads(n: int) -> None:
    """Resize the shared pool (takes effect for the next request)."""
    global _pool, _size
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be an int >= 1, got {n!r}")
    with _lock:
        old, _pool, _size = _pool, None, n
    if old is not None:
        old.shutdown(wait=False)


def pool() -> ThreadPoolExecutor:
    global _pool
    p = _pool
    if p is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=num_threads(), thread_name_prefix="atlas")
            p = _pool
    return p


def run(fn: Callable[[Any], Any], items: Iterable[Any], parallel: bool = True) -> list[Any]:
    """``[fn(x) for x in items]``, on the pool when worth it; the first error propagates."""
    items = list(items)
    if not parallel or len(items) < 2 or num_threads() < 2 or threading.current_thread().name.startswith("atlas"):
        return [fn(x) for x in items]
    return list(pool().map(fn, items))


_io_pools: dict[int, ThreadPoolExecutor] = {}


def io_pool(n: int) -> ThreadPoolExecutor:
    """A pool for network-bound fetches (object stores), separate from the CPU pool."""
    p = _io_pools.get(n)
    if p is None:
        with _lock:
            p = _io_pools.get(n)
            if p is None:
                p = _io_pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="atlas-io")
    return p


def _after_fork() -> None:
    global _pool
    _pool = None
    _io_pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
