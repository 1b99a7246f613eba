"""Pinning: clients asking for ``main`` get the approved commit whatever upstream ``main`` is today;
a new request for ``main`` shows what approving it would change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RevisionNotFoundError

from fakes.fake_hub import FakeHub
from helpers.content import safetensors_bytes

from .conftest import Hubgate, card, model_files, unique_repo

pytestmark = pytest.mark.integration


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_main_stays_on_the_approved_commit_and_a_new_request_shows_the_changes(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes], tmp_path: Path) -> None:
    repo = unique_repo("pinned")
    a_files = model_files(tiny_files, extra={"notes/old.txt": b"old notes\n"})
    a = fake_hub.create_repo(repo, a_files)
    assert hubgate.approve_and_sync(hubgate.request(repo)["id"])["state"] == "available"

    config = json.loads(a_files["config.json"])
    config["n_positions"] = 128
    b = fake_hub.commit(repo, {
        "README.md": card("apache-2.0"), "config.json": json.dumps(config).encode(),
        "model.safetensors": safetensors_bytes(len(a_files["model.safetensors"]), 36),
        "notes/old.txt": None, "notes/new.txt": b"new notes\n",
    }, message="v2")
    assert fake_hub.repo(repo).main.sha == b.sha != a.sha

    # hubgate still serves A for main.
    head = hubgate.client.head(f"/{repo}/resolve/main/config.json")
    assert head.headers["x-repo-commit"] == a.sha
    api = HfApi(endpoint=hubgate.url, token=False)
    assert api.model_info(repo).sha == a.sha
    folder = Path(snapshot_download(repo, endpoint=hubgate.url, cache_dir=tmp_path / "c1", token=False))
    assert folder.name == a.sha and _tree(folder) == a_files

    # A new request for main resolves to B and shows what would change, before anyone approves it.
    doc = hubgate.request(repo)
    assert (doc["commit"], doc["state"]) == (b.sha, "pending")
    assert doc["changes"] == {
        "from_commit": a.sha,
        "added": ["notes/new.txt"],
        "removed": ["notes/old.txt"],
        "changed": ["README.md", "config.json", "model.safetensors"],
        "license": {"from": "mit", "to": "apache-2.0"},
    }
    assert hubgate.get_request(doc["id"])["changes"] == doc["changes"]
    assert hubgate.client.head(f"/{repo}/resolve/main/config.json").headers["x-repo-commit"] == a.sha
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "config.json", revision=b.sha, endpoint=hubgate.url, cache_dir=tmp_path / "c2",
                        token=False)
    # A request by sha changes no ref: nothing to show.
    assert hubgate.request(repo, b.sha)["changes"] is None

    # Approved and synced: main moves to B, A stays reachable by its sha.
    mark = fake_hub.log.mark()
    assert hubgate.approve_and_sync(doc["id"])["state"] == "available"
    fetched = {e.sha256 for e in fake_hub.log.since(mark) if e.is_content_get}
    assert fetched == {b.files[p].sha256 for p in ("README.md", "config.json", "model.safetensors", "notes/new.txt")}
    folder = Path(snapshot_download(repo, endpoint=hubgate.url, cache_dir=tmp_path / "c3", token=False))
    assert folder.name == b.sha and _tree(folder) == {p: f.read_bytes() for p, f in b.files.items()}
    old = hf_hub_download(repo, "notes/old.txt", revision=a.sha, endpoint=hubgate.url, cache_dir=tmp_path / "c3",
                          token=False)
    assert Path(old).read_bytes() == b"old notes\n"

    # Nothing changed upstream since: a new request says so.
    same = hubgate.request(repo)
    assert same["changes"] == {"from_commit": b.sha, "added": [], "removed": [], "changed": [], "license": None}
