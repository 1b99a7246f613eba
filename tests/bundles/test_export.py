"""export_bundle: layout of each form, what the index records, incremental exports, streaming, failures."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from mirror.bundles import BundleError, Watermark, export_bundle, read_watermark
from mirror.bundles.format import INDEX_NAME, INDEX_SIG_NAME, Index, VolumeList, blob_member, own_key
from mirror.storage import layout
from registry.errors import InvalidInputError, RepoNotFoundError
from registry.types import RepoRef

from helpers.content import safetensors_bytes, write_tree

from .conftest import REPO_ID, VOLUME_SIZE, Source, build_instance, import_repo, publish_second_version

REPO = RepoRef.parse("model", REPO_ID)


def _index(path: Path) -> Index:
    return Index.from_bytes(path.read_bytes())


def test_tar_starts_with_the_signed_index_and_holds_exactly_its_members_in_order(source: Source) -> None:
    index = _index(source.dir / INDEX_NAME)
    with tarfile.open(source.tar) as tf:
        members = tf.getmembers()
    assert [m.name for m in members[:2]] == [INDEX_NAME, INDEX_SIG_NAME]
    tar_index = Index.from_bytes(Path(str(source.tar) + ".index.json").read_bytes())
    assert [m.name for m in members[2:]] == [m.path for m in tar_index.members]
    assert all(m.type == tarfile.REGTYPE for m in members)
    assert [m.path for m in tar_index.members] == [m.path for m in index.members]


def test_folder_holds_exactly_the_index_and_its_members(source: Source) -> None:
    index = _index(source.dir / INDEX_NAME)
    files = {p.relative_to(source.dir).as_posix() for p in source.dir.rglob("*") if p.is_file()}
    assert files == {INDEX_NAME, INDEX_SIG_NAME} | {m.path for m in index.members}
    for m in index.members:
        assert (source.dir / m.path).stat().st_size == m.size


def test_volumes_have_the_volume_size_and_a_signed_list(source: Source) -> None:
    folder = source.volumes.parent
    vlist = VolumeList.from_bytes((folder / "bundle.tar.volumes.json").read_bytes())
    assert (folder / "bundle.tar.volumes.json.sig").is_file()
    assert len(vlist.volumes) >= 3
    assert [v.name for v in vlist.volumes] == [f"bundle.tar.{i:03d}" for i in range(len(vlist.volumes))]
    for v in vlist.volumes:
        assert (folder / v.name).stat().st_size == v.size
    assert all(v.size == VOLUME_SIZE for v in vlist.volumes[:-1])
    assert source.results["volumes"].form == "volumes"


def test_index_records_instance_key_snapshot_and_approval(source: Source) -> None:
    a, index = source.a, _index(source.dir / INDEX_NAME)
    assert (index.instance, index.key_id, index.version) == ("low-side", a.signer.key_id, 1)
    assert [(s.repo_id, s.commit) for s in index.snapshots] == [(REPO_ID, source.commit)]
    assert set(index.watermark) == set(index.snapshots)
    assert [(r.name, r.kind, r.commit) for r in index.refs] == [("main", "branch", source.commit)]
    snap = source.dir / "snapshots" / index.snapshots[0].manifest_sha256
    assert (snap / "manifest.json").read_bytes() == a.store.driver.get_bytes(layout.manifest_key(REPO, source.commit))
    assert (snap / "signature.sig").read_bytes() == a.store.get_signature(REPO, source.commit)
    approval = json.loads((snap / "approval.json").read_bytes())
    assert approval["request"]["approved_by"] == "alice" and approval["request"]["requested_by"] == "bob"
    assert approval["request"]["findings"][0]["check"] == "license"
    assert approval["request"]["approved_at"].endswith("+00:00")
    assert approval["provenance"]["source"] == "import"
    manifest_blobs = {f.sha256 for f in a.store.get_manifest(REPO, source.commit).files}
    assert {m.sha256 for m in index.blob_members} == manifest_blobs


def test_incremental_export_carries_only_the_new_snapshot_and_blobs(tmp_path: Path, tiny_model: Path) -> None:
    a = build_instance(tmp_path / "a")
    v1 = import_repo(a, tiny_model)
    first = export_bundle(a.engine, a.store, a.signer, tmp_path / "e1.tar", form="tar")
    v2, new_blobs = publish_second_version(a, tiny_model, tmp_path)

    for since in (tmp_path / "e1.tar", tmp_path / "e1.tar.index.json", first.watermark):
        out = tmp_path / f"e2-{len(list(tmp_path.iterdir()))}"
        second = export_bundle(a.engine, a.store, a.signer, out, since=since)
        index = _index(out / INDEX_NAME)
        assert [s.commit for s in index.snapshots] == [v2] == [s.commit for s in second.snapshots]
        assert {m.sha256 for m in index.blob_members} == new_blobs
        assert {s.commit for s in index.watermark} == {v1, v2}
        assert index.since == first.index_sha256
        assert [(r.name, r.commit) for r in index.refs] == [("main", v2)]

    third = export_bundle(a.engine, a.store, a.signer, tmp_path / "e3", since=second.watermark)
    assert (third.snapshots, third.blobs) == ([], 0)
    assert [(r.name, r.commit) for r in _index(tmp_path / "e3" / INDEX_NAME).refs] == [("main", v2)]
    assert read_watermark(tmp_path / "e3", own_key(a.signer)).snapshots == second.watermark.snapshots


def test_since_must_be_signed_by_this_exporter(tmp_path: Path, source: Source) -> None:
    other = build_instance(tmp_path / "other")
    with pytest.raises(BundleError, match="untrusted key"):
        export_bundle(other.engine, other.store, other.signer, tmp_path / "x", since=source.dir)
    assert not (tmp_path / "x").exists()


def test_export_streams_blobs_in_chunks(tmp_path: Path) -> None:
    a = build_instance(tmp_path / "a")
    size = 80 * 1024 * 1024
    import_repo(a, write_tree(tmp_path / "big", {"model.safetensors": safetensors_bytes(size, 112)}))
    for form in ("dir", "tar"):
        tracemalloc.start()
        try:
            export_bundle(a.engine, a.store, a.signer, tmp_path / f"out-{form}" / "b.tar", form=form)  # type: ignore[arg-type]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < size // 2, f"{form}: peak {peak} bytes for a {size}-byte blob"


def test_damaged_stored_blob_fails_the_export_and_leaves_nothing(tmp_path: Path, tiny_model: Path) -> None:
    a = build_instance(tmp_path / "a")
    commit = import_repo(a, tiny_model)
    victim = max(a.store.get_manifest(REPO, commit).files, key=lambda f: f.size)
    path = a.store.local_path(victim.sha256)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    for form, out in (("dir", tmp_path / "out-dir"), ("tar", tmp_path / "t" / "b.tar")):
        with pytest.raises(BundleError, match=f"{victim.sha256} is damaged"):
            export_bundle(a.engine, a.store, a.signer, out, form=form, volume_size=None)  # type: ignore[arg-type]
        assert not out.exists()
    assert not list((tmp_path / "t").iterdir())


def test_unsigned_snapshot_is_signed_at_export(tmp_path: Path, tiny_model: Path) -> None:
    a = build_instance(tmp_path / "a")
    commit = import_repo(a, tiny_model, signer=None)
    export_bundle(a.engine, a.store, a.signer, tmp_path / "out")
    index = _index(tmp_path / "out" / INDEX_NAME)
    snap = tmp_path / "out" / "snapshots" / index.snapshots[0].manifest_sha256
    assert json.loads((snap / "approval.json").read_bytes())["signed_at_export"] is True
    from mirror import signing

    manifest = a.store.get_manifest(REPO, commit)
    assert signing.verify((snap / "signature.sig").read_bytes(), manifest, own_key(a.signer)) == a.signer.key_id


def test_bad_arguments_are_refused_before_writing(tmp_path: Path, source: Source) -> None:
    a = source.a
    with pytest.raises(InvalidInputError, match="tar form"):
        export_bundle(a.engine, a.store, a.signer, tmp_path / "x", form="dir", volume_size=VOLUME_SIZE)
    with pytest.raises(InvalidInputError, match="at least"):
        export_bundle(a.engine, a.store, a.signer, tmp_path / "x", form="tar", volume_size=100)
    with pytest.raises(RepoNotFoundError, match="acme/none"):
        export_bundle(a.engine, a.store, a.signer, tmp_path / "x", repos=[RepoRef.parse("model", "acme/none")])
    with pytest.raises(BundleError, match="exists"):
        export_bundle(a.engine, a.store, a.signer, source.dir)
    with pytest.raises(BundleError, match="exists"):
        export_bundle(a.engine, a.store, a.signer, source.tar, form="tar")
    assert not (tmp_path / "x").exists()


def test_repos_filter_limits_the_export(tmp_path: Path, tiny_model: Path) -> None:
    a = build_instance(tmp_path / "a")
    import_repo(a, tiny_model)
    other = import_repo(a, write_tree(tmp_path / "o", {"README.md": b"other\n"}), repo_id="acme/other")
    result = export_bundle(a.engine, a.store, a.signer, tmp_path / "out", repos=[RepoRef.parse("model", "acme/other")])
    assert [(s.repo_id, s.commit) for s in result.snapshots] == [("acme/other", other)]
    assert result.blobs == 1 and isinstance(result.watermark, Watermark)
    readme = hashlib.sha256(b"other\n").hexdigest()
    assert [m.path for m in _index(tmp_path / "out" / INDEX_NAME).blob_members] == [blob_member(readme)]


def test_approval_follows_the_request_named_in_the_provenance(tmp_path: Path, tiny_model: Path) -> None:
    """A synced snapshot names its request in its provenance; that request's approval is exported."""
    from sqlmodel import Session, select

    from registry import audit, workflow
    from registry.db import session_scope
    from registry.models import Snapshot

    a = build_instance(tmp_path / "a")
    commit = import_repo(a, tiny_model)
    with session_scope(a.engine) as session:
        req = workflow.submit(session, repo=REPO, revision="v1", commit=commit, allow_patterns=None,
                              ignore_patterns=None, reason="", actor=audit.Actor("dave", "requester"),
                              findings=[], verdict="review", changes=None)
        workflow.approve(session, req.pk or 0, audit.Actor("carol", "admin"))  # approved, not yet available
        snap = session.exec(select(Snapshot)).one()
        snap.provenance = {**snap.provenance, "request": req.pk}
        session.add(snap)
    export_bundle(a.engine, a.store, a.signer, tmp_path / "out")
    index = _index(tmp_path / "out" / INDEX_NAME)
    approval = json.loads((tmp_path / "out" / "snapshots" / index.snapshots[0].manifest_sha256 / "approval.json").read_bytes())
    assert (approval["request"]["approved_by"], approval["request"]["requested_by"]) == ("carol", "dave")
    with Session(a.engine) as session:
        approved_at = audit.query(session, action="request.approve")[0].at
    assert approval["request"]["approved_at"].startswith(approved_at.isoformat()[:19])
