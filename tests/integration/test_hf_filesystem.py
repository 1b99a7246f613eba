"""HfFileSystem (fsspec ``hf://``) against every flavour: ranged reads must return the source bytes."""

from __future__ import annotations

import pytest
from huggingface_hub import HfFileSystem

from helpers.hubgate import HubgateServer

pytestmark = pytest.mark.integration


@pytest.fixture
def fs(hub: HubgateServer) -> HfFileSystem:
    return HfFileSystem(endpoint=hub.base_url, token=False, skip_instance_cache=True)


@pytest.mark.parametrize(("key", "path"), [
    ("tiny", "model.safetensors"),  # LFS: a 302 to S3 in redirect mode
    ("tree", "a.txt"),  # regular
    ("tree", "d.bin"),  # LFS
    ("parquet", "data/train-00000-of-00001.parquet"),  # LFS, datasets/ prefix
])
def test_seek_read_and_cat_file_ranges(hub: HubgateServer, fs: HfFileSystem, key: str, path: str) -> None:
    repo = hub.repos[key]
    data = repo.files[path]
    assert len(data) > 5100
    root = ("datasets/" if repo.repo_type == "dataset" else "") + repo.repo_id
    url = f"{root}/{path}"
    with hub.recording() as log:
        with fs.open(url, "rb") as f:
            f.seek(1000)
            assert f.read(16) == data[1000:1016]
            f.seek(len(data) - 10)
            assert f.read() == data[-10:]
    assert fs.cat_file(url, start=5000, end=5100) == data[5000:5100]
    assert fs.cat_file(url, start=-7) == data[-7:]
    with fs.open(url, "rb", block_size=64) as f:  # many small blocks, each its own Range request
        f.seek(123)
        assert f.read(300) == data[123:423]
    assert fs.read_bytes(url) == data

    gets = [r for r in log.records if r.method == "GET" and "/resolve/" in r.path]
    assert gets, "the reads went to hubgate's /resolve"
    for r in gets:
        assert r.request_header("range"), "HfFileSystem block reads are ranged"
        if hub.flavour == "s3-redirect" and path.endswith((".safetensors", ".bin", ".parquet")):
            assert r.status == 302 and (r.header("location") or "").startswith(hub.s3_origin + "/")
        else:
            assert r.status == 206 and (r.header("content-range") or "").startswith("bytes ")


def test_listing_info_and_revisions(hub: HubgateServer, fs: HfFileSystem) -> None:
    tree = hub.repos["tree"]
    assert sorted(fs.ls("acme/tree", detail=False)) == sorted(
        ["acme/tree/sub"] + [f"acme/tree/{p}" for p in tree.files if "/" not in p]
    )
    assert sorted(fs.find("acme/tree")) == sorted(f"acme/tree/{p}" for p in tree.files)
    assert fs.info("acme/tree/d.bin")["size"] == len(tree.files["d.bin"])
    assert fs.isdir("acme/tree/sub/deep") and not fs.exists("acme/tree/sub/nope")
    assert fs.read_bytes(f"acme/tiny@{hub.commits['tiny-pr']}/README.md") == hub.repos["tiny-pr"].files["README.md"]


def test_read_at_a_pull_request_revision(hub: HubgateServer, fs: HfFileSystem) -> None:
    """``repo@refs%2Fpr%2F1/file``: HfFileSystem lists the folder (2 pages here) at that revision."""
    assert fs.read_bytes("acme/tiny@refs%2Fpr%2F1/README.md") == hub.repos["tiny-pr"].files["README.md"]
    assert fs.read_bytes("acme/tiny@v1.0/README.md") == hub.repos["tiny"].files["README.md"]
