"""The web pages' app: routes under ``/-/``, sign-in, error pages, and what every handler shares.

URL layout (mounted by ``install`` on the admin app; ``HubgateApp.route`` sends ``/`` and ``/-/…`` there):

    /                                      303 to /-/ (api/hub/files.py: no Hub path is /)
    /-/                                    the catalog (search, filters, sort, pages)
    /-/models/{repo_id}, /-/datasets/{repo_id}       a repo: card, files, refs, snapshots, provenance
    /-/models/{repo_id}/-/signature/{commit}        the snapshot's OMS signature (as the REST route)
    /-/requests                            my requests (admins: all) and the form to file one
    /-/requests/{id}                       one request, live; for admins the review and the decisions
    /-/requests/{id}/status                its state and progress as JSON (the page's polling)
    /-/requests/{id}/files/{path}          a scanned file's text, for code review (admins)
    /-/requests/{id}/{approve|reject|retry|code|override}   decisions (POST, admins)
    /-/desk                                the approval queue (admins)
    /-/login, /-/logout                    sign-in with a hubgate token, sign-out (POST)
    /-/static/…                            CSS, JS, icons: files of this package

Why ``/-/``: every Hub path starts with ``/api/``, ``/datasets/``, ``/spaces/`` or a repo id, and a
repo id segment must start with a letter or digit (registry/types.py, as on the Hub), so no repo
can ever be named ``-``: no present or future repo collides with a page (GitLab reserves ``/-/`` for
the same reason). ``/`` is no Hub route either.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api.auth import record_denied
from api.errors import status_of
from api.request_context import current_request_id
from api.services import Services
from api.ui import security
from api.ui.render import PREFIX, STATIC, make_env
from api.ui.security import CsrfError, Keys, Viewer
from registry import browse, secrets, tokens
from registry.audit import Actor
from registry.browse import CatalogEntry
from registry.errors import HubgateError

log = logging.getLogger(__name__)

SESSION, LOGIN = "hubgate_session", "hubgate_login"
CATALOG_MAX_AGE_SECONDS = 300.0  # belt and braces: the fingerprint already notices every change that shows


class SignInRequiredError(HubgateError):
    """The page needs a signed-in user: answered with a redirect to the sign-in form."""


class Ui:
    """What every page handler shares: the services, the templates, the session keys."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.env = make_env()
        self.keys = Keys(secrets.load_or_create_key(svc.settings.key_file))
        self._catalog: tuple[tuple[Any, ...], float, list[CatalogEntry]] | None = None

    def catalog(self) -> list[CatalogEntry]:
        """Every listed repo (registry.browse.catalog_entries), kept while the catalog's fingerprint stays the
        same: a page costs two small aggregate queries, not a read of every snapshot. Runs in the threadpool."""
        with Session(self.svc.engine) as session:
            version = browse.catalog_version(session)
            held = self._catalog
            if held is not None and held[0] == version and time.monotonic() - held[1] < CATALOG_MAX_AGE_SECONDS:
                return held[2]
            entries = browse.catalog_entries(session)
        self._catalog = (version, time.monotonic(), entries)  # one reference swap: readers never see half of it
        return entries

    # -- who is looking
    async def viewer(self, request: Request) -> Viewer:
        """The signed-in actor (through the API's token cache: revocation and expiry apply at once), else anonymous."""
        cached = getattr(request.state, "ui_viewer", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        viewer = await self._viewer(request)
        request.state.ui_viewer = viewer
        if viewer.actor is not None:
            request.state.hubgate_actor = viewer.actor  # names the actor of an audited refusal
        return viewer

    async def _viewer(self, request: Request) -> Viewer:
        raw = request.cookies.get(self.cookie(request, SESSION))
        doc = self.keys.unseal(raw) if raw else None
        if doc is None:
            return Viewer(None)
        age = time.time() - float(doc.get("iat", 0))  # type: ignore[arg-type]
        if not 0 <= age < self.svc.settings.ui_session_hours * 3600:
            return Viewer(None, notice="Your session has ended: sign in again")
        source = request.client.host if request.client else None
        try:
            found = await self.svc.actor(str(doc.get("tok", "")), source)
        except tokens.TokenExpiredError:
            return Viewer(None, notice="Your token has expired: ask an admin for a new one")
        if found is None:
            return Viewer(None, notice="Your token is no longer valid (revoked?): sign in again")
        actor = Actor(found.name, found.role, source, token_id=found.token_id, request_id=current_request_id())
        return Viewer(actor, csrf=self.keys.csrf("session", str(doc.get("sid", ""))))

    async def signed_in(self, request: Request, role: str = "reader") -> Viewer:
        """The viewer, who must be signed in (SignInRequiredError) with at least ``role`` (PermissionDeniedError)."""
        viewer = await self.viewer(request)
        if viewer.actor is None:
            raise SignInRequiredError("Sign in to see this page")
        tokens.authorize(viewer.actor.role, role)
        return viewer

    async def reader(self, request: Request) -> Viewer:
        """The viewer of a catalog page: anyone when anonymous reading is on, else a signed-in user."""
        viewer = await self.viewer(request)
        if viewer.actor is None and not self.svc.settings.anonymous_read:
            raise SignInRequiredError("This instance needs a token to read the catalog: sign in")
        return viewer

    async def form(self, request: Request, viewer: Viewer) -> dict[str, list[str]]:
        """A state-changing form's fields, after the origin and CSRF checks (CsrfError: 403)."""
        security.check_origin(request, security.own_origins(request, self.svc.settings.public_url))
        fields = await security.read_form(request)
        security.check_csrf(viewer.csrf, fields)
        return fields

    # -- answers
    def cookie(self, request: Request, base: str) -> str:
        return security.cookie_name(base, self.secure(request))

    def secure(self, request: Request) -> bool:
        return security.is_https(request, self.svc.settings.public_url)

    def page(self, request: Request, template: str, viewer: Viewer, *, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            viewer=viewer, path=request.url.path, instance=self.svc.settings.instance_name, **context)
        response = HTMLResponse(html, status_code=status)
        response.headers["cache-control"] = "no-store" if viewer.actor is not None else "no-cache"
        if viewer.notice is not None and request.cookies.get(self.cookie(request, SESSION)):
            self.clear(request, response, SESSION)  # the session ended: drop its cookie
        return response

    def set_cookie(self, request: Request, response: Response, base: str, value: str, max_age: int) -> None:
        response.set_cookie(self.cookie(request, base), value, max_age=max_age, path="/", secure=self.secure(request),
                            httponly=True, samesite="strict")

    def clear(self, request: Request, response: Response, base: str) -> None:
        response.delete_cookie(self.cookie(request, base), path="/", secure=self.secure(request), httponly=True,
                               samesite="strict")


def ui_of(request: Request) -> Ui:
    return request.app.state.ui  # type: ignore[no-any-return]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- sign-in


def _next(value: str | None) -> str:
    """Where to go after signing in: a page of this UI only (never an open redirect)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith(PREFIX + "//") and "\\" not in value:
        return value
    return PREFIX + "/"


async def login_form(request: Request) -> Response:
    ui = ui_of(request)
    viewer = await ui.viewer(request)
    return _login_page(request, ui, viewer, next_url=_next(request.query_params.get("next")))


def _login_page(request: Request, ui: Ui, viewer: Viewer, *, next_url: str, error: str | None = None,
                status: int = 200) -> Response:
    nonce = os.urandom(16).hex()
    login_viewer = Viewer(viewer.actor, csrf=ui.keys.csrf("login", nonce), notice=viewer.notice)
    response = ui.page(request, "login.html", login_viewer, status=status, next_url=next_url, error=error)
    ui.set_cookie(request, response, LOGIN, nonce, security.LOGIN_SECONDS)
    return response


async def login(request: Request) -> Response:
    """Check the token like the API does (the same cache, expiry, revocation and failed-attempt limit)."""
    ui = ui_of(request)
    nonce = request.cookies.get(ui.cookie(request, LOGIN), "")
    fields = await ui.form(request, Viewer(None, csrf=ui.keys.csrf("login", nonce) if nonce else None))
    next_url = _next((fields.get("next") or [""])[0])
    token = (fields.get("token") or [""])[0].strip()
    source = request.client.host if request.client else None
    error = None
    try:
        actor = await ui.svc.actor(token, source) if token else None
    except tokens.TokenExpiredError as exc:
        actor, error = None, exc.message
    if actor is None:
        return _login_page(request, ui, Viewer(None), next_url=next_url, status=401,
                           error=error or "That is not a valid hubgate token")
    response = see_other(next_url)
    ui.set_cookie(request, response, SESSION, ui.keys.seal(security.session_doc(token)),
                  ui.svc.settings.ui_session_hours * 3600)
    ui.clear(request, response, LOGIN)
    log.info("web sign-in by %s (token %s) from %s", actor.name, actor.token_id, source)
    return response


async def logout(request: Request) -> Response:
    ui = ui_of(request)
    viewer = await ui.viewer(request)
    await ui.form(request, viewer)
    response = see_other(PREFIX + "/")
    ui.clear(request, response, SESSION)
    return response


# -- errors as pages


async def error_page(request: Request, exc: Exception) -> Response:
    ui = ui_of(request)
    if isinstance(exc, SignInRequiredError):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = see_other(f"{PREFIX}/login?next={quote(here)}")
        ended = getattr(request.state, "ui_viewer", None)
        if ended is not None and ended.notice is not None:
            ui.clear(request, response, SESSION)  # a revoked or expired session: drop its cookie once
        return response
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, ("No such page" if exc.status_code == 404 else str(exc.detail))
    else:
        assert isinstance(exc, HubgateError)
        status = 403 if isinstance(exc, CsrfError) else status_of(exc)[0]
        message = exc.message if status < 500 else "Internal error; an operator has been alerted"
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        if status in (401, 403) and request.method == "POST":
            await record_denied(request, exc, status)  # audited like a refused admin API call
    viewer = getattr(request.state, "ui_viewer", None) or Viewer(None)
    return ui.page(request, "error.html", viewer, status=status, status_code=status, message=message)


def create_ui(svc: Services) -> Any:
    """The pages as an ASGI app (under the security headers), to mount at ``/-``."""
    from api.ui import catalog, requests

    routes = [
        Route("/", catalog.catalog_page, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/desk", requests.desk_page, methods=["GET"]),
        Route("/requests", requests.requests_page, methods=["GET"]),
        Route("/requests", requests.create, methods=["POST"]),
        Route("/requests/{pk:int}", requests.request_page, methods=["GET"]),
        Route("/requests/{pk:int}/status", requests.status, methods=["GET"]),
        Route("/requests/{pk:int}/files/{path:path}", requests.scanned_file, methods=["GET"]),
        Route("/requests/{pk:int}/{action}", requests.decide, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/{kind}/{repo_id:path}/-/signature/{commit}", catalog.signature, methods=["GET"]),
        Route("/{kind}/{repo_id:path}", catalog.repo_page, methods=["GET"]),  # kind: models | datasets
    ]
    app = Starlette(routes=routes, exception_handlers={HubgateError: error_page, HTTPException: error_page})
    app.router.redirect_slashes = False  # /-/x/ and /-/x are different pages or none: a 404, not a redirect
    app.state.services = svc
    app.state.ui = Ui(svc)
    return security.SecurityHeaders(app)


def install(admin: FastAPI, svc: Services) -> None:
    """Mount the pages at ``/-/`` (``/`` itself is redirected there by the resolve path's not-found branch)."""
    admin.mount(PREFIX, create_ui(svc))
