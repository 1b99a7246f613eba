from __future__ import annotations

import unicodedata

import pytest

from registry.errors import InvalidInputError
from registry.types import (
    RepoRef,
    RepoType,
    is_commit_sha,
    validate_commit,
    validate_path,
    validate_repo_id,
    validate_revision,
    validate_sha256,
)

# -- repo ids ------------------------------------------------------------------------------------

VALID_REPO_IDS = [
    "gpt2",
    "bert-base-uncased",
    "acme/tiny",
    "Org_1/Model.v2-final",
    "a/b",
    "a",
    "x" * 96,
    "o" * 96 + "/" + "n" * 96,
    "org/name.gitx",
    "org/v1.0",
]

INVALID_REPO_IDS = [
    "",
    "a--b",
    "org/a--b",
    "org--x/name",
    "..",
    "org/..",
    "org/a..b",
    "x.git",
    "org/x.git",
    "org/x.",
    "org/x-",
    "x" * 97,
    "org/" + "n" * 97,
    "orgé/name",
    "org/nämé",
    "org/ｆｕｌｌ",
    "/name",
    "org/",
    "org//name",
    "a/b/c",
    ".hidden",
    "org/.hidden",
    "-dash",
    "_under",
    "org/_x",
    "org name",
    "org/na me",
    "org\\name",
    "org/name\x00",
    "org/name%2F",
    "../etc/passwd",
]


@pytest.mark.parametrize("repo_id", VALID_REPO_IDS)
def test_valid_repo_ids(repo_id: str) -> None:
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize("repo_id", INVALID_REPO_IDS)
def test_invalid_repo_ids(repo_id: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_repo_id(repo_id)
    assert "Invalid repo id" in info.value.message


@pytest.mark.parametrize("value", [None, 42, b"gpt2"])
def test_repo_id_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidInputError):
        validate_repo_id(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["gpt2\n", "acme/tiny\n"])
def test_repo_id_with_trailing_newline_is_invalid(value: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_repo_id(value)


def test_repo_ref_parse_and_storage_name() -> None:
    ref = RepoRef.parse("model", "acme/tiny")
    assert ref == RepoRef(RepoType.MODEL, "acme/tiny")
    assert ref.storage_name == "models--acme--tiny"
    assert RepoRef.parse("datasets", "gpt2").storage_name == "datasets--gpt2"
    assert RepoRef.parse(RepoType.DATASET, "org/x").type is RepoType.DATASET
    assert str(ref) == "model:acme/tiny"
    with pytest.raises(InvalidInputError):
        RepoRef.parse("space", "acme/tiny")
    with pytest.raises(InvalidInputError):
        RepoRef.parse("model", "acme--tiny")


def test_repo_type_parse() -> None:
    assert RepoType.parse("model") is RepoType.MODEL
    assert RepoType.parse("models") is RepoType.MODEL
    assert RepoType.parse("dataset") is RepoType.DATASET
    assert RepoType.parse("datasets") is RepoType.DATASET
    assert RepoType.DATASET.plural == "datasets"
    for bad in ("spaces", "Model", "", "modelss"):
        with pytest.raises(InvalidInputError):
            RepoType.parse(bad)


# -- commits and digests -------------------------------------------------------------------------


def test_commit_sha_grammar() -> None:
    assert is_commit_sha("0123456789abcdef0123456789abcdef01234567")
    assert validate_commit("f" * 40) == "f" * 40
    for bad in ("F" * 40, "a" * 39, "a" * 41, "g" * 40, "", " " + "a" * 39):
        assert not is_commit_sha(bad)
        with pytest.raises(InvalidInputError):
            validate_commit(bad)


def test_sha256_grammar() -> None:
    assert validate_sha256("0" * 64) == "0" * 64
    for bad in ("A" * 64, "0" * 63, "0" * 65, "z" * 64, ""):
        with pytest.raises(InvalidInputError):
            validate_sha256(bad)


def test_digests_with_trailing_newline_are_invalid() -> None:
    assert not is_commit_sha("a" * 40 + "\n")
    with pytest.raises(InvalidInputError):
        validate_sha256("0" * 64 + "\n")


# -- revisions -----------------------------------------------------------------------------------

VALID_REVISIONS = [
    "main",
    "v1.0",
    "dev-branch_2",
    "feature/x",
    "refs/pr/1",
    "refs/heads/main",
    "refs/tags/v1.0",
    "refs/convert/parquet",
    "a" * 40,
    "0123456789abcdef0123456789abcdef01234567",
    "x" * 200,
]

INVALID_REVISIONS = [
    "",
    "../x",
    "..",
    "main/../secret",
    "a..b",
    "/main",
    "main/",
    "a//b",
    "main.lock",
    "main.",
    ".",
    "with space",
    "ré",
    "main\\x",
    "main\x00",
    "main:x",
    "main~1",
    "main^",
    "main?",
    "main*",
    "x" * 201,
    "%2e%2e",
]


@pytest.mark.parametrize("revision", VALID_REVISIONS)
def test_valid_revisions(revision: str) -> None:
    assert validate_revision(revision) == revision


@pytest.mark.parametrize("revision", INVALID_REVISIONS)
def test_invalid_revisions(revision: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_revision(revision)


def test_revision_with_trailing_newline_is_invalid() -> None:
    with pytest.raises(InvalidInputError):
        validate_revision("main\n")


# -- paths ---------------------------------------------------------------------------------------

VALID_PATHS = [
    "config.json",
    "a/b/c.txt",
    ".gitattributes",
    "sub/.hidden",
    "..a",
    "a..b/c",
    "a/...",
    "日本語/ファイル.txt",
    "é.txt",  # NFC
    "with space.txt",
    "x" * 255,
    "/".join(["d" * 200] * 5)[:1024],
]

INVALID_PATHS = [
    "",
    "..",
    ".",
    "../etc/passwd",
    "a/../../b",
    "a/./b",
    "a/..",
    "a//b",
    "/abs",
    "/",
    "trailing/",
    "a\\b",
    "..\\windows",
    "nul\x00byte",
    "new\nline",
    "tab\there",
    "esc\x1b[0m",
    "del\x7f",
    "c1\x85control",
    "e\u0301.txt",  # NFD: e + combining acute accent
    "x" * 256,
    "d/" + "é" * 128,  # 256 bytes in one segment
    "/".join(["d" * 250] * 5),  # > 1024 bytes
]


@pytest.mark.parametrize("path", VALID_PATHS)
def test_valid_paths(path: str) -> None:
    assert validate_path(path) == path


@pytest.mark.parametrize("path", INVALID_PATHS)
def test_invalid_paths(path: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_path(path)


def test_path_length_limits_count_utf8_bytes() -> None:
    seg = "é" * 127  # 254 bytes
    assert validate_path(seg + "a") == seg + "a"  # 255 bytes
    with pytest.raises(InvalidInputError, match="255"):
        validate_path(seg + "ab")  # 256 bytes
    exactly = "/".join(["a" * 255] * 4) + "/" + "b" * 4  # 4*255 + 4 + 4 = 1028 > 1024
    with pytest.raises(InvalidInputError, match="1024"):
        validate_path(exactly)
    fits = "/".join(["a" * 255] * 4)  # 1023 bytes
    assert len(fits.encode()) == 1023
    assert validate_path(fits) == fits


def test_nfc_path_accepted_and_nfd_refused() -> None:
    nfc = unicodedata.normalize("NFC", "Café/Ünïcode.txt")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    assert validate_path(nfc) == nfc
    with pytest.raises(InvalidInputError, match="NFC"):
        validate_path(nfd)


@pytest.mark.parametrize("value", [None, 1, b"a.txt"])
def test_path_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidInputError):
        validate_path(value)  # type: ignore[arg-type]
