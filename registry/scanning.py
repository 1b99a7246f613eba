"""The human decisions around content scans: per-file overrides with a written justification, and code approvals.

Both are recorded per repo and keyed by file content (sha256), so they carry over to a later
revision only where the bytes are the same: new code needs a new code approval. Every decision
is audited and copied into the provenance of the snapshots it lets through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from registry import audit
from registry.errors import ConflictError, InvalidInputError, NotFoundError
from registry.models import CodeApproval, MirrorRequest, ScanOverride
from registry.types import RepoRef, validate_path, validate_sha256

# Tree-level findings refuse the whole revision; no per-file exception can make such a tree safe.
NOT_OVERRIDABLE_PREFIXES = ("path.", "code.unapproved")  # code is approved as code (approve_code), by sha256
MIN_JUSTIFICATION = 10


@dataclass(frozen=True)
class Override:
    path: str
    sha256: str
    rule: str
    justification: str
    actor: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "rule": self.rule, "justification": self.justification,
                "actor": self.actor}


@dataclass(frozen=True)
class ApprovedCode:
    path: str
    sha256: str
    actor: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "actor": self.actor}


def add_override(
    session: Session, repo: RepoRef, *, path: str, sha256: str, rule: str, justification: str, actor: audit.Actor,
    request_pk: int | None = None,
) -> Override:
    """Record an exception to ``rule`` for the file ``path`` with content ``sha256`` of ``repo``."""
    validate_path(path)
    validate_sha256(sha256)
    justification = justification.strip()
    if len(justification) < MIN_JUSTIFICATION:
        raise InvalidInputError(f"An override needs a written justification of at least {MIN_JUSTIFICATION} characters")
    if not rule or len(rule) > 64:
        raise InvalidInputError("An override names the rule it overrides (1 to 64 characters)")
    if rule.startswith(NOT_OVERRIDABLE_PREFIXES):
        raise InvalidInputError(f"Rule {rule!r} refuses the whole revision and cannot be overridden per file")
    row = session.exec(select(ScanOverride).where(
        ScanOverride.repo_type == repo.type.value, ScanOverride.repo_id == repo.id, ScanOverride.path == path,
        ScanOverride.sha256 == sha256, ScanOverride.rule == rule)).first()
    if row is None:
        row = ScanOverride(repo_type=repo.type.value, repo_id=repo.id, path=path, sha256=sha256, rule=rule,
                           justification=justification, actor=actor.name, request_pk=request_pk)
    else:
        row.justification, row.actor, row.request_pk = justification, actor.name, request_pk
    session.add(row)
    audit.record(session, actor, "scan.override", f"{repo}:{path}", sha256=sha256, rule=rule,
                 justification=justification, request=request_pk)
    return Override(path, sha256, rule, justification, actor.name)


def overrides(session: Session, repo: RepoRef) -> list[Override]:
    rows = session.exec(select(ScanOverride).where(
        ScanOverride.repo_type == repo.type.value, ScanOverride.repo_id == repo.id)).all()
    return [Override(r.path, r.sha256, r.rule, r.justification, r.actor) for r in rows]


def approve_code(
    session: Session, repo: RepoRef, files: dict[str, str], *, actor: audit.Actor, request_pk: int | None = None,
) -> list[ApprovedCode]:
    """Record that ``actor`` reviewed each code file (path -> sha256) of ``repo``."""
    if not files:
        raise InvalidInputError("A code approval names the code files reviewed, each with its sha256")
    out = []
    for path, sha256 in sorted(files.items()):
        validate_path(path)
        validate_sha256(sha256)
        exists = session.exec(select(CodeApproval).where(
            CodeApproval.repo_type == repo.type.value, CodeApproval.repo_id == repo.id, CodeApproval.path == path,
            CodeApproval.sha256 == sha256)).first()
        if exists is None:
            session.add(CodeApproval(repo_type=repo.type.value, repo_id=repo.id, path=path, sha256=sha256,
                                     actor=actor.name, request_pk=request_pk))
        out.append(ApprovedCode(path, sha256, actor.name))
    audit.record(session, actor, "code.approve", str(repo), files=[a.to_dict() for a in out][:200],
                 request=request_pk)
    return out


def approved_code(session: Session, repo: RepoRef) -> list[ApprovedCode]:
    rows = session.exec(select(CodeApproval).where(
        CodeApproval.repo_type == repo.type.value, CodeApproval.repo_id == repo.id)).all()
    return [ApprovedCode(r.path, r.sha256, r.actor) for r in rows]


# -- decisions about one request's last scan ---------------------------------------------------------


def _request(session: Session, pk: int) -> tuple[MirrorRequest, RepoRef, dict[str, Any]]:
    req = session.get(MirrorRequest, pk)
    if req is None:
        raise NotFoundError(f"No mirror request {pk}")
    if not req.scan:
        raise ConflictError(f"Request {pk} has no content scan yet: approve it and let it sync first")
    return req, RepoRef.parse(req.repo_type, req.repo_id), req.scan


def approve_request_code(
    session: Session, pk: int, actor: audit.Actor, *, files: dict[str, str] | None = None,
) -> tuple[MirrorRequest, list[ApprovedCode]]:
    """Approve the code files of request ``pk``'s last scan: ``files`` (path -> sha256, as reviewed) or all of them.

    Raises ConflictError when a named file or hash is not what the scan found (the code changed
    since it was reviewed, or a typo): an approval is always of exact bytes."""
    req, repo, scan = _request(session, pk)
    found = {c["path"]: c["sha256"] for c in scan.get("code_files") or []}
    if not found:
        raise ConflictError(f"Request {pk}'s scan found no code files to approve")
    chosen = dict(found) if files is None else dict(files)
    for path, sha in chosen.items():
        if found.get(path) != sha:
            raise ConflictError(f"{path} with sha256 {sha} is not a code file of request {pk}'s scan "
                                f"(it has {found.get(path) or 'no such file'})")
    return req, approve_code(session, repo, chosen, actor=actor, request_pk=pk)


def override_request_finding(
    session: Session, pk: int, actor: audit.Actor, *, path: str, rule: str, justification: str,
) -> Override:
    """Override one blocking finding (file + rule) of request ``pk``'s last scan."""
    _, repo, scan = _request(session, pk)
    match = next((b for b in scan.get("blocking") or [] if b.get("path") == path and b.get("rule") == rule), None)
    if match is None:
        raise ConflictError(f"Request {pk}'s scan has no blocking finding {rule!r} on {path!r}")
    return add_override(session, repo, path=path, sha256=str(match["sha256"]), rule=rule,
                        justification=justification, actor=actor, request_pk=pk)
