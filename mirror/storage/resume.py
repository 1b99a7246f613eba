"""Resumable blob writes: a copy that is killed (SIGKILL, a pulled cable, a full disk) goes on, next time,
from the bytes it already stored instead of byte 0.

Only drivers with a ``partial(key)`` capability support it: the local store (the partial file lives in
``.tmp/`` and survives the process) and S3 (the blob's unfinished multipart upload, found again by its key).
Elsewhere ``resumable_writer`` returns None and callers use the ordinary ``BlobStore.ingest``.

The caller writes the whole blob from byte 0 every time, from its source (the bundle member, read through
anyway). The sha256 and git blob id are computed from those bytes (hash states cannot be saved), and the
driver checks the prefix a killed run left against them, storing again only from where it differs: the
local store compares the bytes it reads back, S3 (whose parts cannot be read back) the MD5 of each part.
So the prefix is a verified checkpoint, not trusted; the whole blob must match its expected size,
sha256 and git blob id before it becomes visible, and a mismatch discards the partial write (the next
run starts clean).
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from mirror.digests import Digests, Hasher, check
from mirror.errors import DigestMismatchError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore, write_beside_hashing
from mirror.storage.driver import PartialWrite


class ResumableWriter:
    """Write the blob from byte 0, then ``commit``; of the first ``resumed_at`` bytes (a killed run's) only
    those that differ are stored again, and ``reused`` says how many were not. Leaving the block with an
    error keeps what is stored (for the next run), except after a digest mismatch."""

    def __init__(self, partial: PartialWrite, *, size: int, sha256: str, git_oid: str | None, what: str) -> None:
        self._partial, self._sha256, self._git_oid, self._what = partial, sha256, git_oid, what
        self._hasher = Hasher(size, what)
        self.digests: Digests | None = None
        self.resumed_at = min(partial.kept, size)  # claimed; checked as the bytes arrive

    def write(self, data: bytes | memoryview) -> None:
        write_beside_hashing(self._hasher, self._partial.write, data)

    @property
    def written(self) -> int:
        return self._hasher.size

    @property
    def reused(self) -> int:
        """Bytes of the killed run's prefix found equal to the source so far (not stored again)."""
        return min(self._partial.reused, self.resumed_at)

    def commit(self) -> Digests:
        """Verify the whole blob, then make it visible. Raises DigestMismatchError (and discards the partial)."""
        try:
            digests = self._hasher.finish()
            check(digests, sha256=self._sha256, git_oid=self._git_oid, what=self._what)
        except DigestMismatchError:
            self._partial.discard()
            raise
        self._partial.commit()
        self.digests = digests
        return digests

    def __enter__(self) -> "ResumableWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.digests is None:
            self._partial.close()  # kept: the next run resumes from it


class _ReadBack:
    """A ``PartialWrite`` over a partial file that can be read back (``LocalDriver.partial``: ``existing``,
    ``truncate``, ``write``, ``commit``, ``close``, ``discard``): the kept bytes are compared with the
    source's; from the first chunk that differs the file is cut and the source's bytes appended."""

    def __init__(self, partial: Any, size: int) -> None:
        self._partial = partial
        self._reader = partial.existing()
        self._offset = self.reused = self.kept = 0
        if self._reader is not None:
            self.kept = min(os.fstat(self._reader.fileno()).st_size, size)
            partial.truncate(self.kept)  # nothing past the blob's size is trusted
        self._unchecked_end = self.kept  # the file's bytes before this offset are still to be compared

    def write(self, data: bytes | memoryview) -> None:
        if self._offset < self._unchecked_end:
            n = min(len(data), self._unchecked_end - self._offset)
            assert self._reader is not None
            if self._reader.read(n) == data[:n]:
                self._offset += n
                self.reused += n
                data = data[n:]
            else:
                self._cut()
        if len(data):
            self._partial.write(data)
            self._offset += len(data)

    def _cut(self) -> None:
        """The kept bytes differ from the source from this chunk on: drop them, store the source's instead."""
        self._unchecked_end = self._offset
        self._partial.truncate(self._offset)
        self._close_reader()

    def commit(self) -> None:
        self._close_reader()
        self._partial.commit()

    def discard(self) -> None:
        self._close_reader()
        self._partial.discard()

    def close(self) -> None:
        self._close_reader()
        self._partial.close()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _partial_write(driver: object, key: str, size: int) -> PartialWrite | None:
    """The driver's resumable write of ``key``, or None when it cannot keep partial writes."""
    partial = getattr(driver, "partial", None)
    if partial is None:
        return None
    made = partial(key)
    if hasattr(made, "existing"):  # a partial file that can be read back: its bytes are compared
        return _ReadBack(made, size)
    return made  # type: ignore[no-any-return]  # a PartialWrite itself (S3: checks its parts' MD5)


def resumable_writer(store: BlobStore, *, size: int, sha256: str, git_oid: str | None = None,
                     what: str = "blob") -> ResumableWriter | None:
    """A resumable writer of blob ``sha256``, or None when the store's driver cannot keep partial writes."""
    partial = _partial_write(store.driver, layout.blob_key(sha256), size)
    if partial is None:
        return None
    return ResumableWriter(partial, size=size, sha256=sha256, git_oid=git_oid, what=what)
