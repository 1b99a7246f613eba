"""The ``hubgate`` command's exit codes, one table, and the one-line message of each failure.

| code | meaning |
| --- | --- |
| 0 | success |
| 1 | the operation failed (upstream or server error, a store failure, a waited-for request failed or was rejected) |
| 2 | usage or configuration: bad arguments, a bad setting, a file or folder that is not there, a database, data dir or port that cannot be used (the message names the setting) |
| 3 | verification failed: a bundle, signature, checksum or the audit chain does not verify |
| 4 | content blocked by the scan (nothing of it was published) |
| 5 | refused: no token, an invalid or expired token, or a role too low (remote mode) |

A failure is printed as one line on stderr, ``hubgate: …``, never a traceback (``HUBGATE_LOG_LEVEL=debug``
adds the traceback to the log).
"""

from __future__ import annotations

import errno
import logging

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_VERIFY, EXIT_BLOCKED, EXIT_DENIED = 0, 1, 2, 3, 4, 5

log = logging.getLogger("hubgate.cli")


class SetupError(Exception):
    """The database, data dir or port cannot be used as configured; the message names the setting (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def database_problem(url: str, exc: BaseException) -> str:
    """One line: which database (password hidden), why, and the setting to change."""
    try:
        from sqlalchemy.engine import make_url

        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: say so without echoing it
        shown = "(unparsable URL)"
    orig = getattr(exc, "orig", None) or exc
    reason = (getattr(orig, "strerror", None) and f"{orig.strerror}: {getattr(orig, 'filename', '')}") or str(orig)
    return f"cannot open the database {shown} (HUBGATE_DATABASE_URL, or HUBGATE_DATA_DIR for the default SQLite file): " \
           f"{reason.strip().splitlines()[0][:300] if reason.strip() else type(orig).__name__}"


def _database_message(exc: BaseException, settings_hint: str) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    return f"cannot use the database ({settings_hint}): {reason}"


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that reached the CLI's top level."""
    from api.remote import RemoteError
    from api.settings import ConfigError
    from registry.errors import ContentBlockedError, HubgateError, InvalidInputError, JustificationRequiredError

    if isinstance(exc, ConfigError):
        return EXIT_USAGE, f"configuration error: {exc}"
    if isinstance(exc, SetupError):
        return EXIT_USAGE, exc.message
    if isinstance(exc, RemoteError):
        return exc.code, exc.message
    if isinstance(exc, JustificationRequiredError):
        return EXIT_USAGE, f"{exc.message} (pass --reason)"
    if isinstance(exc, InvalidInputError):
        return EXIT_USAGE, exc.message
    if isinstance(exc, ContentBlockedError):
        return EXIT_BLOCKED, exc.message
    if isinstance(exc, HubgateError):
        return _hubgate(exc)
    if _is_database_error(exc):
        return EXIT_USAGE, _database_message(exc, "HUBGATE_DATABASE_URL, or HUBGATE_DATA_DIR for the default SQLite file")
    if isinstance(exc, OSError):
        return EXIT_USAGE, _os_message(exc)
    raise exc


def _hubgate(exc: BaseException) -> tuple[int, str]:
    from mirror.bundles.format import BundleError
    from mirror.errors import DigestMismatchError, StorageError
    from mirror.signing import SignatureError
    from registry.tokens import NotAuthenticatedError, PermissionDeniedError

    message = getattr(exc, "message", str(exc))
    if isinstance(exc, (DigestMismatchError, BundleError, SignatureError)):
        return EXIT_VERIFY, f"verification failed: {message}"
    if isinstance(exc, (NotAuthenticatedError, PermissionDeniedError)):
        return EXIT_DENIED, message
    if isinstance(exc, StorageError) and ("Cannot create the storage folder" in message or "Permission denied" in message):
        return EXIT_USAGE, f"{message} (HUBGATE_STORAGE_DIR, or HUBGATE_DATA_DIR for the default store)"
    return EXIT_FAILURE, message


def _is_database_error(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return False
    return isinstance(exc, (OperationalError, DBAPIError))


def _os_message(exc: OSError) -> str:
    what = exc.filename or ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {what}: {exc.strerror} (check HUBGATE_DATA_DIR and who runs hubgate)"
    if exc.errno == errno.ENOENT:
        return f"{what}: not found"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device holding {what} (HUBGATE_DATA_DIR / HUBGATE_STORAGE_DIR)"
    return f"{what}: {exc.strerror or exc} (check HUBGATE_DATA_DIR / HUBGATE_STORAGE_DIR)"
