"""End to end with the real clients: request -> findings -> approve -> sync -> huggingface_hub and transformers
load it; what is not approved, or failed verification, is invisible; a hubgate can be another one's upstream."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from fakes.fake_hub import FakeHub
from helpers.subproc import client_env, run_script

from .conftest import Hubgate, finding, model_files, small_files, unique_repo, wait_for

pytestmark = pytest.mark.integration


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cache_blobs(cache: Path, repo: str, repo_type: str = "model") -> dict[str, bytes]:
    """The HF cache's blobs (named by ETag: git blob id or sha256) of one repo."""
    blobs = cache / f"{repo_type}s--{repo.replace('/', '--')}" / "blobs"
    return {p.name: p.read_bytes() for p in blobs.iterdir()}


def test_request_approve_sync_then_huggingface_hub_and_transformers_load_it(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], tiny_files: dict[str, bytes], tiny_folder: Path,
        tmp_path: Path) -> None:
    hubgate = make_hubgate(worker_in_process=True)  # create_app starts a sync worker in the server
    repo = unique_repo("e2e")
    files = model_files(tiny_files, license="mit")
    commit = fake_hub.create_repo(repo, files)

    doc = hubgate.request(repo, reason="end to end")
    assert doc["commit"] == commit.sha and doc["verdict"] == "review"
    assert finding(doc, "license.declared")["data"]["license"] == "mit"  # type: ignore[index]
    assert finding(doc, "size")["data"] == {"bytes": sum(map(len, files.values())), "files": len(files)}  # type: ignore[index]
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hubgate.url, token=False).model_info(repo)

    hubgate.approve(doc["id"])
    wait_for(lambda: hubgate.get_request(doc["id"])["state"] in ("available", "failed"), timeout=60, interval=0.2,
             what="the in-process worker to sync")
    assert hubgate.get_request(doc["id"])["state"] == "available"

    folder = Path(snapshot_download(repo, endpoint=hubgate.url, cache_dir=tmp_path / "hf", token=False))
    assert folder.name == commit.sha and _tree(folder) == files
    result = run_script("transformers_client.py", {"repo": repo, "local": str(tiny_folder), "prompt": "hello world"},
                        client_env(hubgate.url, tmp_path / "hf-home"))
    assert result["endpoint"] == hubgate.url
    assert result["hub"]["model_class"] == "GPT2LMHeadModel"
    assert result["hub"]["config"]["n_embd"] == 32 and result["hub"]["config"]["n_layer"] == 1
    assert result["hub"]["weights"] == result["local"]["weights"]
    assert result["hub"]["generated_ids"] == result["local"]["generated_ids"]
    assert result["cache_snapshots"] == [commit.sha]
    assert result["refused_hosts"] == []


def test_pending_approved_and_rejected_repos_are_not_found_to_clients(fake_hub: FakeHub, hubgate: Hubgate,
                                                                       hf_cache: Path) -> None:
    pending, rejected, approved = unique_repo("pending"), unique_repo("rejected"), unique_repo("approved")
    for repo in (pending, rejected, approved):
        fake_hub.create_repo(repo, small_files(80))
    hubgate.request(pending)
    no = hubgate.request(rejected)["id"]
    hubgate.api("POST", f"/requests/{no}/reject", json={"reason": "not needed"})
    hubgate.approve(hubgate.request(approved)["id"])  # approved, not synced yet

    api = HfApi(endpoint=hubgate.url, token=False)
    for repo in (pending, rejected, approved):
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(repo)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo, "data/part-0.txt", endpoint=hubgate.url, cache_dir=hf_cache, token=False)
        with pytest.raises(RepositoryNotFoundError):
            snapshot_download(repo, endpoint=hubgate.url, cache_dir=hf_cache, token=False)
        assert not api.repo_exists(repo)


def test_a_byte_corrupted_in_transit_fails_the_sync_and_nothing_becomes_visible(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes], hf_cache: Path) -> None:
    repo = unique_repo("corrupt")
    a = fake_hub.create_repo(repo, model_files(tiny_files))
    weights = a.files["model.safetensors"]
    pk = hubgate.request(repo)["id"]
    fake_hub.corrupt(weights.sha256)
    try:
        failed = hubgate.approve_and_sync(pk)
    finally:
        fake_hub.corrupt(weights.sha256, on=False)
    assert failed["state"] == "failed"
    assert "sha256 mismatch" in failed["error"] and "model.safetensors" in failed["error"]
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(repo, endpoint=hubgate.url, cache_dir=hf_cache, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo, "config.json", revision=a.sha, endpoint=hubgate.url, cache_dir=hf_cache, token=False)
    assert not hubgate.manifest_exists(repo, a.sha)
    assert not hubgate.svc.store.has(weights.sha256)

    # Retried once the upstream is healthy: available.
    assert hubgate.api("POST", f"/requests/{pk}/retry").status_code == 200
    hubgate.sync()
    assert hubgate.get_request(pk)["state"] == "available"

    # A later commit corrupted in transit: that revision does not exist for clients, main stays on A.
    b = fake_hub.commit(repo, {"config.json": a.bytes_of("config.json").replace(b"}", b', "note": "b"}', 1)})
    fake_hub.corrupt(b.files["config.json"].sha256)
    try:
        failed = hubgate.approve_and_sync(hubgate.request(repo)["id"])
    finally:
        fake_hub.corrupt(b.files["config.json"].sha256, on=False)
    assert failed["state"] == "failed" and "git blob id mismatch" in failed["error"]
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "config.json", revision=b.sha, endpoint=hubgate.url, cache_dir=hf_cache, token=False)
    main = hf_hub_download(repo, "config.json", endpoint=hubgate.url, cache_dir=hf_cache, token=False)
    assert Path(main).read_bytes() == a.bytes_of("config.json")
    assert not hubgate.manifest_exists(repo, b.sha)


def test_tiered_hubgate_syncs_from_another_hubgate_and_serves_identical_files(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], tiny_files: dict[str, bytes], tmp_path: Path) -> None:
    outer = make_hubgate(anonymous_read=False, name="outer")
    model, dataset = unique_repo("tiered"), unique_repo("tiered-data")
    m = fake_hub.create_repo(model, model_files(tiny_files, extra={"sub/dir/deep.txt": b"deep\n"}))
    d = fake_hub.create_repo(dataset, {"README.md": b"---\nlicense: cc-by-4.0\n---\n# data\n",
                                       "data/train.csv": b"a,b\n1,2\n", "data/test.parquet": b"PAR1" * 100},
                             repo_type="dataset")
    for repo, rtype in ((model, "model"), (dataset, "dataset")):
        assert outer.approve_and_sync(outer.request(repo, repo_type=rtype)["id"])["state"] == "available"

    inner = make_hubgate(upstream=outer.url, upstream_token=outer.create_token("reader", "inner-hubgate"),
                         name="inner")
    doc = inner.request(model)
    assert doc["commit"] == m.sha
    assert finding(doc, "license.declared")["data"]["license"] == "mit"  # type: ignore[index]
    assert inner.approve_and_sync(doc["id"])["state"] == "available"
    ddoc = inner.request(dataset, repo_type="dataset")
    assert ddoc["commit"] == d.sha
    assert inner.approve_and_sync(ddoc["id"])["state"] == "available"

    for repo, rtype, commit in ((model, "model", m), (dataset, "dataset", d)):
        folders = {}
        for name, hg in (("outer", outer), ("inner", inner)):
            token = hg.create_token("reader") if name == "outer" else False
            folders[name] = Path(snapshot_download(repo, repo_type=rtype, endpoint=hg.url, token=token,
                                                   cache_dir=tmp_path / name))
            assert folders[name].name == commit.sha
        assert _tree(folders["inner"]) == _tree(folders["outer"]) == {p: f.read_bytes() for p, f in commit.files.items()}
        assert _cache_blobs(tmp_path / "inner", repo, rtype) == _cache_blobs(tmp_path / "outer", repo, rtype)
    inner_snap = inner.api("GET", f"/repos/model/{model}/snapshots").json()[0]
    assert inner_snap["provenance"]["upstream"] == outer.url
    for f in m.files.values():
        assert hashlib.sha256(inner.client.get(f"/{model}/resolve/main/{f.path}").content).hexdigest() == f.sha256
