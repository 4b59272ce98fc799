"""atlas: many N-dimensional datasets of one schema in one store.

>>> import atlas
>>> store = atlas.Atlas.create("/tmp/example_store")   # doctest: +SKIP

Importing atlas compiles nothing; Numba kernels compile on first use and are cached.
"""

from __future__ import annotations

import logging as _logging

from ._executor import num_threads, set_num_threads
from ._staged import Stage, StagedResult, StagedWriter
from ._version import __version__
from ._versions import show_versions
from .dataset import DatasetView
from .errors import (AtlasError, ConcurrentWriteError, CorruptStoreError, IngestError, ReadOnlyError, StaleStoreError,
                     StoreFormatError, VersionNotFoundError)
from .store import Atlas

_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def _register_accessor() -> None:
    from .integrations import accessor  # noqa: F401  (registers ds.atlas)


def _install_accessor_hook() -> None:
    """Register ``ds.atlas`` now if xarray is loaded, else as soon as it is (import stays fast)."""
    import sys

    if "xarray" in sys.modules:
        _register_accessor()
        return
    import importlib.abc
    import importlib.util

    class _XarrayHook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
            if fullname != "xarray":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec("xarray")
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            run = loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                run(module)
                _register_accessor()

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _XarrayHook())


_install_accessor_hook()

__all__ = [
    "Atlas",
    "DatasetView",
    "Stage",
    "StagedResult",
    "StagedWriter",
    "AtlasError",
    "ConcurrentWriteError",
    "CorruptStoreError",
    "IngestError",
    "StaleStoreError",
    "StoreFormatError",
    "ReadOnlyError",
    "VersionNotFoundError",
    "num_threads",
    "set_num_threads",
    "show_versions",
    "__version__",
]
