"""Errors of the byte layer."""

from registry.errors import HubgateError


class StorageError(HubgateError):
    """The object store failed or is misconfigured."""


class ObjectNotFoundError(StorageError):
    """A key that should exist is missing from the object store."""


class BlobNotFoundError(ObjectNotFoundError):
    """A manifest names a blob the store does not hold (a scrub alarm)."""


class BlobCorruptError(StorageError):
    """A stored blob does not match its recorded size or digest (a scrub alarm); it must not be served."""


class DigestMismatchError(HubgateError):
    """Content does not match the size or digest it was expected to have."""


class ImportSourceError(HubgateError):
    """A folder given to ``hubgate import`` cannot be imported as it is."""
