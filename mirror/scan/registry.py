"""The ordered scanners and ``scan_file``: what the scan child runs for each file.

Order matters only for readability of the findings: format first, then the content scanners.
Every scanner that applies runs (a file can be both a code file and a config); a scanner that
raises blocks the file with ``scan.error`` naming it, so a crash in one rule never passes a file.
``MemoryError`` is not caught here: the child reports ``scan.memory`` and restarts.
"""

from __future__ import annotations

import os
import time

from .archives import ArchiveScanner
from .base import FileScan, ScanContext, ScanFinding, ScanItem, Scanner, Source
from .configs import ConfigScanner
from .formats import check_name, detect
from .gguf import GGUFScanner
from .index import IndexScanner
from .limits import ScanLimits
from .onnx import OnnxScanner
from .pickle_family import PickleScanner
from .safetensors import SafetensorsScanner
from .sources import FileSource


class FormatScanner:
    """``format.mismatch`` when the name's extension promises another format than the bytes hold."""

    name = "format"

    def applies(self, fmt: str, path: str) -> bool:
        return True

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        out.findings.extend(check_name(item.path, out.format))


def build_scanners(limits: ScanLimits) -> list[Scanner]:
    """Every scanner, in the order they run."""
    return [FormatScanner(), SafetensorsScanner(), PickleScanner(), ArchiveScanner(limits), GGUFScanner(),
            OnnxScanner(), IndexScanner(), ConfigScanner()]


def scan_file(item: ScanItem, ctx: ScanContext, limits: ScanLimits | None = None) -> FileScan:
    """Detect the format of one file and run every applicable scanner on it (in this process).

    Never raises for a bad file: an unreadable file or a size that differs from the manifest is a
    blocking ``scan.unreadable``; a scanner's exception is a blocking ``scan.error``.
    """
    limits = limits or ScanLimits()
    started = time.perf_counter()
    out = FileScan(path=item.path, sha256=item.sha256, size=item.size, format="unknown")
    try:
        f = open(item.local_path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        out.findings.append(ScanFinding("scan.unreadable", f"cannot open the stored bytes: {e.strerror}"))
        return _done(out, started)
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != item.size:
            out.findings.append(ScanFinding("scan.unreadable",
                                            f"stored file has {size} bytes, the manifest {item.size}"))
            return _done(out, started)
        src = FileSource(f, size)
        try:
            out.format = detect(src)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to classify blocks the file
            out.findings.append(ScanFinding("scan.error", f"format detection failed: {type(e).__name__}: {e}",
                                            data={"scanner": "detect"}))
            return _done(out, started)
        for scanner in build_scanners(limits):
            if scanner.applies(out.format, item.path):
                _run(scanner, src, item, ctx, out)
    return _done(out, started)


def _run(scanner: Scanner, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
    try:
        scanner.scan(src, item, ctx, out)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - fail closed, and name the scanner
        out.findings.append(ScanFinding("scan.error", f"scanner {scanner.name} failed: {type(e).__name__}: {e}",
                                        data={"scanner": scanner.name}))


def _done(out: FileScan, started: float) -> FileScan:
    out.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return out
