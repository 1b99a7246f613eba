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
