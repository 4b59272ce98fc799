"""Atlas: one store of many datasets; lifecycle, registry, flush/compact and bulk reads."""

from __future__ import annotations

import logging
import uuid
import warnings
from typing import Any, Optional, Sequence

import numpy as np

from . import codecs
from . import _gc, _history, _metaio, _timetravel
from ._box import read_box
from ._staged import Stage, StagedResult
from ._state import StoreState, Transaction
from ._progress import Progress, ProgressArg, check as check_progress
from .errors import ReadOnlyError, StaleStoreError
from ._meta import META_PATH, ArrayMeta, StoreMeta, validate_name
from . import _batch
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


_PARSED: dict[tuple[str, str], tuple[Any, StoreMeta, str, str]] = {}  # location -> (file stamp, parse)


def _load_meta(storage: Storage) -> tuple[StoreMeta, str, str]:
    """The committed metadata of a store, with its format and compression.

    A committed state never changes, so when the metadata file is still the one this
    process parsed last (same inode, size and modification time, on local disk), the parse
    is reused: reopening a store costs a ``stat``, not a parse of every dataset's entry.
    """
    key = (type(storage).__name__, storage.location)
    hit = _PARSED.get(key)
    try:
        stamp, data = storage.read_unless(META_PATH, None if hit is None else hit[0], _metaio.READ_BUFFERS.take)
    except FileNotFoundError:
        raise FileNotFoundError(f"no atlas store at {storage.location!r} (missing {META_PATH})") from None
    if data is None:
        assert hit is not None
        return hit[1], hit[2], hit[3]
    where = f"{storage.location}/{META_PATH}"
    try:
        with _gc.paused():
            obj, fmt, comp = _metaio.decode(data, where, lazy=True)
            meta = StoreMeta.from_dict(obj, where)
    finally:
        if isinstance(data, bytearray):  # reusable once the parse no longer views it
            _metaio.READ_BUFFERS.give(data)
    if stamp is not None:
        _PARSED[key] = (stamp, meta, fmt, comp)
    return meta, fmt, comp


def _forget_process_caches() -> None:
    """Drop what this process shares between handles: parsed metadata, decoded indexes and
    frames (the comparison harness times reads as a fresh process would do them)."""
    from ._catfile import forget
    from ._frames import _FRAMES, _INDEXES

    forget()
    _PARSED.clear()
    _FRAMES.clear()
    _INDEXES.clear()


class _MetaWriter:
    """Encodes and commits the metadata of one handle's store; its state holds this rather than
    a method of the handle, so nothing refers back to a handle and a dropped one is freed at
    once (not at the next cyclic garbage collection, with its parsed metadata)."""

    __slots__ = ("storage", "fmt", "comp")

    def __init__(self, storage: Storage, fmt: str, comp: str) -> None:
        self.storage, self.fmt, self.comp = storage, fmt, comp

    def encode(self, meta: StoreMeta) -> bytes:
        return _metaio.encode(meta.to_dict(self.fmt), self.fmt, self.comp)

    def __call__(self, meta: StoreMeta, note: Optional[_history.Note] = None) -> None:
        _history.commit(self.storage, meta, note, self.encode)


def _reopen_version(storage: Storage, version: int) -> "Atlas":
    """Unpickle a handle on a past version (reopened read-only in the receiving process)."""
    return Atlas.open(storage, version=version)


class Atlas:
    """A store of many named datasets whose same-named arrays share physical files.

    Create one with :meth:`Atlas.create`, open one with :meth:`Atlas.open`. Every mutation
    stays in memory until :meth:`flush` (or :meth:`close`, or the end of a ``with`` block),
    which persists everything atomically.

    One handle may be shared by any number of threads doing any mix of calls: every call is
    atomic with respect to flushes and compactions, a read sees the last committed state plus
    the pending changes as of one moment, and writes to the same chunk never lose an update.
    """

    def __init__(self, storage: Storage, meta: StoreMeta, meta_format: str, meta_compression: str,
                 _readonly: Optional[tuple[int, str]] = None) -> None:
        """Internal: use :meth:`Atlas.create` or :meth:`Atlas.open`."""
        self._storage = storage
        self._writer = _MetaWriter(storage, meta_format, meta_compression)  # (the handle's format and compression)
        self._state = (StoreState(storage, meta, self._writer) if _readonly is None
                       else _timetravel.ReadOnlyState(storage, meta, *_readonly))

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
        self._writer(meta)
        log.info("created store at %s (codec=%s, meta=%s/%s)", storage.location, c, mf, mc)
        return self

    @classmethod
    def open(cls, source: Any, version: Optional[int] = None, tag: Optional[str] = None) -> "Atlas":
        """Open an existing store; codec and metadata format/compression are detected.

        ``version=N`` (a number from :meth:`history`) or ``tag="name"`` (see :meth:`tag`) opens
        a read-only handle on exactly that past state: datasets, arrays, attributes and stats
        as they were; every change raises ``ReadOnlyError``. A version that never existed or
        was expired raises ``VersionNotFoundError``.
        """
        storage = storage_for(source, create=False)
        meta, fmt, comp = _load_meta(storage)
        if version is not None or tag is not None:
            return _timetravel.open_version(cls, storage, meta, fmt, comp, version, tag)
        return cls(storage, meta, fmt, comp)

    def flush(self, message: Optional[str] = None) -> None:
        """Persist every pending change: one new segment per touched array name, then the metadata.

        Atomic and durable: a crash at any moment leaves the previous or the new state.
        On error the pending changes stay in memory, so the flush can be retried. Reads by
        other threads during the flush see the state before it, whole, until it is published.
        The new state is a version (see :meth:`history`) recorded with ``message``; a flush
        with nothing pending does nothing.
        """
        if message is not None and not isinstance(message, str):
            raise TypeError(f"message must be a str, got {type(message).__name__}: {message!r}")
        n = self._state.pending_count()[1]
        if self._state.flush(message):
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
        """Flush, then rewrite each array name's live chunks into one segment and delete the files
        no retained version needs.

        Reclaims the space of deleted datasets/arrays and overwritten chunks that only expired
        versions held (see :meth:`expire`: every version is kept until expired); reads are
        unchanged. The compacted state replaces the current version in :meth:`history`
        (opening the replaced number opens it). An array name already in one segment of live
        chunks is not rewritten.
        ``progress`` (False, True for a bar, or ``fn(done, total)``) counts the array names rewritten.
        """
        check_progress(progress)
        st = self._state
        with st.write_lock:
            self.flush()
            with Progress(progress, len(st.meta.physical), "compact", "array") as bar:
                freed = st.compact(bar.update)
        log.info("compacted %s: %d bytes freed", self._storage.location, freed)

    # ------------------------------------------------------------------ versions
    def history(self) -> list[dict[str, Any]]:
        """Every retained version, oldest first, as this handle sees the store.

        Each is a dict: ``version`` (the generation number to pass to ``Atlas.open(...,
        version=)``), ``time`` (an aware UTC ``datetime``), ``message`` (``flush(message=)``,
        or None; ``"compact"`` for a compaction), ``added`` / ``changed`` / ``deleted`` (counts
        of datasets) and ``same_as`` (versions a compaction replaced: the same state).
        """
        return _history.summaries(self._state.txn.base.meta)

    @property
    def read_only(self) -> bool:
        """Whether this handle is a past version (``Atlas.open(..., version=/tag=)``)."""
        return isinstance(self._state, _timetravel.ReadOnlyState)

    def tag(self, name: str, version: Optional[int] = None) -> None:
        """Name a retained version (default: the last committed one) so :meth:`expire` keeps it.

        ``Atlas.open(source, tag=name)`` opens it. Tags are never moved: an existing name raises
        ``FileExistsError`` (also when another writer created it first); :meth:`delete_tag` it first.
        """
        if self.read_only:
            raise ReadOnlyError(f"{self._state.what} is read-only; tag it from a writable handle "  # type: ignore[attr-defined]
                                "with tag(name, version=...)")
        base = self._state.txn.base.meta
        v = base.generation if version is None else version
        if type(v) is not int:
            raise TypeError(f"version must be an int, got {type(v).__name__}: {v!r}")
        _history.create_tag(self._storage, base, name, v)

    def tags(self) -> dict[str, int]:
        """``{tag name: version}`` of every tag of the store, by name."""
        return {n: t["version"] for n, t in _history.read_tags(self._storage).items()}

    def delete_tag(self, name: str) -> None:
        """Remove a tag (``KeyError`` if there is none); its version stays until expired."""
        if self.read_only:
            raise ReadOnlyError(f"{self._state.what} is read-only")  # type: ignore[attr-defined]
        _history.delete_tag(self._storage, name)

    def expire(self, older_than: Any = None, keep_last: Optional[int] = None) -> list[int]:
        """Drop versions from the history; returns the version numbers dropped.

        A version goes when it is older than ``older_than`` (a ``timedelta`` age or an aware
        ``datetime``), if given, and not among the ``keep_last`` newest, if given; tagged
        versions and the latest are always kept. Flushes pending changes first. The data only
        dropped versions needed is deleted by the next :meth:`compact`. Costs one metadata
        commit and one delete per dropped version, whatever the size of the store.
        """
        return _timetravel.expire(self._state, self._writer.encode, older_than, keep_last)

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
                f"codec={m.codec!r}, meta_format={self._writer.fmt!r}, meta_compression={self._writer.comp!r}, "
                f"generation={m.generation})")

    # ------------------------------------------------------------------ pickling / dask
    def __reduce__(self) -> tuple[Any, ...]:
        # A store travels as its location: the receiving process reopens it (flushed state).
        if self.read_only:
            return (_reopen_version, (self._storage, self._state.version))  # type: ignore[attr-defined]
        return (_reopen, (self._storage, self.generation, self._state.meta.uid))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("atlas.Atlas", type(self._storage).__name__, self._storage.location, self._state.meta.uid, self.generation)

    # ------------------------------------------------------------------ xarray
    def add_xr_dataset(self, ds: Any, name: str, chunks: Optional[Any] = None, append_dim: Optional[str] = None) -> None:
        """Store an ``xarray.Dataset`` as the new dataset ``name`` (never flushes).

        Dask-backed variables are written one block at a time. ``chunks={var: [...]}``
        overrides the on-disk chunk shape. A rejected dataset leaves nothing behind.

        ``append_dim="time"``: extend the existing dataset ``name`` along that dimension
        (created as usual if it does not exist yet). Variables with the dimension are
        appended; the others must equal what is stored; dtypes and fill values must match;
        a monotonic stored coordinate must be continued; a refused append (``ValueError``
        naming the culprit) leaves the dataset as it was.
        """
        from .integrations._xarray import add_xr_dataset

        add_xr_dataset(self, ds, name, chunks, append_dim)

    def to_xarray(self, name: str, chunks: Any = "auto") -> Any:
        """The dataset ``name`` as an ``xarray.Dataset``; chunked arrays come back dask-backed
        (one task per on-disk chunk). ``chunks=None`` reads everything eagerly."""
        from .integrations._xarray import to_xarray

        return to_xarray(self, name, chunks)

    def to_xarray_many(self, names: Sequence[str], concat_dim: str = "dataset", parallel: bool = True,
                       chunks: Any = None, progress: ProgressArg = False, pad: bool = False) -> Any:
        """Many datasets of one schema as one ``xarray.Dataset`` with a leading ``concat_dim``.

        Each data variable is read with one stacked read (``(N, ...)``); coordinates and
        dataset attributes come from the first dataset; the ``concat_dim`` coordinate holds
        the dataset names. ``chunks="auto"`` returns dask-backed variables instead.
        ``parallel`` is accepted for compatibility: reads always use the shared pool.
        ``progress`` counts the variables read (eager reads only). ``pad=True`` stacks
        variables of different lengths (see :meth:`read_array_across_stacked`; eager only).
        """
        from .integrations._xarray import to_xarray_many

        return to_xarray_many(self, names, concat_dim, parallel, chunks, progress, pad)

    def ingest(self, files: Sequence[str], name_from: str = "stem", engine: Optional[str] = None,
               jobs: Optional[int] = None, progress: ProgressArg = False, *, open_kwargs: Optional[dict[str, Any]] = None,
               groups: str = "root", chunks: Optional[dict[str, Any]] = None, on_error: str = "raise",
               workers: Optional[int] = None, client: Any = None) -> list[str]:
        """Add every file matching ``files`` (paths or glob patterns, ``**`` recurses) as datasets.

        Files are opened with xarray (any format it reads; ``engine`` and ``open_kwargs``
        such as ``decode_times``, ``mask_and_scale``, ``drop_variables`` as in
        ``xarray.open_dataset``) on ``jobs`` threads (default ``min(8, cores)``; NetCDF/HDF5
        files one at a time, their C libraries not being thread-safe) and added in file order
        with :meth:`add_xr_dataset`, named after the file (``name_from="stem"`` drops the
        extension, ``"name"`` keeps it). ``groups="all"`` adds every group of a file as its
        own dataset, named ``{name}.{group}.{subgroup}`` (the root keeps ``{name}``);
        ``"root"`` (the default) adds the root group and refuses a file whose root is empty
        while it has groups. ``chunks={dim: size}`` (``-1``: the whole axis) fixes chunk
        sizes; other axes are split so that chunks hold about 1 MiB, aligned with the file's
        own chunks (see ``atlas.integrations._chunking``). Never flushes.

        ``on_error="raise"`` (the default): all or nothing; if a file cannot be opened or
        stored, the datasets this call added are removed again and ``IngestError`` (a
        ``ValueError``) is raised. ``"skip"``: a bad file adds nothing and the others go on;
        the result's ``refused`` lists ``(file, one-line reason)``. ``progress`` counts the
        files. Returns the names added (a list, with ``.refused``).

        ``workers=N`` (a local pool of N processes) or ``client=`` (a ``dask.distributed``
        ``Client``): worker processes open, encode and write the files (staged writes, see
        :meth:`stage`) and this call commits them all at once at the end (it flushes the
        store first); all or nothing as above; ``progress`` counts the files whose batch is done.
        Worker processes start the way ``multiprocessing`` spawns them (they import the main
        script): a script calling this needs ``if __name__ == "__main__":``.
        """
        if workers is not None or client is not None:
            from .integrations._distributed import ingest_parallel

            return ingest_parallel(self, files, name_from, engine, jobs, progress, workers=workers, client=client,
                                   open_kwargs=open_kwargs, groups=groups, chunks=chunks, on_error=on_error)
        from .integrations._ingest import ingest

        return ingest(self, files, name_from, engine, jobs, progress, open_kwargs, groups, chunks, on_error)

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

    def commit_staged(self, results: Sequence[StagedResult], message: Optional[str] = None) -> list[str]:
        """Publish staged results (from ``StagedWriter.finish()``) in one atomic commit.

        Flushes this handle's pending changes first. The cost is proportional to the
        metadata and chunk indexes of the results, not to their data. A dataset name found in
        two results or already in the store raises ``FileExistsError`` listing the names, and
        a missing staged file ``FileNotFoundError``; then nothing is committed. The new state
        is a version (see :meth:`history`) recorded with ``message``. Returns the names of the
        datasets added, in order.
        """
        from . import _staged

        if message is not None and not isinstance(message, str):
            raise TypeError(f"message must be a str, got {type(message).__name__}: {message!r}")
        names = _staged.commit(self._state, results, self._writer.fmt, message)
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
        return self._writer.fmt

    @property
    def meta_compression(self) -> str:
        """The metadata compression of this store: ``"none"``, ``"zstd"`` or ``"lz4"``."""
        return self._writer.comp

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
            for a in list(ds.arrays):
                seen.setdefault(a, None)
        return list(seen)

    def dataset_exists(self, name: str) -> bool:
        """Whether a dataset of that name exists."""
        return isinstance(name, str) and name in self._state.meta.datasets

    # ------------------------------------------------------------------ catalog
    def catalog(self, arrays: Optional[Sequence[str]] = None, attributes: Optional[Sequence[str]] = None) -> Any:
        """A ``pandas.DataFrame`` with one row per dataset, built from metadata alone (no chunk is read).

        The index holds the dataset names in store order. Columns: each dataset attribute
        key (``{var}.{attr}`` keys of stored xarray datasets included; typed, NA where a
        dataset lacks it), then for each array name ``{array}.min``, ``{array}.max``,
        ``{array}.null_count``, ``{array}.row_count`` and ``{array}.shape`` (a tuple), min
        and max in the array's kind (timestamps ``datetime64[ns]``, strings ``str``).
        ``arrays=`` / ``attributes=`` restrict the columns to those names (``ValueError``
        for a name no dataset has). Statistics are those of the last flush, as
        :meth:`DatasetView.array_stats`; attributes and array definitions include pending
        changes. The table is cached until the next flush or edit.
        """
        from ._catalog import catalog

        return catalog(self, arrays, attributes)

    def query(self, expr: str) -> list[str]:
        """Names of the datasets whose catalog row matches ``expr``, in store order.

        ``expr`` uses ``pandas.DataFrame.query`` syntax over the columns of :meth:`catalog`
        (dotted names in backticks), e.g. ``"platform == 'BO' and month >= 6 and
        `time.min` >= '2020-01-01'"``; timestamps compare with ISO strings. A comparison
        with a missing value never matches (``not`` and ``!=`` included); use
        ``col.isna()``. Bad expressions and unknown columns raise ``ValueError`` naming them.
        The result feeds :meth:`read_array_across_stacked` and :meth:`to_xarray_many`.
        """
        from ._catalog import query

        return query(self, expr)

    def _catalog_source(self, take: Any) -> Any:
        """Internal, the catalog's one view of the state: ``take(key, txn)`` under the store lock,
        ``key`` changing with every flush and every catalog-visible edit."""
        st = self._state
        with st.lock if self.read_only else st.write_lock:  # (a read-only state refuses its write lock)
            t = st.txn
            return take((t.meta.uid, t.base.generation, id(t), t.edits), t)

    # ------------------------------------------------------------------ bulk reads
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

    def read_arrays_across(self, arrays: Sequence[str], dataset_names: Sequence[str], start: Optional[Sequence[int]] = None,
                           shape: Optional[Sequence[int]] = None, stacked: bool = False) -> dict[str, Any]:
        """Several arrays from many datasets in one request: ``{array: result}``.

        With ``stacked=False`` each result is :meth:`read_array_across`'s list (None where a
        dataset lacks the array); with ``stacked=True`` it is
        :meth:`read_array_across_stacked`'s ``(N, *shape)`` array (same rules and errors).
        Every read sees the same state of the store and they run side by side on the pool:
        the loop ``{n: store.open_dataset(n).read_arrays(arrays) for n in names}`` as one call.
        """
        return _batch.across(self._state, arrays, dataset_names, start, shape, stacked)

    def array_stats_across(self, array: str, dataset_names: Sequence[str]) -> dict[str, Any]:
        """The statistics of ``array`` in many datasets as columns (NumPy masked arrays of length N).

        ``{"row_count", "null_count", "min", "max"}``, in the order of ``dataset_names``:
        what :meth:`DatasetView.array_stats` gives each dataset (as of the last flush), without
        a call per dataset. Entries are masked where a dataset lacks the array or it was
        never flushed (all four) or has no value (``min``/``max``). ``min``/``max`` have the
        array's dtype (``datetime64[ns]`` for timestamps, object for strings).
        """
        return _batch.stats_across(self._state.txn, array, dataset_names)

    def read_array_across(self, array: str, dataset_names: Sequence[str], start: Optional[Sequence[int]] = None,
                          shape: Optional[Sequence[int]] = None, progress: ProgressArg = False) -> list[Optional[np.ndarray]]:
        """Read the same box of ``array`` from each dataset: a list with None where it is missing.

        ``progress`` counts the datasets read.
        """
        check_progress(progress)
        if not progress:  # one request: its groups (one per dtype and box) overlap on the pool
            return _batch.across(self._state, [array], dataset_names, start, shape, False)[array]
        txn = self._state.txn
        metas = _batch.instances(txn, array, dataset_names)
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
                                  shape: Optional[Sequence[int]] = None, progress: ProgressArg = False,
                                  pad: bool = False) -> np.ndarray:
        """Read the same box of ``array`` from every dataset into one ``(N, *shape)`` array.

        Every dataset must define the array with one dtype (``TypeError`` otherwise) and the
        box must resolve to one shape in all of them (``ValueError``); a dataset lacking the
        array raises ``KeyError``. ``progress`` counts the datasets read.

        ``pad=True`` stacks arrays of different shapes (one rank): the box defaults to the
        largest size on each axis, and the cells beyond a dataset's shape read as the array's
        fill value (else NaN / NaT / "" / 0). A dataset's valid length is its
        ``array_meta(array)["shape"]``.
        """
        check_progress(progress)
        if not isinstance(dataset_names, str):
            dataset_names = list(dataset_names)  # a generator is read once
        txn = self._state.txn
        metas = _batch.instances(txn, array, dataset_names)
        if pad:
            from ._padded import read_padded_across

            return read_padded_across(self._state, txn, array, dataset_names, metas, start, shape, progress)
        s, c = _batch.stacked_box(array, dataset_names, metas, start, shape)
        with Progress(progress, len(metas), "read", "dataset") as bar:
            out = self._read_into(txn, array, metas, s, c, bar)  # type: ignore[arg-type]
        return to_user(metas[0], out)  # type: ignore[arg-type]
