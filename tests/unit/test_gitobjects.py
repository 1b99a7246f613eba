from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from registry.gitobjects import GitFile, blob_oid, commit_oid, lfs_pointer, tree_oids

from helpers.content import write_tree
from .gitutil import all_tree_ids, git, init_repo, needs_git

pytestmark = needs_git


@pytest.mark.parametrize(
    "data",
    [b"", b"hello\n", b"\0\1\2\xff" * 1000, "日本語\r\n".encode(), bytes(range(256)) * 300],
    ids=["empty", "text", "binary", "utf8-crlf", "75KiB"],
)
def test_blob_oid_equals_git_hash_object(tmp_path: Path, data: bytes) -> None:
    assert blob_oid(data) == git(tmp_path, "hash-object", "--stdin", input=data)


def test_blob_oid_known_values() -> None:
    assert blob_oid(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert blob_oid(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


# Names chosen to hit git's ordering rule: a directory sorts as if its name ended in "/"
# ("sub.txt" < "sub/" < "sub0"), plus nesting, an empty file, non-ASCII and spaces.
TREE_FILES = {
    "README.md": b"# readme\n",
    "a.txt": b"a",
    "a-b": b"dash",
    "a/x": b"in a",
    "a0": b"zero",
    "sub.txt": b"dot",
    "sub-x": b"dash",
    "sub/z.txt": b"z",
    "sub/deep/x.bin": b"\0binary\0",
    "sub/deep/y": b"y",
    "sub/deep/deeper/leaf": b"leaf",
    "sub0": b"0",
    "empty": b"",
    "日本/ファイル.txt": "ünï".encode(),
    "dir with space/f": b"f",
    "Z-upper": b"Z",
}


def _git_files(files: dict[str, bytes]) -> list[GitFile]:
    return [GitFile(p, blob_oid(d)) for p, d in files.items()]


def test_tree_oids_equal_git_write_tree(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    write_tree(repo, TREE_FILES)
    git(repo, "add", "-A")
    root_from_git = git(repo, "write-tree")
    git(repo, "commit", "-q", "-m", "x")

    ours = tree_oids(_git_files(TREE_FILES))
    assert ours[""] == root_from_git
    assert ours["sub"] == git(repo, "rev-parse", "HEAD:sub")
    assert ours["sub/deep"] == git(repo, "rev-parse", "HEAD:sub/deep")
    assert ours == all_tree_ids(repo)  # every directory, and no extra entries


def test_tree_oids_do_not_depend_on_input_order() -> None:
    files = _git_files(TREE_FILES)
    assert tree_oids(files) == tree_oids(list(reversed(files))) == tree_oids(sorted(files, key=lambda f: f.path[::-1]))


def test_tree_oids_change_with_any_content_or_name() -> None:
    base = tree_oids(_git_files(TREE_FILES))
    changed = dict(TREE_FILES, **{"sub/deep/y": b"Y"})
    other = tree_oids(_git_files(changed))
    assert other[""] != base[""] and other["sub"] != base["sub"] and other["sub/deep"] != base["sub/deep"]
    assert other["a"] == base["a"]  # untouched directory keeps its id
    renamed = {("sub/deep/y2" if p == "sub/deep/y" else p): d for p, d in TREE_FILES.items()}
    assert tree_oids(_git_files(renamed))["sub/deep"] != base["sub/deep"]


def test_lfs_pointer_format() -> None:
    sha = hashlib.sha256(b"weights").hexdigest()
    pointer = lfs_pointer(sha, 548105171)
    assert pointer == (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:" + sha.encode() + b"\n"
        b"size 548105171\n"
    )
    assert len(pointer) == 134
    assert len(lfs_pointer(sha, 0)) == 126


def test_tree_with_lfs_pointers_matches_git(tmp_path: Path) -> None:
    """What git stores for an LFS file is its pointer: trees are built from the pointer's blob id."""
    weights = b"\x00" * 1000
    pointer = lfs_pointer(hashlib.sha256(weights).hexdigest(), len(weights))
    repo = init_repo(tmp_path / "repo")
    write_tree(repo, {"model.safetensors": pointer, "config.json": b"{}", "onnx/model.onnx": pointer})
    git(repo, "add", "-A")
    expected = git(repo, "write-tree")
    ours = tree_oids([
        GitFile("model.safetensors", blob_oid(pointer)),
        GitFile("config.json", blob_oid(b"{}")),
        GitFile("onnx/model.onnx", blob_oid(pointer)),
    ])
    assert ours[""] == expected


def test_commit_oid_equals_git_commit_tree(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    write_tree(repo, {"a": b"x", "d/b": b"y"})
    git(repo, "add", "-A")
    tree = git(repo, "write-tree")
    expected = git(repo, "commit-tree", tree, "-m", "Import acme/tiny")  # identity and date 0 from gitutil
    assert commit_oid(tree, "Import acme/tiny") == expected
    assert commit_oid(tree, "Import acme/other") != expected
    assert commit_oid(tree, "Import acme/tiny", timestamp=1) != expected
