"""Every verified blob the store holds, in bulk: what lets a sync skip a file it already has.

A ``KnownBlob`` row is written only for a blob that is verified and durably stored, so a row can
be trusted by a sync of another snapshot (found by sha256 for LFS files, by git blob id for the
others). Rows are written and read in bulk (one SELECT, one INSERT per call, whatever the number
of files) and tolerate concurrent twins: two workers storing the same blob both succeed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlmodel import Session, col, select

from registry.db import insert_ignore
from registry.models import KnownBlob

# Bound parameters per statement stay well under SQLite's and PostgreSQL's limits.
_CHUNK = 5000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Blob:
    sha256: str
    git_oid: str
    size: int


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def record(session: Session, blobs: Iterable[Blob]) -> int:
    """Record ``blobs`` as stored, in the caller's transaction: one SELECT of the sha256s already
    known, one INSERT … ON CONFLICT DO NOTHING of the others. Returns how many were new."""
    wanted = {b.sha256: b for b in blobs}
    if not wanted:
        return 0
    shas = sorted(wanted)
    known: set[str] = set()
    for part in _chunks(shas):
        known.update(session.exec(select(KnownBlob.sha256).where(col(KnownBlob.sha256).in_(part))).all())
    missing = [{"sha256": s, "git_oid": wanted[s].git_oid, "size": wanted[s].size} for s in shas if s not in known]
    for part in _chunks(missing):
        insert_ignore(session, KnownBlob, part, conflict=("sha256",))
    return len(missing)


def lookup(session: Session, *, sha256s: Iterable[str] = (), git_oids: Iterable[str] = ()) -> tuple[
        dict[str, Blob], dict[str, Blob]]:
    """The known blobs among ``sha256s`` and among ``git_oids``: (by sha256, by git blob id), in one
    query per few thousand names."""
    by_sha: dict[str, Blob] = {}
    by_oid: dict[str, Blob] = {}
    for column, names, out in ((KnownBlob.sha256, sorted(set(sha256s)), by_sha),
                               (KnownBlob.git_oid, sorted(set(git_oids)), by_oid)):
        for part in _chunks(names):
            for row in session.exec(select(KnownBlob).where(col(column).in_(part))).all():
                blob = Blob(row.sha256, row.git_oid, row.size)
                out[blob.sha256 if out is by_sha else blob.git_oid] = blob
    return by_sha, by_oid
