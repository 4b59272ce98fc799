"""The ``ds.atlas`` accessor (registered once, when xarray is imported)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

import xarray as xr

if TYPE_CHECKING:
    from ..store import Atlas


@xr.register_dataset_accessor("atlas")
class AtlasAccessor:
    """``ds.atlas.write(store, name, chunks=None, append_dim=None)``: ``store.add_xr_dataset(ds, name, ...)``."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def write(self, store: "Atlas", name: str, chunks: Optional[Mapping[str, Any]] = None,
              append_dim: Optional[str] = None) -> None:
        """Add this dataset to ``store`` as ``name``, or extend ``name`` along ``append_dim`` (does not flush)."""
        store.add_xr_dataset(self._ds, name, chunks=chunks, append_dim=append_dim)
