"""Resumable writes on S3 (``S3Driver.partial`` through ``mirror.storage.resume``), over real HTTP.

A copy is "killed" after some parts reached S3 (the source raises; the writer keeps its upload, as a
SIGKILL would). A fresh driver (another process: no local state) finds the unfinished upload by its key,
checks each part's MD5 against the source's bytes and sends only the rest. Part uploads are counted on
the driver's client, so a resume that starts again from byte 0 fails the tests. moto runs always; Ceph
RGW (a real S3 server, ``slow``) runs the main cases too. The local store's partial file is checked the
same way at the end.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.rgw import S3Endpoint
from mirror.errors import DigestMismatchError
from mirror.settings import S3Settings
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from mirror.storage.local import LocalDriver
from mirror.storage.resume import ResumableWriter, resumable_writer
from mirror.storage.s3 import S3Driver, _kept_prefix, _plain_md5

MiB = 1024 * 1024
PART = 5 * MiB
DATA = random.Random(20261201).randbytes(4 * PART + 1234)  # four full parts and a short last one
SHA = hashlib.sha256(DATA).hexdigest()
KEY = layout.blob_key(SHA)
KILLED_CHUNK = MiB  # the killed run writes 1 MiB at a time: its parts are exactly PART
CHUNK = 3 * MiB  # the next run writes 3 MiB at a time: its chunks straddle the kept parts' ends


class _Killed(BaseException):
    """The process dies here (not an Exception: nothing on the way may handle it)."""


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# -- ETags and the kept prefix (no server) --------------------------------------------------------------


@pytest.mark.parametrize(("etag", "md5"), [
    ('"0123456789abcdef0123456789abcdef"', "0123456789abcdef0123456789abcdef"),
    ("0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcdef"),
    ('"0123456789abcdef0123456789abcdef-3"', None),  # a composite (multipart) ETag
    ('"' + "ab" * 32 + '"', None),  # 64 hex digits: not an MD5
    ('"3e1fa5c4d0"', None),  # SSE-KMS and SSE-C give opaque ETags
    ("", None),
])
def test_only_a_plain_md5_etag_can_check_a_part(etag: str, md5: str | None) -> None:
    assert _plain_md5(etag) == md5


def _listed(number: int, size: int, etag: str | None = None) -> dict[str, Any]:
    return {"PartNumber": number, "Size": size, "ETag": etag or f'"{_md5(str(number).encode())}"'}


def test_the_kept_prefix_ends_at_a_gap_or_a_part_that_cannot_be_kept() -> None:
    big = 4 * PART
    assert [p.size for p in _kept_prefix([_listed(2, PART), _listed(1, PART), _listed(4, PART)], big)] == [PART, PART]
    assert _kept_prefix([_listed(2, PART)], big) == []  # no part 1: nothing kept
    assert [p.size for p in _kept_prefix([_listed(1, PART), _listed(2, 1000), _listed(3, PART)], big)] == [PART]
    assert [p.size for p in _kept_prefix([_listed(1, PART), _listed(2, big + 1)], big)] == [PART]  # too big to hold


def test_an_upload_with_an_etag_that_is_no_md5_cannot_be_kept_at_all() -> None:
    assert _kept_prefix([_listed(1, PART), _listed(2, PART, '"abc-2"')], 4 * PART) is None


# -- S3 over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture(params=["moto", pytest.param("rgw", marks=pytest.mark.slow)])
def endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    if request.param == "moto":
        return S3Endpoint(request.getfixturevalue("moto_s3"), "testing", "testing", "moto")
    return request.getfixturevalue("rgw_s3")  # type: ignore[no-any-return]


@pytest.fixture
def bucket(endpoint: S3Endpoint) -> Iterator[str]:
    name = f"hubgate-resume-{uuid.uuid4().hex[:12]}"
    admin = endpoint.client()
    admin.create_bucket(Bucket=name)
    yield name
    for u in admin.list_multipart_uploads(Bucket=name).get("Uploads", []):
        admin.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
    for o in admin.list_objects_v2(Bucket=name).get("Contents", []):
        admin.delete_object(Bucket=name, Key=o["Key"])
    admin.delete_bucket(Bucket=name)


def _driver(endpoint: S3Endpoint, bucket: str) -> S3Driver:
    """A new driver, as a new process builds one: whatever it resumes, it finds on the server."""
    return S3Driver(S3Settings(bucket=bucket, prefix="mirror", endpoint_url=endpoint.origin,
                               access_key_id=endpoint.access_key, secret_access_key=endpoint.secret_key,
                               part_size=PART))


class _Sent:
    """The parts a driver sends: (part number, bytes)."""

    def __init__(self, driver: S3Driver, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parts: list[tuple[int, int]] = []
        real = driver.client.upload_part

        def upload_part(**kwargs: Any) -> Any:
            self.parts.append((kwargs["PartNumber"], len(kwargs["Body"])))
            return real(**kwargs)

        monkeypatch.setattr(driver.client, "upload_part", upload_part)

    @property
    def numbers(self) -> list[int]:
        return sorted(n for n, _ in self.parts)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.parts)


def _writer(driver: object, data: bytes = DATA) -> ResumableWriter:
    w = resumable_writer(BlobStore(driver), size=len(data), sha256=SHA)  # type: ignore[arg-type]
    assert w is not None, "the driver keeps no partial writes"
    return w


def _copy(w: ResumableWriter, data: bytes = DATA, *, die_at: int | None = None, chunk: int = CHUNK) -> None:
    """Write ``data`` from byte 0 in chunks, then commit; or die once ``die_at`` bytes were written."""
    with w:
        for start in range(0, len(data), chunk):
            if die_at is not None and start >= die_at:
                raise _Killed
            w.write(memoryview(data)[start:start + chunk])
        w.commit()


def _killed_copy(driver: object, die_at: int) -> None:
    with pytest.raises(_Killed):
        _copy(_writer(driver), die_at=die_at, chunk=KILLED_CHUNK)


def _uploads(endpoint: S3Endpoint, bucket: str) -> list[dict[str, Any]]:
    return list(endpoint.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _stored_parts(endpoint: S3Endpoint, bucket: str) -> list[int]:
    (upload,) = _uploads(endpoint, bucket)
    parts = endpoint.client().list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return [p["PartNumber"] for p in parts.get("Parts", [])]


def test_a_killed_copy_resumes_inside_the_blob_and_sends_only_the_rest(
        endpoint: S3Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _killed_copy(_driver(endpoint, bucket), die_at=12 * MiB)  # 12 MiB written: parts 1-2 sent, 2 MiB buffered
    assert _stored_parts(endpoint, bucket) == [1, 2]
    assert _driver(endpoint, bucket).stat(KEY) is None  # nothing visible before the whole blob is checked

    again = _driver(endpoint, bucket)
    sent = _Sent(again, monkeypatch)
    real_complete = again.client.complete_multipart_upload
    monkeypatch.setattr(again.client, "complete_multipart_upload",  # Ceph 16 answers with an empty ETag
                        lambda **kw: {**real_complete(**kw), "ETag": ""})
    w = _writer(again)
    assert w.resumed_at == 2 * PART
    _copy(w)
    assert w.reused == 2 * PART
    assert (sent.numbers[0], sent.bytes) == (3, len(DATA) - 2 * PART)
    assert again.get_bytes(KEY) == DATA
    assert _uploads(endpoint, bucket) == []


def test_a_part_changed_on_the_server_is_sent_again_with_everything_after_it(
        endpoint: S3Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _killed_copy(_driver(endpoint, bucket), die_at=18 * MiB)  # parts 1-3 sent
    (upload,) = _uploads(endpoint, bucket)
    endpoint.client().upload_part(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=2,
                                  Body=b"\0" * PART)  # same size, other bytes

    again = _driver(endpoint, bucket)
    sent = _Sent(again, monkeypatch)
    w = _writer(again)
    assert w.resumed_at == 3 * PART  # claimed; only part 1 checks out
    _copy(w)
    assert w.reused == PART
    assert (sent.numbers[0], sent.bytes) == (2, len(DATA) - PART)
    assert again.get_bytes(KEY) == DATA


def test_a_source_changed_between_runs_never_becomes_the_blob(endpoint: S3Endpoint, bucket: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _killed_copy(_driver(endpoint, bucket), die_at=12 * MiB)
    changed = bytearray(DATA)
    changed[PART + 7] ^= 0xFF  # inside part 2, which the killed run sent with the right bytes

    again = _driver(endpoint, bucket)
    w = _writer(again, bytes(changed))
    with pytest.raises(DigestMismatchError, match="sha256 mismatch"):
        _copy(w, bytes(changed))
    assert again.stat(KEY) is None
    assert _uploads(endpoint, bucket) == []  # discarded: the next run starts clean

    clean = _driver(endpoint, bucket)
    sent = _Sent(clean, monkeypatch)
    w = _writer(clean)
    assert w.resumed_at == 0
    _copy(w)
    assert (w.reused, sent.bytes) == (0, len(DATA)) and clean.get_bytes(KEY) == DATA


def test_an_upload_whose_etags_are_not_md5s_is_aborted_and_the_copy_starts_clean(
        endpoint: S3Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on AWS with SSE-KMS: ListParts' ETags are opaque, so no part can be checked against the source."""
    _killed_copy(_driver(endpoint, bucket), die_at=12 * MiB)
    (old,) = _uploads(endpoint, bucket)

    again = _driver(endpoint, bucket)
    real_list_parts = again.client.list_parts

    def opaque(**kwargs: Any) -> Any:
        page = real_list_parts(**kwargs)
        return {**page, "Parts": [{**p, "ETag": '"' + "7f" * 16 + '-kms"'} for p in page.get("Parts", [])]}

    monkeypatch.setattr(again.client, "list_parts", opaque)
    sent = _Sent(again, monkeypatch)
    w = _writer(again)
    assert w.resumed_at == 0
    _copy(w)
    assert (w.reused, sent.bytes) == (0, len(DATA))
    assert again.get_bytes(KEY) == DATA
    assert old["UploadId"] not in {u["UploadId"] for u in _uploads(endpoint, bucket)}


def test_parts_after_a_gap_are_sent_again(endpoint: S3Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts go up four at a time: a kill can leave part 3 missing and part 4 there."""
    admin, full = endpoint.client(), "mirror/" + KEY
    upload = admin.create_multipart_upload(Bucket=bucket, Key=full)["UploadId"]
    for number in (1, 2, 4):
        admin.upload_part(Bucket=bucket, Key=full, UploadId=upload, PartNumber=number,
                          Body=DATA[(number - 1) * PART:number * PART])

    again = _driver(endpoint, bucket)
    sent = _Sent(again, monkeypatch)
    w = _writer(again)
    assert w.resumed_at == 2 * PART
    _copy(w)
    assert (w.reused, sent.numbers[0], sent.bytes) == (2 * PART, 3, len(DATA) - 2 * PART)
    assert again.get_bytes(KEY) == DATA


def test_a_resumed_upload_is_a_partial_write_until_it_completes(endpoint: S3Endpoint, bucket: str) -> None:
    """gc finds it (iter_partial_writes) and can sweep it; the next copy then starts clean."""
    driver = _driver(endpoint, bucket)
    _killed_copy(driver, die_at=12 * MiB)
    (info,) = driver.iter_partial_writes()
    assert info.key.startswith(KEY + "?uploadId=") and info.size == 2 * PART
    driver.delete_partial_write(info.key)
    assert _writer(_driver(endpoint, bucket)).resumed_at == 0


# -- the local store's partial file, checked the same way -----------------------------------------------


def _partial_file(root: Path) -> Path:
    (path,) = (root / ".tmp").glob("partial-*")
    return path


def test_a_local_partial_file_resumes_and_a_changed_byte_is_stored_again_from_its_chunk(tmp_path: Path) -> None:
    driver = LocalDriver(tmp_path / "store")
    _killed_copy(driver, die_at=12 * MiB)
    path = _partial_file(tmp_path / "store")
    assert path.stat().st_size == 12 * MiB
    with open(path, "r+b") as f:  # a byte of the kept prefix rots on disk
        f.seek(7 * MiB)
        f.write(bytes([DATA[7 * MiB] ^ 0xFF]))

    w = _writer(driver)
    assert w.resumed_at == 12 * MiB
    _copy(w)
    assert w.reused == 6 * MiB  # the chunks before the rotten byte's (3 MiB each)
    assert driver.get_bytes(KEY) == DATA
    assert not list((tmp_path / "store" / ".tmp").iterdir())


def test_a_local_partial_file_longer_than_the_blob_is_cut(tmp_path: Path) -> None:
    driver = LocalDriver(tmp_path / "store")
    _killed_copy(driver, die_at=12 * MiB)
    with open(_partial_file(tmp_path / "store"), "ab") as f:
        f.write(DATA[12 * MiB:] + b"tail")
    w = _writer(driver)
    assert w.resumed_at == len(DATA)
    _copy(w)
    assert w.reused == len(DATA) and driver.get_bytes(KEY) == DATA
