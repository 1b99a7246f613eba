from __future__ import annotations

import pytest

from api.errors import ERROR_TABLE, status_of
from api.hub.ranges import RangeNotSatisfiableError
from mirror.errors import (
    BlobCorruptError,
    BlobNotFoundError,
    DigestMismatchError,
    ImportSourceError,
    ObjectNotFoundError,
    StorageError,
)
from mirror.upstream import UpstreamError, UpstreamGatedError, UpstreamNotFoundError
from registry.errors import (
    ConflictError,
    EntryNotFoundError,
    HubgateError,
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
    PolicyBlockedError,
    RepoNotFoundError,
    RevisionNotFoundError,
    SnapshotUnavailableError,
)
from registry.secrets import SecretKeyError
from registry.tokens import NotAuthenticatedError, PermissionDeniedError


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RepoNotFoundError("x"), (404, "RepoNotFound")),
        (RevisionNotFoundError("x"), (404, "RevisionNotFound")),
        (EntryNotFoundError("x", commit="a" * 40), (404, "EntryNotFound")),
        (InvalidInputError("x"), (400, None)),
        (ImportSourceError("x"), (400, None)),
        (RangeNotSatisfiableError(10), (416, None)),
        (ConflictError("x"), (409, None)),
        (DigestMismatchError("x"), (422, None)),
        (BlobNotFoundError("x"), (503, None)),
        (ObjectNotFoundError("x"), (503, None)),  # a missing object is a store failure, not a 404
        (StorageError("x"), (503, None)),
        (BlobCorruptError("x"), (503, None)),  # never served, never a client error
        (SnapshotUnavailableError("x"), (503, None)),
        (InvalidTransitionError("x"), (409, None)),
        (NotAuthenticatedError("x"), (401, "RepoNotFound")),  # what the Hub answers an anonymous client
        (PermissionDeniedError("x"), (403, None)),
        (PolicyBlockedError("x", findings=[]), (422, None)),
        (NotFoundError("x"), (404, None)),
        (UpstreamNotFoundError("x"), (404, None)),
        (UpstreamGatedError("x"), (403, None)),
        (UpstreamError("x"), (502, None)),
        (SecretKeyError("x"), (500, None)),
        (HubgateError("x"), (400, None)),  # anything else raised on purpose
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_status_of(exc: HubgateError, expected: tuple[int, str | None]) -> None:
    assert status_of(exc) == expected


def test_subclasses_follow_their_parent() -> None:
    class MyRevisionError(RevisionNotFoundError):
        pass

    class MyStorageError(StorageError):
        pass

    assert status_of(MyRevisionError("x")) == (404, "RevisionNotFound")
    assert status_of(MyStorageError("x")) == (503, None)


def test_every_table_entry_is_a_hubgate_error() -> None:
    assert all(issubclass(cls, HubgateError) for cls in ERROR_TABLE)
    assert all(400 <= status < 600 for status, _ in ERROR_TABLE.values())
