"""Wire names of the Hub protocol, in one place, and the headers of a file answer."""

from __future__ import annotations

from urllib.parse import quote

from registry.catalog import FileView

X_REPO_COMMIT = "X-Repo-Commit"
X_LINKED_ETAG = "X-Linked-Etag"
X_LINKED_SIZE = "X-Linked-Size"
X_ERROR_CODE = "X-Error-Code"
X_ERROR_MESSAGE = "X-Error-Message"
X_REQUEST_ID = "X-Request-Id"  # on every answer (api/edge.py)
ETAG = "ETag"

REPO_NOT_FOUND = "RepoNotFound"
REVISION_NOT_FOUND = "RevisionNotFound"
ENTRY_NOT_FOUND = "EntryNotFound"
GATED_REPO = "GatedRepo"

EXPOSE_HEADERS = ",".join(
    [X_REPO_COMMIT, "X-Request-Id", X_ERROR_CODE, X_ERROR_MESSAGE, "X-Total-Count", ETAG, "Link",
     "Accept-Ranges", "Content-Range", X_LINKED_ETAG, X_LINKED_SIZE]
)

IMMUTABLE = "public, max-age=31536000, immutable"


def etag_of(f: FileView) -> str:
    """The Hub's blob id: sha256 for LFS files, git blob id otherwise (HF caches name blobs by it)."""
    return f.sha256 if f.lfs else f.git_oid


def file_headers(f: FileView, commit: str) -> list[tuple[bytes, bytes]]:
    """Headers every answer about a file carries (200, 206, 302 and HEAD alike). Never any Xet header."""
    etag = f'"{etag_of(f)}"'.encode()
    filename = f.path.rsplit("/", 1)[-1]
    headers = [
        (b"x-repo-commit", commit.encode()),
        (b"etag", etag),
        (b"accept-ranges", b"bytes"),
        (b"content-disposition", f"inline; filename*=UTF-8''{quote(filename)}".encode()),
        (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
    ]
    if f.lfs:
        headers += [(b"x-linked-etag", etag), (b"x-linked-size", str(f.size).encode())]
    return headers
