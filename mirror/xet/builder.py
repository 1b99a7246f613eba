"""Build the Xet representation of stored blobs: ``hf_xet`` chunks them, hubgate verifies and stores the result.

Why ``hf_xet`` and not our own chunker: content-defined chunking (a gear hash over every byte), LZ4 and
byte-grouping compression are CPU work that pure Python does at a few MB/s, and it must match the
reference client bit for bit. ``hf_xet`` is already installed with huggingface_hub (a hard dependency),
so hubgate points an ordinary ``hf_xet`` upload at a loopback CAS of its own (mirror/xet/ingest.py) and
trusts none of it: every xorb, shard and file hash is re-checked there, and here each file's
reconstruction is replayed (``verify_reconstruction``: read its xorb ranges, decompress, sha256) and
must give the blob's sha256 before it is published.

A blob is published as a Xet file only when all of that passed; a failure leaves it served as today
(plain HTTP) and is reported, never raised into the publish that asked for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mirror.errors import ObjectNotFoundError, StorageError
from mirror.storage.blobs import BlobStore
from mirror.xet import formats
from mirror.xet.ingest import IngestServer, IngestSession
from mirror.xet.store import XetFile, XetStore
from registry.manifest import Manifest

log = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 16 * 1024 * 1024
_STREAM_CHUNK = 8 * 1024 * 1024
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])  # so that ``-m mirror.xet.uploader`` imports


class XetBuildError(StorageError):
    """hf_xet, or the check of what it produced, failed for a blob."""


@dataclass
class BuildReport:
    built: list[str] = field(default_factory=list)  # sha256 of blobs that got a Xet representation now
    present: int = 0  # eligible blobs that already had one
    failed: dict[str, str] = field(default_factory=dict)  # sha256 -> why
    bytes_in: int = 0
    xorbs_new: int = 0
    xorb_bytes_new: int = 0
    xorbs_reused: int = 0
    seconds: float = 0.0

    def add(self, other: "BuildReport") -> None:
        self.built += other.built
        self.present += other.present
        self.failed |= other.failed
        for name in ("bytes_in", "xorbs_new", "xorb_bytes_new", "xorbs_reused", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class XetBuilder:
    """Builds Xet representations into ``store``. Blobs of ``threshold`` bytes or more qualify."""

    def __init__(self, store: BlobStore, *, threshold: int = DEFAULT_THRESHOLD, xet: XetStore | None = None,
                 verify: bool = True) -> None:
        self.blobs = store
        self.xet = xet or XetStore(store)
        self.threshold = threshold
        self.verify = verify

    def eligible(self, manifest: Manifest) -> list[tuple[str, int]]:
        """(sha256, size) of the manifest's blobs that qualify, each once, sorted."""
        return sorted({(f.sha256, f.size) for f in manifest.files if f.size >= self.threshold})

    def build_manifest(self, manifest: Manifest) -> BuildReport:
        """Give every qualifying blob of ``manifest`` a Xet representation. Never raises for a blob's
        failure (see ``BuildReport.failed``)."""
        return self.build_blobs(self.eligible(manifest))

    def build_blobs(self, blobs: Iterable[tuple[str, int]]) -> BuildReport:
        report = BuildReport()
        todo = []
        for sha256, size in blobs:
            if self.xet.file_hash_of(sha256) is not None:
                report.present += 1
            else:
                todo.append((sha256, size))
        if not todo:
            return report
        started = time.monotonic()
        try:
            self._build(todo, report)
        except Exception as exc:  # noqa: BLE001 - hf_xet raises its own types; the blobs stay plain
            log.exception("xet: building %d blobs failed", len(todo))
            for sha256, _ in todo:
                if sha256 not in report.built:
                    report.failed.setdefault(sha256, f"{type(exc).__name__}: {exc}")
        report.seconds = time.monotonic() - started
        log.info("xet: built %d blobs (%d bytes in, %d new xorbs / %d bytes, %d reused) in %.1fs; %d failed",
                 len(report.built), report.bytes_in, report.xorbs_new, report.xorb_bytes_new, report.xorbs_reused,
                 report.seconds, len(report.failed))
        return report

    def _build(self, todo: list[tuple[str, int]], report: BuildReport) -> None:
        state = IngestSession(self.xet)
        files: list[dict[str, object]] = []
        for sha256, size in todo:
            path = self.blobs.local_path(sha256)
            files.append({"path": str(path)} if path is not None and path.exists() else {"stream": size})
        with IngestServer(state) as server, tempfile.TemporaryDirectory(prefix="hubgate-xet-") as cache:
            hashes = _run_uploader(server.url, state.token, files, todo, self.blobs, cache)
        report.xorbs_new += state.xorbs_new
        report.xorb_bytes_new += state.xorb_bytes_new
        report.xorbs_reused += state.xorbs_existing
        for (sha256, size), file_hash in zip(todo, hashes):
            try:
                if file_hash is None:
                    raise XetBuildError("hf_xet reported no file hash" + (f" ({state.errors[0]})" if state.errors else ""))
                record = self._checked_candidate(state, sha256, size, file_hash)
                if self.verify:
                    verify_reconstruction(self.xet, record)
                self.xet.put_file(record)
                report.built.append(sha256)
                report.bytes_in += size
            except (StorageError, ObjectNotFoundError) as exc:
                log.error("xet: blob %s keeps its plain form only: %s", sha256, exc)
                report.failed[sha256] = str(exc)

    @staticmethod
    def _checked_candidate(state: IngestSession, sha256: str, size: int, file_hash: str) -> XetFile:
        record = state.candidates.get(file_hash)
        if record is None:
            raise XetBuildError(f"hf_xet reported file {file_hash} for blob {sha256}, but no verified shard lists it"
                                + (f" ({state.errors[0]})" if state.errors else ""))
        if record.sha256 != sha256 or record.size != size:
            raise XetBuildError(f"file {file_hash} is sha256 {record.sha256} / {record.size} bytes, "
                                f"not the blob's {sha256} / {size}")
        return record


def _run_uploader(endpoint: str, token: str, files: list[dict[str, object]], todo: list[tuple[str, int]],
                  blobs: BlobStore, cache: str) -> list[str | None]:
    """Run mirror/xet/uploader.py for ``files``; return the file hash hf_xet reported for each (None: none).
    Raises XetBuildError when the child fails as a whole."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_XET_", "HF_HUB_"))}
    env["HF_XET_CACHE"] = cache
    env.setdefault("RUST_LOG", "error")
    proc = subprocess.Popen([sys.executable, "-m", "mirror.xet.uploader", endpoint], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=_PROJECT_ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps({"token": token, "files": files}).encode() + b"\n")
        for item, (sha256, _) in zip(files, todo):
            if "stream" in item:
                with blobs.open(sha256) as f:
                    while chunk := f.read(_STREAM_CHUNK):
                        proc.stdin.write(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child failed early: its answer says why
    hashes: list[str | None] = [None] * len(files)
    error = None
    for line in proc.stdout:
        msg = json.loads(line)
        if "index" in msg:
            hashes[msg["index"]] = msg["file_hash"]
        elif "error" in msg:
            error = msg["error"]
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0 or error:
        raise XetBuildError(f"hf_xet upload failed: {error or stderr.strip()[-500:] or f'exit {proc.returncode}'}")
    return hashes


def iter_reconstruction(xet: XetStore, record: XetFile) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk, decompressed from the stored xorbs in term order (at most ~64 MiB of
    xorb data in memory). Raises XetFormatError (a chunk that does not decode as its footer says),
    ObjectNotFoundError (a xorb is gone)."""
    for term in record.terms:
        footer = xet.xorb_footer(term.xorb)
        for start in range(term.chunk_start, term.chunk_end, 1024):
            end = min(start + 1024, term.chunk_end)
            first, last = footer.byte_range(start, end)
            with xet.open_xorb(term.xorb, first, last - first + 1) as f:
                data = f.read(last - first + 1)
            yield from formats.iter_chunks(data, footer, start, end, base=first)


def verify_reconstruction(xet: XetStore, record: XetFile) -> None:
    """Replay ``record`` from the stored xorbs: every chunk decompressed, in order; their sha256 must be the
    record's. Raises XetFormatError (a mismatch), ObjectNotFoundError (a xorb is gone)."""
    h = hashlib.sha256()
    total = 0
    for chunk in iter_reconstruction(xet, record):
        h.update(chunk)
        total += len(chunk)
    if total != record.size or h.hexdigest() != record.sha256:
        raise formats.XetFormatError(f"file {record.file_hash} reconstructs to {total} bytes with sha256 "
                                     f"{h.hexdigest()}, not {record.size} bytes of {record.sha256}")
