from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror.errors import DigestMismatchError, ImportSourceError
from mirror.importer import import_folder
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from registry import catalog
from registry.errors import ConflictError, ContentBlockedError, InvalidInputError
from registry.gitobjects import blob_oid, lfs_pointer
from registry.types import RepoRef, RepoType

from helpers.content import safetensors_bytes, write_tree

from .conftest import row_counts, stored_keys
from .gitutil import git, init_repo, needs_git

REPO = RepoRef.parse("model", "acme/tiny")
# Folder names sort after every root file name here: see test_files_in_folders_sorting_before_root_files.
FILES = {
    "README.md": b"---\nlicense: mit\n---\n# tiny\n",
    "config.json": b'{"architectures": ["TinyForCausalLM"], "model_type": "tiny"}',
    "model.safetensors": safetensors_bytes(4096),
    "tokenizer/vocab.txt": b"a\nb\n",
    "train/data.parquet": b"PAR1",
}
EMPTY_DB = {"Repo": 0, "Snapshot": 0, "SnapshotFile": 0, "Ref": 0, "KnownBlob": 0}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", FILES)


def assert_nothing_written(engine: Engine, store: BlobStore) -> None:
    assert row_counts(engine) == EMPTY_DB
    assert stored_keys(store) == []
    assert list((store.driver.root / ".tmp").iterdir()) == []  # type: ignore[attr-defined]


# -- plain folders -------------------------------------------------------------------------------


def test_import_plain_folder(engine: Engine, store: BlobStore, folder: Path) -> None:
    result = import_folder(engine, store, folder, REPO)
    m = result.manifest
    assert result.publish.created
    assert result.publish.refs_moved == ["main"]
    assert [f.path for f in m.files] == sorted(FILES)
    for f in m.files:
        data = FILES[f.path]
        assert (f.size, f.sha256, f.git_oid) == (len(data), sha256(data), blob_oid(data))
        with store.open(f.sha256) as fh:
            assert fh.read() == data
    assert m.source == {"kind": "import"}
    assert store.get_manifest(REPO, m.commit) == m
    assert store.driver.get_bytes(layout.ref_key(REPO, "refs/heads/main")) == m.commit.encode() + b"\n"
    with Session(engine) as session:
        snap = catalog.resolve(session, REPO, "main")
        assert snap.commit == m.commit
        assert snap.manifest_digest == m.digest()
        assert snap.file_count == len(FILES)
        assert snap.info["license"] == "mit"
        assert [f.path for f in catalog.list_files(session, REPO, m.commit)] == sorted(FILES)


def test_hub_default_lfs_rules_without_gitattributes(engine: Engine, store: BlobStore, folder: Path) -> None:
    m = import_folder(engine, store, folder, REPO).manifest
    lfs = {f.path for f in m.files if f.lfs}
    assert lfs == {"model.safetensors", "train/data.parquet"}


def test_gitattributes_decides_lfs(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {
        **FILES,
        ".gitattributes": b"*.json filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs\ntrain/*.parquet -filter\n",
    })
    m = import_folder(engine, store, src, REPO).manifest
    lfs = {f.path for f in m.files if f.lfs}
    assert lfs == {"config.json"}  # .safetensors is not listed in this repo's .gitattributes
    assert ".gitattributes" in {f.path for f in m.files}


def test_commit_is_derived_from_content(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    a = write_tree(tmp_path / "a", FILES)
    b = write_tree(tmp_path / "b", FILES)  # same files, another folder
    os.utime(b / "config.json", (1, 1))  # timestamps do not matter
    c = write_tree(tmp_path / "c", {**FILES, "config.json": b"{}"})
    d = write_tree(tmp_path / "d", {**FILES, "extra.txt": b""})
    sha_a = import_folder(engine, store, a, REPO).manifest.commit
    sha_b = import_folder(engine, store, b, REPO).manifest.commit
    sha_c = import_folder(engine, store, c, REPO).manifest.commit
    sha_d = import_folder(engine, store, d, REPO).manifest.commit
    assert sha_a == sha_b
    assert len({sha_a, sha_c, sha_d}) == 3
    other_repo = import_folder(engine, store, a, RepoRef.parse("model", "acme/other")).manifest.commit
    assert other_repo != sha_a  # the message names the repo


@needs_git
def test_derived_commit_is_the_git_commit_of_the_hub_tree(engine: Engine, store: BlobStore, folder: Path, tmp_path: Path) -> None:
    """The derived sha is what git computes for the repo as the Hub stores it (LFS files as pointers)."""
    m = import_folder(engine, store, folder, REPO).manifest
    repo = init_repo(tmp_path / "git")
    as_stored = {p: (lfs_pointer(sha256(d), len(d)) if p.endswith((".safetensors", ".parquet")) else d)
                 for p, d in FILES.items()}
    write_tree(repo, as_stored)
    git(repo, "add", "-A")
    tree = git(repo, "write-tree")
    assert m.commit == git(repo, "commit-tree", tree, "-m", "Import acme/tiny")


def test_reimport_changes_nothing(engine: Engine, store: BlobStore, folder: Path) -> None:
    first = import_folder(engine, store, folder, REPO)
    key = layout.manifest_key(REPO, first.manifest.commit)
    raw = store.driver.get_bytes(key)
    keys = stored_keys(store)
    counts = row_counts(engine)
    again = import_folder(engine, store, folder, REPO)
    assert again.manifest.commit == first.manifest.commit
    assert again.manifest == first.manifest  # created_at included: the first manifest is kept
    assert store.driver.get_bytes(key) == raw
    assert not again.publish.created
    assert again.publish.refs_moved == []
    assert stored_keys(store) == keys
    assert row_counts(engine) == counts


def test_identical_files_are_stored_once(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.bin": b"same", "e/c.bin": b"same", "d.txt": b"other"})
    import_folder(engine, store, src, REPO)
    assert sorted(store.iter_digests()) == sorted({sha256(b"same"), sha256(b"other")})


def test_refs_and_explicit_revision(engine: Engine, store: BlobStore, folder: Path) -> None:
    rev = "c" * 40
    result = import_folder(engine, store, folder, REPO, revision=rev, refs=["main", "refs/tags/v1", "refs/pr/2"])
    assert result.manifest.commit == rev
    assert sorted(result.publish.refs_moved) == ["main", "refs/pr/2", "v1"]
    with Session(engine) as session:
        for name in ("main", "v1", "refs/tags/v1", "refs/pr/2", rev):
            assert catalog.resolve(session, REPO, name).commit == rev
        assert {(r.name, r.kind) for r in catalog.list_refs(session, REPO)} == {
            ("main", "branch"), ("v1", "tag"), ("refs/pr/2", "pr")}


def test_import_without_refs(engine: Engine, store: BlobStore, folder: Path) -> None:
    result = import_folder(engine, store, folder, REPO, refs=[])
    assert result.publish.refs_moved == []
    with Session(engine) as session:
        assert catalog.list_refs(session, REPO) == []
        assert catalog.resolve(session, REPO, result.manifest.commit).commit == result.manifest.commit


def test_skips_git_folder_and_hf_download_cache(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {
        "config.json": b"{}", ".git/HEAD": b"ref: refs/heads/main\n", ".cache/huggingface/download/x.lock": b"",
    })
    m = import_folder(engine, store, src, REPO).manifest
    assert [f.path for f in m.files] == ["config.json"]


def test_a_git_segment_below_the_root_refuses_the_import(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    """Only the folder's own .git (the operator's checkout) is skipped; one inside the tree is content a
    client would write into a checkout (a submodule link, hooks): the content scan refuses it."""
    src = write_tree(tmp_path / "src", {"config.json": b"{}", "sub/.git": b"gitdir: elsewhere\n"})
    with pytest.raises(ContentBlockedError, match="sub/.git"):
        import_folder(engine, store, src, REPO)
    assert row_counts(engine)["Snapshot"] == 0


def test_symlink_inside_the_folder_is_followed(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"real/config.json": b'{"a": 1}'})
    (src / "config.json").symlink_to("real/config.json")
    m = import_folder(engine, store, src, REPO).manifest
    by_path = {f.path: f for f in m.files}
    assert by_path["config.json"].sha256 == by_path["real/config.json"].sha256 == sha256(b'{"a": 1}')
    assert not by_path["config.json"].lfs


def test_plain_folder_symlink_into_a_blobs_folder_follows_normal_rules(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"blobs/weights-v2.safetensors": safetensors_bytes(256), "weights/config.json": b"{}"})
    (src / "weights" / "model.safetensors").symlink_to("../blobs/weights-v2.safetensors")
    m = import_folder(engine, store, src, REPO).manifest
    assert {f.path: f.lfs for f in m.files}["weights/model.safetensors"] is True


@pytest.mark.parametrize("files", [
    {"z.txt": b"z", "data/x.txt": b"x"},
    {"a0": b"0", "a/x": b"x"},
    {"model.safetensors": safetensors_bytes(200, 2), "config/a.json": b"{}"},
], ids=["z-vs-data", "a0-vs-a-dir", "model-vs-config-dir"])
def test_files_in_folders_sorting_before_root_files(engine: Engine, store: BlobStore, tmp_path: Path,
                                                    files: dict[str, bytes]) -> None:
    src = write_tree(tmp_path / "src", files)
    m = import_folder(engine, store, src, REPO).manifest
    assert [f.path for f in m.files] == sorted(files)


# -- HF cache snapshot folders -------------------------------------------------------------------


def make_hf_cache(root: Path, repo_dir: str, commit: str, files: dict[str, tuple[bytes, bool]]) -> Path:
    """``<root>/<repo_dir>/snapshots/<commit>/<path> -> ../../blobs/<etag>`` as huggingface_hub lays it out."""
    repo = root / repo_dir
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    for path, (data, lfs) in files.items():
        etag = sha256(data) if lfs else blob_oid(data)
        (repo / "blobs" / etag).write_bytes(data)
        link = snap / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / etag, link.parent))
    return snap


CACHE_FILES = {
    "config.json": (b'{"model_type": "tiny"}', False),
    "model.safetensors": (safetensors_bytes(2048, 1), True),
    "tokenizer/tokenizer.json": (b'{"v": 1}', False),
    "README.md": (b"# card\n", False),
}


def test_import_hf_cache_snapshot(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    commit = "1234567890abcdef1234567890abcdef12345678"
    snap = make_hf_cache(tmp_path / "hub", "models--acme--tiny", commit, CACHE_FILES)
    assert os.readlink(snap / "tokenizer" / "tokenizer.json").startswith("../../../blobs/")
    result = import_folder(engine, store, snap, REPO)
    m = result.manifest
    assert m.commit == commit
    assert m.source == {"kind": "hf-cache"}
    by_path = {f.path: f for f in m.files}
    assert set(by_path) == set(CACHE_FILES)
    for path, (data, lfs) in CACHE_FILES.items():
        f = by_path[path]
        assert f.lfs is lfs
        assert f.etag == (sha256(data) if lfs else blob_oid(data))
        assert f.sha256 == sha256(data) and f.size == len(data)
    with Session(engine) as session:
        assert catalog.resolve(session, REPO, "main").commit == commit


def test_import_hf_cache_snapshot_of_a_dataset(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    commit = "a" * 40
    snap = make_hf_cache(tmp_path / "hub", "datasets--acme--data", commit, {"data/train.csv": (b"a,b\n", False)})
    ds = RepoRef.parse("dataset", "acme/data")
    assert import_folder(engine, store, snap, ds).manifest.commit == commit


def test_hf_cache_blob_names_are_verified(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    snap = make_hf_cache(tmp_path / "hub", "models--acme--tiny", "b" * 40, CACHE_FILES)
    lfs_blob = tmp_path / "hub" / "models--acme--tiny" / "blobs" / sha256(CACHE_FILES["model.safetensors"][0])
    lfs_blob.write_bytes(b"\x02" * 2048)  # corrupted: same size, other bytes
    with pytest.raises(DigestMismatchError, match="model.safetensors"):
        import_folder(engine, store, snap, REPO)
    assert row_counts(engine) == EMPTY_DB
    assert not store.has(sha256(b"\x02" * 2048))
    assert list(store.driver.iter_keys(layout.UPLOADS_PREFIX)) == []
    assert list(store.driver.iter_keys(layout.MANIFESTS_PREFIX)) == []


def test_hf_cache_git_blob_names_are_verified(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    snap = make_hf_cache(tmp_path / "hub", "models--acme--tiny", "b" * 40, {"config.json": (b"{}", False)})
    (tmp_path / "hub" / "models--acme--tiny" / "blobs" / blob_oid(b"{}")).write_bytes(b"[]")
    with pytest.raises(DigestMismatchError, match="config.json"):
        import_folder(engine, store, snap, REPO)
    assert_nothing_written(engine, store)


def test_hf_cache_revision_must_match(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    snap = make_hf_cache(tmp_path / "hub", "models--acme--tiny", "b" * 40, CACHE_FILES)
    with pytest.raises(ImportSourceError, match="b" * 40):
        import_folder(engine, store, snap, REPO, revision="c" * 40)
    assert_nothing_written(engine, store)
    assert import_folder(engine, store, snap, REPO, revision="b" * 40).manifest.commit == "b" * 40


# -- refusals: nothing is left behind ------------------------------------------------------------


def test_missing_folder(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(ImportSourceError, match="nope"):
        import_folder(engine, store, tmp_path / "nope", REPO)
    assert_nothing_written(engine, store)


def test_a_file_is_not_a_folder(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(ImportSourceError):
        import_folder(engine, store, f, REPO)
    assert_nothing_written(engine, store)


def test_empty_folder(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ImportSourceError, match="no files"):
        import_folder(engine, store, tmp_path / "empty", REPO)
    assert_nothing_written(engine, store)


def test_invalid_repo_id_via_parse(engine: Engine, store: BlobStore, folder: Path) -> None:
    with pytest.raises(InvalidInputError):
        import_folder(engine, store, folder, RepoRef.parse("model", "a--b"))
    assert_nothing_written(engine, store)


@pytest.mark.parametrize("repo_id", ["a--b", "../x", "x.git"])
def test_invalid_repo_id_leaves_nothing(engine: Engine, store: BlobStore, folder: Path, repo_id: str) -> None:
    with pytest.raises(InvalidInputError):
        import_folder(engine, store, folder, RepoRef(RepoType.MODEL, repo_id))
    assert_nothing_written(engine, store)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"revision": "main"}, "commit"), ({"revision": "A" * 40}, "commit"), ({"refs": ["../x"]}, "revision"),
     ({"refs": ["a" * 40]}, "ref"), ({"refs": ["main", "refs/pr/0"]}, "ref")],
)
def test_invalid_revision_or_ref(engine: Engine, store: BlobStore, folder: Path, kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInputError, match=match):
        import_folder(engine, store, folder, REPO, **kwargs)
    assert_nothing_written(engine, store)


def test_symlink_pointing_outside(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not import")
    src = write_tree(tmp_path / "src", {"a.txt": b"a", "z.txt": b"z"})
    (src / "leak.txt").symlink_to(secret)
    with pytest.raises(ImportSourceError, match="leak.txt"):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


def test_relative_symlink_escaping_via_dotdot(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_bytes(b"x")
    src = write_tree(tmp_path / "src", {"a.txt": b"a"})
    (src / "sub").mkdir()
    (src / "sub" / "link").symlink_to("../../outside.txt")
    with pytest.raises(ImportSourceError, match="sub/link"):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


def test_hf_cache_symlink_outside_the_repo_cache(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    snap = make_hf_cache(tmp_path / "hub", "models--acme--tiny", "b" * 40, {"config.json": (b"{}", False)})
    other = make_hf_cache(tmp_path / "hub", "models--acme--other", "c" * 40, {"x.txt": (b"other repo", False)})
    (snap / "stolen.txt").symlink_to(os.path.relpath((other / "x.txt").resolve(), snap))
    with pytest.raises(ImportSourceError, match="stolen.txt"):
        import_folder(engine, store, snap, REPO)
    assert_nothing_written(engine, store)


def test_symlink_to_a_directory(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a", "real/b.txt": b"b"})
    (src / "alias").symlink_to("real", target_is_directory=True)
    with pytest.raises(ImportSourceError, match="alias"):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


def test_fifo(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a"})
    os.mkfifo(src / "pipe")
    with pytest.raises(ImportSourceError, match="pipe"):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


def test_symlink_to_a_device(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a"})
    (src / "null").symlink_to("/dev/null")
    with pytest.raises(ImportSourceError, match="null"):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


def test_dangling_symlink(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a"})
    (src / "broken").symlink_to("missing-target")
    with pytest.raises(ImportSourceError, match="broken"):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


@pytest.mark.parametrize("name", ["back\\slash.txt", "new\nline.txt", "e\u0301.txt", "del\x7f.txt", "c1\x85.txt"])
def test_file_names_the_grammar_refuses(engine: Engine, store: BlobStore, tmp_path: Path, name: str) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a", "z.txt": b"z"})
    try:
        (src / name).write_bytes(b"x")
    except OSError:
        pytest.skip("the file system refuses this name itself")
    with pytest.raises(ImportSourceError, match="Cannot import"):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


def test_folder_names_the_grammar_refuses(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a", "bad\\dir/file.txt": b"x"})
    with pytest.raises(ImportSourceError):
        import_folder(engine, store, src, REPO)
    assert_nothing_written(engine, store)


# -- conflicts -----------------------------------------------------------------------------------


def test_other_content_at_a_published_revision_is_a_conflict(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    rev = "d" * 40
    a = write_tree(tmp_path / "a", FILES)
    b = write_tree(tmp_path / "b", {**FILES, "config.json": b"{}"})
    first = import_folder(engine, store, a, REPO, revision=rev)
    counts = row_counts(engine)
    with pytest.raises(ConflictError, match=rev):
        import_folder(engine, store, b, REPO, revision=rev, refs=["main", "other"])
    assert row_counts(engine) == counts
    with Session(engine) as session:
        snap = catalog.resolve(session, REPO, "main")
        assert snap.manifest_digest == first.manifest.digest()
        assert [r.name for r in catalog.list_refs(session, REPO)] == ["main"]


def test_conflict_leaves_the_stored_manifest_untouched(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    rev = "d" * 40
    a = write_tree(tmp_path / "a", FILES)
    b = write_tree(tmp_path / "b", {**FILES, "config.json": b"{}"})
    first = import_folder(engine, store, a, REPO, revision=rev)
    raw = store.driver.get_bytes(layout.manifest_key(REPO, rev))
    with pytest.raises(ConflictError):
        import_folder(engine, store, b, REPO, revision=rev)
    assert store.driver.get_bytes(layout.manifest_key(REPO, rev)) == raw
    assert store.get_manifest(REPO, rev).digest() == first.manifest.digest()


def test_same_revision_in_another_repo_is_not_a_conflict(engine: Engine, store: BlobStore, tmp_path: Path) -> None:
    rev = "e" * 40
    a = write_tree(tmp_path / "a", FILES)
    b = write_tree(tmp_path / "b", {"other.txt": b"x"})
    import_folder(engine, store, a, REPO, revision=rev)
    result = import_folder(engine, store, b, RepoRef.parse("dataset", "acme/tiny"), revision=rev)
    assert result.publish.created


def test_a_failing_restore_of_other_snapshots_does_not_fail_the_publish(
        engine: Engine, store: BlobStore, folder: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from mirror import scrub

    def broken_restore(*args: object, **kwargs: object) -> list[str]:
        raise OSError("another snapshot's manifest is unreadable")

    monkeypatch.setattr(scrub, "restore_available", broken_restore)
    result = import_folder(engine, store, folder, REPO)  # committed: must not raise
    assert result.publish.created
    with Session(engine) as session:
        assert catalog.resolve(session, REPO, "main").commit == result.manifest.commit
    assert "restoring unavailable snapshots failed" in caplog.text


def test_a_publish_that_loses_a_race_for_the_same_commit_keeps_the_winners_manifest(
        engine: Engine, store: BlobStore, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mirror import publishing
    from mirror.errors import ObjectNotFoundError

    winner = import_folder(engine, store, folder, REPO).manifest
    # The loser looked before the winner wrote (no manifest yet), then hit the winner's row on commit.
    real_get_manifest = store.get_manifest
    monkeypatch.setattr(store, "get_manifest", lambda repo, commit: (_ for _ in ()).throw(ObjectNotFoundError("not yet")))

    def unique_violation(*args: object, **kwargs: object) -> None:
        raise RuntimeError("UNIQUE constraint failed: snapshot.repo_pk, snapshot.commit")

    monkeypatch.setattr(publishing, "_publish_in_db", unique_violation)
    with pytest.raises(RuntimeError, match="UNIQUE"):
        publishing.publish_manifest(engine, store, winner, refs=[])
    monkeypatch.undo()
    assert real_get_manifest(REPO, winner.commit) == winner  # still there for rebuild-index and exports
    assert store.driver.stat(layout.provenance_key(REPO, winner.commit)) is not None


def test_a_repo_first_published_with_a_default_main_is_dated_by_its_manifest(
        engine: Engine, store: BlobStore, folder: Path) -> None:
    """As a sync publishes: the repo row's time is the manifest's, so a catalog rebuilt from the store agrees."""
    from mirror.publishing import publish_manifest

    source = import_folder(engine, store, folder, REPO).manifest
    other = RepoRef.parse("model", "acme/synced")
    manifest = source.model_copy(update={"repo_id": other.id, "created_at": "2024-01-02T03:04:05.000000Z"})
    publish_manifest(engine, store, manifest, default_main=True)
    with Session(engine) as session:
        view = catalog.resolve(session, other, "main")
    assert view.repo_created_at.replace(tzinfo=None) == manifest.created_datetime.replace(tzinfo=None)
