"""The state of an open store: immutable snapshots, one transaction on top, and the locks.

- A :class:`Snapshot` is a committed state: its metadata (never changed once published)
  and the chunk indexes of its segments (loaded lazily, immutable).
- A :class:`Transaction` is the pending changes on top of one snapshot: a copy-on-write
  working copy of the metadata, the pending chunks, and which instances were written or
  deleted. Readers take ``state.txn`` once and see that snapshot plus those pending
  changes; a flush builds the next snapshot and publishes it, with a fresh transaction, by
  one assignment.
- :class:`StoreState` is the one internal interface to a handle's state (``Atlas._state``):
  every mutation runs under ``write_lock`` (mutations, flushes and compactions are
  serialised; no update is lost) and publishes what readers can see under ``lock``.
- An :class:`Epoch` holds back the deletion of files that a compaction retired until no
  read of an older state of the store is running in this process (any handle).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from . import _commit, _gc, _history, _meta, _read, _resize, _write
from ._frames import FrameReader
from ._meta import ArrayMeta, DatasetMeta, StoreMeta
from ._pending import Pending, PendingStore
from ._segments import ChunkIndex
from .storage import Storage

if TYPE_CHECKING:  # the catalog modules load on first use (``import atlas`` stays light)
    from . import _catfile
    from ._cattable import RawTable


def default_pending_budget() -> int:
    """Bytes of pending chunk data kept in memory before spilling (``ATLAS_PENDING_BUDGET``)."""
    env = os.environ.get("ATLAS_PENDING_BUDGET")
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            raise ValueError(f"ATLAS_PENDING_BUDGET must be a number of bytes, got {env!r}") from None
    return 8 * 1024 * 1024  # gridded ingest peaks ~31 MiB above its baseline (2x h5py; issue #14)


# ---------------------------------------------------------------------- epochs
class Epoch:
    """The span between two compactions of one store, in this process.

    Snapshots refer to the epoch they were made in (weakly); a running read holds it
    (strongly), and every older epoch holds the next one, so an epoch dies only when no read
    of it or of an older state runs. A compaction leaves its retired files in the epoch it
    ends; they are deleted when that epoch dies.
    """

    def __init__(self) -> None:
        self.newer: Epoch | None = None
        self.retired: list[tuple[Storage, list[str]]] = []
        self.errors: list[Exception] = []
        self.finalizer = weakref.finalize(self, _delete_retired, self.retired, self.errors)


def _delete_retired(retired: list[tuple[Storage, list[str]]], errors: list[Exception]) -> None:
    """Delete retired files; failures are kept (an orphan file costs space, never correctness:
    the next compaction lists and retires it again)."""
    for storage, paths in retired:
        for p in paths:
            try:
                storage.delete(p)
            except Exception as e:  # noqa: BLE001 - reported by compact() when it deletes at once
                errors.append(e.with_traceback(None))  # no frames (they would hold states alive)


_EPOCHS: dict[tuple[str, str, str], Epoch] = {}
HELD_MAX = 64 * 1024 * 1024  # fetched, undecoded bytes a many-part read keeps before decoding them
_EPOCHS_LOCK = threading.Lock()


def _epoch_key(storage: Storage, uid: str) -> tuple[str, str, str]:
    return (type(storage).__name__, storage.location, uid)


def current_epoch(storage: Storage, uid: str) -> Epoch:
    key = _epoch_key(storage, uid)
    with _EPOCHS_LOCK:
        ep = _EPOCHS.get(key)
        if ep is None:
            ep = _EPOCHS[key] = Epoch()
        return ep


def end_epoch(storage: Storage, uid: str, retired: list[str]) -> tuple[Epoch, Any, list[Exception]]:
    """Start a new epoch; ``retired`` files go once every read of the old one (or older) is done.

    Returns the new epoch, and the finalizer and error list of the old one: when no read holds
    the old epoch, its files are deleted as soon as this returns (``finalizer.alive`` is False).
    """
    key = _epoch_key(storage, uid)
    with _EPOCHS_LOCK:
        old = _EPOCHS.get(key) or Epoch()
        new = _EPOCHS[key] = Epoch()
    old.retired.append((storage, retired))
    old.newer = new
    return new, old.finalizer, old.errors


# ---------------------------------------------------------------------- snapshot
class Snapshot:
    """An immutable committed state: metadata plus the chunk indexes of its segments."""

    __slots__ = ("meta", "frames", "_indexes", "_lock", "_loading", "_epoch", "_catalog", "_cat_lock", "__weakref__")

    def __init__(self, meta: StoreMeta, frames: FrameReader, epoch: Epoch,
                 indexes: dict[str, ChunkIndex] | None = None, catalog: RawTable | None = None) -> None:
        self.meta = meta
        self.frames = frames
        self._indexes: dict[str, ChunkIndex] = indexes or {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one lock per array name being loaded
        self._epoch = weakref.ref(epoch)
        self._catalog = catalog
        self._cat_lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self.meta.generation

    def index(self, name: str) -> ChunkIndex:
        """The chunk index of array name ``name`` in this state (one range read, on first use)."""
        idx = self._indexes.get(name)
        if idx is None:
            with self._lock:  # held for a dict lookup only: several names load at once
                lock = self._loading.setdefault(name, threading.Lock())
            with lock:
                idx = self._indexes.get(name)
                if idx is None:
                    idx = self._indexes[name] = self.frames.load_index(name, self.meta.physical.get(name))
        return idx

    def catalog(self) -> RawTable:
        """The catalog rows of this state (its catalog file read, or built from the metadata, on first use)."""
        c = self._catalog
        if c is None:
            with self._cat_lock:
                c = self._catalog
                if c is None:
                    from . import _catfile

                    pin = self.pin()  # noqa: F841 - keeps the file on disk while it is read
                    try:
                        c = self._catalog = _catfile.load(self.frames.storage, self.meta)
                    finally:
                        del pin
        return c

    def pin(self) -> Epoch | None:
        """Hold this on to keep the files of this state on disk (None: a compaction already retired them)."""
        return self._epoch()

    def successor(self, meta: StoreMeta, new_indexes: dict[str, ChunkIndex], epoch: Epoch,
                  catalog: RawTable | None = None, same_datasets: bool = False) -> "Snapshot":
        """The next state: indexes already loaded carry over where their location is unchanged;
        ``catalog``: its catalog rows if known, or ``same_datasets``: those of this state."""
        keep = {n: i for n, i in self._indexes.items()
                if n not in new_indexes and meta.physical.get(n) == self.meta.physical.get(n)}
        keep.update(new_indexes)
        return Snapshot(meta, self.frames, epoch, keep, self._catalog if same_datasets else catalog)


# ---------------------------------------------------------------------- transaction
class Transaction:
    """Pending changes on top of one snapshot (what ``_read.View`` needs, plus the edit tables)."""

    def __init__(self, base: Snapshot, lock: Any) -> None:
        self.base = base
        self.frames = base.frames
        self.pending = PendingStore(default_pending_budget(), lock)
        self.dirty: dict[int, tuple[str, str]] = {}  # instances defined or written: aid -> (dataset, array)
        self.dead: set[int] = set()  # instances deleted
        self.touched: set[str] = set()  # datasets created or changed
        self.edits = 0  # changes a catalog shows (datasets, arrays, attributes; not data)
        self._owned: set[str] = set()  # datasets already copied into the working metadata
        #: chunk indexes this transaction changed without new data (re-keyed by a resize, see _resize)
        self.overlays: dict[str, ChunkIndex] = {}
        self._meta: StoreMeta | None = None  # the working copy, made at the first change

    @property
    def meta(self) -> StoreMeta:
        """The metadata as of now: the snapshot's, or the working copy once something changed."""
        m = self._meta
        return self.base.meta if m is None else m

    def index(self, name: str) -> ChunkIndex:
        idx = self.overlays.get(name)
        return self.base.index(name) if idx is None else idx

    @property
    def changed(self) -> bool:
        return self._meta is not None

    def working(self) -> StoreMeta:
        m = self._meta
        if m is None:
            m = self._meta = self.base.meta.copy()
        return m

    def edit_dataset(self, name: str) -> DatasetMeta:
        """Dataset ``name`` of the working metadata, ready to change.

        The first edit in a transaction copies it (a snapshot's datasets never change); later
        edits change that copy in place, which readers see as pending changes (they take
        ``list()`` of its tables, one atomic step, never iterate them live).
        """
        meta = self.working()
        ds = meta.datasets.get(name)
        if ds is None:
            raise KeyError(f"dataset {name!r} no longer exists (deleted)")
        if name not in self._owned:
            ds = ds.copy()
            meta.datasets[name] = ds
            self._owned.add(name)
            self.touched.add(name)
        return ds


class _NextCatalog:
    """Wraps a commit's metadata on its way to storage with its catalog file (none for a staged writer)."""

    def __init__(self, nc: "_catfile.NextCatalog | None") -> None:
        self.nc = nc

    def __call__(self, meta: StoreMeta) -> StoreMeta:
        return meta if self.nc is None else self.nc.attach(meta)

    @property
    def rows(self) -> tuple[RawTable | None, bool]:
        """``(catalog, same_datasets)`` for :meth:`Snapshot.successor`."""
        nc = self.nc
        return (None, False) if nc is None else (nc.raw, nc.same)


# ---------------------------------------------------------------------- the handle's state
class StoreState:
    """The state of one open handle, and the one internal interface to it.

    ``txn`` is read without a lock (one assignment publishes a new one); mutations hold
    ``write_lock`` throughout and change what readers see under ``lock``.
    """

    def __init__(self, storage: Storage, meta: StoreMeta,
                 commit: Callable[[StoreMeta, "_history.Note | None"], None], catalog_files: bool = True) -> None:
        self.storage = storage
        self.catalog_files = catalog_files  # commits write catalog files (not a staged writer's)
        self.frames = FrameReader(storage, meta.codec)
        self.lock = threading.RLock()
        self.write_lock = threading.RLock()
        self._commit = commit
        self.txn = Transaction(Snapshot(meta, self.frames, current_epoch(storage, meta.uid)), self.lock)

    # ---------------------------------------------------------------- reads
    @property
    def meta(self) -> StoreMeta:
        return self.txn.meta

    @property
    def generation(self) -> int:
        """Generation of the committed snapshot."""
        return self.txn.base.generation

    def dataset(self, name: str, txn: Transaction | None = None) -> DatasetMeta:
        ds = (txn or self.txn).meta.datasets.get(name) if isinstance(name, str) else None
        if ds is None:
            raise KeyError(f"dataset {name!r} no longer exists (deleted)")
        return ds

    def read(self, txn: Transaction, name: str, metas: Sequence[ArrayMeta], start: Sequence[int], count: Sequence[int],
             out: np.ndarray | None = None) -> np.ndarray:
        """A box of ``name`` from ``metas`` as ``txn`` sees them (its snapshot's files are kept meanwhile)."""
        pin = txn.base.pin()  # noqa: F841 - held for the duration of the read
        try:
            return _read.read(txn, name, metas, start, count, out)
        finally:
            del pin  # not kept alive by a traceback that outlives the read

    def read_many(self, txn: Transaction, reads: Iterable[tuple[str, Sequence[ArrayMeta], Sequence[int], Sequence[int]]]
                  ) -> list[np.ndarray]:
        """Several reads ``(name, metas, start, count)`` as ``txn`` sees them, as one request:
        planned one after the other, their decoding run side by side on the pool."""
        pin = txn.base.pin()  # noqa: F841 - held until every unit of work ran
        try:
            work = _read.Work()
            outs = []
            for name, metas, start, count in reads:
                outs.append(_read.read(txn, name, metas, start, count, None, work))
                if work.held > HELD_MAX:  # fetched but not decoded yet: decode before fetching more
                    work.run()
            work.run()
            return outs
        finally:
            del pin

    def pending_count(self) -> tuple[int, int]:
        """``(datasets, array instances)`` with changes not flushed yet."""
        t = self.txn
        return len(t.touched), len(t.dirty)

    # ---------------------------------------------------------------- mutations
    def create_dataset(self, name: str) -> None:
        with self.write_lock:
            meta = self.txn.working()
            if name in meta.datasets:
                raise FileExistsError(f"dataset {name!r} already exists")
            meta.datasets[name] = DatasetMeta(name)
            self.txn.touched.add(name)
            self.txn._owned.add(name)
            self.txn.edits += 1

    def delete_dataset(self, name: str) -> None:
        with self.write_lock:
            t = self.txn
            if not isinstance(name, str) or name not in t.meta.datasets:
                raise KeyError(f"no dataset named {name!r}")
            ds = t.working().datasets.pop(name)
            t._owned.discard(name)
            for a, m in ds.arrays.items():
                self._forget(t, a, m.aid)
            t.touched.add(name)
            t.edits += 1

    def _forget(self, t: Transaction, array: str, aid: int) -> None:
        t.dirty.pop(aid, None)
        t.dead.add(aid)
        t.pending.drop(array, aid)

    def define_arrays(self, ds_name: str, arrays: Sequence[tuple[str, Callable[[int], ArrayMeta]]]) -> None:
        """Add arrays to a dataset, all or none; ``make(aid)`` builds each schema with a new instance id."""
        with self.write_lock:
            t = self.txn
            have = self.dataset(ds_name, t).arrays
            if len(arrays) == 1:
                clash = arrays[0][0] in have
            else:
                names = [n for n, _ in arrays]
                clash = len(set(names)) != len(names) or not have.keys().isdisjoint(names)
            if clash:
                names = [n for n, _ in arrays]
                for i, n in enumerate(names):  # name the first one defined twice
                    if n in have or n in names[:i]:
                        raise FileExistsError(f"array {n!r} is already defined in dataset {ds_name!r} (delete_array first)")
            table = t.edit_dataset(ds_name).arrays
            meta = t.working()
            dirty = t.dirty
            for n, make in arrays:
                aid = meta.next_id  # (meta.new_id(), inline: thousands of definitions per ingest)
                meta.next_id = aid + 1
                table[n] = make(aid)
                dirty[aid] = (ds_name, n)
            t.edits += 1

    def delete_array(self, ds_name: str, name: str) -> None:
        with self.write_lock:
            t = self.txn
            m = self.dataset(ds_name, t).arrays.get(name)
            if m is None:
                raise KeyError(f"array {name!r} is not defined in dataset {ds_name!r}")
            del t.edit_dataset(ds_name).arrays[name]
            self._forget(t, name, m.aid)
            t.edits += 1

    def set_attribute(self, ds_name: str, key: str, value: tuple[str, Any]) -> None:
        with self.write_lock:
            self.txn.edit_dataset(ds_name).attrs[key] = value
            self.txn.edits += 1

    def write(self, ds_name: str, writes: Sequence[tuple[str, ArrayMeta, Sequence[int], np.ndarray]]) -> None:
        """Write checked storage-typed data into instances of a dataset: ``(array name, instance,
        start, data)`` each.

        The caller holds ``write_lock`` since it looked the instances up and checked the boxes,
        so nothing changed in between.
        """
        with self.write_lock:
            t = self.txn
            dirty = t.dirty
            # whole small one-chunk arrays: their entries go in together
            small: list[tuple[str, tuple[int, int], Pending]] = []
            for name, m, start, data in writes:
                p = _write.small_whole(m, data)
                if p is None:
                    if small:  # (in order: an array may come twice)
                        t.pending.put_each(small)
                        small = []
                    _write.write(t, name, m, start, data)
                else:
                    small.append((name, (m.aid, 0), p))
                if m.aid not in dirty:
                    t.working()
                    dirty[m.aid] = (ds_name, name)
                    t.touched.add(ds_name)
            if small:
                t.pending.put_each(small)

    def resize(self, ds_name: str, name: str, plan: Callable[[ArrayMeta], tuple[Sequence[int], Any]],
               then: Callable[[ArrayMeta, Any], None] | None = None) -> None:
        """Resize array ``name`` of a dataset: ``plan(meta) -> (new shape, extra)`` validates first;
        ``then(new meta, extra)`` follows under the same lock (undone with the resize if it fails)."""
        with self.write_lock:
            t = self.txn
            m = self.dataset(ds_name, t).arrays.get(name)
            if m is None:
                raise KeyError(f"array {name!r} is not defined in dataset {ds_name!r}")
            shape, extra = plan(m)
            _resize.resize(t, ds_name, name, m, tuple(shape), None if then is None else (lambda nm: then(nm, extra)))
            t.edits += 1

    # ---------------------------------------------------------------- commits
    def flush(self, message: str | None = None) -> bool:
        """Publish the transaction as the next snapshot (a version, with ``message``); False when there was nothing to flush."""
        with self.write_lock:
            t = self.txn
            if not t.changed and not t.pending:
                return False
            with _gc.paused():  # (not for a flush with nothing to do: closing a read-only handle)
                note = _history.Note(message, t.base.meta, frozenset(t.touched))
                cat = self._next_catalog(t.base, note.touched, len(t.meta.datasets))
                meta, new_idx = _commit.flush(t, t.meta, t.dirty, t.dead, lambda m: self._commit(cat(m), note),
                                              reindexed=t.overlays)
                self._publish(t.base.successor(meta, new_idx, current_epoch(self.storage, meta.uid), *cat.rows))
                return True

    def _next_catalog(self, base: Snapshot, touched: frozenset[str], n_datasets: int | None = None) -> "_NextCatalog":
        """The catalog step of a commit (``n_datasets``: the new state's count, when known).

        A small store without a catalog file gets none: then the catalog modules are not even
        imported (a process's first flush stays as fast as before they existed).
        """
        if n_datasets is not None and base.meta.catalog is None and n_datasets < _meta.CATALOG_MIN_DATASETS:
            return _NextCatalog(None)
        from . import _catfile

        return _NextCatalog(_catfile.NextCatalog(self.storage, base.meta, base.catalog, touched)
                            if self.catalog_files else None)

    def commit_built(self, build: Callable[[Snapshot, Callable[[StoreMeta], None]],
                                           tuple[StoreMeta, dict[str, ChunkIndex]]],
                     touched: frozenset[str], message: str | None = None) -> StoreMeta:
        """Flush, then publish the state ``build(snapshot, commit)`` makes from the committed one
        (a version, with ``message``; ``touched``: the datasets it adds or changes).

        ``build`` writes its files, calls ``commit(meta)`` last and returns the new metadata
        and the indexes it changed (staged commits); if it raises, nothing changed.
        """
        with self.write_lock:
            self.flush()
            base = self.txn.base
            note = _history.Note(message, base.meta, touched)
            cat = self._next_catalog(base, touched)
            meta, new_idx = build(base, lambda m: self._commit(cat(m), note))
            self._publish(base.successor(meta, new_idx, current_epoch(self.storage, meta.uid), *cat.rows))
            return meta

    def compact(self, tick: Callable[[], None]) -> int:
        """Flush, then rewrite every array name's live chunks; returns the bytes retired."""
        with self.write_lock:
            self.flush()
            base = self.txn.base
            keep = _history.Retention(self.storage, self.frames, base.meta)  # what older retained versions need
            note = _history.Note("compact", base.meta, frozenset(), replaces=True)
            meta, new_idx, retired = _commit.compact(self.txn, base.meta, lambda m: self._commit(m, note), tick)
            retired = keep.retire(retired, meta)
            freed = self.storage.size_of(retired)
            old, errors = self._publish_compacted(meta, new_idx, retired, base._catalog)
            if not old.alive and errors:  # deleted at once (no read was running) and a delete failed
                raise errors[0]
            return freed

    def _publish_compacted(self, meta: StoreMeta, new_idx: dict[str, ChunkIndex],
                           retired: list[str], catalog: RawTable | None) -> tuple[Any, list[Exception]]:
        # a function of its own: no frame that an exception may keep holds the new epoch
        epoch, old, errors = end_epoch(self.storage, meta.uid, retired)
        self._publish(Snapshot(meta, self.frames, epoch, new_idx, catalog))  # compaction keeps the datasets
        return old, errors

    def verify(self) -> list[str]:
        t = self.txn
        pin = t.base.pin()  # noqa: F841
        try:
            from . import _catfile

            return _commit.verify(self.frames, t.base.meta) + _catfile.verify(self.storage, t.base.meta)
        finally:
            del pin

    def republish(self, meta: StoreMeta) -> None:
        """Publish ``meta``, already committed, as the current snapshot's metadata: the same data
        and generation with other bookkeeping (expiry shortens the version log)."""
        with self.write_lock:
            base = self.txn.base
            self._publish(base.successor(meta, {}, current_epoch(self.storage, meta.uid), same_datasets=True))

    def _publish(self, snap: Snapshot) -> None:
        with self.lock:
            self.txn = Transaction(snap, self.lock)
