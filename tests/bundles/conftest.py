"""Two hubgate instances and the bundles between them.

Instance A (the connected side) is a local store built with ``build_services`` and fed with
``import_folder``: a tiny GPT-2 made with transformers' ``save_pretrained`` plus a few random
files. Its snapshot is approved through a real mirror request (so the bundle carries who
approved it). Instance B (the sealed side) is built per test, on a local store here or on S3
(moto's server) in the integration tests, trusting A's public key.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, func, select

from helpers.content import write_tree

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "acme/tiny"
VOLUME_SIZE = 64 * 1024


@dataclass
class Instance:
    services: Any  # api.services.Services
    data_dir: Path

    @property
    def engine(self) -> Any:
        return self.services.engine

    @property
    def store(self) -> Any:
        return self.services.store

    @property
    def signer(self) -> Any:
        return self.services.signer

    def trusted(self) -> dict[str, Any]:
        from mirror.bundles import load_trusted_keys

        return load_trusted_keys(self.services.settings.trusted_keys)

    def write_public_key(self, path: Path) -> Path:
        from mirror import signing

        path.write_bytes(signing.public_pem(self.signer.private_key.public_key()))
        return path


def build_instance(data_dir: Path, **env: str) -> Instance:
    from api.app import build_services
    from api.settings import load

    environ = {"HUBGATE_DATA_DIR": str(data_dir), "HUBGATE_WORKER_IN_PROCESS": "false", **env}
    return Instance(build_services(load(environ=environ)), data_dir)




def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}


def import_repo(instance: Instance, folder: Path, repo_id: str = REPO_ID, **kwargs: Any) -> str:
    """import_folder into ``instance``, signed by its key unless ``signer`` is given; returns the commit."""
    from mirror.importer import import_folder
    from registry.types import RepoRef

    kwargs.setdefault("signer", instance.signer)
    result = import_folder(instance.engine, instance.store, folder, RepoRef.parse("model", repo_id), **kwargs)
    return result.manifest.commit


def publish_second_version(a: Instance, tiny_model: Path, tmp_path: Path) -> tuple[str, set[str]]:
    """Publish v2 of acme/tiny on ``a`` (main moves to it): v1 plus a new file and another README.

    Returns (commit, sha256 of the two new blobs).
    """
    v2 = Path(shutil.copytree(tiny_model, tmp_path / "v2"))
    new = {"extra/added.bin": os.urandom(70_000), "README.md": (v2 / "README.md").read_bytes() + b"\nv2\n"}
    write_tree(v2, new)
    return import_repo(a, v2), {hashlib.sha256(d).hexdigest() for d in new.values()}


def approve_by_request(instance: Instance, commit: str, *, approver: str = "alice", repo_id: str = REPO_ID) -> None:
    """Record the approval of ``commit`` as a mirror request that went pending -> approved -> available."""
    from registry import audit, workflow
    from registry.db import session_scope
    from registry.types import RepoRef

    findings = [{"check": "license", "severity": "info", "message": "license mit is allowed"}]
    with session_scope(instance.engine) as session:
        req = workflow.submit(session, repo=RepoRef.parse("model", repo_id), revision="main", commit=commit,
                              allow_patterns=None, ignore_patterns=None, reason="needed for tests",
                              actor=audit.Actor("bob", "requester"), findings=findings, verdict="review", changes=None)
        assert req.pk is not None
        workflow.approve(session, req.pk, audit.Actor(approver, "admin"))
        workflow.start(session, req.pk)
        workflow.finish(session, req.pk)


def row_counts(engine: Any) -> dict[str, int]:
    from registry.models import AuditEvent, KnownBlob, Ref, Repo, Snapshot, SnapshotFile

    with Session(engine) as session:
        return {m.__name__: session.exec(select(func.count()).select_from(m)).one()
                for m in (Repo, Snapshot, SnapshotFile, Ref, KnownBlob, AuditEvent)}


def store_state(store: Any) -> dict[str, tuple[int, float]]:
    """Every key of a store with its size and modification time."""
    out = {}
    for key in store.driver.iter_keys(""):
        info = store.driver.stat(key)
        out[key] = (info.size, info.modified)
    return out


def assert_nothing_published(instance: Instance, repo_id: str = REPO_ID) -> None:
    from registry import catalog
    from registry.errors import RepoNotFoundError
    from registry.types import RepoRef

    with Session(instance.engine) as session:
        with pytest.raises(RepoNotFoundError):
            catalog.default_snapshot(session, RepoRef.parse("model", repo_id))
    assert row_counts(instance.engine)["Snapshot"] == 0
    assert not [k for k in instance.store.driver.iter_keys("manifests/")]
    assert not [k for k in instance.store.driver.iter_keys("refs/")]


def copy_bundle(path: Path, dest: Path) -> Path:
    """A writable copy of a bundle of any form (folder; tar with its side files; volumes)."""
    dest.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        return Path(shutil.copytree(path, dest / path.name))
    for sibling in path.parent.iterdir():
        if sibling.name.startswith(path.name):
            shutil.copy2(sibling, dest / sibling.name)
    return dest / path.name


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/make_tiny_model.py's GPT-2, plus random files (LFS and regular, in a subfolder)."""
    out = tmp_path_factory.mktemp("tiny-model") / "tiny"
    runpy.run_path(str(ROOT / "examples" / "make_tiny_model.py"))["main"](out)
    rng = __import__("random").Random(7)
    return write_tree(out, {
        "data/random.bin": rng.randbytes(150_000),
        "data/notes.txt": rng.randbytes(3000).hex().encode(),
        "empty.txt": b"",
    })


@dataclass
class Source:
    """Instance A with acme/tiny published and approved, its public key, and its bundles in every form."""

    a: Instance
    model: Path  # the folder acme/tiny was imported from
    public_key: Path
    commit: str
    dir: Path
    tar: Path
    volumes: Path
    results: dict[str, Any]

    def bundle(self, form: str) -> Path:
        return {"dir": self.dir, "tar": self.tar, "volumes": self.volumes}[form]


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Source]:
    from mirror.bundles import export_bundle

    root = tmp_path_factory.mktemp("source")
    a = build_instance(root / "a", HUBGATE_INSTANCE_NAME="low-side")
    commit = import_repo(a, tiny_model)
    approve_by_request(a, commit)
    out = root / "bundles"
    results = {
        "dir": export_bundle(a.engine, a.store, a.signer, out / "dir", form="dir", instance="low-side"),
        "tar": export_bundle(a.engine, a.store, a.signer, out / "tar" / "bundle.tar", form="tar", instance="low-side"),
        "volumes": export_bundle(a.engine, a.store, a.signer, out / "vol" / "bundle.tar", form="tar",
                                 volume_size=VOLUME_SIZE, instance="low-side"),
    }
    yield Source(a, tiny_model, a.write_public_key(root / "a.pub"), commit, out / "dir", out / "tar" / "bundle.tar",
                 out / "vol" / "bundle.tar", results)
    a.engine.dispose()


@pytest.fixture
def make_b(tmp_path: Path, source: Source) -> Iterator[Any]:
    """Build a local-store instance B trusting A's key (or the key files given)."""
    made: list[Instance] = []

    def make(*trusted: Path, name: str = "b") -> Instance:
        keys = trusted or (source.public_key,)
        b = build_instance(tmp_path / name, HUBGATE_TRUSTED_KEYS=",".join(str(k) for k in keys),
                           HUBGATE_INSTANCE_NAME="high-side")
        made.append(b)
        return b

    yield make
    for b in made:
        b.engine.dispose()
