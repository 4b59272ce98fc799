"""Numba kernels: the only place atlas imports numba.

Kernels are plain loops over NumPy arrays that fill caller-provided outputs; they never
do I/O and never see Python objects. All are ``@njit(nogil=True, cache=True)`` and compile
lazily on first call (importing this package compiles nothing). Set ``ATLAS_NUMBA_CACHE=0``
to turn the on-disk cache off (``NUMBA_CACHE_DIR`` moves it).
"""

from __future__ import annotations

import os

from numba import njit

CACHE = os.environ.get("ATLAS_NUMBA_CACHE", "1") not in ("0", "false", "no")


def kernel(fn):
    """Decorate a kernel with atlas's one numba policy."""
    return njit(nogil=True, cache=CACHE)(fn)
