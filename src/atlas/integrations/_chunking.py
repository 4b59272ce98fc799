"""The chunk shapes ``Atlas.ingest`` gives the variables of a file.

Default: a variable of up to :data:`TARGET` bytes is one chunk; a larger one is split,
halving its longest free axis until a chunk holds at most :data:`TARGET` bytes. Where the
file has its own chunking (netCDF4/HDF5 ``chunksizes``, Zarr ``preferred_chunks``), chunks
stay whole multiples of it, and a file chunk of up to :data:`CAP` bytes is kept as it is
(never cut in pieces). ``{dim: size}`` fixes a dimension's chunk size for every variable
that has it (``-1`` or ``None``: the whole axis); the other axes are then sized as above.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

#: the chunk size ingest aims for (bytes, uncompressed)
TARGET = 1 << 20
#: the largest file chunk kept whole when aligning with the file's own chunking
CAP = 4 << 20
#: bytes a string cell is reckoned at (they are variable-length)
STRING_ITEMSIZE = 16


def check_chunks(chunks: Any) -> dict[str, Optional[int]]:
    """Validate an ingest ``chunks=`` argument (None or ``{dim: size}``); returns a dict."""
    if chunks is None:
        return {}
    if not isinstance(chunks, Mapping):
        raise TypeError(f"chunks must be None or a dict {{dim: size}}, got {type(chunks).__name__}: {chunks!r}")
    out: dict[str, Optional[int]] = {}
    for dim, size in chunks.items():
        if not isinstance(dim, str):
            raise TypeError(f"chunks: dimension name {dim!r} is not a str")
        if size is None or (isinstance(size, int) and not isinstance(size, bool) and size == -1):
            out[dim] = None
        elif isinstance(size, int) and not isinstance(size, bool) and size >= 1:
            out[dim] = size
        else:
            raise ValueError(f"chunks: size for dimension {dim!r} must be an int >= 1, -1 or None, got {size!r}")
    return out


def parse_chunks(text: str) -> dict[str, Optional[int]]:
    """``"time=24,lat=-1"`` -> ``{"time": 24, "lat": None}`` (the CLI's ``--chunks``)."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        dim, eq, size = part.strip().partition("=")
        if not eq or not dim.strip():
            raise ValueError(f"--chunks: expected DIM=SIZE[,DIM=SIZE...], got {text!r}")
        try:
            out[dim.strip()] = int(size)
        except ValueError:
            raise ValueError(f"--chunks: size of {dim.strip()!r} must be an integer (-1: whole axis), got {size!r}") from None
    return check_chunks(out)


def file_chunks(var: Any) -> Optional[tuple[int, ...]]:
    """The variable's chunk shape in its source file, if it has one."""
    enc = var.encoding
    cs = enc.get("chunksizes")
    if cs is None and isinstance(enc.get("preferred_chunks"), Mapping):
        pc = enc["preferred_chunks"]
        cs = [pc.get(d, n) for d, n in zip(var.dims, var.shape)]
    if cs is None or len(cs) != len(var.shape):
        return None
    try:
        return tuple(max(1, min(int(c), int(n))) for c, n in zip(cs, var.shape))
    except (TypeError, ValueError):
        return None


def chunk_shape(var: Any, fixed: Mapping[str, Optional[int]]) -> list[int]:
    """The chunk shape ingest gives ``var`` (see the module docstring)."""
    shape = [int(n) for n in var.shape]
    item = STRING_ITEMSIZE if var.dtype.kind in "OU" else max(1, var.dtype.itemsize)
    c = [max(1, n) for n in shape]
    free = []
    for i, d in enumerate(var.dims):
        if d in fixed:
            size = fixed[d]
            c[i] = c[i] if size is None else max(1, min(size, c[i]))
        else:
            free.append(i)
    base = file_chunks(var)
    if base is not None:
        _shrink(c, free, item, TARGET, base)
        if math.prod(c) * item <= CAP:
            return c
    _shrink(c, free, item, TARGET, None)
    return c


def _shrink(c: list[int], free: Sequence[int], item: int, target: int, base: Optional[Sequence[int]]) -> None:
    """Halve the longest free axis of ``c`` (in place, keeping multiples of ``base``) while over ``target``."""
    while math.prod(c) * item > target:
        floor = [base[i] if base is not None else 1 for i in range(len(c))]
        cands = [i for i in free if c[i] > floor[i]]
        if not cands:
            return
        i = max(cands, key=lambda j: c[j])
        half = -(-c[i] // 2)
        c[i] = -(-half // floor[i]) * floor[i] if base is not None else half
