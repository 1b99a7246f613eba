"""Counters the byte layer keeps for the operators' metrics (api/observability.py exposes them).

Plain numbers behind one lock, process-wide like the ``logging`` module's loggers: a sync, an upstream
retry or a scrub adds to them wherever it runs (``hubgate serve``'s in-process worker, ``hubgate worker``),
and whatever serves ``/metrics`` in that process reads them. Nothing here knows about Prometheus.
"""

from __future__ import annotations

import threading
from collections import Counter


class Telemetry:
    """``add(name, n, label)``: counter ``name`` (with one optional label value) grows by ``n``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, name: str, n: float = 1, label: str = "") -> None:
        with self._lock:
            self._counts[(name, label)] += n

    def snapshot(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._counts)


TELEMETRY = Telemetry()

# names (label in brackets)
SYNC_BYTES = "sync_bytes"  # bytes downloaded from the upstream by syncs
SYNC_FILES = "sync_files"  # files downloaded and verified by syncs
SYNC_JOBS = "sync_jobs"  # [outcome: available | failed | blocked]
UPSTREAM_ERRORS = "upstream_errors"  # [kind: http status, or the network error's class]: gave up
UPSTREAM_RETRIES = "upstream_retries"  # [cause]: retried
SCRUB_BLOBS = "scrub_blobs"  # [result: ok | corrupt | missing]
