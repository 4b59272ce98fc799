"""``atlas.show_versions()``: what a bug report needs, in one block of text."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Optional, TextIO

# (distribution name, import name): versions come from the installed metadata first, so
# that listing them does not import the heavy packages; the import is only a fallback.
_DEPENDENCIES: tuple[tuple[str, str], ...] = (
    ("numba", "numba"),
    ("llvmlite", "llvmlite"),
    ("numpy", "numpy"),
    ("xarray", "xarray"),
    ("dask", "dask"),
    ("distributed", "distributed"),
    ("zstandard", "zstandard"),
    ("lz4", "lz4"),
    ("msgpack", "msgpack"),
    ("obstore", "obstore"),
    ("netCDF4", "netCDF4"),
    ("h5netcdf", "h5netcdf"),
    ("tqdm", "tqdm"),
)

_NUMBA_ENV = ("NUMBA_THREADING_LAYER", "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT", "NUMBA_OPT")


def _version_of(dist: str, module: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - missing or broken: both mean "not usable"
        return None
    v = getattr(mod, "__version__", None)
    return None if v is None else str(v)


def _usable_cpus() -> Optional[int]:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return None


def _numba_info() -> list[tuple[str, Any]]:
    try:
        import numba
    except Exception as e:  # noqa: BLE001
        return [("numba", f"not importable: {e!r}")]
    cfg = numba.config
    out: list[tuple[str, Any]] = [
        ("numba threading layer (configured)", getattr(cfg, "THREADING_LAYER", None)),
        ("numba num threads", getattr(cfg, "NUMBA_NUM_THREADS", None)),
        ("numba cache dir (config)", getattr(cfg, "CACHE_DIR", None) or "(default: next to the sources / user cache)"),
    ]
    try:
        layer: Any = getattr(numba, "threading_layer")()
    except ValueError:  # raised until a parallel region has run; atlas never runs one
        layer = "(not initialised)"
    out.insert(1, ("numba threading layer (in use)", layer))
    return out


def versions() -> list[tuple[str, Any]]:
    """The ``(label, value)`` pairs :func:`show_versions` prints (``None`` when missing)."""
    from . import __version__
    from ._executor import num_threads

    try:
        pool: Any = num_threads()
    except ValueError as e:  # a malformed ATLAS_NUM_THREADS is exactly what a report must show
        pool = f"error: {e}"
    rows: list[tuple[str, Any]] = [
        ("atlas", __version__),
        ("atlas location", os.path.dirname(os.path.abspath(__file__))),
        ("python", sys.version.replace("\n", " ")),
        ("python executable", sys.executable),
        ("platform", platform.platform()),
        ("machine", platform.machine()),
        ("byteorder", sys.byteorder),
        ("cpu count", os.cpu_count()),
        ("usable cpus", _usable_cpus()),
        ("atlas threads", pool),
    ]
    rows.extend((dist, _version_of(dist, mod)) for dist, mod in _DEPENDENCIES)
    rows.extend(_numba_info())
    rows.extend((k, os.environ.get(k)) for k in _NUMBA_ENV)
    atlas_env = sorted(k for k in os.environ if k.startswith("ATLAS_"))
    rows.extend((k, os.environ[k]) for k in atlas_env)
    if not atlas_env:
        rows.append(("ATLAS_* environment", None))
    return rows


def show_versions(file: Optional[TextIO] = None) -> None:
    """Print the versions and settings a bug report needs.

    atlas, Python, the platform and CPU count, the versions of atlas's dependencies
    (``None`` when a package is missing), numba's threading layer and cache settings, and
    every ``ATLAS_*`` environment variable. ``file`` defaults to ``sys.stdout``.
    """
    out = sys.stdout if file is None else file
    rows = versions()
    width = max(len(k) for k, _ in rows)
    lines = ["", "INSTALLED VERSIONS", "------------------"]
    lines.extend(f"{k:<{width}} : {v}" for k, v in rows)
    print("\n".join(lines), file=out)


__all__ = ["show_versions", "versions"]
