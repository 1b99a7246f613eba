"""The storage driver contract: dumb keyed objects. Content addressing and verification live above, in blobs.py.

Keys are relative, ``/``-separated and built only by ``layout.py``. Optional capabilities
(``redirect_url``, ``local_path``) return None instead of raising when a driver lacks them; ``partial(key)``
(a ``PartialWrite``, for resumable copies: mirror/storage/resume.py) is an attribute only drivers that keep
partial writes have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # unix seconds


class ObjectWriter(Protocol):
    """Bytes written here are invisible until ``commit``; ``cancel`` discards them."""

    def write(self, data: bytes | memoryview) -> None: ...
    def commit(self) -> None: ...
    def cancel(self) -> None: ...


class PartialWrite(Protocol):
    """A write that outlives its process (a driver's optional ``partial(key)``), so a killed copy goes on.

    Every run writes the object from byte 0. The first ``kept`` bytes are what a killed run left: they are
    checked against the bytes written over them and stored again only from where they differ (a kept
    prefix is a claim, never trusted unchecked); the rest is stored as it comes. Nothing is visible under
    the key before ``commit``. A partial write is listed by ``iter_partial_writes`` (gc sweeps it).
    """

    kept: int  # bytes a killed run left, as claimed before any was checked

    @property
    def reused(self) -> int:
        """Bytes of the kept prefix checked so far and found equal: not stored again."""
        ...

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self) -> None:
        """Make the bytes written the object (the caller has verified their digests)."""
        ...

    def discard(self) -> None:
        """Drop the kept bytes and all written: the next run starts clean."""
        ...

    def close(self) -> None:
        """Stop without committing, keeping what is stored for the next run."""
        ...


class WriteBatch(Protocol):
    """Writers committed into a batch become visible (and durable) together, at ``flush``: one round of
    disk flushes for many small objects instead of two fsyncs each."""

    def add(self, writer: ObjectWriter, key: str) -> None:
        """Take ``writer`` (written, not committed) to be committed under ``key`` at the next flush."""
        ...

    def flush(self) -> int:
        """Make every object added so far durable, then visible; returns how many. Raises StorageError."""
        ...

    def cancel(self) -> None:
        """Discard every object added and not flushed."""
        ...

    def hand_off(self) -> list[tuple[str, str]]:
        """Give up the objects added and not flushed, as names another process's batch of the same store can
        ``adopt`` (plain strings: they cross a pipe)."""
        ...

    def adopt(self, staged: list[tuple[str, str]]) -> None:
        """Take over objects another process's batch handed off; they are flushed with this batch."""
        ...


class StorageDriver(Protocol):
    name: str
    cheap_move: bool  # True when move() is a rename (local disk), False when it copies (S3)

    def stat(self, key: str) -> ObjectInfo | None: ...

    def open(self, key: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        """A reader of ``length`` bytes (all when None) from ``offset``. Raises ObjectNotFoundError."""
        ...

    def writer(self, key: str) -> ObjectWriter: ...

    def batch(self) -> WriteBatch | None:
        """A batch for committing many writers at once, or None when each commit is durable on return
        anyway (S3) and batching would gain nothing."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Whole object; meant for small ones (manifests, refs). Raises ObjectNotFoundError."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Atomic: readers see the old object or the new one, never a part."""
        ...

    def move(self, src: str, dst: str) -> None: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    def iter_keys(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix``, in lexicographic order."""
        ...

    def redirect_url(self, key: str, *, ttl_seconds: int, filename: str) -> str | None: ...

    def local_path(self, key: str) -> Path | None: ...

    def iter_partial_writes(self) -> Iterator[ObjectInfo]:
        """Writes that were started and never committed nor cancelled (a killed process): the local
        driver's temp files, S3's unfinished multipart uploads. ``key`` names one for the operator and
        for ``delete_partial_write``; ``modified`` is its last activity."""
        ...

    def delete_partial_write(self, key: str) -> None:
        """Discard one of ``iter_partial_writes``; a vanished one is not an error."""
        ...
