"""Local-disk storage: pread for ranges, fsync + rename for durable atomic commits."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence

from ._base import Buffer, Storage


class LocalStorage(Storage):
    """A directory on a local (or network-mounted POSIX) file system."""

    def __init__(self, root: str, *, create: bool = False) -> None:
        self.root = os.path.abspath(root)
        if create:
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise FileExistsError(f"cannot create an atlas store at {root!r}: a file of that name exists")
            try:
                os.makedirs(self.root, exist_ok=True)
            except NotADirectoryError:
                up = self.root
                while up != os.path.dirname(up) and not os.path.exists(up):
                    up = os.path.dirname(up)
                raise FileExistsError(f"cannot create an atlas store at {root!r}: {up!r} is a file, not a folder") from None
        elif not os.path.isdir(self.root):
            raise FileNotFoundError(f"no atlas store at {root!r}: not a directory")
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._dirty_dirs: set[str] = set()
        self._dirty_files: list[str] = []  # written, not yet fsynced (barrier() does it)
        self._pid = os.getpid()
        self._stamps: dict[str, tuple[int, int, int]] = {}  # what this handle last read/wrote of committed files

    # pickling: a path is all a worker needs
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (LocalStorage, (self.root,))

    @property
    def location(self) -> str:
        return self.root

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/"))

    def _fd(self, path: str) -> int:
        if self._pid != os.getpid():  # forked: descriptors are shared with the parent, reopen
            self._fds = {}
            self._pid = os.getpid()
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = os.open(self._abs(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                    self._fds[path] = fd
        return fd

    def read(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as f:
            data = f.read()
            self._stamps[path] = _stamp(os.fstat(f.fileno()))
            return data

    def stamp(self, path: str) -> Hashable | None:
        try:
            return _stamp(os.stat(self._abs(path)))
        except OSError:
            return None

    def read_unless(self, path: str, stamp: Hashable | None,
                    into: Callable[[int], bytearray] | None = None) -> tuple[Hashable | None, Buffer | None]:
        if stamp is not None:
            try:
                now = _stamp(os.stat(self._abs(path)))
            except FileNotFoundError:
                now = None
            if now is not None and now == stamp:  # the same file (inode, size, mtime): the caller's parse stands
                self._stamps[path] = now
                return now, None
        if into is None or type(self).read is not LocalStorage.read:  # (a subclass's read sees every read)
            data: Buffer = self.read(path)
        else:
            fd = os.open(self._abs(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                st = os.fstat(fd)
                buf = into(st.st_size)
                got, view = 0, memoryview(buf)
                while got < st.st_size:
                    n = os.readv(fd, [view[got:]])
                    if n == 0:  # shorter than its size said (replaced meanwhile): what was there
                        break
                    got += n
                view.release()
                del buf[got:]
                data = buf
                self._stamps[path] = _stamp(st)
            finally:
                os.close(fd)
        return self._stamps[path], data

    def read_ranges(self, path: str, starts: Sequence[int], ends: Sequence[int]) -> list[Buffer]:
        fd = self._fd(path)
        out: list[Buffer] = []
        size = os.fstat(fd).st_size  # a damaged index must not make us allocate past the file's end
        for s, e in zip(starts, ends):
            n = int(e) - int(s)
            b = os.pread(fd, n, int(s)) if int(e) <= size else b""
            if len(b) != n:
                from ..errors import CorruptStoreError

                raise CorruptStoreError(
                    f"{self._abs(path)}: truncated (wanted bytes {s}..{e}, file ends early)"
                )
            out.append(b)
        return out

    def write(self, path: str, data: Buffer | Iterable[Buffer]) -> None:
        full = self._abs(path)
        d = os.path.dirname(full)
        os.makedirs(d, exist_ok=True)
        with open(full, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                for part in data:
                    f.write(part)
        self._dirty_files.append(full)  # made durable by barrier(), all files at once
        self._dirty_dirs.add(d)
        # a rewritten path (an orphan of an interrupted flush) must not be served from a stale fd
        with self._lock:
            fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def commit(self, path: str, data: Buffer) -> None:
        full = self._abs(path)
        d = os.path.dirname(full)
        os.makedirs(d, exist_ok=True)
        with _Flock(os.path.join(self.root, LOCK_NAME)):
            # another writer may have committed since this handle read the file: refuse to overwrite it
            try:
                now: tuple[int, int, int] | None = _stamp(os.stat(full))
            except FileNotFoundError:
                now = None
            if now != self._stamps.get(path):
                from ..errors import ConcurrentWriteError

                raise ConcurrentWriteError(
                    f"{full} was changed by another writer since this store was opened; "
                    "reopen it and retry (the pending changes are kept)"
                )
            self._replace(full, d, data)
            self._stamps[path] = _stamp(os.stat(full))

    def create(self, path: str, data: Buffer) -> None:
        full = self._abs(path)
        d = os.path.dirname(full)
        os.makedirs(d, exist_ok=True)
        tmp = _durable_tmp(full, data)
        try:
            os.link(tmp, full)  # atomic, and fails if the name exists: complete content or nothing
        finally:
            _unlink_quietly(tmp)
        _fsync_dir(d)

    def peek(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as f:
            return f.read()

    def _replace(self, full: str, d: str, data: Buffer) -> None:
        tmp = _durable_tmp(full, data)
        try:
            os.replace(tmp, full)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(d)

    def barrier(self) -> None:
        """fsync every file written since the last barrier and their directories, concurrently.

        One flush writes a segment in each touched array's folder; syncing them in parallel
        lets the filesystem batch the journal commits instead of paying one per file in turn.
        """
        files, self._dirty_files = self._dirty_files, []
        dirs, self._dirty_dirs = self._dirty_dirs, set()
        todo = sorted(set(dirs) | {os.path.dirname(d) for d in dirs if os.path.dirname(d).startswith(self.root)})
        jobs = [(p, True) for p in files] + [(d, False) for d in todo]  # each directory once
        if len(jobs) > 1:
            from .._executor import io_pool

            list(io_pool(8).map(lambda j: _fsync_path(*j), jobs))
        else:
            for j in jobs:
                _fsync_path(*j)

    def exists(self, path: str) -> bool:
        return os.path.isfile(self._abs(path))  # a folder is not a file (object stores have none)

    def delete(self, path: str) -> None:
        with self._lock:
            fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self._abs(path))
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        base = self._abs(prefix) if prefix else self.root
        out = []
        for dirpath, _, files in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            for f in files:
                if rel == "." and f == LOCK_NAME:  # the writers' lock is bookkeeping, never a file of the store
                    continue
                p = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                out.append(p)
        return sorted(out)

    def size_of(self, paths: Sequence[str]) -> int:
        total = 0
        for p in paths:
            try:
                total += os.path.getsize(self._abs(p))
            except FileNotFoundError:
                pass
        return total

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        if self._pid == os.getpid():
            for fd in fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


LOCK_NAME = "atlas.lock"


def _durable_tmp(full: str, data: Buffer) -> str:
    """``data`` in a new, fsynced temporary file beside ``full``; its path (removed again on failure)."""
    tmp = f"{full}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _Flock:
    """An exclusive advisory lock on a file, held while a writer checks and replaces the metadata."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_Flock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX: the ETag-style check alone
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing releases the lock


def _fsync_path(path: str, is_file: bool) -> None:
    if not is_file:
        _fsync_dir(path)
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # an orphan of a failed flush, removed since: nothing to make durable
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
