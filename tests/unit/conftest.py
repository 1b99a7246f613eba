from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from mirror.storage.blobs import BlobStore
from mirror.storage.local import LocalDriver
from registry.db import make_engine
from registry.gitobjects import blob_oid
from registry.manifest import Manifest, ManifestEntry
from registry.models import KnownBlob, Ref, Repo, Snapshot, SnapshotFile
from registry.settings import DatabaseSettings
from registry.types import RepoType


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/db"))
    yield eng
    eng.dispose()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    s = BlobStore(LocalDriver(tmp_path / "store"))
    s.check_layout()
    return s


def row_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            model.__name__: session.exec(select(func.count()).select_from(model)).one()
            for model in (Repo, Snapshot, SnapshotFile, Ref, KnownBlob)
        }


def stored_keys(store: BlobStore) -> list[str]:
    """Every key in the store except the layout marker."""
    return [k for k in store.driver.iter_keys("") if k != "hubgate-layout"]


def entry(path: str, data: bytes, lfs: bool = False) -> ManifestEntry:
    return ManifestEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                         git_oid=blob_oid(data), lfs=lfs)


def make_manifest(repo_id: str = "acme/tiny", commit: str = "a" * 40, files: dict[str, bytes] | None = None,
                  repo_type: RepoType = RepoType.MODEL, lfs: tuple[str, ...] = (),
                  created_at: str = "2024-05-01T12:00:00.000000Z") -> Manifest:
    files = files if files is not None else {"README.md": b"# tiny\n", "config.json": b"{}"}
    return Manifest(
        repo_type=repo_type, repo_id=repo_id, commit=commit, created_at=created_at,
        files=tuple(entry(p, d, p in lfs) for p, d in sorted(files.items())),
    )

