"""The access log's own writer (api/logs.py ``AccessWriter``): the very line hubgate's logging handler would
write, batched and flushed within half a second; any other handler in place gets the records through logging."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from api import logs

FIELDS = {"method": "HEAD", "route": "/{repo}/resolve/{rev}/{path}", "path": "/acme/x/resolve/main/a.bin",
          "status": 200, "bytes": 0, "duration_ms": 0.25, "actor": "ops-alice(7)", "client": "127.0.0.1"}
MESSAGE = "HEAD /acme/x/resolve/main/a.bin 200 0B 0.2ms ops-alice(7) route=/{repo}/resolve/{rev}/{path}"
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


@contextmanager
def served(level: str, fmt: str) -> Iterator[io.StringIO]:
    """hubgate's handler as the root's only one, as in ``hubgate serve`` (pytest's capture handlers, added for
    each test's call, out of the way), writing to a buffer."""
    buffer, saved_stderr, saved = io.StringIO(), sys.stderr, logging.root.handlers[:]
    sys.stderr, logging.root.handlers = buffer, []
    try:
        logs.configure(level, fmt)
        yield buffer
    finally:
        logs.ACCESS.flush()
        sys.stderr, logging.root.handlers = saved_stderr, saved
        logs.ACCESS.setup()


def through_logging(fmt: str) -> str:
    """The line logging itself writes for the same request (the writer's fallback)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(fmt))
    handler.addFilter(logs.RequestIdFilter())
    record = logging.LogRecord(logs.ACCESS_LOGGER, logging.INFO, __file__, 1, "%s", (MESSAGE,), None)
    for name, value in {**FIELDS, "request_id": "req-1"}.items():
        setattr(record, name, value)
    handler.handle(record)
    return out.getvalue().strip()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_line_is_what_the_logging_handler_writes(fmt: str) -> None:
    with served("info", fmt) as stderr:
        logs.ACCESS.line("req-1", dict(FIELDS), MESSAGE)
        logs.ACCESS.flush()
        written = stderr.getvalue().strip()
    expected = through_logging(fmt)
    if fmt == "json":
        got, want = json.loads(written), json.loads(expected)
        assert got.pop("time")[:16] == want.pop("time")[:16]  # to the minute: written a moment apart
        assert got == want
    else:
        assert STAMP.match(written) and STAMP.sub("", written) == STAMP.sub("", expected)


def test_lines_are_batched_and_reach_the_stream_within_half_a_second() -> None:
    with served("info", "text") as stderr:
        for i in range(3):
            logs.ACCESS.line(f"req-{i}", dict(FIELDS), MESSAGE)
        assert stderr.getvalue() == ""  # not one write per request
        deadline = time.monotonic() + 3
        while stderr.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [line.split(" [")[1].split("]")[0] for line in stderr.getvalue().splitlines()] == ["req-0", "req-1", "req-2"]


def test_another_handler_gets_the_records_through_logging() -> None:
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    with served("info", "text") as stderr:
        capture = Capture()
        logging.root.addHandler(capture)  # a test's capture, or an application that embeds hubgate
        try:
            logs.ACCESS.line("req-9", dict(FIELDS), MESSAGE)
        finally:
            logging.root.removeHandler(capture)
        assert "req-9" in stderr.getvalue()  # hubgate's handler wrote it at once, through logging
    assert [(r.name, r.getMessage(), r.request_id, r.status) for r in captured] == [  # type: ignore[attr-defined]
        (logs.ACCESS_LOGGER, MESSAGE, "req-9", 200)]


def test_above_info_the_access_log_is_off() -> None:
    with served("warning", "text"):
        assert not logs.ACCESS.enabled()
