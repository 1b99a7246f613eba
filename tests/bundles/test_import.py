"""import_bundle into a local-store instance B: round trips, idempotence, resume, incremental order, provenance."""

from __future__ import annotations

import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import Session

from mirror import signing
from mirror.bundles import BundleError, export_bundle, import_bundle
from registry import audit, catalog, snapshots
from registry.db import session_scope
from registry.refs import parse_ref
from registry.types import RepoRef

from helpers.content import safetensors_bytes, write_tree

from .conftest import (
    REPO_ID, Source, assert_nothing_published, build_instance, copy_bundle, import_repo, publish_second_version,
    row_counts, store_state,
)

REPO = RepoRef.parse("model", REPO_ID)
FORMS = ("dir", "tar", "volumes")


def _blobs_of(instance, commit):  # type: ignore[no-untyped-def]
    with Session(instance.engine) as session:
        return catalog.list_files(session, REPO, commit)


@pytest.mark.parametrize("form", FORMS)
def test_round_trip_publishes_the_same_snapshot_with_provenance(source: Source, make_b, form: str) -> None:  # type: ignore[no-untyped-def]
    b = make_b()
    result = import_bundle(b.engine, b.store, source.bundle(form), trusted=b.trusted())
    assert (result.form, result.source_instance, result.key_id) == (form, "low-side", source.a.signer.key_id)
    assert [k.commit for k in result.published] == [source.commit]
    assert result.refs_moved == [f"{REPO}:main"]
    assert result.blobs_copied == len({f.sha256 for f in _blobs_of(b, source.commit)}) and result.blobs_skipped == 0
    assert _blobs_of(b, source.commit) == _blobs_of(source.a, source.commit)
    for f in _blobs_of(b, source.commit):
        with b.store.open(f.sha256) as got, source.a.store.open(f.sha256) as want:
            assert got.read() == want.read()
    assert b.store.get_signature(REPO, source.commit) == source.a.store.get_signature(REPO, source.commit)
    with Session(b.engine) as session:
        view = catalog.default_snapshot(session, REPO)
    assert view.commit == source.commit
    p = view.provenance
    assert (p["source"], p["source_instance"], p["key_id"], p["signature_key_id"]) == (
        "bundle", "low-side", source.a.signer.key_id, source.a.signer.key_id)
    assert (p["approved_by"], p["requested_by"], p["bundle"]) == ("alice", "bob", result.index_sha256)
    assert p["findings"][0]["check"] == "license" and p["approved_at"]
    assert p["origin"]["source"] == "import"


@pytest.mark.parametrize("form", FORMS)
def test_importing_twice_changes_nothing(source: Source, make_b, form: str) -> None:  # type: ignore[no-untyped-def]
    b = make_b()
    import_bundle(b.engine, b.store, source.bundle(form), trusted=b.trusted())
    rows, stored = row_counts(b.engine), store_state(b.store)
    again = import_bundle(b.engine, b.store, source.bundle(form), trusted=b.trusted())
    assert (again.published, again.refs_moved, again.blobs_copied) == ([], [], 0)
    assert [k.commit for k in again.unchanged] == [source.commit]
    assert row_counts(b.engine) == rows
    assert store_state(b.store) == stored


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_interrupted_import_resumes_without_copying_verified_blobs_again(source: Source, make_b, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mirror.bundles.format import Index

    b = make_b()
    bad = copy_bundle(source.dir, tmp_path / "bad")
    index = Index.from_bytes((bad / "index.json").read_bytes())
    last = index.blob_members[-1]
    _flip_byte(bad / last.path, last.size // 2)
    with pytest.raises(BundleError, match="altered or damaged"):
        import_bundle(b.engine, b.store, bad, trusted=b.trusted())
    assert_nothing_published(b)
    verified = [m.sha256 for m in index.blob_members[:-1]]
    assert all(b.store.has(sha) for sha in verified) and not b.store.has(last.sha256)
    before = {sha: os.stat(b.store.local_path(sha)) for sha in verified}

    result = import_bundle(b.engine, b.store, source.dir, trusted=b.trusted())
    assert (result.blobs_copied, result.blobs_skipped) == (1, len(verified))
    assert [k.commit for k in result.published] == [source.commit]
    for sha, st in before.items():  # the same files, never rewritten
        now = os.stat(b.store.local_path(sha))
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_tar_import_still_verifies_members_it_skips(source: Source, make_b, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A blob already stored is not copied again, but its bytes in the stream are still checked."""
    b = make_b()
    bad = copy_bundle(source.tar, tmp_path / "bad")
    with tarfile.open(bad) as tf:
        blob = [m for m in tf.getmembers() if m.name.startswith("blobs/")][0]
    _flip_byte(bad, blob.offset_data + blob.size // 2)
    sha = blob.name.rsplit("/", 1)[1]
    with b.store.ingest(size=blob.size, sha256=sha) as w:  # the blob is already in B's store
        with source.a.store.open(sha) as f:
            w.write(f.read())
        w.commit()
    with pytest.raises(BundleError, match=f"{blob.name}: sha256 mismatch"):
        import_bundle(b.engine, b.store, bad, trusted=b.trusted())
    assert_nothing_published(b)


def test_incremental_bundles_import_in_order_and_move_refs(tmp_path: Path, tiny_model: Path, make_b) -> None:  # type: ignore[no-untyped-def]
    a = build_instance(tmp_path / "a")
    v1 = import_repo(a, tiny_model)
    export_bundle(a.engine, a.store, a.signer, tmp_path / "e1")
    v2, new_blobs = publish_second_version(a, tiny_model, tmp_path)
    export_bundle(a.engine, a.store, a.signer, tmp_path / "e2.tar", form="tar", since=tmp_path / "e1")
    b = make_b(a.write_public_key(tmp_path / "a.pub"))

    with pytest.raises(BundleError, match="import the bundle it continues first"):
        import_bundle(b.engine, b.store, tmp_path / "e2.tar", trusted=b.trusted())
    assert_nothing_published(b)

    import_bundle(b.engine, b.store, tmp_path / "e1", trusted=b.trusted())
    second = import_bundle(b.engine, b.store, tmp_path / "e2.tar", trusted=b.trusted())
    assert [k.commit for k in second.published] == [v2]
    assert second.blobs_copied == len(new_blobs)  # v2's other blobs came with e1
    with Session(b.engine) as session:
        assert catalog.default_snapshot(session, REPO).commit == v2
        assert {s.commit for s in catalog.list_snapshots(session, REPO)} == {v1, v2}

    # main moves back to v1 on A: the next bundle carries no snapshot, only the ref.
    with session_scope(a.engine) as session:
        snapshots.move_ref(session, REPO, parse_ref("main"), v1, actor=audit.SYSTEM)
    third = export_bundle(a.engine, a.store, a.signer, tmp_path / "e3", since=tmp_path / "e2.tar.index.json")
    assert (third.snapshots, third.blobs) == ([], 0)
    moved = import_bundle(b.engine, b.store, tmp_path / "e3", trusted=b.trusted())
    assert moved.refs_moved == [f"{REPO}:main"]
    with Session(b.engine) as session:
        assert catalog.default_snapshot(session, REPO).commit == v1
    assert b.store.driver.get_bytes(f"refs/{REPO.storage_name}/refs/heads/main").strip().decode() == v1
    rows = row_counts(b.engine)
    assert import_bundle(b.engine, b.store, tmp_path / "e3", trusted=b.trusted()).refs_moved == []
    assert row_counts(b.engine) == rows


def test_a_commit_published_here_with_other_content_is_refused(source: Source, make_b, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b = make_b()
    import_repo(b, write_tree(tmp_path / "other", {"README.md": b"not the same\n"}), revision=source.commit)
    before = row_counts(b.engine)
    with pytest.raises(BundleError, match="already published here with other content"):
        import_bundle(b.engine, b.store, source.dir, trusted=b.trusted())
    assert row_counts(b.engine) == before
    assert not any(k.startswith("blobs/") and b.store.driver.stat(k).size > 100 for k in b.store.driver.iter_keys("blobs/"))


def test_snapshot_signed_by_an_untrusted_key_is_refused(tmp_path: Path, tiny_model: Path, make_b) -> None:  # type: ignore[no-untyped-def]
    a = build_instance(tmp_path / "a")
    stranger = signing.Signer(ec.generate_private_key(ec.SECP256R1()))
    import_repo(a, tiny_model, signer=stranger)  # the index is A's, the snapshot signature is not
    export_bundle(a.engine, a.store, a.signer, tmp_path / "e1")
    b = make_b(a.write_public_key(tmp_path / "a.pub"))
    with pytest.raises(BundleError, match="snapshot signature.*untrusted key"):
        import_bundle(b.engine, b.store, tmp_path / "e1", trusted=b.trusted())
    assert_nothing_published(b)


def test_import_streams_blobs_in_chunks(tmp_path: Path, make_b) -> None:  # type: ignore[no-untyped-def]
    a = build_instance(tmp_path / "a")
    size = 80 * 1024 * 1024
    import_repo(a, write_tree(tmp_path / "big", {"model.safetensors": safetensors_bytes(size, 178)}))
    export_bundle(a.engine, a.store, a.signer, tmp_path / "b.tar", form="tar", volume_size=16 * 1024 * 1024)
    b = make_b(a.write_public_key(tmp_path / "a.pub"))
    tracemalloc.start()
    try:
        result = import_bundle(b.engine, b.store, tmp_path / "b.tar", trusted=b.trusted())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.form, result.bytes_copied) == ("volumes", size)
    assert peak < size // 2, f"peak {peak} bytes for a {size}-byte blob"
