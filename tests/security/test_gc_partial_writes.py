"""``hubgate gc`` sweeps what a killed import or sync leaves half-written: the local store's ``.tmp/``
files and S3's unfinished multipart uploads (moto's S3 server over real HTTP), once older than the grace
period; ``--dry-run`` lists each (key, size, age) and deletes nothing."""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from api.cli import main
from mirror.storage import layout

S3_KEYS = {"HUBGATE_S3_ACCESS_KEY_ID": "testing", "HUBGATE_S3_SECRET_ACCESS_KEY": "testing"}


def gc(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> str:
    """``hubgate gc ARGS`` in this process with ``env`` as its environment; its standard output."""
    for key in [k for k in os.environ if k.startswith("HUBGATE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["gc", *args]) == 0
    return out.getvalue()


def services(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from api.app import build_services
    from api.settings import load

    return build_services(load(environ=env))


def killed_write(svc, size: int) -> Path:  # type: ignore[no-untyped-def]
    """What an import killed mid-file leaves: a writer that got bytes and neither committed nor cancelled."""
    before = set((svc.store.driver.root / ".tmp").iterdir())
    writer = svc.store.driver.writer(layout.upload_key())
    writer.write(os.urandom(size))
    writer._f.flush()  # the process is 'killed' here: the file stays, half-written
    (path,) = set((svc.store.driver.root / ".tmp").iterdir()) - before
    return path


def test_gc_sweeps_an_old_partial_local_write_and_keeps_a_fresh_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HUBGATE_DATA_DIR": str(tmp_path / "data"), "HUBGATE_UPSTREAM_URL": "", "HUBGATE_LOG_LEVEL": "warning"}
    svc = services(env)
    old, fresh = killed_write(svc, 12_345), killed_write(svc, 678)
    two_days_ago = time.time() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))

    listed = gc(monkeypatch, env, "--dry-run")
    line = next(line for line in listed.splitlines() if old.name in line)
    assert re.fullmatch(rf"would delete  partial +\.tmp/{old.name}  12345 bytes  4[78]\.\d h old", line), listed
    assert fresh.name not in listed
    assert old.exists() and fresh.exists()  # a dry run deletes nothing
    assert "1 abandoned partial writes swept" in listed

    swept = gc(monkeypatch, env)
    assert "1 abandoned partial writes swept" in swept and "freed 12345 bytes" in swept
    assert not old.exists() and fresh.exists()
    svc.close()
    svc.engine.dispose()


def test_gc_aborts_old_unfinished_multipart_uploads_on_s3(
        moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    bucket = f"hubgate-gc-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    env = {"HUBGATE_DATA_DIR": str(tmp_path / "data"), "HUBGATE_UPSTREAM_URL": "", "HUBGATE_LOG_LEVEL": "warning",
           "HUBGATE_STORAGE": "s3", "HUBGATE_S3_BUCKET": bucket, "HUBGATE_S3_ENDPOINT_URL": moto_s3,
           "HUBGATE_S3_PREFIX": "mirror", **S3_KEYS}
    svc = services(env)
    # a sync killed mid-way through a large file: its multipart upload was started, one part sent
    key = "mirror/" + layout.blob_key("ab" * 32)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"p" * (5 * 1024 * 1024))
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    young = gc(monkeypatch, env, "--dry-run", "--grace-hours", "1")
    assert "would delete" not in young and "0 abandoned partial writes swept" in young

    time.sleep(1.5)
    listed = gc(monkeypatch, env, "--dry-run", "--grace-hours", "0.0001")
    name = f"{layout.blob_key('ab' * 32)}?uploadId={upload}"
    assert re.search(rf"would delete  partial +{re.escape(name)}  {5 * 1024 * 1024} bytes  0\.0 h old", listed), listed
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    swept = gc(monkeypatch, env, "--grace-hours", "0.0001")
    assert "1 abandoned partial writes swept" in swept
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    svc.close()
    svc.engine.dispose()
