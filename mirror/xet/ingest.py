"""A loopback CAS that receives what ``hf_xet`` uploads while hubgate builds Xet representations.

hubgate lets ``hf_xet`` (Rust: content-defined chunking, hashing, compression, xorb packing) do the
work of a Xet upload, pointed at this server on 127.0.0.1 with a random one-time token. Every xorb is
verified (each chunk decompressed and hashed, then the xorb hash) before it is stored under
``xorbs/…``; every shard is checked against the xorbs it references (term ranges, term verification
hashes, the file hash over all chunk hashes, the size) before its files become *candidates*: the
builder (mirror/xet/builder.py) publishes a candidate only once it matches the blob it came from.

Endpoints (Xet Protocol Specification 1.1.0, CAS API): ``POST /v1/xorbs/default/{hash}``,
``POST /v1/shards`` (``/v2/shards`` answers 404, so the client falls back to v1),
``GET /v1/chunks/default-merkledb/{hash}`` (global dedup, answered from the store's dedup index, so a
fine-tune's unchanged chunks are found in its base model's xorbs), ``POST /v1/telemetry``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mirror.errors import ObjectNotFoundError
from mirror.xet import formats, hashing
from mirror.xet.store import XetFile, XetStore, XetTerm

log = logging.getLogger(__name__)
MAX_SHARD_BYTES = 64 * 1024 * 1024
DEDUP_MODULUS = 1024


def is_dedup_eligible(raw_chunk_hash: bytes) -> bool:
    """The spec's global-dedup eligibility: the hash's last 8 bytes, little-endian, divisible by 1024."""
    return int.from_bytes(raw_chunk_hash[24:32], "little") % DEDUP_MODULUS == 0


class IngestSession:
    """What one build session received and verified. Thread-safe."""

    def __init__(self, store: XetStore) -> None:
        self.store = store
        self.token = secrets.token_urlsafe(32)
        self.lock = threading.Lock()
        self.footers: dict[str, formats.XorbFooter] = {}
        self.candidates: dict[str, XetFile] = {}  # file hash -> verified reconstruction, not yet published
        self.xorbs_new = 0
        self.xorb_bytes_new = 0
        self.xorbs_existing = 0
        self.errors: list[str] = []

    def footer(self, xorb_hash: str) -> formats.XorbFooter:
        with self.lock:
            hit = self.footers.get(xorb_hash)
        return hit if hit is not None else self.store.xorb_footer(xorb_hash)

    def receive_xorb(self, xorb_hash: str, data: bytes) -> bool:
        """Verify and store a xorb; False when it was already stored. Raises XetFormatError."""
        footer, stored = formats.verify_upload(data, xorb_hash)
        inserted = not self.store.has_xorb(xorb_hash)
        if inserted:
            self.store.put_xorb(xorb_hash, stored)
            for i, h in enumerate(footer.chunk_hashes):
                if i == 0 or is_dedup_eligible(h):
                    self.store.put_dedup_chunk(hashing.text(h), xorb_hash)
        self.store.remember_footer(footer)
        with self.lock:
            self.footers[xorb_hash] = footer
            if inserted:
                self.xorbs_new += 1
                self.xorb_bytes_new += len(stored)
            else:
                self.xorbs_existing += 1
        return inserted

    def receive_shard(self, data: bytes) -> None:
        """Verify a shard's files against their xorbs; store it; keep its files as candidates.
        Raises XetFormatError, ObjectNotFoundError (a referenced xorb is missing)."""
        shard = formats.parse_shard(data)
        records = [self._checked(f) for f in shard.files]
        shard_sha = hashlib.sha256(data).hexdigest()
        self.store.put_shard(shard_sha, data)
        with self.lock:
            for r in records:
                self.candidates[r.file_hash] = XetFile(r.file_hash, r.sha256, r.size, r.terms, shard_sha)

    def _checked(self, info: formats.FileInfo) -> XetFile:
        if info.sha256 is None:
            raise formats.XetFormatError(f"file {info.file_hash}: the shard carries no sha256")
        entries: list[tuple[bytes, int]] = []
        terms = []
        for t in info.terms:
            footer = self.footer(t.xorb_hash)
            if t.chunk_end > footer.num_chunks:
                raise formats.XetFormatError(f"file {info.file_hash}: chunk range past the end of xorb {t.xorb_hash}")
            hashes = footer.chunk_hashes[t.chunk_start:t.chunk_end]
            if t.range_hash is not None and hashing.range_hash(hashes) != t.range_hash:
                raise formats.XetFormatError(f"file {info.file_hash}: term verification hash mismatch")
            sizes = tuple(footer.unpacked_size(i) for i in range(t.chunk_start, t.chunk_end))
            if sum(sizes) != t.unpacked_size:
                raise formats.XetFormatError(f"file {info.file_hash}: term size disagrees with xorb {t.xorb_hash}")
            entries += zip(hashes, sizes)
            first, last = footer.byte_range(t.chunk_start, t.chunk_end)
            terms.append(XetTerm(t.xorb_hash, t.chunk_start, t.chunk_end, first, last, sizes))
        if hashing.text(hashing.file_hash(entries)) != info.file_hash:
            raise formats.XetFormatError(f"file {info.file_hash}: file hash does not match its chunks")
        return XetFile(info.file_hash, info.sha256, info.size, tuple(terms))

    def dedup_answer(self, chunk_hash: str) -> bytes | None:
        xorb = self.store.dedup_xorb(chunk_hash)
        if xorb is None:
            return None
        try:
            footer = self.footer(xorb)
            size = self.store.xorb_size(xorb)
        except (ObjectNotFoundError, formats.XetFormatError):
            return None
        if size is None:
            return None
        return formats.dedup_shard([formats.xorb_info(footer, size)])


class _Handler(BaseHTTPRequestHandler):
    server: "IngestServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("xet ingest: " + format, *args)

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.session.token}"
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self._reply(401, b'{"error":"unauthorized"}')
        return False

    def _body(self, limit: int) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > limit:
            self._reply(413 if length and length.isdigit() else 411, b'{"error":"bad length"}')
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self._authorized():
            return
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        # the spec names the prefix default-merkledb; hf_xet 1.8 sends its default prefix, "default"
        if len(parts) == 4 and parts[:2] == ["v1", "chunks"] and parts[2] in ("default-merkledb", "default") \
                and hashing.is_hash(parts[3]):
            answer = self.server.session.dedup_answer(parts[3])
            if answer is None:
                self._reply(404, b'{"error":"not found"}')
            else:
                self._reply(200, answer, "application/octet-stream")
            return
        self._reply(404, b'{"error":"not found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self._body(formats.MAX_XORB_BYTES)  # read whole before answering, so the connection stays usable
        if body is None or not self._authorized():
            return
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        session = self.server.session
        try:
            if len(parts) == 4 and parts[:3] == ["v1", "xorbs", "default"] and hashing.is_hash(parts[3]):
                inserted = session.receive_xorb(parts[3], body)
                self._reply(200, json.dumps({"was_inserted": inserted}).encode())
            elif parts == ["v1", "shards"] and len(body) <= MAX_SHARD_BYTES:
                session.receive_shard(body)
                self._reply(200, b'{"result":1}')
            elif parts == ["v1", "telemetry"]:
                self._reply(200, b"{}")
            else:  # /v2/shards too: the client then falls back to /v1/shards
                self._reply(404, b'{"error":"not found"}')
        except (formats.XetFormatError, ObjectNotFoundError) as exc:
            with session.lock:
                session.errors.append(str(exc))
            log.error("xet ingest refused %s: %s", self.path, exc)
            self._reply(400, json.dumps({"error": str(exc)}).encode())


class IngestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, session: IngestSession) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.session = session
        self._thread = threading.Thread(target=self.serve_forever, name="xet-ingest", daemon=True)

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("xet ingest: connection from %s ended with an error", client_address, exc_info=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "IngestServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)
