"""The one interface every content scanner implements, and the records a scan produces.

A scanner looks at one stored file (its bytes, never loaded or unpickled) and says what format
it is and what is wrong with it. Scanners run in a sandboxed child process (``sandbox.py``);
this module is imported on both sides, so it holds only plain data.

Verdicts: ``pass`` (nothing found), ``warn`` (findings an admin should see, not blocking),
``block`` (at least one blocking finding). A scanner that cannot finish (parse error, limit,
crash, a file it cannot open) blocks: every failure is fail-closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

SCANNER_NAME = "hubgate-scan"
# Bump when any rule changes what a scan answers: `hubgate rescan` re-scans snapshots scanned by another version.
SCANNER_VERSION = "1.0.0"

PASS, WARN, BLOCK = "pass", "warn", "block"
SEVERITIES = ("info", "warn", "block")


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, tuples as lists, scalars), as ``dataclasses.asdict`` made."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


@dataclass(frozen=True)
class ScanFinding:
    """One thing a scanner found. ``rule`` is dotted and stable (e.g. ``pickle.global``, ``format.mismatch``)."""

    rule: str
    message: str
    severity: str = "block"  # info | warn | block
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict's generic recursion was a tenth of a 1,000-file sync's publish
        return {"rule": self.rule, "message": self.message, "severity": self.severity,
                "data": _copy(self.data)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScanFinding":
        return cls(rule=str(d["rule"]), message=str(d["message"]), severity=str(d.get("severity", "block")),
                   data=dict(d.get("data") or {}))


@dataclass
class FileScan:
    """What the scan of one file found: part of the snapshot's provenance."""

    path: str
    sha256: str
    size: int
    format: str  # detected from the bytes: safetensors, pickle, torch-zip, torch-legacy, numpy, npz, gguf, onnx, ...
    scanner: str = SCANNER_NAME
    scanner_version: str = SCANNER_VERSION
    allowlist_version: str | None = None  # pickle scans only
    globals: list[str] = field(default_factory=list)  # pickle globals seen, "module.name"
    findings: list[ScanFinding] = field(default_factory=list)
    duration_ms: float = 0.0
    # Facts other checks need (the gate resolves them against the catalog / the rest of the tree):
    # {"auto_map": ["org/repo--mod.Class", ...], "code": True, "chat_template_sha256": "...", ...}
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        sev = {f.severity for f in self.findings}
        return BLOCK if "block" in sev else WARN if "warn" in sev else PASS

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "format": self.format,
                "scanner": self.scanner, "scanner_version": self.scanner_version,
                "allowlist_version": self.allowlist_version, "globals": list(self.globals),
                "findings": [f.to_dict() for f in self.findings], "duration_ms": self.duration_ms,
                "facts": _copy(self.facts), "verdict": self.verdict}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FileScan":
        return cls(
            path=str(d["path"]), sha256=str(d["sha256"]), size=int(d["size"]), format=str(d["format"]),
            scanner=str(d.get("scanner", SCANNER_NAME)), scanner_version=str(d.get("scanner_version", "")),
            allowlist_version=d.get("allowlist_version"), globals=list(d.get("globals") or []),
            findings=[ScanFinding.from_dict(f) for f in d.get("findings") or []],
            duration_ms=float(d.get("duration_ms", 0.0)), facts=dict(d.get("facts") or {}),
        )


@dataclass(frozen=True)
class ScanItem:
    """One file to scan: where its verified bytes can be read in the child, and what the manifest says of it."""

    path: str  # repo path
    sha256: str
    size: int
    local_path: str  # a readable file holding exactly the blob's bytes


@dataclass(frozen=True)
class ScanContext:
    """What a per-file scanner may know about the rest of the snapshot (no DB, no network)."""

    tree: dict[str, int]  # every repo path of the snapshot -> size


class Source(Protocol):
    """Random access to one file's bytes inside the child."""

    size: int

    def read_at(self, offset: int, length: int) -> bytes: ...

    def stream(self, offset: int = 0) -> BinaryIO:
        """A forward reader from ``offset`` for walkers that read a file through (pickles, archives)."""
        ...


class Scanner(Protocol):
    """One format or concern. ``applies`` decides from the detected format and path; ``scan`` adds findings/facts."""

    name: str

    def applies(self, fmt: str, path: str) -> bool: ...

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None: ...
