"""atlas: many N-dimensional datasets of one schema in one store.

>>> import atlas
>>> store = atlas.Atlas.create("/tmp/example_store")   # doctest: +SKIP

Importing atlas compiles nothing; Numba kernels compile on first use and are cached.
"""

from __future__ import annotations

import logging as _logging

from ._executor import num_threads, set_num_threads
from ._version import __version__
from .dataset import DatasetView
from .errors import AtlasError, CorruptStoreError, StoreFormatError
from .store import Atlas

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "Atlas",
    "DatasetView",
    "AtlasError",
    "CorruptStoreError",
    "StoreFormatError",
    "num_threads",
    "set_num_threads",
    "__version__",
]
