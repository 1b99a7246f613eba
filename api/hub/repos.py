"""``/api/{models,datasets}/{repo}[/revision|tree|paths-info|refs|commits/…]`` and the repo listings."""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from typing import Any
from urllib.parse import parse_qs, urlencode

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.hub import schemas
from api.hub.cache import CommitIndex
from api.hub.paths import parse_repo_api, split_raw
from api.auth import check_repo, hub_reader
from api.services import Services, bearer, services
from registry import access, catalog
from registry.errors import EntryNotFoundError, InvalidInputError, RepoNotFoundError
from registry.types import RepoRef, RepoType

_EXPAND_PAGE_CAP = 50  # the Hub pages expanded trees at 50
_MAX_FORM = 4 * 1024 * 1024


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true")


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["o"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError("Invalid cursor") from exc
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInputError("Invalid cursor")
    return offset


def page_of(request: Request, svc: Services, items: list[Any], page_size: int) -> tuple[list[Any], str | None]:
    """One page of ``items`` and the absolute URL of the next one (None on the last page)."""
    offset = decode_cursor(request.query_params.get("cursor"))
    page = items[offset : offset + page_size]
    if offset + page_size >= len(items):
        return page, None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    params.append(("cursor", encode_cursor(offset + page_size)))
    # The raw path keeps %2F inside revisions (refs%2Fpr%2F1) and folder names as the client sent them.
    raw_path = (request.scope.get("raw_path") or request.url.path.encode()).decode("ascii").split("?", 1)[0]
    return page, f"{svc.base_url(request)}{raw_path}?{urlencode(params)}"


def page_response(page: list[Any], next_url: str | None) -> JSONResponse:
    """A page, with ``Link: <…>; rel="next"`` when more remain."""
    response = JSONResponse(page)
    if next_url is not None:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


def paged(request: Request, svc: Services, items: list[Any], page_size: int) -> JSONResponse:
    """One page of ``items`` with an absolute ``Link: <…>; rel="next"`` when more remain."""
    return page_response(*page_of(request, svc, items, page_size))


async def repo_api(request: Request) -> Response:
    kind = request.path_params["repo_type"]
    if kind == "spaces":
        raise RepoNotFoundError("Spaces are not mirrored by hubgate")
    if kind not in ("models", "datasets"):
        return JSONResponse({"error": "Not found"}, status_code=404)
    repo_type = RepoType.parse(kind)
    segs = split_raw(request.scope.get("raw_path") or request.url.path.encode())[2:]
    call = parse_repo_api(repo_type, segs)
    if request.method == "POST" and call.action != "paths-info":
        return JSONResponse({"error": "Method not allowed"}, status_code=405)
    svc = services(request)
    actor = await hub_reader(request)
    await check_repo(svc, actor, call.repo)  # gated / private: before anything about the repo is looked up
    if call.action == "refs":
        refs = await _refs(request, svc, call.repo)
        await svc.access_snapshot(fresh=True)  # read after the refs: a repo published (and gated) just now
        await check_repo(svc, actor, call.repo)
        return refs
    snapshot = await svc.snapshot(call.repo, call.revision)
    await check_repo(svc, actor, call.repo)  # again: a catalog miss refreshed the access state (a new publish)
    if call.action is None or call.action == "revision":
        index = await svc.index(snapshot)
        doc = _with_access(schemas.repo_info(snapshot, index, blobs=_flag(request, "blobs")),
                           (await svc.access_snapshot()).visibility.get(access.key_of(call.repo)))
        return JSONResponse(schemas.expand_filter(doc, request.query_params.getlist("expand")))
    if call.action == "commits":
        formatted = "formatted" in request.query_params.getlist("expand[]") + request.query_params.getlist("expand")
        return JSONResponse([schemas.commit_doc(snapshot, formatted=formatted)])
    index = await svc.index(snapshot)
    if call.action == "tree":
        return await _tree(request, svc, index, call.path)
    return await _paths_info(request, svc, index)


async def _with_xet_hashes(svc: Services, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``xetHash`` on the file entries served over Xet (HUBGATE_XET=on, a stored, verified representation): the
    same hash resolve sends as ``X-Xet-Hash``. With it, snapshot_download skips the HEAD of those files and asks
    the CAS straight away (../shared/docs/hf-protocol.md 4.6); clients without hf_xet ignore it."""
    if svc.xet is None:
        return entries
    served = [e for e in entries if "lfs" in e and e["size"] >= svc.xet.threshold]  # as resolve_headers decides
    hashes = await svc.xet.file_hashes([e["lfs"]["oid"] for e in served])
    for e in served:
        if file_hash := hashes.get(e["lfs"]["oid"]):
            e["xetHash"] = file_hash
    return entries


async def _tree(request: Request, svc: Services, index: CommitIndex, folder: str) -> JSONResponse:
    if not index.is_dir(folder):
        raise EntryNotFoundError(f"Folder {folder!r} not found in {index.snapshot.repo.id}", commit=index.commit)
    recursive, expand = _flag(request, "recursive"), _flag(request, "expand")
    prefix = folder + "/" if folder else ""
    paths = _children(index, prefix, recursive)
    entries = [schemas.tree_entry(index, p, expand=expand) for p in paths]
    page_size = svc.settings.tree_page_size
    if expand:
        page_size = min(page_size, _EXPAND_PAGE_CAP)
    page, next_url = page_of(request, svc, entries, page_size)
    return page_response(await _with_xet_hashes(svc, page), next_url)  # only the page's files are looked up


def _children(index: CommitIndex, prefix: str, recursive: bool) -> list[str]:
    """Directories and files under ``prefix`` (direct children unless recursive), folders first as the Hub does."""
    def under(sorted_paths: list[str]) -> list[str]:
        lo = bisect.bisect_left(sorted_paths, prefix)
        out = []
        for p in sorted_paths[lo:]:
            if not p.startswith(prefix):
                break
            if recursive or "/" not in p[len(prefix):]:
                out.append(p)
        return out

    return under(index.dirs) + under(index.paths)


async def _paths_info(request: Request, svc: Services, index: CommitIndex) -> JSONResponse:
    if len(body := await request.body()) > _MAX_FORM:
        raise InvalidInputError(f"paths-info body is larger than {_MAX_FORM} bytes")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise InvalidInputError(f"paths-info body is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise InvalidInputError('paths-info JSON body must be an object: {"paths": [...], "expand": false}')
        paths, expand = doc.get("paths", []), bool(doc.get("expand"))
    else:  # application/x-www-form-urlencoded, as huggingface_hub sends it
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        paths = form.get("paths", [])
        expand = (form.get("expand") or [""])[-1].lower() in ("1", "true")
    if not isinstance(paths, list) or len(paths) > 10000:
        raise InvalidInputError("paths must be a list of at most 10000 paths")
    out = []
    for p in dict.fromkeys(str(p).strip("/") for p in paths):
        if p in index.files or (p and index.is_dir(p)):
            out.append(schemas.tree_entry(index, p, expand=expand))
    return JSONResponse(await _with_xet_hashes(svc, out))


async def _refs(request: Request, svc: Services, repo: RepoRef) -> JSONResponse:
    def load() -> list[catalog.RefView]:
        with Session(svc.engine) as session:
            return catalog.list_refs(session, repo)

    refs = await run_in_threadpool(load)
    return JSONResponse(schemas.refs_doc(refs, include_prs=_flag(request, "include_prs")))


_SORT_KEYS = {"lastModified": "lastModified", "createdAt": "createdAt"}


async def list_repos(request: Request) -> JSONResponse:
    """``GET /api/models`` and ``/api/datasets``: search, author, filter, sort, limit, paginated."""
    repo_type = RepoType.MODEL if request.url.path.rstrip("/").endswith("models") else RepoType.DATASET
    svc = services(request)
    actor = await hub_reader(request)
    q = request.query_params
    acl = await svc.access_snapshot()
    token_id, role = (actor.token_id, actor.role) if actor is not None else (None, None)

    def load() -> list[dict[str, Any]]:
        with Session(svc.engine) as session:
            snaps = catalog.list_repos(session, repo_type)
        return [schemas.repo_info(s, None) | {"_tags": set(s.info.get("tags") or [])} for s in snaps]

    docs = await run_in_threadpool(load)
    # A private repo is not there for a caller who may not read it; a gated one is listed, marked gated.
    kind = repo_type.value
    docs = [_with_access(d, acl.visibility.get((kind, d["id"]))) for d in docs
            if acl.visibility.get((kind, d["id"])) != access.PRIVATE or acl.may_read((kind, d["id"]), token_id, role)]
    searches = [s.lower() for s in q.getlist("search") if s]
    author = q.get("author")
    filters = q.getlist("filter")
    docs = [
        d for d in docs
        if all(s in d["id"].lower() for s in searches)
        and (not author or d["author"] == author)
        and all(f in d["_tags"] or f == d.get("pipeline_tag") or f == d.get("library_name") for f in filters)
    ]
    sort = q.get("sort")
    if sort in _SORT_KEYS:
        docs.sort(key=lambda d: d[_SORT_KEYS[sort]], reverse=q.get("direction", "-1") != "1")
    if q.get("limit"):
        try:
            limit = int(q["limit"])
        except ValueError as exc:
            raise InvalidInputError("limit must be an integer") from exc
        docs = docs[: max(limit, 0)]
    keep_card, keep_config, full = _flag(request, "cardData"), _flag(request, "config"), _flag(request, "full")
    for d in docs:
        d.pop("_tags")
        if not (keep_card or full):
            d.pop("cardData", None)
        if not (keep_config or full):
            d.pop("config", None)
    expand = q.getlist("expand")
    return paged(request, svc, [schemas.expand_filter(d, expand) for d in docs], svc.settings.list_page_size)


def _with_access(doc: dict[str, Any], visibility: str | None) -> dict[str, Any]:
    """The Hub's ``gated`` ("manual": an admin grants access) and ``private`` fields of a repo document."""
    if visibility == access.GATED:
        doc["gated"] = "manual"
    elif visibility == access.PRIVATE:
        doc["private"] = True
    return doc


async def whoami(request: Request) -> JSONResponse:
    """The token's identity, as the Hub answers it (``hf auth whoami``, ``hf auth login``)."""
    svc, token = services(request), bearer(request)
    actor = await svc.actor(token) if token else None
    if actor is None:
        return JSONResponse({"error": "Invalid user token"}, status_code=401)
    return JSONResponse({
        "type": "user", "id": actor.name, "name": actor.name, "fullname": actor.name, "orgs": [],
        "hubgateRole": actor.role,
        "auth": {"type": "access_token", "accessToken": {
            "displayName": actor.name, "role": "read" if actor.role == "reader" else "write"}},
    })


async def agent_harnesses(request: Request) -> JSONResponse:
    return JSONResponse({"standardEnvVars": [], "harnesses": {}})
