"""``K``: the Numba kernels, resolved on first use so that ``import atlas`` imports no numba."""

from __future__ import annotations

from typing import Any


class _Kernels:
    def __getattr__(self, name: str) -> Any:
        from ._kernels import gather, grid, stats

        for mod in (grid, gather, stats):
            if hasattr(mod, name):
                fn = getattr(mod, name)
                setattr(self, name, fn)
                return fn
        raise AttributeError(name)


K = _Kernels()
