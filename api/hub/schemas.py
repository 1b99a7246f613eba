"""JSON bodies shaped like the Hub's: repo info, tree entries, refs, commits."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from api.hub.cache import CommitIndex
from registry.catalog import FileView, RefView, SnapshotView
from registry.types import RepoType

MODEL_ONLY = ("pipeline_tag", "library_name", "modelId", "config", "transformersInfo")


def hub_date(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.fffZ``: the clients refuse ``+00:00`` offsets."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _object_id(snap: SnapshotView) -> str:
    return hashlib.sha1(f"{snap.repo.type.value}:{snap.repo.id}".encode()).hexdigest()[:24]


def sibling(index: CommitIndex, f: FileView, *, blobs: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"rfilename": f.path}
    if blobs:
        item["size"] = f.size
        item["blobId"] = index.blob_oid(f)
        if f.lfs:
            item["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": index.pointer_size(f)}
    return item


def repo_info(snap: SnapshotView, index: CommitIndex | None, *, blobs: bool = False) -> dict[str, Any]:
    """The repo info document. ``index`` None leaves out ``siblings`` (listings)."""
    info = snap.info
    author = snap.repo.id.split("/")[0] if "/" in snap.repo.id else None
    doc: dict[str, Any] = {
        "_id": _object_id(snap),
        "id": snap.repo.id,
        "private": False,
        "pipeline_tag": info.get("pipeline_tag"),
        "library_name": info.get("library_name"),
        "tags": info.get("tags") or [],
        "downloads": 0,
        "likes": 0,
        "modelId": snap.repo.id,
        "author": author,
        "sha": snap.commit,
        "lastModified": hub_date(snap.created_at),
        "createdAt": hub_date(snap.repo_created_at),
        "gated": False,
        "disabled": False,
        "cardData": info.get("cardData"),
        "config": info.get("config"),
        "usedStorage": snap.total_size,
    }
    if snap.repo.type is RepoType.DATASET:
        for key in MODEL_ONLY:
            doc.pop(key, None)
    if doc.get("config") is None:
        doc.pop("config", None)
    if index is not None:
        doc["siblings"] = [sibling(index, index.files[p], blobs=blobs) for p in index.paths]
    return doc


def expand_filter(doc: dict[str, Any], expand: list[str]) -> dict[str, Any]:
    """With ``expand=…`` the Hub returns only ``_id``, ``id`` and the requested keys."""
    if not expand:
        return doc
    return {k: v for k, v in doc.items() if k in ("_id", "id") or k in expand}


def last_commit(snap: SnapshotView) -> dict[str, Any]:
    return {"id": snap.commit, "title": f"Snapshot {snap.commit[:7]}", "date": hub_date(snap.created_at)}


_UNSCANNED = {"status": "unscanned", "avScan": {"status": "unscanned"}, "pickleImportScan": {"status": "unscanned"}}


def tree_entry(index: CommitIndex, path: str, *, expand: bool) -> dict[str, Any]:
    f = index.files.get(path)
    if f is None:
        entry: dict[str, Any] = {"type": "directory", "oid": index.tree_oids[path], "size": 0, "path": path}
    else:
        entry = {"type": "file", "oid": index.blob_oid(f), "size": f.size, "path": path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": index.pointer_size(f)}
        if expand:
            entry["securityFileStatus"] = _UNSCANNED
    if expand:
        entry["lastCommit"] = last_commit(index.snapshot)
    return entry


def refs_doc(refs: list[RefView], *, include_prs: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"branches": [], "converts": [], "tags": []}
    if include_prs:
        doc["pullRequests"] = []
    target = {"branch": "branches", "tag": "tags", "convert": "converts", "pr": "pullRequests"}
    for r in refs:
        full = {"branch": f"refs/heads/{r.name}", "tag": f"refs/tags/{r.name}"}.get(r.kind, r.name)
        name = r.name.removeprefix("refs/convert/") if r.kind == "convert" else r.name
        key = target[r.kind]
        if key in doc:
            doc[key].append({"name": name, "ref": full, "targetCommit": r.commit})
    return doc


def commit_doc(snap: SnapshotView, *, formatted: bool) -> dict[str, Any]:
    title = f"Snapshot {snap.commit[:7]}"
    doc: dict[str, Any] = {
        "id": snap.commit,
        "authors": [{"user": "hubgate"}],
        "date": hub_date(snap.created_at),
        "title": title,
        "message": "",
    }
    if formatted:
        doc["formatted"] = {"title": title, "message": ""}
    return doc
