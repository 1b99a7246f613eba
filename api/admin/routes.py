"""Admin endpoints: thin wrappers over registry/mirror functions. Sync ``def``: FastAPI runs them in its threadpool."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import Session

from api.admin import access_routes, schemas
from api.auth import Admin, Reader, Requester
from api.services import Services, services
from mirror.intake import create_request, record_offline_request
from registry import audit, catalog, scanning, snapshots, tokens, workflow
from registry.db import session_scope
from registry.refs import parse_ref
from mirror.errors import ObjectNotFoundError
from registry.errors import InvalidInputError, NotFoundError
from registry.models import MirrorRequest, utcnow
from registry.types import RepoRef, RepoType, validate_commit

router = APIRouter(prefix="/registry/v1")
ERRORS = {400: {"description": "Invalid input"}, 401: {"description": "No or invalid token"},
          403: {"description": "Role too low"}, 404: {"description": "Not found"}}


def _svc(request: Request) -> Services:
    return services(request)


@router.post("/requests", status_code=201, response_model=schemas.RequestPublic, responses=ERRORS | {
    502: {"description": "Upstream failed"}})
def create(body: schemas.RequestCreate, actor: Requester, request: Request) -> schemas.RequestPublic:
    """Request a repo at a revision: resolved upstream to a full sha, with policy findings."""
    svc = _svc(request)
    svc.limits.request_created(actor.token_id)  # 429 past HUBGATE_RATE_LIMIT_REQUESTS_PER_HOUR
    return access_routes.redacted(svc, actor, schemas.RequestPublic.of(submit_request(
        svc, body.repo_type, body.repo_id, body.revision, body.allow_patterns, body.ignore_patterns, body.reason, actor)))


def submit_request(svc: Services, repo_type: str, repo_id: str, revision: str, allow: list[str] | None,
                   ignore: list[str] | None, reason: str, actor: audit.Actor) -> MirrorRequest:
    """Online: resolved upstream, with findings. Sealed side (no upstream): recorded for export."""
    repo = RepoRef.parse(repo_type, repo_id)
    if svc.settings.upstream_url is None:
        return record_offline_request(svc.engine, repo=repo, revision=revision, allow_patterns=allow,
                                      ignore_patterns=ignore, reason=reason, actor=actor)
    return create_request(svc.engine, svc.upstream(), svc.settings.policy, repo=repo, revision=revision,
                          allow_patterns=allow, ignore_patterns=ignore, reason=reason, actor=actor)


@router.get("/requests", response_model=list[schemas.RequestPublic], responses=ERRORS)
def list_(actor: Reader, request: Request, state: str | None = None, repo_id: str | None = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[schemas.RequestPublic]:
    with Session(_svc(request).engine) as session:
        return [access_routes.redacted(_svc(request), actor, schemas.RequestPublic.of(r)) for r in workflow.list_requests(
            session, state=state, repo_id=repo_id, limit=limit, requester=access_routes.own_requests_only(actor))]


@router.get("/requests/{pk}", response_model=schemas.RequestPublic, responses=ERRORS)
def get(pk: int, actor: Reader, request: Request) -> schemas.RequestPublic:
    """One request with its findings, what it would change, and sync progress (its author's and admins' only)."""
    with Session(_svc(request).engine) as session:
        return access_routes.request_view(session, _svc(request), actor, workflow.get(session, pk))


@router.post("/requests/{pk}/approve", response_model=schemas.RequestPublic,
             responses=ERRORS | {409: {"description": "Illegal transition"}, 422: {"description": "Blocked by policy"}})
def approve(pk: int, actor: Admin, request: Request, body: schemas.ApproveBody | None = None) -> schemas.RequestPublic:
    """Approve the recorded commit (a missing or ``other`` licence needs a ``reason``); queues its sync."""
    with session_scope(_svc(request).engine) as session:
        return schemas.RequestPublic.of(workflow.approve(session, pk, actor, reason=body.reason if body else None,
                                                         require_second_approver=_svc(request).settings.require_second_approver))


@router.post("/requests/{pk}/code-approval", response_model=schemas.RequestPublic,
             responses=ERRORS | {409: {"description": "The code is not what the scan found"}})
def approve_code(pk: int, body: schemas.CodeApprovalBody, actor: Admin, request: Request) -> schemas.RequestPublic:
    """Approve the code files of the request's last scan (each by sha256), optionally retrying it."""
    with session_scope(_svc(request).engine) as session:
        req, _ = scanning.approve_request_code(session, pk, actor, files=body.files)
        if body.retry and req.state == "blocked":
            req = workflow.retry(session, pk, actor)
        return schemas.RequestPublic.of(req)


@router.post("/requests/{pk}/overrides", status_code=201, responses=ERRORS | {
    409: {"description": "No such blocking finding"}})
def override(pk: int, body: schemas.OverrideBody, actor: Admin, request: Request) -> dict[str, object]:
    """Override one blocking finding of one file of the request's last scan, with a written justification."""
    with session_scope(_svc(request).engine) as session:
        o = scanning.override_request_finding(session, pk, actor, path=body.path, rule=body.rule,
                                              justification=body.justification)
    return o.to_dict()


@router.get("/requests/{pk}/files/{path:path}", responses=ERRORS | {
    200: {"content": {"text/plain": {}}, "description": "The file's bytes, for review"}})
def scanned_file(pk: int, path: str, actor: Admin, request: Request) -> Response:
    """A file of the request's last scan (code to review, a blocked config), served as plain text, 1 MiB at most."""
    svc = _svc(request)
    with Session(svc.engine) as session:
        req = workflow.get(session, pk)
    rec = next((f for f in (req.scan or {}).get("files") or [] if f.get("path") == path), None)
    if rec is None:
        raise NotFoundError(f"Request {pk}'s scan has no file {path!r}")
    if rec["size"] > _REVIEW_LIMIT:
        raise InvalidInputError(f"{path} has {rec['size']} bytes; only files up to {_REVIEW_LIMIT} are shown here")
    with svc.store.open(rec["sha256"]) as f:
        data = f.read(_REVIEW_LIMIT)
    return Response(data, media_type="text/plain; charset=utf-8",
                    headers={"X-Content-Sha256": rec["sha256"], "Content-Disposition": "inline",
                             "X-Content-Type-Options": "nosniff"})


_REVIEW_LIMIT = 1024 * 1024


@router.post("/requests/{pk}/reject", response_model=schemas.RequestPublic,
             responses=ERRORS | {409: {"description": "Illegal transition"}})
def reject(pk: int, body: schemas.RejectBody, actor: Admin, request: Request) -> schemas.RequestPublic:
    with session_scope(_svc(request).engine) as session:
        return schemas.RequestPublic.of(workflow.reject(session, pk, actor, body.reason))


@router.post("/requests/{pk}/retry", response_model=schemas.RequestPublic,
             responses=ERRORS | {409: {"description": "Illegal transition"}})
def retry(pk: int, actor: Admin, request: Request) -> schemas.RequestPublic:
    with session_scope(_svc(request).engine) as session:
        return schemas.RequestPublic.of(workflow.retry(session, pk, actor))


@router.get("/repos", response_model=list[schemas.SnapshotPublic], responses=ERRORS)
def repos(actor: Reader, request: Request, repo_type: str = "model") -> list[schemas.SnapshotPublic]:
    """The default snapshot of every published repo of a type."""
    with Session(_svc(request).engine) as session:
        return [_snapshot(s, [r.name for r in catalog.list_refs(session, s.repo) if r.commit == s.commit])
                for s in access_routes.readable(_svc(request), actor, catalog.list_repos(session, RepoType.parse(repo_type)))]


@router.get("/repos/{repo_type}/{repo_id:path}/snapshots", response_model=list[schemas.SnapshotPublic], responses=ERRORS)
def repo_snapshots(repo_type: str, repo_id: str, actor: Reader, request: Request) -> list[schemas.SnapshotPublic]:
    repo = RepoRef.parse(repo_type, repo_id)
    access_routes.check_repo_sync(_svc(request), actor, repo)  # gated / private repos: their readers only
    with Session(_svc(request).engine) as session:
        refs = catalog.list_refs(session, repo)
        return [_snapshot(s, [r.name for r in refs if r.commit == s.commit]) for s in catalog.list_snapshots(session, repo)]


@router.get("/repos/{repo_type}/{repo_id:path}/snapshots/{commit}/signature", responses=ERRORS | {
    200: {"content": {"application/vnd.dev.sigstore.bundle.v0.3+json": {}},
          "description": "The OMS signature bundle; verify with `model_signing verify key`"}})
def signature(repo_type: str, repo_id: str, commit: str, actor: Reader, request: Request) -> Response:
    """The snapshot's OpenSSF model-signing bundle (save it as model.sig beside the downloaded folder)."""
    svc, repo = _svc(request), RepoRef.parse(repo_type, repo_id)
    access_routes.check_repo_sync(svc, actor, repo)
    with Session(svc.engine) as session:
        catalog.resolve(session, repo, validate_commit(commit))
    try:
        bundle = svc.store.get_signature(repo, commit)
    except ObjectNotFoundError as exc:
        raise NotFoundError(f"{repo.id}@{commit} has no signature") from exc
    return Response(bundle, media_type="application/vnd.dev.sigstore.bundle.v0.3+json")


@router.get("/repos/{repo_type}/{repo_id:path}/snapshots/{commit}/provenance", responses=ERRORS | {
    200: {"content": {"application/json": {}},
          "description": "A DSSE envelope over the snapshot's provenance (approvals, every file's scan record)"}})
def provenance(repo_type: str, repo_id: str, commit: str, actor: Reader, request: Request) -> Response:
    """The snapshot's signed provenance: verify it with this instance's public key (`hubgate keys export-public`)."""
    svc, repo = _svc(request), RepoRef.parse(repo_type, repo_id)
    access_routes.check_repo_sync(svc, actor, repo)
    with Session(svc.engine) as session:
        if not any(s.commit == validate_commit(commit) for s in catalog.list_snapshots(session, repo)):
            raise NotFoundError(f"{repo.id}@{commit} is not published here")
    try:
        envelope = svc.store.get_provenance_signature(repo, commit)
    except ObjectNotFoundError as exc:
        raise NotFoundError(f"{repo.id}@{commit} has no signed provenance") from exc
    return Response(envelope, media_type="application/json")


@router.put("/repos/{repo_type}/{repo_id:path}/refs/{ref}", responses=ERRORS)
def put_ref(repo_type: str, repo_id: str, ref: str, body: schemas.RefBody, actor: Admin, request: Request) -> dict[str, object]:
    """Point a ref (``main``, a tag) at an approved, published commit."""
    svc, repo, name = _svc(request), RepoRef.parse(repo_type, repo_id), parse_ref(ref)
    with session_scope(svc.engine) as session:
        changed = snapshots.move_ref(session, repo, name, body.commit, actor=actor)
    svc.store.put_ref(repo, name.full, body.commit)
    svc.cache.invalidate()
    return {"ref": name.name, "commit": body.commit, "changed": changed}


@router.delete("/repos/{repo_type}/{repo_id:path}/snapshots/{commit}", responses=ERRORS)
def remove_snapshot(repo_type: str, repo_id: str, commit: str, actor: Admin, request: Request) -> dict[str, object]:
    """Unpublish a commit (its blobs stay until gc)."""
    svc, repo = _svc(request), RepoRef.parse(repo_type, repo_id)
    with session_scope(svc.engine) as session:
        removed_refs = snapshots.remove_snapshot(session, repo, commit, actor=actor)
    svc.store.delete_snapshot(repo, commit)
    for ref in removed_refs:
        svc.store.delete_ref(repo, ref.full)
    svc.cache.invalidate()
    return {"removed": commit, "refs_removed": [r.name for r in removed_refs]}


@router.get("/audit", response_model=list[schemas.AuditPublic], responses=ERRORS)
def audit_log(actor: Admin, request: Request, action: str | None = None, target: str | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[schemas.AuditPublic]:
    with Session(_svc(request).engine) as session:
        return [schemas.AuditPublic.of(e) for e in audit.query(session, action=action, target=target, limit=limit)]


@router.post("/tokens", status_code=201, response_model=schemas.TokenPublic, responses=ERRORS)
def create_token(body: schemas.TokenCreate, actor: Admin, request: Request) -> schemas.TokenPublic:
    """Create a token; its secret is in this answer and nowhere else."""
    svc = _svc(request)
    days = None if body.no_expiry else body.expires_days or svc.settings.token_expiry_days
    with session_scope(svc.engine) as session:
        t = tokens.create(session, name=body.name, role=body.role, actor=actor, key=svc.token_key, expires_days=days)
    return schemas.TokenPublic(token_id=t.token_id, name=t.name, role=t.role, created_at=utcnow(), revoked=False,
                               token=t.token, expires_at=t.expires_at)


@router.get("/tokens", response_model=list[schemas.TokenPublic], responses=ERRORS)
def list_tokens(actor: Admin, request: Request) -> list[schemas.TokenPublic]:
    with Session(_svc(request).engine) as session:
        return [schemas.TokenPublic.of(t) for t in tokens.list_tokens(session)]


@router.delete("/tokens/{token_id}", responses=ERRORS)
def revoke_token(token_id: str, actor: Admin, request: Request) -> dict[str, str]:
    with session_scope(_svc(request).engine) as session:
        tokens.revoke(session, token_id, actor=actor)
    _svc(request).access_changed()  # refused by this process at once; by the others within a second
    return {"revoked": token_id}


def _snapshot(s: catalog.SnapshotView, refs: list[str]) -> schemas.SnapshotPublic:
    return schemas.SnapshotPublic(
        repo_type=s.repo.type.value, repo_id=s.repo.id, commit=s.commit, file_count=s.file_count,
        total_size=s.total_size, state=s.state, manifest_digest=s.manifest_digest, created_at=s.created_at, refs=refs,
        provenance=s.provenance, scan_verdict=(s.provenance.get("scan") or {}).get("verdict"),
    )
