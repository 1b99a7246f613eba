"""The Hub's write routes, answered 403 with a Hub-style message: hubgate is a read-only mirror.

Without this, ``hf upload`` / ``HfApi.upload_file`` / ``create_repo`` against hubgate got a bare 404
or 405. The Hub's clients show the ``X-Error-Message`` header (and the ``{"error": …}`` body) of a
refused call, so the message names hubgate and says what to do instead.
"""

from __future__ import annotations

import json
import re

from starlette.types import Receive, Scope, Send

from api.hub import wire

WRITE_METHODS = frozenset(("POST", "PUT", "DELETE", "PATCH"))
# POST /api/{type}s/{repo}/paths-info/{rev} is a read the Hub serves with POST; every other write route
# of the Hub (repos/create|delete|move, commit, preupload, branch, tag, settings, discussions, LFS batch,
# uploads under /resolve) is refused.
_READ_POSTS = re.compile(r"^/api/(?:models|datasets)/.+/paths-info/")
_ADMIN_PREFIXES = ("/registry/", "/-/", "/xet/")
MESSAGE = ("hubgate is a read-only mirror: it does not accept uploads, commits or repo changes "
           "({method} {path}). To get a repo here, ask for it: `hubgate request ORG/NAME` "
           "(or POST /registry/v1/requests); an admin approves it and hubgate mirrors it from the upstream.")


def is_write(path: str) -> bool:
    """Is a non-GET request to ``path`` one of the Hub's write routes (as opposed to hubgate's own API)?"""
    if path.startswith(_ADMIN_PREFIXES):
        return False
    return _READ_POSTS.match(path) is None


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope.get("path", "")
    message = MESSAGE.format(method=scope["method"], path=path[:200])
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 403, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (wire.X_ERROR_MESSAGE.lower().encode(), message.encode("ascii", "replace")),
    ]})
    await send({"type": "http.response.body", "body": body})
