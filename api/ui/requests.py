"""Requests, the approval desk and the decisions: the REST routes' domain calls, so the behaviour and
the audit entries are the same whichever door a person uses.

Requests are private to their author (admins see all): anyone else gets the 404 a missing request
gets. Every decision is a POST form with the session's CSRF token, refused (403, audited) unless the
signed-in token is an admin's, whatever the page showed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.admin import schemas
from api.admin.access_routes import own_requests_only
from api.admin.routes import submit_request
from api.errors import status_of
from api.services import Services
from api.ui.app import Ui, see_other, ui_of
from api.ui.render import PREFIX
from api.ui.security import Viewer
from mirror.errors import ObjectNotFoundError
from registry import access, browse, scanning, tokens, workflow
from registry.audit import Actor
from registry.db import session_scope
from registry.errors import HubgateError, InvalidInputError, NotFoundError
from registry.models import MirrorRequest
from registry.types import RepoRef

STATES = ("pending", "approved", "syncing", "available", "failed", "blocked", "rejected")
LIVE_STATES = frozenset({"pending", "approved", "syncing"})  # the page follows these without a reload
SEVERITY_ORDER = {"block": 0, "warn": 1, "info": 2}
CODE_VIEW_LIMIT = 1024 * 1024  # as GET /registry/v1/requests/{id}/files/{path}


def summary(req: MirrorRequest) -> dict[str, Any]:
    """What a queue row shows of a request, from its own columns (no query)."""
    licence = next(((f.get("data") or {}).get("license") for f in req.findings
                    if str(f.get("rule", "")).startswith("license") and (f.get("data") or {}).get("license")), None)
    size = next(((f.get("data") or {}).get("bytes") for f in req.findings if f.get("rule") in ("size", "size.too-large")),
                None)
    counts = Counter(str(f.get("severity", "info")) for f in req.findings)
    worst = min(counts, key=lambda s: SEVERITY_ORDER.get(s, 3)) if counts else None
    return {"license": licence, "size": size if size is not None else (req.bytes_total or None), "counts": counts,
            "worst": worst, "changes": req.changes, "blocking": len((req.scan or {}).get("blocking") or [])}


def visible_request(session: Session, viewer: Viewer, pk: int) -> MirrorRequest:
    """The request if ``viewer`` is its author or an admin; NotFoundError (the words of a missing one) otherwise."""
    req = workflow.get(session, pk)
    if viewer.actor is None or (not viewer.is_admin and req.requester != viewer.actor.name):
        raise NotFoundError(f"No mirror request {pk}")
    return req


def _sorted_findings(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(str(f.get("severity")), 3), str(f.get("rule"))))


def load_request(svc: Services, viewer: Viewer, pk: int) -> dict[str, Any]:
    """The request page's data: the request, and for admins the review (access, audit trail)."""
    with Session(svc.engine) as session:
        req = visible_request(session, viewer, pk)
        repo = RepoRef.parse(req.repo_type, req.repo_id)
        review = {}
        if viewer.is_admin:
            review = {"access": access.repo_access(session, repo), "trail": browse.request_trail(session, req)}
    changes = req.changes
    if changes is not None and not svc.access_snapshot_sync().may_read(access.key_of(repo), viewer.token_id, viewer.role):
        changes = None  # it compares with what is published here: not for a caller who may not read the repo
    scan = req.scan or {}
    return {"req": req, "repo": repo, "summary": summary(req), "changes": changes, "phase": schemas.Progress.of(req).phase,
            "findings": _sorted_findings(req.findings), "needs_reason": workflow.needs_reason(req),
            "scan": scan, "scan_files": sorted(scan.get("files") or [], key=lambda f: (f.get("verdict") != "block",
                                                                                       f.get("path", ""))),
            "blocking": [dict(b, overridable=bool(b.get("path")) and not str(b.get("rule", "")).startswith(
                scanning.NOT_OVERRIDABLE_PREFIXES)) for b in scan.get("blocking") or []],
            "code_files": scan.get("code_files") or [], "live": req.state in LIVE_STATES, **review}


async def _request_response(request: Request, ui: Ui, viewer: Viewer, pk: int, *, error: str | None = None,
                            status: int = 200) -> Response:
    data = await run_in_threadpool(load_request, ui.svc, viewer, pk)
    return ui.page(request, "request.html", viewer, status=status, error=error, **data)


async def request_page(request: Request) -> Response:
    ui = ui_of(request)
    viewer = await ui.signed_in(request)
    return await _request_response(request, ui, viewer, request.path_params["pk"])


async def status(request: Request) -> Response:
    """What the request page polls: state and progress (the author's and admins' only)."""
    ui = ui_of(request)
    viewer = await ui.signed_in(request)

    def load() -> MirrorRequest:
        with Session(ui.svc.engine) as session:
            return visible_request(session, viewer, request.path_params["pk"])

    req = await run_in_threadpool(load)
    doc = {"id": req.pk, "state": req.state, "live": req.state in LIVE_STATES, **schemas.Progress.of(req).model_dump(),
           "error": req.error, "updated_at": req.updated_at.isoformat()}
    return JSONResponse(doc, headers={"cache-control": "no-store"})


# -- listing and filing


def _request_form(fields: dict[str, list[str]]) -> dict[str, Any]:
    def one(name: str, default: str = "") -> str:
        return (fields.get(name) or [default])[0].strip()

    def lines(name: str) -> list[str] | None:
        values = [p.strip() for p in one(name).splitlines() if p.strip()]
        return values or None

    return {"repo_type": one("repo_type", "model"), "repo_id": one("repo_id"), "revision": one("revision") or "main",
            "allow_patterns": lines("allow_patterns"), "ignore_patterns": lines("ignore_patterns"),
            "reason": one("reason")}


async def requests_page(request: Request, *, form: dict[str, Any] | None = None, error: str | None = None,
                        status: int = 200) -> Response:
    ui = ui_of(request)
    viewer = await ui.signed_in(request)
    state = request.query_params.get("state") or None
    state = state if state in STATES else None
    assert viewer.actor is not None

    def load() -> tuple[list[MirrorRequest], dict[str, int]]:
        mine = own_requests_only(viewer.actor)  # type: ignore[arg-type]
        with Session(ui.svc.engine) as session:
            return (workflow.list_requests(session, state=state, limit=200, requester=mine),
                    browse.request_counts(session, mine))

    rows, counts = await run_in_threadpool(load)
    return ui.page(request, "requests.html", viewer, status=status, rows=[(r, summary(r)) for r in rows],
                   counts=counts, states=STATES, state=state, form=form or {"repo_type": "model", "revision": "main"},
                   error=error)


async def create(request: Request) -> Response:
    """File a request (REST: POST /registry/v1/requests): resolved upstream, with findings; then its page."""
    ui = ui_of(request)
    viewer = await ui.signed_in(request)
    fields = await ui.form(request, viewer)
    tokens.authorize(viewer.role or "reader", "requester")
    form = _request_form(fields)
    actor = viewer.actor
    assert actor is not None
    try:
        body = schemas.RequestCreate(**form)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return await requests_page(request, form=form, error=f"{where}: {err['msg']}", status=400)
    try:
        ui.svc.limits.request_created(actor.token_id)
        req = await run_in_threadpool(submit_request, ui.svc, body.repo_type, body.repo_id, body.revision,
                                      body.allow_patterns, body.ignore_patterns, body.reason, actor)
    except HubgateError as exc:
        code = status_of(exc)[0]
        if code in (401, 403):
            raise
        return await requests_page(request, form=form, error=exc.message, status=code if code < 500 else 502)
    return see_other(f"{PREFIX}/requests/{req.pk}")


# -- the desk


async def desk_page(request: Request) -> Response:
    ui = ui_of(request)
    viewer = await ui.signed_in(request, "admin")

    def load() -> dict[str, list[tuple[MirrorRequest, dict[str, Any]]]]:
        with Session(ui.svc.engine) as session:
            queues = {state: workflow.list_requests(session, state=state, limit=500)
                      for state in ("pending", "blocked", "failed", "approved", "syncing")}
        return {state: [(r, summary(r)) for r in reversed(rows)] for state, rows in queues.items()}  # oldest first

    queues = await run_in_threadpool(load)
    return ui.page(request, "desk.html", viewer, queues=queues)


# -- decisions (admins)


def _field(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0].strip()


def _approve(svc: Services, pk: int, actor: Actor, fields: dict[str, list[str]]) -> None:
    with session_scope(svc.engine) as session:
        workflow.approve(session, pk, actor, reason=_field(fields, "reason") or None,
                         require_second_approver=svc.settings.require_second_approver)


def _reject(svc: Services, pk: int, actor: Actor, fields: dict[str, list[str]]) -> None:
    reason = _field(fields, "reason")
    if not reason:
        raise InvalidInputError("A rejection needs a reason: the requester reads it")
    if len(reason) > 2000:
        raise InvalidInputError("A reason has at most 2000 characters")
    with session_scope(svc.engine) as session:
        workflow.reject(session, pk, actor, reason)


def _retry(svc: Services, pk: int, actor: Actor, fields: dict[str, list[str]]) -> None:
    with session_scope(svc.engine) as session:
        workflow.retry(session, pk, actor)


def _approve_code(svc: Services, pk: int, actor: Actor, fields: dict[str, list[str]]) -> None:
    files = {}
    for value in fields.get("file") or []:
        sha256, _, path = value.partition(":")
        files[path] = sha256
    if not files:
        raise InvalidInputError("Tick each code file you reviewed")
    with session_scope(svc.engine) as session:
        req, _ = scanning.approve_request_code(session, pk, actor, files=files)
        if _field(fields, "retry") and req.state == "blocked":
            workflow.retry(session, pk, actor)


def _override(svc: Services, pk: int, actor: Actor, fields: dict[str, list[str]]) -> None:
    with session_scope(svc.engine) as session:
        scanning.override_request_finding(session, pk, actor, path=_field(fields, "path"), rule=_field(fields, "rule"),
                                          justification=_field(fields, "justification"))


ACTIONS: dict[str, Callable[[Services, int, Actor, dict[str, list[str]]], None]] = {
    "approve": _approve, "reject": _reject, "retry": _retry, "code": _approve_code, "override": _override,
}


async def decide(request: Request) -> Response:
    """One decision on a request; back to its page (303), or the page with the refusal and its status."""
    ui = ui_of(request)
    viewer = await ui.signed_in(request)
    fields = await ui.form(request, viewer)  # CSRF before anything else
    tokens.authorize(viewer.role or "reader", "admin")  # the page never showed a reader these forms; refuse anyway
    action, pk = ACTIONS.get(request.path_params["action"]), request.path_params["pk"]
    if action is None:
        raise NotFoundError("No such action")
    assert viewer.actor is not None
    try:
        await run_in_threadpool(action, ui.svc, pk, viewer.actor, fields)
    except HubgateError as exc:
        code = status_of(exc)[0]
        if code in (401, 403, 404):
            raise
        return await _request_response(request, ui, viewer, pk, error=exc.message, status=code)
    return see_other(f"{PREFIX}/requests/{pk}")


async def scanned_file(request: Request) -> Response:
    """A scanned file's text for review (REST: GET /registry/v1/requests/{id}/files/{path}), escaped in a page."""
    ui = ui_of(request)
    viewer = await ui.signed_in(request, "admin")
    pk, path = request.path_params["pk"], request.path_params["path"]

    def load() -> tuple[MirrorRequest, dict[str, Any], str]:
        with Session(ui.svc.engine) as session:
            req = workflow.get(session, pk)
        rec = next((f for f in (req.scan or {}).get("files") or [] if f.get("path") == path), None)
        if rec is None:
            raise NotFoundError(f"Request {pk}'s scan has no file {path!r}")
        if rec["size"] > CODE_VIEW_LIMIT:
            raise InvalidInputError(f"{path} has {rec['size']} bytes; only files up to {CODE_VIEW_LIMIT} are shown here")
        try:
            with ui.svc.store.open(rec["sha256"]) as f:
                text = f.read(CODE_VIEW_LIMIT).decode("utf-8", errors="replace")
        except ObjectNotFoundError as exc:
            raise NotFoundError(f"{path} is no longer in the store") from exc
        return req, rec, text

    req, rec, text = await run_in_threadpool(load)
    code = next((c for c in (req.scan or {}).get("code_files") or [] if c.get("path") == path), None)
    return ui.page(request, "code.html", viewer, req=req, rec=rec, code=code, lines=text.splitlines() or [""])
