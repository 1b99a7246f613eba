"""Test helpers for the content gate: pickles that would run code, and an old, lenient scanner.

``LenientGate`` stands for a scanner of an older version that did not know a threat yet: it
passes every file and records its own (old) version. It lets a test publish what today's gate
refuses, to check that the paths that re-scan (the sealed side of a bundle, ``hubgate rescan``,
``verify --repair``) catch it with their own, current scan.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

OLD_SCANNER_VERSION = "0.0.1-test"


class Payload:
    """Pickles to ``os.system("touch MARKER")``: a scan must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps({"weights": [0.5] * 4, "hook": Payload(marker)}, protocol=protocol)


def lenient_gate(store: Any, signer: Any = None) -> Any:
    from mirror.scan.base import FileScan
    from mirror.scan.gate import Gate

    from mirror.scan.gate import GateResult

    class LenientGate(Gate):
        def check(self, engine: Any, manifest: Any, *, extra: Any = None) -> GateResult:
            files = [FileScan(f.path, f.sha256, f.size, "binary", scanner_version=OLD_SCANNER_VERSION)
                     for f in manifest.files]
            return GateResult(files=files, tree=[])

    return LenientGate(store, signer=signer)
