"""The local store writes big blobs around the page cache (mirror/storage/direct.py): byte-exact whatever the
chunk sizes, the kept bytes of a resumable write survive its close, and a file system that refuses O_DIRECT
gets the same bytes through the page cache."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path

import pytest

from mirror.storage import direct
from mirror.storage.blobs import BlobStore
from mirror.storage.direct import DIRECT_MIN, STAGE_SIZE, DirectFile
from mirror.storage.local import LocalDriver

MiB = 1024 * 1024
# Irregular chunk sizes: none aligned, some larger than a stage, some a single byte.
CHUNKS = [1, 4095, 3 * MiB + 7, STAGE_SIZE, 9 * MiB + 13, 1, 5 * MiB - 3, 2 * STAGE_SIZE + 11, 4097]
DATA = random.Random(7).randbytes(sum(CHUNKS))


def _supports_direct(folder: Path) -> bool:
    """What the file system under ``folder`` says to O_DIRECT (tmpfs before Linux 6.6, for one, refuses it)."""
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    (folder / "probe").unlink()
    return True


def _write(f: DirectFile, data: bytes, chunks: list[int]) -> None:
    pos = 0
    for n in chunks:
        f.write(memoryview(data)[pos:pos + n])
        pos += n
    assert pos == len(data)


def test_a_big_file_is_byte_exact_and_goes_around_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    f = DirectFile(path, "xb")
    _write(f, DATA, CHUNKS)
    assert f.tell() == len(DATA)
    f.flush()
    os.fsync(f.fileno())
    f.close()
    assert path.read_bytes() == DATA
    if _supports_direct(tmp_path):
        # from the first aligned offset of the write that brought the file to DIRECT_MIN bytes, to the last
        # partial block: every aligned byte in between went around the page cache
        start = next(sum(CHUNKS[:i]) for i in range(len(CHUNKS)) if sum(CHUNKS[:i + 1]) >= DIRECT_MIN)
        start += -start % direct.ALIGN
        assert f.direct_bytes == (len(DATA) - start) // direct.ALIGN * direct.ALIGN
    else:
        assert f.direct_bytes == 0


def test_a_small_file_stays_in_the_page_cache(tmp_path: Path) -> None:
    f = DirectFile(tmp_path / "small", "xb")
    f.write(DATA[: DIRECT_MIN - 1])
    f.flush()
    f.close()
    assert f.direct_bytes == 0 and (tmp_path / "small").read_bytes() == DATA[: DIRECT_MIN - 1]


def test_appending_after_an_unaligned_prefix_and_writing_on_after_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "partial"
    prefix = DIRECT_MIN + 5  # a killed run's partial file: its end is not aligned
    path.write_bytes(DATA[:prefix])
    f = DirectFile(path, "ab")
    assert f.tell() == prefix
    _write(f, DATA[prefix:prefix + 20 * MiB + 3], [7 * MiB, 13 * MiB + 3])
    f.flush()  # the descriptor leaves O_DIRECT for the tail; what follows is buffered
    f.write(DATA[prefix + 20 * MiB + 3:prefix + 21 * MiB])
    f.flush()
    f.close()
    assert path.read_bytes() == DATA[:prefix + 21 * MiB]
    assert (f.direct_bytes > 0) == _supports_direct(tmp_path)


def test_the_setting_turns_direct_writes_off_for_the_store_and_its_files(tmp_path: Path) -> None:
    from api.settings import load
    from mirror.storage import open_driver

    on = open_driver(load(environ={"HUBGATE_DATA_DIR": str(tmp_path / "on")}).storage_settings)
    off = open_driver(load(environ={"HUBGATE_DATA_DIR": str(tmp_path / "off"),
                                    "HUBGATE_STORAGE_DIRECT_WRITES": "false"}).storage_settings)
    assert isinstance(on, LocalDriver) and isinstance(off, LocalDriver)
    assert on.direct_writes and not off.direct_writes
    f = DirectFile(tmp_path / "blob", "xb", direct=off.direct_writes)
    _write(f, DATA, CHUNKS)
    f.flush()
    f.close()
    assert f.direct_bytes == 0 and (tmp_path / "blob").read_bytes() == DATA


def test_a_file_system_that_refuses_direct_io_gets_the_bytes_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = direct.fcntl.fcntl
    refused = []

    def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == direct.fcntl.F_SETFL and arg & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(direct.fcntl, "fcntl", fcntl)
    f = DirectFile(tmp_path / "blob", "xb")
    _write(f, DATA, CHUNKS)
    f.flush()
    f.close()
    assert refused and f.direct_bytes == 0  # it asked once, then wrote everything buffered
    assert (tmp_path / "blob").read_bytes() == DATA


def test_a_file_system_that_takes_the_flag_but_refuses_direct_writes_gets_them_buffered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = []

    def write(fd: int, data: memoryview) -> int:
        if direct.fcntl.fcntl(fd, direct.fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return os.write(fd, data)

    monkeypatch.setattr(direct, "_write", write)
    f = DirectFile(tmp_path / "blob", "xb")
    _write(f, DATA, CHUNKS)
    f.flush()
    f.close()
    assert refused == [STAGE_SIZE] and f.direct_bytes == 0  # the first direct write was refused, then none
    assert (tmp_path / "blob").read_bytes() == DATA


def test_blobs_through_the_local_store_commit_batch_and_resumable_partial(tmp_path: Path) -> None:
    store = BlobStore(LocalDriver(tmp_path / "store"))
    sha = hashlib.sha256(DATA).hexdigest()
    with store.ingest(size=len(DATA), sha256=sha) as w:  # the single commit: fsync, rename
        _write(w, DATA, CHUNKS)  # type: ignore[arg-type]
        w.commit()
    assert store.open(sha).read() == DATA

    other = DATA[::-1]
    other_sha = hashlib.sha256(other).hexdigest()
    with store.batch() as batch, store.ingest(size=len(other), sha256=other_sha, batch=batch) as w:
        _write(w, other, CHUNKS)  # type: ignore[arg-type]
        w.commit()
    assert store.open(other_sha).read() == other  # the batch's flush found every staged byte in the file

    driver = store.driver
    assert isinstance(driver, LocalDriver)
    partial = driver.partial("blobs/sha256/xx/kept")
    partial.write(DATA[: 30 * MiB + 1])
    partial.close()  # kept for a later run: the staged bytes too
    again = driver.partial("blobs/sha256/xx/kept").existing()
    assert again is not None
    with again:
        assert again.read() == DATA[: 30 * MiB + 1]
