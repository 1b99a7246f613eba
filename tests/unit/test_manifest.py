from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from registry.errors import InvalidInputError
from registry.gitobjects import blob_oid, lfs_pointer, tree_oids
from registry.manifest import SCHEMA, Manifest, ManifestEntry
from registry.types import RepoType

from .conftest import entry, make_manifest

FILES = {"README.md": "# café\n".encode(), "config.json": b"{}", "model.safetensors": b"\0" * 10, "sub/é.txt": b"x"}


def _m(**kw) -> Manifest:  # type: ignore[no-untyped-def]
    return make_manifest(files=FILES, lfs=("model.safetensors",), **kw)


def test_canonical_json_shape() -> None:
    m = _m()
    raw = m.to_canonical_json()
    assert raw.endswith(b"\n") and not raw.endswith(b"\n\n")
    text = raw.decode("utf-8")
    assert "sub/é.txt" in text  # UTF-8, not \u escapes
    assert ", " not in text and ": " not in text  # compact separators
    doc = json.loads(raw)
    assert doc["schema"] == SCHEMA == "hubgate.snapshot/1"
    assert "schema_" not in doc
    assert list(doc) == sorted(doc)  # keys sorted at every level
    assert all(list(f) == sorted(f) for f in doc["files"])
    assert raw == (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def test_canonical_json_is_stable() -> None:
    a, b = _m(), _m()
    assert a.to_canonical_json() == b.to_canonical_json()
    assert a.to_canonical_json() == a.to_canonical_json()
    # building the same manifest from a dict with keys in another order changes nothing
    doc = json.loads(a.to_canonical_json())
    shuffled = dict(reversed(list(doc.items())))
    assert Manifest.from_json(json.dumps(shuffled, indent=2).encode()).to_canonical_json() == a.to_canonical_json()


def test_digest_is_sha256_of_canonical_bytes() -> None:
    m = _m()
    assert m.digest() == hashlib.sha256(m.to_canonical_json()).hexdigest()
    assert _m(commit="b" * 40).digest() != m.digest()
    other = make_manifest(files=dict(FILES, **{"config.json": b"{ }"}), lfs=("model.safetensors",))
    assert other.digest() != m.digest()


def test_a_copy_with_changes_has_its_own_bytes_and_digest() -> None:
    m = _m()
    before = m.digest()  # computed once and kept: the copy below must not inherit it
    other = m.model_copy(update={"commit": "f" * 40})
    assert other.digest() != before and other.digest() == _m(commit="f" * 40).digest()
    assert json.loads(other.to_canonical_json())["commit"] == "f" * 40
    assert m.model_copy().digest() == before and m.digest() == before


def test_round_trip() -> None:
    m = _m()
    back = Manifest.from_json(m.to_canonical_json())
    assert back == m
    assert back.to_canonical_json() == m.to_canonical_json()
    assert back.repo.type is RepoType.MODEL and back.repo.id == "acme/tiny"
    assert back.total_size == sum(len(d) for d in FILES.values())


def test_files_must_be_sorted() -> None:
    a, b = entry("a.txt", b"a"), entry("b.txt", b"b")
    with pytest.raises(ValidationError, match="sorted"):
        Manifest(repo_type=RepoType.MODEL, repo_id="x/y", commit="a" * 40, created_at="t", files=(b, a))


def test_files_must_be_unique() -> None:
    a = entry("a.txt", b"a")
    with pytest.raises(ValidationError, match="unique"):
        Manifest(repo_type=RepoType.MODEL, repo_id="x/y", commit="a" * 40, created_at="t", files=(a, a))
    with pytest.raises(ValidationError):
        Manifest(repo_type=RepoType.MODEL, repo_id="x/y", commit="a" * 40, created_at="t",
                 files=(a, entry("a.txt", b"other")))


@pytest.mark.parametrize(("outer", "inner"), [("a", "a/b"), ("a/b", "a/b/c/d"), ("x", "x/y/z")])
def test_file_under_a_file_is_rejected(outer: str, inner: str) -> None:
    with pytest.raises(ValidationError, match="under a file"):
        Manifest(repo_type=RepoType.MODEL, repo_id="x/y", commit="a" * 40, created_at="t",
                 files=(entry(outer, b"1"), entry(inner, b"2")))


def test_prefix_names_are_not_directories() -> None:
    # "a" and "a.txt"/"ab/c" share a prefix but neither lies under the file "a"
    m = Manifest(repo_type=RepoType.MODEL, repo_id="x/y", commit="a" * 40, created_at="t",
                 files=(entry("a", b"1"), entry("a.txt", b"2"), entry("ab/c", b"3")))
    assert [f.path for f in m.files] == ["a", "a.txt", "ab/c"]


def test_empty_manifest_is_allowed() -> None:
    m = Manifest(repo_type=RepoType.DATASET, repo_id="x/y", commit="a" * 40, created_at="t", files=())
    assert m.total_size == 0 and Manifest.from_json(m.to_canonical_json()) == m


@pytest.mark.parametrize(
    "field, value",
    [("path", "../x"), ("path", "/abs"), ("sha256", "A" * 64), ("sha256", "0" * 63), ("git_oid", "x" * 40), ("size", -1)],
)
def test_entry_validation(field: str, value: object) -> None:
    good = {"path": "a", "size": 1, "sha256": "0" * 64, "git_oid": "0" * 40, "lfs": False}
    with pytest.raises((ValidationError, InvalidInputError)):
        ManifestEntry(**{**good, field: value})


@pytest.mark.parametrize(("field", "value"), [("repo_id", "a--b"), ("repo_id", "../x"), ("commit", "main")])
def test_manifest_field_validation(field: str, value: str) -> None:
    good = {"repo_type": RepoType.MODEL, "repo_id": "x/y", "commit": "a" * 40, "created_at": "t", "files": ()}
    with pytest.raises((ValidationError, InvalidInputError)):
        Manifest(**{**good, field: value})


def test_entry_etag_pointer_and_tree_oid() -> None:
    data = b"weights" * 10
    regular = entry("config.json", data)
    lfs = entry("model.bin", data, lfs=True)
    assert regular.etag == regular.git_oid == blob_oid(data)
    assert regular.tree_oid == blob_oid(data)
    assert lfs.etag == hashlib.sha256(data).hexdigest()
    assert lfs.pointer == lfs_pointer(lfs.sha256, len(data))
    assert lfs.tree_oid == blob_oid(lfs.pointer)
    assert lfs.git_oid == blob_oid(data)  # the content's own id is still recorded


def test_git_files_use_pointer_ids_for_lfs() -> None:
    m = _m()
    by_path = {g.path: g.blob_oid for g in m.git_files()}
    lfs_entry = next(f for f in m.files if f.lfs)
    assert by_path[lfs_entry.path] == blob_oid(lfs_entry.pointer)
    assert by_path["config.json"] == blob_oid(b"{}")
    assert set(tree_oids(m.git_files())) == {"", "sub"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'"string"',
        b"42",
        b'{"schema": "hubgate.snapshot/2", "repo_type": "model", "repo_id": "x/y", "commit": "' + b"a" * 40
        + b'", "created_at": "t", "files": []}',
        b'{"repo_type": "model", "repo_id": "x/y", "commit": "' + b"a" * 40 + b'", "created_at": "t", "files": []}',
        b'{"schema": "hubgate.snapshot/1"}',
        b'{"schema": "hubgate.snapshot/1", "repo_type": "space", "repo_id": "x/y", "commit": "' + b"a" * 40
        + b'", "created_at": "t", "files": []}',
        b'{"schema": "hubgate.snapshot/1", "repo_type": "model", "repo_id": "x/y", "commit": "' + b"a" * 40
        + b'", "created_at": "t", "files": "abc"}',
        b'{"schema": "hubgate.snapshot/1", "repo_type": "model", "repo_id": "a--b", "commit": "' + b"a" * 40
        + b'", "created_at": "t", "files": []}',
        b'{"schema": "hubgate.snapshot/1", "repo_type": "model", "repo_id": "x/y", "commit": "' + b"a" * 40
        + b'", "created_at": "t", "files": [{"path": "../x", "size": 1, "sha256": "' + b"0" * 64
        + b'", "git_oid": "' + b"0" * 40 + b'", "lfs": false}]}',
    ],
    ids=["empty", "garbage", "bad-utf8", "list", "null", "string", "number", "unknown-schema", "no-schema",
         "missing-fields", "bad-repo-type", "bad-files", "bad-repo-id", "traversal-path"],
)
def test_from_json_rejects(data: bytes) -> None:
    with pytest.raises(InvalidInputError):
        Manifest.from_json(data)


def test_from_json_names_unknown_schema() -> None:
    doc = json.loads(_m().to_canonical_json())
    doc["schema"] = "hubgate.snapshot/9"
    with pytest.raises(InvalidInputError, match="hubgate.snapshot/9"):
        Manifest.from_json(json.dumps(doc).encode())


def test_manifest_is_immutable() -> None:
    m = _m()
    with pytest.raises(ValidationError):
        m.commit = "b" * 40  # type: ignore[misc]
