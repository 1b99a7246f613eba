"""Archives: zip (torch's checkpoints and numpy's ``.npz`` included), tar, gzip/bz2/xz, and refusals.

Every member is read through (bounded by the caps in ``ScanLimits``) and classified by its bytes:

* a pickle-family member (sniffed, or named ``*.pkl``/``.pt``/..., or torch's ``data.pkl``) is walked
  against the allowlist, ``.npy`` members get the numpy rules;
* a nested archive (zip, tar, 7z, gzip, bz2, xz, zstd member) blocks: scanners that skip them are
  how payloads got through (security.md §3.2);
* torch.save storage records (``<root>/data/<key>``) are raw tensor bytes that torch never unpickles:
  one that happens to start like a pickle is walked, and blocks only if it parses as a pickle
  (then every rule applies) or names a non-allowlisted global before it stops parsing;
* zips must start at byte 0 with non-overlapping members and correct CRCs (torch.load ignores CRCs,
  ``zipfile`` does not: a zeroed CRC is how scanners were made to skip ``data.pkl``);
* member names follow the path grammar, tar members must be regular files or folders (``datasets``
  extracts archives: links and devices would escape), and encrypted members block.

7z and zstd cannot be opened with the standard library: they block (``archive.unsupported``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from typing import Any, BinaryIO

from .base import FileScan, ScanContext, ScanFinding, ScanItem, Source
from .formats import ARCHIVES, PICKLE_SNIFF, extension, sniff_member, source_file
from .limits import ScanLimits
from .paths import path_problems
from .pickle_family import scan_stream

CHUNK = 1 << 20
_NESTED = ARCHIVES | {"zip"}
_PICKLE_NAMES = frozenset({".pkl", ".pickle", ".joblib", ".dill", ".pt", ".pth", ".ckpt"})
_DECOMPRESSORS: dict[str, Any] = {"gzip": gzip.GzipFile, "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}
_STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError, struct.error)


class _CapError(Exception):
    """An archive expands past a cap (a possible bomb)."""


class _Bounded(io.RawIOBase):
    """A reader that raises ``_CapError`` once more than ``cap`` bytes came out of ``f``."""

    def __init__(self, f: BinaryIO, cap: int, head: bytes = b"") -> None:
        self._f, self._cap, self._head, self.count = f, cap, head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._f.read(len(b))
        self.count += len(data)
        if self.count > self._cap:
            raise _CapError(f"expands past {self._cap} bytes")
        b[:len(data)] = data
        return len(data)


def _finding(rule: str, message: str, **data: Any) -> ScanFinding:
    return ScanFinding(rule, message, data=data)


class _Members:
    """Shared per-archive state: caps, member-name checks, and what to do with each member's bytes."""

    def __init__(self, out: FileScan, limits: ScanLimits, storage_root: str | None = None) -> None:
        self.out, self.limits, self.storage_root = out, limits, storage_root
        self.count = 0
        self.total = 0

    def admit(self, name: str, size: int) -> None:
        """Count a member against the caps (raises ``_CapError``) and check its name."""
        self.count += 1
        self.total += size
        if self.count > self.limits.archive_max_members:
            raise _CapError(f"more than {self.limits.archive_max_members} members")
        if self.total > self.limits.archive_max_bytes:
            raise _CapError(f"members expand past {self.limits.archive_max_bytes} bytes")
        problems = path_problems(name.rstrip("/") if name.endswith("/") and name != "/" else name)
        if problems:
            self.out.findings.append(_finding("archive.member-path", f"member name {name!r} breaks "
                                              f"{', '.join(problems)}", member=name, rules=problems))

    def scan(self, f: BinaryIO, name: str) -> None:
        """Classify one member by its bytes and walk it if it is a pickle; read it through either way."""
        head = _read_up_to(f, PICKLE_SNIFF)
        whole = len(head) < PICKLE_SNIFF
        fmt = sniff_member(head, whole)
        stream: BinaryIO = io.BytesIO(head) if whole else io.BufferedReader(
            _Bounded(f, self.limits.archive_max_bytes, head), CHUNK)
        base = name.rsplit("/", 1)[-1]
        if fmt in _NESTED:
            self.out.findings.append(_finding("archive.nested", f"member {name!r} is itself an archive ({fmt})",
                                              member=name, detected=fmt))
        elif fmt == "numpy":
            scan_stream(stream, "numpy", self.out, member=name)
        elif self._is_storage(name):
            if fmt in ("pickle", "torch-legacy"):
                self._scan_storage(stream, name)
        elif fmt in ("pickle", "torch-legacy") or extension(name) in _PICKLE_NAMES or base == "data.pkl":
            scan_stream(stream, "torch-legacy" if fmt == "torch-legacy" else "pickle", self.out, member=name)
        while stream.read(CHUNK):
            pass

    def _is_storage(self, name: str) -> bool:
        root = self.storage_root
        return root is not None and name.startswith(f"{root}data/") and "/" not in name[len(root) + 5:]

    def _scan_storage(self, stream: BinaryIO, name: str) -> None:
        trial = FileScan(path=self.out.path, sha256="", size=0, format="pickle")
        scan_stream(stream, "pickle", trial, member=name)
        parsed = not any(f.rule == "pickle.parse" for f in trial.findings)
        if parsed or any(f.rule == "pickle.global" for f in trial.findings):
            self.out.findings.extend(trial.findings)
            self.out.globals = sorted(set(self.out.globals) | set(trial.globals))
            self.out.allowlist_version = trial.allowlist_version


def _read_up_to(f: BinaryIO, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        chunk = f.read(n - have)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def scan_zip(src: Source, out: FileScan, limits: ScanLimits) -> None:
    """Layout, caps and CRCs of a zip, then every member through ``_Members.scan``."""
    try:
        zf = zipfile.ZipFile(source_file(src))
    except (zipfile.BadZipFile, *_STREAM_ERRORS) as e:
        out.findings.append(_finding("archive.corrupt", f"not a readable zip: {e}"))
        return
    with zf:
        infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
        if not _zip_layout(src, infos, zf.start_dir, out):
            return
        names = [i.filename for i in infos]
        dups = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
        if dups:
            out.findings.append(_finding("archive.duplicate", f"zip names {dups[0]!r} more than once", members=dups))
        members = _Members(out, limits, _torch_root(names) if out.format == "torch-zip" else None)
        try:
            for info in infos:
                members.admit(info.filename, info.file_size)
                _check_ratio(info, limits, out)
                if info.flag_bits & 0x1:
                    out.findings.append(_finding("archive.encrypted", f"member {info.filename!r} is encrypted",
                                                 member=info.filename))
                    continue
                if (info.external_attr >> 16) & 0o170000 not in (0, 0o100000, 0o040000):
                    out.findings.append(_finding("archive.member-type", f"member {info.filename!r} is not a "
                                                 "regular file or folder", member=info.filename))
                    continue
                if not info.is_dir():
                    _scan_zip_member(zf, info, members, out)
        except _CapError as e:
            out.findings.append(_finding("archive.bomb", f"zip {e}", limit="archive"))


class _CrcReader:
    """Computes the CRC-32 of what passes through, so a bad CRC is reported after the bytes were scanned.

    ``zipfile`` raises on a CRC mismatch at the end of the member, dropping the last chunk unread: a
    payload in a small member with a zeroed CRC would never be walked. Its own check is switched off
    (``_expected_crc``; if a future Python renames it, zipfile's check raises instead: still blocked).
    """

    def __init__(self, f: Any) -> None:
        f._expected_crc = None
        self._f, self.crc = f, 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._f.read(n)
        self.crc = zlib.crc32(data, self.crc)
        return data


def _scan_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, members: _Members, out: FileScan) -> None:
    try:
        with zf.open(info) as f:
            reader = _CrcReader(f)
            members.scan(reader, info.filename)  # type: ignore[arg-type]
        if reader.crc != info.CRC:
            out.findings.append(_finding("archive.crc", f"member {info.filename!r}: CRC-32 {reader.crc:#010x}, "
                                         f"the zip says {info.CRC:#010x}", member=info.filename))
    except zipfile.BadZipFile as e:
        rule = "archive.crc" if "CRC" in str(e) else "archive.corrupt"
        out.findings.append(_finding(rule, f"member {info.filename!r}: {e}", member=info.filename))
    except (NotImplementedError, *_STREAM_ERRORS) as e:
        out.findings.append(_finding("archive.corrupt", f"member {info.filename!r}: {e}", member=info.filename))


def _zip_layout(src: Source, infos: list[zipfile.ZipInfo], start_dir: int, out: FileScan) -> bool:
    """First member at byte 0, members and central directory disjoint; False (with a finding) if not."""
    end_prev, prev = 0, None
    for info in infos:
        hdr = src.read_at(info.header_offset, 30)
        if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
            out.findings.append(_finding("archive.corrupt", f"no local header for {info.filename!r}",
                                         member=info.filename))
            return False
        if prev is None and info.header_offset != 0:
            out.findings.append(_finding("archive.prefix", f"{info.header_offset} bytes before the first member",
                                         offset=info.header_offset))
            return False
        if info.header_offset < end_prev:
            out.findings.append(_finding("archive.overlap", f"member {info.filename!r} overlaps {prev!r}",
                                         member=info.filename))
            return False
        name_len, extra_len = struct.unpack_from("<HH", hdr, 26)
        end_prev, prev = info.header_offset + 30 + name_len + extra_len + info.compress_size, info.filename
    if end_prev > start_dir:
        out.findings.append(_finding("archive.overlap", f"member {prev!r} runs into the central directory"))
        return False
    return True


def _check_ratio(info: zipfile.ZipInfo, limits: ScanLimits, out: FileScan) -> None:
    if info.file_size > (1 << 20) and info.file_size > limits.archive_max_ratio * max(info.compress_size, 1):
        raise _CapError(f"member {info.filename!r} claims a {info.file_size // max(info.compress_size, 1)}:1 ratio")


def _torch_root(names: list[str]) -> str | None:
    """The folder prefix of torch's records (``archive/``), where ``data.pkl`` sits."""
    for n in names:
        if n == "data.pkl":
            return ""
        if n.endswith("/data.pkl") and n.count("/") == 1:
            return n[: -len("data.pkl")]
    return None


def scan_tar(f: BinaryIO, out: FileScan, limits: ScanLimits, members: _Members | None = None) -> None:
    """Every tar member, in order, from a forward-only stream (so compressed tars need no seeking)."""
    members = members or _Members(out, limits)
    try:
        with tarfile.open(fileobj=f, mode="r|") as tf:
            for m in tf:
                members.admit(m.name, m.size)
                if m.isdir():
                    continue
                if not m.isreg() or m.issparse():
                    out.findings.append(_finding("archive.member-type", f"member {m.name!r} is not a regular file "
                                                 f"or folder (type {m.type!r})", member=m.name))
                    continue
                data = tf.extractfile(m)
                if data is not None:
                    members.scan(data, m.name)  # type: ignore[arg-type]
    except _CapError as e:
        out.findings.append(_finding("archive.bomb", f"tar {e}", limit="archive"))
    except (tarfile.TarError, *_STREAM_ERRORS) as e:
        out.findings.append(_finding("archive.corrupt", f"not a readable tar: {e}"))


def scan_compressed(src: Source, fmt: str, path: str, out: FileScan, limits: ScanLimits) -> None:
    """A gzip/bz2/xz stream: a tar inside is scanned as a tar, anything else as one member."""
    try:
        with src.stream() as raw, _DECOMPRESSORS[fmt](fileobj=raw) as f:
            bounded = _Bounded(f, limits.archive_max_bytes)
            head = _read_up_to(bounded, 512)  # type: ignore[arg-type]
            inner = io.BufferedReader(_Bounded(bounded, limits.archive_max_bytes, head), CHUNK)  # type: ignore[arg-type]
            if head[257:262] == b"ustar":
                scan_tar(inner, out, limits)
            else:
                name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                _Members(out, limits).scan(inner, name)
    except _CapError as e:
        out.findings.append(_finding("archive.bomb", f"{fmt} stream {e}", limit="archive"))
    except gzip.BadGzipFile as e:
        rule = "archive.crc" if "CRC" in str(e) else "archive.corrupt"
        out.findings.append(_finding(rule, f"{fmt} stream: {e}"))
    except _STREAM_ERRORS as e:
        out.findings.append(_finding("archive.corrupt", f"{fmt} stream: {e}"))


class ArchiveScanner:
    """zip, torch-zip, npz, tar and compressed streams; 7z and zstd block."""

    name = "archive"

    def __init__(self, limits: ScanLimits) -> None:
        self.limits = limits

    def applies(self, fmt: str, path: str) -> bool:
        return fmt in ARCHIVES

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        fmt = out.format
        if fmt in ("zip", "torch-zip", "npz"):
            scan_zip(src, out, self.limits)
        elif fmt == "tar":
            with src.stream() as f:
                scan_tar(f, out, self.limits)
        elif fmt in _DECOMPRESSORS:
            scan_compressed(src, fmt, item.path, out, self.limits)
        else:
            out.findings.append(_finding("archive.unsupported", f"{fmt} archives cannot be inspected", detected=fmt))
