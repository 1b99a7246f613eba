"""Request and response bodies of the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from registry.models import AuditEvent, MirrorRequest


class RequestCreate(BaseModel):
    repo_type: Literal["model", "dataset"] = "model"
    repo_id: str = Field(max_length=200)
    revision: str = Field("main", max_length=200)
    allow_patterns: list[str] | None = Field(None, max_length=200)
    ignore_patterns: list[str] | None = Field(None, max_length=200)
    reason: str = Field("", max_length=2000)


class RejectBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class RefBody(BaseModel):
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["reader", "requester", "admin"] = "reader"


class Progress(BaseModel):
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


class RequestPublic(BaseModel):
    id: int
    repo_type: str
    repo_id: str
    revision: str
    commit: str
    allow_patterns: list[str] | None
    ignore_patterns: list[str] | None
    reason: str
    requester: str
    state: str
    verdict: str
    findings: list[dict[str, Any]]
    changes: dict[str, Any] | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    error: str | None
    progress: Progress
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: MirrorRequest) -> "RequestPublic":
        return cls(
            id=r.pk or 0, repo_type=r.repo_type, repo_id=r.repo_id, revision=r.revision, commit=r.commit,
            allow_patterns=r.allow_patterns, ignore_patterns=r.ignore_patterns, reason=r.reason,
            requester=r.requester, state=r.state, verdict=r.verdict, findings=r.findings, changes=r.changes,
            decided_by=r.decided_by, decided_at=r.decided_at, decision_reason=r.decision_reason, error=r.error,
            progress=Progress(files_done=r.files_done, files_total=r.files_total, bytes_done=r.bytes_done,
                              bytes_total=r.bytes_total),
            created_at=r.created_at, updated_at=r.updated_at,
        )


class SnapshotPublic(BaseModel):
    repo_type: str
    repo_id: str
    commit: str
    file_count: int
    total_size: int
    state: str
    manifest_digest: str
    created_at: datetime
    refs: list[str] = []
    provenance: dict[str, Any] = {}


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    source: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, e: AuditEvent) -> "AuditPublic":
        return cls(id=e.pk or 0, at=e.at, actor=e.actor, action=e.action, target=e.target, source=e.source,
                   detail=e.detail)


class TokenPublic(BaseModel):
    token_id: str
    name: str
    role: str
    created_at: datetime
    revoked: bool
    token: str | None = None  # only in the creation answer
