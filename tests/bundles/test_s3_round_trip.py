"""A -> bundle -> B on S3 (moto's server over HTTP), then B served by uvicorn to the real HF clients.

B streams every byte through hubgate (``HUBGATE_S3_SERVE=proxy``). Refused bundles leave B's
catalog empty: the Hub API answers ``RepositoryNotFoundError`` for the repo.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mirror.bundles import BundleError, export_bundle, import_bundle
from mirror.bundles.format import Index
from mirror.storage import layout
from mirror.storage.blobs import BlobStore

from .conftest import (
    REPO_ID, Instance, Source, assert_nothing_published, build_instance, copy_bundle, folder_files, import_repo,
    publish_second_version, row_counts,
)
from .test_refusals import CASES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _loopback_without_proxy() -> Iterator[None]:
    old = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = ",".join(filter(None, [old, "127.0.0.1", "localhost"]))
    yield
    if old is None:
        os.environ.pop("NO_PROXY", None)
    else:
        os.environ["NO_PROXY"] = old


@pytest.fixture(scope="module")
def s3_origin(moto_s3: str) -> str:
    return moto_s3  # the session's moto server (tests/conftest.py)


def _s3_client(origin: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=origin, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_s3_instance(data_dir: Path, origin: str, trusted_key: Path) -> Instance:
    bucket = f"hubgate-b-{uuid.uuid4().hex[:12]}"
    _s3_client(origin).create_bucket(Bucket=bucket)
    return build_instance(
        data_dir, HUBGATE_STORAGE="s3", HUBGATE_S3_BUCKET=bucket, HUBGATE_S3_ENDPOINT_URL=origin,
        HUBGATE_S3_ACCESS_KEY_ID="testing", HUBGATE_S3_SECRET_ACCESS_KEY="testing", HUBGATE_S3_SERVE="proxy",
        HUBGATE_TRUSTED_KEYS=str(trusted_key), HUBGATE_INSTANCE_NAME="high-side", HUBGATE_REF_CACHE_SECONDS="0",
    )


def bucket_state(instance: Instance, origin: str) -> dict[str, tuple[str, float]]:
    bucket = instance.services.settings.s3_bucket
    pages = _s3_client(origin).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: (o["ETag"], o["LastModified"].timestamp()) for page in pages for o in page.get("Contents", [])}


@contextmanager
def serving(instance: Instance) -> Iterator[str]:
    """B's Hub-compatible API under uvicorn on 127.0.0.1 (OS-assigned port), stopped on exit."""
    import uvicorn

    from api.app import create_app

    app = create_app(instance.services.settings, instance.services, run_worker=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="hubgate-b", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("hubgate did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def download(endpoint: str, cache: Path, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(REPO_ID, revision=revision, endpoint=endpoint, cache_dir=cache, token=False))


def assert_repo_not_found(endpoint: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=endpoint, token=False).model_info(REPO_ID)


def test_bundle_round_trip_to_s3_serves_byte_identical_files(
    source: Source, tiny_model: Path, s3_origin: str, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi
    from transformers import AutoModelForCausalLM

    b = make_s3_instance(tmp_path / "b", s3_origin, source.public_key)
    result = import_bundle(b.engine, b.store, source.volumes, trusted=b.trusted())
    assert [k.commit for k in result.published] == [source.commit] and result.form == "volumes"
    with serving(b) as endpoint:
        info = HfApi(endpoint=endpoint, token=False).model_info(REPO_ID)
        assert info.sha == source.commit
        folder = download(endpoint, tmp_path / "hf")
        assert folder_files(folder) == folder_files(tiny_model)
        assert folder_files(download(endpoint, tmp_path / "hf2", revision=source.commit)) == folder_files(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "gpt2"
    b.engine.dispose()


def test_incremental_bundles_to_s3(tiny_model: Path, s3_origin: str, tmp_path: Path) -> None:
    a = build_instance(tmp_path / "a")
    v1 = import_repo(a, tiny_model)
    v1_files = folder_files(tiny_model)
    export_bundle(a.engine, a.store, a.signer, tmp_path / "e1", form="dir")
    v2, new_blobs = publish_second_version(a, tiny_model, tmp_path)
    second = export_bundle(a.engine, a.store, a.signer, tmp_path / "e2.tar", form="tar", since=tmp_path / "e1",
                           volume_size=64 * 1024)
    index = Index.from_bytes((tmp_path / "e2.tar.index.json").read_bytes())
    assert {m.sha256 for m in index.blob_members} == new_blobs and second.blobs == 2
    assert [s.commit for s in index.snapshots] == [v2]

    b = make_s3_instance(tmp_path / "b", s3_origin, a.write_public_key(tmp_path / "a.pub"))
    import_bundle(b.engine, b.store, tmp_path / "e1", trusted=b.trusted())
    imported = import_bundle(b.engine, b.store, tmp_path / "e2.tar", trusted=b.trusted())
    assert imported.blobs_copied == 2
    rows, objects = row_counts(b.engine), bucket_state(b, s3_origin)
    again = import_bundle(b.engine, b.store, tmp_path / "e2.tar.000", trusted=b.trusted())
    assert (again.published, again.blobs_copied, again.refs_moved) == ([], 0, [])
    assert row_counts(b.engine) == rows and bucket_state(b, s3_origin) == objects
    with serving(b) as endpoint:
        assert folder_files(download(endpoint, tmp_path / "hf")) == folder_files(tmp_path / "v2")
        assert folder_files(download(endpoint, tmp_path / "hf1", revision=v1)) == v1_files
    a.engine.dispose()
    b.engine.dispose()


# -- refusals, against one B that never publishes anything -----------------------------------------


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, source: Source, s3_origin: str) -> Iterator[tuple[Instance, str]]:
    b = make_s3_instance(tmp_path_factory.mktemp("sealed"), s3_origin, source.public_key)
    with serving(b) as endpoint:
        yield b, endpoint
    b.engine.dispose()


def _untrusted_bundle(source: Source, tmp: Path) -> Path:
    """A well-formed bundle of the same repo from an instance whose key B does not trust."""
    c = build_instance(tmp / "c")
    import_repo(c, source.model)
    export_bundle(c.engine, c.store, c.signer, tmp / "c-bundle", form="dir")
    c.engine.dispose()
    return tmp / "c-bundle"


REFUSALS = {
    "tampered blob": CASES["tampered blob"],
    "tampered manifest": CASES["tampered manifest"],
    "wrong key": (_untrusted_bundle, "untrusted key"),
    "truncated volume": CASES["truncated volume"],
    "dot-dot tar member": CASES["dot-dot member"],
    "symlink tar member": CASES["symlink member"],
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_bundle_leaves_the_repo_not_found(sealed: tuple[Instance, str], source: Source, tmp_path: Path,
                                                  case: str) -> None:
    b, endpoint = sealed
    make, message = REFUSALS[case]
    with pytest.raises(BundleError, match=message):
        import_bundle(b.engine, b.store, make(source, tmp_path / "bad"), trusted=b.trusted())
    assert_nothing_published(b)
    assert_repo_not_found(endpoint)


class _CountingDriver:
    """The S3 driver, counting the writers opened per key (every blob copy opens one)."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.writers = inner, []

    def writer(self, key: str) -> Any:
        self.writers.append(key)
        return self._inner.writer(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_interrupted_import_to_s3_resumes_without_copying_again(source: Source, s3_origin: str, tmp_path: Path) -> None:
    b = make_s3_instance(tmp_path / "b", s3_origin, source.public_key)
    counting = _CountingDriver(b.store.driver)
    store = BlobStore(counting)
    bad = copy_bundle(source.dir, tmp_path / "bad")
    blobs = Index.from_bytes((bad / "index.json").read_bytes()).blob_members
    path = bad / blobs[-1].path
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    with pytest.raises(BundleError, match="altered or damaged"):
        import_bundle(b.engine, store, bad, trusted=b.trusted())
    assert_nothing_published(b)
    assert len([k for k in counting.writers if k.startswith("blobs/")]) == len(blobs)
    counting.writers.clear()

    result = import_bundle(b.engine, store, source.dir, trusted=b.trusted())
    assert [k for k in counting.writers if k.startswith("blobs/")] == [layout.blob_key(blobs[-1].sha256)]
    assert (result.blobs_copied, result.blobs_skipped) == (1, len(blobs) - 1)
    assert [k.commit for k in result.published] == [source.commit]
    b.engine.dispose()
