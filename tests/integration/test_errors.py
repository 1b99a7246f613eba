"""The exception classes huggingface_hub raises for hubgate's errors (X-Error-Code mapping)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from helpers.hubgate import HubgateServer

pytestmark = pytest.mark.integration


def test_missing_repo(hub: HubgateServer, hf_cache: Path) -> None:
    api = HfApi(endpoint=hub.base_url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/missing", "config.json", cache_dir=hf_cache, endpoint=hub.base_url)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("acme/missing", cache_dir=hf_cache, endpoint=hub.base_url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/missing")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("acme/tiny")  # a model, asked for as a dataset
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/tiny", "config.json", repo_type="dataset", cache_dir=hf_cache, endpoint=hub.base_url)
    with pytest.raises(RepositoryNotFoundError):
        list(api.list_repo_tree("acme/missing"))


def test_missing_revision(hub: HubgateServer, hf_cache: Path) -> None:
    api = HfApi(endpoint=hub.base_url, token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/tiny", "config.json", revision="no-such-branch", cache_dir=hf_cache,
                        endpoint=hub.base_url)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/tiny", "config.json", revision="0" * 40, cache_dir=hf_cache, endpoint=hub.base_url)
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download("acme/tiny", revision="no-such-branch", cache_dir=hf_cache, endpoint=hub.base_url)
    with pytest.raises(RevisionNotFoundError):
        list(api.list_repo_tree("acme/tiny", revision="no-such-branch"))


def test_missing_file_is_remote_entry_not_found_with_commit(hub: HubgateServer, hf_cache: Path) -> None:
    sha = hub.commits["tiny"]
    with hub.recording() as log:
        with pytest.raises(RemoteEntryNotFoundError) as exc:
            hf_hub_download("acme/tiny", "nope.json", cache_dir=hf_cache, endpoint=hub.base_url)
    assert isinstance(exc.value, EntryNotFoundError)
    assert log.calls == [("HEAD", "/acme/tiny/resolve/main/nope.json")]
    head = log.records[0]
    assert head.status == 404
    assert head.header("x-error-code") == "EntryNotFound"
    assert head.header("x-repo-commit") == sha
    # ... which lets the client cache the miss
    assert (hf_cache / "models--acme--tiny" / ".no_exist" / sha / "nope.json").exists()
    assert (hf_cache / "models--acme--tiny" / "refs" / "main").read_text() == sha

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("acme/tree", "sub/nope.txt", cache_dir=hf_cache, endpoint=hub.base_url)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("acme/parquet-data", "data/nope.parquet", repo_type="dataset", cache_dir=hf_cache,
                        endpoint=hub.base_url)


def test_missing_tree_folder_is_entry_not_found_never_repo_not_found(hub: HubgateServer) -> None:
    api = HfApi(endpoint=hub.base_url, token=False)
    with hub.recording() as log:
        with pytest.raises(EntryNotFoundError) as exc:
            list(api.list_repo_tree("acme/tiny", path_in_repo="additional_chat_templates"))
    assert not isinstance(exc.value, RepositoryNotFoundError)
    assert log.records[-1].status == 404
    assert log.records[-1].header("x-error-code") == "EntryNotFound"
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("acme/csv-data", path_in_repo="data", repo_type="dataset"))
    with pytest.raises(EntryNotFoundError):  # a file is not a folder
        list(api.list_repo_tree("acme/tree", path_in_repo="a.txt"))
