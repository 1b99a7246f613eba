"""The Xet read protocol, served from hubgate's own store (HUBGATE_XET=on, the default).

* **Resolve** (api/hub/files.py calls ``XetRuntime.resolve_headers``): a file whose Xet representation
  is stored and verified also gets ``X-Xet-Hash`` and the refresh route, as ``Link: <…>; rel="xet-auth"``
  and ``X-Xet-Refresh-Route``. Everything else in the answer is unchanged, and files without a
  representation get no Xet header at all.
* **Refresh route** ``GET /api/{models,datasets}/{repo}/xet-read-token/{rev}``: after the same access
  checks as resolve (anonymous-read setting, tokens, gated/private grants), a read token scoped to
  that repo and commit, valid HUBGATE_XET_TOKEN_TTL_SECONDS, and the CAS URL; both as headers
  (``X-Xet-Cas-Url``, ``X-Xet-Access-Token``, ``X-Xet-Token-Expiration``: huggingface_hub) and as JSON
  (``casUrl``, ``accessToken``, ``exp``: hf_xet's own refresh).
* **CAS** under ``/xet/cas``: ``GET /v1|v2/reconstructions/{file_hash}`` (``Range`` supported), for a
  file of the token's commit only, access re-checked on every call; ``POST /v1/telemetry`` (accepted).
* **Xorb bytes**: ``GET /xet/xorbs/{hash}?exp=&sig=`` with ``Range``: short-lived signed URLs served
  from the local store (sendfile-like, api/hub/streaming.py) or streamed from S3 (proxy mode); in S3
  redirect mode the reconstruction hands out presigned object-store URLs instead.

Xorbs are verified when stored (mirror/xet/ingest.py) and by ``hubgate verify``; a corrupt one is
quarantined and every file using it loses its Xet representation (plain answers again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import check_repo, hub_reader
from api.errors import hubgate_error_handler
from api.hub.paths import _decode, _repo, split_raw
from api.hub.ranges import parse_range
from api.hub.streaming import BlobResponse
from api.services import Services
from mirror.errors import ObjectNotFoundError
from mirror.storage.blobs import BlobStore
from mirror.xet import hashing, reconstruct
from mirror.xet.builder import XetBuilder
from mirror.xet.store import XetStore
from registry import secrets
from registry.access import key_of
from registry.catalog import FileView, SnapshotView
from registry.errors import (
    HubgateError,
    InvalidInputError,
    NotFoundError,
    RepoNotFoundError,
)
from registry.tokens import NotAuthenticatedError
from registry.types import RepoRef, RepoType, validate_revision

log = logging.getLogger(__name__)

CAS_PREFIX = "/xet/cas"
XORB_PREFIX = "/xet/xorbs/"
TOKEN_ACTION = "xet-read-token"
X_XET_HASH = b"x-xet-hash"
X_XET_REFRESH_ROUTE = b"x-xet-refresh-route"
PREFIXES = (CAS_PREFIX + "/", XORB_PREFIX)  # routed by HubgateApp, not taken for /{repo}/resolve/ paths
_TOKEN_VERSION = "hgx1"
_XORB_URL_SECONDS = 3600


class XetTokenError(NotAuthenticatedError):
    """A missing, malformed, forged or expired Xet token (401: hf_xet then refreshes it)."""


def is_xet_path(path: str) -> bool:
    """Paths this module serves (HubgateApp routes them here)."""
    if path.startswith(PREFIXES):
        return "/resolve/" not in path  # a model repo named xet/cas still resolves its files
    return path.startswith("/api/") and f"/{TOKEN_ACTION}/" in path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class XetRuntime:
    """What the Xet routes share, built once per process when HUBGATE_XET=on."""

    def __init__(self, store: BlobStore, *, key: bytes, threshold: int, token_ttl: int, redirect: bool,
                 presign_ttl: int) -> None:
        self.store = XetStore(store)
        self.threshold = threshold
        self.token_ttl = token_ttl
        self.redirect = redirect  # S3 redirect mode: presigned xorb URLs
        self.presign_ttl = presign_ttl
        self._key = hmac.new(key, b"hubgate xet tokens v1", hashlib.sha256).digest()
        self._commit_shas: OrderedDict[tuple[RepoRef, str], frozenset[str]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any, store: BlobStore) -> "XetRuntime":
        return cls(store, key=secrets.load_or_create_key(settings.key_file), threshold=settings.xet_threshold_bytes,
                   token_ttl=settings.xet_token_ttl_seconds,
                   redirect=settings.storage == "s3" and settings.s3_serve == "redirect",
                   presign_ttl=settings.s3_presign_ttl_seconds)

    # -- resolve
    async def resolve_headers(self, svc: Services, request: Request, snapshot: SnapshotView,
                              entry: FileView) -> list[tuple[bytes, bytes]]:
        """The Xet headers for a file answer, or [] (small file, no stored representation, or a regular git file:
        the Hub serves only LFS files over Xet, and the tree's ``xetHash`` says the same)."""
        if not entry.lfs or entry.size < self.threshold:
            return []
        known, file_hash = self.store.cached_file_hash(entry.sha256)
        if not known:
            file_hash = await run_in_threadpool(self.store.file_hash_of, entry.sha256)
        if file_hash is None:
            return []
        route = self.refresh_route(svc.base_url(request), snapshot.repo, snapshot.commit).encode()
        return [(X_XET_HASH, file_hash.encode()), (X_XET_REFRESH_ROUTE, route),
                (b"link", b"<" + route + b'>; rel="xet-auth"')]

    async def file_hashes(self, sha256s: list[str]) -> dict[str, str]:
        """Blob sha256 -> Xet file hash, for the blobs with a stored representation (the tree's ``xetHash``).
        Cached answers come from memory; the rest are read in one threadpool call."""
        found: dict[str, str] = {}
        missing = []
        for sha in dict.fromkeys(sha256s):
            known, file_hash = self.store.cached_file_hash(sha)
            if not known:
                missing.append(sha)
            elif file_hash:
                found[sha] = file_hash
        if missing:
            looked_up = await run_in_threadpool(lambda: {sha: self.store.file_hash_of(sha) for sha in missing})
            found.update({sha: h for sha, h in looked_up.items() if h})
        return found

    @staticmethod
    def refresh_route(base: str, repo: RepoRef, commit: str) -> str:
        return f"{base}/api/{repo.type.value}s/{repo.id}/{TOKEN_ACTION}/{commit}"

    # -- tokens
    def issue_token(self, repo: RepoRef, commit: str, token_id: str | None, role: str | None) -> tuple[str, int]:
        exp = int(time.time()) + self.token_ttl
        claims = {"t": repo.type.value, "r": repo.id, "c": commit, "e": exp, "k": token_id, "o": role}
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        sig = _b64(hmac.new(self._key, f"{_TOKEN_VERSION}.{payload}".encode(), hashlib.sha256).digest())
        return f"{_TOKEN_VERSION}.{payload}.{sig}", exp

    def read_token(self, token: str | None) -> dict[str, Any]:
        """The claims of a valid, unexpired token. Raises XetTokenError."""
        parts = (token or "").split(".")
        if len(parts) != 3 or parts[0] != _TOKEN_VERSION:
            raise XetTokenError("A Xet token is required (from the xet-read-token route)")
        expect = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            given = _unb64(parts[2])
            claims = json.loads(_unb64(parts[1]))
        except ValueError as exc:
            raise XetTokenError("Malformed Xet token") from exc
        if not hmac.compare_digest(expect, given) or not isinstance(claims, dict):
            raise XetTokenError("Invalid Xet token")
        if int(claims.get("e", 0)) < time.time():
            raise XetTokenError("Xet token expired")
        return claims

    def sign_xorb(self, xorb: str, exp: int) -> str:
        return _b64(hmac.new(self._key, f"xorb {xorb} {exp}".encode(), hashlib.sha256).digest())

    # -- helpers
    async def commit_shas(self, svc: Services, repo: RepoRef, commit: str) -> frozenset[str]:
        key = (repo, commit)
        hit = self._commit_shas.get(key)
        if hit is None:
            index = await svc.index(await svc.snapshot(repo, commit))
            hit = frozenset(f.sha256 for f in index.files.values())
            self._commit_shas[key] = hit
            while len(self._commit_shas) > 256:
                self._commit_shas.popitem(last=False)
        return hit

    def xorb_url(self, base: str, xorb: str) -> str:
        if self.redirect:
            url = self.store.redirect_url(xorb, self.presign_ttl)
            if url is not None:
                return url
        exp = int(time.time()) + _XORB_URL_SECONDS
        return f"{base}{XORB_PREFIX}{xorb}?exp={exp}&sig={self.sign_xorb(xorb, exp)}"


def builder_for(settings: Any, store: BlobStore) -> XetBuilder | None:
    """The publish-time builder when HUBGATE_XET=on, else None (publishing is then exactly as before)."""
    return XetBuilder(store, threshold=settings.xet_threshold_bytes) if settings.xet == "on" else None


def _runtime(svc: Services) -> XetRuntime:
    runtime = getattr(svc, "xet", None)
    if runtime is None:
        raise NotFoundError("Xet is not enabled on this hubgate (HUBGATE_XET=off)")
    return runtime  # type: ignore[no-any-return]


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


# -- routes


async def read_token_route(request: Request) -> Response:
    """``GET /api/{models,datasets}/{repo}/xet-read-token/{rev}``."""
    svc = _services(request)
    xet = _runtime(svc)
    segs = split_raw(request.scope.get("raw_path") or request.url.path.encode())
    kind = segs[1] if len(segs) > 1 else ""
    if kind not in ("models", "datasets") or len(segs) < 5 or segs[-2] != TOKEN_ACTION:
        raise RepoNotFoundError("Repository not found")
    repo = _repo(RepoType.parse(kind), segs[2:-2])
    revision = validate_revision(_decode(segs[-1]))
    actor = await hub_reader(request, svc)
    await check_repo(svc, actor, repo)  # the same checks as resolve, before anything about the repo
    snapshot = await svc.snapshot(repo, revision)
    token, exp = xet.issue_token(repo, snapshot.commit, actor.token_id if actor else None,
                                 actor.role if actor else None)
    cas = f"{svc.base_url(request)}{CAS_PREFIX}"
    return JSONResponse({"casUrl": cas, "accessToken": token, "exp": exp},
                        headers={"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token,
                                 "X-Xet-Token-Expiration": str(exp), "Cache-Control": "no-store"})


async def _authorized_record(request: Request) -> tuple[XetRuntime, Any, Services]:
    svc = _services(request)
    xet = _runtime(svc)
    auth = request.headers.get("authorization", "")
    claims = xet.read_token(auth[7:].strip() if auth[:7].lower() == "bearer " else None)
    file_hash = request.path_params["file_hash"]
    if not hashing.is_hash(file_hash):
        raise InvalidInputError("Malformed file hash")
    repo = RepoRef(RepoType.parse(claims["t"]), claims["r"])
    # Access is re-checked on every call: a grant revoked or a repo made private stops reads at once.
    (await svc.access_snapshot()).check(key_of(repo), claims.get("k"), claims.get("o"))
    record = await run_in_threadpool(xet.store.get_file, file_hash)
    if record is None or record.sha256 not in await xet.commit_shas(svc, repo, claims["c"]):
        raise NotFoundError(f"File {file_hash} not found")
    return xet, record, svc


def _plan(xet: XetRuntime, record: Any, request: Request) -> reconstruct.Plan:
    header = request.headers.get("range")
    byte_range = None
    if header:
        unit, _, spec = header.partition("=")
        first, sep, last = spec.strip().partition("-")
        if unit.strip().lower() != "bytes" or not sep or not first.isdigit() or not (last.isdigit() or last == ""):
            raise InvalidInputError("Range must be bytes=<start>-<end>")
        byte_range = (int(first), int(last) if last else record.size - 1)
    return reconstruct.plan(record, byte_range, xet.store.xorb_footer)


async def reconstruction_route(request: Request) -> Response:
    """``GET /xet/cas/v1|v2/reconstructions/{file_hash}``."""
    xet, record, svc = await _authorized_record(request)
    try:
        plan = await run_in_threadpool(_plan, xet, record, request)
    except reconstruct.RangeNotSatisfiable as exc:
        return JSONResponse({"error": str(exc)}, status_code=416)
    base = svc.base_url(request)
    urls: dict[str, str] = {}
    terms, fetch_v1, fetch_v2 = [], {}, {}  # type: ignore[var-annotated]
    for t in plan.terms:
        if t.xorb not in urls:
            urls[t.xorb] = await run_in_threadpool(xet.xorb_url, base, t.xorb)
        terms.append({"hash": t.xorb, "unpacked_length": t.unpacked_length,
                      "range": {"start": t.chunk_start, "end": t.chunk_end}})
        chunks = {"start": t.chunk_start, "end": t.chunk_end}
        span = {"start": t.byte_first, "end": t.byte_last}
        fetch_v1.setdefault(t.xorb, []).append({"range": chunks, "url": urls[t.xorb], "url_range": span})
        fetch_v2.setdefault(t.xorb, []).append({"url": urls[t.xorb], "ranges": [{"chunks": chunks, "bytes": span}]})
    doc: dict[str, Any] = {"offset_into_first_range": plan.offset_into_first_range, "terms": terms}
    if request.url.path.startswith(f"{CAS_PREFIX}/v2/"):
        doc["xorbs"] = fetch_v2
    else:
        doc["fetch_info"] = fetch_v1
    return JSONResponse(doc, headers={"Cache-Control": "no-store"})


async def telemetry_route(request: Request) -> Response:
    """hf_xet reports transfer statistics here; accepted and dropped."""
    await request.body()
    return Response(status_code=200)


async def xorb_route(request: Request) -> Response | BlobResponse:
    """``GET /xet/xorbs/{hash}?exp=&sig=``: bytes of a stored xorb, one ``Range`` at a time."""
    svc = _services(request)
    xet = _runtime(svc)
    xorb = request.path_params["xorb"]
    exp = request.query_params.get("exp", "")
    sig = request.query_params.get("sig", "")
    if (not hashing.is_hash(xorb) or not exp.isdigit() or int(exp) < time.time()
            or not hmac.compare_digest(sig.encode(), xet.sign_xorb(xorb, int(exp)).encode())):
        return JSONResponse({"error": "This xorb URL is invalid or expired"}, status_code=403)
    size = await run_in_threadpool(xet.store.xorb_size, xorb)
    if size is None:
        return JSONResponse({"error": "Not found"}, status_code=404)
    headers = [(b"content-type", b"application/octet-stream"), (b"accept-ranges", b"bytes"),
               (b"cache-control", b"private, max-age=3600")]
    status, start, length = 200, 0, size
    byte_range = parse_range(request.headers.get("range"), size)
    if byte_range is not None:
        start, end = byte_range
        status, length = 206, end - start + 1
        headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    if request.method == "HEAD":
        return BlobResponse(None, length=length, status=status, headers=headers)
    try:
        reader = await run_in_threadpool(xet.store.open_xorb, xorb, start, length)
    except ObjectNotFoundError:
        return JSONResponse({"error": "Not found"}, status_code=404)
    return BlobResponse(reader, length=length, status=status, headers=headers)


async def _not_found(request: Request) -> Response:
    return JSONResponse({"error": "Not found"}, status_code=404)


def build_app(svc: Services) -> Starlette:
    app = Starlette(
        routes=[
            Route(CAS_PREFIX + "/v1/reconstructions/{file_hash}", reconstruction_route, methods=["GET"]),
            Route(CAS_PREFIX + "/v2/reconstructions/{file_hash}", reconstruction_route, methods=["GET"]),
            Route(CAS_PREFIX + "/v1/telemetry", telemetry_route, methods=["POST"]),
            Route(XORB_PREFIX + "{xorb}", xorb_route, methods=["GET", "HEAD"]),
            Route("/api/{rest:path}", read_token_route, methods=["GET"]),
            Route(CAS_PREFIX + "/{rest:path}", _not_found, methods=["GET", "HEAD", "POST", "PUT"]),
        ],
        exception_handlers={HubgateError: hubgate_error_handler},
    )
    app.state.services = svc
    return app


__all__ = ["XetRuntime", "build_app", "builder_for", "is_xet_path"]
