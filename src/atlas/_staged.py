"""Staged writes: many processes write segments, one commit publishes them all.

The coordinator takes a :class:`Stage` from a writable store (:meth:`atlas.Atlas.stage`)
and sends it to workers (it pickles: it is the store's location and a token). A worker calls
:meth:`Stage.writer` for a :class:`StagedWriter`, creates datasets with it exactly as with a
store (``create_dataset``, ``define_array``, ``write_array``, ``set_attribute``,
``add_xr_dataset``), and :meth:`StagedWriter.finish` writes its segment files and returns a
small :class:`StagedResult` (its datasets' metadata and chunk indexes). The worker never
writes the store's metadata. :meth:`atlas.Atlas.commit_staged` then publishes any number of
results in one atomic metadata commit.

Layout and rules:

- A writer keeps its segments in ``<array folder>/stage-<stage token>/<writer token>/``, so
  files of different writers never collide and those of one stage can be listed. New array
  names get the folder every process derives from the name (``_meta.array_dir``).
- Instance ids: a writer numbers its instances from 1; the commit shifts each result's ids
  above the store's ``next_id`` (results in the order given), in the metadata and in the
  merged chunk index it writes (one index file per array name; no segment is rewritten).
  So ids are unique store-wide with no reservation, and a commit's cost is proportional
  to the metadata and chunk indexes, not to the data.
- A dataset name staged twice, or already in the store, fails the commit (``FileExistsError``
  listing the names) and nothing is committed; so does a staged segment that is missing.
- A writer that dies (or whose result is never committed) leaves the store unchanged; its
  files are orphans. :meth:`Stage.discard` deletes the files of a stage that the committed
  state does not use; :meth:`atlas.Atlas.compact` also reclaims them. Neither may run while
  writers of that stage are still writing or their results are not committed yet: a
  compaction deletes every file the committed state does not use (a later commit of such a
  result then fails, naming the missing segment, and commits nothing).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, cast

import numpy as np

from . import _history, _metaio, codecs
from ._frames import FrameReader
from ._meta import META_PATH, IndexLocation, Physical, StoreMeta, array_dir, decode_blob, encode_blob, validate_name
from ._segments import ChunkIndex
from ._state import Snapshot, StoreState
from .dataset import DatasetView
from .errors import CorruptStoreError
from .storage import Storage

if TYPE_CHECKING:
    from .store import Atlas

_MAX_LISTED = 10


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(map(repr, names[:_MAX_LISTED])) + more


def _stage_dir(folder: str, token: str) -> str:
    return f"{folder}/stage-{token}"


# ---------------------------------------------------------------------- the handle workers get
@dataclasses.dataclass(frozen=True)
class Stage:
    """A picklable handle for staged writes into one store (from :meth:`atlas.Atlas.stage`).

    Send it to worker processes (a process pool, dask, another machine that sees the same
    directory or object store); each calls :meth:`writer`. Results go back to the
    coordinator, which commits them with :meth:`atlas.Atlas.commit_staged`.
    """

    storage: Storage
    uid: str
    codec: str
    #: folders of the array names the store had when the stage began
    folders: dict[str, str]
    token: str

    def writer(self) -> "StagedWriter":
        """A new writer (one per task or worker; its files never collide with another's)."""
        return StagedWriter(self)

    def discard(self) -> int:
        """Delete the files of this stage that the store's committed state does not use.

        For the orphans of writers that died or whose results were not (or will not be)
        committed. Call it only once no writer of this stage is still writing. Lists every
        file of the store's ``arrays/`` folder once. Returns the number of files deleted.
        """
        return _sweep(self, None)

    def __repr__(self) -> str:
        """The store's location and the stage token."""
        return f"Stage({self.storage.location!r}, token={self.token!r})"


def new_stage(storage: Storage, meta: StoreMeta) -> Stage:
    """A stage of the store whose committed metadata is ``meta``."""
    if not storage.writable:
        raise PermissionError(f"{storage.location} is read-only; cannot stage writes into it")
    return Stage(storage, meta.uid, meta.codec, {n: p.dir for n, p in meta.physical.items()}, uuid.uuid4().hex[:12])


# ---------------------------------------------------------------------- the worker side
def _keep(meta: StoreMeta, note: Any = None) -> None:
    """A writer's "commit": its snapshot is kept in memory; no metadata file is written."""
class StagedWriter:
    """Creates datasets in a worker process; :meth:`finish` returns what the coordinator commits.

    It behaves like a new, empty store: ``create_dataset`` returns a
    :class:`~atlas.DatasetView` with every write and read method; reads see what this
    writer wrote. It cannot see or change the store's existing datasets. :meth:`flush`
    writes segment files (bounding memory); nothing reaches the store's metadata.
    """

    def __init__(self, stage: Stage) -> None:
        """Internal: use :meth:`Stage.writer`."""
        self._stage = stage
        self._token = uuid.uuid4().hex[:12]
        meta = StoreMeta(codec=stage.codec, uid=stage.uid,
                         physical={n: Physical(self._folder(d)) for n, d in stage.folders.items()})
        self._state = StoreState(stage.storage, meta, _keep, catalog_files=False)

    def _folder(self, store_folder: str) -> str:
        return f"{_stage_dir(store_folder, self._stage.token)}/{self._token}"

    # ---------------------------------------------------------------- datasets (as on a store)
    def create_dataset(self, name: str) -> DatasetView:
        """A new, empty dataset (``FileExistsError`` if this writer already made one of that name)."""
        validate_name(name, "dataset")
        self._state.create_dataset(name)
        return DatasetView(cast("Atlas", self), name)

    def open_dataset(self, name: str) -> DatasetView:
        """A dataset this writer created (``KeyError`` otherwise)."""
        if not self.dataset_exists(name):
            raise KeyError(f"no dataset named {name!r} in this staged writer")
        return DatasetView(cast("Atlas", self), name)

    def delete_dataset(self, name: str) -> None:
        """Drop a dataset this writer created."""
        self._state.delete_dataset(name)

    def dataset_exists(self, name: str) -> bool:
        """Whether this writer created a dataset of that name."""
        return isinstance(name, str) and name in self._state.meta.datasets

    def list_datasets(self) -> list[str]:
        """The datasets of this writer, in creation order."""
        return list(self._state.meta.datasets)

    def add_xr_dataset(self, ds: Any, name: str, chunks: Optional[Any] = None) -> None:
        """As :meth:`atlas.Atlas.add_xr_dataset`, into this writer."""
        from .integrations._xarray import add_xr_dataset

        add_xr_dataset(cast("Atlas", self), ds, name, chunks)

    # ---------------------------------------------------------------- files
    def flush(self) -> None:
        """Write the pending chunks as new segment files of this writer (never the store's metadata)."""
        st = self._state
        with st.write_lock:
            t = st.txn
            new = [n for n in t.pending.names() if n not in t.meta.physical]
            if new:
                phys = t.working().physical
                for n in new:
                    phys[n] = Physical(self._folder(array_dir(n)))
            st.flush()

    def finish(self) -> "StagedResult":
        """Flush, and return the result to commit (covers everything this writer created)."""
        self.flush()
        snap = self._state.txn.base
        meta = snap.meta
        indexes = {}
        for n, p in meta.physical.items():
            if p.index is not None:
                indexes[n] = snap.index(n).encode(meta.codec)
        return StagedResult(self._stage.uid, self._stage.token, self._token, meta.to_dict("msgpack"), indexes)

    def __repr__(self) -> str:
        """The stage and how many datasets this writer holds."""
        return f"StagedWriter({self._stage!r}, writer={self._token!r}, datasets={len(self._state.meta.datasets)})"


@dataclasses.dataclass(frozen=True)
class StagedResult:
    """What a :class:`StagedWriter` made: its metadata and chunk indexes (no data; picklable)."""

    uid: str
    stage: str
    writer: str
    #: the writer's metadata in the store's own form (``StoreMeta.to_dict``)
    meta: dict[str, Any]
    #: ``{array name: (encoded chunk index, its decoded size)}``
    indexes: dict[str, tuple[bytes, int]]

    @property
    def datasets(self) -> list[str]:
        """The names of the datasets in this result."""
        return [name for name, _ in self.meta["datasets"]]

    def __repr__(self) -> str:
        """Stage, writer and the number of datasets."""
        return f"StagedResult(stage={self.stage!r}, writer={self.writer!r}, datasets={len(self.meta['datasets'])})"


# ---------------------------------------------------------------------- the commit
def commit(state: StoreState, results: Iterable[StagedResult], meta_format: str, message: Optional[str] = None) -> list[str]:
    """Publish ``results`` in one commit on ``state`` (after flushing it; its metadata file is in
    ``meta_format``), a version recorded with ``message``; returns the dataset names."""
    results = list(results)
    for r in results:
        if not isinstance(r, StagedResult):
            raise TypeError(f"commit_staged needs StagedResult objects (from StagedWriter.finish()), got {type(r).__name__}")
    if not results:
        return []

    def build(base: Snapshot, publish: Callable[[StoreMeta], None]) -> tuple[StoreMeta, dict[str, ChunkIndex]]:
        meta, idx = _build(state.storage, base, results, meta_format)
        publish(meta)
        return meta, idx

    names = [n for r in results for n in r.datasets]
    state.commit_built(build, frozenset(names), message)
    return names


def _build(storage: Storage, base: Snapshot, results: list[StagedResult],
           meta_format: str) -> tuple[StoreMeta, dict[str, ChunkIndex]]:
    """The next metadata and merged indexes (their index files written and made durable)."""
    old = base.meta
    metas = []
    for r in results:
        where = f"staged result of writer {r.writer!r} (stage {r.stage!r})"
        if r.uid != old.uid:
            raise ValueError(f"{where} belongs to another store than {storage.location!r}")
        m = StoreMeta.from_dict(r.meta, where)
        if m.codec != old.codec:
            raise ValueError(f"{where} was written with codec {m.codec!r}, the store uses {old.codec!r}")
        metas.append(m)
    seen: set[str] = set()
    clash: list[str] = []
    for m in metas:
        for n in m.datasets:
            if n in seen or n in old.datasets:
                clash.append(n)
            seen.add(n)
    if clash:
        raise FileExistsError(f"dataset name(s) {_listed(sorted(set(clash)))} already exist in the store or come "
                              "from more than one staged result; nothing was committed")
    new = old.copy()
    new.generation = gen = old.generation + 1
    parts: dict[str, list[tuple[ChunkIndex, int]]] = {}
    next_id = old.next_id
    for r, m in zip(results, metas):
        shift = next_id - 1
        next_id += m.next_id - 1
        live = _add_datasets(new, r, m, shift, meta_format)
        for name, (data, rawlen) in r.indexes.items():
            folder = new.physical_for(name).dir
            mine = m.physical.get(name)
            want = f"{_stage_dir(folder, r.stage)}/{r.writer}"
            if mine is None or mine.dir != want:
                raise ValueError(f"staged result of writer {r.writer!r}: array {name!r} was written to "
                                 f"{mine.dir if mine else None!r} but the store keeps it in {folder!r}; nothing was committed")
            idx = ChunkIndex.decode(data, old.codec, rawlen, f"staged index of array {name!r} (writer {r.writer!r})", want)
            keep = np.isin(idx.chunks["aid"], np.asarray(live.get(name, []), np.int64))
            if not keep.all():  # rows of instances the writer deleted again
                idx = ChunkIndex(idx.segments, idx.frames, {k: v[keep] for k, v in idx.chunks.items()})
            parts.setdefault(name, []).append((idx, shift))
    new.next_id = next_id
    _check_files(storage, new, results, parts)
    token = uuid.uuid4().hex[:8]
    new_idx: dict[str, ChunkIndex] = {}
    for name, ps in parts.items():
        folder = new.physical[name].dir
        path = f"{folder}/i{gen:08d}-{token}.idx"
        merged = base.index(name).appended(ps)
        # the index file is a segment of its own index (without frames): whatever keeps an
        # index's segments (compaction, retained versions) keeps it too
        merged = ChunkIndex(merged.segments + [path], merged.frames, merged.chunks)
        footer, rawlen, fcodec = merged.encode_footer(old.codec)
        storage.write(path, footer)
        new.physical[name] = Physical(folder, IndexLocation(path, 0, len(footer), rawlen, codecs.checksum(footer), fcodec))
        new_idx[name] = merged
    return new, new_idx  # the commit makes these files durable with the rest (one barrier)


def _add_datasets(new: StoreMeta, r: StagedResult, m: StoreMeta, shift: int, fmt: str) -> dict[str, list[int]]:
    """Put the datasets of result ``r`` (decoded metadata ``m``) into ``new``, their instance ids
    moved up by ``shift``; returns the writer's own ids of each array name.

    Datasets stay in the metadata file's form (a row ``[aid, schema number, stats]`` per
    array, patched): no Python object per array, so the commit costs microseconds a dataset.
    They are decoded and checked like every stored dataset when first used.
    """
    snos = [new.schema_number(a) for a in m.datasets.schemas]
    live: dict[str, list[int]] = {}
    for name, blob in m.datasets.raw_items():
        try:
            attrs, rows = obj = decode_blob(blob)
            for a, row in rows.items():
                aid, sno = row[0], row[1]
                if type(aid) is not int or type(sno) is not int or not 0 < aid < m.next_id or not 0 <= sno < len(snos):
                    raise ValueError(f"array {a!r} has a bad entry {row!r}")
                row[0], row[1] = aid + shift, snos[sno]
                live.setdefault(a, []).append(aid)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            raise CorruptStoreError(f"staged result of writer {r.writer!r}: dataset {name!r} is malformed: {e}; "
                                    "nothing was committed") from e
        new.datasets.set_raw(name, encode_blob(obj, fmt))
    return live


def _check_files(storage: Storage, new: StoreMeta, results: list[StagedResult],
                 parts: dict[str, list[tuple[ChunkIndex, int]]]) -> None:
    """Every staged segment exists (one listing per array name and stage): a compaction that ran
    while the writers wrote deletes them, and a commit must never point at missing files."""
    stages = {r.stage for r in results}
    for name, ps in parts.items():
        folder = new.physical[name].dir
        present: set[str] = set()
        for s in stages:
            present.update(storage.list(_stage_dir(folder, s)))
        missing = [p for idx, _ in ps for p in idx.segments if p not in present]
        if missing:
            raise FileNotFoundError(f"staged segment(s) {_listed(missing)} of array {name!r} are missing from "
                                    f"{storage.location!r} (was the store compacted or the stage discarded while "
                                    "writers were writing?); nothing was committed")


# ---------------------------------------------------------------------- clean-up
def committed(storage: Storage) -> StoreMeta:
    """The store's committed metadata as it is on storage now."""
    where = f"{storage.location}/{META_PATH}"
    obj, _, _ = _metaio.decode(storage.read(META_PATH), where)
    return StoreMeta.from_dict(obj, where)


def _sweep(stage: Stage, folders: Optional[Sequence[str]]) -> int:
    """Delete files of ``stage`` that the committed state does not use (under ``folders``, or anywhere)."""
    storage = stage.storage
    mark = f"/stage-{stage.token}/"
    if folders is None:
        files = [p for p in storage.list("arrays") if mark in p]
    else:
        files = [p for f in folders for p in storage.list(_stage_dir(f, stage.token))]
    if not files:
        return 0
    meta = committed(storage)
    fr = FrameReader(storage, meta.codec)
    used: set[str] = set()
    for name, phys in meta.physical.items():
        if phys.index is not None and any(p.startswith(_stage_dir(phys.dir, stage.token) + "/") for p in files):
            used.update(fr.load_index(name, phys).segments)
    unused = [p for p in files if p not in used]
    if unused:  # files of a committed stage that a compaction rewrote may still serve older versions
        needed = _history.Retention(storage, fr, meta).needed
        unused = [p for p in unused if p not in needed]
    gone = unused
    for p in gone:
        storage.delete(p)
    return len(gone)


def sweep_after_commit(stage: Stage, results: Sequence[StagedResult]) -> int:
    """After a commit: delete the stage's orphans in the folders of the array names committed
    (files of retried tasks); cheaper than :meth:`Stage.discard` (no full listing)."""
    folders = set()
    for r in results:
        for name in r.indexes:
            folders.add(stage.folders.get(name) or array_dir(name))
    return _sweep(stage, sorted(folders)) if folders else 0
