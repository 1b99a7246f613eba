"""Who is looking at a web page, and the guards around it.

* **Sign-in** keeps the hubgate token (the same tokens as the API) in a cookie sealed with AES-256-GCM
  under a subkey of the instance key (``HUBGATE_SECRET_KEY_FILE``, shared by replicas): readable by
  no script (``HttpOnly``), sent by no other site (``SameSite=Strict``), ``Secure`` (and named
  ``__Host-…``) over https. Every page re-checks the token through the API's own token cache, so a
  revoked or expired token ends the session at once; the cookie itself lasts ``HUBGATE_UI_SESSION_HOURS``.
* **CSRF**: every state-changing form carries a token, an HMAC of the session's random id (of a
  short-lived pre-sign-in cookie for the sign-in form). A post without it, with a wrong one, or sent
  cross-site (``Sec-Fetch-Site``, ``Origin``) is refused with 403 before anything else runs.
* **Headers** on every answer: a Content-Security-Policy without ``unsafe-inline`` (scripts and
  styles are files under /-/static/), ``X-Frame-Options: DENY``, ``nosniff``, a strict Referrer-Policy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.audit import Actor
from registry.errors import HubgateError, InvalidInputError

FORM_BODY_CAP = 64 * 1024  # the largest form: a request with patterns and a reason, or a code approval
LOGIN_SECONDS = 3600  # how long a sign-in form stays valid

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class CsrfError(HubgateError):
    """A state-changing form came without its CSRF token, with a wrong one, or from another site (403)."""


class Keys:
    """The session sealing key and the CSRF key, both derived from the instance key (never used directly)."""

    def __init__(self, instance_key: bytes) -> None:
        self._aead = AESGCM(hmac.new(instance_key, b"hubgate/ui-session/v1", hashlib.sha256).digest())
        self._csrf = hmac.new(instance_key, b"hubgate/ui-csrf/v1", hashlib.sha256).digest()

    def seal(self, doc: dict[str, object]) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(doc, separators=(",", ":")).encode(), b"hubgate-ui")
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def unseal(self, value: str) -> dict[str, object] | None:
        """The sealed document, or None for anything this instance did not seal (tampered, foreign, garbage)."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            doc = json.loads(self._aead.decrypt(raw[:12], raw[12:], b"hubgate-ui"))
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            return None
        return doc if isinstance(doc, dict) else None

    def csrf(self, purpose: str, nonce: str) -> str:
        return hmac.new(self._csrf, f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Viewer:
    """The person looking at a page: ``actor`` None means signed out (anonymous reading, if allowed)."""

    actor: Actor | None
    csrf: str | None = None  # the token every form of this session carries
    notice: str | None = None  # why a session ended (revoked or expired token), shown once on the page

    @property
    def role(self) -> str | None:
        return self.actor.role if self.actor is not None else None

    @property
    def token_id(self) -> str | None:
        return self.actor.token_id if self.actor is not None else None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_request(self) -> bool:
        return self.role in ("requester", "admin")


def is_https(request: Request, public_url: str | None) -> bool:
    return request.url.scheme == "https" or bool(public_url and public_url.startswith("https://"))


def cookie_name(base: str, secure: bool) -> str:
    return f"__Host-{base}" if secure else base


def session_doc(token: str, now: float | None = None) -> dict[str, object]:
    return {"v": 1, "tok": token, "iat": int(now if now is not None else time.time()), "sid": os.urandom(16).hex()}


def check_origin(request: Request, own_origins: set[str]) -> None:
    """Refuse a post that the browser says came from another site (belt and braces with the CSRF token)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise CsrfError("This form was sent from another site: refused")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and origin.rstrip("/") not in own_origins:
        raise CsrfError(f"This form was sent from {origin[:100]}, not from this site: refused")
    if origin == "null":
        raise CsrfError("This form was sent from an opaque origin: refused")


def own_origins(request: Request, public_url: str | None) -> set[str]:
    origins = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    if public_url:
        parts = urlsplit(public_url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


def check_csrf(expected: str | None, form: dict[str, list[str]]) -> None:
    given = (form.get("csrf") or [""])[0]
    if expected is None or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfError("The form's CSRF token is missing or wrong (the page may be stale): reload it and try again")


async def read_form(request: Request) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body, at most FORM_BODY_CAP bytes (InvalidInputError past it).
    Any other body reads as no field at all, so that the CSRF check refuses it (403)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > FORM_BODY_CAP:
        raise InvalidInputError(f"Form larger than {FORM_BODY_CAP} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BODY_CAP:
            raise InvalidInputError(f"Form larger than {FORM_BODY_CAP} bytes")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError("The form is not valid UTF-8 form data") from exc


class SecurityHeaders:
    """ASGI wrapper: the security headers on every answer of the web pages (errors and static files too),
    long caching for the versioned static files, and ``Server-Timing: app;dur=<ms>`` (what bench/ui_bench.py
    reads: the time from the request reaching the pages to their answer starting)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        static = scope["path"].startswith("/-/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in HEADERS if h[0] not in names]
                if static and message["status"] == 200:  # URLs carry the content's hash (?v=…)
                    headers.append((b"cache-control", b"public, max-age=86400"))
                headers.append((b"server-timing", b"app;dur=%.1f" % ((time.perf_counter() - started) * 1000)))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
