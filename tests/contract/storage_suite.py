"""The storage contract: one list of behaviours every driver (and the BlobStore over it) must show.

``test_drivers.py`` runs these classes once per driver. A subclass provides one fixture,
``harness``: a :class:`Harness` around a fresh, empty store.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mirror.errors import BlobCorruptError, BlobNotFoundError, DigestMismatchError, ObjectNotFoundError, StorageError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from registry.gitobjects import blob_oid
from registry.manifest import Manifest, ManifestEntry
from registry.types import RepoRef, RepoType

MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # the S3 driver under test is built with this part size
BIG = random.Random(1234).randbytes(11 * MiB)  # > 2 parts: exercises multipart (2 full parts + a short last one)
SMALL = b"hello, storage contract\n"
INVALID_KEYS = ["../x", "/abs", "a/../b", "..", ""]


@dataclass
class Harness:
    """A driver on a fresh, empty store plus the driver-specific ways of looking behind it."""

    driver: object
    kind: str  # "local" | "s3"
    raw_objects: Callable[[], set[str]]  # everything physically stored, in-flight temp files included
    pending_uploads: Callable[[], list[str]]  # in-flight writes (local temp files, S3 multipart uploads)
    pending_upload_keys: Callable[[], list[str] | None]  # target keys of in-flight writes, None if unknowable
    outside_dir: Path | None = None  # the folder just above a local store: nothing may ever land there


def _read_all(f) -> bytes:  # type: ignore[no-untyped-def]
    chunks = []
    while chunk := f.read(1024 * 1024):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_in_chunks(writer, data: bytes, chunk: int = MiB) -> None:  # type: ignore[no-untyped-def]
    for i in range(0, len(data), chunk):
        writer.write(data[i : i + chunk])


class StorageDriverSuite:
    """Behaviours of ``mirror.storage.driver.StorageDriver`` implementations."""

    # -- put / get / open --------------------------------------------------------------------

    def test_put_then_get_bytes(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("dir/sub/object", SMALL)
        assert d.get_bytes("dir/sub/object") == SMALL

    def test_empty_object_round_trips(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("empty", b"")
        assert d.get_bytes("empty") == b""
        info = d.stat("empty")
        assert info is not None and info.size == 0

    def test_open_reads_whole_object(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"0123456789")
        with d.open("obj") as f:
            assert _read_all(f) == b"0123456789"

    def test_open_at_offset(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"0123456789")
        with d.open("obj", 3) as f:
            assert _read_all(f) == b"3456789"

    def test_open_with_offset_and_length(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"0123456789")
        with d.open("obj", 2, 5) as f:
            assert f.read(2) == b"23"
            assert f.read(100) == b"456"
            assert f.read(100) == b""

    def test_open_length_past_end_stops_at_end(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"0123456789")
        with d.open("obj", 7, 100) as f:
            assert _read_all(f) == b"789"

    def test_open_with_zero_length_reads_nothing(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"0123456789")
        with d.open("obj", 4, 0) as f:
            assert f.read(10) == b""

    def test_stat_gives_size(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"x" * 1234)
        info = d.stat("obj")
        assert info is not None
        assert info.key == "obj"
        assert info.size == 1234
        assert info.modified > 0

    def test_overwrite_with_same_content(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", SMALL)
        d.put_bytes("obj", SMALL)
        assert d.get_bytes("obj") == SMALL
        assert list(d.iter_keys("")) == ["obj"]

    def test_overwrite_with_other_content(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"old content")
        d.put_bytes("obj", b"new")
        assert d.get_bytes("obj") == b"new"
        assert d.stat("obj").size == 3

    # -- writers -----------------------------------------------------------------------------

    def test_writer_commit_makes_object_visible(self, harness: Harness) -> None:
        d = harness.driver
        w = d.writer("w/obj")
        w.write(b"abc")
        w.write(memoryview(b"def"))
        w.commit()
        assert d.get_bytes("w/obj") == b"abcdef"
        assert harness.pending_uploads() == []

    def test_writer_invisible_until_commit(self, harness: Harness) -> None:
        d = harness.driver
        w = d.writer("w/obj")
        w.write(SMALL)
        assert d.stat("w/obj") is None
        with pytest.raises(ObjectNotFoundError):
            d.get_bytes("w/obj")
        with pytest.raises(ObjectNotFoundError):
            d.open("w/obj")
        assert list(d.iter_keys("")) == []
        w.commit()
        assert d.get_bytes("w/obj") == SMALL

    def test_writer_keeps_old_object_until_commit(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("obj", b"old")
        w = d.writer("obj")
        w.write(b"new content")
        assert d.get_bytes("obj") == b"old"
        w.commit()
        assert d.get_bytes("obj") == b"new content"

    def test_writer_cancel_leaves_nothing(self, harness: Harness) -> None:
        d = harness.driver
        before = harness.raw_objects()
        w = d.writer("w/obj")
        w.write(SMALL)
        w.cancel()
        assert d.stat("w/obj") is None
        with pytest.raises(ObjectNotFoundError):
            d.get_bytes("w/obj")
        assert harness.raw_objects() == before
        assert harness.pending_uploads() == []

    def test_writer_cancel_of_multipart_sized_write_leaves_no_upload(self, harness: Harness) -> None:
        d = harness.driver
        before = harness.raw_objects()
        w = d.writer("big")
        _write_in_chunks(w, BIG[: 2 * PART_SIZE + MiB])
        assert harness.pending_uploads() != [], "a write past the part size should be in flight"
        w.cancel()
        assert d.stat("big") is None
        assert harness.pending_uploads() == []
        assert harness.raw_objects() == before

    def test_multipart_sized_write_round_trips(self, harness: Harness) -> None:
        d = harness.driver
        w = d.writer("blobs/big")
        _write_in_chunks(w, BIG)
        assert harness.pending_uploads() != []
        keys = harness.pending_upload_keys()
        if keys is not None:
            assert keys == ["blobs/big"]
        assert d.stat("blobs/big") is None
        w.commit()
        assert d.stat("blobs/big").size == len(BIG)
        assert d.get_bytes("blobs/big") == BIG
        with d.open("blobs/big", PART_SIZE - 3, 6) as f:  # across the first part boundary
            assert f.read() == BIG[PART_SIZE - 3 : PART_SIZE + 3]
        assert harness.pending_uploads() == []

    def test_single_large_write_call_round_trips(self, harness: Harness) -> None:
        d = harness.driver
        w = d.writer("big")
        w.write(BIG)
        w.commit()
        assert hashlib.sha256(d.get_bytes("big")).digest() == hashlib.sha256(BIG).digest()

    # -- missing keys ------------------------------------------------------------------------

    def test_missing_key(self, harness: Harness) -> None:
        d = harness.driver
        assert d.stat("no/such/key") is None
        with pytest.raises(ObjectNotFoundError):
            d.get_bytes("no/such/key")
        with pytest.raises(ObjectNotFoundError):
            d.open("no/such/key")
        with pytest.raises(ObjectNotFoundError):
            d.open("no/such/key", 3, 4)
        assert d.local_path("no/such/key") is None

    def test_missing_key_open_with_zero_length_raises(self, harness: Harness, request: pytest.FixtureRequest) -> None:
        with pytest.raises(ObjectNotFoundError):
            harness.driver.open("no/such/key", 0, 0)

    def test_prefix_of_keys_is_not_an_object(self, harness: Harness, request: pytest.FixtureRequest) -> None:
        d = harness.driver
        d.put_bytes("dir/obj", SMALL)
        assert d.stat("dir") is None
        with pytest.raises(ObjectNotFoundError):
            d.get_bytes("dir")
        with pytest.raises(ObjectNotFoundError):
            d.open("dir")
        assert d.local_path("dir") is None

    # -- delete ------------------------------------------------------------------------------

    def test_delete_is_idempotent(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("a/obj", SMALL)
        d.put_bytes("a/other", SMALL)
        d.delete("a/obj")
        assert d.stat("a/obj") is None
        with pytest.raises(ObjectNotFoundError):
            d.get_bytes("a/obj")
        d.delete("a/obj")  # again: not an error
        d.delete("never/existed")
        assert d.get_bytes("a/other") == SMALL
        assert list(d.iter_keys("")) == ["a/other"]

    # -- listing -----------------------------------------------------------------------------

    def test_iter_keys_with_prefix_is_sorted(self, harness: Harness) -> None:
        d = harness.driver
        keys = ["b/2", "a/sub/x", "a/10", "ab", "a/2", "a/1", "c", "a/sub/a"]
        for k in keys:
            d.put_bytes(k, k.encode())
        assert list(d.iter_keys("a/")) == ["a/1", "a/10", "a/2", "a/sub/a", "a/sub/x"]
        assert list(d.iter_keys("a")) == ["a/1", "a/10", "a/2", "a/sub/a", "a/sub/x", "ab"]
        assert list(d.iter_keys("a/sub/")) == ["a/sub/a", "a/sub/x"]
        assert list(d.iter_keys("a/1")) == ["a/1", "a/10"]
        assert list(d.iter_keys("")) == sorted(keys)
        assert list(d.iter_keys("zzz/")) == []
        assert list(d.iter_keys("a/nothere/")) == []

    def test_iter_keys_does_not_list_in_flight_writes(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("done", SMALL)
        w = d.writer("pending")
        w.write(SMALL)
        try:
            assert list(d.iter_keys("")) == ["done"]
        finally:
            w.cancel()

    def test_iter_keys_never_lists_outside_the_store(self, harness: Harness, request: pytest.FixtureRequest) -> None:
        d = harness.driver
        d.put_bytes("inside", SMALL)
        if harness.outside_dir is not None:
            (harness.outside_dir / "secret.txt").write_bytes(b"not in the store")
        try:
            listed = list(d.iter_keys("../"))
        except StorageError:
            return  # refusing the prefix is fine too
        assert listed == []

    # -- move --------------------------------------------------------------------------------

    def test_move(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("uploads/tmp1", SMALL)
        d.move("uploads/tmp1", "final/deep/key")
        assert d.get_bytes("final/deep/key") == SMALL
        assert d.stat("uploads/tmp1") is None
        assert list(d.iter_keys("")) == ["final/deep/key"]

    def test_move_replaces_existing_destination(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("src", b"new")
        d.put_bytes("dst", b"old")
        d.move("src", "dst")
        assert d.get_bytes("dst") == b"new"
        assert d.stat("src") is None

    def test_move_of_multipart_sized_object(self, harness: Harness) -> None:
        d = harness.driver
        w = d.writer("uploads/big")
        _write_in_chunks(w, BIG)
        w.commit()
        d.move("uploads/big", "blobs/big")
        assert d.get_bytes("blobs/big") == BIG
        assert list(d.iter_keys("")) == ["blobs/big"]

    def test_move_missing_source_raises(self, harness: Harness) -> None:
        d = harness.driver
        with pytest.raises(ObjectNotFoundError):
            d.move("no/such", "dst")
        assert d.stat("dst") is None

    # -- optional capabilities ---------------------------------------------------------------

    def test_redirect_url(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("blobs/obj", b"redirected bytes")
        url = d.redirect_url("blobs/obj", ttl_seconds=600, filename="my file é.bin")
        if harness.kind == "local":
            assert url is None
            return
        assert url is not None and url.startswith("http")
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200
        assert response.content == b"redirected bytes"
        assert "my%20file%20%C3%A9.bin" in response.headers.get("content-disposition", "")

    def test_local_path(self, harness: Harness) -> None:
        d = harness.driver
        d.put_bytes("blobs/obj", SMALL)
        path = d.local_path("blobs/obj")
        if harness.kind == "s3":
            assert path is None
            return
        assert path is not None and path.is_file()
        assert path.read_bytes() == SMALL

    # -- key grammar -------------------------------------------------------------------------

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_refused(self, harness: Harness, key: str) -> None:
        d = harness.driver
        d.put_bytes("valid", SMALL)
        calls = {
            "stat": lambda: d.stat(key),
            "open": lambda: d.open(key),
            "get_bytes": lambda: d.get_bytes(key),
            "put_bytes": lambda: d.put_bytes(key, SMALL),
            "writer": lambda: d.writer(key),
            "delete": lambda: d.delete(key),
            "move_from": lambda: d.move(key, "dst"),
            "move_to": lambda: d.move("valid", key),
        }
        for name, call in calls.items():
            with pytest.raises(StorageError) as info:
                call()
            assert not isinstance(info.value, ObjectNotFoundError), f"{name}({key!r}) was looked up, not refused"
        assert d.get_bytes("valid") == SMALL
        assert list(d.iter_keys("")) == ["valid"]
        if harness.outside_dir is not None:
            assert not (harness.outside_dir / "x").exists()
            assert not (harness.outside_dir / "abs").exists()


# ---------------------------------------------------------------------------------------------
# BlobStore over the driver


REPO = RepoRef(RepoType.MODEL, "acme/tiny")
COMMIT = "1" * 40


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest() -> Manifest:
    files = []
    for path, data, lfs in [("README.md", b"# hi\n", False), ("model.safetensors", b"\0weights", True), ("sub/é.txt", b"x", False)]:
        files.append(ManifestEntry(path=path, size=len(data), sha256=_sha(data), git_oid=blob_oid(data), lfs=lfs))
    return Manifest(repo_type=REPO.type, repo_id=REPO.id, commit=COMMIT, created_at="2024-01-01T00:00:00.000000Z",
                    source={"kind": "test"}, files=tuple(files))


class _MoveRecorder:
    def __init__(self, real: Callable[[str, str], None]) -> None:
        self.real, self.calls = real, []  # type: ignore[var-annotated]

    def __call__(self, src: str, dst: str) -> None:
        self.calls.append((src, dst))
        self.real(src, dst)


# (label, data, ingest kwargs given the data) for every way the announced content can be wrong
_MISMATCHES: list[tuple[str, bytes, Callable[[bytes], dict[str, object]]]] = [
    ("wrong-sha256", SMALL, lambda b: {"size": len(b), "sha256": _sha(b"other")}),
    ("wrong-sha256-big", BIG, lambda b: {"size": len(b), "sha256": _sha(b"other")}),
    ("wrong-git-oid", SMALL, lambda b: {"size": len(b), "git_oid": blob_oid(b"other")}),
    ("wrong-git-oid-big", BIG, lambda b: {"size": len(b), "git_oid": blob_oid(b"other")}),
    ("right-sha256-wrong-git-oid", SMALL, lambda b: {"size": len(b), "sha256": _sha(b), "git_oid": "0" * 40}),
    ("size-too-small", SMALL, lambda b: {"size": len(b) - 1}),
    ("size-too-large", SMALL, lambda b: {"size": len(b) + 1}),
    ("size-too-large-with-sha256", BIG, lambda b: {"size": len(b) + 1, "sha256": _sha(b)}),
]


class BlobStoreSuite:
    """Behaviours of ``mirror.storage.blobs.BlobStore`` over a driver."""

    @pytest.fixture
    def store(self, harness: Harness) -> BlobStore:
        store = BlobStore(harness.driver)  # type: ignore[arg-type]
        store.check_layout()
        return store

    def _spy_moves(self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> _MoveRecorder:
        recorder = _MoveRecorder(harness.driver.move)  # type: ignore[attr-defined]
        monkeypatch.setattr(harness.driver, "move", recorder)
        return recorder

    def test_ingest_with_known_sha256_writes_the_final_key(
        self, harness: Harness, store: BlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        moves = self._spy_moves(harness, monkeypatch)
        sha = _sha(BIG)
        w = store.ingest(size=len(BIG), sha256=sha, git_oid=blob_oid(BIG))
        w.write(BIG[: PART_SIZE + MiB])
        keys = harness.pending_upload_keys()
        if keys is not None:
            assert keys == [layout.blob_key(sha)], "an LFS blob should stream to its final key"
        assert list(store.driver.iter_keys(layout.UPLOADS_PREFIX)) == []
        assert not store.has(sha), "unverified bytes must not be visible"
        w.write(BIG[PART_SIZE + MiB :])
        digests = w.commit()
        assert (digests.size, digests.sha256, digests.git_oid) == (len(BIG), sha, blob_oid(BIG))
        assert moves.calls == []
        assert store.has(sha) and store.stat(sha).size == len(BIG)
        with store.open(sha) as f:
            assert _read_all(f) == BIG
        assert harness.pending_uploads() == []
        assert list(store.driver.iter_keys(layout.UPLOADS_PREFIX)) == []

    @pytest.mark.parametrize("data", [SMALL, BIG], ids=["small", "big"])
    def test_ingest_without_sha256_uploads_then_moves(
        self, harness: Harness, store: BlobStore, monkeypatch: pytest.MonkeyPatch, data: bytes
    ) -> None:
        moves = self._spy_moves(harness, monkeypatch)
        digests = store.ingest_file(_Reader(data), size=len(data))
        assert digests.sha256 == _sha(data) and digests.git_oid == blob_oid(data) and digests.size == len(data)
        assert len(moves.calls) == 1
        src, dst = moves.calls[0]
        assert src.startswith(layout.UPLOADS_PREFIX)
        assert dst == layout.blob_key(_sha(data))
        assert list(store.driver.iter_keys(layout.UPLOADS_PREFIX)) == []
        assert list(store.iter_digests()) == [_sha(data)]
        with store.open(_sha(data)) as f:
            assert _read_all(f) == data
        assert harness.pending_uploads() == []

    def test_ingest_with_git_oid_only(self, store: BlobStore) -> None:
        d = store.ingest_file(_Reader(SMALL), size=len(SMALL), git_oid=blob_oid(SMALL))
        assert d.sha256 == _sha(SMALL)
        assert store.has(_sha(SMALL))

    def test_ingest_empty_blob(self, store: BlobStore) -> None:
        d = store.ingest_file(_Reader(b""), size=0, sha256=_sha(b""))
        assert d.git_oid == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
        assert store.stat(_sha(b"")).size == 0

    @pytest.mark.parametrize(("label", "data", "kwargs"), _MISMATCHES, ids=[m[0] for m in _MISMATCHES])
    def test_mismatch_raises_and_leaves_nothing(
        self, harness: Harness, store: BlobStore, label: str, data: bytes, kwargs: Callable[[bytes], dict[str, object]]
    ) -> None:
        before = harness.raw_objects()
        with pytest.raises(DigestMismatchError):
            store.ingest_file(_Reader(data), **kwargs(data), chunk_size=2 * MiB)  # type: ignore[arg-type]
        assert harness.raw_objects() == before, "no object (not even a temporary one) may remain"
        assert harness.pending_uploads() == []
        assert list(store.iter_digests()) == []
        assert list(store.driver.iter_keys(layout.UPLOADS_PREFIX)) == []
        assert not store.has(_sha(data))
        claimed = kwargs(data).get("sha256")
        if claimed:
            assert not store.has(claimed)  # type: ignore[arg-type]

    def test_mismatch_does_not_touch_an_existing_blob(self, harness: Harness, store: BlobStore) -> None:
        store.ingest_file(_Reader(SMALL), size=len(SMALL))
        with pytest.raises(DigestMismatchError):
            store.ingest_file(_Reader(b"evil bytes"), size=10, sha256=_sha(SMALL))
        with store.open(_sha(SMALL)) as f:
            assert f.read() == SMALL
        assert harness.pending_uploads() == []

    def test_error_inside_ingest_block_leaves_nothing(self, harness: Harness, store: BlobStore) -> None:
        before = harness.raw_objects()
        with pytest.raises(RuntimeError):
            with store.ingest(size=len(BIG), sha256=_sha(BIG)) as w:
                _write_in_chunks(w, BIG[: 2 * PART_SIZE])
                raise RuntimeError("source went away")
        assert harness.raw_objects() == before
        assert harness.pending_uploads() == []

    def test_leaving_ingest_block_without_commit_leaves_nothing(self, harness: Harness, store: BlobStore) -> None:
        before = harness.raw_objects()
        with store.ingest(size=len(SMALL)) as w:
            w.write(SMALL)
        assert harness.raw_objects() == before
        assert not store.has(_sha(SMALL))

    def test_batched_blobs_become_visible_at_flush(self, harness: Harness, store: BlobStore) -> None:
        deferred = harness.kind == "local"  # an S3 commit is durable on return: a batch changes nothing there
        with store.batch() as batch:
            d = store.ingest_file(_Reader(SMALL), size=len(SMALL), batch=batch)  # sha256 not known in advance
            with store.ingest(size=len(BIG), sha256=_sha(BIG), git_oid=blob_oid(BIG), batch=batch) as w:
                _write_in_chunks(w, BIG)
                w.commit()
            assert d.sha256 == _sha(SMALL)
            assert store.has(_sha(SMALL)) is not deferred and store.has(_sha(BIG)) is not deferred
            assert batch.flush() == (2 if deferred else 0)
            assert store.has(_sha(SMALL)) and store.has(_sha(BIG))
            store.ingest_file(_Reader(b"third"), size=5, batch=batch)  # flushed when the block ends
        with store.open(_sha(BIG)) as f:
            assert _read_all(f) == BIG
        assert store.driver.get_bytes(layout.blob_key(_sha(b"third"))) == b"third"
        assert sorted(store.iter_digests()) == sorted(_sha(b) for b in (SMALL, BIG, b"third"))
        assert list(store.driver.iter_keys(layout.UPLOADS_PREFIX)) == []
        assert harness.pending_uploads() == []

    def test_a_failed_batch_keeps_only_what_was_flushed(self, harness: Harness, store: BlobStore) -> None:
        with pytest.raises(RuntimeError):
            with store.batch() as batch:
                store.ingest_file(_Reader(b"flushed"), size=7, batch=batch)
                batch.flush()
                store.ingest_file(_Reader(SMALL), size=len(SMALL), batch=batch)
                raise RuntimeError("the sync failed")
        assert store.has(_sha(b"flushed"))
        assert store.has(_sha(SMALL)) is (harness.kind != "local")
        assert harness.pending_uploads() == []

    def test_dedupe_keeps_one_blob(self, store: BlobStore) -> None:
        store.ingest_file(_Reader(SMALL), size=len(SMALL), sha256=_sha(SMALL))
        store.ingest_file(_Reader(SMALL), size=len(SMALL))
        store.ingest_file(_Reader(SMALL), size=len(SMALL), sha256=_sha(SMALL))
        assert list(store.driver.iter_keys(layout.BLOBS_PREFIX)) == [layout.blob_key(_sha(SMALL))]
        assert list(store.iter_digests()) == [_sha(SMALL)]
        assert list(store.driver.iter_keys(layout.UPLOADS_PREFIX)) == []

    def test_iter_digests(self, store: BlobStore) -> None:
        blobs = [b"one", b"two", b"three", b""]
        for b in blobs:
            store.ingest_file(_Reader(b), size=len(b))
        store.driver.put_bytes("blobs/sha256/zz/junk", b"not a blob")
        store.driver.put_bytes(f"blobs/sha256/00/00/{_sha(b'one')}", b"misplaced")  # wrong fan-out folders
        store.put_manifest(_manifest())
        assert list(store.iter_digests()) == sorted(_sha(b) for b in blobs)

    def test_open_blob_range_and_missing_blob(self, store: BlobStore) -> None:
        store.ingest_file(_Reader(b"0123456789"), size=10)
        with store.open(_sha(b"0123456789"), 4, 3) as f:
            assert f.read() == b"456"
        with pytest.raises(BlobNotFoundError):
            store.open(_sha(b"missing"))
        assert store.stat(_sha(b"missing")) is None
        assert not store.has(_sha(b"missing"))

    def test_open_verified_checks_the_stored_size(self, store: BlobStore) -> None:
        data = b"0123456789"
        store.ingest_file(_Reader(data), size=len(data))
        with store.open_verified(_sha(data), size=len(data)) as f:
            assert _read_all(f) == data
        with store.open_verified(_sha(data), size=len(data), offset=2, length=3) as f:
            assert f.read() == b"234"
        with store.open_verified(_sha(data), size=len(data), offset=7) as f:
            assert _read_all(f) == b"789"
        for wrong in (len(data) - 1, len(data) + 1):
            with pytest.raises(BlobCorruptError):
                store.open_verified(_sha(data), size=wrong)
            with pytest.raises(BlobCorruptError):
                store.open_verified(_sha(data), size=wrong, offset=2, length=3)
        with pytest.raises(BlobNotFoundError):
            store.open_verified(_sha(b"missing"), size=1)

    def test_delete_blob(self, store: BlobStore) -> None:
        store.ingest_file(_Reader(SMALL), size=len(SMALL))
        store.delete(_sha(SMALL))
        assert not store.has(_sha(SMALL))
        store.delete(_sha(SMALL))

    def test_manifest_round_trip(self, store: BlobStore) -> None:
        m = _manifest()
        digest = store.put_manifest(m)
        assert digest == m.digest() == hashlib.sha256(m.to_canonical_json()).hexdigest()
        raw = store.driver.get_bytes(layout.manifest_key(REPO, COMMIT))
        assert raw == m.to_canonical_json()
        assert layout.manifest_key(REPO, COMMIT) == f"manifests/models--acme--tiny/{COMMIT}.json"
        back = store.get_manifest(REPO, COMMIT)
        assert back == m
        assert back.to_canonical_json() == raw

    def test_missing_manifest(self, store: BlobStore) -> None:
        with pytest.raises(ObjectNotFoundError):
            store.get_manifest(REPO, "2" * 40)

    def test_put_ref(self, store: BlobStore) -> None:
        store.put_ref(REPO, "refs/heads/main", COMMIT)
        assert store.driver.get_bytes("refs/models--acme--tiny/refs/heads/main") == f"{COMMIT}\n".encode()

    def test_signature_and_provenance_round_trip(self, store: BlobStore) -> None:
        with pytest.raises(ObjectNotFoundError):
            store.get_signature(REPO, COMMIT)
        assert store.get_provenance(REPO, COMMIT) == {}
        store.put_signature(REPO, COMMIT, b"\x00bundle")
        store.put_provenance(REPO, COMMIT, {"instance": "hubgate", "source": "import"})
        assert store.get_signature(REPO, COMMIT) == b"\x00bundle"
        assert store.get_provenance(REPO, COMMIT) == {"instance": "hubgate", "source": "import"}
        # neither is mistaken for a manifest or a blob
        assert list(store.iter_digests()) == []
        with pytest.raises(ObjectNotFoundError):
            store.get_manifest(REPO, COMMIT)

    def test_check_layout_writes_marker(self, harness: Harness) -> None:
        store = BlobStore(harness.driver)  # type: ignore[arg-type]
        assert harness.driver.stat(layout.LAYOUT_KEY) is None  # type: ignore[attr-defined]
        store.check_layout()
        assert harness.driver.get_bytes(layout.LAYOUT_KEY) == b"1\n"  # type: ignore[attr-defined]
        store.check_layout()  # an existing store of this version is accepted as is
        assert harness.driver.get_bytes(layout.LAYOUT_KEY) == b"1\n"  # type: ignore[attr-defined]

    def test_check_layout_refuses_unknown_version(self, harness: Harness) -> None:
        harness.driver.put_bytes(layout.LAYOUT_KEY, b"2\n")  # type: ignore[attr-defined]
        with pytest.raises(StorageError, match="'2'"):
            BlobStore(harness.driver).check_layout()  # type: ignore[arg-type]
        assert harness.driver.get_bytes(layout.LAYOUT_KEY) == b"2\n"  # type: ignore[attr-defined]

    def test_redirect_and_local_path_of_blob(self, harness: Harness, store: BlobStore) -> None:
        store.ingest_file(_Reader(SMALL), size=len(SMALL))
        url = store.redirect_url(_sha(SMALL), filename="a.bin")
        path = store.local_path(_sha(SMALL))
        if harness.kind == "local":
            assert url is None
            assert path is not None and path.read_bytes() == SMALL
        else:
            assert path is None
            assert httpx.get(url, timeout=30).content == SMALL  # type: ignore[arg-type]


class _Reader:
    """A minimal binary source (what ``ingest_file`` reads from)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk
