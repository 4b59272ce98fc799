"""The Storage contract (``atlas.storage._base.Storage``), run by every backend.

Backends: local disk (``LocalStorage``), obstore ``LocalStore``, obstore ``MemoryStore`` and
``S3Store`` on moto's S3 server (127.0.0.1, port 0; fixtures in ``conftest.py``). The class
talks to the ``Storage`` object only, never to atlas: what it pins down is what the engine may
rely on from any backend (whole and ranged reads, writes from bytes or parts, atomic commits
that refuse a second writer, barrier, existence, listing, deletion, sizes, pickling).
"""

from __future__ import annotations

import os
import pickle
import threading

import pytest

obstore = pytest.importorskip("obstore", reason="obstore is not installed (pip install 'atlas-python[cloud]')")
from obstore.store import LocalStore, MemoryStore  # noqa: E402

from atlas.errors import ConcurrentWriteError, CorruptStoreError  # noqa: E402
from atlas.storage import LocalStorage, Storage  # noqa: E402
from atlas.storage._object import ObjectStorage  # noqa: E402

KINDS = ["local", "localstore", "memory", "s3"]


class Location:
    """One store location of one backend kind; ``handle()`` opens a new, independent Storage on it
    (what another ``Atlas`` handle, thread or process would hold)."""

    def __init__(self, kind, tmp_path, moto=None, bucket=None):
        self.kind = kind
        self.root = str(tmp_path / "store")
        self.moto, self.bucket = moto, bucket
        self._memory = MemoryStore() if kind == "memory" else None

    def handle(self) -> Storage:
        if self.kind == "local":
            return LocalStorage(self.root, create=True)
        if self.kind == "localstore":
            return ObjectStorage(LocalStore(self.root, mkdir=True), create=True)
        if self.kind == "memory":
            return ObjectStorage(self._memory, create=True)  # its data lives in the one MemoryStore
        return ObjectStorage(self.moto.s3_store(self.bucket, prefix="contract/store"), create=True)


@pytest.fixture(params=KINDS)
def where(request, tmp_path):
    if request.param == "s3":
        return Location("s3", tmp_path, request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket"))
    return Location(request.param, tmp_path)


def data(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) % 251 for i in range(n))


def _race_commits(handles: list[Storage], r: int) -> tuple[dict[int, str], list[int]]:
    """Every handle commits ``round r by k`` at the same moment: ``({k: "won"/"refused"}, winners)``."""
    outcome: dict[int, str] = {}
    go = threading.Barrier(len(handles))

    def attempt(k: int) -> None:
        go.wait()
        try:
            handles[k].commit("atlas.meta", f"round {r} by {k}".encode())
            outcome[k] = "won"
        except ConcurrentWriteError:
            outcome[k] = "refused"

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(len(handles))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return outcome, [k for k, o in outcome.items() if o == "won"]


class TestStorageContract:
    # ------------------------------------------------------------------ whole reads and writes
    def test_write_bytes_then_read_whole(self, where):
        s = where.handle()
        blob = data(5000)
        s.write("arrays/a/seg1.bin", blob)
        s.write("arrays/a/ba.bin", bytearray(blob[:10]))
        s.write("arrays/b/mv.bin", memoryview(blob)[100:300])
        s.write("empty.bin", b"")
        assert bytes(s.read("arrays/a/seg1.bin")) == blob
        assert bytes(s.read("arrays/a/ba.bin")) == blob[:10]
        assert bytes(s.read("arrays/b/mv.bin")) == blob[100:300]
        assert bytes(s.read("empty.bin")) == b""
        # another handle on the same location sees the same files
        assert bytes(where.handle().read("arrays/a/seg1.bin")) == blob

    def test_missing_file_raises_file_not_found(self, where):
        s = where.handle()
        with pytest.raises(FileNotFoundError):
            s.read("nope.bin")
        with pytest.raises(FileNotFoundError):
            s.read_ranges("arrays/nope.bin", [0], [1])
        with pytest.raises(FileNotFoundError):
            s.read_ranges("arrays/nope.bin", [0, 4], [1, 8])

    def test_write_from_an_iterable_of_parts(self, where):
        s = where.handle()
        parts = [data(1000, 1), bytearray(data(10, 2)), memoryview(data(3000, 3)), b""]
        s.write("arrays/x/list.bin", parts)
        s.write("arrays/x/gen.bin", (p for p in parts))  # a one-shot iterator, as the flush streams it
        s.write("arrays/x/none.bin", iter(()))
        whole = b"".join(bytes(p) for p in parts)
        assert bytes(s.read("arrays/x/list.bin")) == whole
        assert bytes(s.read("arrays/x/gen.bin")) == whole
        assert bytes(s.read("arrays/x/none.bin")) == b""
        # parts larger than an S3 multipart part (5 MiB): the streamed upload is reassembled in order
        big = [data(3 << 20, k) for k in range(4)]
        s.write("arrays/x/big.bin", iter(big))
        got = s.read_ranges("arrays/x/big.bin", [0, (3 << 20) - 5, (12 << 20) - 7], [16, (3 << 20) + 5, 12 << 20])
        assert [bytes(g) for g in got] == [big[0][:16], big[0][-5:] + big[1][:5], big[3][-7:]]
        assert s.size_of(["arrays/x/big.bin"]) == 12 << 20

    def test_rewriting_a_path_replaces_it_even_after_ranged_reads(self, where):
        """An interrupted flush can leave an orphan at a path the retry writes again."""
        s = where.handle()
        s.write("arrays/a/s.bin", data(100, 1))
        assert bytes(s.read_ranges("arrays/a/s.bin", [0], [10])[0]) == data(100, 1)[:10]  # a cached descriptor
        s.write("arrays/a/s.bin", [data(40, 2), data(40, 3)])
        assert bytes(s.read_ranges("arrays/a/s.bin", [0], [80])[0]) == data(40, 2) + data(40, 3)
        assert bytes(s.read("arrays/a/s.bin")) == data(40, 2) + data(40, 3)

    def test_stamps_change_when_a_file_is_replaced_and_read_unless_reuses(self, where):
        """``stamp`` is None (unknown) or a token that changes with the file; ``read_unless``
        returns no bytes only for the file the stamp names, and then its commits still check."""
        s = where.handle()
        s.commit("atlas.meta", data(50, 1))
        stamp, got = s.read_unless("atlas.meta", None)
        assert bytes(got) == data(50, 1)
        if stamp is None:  # a backend without cheap stamps always reads
            assert s.stamp("atlas.meta") is None
            assert bytes(s.read_unless("atlas.meta", ("any",))[1]) == data(50, 1)
            return
        assert s.stamp("atlas.meta") == stamp
        again = where.handle()
        assert again.read_unless("atlas.meta", stamp) == (stamp, None)
        again.commit("atlas.meta", data(50, 2))  # the reused parse is this handle's view: it may commit
        new = s.stamp("atlas.meta")
        assert new is not None and new != stamp
        st2, got2 = s.read_unless("atlas.meta", stamp)
        assert st2 == new and bytes(got2) == data(50, 2)
        s.write("arrays/a/x.bin", data(10))
        first = s.stamp("arrays/a/x.bin")
        s.write("arrays/a/x.bin", data(10, 5))  # same size, rewritten
        assert s.stamp("arrays/a/x.bin") != first
        assert s.stamp("arrays/a/missing.bin") is None

    def test_read_unless_into_a_given_buffer(self, where):
        """With ``into``, a whole-file read returns the file's bytes, in the buffer it asked for
        when the backend reads into memory it chooses (the metadata read buffers reuse them)."""
        s = where.handle()
        s.commit("atlas.meta", data(70_000, 4))
        given: list[bytearray] = []

        def into(n):
            given.append(bytearray(b"\xff" * (n + 5)))  # larger and dirty: the read must trim and overwrite
            return given[-1]

        _, got = s.read_unless("atlas.meta", None, into)
        assert bytes(got) == data(70_000, 4)
        if isinstance(s, LocalStorage):  # reads into the buffer it was given
            assert len(given) == 1 and got is given[0]
        else:  # object stores hand back what the client returned
            assert not given

    # ------------------------------------------------------------------ ranged reads
    def test_read_ranges_in_the_order_asked(self, where):
        s = where.handle()
        blob = data(200_000)
        s.write("arrays/r.bin", blob)
        starts = [150_000, 0, 10, 10, 199_990, 5, 100_000]
        ends = [150_100, 3, 20, 20, 200_000, 25, 100_001]  # unsorted, repeated, overlapping, up to the end
        got = s.read_ranges("arrays/r.bin", starts, ends)
        assert isinstance(got, list) and len(got) == len(starts)
        assert [bytes(g) for g in got] == [blob[a:b] for a, b in zip(starts, ends)]
        assert [bytes(g) for g in s.read_ranges("arrays/r.bin", [7], [9])] == [blob[7:9]]
        assert s.read_ranges("arrays/r.bin", [], []) == []

    def test_empty_ranges_read_as_empty_bytes(self, where):
        s = where.handle()
        blob = data(1000)
        s.write("arrays/r.bin", blob)
        got = s.read_ranges("arrays/r.bin", [0, 5, 500, 1000], [4, 5, 600, 1000])  # 5..5 inside, 1000..1000 at the end
        assert [bytes(g) for g in got] == [blob[:4], b"", blob[500:600], b""]
        assert [bytes(g) for g in s.read_ranges("arrays/r.bin", [1000], [1000])] == [b""]
        assert [bytes(g) for g in s.read_ranges("arrays/r.bin", [3, 3], [3, 3])] == [b"", b""]

    @pytest.mark.parametrize("starts, ends", [([990], [1010]), ([0, 995], [4, 1001]), ([1000], [1001]),
                                              ([0, 2000], [10, 2010])], ids=["across", "across-2nd", "at", "beyond"])
    def test_range_past_the_end_is_a_corrupt_store_error_naming_the_file(self, where, starts, ends):
        """A range past the end means a damaged index: never short data, never an allocation past the end."""
        s = where.handle()
        s.write("arrays/short.bin", data(1000))
        with pytest.raises(CorruptStoreError, match=r"short\.bin.*truncated"):
            s.read_ranges("arrays/short.bin", starts, ends)
        assert bytes(s.read_ranges("arrays/short.bin", [990], [1000])[0]) == data(1000)[990:]  # still usable

    def test_ranged_reads_from_many_threads(self, where):
        """The engine's pools read ranges of one handle from several threads at once."""
        s = where.handle()
        blobs = {f"arrays/t/{k}.bin": data(20_000, k) for k in range(4)}
        for p, b in blobs.items():
            s.write(p, b)
        errors: list[BaseException] = []

        def reader(t: int) -> None:
            try:
                for i in range(15):
                    p = f"arrays/t/{(t + i) % 4}.bin"
                    a = (t * 997 + i * 131) % 19_000
                    got = s.read_ranges(p, [a, 0], [a + 1000, 7])
                    assert [bytes(g) for g in got] == [blobs[p][a:a + 1000], blobs[p][:7]]
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []

    # ------------------------------------------------------------------ commit
    def test_commit_creates_then_replaces(self, where):
        s = where.handle()
        s.commit("atlas.meta", b"generation 1")
        assert bytes(s.read("atlas.meta")) == b"generation 1"
        s.commit("atlas.meta", memoryview(b"generation 2, longer"))  # this handle's own last commit: no conflict
        s.commit("atlas.meta", bytearray(b"g3"))
        assert bytes(s.read("atlas.meta")) == b"g3"
        other = where.handle()
        assert bytes(other.read("atlas.meta")) == b"g3"
        other.commit("atlas.meta", b"g4 by the other handle, which read g3")
        assert bytes(where.handle().read("atlas.meta")) == b"g4 by the other handle, which read g3"
        assert [p for p in s.list() if p.endswith(".tmp")] == []  # no temporary left behind

    def test_commit_refuses_a_second_writer(self, where):
        first, second = where.handle(), where.handle()
        first.commit("atlas.meta", b"v1")
        # the second handle never saw the file: creating it again would overwrite the first's
        with pytest.raises(ConcurrentWriteError, match=r"atlas\.meta.*another writer"):
            second.commit("atlas.meta", b"second's v1")
        assert bytes(where.handle().read("atlas.meta")) == b"v1"
        # both read v1; the first commits; the second's commit is now stale, and stays so on retry
        assert bytes(second.read("atlas.meta")) == b"v1"
        first.commit("atlas.meta", b"v2")
        for _ in range(2):
            with pytest.raises(ConcurrentWriteError, match=r"atlas\.meta.*another writer"):
                second.commit("atlas.meta", b"second's v2")
        assert bytes(where.handle().read("atlas.meta")) == b"v2"
        # after reading the winner's state the loser commits on top of it, and the winner is stale
        assert bytes(second.read("atlas.meta")) == b"v2"
        second.commit("atlas.meta", b"v3")
        with pytest.raises(ConcurrentWriteError, match="another writer"):
            first.commit("atlas.meta", b"first's v3")
        assert bytes(first.read("atlas.meta")) == b"v3"
        # the refused handles stay usable
        first.write("arrays/after.bin", b"ok")
        assert bytes(second.read("arrays/after.bin")) == b"ok"

    def test_concurrent_commits_from_threads_exactly_one_wins(self, where):
        """Handles racing from the same state: each round exactly one commit lands, the others are refused."""
        seed = where.handle()
        seed.commit("atlas.meta", b"round 0")
        handles = [where.handle() for _ in range(4)]
        for r in range(1, 4):
            for h in handles:
                h.read("atlas.meta")
            outcome, winners = _race_commits(handles, r)
            assert len(outcome) == len(handles) and len(winners) == 1, outcome
            assert bytes(where.handle().read("atlas.meta")) == f"round {r} by {winners[0]}".encode()

    # ------------------------------------------------------------------ barrier, exists, list, delete, sizes
    def test_barrier_makes_writes_visible_and_tolerates_removed_orphans(self, where):
        s = where.handle()
        s.barrier()  # nothing written: a no-op
        s.write("arrays/a/1.bin", b"one")
        s.write("arrays/b/2.bin", [b"tw", b"o"])
        s.write("arrays/c/orphan.bin", b"x")
        s.delete("arrays/c/orphan.bin")  # a failed flush's orphan removed before the barrier
        assert s.barrier() is None
        s.barrier()  # twice: nothing left to do
        fresh = where.handle()
        assert bytes(fresh.read("arrays/a/1.bin")) == b"one" and bytes(fresh.read("arrays/b/2.bin")) == b"two"
        assert not fresh.exists("arrays/c/orphan.bin")

    def test_exists_is_true_for_files_only(self, where):
        s = where.handle()
        s.write("arrays/a/seg.bin", b"x")
        s.commit("atlas.meta", b"m")
        assert s.exists("arrays/a/seg.bin") and s.exists("atlas.meta")
        assert not s.exists("arrays/a/other.bin")
        assert not s.exists("arrays/a")  # a folder is not a file (object stores have no folders)
        assert not s.exists("nowhere/x.bin")

    def test_listing_with_prefixes(self, where):
        s = where.handle()
        files = ["arrays/a/s1.bin", "arrays/a/s2.bin", "arrays/ab/s1.bin", "arrays/b/deep/x.bin", "top.bin"]
        for p in files:
            s.write(p, b"z")
        s.commit("atlas.meta", b"m")  # the committed file is listed like any other
        assert s.list() == sorted(files + ["atlas.meta"])
        assert s.list("") == s.list()
        assert s.list("arrays") == sorted(files[:4])
        assert s.list("arrays/") == sorted(files[:4])
        assert s.list("arrays/a") == files[:2]  # a prefix is a folder: "arrays/ab" is not under "arrays/a"
        assert s.list("arrays/b") == ["arrays/b/deep/x.bin"]
        assert s.list("arrays/a/s") == []  # ... nor is "arrays/a/s1.bin" under "arrays/a/s"
        assert s.list("missing") == []
        s.delete("arrays/a/s1.bin")
        assert s.list("arrays/a") == ["arrays/a/s2.bin"]

    def test_deleting_a_missing_file_is_not_an_error(self, where):
        s = where.handle()
        s.write("arrays/a/seg.bin", b"abc")
        s.read_ranges("arrays/a/seg.bin", [0], [1])
        s.delete("arrays/a/seg.bin")
        assert not s.exists("arrays/a/seg.bin")
        with pytest.raises(FileNotFoundError):
            s.read("arrays/a/seg.bin")
        s.delete("arrays/a/seg.bin")  # again
        s.delete("never/was/there.bin")
        s.delete("atlas.meta")
        assert s.list() == []

    def test_size_of(self, where):
        s = where.handle()
        s.write("arrays/a/1.bin", data(1234))
        s.write("arrays/a/2.bin", [data(10), data(20)])
        s.write("arrays/b/0.bin", b"")
        s.commit("atlas.meta", b"12345")
        assert s.size_of([]) == 0
        assert s.size_of(["arrays/a/1.bin"]) == 1234
        assert s.size_of(s.list()) == 1234 + 30 + 0 + 5
        assert s.size_of(["arrays/a/2.bin", "arrays/gone.bin"]) == 30  # a missing file counts 0

    # ------------------------------------------------------------------ pickling, close, attributes
    def test_pickling_round_trip_and_the_copy_works(self, where):
        s = where.handle()
        s.write("arrays/a/seg.bin", data(500))
        s.read_ranges("arrays/a/seg.bin", [0], [10])  # open descriptors are not part of the pickle
        s.commit("atlas.meta", b"v1")
        if where.kind == "memory":
            with pytest.raises(TypeError, match="MemoryStore"):
                pickle.dumps(s)
            return
        copy = pickle.loads(pickle.dumps(s))
        assert type(copy) is type(s) and copy.location == s.location and copy.writable == s.writable
        assert bytes(copy.read_ranges("arrays/a/seg.bin", [100], [200])[0]) == data(500)[100:200]
        assert copy.list("arrays") == ["arrays/a/seg.bin"]
        copy.write("arrays/b/from_copy.bin", [b"from ", b"copy"])
        copy.barrier()
        assert bytes(s.read("arrays/b/from_copy.bin")) == b"from copy"
        # a copy is a new handle: it commits only on top of a state it has read
        with pytest.raises(ConcurrentWriteError):
            copy.commit("atlas.meta", b"blind")
        copy.read("atlas.meta")
        copy.commit("atlas.meta", b"v2 by copy")
        with pytest.raises(ConcurrentWriteError):
            s.commit("atlas.meta", b"v2 by original")
        assert bytes(s.read("atlas.meta")) == b"v2 by copy"
        if where.kind == "local":  # a path is the whole pickle (picklable to any process)
            assert len(pickle.dumps(s)) < 200 + len(s.location)

    def test_close_releases_handles_and_the_storage_stays_usable(self, where):
        s = where.handle()
        s.write("arrays/a/seg.bin", data(100))
        s.read_ranges("arrays/a/seg.bin", [0], [5])
        s.close()
        assert bytes(s.read_ranges("arrays/a/seg.bin", [5], [10])[0]) == data(100)[5:10]
        s.close()
        s.close()
        s.commit("atlas.meta", b"m")
        assert bytes(s.read("atlas.meta")) == b"m"

    def test_writable_and_location(self, where):
        s = where.handle()
        assert s.writable is True
        assert isinstance(s.location, str) and s.location
        if where.kind in ("local", "localstore"):
            assert os.path.basename(where.root) in s.location
        if where.kind == "s3":
            assert where.bucket in s.location


def test_local_disk_and_localstore_handles_on_one_folder_exclude_each_other(tmp_path):
    """Both take the writers' lock file of the folder: racing commits from both kinds, one wins."""
    root = str(tmp_path / "store")
    kinds = [lambda: LocalStorage(root, create=True), lambda: ObjectStorage(LocalStore(root, mkdir=True))]
    for r in range(6):
        handles = [kinds[k % 2]() for k in range(4)]
        if r:  # round 0 races to create the file, the others to replace what all of them read
            for h in handles:
                h.read("atlas.meta")
        outcome, winners = _race_commits(handles, r)
        assert len(outcome) == len(handles) and len(winners) == 1, (r, outcome)
        assert bytes(kinds[r % 2]().read("atlas.meta")) == f"round {r} by {winners[0]}".encode()
    assert LocalStorage(root).list() == ["atlas.meta"]
    assert ObjectStorage(LocalStore(root)).list() == ["atlas.meta"]
