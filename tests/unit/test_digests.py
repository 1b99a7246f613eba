from __future__ import annotations

import hashlib

import pytest

from mirror.digests import Digests, Hasher, check
from mirror.errors import DigestMismatchError
from registry.gitobjects import blob_oid

DATA = bytes(range(256)) * 1000


def test_hasher_digests_match_hashlib_and_git() -> None:
    h = Hasher(len(DATA))
    h.update(DATA)
    d = h.finish()
    assert d == Digests(len(DATA), hashlib.sha256(DATA).hexdigest(), blob_oid(DATA))


def test_hasher_chunking_does_not_matter() -> None:
    h = Hasher(len(DATA))
    for i in range(0, len(DATA), 4097):
        h.update(memoryview(DATA)[i : i + 4097])
    assert h.size == len(DATA)
    assert h.finish() == Digests(len(DATA), hashlib.sha256(DATA).hexdigest(), blob_oid(DATA))


def test_hasher_empty() -> None:
    d = Hasher(0).finish()
    assert d.size == 0
    assert d.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert d.git_oid == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


@pytest.mark.parametrize("announced", [len(DATA) - 1, len(DATA) + 1, 0])
def test_hasher_size_mismatch(announced: int) -> None:
    h = Hasher(announced)
    h.update(DATA)
    with pytest.raises(DigestMismatchError, match="size mismatch"):
        h.finish()


def test_check() -> None:
    d = Digests(3, hashlib.sha256(b"abc").hexdigest(), blob_oid(b"abc"))
    check(d)  # nothing expected
    check(d, sha256=d.sha256, git_oid=d.git_oid)
    with pytest.raises(DigestMismatchError, match="sha256 mismatch for weights.bin"):
        check(d, sha256="0" * 64, what="weights.bin")
    with pytest.raises(DigestMismatchError, match="git blob id mismatch"):
        check(d, git_oid="0" * 40)
    with pytest.raises(DigestMismatchError, match="sha256"):  # the first differing digest is named
        check(d, sha256="0" * 64, git_oid="0" * 40)
