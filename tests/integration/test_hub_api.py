"""The /api endpoints through huggingface_hub's HfApi, against every flavour."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile, RepoFolder

from helpers.content import git_blob_sha1, git_tree_ids, is_lfs, sha256, tree_oid
from helpers.hubgate import HubgateServer

pytestmark = pytest.mark.integration

PAGE = 3  # tree_page_size of the test servers

@pytest.fixture
def api(hub: HubgateServer) -> HfApi:
    return HfApi(endpoint=hub.base_url, token=False)


def test_model_info(hub: HubgateServer, api: HfApi) -> None:
    repo, sha = hub.repos["tiny"], hub.commits["tiny"]
    info = api.model_info("acme/tiny")
    assert info.id == "acme/tiny"
    assert info.sha == sha
    assert sorted(s.rfilename for s in info.siblings) == sorted(repo.files)
    assert info.pipeline_tag == "text-generation"
    assert info.library_name == "transformers"
    assert {"tiny", "hubgate-test"} <= set(info.tags)
    assert info.card_data is not None
    assert info.card_data["license"] == "mit"
    assert info.card_data["tags"] == ["tiny", "hubgate-test"]
    assert info.last_modified is not None and info.created_at is not None

    pr = api.model_info("acme/tiny", revision="refs/pr/1")
    assert pr.sha == hub.commits["tiny-pr"] != sha
    assert api.model_info("acme/tiny", revision="v1.0").sha == sha
    assert api.model_info("acme/tiny", revision=sha).sha == sha


def test_model_info_files_metadata(hub: HubgateServer, api: HfApi) -> None:
    repo = hub.repos["tiny"]
    info = api.model_info("acme/tiny", files_metadata=True)
    assert info.siblings is not None
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == sorted(repo.files)
    for path, data in repo.files.items():
        s = siblings[path]
        assert s.size == len(data), path
        assert s.blob_id == tree_oid(path, data), path
        if is_lfs(path):
            assert s.lfs is not None and s.lfs.sha256 == sha256(data) and s.lfs.size == len(data), path
        else:
            assert s.lfs is None, path
    assert any(s.lfs for s in info.siblings)  # model.safetensors


def test_dataset_info(hub: HubgateServer, api: HfApi) -> None:
    parquet = api.dataset_info("acme/parquet-data", files_metadata=True)
    assert parquet.sha == hub.commits["parquet"]
    assert parquet.card_data is not None and parquet.card_data["license"] == "mit"
    assert {s.rfilename: s.size for s in parquet.siblings} == {p: len(d) for p, d in hub.repos["parquet"].files.items()}
    csv = api.dataset_info("acme/csv-data")
    assert csv.sha == hub.commits["csv"]
    assert [s.rfilename for s in csv.siblings] == ["cities.csv"]


def test_list_repo_files(hub: HubgateServer, api: HfApi) -> None:
    for key in ("tiny", "tree"):
        repo = hub.repos[key]
        assert api.list_repo_files(repo.repo_id) == sorted(repo.files)
    assert api.list_repo_files("acme/parquet-data", repo_type="dataset") == sorted(hub.repos["parquet"].files)
    assert api.list_repo_files("acme/tiny", revision=hub.commits["tiny-pr"]) == sorted(hub.repos["tiny-pr"].files)


def test_tree_pages_of_a_revision_with_a_slash(hub: HubgateServer, api: HfApi) -> None:
    """The client sends ``refs/pr/1`` as ``refs%2Fpr%2F1``; the next-page Link must keep it encoded.

    hubgate bug: api/hub/repos.py paged() builds the Link from the *decoded* request.url.path, so
    page 2 asks for ``/tree/refs/pr/1`` (revision "refs") and gets 404 RevisionNotFound."""
    expected = sorted(hub.repos["tiny-pr"].files)
    assert len(expected) > PAGE
    with hub.recording() as log:
        files = api.list_repo_files("acme/tiny", revision="refs/pr/1")
    assert files == expected
    pages = [r for r in log.records if "/tree/" in r.path]
    assert [r.path for r in pages] == ["/api/models/acme/tiny/tree/refs%2Fpr%2F1"] * 2


def _expected_tree(files: dict[str, bytes], folder: str, recursive: bool) -> list[str]:
    prefix = folder + "/" if folder else ""
    dirs, paths = set(), []
    for p in files:
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):].split("/")
        for i in range(1, len(rest)):
            if recursive or i == 1:
                dirs.add(prefix + "/".join(rest[:i]))
        if recursive or len(rest) == 1:
            paths.append(p)
    return sorted(dirs) + sorted(paths)  # folders first, as the Hub lists them


@pytest.mark.parametrize(("folder", "recursive"), [("", False), ("", True), ("sub", False), ("sub", True)])
def test_list_repo_tree_pages(hub: HubgateServer, api: HfApi, tmp_path: Path, folder: str, recursive: bool) -> None:
    repo = hub.repos["tree"]
    tree_ids = git_tree_ids(repo.files, tmp_path / "git")
    expected = _expected_tree(repo.files, folder, recursive)
    with hub.recording() as log:
        entries = list(api.list_repo_tree("acme/tree", path_in_repo=folder or None, recursive=recursive))
    assert [e.path for e in entries] == expected
    for e in entries:
        if e.path in repo.files:
            data = repo.files[e.path]
            assert isinstance(e, RepoFile)
            assert e.size == len(data)
            assert e.blob_id == tree_oid(e.path, data)
            if is_lfs(e.path):
                assert e.lfs is not None and e.lfs.sha256 == sha256(data) and e.lfs.size == len(data)
            else:
                assert e.lfs is None and e.blob_id == git_blob_sha1(data)
        else:
            assert isinstance(e, RepoFolder)
            assert e.tree_id == tree_ids[e.path]
    # pages of 3, each requested once, the next one by the absolute Link of the previous
    pages = [r for r in log.records if "/tree/" in r.path]
    assert len(pages) == math.ceil(len(expected) / PAGE) >= 1
    assert all(r.status == 200 for r in pages)
    for prev, nxt in zip(pages, pages[1:]):
        # absolute, on hubgate's origin, and followed verbatim by the client
        assert prev.header("link") == f'<{hub.base_url}{nxt.path}?{nxt.query}>; rel="next"'
        assert nxt.path == pages[0].path and "cursor=" in nxt.query
    assert pages[-1].header("link") is None
    if not recursive and not folder:
        assert len(pages) == 3  # 7 entries
    if recursive and not folder:
        assert len(pages) == 4  # 11 entries


def test_list_repo_tree_expand_and_revision(hub: HubgateServer, api: HfApi) -> None:
    sha = hub.commits["tiny-pr"]
    entries = list(api.list_repo_tree("acme/tiny", revision=sha, expand=True))
    assert sorted(e.path for e in entries) == sorted(hub.repos["tiny-pr"].files)
    for e in entries:
        assert isinstance(e, RepoFile)
        assert e.last_commit is not None and e.last_commit.oid == sha


def test_get_paths_info(hub: HubgateServer, api: HfApi, tmp_path: Path) -> None:
    repo = hub.repos["tree"]
    infos = api.get_paths_info("acme/tree", ["a.txt", "d.bin", "sub", "sub/deep/z.bin", "missing.txt", "sub/nope"])
    by_path = {i.path: i for i in infos}
    assert sorted(by_path) == ["a.txt", "d.bin", "sub", "sub/deep/z.bin"]
    for p in ("a.txt", "d.bin", "sub/deep/z.bin"):
        f = by_path[p]
        assert isinstance(f, RepoFile) and f.size == len(repo.files[p]) and f.blob_id == tree_oid(p, repo.files[p])
    assert by_path["d.bin"].lfs is not None and by_path["d.bin"].lfs.sha256 == sha256(repo.files["d.bin"])
    assert by_path["a.txt"].lfs is None
    sub = by_path["sub"]
    assert isinstance(sub, RepoFolder) and sub.tree_id == git_tree_ids(repo.files, tmp_path / "git")["sub"]


def test_exists_helpers(hub: HubgateServer, api: HfApi) -> None:
    sha = hub.commits["tiny"]
    assert api.repo_exists("acme/tiny") is True
    assert api.repo_exists("acme/parquet-data", repo_type="dataset") is True
    assert api.repo_exists("acme/missing") is False
    assert api.repo_exists("acme/tiny", repo_type="dataset") is False  # a model is not a dataset
    assert api.file_exists("acme/tiny", "config.json") is True
    assert api.file_exists("acme/tree", "sub/deep/z.bin") is True
    assert api.file_exists("acme/parquet-data", "data/train-00000-of-00001.parquet", repo_type="dataset") is True
    assert api.file_exists("acme/tiny", "nope.json") is False
    assert api.file_exists("acme/tiny", "config.json", revision="no-such-branch") is False
    assert api.file_exists("acme/missing", "config.json") is False
    for rev in ("main", "v1.0", "refs/pr/1", sha):
        assert api.revision_exists("acme/tiny", rev) is True, rev
    assert api.revision_exists("acme/tiny", "no-such-branch") is False
    assert api.revision_exists("acme/tiny", "0" * 40) is False


def test_list_repo_refs(hub: HubgateServer, api: HfApi) -> None:
    sha, pr_sha = hub.commits["tiny"], hub.commits["tiny-pr"]
    refs = api.list_repo_refs("acme/tiny")
    assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [("main", "refs/heads/main", sha)]
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0", "refs/tags/v1.0", sha)]
    assert refs.converts == []
    assert not refs.pull_requests
    with_prs = api.list_repo_refs("acme/tiny", include_pull_requests=True)
    assert [(p.name, p.ref, p.target_commit) for p in with_prs.pull_requests or []] == [
        ("refs/pr/1", "refs/pr/1", pr_sha)
    ]
    data_refs = api.list_repo_refs("acme/csv-data", repo_type="dataset")
    assert [(b.name, b.target_commit) for b in data_refs.branches] == [("main", hub.commits["csv"])]


def test_list_repo_commits(hub: HubgateServer, api: HfApi) -> None:
    commits = api.list_repo_commits("acme/tiny")
    assert commits and commits[0].commit_id == hub.commits["tiny"]
    assert commits[0].created_at is not None and commits[0].title
    pr = api.list_repo_commits("acme/tiny", revision="refs/pr/1", formatted=True)
    assert pr[0].commit_id == hub.commits["tiny-pr"]
    assert pr[0].formatted_title is not None
    assert api.list_repo_commits("acme/parquet-data", repo_type="dataset")[0].commit_id == hub.commits["parquet"]


def test_list_models(hub: HubgateServer, api: HfApi) -> None:
    def ids(**kwargs: object) -> list[str]:
        return sorted(m.id for m in api.list_models(**kwargs))  # type: ignore[arg-type]

    with hub.recording() as log:
        everything = list(api.list_models())
    assert sorted(m.id for m in everything) == ["acme/tiny", "acme/tree", "beta/tiny-notes"]
    assert len([r for r in log.records if r.path == "/api/models"]) == 2  # list_page_size=2: two pages
    assert {m.id: m.sha for m in everything}["acme/tiny"] == hub.commits["tiny"]  # main, not the PR

    assert ids(search="tiny") == ["acme/tiny", "beta/tiny-notes"]
    assert ids(author="acme") == ["acme/tiny", "acme/tree"]
    assert ids(author="beta") == ["beta/tiny-notes"]
    assert ids(search="tiny", author="acme") == ["acme/tiny"]
    assert ids(filter="text-generation") == ["acme/tiny"]
    assert ids(filter="tiny") == ["acme/tiny", "beta/tiny-notes"]
    assert ids(filter=["tiny", "hubgate-test"]) == ["acme/tiny"]
    assert ids(filter="license:apache-2.0") == ["acme/tree", "beta/tiny-notes"]
    assert ids(search="nothing-like-this") == []
    with hub.recording() as log:
        limited = list(api.list_models(author="acme", limit=1))
    assert len(limited) == 1 and limited[0].id in ("acme/tiny", "acme/tree")
    assert "limit=1" in log.records[0].query
    assert len(log.records) == 1


def test_list_datasets(hub: HubgateServer, api: HfApi) -> None:
    assert sorted(d.id for d in api.list_datasets()) == ["acme/csv-data", "acme/parquet-data"]
    assert [d.id for d in api.list_datasets(search="csv")] == ["acme/csv-data"]
    assert [d.id for d in api.list_datasets(author="beta")] == []
