"""Who may read which repo: visibility, grants and groups, decided the same way by every replica.

* ``public`` (no row, or an admin's explicit ``public`` row): anyone who may read the catalog.
* ``gated``: admins and tokens granted the repo (directly, ``token:<id>``, or through a group,
  ``group:<name>``). Others learn that it exists: the Hub's ``GatedRepo`` answer.
* ``private``: the same readers; to everyone else the repo does not exist (``RepoNotFound``).

The database is the source of truth. Processes keep an ``AccessSnapshot`` in memory and reload
it when the one-row ``AccessEpoch`` changes: every transaction that changes a grant, a group,
a visibility or revokes a token bumps it (``bump_epoch``), after its audit entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from registry import audit
from registry.errors import (
    HubgateError,
    InvalidInputError,
    NotFoundError,
    RepoNotFoundError,
)
from registry.models import (
    AccessEpoch,
    ApiToken,
    Grant,
    GroupMember,
    MirrorRequest,
    RepoAccess,
    utcnow,
)
from registry.types import RepoRef

PUBLIC, GATED, PRIVATE = "public", "gated", "private"
VISIBILITIES = (PUBLIC, GATED, PRIVATE)
_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

RepoKey = tuple[str, str]  # (repo_type value, repo_id)


class GatedRepoError(HubgateError):
    """The repo is gated and the caller's token has no grant for it (the Hub answers 403 GatedRepo)."""


class GatedRepoAuthRequiredError(GatedRepoError):
    """The repo is gated and the caller sent no token (the Hub answers 401 GatedRepo)."""


def key_of(repo: RepoRef) -> RepoKey:
    return (repo.type.value, repo.id)


@dataclass(frozen=True)
class AccessSnapshot:
    """Everything an access decision needs, loaded at one epoch. Immutable: swapped whole on reload."""

    epoch: int
    visibility: dict[RepoKey, str] = field(default_factory=dict)  # gated and private repos only
    grants: dict[RepoKey, frozenset[str]] = field(default_factory=dict)  # subjects per repo
    groups: dict[str, frozenset[str]] = field(default_factory=dict)  # token id -> its groups

    def may_read(self, key: RepoKey, token_id: str | None, role: str | None) -> bool:
        if key not in self.visibility or role == "admin":
            return True
        return token_id is not None and self._granted(key, token_id)

    def _granted(self, key: RepoKey, token_id: str) -> bool:
        subjects = self.grants.get(key)
        if not subjects:
            return False
        if f"token:{token_id}" in subjects:
            return True
        return any(f"group:{g}" in subjects for g in self.groups.get(token_id, ()))

    def check(self, key: RepoKey, token_id: str | None, role: str | None) -> None:
        """Return if the caller may read the repo; else raise what the Hub would answer.

        Raises RepoNotFoundError (private), GatedRepoAuthRequiredError (gated, no token),
        GatedRepoError (gated, a token without a grant).
        """
        visibility = self.visibility.get(key)
        if visibility is None or role == "admin" or (token_id is not None and self._granted(key, token_id)):
            return
        kind, repo_id = key
        if visibility == PRIVATE:
            raise RepoNotFoundError(f"Repository {repo_id} not found")  # word for word what a missing repo says
        if token_id is None:
            raise GatedRepoAuthRequiredError(
                f"Access to {kind} {repo_id} is restricted. You must have access to it and be authenticated to "
                "access it: set HF_TOKEN to a hubgate token an admin granted it to")
        raise GatedRepoError(
            f"Access to {kind} {repo_id} is restricted and your token is not in its authorized list: ask a hubgate "
            "admin for a grant (hubgate grants add)")


# -- the epoch


def current_epoch(session: Session) -> int:
    row = session.get(AccessEpoch, 1)
    return row.epoch if row is not None else 0


def bump_epoch(session: Session) -> None:
    """Tell every process that access changed (in the caller's transaction: seen once it commits)."""
    session.execute(update(AccessEpoch).where(col(AccessEpoch.pk) == 1).values(epoch=AccessEpoch.epoch + 1))


def load_snapshot(session: Session) -> AccessSnapshot:
    """The whole access state (a few small tables) at one epoch, read in one transaction."""
    epoch = current_epoch(session)
    visibility = {(r.repo_type, r.repo_id): r.visibility for r in session.exec(select(RepoAccess)).all()
                  if r.visibility != PUBLIC}
    grants: dict[RepoKey, set[str]] = {}
    for g in session.exec(select(Grant)).all():
        grants.setdefault((g.repo_type, g.repo_id), set()).add(g.subject)
    groups: dict[str, set[str]] = {}
    for m in session.exec(select(GroupMember)).all():
        groups.setdefault(m.token_id, set()).add(m.group_name)
    return AccessSnapshot(epoch, visibility, {k: frozenset(v) for k, v in grants.items()},
                          {k: frozenset(v) for k, v in groups.items()})


# -- visibility


def get_visibility(session: Session, repo: RepoRef) -> str:
    row = session.get(RepoAccess, key_of(repo))
    return row.visibility if row is not None else PUBLIC


def set_visibility(session: Session, repo: RepoRef, visibility: str, *, actor: audit.Actor,
                   reason: str | None = None) -> bool:
    """An admin's decision (an explicit ``public`` is kept, so a later gated sync leaves it public).
    Returns True if it changed. Raises InvalidInputError for an unknown visibility."""
    if visibility not in VISIBILITIES:
        raise InvalidInputError(f"Invalid visibility {visibility!r}: expected one of {', '.join(VISIBILITIES)}")
    row = session.get(RepoAccess, key_of(repo))
    before = row.visibility if row is not None else None
    if before == visibility:
        return False
    # Lock order, in every access change: the audit chain head, then the rows, then the epoch.
    audit.record(session, actor, "repo.visibility", str(repo), before=before or PUBLIC, after=visibility,
                 reason=reason)
    row = row or RepoAccess(repo_type=repo.type.value, repo_id=repo.id, visibility=visibility, updated_by=actor.name)
    row.visibility, row.updated_by, row.updated_at = visibility, actor.name, utcnow()
    session.add(row)
    bump_epoch(session)
    return True


def mark_gated(session: Session, repo: RepoRef, *, actor: audit.Actor = audit.SYSTEM,
               reason: str = "gated upstream") -> bool:
    """Gate a repo that nobody has decided about yet: a repo with no visibility row becomes gated; a
    private one stays private and an admin's explicit ``public`` stays public. True if it changed."""
    if session.get(RepoAccess, key_of(repo)) is not None:
        return False
    return set_visibility(session, repo, GATED, actor=actor, reason=reason)


def is_gated_upstream(findings: list[dict[str, Any]]) -> bool:
    """Whether policy findings say the upstream repo is gated (rules ``gated``, ``gated.no-token``)."""
    return any(str(f.get("rule", "")).split(".")[0] == "gated" for f in findings)


def gate_if_gated_upstream(session: Session, repo: RepoRef, findings: list[dict[str, Any]], *,
                           actor: audit.Actor = audit.SYSTEM) -> bool:
    """Call in the transaction that publishes a snapshot (sync, bundle import): a repo that is gated
    upstream is gated here. True if it changed."""
    return is_gated_upstream(findings) and mark_gated(session, repo, actor=actor)


def gate_request(session: Session, request_pk: int, *, actor: audit.Actor = audit.SYSTEM) -> bool:
    """``gate_if_gated_upstream`` for the repo and findings of mirror request ``request_pk``."""
    req = session.get(MirrorRequest, request_pk)
    if req is None:
        raise NotFoundError(f"No mirror request {request_pk}")
    return gate_if_gated_upstream(session, RepoRef.parse(req.repo_type, req.repo_id), req.findings, actor=actor)


# -- grants and groups


def parse_subject(session: Session, subject: str) -> str:
    """``token:<id>`` (of an existing token) or ``group:<name>``. Raises InvalidInputError, NotFoundError."""
    kind, _, name = subject.partition(":")
    if kind == "token" and name:
        if session.get(ApiToken, name) is None:
            raise NotFoundError(f"No token {name}")
        return subject
    if kind == "group" and _GROUP_RE.match(name):
        return subject
    raise InvalidInputError(f"Invalid grant subject {subject!r}: expected token:<token id> or group:<name>")


def add_grant(session: Session, repo: RepoRef, subject: str, *, actor: audit.Actor) -> bool:
    """Grant ``subject`` read access to ``repo``. True if new."""
    subject = parse_subject(session, subject)
    exists = session.exec(select(Grant).where(Grant.repo_type == repo.type.value, Grant.repo_id == repo.id,
                                              Grant.subject == subject)).first()
    if exists is not None:
        return False
    audit.record(session, actor, "grant.add", str(repo), subject=subject)
    session.add(Grant(repo_type=repo.type.value, repo_id=repo.id, subject=subject, created_by=actor.name))
    bump_epoch(session)
    return True


def remove_grant(session: Session, repo: RepoRef, subject: str, *, actor: audit.Actor) -> None:
    """Raises NotFoundError if there is no such grant."""
    row = session.exec(select(Grant).where(Grant.repo_type == repo.type.value, Grant.repo_id == repo.id,
                                           Grant.subject == subject)).first()
    if row is None:
        raise NotFoundError(f"No grant of {repo} to {subject}")
    audit.record(session, actor, "grant.remove", str(repo), subject=subject)
    session.delete(row)
    bump_epoch(session)


def list_grants(session: Session, repo: RepoRef | None = None) -> list[Grant]:
    q = select(Grant)
    if repo is not None:
        q = q.where(Grant.repo_type == repo.type.value, Grant.repo_id == repo.id)
    return list(session.exec(q.order_by(col(Grant.repo_type), col(Grant.repo_id), col(Grant.subject))).all())


def add_member(session: Session, group: str, token_id: str, *, actor: audit.Actor) -> bool:
    """Put a token in a group. True if new. Raises InvalidInputError, NotFoundError."""
    if not _GROUP_RE.match(group):
        raise InvalidInputError(f"Invalid group name {group!r}: letters, digits, '.', '_', '-' (up to 100)")
    if session.get(ApiToken, token_id) is None:
        raise NotFoundError(f"No token {token_id}")
    if session.get(GroupMember, (group, token_id)) is not None:
        return False
    audit.record(session, actor, "group.add", f"group:{group}", token_id=token_id)
    session.add(GroupMember(group_name=group, token_id=token_id, created_by=actor.name))
    bump_epoch(session)
    return True


def remove_member(session: Session, group: str, token_id: str, *, actor: audit.Actor) -> None:
    row = session.get(GroupMember, (group, token_id))
    if row is None:
        raise NotFoundError(f"Token {token_id} is not in group {group}")
    audit.record(session, actor, "group.remove", f"group:{group}", token_id=token_id)
    session.delete(row)
    bump_epoch(session)


def list_members(session: Session, group: str | None = None) -> list[GroupMember]:
    q = select(GroupMember)
    if group is not None:
        q = q.where(GroupMember.group_name == group)
    return list(session.exec(q.order_by(col(GroupMember.group_name), col(GroupMember.token_id))).all())


def repo_access(session: Session, repo: RepoRef) -> dict[str, Any]:
    """A repo's visibility and grants, for the admin views (a request, ``hubgate grants list``)."""
    return {"visibility": get_visibility(session, repo),
            "grants": [g.subject for g in list_grants(session, repo)]}
