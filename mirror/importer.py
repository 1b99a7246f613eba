"""``hubgate import``: a plain folder, or a snapshot folder of an HF cache, becomes a published snapshot.

Everything is validated before a byte is written (paths, symlinks, file kinds), so bad input
leaves nothing behind. Blobs are hashed while they are copied in; the manifest is published
only after every blob is stored.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.engine import Engine

from mirror.errors import ImportSourceError
from mirror.lfs import LfsRules
from mirror.progress import NO_PROGRESS, CountingReader, Progress
from mirror.publishing import publish_manifest
from mirror.xet.builder import XetBuilder
from mirror.scan.gate import Gate, Prescan
from mirror.signing import Signer
from mirror.storage.blobs import BlobStore
from registry import audit, gitobjects, scanning
from registry.db import session_scope
from registry.errors import InvalidInputError
from registry.manifest import Manifest, ManifestEntry
from registry.refs import RefName, parse_ref
from registry.snapshots import PublishResult
from registry.types import RepoRef, validate_commit, validate_path

_CACHE_SNAPSHOT_RE = re.compile(r"^(models|datasets)--(.+)$")
_SKIPPED_DIRS = {".git"}
_SKIPPED_PREFIXES = (".cache/huggingface/",)


@dataclass(frozen=True)
class SourceFile:
    path: str  # repo path
    real: Path  # file to read
    size: int
    etag: str | None  # from an HF cache blob name: sha256 (LFS) or git oid


@dataclass
class ImportResult:
    manifest: Manifest
    publish: PublishResult


def _cache_snapshot(folder: Path) -> tuple[Path, str] | None:
    """If ``folder`` is ``…/<type>s--org--name/snapshots/<sha>``: (the repo's cache folder, sha)."""
    if folder.parent.name == "snapshots" and _CACHE_SNAPSHOT_RE.match(folder.parent.parent.name):
        try:
            return folder.parent.parent, validate_commit(folder.name)
        except InvalidInputError:
            return None
    return None


def scan_folder(folder: Path, allowed_root: Path, *, cache_blobs: Path | None = None) -> list[SourceFile]:
    """List the files of ``folder``, sorted by path; refuse anything that could escape it or is not a regular file.

    ``cache_blobs``: for an HF cache snapshot, its ``blobs`` folder (whose file names are etags).
    """
    files: list[SourceFile] = []
    root_real = allowed_root.resolve()
    cache_blobs = cache_blobs.resolve() if cache_blobs is not None else None
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                raise ImportSourceError(f"{rel_dir}{d} is a symlink to a folder; only file symlinks are followed")
        dirnames[:] = sorted(d for d in dirnames if not (rel_dir == "" and d in _SKIPPED_DIRS))
        for name in sorted(filenames):
            rel = rel_dir + name
            if rel.startswith(_SKIPPED_PREFIXES):
                continue
            try:
                validate_path(rel)
            except InvalidInputError as exc:
                raise ImportSourceError(f"Cannot import {rel!r}: {exc.message}") from exc
            full = Path(dirpath) / name
            real = full.resolve()
            if not real.is_relative_to(root_real):
                raise ImportSourceError(f"{rel} is a symlink pointing outside {allowed_root}: {real}")
            try:
                st = real.stat()
            except OSError as exc:
                raise ImportSourceError(f"{rel} cannot be read: {exc.strerror}") from exc
            if not stat.S_ISREG(st.st_mode):
                raise ImportSourceError(f"{rel} is not a regular file")
            # Only an HF cache snapshot names its blobs by the Hub's etag (sha256 or git blob id).
            etag = real.name if cache_blobs is not None and full.is_symlink() and real.parent == cache_blobs else None
            files.append(SourceFile(rel, real, st.st_size, etag))
    if not files:
        raise ImportSourceError(f"{folder} holds no files to import")
    return sorted(files, key=lambda f: f.path)


def _lfs_rules(files: list[SourceFile]) -> LfsRules:
    attrs = next((f for f in files if f.path == ".gitattributes"), None)
    if attrs is None:
        return LfsRules.hub_default()
    return LfsRules.from_gitattributes(attrs.real.read_text("utf-8", errors="replace"))


def _ingest(store: BlobStore, f: SourceFile, lfs: bool, progress: Progress = NO_PROGRESS) -> ManifestEntry:
    expect_sha256 = f.etag if f.etag and len(f.etag) == 64 else None
    expect_oid = f.etag if f.etag and len(f.etag) == 40 else None
    with open(f.real, "rb") as src:
        # counted as it is read; a store that hashes a file before uploading it (S3) reads it twice: counted at the end
        counted = store.driver.cheap_move
        d = store.ingest_file(CountingReader(src, progress) if counted else src, size=f.size,  # type: ignore[arg-type]
                              sha256=expect_sha256, git_oid=expect_oid, what=f.path)
    progress.advance(0 if counted else f.size, files=1)
    return ManifestEntry(path=f.path, size=d.size, sha256=d.sha256, git_oid=d.git_oid, lfs=lfs)


def import_folder(
    engine: Engine,
    store: BlobStore,
    folder: Path,
    repo: RepoRef,
    *,
    revision: str | None = None,
    refs: list[str] | None = None,
    signer: Signer | None = None,
    instance: str = "hubgate",
    gate: Gate | None = None,
    actor: audit.Actor = audit.SYSTEM,
    approve_code: bool = False,
    xet: XetBuilder | None = None,
    progress: Progress = NO_PROGRESS,
) -> ImportResult:
    """Import ``folder`` as ``repo`` at ``revision`` (derived from the content when None) and point ``refs`` at it.

    The content gate scans every stored blob before anything is published. ``approve_code``: the
    ``actor`` (an operator at the CLI) approves the folder's code files as they are, recorded with
    their sha256 like an admin's code approval over REST.

    Raises ImportSourceError or InvalidInputError on bad input (nothing written), ConflictError if
    the commit is already published with other content, ContentBlockedError if the scan blocks it.
    """
    repo = RepoRef.parse(repo.type, repo.id)
    if not folder.is_dir():
        raise ImportSourceError(f"{folder} is not a folder")
    ref_names: list[RefName] = [parse_ref(r) for r in (refs if refs is not None else ["main"])]
    if revision is not None:
        validate_commit(revision)
    allowed_root = folder
    cached = _cache_snapshot(folder.resolve())
    if cached is not None:
        allowed_root, cache_sha = cached
        if revision is not None and revision != cache_sha:
            raise ImportSourceError(f"--revision {revision} differs from the cache snapshot's commit {cache_sha}")
        revision = cache_sha
    files = scan_folder(folder, allowed_root, cache_blobs=allowed_root / "blobs" if cached is not None else None)
    rules = _lfs_rules(files)
    entries = []
    progress.begin("copying", total_bytes=sum(f.size for f in files), total_files=len(files))
    # The content scan takes each file as soon as it is stored, while the next ones are copied (as a sync does).
    prescan = Prescan(gate or Gate(store, signer=signer), {f.path: f.size for f in files})
    try:
        for f in files:
            lfs = (len(f.etag) == 64) if f.etag else rules.is_lfs(f.path)
            entries.append(_ingest(store, f, lfs, progress))
            prescan.add(entries[-1].path, entries[-1].sha256, entries[-1].size)
    except BaseException:
        prescan.cancel()
        raise
    progress.begin("scanning and publishing")
    gate = prescan.finish()
    if revision is None:
        tree = gitobjects.tree_oids(gitobjects.GitFile(e.path, e.tree_oid) for e in entries)[""]
        revision = gitobjects.commit_oid(tree, f"Import {repo.id}")
    manifest = Manifest(
        repo_type=repo.type, repo_id=repo.id, commit=revision,
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        source={"kind": "import" if cached is None else "hf-cache"},
        files=tuple(entries),
    )
    existing = _existing_manifest(store, manifest)
    if existing is not None:
        manifest = existing  # same content: keep the first manifest byte for byte
    if approve_code:
        from mirror.scan import is_code_path

        code = {e.path: e.sha256 for e in manifest.files if is_code_path(e.path)}
        if code:
            with session_scope(engine) as session:
                scanning.approve_code(session, repo, code, actor=actor)
    provenance = {"instance": instance, "source": manifest.source.get("kind"), "imported_by": actor.name}
    published = publish_manifest(
        engine, store, manifest, ref_names, signer=signer, provenance=provenance, gate=gate, xet=xet,
        in_transaction=lambda s: audit.record(s, actor, "import", f"{repo}@{manifest.commit}",
                                              source=manifest.source.get("kind"), files=len(manifest.files)),
    )
    progress.end()
    return ImportResult(manifest, published)


def _existing_manifest(store: BlobStore, manifest: Manifest) -> Manifest | None:
    """The stored manifest of the same commit if it lists the same files (re-import changes nothing)."""
    from mirror.errors import ObjectNotFoundError

    try:
        old = store.get_manifest(manifest.repo, manifest.commit)
    except ObjectNotFoundError:
        return None
    return old if old.files == manifest.files else None
