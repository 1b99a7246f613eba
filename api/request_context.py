"""The id of the HTTP request being served, for logs and audit entries (set once per request by the app)."""

from __future__ import annotations

from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("hubgate_request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


# set_request_id(value) -> token sets the id for the current context; reset_request_id(token) undoes it.
# The edge (api/edge.py) calls both on every request, the resolve hot path included, so they are the
# ContextVar's own methods rather than wrappers (a call layer each: measurable on a HEAD).
set_request_id = _request_id.set
reset_request_id = _request_id.reset
