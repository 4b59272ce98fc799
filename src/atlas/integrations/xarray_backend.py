"""``xr.open_dataset(path, engine="atlas", group=name)``: the xarray backend entry point.

Cheap to import (xarray lists every backend at start-up): atlas itself is imported lazily.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import numpy as np
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing


class AtlasBackendArray(BackendArray):
    """Lazy view of one stored array; picklable (holds the store, which pickles as its location)."""

    def __init__(self, store: Any, dataset: str, array: str, shape: tuple[int, ...], dtype: np.dtype, orig: Optional[str],
                 enc: Any = None) -> None:
        self.store = store
        self.dataset = dataset
        self.array = array
        self.shape = shape
        self.dtype = dtype
        self.orig = orig
        self.enc = enc

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._raw)

    def _raw(self, key: tuple[Any, ...]) -> np.ndarray:
        from ._mapping import from_storage_values

        start, count, post, squeeze = [], [], [], []
        for k, n in zip(key, self.shape):
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                if step < 0:
                    raise IndexError("negative steps are applied by xarray, not the backend")
                b = max(a, b)
                start.append(a)
                count.append(b - a)
                post.append(slice(None, None, step))
                squeeze.append(False)
            else:
                i = int(k)
                start.append(i)
                count.append(1)
                post.append(slice(None))
                squeeze.append(True)
        data = self.store.open_dataset(self.dataset).read_array(self.array, start, count)
        if post:
            data = data[tuple(post)]
        axes = tuple(i for i, s in enumerate(squeeze) if s)
        if axes:
            data = data.squeeze(axis=axes)
        return from_storage_values(data, self.orig, self.enc) if self.orig else data


class AtlasBackendEntrypoint(BackendEntrypoint):
    """Open one dataset of an atlas store with ``engine="atlas"``; ``group`` names the dataset,
    ``version=N`` or ``tag="name"`` opens it as it was in that version (see ``Atlas.history``).

    The decoding keywords have xarray's meaning. Left unset (or True), variables come back
    as stored, lazily; any of them set otherwise re-encodes the variables that have a CF
    encoding (loading them) and decodes them with xarray's decoders, as xarray would
    open the source file with those keywords. ``chunks`` is handled by xarray (the on-disk
    chunks are each variable's ``preferred_chunks``).
    """

    description = "Open a dataset of an atlas store (many datasets of one schema in one store)"
    url = "https://github.com/atlas-python/atlas"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "group", "mask_and_scale", "decode_times",
                               "decode_timedelta", "use_cftime", "concat_characters", "decode_coords", "version", "tag")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: Optional[Iterable[str]] = None,
                     group: Optional[str] = None, mask_and_scale: Any = None, decode_times: Any = None,
                     decode_timedelta: Any = None, use_cftime: Any = None, concat_characters: Any = None,
                     decode_coords: Any = None, version: Optional[int] = None, tag: Optional[str] = None) -> Any:
        import atlas

        from . import _cf
        from ._xarray import build_dataset

        if isinstance(filename_or_obj, atlas.Atlas):
            store = filename_or_obj
            if version is not None or tag is not None:  # a past version of that handle's store
                store = atlas.Atlas.open(store._state.storage, version=version, tag=tag)
        else:
            store = atlas.Atlas.open(filename_or_obj, version=version, tag=tag)
        if group is None:
            names = store.list_datasets()
            if len(names) != 1:
                raise ValueError(f"the store holds {len(names)} datasets; pass group=<dataset name> (one of {names[:10]!r})")
            group = names[0]
        if not store.dataset_exists(group):
            raise KeyError(f"no dataset named {group!r} in the store at {store.location!r}")
        view = store.open_dataset(group)
        if isinstance(drop_variables, str):
            drop_variables = [drop_variables]
        drop = tuple(drop_variables or ())

        def make(v: str, am: dict[str, Any], orig: Optional[str], enc: Any) -> tuple[Any, bool]:
            from .. import dtypes as D

            dt = np.dtype(orig) if orig else D.user_dtype(am["dtype"])
            arr = AtlasBackendArray(store, group, v, tuple(am["shape"]), dt, orig, enc)
            return indexing.LazilyIndexedArray(arr), False

        ds = build_dataset(view, make, drop=drop)
        decoders = {"mask_and_scale": mask_and_scale, "decode_times": decode_times,
                    "decode_timedelta": decode_timedelta, "use_cftime": use_cftime,
                    "concat_characters": concat_characters, "decode_coords": decode_coords}
        if _cf.wants_redecode(decoders):
            ds = _cf.redecode(ds, decoders, drop)
        ds.set_close(store._state.storage.close)  # releases cached file handles; never flushes
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        try:
            return os.path.isfile(os.path.join(os.fspath(filename_or_obj), "atlas.meta"))
        except TypeError:
            return False
