"""Zarr v3 peers: zarr-python (a group per dataset), tensorstore (zarr3 driver, requests
issued asynchronously: every future first, then wait, as its users do) and icechunk
(zarr groups in a local-filesystem repository, one commit)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .drivers import NAN, Driver, _box, _peer_stats
from .workloads import Workload


class ZarrDriver(Driver):
    """zarr-python v3: one LocalStore, a group per dataset, zstd 3."""

    name = "zarr"
    packages = ("zarr",)
    note = "zstd 3"

    def _write(self, root: Any, w: Workload) -> None:
        from zarr.codecs import ZstdCodec

        z = ZstdCodec(level=3)
        for i, name in enumerate(w.names()):
            data = w.data(i, w)
            g = root.create_group(name)
            for v in w.arrays:
                a = g.create_array(v, shape=w.shape, chunks=w.chunk, dtype="float32", compressors=z, fill_value=NAN)
                a[...] = data[v]
            if w.time_axis:
                t = g.create_array("time", shape=(w.shape[0],), chunks=(w.shape[0],), dtype="int64", compressors=z,
                                   fill_value=0)
                t[...] = data["time"].view(np.int64)

    def ingest(self, path: str, w: Workload) -> None:
        import zarr
        from zarr.storage import LocalStore

        self._write(zarr.open_group(LocalStore(path), mode="w"), w)

    def open(self, path: str) -> Any:
        import zarr
        from zarr.storage import LocalStore

        return zarr.open_group(LocalStore(path, read_only=True), mode="r")

    def list(self, h: Any) -> list[str]:
        return sorted(h.group_keys())

    def read(self, h: Any, name: str, w: Workload) -> dict[str, np.ndarray]:
        g = h[name]
        return {v: g[v][...] for v in w.all_arrays()}

    def read_box(self, h: Any, name: str, var: str, box: tuple[slice, ...]) -> np.ndarray:
        return h[name][var][box]


class IcechunkDriver(ZarrDriver):
    """icechunk: the zarr layout above in a local-filesystem repository, committed once."""

    name = "icechunk"
    packages = ("icechunk", "zarr")

    def ingest(self, path: str, w: Workload) -> None:
        import icechunk
        import zarr

        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(path))
        session = repo.writable_session("main")
        self._write(zarr.open_group(session.store, mode="w"), w)
        session.commit("ingest")

    def open(self, path: str) -> Any:
        import icechunk
        import zarr

        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(path))
        return zarr.open_group(repo.readonly_session(branch="main").store, mode="r")


class TensorstoreDriver(Driver):
    """tensorstore's zarr3 driver on the file kvstore: one zarr array per dataset and variable.

    A handle is a new ``ts.Context`` (fresh caches); datasets are listed from the directory.
    """

    name = "tensorstore"
    packages = ("tensorstore",)
    note = "zstd 3, async"

    def version(self) -> str:
        from importlib.metadata import version

        return f"tensorstore {version('tensorstore')}"

    def _spec(self, path: str, name: str, var: str, w: Workload | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"driver": "zarr3", "kvstore": {"driver": "file", "path": os.path.join(path, name, var)}}
        if w is not None:
            shape, chunk, dtype, fill = ((w.shape[0],), (w.shape[0],), "int64", 0) if var == "time" else \
                (w.shape, w.chunk, "float32", "NaN")
            spec["metadata"] = {
                "shape": list(shape), "data_type": dtype, "fill_value": fill,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                           {"name": "zstd", "configuration": {"level": 3}}],
            }
        return spec

    def ingest(self, path: str, w: Workload) -> None:
        import tensorstore as ts

        ctx = ts.Context()
        keys = [(i, n, v) for i, n in enumerate(w.names()) for v in w.all_arrays()]
        opened = [ts.open(self._spec(path, n, v, w), create=True, context=ctx) for _, n, v in keys]
        writes = []
        cache: dict[int, dict[str, np.ndarray]] = {}
        for (i, n, v), fut in zip(keys, opened):
            data = cache.setdefault(i, w.data(i, w))
            a = data[v].view(np.int64) if v == "time" else data[v]
            writes.append(fut.result().write(a))
            if len(cache) > 2:
                cache.pop(min(cache))
        for f in writes:
            f.result()

    def open(self, path: str) -> Any:
        import tensorstore as ts

        return path, ts.Context()

    def list(self, h: Any) -> list[str]:
        return sorted(d for d in os.listdir(h[0]) if not d.startswith("."))

    def _open_many(self, h: Any, pairs: list[tuple[str, str]]) -> list[Any]:
        import tensorstore as ts

        futs = [ts.open(self._spec(h[0], n, v), context=h[1], open=True) for n, v in pairs]
        return [f.result() for f in futs]

    def _read_many(self, h: Any, pairs: list[tuple[str, str]], box: tuple[slice, ...] | None) -> list[np.ndarray]:
        arrays = self._open_many(h, pairs)
        futs = [(a if box is None else a[box]).read() for a in arrays]
        return [f.result() for f in futs]

    def read(self, h: Any, name: str, w: Workload) -> dict[str, np.ndarray]:
        names = list(w.all_arrays())
        return dict(zip(names, self._read_many(h, [(name, v) for v in names], None)))

    def read_box(self, h: Any, name: str, var: str, box: tuple[slice, ...]) -> np.ndarray:
        return self._read_many(h, [(name, var)], box)[0]

    def read_all(self, h: Any, names: list[str], w: Workload) -> int:
        return len(self._read_many(h, [(n, v) for n in names for v in w.all_arrays()], None))

    def slices_all(self, h: Any, names: list[str], w: Workload) -> int:
        return len(self._read_many(h, [(n, v) for n in names for v in w.arrays], _box(w)))

    def stats_all(self, h: Any, names: list[str], w: Workload) -> list[Any]:
        got = self._read_many(h, [(n, v) for n in names for v in w.arrays], None)
        k = len(w.arrays)
        return [[_peer_stats(a) for a in got[i * k:(i + 1) * k]] for i in range(len(names))]

    def stacked(self, h: Any, names: list[str], w: Workload) -> np.ndarray:
        return np.stack(self._read_many(h, [(n, w.arrays[0]) for n in names], _box(w)))
