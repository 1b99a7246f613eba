from __future__ import annotations

import pytest

from api.hub.paths import FileTarget, RepoCall, parse_repo_api, parse_resolve, split_raw
from registry.errors import InvalidInputError, RepoNotFoundError
from registry.types import RepoRef, RepoType

M, D = RepoType.MODEL, RepoType.DATASET


# -- /{repo}/resolve/{rev}/{path} ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"/gpt2/resolve/main/config.json", FileTarget(RepoRef(M, "gpt2"), "main", "config.json")),
        (b"/acme/tiny/resolve/main/config.json", FileTarget(RepoRef(M, "acme/tiny"), "main", "config.json")),
        (b"/acme/tiny/resolve/main/a/b/c.bin", FileTarget(RepoRef(M, "acme/tiny"), "main", "a/b/c.bin")),
        (b"/datasets/acme/data/resolve/v1.0/train.parquet",
         FileTarget(RepoRef(D, "acme/data"), "v1.0", "train.parquet")),
        (b"/datasets/squad/resolve/main/x.json", FileTarget(RepoRef(D, "squad"), "main", "x.json")),
        (b"/models/acme/tiny/resolve/main/x", FileTarget(RepoRef(M, "acme/tiny"), "main", "x")),
        (b"/acme/tiny/resolve/refs%2Fpr%2F1/config.json",
         FileTarget(RepoRef(M, "acme/tiny"), "refs/pr/1", "config.json")),
        (b"/acme/tiny/resolve/" + b"a" * 40 + b"/config.json", FileTarget(RepoRef(M, "acme/tiny"), "a" * 40, "config.json")),
        (b"/acme/tiny/resolve/main/sub%2Ffile.txt", FileTarget(RepoRef(M, "acme/tiny"), "main", "sub/file.txt")),
        (b"/acme/tiny/resolve/main/with%20space%20%C3%A9.txt",
         FileTarget(RepoRef(M, "acme/tiny"), "main", "with space é.txt")),
        (b"/acme/tiny/resolve/main/config.json?download=true",
         FileTarget(RepoRef(M, "acme/tiny"), "main", "config.json")),
        (b"/acme/tiny/resolve/main/resolve/x", FileTarget(RepoRef(M, "acme/tiny"), "main", "resolve/x")),
        (b"/acme/resolve/resolve/main/x", FileTarget(RepoRef(M, "acme/resolve"), "main", "x")),  # org/name wins
    ],
)
def test_parse_resolve(url: bytes, expected: FileTarget) -> None:
    assert parse_resolve(url) == expected


@pytest.mark.parametrize(
    "url",
    [b"/", b"/healthz", b"/acme/tiny", b"/acme/tiny/resolve", b"/acme/tiny/resolve/main",
     b"/acme/tiny/blob/main/config.json", b"/a/b/c/resolve/main/x"],
)
def test_parse_resolve_not_a_resolve_url(url: bytes) -> None:
    assert parse_resolve(url) is None


@pytest.mark.parametrize(
    "url",
    [
        b"/acme/tiny/resolve/main/../../etc/passwd",
        b"/acme/tiny/resolve/main/%2E%2E/secret",
        b"/acme/tiny/resolve/main/sub/%2e%2e/%2e%2e/x",
        b"/acme/tiny/resolve/main/a%2F..%2F..%2Fx",
        b"/acme/tiny/resolve/main/a%5Cb",
        b"/acme/tiny/resolve/main/a%00b",
        b"/acme/tiny/resolve/main/a//b",
        b"/acme/tiny/resolve/main/%2Fetc%2Fpasswd",
        b"/acme/tiny/resolve/main/x%FF",  # not UTF-8
        b"/acme/tiny/resolve/..%2F..%2Fx/config.json",
    ],
)
def test_parse_resolve_refuses_traversal_and_bad_input(url: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_resolve(url)


@pytest.mark.parametrize("url", [b"/acme/tiny/resolve/main%0A/config.json", b"/acme/tiny%0A/resolve/main/config.json"])
def test_parse_resolve_refuses_encoded_trailing_newline(url: bytes) -> None:
    with pytest.raises((InvalidInputError, RepoNotFoundError)):
        parse_resolve(url)


@pytest.mark.parametrize(
    "url",
    [b"/a--b/resolve/main/x", b"/%2E%2E/resolve/main/x", b"/acme/..%2Fx/resolve/main/y", b"/acme/x.git/resolve/main/y"],
)
def test_parse_resolve_bad_repo_is_repo_not_found(url: bytes) -> None:
    with pytest.raises(RepoNotFoundError):
        parse_resolve(url)


def test_parse_resolve_spaces_are_not_mirrored() -> None:
    with pytest.raises(RepoNotFoundError):
        parse_resolve(b"/spaces/acme/app/resolve/main/app.py")


def test_split_raw_limits() -> None:
    assert split_raw(b"/a/b%2Fc?x=1") == ["a", "b%2Fc"]
    with pytest.raises(InvalidInputError):
        split_raw(b"/" + b"a" * 9000)
    with pytest.raises(InvalidInputError):
        split_raw("/é".encode())


# -- /api/{type}s/{repo}/... ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo_type", "segs", "expected"),
    [
        (M, ["gpt2"], RepoCall(RepoRef(M, "gpt2"), None, None, "")),
        (M, ["acme", "tiny"], RepoCall(RepoRef(M, "acme/tiny"), None, None, "")),
        (D, ["acme", "data"], RepoCall(RepoRef(D, "acme/data"), None, None, "")),
        (M, ["acme", "tiny", "revision", "main"], RepoCall(RepoRef(M, "acme/tiny"), "revision", "main", "")),
        (M, ["gpt2", "revision", "main"], RepoCall(RepoRef(M, "gpt2"), "revision", "main", "")),
        (M, ["acme", "tiny", "revision", "refs%2Fpr%2F1"], RepoCall(RepoRef(M, "acme/tiny"), "revision", "refs/pr/1", "")),
        (M, ["acme", "tiny", "tree", "main"], RepoCall(RepoRef(M, "acme/tiny"), "tree", "main", "")),
        (M, ["gpt2", "tree", "main"], RepoCall(RepoRef(M, "gpt2"), "tree", "main", "")),
        (M, ["acme", "tiny", "tree", "main", "sub", "dir"], RepoCall(RepoRef(M, "acme/tiny"), "tree", "main", "sub/dir")),
        (M, ["acme", "tiny", "tree", "main", "sub%2Fdir"], RepoCall(RepoRef(M, "acme/tiny"), "tree", "main", "sub/dir")),
        (M, ["acme", "tiny", "tree", "main", ""], RepoCall(RepoRef(M, "acme/tiny"), "tree", "main", "")),
        (M, ["acme", "tiny", "tree", "main", "%C3%A9t%C3%A9"], RepoCall(RepoRef(M, "acme/tiny"), "tree", "main", "été")),
        (M, ["acme", "tiny", "paths-info", "main"], RepoCall(RepoRef(M, "acme/tiny"), "paths-info", "main", "")),
        (M, ["acme", "tiny", "commits", "main"], RepoCall(RepoRef(M, "acme/tiny"), "commits", "main", "")),
        (M, ["acme", "tiny", "refs"], RepoCall(RepoRef(M, "acme/tiny"), "refs", None, "")),
        (M, ["acme", "tree"], RepoCall(RepoRef(M, "acme/tree"), None, None, "")),  # a repo may be named like an action
    ],
)
def test_parse_repo_api(repo_type: RepoType, segs: list[str], expected: RepoCall) -> None:
    assert parse_repo_api(repo_type, segs) == expected


@pytest.mark.parametrize(
    "segs",
    [
        ["acme", "tiny", "tree", "main", "..", "x"],
        ["acme", "tiny", "tree", "main", "%2E%2E"],
        ["acme", "tiny", "tree", "main", "a%5Cb"],
        ["acme", "tiny", "tree", "..%2F..%2Fx"],
        ["acme", "tiny", "revision"],
        ["acme", "tiny", "revision", ""],
        ["acme", "tiny", "revision", "main", "extra"],
        ["acme", "tiny", "commits", "main", "x"],
        ["acme", "tiny", "revision", "a..b"],
    ],
)
def test_parse_repo_api_invalid_input(segs: list[str]) -> None:
    with pytest.raises(InvalidInputError):
        parse_repo_api(M, segs)


@pytest.mark.parametrize(
    "segs",
    [[], ["acme", "tiny", "bogus"], ["acme", "tiny", "refs", "x"], ["a--b"], ["acme", "x.git"], ["%2E%2E"],
     ["acme", "tiny", "extra", "tree", "main"]],
)
def test_parse_repo_api_not_found(segs: list[str]) -> None:
    with pytest.raises(RepoNotFoundError):
        parse_repo_api(M, segs)
