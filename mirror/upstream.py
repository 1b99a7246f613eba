"""The upstream Hub client: huggingface.co, a corporate proxy, or another hubgate (tiered mirrors).

Speaks the same wire protocol hubgate serves. Handles what the real Hub does: LFS files
answered with a 302 to another origin (fetched *without* the Authorization header),
paginated tree listings (absolute ``Link`` URLs), gated repos, and 429 with ``Retry-After``.

Every request and redirect hop is checked against the egress rules (mirror/egress.py): the upstream's
own origin and the allowlisted redirect hosts only, and every connection goes to an address that was
checked when it was made (the name is resolved here, not trusted from an earlier lookup). With an
HTTP(S) proxy from the environment the proxy resolves names: the URL rules still apply, the address
rules are the proxy's.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpcore
import httpx

from mirror.egress import EgressError, EgressPolicy, Target, parse_target
from mirror.telemetry import TELEMETRY, UPSTREAM_ERRORS, UPSTREAM_RETRIES
from registry.errors import HubgateError
from registry.types import RepoRef, RepoType, validate_commit, validate_path

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_MAX_REDIRECTS = 5


class UpstreamError(HubgateError):
    """The upstream failed or answered something hubgate cannot use."""


class UpstreamNotFoundError(UpstreamError):
    """The repo, revision or file does not exist upstream."""


class UpstreamGatedError(UpstreamError):
    """The repo is gated upstream and the configured token (if any) has no access."""


class UpstreamRefusedError(UpstreamError):
    """hubgate refused where the upstream sent it (a host or address the egress rules forbid) or what it
    answered (a file of another commit than the one being synced). Retrying does not help."""


@dataclass(frozen=True, slots=True)
class UpstreamFile:
    path: str
    size: int
    oid: str  # the tree's oid: git blob id of what git stores (the pointer for LFS files)
    lfs_sha256: str | None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, resolving names itself and connecting only to addresses the egress
    rules allow: the address checked is the address connected to (no second lookup to rebind)."""

    def __init__(self, inner: httpcore.NetworkBackend, policy: EgressPolicy, origin: Target) -> None:
        self._inner, self._policy, self._origin = inner, policy, origin

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        allowed: list[str] = []
        refusal: EgressError | None = None
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]
            try:
                self._policy.check_address(host, port, ipaddress.ip_address(address), self._origin)
            except EgressError as exc:
                refusal = refusal or exc
                continue
            if address not in allowed:
                allowed.append(address)
        if not allowed:
            raise UpstreamRefusedError(str(refusal) if refusal else f"{host} resolves to no address")
        error: Exception | None = None
        for address in allowed:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        raise UpstreamRefusedError("the upstream client does not connect to unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _guard(client: httpx.Client, policy: EgressPolicy, origin: Target) -> None:
    """Put the address check under the client's direct connections (proxied ones go through the proxy)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.NetworkBackend):
        # Fail closed: an httpx/httpcore that no longer has this shape must not leave connections unchecked.
        raise RuntimeError("cannot install the upstream address check on this httpx/httpcore version")
    pool._network_backend = _GuardedBackend(inner, policy, origin)  # type: ignore[union-attr]


@dataclass(frozen=True)
class UpstreamSpec:
    """What builds an equal client in another process (mirror/fetchpool.py): plain, picklable values."""

    base_url: str
    token: str | None = field(repr=False)
    egress: EgressPolicy
    timeout: float
    max_retries: int
    backoff_seconds: float
    max_backoff_seconds: float

    def connect(self) -> "HubUpstream":
        return HubUpstream(self.base_url, self.token, egress=self.egress, timeout=self.timeout,
                           max_retries=self.max_retries, backoff_seconds=self.backoff_seconds,
                           max_backoff_seconds=self.max_backoff_seconds)


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: a sync needs no session state, and httpx's cookie handling (a
    urllib request built for every response) was a tenth of the CPU of a small-file fetch."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class HubUpstream:
    def __init__(
        self, base_url: str, token: str | None = None, *, egress: EgressPolicy | None = None, timeout: float = 60.0,
        max_retries: int = 5, backoff_seconds: float = 1.0, max_backoff_seconds: float = 30.0,
    ) -> None:
        """``egress``: where the client may connect (default: the strict rules, no private addresses).
        Raises UpstreamRefusedError for a base URL the rules refuse outright (scheme, userinfo)."""
        self.base_url = base_url.rstrip("/")
        self._egress = egress or EgressPolicy()
        try:
            self._origin_target = parse_target(self.base_url)
        except EgressError as exc:
            raise UpstreamRefusedError(f"Upstream URL refused: {exc}") from exc
        self._token = token
        self._max_retries, self._backoff, self._max_backoff = max_retries, backoff_seconds, max_backoff_seconds
        self.spec = UpstreamSpec(self.base_url, token, self._egress, timeout, max_retries, backoff_seconds,
                                 max_backoff_seconds)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"user-agent": "hubgate/0.1"},
        )
        _guard(self._client, self._egress, self._origin_target)
        if not isinstance(getattr(self._client, "_cookies", None), httpx.Cookies):
            raise RuntimeError("cannot turn off cookies on this httpx version")
        self._client._cookies = _NoCookies()

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def close(self) -> None:
        self._client.close()

    # -- plumbing
    def _auth(self, url: str) -> dict[str, str]:
        if self._token and _origin(url) == _origin(self.base_url):
            return {"authorization": f"Bearer {self._token}"}
        return {}

    def _sleep_for(self, response: httpx.Response | None, attempt: int) -> float:
        if response is not None and response.headers.get("retry-after", "").isdigit():
            return min(float(response.headers["retry-after"]), self._max_backoff)
        return min(self._backoff * (2**attempt), self._max_backoff)

    def _check(self, url: str) -> None:
        try:
            self._egress.check_url(url, self._origin_target)
        except EgressError as exc:
            raise UpstreamRefusedError(f"Upstream request refused: {exc}") from exc

    def _check_commit(self, response: httpx.Response, url: str, commit: str | None) -> None:
        answered = response.headers.get("x-repo-commit")
        if commit is not None and answered is not None and answered != commit:
            response.close()
            raise UpstreamRefusedError(f"Upstream answered {url} with X-Repo-Commit {answered}, "
                                       f"but the commit being synced is {commit}")

    def _send(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, stream: bool = False,
        commit: str | None = None,
    ) -> httpx.Response:
        """One logical request: retries 408/429/5xx and network errors; follows redirects by hand,
        sending the token only to the upstream's own origin. Every hop is checked against the egress
        rules; with ``commit``, an ``X-Repo-Commit`` naming another commit is refused."""
        for attempt in range(self._max_retries + 1):
            target, response = url, None
            try:
                for _ in range(_MAX_REDIRECTS + 1):
                    self._check(target)
                    request = self._client.build_request(method, target, headers={**(headers or {}), **self._auth(target)})
                    response = self._client.send(request, stream=stream)
                    self._check_commit(response, target, commit)
                    if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                        response.close()
                        target = urljoin(target, response.headers["location"])
                        continue
                    break
                else:
                    raise UpstreamError(f"Too many redirects for {url}")
            except httpx.TransportError as exc:
                cause = type(exc).__name__
                if attempt == self._max_retries:
                    TELEMETRY.add(UPSTREAM_ERRORS, label=cause)
                    raise UpstreamError(f"Upstream unreachable for {url}: {exc}") from exc
                delay = self._sleep_for(None, attempt)
                # said at once: a request against an unreachable upstream is otherwise silent for a minute
                log.warning("upstream %s %s failed (%s: %s); retry %d of %d in %.1fs", method, url, cause, exc,
                            attempt + 1, self._max_retries, delay)
                TELEMETRY.add(UPSTREAM_RETRIES, label=cause)
                time.sleep(delay)
                continue
            assert response is not None
            if response.status_code in _RETRY_STATUS and attempt < self._max_retries:
                delay = self._sleep_for(response, attempt)
                log.warning("upstream %s %s -> %d, retry %d of %d in %.1fs", method, url, response.status_code,
                            attempt + 1, self._max_retries, delay)
                TELEMETRY.add(UPSTREAM_RETRIES, label=str(response.status_code))
                response.close()
                time.sleep(delay)
                continue
            if response.status_code >= 500 or response.status_code == 429:
                TELEMETRY.add(UPSTREAM_ERRORS, label=str(response.status_code))
            self._raise_for_status(response, url)
            return response
        raise AssertionError("unreachable")

    def _raise_for_status(self, response: httpx.Response, url: str) -> None:
        if response.status_code < 400:
            return
        code = response.headers.get("x-error-code", "")
        message = response.headers.get("x-error-message", "")
        response.close()
        if code == "GatedRepo" or (response.status_code in (401, 403) and code != "RepoNotFound"):
            hint = "" if self._token else " (no upstream token is configured)"
            raise UpstreamGatedError(f"Access to {url} refused upstream ({response.status_code}){hint}: {message}")
        if response.status_code in (401, 404):
            raise UpstreamNotFoundError(f"{code or 'Not found'} upstream: {url}")
        raise UpstreamError(f"Upstream answered {response.status_code} for {url}: {message}")

    def _api(self, repo: RepoRef, *parts: str) -> str:
        return f"{self.base_url}/api/{repo.type.plural}/{repo.id}" + "".join(f"/{p}" for p in parts)

    def _json(self, url: str) -> Any:
        response = self._send("GET", url)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(f"Upstream answered non-JSON for {url}") from exc

    # -- metadata
    def resolve(self, repo: RepoRef, revision: str) -> str:
        """The full commit sha ``revision`` names upstream today."""
        doc = self._json(self._api(repo, "revision", quote(revision, safe="")))
        sha = doc.get("sha") if isinstance(doc, dict) else None
        try:
            return validate_commit(str(sha))
        except HubgateError as exc:
            raise UpstreamError(f"Upstream gave no valid commit for {repo.id}@{revision}") from exc

    def repo_info(self, repo: RepoRef, commit: str) -> dict[str, Any]:
        doc = self._json(self._api(repo, "revision", commit))
        if not isinstance(doc, dict):
            raise UpstreamError(f"Upstream repo info for {repo.id} is not an object")
        return doc

    def tags(self, repo: RepoRef) -> set[str]:
        """Names of the repo's tags upstream (empty when the upstream cannot list refs)."""
        try:
            doc = self._json(self._api(repo, "refs"))
        except UpstreamNotFoundError:
            return set()
        tags = doc.get("tags") if isinstance(doc, dict) else None
        return {str(t.get("name")) for t in tags or [] if isinstance(t, dict)}

    def list_files(self, repo: RepoRef, commit: str) -> list[UpstreamFile]:
        """Every file at ``commit`` (recursive tree, all pages). Paths are validated: one bad name rejects the listing."""
        url: str | None = self._api(repo, "tree", commit) + "?recursive=true&expand=false"
        files: list[UpstreamFile] = []
        while url:
            response = self._send("GET", url)
            try:
                entries = response.json()
            except ValueError as exc:
                raise UpstreamError(f"Upstream answered non-JSON for {url}") from exc
            if not isinstance(entries, list):
                raise UpstreamError(f"Upstream tree of {repo.id}@{commit} is not a list")
            for e in entries:
                if not isinstance(e, dict) or e.get("type") != "file":
                    continue
                try:
                    path = validate_path(str(e["path"]))
                except HubgateError as exc:
                    raise UpstreamError(f"Upstream lists an unsafe path in {repo.id}: {exc.message}") from exc
                except KeyError as exc:
                    raise UpstreamError(f"Upstream tree of {repo.id}@{commit} has a file without a path") from exc
                try:
                    lfs = e.get("lfs") or None
                    files.append(UpstreamFile(path, int(e["size"]), str(e["oid"]), str(lfs["oid"]) if lfs else None))
                except (KeyError, TypeError, ValueError) as exc:
                    raise UpstreamError(f"Upstream tree entry {path} of {repo.id}@{commit} is malformed: {exc!r}") from exc
            url = response.links.get("next", {}).get("url")
        return files

    # -- bytes
    def file_url(self, repo: RepoRef, commit: str, path: str) -> str:
        prefix = "datasets/" if repo.type is RepoType.DATASET else ""
        return f"{self.base_url}/{prefix}{repo.id}/resolve/{commit}/{quote(path)}"

    @contextmanager
    def open(self, repo: RepoRef, commit: str, path: str, *, start: int = 0, end: int | None = None,
             chunk_size: int | None = 1024 * 1024) -> Iterator[Iterator[bytes]]:
        """Stream bytes [start, end] of a file (end inclusive; None = to the end) as raw chunks of ``chunk_size``
        (None: as the network delivers them, without re-chunking)."""
        headers = {"accept-encoding": "identity"}
        if start or end is not None:
            headers["range"] = f"bytes={start}-{'' if end is None else end}"
        response = self._send("GET", self.file_url(repo, commit, path), headers=headers, stream=True, commit=commit)
        try:
            if "range" in headers and response.status_code != 206:
                raise UpstreamError(f"Upstream ignored a Range request for {path} ({response.status_code})")
            yield response.iter_raw(chunk_size)
        finally:
            response.close()

    def read_small(self, repo: RepoRef, commit: str, path: str, *, max_bytes: int = 4 * 1024 * 1024) -> bytes:
        with self.open(repo, commit, path) as chunks:
            data = bytearray()
            for chunk in chunks:
                data += chunk
                if len(data) > max_bytes:
                    raise UpstreamError(f"{path} is larger than {max_bytes} bytes")
            return bytes(data)
