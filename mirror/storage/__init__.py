"""open_store(settings): an explicit name -> driver table."""

from __future__ import annotations

from mirror.errors import StorageError
from mirror.settings import StorageSettings
from mirror.storage.blobs import BlobStore, BlobWriter
from mirror.storage.driver import ObjectInfo, StorageDriver

__all__ = ["BlobStore", "BlobWriter", "ObjectInfo", "StorageDriver", "open_driver", "open_store"]


def open_driver(settings: StorageSettings) -> StorageDriver:
    if settings.backend == "local":
        from mirror.storage.local import LocalDriver

        if settings.local_root is None:
            raise StorageError("local storage needs a root folder")
        return LocalDriver(settings.local_root, direct_writes=settings.local_direct_writes)
    if settings.backend == "s3":
        from mirror.storage.s3 import S3Driver

        if settings.s3 is None:
            raise StorageError("s3 storage needs a bucket")
        driver = S3Driver(settings.s3)
        driver.check()
        return driver
    raise StorageError(f"Unknown storage backend {settings.backend!r}")


def open_store(settings: StorageSettings) -> BlobStore:
    ttl = settings.s3.presign_ttl_seconds if settings.s3 else 3600
    store = BlobStore(open_driver(settings), presign_ttl_seconds=ttl)
    store.check_layout()
    return store
