"""Settings owned by the byte layer. Loaded by api/settings.py; never read from the environment here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class S3Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    public_endpoint_url: str | None = None  # the origin clients reach for presigned URLs
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    presign_ttl_seconds: int = 3600
    part_size: int = 16 * 1024 * 1024


class StorageSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    backend: Literal["local", "s3"] = "local"
    local_root: Path | None = None
    local_direct_writes: bool = True  # big blobs around the page cache (mirror/storage/direct.py)
    s3: S3Settings | None = None
