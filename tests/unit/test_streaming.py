"""BlobResponse at the ASGI level: what it sends for a mapped file, a plain stream, a short blob."""

from __future__ import annotations

import io
import mmap
import os
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from api.hub.mapped import MappedWindow
from api.hub import streaming
from api.hub.streaming import BlobResponse
from mirror.storage.local import LocalDriver

PAGE = mmap.PAGESIZE


class _Client:
    """Collects what a server would write; can hang up after some body messages."""

    def __init__(self, hang_up_after: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self._hang_up_after = hang_up_after
        self._gone = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body":
            self.bodies.append(bytes(message["body"]))  # a server copies before the view is released
            if self._hang_up_after is not None and len(self.bodies) >= self._hang_up_after:
                self._gone.set()
            await anyio.sleep(0)  # let the disconnect watcher run, as a real server's drain would


def _serve(response: BlobResponse, method: str = "GET", client: _Client | None = None) -> _Client:
    client = client or _Client()
    anyio.run(response, {"type": "http", "method": method}, client.receive, client.send)
    return client


@pytest.fixture
def blob(tmp_path: Path) -> tuple[LocalDriver, bytes]:
    data = os.urandom(5 * PAGE + 123)
    driver = LocalDriver(tmp_path)
    driver.put_bytes("blobs/x", data)
    return driver, data


@pytest.mark.parametrize(
    ("offset", "length", "chunk"),
    [
        (0, 5 * PAGE + 123, 8 * 1024 * 1024),  # one window
        (0, 5 * PAGE + 123, PAGE),  # page-aligned windows, short last one
        (1, 5 * PAGE + 122, 2 * PAGE + 7),  # unaligned start and window size
        (3 * PAGE - 1, 2, 1024),  # a range across a page boundary
        (5 * PAGE + 122, 1, PAGE),  # the last byte
    ],
)
def test_a_mapped_range_sends_exactly_its_bytes(blob: tuple[LocalDriver, bytes], offset: int, length: int, chunk: int) -> None:
    driver, data = blob
    reader = driver.open("blobs/x", offset, length)
    client = _serve(BlobResponse(reader, length=length, status=206, headers=[], chunk_size=chunk))
    assert client.messages[0]["status"] == 206
    assert (b"content-length", str(length).encode()) in client.messages[0]["headers"]
    assert b"".join(client.bodies) == data[offset : offset + length]
    assert len(client.bodies) == -(-length // chunk)  # windows of the chunk size, no empty tail
    assert [m["more_body"] for m in client.messages[1:]] == [True] * (len(client.bodies) - 1) + [False]
    assert reader.closed


def test_a_blob_shorter_than_the_range_is_refused_before_any_byte(blob: tuple[LocalDriver, bytes], tmp_path: Path) -> None:
    driver, data = blob
    reader = driver.open("blobs/x", 0, len(data))
    os.truncate(tmp_path / "blobs/x", len(data) - 1)  # damaged after the size check
    client = _Client()
    with pytest.raises(OSError, match="shorter"):
        _serve(BlobResponse(reader, length=len(data), status=200, headers=[]), client=client)
    assert client.bodies == []  # the server aborts the connection: no short body that looks complete
    assert reader.closed


def test_a_client_that_hangs_up_stops_the_windows(blob: tuple[LocalDriver, bytes]) -> None:
    driver, data = blob
    reader = driver.open("blobs/x")
    client = _Client(hang_up_after=2)
    _serve(BlobResponse(reader, length=len(data), status=200, headers=[], chunk_size=PAGE), client=client)
    assert len(client.bodies) == 2
    assert reader.closed


def test_head_sends_headers_only(blob: tuple[LocalDriver, bytes]) -> None:
    driver, data = blob
    client = _serve(BlobResponse(driver.open("blobs/x"), length=len(data), status=200, headers=[]), method="HEAD")
    assert client.bodies == [b""]


class _Stream(io.RawIOBase):
    """A reader without a file behind it, like an S3 body."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_a_reader_without_a_file_is_streamed_in_chunks() -> None:
    data = os.urandom(10_000)
    client = _serve(BlobResponse(_Stream(data), length=len(data), status=200, headers=[], chunk_size=4096))
    assert [len(b) for b in client.bodies] == [4096, 4096, 1808]
    assert b"".join(client.bodies) == data


def test_a_stream_that_ends_early_aborts() -> None:
    client = _Client()
    with pytest.raises(OSError, match="early"):
        _serve(BlobResponse(_Stream(b"abc"), length=10, status=200, headers=[], chunk_size=4), client=client)
    assert b"".join(client.bodies) == b"abc"


def test_a_window_maps_exactly_its_bytes_and_knows_when_they_are_in_memory(blob: tuple[LocalDriver, bytes], tmp_path: Path) -> None:
    _, data = blob
    with open(tmp_path / "blobs/x", "rb") as f:
        window = MappedWindow(f.fileno(), PAGE + 5, 4 * PAGE + 9)  # an unaligned start
        assert bytes(window.view) == data[PAGE + 5 : 4 * PAGE + 9]
        assert window.view.readonly
        window.fault_in()
        assert window.resident()  # just touched: every page is in memory
        window.close()
        with pytest.raises(ValueError):
            bytes(window.view)  # released: nobody reads an unmapped window through it


def test_closing_a_window_the_server_still_holds_keeps_its_bytes_valid(blob: tuple[LocalDriver, bytes], tmp_path: Path) -> None:
    _, data = blob
    with open(tmp_path / "blobs/x", "rb") as f:
        window = MappedWindow(f.fileno(), 0, 2 * PAGE)
        held = memoryview(window.view).cast("b")  # what uvloop keeps of a write it has not finished
        window.close()  # must not unmap under the server's feet
        assert held.tobytes() == data[: 2 * PAGE]


def test_cold_windows_are_faulted_in_off_the_event_loop(blob: tuple[LocalDriver, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    driver, data = blob
    loop_thread = threading.get_ident()
    faulted_in: list[int] = []
    real_fault_in = MappedWindow.fault_in

    def fault_in(self: MappedWindow) -> None:
        faulted_in.append(threading.get_ident())
        real_fault_in(self)

    monkeypatch.setattr(MappedWindow, "resident", lambda self: False)  # as if the file were on a cold disk
    monkeypatch.setattr(MappedWindow, "fault_in", fault_in)
    client = _serve(BlobResponse(driver.open("blobs/x"), length=len(data), status=200, headers=[], chunk_size=2 * PAGE))
    assert b"".join(client.bodies) == data
    assert len(faulted_in) == 3 and loop_thread not in faulted_in


def test_a_file_system_that_cannot_map_gets_plain_reads(blob: tuple[LocalDriver, bytes], monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    driver, data = blob

    def no_mmap(self: MappedWindow, fd: int, start: int, stop: int) -> None:
        raise OSError(19, "No such device")  # what mmap says on a FUSE mount with direct_io

    monkeypatch.setattr(MappedWindow, "__init__", no_mmap)
    monkeypatch.setattr(streaming, "_mapping_works", True)
    for _ in range(2):
        client = _serve(BlobResponse(driver.open("blobs/x", 100), length=len(data) - 100, status=206, headers=[],
                                     chunk_size=2 * PAGE))
        assert b"".join(client.bodies) == data[100:]
    assert caplog.text.count("plain reads") == 1  # said once; later responses do not try to map again


def test_windows_already_in_memory_go_out_without_a_thread_hop(blob: tuple[LocalDriver, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    driver, data = blob

    def no_fault_in(self: MappedWindow) -> None:
        raise AssertionError("a resident window was sent through the threadpool")

    monkeypatch.setattr(MappedWindow, "resident", lambda self: True)
    monkeypatch.setattr(MappedWindow, "fault_in", no_fault_in)
    client = _serve(BlobResponse(driver.open("blobs/x"), length=len(data), status=200, headers=[], chunk_size=2 * PAGE))
    assert b"".join(client.bodies) == data


def test_streams_share_one_memory_budget_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """One client gets the largest windows; 64 share the budget; reads (which cost more) a quarter of it."""
    s = streaming._Streams()
    MiB = 1024 * 1024
    sizes = {}
    for active in (0, 1, 2, 8, 64, 256, 10_000):
        s.active = active
        sizes[active] = (s.chunk(), s.chunk(streaming.READ_COST))
    assert sizes[0] == sizes[1] == (8 * MiB, 4 * MiB)
    assert sizes[2] == (8 * MiB, 2 * MiB)
    assert sizes[8] == (2 * MiB, 512 * 1024)
    assert sizes[64] == (256 * 1024, 64 * 1024)
    assert sizes[256] == sizes[10_000] == (64 * 1024, 64 * 1024)  # never below the smallest useful read
    for active, (window, read) in sizes.items():
        if active >= 1 and window > streaming.MIN_CHUNK_SIZE:
            assert active * window <= streaming.STREAM_BUDGET and active * read * streaming.READ_COST <= streaming.STREAM_BUDGET


def test_a_response_takes_its_share_of_the_budget_while_it_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "_streams", streaming._Streams())
    streaming._streams.active = 63  # this response makes 64
    reads: list[int] = []

    class _Recording(_Stream):
        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return super().read(n)

    data = os.urandom(300 * 1024)
    client = _serve(BlobResponse(_Recording(data), length=len(data), status=200, headers=[]))
    assert b"".join(client.bodies) == data
    assert reads and max(reads) == 64 * 1024
    assert streaming._streams.active == 63  # given back when the response ended


def test_a_blob_goes_out_in_pieces_of_the_budget_share_each_released_once_sent(
        blob: tuple[LocalDriver, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    driver, data = blob
    monkeypatch.setattr(streaming, "MIN_CHUNK_SIZE", PAGE)
    monkeypatch.setattr(streaming, "_streams", streaming._Streams(budget=2 * PAGE))  # one response: 2-page pieces
    released: list[bytes] = []
    real_release = MappedWindow.release

    def release(self: MappedWindow) -> None:
        released.append(self.view.tobytes())  # what it mapped, let go once sent
        real_release(self)

    monkeypatch.setattr(MappedWindow, "release", release)
    client = _serve(BlobResponse(driver.open("blobs/x", 7), length=len(data) - 7, status=206, headers=[]))
    assert b"".join(client.bodies) == data[7:]
    assert [len(b) for b in client.bodies] == [2 * PAGE, 2 * PAGE, len(data) - 7 - 4 * PAGE]  # 3 pieces
    assert released == [data[7 : 7 + 2 * PAGE], data[7 + 2 * PAGE : 7 + 4 * PAGE], data[7 + 4 * PAGE :]]


def test_a_released_piece_still_reads_the_same_bytes(blob: tuple[LocalDriver, bytes], tmp_path: Path) -> None:
    _, data = blob
    with open(tmp_path / "blobs/x", "rb") as f:
        window = MappedWindow(f.fileno(), 5, 5 * PAGE)
        held = window.view[: 4 * PAGE - 5]  # what a server still writing from it holds
        window.fault_in()
        window.release()
        assert held.tobytes() == data[5 : 4 * PAGE]
        window.fault_in()
        assert window.resident()  # mapped again by a read
        window.close()
