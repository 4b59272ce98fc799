"""Numba kernels: the only place atlas imports numba.

Kernels are plain loops over NumPy arrays that fill caller-provided outputs; they never
do I/O and never see Python objects. All are ``@njit(nogil=True, cache=True)`` and compile
lazily on first call (importing this package compiles nothing). Set ``ATLAS_NUMBA_CACHE=0``
to turn the on-disk cache off (``NUMBA_CACHE_DIR`` moves it).

Compiling is what a fresh process pays before its first result, so every kernel is
written to be compiled as few times as possible: the public names here are thin Python
wrappers that hand the jitted loops one canonical type per argument (byte views of
buffers, read-only inputs), so one compiled copy serves every dtype of a copy and every
caller of a lookup. Only the statistics depend on the element type, and they compile for
the dtypes a process actually uses.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

CACHE = os.environ.get("ATLAS_NUMBA_CACHE", "1") not in ("0", "false", "no")


def kernel(fn):
    """Decorate a kernel with atlas's one numba policy."""
    return njit(nogil=True, cache=CACHE)(fn)


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only view, so writable and read-only inputs share one compiled kernel."""
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v
