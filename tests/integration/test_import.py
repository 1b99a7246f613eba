"""``hubgate import`` (the CLI) end to end: what it prints, re-imports, and folders with sub-folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from helpers.content import fixture_repo, hub_etag, safetensors_bytes, write_tree
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
        "model.safetensors": safetensors_bytes(2048, 39),
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


def test_serve_with_several_workers_on_a_fresh_data_dir(tmp_path: Path) -> None:
    """`HUBGATE_WORKERS=2 hubgate serve` on an empty data dir: the DB is migrated and the instance's
    keys are created once before the workers start, and every worker signs with that one key."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from mirror import signing

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | {
        "HUBGATE_DATA_DIR": str(data), "HUBGATE_WORKERS": "2", "HUBGATE_PORT": str(port),
        "HUBGATE_UPSTREAM_URL": "", "HUBGATE_LOG_LEVEL": "warning"}
    hubgate = Path(sys.executable).with_name("hubgate")
    proc = subprocess.Popen([str(hubgate), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        key = signing.load_private_key(data / "signing-key.pem")
        assert (data / "secret.key").stat().st_mode & 0o777 == 0o600
        repo = fixture_repo("w", "model", "acme/workers", write_tree(tmp_path / "w", {"config.json": b"{}\n"}))
        commit, _ = cli_import(settings_environ("local", data), repo)
        for _ in range(6):  # several requests, so that both workers answer
            info = httpx.get(f"http://127.0.0.1:{port}/api/models/acme/workers", timeout=10)
            assert info.status_code == 200 and info.json()["sha"] == commit
        # the key every worker loaded is the one on disk: nobody rewrote it after the first start
        assert signing.Signer(signing.load_private_key(data / "signing-key.pem")).key_id == signing.Signer(key).key_id
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
