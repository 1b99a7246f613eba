"""Workers: claim jobs from the DB queue, run them with a heartbeat, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror.sync import Syncer
from registry import jobs, workflow
from registry.db import session_scope
from registry.errors import HubgateError, InvalidTransitionError

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

    def _sync(self, payload: dict[str, Any]) -> None:
        request_pk = int(payload["request"])
        try:
            self.syncer.run(request_pk)
        except Exception as exc:
            message = exc.message if isinstance(exc, HubgateError) else f"{type(exc).__name__}: {exc}"
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
        if not finished:
            log.warning("job %d was taken over by another worker after this one's lease expired", job.pk)
        return True

    def run_forever(self) -> None:
        while not self._stop.is_set():
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

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)


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
