"""A new mirror request: resolve the revision upstream, gather the facts, apply policy, show what would change."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror.scan import check_tree
from mirror.upstream import HubUpstream, UpstreamError, UpstreamFile
from registry import audit, catalog, policy, workflow
from registry.db import session_scope
from registry.errors import HubgateError, InvalidInputError, RepoNotFoundError, RevisionNotFoundError
from registry.models import MirrorRequest
from registry.settings import PolicySettings
from registry.types import RepoRef, RepoType, is_commit_sha, validate_revision

log = logging.getLogger(__name__)


def _license(info: dict[str, Any]) -> str | None:
    card = info.get("cardData") or {}
    lic = card.get("license") if isinstance(card, dict) else None
    if isinstance(lic, list):
        lic = lic[0] if lic else None
    if isinstance(lic, str):
        return lic
    for tag in info.get("tags") or []:
        if isinstance(tag, str) and tag.startswith("license:"):
            return tag.removeprefix("license:")
    return None


def _base_models(engine: Engine, info: dict[str, Any]) -> tuple[policy.BaseModelFact, ...]:
    card = info.get("cardData") or {}
    bases = card.get("base_model") if isinstance(card, dict) else None
    names = [b for b in (bases if isinstance(bases, list) else [bases]) if isinstance(b, str)]
    facts = []
    with Session(engine) as session:
        for name in names:
            try:
                snap = catalog.default_snapshot(session, RepoRef.parse(RepoType.MODEL, name))
                facts.append(policy.BaseModelFact(name, True, snap.info.get("license")))
            except HubgateError as exc:  # unknown here, unavailable, or an invalid id in the card
                log.debug("base model %s: %s", name, exc)
                facts.append(policy.BaseModelFact(name, False))
    return tuple(facts)


def _has_auto_map(upstream: HubUpstream, repo: RepoRef, commit: str, files: list[UpstreamFile]) -> bool:
    if not any(f.path == "config.json" for f in files):
        return False
    try:
        config = json.loads(upstream.read_small(repo, commit, "config.json"))
    except (UpstreamError, ValueError):
        return False
    return isinstance(config, dict) and "auto_map" in config


def changes_against(engine: Engine, repo: RepoRef, revision: str, files: list[UpstreamFile], license_: str | None) -> dict[str, Any] | None:
    """What approving would change for clients of ``revision`` here: files added / removed / changed, license."""
    if is_commit_sha(revision):
        return None
    with Session(engine) as session:
        try:
            current = catalog.resolve(session, repo, revision)
        except (RepoNotFoundError, RevisionNotFoundError):
            return None
        old = {f.path: f for f in catalog.list_files(session, repo, current.commit)}
    new = {f.path: f for f in files}

    def same(path: str) -> bool:
        o, n = old[path], new[path]
        return (n.lfs_sha256 == o.sha256) if n.lfs_sha256 else (n.oid == o.git_oid and not o.lfs)

    old_license = current.info.get("license")
    return {
        "from_commit": current.commit,
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(p for p in set(old) & set(new) if not same(p)),
        "license": {"from": old_license, "to": license_} if old_license != license_ else None,
    }


def create_request(
    engine: Engine, upstream: HubUpstream, settings: PolicySettings, *, repo: RepoRef, revision: str,
    allow_patterns: list[str] | None, ignore_patterns: list[str] | None, reason: str, actor: audit.Actor,
) -> MirrorRequest:
    """Resolve ``revision`` upstream to a full sha and record a request for exactly that sha, with findings.

    Raises UpstreamNotFoundError / UpstreamGatedError / UpstreamError when the upstream cannot answer.
    """
    validate_revision(revision)
    commit = upstream.resolve(repo, revision)
    info = upstream.repo_info(repo, commit)
    listing = upstream.list_files(repo, commit)
    by_path = {f.path: f for f in listing}
    selected = [by_path[p] for p in policy.select_files(sorted(by_path), allow_patterns, ignore_patterns)]
    license_ = _license(info)
    facts = policy.RepoFacts(
        repo_id=repo.id, license=license_, gated=bool(info.get("gated")), has_upstream_token=upstream.has_token,
        files=tuple(policy.FileFact(f.path, f.size) for f in selected),
        auto_map=_has_auto_map(upstream, repo, commit, listing), base_models=_base_models(engine, info),
    )
    findings, verdict = policy.evaluate(facts, settings)
    # The path grammar is checked over the whole upstream tree (chosen files or not): it refuses the revision.
    tree = [{"rule": f.rule, "severity": f.severity, "message": f.message, "data": f.data}
            for f in check_tree(f.path for f in listing)]
    if tree:
        findings, verdict = findings + tree, "blocked"
    changes = changes_against(engine, repo, revision, selected, license_)
    with session_scope(engine) as session:
        return workflow.submit(
            session, repo=repo, revision=revision, commit=commit, allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns, reason=reason, actor=actor, findings=findings, verdict=verdict,
            changes=changes,
        )


REQUESTS_FORMAT = "hubgate-requests/1"
OFFLINE_FINDING = {
    "rule": "offline", "severity": "info", "data": {},
    "message": "Recorded on a sealed side without an upstream: resolved and checked on the connected side",
}


def record_offline_request(
    engine: Engine, *, repo: RepoRef, revision: str, allow_patterns: list[str] | None,
    ignore_patterns: list[str] | None, reason: str, actor: audit.Actor,
) -> MirrorRequest:
    """A request made where no upstream is reachable: kept pending until carried out with export_requests."""
    validate_revision(revision)
    with session_scope(engine) as session:
        return workflow.submit(
            session, repo=repo, revision=revision, commit="", allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns, reason=reason, actor=actor, findings=[OFFLINE_FINDING], verdict="review",
            changes=None,
        )


def export_requests(engine: Engine, *, instance: str) -> dict[str, Any]:
    """The pending offline requests, as a document to carry to the connected side."""
    from datetime import datetime, timezone

    with Session(engine) as session:
        pending = [r for r in workflow.list_requests(session, state="pending", limit=1000) if not r.commit]
    return {
        "format": REQUESTS_FORMAT,
        "instance": instance,
        "exported_at": datetime.now(timezone.utc).isoformat(),
        "requests": [
            {"id": r.pk, "repo_type": r.repo_type, "repo_id": r.repo_id, "revision": r.revision,
             "allow_patterns": r.allow_patterns, "ignore_patterns": r.ignore_patterns, "reason": r.reason,
             "requester": r.requester}
            for r in pending
        ],
    }


def _checked_requests(document: Any) -> list[tuple[dict[str, Any], RepoRef]]:
    """Validate the whole file before anything is created: all of it imports, or none."""
    if not isinstance(document, dict) or document.get("format") != REQUESTS_FORMAT:
        raise InvalidInputError(f"Not a hubgate requests file (expected format {REQUESTS_FORMAT!r})")
    items = document.get("requests")
    if not isinstance(items, list):
        raise InvalidInputError("Invalid requests file: 'requests' must be a list")
    checked = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("repo_id"), str) or not isinstance(item.get("repo_type"), str):
            raise InvalidInputError(f"Invalid requests file: entry {n} needs string 'repo_type' and 'repo_id'")
        for key in ("allow_patterns", "ignore_patterns"):
            value = item.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
                raise InvalidInputError(f"Invalid requests file: entry {n} {key} must be a list of strings")
        validate_revision(str(item.get("revision") or "main"))
        checked.append((item, RepoRef.parse(item["repo_type"], item["repo_id"])))
    return checked


def import_requests(
    engine: Engine, upstream: HubUpstream, settings: PolicySettings, document: dict[str, Any]
) -> list[MirrorRequest]:
    """Create (with findings) the requests a sealed side exported; ones already imported are skipped."""
    items = _checked_requests(document)
    origin = str(document.get("instance") or "sealed")
    created = []
    for item, repo in items:
        requester = f"{origin}:{item.get('requester', 'unknown')}"
        marker = f"[{origin} request {item.get('id')}]"
        with Session(engine) as session:
            seen = any(marker in r.reason for r in workflow.list_requests(session, repo_id=repo.id, limit=1000))
        if seen:
            continue
        created.append(create_request(
            engine, upstream, settings, repo=repo, revision=str(item.get("revision") or "main"),
            allow_patterns=item.get("allow_patterns"), ignore_patterns=item.get("ignore_patterns"),
            reason=f"{marker} {item.get('reason', '')}".strip(), actor=audit.Actor(requester, "requester", origin),
        ))
    return created
