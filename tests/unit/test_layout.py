from __future__ import annotations

import pytest

from mirror.storage import layout
from registry.errors import InvalidInputError
from registry.types import RepoRef, RepoType

SHA = "ab" + "cd" + "e" * 60


def test_blob_key_fans_out() -> None:
    assert layout.blob_key(SHA) == f"blobs/sha256/ab/cd/{SHA}"
    assert layout.digest_from_blob_key(layout.blob_key(SHA)) == SHA
    with pytest.raises(InvalidInputError):
        layout.blob_key("../" + "0" * 61)


@pytest.mark.parametrize(
    "key",
    [f"blobs/sha256/00/cd/{SHA}", f"blobs/sha256/ab/00/{SHA}", "blobs/sha256/ab/cd/short", f"uploads/{SHA}",
     f"blobs/sha256/{SHA}", f"blobs/sha256/ab/cd/{SHA}.tmp"],
)
def test_not_blob_keys(key: str) -> None:
    assert layout.digest_from_blob_key(key) is None


@pytest.mark.parametrize(
    "repo", [RepoRef(RepoType.MODEL, "acme/tiny"), RepoRef(RepoType.DATASET, "squad"), RepoRef(RepoType.MODEL, "a.b/c_d")]
)
def test_manifest_key_round_trip(repo: RepoRef) -> None:
    key = layout.manifest_key(repo, "1" * 40)
    assert key == f"manifests/{repo.storage_name}/{'1' * 40}.json"
    assert layout.parse_manifest_key(key) == (repo, "1" * 40)


def test_manifest_key_refuses_non_commits() -> None:
    with pytest.raises(InvalidInputError):
        layout.manifest_key(RepoRef(RepoType.MODEL, "acme/tiny"), "main")
    assert layout.parse_manifest_key("manifests/models--acme--tiny/main.json") is None
    assert layout.parse_manifest_key("manifests/spaces--acme--tiny/" + "1" * 40 + ".json") is None


def test_signature_provenance_and_quarantine_keys() -> None:
    repo = RepoRef(RepoType.MODEL, "acme/tiny")
    assert layout.signature_key(repo, "1" * 40) == f"manifests/models--acme--tiny/{'1' * 40}.json.sig"
    assert layout.provenance_key(repo, "1" * 40) == f"manifests/models--acme--tiny/{'1' * 40}.provenance.json"
    assert layout.parse_manifest_key(layout.signature_key(repo, "1" * 40)) is None
    assert layout.parse_manifest_key(layout.provenance_key(repo, "1" * 40)) is None
    assert layout.quarantine_key(SHA) == f"quarantine/sha256/{SHA}"
    with pytest.raises(InvalidInputError):
        layout.provenance_key(repo, "main")


@pytest.mark.parametrize("name", ["refs/heads/main", "refs/tags/v1.0", "refs/pr/1", "refs/convert/parquet"])
def test_ref_key_round_trip(name: str) -> None:
    repo = RepoRef(RepoType.DATASET, "acme/d")
    assert layout.parse_ref_key(layout.ref_key(repo, name)) == (repo, name)


@pytest.mark.parametrize("key", ["refs/models--acme--tiny", "refs/spaces--acme--x/main", "manifests/models--a--b/x",
                                 "refs/modelsacme/main"])
def test_not_ref_keys(key: str) -> None:
    assert layout.parse_ref_key(key) is None


def test_ref_and_upload_keys() -> None:
    assert layout.ref_key(RepoRef(RepoType.DATASET, "acme/d"), "main") == "refs/datasets--acme--d/main"
    a, b = layout.upload_key(), layout.upload_key()
    assert a != b and a.startswith(layout.UPLOADS_PREFIX) and b.startswith(layout.UPLOADS_PREFIX)
