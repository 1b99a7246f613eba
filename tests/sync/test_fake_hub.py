"""The fake upstream behaves like huggingface.co for the real HF client: the sync tests rely on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import GatedRepoError

from fakes.fake_hub import FakeHub
from registry.gitobjects import blob_oid, lfs_pointer

from .conftest import UPSTREAM_TOKEN, model_files, unique_repo

pytestmark = pytest.mark.integration


def test_hf_client_downloads_a_repo_from_the_fake_hub(fake_hub: FakeHub, tiny_files: dict[str, bytes],
                                                       hf_cache: Path) -> None:
    repo = unique_repo("fake-sanity")
    files = model_files(tiny_files, pickle_weights=True, remote_code=True, extra={"sub/deep/a.txt": b"a\n"})
    commit = fake_hub.create_repo(repo, files)
    mark = fake_hub.log.mark()

    folder = Path(snapshot_download(repo, endpoint=fake_hub.url, cache_dir=hf_cache, token=False))

    assert folder.name == commit.sha
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    log = fake_hub.log.for_repo(repo, mark)
    pages = [e for e in log if e.kind == "tree"]
    assert len(pages) >= 3 and all(e.status == 200 for e in pages), "the tree is paginated"
    # LFS files: a 302 from the Hub, the bytes from the CDN (another origin), never twice.
    lfs = [f for f in commit.files.values() if f.lfs]
    assert {f.path for f in lfs} == {"model.safetensors", "pytorch_model.bin"}
    for f in lfs:
        gets = fake_hub.log.content_gets(f.sha256, mark)
        assert [(e.origin, e.status) for e in gets] == [("cdn", 200)]


def test_tree_fields_are_computed_like_the_hub(fake_hub: FakeHub) -> None:
    repo = unique_repo("fake-tree")
    weights, text = b"\x00\x01" * 3000, b"hello\n"
    fake_hub.create_repo(repo, {"model.safetensors": weights, "notes/readme.txt": text})
    entries = list(HfApi(endpoint=fake_hub.url, token=False).list_repo_tree(repo, recursive=True))
    by_path = {e.path: e for e in entries}
    assert by_path["notes/readme.txt"].blob_id == blob_oid(text)
    st = by_path["model.safetensors"]
    assert st.blob_id == blob_oid(lfs_pointer(hashlib.sha256(weights).hexdigest(), len(weights)))
    assert st.lfs.sha256 == hashlib.sha256(weights).hexdigest() and st.lfs.size == len(weights)
    assert st.lfs.pointer_size == len(lfs_pointer(st.lfs.sha256, len(weights)))
    assert by_path["notes"].tree_id  # folders carry their git tree id


def test_gated_repo_and_cdn_refusing_authorization(fake_hub: FakeHub, hf_cache: Path) -> None:
    repo = unique_repo("fake-gated")
    commit = fake_hub.create_repo(repo, {"config.json": b"{}", "model.safetensors": b"w" * 4096}, gated="manual")
    api = HfApi(endpoint=fake_hub.url, token=False)
    assert api.model_info(repo).gated == "manual"  # repo info and tree stay readable
    assert len(list(api.list_repo_tree(repo))) == 2
    with pytest.raises(GatedRepoError):
        hf_hub_download(repo, "config.json", endpoint=fake_hub.url, cache_dir=hf_cache, token=False)
    r = httpx.get(f"{fake_hub.url}/{repo}/resolve/main/config.json", headers={"Authorization": "Bearer hf_wrong"})
    assert (r.status_code, r.headers["x-error-code"]) == (403, "GatedRepo")
    mark = fake_hub.log.mark()
    path = hf_hub_download(repo, "model.safetensors", endpoint=fake_hub.url, cache_dir=hf_cache, token=UPSTREAM_TOKEN)
    assert Path(path).read_bytes() == b"w" * 4096
    cdn = [e for e in fake_hub.log.since(mark) if e.origin == "cdn"]
    assert cdn and all(e.authorization is None for e in cdn)
    # The CDN refuses a request that carries a token: a client leaking it would fail.
    sha = commit.files["model.safetensors"].sha256
    assert httpx.get(f"{fake_hub.cdn_url}/cdn/{sha}", headers={"Authorization": "Bearer x"}).status_code == 400


def test_rate_limit_corruption_and_moving_main(fake_hub: FakeHub) -> None:
    repo = unique_repo("fake-faults")
    first = fake_hub.create_repo(repo, {"a.txt": b"0123456789" * 10})
    fake_hub.rate_limit(repo, 1)
    r = httpx.get(f"{fake_hub.url}/api/models/{repo}")
    assert (r.status_code, r.headers["retry-after"]) == (429, "1")
    assert httpx.get(f"{fake_hub.url}/api/models/{repo}").json()["sha"] == first.sha

    f = first.files["a.txt"]
    fake_hub.corrupt(f.sha256)
    try:
        body = httpx.get(f"{fake_hub.url}/{repo}/resolve/main/a.txt").content
    finally:
        fake_hub.corrupt(f.sha256, on=False)
    assert len(body) == f.size and body != f.data and sum(a != b for a, b in zip(body, f.data or b"")) == 1

    second = fake_hub.commit(repo, {"a.txt": b"new content\n", "b.txt": b"b\n"})
    assert httpx.get(f"{fake_hub.url}/api/models/{repo}/revision/main").json()["sha"] == second.sha
    assert httpx.get(f"{fake_hub.url}/{repo}/resolve/{first.sha}/a.txt").content == b"0123456789" * 10
    assert httpx.get(f"{fake_hub.url}/{repo}/resolve/main/a.txt").content == b"new content\n"
