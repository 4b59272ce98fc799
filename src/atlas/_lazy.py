"""``K``: the kernels as the engine calls them, and the one place that decides how each call runs.

Until the process first needs a Numba kernel, ``K.<name>(...)`` runs the NumPy version from
:mod:`atlas._small` when the call is small (the rule and its thresholds live there) and
imports numba and the kernel otherwise. From that first kernel on, numba's start-up is
paid and a warm kernel is faster than NumPy at every size, so every name of ``K`` is bound
to its kernel (no dispatch left per call). ``import atlas`` imports no numba, and neither
does a process whose requests are all small.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable

from . import _gc

_lock = threading.Lock()


def kernel(name: str) -> Callable[..., Any]:
    """The Numba kernel ``name`` (imports numba and the kernel modules on first use)."""
    if "atlas._kernels.stats" not in sys.modules:  # numba's import and first compilation: long-lived objects
        _gc.settle_after_pause()
    from ._kernels import gather, grid, stats

    for mod in (grid, gather, stats):
        fn = getattr(mod, name, None)
        if fn is not None:
            return fn
    raise AttributeError(name)


class _Kernels:
    """Attribute access resolves a name once and caches it on the instance."""

    loaded = False  # has this process needed a kernel yet?

    def __getattr__(self, name: str) -> Any:
        from ._small import SMALL

        if self.loaded or name not in SMALL:
            fn = kernel(name)
            self._switch()
        else:
            fn = self._dispatch(name, *SMALL[name])
        setattr(self, name, fn)
        return fn

    def _dispatch(self, name: str, fits: Callable[..., bool], small: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if not self.loaded and fits(*args):
                return small(*args)
            fn = kernel(name)
            self._switch()
            return fn(*args)

        call.__name__ = name
        call.__doc__ = small.__doc__
        return call

    def _switch(self) -> None:
        """From now on every name is its kernel: drop the dispatchers."""
        with _lock:
            if not self.loaded:
                self.loaded = True
                from ._small import SMALL

                for name in SMALL:
                    self.__dict__.pop(name, None)

    def reset(self) -> None:
        """Forget the resolved names and whether a kernel was needed (tests choose paths with it)."""
        with _lock:
            self.__dict__.clear()


K = _Kernels()
