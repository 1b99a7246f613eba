"""The wire itself (httpx / http.client): Range, 416, HEAD headers, redirects, malformed URLs, no Xet."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import hf_hub_download

from helpers.content import fixture_repo, git_blob_sha1, hub_etag, safetensors_bytes, sha256, write_tree
from helpers.hubgate import HubgateServer, start_hubgate

pytestmark = pytest.mark.integration


@pytest.fixture
def client(hub: HubgateServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.base_url, follow_redirects=False, timeout=30) as c:
        yield c


def assert_no_xet(response: httpx.Response) -> None:
    xet = [k for k in response.headers if k.lower().startswith("x-xet")]
    assert not xet, f"{response.request.method} {response.request.url}: {xet}"


def test_head_of_a_regular_file(hub: HubgateServer, client: httpx.Client) -> None:
    data = hub.repos["tiny"].files["config.json"]
    for rev in ("main", hub.commits["tiny"]):
        r = client.head(f"/acme/tiny/resolve/{rev}/config.json")
        assert r.status_code == 200
        assert r.headers["x-repo-commit"] == hub.commits["tiny"]
        assert r.headers["etag"] == f'"{git_blob_sha1(data)}"'
        assert r.headers["content-length"] == str(len(data))
        assert r.headers["accept-ranges"] == "bytes"
        assert "x-linked-etag" not in r.headers and "x-linked-size" not in r.headers
        assert r.content == b""
        assert_no_xet(r)
    g = client.get("/acme/tiny/resolve/main/config.json")
    assert g.status_code == 200 and g.content == data
    assert g.headers["etag"] == f'"{git_blob_sha1(data)}"'
    assert_no_xet(g)


@pytest.mark.parametrize(("key", "path"), [("tiny", "model.safetensors"), ("tree", "d.bin"),
                                           ("parquet", "data/train-00000-of-00001.parquet")])
def test_head_of_an_lfs_file(hub: HubgateServer, client: httpx.Client, key: str, path: str) -> None:
    repo, sha = hub.repos[key], hub.commits[key]
    data = repo.files[path]
    url = f"{repo.url_prefix}/resolve/main/{path}"
    r = client.head(url)
    assert_no_xet(r)
    assert r.headers["x-repo-commit"] == sha
    assert r.headers["x-linked-etag"] == f'"{sha256(data)}"'
    assert r.headers["x-linked-size"] == str(len(data))
    if hub.flavour == "s3-redirect":
        assert r.status_code == 302
        location = r.headers["location"]
        assert location.startswith(hub.s3_origin + "/"), location  # another origin: the object store
        assert r.headers["content-length"] == "0"
        g = client.get(url)
        assert g.status_code == 302 and g.headers["location"].startswith(hub.s3_origin + "/")
        assert g.headers["x-repo-commit"] == sha
        # the presigned URL serves the bytes without any credentials, ranges included
        with httpx.Client(timeout=30) as anonymous:
            assert anonymous.get(location).content == data
            part = anonymous.get(location, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == data[100:200]
    else:
        assert r.status_code == 200
        assert r.headers["etag"] == f'"{sha256(data)}"'
        assert r.headers["content-length"] == str(len(data))
        assert r.headers["accept-ranges"] == "bytes"
        g = client.get(url)
        assert g.status_code == 200 and g.content == data


def _get(hub: HubgateServer, client: httpx.Client, url: str, **headers: str) -> tuple[httpx.Response, bool]:
    """GET, following a redirect to the object store (with the same headers) like the HF clients do;
    also says whether hubgate itself answered."""
    r = client.get(url, headers=headers)
    assert_no_xet(r)
    if r.status_code == 302:
        assert hub.flavour == "s3-redirect"
        with httpx.Client(timeout=30) as other:
            return other.get(r.headers["location"], headers=headers), False
    return r, True


@pytest.mark.parametrize(("key", "path"), [("tree", "a.txt"), ("tree", "d.bin"), ("tiny", "model.safetensors")])
def test_ranges(hub: HubgateServer, client: httpx.Client, key: str, path: str) -> None:
    repo = hub.repos[key]
    data, size = repo.files[path], len(repo.files[path])
    url = f"{repo.url_prefix}/resolve/main/{path}"
    cases = {
        "bytes=10-19": (10, 19),
        "bytes=1000-": (1000, size - 1),
        "bytes=-5": (size - 5, size - 1),
        f"bytes=0-{size + 500}": (0, size - 1),  # an end past the end is clipped
        f"bytes={size - 1}-{size - 1}": (size - 1, size - 1),
    }
    for header, (start, end) in cases.items():
        r, _ = _get(hub, client, url, Range=header)
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {start}-{end}/{size}", header
        assert r.content == data[start:end + 1], header
        assert r.headers["content-length"] == str(end - start + 1)

    # a range that starts at or past the end: 416 with the size
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        r, by_hubgate = _get(hub, client, url, Range=header)
        assert r.status_code == 416, header
        if by_hubgate:  # (moto's own 416 has no Content-Range)
            assert r.headers["content-range"] == f"bytes */{size}", header
    # malformed or multiple ranges: the whole file (RFC 9110 allows ignoring them)
    if hub.flavour != "s3-redirect" or not path.endswith((".bin", ".safetensors")):
        for header in ("bytes=abc", "bytes=20-10", "items=0-5", "bytes=0-1,5-6"):
            r = client.get(url, headers={"Range": header})
            assert r.status_code == 200 and r.content == data, header
        # If-Range: a stale validator means the whole file, the current one the range
        etag = client.head(url).headers["etag"]
        r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert r.status_code == 206 and r.content == data[:10]
        r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"0000"'})
        assert r.status_code == 200 and r.content == data


def test_416_on_an_empty_file(hub: HubgateServer, client: httpx.Client) -> None:
    assert hub.repos["tree"].files["c.txt"] == b""
    r = client.get("/acme/tree/resolve/main/c.txt", headers={"Range": "bytes=0-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"
    r = client.get("/acme/tree/resolve/main/c.txt")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"


def test_not_found_answers(hub: HubgateServer, client: httpx.Client) -> None:
    sha = hub.commits["tiny"]
    r = client.head("/acme/tiny/resolve/main/nope.json")
    assert r.status_code == 404
    assert r.headers["x-error-code"] == "EntryNotFound" and r.headers["x-repo-commit"] == sha
    r = client.get("/acme/tiny/resolve/main/nope.json")
    assert r.status_code == 404 and "error" in r.json()
    r = client.head("/acme/missing/resolve/main/config.json")
    assert r.status_code == 404 and r.headers["x-error-code"] == "RepoNotFound"
    r = client.head("/acme/tiny/resolve/nope/config.json")
    assert r.status_code == 404 and r.headers["x-error-code"] == "RevisionNotFound"
    # a missing tree folder: EntryNotFound, never RepoNotFound (AutoTokenizer depends on it)
    for url in ("/api/models/acme/tiny/tree/main/additional_chat_templates",
                "/api/models/acme/tiny/tree/main/additional_chat_templates?recursive=false&expand=false",
                "/api/datasets/acme/csv-data/tree/main/data",
                f"/api/models/acme/tree/tree/{hub.commits['tree']}/sub%2Fnope"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.headers.get("x-error-code") == "EntryNotFound", url


def test_datasets_prefix_and_info(hub: HubgateServer, client: httpx.Client) -> None:
    repo, sha = hub.repos["csv"], hub.commits["csv"]
    r = client.head("/datasets/acme/csv-data/resolve/main/cities.csv")
    assert r.status_code == 200 and r.headers["x-repo-commit"] == sha
    assert r.headers["etag"] == f'"{git_blob_sha1(repo.files["cities.csv"])}"'
    assert client.get("/datasets/acme/csv-data/resolve/main/cities.csv").content == repo.files["cities.csv"]
    info = client.get("/api/datasets/acme/csv-data").json()
    assert info["id"] == "acme/csv-data" and info["sha"] == sha
    assert info["lastModified"].endswith("Z")
    # the same name without the prefix is a model, which does not exist
    assert client.head("/acme/csv-data/resolve/main/cities.csv").headers.get("x-error-code") == "RepoNotFound"


def test_no_xet_header_anywhere(hub: HubgateServer, client: httpx.Client) -> None:
    sha = hub.commits["tiny"]
    requests = [
        ("HEAD", "/acme/tiny/resolve/main/model.safetensors"), ("GET", "/acme/tiny/resolve/main/model.safetensors"),
        ("HEAD", f"/acme/tiny/resolve/{sha}/config.json"), ("GET", "/acme/tiny/resolve/main/config.json"),
        ("HEAD", "/acme/tiny/resolve/main/nope"), ("GET", "/api/models/acme/tiny"),
        ("GET", "/api/models/acme/tiny/revision/main?blobs=true"), ("GET", f"/api/models/acme/tiny/tree/{sha}"),
        ("GET", "/api/models/acme/tiny/refs"), ("GET", "/api/models/acme/tiny/commits/main"),
        ("GET", "/api/models"), ("GET", "/api/datasets/acme/parquet-data/tree/main/data"),
    ]
    with hub.recording() as log:
        for method, url in requests:
            r = client.request(method, url)
            assert r.status_code < 500, url
            assert_no_xet(r)
        r = client.post(f"/api/models/acme/tiny/paths-info/{sha}", json={"paths": ["config.json"], "expand": True})
        assert_no_xet(r)
    assert len(log.records) == len(requests) + 1
    for rec in log.records:
        assert not [k for k, _ in rec.headers if k.startswith("x-xet")], rec.path
    # and no xetHash in listings
    for url in (f"/api/models/acme/tiny/tree/{sha}?recursive=true&expand=true",):
        assert "xet" not in client.get(url).text.lower()


def test_info_tree_and_paths_info_json(hub: HubgateServer, client: httpx.Client) -> None:
    sha = hub.commits["tree"]
    info = client.get("/api/models/acme/tree/revision/main?blobs=true").json()
    assert info["sha"] == sha and info["id"] == "acme/tree"
    page = client.get(f"/api/models/acme/tree/tree/{sha}/sub%2Fdeep")
    assert page.status_code == 200
    assert [e["path"] for e in page.json()] == ["sub/deep/z.bin"]
    # JSON body, as well as the form body the HF client sends
    r = client.post(f"/api/models/acme/tree/paths-info/{sha}", json={"paths": ["a.txt", "sub", "nope"]})
    assert r.status_code == 200
    assert sorted(e["path"] for e in r.json()) == ["a.txt", "sub"]
    # a body that is not what paths-info takes: 400 naming the problem, never a 500
    for body, message in [(b"{bad", "not valid JSON"), (b'["a.txt"]', "must be an object"),
                          (b'{"paths": "a.txt"}', "paths must be a list")]:
        r = client.post(f"/api/models/acme/tree/paths-info/{sha}", content=body,
                        headers={"content-type": "application/json"})
        assert r.status_code == 400 and message in r.text, (body, r.status_code, r.text)


# ---------------------------------------------------------------------------------------------
# malformed URLs, sent byte for byte with http.client (httpx would normalise some of them)

LONG = "a" * 9000
MALFORMED = [
    "/acme/tiny/resolve/main/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/acme/tiny/resolve/main/%2e%2e/config.json",
    "/acme/tiny/resolve/main/..%2fconfig.json",
    "/acme/tiny/resolve/main/..%2F..%2F..%2Facme%2Ftiny%2Fresolve%2Fmain%2Fconfig.json",
    "/acme/tiny/resolve/main/sub/..%2f..%2fconfig.json",
    "/acme/tiny/resolve/main/../config.json",
    "/acme/tiny/resolve/main/./config.json",
    "/acme/tiny/resolve/main/.%2fconfig.json",
    "/acme/tiny/resolve/main/..%5cconfig.json",
    "/acme/tiny/resolve/main/%2fetc%2fpasswd",
    "/acme/tiny/resolve/main//config.json",
    "/acme/tiny/resolve/..%2f..%2fmain/config.json",
    "/acme/tiny/resolve/%2e%2e/config.json",
    "/acme/tiny/resolve/main%00/config.json",
    "/acme/tiny/resolve/main/config.json%00",
    "/acme/tiny/resolve/main/config.json%00.txt",
    "/acme/tiny/resolve/main/%00",
    "/acme/tiny/resolve/main/config%ff.json",
    "/acme/tiny/resolve/main/" + LONG,
    "/acme/tiny/resolve/main/" + "/".join(["abcdefghij"] * 110),  # > 1024 bytes of path
    "/acme/tiny/resolve/main/" + "x" * 300,  # a 300-byte file name
    "/acme%00/tiny/resolve/main/config.json",
    "/acme/tiny%00/resolve/main/config.json",
    "/acme/..%2ftiny/resolve/main/config.json",
    "/%2e%2e/tiny/resolve/main/config.json",
    "/acme--x/tiny/resolve/main/config.json",
    "/-acme/tiny/resolve/main/config.json",
    "/ac%20me/tiny/resolve/main/config.json",
    "/acme/tiny.git/resolve/main/config.json",
    "/" + "a" * 200 + "/tiny/resolve/main/config.json",
    "/datasets/acme/..%2fparquet-data/resolve/main/README.md",
    "/api/models/acme/tiny/tree/main/%2e%2e",
    "/api/models/acme/tiny/tree/main/..%2f..%2f",
    "/api/models/acme/tiny/tree/main/sub%00",
    "/api/models/acme/tiny/tree/..%2fmain",
    "/api/models/acme/tiny/revision/main%00",
    "/api/models/acme/tiny/revision/..",
    "/api/models/acme%00/tiny",
    "/api/models/acme/..%2ftiny",
    "/api/models/acme--x/tiny",
    "/api/models/" + "a" * 200,
    "/api/models/acme/tiny/tree/" + LONG,
]


@pytest.mark.parametrize("raw_path", MALFORMED, ids=lambda p: p[:70])
def test_malformed_requests_are_400_or_404(hub: HubgateServer, raw_path: str) -> None:
    secrets = [d for repo in hub.repos.values() for d in repo.files.values() if len(d) >= 16]
    for method in ("GET", "HEAD"):
        conn = http.client.HTTPConnection("127.0.0.1", hub.live.port, timeout=30)
        try:
            conn.putrequest(method, raw_path, skip_accept_encoding=True)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            headers = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        assert resp.status in (400, 404), f"{method} {raw_path[:100]} -> {resp.status}"
        assert "x-repo-commit" not in headers or resp.status == 404
        assert "etag" not in headers and "x-linked-etag" not in headers
        assert not any(s in body for s in secrets), "a file's bytes leaked"
        if method == "GET" and body:
            assert isinstance(json.loads(body), dict)  # a JSON error, not content
    # the server is still fine
    assert httpx.get(f"{hub.base_url}/acme/tiny/resolve/main/config.json").status_code == 200


def test_a_file_larger_than_one_send_window(tmp_path: Path) -> None:
    """Local store: a blob is sent in 8 MiB windows of a memory map; ranges that start mid-page,
    cross a window boundary or end the file come back byte-exact, and hf_hub_download agrees. Xet off: the file
    is over the Xet threshold, and this is about the plain path (hf_xet would not use it)."""
    window = 8 * 1024 * 1024
    data = safetensors_bytes(2 * window + 12_345, 7)
    repo = fixture_repo("big", "model", "acme/big", write_tree(tmp_path / "big", {"model.safetensors": data}))
    server = start_hubgate("local", tmp_path / "data", [repo], cli_repos=("big",), extra={"HUBGATE_XET": "off"})
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            url = "/acme/big/resolve/main/model.safetensors"
            whole = client.get(url)
            assert whole.status_code == 200 and whole.content == data
            for start, end in [(window - 5, window + 5), (4097, 2 * window + 1), (3, len(data) - 1), (2 * window, len(data) - 1)]:
                r = client.get(url, headers={"Range": f"bytes={start}-{end}"})
                assert r.status_code == 206 and r.content == data[start:end + 1], (start, end)
        local = hf_hub_download("acme/big", "model.safetensors", cache_dir=tmp_path / "cache", endpoint=server.base_url)
        assert Path(local).read_bytes() == data
        assert Path(local).resolve().name == hub_etag("model.safetensors", data)
    finally:
        server.stop()
