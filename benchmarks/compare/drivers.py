"""One driver per system: how it ingests a workload and how it performs each operation.

A driver's package is imported only inside its methods, so a missing package makes that
one system "not installed" instead of breaking the harness. Operations take a fresh
handle (``open``) and do what that system's users do; peers without stored statistics
read and reduce.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

from .workloads import Workload

NAN = float("nan")


def _peer_stats(a: np.ndarray) -> tuple[int, float, float]:
    """(non-null count, min, max) ignoring NaN, as atlas's array_stats reports them."""
    ok = ~np.isnan(a)
    n = int(ok.sum())
    return (n, float(np.min(a, where=ok, initial=np.inf)), float(np.max(a, where=ok, initial=-np.inf)))


def _box(w: Workload) -> tuple[slice, ...]:
    start, count = w.first_chunk
    return tuple(slice(a, a + b) for a, b in zip(start, count))


class Driver:
    """The operations every system implements; the defaults loop over datasets."""

    name = ""
    packages: tuple[str, ...] = ()
    note = ""
    peer = True  # False: shown for reference, never the "best peer"
    skip: tuple[str, ...] = ()  # operations this system does not measure

    def available(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.packages)

    def version(self) -> str:
        from importlib.metadata import version

        return ", ".join(f"{p} {version(p)}" for p in self.packages)

    # -- to implement
    def ingest(self, path: str, w: Workload) -> None:
        raise NotImplementedError

    def open(self, path: str) -> Any:
        raise NotImplementedError

    def list(self, h: Any) -> list[str]:
        raise NotImplementedError

    def read(self, h: Any, name: str, w: Workload) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def slices(self, h: Any, name: str, w: Workload) -> list[np.ndarray]:
        box = _box(w)
        return [self.read_box(h, name, v, box) for v in w.arrays]

    def read_box(self, h: Any, name: str, var: str, box: tuple[slice, ...]) -> np.ndarray:
        raise NotImplementedError

    def close(self, h: Any) -> None:
        pass

    def forget(self) -> None:
        """Drop what the process kept from earlier runs (called before every timed run, untimed)."""

    # -- whole operations (peers with asynchronous APIs override these)
    def read_all(self, h: Any, names: list[str], w: Workload) -> int:
        return sum(len(self.read(h, n, w)) for n in names)

    def slices_all(self, h: Any, names: list[str], w: Workload) -> int:
        return sum(len(self.slices(h, n, w)) for n in names)

    def stats_all(self, h: Any, names: list[str], w: Workload) -> list[Any]:
        out = []
        for n in names:
            d = self.read(h, n, w)
            out.append([_peer_stats(d[v]) for v in w.arrays])
        return out

    def stacked(self, h: Any, names: list[str], w: Workload) -> np.ndarray:
        box = _box(w)
        _, count = w.first_chunk
        out = np.empty((len(names),) + count, np.float32)
        for i, n in enumerate(names):
            out[i] = self.read_box(h, n, w.arrays[0], box)
        return out


class AtlasDriver(Driver):
    """atlas (this package), or the reference implementation when run by its own Python."""

    name = "atlas"
    packages = ("atlas",)
    time_as_int = False  # the reference takes timestamps as int64 nanoseconds
    batched = True  # atlas's batched calls (define_arrays / write_arrays / *_across); the reference has none

    def version(self) -> str:
        import atlas

        return f"atlas {atlas.__version__}"

    def ingest(self, path: str, w: Workload) -> None:
        import atlas

        zero = [0] * len(w.shape)
        with atlas.Atlas.create(path, codec="zstd") as store:
            for i, name in enumerate(w.names()):
                data = w.data(i, w)
                ds = store.create_dataset(name)
                if self.batched:
                    spec = dict(dtype="float32", dims=list(w.dims), shape=list(w.shape), chunk_shape=list(w.chunk),
                                fill_value=NAN)
                    ds.define_arrays({v: spec for v in w.arrays})
                    ds.write_arrays({v: data[v] for v in w.arrays})
                else:
                    for v in w.arrays:
                        ds.define_array(v, "float32", list(w.dims), list(w.shape), chunk_shape=list(w.chunk),
                                        fill_value=NAN)
                        ds.write_array(v, zero, data[v])
                if w.time_axis:
                    ds.define_array("time", "timestamp_ns", [w.dims[0]], [w.shape[0]])
                    ds.write_array("time", [0], data["time"].view(np.int64) if self.time_as_int else data["time"])

    def open(self, path: str) -> Any:
        import atlas

        return atlas.Atlas.open(path)

    def forget(self) -> None:
        # atlas shares parsed metadata, chunk indexes and small frames between the handles of a
        # process; a timed run must not reuse what the previous run loaded (the reference has none)
        import sys

        getattr(sys.modules.get("atlas.store"), "_forget_process_caches", lambda: None)()

    def list(self, h: Any) -> list[str]:
        return h.list_datasets()

    def read(self, h: Any, name: str, w: Workload) -> dict[str, np.ndarray]:
        return h.open_dataset(name).read_arrays(list(w.all_arrays()))

    def slices(self, h: Any, name: str, w: Workload) -> list[np.ndarray]:
        start, count = w.first_chunk
        return list(h.open_dataset(name).read_arrays(list(w.arrays), list(start), list(count)).values())

    def read_all(self, h: Any, names: list[str], w: Workload) -> int:
        if not self.batched:
            return super().read_all(h, names, w)
        got = h.read_arrays_across(list(w.all_arrays()), names)  # one request for the whole loop
        return sum(len(v) for v in got.values())

    def slices_all(self, h: Any, names: list[str], w: Workload) -> int:
        if not self.batched:
            return super().slices_all(h, names, w)
        start, count = w.first_chunk
        got = h.read_arrays_across(list(w.arrays), names, list(start), list(count))
        return sum(len(v) for v in got.values())

    def stats_all(self, h: Any, names: list[str], w: Workload) -> list[Any]:
        if self.batched:
            return [h.array_stats_across(v, names) for v in w.arrays]
        out = []
        for n in names:
            ds = h.open_dataset(n)
            out.append([ds.array_stats(v) for v in w.arrays])
        return out

    def stacked(self, h: Any, names: list[str], w: Workload) -> np.ndarray:
        start, count = w.first_chunk
        return h.read_array_across_stacked(w.arrays[0], names, list(start), list(count))


class ReferenceDriver(AtlasDriver):
    """The reference implementation (atlas-python 0.9.1), run by ``$ATLAS_REFERENCE_PYTHON``."""

    name = "reference"
    time_as_int = True
    batched = False

    def available(self) -> bool:
        py = os.environ.get("ATLAS_REFERENCE_PYTHON", "")
        return bool(py) and os.path.exists(py)


class H5pyDriver(Driver):
    """One HDF5 file, a group per dataset; zstd 3 through hdf5plugin if installed, else gzip 1."""

    name = "h5py"
    packages = ("h5py",)

    def _comp(self) -> dict[str, Any]:
        try:
            import hdf5plugin

            self.note = "zstd 3 (hdf5plugin)"
            return dict(hdf5plugin.Zstd(clevel=3))
        except ImportError:
            self.note = "gzip 1 (hdf5plugin not installed)"
            return {"compression": "gzip", "compression_opts": 1}

    def ingest(self, path: str, w: Workload) -> None:
        import h5py

        comp = self._comp()
        os.makedirs(path, exist_ok=True)
        with h5py.File(os.path.join(path, "data.h5"), "w") as f:
            for i, name in enumerate(w.names()):
                data = w.data(i, w)
                g = f.create_group(name)
                for v in w.arrays:
                    g.create_dataset(v, data=data[v], chunks=w.chunk, fillvalue=np.float32(NAN), **comp)
                if w.time_axis:
                    g.create_dataset("time", data=data["time"].view(np.int64), chunks=(w.shape[0],), **comp)

    def open(self, path: str) -> Any:
        import h5py

        self._comp()
        return h5py.File(os.path.join(path, "data.h5"), "r")

    def close(self, h: Any) -> None:
        h.close()

    def list(self, h: Any) -> list[str]:
        return list(h.keys())

    def read(self, h: Any, name: str, w: Workload) -> dict[str, np.ndarray]:
        g = h[name]
        return {v: g[v][()] for v in w.all_arrays()}

    def read_box(self, h: Any, name: str, var: str, box: tuple[slice, ...]) -> np.ndarray:
        return h[name][var][box]


class NetCDF4Driver(Driver):
    """A netCDF-4 file per dataset; zstd 3 where the netCDF library supports it, else zlib 1."""

    name = "netCDF4"
    packages = ("netCDF4",)

    def _comp(self, path: str) -> dict[str, Any]:
        import netCDF4

        probe = os.path.join(path, ".probe.nc")
        try:
            with netCDF4.Dataset(probe, "w") as nc:
                nc.createDimension("x", 4)
                nc.createVariable("v", "f4", ("x",), compression="zstd", complevel=3)
            self.note = "zstd 3"
            return {"compression": "zstd", "complevel": 3}
        except Exception:
            self.note = "zlib 1 (no zstd in this netCDF build)"
            return {"compression": "zlib", "complevel": 1}
        finally:
            if os.path.exists(probe):
                os.remove(probe)

    def ingest(self, path: str, w: Workload) -> None:
        import netCDF4

        os.makedirs(path, exist_ok=True)
        comp = self._comp(path)
        for i, name in enumerate(w.names()):
            data = w.data(i, w)
            with netCDF4.Dataset(os.path.join(path, name + ".nc"), "w") as nc:
                nc.set_fill_off()
                for d, s in zip(w.dims, w.shape):
                    nc.createDimension(d, s)
                for v in w.arrays:
                    var = nc.createVariable(v, "f4", w.dims, chunksizes=w.chunk, **comp)
                    var[...] = data[v]
                if w.time_axis:
                    t = nc.createVariable("time", "i8", (w.dims[0],), **comp)
                    t[...] = data["time"].view(np.int64)

    def open(self, path: str) -> Any:
        return path

    def list(self, h: Any) -> list[str]:
        return sorted(f[:-3] for f in os.listdir(h) if f.endswith(".nc"))

    def _ds(self, h: Any, name: str) -> Any:
        import netCDF4

        nc = netCDF4.Dataset(os.path.join(h, name + ".nc"), "r")
        nc.set_auto_mask(False)
        return nc

    def read(self, h: Any, name: str, w: Workload) -> dict[str, np.ndarray]:
        with self._ds(h, name) as nc:
            return {v: nc[v][...] for v in w.all_arrays()}

    def slices(self, h: Any, name: str, w: Workload) -> list[np.ndarray]:
        box = _box(w)
        with self._ds(h, name) as nc:
            return [nc[v][box] for v in w.arrays]

    def read_box(self, h: Any, name: str, var: str, box: tuple[slice, ...]) -> np.ndarray:
        with self._ds(h, name) as nc:
            return nc[var][box]


def all_drivers() -> dict[str, Driver]:
    from .drivers_floor import FloorDriver
    from .drivers_zarr import IcechunkDriver, TensorstoreDriver, ZarrDriver

    ds: list[Driver] = [AtlasDriver(), ReferenceDriver(), H5pyDriver(), NetCDF4Driver(), ZarrDriver(),
                        TensorstoreDriver(), IcechunkDriver(), FloorDriver()]
    return {d.name: d for d in ds}
