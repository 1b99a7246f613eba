"""``hubgate serve`` sends local blobs with ``sendfile`` (api/protocol.py's zero-copy send) once 16 streams
are sending from mapped windows (api/hub/streaming.py): the bytes, the ranges, the connection's state after
such a response, slow and vanishing clients, and memory."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from helpers.cluster import rss_bytes

from .conftest import Served, run, write_folder

SIZE = 48 * 1024 * 1024 + 12345
PATH = "/acme/zc/resolve/main/weights.bin"


@pytest.fixture
def served(serve: Callable[..., Served], tmp_path: Path) -> tuple[Served, bytes]:
    data = os.urandom(SIZE)
    folder = write_folder(tmp_path / "src", {"weights.bin": data, "config.json": b'{"a": 1}\n'})
    hub = serve()
    result = run(hub.env, "import", str(folder), "--repo", "acme/zc")
    assert result.returncode == 0, result.stderr
    return hub, data


def _raw_get(url: str, path: str, *, rcvbuf: int | None = None, headers: str = "") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
    return sock


def _read_response(sock: socket.socket, *, pace: float = 0.0) -> tuple[bytes, bytes]:
    """(head, body) of one response with a content-length, read at ``pace`` seconds per 64 KiB if given."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, body = buf.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    parts, got = [body], len(body)
    while got < length:
        chunk = sock.recv(min(65536, length - got))
        assert chunk, f"connection closed after {got} of {length} bytes"
        parts.append(chunk)
        got += len(chunk)
        if pace:
            time.sleep(pace)
    return head, b"".join(parts)


def _rchar(pid: int) -> int:
    """Bytes the process read through system calls (read, pread, sendfile's input); a mapped file counts nothing."""
    line = next(x for x in Path(f"/proc/{pid}/io").read_text().splitlines() if x.startswith("rchar:"))
    return int(line.split()[1])


MAPPED_STREAMS = 16  # api/hub/streaming.py


@contextmanager
def busy(hub: Served, n: int = MAPPED_STREAMS) -> Iterator[None]:
    """``n`` downloads held open (their clients read nothing more), so that the next ones go out with sendfile."""
    socks = [_raw_get(hub.url, PATH, rcvbuf=4096) for _ in range(n)]
    for s in socks:
        s.recv(1024)  # its response has started
    try:
        yield
    finally:
        for s in socks:
            s.close()


def test_one_stream_uses_mapped_windows_and_the_seventeenth_sendfile(served: tuple[Served, bytes]) -> None:
    hub, data = served
    before = _rchar(hub.proc.pid)
    assert httpx.get(hub.url + PATH).content == data
    assert _rchar(hub.proc.pid) - before < SIZE // 4  # a mapping is read without read calls
    with busy(hub):
        before = _rchar(hub.proc.pid)
        assert httpx.get(hub.url + PATH).content == data
        assert _rchar(hub.proc.pid) - before >= SIZE  # sendfile counts its input here


def test_blobs_ranges_and_the_next_request_on_the_same_connection(served: tuple[Served, bytes]) -> None:
    hub, data = served
    with busy(hub), httpx.Client(base_url=hub.url, timeout=60) as client:  # one keep-alive connection throughout
        before = _rchar(hub.proc.pid)
        full = client.get(PATH)
        assert full.status_code == 200 and full.content == data
        assert _rchar(hub.proc.pid) - before >= SIZE  # sent with sendfile
        part = client.get(PATH, headers={"range": "bytes=1000-5000999"})
        assert part.status_code == 206 and part.content == data[1000:5001000]
        assert part.headers["content-range"] == f"bytes 1000-5000999/{SIZE}"
        tail = client.get(PATH, headers={"range": "bytes=-777"})
        assert tail.status_code == 206 and tail.content == data[-777:]
        head = client.head(PATH)
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(SIZE)
        small = client.get("/acme/zc/resolve/main/config.json")
        assert small.content == b'{"a": 1}\n'
        info = client.get("/api/models/acme/zc")  # a JSON answer after them: the connection's state is right
        assert info.status_code == 200 and info.json()["id"] == "acme/zc"
    metrics = httpx.get(f"{hub.url}/metrics").text
    assert "hubgate_" in metrics


def test_a_slow_client_and_fast_ones_at_once_get_every_byte(served: tuple[Served, bytes]) -> None:
    hub, data = served
    want = hashlib.sha256(data).hexdigest()
    results: dict[str, str] = {}

    def fast(i: int) -> None:
        results[f"fast{i}"] = hashlib.sha256(httpx.get(hub.url + PATH, timeout=60).content).hexdigest()

    with busy(hub):
        slow = _raw_get(hub.url, PATH, rcvbuf=16384, headers="Range: bytes=0-3145727\r\n")  # a small window, read slowly
        threads = [threading.Thread(target=fast, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        head, body = _read_response(slow, pace=0.002)
        slow.close()
        for t in threads:
            t.join(60)
    assert head.startswith(b"HTTP/1.1 206") and body == data[:3145728]
    assert results == {f"fast{i}": want for i in range(4)}


def test_clients_that_vanish_mid_body_leave_the_server_serving(served: tuple[Served, bytes]) -> None:
    hub, data = served
    with busy(hub):
        _vanish(hub, 8)
    _vanish(hub, 4)  # and from mapped windows
    time.sleep(0.5)
    assert hub.proc.poll() is None
    assert httpx.get(hub.url + PATH, headers={"range": "bytes=10-20"}).content == data[10:21]
    assert "Traceback" not in hub.log()


def _vanish(hub: Served, n: int) -> None:
    for _ in range(n):
        sock = _raw_get(hub.url, PATH, rcvbuf=32768)
        got = 0
        while got < 2 * 1024 * 1024:
            got += len(sock.recv(65536))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST, not FIN
        sock.close()


def test_many_concurrent_streams_hold_no_memory(served: tuple[Served, bytes]) -> None:
    """32 clients at once, each taking the whole blob slowly: 16 from mapped windows (a shared 16 MiB budget), 16
    with sendfile (nothing held)."""
    hub, data = served
    httpx.get(hub.url + PATH)  # warm: the page cache holds the blob, the process its imports
    idle = rss_bytes(hub.proc.pid)
    socks = [_raw_get(hub.url, PATH, rcvbuf=65536) for _ in range(32)]
    peak = 0
    for _ in range(20):  # every client takes a little, then waits, for about 2 s
        for s in socks:
            s.recv(65536)
        peak = max(peak, rss_bytes(hub.proc.pid))
        time.sleep(0.1)
    for s in socks:
        s.close()
    assert peak - idle < 20 * 1024 * 1024, (idle, peak)


def test_a_xorb_range_goes_out_with_sendfile_and_is_counted(served: tuple[Served, bytes]) -> None:
    """The CAS's xorb route (Xet is on by default, and the 48 MiB file got its Xet form at import) takes the
    same path; its bytes are counted in the access log although no body message carries them."""
    hub, data = served
    head = httpx.head(hub.url + PATH)
    file_hash = head.headers["x-xet-hash"]
    token = httpx.get(head.headers["x-xet-refresh-route"]).json()["accessToken"]
    doc = httpx.get(f"{hub.url}/xet/cas/v1/reconstructions/{file_hash}",
                    headers={"authorization": f"Bearer {token}"}).json()
    fetch = next(iter(doc["fetch_info"].values()))[0]
    start, end = fetch["url_range"]["start"], fetch["url_range"]["end"]
    xorb_path = fetch["url"].removeprefix(hub.url).split("?")[0]
    with busy(hub):
        before = _rchar(hub.proc.pid)
        got = httpx.get(fetch["url"], headers={"range": f"bytes={start}-{end}"})
        assert _rchar(hub.proc.pid) - before >= end - start + 1  # sent with sendfile
    assert got.status_code == 206 and len(got.content) == end - start + 1
    time.sleep(1)  # access lines are written at most 0.5 s late
    lines = [line for line in hub.log().splitlines() if f"GET {xorb_path}" in line]
    assert lines and f" 206 {end - start + 1}B " in lines[-1], lines
