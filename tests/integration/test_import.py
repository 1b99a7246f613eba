"""``hubgate import`` (the CLI) end to end: what it prints, re-imports, and folders with sub-folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from helpers.content import fixture_repo, hub_etag, write_tree
from helpers.hubgate import HubgateServer, cli_import, settings_environ, start_hubgate

pytestmark = pytest.mark.integration


def test_cli_import_prints_the_commit_that_is_served(hubgate_local: HubgateServer) -> None:
    hub = hubgate_local
    repo, sha = hub.repos["csv"], hub.commits["csv"]
    size = len(repo.files["cities.csv"])
    assert hub.cli_output["csv"].strip() == f"imported: dataset acme/csv-data @ {sha} (1 files, {size} bytes); refs: main"
    assert HfApi(endpoint=hub.base_url, token=False).dataset_info("acme/csv-data").sha == sha
    # the same folder again changes nothing and says so
    again, out = cli_import(settings_environ("local", hub.settings.data_dir), repo)
    assert again == sha
    assert out.startswith(f"already present: dataset acme/csv-data @ {sha} ")


def test_import_of_a_folder_whose_root_files_sort_after_a_subfolder(tmp_path: Path) -> None:
    """A sentence-transformers layout: ``1_Pooling/config.json`` next to ``config.json``.

    os.walk yields the root files before the sub-folder's, but a manifest lists paths sorted
    ("1_Pooling/config.json" < "config.json"); the importer once published in walk order and
    `hubgate import` refused such folders ("files must be sorted by path and unique")."""
    files = {
        "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}\n',
        "README.md": b"---\nlicense: mit\n---\n# st\n",
        "config.json": b'{"model_type": "bert"}\n',
        "modules.json": b"[]\n",
        "model.safetensors": bytes(range(256)) * 8,
    }
    repo = fixture_repo("st", "model", "acme/st-layout", write_tree(tmp_path / "st", files))
    server = start_hubgate("local", tmp_path / "data", [repo], cli_repos=("st",))
    try:
        api = HfApi(endpoint=server.base_url, token=False)
        assert api.list_repo_files("acme/st-layout") == sorted(files)
        for path, data in files.items():
            local = hf_hub_download("acme/st-layout", path, cache_dir=tmp_path / "cache", endpoint=server.base_url)
            assert Path(local).read_bytes() == data
            assert Path(local).resolve().name == hub_etag(path, data)
    finally:
        server.stop()
