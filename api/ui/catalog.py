"""The catalog and repo pages: what is mirrored here, and how to use it.

The catalog reads every repo's default snapshot in one query (registry/browse.py), then filters,
counts facets, sorts and pages in memory: no query per row, whatever the filters. Access is the
API's: a private repo is absent for whoever may not read it; a gated one is listed, marked gated,
and its page shows no file or card without a grant.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.services import Services
from api.ui.app import ui_of
from api.ui.render import CARD_LIMIT, card_metadata, render_card
from api.ui.security import Viewer
from mirror.errors import ObjectNotFoundError
from registry import access, browse, catalog
from registry.access import AccessSnapshot, GatedRepoError
from registry.browse import CatalogEntry
from registry.errors import NotFoundError
from registry.types import RepoRef, RepoType, validate_commit

SORTS = {"recent": "Recently mirrored", "name": "Name"}
FACETS = ("library", "pipeline_tag", "license", "org")


@dataclass(frozen=True)
class Query:
    search: str = ""
    repo_type: str = ""
    library: str = ""
    pipeline_tag: str = ""
    license: str = ""
    org: str = ""
    sort: str = "recent"
    page: int = 1

    @classmethod
    def of(cls, request: Request) -> Query:
        q = request.query_params
        try:
            page = max(1, min(int(q.get("page", "1")), 100000))
        except ValueError:
            page = 1
        sort = q.get("sort", "recent")
        repo_type = q.get("type", "")
        return cls(search=q.get("q", "").strip()[:200], repo_type=repo_type if repo_type in ("model", "dataset") else "",
                   library=q.get("library", "")[:200], pipeline_tag=q.get("pipeline_tag", "")[:200],
                   license=q.get("license", "")[:200], org=q.get("org", "")[:200],
                   sort=sort if sort in SORTS else "recent", page=page)

    def matches(self, e: CatalogEntry) -> bool:
        return self._base(e) and not self._misses(e)

    def _base(self, e: CatalogEntry) -> bool:
        """The type and the name search (every word a substring of the id, any case)."""
        return (not self.repo_type or e.repo_type == self.repo_type) and all(
            w in e.repo_id.lower() for w in self.search.lower().split())

    def _misses(self, e: CatalogEntry) -> list[str]:
        """The chosen facets that ``e`` does not match."""
        return [f for f in FACETS if (want := getattr(self, f)) and _facet(e, f) != want]

    def link(self, **changes: Any) -> str:
        """The catalog URL of this query with ``changes`` (page 1 unless a page is given)."""
        values = {"q": self.search, "type": self.repo_type, "library": self.library, "pipeline_tag": self.pipeline_tag,
                  "license": self.license, "org": self.org, "sort": self.sort, "page": 1} | changes
        return "?" + urlencode({k: v for k, v in values.items() if v and not (k == "page" and v == 1)
                                and not (k == "sort" and v == "recent")})


def _facet(e: CatalogEntry, name: str) -> str | None:
    return e.org if name == "org" else getattr(e, name)


def visible(entries: Iterable[CatalogEntry], acl: AccessSnapshot, viewer: Viewer) -> list[CatalogEntry]:
    """The entries ``viewer`` may know of: private repos only with a grant (or as an admin)."""
    return [e for e in entries if acl.visibility.get((e.repo_type, e.repo_id)) != access.PRIVATE
            or acl.may_read((e.repo_type, e.repo_id), viewer.token_id, viewer.role)]


def catalog_view(entries: list[CatalogEntry], query: Query, page_size: int) -> dict[str, Any]:
    """Filter, sort and page ``entries`` (already restricted to what the viewer may see), and count, per facet,
    how many repos each of its values would show with the other filters kept. One pass over the entries: an
    entry that misses no chosen facet is a result and counts for every facet; one that misses exactly one
    counts for that facet only."""
    found: list[CatalogEntry] = []
    counts: dict[str, Counter[str]] = {f: Counter() for f in FACETS}
    for e in entries:
        if not query._base(e):
            continue
        misses = query._misses(e)
        if len(misses) > 1:
            continue
        if not misses:
            found.append(e)
        for f in misses or FACETS:
            if (value := _facet(e, f)) is not None:
                counts[f][value] += 1
    facets = {}
    for f in FACETS:
        chosen = getattr(query, f)
        if chosen and chosen not in counts[f]:
            counts[f][chosen] = 0
        facets[f] = sorted(counts[f].items(), key=lambda kv: (-kv[1], kv[0]))[:200]
    if query.sort == "name":
        found.sort(key=lambda e: e.repo_id.lower())
    else:
        found.sort(key=lambda e: e.mirrored_at, reverse=True)
    pages = max(1, math.ceil(len(found) / page_size))
    page = min(query.page, pages)
    return {"rows": found[(page - 1) * page_size: page * page_size], "total": len(found), "page": page,
            "pages": pages, "facets": facets, "all_count": len(entries)}


async def catalog_page(request: Request) -> Response:
    ui = ui_of(request)
    viewer = await ui.reader(request)
    query = Query.of(request)
    acl = await ui.svc.access_snapshot()

    entries = visible(await run_in_threadpool(ui.catalog), acl, viewer)
    view = catalog_view(entries, query, ui.svc.settings.ui_page_size)

    def badges() -> dict[int, browse.Badges]:
        with Session(ui.svc.engine) as session:
            return browse.snapshot_badges(session, [e.snapshot_pk for e in view["rows"]])

    return ui.page(request, "catalog.html", viewer, query=query, sorts=SORTS, acl=acl.visibility,
                   badges=await run_in_threadpool(badges), **view)


# -- one repo


def _repo_of(request: Request) -> RepoRef:
    kind = request.path_params["kind"]
    if kind not in ("models", "datasets"):
        raise NotFoundError("No such page")
    return RepoRef.parse(kind, request.path_params["repo_id"])


def origin(svc: Services, request: Request) -> str:
    """This instance's origin for the copy-paste lines: HUBGATE_PUBLIC_URL, else the request's (allowed) Host."""
    return svc.base_url(request).rstrip("/")


def usage_lines(base: str, repo: RepoRef, commit: str | None, library: str | None, gated: bool) -> list[str]:
    """Exact commands that download this repo (at ``commit`` when one is given) from this instance."""
    env = f"HF_ENDPOINT={base}" + (" HF_TOKEN=hg_…" if gated else "")
    kind = "" if repo.type is RepoType.MODEL else ", repo_type='dataset'"
    rev = f", revision='{commit}'" if commit else ""
    lines = [(f"{env} python -c \"from huggingface_hub import snapshot_download; "
              f"print(snapshot_download('{repo.id}'{kind}{rev}))\""),
             (f"{env} hf download {repo.id}" + (" --repo-type dataset" if repo.type is RepoType.DATASET else "")
              + (f" --revision {commit}" if commit else ""))]
    if repo.type is RepoType.MODEL and library == "transformers":
        lines.append(f"{env} python -c \"from transformers import AutoModel; "
                     f"print(AutoModel.from_pretrained('{repo.id}'{rev}).config.model_type)\"")
    elif repo.type is RepoType.DATASET:
        lines.append(f"{env} python -c \"from datasets import load_dataset; print(load_dataset('{repo.id}'{rev}))\"")
    return lines


def _scan_by_path(provenance: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in (provenance.get("scan") or {}).get("files") or [] if isinstance(f, dict) and "path" in f}


def approval_record(s: catalog.SnapshotView, requests: dict[int, Any]) -> dict[str, Any]:
    """Who approved a snapshot and when, and what they saw: from its request, else its provenance (imports, bundles)."""
    p = s.provenance
    pk = p.get("request")
    req = requests.get(pk) if isinstance(pk, int) else None
    findings = req.findings if req is not None else p.get("findings") or []
    return {
        "request": req.pk if req is not None else None,
        "approved_by": (req.decided_by if req is not None else None) or p.get("approved_by") or p.get("imported_by"),
        "approved_at": (req.decided_at if req is not None else None) or p.get("approved_at"),
        "requested_by": p.get("requested_by"),
        "reason": req.decision_reason if req is not None else None,
        "findings": [f for f in findings if isinstance(f, dict)],
        "source": p.get("source") or ("upstream" if p.get("upstream") else None),
        "scan_verdict": (p.get("scan") or {}).get("verdict"),
        "signed": bool(p.get("key_id")),
    }


def load_repo(svc: Services, repo: RepoRef, commit: str | None, may_read_content: bool) -> dict[str, Any]:
    """Everything the repo page shows, in a handful of queries (and one read of README.md)."""
    with Session(svc.engine) as session:
        snap = catalog.resolve(session, repo, commit)
        snapshots = catalog.list_snapshots(session, repo)
        refs = catalog.list_refs(session, repo)
        files = catalog.list_files(session, repo, snap.commit) if may_read_content else []
        requests = browse.requests_by_pk(session, [s.provenance.get("request") for s in snapshots])  # type: ignore[misc]
    card_html = None
    readme = next((f for f in files if f.path == "README.md"), None)
    if readme is not None and readme.size <= CARD_LIMIT:
        try:
            with svc.store.open(readme.sha256) as fh:
                text = fh.read(CARD_LIMIT).decode("utf-8", errors="replace")
            base = ("/datasets/" if repo.type is RepoType.DATASET else "/") + f"{repo.id}/resolve/{snap.commit}"
            card_html = render_card(text, base)
        except ObjectNotFoundError:
            card_html = None
    return {
        "snap": snap, "files": files, "refs": refs, "card_html": card_html, "scan": _scan_by_path(snap.provenance),
        "snapshots": [(s, [r.name for r in refs if r.commit == s.commit], approval_record(s, requests)) for s in snapshots],
        "record": approval_record(snap, requests), "metadata": card_metadata(snap.info),
    }


async def repo_page(request: Request) -> Response:
    ui = ui_of(request)
    viewer = await ui.reader(request)
    repo = _repo_of(request)
    commit = request.query_params.get("commit") or None
    if commit is not None:
        validate_commit(commit)
    acl = await ui.svc.access_snapshot()
    visibility = acl.visibility.get(access.key_of(repo), access.PUBLIC)
    gated_notice = None
    try:
        acl.check(access.key_of(repo), viewer.token_id, viewer.role)  # private: RepoNotFoundError (404)
    except GatedRepoError as exc:
        gated_notice = exc.message
    data = await run_in_threadpool(load_repo, ui.svc, repo, commit, gated_notice is None)
    base = origin(ui.svc, request)
    return ui.page(
        request, "repo.html", viewer, status=403 if gated_notice else 200, repo=repo, visibility=visibility,
        gated_notice=gated_notice, usage=usage_lines(base, repo, commit, data["snap"].info.get("library_name"),
                                                      visibility != access.PUBLIC),
        base=base, kind=repo.type.plural, downloadable=visibility == access.PUBLIC and ui.svc.settings.anonymous_read,
        **data)


async def signature(request: Request) -> Response:
    """The OMS signature bundle of a snapshot, as ``GET /registry/v1/…/signature`` serves it (same access rule)."""
    ui = ui_of(request)
    viewer = await ui.reader(request)
    repo, commit = _repo_of(request), validate_commit(request.path_params["commit"])
    acl = await ui.svc.access_snapshot()
    acl.check(access.key_of(repo), viewer.token_id, viewer.role)

    def load() -> bytes:
        with Session(ui.svc.engine) as session:
            catalog.resolve(session, repo, commit)
        try:
            return ui.svc.store.get_signature(repo, commit)
        except ObjectNotFoundError as exc:
            raise NotFoundError(f"{repo.id}@{commit} has no signature") from exc

    bundle = await run_in_threadpool(load)
    name = f"{repo.id.replace('/', '--')}-{commit[:12]}.sig"
    return Response(bundle, media_type="application/vnd.dev.sigstore.bundle.v0.3+json",
                    headers={"content-disposition": f'attachment; filename="{name}"'})

