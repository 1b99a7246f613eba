"""``hubgate gc``: mark every blob a manifest references, sweep the rest once older than a grace period.

Swept too, on the same grace period: abandoned uploads (``uploads/<uuid>`` objects) and partial writes
that a killed process left behind (the local store's ``.tmp/`` files, S3's unfinished multipart uploads).

The grace period protects a sync or import in flight: their blobs are written before the
manifest is published, so young unreferenced blobs are kept; a write in progress keeps its
partial write young.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, delete

from mirror.errors import StorageError
from mirror.progress import NO_PROGRESS, Progress
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from mirror.xet import maintenance as xet_maintenance
from mirror.xet.maintenance import XetGcReport
from registry import audit, snapshots
from registry.db import session_scope
from registry.errors import InvalidInputError
from registry.models import KnownBlob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcItem:
    """One thing gc deletes (or, dry, would delete)."""

    kind: str  # blob | upload | partial | xet (a xorb or shard)
    name: str  # storage key; a partial write's driver name (.tmp/<uuid>, <key>?uploadId=<id>)
    size: int
    age_seconds: float


@dataclass
class GcReport:
    referenced: int = 0
    swept: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_young: int = 0
    uploads_swept: int = 0
    partials_swept: int = 0
    items: list[GcItem] = field(default_factory=list)
    xet: XetGcReport | None = None  # xorbs, shards and file records nothing live uses (mirror/xet/)


def _marked(engine: Engine, store: BlobStore) -> set[str]:
    """Blobs referenced by a published snapshot or by any manifest in the store."""
    with Session(engine) as session:
        marked = set(snapshots.referenced_blobs(session))
    for key in store.driver.iter_keys(layout.MANIFESTS_PREFIX):
        parsed = layout.parse_manifest_key(key)
        if parsed is None:
            continue
        try:
            marked.update(f.sha256 for f in store.get_manifest(*parsed).files)
        except (InvalidInputError, StorageError) as exc:
            # An unreadable manifest could reference anything: refuse to sweep rather than guess.
            raise StorageError(f"gc stopped: manifest {key} is unreadable ({exc})") from exc
    return marked


def collect(
    engine: Engine, store: BlobStore, *, grace_seconds: float = 24 * 3600, dry_run: bool = False,
    actor: audit.Actor = audit.SYSTEM, progress: Progress = NO_PROGRESS,
) -> GcReport:
    """Sweep what nothing references and is older than ``grace_seconds``; ``dry_run`` deletes nothing.
    Raises StorageError when a manifest is unreadable (nothing is swept then)."""
    report = GcReport()
    progress.begin("marking")
    marked = _marked(engine, store)
    report.referenced = len(marked)
    now = time.time()
    cutoff = now - grace_seconds
    progress.begin("sweeping" if not dry_run else "listing")
    for key in store.driver.iter_keys(layout.BLOBS_PREFIX):
        progress.advance(files=1)
        digest = layout.digest_from_blob_key(key)
        if digest is None or digest in marked:
            continue
        info = store.driver.stat(key)
        if info is None:
            continue
        if info.modified > cutoff:
            report.kept_young += 1
            continue
        report.swept.append(digest)
        report.bytes_freed += info.size
        report.items.append(GcItem("blob", key, info.size, now - info.modified))
        if not dry_run:
            store.driver.delete(key)
    for key in store.driver.iter_keys(layout.UPLOADS_PREFIX):
        info = store.driver.stat(key)
        if info is not None and info.modified <= cutoff:
            report.uploads_swept += 1
            report.bytes_freed += info.size
            report.items.append(GcItem("upload", key, info.size, now - info.modified))
            if not dry_run:
                store.driver.delete(key)
    report.xet = xet_maintenance.collect(store, marked, cutoff=cutoff, dry_run=dry_run)
    report.bytes_freed += report.xet.bytes_freed
    report.items += [GcItem("xet", key, size, age) for key, size, age in report.xet.items]
    for info in list(store.driver.iter_partial_writes()):  # listed whole first: S3 pages must not shift under us
        if info.modified <= cutoff:
            report.partials_swept += 1
            report.bytes_freed += info.size
            report.items.append(GcItem("partial", info.key, info.size, now - info.modified))
            if not dry_run:
                store.driver.delete_partial_write(info.key)
    if not dry_run and report.items:
        with session_scope(engine) as session:
            if report.swept:
                session.execute(delete(KnownBlob).where(KnownBlob.sha256.in_(report.swept)))  # type: ignore[attr-defined]
            audit.record(session, actor, "gc", "store", swept=len(report.swept), uploads=report.uploads_swept,
                         partial_writes=report.partials_swept, bytes_freed=report.bytes_freed)
    progress.end()
    log.info("gc: %d referenced, %d swept, %d uploads, %d partial writes (%d bytes), %d young kept", report.referenced,
             len(report.swept), report.uploads_swept, report.partials_swept, report.bytes_freed, report.kept_young)
    return report
