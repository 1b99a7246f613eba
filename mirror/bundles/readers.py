"""Reading the bundle forms (folder, tar, tar volumes) safely, members in the signed index's order.

Readers refuse, before reading member data, anything but what the index lists: absolute names,
``..``, links, devices and other non-regular kinds, duplicates, wrong sizes, unlisted members.
Tar headers are parsed one at a time by tarfile (never ``extractall``) and member data is read
straight from the archive; folder members are opened with ``O_NOFOLLOW`` component by
component, so no link is ever followed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import sys
import tarfile
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mirror.bundles.format import (
    CHUNK_SIZE, INDEX_NAME, INDEX_PAYLOAD_TYPE, INDEX_SIG_NAME, MAX_INDEX_SIZE, MAX_SIG_SIZE, SIG_SUFFIX,
    VOLUMES_PAYLOAD_TYPE, VOLUMES_SUFFIX, BundleError, Index, MemberEntry, PublicKeys, VolumeList, sha256_hex,
    verify_detached,
)
from mirror.readahead import read_chunks
from registry.errors import InvalidInputError
from registry.types import validate_path


@dataclass
class Member:
    """One member, in index order. Call ``open`` to read it, or ``skip`` when its content is not needed."""

    entry: MemberEntry
    open: Callable[[], BinaryIO]
    sequential: bool  # a stream: a skipped member must still be read through (and is verified)

    def skip(self) -> None:
        if self.sequential:
            read_verified(self)


def read_verified(member: Member, sink: Callable[[bytes], None] | None = None, *, check_sha256: bool = True,
                  reuse_buffer: bool = False) -> None:
    """Read a member through, checking its size (and sha256) against the index; ``sink`` gets the bytes.

    ``check_sha256=False`` is for a sink that verifies the digests itself (a blob writer).
    ``reuse_buffer``: the sink consumes each chunk before it returns (a blob writer), so the member is read
    into reused buffers and the sink gets views of them (no fresh memory per chunk); a big member is read one
    chunk ahead (mirror/readahead.py) while the sink handles the current one.
    Raises BundleError on a mismatch.
    """
    e, h, got = member.entry, hashlib.sha256(), 0
    # Up to one byte more than announced: it reveals a member that is too long.
    with member.open() as f, \
            closing(read_chunks(f, CHUNK_SIZE, size=e.size, limit=e.size + 1, reuse=reuse_buffer)) as chunks:
        for data in chunks:
            got += len(data)
            if check_sha256:
                h.update(data)
            if sink is not None and got <= e.size:
                sink(data)
    if got != e.size:
        raise BundleError(f"{e.path}: size mismatch: the index says {e.size} bytes, the bundle holds {got}")
    if check_sha256 and h.hexdigest() != e.sha256:
        raise BundleError(f"{e.path}: sha256 mismatch: the bundle was altered or damaged")


def read_small(member: Member) -> bytes:
    parts: list[bytes] = []
    read_verified(member, parts.append)
    return b"".join(parts)


class BundleSource:
    """An opened bundle whose index signature has been verified. Use as a context manager."""

    form: str
    index: Index
    index_bytes: bytes
    signed_by: str  # key id

    def _verify_head(self, index_bytes: bytes, sig_bytes: bytes, trusted: PublicKeys) -> None:
        self.signed_by = verify_detached(sig_bytes, index_bytes, INDEX_PAYLOAD_TYPE, trusted, "bundle index")
        self.index_bytes = index_bytes
        self.index = Index.from_bytes(index_bytes)
        if self.index.key_id != self.signed_by:
            raise BundleError(f"index.json names key {self.index.key_id[:16]}… but is signed by {self.signed_by[:16]}…")

    @property
    def index_sha256(self) -> str:
        return sha256_hex(self.index_bytes)

    def members(self) -> Iterator[Member]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "BundleSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bundle(path: Path, trusted: PublicKeys) -> BundleSource:
    """Open a bundle (a folder, a tar, or a volume set: its list, its base name or any volume) and
    verify the signature of its index (and of its volume list) before anything else is read.

    Raises BundleError: not a bundle, unsigned, signed by an untrusted key, altered, a volume
    missing or truncated.
    """
    if not trusted:
        raise BundleError("No trusted keys are configured (HUBGATE_TRUSTED_KEYS): refusing to import any bundle")
    volumes = _volume_list_path(path)
    if volumes is not None:
        return _TarSource.from_volumes(volumes, trusted)
    if path.is_dir():
        return _DirSource(path, trusted)
    if path.is_file():
        return _TarSource.from_file(path, trusted)
    raise BundleError(f"{path} is not a bundle (a folder with {INDEX_NAME}, a .tar, or tar volumes)")


def read_index(path: Path, trusted: PublicKeys) -> tuple[Index, bytes]:
    """The verified index of a bundle, or of a kept ``index.json`` / ``bundle.tar.index.json`` (with its ``.sig``)."""
    if path.is_file() and path.name.endswith(INDEX_NAME):
        data = _read_file_capped(path, MAX_INDEX_SIZE)
        sig = _read_file_capped(path.with_name(path.name + SIG_SUFFIX), MAX_SIG_SIZE)
        verify_detached(sig, data, INDEX_PAYLOAD_TYPE, trusted, f"{path.name}")
        return Index.from_bytes(data), data
    with open_bundle(path, trusted) as source:
        return source.index, source.index_bytes


def _volume_list_path(path: Path) -> Path | None:
    if path.name.endswith(VOLUMES_SUFFIX):
        return path
    base = path
    stem, dot, number = path.name.rpartition(".")
    if dot and number.isdigit() and len(number) >= 3:  # bundle.tar.001
        base = path.with_name(stem)
    candidate = base.with_name(base.name + VOLUMES_SUFFIX)
    if candidate.is_file() and not (path.is_file() and path == base):
        return candidate
    return None


def _read_file_capped(path: Path, cap: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise BundleError(f"Cannot read {path}: {_os_reason(exc)}") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError(f"{path} is not a regular file")
        return _read_capped(f, cap, str(path))


def _read_capped(f: BinaryIO, cap: int, what: str) -> bytes:
    """All of ``f``, refusing more than ``cap`` bytes (read in chunks: ``read(cap)`` would allocate ``cap``)."""
    parts, got = [], 0
    while data := f.read(min(CHUNK_SIZE, cap + 1 - got)):
        parts.append(data)
        got += len(data)
        if got > cap:
            raise BundleError(f"{what} is larger than {cap} bytes")
    return b"".join(parts)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link"
    if exc.errno == errno.ENOENT:
        return "it is missing"
    return exc.strerror or str(exc)


# -- directory form --------------------------------------------------------------------------------


class _DirSource(BundleSource):
    form = "dir"

    def __init__(self, root: Path, trusted: PublicKeys) -> None:
        self.root = root
        self._fd: int | None = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            index_bytes = self._read_head(INDEX_NAME, MAX_INDEX_SIZE)
            sig_bytes = self._read_head(INDEX_SIG_NAME, MAX_SIG_SIZE)
            self._verify_head(index_bytes, sig_bytes, trusted)
        except BaseException:
            self.close()
            raise

    def _read_head(self, name: str, cap: int) -> bytes:
        with self._open(name) as f:
            return _read_capped(f, cap, name)

    def _open(self, rel: str) -> BinaryIO:
        """Open ``rel`` under the root without following any link; refuse anything but a regular file."""
        fds: list[int] = []
        assert self._fd is not None, "the bundle is closed"
        try:
            fd = self._fd
            parts = rel.split("/")
            for part in parts[:-1]:
                fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                fds.append(fd)
            ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            raise BundleError(f"Cannot open bundle member {rel}: {_os_reason(exc)}") from exc
        finally:
            for d in fds:
                os.close(d)
        if not stat.S_ISREG(os.fstat(ffd).st_mode):
            os.close(ffd)
            raise BundleError(f"Bundle member {rel} is not a regular file")
        return os.fdopen(ffd, "rb")

    def _check_tree(self) -> None:
        """Every entry of the folder must be a listed member or a folder on the way to one."""
        files = {INDEX_NAME, INDEX_SIG_NAME} | {m.path for m in self.index.members}
        dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        pending = [""]
        while pending:
            rel_dir = pending.pop()
            with os.scandir(self.root / rel_dir if rel_dir else self.root) as it:
                for entry in it:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    if entry.is_symlink():
                        raise BundleError(f"The bundle holds a symbolic link: {rel}")
                    if entry.is_dir(follow_symlinks=False):
                        if rel not in dirs:
                            raise BundleError(f"The bundle holds an unexpected folder: {rel}")
                        pending.append(rel)
                    elif entry.is_file(follow_symlinks=False):
                        if rel not in files:
                            raise BundleError(f"The bundle holds an unexpected file: {rel}")
                    else:
                        raise BundleError(f"The bundle holds a special file (device, fifo or socket): {rel}")

    def members(self) -> Iterator[Member]:
        self._check_tree()
        for entry in self.index.members:
            yield Member(entry, lambda e=entry: self._open_member(e), sequential=False)  # type: ignore[misc]

    def _open_member(self, entry: MemberEntry) -> BinaryIO:
        f = self._open(entry.path)
        size = os.fstat(f.fileno()).st_size
        if size != entry.size:
            f.close()
            raise BundleError(f"{entry.path}: size mismatch: the index says {entry.size} bytes, the file has {size}")
        return f

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- tar forms -------------------------------------------------------------------------------------


class VolumeReader(io.RawIOBase):
    """The concatenation of the volumes, read forward only; each volume is checked against its sha256
    as soon as it has been read through. Seeking ahead reads the skipped bytes (they are hashed too)."""

    def __init__(self, folder: Path, volumes: VolumeList) -> None:
        self._folder, self._list = folder, volumes
        self._number, self._left, self._pos = -1, 0, 0
        self._f: BinaryIO | None = None
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or pos < self._pos:
            raise BundleError("Tar volumes can only be read forward")
        while self._pos < pos and self.read(min(CHUNK_SIZE, pos - self._pos)):
            pass
        return self._pos

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Up to ``size`` bytes, short only at the end of the last volume."""
        parts: list[bytes] = []
        want = size if size >= 0 else sys.maxsize
        while want > 0 and (self._left > 0 or self._next_volume()):
            assert self._f is not None
            data = self._f.read(min(want, self._left, CHUNK_SIZE))
            if not data:
                raise BundleError(f"Volume {self._list.volumes[self._number].name} is truncated")
            self._hash.update(data)
            self._left -= len(data)
            self._pos += len(data)
            want -= len(data)
            parts.append(data)
            if self._left == 0:
                self._check_volume()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _next_volume(self) -> bool:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._number + 1 >= len(self._list.volumes):
            return False
        self._number += 1
        v = self._list.volumes[self._number]
        fd = os.open(self._folder / v.name, os.O_RDONLY | os.O_NOFOLLOW)
        self._f = os.fdopen(fd, "rb", buffering=0)
        self._left, self._hash = v.size, hashlib.sha256()
        return True

    def _check_volume(self) -> None:
        v = self._list.volumes[self._number]
        if self._hash.hexdigest() != v.sha256:
            raise BundleError(f"Volume {v.name} is damaged or altered: its sha256 does not match the volume list")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        super().close()


class _TarMemberReader:
    """A member's data, read straight from the archive (tarfile only parses the headers)."""

    def __init__(self, raw: BinaryIO, offset: int, size: int) -> None:
        self._raw, self._offset, self._left = raw, offset, size
        self._started = False

    def read(self, n: int = -1) -> bytes:
        if not self._started:
            self._raw.seek(self._offset)
            self._started = True
        n = self._left if n < 0 else min(n, self._left)
        data = self._raw.read(n) if n else b""
        self._left -= len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Into ``buffer`` (a reused one: no fresh memory per chunk, see ``read_verified``)."""
        if not self._started:
            self._raw.seek(self._offset)
            self._started = True
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        got = self._raw.readinto(view) if len(view) else 0  # type: ignore[attr-defined]
        self._left -= got
        return got

    def __enter__(self) -> "_TarMemberReader":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def check_volumes(folder: Path, volumes: VolumeList) -> None:
    """Refuse a missing, truncated, oversized or non-regular volume, by name, before anything is read."""
    for v in volumes.volumes:
        path = folder / v.name
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise BundleError(f"Volume {v.name} is missing (expected {len(volumes.volumes)} volumes)") from None
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"Volume {v.name} is not a regular file")
        if st.st_size < v.size:
            raise BundleError(f"Volume {v.name} is truncated: {st.st_size} of {v.size} bytes")
        if st.st_size > v.size:
            raise BundleError(f"Volume {v.name} has {st.st_size} bytes; the volume list says {v.size}")


class _TarSource(BundleSource):
    form = "tar"

    def __init__(self, raw: BinaryIO, trusted: PublicKeys, *, volumes: VolumeList | None = None) -> None:
        self._raw, self._volumes = raw, volumes
        self._seen: set[str] = set()
        try:
            # Seekable mode: tarfile parses headers (ustar, pax, GNU) and seeks past data; member
            # data is read directly from ``raw`` (a file, or volumes that seek forward by reading).
            self._tar = tarfile.open(fileobj=raw, mode="r:")
            index_bytes = self._read_head(INDEX_NAME, MAX_INDEX_SIZE)
            sig_bytes = self._read_head(INDEX_SIG_NAME, MAX_SIG_SIZE)
            self._verify_head(index_bytes, sig_bytes, trusted)
            if volumes is not None and sha256_hex(index_bytes) != volumes.index_sha256:
                raise BundleError("The volume list belongs to another bundle: the index's sha256 differs")
        except tarfile.TarError as exc:
            self.close()
            raise BundleError(f"Not a readable tar bundle: {exc}") from exc
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_file(cls, path: Path, trusted: PublicKeys) -> "_TarSource":
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise BundleError(f"Cannot read {path}: {_os_reason(exc)}") from exc
        return cls(os.fdopen(fd, "rb"), trusted)

    @classmethod
    def from_volumes(cls, list_path: Path, trusted: PublicKeys) -> "_TarSource":
        data = _read_file_capped(list_path, MAX_INDEX_SIZE)
        sig = _read_file_capped(list_path.with_name(list_path.name + SIG_SUFFIX), MAX_SIG_SIZE)
        verify_detached(sig, data, VOLUMES_PAYLOAD_TYPE, trusted, "volume list")
        volumes = VolumeList.from_bytes(data)
        if list_path.name != volumes.bundle + VOLUMES_SUFFIX:
            raise BundleError(f"{list_path.name} is the volume list of {volumes.bundle}")
        check_volumes(list_path.parent, volumes)
        source = cls(VolumeReader(list_path.parent, volumes), trusted, volumes=volumes)  # type: ignore[arg-type]
        source.form = "volumes"
        return source

    def _next(self) -> tarfile.TarInfo | None:
        try:
            member = self._tar.next()
        except tarfile.TarError as exc:
            raise BundleError(f"The tar is damaged or truncated: {exc}") from exc
        self._tar.members.clear()  # tarfile keeps every header otherwise
        if member is not None:
            check_tar_member(member, self._seen)
        return member

    def _read_head(self, name: str, cap: int) -> bytes:
        member = self._next()
        if member is None or member.name != name or not member.isfile():
            got = "the end of the archive" if member is None else repr(member.name)
            raise BundleError(f"The bundle must start with {INDEX_NAME} and {INDEX_SIG_NAME}; found {got}")
        if member.size > cap:
            raise BundleError(f"{name} is larger than {cap} bytes")
        data = _TarMemberReader(self._raw, member.offset_data, member.size).read()
        if len(data) != member.size:
            raise BundleError(f"{name} is truncated")
        return data

    def members(self) -> Iterator[Member]:
        expected = iter(self.index.members)
        for entry in expected:
            member = self._next()
            while member is not None and member.isdir():
                member = self._next()
            if member is None:
                raise BundleError(f"The bundle is truncated: member {entry.path} is missing")
            if member.name != entry.path:
                listed = any(m.path == member.name for m in self.index.members)
                why = "is out of order" if listed else "is not listed in the signed index"
                raise BundleError(f"Tar member {member.name!r} {why} (expected {entry.path})")
            if member.size != entry.size:
                raise BundleError(f"{entry.path}: size mismatch: the index says {entry.size} bytes, the tar {member.size}")
            yield Member(entry, lambda m=member: _TarMemberReader(self._raw, m.offset_data, m.size),  # type: ignore[misc]
                         sequential=True)
        extra = self._next()
        while extra is not None and extra.isdir():
            extra = self._next()
        if extra is not None:
            raise BundleError(f"Tar member {extra.name!r} is not listed in the signed index")
        self._check_tail()

    def _check_tail(self) -> None:
        """Read to the end: volumes get their last checksum checked; a single tar may end only in zeros."""
        while data := self._raw.read(CHUNK_SIZE):
            if self._volumes is None and data.count(0) != len(data):
                raise BundleError("The tar has data after its end-of-archive marker")

    def close(self) -> None:
        self._raw.close()


def check_tar_member(member: tarfile.TarInfo, seen: set[str]) -> None:
    """Refuse a tar member that is not a plain file or folder with a safe, new, relative name."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"Tar member {name!r} has an absolute name")
    if ".." in name.replace("\\", "/").split("/"):
        raise BundleError(f"Tar member {name!r} contains '..'")
    if member.issym():
        raise BundleError(f"Tar member {name!r} is a symbolic link (to {member.linkname!r})")
    if member.islnk():
        raise BundleError(f"Tar member {name!r} is a hard link (to {member.linkname!r})")
    if member.ischr() or member.isblk():
        raise BundleError(f"Tar member {name!r} is a device file")
    if member.isfifo():
        raise BundleError(f"Tar member {name!r} is a fifo")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE) or member.sparse is not None:
        raise BundleError(f"Tar member {name!r} is of an unsupported kind ({member.type!r})")
    try:
        validate_path(name)
    except InvalidInputError as exc:
        raise BundleError(f"Tar member {name!r} has an invalid name: {exc.message}") from exc
    folded = unicodedata.normalize("NFC", name).casefold()
    if folded in seen:
        raise BundleError(f"Tar member {name!r} appears twice")
    seen.add(folded)
