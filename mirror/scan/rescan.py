"""Re-scan published snapshots: after a scanner or allowlist upgrade (``hubgate rescan``), and before a
repaired snapshot is served again. A snapshot the new scan blocks becomes ``blocked`` (clients get a
503 naming the reason, never the bytes); one that passes again becomes available."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror import repoinfo
from mirror.scan.base import SCANNER_VERSION
from mirror.scan.gate import Decisions, Gate, GateResult, provenance_of
from mirror.storage.blobs import BlobStore
from registry import audit, catalog, snapshots
from registry.db import session_scope
from registry.types import RepoRef, RepoType

log = logging.getLogger(__name__)


def decisions_of(provenance: dict[str, Any]) -> Decisions:
    """Decisions carried by a snapshot that came from another instance (its origin's provenance)."""
    origin = provenance.get("origin")
    return Decisions.from_provenance(origin) if isinstance(origin, dict) else Decisions()


def recheck(engine: Engine, store: BlobStore, gate: Gate, repo: RepoRef, commit: str, *,
            available_state: str = "available", actor: audit.Actor = audit.SYSTEM) -> GateResult:
    """Scan one published snapshot again; record the scan in its provenance and set its state from it."""
    manifest = store.get_manifest(repo, commit)
    try:
        provenance = dict(store.get_provenance(repo, commit))
    except Exception:  # noqa: BLE001 - no provenance file (an old import): start one
        provenance = {}
    result = gate.check(engine, manifest, extra=decisions_of(provenance))
    provenance |= provenance_of(result)
    gate.put_provenance(manifest, provenance)
    state = "blocked" if result.blocked else available_state
    info = repoinfo.describe(store, manifest) if state == "available" else None
    with session_scope(engine) as session:
        snapshots.set_state(session, repo, commit, state, actor=actor, info=info, provenance=provenance)
        if result.blocked:
            audit.record(session, actor, "snapshot.scan-blocked", f"{repo}@{commit}", reasons=result.blocking[:20])
    return result


@dataclass
class RescanReport:
    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already scanned by this scanner version
    blocked: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unblocked: list[str] = field(default_factory=list)


def rescan(engine: Engine, store: BlobStore, gate: Gate, *, repo: RepoRef | None = None, force: bool = False,
           actor: audit.Actor = audit.SYSTEM) -> RescanReport:
    """Re-scan every available or blocked snapshot (of ``repo``) whose scan is from another scanner or
    allowlist version (all of them with ``force``)."""
    from mirror.scan import ALLOWLIST_VERSION

    with Session(engine) as session:
        if repo is not None:
            views = catalog.list_snapshots(session, repo)
        else:
            views = [v for t in RepoType for r in catalog.list_repos(session, t) for v in catalog.list_snapshots(session, r.repo)]
    report = RescanReport()
    for v in views:
        name = f"{v.repo}@{v.commit}"
        if v.state not in ("available", "blocked"):
            continue  # an integrity problem first: verify --repair scans when it restores
        if not force and _current(v.provenance.get("scan") or {}, SCANNER_VERSION, ALLOWLIST_VERSION):
            report.skipped.append(name)
            continue
        result = recheck(engine, store, gate, v.repo, v.commit, actor=actor)
        report.checked.append(name)
        if result.blocked:
            report.blocked[name] = result.blocking
        elif v.state == "blocked":
            report.unblocked.append(name)
    return report


def _current(scan: dict[str, Any], scanner_version: str, allowlist_version: str) -> bool:
    """Was this scan record made by the current scanner and allowlist, for every file it covers?"""
    if (scan.get("scanner_version"), scan.get("allowlist_version")) != (scanner_version, allowlist_version):
        return False
    return all(f.get("scanner_version") == scanner_version and f.get("allowlist_version") in (None, allowlist_version)
               for f in scan.get("files") or [])
