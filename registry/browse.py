"""Bulk reads behind the web pages (api/ui): a constant number of queries per page, never one per row.

``catalog_entries`` is ``catalog.list_repos`` for every type at once, in one query that carries only
what a listing filters and sorts on: the JSON fields it needs (licence, library, pipeline tag) are
extracted by the database. The large ``provenance`` documents (every file's scan record) are read
only for the rows a page shows (``snapshot_badges``). The same default-snapshot rule applies: the
commit ``main`` points at, else the newest; a repo whose default snapshot is not ``available`` is
not listed. ``catalog_version`` is the cheap fingerprint a cache of ``catalog_entries`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from registry.models import AuditEvent, MirrorRequest, Ref, Repo, Snapshot

SCAN_DECISIONS = ("scan.override", "code.approve")  # audited against the repo, with ``request`` in the detail


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    repo_type: str
    repo_id: str
    snapshot_pk: int
    commit: str
    total_size: int
    file_count: int
    mirrored_at: datetime  # when this snapshot was published here
    license: str | None
    library: str | None
    pipeline_tag: str | None

    @property
    def org(self) -> str | None:
        return self.repo_id.split("/", 1)[0] if "/" in self.repo_id else None


@dataclass(frozen=True, slots=True)
class Badges:
    scan_verdict: str | None  # pass | block; None: published before scanning existed
    signed: bool  # the snapshot carries a signing key id (signed here, or a verified bundle's)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def catalog_entries(session: Session) -> list[CatalogEntry]:
    """The default snapshot of every repo (models and datasets) that has an available one, by type and id.

    Reads only small columns and the small ``info`` document; the badges that live in the large
    ``provenance`` are read for the rows a page shows (``snapshot_badges``)."""
    main = aliased(Ref)
    info = col(Snapshot.info)
    query = (
        select(  # type: ignore[call-overload]
            Repo.repo_type, Repo.repo_id, Snapshot.pk, Snapshot.commit, Snapshot.total_size, Snapshot.file_count,
            Snapshot.created_at, Snapshot.state, info["license"].as_string(), info["library_name"].as_string(),
            info["pipeline_tag"].as_string(),
        )
        .join(Snapshot, col(Snapshot.repo_pk) == col(Repo.pk))
        .outerjoin(main, and_(col(main.repo_pk) == col(Repo.pk), col(main.name) == "main"))
        .where(or_(col(main.commit).is_(None), col(Snapshot.commit) == col(main.commit)))
    )
    best: dict[tuple[str, str], Any] = {}
    for row in session.exec(query).all():
        key = (row[0], row[1])
        held = best.get(key)
        if held is None or (row[6], row[2]) > (held[6], held[2]):  # newest (created_at, pk) wins
            best[key] = row
    return [CatalogEntry(repo_type=r[0], repo_id=r[1], snapshot_pk=r[2], commit=r[3], total_size=r[4],
                         file_count=r[5], mirrored_at=r[6], license=_text(r[8]), library=_text(r[9]),
                         pipeline_tag=_text(r[10]))
            for _, r in sorted(best.items()) if r[7] == "available"]


def catalog_version(session: Session) -> tuple[Any, ...]:
    """A cheap fingerprint of what ``catalog_entries`` returns: it changes when a snapshot is published,
    removed or changes state, or a ``main`` ref moves (two aggregate statements, no JSON read)."""
    available = col(Snapshot.state) == "available"
    snaps = session.exec(select(
        func.count(), func.max(Snapshot.pk), func.sum(case((available, Snapshot.pk), else_=0)),
        func.sum(case((available, 1), else_=0)))).one()
    refs = session.exec(select(func.count(), func.max(Ref.updated_at)).where(Ref.name == "main")).one()
    return (*snaps, *refs)


def snapshot_badges(session: Session, snapshot_pks: list[int]) -> dict[int, Badges]:
    """Scan verdict and signature of the given snapshots (one page of a listing), in one query."""
    if not snapshot_pks:
        return {}
    prov = col(Snapshot.provenance)
    rows = session.exec(select(
        Snapshot.pk, prov[("scan", "verdict")].as_string(), prov["key_id"].as_string(),
    ).where(col(Snapshot.pk).in_(sorted(set(snapshot_pks))))).all()
    return {pk: Badges(_text(verdict), _text(key_id) is not None) for pk, verdict, key_id in rows if pk is not None}


def requests_by_pk(session: Session, pks: list[int]) -> dict[int, MirrorRequest]:
    """The mirror requests named by snapshot provenance records, in one query."""
    wanted = sorted({pk for pk in pks if isinstance(pk, int)})
    if not wanted:
        return {}
    rows = session.exec(select(MirrorRequest).where(col(MirrorRequest.pk).in_(wanted))).all()
    return {r.pk: r for r in rows if r.pk is not None}


def request_trail(session: Session, req: MirrorRequest, limit: int = 200) -> list[AuditEvent]:
    """Every audit entry about request ``req``, oldest first: its transitions (target ``request:<pk>``) and the
    scan decisions taken on it (overrides and code approvals, audited against the repo)."""
    repo_target = f"{req.repo_type}:{req.repo_id}"
    query = select(AuditEvent).where(or_(
        col(AuditEvent.target) == f"request:{req.pk}",
        and_(col(AuditEvent.action).in_(SCAN_DECISIONS),
             or_(col(AuditEvent.target) == repo_target, col(AuditEvent.target).startswith(repo_target + ":", autoescape=True))),
    )).order_by(col(AuditEvent.pk)).limit(limit * 4)
    rows = [e for e in session.exec(query).all()
            if e.target == f"request:{req.pk}" or (e.detail or {}).get("request") == req.pk]
    return rows[:limit]


def request_counts(session: Session, requester: str | None = None) -> dict[str, int]:
    """How many requests are in each state (the caller's own when ``requester`` is given)."""
    query = select(MirrorRequest.state, func.count()).group_by(MirrorRequest.state)
    if requester is not None:
        query = query.where(MirrorRequest.requester == requester)
    return {state: int(n) for state, n in session.exec(query).all()}
