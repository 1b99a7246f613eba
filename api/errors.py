"""The single table from domain errors to HTTP status and the Hub's ``X-Error-Code``."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.hub import wire
from api.hub.ranges import RangeNotSatisfiableError
from mirror.errors import BlobNotFoundError, DigestMismatchError, ImportSourceError, StorageError
from mirror.upstream import UpstreamError, UpstreamGatedError, UpstreamNotFoundError
from registry.errors import (
    ConflictError,
    EntryNotFoundError,
    HubgateError,
    ContentBlockedError,
    InvalidInputError,
    JustificationRequiredError,
    NotFoundError,
    PolicyBlockedError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SnapshotUnavailableError,
)
from api.ratelimit import RateLimitedError
from registry.access import GatedRepoAuthRequiredError, GatedRepoError
from registry.secrets import SecretKeyError
from registry.tokens import NotAuthenticatedError, PermissionDeniedError, TokenExpiredError

log = logging.getLogger(__name__)

# error class -> (status, X-Error-Code); looked up along the MRO, first match wins.
ERROR_TABLE: dict[type[HubgateError], tuple[int, str | None]] = {
    RepoNotFoundError: (404, wire.REPO_NOT_FOUND),
    RevisionNotFoundError: (404, wire.REVISION_NOT_FOUND),
    EntryNotFoundError: (404, wire.ENTRY_NOT_FOUND),
    InvalidInputError: (400, None),
    ImportSourceError: (400, None),
    RangeNotSatisfiableError: (416, None),
    ConflictError: (409, None),
    DigestMismatchError: (422, None),
    BlobNotFoundError: (503, None),
    StorageError: (503, None),
    TokenExpiredError: (401, None),  # the client shows the message (a RepoNotFound code would hide it)
    NotAuthenticatedError: (401, wire.REPO_NOT_FOUND),  # what the Hub sends an anonymous client
    GatedRepoAuthRequiredError: (401, wire.GATED_REPO),  # huggingface_hub raises GatedRepoError for both
    GatedRepoError: (403, wire.GATED_REPO),
    RateLimitedError: (429, None),
    PermissionDeniedError: (403, None),
    PolicyBlockedError: (422, None),
    JustificationRequiredError: (422, None),
    ContentBlockedError: (422, None),
    NotFoundError: (404, None),
    UpstreamNotFoundError: (404, None),
    UpstreamGatedError: (403, None),
    UpstreamError: (502, None),
    SecretKeyError: (500, None),
    SnapshotUnavailableError: (503, None),
}

ADMIN_PREFIX = "/registry/"


def status_of(exc: HubgateError) -> tuple[int, str | None]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]  # type: ignore[index]
    return 400, None


async def hubgate_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HubgateError)
    status, code = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    message = exc.message if status != 500 else "Internal error; an operator has been alerted"
    retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitedError) else {}
    if request.url.path.startswith(ADMIN_PREFIX):
        if status in (401, 403):
            from api.auth import record_denied  # api.auth imports the services, which this module must not

            await record_denied(request, exc, status)
        body: dict[str, object] = {"code": type(exc).__name__, "message": message}
        if isinstance(exc, PolicyBlockedError):
            body["findings"] = exc.findings
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return JSONResponse(body, status_code=status, headers=extra | retry)
    headers = {"X-Error-Message": _header_safe(message)} | retry
    if code:
        headers[wire.X_ERROR_CODE] = code
    if isinstance(exc, EntryNotFoundError):
        headers[wire.X_REPO_COMMIT] = exc.commit
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RangeNotSatisfiableError):
        headers["Content-Range"] = f"bytes */{exc.size}"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _header_safe(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:500]
