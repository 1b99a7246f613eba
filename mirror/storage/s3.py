"""S3-compatible driver (AWS, MinIO, Ceph RGW) over boto3.

A writer is a multipart upload that is completed only on ``commit`` (after the blob store has
verified the digests) and aborted on ``cancel``, so unverified bytes never appear under a key.

A resumable write (``partial``) is the same multipart upload, found again by its key after a kill
(``ListMultipartUploads``, ``ListParts``): no local state names it. Its parts cannot be read back, so
they are checked against the bytes the caller writes again from byte 0: a part's ETag is the MD5 of
its bytes (AWS without SSE-KMS, MinIO, Ceph RGW, moto). An upload whose ETags are something else is
aborted and the write starts clean.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mirror.errors import ObjectNotFoundError, StorageError
from mirror.settings import S3Settings
from mirror.storage.driver import ObjectInfo

log = logging.getLogger(__name__)

_MIN_PART = 5 * 1024 * 1024
_UPLOAD_ID = "?uploadId="  # partial-write names: <key>?uploadId=<id>, as in S3's own REST paths
_PARTS_IN_FLIGHT = 4
_PLAIN_MD5 = re.compile(r'"?([0-9a-fA-F]{32})"?')


def _is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


class _BodyReader:
    """A file-like view of a GetObject body."""

    def __init__(self, body: Any, object_size: int | None = None) -> None:
        self._body = body
        self.object_size = object_size

    def read(self, size: int = -1) -> bytes:
        return self._body.read(None if size < 0 else size)

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> "_BodyReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _S3Writer:
    """A multipart upload with up to ``_PARTS_IN_FLIGHT`` parts uploading at once (memory: that many parts)."""

    def __init__(self, driver: "S3Driver", key: str, upload_id: str | None = None) -> None:
        self._d, self._key = driver, key
        self._buf = bytearray()
        self._upload_id = upload_id  # given: go on with that upload (a resumed write)
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        assert not self._closed, "writer is closed"
        self._buf += data
        if len(self._buf) >= self._d.part_size:
            self._flush_part()

    def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        resp = self._d.client.upload_part(
            Bucket=self._d.bucket, Key=self._d.key(self._key), UploadId=self._upload_id,
            PartNumber=number, Body=body,
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    @property
    def next_part(self) -> int:
        """The number the next part sent or kept gets."""
        return len(self._parts) + 1

    def keep_part(self, etag: str) -> None:
        """Count a part already in the upload (checked by the caller) as the next one, without sending it."""
        done: Future[dict[str, Any]] = Future()
        done.set_result({"PartNumber": self.next_part, "ETag": etag})
        self._parts.append(done)

    def write_part(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as the next part, whatever its size (one that replaces a part found wrong)."""
        assert not self._buf, "a part is half-buffered"
        self._buf += data
        self._flush_part()

    def _flush_part(self) -> None:
        try:
            if self._upload_id is None:
                self._upload_id = self._d.client.create_multipart_upload(
                    Bucket=self._d.bucket, Key=self._d.key(self._key))["UploadId"]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
            in_flight = [f for f in self._parts if not f.done()]
            if len(in_flight) >= _PARTS_IN_FLIGHT:
                in_flight[0].result()  # back-pressure: bounded memory
            self._parts.append(self._pool.submit(self._upload_part, self.next_part, bytes(self._buf)))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 upload of {self._key} failed: {exc}") from exc
        self._buf.clear()

    def commit(self) -> None:
        assert not self._closed, "writer is closed"
        self._closed = True
        c, bucket, key = self._d.client, self._d.bucket, self._d.key(self._key)
        try:
            if self._upload_id is None:
                c.put_object(Bucket=bucket, Key=key, Body=bytes(self._buf))
                return
            if self._buf:
                self._flush_part()
            parts = [f.result() for f in self._parts]
            c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        except (ClientError, BotoCoreError) as exc:
            self._abort()
            raise StorageError(f"S3 upload of {self._key} failed: {exc}") from exc
        except BaseException:
            self._abort()
            raise
        finally:
            self._buf = bytearray()
            self._shutdown()

    def cancel(self) -> None:
        self._closed = True
        self._buf = bytearray()
        self._abort()

    def close(self) -> None:
        """Stop without completing or aborting: the parts sent stay in the upload for a resumed write."""
        self._closed = True
        self._buf = bytearray()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _abort(self) -> None:
        self._shutdown()  # no part may land after the abort
        if self._upload_id is not None:
            try:
                self._d.client.abort_multipart_upload(
                    Bucket=self._d.bucket, Key=self._d.key(self._key), UploadId=self._upload_id
                )
            except (ClientError, BotoCoreError):
                pass  # an orphaned upload is cleaned by the bucket's lifecycle rule
            self._upload_id = None


@dataclass(frozen=True, slots=True)
class _KeptPart:
    """A part a killed run uploaded: its size, its ETag as listed (given back on completion) and its MD5."""

    size: int
    etag: str
    md5: str


def _plain_md5(etag: str) -> str | None:
    """The MD5 an ETag is, or None when it is something else (SSE-KMS, SSE-C, a composite ``…-N``)."""
    m = _PLAIN_MD5.fullmatch(etag.strip())
    return m.group(1).lower() if m else None


def _kept_prefix(parts: list[dict[str, Any]], max_part: int) -> list[_KeptPart] | None:
    """The parts 1, 2, … before the first gap that a resumed write can check and keep; None when one of
    them has an ETag that is no MD5 (nothing of the upload can be checked). A part under S3's minimum
    (only a last part may be short) or over ``max_part`` (it is held in memory while checked) ends the
    prefix, and is sent again."""
    kept: list[_KeptPart] = []
    for number, part in enumerate(sorted(parts, key=lambda p: int(p["PartNumber"])), start=1):
        if int(part["PartNumber"]) != number:
            break
        md5 = _plain_md5(str(part.get("ETag", "")))
        if md5 is None:
            return None
        size = int(part["Size"])
        if not _MIN_PART <= size <= max_part:
            break
        kept.append(_KeptPart(size, str(part["ETag"]), md5))
    return kept


class S3Partial:
    """The resumable write of one object: the unfinished multipart upload a killed run left under its key
    (the one with the longest checkable prefix), or a new one.

    ``write`` gets the object from byte 0. While inside the kept parts it buffers one part's bytes and
    compares their MD5 with the part's ETag: an equal part is kept as it is (not sent), a different one
    is sent again from those bytes, and so is everything after it. Completion lists every part with the
    ETag checked or returned, so a part changed meanwhile fails it (``InvalidPart``) instead of slipping in.
    """

    def __init__(self, driver: "S3Driver", key: str) -> None:
        self._d, self._key = driver, key
        upload_id, parts = self._resume_point()
        self._w = _S3Writer(driver, key, upload_id)
        self._checking: deque[_KeptPart] = deque(parts)
        self._buf = bytearray()
        self.kept = sum(p.size for p in parts)
        self.reused = 0

    def _resume_point(self) -> tuple[str | None, list[_KeptPart]]:
        """The upload to go on with and its checkable parts; uploads that cannot be checked are aborted."""
        best: tuple[int, float, str | None, list[_KeptPart]] = (-1, 0.0, None, [])
        for upload_id, started, parts in self._d.unfinished_uploads(self._key):
            kept = _kept_prefix(parts, _PARTS_IN_FLIGHT * self._d.part_size)
            if kept is None:
                log.warning("%s: the unfinished upload %s cannot be checked (its part ETags are not MD5s, as "
                            "with SSE-KMS); aborting it, this copy starts from byte 0", self._key, upload_id)
                self._d.delete_partial_write(f"{self._key}{_UPLOAD_ID}{upload_id}")
                continue
            size = sum(p.size for p in kept)
            if (size, started) > best[:2]:
                best = (size, started, upload_id, kept)
        if best[3]:
            log.info("%s: an unfinished upload holds %d bytes in %d parts; checking them against the source",
                     self._key, best[0], len(best[3]))
        return best[2], best[3]

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while self._checking and len(view):
            take = self._checking[0].size - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == self._checking[0].size:
                self._check_part()
        if len(view):
            self._w.write(view)

    def _check_part(self) -> None:
        """The source's bytes of the next kept part are buffered: keep the part, or send it and the rest again."""
        part = self._checking.popleft()
        if hashlib.md5(self._buf, usedforsecurity=False).hexdigest() == part.md5:
            self._w.keep_part(part.etag)
            self.reused += part.size
        else:
            log.warning("%s: part %d of the unfinished upload differs from the source; sending it and the rest again",
                        self._key, self._w.next_part)
            self._w.write_part(self._buf)
            self._checking.clear()
        self._buf.clear()

    def commit(self) -> None:
        if self._buf:  # the object ended inside a kept part: its bytes are the last part
            self._w.write_part(self._buf)
            self._buf.clear()
        self._checking.clear()
        self._w.commit()

    def discard(self) -> None:
        self._checking.clear()
        self._w.cancel()

    def close(self) -> None:
        self._w.close()


class S3Driver:
    name = "s3"
    cheap_move = False

    def __init__(self, settings: S3Settings) -> None:
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        self.part_size = max(settings.part_size, _MIN_PART)
        self._ttl_default = settings.presign_ttl_seconds
        common: dict[str, Any] = {
            "region_name": settings.region,
            "aws_access_key_id": settings.access_key_id,
            "aws_secret_access_key": settings.secret_access_key,
            "config": Config(
                signature_version="s3v4", s3={"addressing_style": "path"},
                # one connection per proxied download (a replica streams 64 and more at once) or upload part
                retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=128,
            ),
        }
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=settings.endpoint_url, **common)
        self._presigner = session.client(
            "s3", endpoint_url=settings.public_endpoint_url or settings.endpoint_url, **common
        )

    def key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"Invalid storage key {key!r}")
        return self.prefix + key

    def check(self) -> None:
        """Raise StorageError naming the bucket if it cannot be reached."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StorageError(f"S3 stat of {key} failed: {exc}") from exc
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp())

    def open(self, key: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(key)}
        if length == 0:
            info = self.stat(key)
            if info is None:
                raise ObjectNotFoundError(f"Object {key} not found")
            return _BodyReader(_Empty(), info.size)  # type: ignore[return-value]
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            params["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self.client.get_object(**params)
            total = resp.get("ContentRange", "").rpartition("/")[2]
            size = int(total) if total.isdigit() else int(resp["ContentLength"]) + offset
            return _BodyReader(resp["Body"], size)  # type: ignore[return-value]
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectNotFoundError(f"Object {key} not found") from exc
            raise StorageError(f"S3 read of {key} failed: {exc}") from exc

    def writer(self, key: str) -> _S3Writer:
        self.key(key)
        return _S3Writer(self, key)

    def batch(self) -> None:
        """None: a completed upload is durable on return (the store's own replication)."""
        return None

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 write of {key} failed: {exc}") from exc

    def move(self, src: str, dst: str) -> None:
        try:
            self.client.copy({"Bucket": self.bucket, "Key": self.key(src)}, self.bucket, self.key(dst))
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectNotFoundError(f"Object {src} not found") from exc
            raise StorageError(f"S3 copy of {src} failed: {exc}") from exc
        self.delete(src)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(key))
        except ClientError as exc:
            if not _is_missing(exc):
                raise StorageError(f"S3 delete of {key} failed: {exc}") from exc

    def iter_keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix):]

    def redirect_url(self, key: str, *, ttl_seconds: int, filename: str) -> str | None:
        return self._presigner.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket, "Key": self.key(key),
                "ResponseContentDisposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            },
            ExpiresIn=ttl_seconds or self._ttl_default,
        )

    def local_path(self, key: str) -> Path | None:
        return None

    def iter_partial_writes(self) -> Iterator[ObjectInfo]:
        """Unfinished multipart uploads under the prefix, as ``<key>?uploadId=<id>``; size is what their
        parts hold, ``modified`` the latest part's upload (else the start)."""
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    size, modified = 0, upload["Initiated"].timestamp()
                    parts = self.client.get_paginator("list_parts").paginate(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    for part_page in parts:
                        for part in part_page.get("Parts", []):
                            size += int(part["Size"])
                            modified = max(modified, part["LastModified"].timestamp())
                    yield ObjectInfo(f"{upload['Key'][len(self.prefix):]}{_UPLOAD_ID}{upload['UploadId']}", size, modified)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 listing of unfinished uploads failed: {exc}") from exc

    def partial(self, key: str) -> S3Partial:
        """A resumable write of ``key`` (mirror/storage/resume.py): the multipart upload a killed run left
        under it goes on. It is one of ``iter_partial_writes`` meanwhile, swept by gc after the grace period."""
        self.key(key)
        return S3Partial(self, key)

    def unfinished_uploads(self, key: str) -> list[tuple[str, float, list[dict[str, Any]]]]:
        """(upload id, start as unix seconds, parts as ListParts gives them) of every unfinished upload of ``key``."""
        full, found = self.key(key), []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=full):
                for upload in page.get("Uploads", []):
                    if upload["Key"] == full:
                        parts = self._parts(full, upload["UploadId"])
                        if parts is not None:
                            found.append((upload["UploadId"], upload["Initiated"].timestamp(), parts))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 listing of the unfinished uploads of {key} failed: {exc}") from exc
        return found

    def _parts(self, full_key: str, upload_id: str) -> list[dict[str, Any]] | None:
        """The parts of one upload, or None when it ended meanwhile."""
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id)
            return [part for page in pages for part in page.get("Parts", [])]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") == "NoSuchUpload":
                return None
            raise

    def delete_partial_write(self, key: str) -> None:
        name, sep, upload_id = key.rpartition(_UPLOAD_ID)
        if not sep or not upload_id:
            raise StorageError(f"Not a partial write: {key!r}")
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(name), UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") != "NoSuchUpload":
                raise StorageError(f"S3 abort of {key} failed: {exc}") from exc


class _Empty:
    def read(self, size: int | None = None) -> bytes:
        return b""

    def close(self) -> None:
        pass
