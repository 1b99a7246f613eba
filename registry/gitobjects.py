"""Git object ids computed from metadata alone (no file bytes): LFS pointers, trees, commits.

The Hub answers tree listings with git ids: a file's ``oid`` is the blob id of what git stores
(the pointer file for LFS files), a directory's ``oid`` is its tree id. Computing them the way
git does keeps hubgate's answers identical to the Hub's for the same content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


def blob_oid(data: bytes) -> str:
    """Git blob id of ``data``: sha1 of ``blob <size>\\0<data>``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True, slots=True)
class GitFile:
    path: str
    blob_oid: str  # what git stores: the pointer's id for LFS files


def _tree_oid(entries: list[tuple[str, bool, str]]) -> str:
    # git sorts tree entries by name, comparing directories as if they ended in "/".
    entries.sort(key=lambda e: e[0].encode() + (b"/" if e[1] else b""))
    body = b"".join(
        (b"40000 " if is_dir else b"100644 ") + name.encode() + b"\0" + bytes.fromhex(oid)
        for name, is_dir, oid in entries
    )
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def tree_oids(files: Iterable[GitFile]) -> dict[str, str]:
    """Tree id of every directory (``""`` is the root) holding ``files``."""
    children: dict[str, list[tuple[str, bool, str]]] = {"": []}
    for f in files:
        parts = f.path.split("/")
        for depth in range(1, len(parts)):
            children.setdefault("/".join(parts[:depth]), [])
        parent = "/".join(parts[:-1])
        children[parent].append((parts[-1], False, f.blob_oid))
    oids: dict[str, str] = {}
    # Deepest directories first, so each parent sees its children's ids.
    for directory in sorted(children, key=lambda d: d.count("/") + (d != ""), reverse=True):
        oids[directory] = _tree_oid(children[directory])
        if directory:
            parent, _, name = directory.rpartition("/")
            children[parent].append((name, True, oids[directory]))
    return oids


def commit_oid(tree: str, message: str, *, author: str = "hubgate <hubgate@localhost>", timestamp: int = 0) -> str:
    """Id of a parentless commit of ``tree``; deterministic for a fixed author and timestamp."""
    body = (
        f"tree {tree}\nauthor {author} {timestamp} +0000\ncommitter {author} {timestamp} +0000\n\n{message}\n"
    ).encode()
    return hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
