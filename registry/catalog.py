"""Read queries behind the Hub-compatible API. Only published, available commits are ever visible."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from registry.errors import RepoNotFoundError, RevisionNotFoundError, SnapshotUnavailableError
from registry.models import Ref, Repo, Snapshot, SnapshotFile
from registry.types import RepoRef, RepoType, is_commit_sha, validate_revision


@dataclass(frozen=True, slots=True)
class SnapshotView:
    repo: RepoRef
    commit: str
    manifest_digest: str
    file_count: int
    total_size: int
    state: str
    info: dict[str, Any]
    created_at: datetime
    repo_created_at: datetime
    provenance: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FileView:
    path: str
    size: int
    sha256: str
    git_oid: str
    lfs: bool


@dataclass(frozen=True, slots=True)
class RefView:
    name: str
    kind: str
    commit: str


def _repo_row(session: Session, repo: RepoRef) -> Repo:
    row = session.exec(select(Repo).where(Repo.repo_type == repo.type.value, Repo.repo_id == repo.id)).first()
    if row is None:
        raise RepoNotFoundError(f"Repository {repo.id} not found")
    return row


def _view(repo: RepoRef, repo_row: Repo, snap: Snapshot) -> SnapshotView:
    return SnapshotView(
        repo=repo,
        commit=snap.commit,
        manifest_digest=snap.manifest_digest,
        file_count=snap.file_count,
        total_size=snap.total_size,
        state=snap.state,
        info=dict(snap.info or {}),
        created_at=snap.created_at,
        repo_created_at=repo_row.created_at,
        provenance=dict(snap.provenance or {}),
    )


def resolve(session: Session, repo: RepoRef, revision: str | None) -> SnapshotView:
    """Resolve ``revision`` (a ref name or a published commit; None means the default) to a snapshot.

    Raises RepoNotFoundError if the repo has nothing published, RevisionNotFoundError otherwise.
    """
    repo_row = _repo_row(session, repo)
    if revision is None:
        return default_snapshot(session, repo)
    validate_revision(revision)
    if is_commit_sha(revision):
        commit = revision
    else:
        kind = "branch" if revision.startswith("refs/heads/") else "tag" if revision.startswith("refs/tags/") else None
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        ref = session.get(Ref, (repo_row.pk, name))
        if ref is None or (kind is not None and ref.kind != kind):
            raise RevisionNotFoundError(f"Revision {revision!r} not found in {repo.id}")
        commit = ref.commit
    snap = session.exec(select(Snapshot).where(Snapshot.repo_pk == repo_row.pk, Snapshot.commit == commit)).first()
    if snap is None:
        raise RevisionNotFoundError(f"Revision {revision!r} not found in {repo.id}")
    return _available(_view(repo, repo_row, snap))


def _available(view: SnapshotView) -> SnapshotView:
    if view.state == "blocked":
        reasons = (view.provenance.get("scan") or {}).get("blocking") or []
        why = "; ".join(f"{r.get('path') or '(tree)'}: {r.get('message')}" for r in reasons[:3]) or "see its scan record"
        raise SnapshotUnavailableError(f"{view.repo.id}@{view.commit} is blocked by the content scan: {why}")
    if view.state != "available":
        raise SnapshotUnavailableError(
            f"{view.repo.id}@{view.commit} failed an integrity check and is unavailable until an operator repairs it"
        )
    return view


def default_snapshot(session: Session, repo: RepoRef) -> SnapshotView:
    """The snapshot ``main`` points at, else the newest one. Raises RepoNotFoundError if there is none."""
    repo_row = _repo_row(session, repo)
    ref = session.get(Ref, (repo_row.pk, "main"))
    query = select(Snapshot).where(Snapshot.repo_pk == repo_row.pk)
    if ref is not None:
        query = query.where(Snapshot.commit == ref.commit)
    snap = session.exec(query.order_by(col(Snapshot.created_at).desc(), col(Snapshot.pk).desc())).first()
    if snap is None:
        raise RepoNotFoundError(f"Repository {repo.id} not found")
    return _available(_view(repo, repo_row, snap))


def list_files(session: Session, repo: RepoRef, commit: str) -> list[FileView]:
    """Every file of a published commit, sorted by path."""
    repo_row = _repo_row(session, repo)
    rows = session.exec(
        select(SnapshotFile)
        .join(Snapshot, col(Snapshot.pk) == col(SnapshotFile.snapshot_pk))
        .where(Snapshot.repo_pk == repo_row.pk, Snapshot.commit == commit)
        .order_by(col(SnapshotFile.path))
    ).all()
    return [FileView(r.path, r.size, r.sha256, r.git_oid, r.lfs) for r in rows]


def list_refs(session: Session, repo: RepoRef) -> list[RefView]:
    repo_row = _repo_row(session, repo)
    rows = session.exec(select(Ref).where(Ref.repo_pk == repo_row.pk).order_by(col(Ref.name))).all()
    return [RefView(r.name, r.kind, r.commit) for r in rows]


def list_snapshots(session: Session, repo: RepoRef) -> list[SnapshotView]:
    """Published snapshots of a repo, newest first."""
    repo_row = _repo_row(session, repo)
    rows = session.exec(
        select(Snapshot)
        .where(Snapshot.repo_pk == repo_row.pk)
        .order_by(col(Snapshot.created_at).desc(), col(Snapshot.pk).desc())
    ).all()
    return [_view(repo, repo_row, s) for s in rows]


def list_repos(session: Session, repo_type: RepoType) -> list[SnapshotView]:
    """The default snapshot of every repo of ``repo_type`` that has one, sorted by repo id."""
    repos = session.exec(select(Repo).where(Repo.repo_type == repo_type.value).order_by(col(Repo.repo_id))).all()
    views = []
    for row in repos:
        try:
            views.append(default_snapshot(session, RepoRef(repo_type, row.repo_id)))
        except (RepoNotFoundError, SnapshotUnavailableError):
            continue
    return views
