"""Domain errors. They know nothing about HTTP: api/errors.py maps them to status codes."""


class HubgateError(Exception):
    """Base of every error hubgate raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(HubgateError):
    """A repo id, revision, path or other input does not follow the grammar."""


class RepoNotFoundError(HubgateError):
    """The repo is unknown, not approved, or not visible to the caller."""


class RevisionNotFoundError(HubgateError):
    """The revision is not a published commit or a ref of the repo."""

    def __init__(self, message: str, *, commit: str | None = None) -> None:
        super().__init__(message)
        self.commit = commit


class EntryNotFoundError(HubgateError):
    """The path does not exist in the commit. ``commit`` enables negative caching."""

    def __init__(self, message: str, *, commit: str) -> None:
        super().__init__(message)
        self.commit = commit


class SnapshotUnavailableError(HubgateError):
    """The snapshot failed an integrity check and waits for repair; it is not served."""


class ConflictError(HubgateError):
    """The change contradicts what is already stored (e.g. another manifest for the same commit)."""


class InvalidTransitionError(ConflictError):
    """A mirror request cannot move from its current state by this action."""


class PolicyBlockedError(HubgateError):
    """A policy rule forbids the action; ``findings`` says which."""

    def __init__(self, message: str, findings: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.findings = findings


class JustificationRequiredError(HubgateError):
    """A decision that needs a written reason was made without one."""


class ContentBlockedError(HubgateError):
    """The content scan refused a snapshot; ``scan`` holds every file's record and the blocking reasons."""

    def __init__(self, message: str, scan: dict[str, object]) -> None:
        super().__init__(message)
        self.scan = scan


class NotFoundError(HubgateError):
    """An admin object (request, token, snapshot) does not exist."""
