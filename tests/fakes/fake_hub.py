"""A small fake of huggingface.co and its CDN: two ASGI apps, each on its own loopback origin.

It answers what hubgate's upstream client (and the real HF client) asks, the way the Hub does:

* repo info ``/api/{models,datasets}/{repo}[/revision/{rev}]`` with ``sha``, ``cardData`` (the README's
  front matter), ``gated``, ``tags`` and ``siblings`` (``?blobs=true`` adds sizes and LFS info);
* the tree ``/api/{type}s/{repo}/tree/{rev}[/{path}]?recursive=&expand=``, paginated at a small page size
  with absolute ``Link: <…>; rel="next"`` URLs; file ``oid`` = git blob id of the content (of the LFS
  pointer for LFS files), ``lfs: {oid, size, pointerSize}``, directory ``oid`` = git tree id;
* ``HEAD``/``GET /[datasets/]{repo}/resolve/{rev}/{path}``: regular files answered directly (``ETag`` =
  git blob id, ``Range``), LFS files answered with a ``302`` to the *other* origin (the CDN) carrying
  ``X-Repo-Commit``, ``X-Linked-Etag``, ``X-Linked-Size``;
* errors with ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound`` + ``X-Repo-Commit``,
  ``GatedRepo``).

The CDN serves ``/cdn/{sha256}`` (with ``Range``) and **refuses any request that carries an
Authorization header** (400), as S3 presigned URLs do: a client that leaks its Hub token fails.

Test controls (all thread-safe, applied to requests that arrive afterwards):

* ``create_repo`` / ``commit`` (moves a branch to a new commit) / ``tag``; ``set_gated`` + ``tokens``
  (a gated repo answers ``/resolve`` 401 + ``GatedRepo`` without a token, 403 + ``GatedRepo`` with a
  token not in ``tokens``, normally with one; repo info and tree stay readable);
* ``rate_limit(repo, n)``: the next ``n`` requests about the repo get ``429`` + ``Retry-After``;
* ``corrupt(sha256)``: one byte of that content is flipped in transit (wherever it is served from);
* ``throttle(sha256, bytes_per_second)``: that content is sent slowly;
* ``cut_once(sha256, after)``: the next full download of that content drops the connection after
  ``after`` bytes (``ranged=True``: the next Range request, after ``after`` bytes of its answer);
* ``pad(sha256, extra)``: that content is sent with ``extra`` bytes appended (chunked, no Content-Length),
  so the size a client receives differs from the size the tree announced (``ranged=True``: each answer
  to a Range request instead);
* ``log``: every request on both origins (method, path, status, Authorization, Range, which repo,
  file and content, bytes sent, whether the body was complete).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import anyio
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from registry.gitobjects import GitFile, blob_oid, commit_oid, lfs_pointer, tree_oids

from .server import ServerThread

# What the Hub's default .gitattributes stores in LFS (the common suffixes); bigger files go to LFS too.
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".parquet", ".arrow",
    ".gguf", ".zip", ".gz", ".npy", ".npz", ".pkl", ".pickle", ".joblib", ".model", ".tflite", ".tar",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
_CHUNK = 1024 * 1024
_THROTTLED_CHUNK = 64 * 1024


class ConnectionCut(Exception):
    """Raised inside a response body to drop the connection half-way (``cut_once``)."""


# ------------------------------------------------------------------------------------------------
# content


@dataclass(frozen=True)
class FakeFile:
    """One file of a commit. Its bytes are held in memory (``data``) or read from disk (``source``)."""

    path: str
    size: int
    sha256: str
    git_oid: str  # git blob id of the content itself
    lfs: bool
    data: bytes | None = field(default=None, repr=False)
    source: Path | None = None

    @classmethod
    def of(cls, path: str, content: bytes | Path, *, lfs: bool | None = None) -> "FakeFile":
        if isinstance(content, Path):
            size = content.stat().st_size
            sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
            with open(content, "rb") as f:
                while block := f.read(8 * _CHUNK):
                    sha256.update(block)
                    sha1.update(block)
            digest, oid, data, source = sha256.hexdigest(), sha1.hexdigest(), None, content
        else:
            size = len(content)
            digest, oid, data, source = hashlib.sha256(content).hexdigest(), blob_oid(content), bytes(content), None
        if lfs is None:
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_SIZE_THRESHOLD
        return cls(path, size, digest, oid, lfs, data, source)

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def tree_oid(self) -> str:
        """The ``oid`` the Hub's tree gives: the blob id of what git stores (the pointer for LFS files)."""
        return blob_oid(self.pointer) if self.lfs else self.git_oid

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return self.source.read_bytes()

    def _read(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.source is not None
        with open(self.source, "rb") as f:
            f.seek(offset)
            return f.read(length)

    async def chunks(self, start: int, end: int, chunk: int) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` (inclusive) in chunks of at most ``chunk``."""
        pos = start
        if self.data is not None:
            while pos <= end:
                n = min(chunk, end - pos + 1)
                yield self.data[pos : pos + n]
                pos += n
            return
        assert self.source is not None
        f = await anyio.to_thread.run_sync(open, self.source, "rb")
        try:
            await anyio.to_thread.run_sync(f.seek, start)
            while pos <= end:
                n = min(chunk, end - pos + 1)
                block = await anyio.to_thread.run_sync(f.read, n)
                if not block:
                    raise OSError(f"{self.source} ended early")
                yield block
                pos += len(block)
        finally:
            f.close()


def parse_front_matter(text: str) -> dict[str, Any] | None:
    if not text.startswith("---"):
        return None
    lines = text.splitlines()
    try:
        end = lines[1:].index("---") + 1
    except ValueError:
        return None
    data = yaml.safe_load("\n".join(lines[1:end]))
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Commit:
    sha: str
    files: dict[str, FakeFile]
    message: str
    date: datetime

    @cached_property
    def card(self) -> dict[str, Any] | None:
        readme = self.files.get("README.md")
        if readme is None or readme.size > 1024 * 1024:
            return None
        return parse_front_matter(readme.read_bytes().decode("utf-8", errors="replace"))

    @cached_property
    def tree_ids(self) -> dict[str, str]:
        return tree_oids(GitFile(f.path, f.tree_oid) for f in self.files.values())

    @cached_property
    def dirs(self) -> list[str]:
        return sorted(d for d in self.tree_ids if d)

    def bytes_of(self, path: str) -> bytes:
        return self.files[path].read_bytes()


@dataclass
class FakeRepo:
    repo_type: str  # model | dataset
    repo_id: str
    created: datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    gated: bool | str = False  # False | "auto" | "manual"

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.commits:
            return self.commits[revision]
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = self.branches.get(name) if not revision.startswith("refs/tags/") else None
        sha = sha or (self.tags.get(name) if not revision.startswith("refs/heads/") else None)
        return self.commits.get(sha) if sha else None

    @property
    def main(self) -> Commit:
        return self.commits[self.branches["main"]]


# ------------------------------------------------------------------------------------------------
# the request log


@dataclass
class LoggedRequest:
    origin: str  # hub | cdn
    method: str
    path: str  # raw, still percent-encoded
    query: str
    authorization: str | None
    range: str | None
    at: float
    status: int | None = None
    kind: str | None = None  # info | tree | resolve | refs | cdn
    repo_id: str | None = None
    file: str | None = None
    sha256: str | None = None  # the content a resolve/cdn request is about
    bytes_sent: int = 0
    complete: bool = False  # the whole body (or range) was sent

    @property
    def is_content_get(self) -> bool:
        """A GET that started sending file bytes (not a 302, not an error)."""
        return self.method == "GET" and self.status in (200, 206) and self.sha256 is not None


class RequestLog:
    def __init__(self) -> None:
        self._entries: list[LoggedRequest] = []
        self._lock = threading.Lock()

    def add(self, entry: LoggedRequest) -> LoggedRequest:
        with self._lock:
            self._entries.append(entry)
        return entry

    def mark(self) -> int:
        with self._lock:
            return len(self._entries)

    def since(self, mark: int = 0) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries[mark:])

    def content_gets(self, sha256: str, mark: int = 0) -> list[LoggedRequest]:
        """Every GET that sent bytes of this content (from the Hub or the CDN)."""
        return [e for e in self.since(mark) if e.is_content_get and e.sha256 == sha256]

    def for_repo(self, repo_id: str, mark: int = 0) -> list[LoggedRequest]:
        return [e for e in self.since(mark) if e.repo_id == repo_id]


# ------------------------------------------------------------------------------------------------
# the hub


def _hub_date(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _error(status: int, code: str | None, message: str, **headers: str) -> JSONResponse:
    h = {"X-Error-Message": message, **headers}
    if code:
        h["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=h)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n``; None when absent; ValueError when unsatisfiable."""
    if not value:
        return None
    unit, _, spec = value.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if first == "":
        n = int(last)
        if n <= 0:
            raise ValueError(value)
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise ValueError(value)
    return start, min(end, size - 1)


class FakeHub:
    """The fake Hub and its CDN. ``start()`` serves both; ``url`` / ``cdn_url`` are their origins."""

    def __init__(self, *, page_size: int = 3, retry_after: int = 1) -> None:
        self.page_size = page_size
        self.retry_after = retry_after
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.tokens: set[str] = set()  # tokens that have accepted the terms of every gated repo
        self.log = RequestLog()
        self._blobs: dict[str, FakeFile] = {}  # sha256 -> content, for the CDN
        self._rate_limited: dict[str, int] = {}
        self._corrupt: set[str] = set()
        self._throttle: dict[str, float] = {}
        self._cut: dict[str, int] = {}
        self._pad: dict[str, bytes] = {}
        self._cut_ranged: dict[str, int] = {}
        self._pad_ranged: dict[str, bytes] = {}
        self._lock = threading.RLock()
        self._clock = 0
        self.hub_app = Starlette(routes=[Route("/{rest:path}", self._hub, methods=["GET", "HEAD", "POST"])])
        self.cdn_app = Starlette(routes=[Route("/{rest:path}", self._cdn, methods=["GET", "HEAD"])])
        self._servers: list[ServerThread] = []
        self.url = ""
        self.cdn_url = ""

    # -- lifecycle
    def start(self) -> "FakeHub":
        cdn = ServerThread(self.cdn_app, name="fake-cdn").start()
        hub = ServerThread(self.hub_app, name="fake-hub").start()
        self._servers = [hub, cdn]
        self.url, self.cdn_url = hub.url, cdn.url
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.stop()
        self._servers = []

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content
    def create_repo(
        self, repo_id: str, files: Mapping[str, bytes | Path | FakeFile], *, repo_type: str = "model",
        gated: bool | str = False, lfs: Iterable[str] = (), message: str = "initial commit",
    ) -> Commit:
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise ValueError(f"{repo_type} {repo_id} exists")
            self._clock += 1
            self.repos[(repo_type, repo_id)] = FakeRepo(repo_type, repo_id, self._now(), gated=gated)
            return self.commit(repo_id, files, repo_type=repo_type, lfs=lfs, message=message, base=False)

    def commit(
        self, repo_id: str, changes: Mapping[str, bytes | Path | FakeFile | None], *, repo_type: str = "model",
        branch: str = "main", lfs: Iterable[str] = (), message: str = "update", base: bool = True,
    ) -> Commit:
        """A new commit on ``branch``: the branch's files with ``changes`` applied (None deletes a file)."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            files: dict[str, FakeFile] = dict(repo.resolve(branch).files) if base and branch in repo.branches else {}
            forced = set(lfs)
            for path, content in changes.items():
                if content is None:
                    files.pop(path, None)
                elif isinstance(content, FakeFile):
                    files[path] = content
                else:
                    files[path] = FakeFile.of(path, content, lfs=True if path in forced else None)
            self._clock += 1
            tree = tree_oids(GitFile(f.path, f.tree_oid) for f in files.values())[""]
            sha = commit_oid(tree, f"{repo_id}: {message}", author="fake hub <hub@localhost>", timestamp=self._clock)
            commit = Commit(sha, dict(sorted(files.items())), message, self._now())
            repo.commits[sha] = commit
            repo.branches[branch] = sha
            for f in files.values():
                self._blobs.setdefault(f.sha256, f)
            return commit

    def tag(self, repo_id: str, name: str, sha: str, *, repo_type: str = "model") -> None:
        with self._lock:
            self.repo(repo_id, repo_type).tags[name] = sha

    def set_gated(self, repo_id: str, gated: bool | str, *, repo_type: str = "model") -> None:
        with self._lock:
            self.repo(repo_id, repo_type).gated = gated

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def _now(self) -> datetime:
        return datetime(2025, 1, 1, tzinfo=timezone.utc).replace(second=self._clock % 60, minute=self._clock // 60 % 60)

    # -- faults
    def rate_limit(self, repo_id: str, n: int) -> None:
        """The next ``n`` requests about ``repo_id`` (any endpoint of the Hub origin) get 429 + Retry-After."""
        with self._lock:
            self._rate_limited[repo_id] = n

    def corrupt(self, sha256: str, on: bool = True) -> None:
        with self._lock:
            (self._corrupt.add if on else self._corrupt.discard)(sha256)

    def throttle(self, sha256: str, bytes_per_second: float | None) -> None:
        with self._lock:
            if bytes_per_second is None:
                self._throttle.pop(sha256, None)
            else:
                self._throttle[sha256] = bytes_per_second

    def cut_once(self, sha256: str, after: int, *, ranged: bool = False) -> None:
        with self._lock:
            (self._cut_ranged if ranged else self._cut)[sha256] = after

    def pad(self, sha256: str, extra: bytes | None, *, ranged: bool = False) -> None:
        pads = self._pad_ranged if ranged else self._pad
        with self._lock:
            if extra is None:
                pads.pop(sha256, None)
            else:
                pads[sha256] = extra

    def clear_faults(self) -> None:
        with self._lock:
            self._pad.clear()
            self._rate_limited.clear()
            self._corrupt.clear()
            self._throttle.clear()
            self._cut.clear()
            self._pad_ranged.clear()
            self._cut_ranged.clear()

    # -- plumbing
    def _entry(self, origin: str, request: Request) -> LoggedRequest:
        raw = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1").split("?", 1)[0]
        return self.log.add(LoggedRequest(
            origin, request.method, raw, request.url.query, request.headers.get("authorization"),
            request.headers.get("range"), time.time(),
        ))

    def _take_rate_limit(self, repo_id: str) -> bool:
        with self._lock:
            left = self._rate_limited.get(repo_id, 0)
            if left > 0:
                self._rate_limited[repo_id] = left - 1
                return True
            return False

    async def _hub(self, request: Request) -> Response:
        entry = self._entry("hub", request)
        try:
            response = self._hub_route(request, entry)
        except Exception as exc:  # a bug in the fake must show, not hang a client
            response = _error(500, None, f"fake hub error: {type(exc).__name__}: {exc}")
        entry.status = response.status_code
        return response

    def _hub_route(self, request: Request, entry: LoggedRequest) -> Response:
        segs = entry.path.lstrip("/").split("/")
        if segs[0] == "api" and len(segs) >= 4 and segs[1] in ("models", "datasets"):
            repo_type, repo_id, rest = segs[1][:-1], f"{unquote(segs[2])}/{unquote(segs[3])}", segs[4:]
            entry.repo_id = repo_id
            if self._take_rate_limit(repo_id):
                return _error(429, None, "Rate limit reached, retry later", **{"Retry-After": str(self.retry_after)})
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                return _error(404, "RepoNotFound", "Repository not found")
            action = rest[0] if rest else None
            if action is None or action == "revision":
                entry.kind = "info"
                commit = repo.resolve(unquote(rest[1]) if len(rest) > 1 else "main")
                if commit is None:
                    return _error(404, "RevisionNotFound", "Invalid rev id")
                return JSONResponse(self._info(repo, commit, blobs=request.query_params.get("blobs") == "true"))
            if action == "tree" and len(rest) >= 2:
                entry.kind = "tree"
                commit = repo.resolve(unquote(rest[1]))
                if commit is None:
                    return _error(404, "RevisionNotFound", "Invalid rev id")
                folder = "/".join(unquote(s) for s in rest[2:]).strip("/")
                return self._tree(request, repo, commit, folder)
            if action == "refs":
                entry.kind = "refs"
                return JSONResponse({
                    "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()],
                    "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
                    "converts": [],
                })
            return _error(404, None, "Not found")
        if segs[0] == "api":
            return _error(404, None, "Not found")
        # /[datasets/]{org}/{name}/resolve/{rev}/{path}
        repo_type = "model"
        if segs[0] in ("datasets", "models"):
            repo_type, segs = segs[0][:-1], segs[1:]
        if len(segs) < 5 or segs[2] != "resolve":
            return _error(404, None, "Not found")
        repo_id = f"{unquote(segs[0])}/{unquote(segs[1])}"
        entry.repo_id, entry.kind = repo_id, "resolve"
        entry.file = "/".join(unquote(s) for s in segs[4:])
        if self._take_rate_limit(repo_id):
            return _error(429, None, "Rate limit reached, retry later", **{"Retry-After": str(self.retry_after)})
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if repo.gated:
            token = _bearer(request)
            if token is None:
                return _error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it "
                              "and be authenticated to access it. Please log in.")
            if token not in self.tokens:
                return _error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the "
                              "authorized list. Visit https://huggingface.co/{repo_id} to ask for access.")
        commit = repo.resolve(unquote(segs[3]))
        if commit is None:
            return _error(404, "RevisionNotFound", "Invalid rev id")
        f = commit.files.get(entry.file)
        if f is None:
            return _error(404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": commit.sha})
        entry.sha256 = f.sha256
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            sig = hashlib.sha256(f"{f.sha256}:{repo_id}".encode()).hexdigest()[:16]
            location = f"{self.cdn_url}/cdn/{f.sha256}?" + urlencode({"sig": sig, "filename": f.path.rsplit("/", 1)[-1]})
            entry.sha256 = None  # the bytes come from the CDN
            return Response(status_code=302, headers={
                **headers, "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size), "Location": location,
                "Content-Length": "0",
            })
        return self._serve(request, f, headers, entry)

    def _info(self, repo: FakeRepo, commit: Commit, *, blobs: bool) -> dict[str, Any]:
        card = commit.card or {}
        org = repo.repo_id.split("/")[0]
        tags: list[str] = []
        card_tags = card.get("tags")
        tags += [t for t in (card_tags if isinstance(card_tags, list) else [card_tags]) if isinstance(t, str)]
        if isinstance(card.get("library_name"), str):
            tags.append(card["library_name"])
        bases = card.get("base_model")
        tags += [f"base_model:{b}" for b in (bases if isinstance(bases, list) else [bases]) if isinstance(b, str)]
        if isinstance(card.get("license"), str):
            tags.append(f"license:{card['license']}")
        tags.append("region:us")

        def sibling(f: FakeFile) -> dict[str, Any]:
            item: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                item.update(size=f.size, blobId=f.tree_oid)
                if f.lfs:
                    item["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
            return item

        doc: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": org,
            "sha": commit.sha,
            "lastModified": _hub_date(commit.date),
            "createdAt": _hub_date(repo.created),
            "private": False,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "siblings": [sibling(f) for f in commit.files.values()],
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if card:
            doc["cardData"] = card
        if repo.repo_type == "model":
            doc["modelId"] = repo.repo_id
            for key in ("pipeline_tag", "library_name"):
                if isinstance(card.get(key), str):
                    doc[key] = card[key]
        return doc

    def _tree(self, request: Request, repo: FakeRepo, commit: Commit, folder: str) -> Response:
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
        tree_ids = commit.tree_ids
        if folder and folder not in tree_ids:
            return _error(404, "EntryNotFound", f"{folder} does not exist on {commit.sha}", **{"X-Repo-Commit": commit.sha})
        prefix = folder + "/" if folder else ""

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix):])

        entries: list[dict[str, Any]] = [
            {"type": "directory", "oid": tree_ids[d], "size": 0, "path": d} for d in commit.dirs if wanted(d)
        ]
        for f in commit.files.values():
            if wanted(f.path):
                item: dict[str, Any] = {"type": "file", "oid": f.tree_oid, "size": f.size, "path": f.path}
                if f.lfs:
                    item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
                entries.append(item)
        cursor = request.query_params.get("cursor")
        offset = int(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["o"]) if cursor else 0
        page = entries[offset : offset + self.page_size]
        response = JSONResponse(page)
        if offset + self.page_size < len(entries):
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            token = base64.urlsafe_b64encode(json.dumps({"o": offset + self.page_size}).encode()).decode().rstrip("=")
            params.append(("cursor", token))
            base = str(request.base_url).rstrip("/")
            response.headers["Link"] = f'<{base}{request.url.path}?{urlencode(params)}>; rel="next"'
        return response

    async def _cdn(self, request: Request) -> Response:
        entry = self._entry("cdn", request)
        entry.kind = "cdn"
        segs = entry.path.lstrip("/").split("/")
        if request.headers.get("authorization"):
            # Presigned object-store URLs refuse a second credential: a leaked Hub token fails here.
            response: Response = _error(400, None, "Only one auth mechanism allowed; an Authorization header was sent")
        elif len(segs) != 2 or segs[0] != "cdn" or segs[1] not in self._blobs:
            response = _error(404, None, "No such object")
        else:
            f = self._blobs[segs[1]]
            entry.sha256 = f.sha256
            headers = {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes",
                       "Content-Disposition": f"attachment; filename*=UTF-8''{quote(f.path.rsplit('/', 1)[-1])}"}
            response = self._serve(request, f, headers, entry)
        entry.status = response.status_code
        return response

    def _serve(self, request: Request, f: FakeFile, headers: dict[str, str], entry: LoggedRequest) -> Response:
        try:
            byte_range = _parse_range(request.headers.get("range"), f.size) if request.method == "GET" else None
        except ValueError:
            return _error(416, None, "Range not satisfiable", **{"Content-Range": f"bytes */{f.size}"})
        start, end, status = 0, f.size - 1, 200
        if byte_range is not None:
            start, end = byte_range
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        headers["Content-Length"] = str(end - start + 1)
        if request.method == "HEAD" or f.size == 0:
            if f.size == 0:
                entry.complete = True
            return Response(status_code=status, headers=headers, media_type="application/octet-stream")
        with self._lock:
            rate = self._throttle.get(f.sha256)
            flip = f.size // 2 if f.sha256 in self._corrupt else None
            if byte_range is None:
                cut, pad = self._cut.pop(f.sha256, None), self._pad.get(f.sha256, b"")
            else:
                cut, pad = self._cut_ranged.pop(f.sha256, None), self._pad_ranged.get(f.sha256, b"")
                cut = None if cut is None else start + cut
        if pad:
            del headers["Content-Length"]  # chunked: the body may differ from the announced size
        return StreamingResponse(self._body(f, start, end, rate, flip, cut, entry, pad), status_code=status,
                                 headers=headers, media_type="application/octet-stream")

    async def _body(self, f: FakeFile, start: int, end: int, rate: float | None, flip: int | None, cut: int | None,
                    entry: LoggedRequest, pad: bytes = b"") -> AsyncIterator[bytes]:
        pos = start
        chunk_size = _THROTTLED_CHUNK if rate else (4 * _CHUNK if f.source is not None else _CHUNK)
        async for chunk in f.chunks(start, end, chunk_size):
            if flip is not None and pos <= flip < pos + len(chunk):
                b = bytearray(chunk)
                b[flip - pos] ^= 0x01
                chunk = bytes(b)
            if cut is not None and pos + len(chunk) > cut:
                if cut > pos:
                    yield chunk[: cut - pos]
                    entry.bytes_sent += cut - pos
                raise ConnectionCut(f"fake hub: connection cut after {cut} bytes of {f.path}")
            yield chunk
            pos += len(chunk)
            entry.bytes_sent += len(chunk)
            if rate:
                await asyncio.sleep(len(chunk) / rate)
        if pad:
            yield pad
            entry.bytes_sent += len(pad)
        entry.complete = True
