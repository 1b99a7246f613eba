"""Bundles that carry the Xet form of large files (format version 2, mirror/bundles/format.py).

On the connected side, a new blob whose Xet representation is stored (and whose xorbs are all present)
travels as its reconstruction record (``xet/<aa>/<sha256>.json``) plus the xorbs (``xorbs/<aa>/<hash>``)
that neither this bundle nor an earlier one carried: the index's ``xorbs`` list is that watermark. A
fine-tune whose unchanged chunks live in its base model's xorbs so carries only its new chunks.

On the sealed side nothing from the other side is trusted:

* every xorb is checked twice: its sha256 against the signed index, then each chunk decompressed and
  hashed and the xorb hash recomputed (``formats.verify_xorb``), before it is stored;
* every record is checked against the xorb footers (chunk ranges, sizes, and the file hash over all chunk
  hashes, ``store.checked_terms``);
* the blob is rebuilt from the stored xorbs through the blob store's verifying writer: size, sha256 and
  git blob id must be those of the signed manifest, or nothing becomes visible;
* only then is the record stored, so this side serves the file over Xet too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from mirror.bundles.format import XORB, BundleError, Index, member_kind
from mirror.bundles.readers import Member, read_verified
from mirror.errors import DigestMismatchError, ObjectNotFoundError
from mirror.progress import NO_PROGRESS, Progress
from mirror.storage.blobs import BlobStore
from mirror.xet import formats
from mirror.xet.builder import iter_reconstruction
from mirror.xet.store import XetFile, XetStore, checked_terms

log = logging.getLogger(__name__)
_READ = 8 * 1024 * 1024


# -- export ----------------------------------------------------------------------------------------


@dataclass
class XetCarry:
    """What an export carries in Xet form: records by blob sha256, new xorbs by hash -> (size, sha256)."""

    records: dict[str, bytes] = field(default_factory=dict)
    xorbs: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def xorb_bytes(self) -> int:
        return sum(size for size, _ in self.xorbs.values())


def plan_carry(store: BlobStore, blobs: dict[str, int], known_xorbs: frozenset[str]) -> XetCarry:
    """Pick the ``blobs`` (sha256 -> size) that can travel in Xet form and the xorbs they need beyond
    ``known_xorbs``. A blob whose record or any xorb is missing, or whose record does not match it, travels
    as plain bytes. Each new xorb is verified here (a corrupt one fails the export, naming it) and its
    sha256 taken for the index."""
    xet = XetStore(store)
    carry = XetCarry()
    for sha256, size in blobs.items():
        file_hash = xet.file_hash_of(sha256)
        record = xet.get_file(file_hash) if file_hash else None
        if record is None or record.sha256 != sha256 or record.size != size:
            continue
        if not all(x in known_xorbs or x in carry.xorbs or xet.has_xorb(x) for x in record.xorbs):
            log.warning("blob %s: a xorb of its Xet form is missing; it travels as plain bytes", sha256)
            continue
        for x in sorted(record.xorbs - known_xorbs - carry.xorbs.keys()):
            carry.xorbs[x] = _verified_xorb(xet, x)
        carry.records[sha256] = record.to_json()
    return carry


def _verified_xorb(xet: XetStore, xorb_hash: str) -> tuple[int, str]:
    try:
        data = xet.read_xorb(xorb_hash)
        formats.verify_xorb(data, xorb_hash)
    except (ObjectNotFoundError, formats.XetFormatError) as exc:
        raise BundleError(f"Stored xorb {xorb_hash} is missing or damaged ({exc}); run `hubgate xet verify`") from exc
    return len(data), hashlib.sha256(data).hexdigest()


# -- import ----------------------------------------------------------------------------------------


@dataclass
class XetImport:
    """The Xet members of one bundle as they are read, and the blobs rebuilt from them."""

    store: BlobStore
    index: Index
    records: dict[str, XetFile] = field(default_factory=dict)  # blob sha256 -> record (parsed, not yet checked)
    xorbs_copied: int = 0
    xorbs_skipped: int = 0
    xorb_bytes_copied: int = 0
    blobs_rebuilt: int = 0
    records_stored: int = 0

    def __post_init__(self) -> None:
        self.xet = XetStore(self.store)

    def take_record(self, sha256: str, data: bytes) -> None:
        try:
            record = XetFile.from_json(data)
        except (ValueError, KeyError, TypeError, formats.XetFormatError) as exc:
            raise BundleError(f"The Xet record of blob {sha256} is malformed: {exc}") from exc
        if record.sha256 != sha256:
            raise BundleError(f"The Xet record carried for blob {sha256} is for blob {record.sha256}")
        self.records[sha256] = XetFile(record.file_hash, record.sha256, record.size, record.terms)

    def check_needs(self, files: dict[str, tuple[int, str]]) -> None:
        """Every record is for a blob of the bundle's manifests, with its size, and every xorb it uses is in
        the bundle or already stored here. Raises BundleError before anything is copied."""
        carried = {member_kind(m.path)[1] for m in self.index.members_of(XORB)}  # type: ignore[index]
        for sha256, record in self.records.items():
            if sha256 not in files:
                raise BundleError(f"The Xet record of blob {sha256} is in the bundle but the blob is in none of its snapshots")
            if files[sha256][0] != record.size:
                raise BundleError(f"The Xet record of blob {sha256} says {record.size} bytes, its manifest {files[sha256][0]}")
            for x in sorted(record.xorbs - carried):
                if not self.xet.has_xorb(x):
                    raise BundleError(
                        f"The bundle needs xorb {x} (for blob {sha256}), which it does not carry and this store does "
                        f"not hold: import the bundle it continues first (index {self.index.since or 'unknown'})")

    def take_xorb(self, member: Member, xorb_hash: str) -> None:
        if self.xet.has_xorb(xorb_hash):  # verified when it was stored
            member.skip()
            self.xorbs_skipped += 1
            return
        parts: list[bytes] = []
        read_verified(member, parts.append)  # size and sha256 against the signed index
        data = b"".join(parts)
        try:
            footer = formats.verify_xorb(data, xorb_hash)
        except formats.XetFormatError as exc:
            raise BundleError(f"{member.entry.path}: {exc}: the bundle was altered or damaged") from exc
        self.xet.add_xorb(footer, data)
        self.xorbs_copied += 1
        self.xorb_bytes_copied += len(data)

    def rebuild(self, files: dict[str, tuple[int, str]], progress: Progress = NO_PROGRESS) -> None:
        """Check each record against the stored xorbs, rebuild its blob unless stored, then store the record."""
        for sha256, record in sorted(self.records.items()):
            size, git_oid = files[sha256]
            try:
                terms = checked_terms(record.file_hash, [(t.xorb, t.chunk_start, t.chunk_end, None, None)
                                                         for t in record.terms], self.xet.xorb_footer)
            except (formats.XetFormatError, ObjectNotFoundError) as exc:
                raise BundleError(f"The Xet record of blob {sha256} does not match its xorbs: {exc}") from exc
            if terms != record.terms:
                raise BundleError(f"The Xet record of blob {sha256} names byte ranges its xorbs do not have")
            info = self.store.stat(sha256)
            if info is None or info.size != size:
                self._rebuild_one(record, git_oid, progress)
            if self.xet.file_hash_of(sha256) is None:
                self.xet.put_file(record)
                self.records_stored += 1

    def _rebuild_one(self, record: XetFile, git_oid: str, progress: Progress) -> None:
        what = f"blob {record.sha256} (rebuilt from xorbs)"
        try:
            with self.store.ingest(size=record.size, sha256=record.sha256, git_oid=git_oid, what=what) as w:
                for piece in _batched(iter_reconstruction(self.xet, record)):
                    w.write(piece)
                    progress.advance(len(piece))
                w.commit()
        except DigestMismatchError as exc:
            raise BundleError(f"{exc.message}: the bundle's Xet record or xorbs do not give the signed bytes") from exc
        except formats.XetFormatError as exc:
            raise BundleError(f"{what}: {exc}") from exc
        self.blobs_rebuilt += 1
        progress.advance(files=1)


def _batched(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """Xet chunks (~64 KiB) joined into writes of about 8 MiB."""
    pending: list[bytes] = []
    n = 0
    for chunk in chunks:
        pending.append(chunk)
        n += len(chunk)
        if n >= _READ:
            yield b"".join(pending)
            pending, n = [], 0
    if pending:
        yield b"".join(pending)
