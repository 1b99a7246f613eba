"""One parser from raw URL paths to (repo, revision, path).

Works on the *raw* path: segments are split on literal ``/`` first and percent-decoded
after, so ``refs%2Fpr%2F1`` stays one revision segment, as the HF clients encode it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from registry.errors import InvalidInputError, RepoNotFoundError
from registry.types import RepoRef, RepoType, validate_path, validate_repo_id, validate_revision

MAX_RAW_PATH = 8192
_TYPE_PREFIXES = {"datasets": RepoType.DATASET, "models": RepoType.MODEL}
REPO_ACTIONS = ("revision", "tree", "paths-info", "refs", "commits")


def _decode(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("Invalid URL: not UTF-8") from exc


def split_raw(raw_path: bytes) -> list[str]:
    if len(raw_path) > MAX_RAW_PATH:
        raise InvalidInputError("URL path too long")
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("Invalid URL: raw non-ASCII bytes") from exc
    return text.split("?", 1)[0].lstrip("/").split("/")


def _repo(repo_type: RepoType, parts: list[str]) -> RepoRef:
    try:
        return RepoRef(repo_type, validate_repo_id("/".join(_decode(p) for p in parts)))
    except InvalidInputError as exc:
        # The Hub answers unknown or malformed repo ids alike; clients map it to RepositoryNotFoundError.
        raise RepoNotFoundError(exc.message) from exc


@dataclass(frozen=True, slots=True)
class FileTarget:
    repo: RepoRef
    revision: str
    path: str


def parse_resolve(raw_path: bytes) -> FileTarget | None:
    """``/[datasets/]{repo}/resolve/{rev}/{path}``; None if the URL is not of that shape."""
    segs = split_raw(raw_path)
    repo_type = RepoType.MODEL
    if segs and segs[0] in ("datasets", "models", "spaces") and len(segs) > 3:
        if segs[0] == "spaces":
            raise RepoNotFoundError("Spaces are not mirrored")
        repo_type = _TYPE_PREFIXES[segs[0]]
        segs = segs[1:]
    for n in (2, 1):
        if len(segs) >= n + 3 and segs[n] == "resolve":
            repo = _repo(repo_type, segs[:n])
            revision = validate_revision(_decode(segs[n + 1]))
            path = validate_path("/".join(_decode(s) for s in segs[n + 2:]))
            return FileTarget(repo, revision, path)
    return None


_PARSED: dict[bytes, FileTarget | None] = {}
_PARSED_MAX = 8192


def parse_resolve_cached(raw_path: bytes) -> FileTarget | None:
    """``parse_resolve`` with a bounded memo: the same few URLs arrive from every GPU node.

    Only successful parses are kept; an invalid URL raises each time (and is not worth caching).
    """
    hit = _PARSED.get(raw_path)
    if hit is not None:
        return hit
    target = parse_resolve(raw_path)
    if target is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[raw_path] = target
    return target


@dataclass(frozen=True, slots=True)
class RepoCall:
    repo: RepoRef
    action: str | None  # None: repo info
    revision: str | None
    path: str  # for tree: the folder ("" = root)


def parse_repo_api(repo_type: RepoType, raw_rest: list[str]) -> RepoCall:
    """The part of ``/api/{type}s/…`` after the type: ``{repo}[/{action}[/{rev}[/{path}]]]``."""
    segs = raw_rest
    n = 2 if len(segs) >= 2 and (len(segs) == 2 or segs[2] in REPO_ACTIONS) else 1
    if len(segs) < n or (len(segs) > n and segs[n] not in REPO_ACTIONS):
        raise RepoNotFoundError("Repository not found")
    repo = _repo(repo_type, segs[:n])
    if len(segs) == n:
        return RepoCall(repo, None, None, "")
    action, rest = segs[n], segs[n + 1:]
    if action == "refs":
        if rest:
            raise RepoNotFoundError("Repository not found")
        return RepoCall(repo, action, None, "")
    if not rest or not rest[0]:
        raise InvalidInputError(f"{action}: a revision is required")
    revision = validate_revision(_decode(rest[0]))
    path = ""
    if len(rest) > 1:
        if action not in ("tree",):
            raise InvalidInputError(f"Unexpected path after {action}/{revision}")
        joined = "/".join(_decode(s) for s in rest[1:]).strip("/")
        path = validate_path(joined) if joined else ""
    return RepoCall(repo, action, revision, path)
