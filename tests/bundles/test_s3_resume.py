"""An import-bundle into S3 (moto's server over HTTP) killed inside a large blob resumes inside it.

The killed run's multipart upload stays on the server; the next run finds it by the blob's key,
checks each part's MD5 against the bundle's bytes and sends only the rest (counted on the driver's
client). A part changed on the server is sent again; a bundle changed between runs is refused with
nothing published and its upload aborted; gc sweeps an abandoned upload once older than the grace
period. The last test kills a real ``hubgate import-bundle`` process with SIGKILL.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.content import safetensors_bytes, write_tree
from mirror import gc
from mirror.bundles import BundleError, export_bundle, import_bundle, importer
from mirror.bundles.format import Index
from mirror.storage import layout

from .conftest import Instance, assert_nothing_published, build_instance, copy_bundle, import_repo

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB  # B's part size: a 21 MiB blob is five parts
SIZE = 21 * MiB + 4321
assert SIZE >= importer.RESUMABLE_MIN_SIZE


class _Killed(BaseException):
    """The import dies here (not an Exception: nothing on the way may handle it)."""


@dataclass
class Big:
    """Instance A's repo with one large blob, exported as a folder and as a tar."""

    public_key: Path
    dir: Path
    tar: Path
    sha256: str
    data: bytes


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    root = tmp_path_factory.mktemp("big")
    data = safetensors_bytes(SIZE, 11)
    a = build_instance(root / "a", HUBGATE_INSTANCE_NAME="low-side")
    import_repo(a, write_tree(root / "repo", {"model.safetensors": data, "README.md": b"---\nlicense: mit\n---\n"}))
    export_bundle(a.engine, a.store, a.signer, root / "dir", form="dir")
    export_bundle(a.engine, a.store, a.signer, root / "tar" / "bundle.tar", form="tar")
    yield Big(a.write_public_key(root / "a.pub"), root / "dir", root / "tar" / "bundle.tar",
              hashlib.sha256(data).hexdigest(), data)
    a.engine.dispose()


def _admin(origin: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=origin, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _env(data_dir: Path, origin: str, trusted_key: Path) -> dict[str, str]:
    bucket = f"hubgate-resume-{uuid.uuid4().hex[:12]}"
    _admin(origin).create_bucket(Bucket=bucket)
    return {"HUBGATE_DATA_DIR": str(data_dir), "HUBGATE_WORKER_IN_PROCESS": "false", "HUBGATE_STORAGE": "s3",
            "HUBGATE_S3_BUCKET": bucket, "HUBGATE_S3_ENDPOINT_URL": origin, "HUBGATE_S3_ACCESS_KEY_ID": "testing",
            "HUBGATE_S3_SECRET_ACCESS_KEY": "testing", "HUBGATE_TRUSTED_KEYS": str(trusted_key),
            "HUBGATE_INSTANCE_NAME": "high-side"}


@pytest.fixture
def b(tmp_path: Path, moto_s3: str, big: Big) -> Iterator[Instance]:
    """Instance B on S3, its driver sending 5 MiB parts."""
    env = _env(tmp_path / "b", moto_s3, big.public_key)
    instance = build_instance(Path(env.pop("HUBGATE_DATA_DIR")), **env)
    instance.store.driver.part_size = PART
    yield instance
    instance.engine.dispose()


def _bucket(b: Instance) -> str:
    return b.services.settings.s3_bucket  # type: ignore[no-any-return]


def _uploads(b: Instance, origin: str) -> list[dict[str, Any]]:
    return list(_admin(origin).list_multipart_uploads(Bucket=_bucket(b)).get("Uploads", []))


def _kept_parts(b: Instance, origin: str) -> list[dict[str, Any]]:
    (upload,) = _uploads(b, origin)
    return list(_admin(origin).list_parts(Bucket=_bucket(b), Key=upload["Key"],
                                          UploadId=upload["UploadId"]).get("Parts", []))


def _killed_import(b: Instance, bundle: Path, monkeypatch: pytest.MonkeyPatch, *, after: int) -> None:
    """An import that dies once ``after`` bytes of the large blob were read (before the next chunk)."""
    real = importer.read_verified

    def read_verified(member: Any, sink: Any = None, **kwargs: Any) -> None:
        if sink is None or member.entry.size < importer.RESUMABLE_MIN_SIZE:
            return real(member, sink, **kwargs)
        seen = 0

        def dying(data: Any) -> None:
            nonlocal seen
            if seen >= after:
                raise _Killed
            seen += len(data)
            sink(data)

        return real(member, dying, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(importer, "read_verified", read_verified)
        with pytest.raises(_Killed):
            import_bundle(b.engine, b.store, bundle, trusted=b.trusted())
    assert_nothing_published(b)


class _Sent:
    """Bytes the driver sends as upload parts."""

    def __init__(self, b: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parts: list[tuple[int, int]] = []
        client = b.store.driver.client
        real = client.upload_part

        def upload_part(**kwargs: Any) -> Any:
            self.parts.append((kwargs["PartNumber"], len(kwargs["Body"])))
            return real(**kwargs)

        monkeypatch.setattr(client, "upload_part", upload_part)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.parts)


def _stored(b: Instance, sha256: str) -> bytes:
    with b.store.open(sha256) as f:
        return f.read()  # type: ignore[no-any-return]


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_a_killed_import_to_s3_resumes_inside_the_blob(b: Instance, big: Big, moto_s3: str, form: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    bundle = big.dir if form == "dir" else big.tar
    _killed_import(b, bundle, monkeypatch, after=12 * MiB)
    assert b.store.stat(big.sha256) is None  # nothing visible before the whole blob is checked
    parts = _kept_parts(b, moto_s3)
    kept = sum(int(p["Size"]) for p in parts)
    assert len(parts) >= 2 and kept >= 2 * PART

    sent = _Sent(b, monkeypatch)
    with caplog.at_level("INFO", logger="mirror.bundles.importer"):
        result = import_bundle(b.engine, b.store, bundle, trusted=b.trusted())
    assert result.resumed == {big.sha256: kept}
    assert sent.bytes == SIZE - kept, "bytes sent again"
    assert min(n for n, _ in sent.parts) == len(parts) + 1
    assert f"resumed at byte {kept} of {SIZE}" in caplog.text
    assert len(result.published) == 1 and result.bytes_copied >= SIZE
    assert _stored(b, big.sha256) == big.data
    assert _uploads(b, moto_s3) == []


def test_a_part_changed_on_s3_is_sent_again(b: Instance, big: Big, moto_s3: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _killed_import(b, big.dir, monkeypatch, after=12 * MiB)
    first, second = _kept_parts(b, moto_s3)
    (upload,) = _uploads(b, moto_s3)
    _admin(moto_s3).upload_part(Bucket=_bucket(b), Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=2,
                                Body=os.urandom(int(second["Size"])))  # same size, other bytes

    sent = _Sent(b, monkeypatch)
    result = import_bundle(b.engine, b.store, big.dir, trusted=b.trusted())
    assert result.resumed == {big.sha256: first["Size"]}  # part 1 only: part 2 and all after it were sent again
    assert sent.bytes == SIZE - first["Size"]
    assert _stored(b, big.sha256) == big.data
    assert len(result.published) == 1


def test_a_bundle_changed_between_runs_is_refused_and_the_next_run_starts_clean(
        b: Instance, big: Big, moto_s3: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _killed_import(b, big.dir, monkeypatch, after=12 * MiB)
    changed = copy_bundle(big.dir, tmp_path / "changed")
    (member,) = [m for m in Index.from_bytes((changed / "index.json").read_bytes()).blob_members
                 if m.sha256 == big.sha256]
    with open(changed / member.path, "r+b") as f:  # inside part 1, which the killed run sent with the right bytes
        f.seek(4 * MiB)
        f.write(bytes([big.data[4 * MiB] ^ 0xFF]))

    with pytest.raises(BundleError, match="altered or damaged"):
        import_bundle(b.engine, b.store, changed, trusted=b.trusted())
    assert_nothing_published(b)
    assert b.store.stat(big.sha256) is None
    assert _uploads(b, moto_s3) == []  # aborted: nothing of it is trusted again

    sent = _Sent(b, monkeypatch)
    result = import_bundle(b.engine, b.store, big.dir, trusted=b.trusted())
    assert result.resumed == {} and sent.bytes == SIZE
    assert _stored(b, big.sha256) == big.data


def test_gc_sweeps_an_abandoned_resumable_upload_after_the_grace_period(
        b: Instance, big: Big, moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _killed_import(b, big.dir, monkeypatch, after=12 * MiB)
    (upload,) = _uploads(b, moto_s3)

    young = gc.collect(b.engine, b.store, grace_seconds=3600)
    assert young.partials_swept == 0 and _uploads(b, moto_s3) == [upload]

    time.sleep(1.1)  # part times have a one-second resolution
    old = gc.collect(b.engine, b.store, grace_seconds=0.5)
    assert old.partials_swept == 1
    swept = f"{layout.blob_key(big.sha256)}?uploadId={upload['UploadId']}"
    assert [i.name for i in old.items if i.kind == "partial"] == [swept]
    assert _uploads(b, moto_s3) == []

    sent = _Sent(b, monkeypatch)
    result = import_bundle(b.engine, b.store, big.dir, trusted=b.trusted())
    assert result.resumed == {} and sent.bytes == SIZE and len(result.published) == 1


def _contiguous(numbers: list[int]) -> int:
    """How many parts from part 1 on are there without a gap (parts go up four at a time)."""
    n = 0
    while n + 1 in numbers:
        n += 1
    return n


@pytest.mark.slow
def test_a_sigkilled_import_bundle_process_resumes_inside_the_blob_on_s3(tmp_path: Path, moto_s3: str) -> None:
    """The CLI, killed with SIGKILL once its upload holds parts 1 and 2 (16 MiB each: the default part size)."""
    size = 160 * MiB  # ten parts: the kill lands while later ones are still to go (four go up at once)
    data = safetensors_bytes(size, 12)
    a = build_instance(tmp_path / "a")
    import_repo(a, write_tree(tmp_path / "repo", {"model.safetensors": data, "README.md": b"---\nlicense: mit\n---\n"}))
    export_bundle(a.engine, a.store, a.signer, tmp_path / "bundle", form="dir")
    env = _env(tmp_path / "b", moto_s3, a.write_public_key(tmp_path / "a.pub"))
    a.engine.dispose()
    b = build_instance(Path(env["HUBGATE_DATA_DIR"]), **{k: v for k, v in env.items() if k != "HUBGATE_DATA_DIR"})
    b.engine.dispose()
    bucket, admin = env["HUBGATE_S3_BUCKET"], _admin(moto_s3)
    run_env = {**{k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}, **env,
               "NO_PROXY": "127.0.0.1,localhost"}
    cmd = [str(Path(sys.executable).with_name("hubgate")), "import-bundle", str(tmp_path / "bundle")]

    proc = subprocess.Popen(cmd, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts, deadline = 0, time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for upload in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                listed = admin.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                parts = _contiguous([p["PartNumber"] for p in listed.get("Parts", [])])
            if parts >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.wait(timeout=30)
    assert parts >= 2 and proc.returncode == -signal.SIGKILL, (parts, proc.returncode)

    again = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    m = re.search(r"resumed 1 blob at byte (\d+)", again.stdout)
    assert m is not None, again.stdout
    assert int(m.group(1)) >= 2 * 16 * MiB and int(m.group(1)) % (16 * MiB) == 0, again.stdout
    body = admin.get_object(Bucket=bucket, Key=layout.blob_key(hashlib.sha256(data).hexdigest()))["Body"].read()
    assert body == data
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
