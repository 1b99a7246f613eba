"""Reading one chunk ahead (mirror/readahead.py) and the bundle reader that uses it: the same bytes in the same
order, a limit that reveals an over-long member, and no read left running once the reader is closed."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time

import pytest

from mirror.bundles.format import CHUNK_SIZE, BundleError, MemberEntry
from mirror.bundles.readers import Member, read_verified
from mirror.readahead import READ_AHEAD_MIN, ReadAhead

DATA = random.Random(3).randbytes(3 * CHUNK_SIZE + 12345)


class _Trickle(io.RawIOBase):
    """A source that returns short reads (at most ``most`` bytes), as a socket or a volume boundary does."""

    def __init__(self, data: bytes, most: int) -> None:
        self._data, self._pos, self._most = data, 0, most

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        n = min(len(buffer), self._most, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("limit", [None, len(DATA), 5 * 1024 * 1024 + 1])
def test_chunks_come_in_order_and_stop_at_the_limit(limit: int | None) -> None:
    src = _Trickle(DATA, most=3 * 1024 * 1024 + 1)
    with ReadAhead(src.readinto, 1024 * 1024 + 7, limit=limit) as ahead:
        got = b"".join(bytes(chunk) for chunk in ahead)
    assert got == DATA[:limit]


def test_closing_waits_for_the_read_in_flight() -> None:
    started, finished = [], []

    def slow_readinto(buffer: memoryview) -> int:
        started.append(1)
        time.sleep(0.3)
        buffer[:1] = b"x"
        finished.append(1)
        return 1

    with ReadAhead(slow_readinto, 16) as ahead:
        next(iter(ahead))  # the first chunk; the second read is now submitted
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(started) == 2 and not len(finished) == 2  # in flight
    assert len(finished) == 2  # the source may be closed now: nothing reads from it any more


def _member(data: bytes, announced: int) -> Member:
    entry = MemberEntry(path="blobs/x", size=announced, sha256=hashlib.sha256(data[:announced]).hexdigest())
    return Member(entry=entry, open=lambda: io.BytesIO(data), sequential=True)


def test_a_big_member_reads_through_the_same_bytes_and_a_long_one_is_refused() -> None:
    assert len(DATA) >= READ_AHEAD_MIN
    sink = hashlib.sha256()
    read_verified(_member(DATA, len(DATA)), sink.update, check_sha256=False, reuse_buffer=True)
    assert sink.hexdigest() == hashlib.sha256(DATA).hexdigest()
    with pytest.raises(BundleError, match="size mismatch"):
        read_verified(_member(DATA, len(DATA) - 1), lambda _: None, reuse_buffer=True)
    with pytest.raises(BundleError, match="size mismatch"):
        read_verified(_member(DATA[:-1], len(DATA)), lambda _: None, reuse_buffer=True)
