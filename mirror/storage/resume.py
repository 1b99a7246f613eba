"""Resumable blob writes: a copy that is killed (SIGKILL, a pulled cable, a full disk) goes on, next time,
from the bytes it already wrote instead of byte 0.

Only drivers with a ``partial(key)`` capability support it (the local store: the partial file lives in
``.tmp/`` and survives the process). Elsewhere ``resumable_writer`` returns None and callers use the
ordinary ``BlobStore.ingest`` (an S3 multipart upload cannot be read back to re-hash its prefix).

The checkpoint is verified: the bytes already there are re-hashed (sha256 and git blob id state cannot
be saved, so they are rebuilt from the bytes), the rest is appended, and the whole blob must match its
expected sha256 and size before it becomes visible; a mismatch discards the partial file, so the next
run starts clean. A partial longer than the blob is cut to its size (the final check decides).
"""

from __future__ import annotations

from types import TracebackType

from mirror.digests import Digests, Hasher, check
from mirror.errors import DigestMismatchError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore

_CHUNK = 8 * 1024 * 1024


class ResumableWriter:
    """``resumed_at`` bytes are in already: write the rest, then ``commit``. Leaving the block with an
    error keeps the bytes written (for the next run), except after a digest mismatch."""

    def __init__(self, partial: object, *, size: int, sha256: str, git_oid: str | None, what: str) -> None:
        self._partial, self._sha256, self._git_oid, self._what = partial, sha256, git_oid, what
        self._hasher = Hasher(size, what)
        self.digests: Digests | None = None
        existing = partial.existing()  # type: ignore[attr-defined]
        if existing is not None:
            with existing:
                kept = 0
                while chunk := existing.read(min(_CHUNK, size - kept)):
                    self._hasher.update(chunk)
                    kept += len(chunk)
                    if kept >= size:
                        break
            partial.truncate(kept)  # type: ignore[attr-defined]  # nothing past what was re-hashed
        self.resumed_at = self._hasher.size

    def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._partial.write(data)  # type: ignore[attr-defined]

    @property
    def written(self) -> int:
        return self._hasher.size

    def commit(self) -> Digests:
        """Verify the whole blob, then make it visible. Raises DigestMismatchError (and discards the partial)."""
        try:
            digests = self._hasher.finish()
            check(digests, sha256=self._sha256, git_oid=self._git_oid, what=self._what)
        except DigestMismatchError:
            self._partial.discard()  # type: ignore[attr-defined]
            raise
        self._partial.commit()  # type: ignore[attr-defined]
        self.digests = digests
        return digests

    def __enter__(self) -> "ResumableWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.digests is None:
            self._partial.close()  # type: ignore[attr-defined]  # kept: the next run resumes from it


def resumable_writer(store: BlobStore, *, size: int, sha256: str, git_oid: str | None = None,
                     what: str = "blob") -> ResumableWriter | None:
    """A resumable writer of blob ``sha256`` (its partial bytes re-hashed), or None when the store's driver
    cannot keep partial writes."""
    partial = getattr(store.driver, "partial", None)
    if partial is None:
        return None
    return ResumableWriter(partial(layout.blob_key(sha256)), size=size, sha256=sha256, git_oid=git_oid, what=what)
