"""Database tables (sqlmodel). The DB indexes what the object store holds; it can be rebuilt from it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Repo(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("repo_type", "repo_id"),)

    pk: int | None = Field(default=None, primary_key=True)
    repo_type: str = Field(max_length=16)
    repo_id: str = Field(max_length=200, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class Snapshot(SQLModel, table=True):
    """One published (repo, commit). Immutable once written, except ``state``."""

    __table_args__ = (UniqueConstraint("repo_pk", "commit"),)

    pk: int | None = Field(default=None, primary_key=True)
    repo_pk: int = Field(foreign_key="repo.pk", index=True)
    commit: str = Field(max_length=40)
    manifest_digest: str = Field(max_length=64)
    file_count: int
    total_size: int
    state: str = Field(default="available", max_length=16)
    info: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class SnapshotFile(SQLModel, table=True):
    __table_args__ = (Index("ix_snapshotfile_sha256", "sha256"),)

    snapshot_pk: int = Field(foreign_key="snapshot.pk", primary_key=True)
    path: str = Field(primary_key=True, max_length=1024)
    size: int
    sha256: str = Field(max_length=64)
    git_oid: str = Field(max_length=40)
    lfs: bool


class Ref(SQLModel, table=True):
    """A name (branch, tag, pr) pointing at a published commit of a repo."""

    repo_pk: int = Field(foreign_key="repo.pk", primary_key=True)
    name: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=16)  # branch | tag | pr
    commit: str = Field(max_length=40)
    updated_at: datetime = Field(default_factory=utcnow)


class KnownBlob(SQLModel, table=True):
    """Every verified blob: lets a sync skip a regular file it already has, found by its git blob id."""

    sha256: str = Field(primary_key=True, max_length=64)
    git_oid: str = Field(max_length=40, index=True)
    size: int


class MirrorRequest(SQLModel, table=True):
    pk: int | None = Field(default=None, primary_key=True)
    repo_type: str = Field(max_length=16)
    repo_id: str = Field(max_length=200, index=True)
    revision: str = Field(max_length=200)  # what was asked for
    commit: str = Field(max_length=40)  # what it resolved to upstream: the approval is for this sha
    allow_patterns: list[str] | None = Field(default=None, sa_column=Column(JSON))
    ignore_patterns: list[str] | None = Field(default=None, sa_column=Column(JSON))
    reason: str = ""
    requester: str = Field(max_length=200)
    state: str = Field(default="pending", max_length=16, index=True)
    verdict: str = Field(default="review", max_length=16)  # review | auto-approve | blocked
    findings: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    changes: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    error: str | None = None
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    # The last sync's content scan: {"files": [FileScan dicts], "blocking": [findings], "code_files": [...]}
    scan: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    pk: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="queued", max_length=16, index=True)  # queued | running | done | failed
    attempts: int = 0
    max_attempts: int = 3
    run_after: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    token_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)  # reader | requester | admin
    secret_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = Field(default="cli", max_length=200)
    revoked: bool = False
    last_used_at: datetime | None = None
    expires_at: datetime | None = None  # None: never (only by an explicit choice)
    revoked_at: datetime | None = None
    hash_scheme: str = Field(default="hmac-sha256", max_length=16)  # sha256: a pre-0003 row, re-hashed on first use


class AuditEvent(SQLModel, table=True):
    pk: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64, index=True)
    target: str = Field(max_length=300)
    source: str | None = Field(default=None, max_length=100)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    token_id: str | None = Field(default=None, max_length=32)
    request_id: str | None = Field(default=None, max_length=128)  # the HTTP X-Request-Id
    seq: int | None = Field(default=None, unique=True, index=True)  # position in the hash chain (registry/audit.py)
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)


class SecretValue(SQLModel, table=True):
    """Secrets hubgate keeps (the upstream token), encrypted with the instance key; never returned."""

    name: str = Field(primary_key=True, max_length=64)
    ciphertext: str
    updated_at: datetime = Field(default_factory=utcnow)


class ScanOverride(SQLModel, table=True):
    """An admin's written exception to one blocking scan finding, for one file's content in one repo."""

    __table_args__ = (UniqueConstraint("repo_type", "repo_id", "path", "sha256", "rule"),)

    pk: int | None = Field(default=None, primary_key=True)
    repo_type: str = Field(max_length=16)
    repo_id: str = Field(max_length=200, index=True)
    path: str = Field(max_length=1024)
    sha256: str = Field(max_length=64)
    rule: str = Field(max_length=64)
    justification: str
    actor: str = Field(max_length=200)
    request_pk: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class CodeApproval(SQLModel, table=True):
    """An admin reviewed this code file (path + content sha256) of this repo: snapshots carrying it may be served."""

    __table_args__ = (UniqueConstraint("repo_type", "repo_id", "path", "sha256"),)

    pk: int | None = Field(default=None, primary_key=True)
    repo_type: str = Field(max_length=16)
    repo_id: str = Field(max_length=200, index=True)
    path: str = Field(max_length=1024)
    sha256: str = Field(max_length=64)
    actor: str = Field(max_length=200)
    request_pk: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class RepoAccess(SQLModel, table=True):
    """Who may read a repo: public (no row), gated (granted tokens and admins) or private (the same, and
    invisible to everyone else). Rows may name repos not published yet."""

    repo_type: str = Field(primary_key=True, max_length=16)
    repo_id: str = Field(primary_key=True, max_length=200)
    visibility: str = Field(max_length=16)  # gated | private
    updated_by: str = Field(max_length=200)
    updated_at: datetime = Field(default_factory=utcnow)


class Grant(SQLModel, table=True):
    """Read access to one gated or private repo for a subject: ``token:<token id>`` or ``group:<name>``."""

    __tablename__ = "accessgrant"  # "grant" is an SQL keyword
    __table_args__ = (UniqueConstraint("repo_type", "repo_id", "subject"),)

    pk: int | None = Field(default=None, primary_key=True)
    repo_type: str = Field(max_length=16)
    repo_id: str = Field(max_length=200, index=True)
    subject: str = Field(max_length=200)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class GroupMember(SQLModel, table=True):
    """A token's membership of a named group; grants to ``group:<name>`` reach every member."""

    group_name: str = Field(primary_key=True, max_length=100)
    token_id: str = Field(primary_key=True, max_length=32)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class AccessEpoch(SQLModel, table=True):
    """One row, bumped in every transaction that revokes a token or changes a grant, a group or a
    visibility: each process polls it (at most every 0.5 s) to drop its token and access caches."""

    pk: int = Field(default=1, primary_key=True)
    epoch: int = 0


class AuditChainHead(SQLModel, table=True):
    """One row: the audit chain's last position and hash. Appending updates it first, so concurrent
    appenders (processes, replicas) queue on its row lock and never fork the chain."""

    pk: int = Field(default=1, primary_key=True)
    seq: int = 0
    last_hash: str = Field(max_length=64)
