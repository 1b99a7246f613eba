"""An upstream whose tree listing is malformed: every case is an UpstreamError naming the repo,
never a KeyError/TypeError/ValueError from deep inside the sync (a live server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fakes.server import ServerThread
from mirror.egress import EgressPolicy
from mirror.upstream import HubUpstream, UpstreamError
from registry.types import RepoRef

COMMIT = "a" * 40
TREES: dict[str, Response] = {
    "not-json": PlainTextResponse("<html>maintenance</html>"),
    "not-a-list": JSONResponse({"error": "odd"}),
    "no-size": JSONResponse([{"type": "file", "path": "a.bin", "oid": "b" * 40}]),
    "bad-size": JSONResponse([{"type": "file", "path": "a.bin", "oid": "b" * 40, "size": "big"}]),
    "bad-lfs": JSONResponse([{"type": "file", "path": "a.bin", "oid": "b" * 40, "size": 3, "lfs": "yes"}]),
    "no-path": JSONResponse([{"type": "file", "oid": "b" * 40, "size": 3}]),
    "unsafe": JSONResponse([{"type": "file", "path": "../etc/passwd", "oid": "b" * 40, "size": 3}]),
}


async def tree(request: Request) -> Response:
    return TREES[request.path_params["name"]]


@pytest.fixture(scope="module")
def upstream() -> Iterator[HubUpstream]:
    app = Starlette(routes=[Route("/api/models/acme/{name}/tree/{commit}", tree)])
    with ServerThread(app, name="malformed-upstream") as server:
        client = HubUpstream(server.url, max_retries=0, egress=EgressPolicy(allow_private=True))
        yield client
        client.close()


@pytest.mark.parametrize("name", sorted(TREES))
def test_a_malformed_tree_is_an_upstream_error_naming_the_repo(upstream: HubUpstream, name: str) -> None:
    with pytest.raises(UpstreamError, match=f"acme/{name}|non-JSON"):
        upstream.list_files(RepoRef.parse("model", f"acme/{name}"), COMMIT)


def test_a_well_formed_tree_lists_its_files(upstream: HubUpstream) -> None:
    TREES["good"] = JSONResponse([
        {"type": "directory", "path": "sub", "oid": "c" * 40},
        {"type": "file", "path": "sub/a.bin", "oid": "b" * 40, "size": 3, "lfs": {"oid": "d" * 64, "size": 3}},
        {"type": "file", "path": "b.txt", "oid": "e" * 40, "size": 1},
    ])
    files = upstream.list_files(RepoRef.parse("model", "acme/good"), COMMIT)
    assert [(f.path, f.size, f.oid, f.lfs_sha256) for f in files] == [
        ("sub/a.bin", 3, "b" * 40, "d" * 64), ("b.txt", 1, "e" * 40, None)]
