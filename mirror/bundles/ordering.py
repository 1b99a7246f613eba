"""Which bundle is newer, and what a bundle's arrival settles on the sealed side.

Bundles arrive in any order (two drives, a repair with an old bundle). A bundle's age is the
``created_at`` of its signed index; a snapshot imported from a bundle keeps that time in its provenance
(``exported_at``), and a snapshot published here (import, sync) is dated by its manifest. A ref is moved
by a bundle only when the bundle is not older than what the ref points at now: an older bundle restores
blobs and snapshots, never a ref.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from registry import audit, catalog, workflow
from registry.db import session_scope
from registry.errors import HubgateError
from registry.models import Ref, Repo, Snapshot
from registry.types import RepoRef


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def newer_here(session: Session, repo: RepoRef, ref_name: str, bundle_created_at: str) -> str | None:
    """The commit ``ref_name`` points at here when that snapshot is newer than a bundle made at
    ``bundle_created_at`` (so the bundle must not move the ref), else None."""
    row = session.exec(
        select(Snapshot).join(Ref, (Ref.repo_pk == Snapshot.repo_pk) & (Ref.commit == Snapshot.commit))  # type: ignore[arg-type]
        .join(Repo, Repo.pk == Snapshot.repo_pk)  # type: ignore[arg-type]
        .where(Repo.repo_type == repo.type.value, Repo.repo_id == repo.id, Ref.name == ref_name)
    ).first()
    if row is None:
        return None
    here = _when((row.provenance or {}).get("exported_at")) or _when(row.created_at)
    incoming = _when(bundle_created_at)
    if here is None or incoming is None or here <= incoming:
        return None
    return str(row.commit)


def fulfil_offline_requests(engine: Engine, repos: set[RepoRef], actor: audit.Actor = audit.SYSTEM) -> list[str]:
    """Mark ``available`` the pending offline requests (recorded here without an upstream) whose revision now
    resolves in the catalog: their content arrived by bundle. Returns ``request N (repo@revision -> commit)``."""
    done = []
    with session_scope(engine) as session:
        for repo in sorted(repos, key=str):
            for req in workflow.list_requests(session, state="pending", repo_id=repo.id, limit=1000):
                if req.commit or req.repo_type != repo.type.value:
                    continue
                try:
                    commit = catalog.resolve(session, repo, req.revision).commit
                except HubgateError:
                    continue  # this revision did not arrive (yet)
                workflow.arrive(session, req.pk or 0, commit, actor)
                done.append(f"request {req.pk} ({repo}@{req.revision} -> {commit})")
    return done
