"""HEAD/GET ``/[datasets/]{repo}/resolve/{rev}/{path}``: resolve, then serve by mode (redirect | direct | proxy)."""

from __future__ import annotations

import logging
from time import perf_counter

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Receive, Scope, Send
from starlette.responses import JSONResponse, Response

from api.auth import check_repo, hub_reader
from api.hub import wire
from api.hub.paths import parse_resolve_cached
from api.hub.ranges import parse_range
from api.hub.streaming import BlobResponse
from api.errors import hubgate_error_handler
from api.services import Services
from mirror.errors import BlobCorruptError, BlobNotFoundError
from registry.errors import HubgateError, SnapshotUnavailableError
from registry.types import is_commit_sha

log = logging.getLogger(__name__)
_REQUEST_ID_HEADER = wire.X_REQUEST_ID.lower().encode()


async def serve(svc: Services, scope: Scope, receive: Receive, send: Send, request_id: bytes | None = None) -> None:
    """The resolve hot path as a bare ASGI call: no router walk, one error handler. ``request_id`` (given by
    the edge, api/edge.py) goes on the answer as X-Request-Id here, so this path needs no send wrapper;
    its metrics and access log line are recorded here too (api/observability.py), for the same reason."""
    started = perf_counter()
    request = Request(scope, receive)
    try:
        if scope["method"] not in ("GET", "HEAD"):
            response: Response | BlobResponse = JSONResponse({"error": "Method not allowed"}, status_code=405)
        else:
            response = await resolve_file(request, svc)
    except HubgateError as exc:
        response = await hubgate_error_handler(request, exc)
    except Exception:  # a bug: answered here, so that even this answer carries the request id
        log.exception("%s %s failed", scope["method"], scope["path"])
        response = JSONResponse({"error": "Internal error; an operator has been alerted"}, status_code=500)
    if request_id is None:  # not from the edge: routed (and observed) like any other request
        await response(scope, receive, send)
        return
    response.raw_headers.append((_REQUEST_ID_HEADER, request_id))
    try:
        await response(scope, receive, send)
    finally:
        if svc.observer is not None:
            svc.observer.resolve_done(scope, response, started)


async def resolve_file(request: Request, svc: Services) -> Response | BlobResponse:
    target = parse_resolve_cached(request.scope.get("raw_path") or request.url.path.encode())
    if target is None:
        if request.url.path == "/":  # people: the web pages live under /-/ (api/ui)
            return Response(status_code=303, headers={"location": "/-/"})
        return JSONResponse({"error": "Not found"}, status_code=404)
    actor = await hub_reader(request, svc)
    await check_repo(svc, actor, target.repo)  # gated / private: before anything about the repo is looked up
    snapshot = await svc.snapshot(target.repo, target.revision)
    await check_repo(svc, actor, target.repo)  # again: a catalog miss refreshed the access state (a new publish)
    index = await svc.index(snapshot)
    entry = index.entry(target.path)
    headers = list(index.headers(entry))
    if svc.xet is not None:  # HUBGATE_XET=on: X-Xet-Hash and the refresh route, for files with a Xet form
        headers += await svc.xet.resolve_headers(svc, request, snapshot, entry)
    if is_commit_sha(target.revision):
        headers.append((b"cache-control", wire.IMMUTABLE.encode()))

    if entry.lfs and svc.settings.storage == "s3" and svc.settings.s3_serve == "redirect":
        url = svc.store.redirect_url(entry.sha256, filename=target.path.rsplit("/", 1)[-1])
        if url is not None:
            headers += [(b"location", url.encode()), (b"content-length", b"0")]
            response = Response(status_code=302)
            response.raw_headers = headers
            return response

    size = entry.size
    status, start, length = 200, 0, size
    if_range = request.headers.get("if-range")
    if request.method == "GET" and (if_range is None or if_range.strip() == f'"{wire.etag_of(entry)}"'):
        byte_range = parse_range(request.headers.get("range"), size)
        if byte_range is not None:
            start, end = byte_range
            status, length = 206, end - start + 1
            headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    headers.append((b"content-type", b"application/octet-stream"))
    if request.method == "HEAD":
        return BlobResponse(None, length=length, status=status, headers=headers)
    # Open before answering: a blob whose stored size disagrees with the manifest is refused
    # with a clear error instead of wrong bytes.
    try:
        reader = await run_in_threadpool(svc.store.open_verified, entry.sha256, size=size, offset=start, length=length)
    except (BlobNotFoundError, BlobCorruptError) as exc:
        raise SnapshotUnavailableError(
            f"{snapshot.repo.id}@{snapshot.commit}: {target.path} is unavailable until an operator repairs it "
            f"({exc.message})"
        ) from exc
    return BlobResponse(reader, length=length, status=status, headers=headers)
