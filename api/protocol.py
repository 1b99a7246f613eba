"""uvicorn's httptools protocol with the two limits it lacks: header-block size and header time.

uvicorn's httptools protocol has no header limit (one connection sending an endless header value grew
the server by hundreds of MiB; 100 KiB of headers were answered 200) and no deadline for a request's
headers (a client trickling one byte at a time holds a connection forever). h11 bounds the size
(``h11_max_incomplete_event_size``) but not the time, and is slower; so ``hubgate serve`` keeps
httptools and adds, per connection:

* **431** once a request's header block passes ``max_header_bytes``: counted before the parser sees
  each read that continues an incomplete block (so memory stays bounded by the cap plus one read),
  and measured exactly, as its request starts, for every block completed in such a read or in one
  read larger than the cap (a whole oversized block at once);
* **408 and close** when a request's headers are still incomplete between 3/4 of ``header_timeout``
  and ``header_timeout`` seconds after the request began or the connection opened (a connection that
  never sent a byte is just closed). The idle time between requests is uvicorn's ``timeout_keep_alive``.

The hot path pays a few attribute reads and one comparison per read, and no parser callback: uvicorn's
own state tells where a connection is, and one timer per connection, ticking four times per
``header_timeout``, does the watching.

It also offers the ASGI zero-copy send extension (``http.response.zerocopysend``) on plain TCP
connections: a response body taken from a file is handed to the kernel with ``os.sendfile``, so its bytes
never enter the process (no copy, no memory held per client, one system call per socket-buffer-full
instead of one Python round per piece). uvloop implements no ``loop.sendfile``, so ``_sendfile`` pumps it
with uvicorn's own flow control: while the socket takes bytes, ``sendfile`` runs; when it is full, one
small piece goes through the transport, whose buffer limit is set to zero for the response, so the loop
pauses the protocol until the socket has drained it, and ``sendfile`` goes on. TLS connections (the
socket under the transport would bypass the encryption) never see the extension.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import anyio.lowlevel
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger(__name__)

_LINE_OVERHEAD = 4  # ": " and CRLF per header line
_TICKS = 4  # deadline checks per header_timeout
ZEROCOPY = "http.response.zerocopysend"
_PROBE = 64 * 1024  # the piece that goes through the transport when the socket is full
_SENDFILE_MAX = 1 << 30  # bytes per sendfile call (Linux sends at most 2 GiB - 4 KiB anyway)
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, max_header_bytes: int = 65536, header_timeout: float = 20.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_header_bytes, self._header_timeout = max_header_bytes, header_timeout
        self._tick = header_timeout / _TICKS
        self._header_bytes = 0  # bytes of the reads that continued the pending header block of _counted
        self._counted: object = None  # the request (its scope) those bytes belong to
        self._pending: tuple[object, float] | None = None  # (request awaiting its headers, first seen at)
        self._timer: asyncio.TimerHandle | None = None

    # uvicorn's own state says where a connection is: ``scope`` is replaced when a request begins, and
    # ``cycle`` is made for it when its headers are complete. So no parser callback is needed to know.
    def _awaiting(self) -> object:
        """The request (its scope) whose headers are not complete yet; ``self`` for a connection that has
        not sent a request yet; None when no header block is pending."""
        scope = self.scope
        if scope is None:
            return self
        cycle = self.cycle
        return scope if cycle is None or cycle.scope is not scope else None

    # -- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        sock = transport.get_extra_info("socket")
        self._zerocopy = hasattr(os, "sendfile") and sock is not None and transport.get_extra_info("sslcontext") is None
        self._pending = (self, self.loop.time())
        self._timer = self.loop.call_later(self._tick, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        HttpToolsProtocol.connection_lost(self, exc)

    def on_headers_complete(self) -> None:
        HttpToolsProtocol.on_headers_complete(self)
        cycle = self.cycle
        # The request's cycle is made here and its ASGI task is only scheduled, not started: giving it the
        # zero-copy send now is in time for the app's first ``send``.
        if self._zerocopy and type(cycle) is RequestResponseCycle and cycle.scope is self.scope:
            cycle.__class__ = _ZeroCopyCycle
            cycle.scope.setdefault("extensions", {})[ZEROCOPY] = {}

    def data_received(self, data: bytes) -> None:
        scope = self.scope
        if scope is not None and (self.cycle is None or self.cycle.scope is not scope):
            # this read continues the header block of a request that began in an earlier read
            if scope is not self._counted:
                self._counted, self._header_bytes = scope, 0
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes and self._over_cap(data):
                return
            self._feed_checked(data)
        elif len(data) > self._max_header_bytes:
            self._feed_checked(data)  # one read can hold a whole header block over the cap
        else:
            HttpToolsProtocol.data_received(self, data)  # the usual case: nothing else to do

    def _feed_checked(self, data: bytes) -> None:
        """Feed ``data`` with every request whose headers complete in it measured exactly first: uvicorn
        takes ``self.app`` for each request as its headers complete."""
        app, self.app = self.app, _HeaderSizeCheck(self.app, self._max_header_bytes)
        try:
            HttpToolsProtocol.data_received(self, data)
        finally:
            self.app = app

    def _over_cap(self, data: bytes) -> bool:
        """Refuse (431) unless the header block ends in ``data`` within the cap (the rest being body)."""
        end = data.find(b"\r\n\r\n")
        if end >= 0 and self._header_bytes - len(data) + end + 4 <= self._max_header_bytes:
            return False
        self._refuse(431, f"Request header block larger than {self._max_header_bytes} bytes")
        return True

    # -- the header deadline
    def _check_deadline(self) -> None:
        """The connection's one timer, every header_timeout/4: a request (or a silent new connection) seen
        awaiting its headers at ticks 3/4 of the timeout apart is refused (so after 3/4 to 4/4 of it)."""
        self._timer = None
        if self.transport.is_closing():
            return
        now, awaiting = self.loop.time(), self._awaiting()
        if awaiting is None:
            self._pending = None
        elif self._pending is None or self._pending[0] is not awaiting:
            self._pending = (awaiting, now)
        elif now - self._pending[1] >= self._header_timeout - self._tick - 1e-3:
            if awaiting is self:
                self.transport.close()  # a connection that never sent a byte gets no answer
            else:
                self._refuse(408, f"Request headers not complete within {self._header_timeout:g} seconds")
            return
        self._timer = self.loop.call_later(self._tick, self._check_deadline)

    def _refuse(self, status: int, message: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        client = "%s:%d" % self.client if self.client else "?"
        log.warning("%s: %s; closing the connection (%d)", client, message, status)
        body = json.dumps({"error": message}).encode()
        self.transport.write(b"".join([
            b"HTTP/1.1 %d %s\r\n" % (status, b"Request Header Fields Too Large" if status == 431 else b"Request Timeout"),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: edge-%s\r\n" % os.urandom(6).hex().encode(),
            b"connection: close\r\n\r\n",
            body,
        ]))
        self.transport.close()


class _ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's request cycle, plus ``http.response.zerocopysend``: ``{"file": fd or file, "offset": int,
    "count": int, "more_body": bool}`` after ``http.response.start`` of a response with a content-length."""

    async def send(self, message: Message) -> None:  # type: ignore[override]
        if message["type"] != ZEROCOPY:
            await RequestResponseCycle.send(self, message)  # type: ignore[arg-type]
            return
        count, more_body = int(message["count"]), bool(message.get("more_body", False))
        if not self.response_started or self.response_complete or self.chunked_encoding or self.scope["method"] == "HEAD":
            raise RuntimeError(f"'{ZEROCOPY}' needs a started response with a content-length and a body")
        if count > self.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        file = message["file"]
        fd = file if isinstance(file, int) else file.fileno()
        if not self.disconnected:
            await _sendfile(self.transport, self.flow, fd, int(message.get("offset") or 0), count, self)
        if self.disconnected:
            return  # as uvicorn's own send: the client is gone, the app need not know
        self.expected_content_length -= count
        if not more_body:
            await RequestResponseCycle.send(self, {"type": "http.response.body", "body": b"", "more_body": False})


async def _sendfile(transport: asyncio.Transport, flow: FlowControl, fd: int, offset: int, count: int,
                    cycle: RequestResponseCycle) -> None:
    """Send ``count`` bytes of ``fd`` from ``offset`` on ``transport``'s socket, in order after what the
    transport holds (module docstring). Returns early when the client goes away; raises OSError for a file
    shorter than offset + count (the connection must then be aborted, not ended)."""
    sock = transport.get_extra_info("socket").fileno()
    end = offset + count
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0)  # any byte the transport holds pauses writing until it drains
    try:
        while offset < end and not cycle.disconnected:
            if flow.write_paused:
                await flow.drain()  # the loop resumes the protocol once the transport's buffer is empty
                continue
            if transport.get_write_buffer_size() == 0:
                try:
                    sent = os.sendfile(sock, fd, offset, min(end - offset, _SENDFILE_MAX))
                except BlockingIOError:
                    sent = -1
                except _GONE:  # the client went away; the loop may not have noticed yet
                    cycle.disconnected = True
                    transport.abort()
                    return
                if sent == 0:
                    raise OSError(f"the file ended at byte {offset}, before the {end} this response needs")
                offset += max(sent, 0)
                if offset >= end:
                    break
            piece = os.pread(fd, min(_PROBE, end - offset), offset)
            if not piece:
                raise OSError(f"the file ended at byte {offset}, before the {end} this response needs")
            transport.write(piece)  # kept by the transport (and the protocol paused) if the socket is full
            offset += len(piece)
            await anyio.lowlevel.checkpoint()  # one fast client does not keep the loop to itself
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)


class _HeaderSizeCheck:
    """The app for requests whose headers completed in a large read: 431 when the header block is over the cap."""

    def __init__(self, app: Any, cap: int) -> None:
        self.app, self.cap = app, cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 16
        size += sum(len(n) + len(v) + _LINE_OVERHEAD for n, v in scope["headers"])
        if scope["type"] != "http" or size <= self.cap:
            await self.app(scope, receive, send)
            return
        log.warning("%s: request header block of %d bytes, over %d; answered 431", _client(scope), size, self.cap)
        body = json.dumps({"error": f"Request header block larger than {self.cap} bytes"}).encode()
        await send({"type": "http.response.start", "status": 431, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", b"edge-" + os.urandom(6).hex().encode()), (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
