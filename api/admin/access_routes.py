"""Admin endpoints for who may read what: repo visibility (public | gated | private), grants, groups;
and the helpers the request and catalog routes use to keep requests private to their author and
gated or private repos to their readers."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session

from api.admin import schemas
from api.auth import Admin
from api.services import Services, services
from registry import access
from registry.audit import Actor
from registry.db import session_scope
from registry.errors import NotFoundError
from registry.models import MirrorRequest
from registry.types import RepoRef

router = APIRouter(prefix="/registry/v1")
ERRORS: dict[int | str, dict[str, Any]] = {400: {"description": "Invalid input"}, 401: {"description": "No or invalid token"},
          403: {"description": "Not an admin"}, 404: {"description": "Not found"}}


class VisibilityBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visibility: Literal["public", "gated", "private"]
    reason: str | None = Field(None, max_length=2000)


class GrantBody(BaseModel):
    """Exactly one of ``token_id`` and ``group``."""

    model_config = ConfigDict(extra="forbid")

    token_id: str | None = Field(None, min_length=1, max_length=32)
    group: str | None = Field(None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one(self) -> GrantBody:
        if (self.token_id is None) == (self.group is None):
            raise ValueError("give exactly one of token_id and group")
        return self

    @property
    def subject(self) -> str:
        return f"token:{self.token_id}" if self.token_id is not None else f"group:{self.group}"


class AccessPublic(BaseModel):
    repo_type: str
    repo_id: str
    visibility: str
    grants: list[str]


class GrantPublic(BaseModel):
    repo_type: str
    repo_id: str
    subject: str
    created_by: str


class MemberPublic(BaseModel):
    group: str
    token_id: str
    created_by: str


def _access(session: Session, repo: RepoRef) -> AccessPublic:
    doc = access.repo_access(session, repo)
    return AccessPublic(repo_type=repo.type.value, repo_id=repo.id, **doc)


@router.get("/repos/{repo_type}/{repo_id:path}/access", response_model=AccessPublic, responses=ERRORS)
def get_access(repo_type: str, repo_id: str, actor: Admin, request: Request) -> AccessPublic:
    """A repo's visibility and who is granted it (``token:<id>``, ``group:<name>``)."""
    with Session(services(request).engine) as session:
        return _access(session, RepoRef.parse(repo_type, repo_id))


@router.put("/repos/{repo_type}/{repo_id:path}/visibility", response_model=AccessPublic, responses=ERRORS)
def put_visibility(repo_type: str, repo_id: str, body: VisibilityBody, actor: Admin, request: Request) -> AccessPublic:
    """Make a repo public, gated (GatedRepo to tokens without a grant) or private (RepoNotFound to them)."""
    svc, repo = services(request), RepoRef.parse(repo_type, repo_id)
    with session_scope(svc.engine) as session:
        access.set_visibility(session, repo, body.visibility, actor=actor, reason=body.reason)
    svc.access_changed()
    with Session(svc.engine) as session:
        return _access(session, repo)


@router.post("/repos/{repo_type}/{repo_id:path}/grants", status_code=201, response_model=AccessPublic,
             responses=ERRORS)
def add_grant(repo_type: str, repo_id: str, body: GrantBody, actor: Admin, request: Request) -> AccessPublic:
    """Grant a token, or every token of a group, read access to a gated or private repo."""
    svc, repo = services(request), RepoRef.parse(repo_type, repo_id)
    with session_scope(svc.engine) as session:
        access.add_grant(session, repo, body.subject, actor=actor)
    svc.access_changed()
    with Session(svc.engine) as session:
        return _access(session, repo)


@router.delete("/repos/{repo_type}/{repo_id:path}/grants/{subject}", response_model=AccessPublic, responses=ERRORS)
def remove_grant(repo_type: str, repo_id: str, subject: str, actor: Admin, request: Request) -> AccessPublic:
    """Take a grant back (``subject``: ``token:<id>`` or ``group:<name>``); it applies within a second everywhere."""
    svc, repo = services(request), RepoRef.parse(repo_type, repo_id)
    with session_scope(svc.engine) as session:
        access.remove_grant(session, repo, subject, actor=actor)
    svc.access_changed()
    with Session(svc.engine) as session:
        return _access(session, repo)


@router.get("/grants", response_model=list[GrantPublic], responses=ERRORS)
def list_grants(actor: Admin, request: Request) -> list[GrantPublic]:
    with Session(services(request).engine) as session:
        return [GrantPublic(repo_type=g.repo_type, repo_id=g.repo_id, subject=g.subject, created_by=g.created_by)
                for g in access.list_grants(session)]


@router.get("/groups", response_model=list[MemberPublic], responses=ERRORS)
def list_groups(actor: Admin, request: Request, group: str | None = None) -> list[MemberPublic]:
    with Session(services(request).engine) as session:
        return [MemberPublic(group=m.group_name, token_id=m.token_id, created_by=m.created_by)
                for m in access.list_members(session, group)]


@router.put("/groups/{group}/members/{token_id}", response_model=MemberPublic, responses=ERRORS)
def add_member(group: str, token_id: str, actor: Admin, request: Request) -> MemberPublic:
    svc = services(request)
    with session_scope(svc.engine) as session:
        access.add_member(session, group, token_id, actor=actor)
    svc.access_changed()
    return MemberPublic(group=group, token_id=token_id, created_by=actor.name)


@router.delete("/groups/{group}/members/{token_id}", responses=ERRORS)
def remove_member(group: str, token_id: str, actor: Admin, request: Request) -> dict[str, str]:
    svc = services(request)
    with session_scope(svc.engine) as session:
        access.remove_member(session, group, token_id, actor=actor)
    svc.access_changed()
    return {"group": group, "removed": token_id}


# -- used by the request and catalog routes (api/admin/routes.py)


def own_requests_only(actor: Actor) -> str | None:
    """The requester to filter a request listing by: the caller's own, unless an admin."""
    return None if actor.role == "admin" else actor.name


def request_view(session: Session, svc: Services, actor: Actor, req: MirrorRequest) -> schemas.RequestPublic:
    """A request as its author or an admin sees it; to anyone else it does not exist (NotFoundError, with
    the words a missing request gets). Admins also see the repo's visibility and grants."""
    if actor.role != "admin" and req.requester != actor.name:
        raise NotFoundError(f"No mirror request {req.pk}")
    view = redacted(svc, actor, schemas.RequestPublic.of(req))
    if actor.role == "admin":
        view.access = access.repo_access(session, RepoRef.parse(req.repo_type, req.repo_id))
    return view


def redacted(svc: Services, actor: Actor, view: schemas.RequestPublic) -> schemas.RequestPublic:
    """``changes`` compares with what is published here: not for a caller who may not read the repo."""
    if view.changes is not None and not svc.access_snapshot_sync().may_read(
            (view.repo_type, view.repo_id), actor.token_id, actor.role):
        view.changes = None
    return view


def check_repo_sync(svc: Services, actor: Actor, repo: RepoRef) -> None:
    """``api.auth.check_repo`` for the threadpool routes (catalog listings, signatures)."""
    svc.access_snapshot_sync().check(access.key_of(repo), actor.token_id, actor.role)


def readable(svc: Services, actor: Actor, repos: list[Any]) -> list[Any]:
    """The snapshot views (``.repo``) among ``repos`` that ``actor`` may see: private ones need a grant."""
    acl = svc.access_snapshot_sync()
    return [s for s in repos if acl.visibility.get(access.key_of(s.repo)) != access.PRIVATE
            or acl.may_read(access.key_of(s.repo), actor.token_id, actor.role)]
