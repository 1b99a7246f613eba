"""Publishing: a manifest and the refs that point at it become visible in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from registry import audit
from registry.db import insert_ignore
from registry.errors import ConflictError, RepoNotFoundError, RevisionNotFoundError, SnapshotUnavailableError
from registry.manifest import Manifest
from registry.models import Ref, Repo, Snapshot, SnapshotFile, utcnow
from registry.refs import RefName
from registry.types import RepoRef


@dataclass
class PublishResult:
    created: bool
    refs_moved: list[str] = field(default_factory=list)
    scan: dict[str, Any] | None = None  # the content scan record this publish ran (None: scanned before)


def get_or_create_repo(session: Session, repo: RepoRef, *, created_at: datetime) -> Repo:
    """The repo's row; a new one takes ``created_at`` (its first manifest's time: a rebuilt catalog agrees).

    Two publishes creating the same repo at once (two workers, two replicas) both get the one row."""
    query = select(Repo).where(Repo.repo_type == repo.type.value, Repo.repo_id == repo.id)
    row = session.exec(query).first()
    if row is None:
        insert_ignore(session, Repo, [{"repo_type": repo.type.value, "repo_id": repo.id, "created_at": created_at}],
                      conflict=("repo_type", "repo_id"))
        row = session.exec(query).one()
    elif _utc(created_at) < _utc(row.created_at):
        # An older snapshot published later (bundles imported out of order): the repo is as old as its oldest
        # snapshot, which is also what rebuild-index finds.
        row.created_at = created_at
        session.add(row)
    return row


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def publish(
    session: Session,
    manifest: Manifest,
    *,
    manifest_digest: str,
    info: dict[str, Any],
    refs: Sequence[RefName] = (),
    provenance: dict[str, Any] | None = None,
) -> PublishResult:
    """Index ``manifest`` and point ``refs`` at its commit, inside the caller's transaction.

    Idempotent: publishing the same manifest again creates nothing and only moves refs that
    point elsewhere. Raises ConflictError if another manifest is already published for the commit.
    """
    # Timestamps come from the manifest, so a catalog rebuilt from the store answers identically.
    created_at = manifest.created_datetime
    repo_row = get_or_create_repo(session, manifest.repo, created_at=created_at)
    assert repo_row.pk is not None
    query = select(Snapshot).where(Snapshot.repo_pk == repo_row.pk, Snapshot.commit == manifest.commit)
    snap = session.exec(query).first()
    created = False
    if snap is None:
        # A concurrent publish of the same commit may insert it first: then this one finds its row below.
        created = bool(insert_ignore(session, Snapshot, [{
            "repo_pk": repo_row.pk, "commit": manifest.commit, "manifest_digest": manifest_digest,
            "file_count": len(manifest.files), "total_size": manifest.total_size, "state": "available",
            "info": info, "provenance": provenance or {}, "created_at": created_at,
        }], conflict=("repo_pk", "commit")))
        snap = session.exec(query.execution_options(populate_existing=True)).one()
    if created and manifest.files:
        # One Core statement for the file rows, however many (the ORM's bulk insert builds an object state per row:
        # a tenth of a 1,000-file sync's CPU in the worker).
        session.connection().execute(SnapshotFile.__table__.insert(), [  # type: ignore[attr-defined]
            {"snapshot_pk": snap.pk, "path": f.path, "size": f.size, "sha256": f.sha256, "git_oid": f.git_oid,
             "lfs": f.lfs} for f in manifest.files
        ])
    elif not created:
        if snap.manifest_digest != manifest_digest:
            raise ConflictError(
                f"{manifest.repo} commit {manifest.commit} is already published with different content"
            )
        if snap.state == "blocked":
            raise SnapshotUnavailableError(f"{manifest.repo}@{manifest.commit} is blocked by the content scan")
        if snap.state != "available":
            # The caller has just checked every blob is back (a repair, or a bundle re-import);
            # the metadata read while blobs were missing is refreshed too.
            snap.state, snap.info = "available", info
            session.add(snap)
    moved = [r.name for r in refs if set_ref(session, repo_row, r, manifest.commit)]
    session.flush()
    return PublishResult(created=created, refs_moved=moved)


def set_ref(session: Session, repo_row: Repo, ref: RefName, commit: str) -> bool:
    """Point ``ref`` at ``commit`` (which must be published). Returns whether anything changed."""
    exists = session.exec(
        select(Snapshot.pk).where(Snapshot.repo_pk == repo_row.pk, Snapshot.commit == commit)
    ).first()
    if exists is None:
        raise RevisionNotFoundError(f"Commit {commit} is not published in {repo_row.repo_id}")
    row = session.get(Ref, (repo_row.pk, ref.name))
    if row is not None and row.kind != ref.kind:
        raise ConflictError(f"{ref.name!r} is a {row.kind} of {repo_row.repo_id}; it cannot become a {ref.kind}")
    if row is not None and row.commit == commit:
        return False
    if row is None:
        assert repo_row.pk is not None
        if insert_ignore(session, Ref, [{"repo_pk": repo_row.pk, "name": ref.name, "kind": ref.kind, "commit": commit,
                                         "updated_at": utcnow()}], conflict=("repo_pk", "name")):
            return True
        # A concurrent publish created the ref first: it is a move from there.
        row = session.get(Ref, (repo_row.pk, ref.name), populate_existing=True)
        assert row is not None
        if row.kind != ref.kind:
            raise ConflictError(f"{ref.name!r} is a {row.kind} of {repo_row.repo_id}; it cannot become a {ref.kind}")
        if row.commit == commit:
            return False
    row.commit, row.kind, row.updated_at = commit, ref.kind, utcnow()
    session.add(row)
    return True


def move_ref(session: Session, repo: RepoRef, ref: RefName, commit: str, *, actor: audit.Actor) -> bool:
    """Point ``ref`` at a published commit of ``repo``. Raises RepoNotFoundError / RevisionNotFoundError."""
    repo_row = existing_repo(session, repo)
    changed = set_ref(session, repo_row, ref, commit)
    audit.record(session, actor, "ref.move", f"{repo}:{ref.name}", commit=commit, changed=changed)
    return changed


def remove_snapshot(session: Session, repo: RepoRef, commit: str, *, actor: audit.Actor) -> list[RefName]:
    """Unpublish a commit: its rows and the refs pointing at it go; its blobs stay until gc. Returns the refs removed."""
    repo_row = existing_repo(session, repo)
    snap = session.exec(select(Snapshot).where(Snapshot.repo_pk == repo_row.pk, Snapshot.commit == commit)).first()
    if snap is None:
        raise RevisionNotFoundError(f"Commit {commit} is not published in {repo.id}")
    refs = list(session.exec(select(Ref).where(Ref.repo_pk == repo_row.pk, Ref.commit == commit)).all())
    for r in refs:
        session.delete(r)
    for f in session.exec(select(SnapshotFile).where(SnapshotFile.snapshot_pk == snap.pk)).all():
        session.delete(f)
    session.flush()  # the file rows reference the snapshot: they must go first
    session.delete(snap)
    audit.record(session, actor, "snapshot.remove", f"{repo}@{commit}", refs=[r.name for r in refs])
    return [RefName(r.name, r.kind) for r in refs]


def existing_repo(session: Session, repo: RepoRef) -> Repo:
    row = session.exec(select(Repo).where(Repo.repo_type == repo.type.value, Repo.repo_id == repo.id)).first()
    if row is None:
        raise RepoNotFoundError(f"Repository {repo.id} not found")
    return row


def set_state_for_blobs(session: Session, sha256s: set[str], state: str, *, actor: audit.Actor) -> list[str]:
    """Set ``state`` on every snapshot that uses one of ``sha256s``; returns ``repo@commit`` of each changed."""
    if not sha256s:
        return []
    rows = session.exec(
        select(Snapshot, Repo)
        .join(SnapshotFile, col(SnapshotFile.snapshot_pk) == col(Snapshot.pk))
        .join(Repo, col(Repo.pk) == col(Snapshot.repo_pk))
        .where(col(SnapshotFile.sha256).in_(sha256s))
    ).all()
    changed = []
    for snap, repo in {(s.pk, r.pk): (s, r) for s, r in rows}.values():
        if snap.state != state:
            snap.state = state
            session.add(snap)
            name = f"{repo.repo_type}:{repo.repo_id}@{snap.commit}"
            audit.record(session, actor, f"snapshot.{state}", name, blobs=sorted(sha256s)[:20])
            changed.append(name)
    return sorted(changed)


def set_state(
    session: Session, repo: RepoRef, commit: str, state: str, *, actor: audit.Actor, info: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Set a snapshot's state (and refresh its repo-info metadata / provenance when given)."""
    repo_row = existing_repo(session, repo)
    snap = session.exec(select(Snapshot).where(Snapshot.repo_pk == repo_row.pk, Snapshot.commit == commit)).first()
    if snap is None:
        raise RevisionNotFoundError(f"Commit {commit} is not published in {repo.id}")
    if info is not None:
        snap.info = info
        session.add(snap)
    if provenance is not None:
        snap.provenance = provenance
        session.add(snap)
    if snap.state != state:
        snap.state = state
        session.add(snap)
        audit.record(session, actor, f"snapshot.{state}", f"{repo}@{commit}")


def referenced_blobs(session: Session) -> dict[str, int]:
    """sha256 -> size of every blob any published snapshot uses."""
    return {sha: size for sha, size in session.exec(select(SnapshotFile.sha256, SnapshotFile.size).distinct()).all()}


def unavailable_snapshots(session: Session) -> list[tuple[RepoRef, str]]:
    """Snapshots an integrity check took away (not those the content scan blocked: only a rescan frees them)."""
    rows = session.exec(
        select(Repo, Snapshot).join(Snapshot, col(Snapshot.repo_pk) == col(Repo.pk)).where(Snapshot.state == "unavailable")
    ).all()
    return [(RepoRef.parse(r.repo_type, r.repo_id), s.commit) for r, s in rows]


def clear_catalog(session: Session) -> None:
    """Delete every repo, snapshot, file row and ref (rebuild-index starts from nothing)."""
    for model in (Ref, SnapshotFile, Snapshot, Repo):  # children first; one statement per table
        session.execute(delete(model))
