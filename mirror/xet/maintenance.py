"""Operator tasks on the Xet representation: ``hubgate xet backfill``, the xorb part of ``hubgate verify``,
and the xorb/shard part of ``hubgate gc``."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror.errors import ObjectNotFoundError, StorageError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from mirror.xet import formats
from mirror.xet.builder import BuildReport, XetBuilder
from mirror.xet.store import XetFile, XetStore
from registry import catalog, snapshots
from registry.types import RepoRef

log = logging.getLogger(__name__)


# -- backfill


def backfill(engine: Engine, builder: XetBuilder, *, repos: list[RepoRef] | None = None,
             dry_run: bool = False) -> tuple[list[tuple[str, int]], BuildReport]:
    """Build the Xet form of every qualifying blob of the published snapshots (of ``repos``, or all).
    Returns (the blobs that needed it, what the build did); ``dry_run`` builds nothing."""
    with Session(engine) as session:
        if repos is None:
            wanted = snapshots.referenced_blobs(session)
        else:
            wanted = {}
            for repo in repos:
                for snap in catalog.list_snapshots(session, repo):
                    wanted |= {f.sha256: f.size for f in catalog.list_files(session, repo, snap.commit)}
    todo = sorted((sha, size) for sha, size in wanted.items()
                  if size >= builder.threshold and builder.xet.file_hash_of(sha) is None)
    report = BuildReport()
    if dry_run:
        return todo, report
    for i in range(0, len(todo), 16):  # sessions of 16 blobs: progress is kept if a later one fails
        report.add(builder.build_blobs(todo[i:i + 16]))
    return todo, report


# -- verify


@dataclass
class XetVerifyReport:
    xorbs_checked: int = 0
    xorb_bytes_checked: int = 0
    corrupt_xorbs: list[str] = field(default_factory=list)
    files_withdrawn: list[str] = field(default_factory=list)  # sha256 of blobs served plain again

    @property
    def ok(self) -> bool:
        return not self.corrupt_xorbs and not self.files_withdrawn


def verify(store: BlobStore, *, sample: float | None = None, dry_run: bool = False) -> XetVerifyReport:
    """Re-check every stored xorb (or a ``sample`` fraction): all chunks decompressed and hashed, then the
    xorb hash. A corrupt xorb is quarantined and each file using it (or a xorb gone missing) loses its Xet
    representation, so that clients get the plain answer for it: never wrong bytes."""
    xet = XetStore(store)
    report = XetVerifyReport()
    xorbs = sorted(xet.iter_xorbs())
    if sample is not None and sample < 1 and xorbs:
        xorbs = sorted(random.sample(xorbs, max(1, round(len(xorbs) * sample))))
    for x in xorbs:
        try:
            data = xet.read_xorb(x)
        except ObjectNotFoundError:
            continue
        report.xorbs_checked += 1
        report.xorb_bytes_checked += len(data)
        try:
            formats.verify_xorb(data, x)
        except formats.XetFormatError as exc:
            log.error("xorb %s is corrupt: %s", x, exc)
            report.corrupt_xorbs.append(x)
    bad = set(report.corrupt_xorbs)
    for record in _records(xet):
        missing = [t.xorb for t in record.terms if t.xorb not in bad and not xet.has_xorb(t.xorb)]
        if bad & record.xorbs or missing:
            report.files_withdrawn.append(record.sha256)
            if not dry_run:
                xet.forget_file(record.sha256, record.file_hash)
    if not dry_run:
        for x in report.corrupt_xorbs:
            xet.quarantine_xorb(x)
    return report


def _records(xet: XetStore) -> list[XetFile]:
    out = []
    for file_hash in xet.iter_files():
        try:
            record = xet.get_file(file_hash)
        except (StorageError, ValueError, KeyError) as exc:
            log.error("xet file record %s is unreadable (%s): ignoring it", file_hash, exc)
            continue
        if record is not None:
            out.append(record)
    return out


# -- gc


@dataclass
class XetGcReport:
    files_swept: int = 0
    xorbs_swept: int = 0
    shards_swept: int = 0
    bytes_freed: int = 0
    kept_young: int = 0
    items: list[tuple[str, int, float]] = field(default_factory=list)  # (key, size, age seconds)


def collect(store: BlobStore, live_blobs: set[str], *, cutoff: float, dry_run: bool = False) -> XetGcReport:
    """Sweep the Xet objects nothing live uses. A file record lives while its blob is ``live_blobs`` or still
    stored; a xorb or shard while a live record uses it, or while younger than ``cutoff`` (unix seconds: a
    build in flight writes xorbs before their record)."""
    xet, report, now = XetStore(store), XetGcReport(), time.time()
    live_xorbs: set[str] = set()
    live_shards: set[str] = set()
    for record in _records(xet):
        if record.sha256 in live_blobs or store.has(record.sha256):
            live_xorbs |= record.xorbs
            if record.shard:
                live_shards.add(record.shard)
            continue
        report.files_swept += 1
        if not dry_run:
            xet.forget_file(record.sha256, record.file_hash)
    for kind, keys, live, key_of in (("xorb", xet.iter_xorbs(), live_xorbs, layout.xorb_key),
                                      ("shard", xet.iter_shards(), live_shards, layout.shard_key)):
        for h in list(keys):
            if h in live:
                continue
            info = store.driver.stat(key_of(h))
            if info is None:
                continue
            if info.modified > cutoff:
                report.kept_young += 1
                continue
            report.items.append((info.key, info.size, now - info.modified))
            report.bytes_freed += info.size
            if kind == "xorb":
                report.xorbs_swept += 1
            else:
                report.shards_swept += 1
            if not dry_run:
                store.driver.delete(info.key)
    if not dry_run and report.xorbs_swept:  # dedup hints to swept xorbs would only cost a miss; drop them anyway
        for key in list(store.driver.iter_keys(layout.XET_CHUNKS_PREFIX)):
            try:
                target = store.driver.get_bytes(key).decode()
            except ObjectNotFoundError:
                continue
            if target not in live_xorbs and store.driver.stat(layout.xorb_key(target)) is None:
                store.driver.delete(key)
        for key in list(store.driver.iter_keys(layout.XET_XORB_FILES_PREFIX)):
            xorb = key.rsplit("/", 1)[-1]
            if xorb not in live_xorbs and store.driver.stat(layout.xorb_key(xorb)) is None:
                store.driver.delete(key)
    return report
