"""Versions on storage: the version log, version files, tags, expiry and what compaction must keep.

Every commit of generation ``g`` is a version:

- ``versions/<g>-<token>.meta`` holds the same bytes as ``atlas.meta`` of that commit. It is
  written (and made durable) *before* ``atlas.meta`` is replaced, so a version that became
  current always has its file; the token keeps two writers racing for the same ``g`` (one of
  them fails its conditional commit) from overwriting each other's file. ``atlas.meta`` stays
  the current state, so stores written before versions existed keep opening as they were.
- ``atlas.meta`` carries the *version log* (``StoreMeta.history``): one record per retained
  version, oldest first: ``v`` generation, ``t`` UTC time, ``m`` message, ``a``/``c``/``d``
  datasets added/changed/deleted, ``k`` token, and ``f``: the chunk-index locations of the
  array names whose index that commit changed (the oldest record holds every name). Folding
  an expired record's ``f`` into the next retained one keeps that true, so the index locations
  of every retained version are known without reading any of its files.
- ``catalog/<g>-<token>.cat`` is the catalog file of a commit that changed datasets (see
  ``_catfile``); a version's record names it (``cat``), so compaction keeps it as long as
  a retained version (or a tag) refers to it and reclaims the others, orphans included.
- ``tags/<name>.tag`` names a version. A tag is created exclusively (``Storage.create``:
  a hard link locally, a conditional PUT on object stores), so two writers cannot silently
  overwrite each other's tag; tags are never rewritten, only deleted.

Expiry removes records from the log (one metadata commit, same generation) and deletes the
expired version files: its cost is the expired versions, not the store. Compaction then keeps
every segment a retained version's chunk indexes list (one index footer read per array name
and per chain of segments, see :class:`Retention`) and deletes the rest.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, NamedTuple, Optional

from ._frames import FrameReader
from ._meta import CATALOG_DIR, META_PATH, IndexLocation, Physical, StoreMeta, validate_name
from . import _metaio
from .errors import VersionNotFoundError
from .storage import Storage

VERSIONS_DIR = "versions"
TAGS_DIR = "tags"
TAG_SUFFIX = ".tag"


class Note(NamedTuple):
    """What a commit records besides its metadata: its message, the state it replaces, the datasets it touched."""

    message: Optional[str]
    base: Optional[StoreMeta]
    touched: frozenset[str]
    #: a compaction: the same state as ``base``, which it replaces in the log (opening ``base``'s
    #: number opens it), so the segments only ``base`` needed can be reclaimed
    replaces: bool = False


def version_path(v: int, token: str) -> str:
    return f"{VERSIONS_DIR}/{v:012d}-{token}.meta"


def tag_path(name: str) -> str:
    return f"{TAGS_DIR}/{name}{TAG_SUFFIX}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _loc(p: Physical) -> Optional[list[Any]]:
    return p.index.to_list() if p.index else None


# ---------------------------------------------------------------------- commits
def commit(storage: Storage, meta: StoreMeta, note: Optional[Note], encode: Callable[[StoreMeta], bytes]) -> None:
    """Publish ``meta`` (not yet visible to anyone) as the next version: version file, then ``atlas.meta``.

    Without a ``note`` (``Atlas.create``: an empty store) no version is recorded, so creating
    a store stays one atomic write; the history starts with the first flush.

    Every file written before this call (the new segments of a flush or compaction, and the
    version file) is made durable by one ``barrier`` before ``atlas.meta`` is replaced: one
    round of fsyncs per commit.
    """
    if note is None:
        storage.barrier()
        storage.commit(META_PATH, encode(meta))
        return
    base = note.base
    if not meta.history or base is None:
        f = {n: _loc(p) for n, p in meta.physical.items()}  # the oldest record of a log names every array
    else:
        f = {n: _loc(p) for n, p in meta.physical.items() if base.physical.get(n) != p}
    a = c = d = 0
    if base is not None:
        for n in note.touched:
            was, now = n in base.datasets, n in meta.datasets
            a += now and not was
            d += was and not now
            c += was and now
    token = uuid.uuid4().hex[:12]
    rec: dict[str, Any] = {"v": meta.generation, "t": _now().isoformat(timespec="milliseconds"),
                           "m": note.message, "a": a, "c": c, "d": d, "k": token, "f": f}
    if meta.catalog is not None:
        rec["cat"] = meta.catalog.path  # its catalog file: kept by compaction while the version is retained
    log = meta.history
    if note.replaces and base is not None and log and log[-1]["v"] == base.generation:
        old = log[-1]
        rec["f"] = {**old["f"], **f}
        rec["s"] = [old["v"], *old.get("s", [])]
        log = log[:-1]
    meta.history = log + (rec,)
    data = encode(meta)
    storage.write(version_path(meta.generation, token), data)
    storage.barrier()
    storage.commit(META_PATH, data)


def summaries(meta: StoreMeta) -> list[dict[str, Any]]:
    """The public form of the version log (``Atlas.history()``), oldest first."""
    return [{"version": r["v"], "time": datetime.fromisoformat(r["t"]), "message": r.get("m"),
             "added": r["a"], "changed": r["c"], "deleted": r["d"], "same_as": list(r.get("s", []))}
            for r in meta.history]


def numbers(r: dict[str, Any]) -> list[int]:
    """The version numbers a record answers to: its own, and those of the states a compaction replaced."""
    return [r["v"], *r.get("s", [])]


def _describe(meta: StoreMeta) -> str:
    vs = [r["v"] for r in meta.history]
    if not vs:
        return f"no version is recorded yet (the current one, {meta.generation}, predates version history)"
    shown = ", ".join(map(str, vs[:8])) + (f", ... {vs[-1]}" if len(vs) > 8 else "")
    return f"the retained versions are {shown} (the current one is {meta.generation})"


def missing(location: str, meta: StoreMeta, v: Any) -> VersionNotFoundError:
    """The error for a version that is not retained: never existed, or expired."""
    if type(v) is int and 0 <= v <= meta.generation:
        why = "was expired (or written before version history was kept)"
    else:
        why = "does not exist"
    return VersionNotFoundError(f"version {v!r} of the store at {location!r} {why}; {_describe(meta)}")


def find(meta: StoreMeta, v: int) -> Optional[dict[str, Any]]:
    """The log record of version ``v`` (its own or one that replaced it), or None."""
    for r in reversed(meta.history):
        if r["v"] == v or v in r.get("s", ()):
            return r
    return None


def load_version(storage: Storage, current: StoreMeta, v: int, token: str) -> tuple[StoreMeta, str, str]:
    """The metadata of version ``v`` from its file; ``(meta, format, compression)``."""
    path = version_path(v, token)
    where = f"{storage.location}/{path}"
    try:
        data = storage.peek(path)
    except FileNotFoundError:
        raise VersionNotFoundError(f"version {v} of the store at {storage.location!r} was expired "
                                   f"(its file {path} is gone); {_describe(current)}") from None
    obj, fmt, comp = _metaio.decode(data, where)
    meta = StoreMeta.from_dict(obj, where)
    if meta.generation != v or meta.uid != current.uid:
        from .errors import CorruptStoreError

        raise CorruptStoreError(f"{where}: holds generation {meta.generation} of store {meta.uid!r}, "
                                f"not version {v} of {current.uid!r}")
    return meta, fmt, comp


# ---------------------------------------------------------------------- tags
def read_tags(storage: Storage) -> dict[str, dict[str, Any]]:
    """``{tag name: {"version", "at", "token", "time"}}`` of every tag (one read per tag); ``at`` is the
    generation whose file holds the state (``version`` itself, or the compaction that replaced it)."""
    out: dict[str, dict[str, Any]] = {}
    for p in storage.list(TAGS_DIR):
        name = p[len(TAGS_DIR) + 1:]
        if "/" in name or not name.endswith(TAG_SUFFIX):
            continue  # e.g. the temporary file of a create that was killed
        name = name[:-len(TAG_SUFFIX)]
        try:
            t = json.loads(bytes(storage.peek(p)))
        except FileNotFoundError:
            continue  # deleted meanwhile
        except ValueError as e:
            from .errors import CorruptStoreError

            raise CorruptStoreError(f"{storage.location}/{p}: tag file cannot be decoded: {e}") from None
        out[name] = t
    return dict(sorted(out.items()))


def read_tag(storage: Storage, name: str) -> dict[str, Any]:
    validate_name(name, "tag")
    try:
        return json.loads(bytes(storage.peek(tag_path(name))))
    except FileNotFoundError:
        raise VersionNotFoundError(f"no tag {name!r} in the store at {storage.location!r}") from None


def create_tag(storage: Storage, meta: StoreMeta, name: str, v: int) -> None:
    """Tag version ``v`` (retained in ``meta``'s log) as ``name``; never moves an existing tag."""
    validate_name(name, "tag")
    rec = find(meta, v)
    if rec is None:
        raise missing(storage.location, meta, v)
    body = {"version": v, "at": rec["v"], "token": rec["k"], "time": _now().isoformat(timespec="milliseconds"),
            "nonce": uuid.uuid4().hex}
    path = tag_path(name)
    try:
        storage.create(path, json.dumps(body).encode())
    except FileExistsError:
        try:
            other = read_tag(storage, name)["version"]
        except VersionNotFoundError:
            other = "?"
        raise FileExistsError(f"tag {name!r} already exists (version {other}) in the store at "
                              f"{storage.location!r}; delete_tag it first") from None
    # an expire() running in another process may have dropped v meanwhile: it lists the tags
    # after committing, so either it saw this tag (and kept the file) or the log shows v gone
    obj, _, _ = _metaio.decode(storage.peek(META_PATH), f"{storage.location}/{META_PATH}")
    if not any(r.get("k") == rec["k"] for r in obj.get("history") or []):
        storage.delete(path)
        raise VersionNotFoundError(f"version {v} of the store at {storage.location!r} was expired "
                                   f"while tag {name!r} was being created; the tag was not kept")


def delete_tag(storage: Storage, name: str) -> None:
    validate_name(name, "tag")
    path = tag_path(name)
    if not storage.exists(path):
        raise KeyError(f"no tag {name!r} in the store at {storage.location!r}")
    storage.delete(path)


# ---------------------------------------------------------------------- expiry
def _cutoff(older_than: Any, now: datetime) -> Optional[datetime]:
    if older_than is None:
        return None
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than!r}")
        return now - older_than
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise ValueError(f"older_than {older_than!r} has no time zone; pass an aware datetime (e.g. in UTC)")
        return older_than
    raise TypeError(f"older_than must be a datetime.timedelta (an age) or an aware datetime, "
                    f"got {type(older_than).__name__}: {older_than!r}")


def plan_expiry(meta: StoreMeta, tagged: set[int], older_than: Any, keep_last: Any,
                now: Optional[datetime] = None) -> tuple[tuple[dict[str, Any], ...], list[dict[str, Any]]]:
    """``(new log, expired records)``: a record goes when it is not the latest, not tagged, older than
    ``older_than`` (if given) and not among the ``keep_last`` newest (if given)."""
    if older_than is None and keep_last is None:
        raise ValueError("expire() needs older_than and/or keep_last (nothing is expired by default)")
    if keep_last is not None and (type(keep_last) is not int or keep_last < 1):
        raise ValueError(f"keep_last must be an int >= 1 (the latest version is always kept), got {keep_last!r}")
    cutoff = _cutoff(older_than, now or _now())
    log = meta.history
    n = len(log)
    out: list[dict[str, Any]] = []
    gone: list[dict[str, Any]] = []
    carry: dict[str, Any] = {}
    for i, r in enumerate(log):
        drop = (r["v"] != meta.generation and not tagged.intersection(numbers(r))
                and (cutoff is None or datetime.fromisoformat(r["t"]) < cutoff)
                and (keep_last is None or i < n - keep_last))
        if drop:
            gone.append(r)
            carry.update(r["f"])  # the next retained record inherits the index locations it did not change
        else:
            if carry:
                r = {**r, "f": {**carry, **r["f"]}}
                carry = {}
            out.append(r)
    return tuple(out), gone


# ---------------------------------------------------------------------- what compaction keeps
def _maps(meta: StoreMeta) -> Iterable[tuple[int, dict[str, Any]]]:
    """``(version, {array name: index location or None})`` of every retained version, oldest first."""
    cur: dict[str, Any] = {}
    for r in meta.history:
        cur.update(r["f"])
        yield r["v"], dict(cur)


class Retention:
    """The segment files that retained versions other than the current one need.

    Built before a compaction commits (so a failure deletes nothing). A chain of segments is
    what one array name's index lists between two compactions: each index footer names every
    segment of its chain, so per name and chain one footer is read, the newest retained one.
    Tagged versions that an expiry dropped from the log while they were being tagged are kept
    too (their file is read once).
    """

    def __init__(self, storage: Storage, frames: FrameReader, meta: StoreMeta) -> None:
        self.storage = storage
        self.meta = meta
        self.tags = read_tags(storage)
        self.catalogs: set[str] = set()  # catalog files of tagged versions no longer in the log
        logged = {v for r in meta.history for v in numbers(r)}
        older: list[tuple[int, dict[str, Any]]] = [(v, m) for v, m in _maps(meta) if v != meta.generation]
        for t in self.tags.values():
            if t["version"] not in logged and t["version"] != meta.generation:
                try:
                    vm, _, _ = load_version(storage, meta, t.get("at", t["version"]), t["token"])
                except VersionNotFoundError:
                    continue  # a tag whose creation lost the race with an expiry: removed by its creator
                older.append((vm.generation, {n: _loc(p) for n, p in vm.physical.items()}))
                if vm.catalog is not None:
                    self.catalogs.add(vm.catalog.path)
        self.versions = {v for v, _ in older} | {t["version"] for t in self.tags.values()}
        self.needed: set[str] = set()
        per_name: dict[str, list[tuple[int, IndexLocation]]] = {}
        for v, m in older:
            for name, loc in m.items():
                if loc is not None:
                    per_name.setdefault(name, []).append((v, IndexLocation(*loc)))
        for name, locs in per_name.items():
            folder = self._folder(name, locs[0][1])
            for _, loc in sorted(locs, key=lambda vl: -vl[0]):  # newest first: its footer lists the most
                if loc.segment in self.needed:
                    continue  # an older index of a chain already kept lists a subset of it
                idx = frames.load_index(name, Physical(folder, loc))
                self.needed.update(idx.segments)

    def _folder(self, name: str, loc: IndexLocation) -> str:
        p = self.meta.physical.get(name)
        return p.dir if p is not None else loc.segment.rsplit("/", 1)[0]

    def retire(self, retired: list[str], new: StoreMeta) -> list[str]:
        """``retired`` minus what retained versions need, plus version files and catalog files no
        version or tag refers to."""
        keep = {version_path(r["v"], r["k"]) for r in new.history}
        keep.update(r["cat"] for r in new.history if r.get("cat"))
        keep.update(self.catalogs)
        if new.catalog is not None:
            keep.add(new.catalog.path)
        logged = {v for r in new.history for v in numbers(r)}
        keep.update(version_path(t.get("at", t["version"]), t["token"]) for t in self.tags.values()
                    if t["version"] not in logged)
        stale = []
        for folder in (VERSIONS_DIR, CATALOG_DIR):
            for p in self.storage.list(folder):
                name = p[len(folder) + 1:]
                head = name.split("-", 1)[0]
                # files of generations above the current one may belong to a commit in flight elsewhere
                if p not in keep and head.isdigit() and int(head) <= new.generation:
                    stale.append(p)
        return [p for p in retired if p not in self.needed] + stale
