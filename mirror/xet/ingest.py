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
from mirror.xet.store import XetFile, XetStore, checked_terms

log = logging.getLogger(__name__)
MAX_SHARD_BYTES = 64 * 1024 * 1024
DEDUP_XORBS = 1024  # at most this many xorbs (64 GiB of chunks, a ~64 MiB answer) in one dedup answer


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
        inserted = self.store.add_xorb(footer, stored)
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
        terms = checked_terms(info.file_hash, [(t.xorb_hash, t.chunk_start, t.chunk_end, t.range_hash, t.unpacked_size)
                                               for t in info.terms], self.footer)
        return XetFile(info.file_hash, info.sha256, info.size, terms)

    def dedup_answer(self, chunk_hash: str) -> bytes | None:
        """A shard with the xorb that holds ``chunk_hash`` and every other xorb of a stored file that uses it
        (up to DEDUP_XORBS): hf_xet asks about one chunk in 1024, so naming the xorb alone would let a
        fine-tune of a large model find only the few xorbs it happened to ask about. With the whole file's
        xorbs every unchanged chunk is found, as the Hub's answer (the shard that registered them) does."""
        xorb = self.store.dedup_xorb(chunk_hash)
        if xorb is None:
            return None
        record = self.store.xorb_file(xorb)
        others = sorted(record.xorbs - {xorb})[:DEDUP_XORBS - 1] if record is not None else []
        infos = []
        for x in [xorb, *others]:
            try:
                footer = self.footer(x)
                size = self.store.xorb_size(x)
            except (ObjectNotFoundError, formats.XetFormatError):
                size = None
            if size is not None:
                infos.append(formats.xorb_info(footer, size))
            elif x == xorb:
                return None
        return formats.dedup_shard(infos)


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
