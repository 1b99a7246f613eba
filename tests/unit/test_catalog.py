"""registry.catalog (read side) and registry.snapshots (publish side) on SQLite."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from registry import catalog, snapshots
from registry.db import session_scope
from registry.errors import (
    ConflictError,
    InvalidInputError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SnapshotUnavailableError,
)
from registry.manifest import Manifest
from registry.models import Snapshot
from registry.refs import parse_ref
from registry.types import RepoRef, RepoType

from .conftest import make_manifest, row_counts

REPO = RepoRef(RepoType.MODEL, "acme/tiny")
C1, C2, C3 = "1" * 40, "2" * 40, "3" * 40
T1, T2 = "2024-01-01T00:00:00.000000Z", "2024-02-01T00:00:00.000000Z"


def publish(engine: Engine, m: Manifest, *refs: str, info: dict | None = None) -> snapshots.PublishResult:  # type: ignore[type-arg]
    with session_scope(engine) as session:
        return snapshots.publish(session, m, manifest_digest=m.digest(), info=info or {"tags": ["x"]},
                                 refs=[parse_ref(r) for r in refs])


@pytest.fixture
def published(engine: Engine) -> Engine:
    publish(engine, make_manifest(commit=C1, files={"a.txt": b"1"}, created_at=T1), "main", "refs/tags/v1")
    publish(engine, make_manifest(commit=C2, files={"a.txt": b"2", "sub/b.bin": b"bb"}, lfs=("sub/b.bin",), created_at=T2),
            "dev", "refs/pr/1", "refs/convert/parquet")
    return engine


def resolve(engine: Engine, revision: str | None, repo: RepoRef = REPO) -> catalog.SnapshotView:
    with Session(engine) as session:
        return catalog.resolve(session, repo, revision)


@pytest.mark.parametrize(
    ("revision", "commit"),
    [("main", C1), ("refs/heads/main", C1), ("v1", C1), ("refs/tags/v1", C1), ("dev", C2), ("refs/heads/dev", C2),
     ("refs/pr/1", C2), ("refs/convert/parquet", C2), (C1, C1), (C2, C2), (None, C1)],
)
def test_resolve(published: Engine, revision: str | None, commit: str) -> None:
    assert resolve(published, revision).commit == commit


def test_snapshot_view_fields(published: Engine) -> None:
    snap = resolve(published, C2)
    assert snap.repo == REPO
    assert snap.file_count == 2
    assert snap.total_size == 3
    assert snap.state == "available"
    assert snap.info == {"tags": ["x"]}
    assert snap.manifest_digest == make_manifest(commit=C2, files={"a.txt": b"2", "sub/b.bin": b"bb"},
                                                 lfs=("sub/b.bin",), created_at=T2).digest()
    # timestamps come from the manifests, so a catalog rebuilt from the store answers the same
    assert snap.created_at.replace(tzinfo=timezone.utc) == datetime(2024, 2, 1, tzinfo=timezone.utc)
    assert snap.repo_created_at.replace(tzinfo=timezone.utc) == datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("revision", ["nope", "refs/heads/nope", "refs/tags/nope", "refs/pr/2", C3])
def test_unknown_revision(published: Engine, revision: str) -> None:
    with pytest.raises(RevisionNotFoundError):
        resolve(published, revision)


@pytest.mark.parametrize("revision", ["refs/tags/dev", "refs/heads/v1"])
def test_qualified_ref_of_the_other_kind_is_not_found(published: Engine, revision: str) -> None:
    with pytest.raises(RevisionNotFoundError):
        resolve(published, revision)


@pytest.mark.parametrize("revision", ["../x", "a..b", ""])
def test_invalid_revision(published: Engine, revision: str) -> None:
    with pytest.raises(InvalidInputError):
        resolve(published, revision)


@pytest.mark.parametrize("repo", [RepoRef(RepoType.MODEL, "acme/other"), RepoRef(RepoType.DATASET, "acme/tiny")])
def test_unknown_repo(published: Engine, repo: RepoRef) -> None:
    for revision in ("main", C1, None):
        with pytest.raises(RepoNotFoundError):
            resolve(published, revision, repo)
    with Session(published) as session:
        with pytest.raises(RepoNotFoundError):
            catalog.list_refs(session, repo)
        with pytest.raises(RepoNotFoundError):
            catalog.list_files(session, repo, C1)


def test_default_is_newest_without_main(engine: Engine) -> None:
    publish(engine, make_manifest(commit=C2, files={"x": b"x"}, created_at=T2))
    publish(engine, make_manifest(commit=C1, created_at=T1), "dev")  # published later, but older
    assert resolve(engine, None).commit == C2
    with pytest.raises(RevisionNotFoundError):
        resolve(engine, "main")


def test_list_files_sorted(published: Engine) -> None:
    with Session(published) as session:
        files = catalog.list_files(session, REPO, C2)
        assert [f.path for f in files] == ["a.txt", "sub/b.bin"]
        assert [f.lfs for f in files] == [False, True]
        assert files[1].size == 2
        assert catalog.list_files(session, REPO, C3) == []


def test_list_refs_and_snapshots(published: Engine) -> None:
    with Session(published) as session:
        refs = {(r.name, r.kind, r.commit) for r in catalog.list_refs(session, REPO)}
        assert refs == {("main", "branch", C1), ("v1", "tag", C1), ("dev", "branch", C2), ("refs/pr/1", "pr", C2),
                        ("refs/convert/parquet", "convert", C2)}
        assert [s.commit for s in catalog.list_snapshots(session, REPO)] == [C2, C1]


def test_list_repos(engine: Engine) -> None:
    publish(engine, make_manifest(repo_id="zeta/m", commit=C1), "main")
    publish(engine, make_manifest(repo_id="alpha/m", commit=C2), "main")
    publish(engine, make_manifest(repo_id="alpha/d", commit=C3, repo_type=RepoType.DATASET), "main")
    with Session(engine) as session:
        assert [s.repo.id for s in catalog.list_repos(session, RepoType.MODEL)] == ["alpha/m", "zeta/m"]
        assert [s.repo.id for s in catalog.list_repos(session, RepoType.DATASET)] == ["alpha/d"]


def test_unavailable_snapshot_is_not_served(published: Engine) -> None:
    with session_scope(published) as session:
        for snap in session.exec(select(Snapshot).where(Snapshot.commit == C1)).all():
            snap.state = "unavailable"
            session.add(snap)
    for revision in ("main", "v1", C1, None):
        with pytest.raises(SnapshotUnavailableError):
            resolve(published, revision)
    assert resolve(published, "dev").commit == C2
    with Session(published) as session:
        assert catalog.list_repos(session, RepoType.MODEL) == []  # its default snapshot is unavailable


# -- publish -------------------------------------------------------------------------------------


def test_publish_is_idempotent(engine: Engine) -> None:
    m = make_manifest(commit=C1)
    first = publish(engine, m, "main")
    counts = row_counts(engine)
    again = publish(engine, m, "main")
    assert first.created and first.refs_moved == ["main"]
    assert not again.created and again.refs_moved == []
    assert row_counts(engine) == counts


def test_publish_moves_refs(engine: Engine) -> None:
    publish(engine, make_manifest(commit=C1), "main")
    result = publish(engine, make_manifest(commit=C2, files={"x": b"x"}), "main", "other")
    assert sorted(result.refs_moved) == ["main", "other"]
    assert resolve(engine, "main").commit == C2
    back = publish(engine, make_manifest(commit=C1), "main")
    assert not back.created and back.refs_moved == ["main"]
    assert resolve(engine, "main").commit == C1


def test_publish_other_content_for_the_same_commit_conflicts(engine: Engine) -> None:
    publish(engine, make_manifest(commit=C1), "main")
    counts = row_counts(engine)
    with pytest.raises(ConflictError):
        publish(engine, make_manifest(commit=C1, files={"other": b"x"}), "main", "new-ref")
    assert row_counts(engine) == counts  # the transaction rolled back: no ref either


def test_a_tag_does_not_replace_the_branch_of_the_same_name(engine: Engine) -> None:
    publish(engine, make_manifest(commit=C1), "main")
    try:
        publish(engine, make_manifest(commit=C2, files={"x": b"x"}), "refs/tags/main")
    except ConflictError:
        pass  # refusing the tag is an acceptable answer
    assert resolve(engine, "main").commit == C1
    assert resolve(engine, "refs/heads/main").commit == C1


def test_set_ref_to_unpublished_commit(engine: Engine) -> None:
    publish(engine, make_manifest(commit=C1), "main")
    with session_scope(engine) as session:
        repo_row = snapshots.existing_repo(session, REPO)
        with pytest.raises(RevisionNotFoundError):
            snapshots.set_ref(session, repo_row, parse_ref("main"), C3)
    assert resolve(engine, "main").commit == C1
