"""``hubgate gc``: mark every blob a manifest references, sweep the rest once older than a grace period.

The grace period protects a sync or import in flight: their blobs are written before the
manifest is published, so young unreferenced blobs are kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, delete

from mirror.errors import StorageError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from registry import audit, snapshots
from registry.db import session_scope
from registry.errors import InvalidInputError
from registry.models import KnownBlob

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    referenced: int = 0
    swept: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_young: int = 0
    uploads_swept: int = 0


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
    actor: audit.Actor = audit.SYSTEM,
) -> GcReport:
    report = GcReport()
    marked = _marked(engine, store)
    report.referenced = len(marked)
    cutoff = time.time() - grace_seconds
    for key in store.driver.iter_keys(layout.BLOBS_PREFIX):
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
        if not dry_run:
            store.driver.delete(key)
    for key in store.driver.iter_keys(layout.UPLOADS_PREFIX):
        info = store.driver.stat(key)
        if info is not None and info.modified <= cutoff:
            report.uploads_swept += 1
            report.bytes_freed += info.size
            if not dry_run:
                store.driver.delete(key)
    if not dry_run and (report.swept or report.uploads_swept):
        with session_scope(engine) as session:
            if report.swept:
                session.execute(delete(KnownBlob).where(KnownBlob.sha256.in_(report.swept)))  # type: ignore[attr-defined]
            audit.record(session, actor, "gc", "store", swept=len(report.swept), bytes_freed=report.bytes_freed)
    log.info("gc: %d referenced, %d swept (%d bytes), %d young kept", report.referenced, len(report.swept),
             report.bytes_freed, report.kept_young)
    return report
