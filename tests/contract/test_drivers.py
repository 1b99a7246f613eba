"""The storage contract (storage_suite.py) run against every driver.

LocalDriver runs on a tmp folder; S3Driver talks real HTTP to two S3 servers on 127.0.0.1: moto's
ThreadedMotoServer (a mock) and Ceph RGW (a real S3 server, ``rgw_s3``), one server each per
session and an emptied bucket per test, with a 5 MiB part size so that the 11 MiB writes of the
suite go through multipart uploads.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.errors import StorageError
from mirror.settings import S3Settings
from mirror.storage.local import LocalDriver
from mirror.storage.s3 import S3Driver
from helpers.rgw import S3Endpoint

from .storage_suite import PART_SIZE, SMALL, BlobStoreSuite, Harness, StorageDriverSuite, _Reader

# ---------------------------------------------------------------------------------------------
# local


def _local_harness(tmp_path: Path) -> Harness:
    root = tmp_path / "store"
    driver = LocalDriver(root)

    def raw_objects() -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    def pending() -> list[str]:
        return sorted(p.name for p in (root / ".tmp").iterdir())

    return Harness(driver, "local", raw_objects, pending, lambda: None, outside_dir=tmp_path)


class TestLocalDriver(StorageDriverSuite):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        return _local_harness(tmp_path)

    def test_tmp_folder_is_not_a_key(self, harness: Harness) -> None:
        d = harness.driver
        for key in (".tmp/x", ".tmp"):
            with pytest.raises(StorageError):
                d.put_bytes(key, SMALL)  # type: ignore[attr-defined]
            with pytest.raises(StorageError):
                d.stat(key)  # type: ignore[attr-defined]

    def test_committed_file_is_fsynced_into_place_not_copied(self, harness: Harness) -> None:
        d = harness.driver
        w = d.writer("a/b")  # type: ignore[attr-defined]
        w.write(SMALL)
        tmp_files = list((d.root / ".tmp").iterdir())  # type: ignore[attr-defined]
        assert len(tmp_files) == 1
        inode = tmp_files[0].stat().st_ino
        w.commit()
        assert (d.root / "a" / "b").stat().st_ino == inode  # type: ignore[attr-defined]
        assert list((d.root / ".tmp").iterdir()) == []  # type: ignore[attr-defined]

    def test_unwritable_root_is_a_storage_error(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_bytes(b"")
        with pytest.raises(StorageError):
            LocalDriver(blocker / "store")


class TestLocalBlobStore(BlobStoreSuite):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        return _local_harness(tmp_path)


class TestLocalBlobStoreWithoutSyncfs(BlobStoreSuite):
    """Where syncfs is missing (not Linux) a batch fsyncs its files and folders one by one, in parallel."""

    @pytest.fixture
    def harness(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
        import mirror.storage.local

        monkeypatch.setattr(mirror.storage.local, "_SYNCFS", None)
        return _local_harness(tmp_path)


# ---------------------------------------------------------------------------------------------
# S3 over moto's HTTP server


@pytest.fixture(scope="session", params=["moto", "rgw"])
def s3_endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    """Each S3 server of the session in turn: moto, then Ceph RGW (tests/conftest.py)."""
    if request.param == "moto":
        return S3Endpoint(request.getfixturevalue("moto_s3"), "testing", "testing", "moto")
    return request.getfixturevalue("rgw_s3")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: S3Endpoint):  # type: ignore[no-untyped-def]
    """A plain boto3 client for creating buckets and looking behind the driver."""
    return s3_endpoint.client()


def _empty_bucket(s3_admin, bucket: str) -> None:  # type: ignore[no-untyped-def]
    for u in s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3_admin.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    for page in s3_admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            s3_admin.delete_object(Bucket=bucket, Key=o["Key"])


class _S3Stores:
    """One bucket and one driver per key prefix for the whole session (building boto3 clients is
    slow); every test starts from an emptied bucket."""

    def __init__(self, endpoint: S3Endpoint, s3_admin) -> None:  # type: ignore[no-untyped-def]
        self._endpoint, self._admin = endpoint, s3_admin
        self._drivers: dict[str, S3Driver] = {}

    def harness(self, prefix: str = "") -> Harness:
        admin = self._admin
        if prefix not in self._drivers:
            bucket = f"hubgate-{uuid.uuid4().hex[:16]}"
            admin.create_bucket(Bucket=bucket)
            self._drivers[prefix] = S3Driver(S3Settings(
                bucket=bucket, prefix=prefix, endpoint_url=self._endpoint.origin,
                access_key_id=self._endpoint.access_key, secret_access_key=self._endpoint.secret_key,
                part_size=PART_SIZE,
            ))
        driver = self._drivers[prefix]
        bucket, strip = driver.bucket, driver.prefix
        _empty_bucket(admin, bucket)
        driver.check()

        def raw_objects() -> set[str]:
            pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return {o["Key"] for page in pages for o in page.get("Contents", [])}

        def uploads() -> list[dict]:  # type: ignore[type-arg]
            return list(admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

        def pending() -> list[str]:
            return sorted(u["UploadId"] for u in uploads())

        def pending_keys() -> list[str]:
            return sorted(u["Key"][len(strip):] for u in uploads())

        return Harness(driver, "s3", raw_objects, pending, pending_keys)


@pytest.fixture(scope="session")
def s3_stores(s3_endpoint: S3Endpoint, s3_admin) -> _S3Stores:  # type: ignore[no-untyped-def]
    return _S3Stores(s3_endpoint, s3_admin)


class TestS3Driver(StorageDriverSuite):
    @pytest.fixture
    def harness(self, s3_stores: _S3Stores) -> Harness:
        return s3_stores.harness()

    def test_part_size_is_used(self, harness: Harness) -> None:
        assert harness.driver.part_size == PART_SIZE  # type: ignore[attr-defined]

    def test_nothing_depends_on_the_etag_of_a_completed_upload(self, harness: Harness,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """Ceph 16 answers CompleteMultipartUpload with an empty ETag (HEAD has the right one): moto
        is made to do the same, and a multipart blob still goes in and reads back."""
        from mirror.storage.blobs import BlobStore

        from .storage_suite import BIG, _sha

        driver = harness.driver
        real = driver.client.complete_multipart_upload  # type: ignore[attr-defined]
        calls = []

        def like_ceph(**kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs["Key"])
            return {**real(**kwargs), "ETag": ""}

        monkeypatch.setattr(driver.client, "complete_multipart_upload", like_ceph)  # type: ignore[attr-defined]
        store = BlobStore(driver)  # type: ignore[arg-type]
        store.ingest_file(_Reader(BIG), size=len(BIG), sha256=_sha(BIG))
        assert calls and store.stat(_sha(BIG)).size == len(BIG)  # type: ignore[union-attr]
        with store.open(_sha(BIG)) as f:
            assert f.read() == BIG

    def test_check_names_a_missing_bucket(self, s3_endpoint: S3Endpoint) -> None:
        driver = S3Driver(S3Settings(
            bucket="no-such-bucket-hubgate", endpoint_url=s3_endpoint.origin,
            access_key_id=s3_endpoint.access_key, secret_access_key=s3_endpoint.secret_key,
        ))
        with pytest.raises(StorageError, match="no-such-bucket-hubgate"):
            driver.check()


class TestS3DriverWithPrefix(StorageDriverSuite):
    """The same contract when the store lives under a key prefix of a shared bucket."""

    @pytest.fixture
    def harness(self, s3_stores: _S3Stores) -> Harness:
        return s3_stores.harness(prefix="/mirror/hubgate/")

    def test_objects_live_under_the_prefix(self, harness: Harness) -> None:
        harness.driver.put_bytes("a/b", SMALL)  # type: ignore[attr-defined]
        assert harness.raw_objects() == {"mirror/hubgate/a/b"}
        assert list(harness.driver.iter_keys("")) == ["a/b"]  # type: ignore[attr-defined]


class TestS3BlobStore(BlobStoreSuite):
    @pytest.fixture
    def harness(self, s3_stores: _S3Stores) -> Harness:
        return s3_stores.harness()


@pytest.fixture(autouse=True, scope="session")
def _no_proxy_for_loopback() -> Iterator[None]:
    """Make sure neither boto3 nor httpx sends 127.0.0.1 traffic through a proxy."""
    old = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = ",".join(filter(None, [old, "127.0.0.1", "localhost"]))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NO_PROXY", None)
        else:
            os.environ["NO_PROXY"] = old
