"""Run scans in a separate, limited process, and turn every way that can fail into a blocked file.

Scanning is a denial-of-service surface (security.md §3.4: a 100 000-tensor checkpoint took 437 s in
one scanner, a 20 MB pickle 1-2.4 GB of RAM), and parsers of hostile bytes may have bugs. So the
parent never parses a scanned file: one child process (``child.py``) scans file after file, with a
CPU limit per file (``SIGXCPU``), an address-space limit, and a wall-clock deadline the parent
enforces by killing the child's process group. Fail closed:

* wall clock passed or ``SIGXCPU``: that file is ``scan.timeout`` (naming the limit); a fresh child
  takes the remaining files;
* the child dies otherwise: that file is ``scan.crashed`` (signal or exit code, and the tail of the
  child's stderr); a fresh child takes the rest;
* ``MemoryError`` in the child: that file is ``scan.memory``;
* the child answers something that is not the expected JSON line: every unfinished file is
  ``scan.protocol`` (a child that lies once cannot be trusted for the rest).

The child inherits no environment variable, no file descriptor but its pipes, and no current folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from .base import FileScan, ScanContext, ScanFinding, ScanItem
from .limits import ScanLimits

MAX_ANSWER = 64 << 20  # bytes of one answer line
STARTUP_SECONDS = 60.0  # interpreter start-up and imports, before any file's wall clock starts
_ROOT = str(Path(__file__).resolve().parent.parent.parent)
CHILD_COMMAND: tuple[str, ...] = (
    sys.executable, "-I", "-c",
    f"import sys; sys.path.insert(0, {_ROOT!r}); from mirror.scan.child import main; sys.exit(main())",
)
_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class _ChildGoneError(Exception):
    """The child exited or closed its pipes."""


class _ChildLiedError(Exception):
    """The child answered something other than one well-formed result for the file asked about."""


class _Child:
    """One running scan child and its pipes."""

    def __init__(self, command: Sequence[str]) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=_ENV, cwd="/",
            close_fds=True, start_new_session=True)
        self._buf = b""

    def start(self, ctx: ScanContext, limits: ScanLimits) -> None:
        """Hand the child its limits and the snapshot tree, and wait until it is ready.

        Raises ``_ChildGoneError`` if it dies, ``_ChildLiedError`` if it answers anything else or not in time.
        """
        self._send({"limits": limits.to_dict(), "tree": ctx.tree})
        line = self._read_line(time.monotonic() + STARTUP_SECONDS)
        if line is None or line.strip() != b'{"ready": true}':
            raise _ChildLiedError("did not start" if line is None else "unexpected greeting")

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _ChildGoneError from None

    def scan(self, item: ScanItem, wall_seconds: float) -> tuple[FileScan, bool] | None:
        """The child's answer and whether it exits after it; None if the wall clock ran out."""
        self._send({"item": asdict(item)})
        line = self._read_line(time.monotonic() + wall_seconds)
        if line is None:
            return None
        try:
            answer = json.loads(line)
            scan = FileScan.from_dict(answer["result"])
            exit_after = bool(answer.get("exit", False))
        except (ValueError, KeyError, TypeError) as e:
            raise _ChildLiedError(f"unparsable answer: {type(e).__name__}") from None
        if (scan.path, scan.sha256, scan.size) != (item.path, item.sha256, item.size):
            raise _ChildLiedError(f"answered for {scan.path!r} when asked for {item.path!r}")
        return scan, exit_after

    def _read_line(self, deadline: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _ChildGoneError
                self._buf += chunk
                if len(self._buf) > MAX_ANSWER:
                    raise _ChildLiedError("answer longer than the limit")
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def stop(self) -> int:
        """Kill the child's process group (it leads its own session) unless it was reaped; its return code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # unreaped here, so the id is still the child's
                os.killpg(self.proc.pid, signal.SIGKILL)
        rc = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return rc

    def reap(self) -> int:
        """Give a child that is exiting on its own a moment, then stop it; its return code."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        return self.stop()

    def stderr_tail(self, n: int = 500) -> str:
        self._stderr.seek(0, 2)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - n))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def close(self) -> None:
        self._stderr.close()


def _blocked(item: ScanItem, rule: str, message: str, **data: Any) -> FileScan:
    scan = FileScan(path=item.path, sha256=item.sha256, size=item.size, format="unknown")
    scan.findings.append(ScanFinding(rule, message, data=data))
    return scan


def _death(item: ScanItem, rc: int, limits: ScanLimits, tail: str) -> FileScan:
    if rc == -signal.SIGXCPU:
        return _blocked(item, "scan.timeout", f"scan used more than {limits.cpu_seconds} s of CPU",
                        limit="cpu_seconds", seconds=limits.cpu_seconds)
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
    if "MemoryError" in tail:
        return _blocked(item, "scan.memory", f"scan ran out of memory ({how})", limit="memory_bytes",
                        bytes=limits.memory_bytes)
    return _blocked(item, "scan.crashed", f"scan process died ({how}): {tail[-300:]}", returncode=rc)


def scan_items(items: Iterable[ScanItem], ctx: ScanContext, limits: ScanLimits | None = None, *,
               command: Sequence[str] = CHILD_COMMAND) -> list[FileScan]:
    """Scan every item in a sandboxed child; one ``FileScan`` per item, in order, never an exception
    for a hostile file. ``item.local_path`` must be readable by this user; it is made absolute here.

    ``items`` may be a generator that yields files as they become available (a sync scanning what it
    has stored while it fetches the rest): one child scans them all as they come.
    ``command`` starts the child (tests substitute misbehaving children); it must speak ``child.py``'s protocol.
    """
    limits = limits or ScanLimits()
    pending = iter(items)
    results: list[FileScan] = []
    child: _Child | None = None
    try:
        for item in pending:
            item = ScanItem(item.path, item.sha256, item.size, os.path.abspath(item.local_path))
            try:
                if child is None:
                    child = _Child(command)
                    child.start(ctx, limits)
                answer = child.scan(item, limits.wall_seconds)
            except _ChildGoneError:
                assert child is not None
                rc = child.reap()
                results.append(_death(item, rc, limits, child.stderr_tail()))
                child.close()
                child = None
                continue
            except _ChildLiedError as e:
                assert child is not None
                child.stop()
                results += [_blocked(i, "scan.protocol", f"scan process answered garbage ({e}); not trusted",
                                     reason=str(e)) for i in (item, *pending)]
                return results
            if answer is None:
                child.stop()
                child.close()
                child = None
                results.append(_blocked(item, "scan.timeout", f"scan took more than {limits.wall_seconds} s",
                                        limit="wall_seconds", seconds=limits.wall_seconds))
                continue
            scan, exit_after = answer
            results.append(scan)
            if exit_after:
                child.reap()
                child.close()
                child = None
        return results
    finally:
        if child is not None:
            child.stop()
            child.close()
