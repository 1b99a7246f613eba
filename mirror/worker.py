"""Workers: claim jobs from the DB queue, run them with a heartbeat, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror.sync import Syncer
from mirror.telemetry import SYNC_JOBS, TELEMETRY
from registry import jobs, workflow
from registry.db import session_scope
from registry.errors import ContentBlockedError, HubgateError, InvalidTransitionError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]


class Worker:
    def __init__(self, engine: Engine, syncer: Syncer, *, lease_seconds: float = 60.0, poll_seconds: float = 1.0) -> None:
        self.engine, self.syncer = engine, syncer
        self.lease_seconds, self.poll_seconds = lease_seconds, poll_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.handlers: dict[str, Handler] = {workflow.SYNC_JOB: self._sync}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_poll = time.monotonic()  # the claim loops' heartbeat, for readiness (health())
        self._running = 0  # jobs running now
        self._running_lock = threading.Lock()

    def _sync(self, payload: dict[str, Any]) -> None:
        request_pk = int(payload["request"])
        try:
            self.syncer.run(request_pk)
            TELEMETRY.add(SYNC_JOBS, label="available")
        except ContentBlockedError as exc:  # a decision, not a failure: the job is done, nothing to retry
            TELEMETRY.add(SYNC_JOBS, label="blocked")
            log.warning("sync of request %d blocked: %s", request_pk, exc.message)
            with session_scope(self.engine) as session:
                workflow.block(session, request_pk, exc.scan)
        except Exception as exc:
            message = exc.message if isinstance(exc, HubgateError) else f"{type(exc).__name__}: {exc}"
            TELEMETRY.add(SYNC_JOBS, label="failed")
            log.error("sync of request %d failed: %s", request_pk, message)
            with session_scope(self.engine) as session:
                workflow.fail(session, request_pk, message)
            raise

    def _reap(self) -> None:
        """Fail exhausted jobs and their requests in one transaction: no request is left ``syncing``."""
        with session_scope(self.engine) as session:
            for job in jobs.reap_exhausted(session):
                if job.kind != workflow.SYNC_JOB:
                    continue
                request_pk = int(job.payload["request"])
                log.error("sync of request %d lost its worker %d times: failing it", request_pk, job.attempts)
                try:
                    workflow.fail(session, request_pk,
                                  f"The sync lost its worker {job.attempts} times (crashed or killed); retry it")
                except InvalidTransitionError:
                    pass  # someone already decided (checked before anything was changed)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue had nothing for us."""
        self._reap()
        with Session(self.engine) as session:
            job = jobs.claim(session, self.worker_id, lease_seconds=self.lease_seconds)
        if job is None:
            return False
        assert job.pk is not None
        handler = self.handlers.get(job.kind)
        beat = _Heartbeat(self.engine, job.pk, self.worker_id, self.lease_seconds)
        with self._running_lock:
            self._running += 1
        try:
            if handler is None:
                raise RuntimeError(f"no handler for job kind {job.kind!r}")
            beat.start()
            handler(job.payload)
        except Exception as exc:  # the request already carries the error; the job just records it
            with session_scope(self.engine) as session:
                finished = jobs.fail(session, job.pk, self.worker_id, str(exc))
        else:
            with session_scope(self.engine) as session:
                finished = jobs.complete(session, job.pk, self.worker_id)
        finally:
            beat.stop()
            with self._running_lock:
                self._running -= 1
        if not finished:
            log.warning("job %d was taken over by another worker after this one's lease expired", job.pk)
        return True

    def run_forever(self) -> None:
        while not self._stop.is_set():
            self._last_poll = time.monotonic()
            try:
                busy = self.run_once()
            except Exception:  # a DB hiccup must not kill the worker thread
                log.exception("worker loop error")
                busy = False
            if not busy:
                self._stop.wait(self.poll_seconds)

    def start(self, threads: int = 1) -> None:
        for i in range(threads):
            t = threading.Thread(target=self.run_forever, name=f"hubgate-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def health(self) -> str | None:
        """None when the claim loops are alive and polling (or running a job), else what is wrong."""
        if not self._threads:
            return "the worker was not started"
        dead = sum(not t.is_alive() for t in self._threads)
        if dead and not self._stop.is_set():
            return f"{dead} of {len(self._threads)} worker threads stopped"
        quiet = time.monotonic() - self._last_poll
        if self._running == 0 and quiet > max(60.0, 20 * self.poll_seconds):
            return f"the worker has not polled the queue for {quiet:.0f}s"
        return None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop claiming jobs, then wait at most ``timeout`` seconds in all for the running ones.

        Returns False when a job was still running at the deadline. Its thread is a daemon, so the
        process may exit anyway; the job's lease then expires and the job returns to the queue.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


class _Heartbeat:
    """Renews the job's lease every third of its length, in a thread of its own."""

    def __init__(self, engine: Engine, job_pk: int, worker_id: str, lease_seconds: float) -> None:
        self._engine, self._pk, self._wid, self._lease = engine, job_pk, worker_id, lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                with Session(self._engine) as session:
                    jobs.heartbeat(session, self._pk, self._wid, lease_seconds=self._lease)
            except Exception:
                log.exception("heartbeat failed for job %d", self._pk)

    def stop(self) -> None:
        self._stop.set()
