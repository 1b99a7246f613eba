"""hf_hub_download / snapshot_download against every hubgate flavour: bytes, request counts, cache layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, snapshot_download

from helpers.content import hub_etag, is_lfs
from helpers.hubgate import HubgateServer

pytestmark = pytest.mark.integration


def resolve_url(repo_prefix: str, rev: str, path: str) -> str:
    return f"{repo_prefix}/resolve/{rev}/{path}"


@pytest.mark.parametrize("filename", ["config.json", "model.safetensors"])
def test_download_by_main_then_warm_cache_costs_one_head_by_main_and_nothing_by_sha(
    hub: HubgateServer, hf_cache: Path, filename: str
) -> None:
    repo, sha = hub.repos["tiny"], hub.commits["tiny"]
    url = resolve_url("/acme/tiny", "main", filename)
    with hub.recording() as cold:
        path = hf_hub_download("acme/tiny", filename, cache_dir=hf_cache, endpoint=hub.base_url)
    assert Path(path).read_bytes() == repo.files[filename]
    assert Path(path).parent.name == sha
    if is_lfs(filename) and hub.flavour == "s3-redirect":
        # hubgate answers the HEAD with a 302 to S3; the bytes never pass through hubgate
        assert cold.calls == [("HEAD", url)]
        assert cold.records[0].status == 302
    else:
        assert cold.calls == [("HEAD", url), ("GET", url)]
        assert [r.status for r in cold.records] == [200, 200]

    with hub.recording() as warm_main:
        again = hf_hub_download("acme/tiny", filename, cache_dir=hf_cache, endpoint=hub.base_url)
    assert again == path
    assert warm_main.calls == [("HEAD", url)]

    with hub.recording() as warm_sha:
        by_sha = hf_hub_download("acme/tiny", filename, revision=sha, cache_dir=hf_cache, endpoint=hub.base_url)
    assert by_sha == path
    assert warm_sha.calls == []


def test_download_by_sha_cold_then_warm(hub: HubgateServer, hf_cache: Path) -> None:
    repo, sha = hub.repos["tiny"], hub.commits["tiny"]
    with hub.recording() as cold:
        path = hf_hub_download("acme/tiny", "tokenizer.json", revision=sha, cache_dir=hf_cache, endpoint=hub.base_url)
    assert Path(path).read_bytes() == repo.files["tokenizer.json"]
    assert Path(path).parent.name == sha
    url = resolve_url("/acme/tiny", sha, "tokenizer.json")
    assert cold.calls == [("HEAD", url), ("GET", url)]
    # a sha revision is immutable: hubgate says so
    assert "immutable" in (cold.records[0].header("cache-control") or "")
    with hub.recording() as warm:
        assert hf_hub_download("acme/tiny", "tokenizer.json", revision=sha, cache_dir=hf_cache,
                               endpoint=hub.base_url) == path
    assert warm.calls == []


def test_tag_and_pull_request_revisions(hub: HubgateServer, hf_cache: Path) -> None:
    by_tag = hf_hub_download("acme/tiny", "README.md", revision="v1.0", cache_dir=hf_cache, endpoint=hub.base_url)
    assert Path(by_tag).parent.name == hub.commits["tiny"]
    assert Path(by_tag).read_bytes() == hub.repos["tiny"].files["README.md"]

    with hub.recording() as log:
        by_pr = hf_hub_download("acme/tiny", "README.md", revision="refs/pr/1", cache_dir=hf_cache,
                                endpoint=hub.base_url)
    assert log.calls[0] == ("HEAD", "/acme/tiny/resolve/refs%2Fpr%2F1/README.md")
    assert Path(by_pr).parent.name == hub.commits["tiny-pr"] != hub.commits["tiny"]
    assert Path(by_pr).read_bytes() == hub.repos["tiny-pr"].files["README.md"]
    assert Path(by_pr).read_bytes() != Path(by_tag).read_bytes()
    assert (hf_cache / "models--acme--tiny" / "refs" / "refs" / "pr" / "1").read_text() == hub.commits["tiny-pr"]


def _assert_cache_matches_source(hf_cache: Path, storage_name: str, sha: str, files: dict[str, bytes],
                                 snapshot: Path) -> None:
    """Blobs named by the Hub's etag (git blob sha1, sha256 for LFS), snapshot links to them, same bytes."""
    repo_cache = hf_cache / storage_name
    assert snapshot == repo_cache / "snapshots" / sha
    assert (repo_cache / "refs" / "main").read_text() == sha
    expected_blobs = {hub_etag(p, d) for p, d in files.items()}
    assert {b.name for b in (repo_cache / "blobs").iterdir()} == expected_blobs
    linked = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if not p.is_dir())
    assert linked == sorted(files)
    for rel, data in files.items():
        link = snapshot / rel
        assert link.is_symlink()
        blob = Path(os.path.realpath(link))
        assert blob.parent == (repo_cache / "blobs").resolve()
        assert blob.name == hub_etag(rel, data), rel
        assert blob.read_bytes() == data, rel


@pytest.mark.parametrize("key", ["tiny", "tree", "parquet"])
def test_snapshot_cache_names_blobs_by_hub_etag_with_source_bytes(
    hub: HubgateServer, hf_cache: Path, key: str
) -> None:
    repo, sha = hub.repos[key], hub.commits[key]
    folder = snapshot_download(repo.repo_id, repo_type=repo.repo_type, cache_dir=hf_cache, endpoint=hub.base_url)
    storage = f"{repo.repo_type}s--{repo.repo_id.replace('/', '--')}"
    _assert_cache_matches_source(hf_cache, storage, sha, repo.files, Path(folder))


def test_snapshot_allow_and_ignore_patterns(hub: HubgateServer, hf_cache: Path) -> None:
    repo, sha = hub.repos["tiny"], hub.commits["tiny"]
    with hub.recording() as log:
        folder = Path(snapshot_download("acme/tiny", allow_patterns=["*.json"], cache_dir=hf_cache,
                                        endpoint=hub.base_url))
    assert folder.name == sha
    json_files = sorted(p for p in repo.files if p.endswith(".json"))
    assert len(json_files) >= 3
    assert sorted(p.name for p in folder.iterdir()) == json_files
    for p in json_files:
        assert (folder / p).read_bytes() == repo.files[p]
    # the listing went through hubgate's paginated tree (6 files, pages of 3: two requests, the
    # first with an absolute Link to the second)
    tree_calls = [r for r in log.records if r.path == f"/api/models/acme/tiny/tree/{sha}"]
    assert len(repo.files) == 6 and len(tree_calls) == 2
    assert "cursor=" not in tree_calls[0].query and "cursor=" in tree_calls[1].query
    assert (tree_calls[0].header("link") or "").startswith(f"<{hub.base_url}/api/models/acme/tiny/tree/{sha}?")
    assert tree_calls[1].header("link") is None
    downloaded = {r.path.rsplit("/", 1)[-1] for r in log.records if r.method == "GET" and "/resolve/" in r.path}
    assert downloaded == set(json_files)

    other = hf_cache / "other"
    folder2 = Path(snapshot_download("acme/tiny", ignore_patterns=["*.safetensors", "*.md"], cache_dir=other,
                                     endpoint=hub.base_url))
    kept = sorted(p for p in repo.files if not p.endswith((".safetensors", ".md")))
    assert sorted(p.name for p in folder2.iterdir()) == kept
    for p in kept:
        assert (folder2 / p).read_bytes() == repo.files[p]

    # nested patterns on a repo with folders
    folder3 = Path(snapshot_download("acme/tree", allow_patterns=["sub/*"], ignore_patterns=["*.bin"],
                                     cache_dir=other, endpoint=hub.base_url))
    got = sorted(p.relative_to(folder3).as_posix() for p in folder3.rglob("*") if not p.is_dir())
    assert got == ["sub/x.txt", "sub/y.json"]


def test_second_snapshot_download_costs_one_request(hub: HubgateServer, hf_cache: Path) -> None:
    first = snapshot_download("acme/tree", cache_dir=hf_cache, endpoint=hub.base_url)
    with hub.recording() as log:
        second = snapshot_download("acme/tree", cache_dir=hf_cache, endpoint=hub.base_url)
    assert second == first
    assert log.calls == [("GET", "/api/models/acme/tree/revision/main")]


def test_datasets_prefix(hub: HubgateServer, hf_cache: Path) -> None:
    repo, sha = hub.repos["csv"], hub.commits["csv"]
    with hub.recording() as log:
        path = hf_hub_download("acme/csv-data", "cities.csv", repo_type="dataset", cache_dir=hf_cache,
                               endpoint=hub.base_url)
    assert Path(path).read_bytes() == repo.files["cities.csv"]
    assert Path(path).parent.name == sha
    assert log.calls == [("HEAD", "/datasets/acme/csv-data/resolve/main/cities.csv"),
                         ("GET", "/datasets/acme/csv-data/resolve/main/cities.csv")]
    assert "datasets--acme--csv-data" in path
