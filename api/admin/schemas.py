"""Request and response bodies of the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.models import AuditEvent, MirrorRequest


class RequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_type: Literal["model", "dataset"] = "model"
    repo_id: str = Field(max_length=200)
    revision: str = Field("main", max_length=200)
    allow_patterns: list[str] | None = Field(None, max_length=200)
    ignore_patterns: list[str] | None = Field(None, max_length=200)
    reason: str = Field("", max_length=2000)


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class RefBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    commit: str = Field(pattern=r"^[0-9a-f]{40}$")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Literal["reader", "requester", "admin"] = "reader"
    expires_days: int | None = Field(None, ge=1, le=3650, description="default HUBGATE_TOKEN_EXPIRY_DAYS")
    no_expiry: bool = Field(False, description="never expires: only on this explicit request")


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=2000, description="required when the licence is missing or 'other'")


class CodeApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: dict[str, str] | None = Field(
        None, max_length=10000, description="path -> sha256 of each code file reviewed; default: all of the last scan's")
    retry: bool = Field(False, description="retry the blocked request once the code is approved")


class OverrideBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=1024)
    rule: str = Field(min_length=1, max_length=64)
    justification: str = Field(min_length=10, max_length=4000)


class Progress(BaseModel):
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    # queued (approved, waiting for a worker) | planning (listing the upstream tree; totals unknown yet) |
    # fetching | publishing (every byte here: scan, sign, publish) | "" (not syncing)
    phase: str = ""

    @classmethod
    def of(cls, r: MirrorRequest) -> "Progress":
        phase = ""
        if r.state == "approved":
            phase = "queued"
        elif r.state == "syncing":
            phase = ("planning" if r.files_total == 0 else
                     "publishing" if r.files_done >= r.files_total and r.bytes_done >= r.bytes_total else "fetching")
        return cls(files_done=r.files_done, files_total=r.files_total, bytes_done=r.bytes_done,
                   bytes_total=r.bytes_total, phase=phase)


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
    scan: dict[str, Any] | None = None  # the last sync's content scan: every file's record, blocking reasons
    access: dict[str, Any] | None = None  # admins: the repo's visibility and grants (api/admin/access_routes.py)
    code_files: list[dict[str, Any]] = []  # path, sha256, size, approved: what a code approval covers
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: MirrorRequest) -> "RequestPublic":
        return cls(
            id=r.pk or 0, repo_type=r.repo_type, repo_id=r.repo_id, revision=r.revision, commit=r.commit,
            allow_patterns=r.allow_patterns, ignore_patterns=r.ignore_patterns, reason=r.reason,
            requester=r.requester, state=r.state, verdict=r.verdict, findings=r.findings, changes=r.changes,
            decided_by=r.decided_by, decided_at=r.decided_at, decision_reason=r.decision_reason, error=r.error,
            progress=Progress.of(r),
            scan=r.scan, code_files=list((r.scan or {}).get("code_files") or []),
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
    provenance: dict[str, Any] = {}  # includes "scan" (every file's record), "overrides", "code_approval"
    scan_verdict: str | None = None  # pass | block (None: published before scanning existed)


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    source: str | None
    detail: dict[str, Any]
    token_id: str | None = None
    request_id: str | None = None
    seq: int | None = None
    hash: str | None = None

    @classmethod
    def of(cls, e: AuditEvent) -> "AuditPublic":
        return cls(id=e.pk or 0, at=e.at, actor=e.actor, action=e.action, target=e.target, source=e.source,
                   detail=e.detail, token_id=e.token_id, request_id=e.request_id, seq=e.seq, hash=e.hash)


class TokenPublic(BaseModel):
    token_id: str
    name: str
    role: str
    created_at: datetime
    revoked: bool
    token: str | None = None  # only in the creation answer
    expires_at: datetime | None = None  # None: never
    last_used_at: datetime | None = None  # to the minute
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, t: Any, token: str | None = None) -> "TokenPublic":
        return cls(token_id=t.token_id, name=t.name, role=t.role, created_at=t.created_at, revoked=t.revoked,
                   token=token, expires_at=t.expires_at, last_used_at=t.last_used_at, revoked_at=t.revoked_at)
