"""Writing the bundle forms: a folder, or a tar (one file or volumes), members streamed in order."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO

from mirror.bundles.format import (
    CHUNK_SIZE, SIDECAR_SUFFIX, VOLUMES_SUFFIX, BundleError, VolumeEntry, volume_name,
)


class VolumeWriter:
    """A write-only file that is one file, or volumes of ``volume_size`` bytes named ``<base>.000``, …

    Each volume is hashed as it is written. ``tell`` is what tarfile needs; no seeking happens.
    """

    def __init__(self, base: Path, volume_size: int | None) -> None:
        self._base, self._volume_size = base, volume_size
        self._f: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._in_volume = 0
        self._pos = 0
        self.volumes: list[VolumeEntry] = []
        self.created: list[Path] = []

    def _path(self, number: int) -> Path:
        return self._base if self._volume_size is None else self._base.with_name(volume_name(self._base.name, number))

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        while view:
            if self._f is None:
                path = self._path(len(self.volumes))
                self._f = open(path, "xb")
                self.created.append(path)
            room = len(view) if self._volume_size is None else self._volume_size - self._in_volume
            part = view[:room]
            self._f.write(part)
            if self._volume_size is not None:
                self._hash.update(part)
            self._in_volume += len(part)
            self._pos += len(part)
            view = view[len(part):]
            if self._volume_size is not None and self._in_volume == self._volume_size:
                self._close_volume()
        return len(data)

    def tell(self) -> int:
        return self._pos

    def _close_volume(self) -> None:
        assert self._f is not None
        self._f.close()
        self._f = None
        name = self._path(len(self.volumes)).name
        self.volumes.append(VolumeEntry(name=name, size=self._in_volume, sha256=self._hash.hexdigest()))
        self._hash, self._in_volume = hashlib.sha256(), 0

    def finish(self) -> list[VolumeEntry]:
        if self._f is not None:
            self._close_volume()
        return self.volumes

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        for path in self.created:
            path.unlink(missing_ok=True)


class DirWriter:
    def __init__(self, out: Path) -> None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise BundleError(f"{out} exists and is not an empty folder")
        self._created_root = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        self.root = out
        self.size = 0

    def add(self, path: str, size: int, source: BinaryIO) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as f:
            copied = _copy(source, f, size)
        self.size += copied

    def abort(self) -> None:
        if self._created_root:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for child in self.root.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


class TarWriter:
    def __init__(self, out: Path, volume_size: int | None, mtime: int) -> None:
        clash = [p for p in (out, out.with_name(out.name + VOLUMES_SUFFIX), out.with_name(out.name + SIDECAR_SUFFIX),
                             out.with_name(volume_name(out.name, 0))) if p.exists()]
        if clash:
            raise BundleError(f"{clash[0]} exists; refusing to overwrite a bundle")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self._mtime = out, mtime
        self.volumes = VolumeWriter(out, volume_size)
        self._tar = tarfile.open(fileobj=self.volumes, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                                 copybufsize=CHUNK_SIZE)

    def add(self, path: str, size: int, source: BinaryIO) -> None:
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime, info.type = size, 0o644, self._mtime, tarfile.REGTYPE
        self._tar.addfile(info, _Exact(source, size))

    @property
    def size(self) -> int:
        return self.volumes.tell()

    def finish(self) -> list[VolumeEntry]:
        self._tar.close()
        return self.volumes.finish()

    def abort(self) -> None:
        self.volumes.abort()


class _Exact:
    """Reads that always return the requested length until ``size`` (tarfile needs full reads)."""

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source, self._left = source, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        parts, got = [], 0
        while got < n:
            data = self._source.read(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        self._left -= got
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _copy(source: BinaryIO, target: BinaryIO, size: int) -> int:
    copied = 0
    while copied < size:
        data = source.read(min(CHUNK_SIZE, size - copied))
        if not data:
            raise BundleError(f"short read: {copied} of {size} bytes")
        target.write(data)
        copied += len(data)
    return copied
