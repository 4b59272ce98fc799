"""Numba kernels: the only place atlas imports numba.

Kernels are plain loops over NumPy arrays that fill caller-provided outputs; they never
do I/O and never see Python objects. All are ``@njit(nogil=True, cache=True)`` and compile
lazily on first call (importing this package compiles nothing). Set ``ATLAS_NUMBA_CACHE=0``
to turn the on-disk cache off (``NUMBA_CACHE_DIR`` moves it).

The engine calls them through :data:`atlas._lazy.K`, which runs their NumPy versions
(:mod:`atlas._small`) for small requests until a process first needs a kernel, so a
process of small requests never imports this package.

Compiling is what a fresh process pays before its first result, so kernels are written to
compile as few times, and as cheaply, as possible: a kernel whose code does not depend on
the element type declares one canonical signature (byte views of buffers, read-only
``'A'``-layout inputs), compiles it on its first call, and from then on numba converts
every caller's arguments to it (writable to read-only, C to any layout) instead of
compiling again; and the jitted loops allocate nothing (the Python wrappers allocate the
outputs), since allocations inside a kernel cost numba extra compilations. Only the
statistics depend on the element type; they compile for the dtypes a process writes.
"""

from __future__ import annotations

import os
import sys
import threading

from numba import njit, types

CACHE = os.environ.get("ATLAS_NUMBA_CACHE", "1") not in ("0", "false", "no")

# canonical argument types of the signatures
I64 = types.int64
IN1 = types.Array(types.int64, 1, "A", readonly=True)  # an int64 input of any layout, writable or not
IN2 = types.Array(types.int64, 2, "A", readonly=True)
OUT1 = types.Array(types.int64, 1, "C")
OUT2 = types.Array(types.int64, 2, "C")
OUT3 = types.Array(types.int64, 3, "C")
BYTES_IN = types.Array(types.uint8, 1, "C", readonly=True)
BYTES_OUT = types.Array(types.uint8, 1, "C")


def kernel(fn=None, *, sig=None):
    """Decorate a kernel with atlas's one numba policy.

    With ``sig``, the kernel is compiled for that one signature on its first call (the
    module global is then rebound to the numba dispatcher, so later calls cost nothing
    extra) and never again: arguments are converted to it.
    """
    if fn is None:
        return lambda f: kernel(f, sig=sig)
    disp = njit(nogil=True, cache=CACHE)(fn)
    if sig is None:
        return disp
    module, name = fn.__module__, fn.__name__
    lock = threading.Lock()
    done: list[bool] = []

    def first_call(*args):
        # threads of the pool may all make the first call at once: one compiles
        with lock:
            if not done:
                disp.compile(sig)
                disp.disable_compile()
                setattr(sys.modules[module], name, disp)
                done.append(True)
        return disp(*args)

    first_call.__name__ = name
    first_call.__doc__ = fn.__doc__
    return first_call
