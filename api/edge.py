"""The HTTP edge, run once per request before any routing (from ``HubgateApp.__call__``).

* **Host allowlist.** Absolute URLs (pagination ``Link``s) are built from HUBGATE_PUBLIC_URL, else
  from the request's ``Host``; so a ``Host`` that is not on the allowlist is refused (400) for every
  route. Default list: the bind address, ``localhost``, ``127.0.0.1`` and ``[::1]``, each bare or with
  the bind port (or the port the server actually listens on), plus the HUBGATE_PUBLIC_URL host.
* **X-Request-Id** on every response: the client's, when well formed, else a new one (a per-process
  random prefix and a counter: cheaper than a uuid4 on the HEAD hot path). It is in the request's
  context (api/request_context.py) for audit entries and log records (api/logs.py); one log line names
  each request answered with a 5xx. The resolve hot path (api/hub/files.py) adds
  the header where it builds its answer; everything else gets it from one send wrapper here (a wrapper
  on the hot path cost more than the rest of the edge together).
* **Body caps per route**: the admin API's JSON bodies and the Hub's ``paths-info`` form. A declared
  ``Content-Length`` over the cap is refused before the app runs; a chunked body is counted as it is
  read. Either way the answer is 413 naming the cap.

Header-block size and slow-header timeouts are enforced below the app, in api/protocol.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.hub import wire
from api.request_context import reset_request_id, set_request_id
from api.settings import Settings
from mirror.egress import parse_target, split_host_entry

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/registry/"
SMALL_BODY_PREFIXES = (ADMIN_PREFIX, "/-/")  # the admin API's JSON and the web pages' forms
ADMIN_BODY_CAP = 64 * 1024  # admin JSON bodies: requests, decisions, refs, tokens
HUB_BODY_CAP = 4 * 1024 * 1024  # POST paths-info: up to 10000 paths
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_NO_BODY = frozenset(("GET", "HEAD"))
_ID_HEADER = wire.X_REQUEST_ID.lower().encode()

Resolve = Callable[[Scope, Receive, Send, bytes], Awaitable[None]]
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(settings: Settings) -> tuple[frozenset[bytes], frozenset[bytes], tuple[bytes, ...]]:
    """(exact ``Host`` values, names also allowed with the port the server listens on, ``.suffix``es of
    ``*.suffix`` entries, which allow any subdomain on any port), lower-case."""
    bind = f"[{settings.host}]" if ":" in settings.host else settings.host
    entries = list(settings.allowed_hosts) or [bind, *_LOOPBACK_NAMES]
    if settings.public_url:
        public = parse_target(settings.public_url)
        host = f"[{public.host}]" if ":" in public.host else public.host
        entries += [host, f"{host}:{public.port}"]
    exact, bare, suffixes = set(), set(), []
    for entry in entries:
        name, port = split_host_entry(entry)
        if name.startswith("*."):
            suffixes.append(name[1:].encode())
        elif port is None:
            exact |= {name, f"{name}:{settings.port}"}
            bare.add(name)
        else:
            exact.add(f"{name}:{port}")
    return frozenset(e.encode() for e in exact), frozenset(b.encode() for b in bare), tuple(suffixes)


class Edge:
    """The ASGI entry (``HubgateApp`` is one): Host check, request id, body caps, 5xx log line, then ``app``.

    ``resolve(scope, receive, send, request_id)`` serves the resolve hot path (GET/HEAD outside
    ``routed_prefixes``) and puts X-Request-Id on its answer itself; every other request goes to ``app``
    through one send wrapper that adds it. Non-HTTP scopes (lifespan) go straight to ``app``."""

    def __init__(self, app: ASGIApp, settings: Settings, *, resolve: Resolve, routed_prefixes: tuple[str, ...]) -> None:
        self.app, self._resolve, self._routed = app, resolve, routed_prefixes
        self._exact, self._bare, self._suffixes = allowed_hosts(settings)
        self._id_prefix = os.urandom(4).hex().encode() + b"-"
        self._ids = itertools.count(1)

    def _host_allowed(self, host: bytes, scope: Scope) -> bool:
        host = host.lower()
        if host in self._exact:
            return True
        name, colon, port = host.rpartition(b":")
        if not colon or b"]" in port:  # no port (an IPv6 literal's colons are inside its brackets)
            name = host
        elif not port.isdigit():
            return False
        if self._suffixes and name.endswith(self._suffixes):
            return True
        server = scope.get("server")
        # ``--port 0`` and the test servers listen on another port than HUBGATE_PORT
        return name in self._bare and server is not None and port == str(server[1]).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every request, the resolve HEAD hot path included, runs this: one pass over the headers, no
        # allocation but the id on that path, no extra call layer (HubgateApp *is* the edge).
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = request_id = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"x-request-id":
                request_id = value
        if request_id is None or _REQUEST_ID.match(request_id) is None:
            request_id = b"%s%x" % (self._id_prefix, next(self._ids))
        token = set_request_id(request_id.decode("ascii"))
        try:
            if host is not None and host not in self._exact and not self._host_allowed(host, scope):
                shown = json.dumps(host.decode("latin-1")[:100])
                await _Exchange(scope, send, request_id).refuse(
                    400, "HostNotAllowed", f"Host {shown} is not served here: use an allowed host "
                    "(HUBGATE_ALLOWED_HOSTS) or the public URL (HUBGATE_PUBLIC_URL)")
            elif scope["method"] in _NO_BODY and not scope["path"].startswith(self._routed):
                try:
                    await self._resolve(scope, receive, send, request_id)
                except Exception:  # the resolve path answers every failure before its answer starts
                    log.error("%s %s failed while sending its answer", scope["method"], scope["path"])
                    raise
            else:
                await self._guarded(scope, receive, send, request_id)
        finally:
            reset_request_id(token)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, request_id: bytes) -> None:
        exchange = _Exchange(scope, send, request_id)
        try:
            if scope["method"] not in _NO_BODY:
                cap = ADMIN_BODY_CAP if scope["path"].startswith(SMALL_BODY_PREFIXES) else HUB_BODY_CAP
                length = next((v for n, v in scope["headers"] if n == b"content-length"), None)
                if length is None:
                    receive = exchange.capped(receive, cap)
                elif length.isdigit() and int(length) > cap:  # the server itself refuses a malformed one
                    await exchange.refuse(413, "PayloadTooLarge", _too_large(cap))
                    return
            await self.app(scope, receive, exchange.send)
        except Exception:
            if exchange.answered_by_edge:
                return  # the app stopped reading a body over the cap: 413 was sent already
            if exchange.started:
                log.error("%s %s failed after its answer started", scope["method"], scope["path"])
                raise
            log.exception("%s %s failed", scope["method"], scope["path"])
            await exchange.refuse(500, "InternalError", "Internal error; an operator has been alerted")


def _too_large(cap: int) -> str:
    return f"Request body larger than {cap} bytes, the limit of this route"


class _Exchange:
    """One request's response side: adds X-Request-Id, notes 5xx answers, and answers for the edge."""

    __slots__ = ("_send", "answered_by_edge", "request_id", "scope", "started")

    def __init__(self, scope: Scope, send: Send, request_id: bytes) -> None:
        self.scope, self._send, self.request_id = scope, send, request_id
        self.started = self.answered_by_edge = False

    async def send(self, message: Message) -> None:
        if self.answered_by_edge:
            return  # the edge answered (413) while the app was still reading
        if message["type"] == "http.response.start":
            self.started = True
            message["headers"] = [*message.get("headers", ()), (_ID_HEADER, self.request_id)]
            if message["status"] >= 500:
                log.error("%s %s answered %d", self.scope["method"], self.scope["path"], message["status"])
        await self._send(message)

    async def refuse(self, status: int, code: str, message: str) -> None:
        if self.started:
            return
        doc: dict[str, Any] = {"error": message}
        if self.scope["path"].startswith(ADMIN_PREFIX):
            doc.update(code=code, message=message)
        body = json.dumps(doc).encode()
        await self.send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await self.send({"type": "http.response.body", "body": body})
        self.answered_by_edge = True

    def capped(self, receive: Receive, cap: int) -> Receive:
        """``receive`` that answers 413 once more than ``cap`` body bytes arrived (then reports a disconnect)."""
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            if received > cap:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    await self.refuse(413, "PayloadTooLarge", _too_large(cap))
                    return {"type": "http.disconnect"}
            return message

        return capped_receive
