"""Versions through a handle: read-only handles on past versions, and expiry (see ``_history``)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _history
from ._meta import META_PATH, ArrayMeta, StoreMeta
from ._state import StoreState, Transaction
from .errors import ReadOnlyError, VersionNotFoundError
from .storage import Storage


class _Refuse:
    """Stands in for a read-only state's write lock: every mutation takes it first, and is refused."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        raise ReadOnlyError(f"{self.what} is read-only (opened with version= or tag=); "
                            "open the store without them to change it")

    def __exit__(self, *exc: Any) -> None:
        return None


class _NoCommit:
    """The commit of a read-only state: refused."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, meta: StoreMeta, note: Any = None) -> None:
        raise ReadOnlyError(f"{self.what} is read-only")


class ReadOnlyState(StoreState):
    """The state of a handle on one past version: reads as usual, every change refused."""

    def __init__(self, storage: Storage, meta: StoreMeta, version: int, what: str) -> None:
        super().__init__(storage, meta, _NoCommit(what))  # (not a method of self: no reference cycle)
        self.version = version
        self.what = what
        self.write_lock = _Refuse(what)  # type: ignore[assignment]

    def flush(self, message: Optional[str] = None) -> bool:
        return False  # nothing can be pending (close() and leaving a with block stay harmless)

    def read(self, txn: Transaction, name: str, metas: Sequence[ArrayMeta], start: Sequence[int], count: Sequence[int],
             out: Optional[np.ndarray] = None) -> np.ndarray:
        try:
            return super().read(txn, name, metas, start, count, out)
        except FileNotFoundError as e:
            raise self._gone(e) from None

    def read_many(self, txn: Transaction, reads: Any) -> list[np.ndarray]:
        try:
            return super().read_many(txn, reads)
        except FileNotFoundError as e:
            raise self._gone(e) from None

    def _gone(self, e: FileNotFoundError) -> VersionNotFoundError:
        return VersionNotFoundError(f"{self.what} is gone: it was expired and compacted away ({e})")


def resolve(storage: Storage, current: StoreMeta, version: Any, tag: Optional[str]) -> tuple[int, Optional[dict[str, Any]]]:
    """``(version number, its log record or None)`` for ``version=`` or ``tag=`` (errors name what is missing)."""
    if tag is not None:
        if version is not None:
            raise ValueError("pass version= or tag=, not both")
        t = _history.read_tag(storage, tag)
        v = t["version"]
        rec = _history.find(current, v)
        if rec is None:  # dropped from the log by an expiry racing with the tag's creation: the tag keeps its file
            rec = {"v": t.get("at", v), "k": t["token"]}
        return v, rec
    if type(version) is not int:
        raise TypeError(f"version must be an int (a generation, see Atlas.history()), got "
                        f"{type(version).__name__}: {version!r}")
    rec = _history.find(current, version)
    if rec is None and version != current.generation:
        for t in _history.read_tags(storage).values():
            if t["version"] == version:
                return version, {"v": t.get("at", version), "k": t["token"]}
        raise _history.missing(storage.location, current, version)
    return version, rec


def open_version(cls: Any, storage: Storage, current: StoreMeta, fmt: str, comp: str, version: Any,
                 tag: Optional[str]) -> Any:
    """A read-only ``cls`` (Atlas) handle on one version of the store whose current metadata is ``current``."""
    v, rec = resolve(storage, current, version, tag)
    if rec is None or rec["v"] == current.generation:
        meta = current  # the current state itself (also in stores older than version history)
    else:
        meta, fmt, comp = _history.load_version(storage, current, rec["v"], rec["k"])
    what = f"version {v}" + (f" (tag {tag!r})" if tag is not None else "") + f" of the store at {storage.location!r}"
    return cls(storage, meta, fmt, comp, _readonly=(v, what))


def expire(state: StoreState, encode: Callable[[StoreMeta], bytes], older_than: Any, keep_last: Any) -> list[int]:
    """Drop versions from the log (one metadata commit, same generation), then delete their files."""
    storage = state.storage
    with state.write_lock:
        state.flush()
        meta = state.txn.base.meta
        tagged = {t["version"] for t in _history.read_tags(storage).values()}
        log, gone = _history.plan_expiry(meta, tagged, older_than, keep_last)
        if not gone:
            return []
        new = meta.copy()
        new.history = log
        storage.commit(META_PATH, encode(new))
        state.republish(new)
        # a tag created meanwhile (in another process) keeps its version's file; see _history.create_tag
        tagged_now = {(t.get("at", t["version"]), t["token"]) for t in _history.read_tags(storage).values()}
        for r in gone:
            if (r["v"], r["k"]) not in tagged_now:
                storage.delete(_history.version_path(r["v"], r["k"]))
    return [v for r in gone for v in _history.numbers(r)]
