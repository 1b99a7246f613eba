"""Fixtures for the web pages (api/ui): hubgate instances on 127.0.0.1 with the fake Hub as upstream
(tests/sync/conftest.py), a form-speaking HTTP client (``Web``), and repo builders with hostile content.

``Web`` is a plain httpx client that keeps the session cookie and reads the CSRF token from the pages,
like a browser without JavaScript; the browser suite (test_browser.py) drives real Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sync.conftest import (  # noqa: F401  (fixtures re-exported for this folder)
    Hubgate,
    fake_hub,
    hf_cache,
    hubgate,
    make_hubgate,
    model_files,
    tiny_files,
    tiny_folder,
    unique_repo,
    wait_for,
)

CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')

HOSTILE_CARD = b"""---
license: mit
library_name: transformers
pipeline_tag: text-generation
tags:
- hostile
---
# A model card that tries everything

<script>window.__pwned = "script"; alert("script")</script>

<img src="x" onerror="window.__pwned = 'onerror'; alert('onerror')">

<a href="javascript:window.__pwned='link';alert('link')" id="jslink">click me</a>

[markdown link](javascript:window.__pwned='md')

<iframe src="javascript:alert('iframe')"></iframe>
<iframe srcdoc="<script>parent.__pwned='srcdoc'</script>"></iframe>

<svg onload="window.__pwned='svg'"><circle r="4"/></svg>

<style>body { display: none }</style>

<form action="/-/logout" method="post"><button>free stuff</button></form>

<div style="position:fixed" onmouseover="window.__pwned='hover'">hover</div>

<object data="javascript:alert(1)"></object><embed src="javascript:alert(1)">

<details open ontoggle="window.__pwned='toggle'"><summary>toggle</summary>x</details>

Plain **markdown** still renders, with a [relative link](docs/usage.md) and a table:

| column | value |
| --- | --- |
| a | 1 |
"""


class Web:
    """A browser without JavaScript: cookies, forms with their CSRF token, no redirects followed."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60)
        self.csrf: str | None = None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def login(self, token: str, *, expect: int = 303) -> httpx.Response:
        page = self.client.get("/-/login")
        match = CSRF_RE.search(page.text)
        assert match, page.text[:500]
        r = self.client.post("/-/login", data={"csrf": match.group(1), "token": token, "next": "/-/requests"})
        assert r.status_code == expect, r.text[:2000]
        if expect == 303:
            self.csrf = self.form_token()
        return r

    def form_token(self, path: str = "/-/requests") -> str:
        page = self.client.get(path)
        match = CSRF_RE.search(page.text)
        assert match, page.text[:500]
        return match.group(1)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool | str = True,
             **kwargs: Any) -> httpx.Response:
        fields = dict(data or {})
        if csrf is True:
            fields["csrf"] = self.csrf
        elif isinstance(csrf, str):
            fields["csrf"] = csrf
        return self.client.post(path, data=fields, **kwargs)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def web() -> Iterator[Callable[[Hubgate], Web]]:
    made: list[Web] = []

    def make(hg: Hubgate) -> Web:
        w = Web(hg.url)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def publish(hg: Hubgate, hub: Any, files: dict[str, bytes], repo_id: str | None = None,
            **request: Any) -> dict[str, Any]:
    """Put ``files`` upstream (the fake Hub), request, approve and sync them through the REST API; the request."""
    repo_id = repo_id or unique_repo("ui")
    hub.create_repo(repo_id, files, repo_type=request.get("repo_type", "model"))
    doc = hg.request(repo_id, **request)
    hg.approve(doc["id"])
    hg.sync()
    doc = hg.get_request(doc["id"])
    assert doc["state"] == "available", doc
    return doc
