"""Local filesystem driver: temp file, fsync, rename. Exposes real paths so the API can send files directly."""

from __future__ import annotations

import io
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mirror.errors import ObjectNotFoundError, StorageError
from mirror.storage.driver import ObjectInfo

_TMP_DIR = ".tmp"


class _LimitedReader(io.RawIOBase):
    """Reads at most ``remaining`` bytes of an open file."""

    def __init__(self, f: BinaryIO, remaining: int) -> None:
        self._f, self._remaining = f, remaining
        self.object_size = os.fstat(f.fileno()).st_size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._remaining:
            size = self._remaining
        data = self._f.read(size)
        self._remaining -= len(data)
        return data

    def fileno(self) -> int:
        """The open blob file, so a server can map it instead of copying it through reads."""
        return self._f.fileno()

    def tell(self) -> int:
        """The file offset the next read starts at (the start of the requested range)."""
        return self._f.tell()

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


class _LocalWriter:
    def __init__(self, final: Path, tmp: Path) -> None:
        self._final, self._tmp = final, tmp
        self._f: BinaryIO | None = open(tmp, "xb")

    def write(self, data: bytes | memoryview) -> None:
        assert self._f is not None, "writer is closed"
        self._f.write(data)

    def commit(self) -> None:
        assert self._f is not None, "writer is closed"
        f, self._f = self._f, None
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)
        _fsync_dir(self._final.parent)

    def cancel(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self._tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalDriver:
    name = "local"
    cheap_move = True

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        try:
            (self.root / _TMP_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create the storage folder {self.root}: {exc}") from exc

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/") or key.startswith(_TMP_DIR):
            raise StorageError(f"Invalid storage key {key!r}")
        return self.root / key

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):  # a folder is a key prefix, not an object
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def open(self, key: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        try:
            f = open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"Object {key} not found") from exc
        if offset:
            f.seek(offset)
        size = os.fstat(f.fileno()).st_size
        return _LimitedReader(f, size - offset if length is None else length)  # type: ignore[return-value]

    def writer(self, key: str) -> _LocalWriter:
        return _LocalWriter(self._path(key), self.root / _TMP_DIR / uuid.uuid4().hex)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"Object {key} not found") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        w = self.writer(key)
        try:
            w.write(data)
            w.commit()
        except BaseException:
            w.cancel()
            raise

    def move(self, src: str, dst: str) -> None:
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self._path(src), target)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"Object {src} not found") from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def iter_keys(self, prefix: str) -> Iterator[str]:
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise StorageError(f"Invalid storage key prefix {prefix!r}")
        keys = []
        base = self.root
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        if not start.is_dir():
            return iter(())
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, base).replace(os.sep, "/")
            if rel_dir == _TMP_DIR or rel_dir.startswith(_TMP_DIR + "/"):
                dirnames[:] = []
                continue
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def redirect_url(self, key: str, *, ttl_seconds: int, filename: str) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None
