"""One log format for every logger of the process (hubgate's, uvicorn's, alembic's, httpx's):
``HUBGATE_LOG_FORMAT=text|json`` at ``HUBGATE_LOG_LEVEL``, each record with the id of the HTTP request
being served (``-`` outside one).

* text: ``2026-12-01 10:00:00,123 INFO hubgate.access [a1b2c3d4-1f] HEAD /{repo}/resolve/{rev}/{path} 200 …``
* json: one object per line: ``time``, ``level``, ``logger``, ``request_id``, ``message``, the access
  log's fields (``method``, ``route``, ``path``, ``status``, ``bytes``, ``duration_ms``, ``actor``) and
  ``exc_info`` for a traceback.

The access log (logger ``hubgate.access``, one line per request at info) is written by
api/observability.py through ``ACCESS``: while hubgate's own handler is the only one (the usual case), it
formats the very line that handler would and writes lines in batches (at most ``_FLUSH_SECONDS`` late,
flushed at exit), which costs a request a few microseconds instead of logging's ~30 (HEAD rate 0.54 of
no access log through logging, measured by bench/metrics_bench.py). Any other handler (a test's capture,
an embedding application's) gets the records through logging as usual. Chatty libraries are held one
level above the chosen one (httpx logs every request at info) and alembic says nothing unless a migration
runs (registry/db.py logs that itself).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
from typing import Any

ACCESS_LOGGER = "hubgate.access"
ACCESS_FIELDS = ("method", "route", "path", "status", "bytes", "duration_ms", "actor", "client")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_QUIET = ("httpx", "httpcore", "httpx2", "httpcore2", "botocore", "boto3", "s3transfer", "urllib3", "filelock",
          "alembic", "hf_xet")
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
_FLUSH_SECONDS = 0.5
_FLUSH_LINES = 256


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


class AccessWriter:
    """Writes access lines as hubgate's handler would (``direct``), batched; else hands them to logging."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._handler: logging.Handler | None = None  # hubgate's handler, while it is the only one
        self._json = False
        self._pending: list[str] = []
        self._first = 0.0
        self._lock = threading.Lock()  # the pending lines
        self._flushing = threading.Lock()
        self._second, self._stamp = -1, ""
        self._flusher_pid = 0

    def setup(self) -> None:
        """Re-read the logging configuration (``configure`` calls it): write directly only while hubgate's
        handler is the one place access records would go."""
        self.flush()
        root = logging.getLogger()
        ours = [h for h in root.handlers if h.get_name() == "hubgate"]
        alone = (len(root.handlers) == 1 and len(ours) == 1 and not self._logger.handlers and self._logger.propagate
                 and not self._logger.filters and not root.filters)
        self._handler = ours[0] if alone else None
        self._json = isinstance(ours[0].formatter, JsonFormatter) if alone else False
        if alone and self._flusher_pid != os.getpid():  # one flusher per process (a forked one has none)
            self._flusher_pid = os.getpid()
            threading.Thread(target=self._flush_forever, name="access-log", daemon=True).start()

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def line(self, request_id: str, fields: dict[str, Any], message: str) -> None:
        """One request's line: ``fields`` are ACCESS_FIELDS (the JSON form's keys), ``message`` the text."""
        handler, handlers = self._handler, logging.root.handlers
        if handler is None or len(handlers) != 1 or handlers[0] is not handler or logging.INFO < handler.level:
            # another handler came (a test's capture, an application embedding hubgate): logging's way
            self._logger.info("%s", message, extra={**fields, "request_id": request_id})
            return
        now = time.time()
        if self._json:
            doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                   "level": "info", "logger": ACCESS_LOGGER, "request_id": request_id, "message": message, **fields}
            text = json.dumps(doc, ensure_ascii=False, default=str)
        else:  # logging.Formatter's default asctime: local time, then milliseconds
            second = int(now)
            if second != self._second:
                self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            text = f"{self._stamp},{int(now % 1 * 1000):03d} INFO {ACCESS_LOGGER} [{request_id}] {message}"
        with self._lock:
            if not self._pending:
                self._first = now
            self._pending.append(text)
            due = len(self._pending) >= _FLUSH_LINES or now - self._first >= _FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        # Taking and writing under one lock: the flush at exit waits for the flusher thread's write in progress
        # (a daemon thread, stopped at exit) instead of finding nothing left and losing what it took.
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
            handler = self._handler
            if not pending or handler is None:
                return
            handler.acquire()  # whole lines, never interleaved with another record's
            try:
                stream = sys.stderr
                stream.write("\n".join(pending) + "\n")
                stream.flush()
            except (OSError, ValueError):  # stderr gone (closed at exit): as logging does, nothing to raise
                pass
            finally:
                handler.release()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(_FLUSH_SECONDS)
            self.flush()


ACCESS = AccessWriter()
atexit.register(ACCESS.flush)


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
    ACCESS.setup()


def configure_from_environ(environ: Any = None) -> None:
    """``configure`` from HUBGATE_LOG_LEVEL / HUBGATE_LOG_FORMAT as they are (before the settings are loaded:
    a bad value is reported by the settings, naming it, so it falls back to info/text here)."""
    import os

    env = os.environ if environ is None else environ
    level = str(env.get("HUBGATE_LOG_LEVEL") or "info").strip().lower()
    fmt = str(env.get("HUBGATE_LOG_FORMAT") or "text").strip().lower()
    configure(level if level in ("debug", "info", "warning", "error") else "info", fmt if fmt in ("text", "json") else "text")
