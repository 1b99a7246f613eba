"""The content gate every publishing path goes through: scan a snapshot's verified blobs, then decide.

``scan`` runs the per-file scanners in the sandbox (mirror/scan/sandbox.py) and the path grammar
over the whole tree; ``decide`` applies what people decided (per-file overrides with a written
justification, code approvals) and what the catalog knows (is a cross-repo ``auto_map`` target
mirrored here). A snapshot with any blocking finding left is refused with ContentBlockedError and
its scan record; otherwise the record becomes part of the snapshot's provenance.
"""

from __future__ import annotations

import copy
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mirror import signing
from mirror.scan.base import SCANNER_NAME, SCANNER_VERSION, FileScan, ScanContext, ScanFinding, ScanItem
from mirror.storage.blobs import BlobStore
from registry import scanning
from registry.errors import ContentBlockedError
from registry.manifest import Manifest
from registry.models import Repo, Snapshot
from registry.scanning import ApprovedCode, Override

if TYPE_CHECKING:
    from mirror.signing import Signer

log = logging.getLogger(__name__)

CODE_RULE = "code.unapproved"
CROSS_REPO_RULE = "config.auto-map-cross-repo"


@dataclass(frozen=True)
class Decisions:
    """What people decided about a repo's content: it lets findings through, it never hides them."""

    overrides: tuple[Override, ...] = ()
    code: tuple[ApprovedCode, ...] = ()

    def __add__(self, other: "Decisions") -> "Decisions":
        return Decisions(self.overrides + other.overrides, self.code + other.code)

    @classmethod
    def from_provenance(cls, provenance: dict[str, Any]) -> "Decisions":
        """The decisions a signed bundle carried with a snapshot (its exporting side's provenance)."""
        ov = tuple(Override(str(o["path"]), str(o["sha256"]), str(o["rule"]), str(o["justification"]),
                            str(o.get("actor", "?"))) for o in provenance.get("overrides") or [] if isinstance(o, dict))
        code = provenance.get("code_approval") or {}
        files = code.get("files") if isinstance(code, dict) else None
        ca = tuple(ApprovedCode(str(f["path"]), str(f["sha256"]), str(f.get("actor", "?")))
                   for f in files or [] if isinstance(f, dict) and f.get("approved"))
        return cls(ov, ca)


@dataclass
class GateResult:
    files: list[FileScan]
    tree: list[ScanFinding]
    blocking: list[dict[str, Any]] = field(default_factory=list)
    overridden: list[dict[str, Any]] = field(default_factory=list)
    code_files: list[dict[str, Any]] = field(default_factory=list)
    scanned_at: str = ""
    duration_ms: float = 0.0

    @property
    def blocked(self) -> bool:
        return bool(self.blocking)

    def record(self) -> dict[str, Any]:
        """The scan record kept in provenance, on the request, and carried by bundles."""
        from mirror.scan import ALLOWLIST_VERSION

        return {
            "scanner": SCANNER_NAME, "scanner_version": SCANNER_VERSION, "allowlist_version": ALLOWLIST_VERSION,
            "scanned_at": self.scanned_at, "duration_ms": round(self.duration_ms, 1),
            "verdict": "block" if self.blocked else "pass",
            "files": [f.to_dict() for f in self.files],
            "tree": [f.to_dict() for f in self.tree],
            "blocking": self.blocking, "overridden": self.overridden, "code_files": self.code_files,
        }

    def message(self, what: str) -> str:
        lines = [f"{b['path'] or '(tree)'}: {b['message']} [{b['rule']}]" for b in self.blocking[:10]]
        more = f" (and {len(self.blocking) - 10} more)" if len(self.blocking) > 10 else ""
        return f"{what} is blocked by the content scan: " + "; ".join(lines) + more


def _is_code(f: FileScan) -> bool:
    from mirror.scan import is_code_path

    return bool(f.facts.get("code")) or is_code_path(f.path)


class Gate:
    def __init__(self, store: BlobStore, limits: Any | None = None, *, signer: Signer | None = None,
                 scratch_dir: Path | None = None) -> None:
        """``signer`` signs the provenance records this gate's decisions are written into."""
        from mirror.scan import ScanLimits

        self.store, self.limits, self.signer = store, limits or ScanLimits(), signer
        self.scratch_dir = scratch_dir
        # Scans done ahead (``Prescan``: a sync scanning what it has stored while it fetches the rest),
        # by (path, sha256), valid for a snapshot of exactly this tree.
        self._ahead: dict[tuple[str, str], FileScan] = {}
        self._ahead_tree: dict[str, int] | None = None

    def reusing(self, scans: Iterable[FileScan], tree: dict[str, int]) -> "Gate":
        """This gate, taking ``scans`` (made by the same scanners, sandbox and limits, with this ``tree`` as
        context) for the files they name instead of scanning them again. It still decides on every file."""
        gate = copy.copy(self)  # keeps the class: a subclass decides as it always does
        gate._ahead, gate._ahead_tree = {(f.path, f.sha256): f for f in scans}, dict(tree)
        return gate

    def put_provenance(self, manifest: Manifest, provenance: dict[str, Any]) -> None:
        """Store a snapshot's provenance, signed by this instance's key when it has one."""
        sig = signing.sign_provenance(self.signer, manifest, provenance) if self.signer is not None else None
        self.store.put_provenance(manifest.repo, manifest.commit, provenance, signature=sig)

    # -- scanning (no DB)
    def scan(self, manifest: Manifest) -> tuple[list[FileScan], list[ScanFinding]]:
        """Per-file scans of every blob the manifest names, and the path grammar over its whole tree."""
        from mirror.scan import check_tree, scan_items

        tree = check_tree(f.path for f in manifest.files)
        if tree:  # the revision is refused whole: no need to open a single file of it
            return [], tree
        ctx = ScanContext(tree={f.path: f.size for f in manifest.files})
        ahead = self._ahead if self._ahead_tree == ctx.tree else {}
        todo = [f for f in manifest.files if (f.path, f.sha256) not in ahead]
        with ExitStack() as stack:
            items = [ScanItem(f.path, f.sha256, f.size, self._readable(f.sha256, stack)) for f in todo]
            fresh = iter(scan_items(items, ctx, self.limits) if items else [])
            return [ahead[(f.path, f.sha256)] if (f.path, f.sha256) in ahead else next(fresh)
                    for f in manifest.files], []

    def _readable(self, sha256: str, stack: ExitStack) -> str:
        """A local file holding the blob: the store's own file, or a private copy for an object store."""
        local = self.store.local_path(sha256)
        if local is not None:
            return str(local)
        tmp = stack.enter_context(tempfile.NamedTemporaryFile(prefix="scan-", dir=self.scratch_dir))
        with self.store.open(sha256) as src:
            shutil.copyfileobj(src, tmp, 8 * 1024 * 1024)
        tmp.flush()
        return tmp.name

    # -- deciding
    def check(self, engine: Engine, manifest: Manifest, *, extra: Decisions = Decisions()) -> GateResult:
        """Scan ``manifest`` and decide. Returns the result; the caller refuses to publish if ``blocked``."""
        started, t0 = datetime.now(timezone.utc), time.monotonic()
        files, tree = self.scan(manifest)
        with Session(engine) as session:
            stored = Decisions(tuple(scanning.overrides(session, manifest.repo)),
                               tuple(scanning.approved_code(session, manifest.repo)))
            targets = {r for f in files for r in f.facts.get("auto_map_repos") or []}
            mirrored = {r for r in targets if _mirrored_model(session, r)}
        result = decide(files, tree, stored + extra, mirrored)
        result.scanned_at = started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        result.duration_ms = (time.monotonic() - t0) * 1000
        log.info("scanned %s@%s: %d files, %s in %.0f ms", manifest.repo, manifest.commit, len(files),
                 "BLOCKED" if result.blocked else "pass", result.duration_ms)
        return result

    def enforce(self, engine: Engine, manifest: Manifest, *, extra: Decisions = Decisions()) -> GateResult:
        """``check``, raising ContentBlockedError (with the scan record) when anything blocks."""
        result = self.check(engine, manifest, extra=extra)
        if result.blocked:
            raise ContentBlockedError(result.message(f"{manifest.repo}@{manifest.commit}"), result.record())
        return result


class Prescan:
    """Scans a snapshot's files while the rest of it is still being fetched (a sync), so that the gate at
    publish time finds most of them done (``finish`` returns a gate ``reusing`` them).

    The same scanners, sandbox and limits as the gate's own scan, with the same context (the tree is
    known from the upstream listing): one sandboxed child in a background thread takes each file as it
    is added. Only files the store holds as local files are scanned ahead; the gate scans the rest
    itself, and decides on every file, as always.
    """

    def __init__(self, gate: Gate, tree: dict[str, int]) -> None:
        self.gate, self.tree = gate, dict(tree)
        self._queue: queue.SimpleQueue[ScanItem | None] = queue.SimpleQueue()
        self._scans: list[FileScan] = []
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prescan", daemon=True)
        self._thread.start()

    def add(self, path: str, sha256: str, size: int) -> None:
        """Scan a verified, stored file of the snapshot (in the background)."""
        local = self.gate.store.local_path(sha256)
        if local is not None and self.tree.get(path) == size:
            self._queue.put(ScanItem(path, sha256, size, str(local)))

    def _items(self) -> Iterator[ScanItem]:
        while (item := self._queue.get()) is not None and not self._cancelled.is_set():
            yield item

    def _run(self) -> None:
        from mirror.scan import scan_items

        try:
            self._scans = scan_items(self._items(), ScanContext(tree=self.tree), self.gate.limits)
        except BaseException as exc:  # noqa: BLE001 - the gate then scans everything itself
            self._error = exc

    def finish(self) -> Gate:
        """Wait for the files added so far; the gate that reuses their scans."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            log.warning("scanning ahead failed (%s): the gate scans every file at publish", self._error)
            return self.gate
        return self.gate.reusing(self._scans, self.tree)

    def cancel(self) -> None:
        """Stop (the sync failed): the child ends once the file it is scanning is done."""
        self._cancelled.set()
        self._queue.put(None)
        self._thread.join()


def _mirrored_model(session: Session, repo_id: str) -> bool:
    """Is ``repo_id`` mirrored here with an available (pinned: every snapshot is a commit) snapshot?"""
    row = session.exec(
        select(Snapshot.pk).join(Repo).where(Repo.repo_type == "model", Repo.repo_id == repo_id,
                                             Snapshot.state == "available")
    ).first()
    return row is not None


def decide(files: Iterable[FileScan], tree: list[ScanFinding], decisions: Decisions, mirrored: set[str]) -> GateResult:
    """Pure: every blocking finding left after the people's decisions. Deterministic order."""
    files = sorted(files, key=lambda f: f.path)
    result = GateResult(files=list(files), tree=list(tree))
    for t in tree:
        if t.severity == "block":
            result.blocking.append({"path": None, "sha256": None, "rule": t.rule, "message": t.message,
                                    "data": t.data})
    overrides = {(o.path, o.sha256, o.rule): o for o in decisions.overrides}
    approved = {(a.path, a.sha256): a for a in decisions.code}
    for f in result.files:
        findings = list(f.findings)
        for repo_id in f.facts.get("auto_map_repos") or []:
            if repo_id not in mirrored:
                findings.append(ScanFinding(
                    CROSS_REPO_RULE,
                    f"auto_map loads code from another repo, {repo_id}, which is not mirrored and pinned here",
                    "block", {"repo": repo_id}))
        if _is_code(f):
            a = approved.get((f.path, f.sha256))
            result.code_files.append({"path": f.path, "sha256": f.sha256, "size": f.size, "approved": a is not None,
                                      "actor": a.actor if a else None})
            if a is None:
                findings.append(ScanFinding(CODE_RULE, "remote code that no admin has approved (sha256 "
                                            f"{f.sha256[:12]}…): review it and approve the code", "block"))
        for finding in findings:
            if finding.severity != "block":
                continue
            entry = {"path": f.path, "sha256": f.sha256, "rule": finding.rule, "message": finding.message,
                     "data": finding.data}
            o = overrides.get((f.path, f.sha256, finding.rule))
            if o is not None and finding.rule != CODE_RULE:
                result.overridden.append(entry | {"justification": o.justification, "actor": o.actor})
            else:
                result.blocking.append(entry)
    return result


def provenance_of(result: GateResult) -> dict[str, Any]:
    """What a published snapshot's provenance carries of its scan and of the decisions that let it through."""
    return {
        "scan": result.record(),
        "overrides": [{k: o[k] for k in ("path", "sha256", "rule", "justification", "actor")} for o in result.overridden],
        "code_approval": {"files": result.code_files} if result.code_files else None,
    }
