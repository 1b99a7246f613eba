"""The Xet side of the content-addressed store: xorbs, shards and per-file reconstruction records.

Every key comes from mirror/storage/layout.py. A file's record (``xet/files/…``) is written only after
its xorbs are stored and verified; the pointer from the blob's sha256 to it (``xet/sha256/…``) is
written last, and is what makes the API advertise Xet for that blob. Deleting the pointer (a corrupt
xorb, ``verify``) takes the advertisement back at once: clients then get the plain answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from mirror.errors import ObjectNotFoundError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from mirror.xet import formats, hashing

log = logging.getLogger(__name__)
RECORD_SCHEMA = "hubgate.xet-file/1"
_NEGATIVE_SECONDS = 5.0


@dataclass(frozen=True)
class XetTerm:
    """Chunks [chunk_start, chunk_end) of one xorb: bytes [byte_start, byte_end] of it, unpacking to ``sizes``."""

    xorb: str
    chunk_start: int
    chunk_end: int
    byte_start: int
    byte_end: int  # inclusive, as HTTP ranges and the protocol's url_range
    sizes: tuple[int, ...]

    @property
    def unpacked_size(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class XetFile:
    """A file's reconstruction: what ``/reconstructions/{file_hash}`` answers from."""

    file_hash: str
    sha256: str
    size: int
    terms: tuple[XetTerm, ...]
    shard: str | None = None  # sha256 of the shard that registered it

    def to_json(self) -> bytes:
        doc = {"schema": RECORD_SCHEMA, "file_hash": self.file_hash, "sha256": self.sha256, "size": self.size,
               "shard": self.shard,
               "terms": [{"xorb": t.xorb, "chunks": [t.chunk_start, t.chunk_end], "bytes": [t.byte_start, t.byte_end],
                          "sizes": list(t.sizes)} for t in self.terms]}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "XetFile":
        doc: dict[str, Any] = json.loads(data)
        if doc.get("schema") != RECORD_SCHEMA:
            raise formats.XetFormatError(f"unknown Xet file record schema {doc.get('schema')!r}")
        terms = tuple(XetTerm(t["xorb"], t["chunks"][0], t["chunks"][1], t["bytes"][0], t["bytes"][1],
                              tuple(t["sizes"])) for t in doc["terms"])
        f = cls(doc["file_hash"], doc["sha256"], doc["size"], terms, doc.get("shard"))
        if sum(t.unpacked_size for t in terms) != f.size:
            raise formats.XetFormatError(f"Xet file record {f.file_hash}: terms do not add up to its size")
        return f

    @property
    def xorbs(self) -> set[str]:
        return {t.xorb for t in self.terms}


def checked_terms(file_hash: str, terms: Sequence[tuple[str, int, int, bytes | None, int | None]],
                  footer_of: Callable[[str], formats.XorbFooter]) -> tuple[XetTerm, ...]:
    """The terms of file ``file_hash`` — (xorb, chunk start, chunk end, verification hash or None, unpacked size
    or None) each — checked against the xorbs' footers: chunk ranges inside the xorb, the term verification
    hash and size where given, and the file hash over all their chunk hashes. Returns them with their xorb
    byte ranges and chunk sizes. Raises XetFormatError, ObjectNotFoundError (a xorb is not stored)."""
    entries: list[tuple[bytes, int]] = []
    out = []
    for xorb, start, end, range_hash, unpacked in terms:
        footer = footer_of(xorb)
        if not 0 <= start < end <= footer.num_chunks:
            raise formats.XetFormatError(f"file {file_hash}: chunk range {start}..{end} is not inside xorb {xorb}")
        hashes = footer.chunk_hashes[start:end]
        if range_hash is not None and hashing.range_hash(hashes) != range_hash:
            raise formats.XetFormatError(f"file {file_hash}: term verification hash mismatch")
        sizes = tuple(footer.unpacked_size(i) for i in range(start, end))
        if unpacked is not None and sum(sizes) != unpacked:
            raise formats.XetFormatError(f"file {file_hash}: term size disagrees with xorb {xorb}")
        entries += zip(hashes, sizes)
        first, last = footer.byte_range(start, end)
        out.append(XetTerm(xorb, start, end, first, last, sizes))
    if hashing.text(hashing.file_hash(entries)) != file_hash:
        raise formats.XetFormatError(f"file {file_hash}: file hash does not match its chunks")
    return tuple(out)


class _Lru:
    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._capacity, self._lock = capacity, threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._capacity:
                self._data.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)


class XetStore:
    """Xet objects in a BlobStore's driver. Thread-safe; caches what it reads (objects are immutable, and a
    pointer's absence is remembered for a few seconds only)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.driver = blobs.driver
        self._pointers = _Lru(100_000)  # sha256 -> (file hash | "", expires)
        self._files = _Lru(256)
        self._footers = _Lru(4096)

    # -- xorbs
    def has_xorb(self, xorb_hash: str) -> bool:
        return self.driver.stat(layout.xorb_key(xorb_hash)) is not None

    def put_xorb(self, xorb_hash: str, data: bytes) -> None:
        """Store a xorb the caller verified (``formats.verify_xorb``)."""
        self.driver.put_bytes(layout.xorb_key(xorb_hash), data)

    def add_xorb(self, footer: formats.XorbFooter, data: bytes | memoryview) -> bool:
        """Store a verified xorb (``data``, whose ``footer`` the caller checked) unless it is stored already,
        with the dedup hints for its first and its dedup-eligible chunks. False when it was already stored."""
        xorb_hash = footer.xorb_hash
        inserted = not self.has_xorb(xorb_hash)
        if inserted:
            self.put_xorb(xorb_hash, bytes(data))
            for i, h in enumerate(footer.chunk_hashes):
                if i == 0 or hashing.is_dedup_eligible(h):
                    self.put_dedup_chunk(hashing.text(h), xorb_hash)
        self.remember_footer(footer)
        return inserted

    def xorb_size(self, xorb_hash: str) -> int | None:
        info = self.driver.stat(layout.xorb_key(xorb_hash))
        return None if info is None else info.size

    def read_xorb(self, xorb_hash: str) -> bytes:
        """Raises ObjectNotFoundError."""
        return self.driver.get_bytes(layout.xorb_key(xorb_hash))

    def open_xorb(self, xorb_hash: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        """Raises ObjectNotFoundError."""
        return self.driver.open(layout.xorb_key(xorb_hash), offset, length)

    def xorb_footer(self, xorb_hash: str) -> formats.XorbFooter:
        """The footer of a stored xorb (read from its tail, cached). Raises ObjectNotFoundError, XetFormatError."""
        footer = self._footers.get(xorb_hash)
        if footer is not None:
            return footer
        size = self.xorb_size(xorb_hash)
        if size is None:
            raise ObjectNotFoundError(f"xorb {xorb_hash} is not in the store")
        with self.open_xorb(xorb_hash, size - 4, 4) as f:
            n = formats.footer_length(f.read(4))
        if n > size:
            raise formats.XetFormatError(f"xorb {xorb_hash}: footer longer than the xorb")
        with self.open_xorb(xorb_hash, size - n, n) as f:
            footer = formats.parse_xorb_footer(f.read(n), size)
        if footer.xorb_hash != xorb_hash or not footer.unpacked_ends:
            raise formats.XetFormatError(f"xorb {xorb_hash}: its footer names {footer.xorb_hash}")
        self._footers.put(xorb_hash, footer)
        return footer

    def remember_footer(self, footer: formats.XorbFooter) -> None:
        self._footers.put(footer.xorb_hash, footer)

    def redirect_url(self, xorb_hash: str, ttl_seconds: int) -> str | None:
        return self.driver.redirect_url(layout.xorb_key(xorb_hash), ttl_seconds=ttl_seconds, filename=xorb_hash)

    def iter_xorbs(self) -> Iterator[str]:
        for key in self.driver.iter_keys(layout.XORBS_PREFIX):
            h = layout.xorb_from_key(key)
            if h:
                yield h

    def quarantine_xorb(self, xorb_hash: str) -> None:
        self.driver.move(layout.xorb_key(xorb_hash), layout.xorb_quarantine_key(xorb_hash))
        self._footers.drop(xorb_hash)

    def delete_xorb(self, xorb_hash: str) -> None:
        self.driver.delete(layout.xorb_key(xorb_hash))
        self._footers.drop(xorb_hash)

    # -- shards and the dedup index
    def put_shard(self, shard_sha256: str, data: bytes) -> None:
        self.driver.put_bytes(layout.shard_key(shard_sha256), data)

    def iter_shards(self) -> Iterator[str]:
        for key in self.driver.iter_keys(layout.SHARDS_PREFIX):
            h = layout.shard_from_key(key)
            if h:
                yield h

    def put_dedup_chunk(self, chunk_hash: str, xorb_hash: str) -> None:
        self.driver.put_bytes(layout.xet_chunk_key(chunk_hash), xorb_hash.encode())

    def dedup_xorb(self, chunk_hash: str) -> str | None:
        try:
            value = self.driver.get_bytes(layout.xet_chunk_key(chunk_hash)).decode()
        except ObjectNotFoundError:
            return None
        return value if hashing.is_hash(value) else None

    def xorb_file(self, xorb_hash: str) -> XetFile | None:
        """The record of a file that uses ``xorb_hash`` (any one), if stored."""
        try:
            file_hash = self.driver.get_bytes(layout.xet_xorb_file_key(xorb_hash)).decode()
        except ObjectNotFoundError:
            return None
        return self.get_file(file_hash) if hashing.is_hash(file_hash) else None

    # -- file records and the sha256 pointers
    def put_file(self, record: XetFile) -> None:
        """Store a verified record, then point its blob at it (the pointer is what the API advertises)."""
        self.driver.put_bytes(layout.xet_file_key(record.file_hash), record.to_json())
        for xorb in sorted(record.xorbs):  # so that a dedup answer can name every xorb of the file
            self.driver.put_bytes(layout.xet_xorb_file_key(xorb), record.file_hash.encode())
        self.driver.put_bytes(layout.xet_sha256_key(record.sha256), record.file_hash.encode())
        self._files.put(record.file_hash, record)
        self._pointers.put(record.sha256, (record.file_hash, float("inf")))

    def get_file(self, file_hash: str) -> XetFile | None:
        record = self._files.get(file_hash)
        if record is None:
            try:
                record = XetFile.from_json(self.driver.get_bytes(layout.xet_file_key(file_hash)))
            except ObjectNotFoundError:
                return None
            self._files.put(file_hash, record)
        return record  # type: ignore[no-any-return]

    def cached_file_hash(self, sha256: str) -> tuple[bool, str | None]:
        """(known, file hash) from the cache alone: no I/O, for the event loop."""
        hit = self._pointers.get(sha256)
        if hit is not None and hit[1] > time.monotonic():
            return True, hit[0] or None
        return False, None

    def file_hash_of(self, sha256: str) -> str | None:
        """The Xet file hash of a blob whose reconstruction is stored, else None. Cached."""
        hit = self._pointers.get(sha256)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0] or None
        try:
            value = self.driver.get_bytes(layout.xet_sha256_key(sha256)).decode().strip()
        except ObjectNotFoundError:
            value = ""
        if value and not hashing.is_hash(value):
            log.error("xet pointer for %s is malformed: ignoring it", sha256)
            value = ""
        self._pointers.put(sha256, (value, float("inf") if value else time.monotonic() + _NEGATIVE_SECONDS))
        return value or None

    def forget_file(self, sha256: str, file_hash: str | None) -> None:
        """Withdraw a blob's Xet representation: its pointer first (no more advertising), then its record."""
        self.driver.delete(layout.xet_sha256_key(sha256))
        self._pointers.drop(sha256)
        if file_hash:
            self.driver.delete(layout.xet_file_key(file_hash))
            self._files.drop(file_hash)

    def iter_files(self) -> Iterator[str]:
        for key in self.driver.iter_keys(layout.XET_FILES_PREFIX):
            h = layout.xet_file_from_key(key)
            if h:
                yield h

    def iter_pointers(self) -> Iterator[str]:
        """sha256 of every blob that has a Xet representation."""
        for key in self.driver.iter_keys(layout.XET_SHA256_PREFIX):
            name = key.rsplit("/", 1)[-1]
            if len(name) == 64:
                yield name
