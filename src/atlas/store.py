"""Atlas: one store of many datasets; lifecycle, registry, flush/compact and bulk reads."""

from __future__ import annotations

import logging
import uuid
import warnings
from typing import Any, Optional, Sequence

import numpy as np

from . import codecs
from . import _metaio
from ._box import read_box
from ._staged import Stage, StagedResult
from ._state import StoreState, Transaction
from ._progress import Progress, ProgressArg, check as check_progress
from .errors import StaleStoreError
from ._meta import META_PATH, ArrayMeta, StoreMeta, validate_name
from .dataset import DatasetView, to_user
from .storage import Storage, storage_for

log = logging.getLogger(__name__)
_OPEN: dict[tuple[str, str], "Atlas"] = {}


def _reopen(storage: Storage, generation: int, uid: str = "") -> "Atlas":
    """Unpickle a store: reuse this process's handle unless it is older than the pickled one."""
    key = (type(storage).__name__, storage.location)
    st = _OPEN.get(key)
    if st is None or st._state.meta.uid != uid or st.generation < generation:
        st = _OPEN[key] = Atlas.open(storage)
    if st._state.meta.uid != uid:
        raise StaleStoreError(
            f"the store at {storage.location!r} is not the one this object was pickled from "
            "(it was deleted and created again)"
        )
    return st


class Atlas:
    """A store of many named datasets whose same-named arrays share physical files.

    Create one with :meth:`Atlas.create`, open one with :meth:`Atlas.open`. Every mutation
    stays in memory until :meth:`flush` (or :meth:`close`, or the end of a ``with`` block),
    which persists everything atomically.

    One handle may be shared by any number of threads doing any mix of calls: every call is
    atomic with respect to flushes and compactions, a read sees the last committed state plus
    the pending changes as of one moment, and writes to the same chunk never lose an update.
    """

    def __init__(self, storage: Storage, meta: StoreMeta, meta_format: str, meta_compression: str) -> None:
        """Internal: use :meth:`Atlas.create` or :meth:`Atlas.open`."""
        self._storage = storage
        self._meta_format = meta_format
        self._meta_compression = meta_compression
        self._state = StoreState(storage, meta, self._commit)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, source: Any, codec: str = "zstd", meta_format: str = "json", meta_compression: str = "none") -> "Atlas":
        """Create a new, empty store at ``source`` (a directory path).

        ``codec``: ``"zstd"`` | ``"lz4"`` | ``"none"`` (alias ``"uncompressed"``);
        ``meta_format``: ``"json"`` | ``"msgpack"`` (alias ``"mp"``); ``meta_compression``:
        ``"none"`` | ``"zstd"`` | ``"lz4"``. Raises ``FileExistsError`` if a store is already
        there (an existing store is never wiped).
        """
        c = codecs.canonical_codec(codec)
        mf = _metaio.canonical_meta_format(meta_format)
        mc = _metaio.canonical_meta_compression(meta_compression)
        storage = storage_for(source, create=True)
        if storage.exists(META_PATH):
            raise FileExistsError(f"an atlas store already exists at {storage.location!r}; use Atlas.open")
        meta = StoreMeta(codec=c, uid=uuid.uuid4().hex)
        self = cls(storage, meta, mf, mc)
        self._commit(meta)
        log.info("created store at %s (codec=%s, meta=%s/%s)", storage.location, c, mf, mc)
        return self

    @classmethod
    def open(cls, source: Any) -> "Atlas":
        """Open an existing store; codec and metadata format/compression are detected."""
        storage = storage_for(source, create=False)
        try:
            data = storage.read(META_PATH)
        except FileNotFoundError:
            raise FileNotFoundError(f"no atlas store at {storage.location!r} (missing {META_PATH})") from None
        where = f"{storage.location}/{META_PATH}"
        obj, fmt, comp = _metaio.decode(data, where)
        return cls(storage, StoreMeta.from_dict(obj, where), fmt, comp)

    def _commit(self, meta: StoreMeta) -> None:
        data = _metaio.encode(meta.to_dict(self._meta_format), self._meta_format, self._meta_compression)
        self._storage.commit(META_PATH, data)

    def flush(self) -> None:
        """Persist every pending change: one new segment per touched array name, then the metadata.

        Atomic and durable: a crash at any moment leaves the previous or the new state.
        On error the pending changes stay in memory, so the flush can be retried. Reads by
        other threads during the flush see the state before it, whole, until it is published.
        """
        n = self._state.pending_count()[1]
        if self._state.flush():
            log.info("flushed %s (generation %d, %d array instances updated)", self._storage.location, self.generation, n)

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is None:
            return
        nds, narr = state.pending_count()
        if state.txn.changed:
            warnings.warn(f"atlas store at {self._storage.location!r} was dropped with unflushed changes: "
                          f"{nds} dataset(s) and {narr} array(s) abandoned; call flush() or close() "
                          "(or use a with block)", ResourceWarning, stacklevel=2)

    def close(self) -> None:
        """Flush (the spec's alias); the store stays usable afterwards."""
        self.flush()

    def compact(self, progress: ProgressArg = False) -> None:
        """Flush, then rewrite each array name's live chunks into one segment and delete the rest.

        Reclaims the space of deleted datasets/arrays and overwritten chunks; reads are unchanged.
        ``progress`` (False, True for a bar or log lines, or ``fn(done, total)``) counts the array names rewritten.
        """
        check_progress(progress)
        st = self._state
        with st.write_lock:
            self.flush()
            with Progress(progress, len(st.meta.physical), "compact", "array") as bar:
                freed = st.compact(bar.update)
        log.info("compacted %s: %d bytes freed", self._storage.location, freed)

    def verify(self) -> list[str]:
        """Read and check every chunk index and every live frame of the store.

        Returns one line per problem found (an empty list when the store is sound); damaged
        data is reported, never returned. Pending (unflushed) changes are not checked.
        """
        return self._state.verify()

    def __enter__(self) -> "Atlas":
        """The store itself; leaving the block calls :meth:`close` (one flush)."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """:meth:`close`, also when the block raised: what was done before the error is
        persisted, and the exception propagates."""
        self.close()

    def __repr__(self) -> str:
        """Location, counts, codec and metadata format, e.g. for a notebook cell."""
        m = self._state.meta
        return (f"Atlas({self._storage.location!r}, datasets={len(m.datasets)}, arrays={len(self.list_arrays())}, "
                f"codec={m.codec!r}, meta_format={self._meta_format!r}, meta_compression={self._meta_compression!r}, "
                f"generation={m.generation})")

    # ------------------------------------------------------------------ pickling / dask
    def __reduce__(self) -> tuple[Any, ...]:
        # A store travels as its location: the receiving process reopens it (flushed state).
        return (_reopen, (self._storage, self.generation, self._state.meta.uid))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("atlas.Atlas", type(self._storage).__name__, self._storage.location, self._state.meta.uid, self.generation)

    # ------------------------------------------------------------------ xarray
    def add_xr_dataset(self, ds: Any, name: str, chunks: Optional[Any] = None) -> None:
        """Store an ``xarray.Dataset`` as the new dataset ``name`` (never flushes).

        Dask-backed variables are written one block at a time. ``chunks={var: [...]}``
        overrides the on-disk chunk shape. A rejected dataset leaves nothing behind.
        """
        from .integrations._xarray import add_xr_dataset

        add_xr_dataset(self, ds, name, chunks)

    def to_xarray(self, name: str, chunks: Any = "auto") -> Any:
        """The dataset ``name`` as an ``xarray.Dataset``; chunked arrays come back dask-backed
        (one task per on-disk chunk). ``chunks=None`` reads everything eagerly."""
        from .integrations._xarray import to_xarray

        return to_xarray(self, name, chunks)

    def to_xarray_many(self, names: Sequence[str], concat_dim: str = "dataset", parallel: bool = True,
                       chunks: Any = None, progress: ProgressArg = False) -> Any:
        """Many datasets of one schema as one ``xarray.Dataset`` with a leading ``concat_dim``.

        Each data variable is read with one stacked read (``(N, ...)``); coordinates and
        dataset attributes come from the first dataset; the ``concat_dim`` coordinate holds
        the dataset names. ``chunks="auto"`` returns dask-backed variables instead.
        ``parallel`` is accepted for compatibility: reads always use the shared pool.
        ``progress`` counts the variables read (eager reads only).
        """
        from .integrations._xarray import to_xarray_many

        return to_xarray_many(self, names, concat_dim, parallel, chunks, progress)

    def ingest(self, files: Sequence[str], name_from: str = "stem", engine: Optional[str] = None,
               jobs: Optional[int] = None, progress: ProgressArg = False, *, workers: Optional[int] = None,
               client: Any = None) -> list[str]:
        """Add every file matching ``files`` (paths or glob patterns, ``**`` recurses) as one dataset.

        Files are opened with xarray (any format it reads; ``engine`` as in
        ``xarray.open_dataset``) on ``jobs`` threads (default ``min(8, cores)``; NetCDF/HDF5
        files one at a time, their C libraries not being thread-safe) and added in file order
        with :meth:`add_xr_dataset`, named after the file (``name_from="stem"`` drops the
        extension, ``"name"`` keeps it). Never flushes. All or nothing: if a file cannot be
        opened or stored, the datasets this call added are removed again and ``IngestError``
        (a ``ValueError``) is raised. ``progress`` counts the files. Returns the names added.

        ``workers=N`` (a local pool of N processes) or ``client=`` (a ``dask.distributed``
        ``Client``): worker processes open, encode and write the files (staged writes, see
        :meth:`stage`) and this call commits them all at once at the end (it flushes the
        store first); all or nothing as above; ``progress`` counts the files whose batch is done.
        Worker processes start the way ``multiprocessing`` spawns them (they import the main
        script): a script calling this needs ``if __name__ == "__main__":``.
        """
        if workers is not None or client is not None:
            from .integrations._distributed import ingest_parallel

            return ingest_parallel(self, files, name_from, engine, jobs, progress, workers=workers, client=client)
        from .integrations._ingest import ingest

        return ingest(self, files, name_from, engine, jobs, progress)

    # ------------------------------------------------------------------ staged writes
    def stage(self) -> Stage:
        """A picklable :class:`~atlas.Stage` for worker processes to write new datasets into this store.

        A worker calls ``stage.writer()``, creates datasets with it as with a store, and
        returns ``writer.finish()`` (a small :class:`~atlas.StagedResult`); workers write
        segment files only, never the metadata. Publish the results with
        :meth:`commit_staged`; ``stage.discard()`` deletes the files of writers that failed.
        Do not :meth:`compact` while writers are writing (it deletes their files).
        """
        from . import _staged

        return _staged.new_stage(self._storage, self._state.txn.base.meta)

    def commit_staged(self, results: Sequence[StagedResult]) -> list[str]:
        """Publish staged results (from ``StagedWriter.finish()``) in one atomic commit.

        Flushes this handle's pending changes first. The cost is proportional to the
        metadata and chunk indexes of the results, not to their data. A dataset name found in
        two results or already in the store raises ``FileExistsError`` listing the names, and
        a missing staged file ``FileNotFoundError``; then nothing is committed. Returns the
        names of the datasets added, in order.
        """
        from . import _staged

        names = _staged.commit(self._state, results, self._meta_format)
        log.info("committed %d staged datasets into %s (generation %d)", len(names), self._storage.location, self.generation)
        return names

    # ------------------------------------------------------------------ properties
    @property
    def codec(self) -> str:
        """The chunk codec of this store."""
        return self._state.meta.codec

    @property
    def location(self) -> str:
        """Where the store lives (a directory path or an object-store URL), as used in messages."""
        return self._storage.location

    @property
    def generation(self) -> int:
        """The number of the last committed state (each flush or compaction adds one)."""
        return self._state.generation

    @property
    def meta_format(self) -> str:
        """The metadata format of this store: ``"json"`` or ``"msgpack"``."""
        return self._meta_format

    @property
    def meta_compression(self) -> str:
        """The metadata compression of this store: ``"none"``, ``"zstd"`` or ``"lz4"``."""
        return self._meta_compression

    # ------------------------------------------------------------------ datasets
    def create_dataset(self, name: str) -> DatasetView:
        """A new, empty dataset (``FileExistsError`` if the name is taken)."""
        validate_name(name, "dataset")
        self._state.create_dataset(name)
        return DatasetView(self, name)

    def open_dataset(self, name: str) -> DatasetView:
        """The existing dataset ``name`` (``KeyError`` if there is none)."""
        if not isinstance(name, str):
            raise TypeError(f"dataset name must be a str, got {type(name).__name__}: {name!r}")
        if name not in self._state.meta.datasets:
            raise KeyError(f"no dataset named {name!r}")
        return DatasetView(self, name)

    def delete_dataset(self, name: str) -> None:
        """Remove a dataset and its arrays (``KeyError`` if there is none); persisted by the next flush."""
        self._state.delete_dataset(name)

    def list_datasets(self) -> list[str]:
        """Dataset names in creation order."""
        return list(self._state.meta.datasets)

    def list_arrays(self) -> list[str]:
        """Distinct array names across all datasets, in first-definition order."""
        seen: dict[str, None] = {}
        for ds in self._state.meta.datasets.values():
            for a in ds.arrays:
                seen.setdefault(a, None)
        return list(seen)

    def dataset_exists(self, name: str) -> bool:
        """Whether a dataset of that name exists."""
        return isinstance(name, str) and name in self._state.meta.datasets

    # ------------------------------------------------------------------ bulk reads
    def _instances(self, txn: Transaction, array: str, dataset_names: Sequence[str]) -> list[Optional[ArrayMeta]]:
        if not isinstance(array, str):
            raise TypeError(f"array name must be a str, got {type(array).__name__}: {array!r}")
        if isinstance(dataset_names, str):
            raise TypeError("dataset_names must be a sequence of names, not a single str")
        names = list(dataset_names)
        if not names:
            raise ValueError("dataset_names is empty")
        out = []
        datasets = txn.meta.datasets
        for n in names:
            ds = datasets.get(n) if isinstance(n, str) else None
            if ds is None:
                raise KeyError(f"no dataset named {n!r}")
            out.append(ds.arrays.get(array))
        return out

    def _read_into(self, txn: Transaction, array: str, metas: list[ArrayMeta], start: Any, count: Any,
                   bar: Progress) -> np.ndarray:
        """One read of ``metas`` as ``txn`` sees them; in steps of about a twentieth when progress is reported."""
        st = self._state
        if not bar.enabled:
            return st.read(txn, array, metas, start, count)
        out = np.empty((len(metas),) + tuple(count), metas[0].sdtype)
        step = max(1, -(-len(metas) // 20))
        for i in range(0, len(metas), step):
            part = metas[i:i + step]
            st.read(txn, array, part, start, count, out[i:i + len(part)])
            bar.update(len(part))
        return out

    def read_array_across(self, array: str, dataset_names: Sequence[str], start: Optional[Sequence[int]] = None,
                          shape: Optional[Sequence[int]] = None, progress: ProgressArg = False) -> list[Optional[np.ndarray]]:
        """Read the same box of ``array`` from each dataset: a list with None where it is missing.

        ``progress`` counts the datasets read.
        """
        check_progress(progress)
        txn = self._state.txn
        metas = self._instances(txn, array, dataset_names)
        result: list[Optional[np.ndarray]] = [None] * len(metas)
        groups: dict[Any, list[int]] = {}
        for i, m in enumerate(metas):
            if m is not None:
                s, c = read_box(m.shape, start, shape, array)
                groups.setdefault((m.dtype, s, c), []).append(i)
        with Progress(progress, len(metas), "read", "dataset") as bar:
            bar.update(len(metas) - sum(len(v) for v in groups.values()))  # the missing ones
            for (_, s, c), idxs in groups.items():
                ms: list[ArrayMeta] = [metas[i] for i in idxs]  # type: ignore[misc]
                out = self._read_into(txn, array, ms, s, c, bar)
                for k, i in enumerate(idxs):
                    result[i] = to_user(ms[k], out[k, ...])
        return result

    def read_array_across_stacked(self, array: str, dataset_names: Sequence[str], start: Optional[Sequence[int]] = None,
                                  shape: Optional[Sequence[int]] = None, progress: ProgressArg = False) -> np.ndarray:
        """Read the same box of ``array`` from every dataset into one ``(N, *shape)`` array.

        Every dataset must define the array with one dtype (``TypeError`` otherwise) and the
        box must resolve to one shape in all of them (``ValueError``); a dataset lacking the
        array raises ``KeyError``. ``progress`` counts the datasets read.
        """
        check_progress(progress)
        if not isinstance(dataset_names, str):
            dataset_names = list(dataset_names)  # a generator is read once
        txn = self._state.txn
        metas = self._instances(txn, array, dataset_names)
        m0 = None
        box = None
        boxes: dict[tuple[int, ...], Any] = {}
        for n, m in zip(dataset_names, metas):
            if m is None:
                raise KeyError(f"dataset {n!r} has no array {array!r}")
            b = boxes.get(m.shape)
            if b is None:  # one check per distinct shape, not per dataset
                b = boxes[m.shape] = read_box(m.shape, start, shape, array)
            if m0 is None:
                m0, box = m, b
                continue
            if m.dtype != m0.dtype:
                raise TypeError(f"array {array!r} is {m.dtype} in dataset {n!r} but {m0.dtype} in {dataset_names[0]!r}")
            if b[1] != box[1]:  # type: ignore[index]
                raise ValueError(
                    f"array {array!r} reads as shape {list(b[1])} in dataset {n!r} but {list(box[1])} in "  # type: ignore[index]
                    f"{dataset_names[0]!r}; pass an explicit start/shape"
                )
        s, c = box  # type: ignore[misc]
        with Progress(progress, len(metas), "read", "dataset") as bar:
            out = self._read_into(txn, array, metas, s, c, bar)  # type: ignore[arg-type]
        return to_user(m0, out)  # type: ignore[arg-type]
