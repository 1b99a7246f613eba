"""The Xet read protocol end to end with the real clients (huggingface_hub 2.4 + hf_xet), through HF_ENDPOINT,
on the local store and on S3 (moto: redirect and proxy modes): byte-identical HF caches with and without
HF_HUB_DISABLE_XET=1, and the protocol's own answers and refusals."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest
from helpers.hubgate import HubgateServer
from helpers.subproc import client_env

pytestmark = pytest.mark.integration
CLIENT = Path(__file__).with_name("xet_client.py")


def run_client(hub: HubgateServer, home: Path, actions: list[list[object]], *, xet: bool) -> dict:  # type: ignore[type-arg]
    import json
    import subprocess
    import sys

    env = client_env(hub.base_url, home)
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    proc = subprocess.run([sys.executable, str(CLIENT), json.dumps({"actions": actions})], capture_output=True,
                          text=True, env=env, timeout=600)
    lines = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def head(hub: HubgateServer, path: str) -> httpx.Response:
    return httpx.head(hub.base_url + path, follow_redirects=False)


def test_resolve_advertises_xet_only_for_files_with_a_stored_representation(xet_hub: HubgateServer) -> None:
    sha = xet_hub.commits["big"]
    big = head(xet_hub, "/acme/big/resolve/main/model.safetensors")
    assert big.status_code == (302 if xet_hub.flavour == "s3-redirect" else 200)
    file_hash = big.headers["x-xet-hash"]
    assert len(file_hash) == 64
    route = f"{xet_hub.base_url}/api/models/acme/big/xet-read-token/{sha}"
    assert big.headers["x-xet-refresh-route"] == route
    assert big.headers["link"] == f'<{route}>; rel="xet-auth"'
    # everything a plain answer carries is unchanged
    assert big.headers["x-repo-commit"] == sha
    assert big.headers["x-linked-size"] == str(len(xet_hub.repos["big"].files["model.safetensors"]))
    small = head(xet_hub, "/acme/tiny/resolve/main/generation_config.json")  # under the threshold
    assert small.status_code == 200 and "x-xet-hash" not in small.headers and "link" not in small.headers
    # a regular git file over the threshold stays plain, as on the Hub (only LFS files are served over Xet)
    from helpers.content import is_lfs
    from tests.xet.support import XET_ENV

    regular = [p for p, data in xet_hub.repos["tiny"].files.items()
               if not is_lfs(p) and len(data) >= int(XET_ENV["HUBGATE_XET_THRESHOLD_BYTES"])]
    assert regular, "the fixture needs a regular file over the threshold"
    answer = head(xet_hub, f"/acme/tiny/resolve/main/{regular[0]}")
    assert answer.status_code == 200 and "x-xet-hash" not in answer.headers and "link" not in answer.headers


def test_clients_fill_identical_caches_with_and_without_xet(xet_hub: HubgateServer, tmp_path: Path) -> None:
    big = xet_hub.repos["big"].files["model.safetensors"]
    ranges = [[0, 100], [5_000_000, 5_065_536], [len(big) - 1000, len(big)]]
    actions = [["download", "acme/big", "model.safetensors"], ["snapshot", "acme/big-ft"], ["snapshot", "acme/tiny"],
               ["fs", "acme/big", "model.safetensors", ranges], ["cli", "acme/big"]]
    with xet_hub.recording() as log:
        with_xet = run_client(xet_hub, tmp_path / "xet", actions, xet=True)
    cas_calls = [r for r in log.records if r.path.startswith("/xet/")]
    plain = run_client(xet_hub, tmp_path / "plain", actions, xet=False)

    assert with_xet["results"] == plain["results"]
    assert with_xet["results"][0] == hashlib.sha256(big).hexdigest()
    assert with_xet["results"][3] == [hashlib.sha256(big[a:b]).hexdigest() for a, b in ranges]
    assert with_xet["cache"] == plain["cache"]  # names and bytes
    assert any(k.endswith("/blobs/" + hashlib.sha256(big).hexdigest()) for k in with_xet["cache"])
    # the Xet run really went through the CAS: reconstructions, and xorb ranges from hubgate (or S3)
    assert any("/reconstructions/" in r.path and r.status == 200 for r in cas_calls), [r.path for r in cas_calls]
    if xet_hub.flavour != "s3-redirect":
        assert any(r.path.startswith("/xet/xorbs/") and r.status == 206 for r in cas_calls)
    gets = [r for r in log.records if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert all(r.request_header("range") for r in gets), "no plain full download of a Xet file"
    # snapshot_download read xetHash in the tree and went to the CAS without a HEAD of that file
    ft_sha = xet_hub.commits["big-ft"]
    assert any(r.path == f"/api/models/acme/big-ft/xet-read-token/{ft_sha}" for r in log.records)
    assert not [r.path for r in log.records if r.path.startswith("/acme/big-ft/resolve/")
                and r.path.endswith("/model.safetensors")]


def test_tree_and_paths_info_carry_xet_hash_for_files_served_over_xet(xet_hub: HubgateServer) -> None:
    big = head(xet_hub, "/acme/big/resolve/main/model.safetensors").headers["x-xet-hash"]
    tree = httpx.get(f"{xet_hub.base_url}/api/models/acme/big/tree/main?recursive=true").json()
    by_path = {e["path"]: e for e in tree}
    assert by_path["model.safetensors"]["xetHash"] == big
    assert [p for p, e in by_path.items() if "xetHash" in e] == ["model.safetensors"]  # not config.json & co
    info = httpx.post(f"{xet_hub.base_url}/api/models/acme/big/paths-info/main",
                      data={"paths": ["model.safetensors", "config.json"]}).json()
    assert {e["path"]: e.get("xetHash") for e in info} == {"model.safetensors": big, "config.json": None}
    tiny = httpx.post(f"{xet_hub.base_url}/api/models/acme/tiny/paths-info/main", data={"paths": ["model.safetensors"]})
    assert [e.get("xetHash") for e in tiny.json()] == [
        head(xet_hub, "/acme/tiny/resolve/main/model.safetensors").headers["x-xet-hash"]]


@pytest.mark.slow
@pytest.mark.parametrize("xet_hub", ["local", "s3-redirect-rgw", "s3-proxy-rgw"], indirect=True)
def test_transformers_and_datasets_load_over_xet_like_over_http(xet_hub: HubgateServer, tmp_path: Path) -> None:
    actions = [["transformers", "acme/tiny"], ["datasets", "acme/parquet-data"]]
    with xet_hub.recording() as log:
        with_xet = run_client(xet_hub, tmp_path / "xet", actions, xet=True)
    plain = run_client(xet_hub, tmp_path / "plain", actions, xet=False)
    assert with_xet["results"] == plain["results"]
    from helpers.content import parquet_frames

    assert with_xet["results"][1] == {split: len(df) for split, df in parquet_frames().items()}
    assert with_xet["cache"] == plain["cache"]
    assert any("/reconstructions/" in r.path for r in log.records)


# -- the protocol's answers, checked directly


def _token(hub: HubgateServer, repo: str, headers: dict[str, str] | None = None) -> httpx.Response:
    sha = hub.commits[repo.split("/")[1]]
    return httpx.get(f"{hub.base_url}/api/models/{repo}/xet-read-token/{sha}", headers=headers or {})


def test_refresh_route_answers_headers_and_json(xet_local: HubgateServer) -> None:
    r = _token(xet_local, "acme/big")
    assert r.status_code == 200
    body = r.json()
    assert body["casUrl"] == r.headers["x-xet-cas-url"] == f"{xet_local.base_url}/xet/cas"
    assert body["accessToken"] == r.headers["x-xet-access-token"]
    assert body["exp"] == int(r.headers["x-xet-token-expiration"])
    assert 800 < body["exp"] - time.time() <= 900


def test_reconstruction_range_matches_the_bytes(xet_local: HubgateServer) -> None:
    from mirror.xet import formats

    data = xet_local.repos["big"].files["model.safetensors"]
    file_hash = head(xet_local, "/acme/big/resolve/main/model.safetensors").headers["x-xet-hash"]
    auth = {"authorization": "Bearer " + _token(xet_local, "acme/big").json()["accessToken"]}
    cas = f"{xet_local.base_url}/xet/cas"
    for first, last in [(0, 99), (1_000_000, 3_500_000), (len(data) - 10, len(data) + 50)]:
        rec = httpx.get(f"{cas}/v1/reconstructions/{file_hash}", headers=auth | {"range": f"bytes={first}-{last}"})
        assert rec.status_code == 200, rec.text
        doc = rec.json()
        out = b""
        for term in doc["terms"]:
            fetch = next(f for f in doc["fetch_info"][term["hash"]]
                         if f["range"]["start"] <= term["range"]["start"] and f["range"]["end"] >= term["range"]["end"])
            got = httpx.get(fetch["url"], headers={"range": f"bytes={fetch['url_range']['start']}-{fetch['url_range']['end']}"})
            assert got.status_code == 206
            pos, chunks = 0, []
            while pos < len(got.content):
                chunk, pos = formats.decode_chunk(got.content, pos, len(got.content))
                chunks.append(chunk)
            skip = term["range"]["start"] - fetch["range"]["start"]
            out += b"".join(chunks[skip:skip + term["range"]["end"] - term["range"]["start"]])
        out = out[doc["offset_into_first_range"]:][:min(last, len(data) - 1) - first + 1]
        assert out == data[first:last + 1]
    v2 = httpx.get(f"{cas}/v2/reconstructions/{file_hash}", headers=auth).json()
    assert set(v2) == {"offset_into_first_range", "terms", "xorbs"}
    past = httpx.get(f"{cas}/v1/reconstructions/{file_hash}", headers=auth | {"range": f"bytes={len(data)}-"})
    assert past.status_code == 416


def test_cas_refuses_missing_forged_or_foreign_tokens_and_bad_xorb_urls(xet_local: HubgateServer) -> None:
    file_hash = head(xet_local, "/acme/big/resolve/main/model.safetensors").headers["x-xet-hash"]
    cas = f"{xet_local.base_url}/xet/cas/v1/reconstructions/{file_hash}"
    assert httpx.get(cas).status_code == 401
    good = _token(xet_local, "acme/big").json()["accessToken"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert httpx.get(cas, headers={"authorization": f"Bearer {forged}"}).status_code == 401
    other = _token(xet_local, "acme/big-ft").json()["accessToken"]  # a token for a repo without that file
    assert httpx.get(cas, headers={"authorization": f"Bearer {other}"}).status_code == 404
    ok = httpx.get(cas, headers={"authorization": f"Bearer {good}"})
    url = next(iter(ok.json()["fetch_info"].values()))[0]["url"]
    assert httpx.get(url, headers={"range": "bytes=0-9"}).status_code == 206
    assert httpx.get(url.replace("sig=", "sig=x"), headers={"range": "bytes=0-9"}).status_code == 403
    expired = url.split("?")[0] + "?exp=1&sig=" + url.split("sig=")[1]
    assert httpx.get(expired, headers={"range": "bytes=0-9"}).status_code == 403


def test_private_repo_refresh_route_and_cas_follow_access(xet_local: HubgateServer) -> None:
    from registry import access
    from registry.audit import SYSTEM
    from registry.db import session_scope
    from registry.types import RepoRef

    svc = xet_local.services
    good = _token(xet_local, "acme/big-ft").json()["accessToken"]
    file_hash = head(xet_local, "/acme/big-ft/resolve/main/model.safetensors").headers["x-xet-hash"]
    repo = RepoRef.parse("model", "acme/big-ft")
    with session_scope(svc.engine) as session:
        access.set_visibility(session, repo, "private", actor=SYSTEM)
    svc.access_changed()
    try:
        refused = _token(xet_local, "acme/big-ft")
        assert refused.status_code == 404 and refused.headers["x-error-code"] == "RepoNotFound"
        cas = f"{xet_local.base_url}/xet/cas/v1/reconstructions/{file_hash}"
        assert httpx.get(cas, headers={"authorization": f"Bearer {good}"}).status_code == 404  # at once
    finally:
        with session_scope(svc.engine) as session:
            access.set_visibility(session, repo, "public", actor=SYSTEM)
        svc.access_changed()


def test_xet_off_sends_no_xet_header_and_serves_no_cas(tmp_path: Path, fixture_repo_by_key) -> None:  # type: ignore[no-untyped-def]
    from tests.xet.support import start_xet_hubgate

    hub = start_xet_hubgate("local", tmp_path / "off", [fixture_repo_by_key["tiny"]], extra={"HUBGATE_XET": "off"})
    try:
        r = head(hub, "/acme/tiny/resolve/main/model.safetensors")
        assert r.status_code == 200 and not any(h.startswith("x-xet") for h in r.headers) and "link" not in r.headers
        sha = hub.commits["tiny"]
        assert httpx.get(f"{hub.base_url}/api/models/acme/tiny/xet-read-token/{sha}").status_code == 404
        assert httpx.get(f"{hub.base_url}/xet/cas/v1/reconstructions/{'0' * 64}").status_code == 404
        assert not any(hub.services.store.driver.iter_keys("xorbs/"))  # nothing was built either
    finally:
        hub.stop()


@pytest.mark.slow
def test_xet_download_with_a_token_when_anonymous_read_is_off(tmp_path: Path, xet_repos) -> None:  # type: ignore[no-untyped-def]
    """hf_xet passes the user's token to the refresh route (HF_TOKEN); without one the route refuses."""
    from registry import tokens
    from registry.audit import SYSTEM
    from registry.db import session_scope
    from tests.xet.support import start_xet_hubgate

    big = next(r for r in xet_repos if r.key == "big")
    hub = start_xet_hubgate("local", tmp_path / "auth", [big], extra={"HUBGATE_ANONYMOUS_READ": "false"})
    try:
        svc = hub.services
        with session_scope(svc.engine) as session:
            token = tokens.create(session, name="reader", role="reader", actor=SYSTEM, key=svc.token_key,
                                  expires_days=1).token
        sha = hub.commits["big"]
        assert httpx.get(f"{hub.base_url}/api/models/acme/big/xet-read-token/{sha}").status_code == 401
        ok = httpx.get(f"{hub.base_url}/api/models/acme/big/xet-read-token/{sha}",
                       headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        import json
        import subprocess
        import sys

        env = client_env(hub.base_url, tmp_path / "home")
        env.pop("HF_HUB_DISABLE_IMPLICIT_TOKEN", None)
        env["HF_TOKEN"] = token
        with hub.recording() as log:
            proc = subprocess.run([sys.executable, str(CLIENT), json.dumps({"actions": [
                ["download", "acme/big", "model.safetensors"]]})], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
        assert result["results"] == [hashlib.sha256(big.files["model.safetensors"]).hexdigest()]
        assert any("/reconstructions/" in r.path for r in log.records)
    finally:
        hub.stop()
