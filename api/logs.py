"""One log format for every logger of the process (hubgate's, uvicorn's, alembic's, httpx's):
``HUBGATE_LOG_FORMAT=text|json`` at ``HUBGATE_LOG_LEVEL``, each record with the id of the HTTP request
being served (``-`` outside one).

* text: ``2026-12-01 10:00:00,123 INFO hubgate.access [a1b2c3d4-1f] HEAD /{repo}/resolve/{rev}/{path} 200 …``
* json: one object per line: ``time``, ``level``, ``logger``, ``request_id``, ``message``, the access
  log's fields (``method``, ``route``, ``path``, ``status``, ``bytes``, ``duration_ms``, ``actor``) and
  ``exc_info`` for a traceback.

The access log (logger ``hubgate.access``, one line per request at info) is written by
api/observability.py. Chatty libraries are held one level above the chosen one (httpx logs every
request at info) and alembic says nothing unless a migration runs (registry/db.py logs that itself).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS_LOGGER = "hubgate.access"
ACCESS_FIELDS = ("method", "route", "path", "status", "bytes", "duration_ms", "actor", "client")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_QUIET = ("httpx", "httpcore", "httpx2", "httpcore2", "botocore", "boto3", "s3transfer", "urllib3", "filelock",
          "alembic", "hf_xet")
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or ``-``) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        from api.request_context import current_request_id

        record.request_id = current_request_id() or getattr(record, "request_id", None) or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (a CLI run inside a test may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def _quiet_level(level: int) -> int:
    return max(level, logging.WARNING)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every logger's records to one stderr handler in ``fmt`` at ``level`` (any case).

    Called by the CLI before and after it loads the settings, and by ``hubgate serve`` in each worker
    process (through uvicorn's ``log_config``): repeated calls replace the handler, never add one."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RequestIdFilter())
    handler.set_name("hubgate")
    root = logging.getLogger()
    for old in list(root.handlers):  # ours, and a default one basicConfig may have left; never a test's capture
        if old.get_name() == "hubgate" or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()  # uvicorn installs its own handlers; ours is the root's
        logger.propagate = True
        logger.setLevel(numeric if name != "uvicorn.access" else logging.WARNING)  # ours is hubgate.access
    for name in _QUIET:
        logging.getLogger(name).setLevel(_quiet_level(numeric))
    logging.getLogger(ACCESS_LOGGER).setLevel(numeric)


def configure_from_environ(environ: Any = None) -> None:
    """``configure`` from HUBGATE_LOG_LEVEL / HUBGATE_LOG_FORMAT as they are (before the settings are loaded:
    a bad value is reported by the settings, naming it, so it falls back to info/text here)."""
    import os

    env = os.environ if environ is None else environ
    level = str(env.get("HUBGATE_LOG_LEVEL") or "info").strip().lower()
    fmt = str(env.get("HUBGATE_LOG_FORMAT") or "text").strip().lower()
    configure(level if level in ("debug", "info", "warning", "error") else "info", fmt if fmt in ("text", "json") else "text")
