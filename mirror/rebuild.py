"""``hubgate rebuild-index``: recreate the database catalog from the object store alone.

Manifests, provenance and refs are in the store, and every timestamp the API shows comes from
the manifests, so the rebuilt catalog answers exactly as the lost one did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mirror import repoinfo
from mirror.errors import ObjectNotFoundError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from registry import audit, snapshots
from registry.db import session_scope
from registry.errors import ConflictError, HubgateError, InvalidInputError
from registry.manifest import Manifest
from registry.models import Repo
from registry.refs import parse_ref

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    snapshots: int = 0
    refs: int = 0
    skipped: int = 0
    unavailable: list[str] = field(default_factory=list)  # snapshots whose blobs are not all in the store


def rebuild_index(engine: Engine, store: BlobStore, *, force: bool = False, actor: audit.Actor = audit.SYSTEM) -> RebuildReport:
    """Raises ConflictError if the catalog is not empty and ``force`` is not set."""
    with Session(engine) as session:
        if session.exec(select(Repo)).first() is not None and not force:
            raise ConflictError("The catalog is not empty; pass --force to replace it with what the store holds")
    manifests: list[Manifest] = []
    report = RebuildReport()
    for key in store.driver.iter_keys(layout.MANIFESTS_PREFIX):
        parsed = layout.parse_manifest_key(key)
        if parsed is None:
            continue
        try:
            manifests.append(store.get_manifest(*parsed))
        except InvalidInputError as exc:
            log.error("skipping %s: %s", key, exc)
            report.skipped += 1
    manifests.sort(key=lambda m: (m.created_datetime, m.repo_id, m.commit))
    with session_scope(engine) as session:
        snapshots.clear_catalog(session)
        for m in manifests:
            snapshots.publish(session, m, manifest_digest=m.digest(), info=repoinfo.describe(store, m),
                              provenance=store.get_provenance(m.repo, m.commit))
            report.snapshots += 1
        for key in store.driver.iter_keys(layout.REFS_PREFIX):
            parsed_ref = layout.parse_ref_key(key)
            if parsed_ref is None:
                continue
            repo, name = parsed_ref
            try:
                commit = store.driver.get_bytes(key).decode().strip()
                snapshots.set_ref(session, snapshots.existing_repo(session, repo), parse_ref(name), commit)
                report.refs += 1
            except (ObjectNotFoundError, HubgateError) as exc:  # a dangling ref copy is skipped
                log.warning("skipping ref %s: %s", key, exc)
                report.skipped += 1
        used = {f.sha256 for m in manifests for f in m.files}  # each blob checked once, however often used
        missing = {sha for sha in used if not store.has(sha)}
        report.unavailable = snapshots.set_state_for_blobs(session, missing, "unavailable", actor=actor)
        audit.record(session, actor, "catalog.rebuild", "catalog", snapshots=report.snapshots, refs=report.refs)
    return report
