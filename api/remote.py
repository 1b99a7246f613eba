"""The CLI's client of a hubgate server's REST API (``/registry/v1``): remote mode.

``HUBGATE_URL`` (or ``url`` in the config file) names the server and ``HUBGATE_TOKEN`` (else
``HF_TOKEN``) the caller: the request, decision, token, grant, group, visibility and audit commands then
act as that token's user, with its role, through the same API as curl. Errors come back as
``RemoteError`` with the server's message and the CLI exit code that fits the status.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

EXIT_FAILURE, EXIT_USAGE, EXIT_DENIED = 1, 2, 5


class RemoteError(Exception):
    """A remote call failed; ``message`` is the server's (or the network's), ``code`` the CLI exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def _exit_code(status: int) -> int:
    if status in (401, 403):
        return EXIT_DENIED
    if status in (400, 422):
        return EXIT_USAGE
    return EXIT_FAILURE


class RemoteClient:
    """Calls ``{url}/registry/v1/...`` with ``Authorization: Bearer <token>``."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 120.0) -> None:
        import httpx

        if not token:
            raise RemoteError("Remote mode (HUBGATE_URL is set) needs a token: set HUBGATE_TOKEN (or HF_TOKEN). "
                              "The first admin token is made on the server itself: "
                              "`hubgate --local token create --role admin`", EXIT_USAGE)
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url + "/registry/v1", timeout=timeout,
                                    headers={"authorization": f"Bearer {token}", "user-agent": "hubgate-cli/0.1.0"})

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, json=json,
                                            params={k: v for k, v in (params or {}).items() if v is not None})
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.url} (HUBGATE_URL): {exc}") from exc
        if response.status_code >= 400:
            try:
                doc = response.json()
                message = doc.get("message") or doc.get("error") or doc.get("detail") or response.text
            except ValueError:
                message = response.text[:300] or response.reason_phrase
            if isinstance(message, list):  # FastAPI's validation errors
                message = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in message)
            raise RemoteError(f"{response.status_code} from {self.url}: {message}", _exit_code(response.status_code))
        return response.json() if response.content else None

    @staticmethod
    def repo_path(repo_type: str, repo_id: str) -> str:
        return f"/repos/{quote(repo_type)}/{quote(repo_id, safe='/')}"
