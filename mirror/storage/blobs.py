"""The content-addressed blob store over any driver: ingest -> hash while writing -> verify -> commit.

A blob becomes visible under ``blobs/sha256/…`` only after its size and digests match what
was expected. When the sha256 is known in advance (LFS files) the writer targets the final key
directly (an S3 multipart upload completed only after verification); otherwise it writes to
``uploads/<uuid>`` and moves the object once the sha256 is known.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from mirror.digests import Digests, Hasher, check
from mirror.errors import BlobCorruptError, BlobNotFoundError, ObjectNotFoundError, StorageError
from mirror.readahead import read_chunks
from mirror.storage import layout
from mirror.storage.driver import ObjectInfo, ObjectWriter, StorageDriver
from registry.manifest import Manifest
from registry.types import RepoRef

log = logging.getLogger(__name__)

_PARALLEL_WRITE_MIN = 1024 * 1024


@functools.cache
def _write_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob-write")


def write_beside_hashing(hasher: Hasher, write: Callable[[bytes | memoryview], object], data: bytes | memoryview) -> None:
    """Hash ``data`` and ``write`` it. For a big chunk the write (a copy into the page cache, throttled to the
    disk's pace when the cache is full, or an upload) runs beside the hashing, which itself runs sha256 and
    sha1 side by side: all three release the GIL, so a chunk costs the slowest of them, not their sum."""
    if len(data) < _PARALLEL_WRITE_MIN:
        hasher.update(data)
        write(data)
        return
    pending = _write_pool().submit(write, data)
    try:
        hasher.update(data)
    finally:
        pending.result()


class BlobWriter:
    """Context manager returned by ``BlobStore.ingest``. Leaving it with an error discards everything."""

    def __init__(
        self, store: "BlobStore", *, size: int, sha256: str | None, git_oid: str | None, what: str,
        batch: "BlobBatch | None" = None,
    ) -> None:
        self._store, self._expect_sha256, self._expect_oid, self._what = store, sha256, git_oid, what
        self._batch = batch._inner if batch is not None else None
        self._hasher = Hasher(size, what)
        self._key = layout.blob_key(sha256) if sha256 else layout.upload_key()
        self._writer: ObjectWriter | None = store.driver.writer(self._key)
        self.digests: Digests | None = None

    def write(self, data: bytes | memoryview) -> None:
        assert self._writer is not None, "writer is closed"
        write_beside_hashing(self._hasher, self._writer.write, data)

    @property
    def written(self) -> int:
        return self._hasher.size

    def commit(self) -> Digests:
        """Verify, then make the blob visible. Raises DigestMismatchError (and discards) on any mismatch."""
        assert self._writer is not None, "writer is closed"
        try:
            digests = self._hasher.finish()
            check(digests, sha256=self._expect_sha256, git_oid=self._expect_oid, what=self._what)
        except BaseException:
            self.cancel()
            raise
        writer, self._writer = self._writer, None
        if self._batch is not None:  # visible at the batch's flush, under its content address
            self._batch.add(writer, layout.blob_key(digests.sha256))
        else:
            writer.commit()
            if self._expect_sha256 is None:
                self._store.driver.move(self._key, layout.blob_key(digests.sha256))
        self.digests = digests
        return digests

    def cancel(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.cancel()

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None or self.digests is None:
            self.cancel()


class BlobBatch:
    """Blobs committed into a batch (``ingest(…, batch=…)``) become visible together at ``flush``, each
    only once durable: many small blobs cost one round of disk flushes instead of two fsyncs each.
    Until then ``commit`` has verified a blob but it is not in the store: record it anywhere (a
    ``KnownBlob`` row, a manifest) only after the ``flush`` that made it visible. Leaving the block
    flushes on success and discards the unflushed blobs on an error. On a store whose every commit is
    durable on return (S3) a batch changes nothing.
    """

    def __init__(self, store: "BlobStore") -> None:
        self._inner = store.driver.batch()

    def flush(self) -> int:
        """Make the blobs committed so far durable and visible; returns how many. Raises StorageError."""
        return self._inner.flush() if self._inner is not None else 0

    def hand_off(self) -> list[tuple[str, str]]:
        """The blobs committed so far, unflushed, for a batch of the same store in another process to ``adopt``
        (mirror/fetchpool.py); this batch forgets them. Empty on a store without batches."""
        return self._inner.hand_off() if self._inner is not None else []

    def adopt(self, staged: list[tuple[str, str]]) -> None:
        """Flush, with this batch, blobs that another process's batch of the same store handed off."""
        if staged:
            if self._inner is None:
                raise StorageError("This store has no batches: nothing can be handed to one")
            self._inner.adopt(staged)

    def __enter__(self) -> "BlobBatch":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._inner is None:
            return
        if exc_type is None:
            self._inner.flush()
        else:
            self._inner.cancel()


class BlobStore:
    def __init__(self, driver: StorageDriver, *, presign_ttl_seconds: int = 3600) -> None:
        self.driver = driver
        self.presign_ttl_seconds = presign_ttl_seconds

    def check_layout(self) -> None:
        """Write the layout marker on a new store; refuse a store of an unknown layout version."""
        try:
            version = self.driver.get_bytes(layout.LAYOUT_KEY).decode().strip()
        except ObjectNotFoundError:
            self.driver.put_bytes(layout.LAYOUT_KEY, layout.LAYOUT_VERSION.encode() + b"\n")
            return
        if version != layout.LAYOUT_VERSION:
            raise StorageError(f"The store has layout version {version!r}; this hubgate knows {layout.LAYOUT_VERSION!r}")

    # blobs
    def stat(self, sha256: str) -> ObjectInfo | None:
        return self.driver.stat(layout.blob_key(sha256))

    def has(self, sha256: str) -> bool:
        return self.stat(sha256) is not None

    def open(self, sha256: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        try:
            return self.driver.open(layout.blob_key(sha256), offset, length)
        except ObjectNotFoundError as exc:
            raise BlobNotFoundError(f"Blob {sha256} is missing from the store") from exc

    def open_verified(self, sha256: str, *, size: int, offset: int = 0, length: int | None = None) -> BinaryIO:
        """Open a blob for serving; refuse it if the store holds another size than the manifest says."""
        reader = self.open(sha256, offset, length)
        actual = getattr(reader, "object_size", None)
        if actual is not None and actual != size:
            reader.close()
            log.error("blob %s is %d bytes in the store, %d in the manifest: refusing to serve it", sha256, actual, size)
            raise BlobCorruptError(f"Blob {sha256} failed its size check; it needs repair")
        return reader

    def ingest(self, *, size: int, sha256: str | None = None, git_oid: str | None = None, what: str = "blob",
               batch: BlobBatch | None = None) -> BlobWriter:
        """A writer for one blob; with ``batch`` its commit takes effect at the batch's flush."""
        return BlobWriter(self, size=size, sha256=sha256, git_oid=git_oid, what=what, batch=batch)

    def batch(self) -> BlobBatch:
        return BlobBatch(self)

    def ingest_file(self, source: BinaryIO, *, size: int, sha256: str | None = None, git_oid: str | None = None,
                    what: str = "blob", chunk_size: int = 8 * 1024 * 1024, batch: BlobBatch | None = None) -> Digests:
        """Copy ``source`` in, hashing as it goes. Raises DigestMismatchError on a mismatch.

        On a store that cannot move objects cheaply (S3: a move is a server-side copy) a seekable
        source is hashed first, so the blob goes straight to its final key in one upload.
        """
        seekable = getattr(source, "seekable", None)
        if sha256 is None and not self.driver.cheap_move and seekable is not None and seekable() and size > chunk_size:
            h = hashlib.sha256()
            with closing(read_chunks(source, chunk_size, size=size)) as chunks:
                for chunk in chunks:
                    h.update(chunk)
            sha256 = h.hexdigest()
            source.seek(0)
        with self.ingest(size=size, sha256=sha256, git_oid=git_oid, what=what, batch=batch) as w:
            with closing(read_chunks(source, chunk_size, size=size)) as chunks:
                for chunk in chunks:
                    w.write(chunk)
            return w.commit()

    def redirect_url(self, sha256: str, *, filename: str) -> str | None:
        return self.driver.redirect_url(layout.blob_key(sha256), ttl_seconds=self.presign_ttl_seconds, filename=filename)

    def local_path(self, sha256: str) -> Path | None:
        return self.driver.local_path(layout.blob_key(sha256))

    def delete(self, sha256: str) -> None:
        self.driver.delete(layout.blob_key(sha256))

    def iter_digests(self) -> Iterator[str]:
        for key in self.driver.iter_keys(layout.BLOBS_PREFIX):
            digest = layout.digest_from_blob_key(key)
            if digest:
                yield digest

    # manifests and refs
    def put_manifest(self, manifest: Manifest) -> str:
        """Store the canonical manifest; return its digest."""
        data = manifest.to_canonical_json()
        self.driver.put_bytes(layout.manifest_key(manifest.repo, manifest.commit), data)
        return manifest.digest()

    def get_manifest(self, repo: RepoRef, commit: str) -> Manifest:
        return Manifest.from_json(self.driver.get_bytes(layout.manifest_key(repo, commit)))

    def put_signature(self, repo: RepoRef, commit: str, bundle: bytes) -> None:
        self.driver.put_bytes(layout.signature_key(repo, commit), bundle)

    def get_signature(self, repo: RepoRef, commit: str) -> bytes:
        """Raises ObjectNotFoundError when the snapshot is unsigned."""
        return self.driver.get_bytes(layout.signature_key(repo, commit))

    def put_provenance(self, repo: RepoRef, commit: str, provenance: dict[str, object],
                       signature: bytes | None = None) -> None:
        """Store the provenance record, and its signature when given (an unsigned rewrite drops a stale one)."""
        data = json.dumps(provenance, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        self.driver.put_bytes(layout.provenance_key(repo, commit), data)
        if signature is not None:
            self.driver.put_bytes(layout.provenance_signature_key(repo, commit), signature)
        else:
            self.driver.delete(layout.provenance_signature_key(repo, commit))

    def get_provenance_signature(self, repo: RepoRef, commit: str) -> bytes:
        """Raises ObjectNotFoundError when the provenance is unsigned."""
        return self.driver.get_bytes(layout.provenance_signature_key(repo, commit))

    def get_provenance(self, repo: RepoRef, commit: str) -> dict[str, object]:
        try:
            value = json.loads(self.driver.get_bytes(layout.provenance_key(repo, commit)))
        except ObjectNotFoundError:
            return {}
        return value if isinstance(value, dict) else {}

    def delete_snapshot(self, repo: RepoRef, commit: str) -> None:
        """Remove a snapshot's manifest, signature and provenance (its blobs stay until gc)."""
        for key in (layout.manifest_key, layout.signature_key, layout.provenance_key, layout.provenance_signature_key):
            self.driver.delete(key(repo, commit))

    def put_ref(self, repo: RepoRef, ref_name: str, commit: str) -> None:
        self.driver.put_bytes(layout.ref_key(repo, ref_name), commit.encode() + b"\n")

    def delete_ref(self, repo: RepoRef, ref_name: str) -> None:
        self.driver.delete(layout.ref_key(repo, ref_name))
