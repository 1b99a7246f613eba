"""Tokens (hashed, shown once, roles), Bearer auth on the admin API and the Hub API, whoami, and the audit log."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from sqlmodel import Session, select

from fakes.fake_hub import FakeHub
from registry.models import ApiToken

from .conftest import Hubgate, small_files, unique_repo, wait_for

pytestmark = pytest.mark.integration


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_tokens_are_shown_once_and_stored_hashed(hubgate: Hubgate) -> None:
    r = hubgate.api("POST", "/tokens", json={"name": "alice", "role": "requester"})
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["token"]
    assert token.startswith("hg_") and created["role"] == "requester"
    secret = token.split("_", 2)[2]

    listed = hubgate.api("GET", "/tokens").json()
    alice = next(t for t in listed if t["name"] == "alice")
    assert alice["token"] is None and alice["token_id"] == created["token_id"]
    assert token not in hubgate.api("GET", "/audit").text

    with Session(hubgate.svc.engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_id == created["token_id"])).one()
    # An HMAC under a subkey of the instance key, not a bare hash: the database alone cannot check a guess.
    assert row.hash_scheme == "hmac-sha256" and row.secret_hash != hashlib.sha256(secret.encode()).hexdigest()
    assert row.secret_hash == hmac.new(hubgate.svc.token_key, secret.encode(), hashlib.sha256).hexdigest()
    # Nothing hubgate wrote (database, WAL, store) holds the secret.
    assert secret.encode() not in _all_bytes(hubgate.data_dir)
    # And yet it authenticates.
    assert hubgate.api("GET", "/requests", token=token).status_code == 200


def test_roles_reader_requester_admin(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("roles")
    commit = fake_hub.create_repo(repo, small_files(20))
    reader, requester = hubgate.create_token("reader"), hubgate.create_token("requester")
    body = {"repo_id": repo, "revision": "main"}

    assert hubgate.api("GET", "/requests", token=reader).status_code == 200
    assert hubgate.api("POST", "/requests", token=reader, json=body).status_code == 403
    pk = hubgate.request(repo, token=requester)["id"]
    assert hubgate.get_request(pk)["requester"].startswith("requester-")

    for token in (reader, requester):
        r = hubgate.api("POST", f"/requests/{pk}/approve", token=token)
        assert r.status_code == 403, r.text
        assert "admin" in r.json()["message"]
        assert hubgate.api("POST", f"/requests/{pk}/reject", token=token, json={"reason": "x"}).status_code == 403
        assert hubgate.api("POST", f"/requests/{pk}/retry", token=token).status_code == 403
        assert hubgate.api("GET", "/audit", token=token).status_code == 403
        assert hubgate.api("POST", "/tokens", token=token, json={"name": "x", "role": "admin"}).status_code == 403
        assert hubgate.api("PUT", f"/repos/model/{repo}/refs/main", token=token,
                           json={"commit": commit.sha}).status_code == 403
        assert hubgate.api("DELETE", f"/repos/model/{repo}/snapshots/{commit.sha}", token=token).status_code == 403
    assert hubgate.get_request(pk)["state"] == "pending"
    assert hubgate.approve(pk)["state"] == "approved"


def test_admin_api_needs_a_valid_bearer_token(hubgate: Hubgate) -> None:
    for headers in ({}, {"Authorization": "Bearer hg_nope_nope"}, {"Authorization": f"Basic {hubgate.admin_token}"},
                    {"Authorization": "Bearer"}):
        r = hubgate.client.get("/registry/v1/requests", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    # A revoked token stops working (the token cache lives a couple of seconds).
    token = hubgate.create_token("reader", "revoke-me")
    token_id = token.split("_")[1]
    assert hubgate.api("GET", "/requests", token=token).status_code == 200
    assert hubgate.api("DELETE", f"/tokens/{token_id}").status_code == 200
    unknown = hubgate.api("DELETE", "/tokens/nosuchtoken")
    assert unknown.status_code == 404 and "nosuchtoken" in unknown.text, unknown.text
    wait_for(lambda: hubgate.api("GET", "/requests", token=token).status_code == 401, timeout=10,
             interval=0.25, what="the revoked token to be refused")


def test_whoami_answers_for_the_token(hubgate: Hubgate) -> None:
    token = hubgate.create_token("requester", "bob")
    me = HfApi(endpoint=hubgate.url, token=token).whoami()
    assert me["name"] == "bob" and me["auth"]["accessToken"]["role"] == "write"
    assert HfApi(endpoint=hubgate.url, token=hubgate.create_token("reader", "carol")).whoami()["name"] == "carol"
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=hubgate.url, token="hg_0000_bad").whoami()


def test_bootstrap_admin_token_from_the_cli(hubgate: Hubgate, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from api.cli import main

    for key, value in hubgate.env.items():
        monkeypatch.setenv(key, value)
    assert main(["token", "create", "--role", "admin", "--name", "root"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    token = out[-1]
    assert token.startswith("hg_") and "shown once" in out[0]
    r = hubgate.api("POST", "/tokens", token=token, json={"name": "from-bootstrap", "role": "reader"})
    assert r.status_code == 201, r.text
    assert token.split("_", 2)[2].encode() not in _all_bytes(hubgate.data_dir)
    event = hubgate.api("GET", "/audit", params={"action": "token.create"}).json()
    assert any(e["detail"]["name"] == "root" and e["detail"]["role"] == "admin" and e["detail"]["expires_at"]
               and e["source"] == "cli" for e in event)


def test_anonymous_read_false_needs_a_token_on_the_hub_api(fake_hub: FakeHub, make_hubgate, hf_cache: Path) -> None:  # type: ignore[no-untyped-def]
    hubgate = make_hubgate(anonymous_read=False)
    repo = unique_repo("private")
    commit = fake_hub.create_repo(repo, small_files(21))
    assert hubgate.approve_and_sync(hubgate.request(repo)["id"])["state"] == "available"

    r = httpx.head(f"{hubgate.url}/{repo}/resolve/main/data/part-0.txt")
    assert r.status_code == 401
    assert httpx.get(f"{hubgate.url}/api/models/{repo}").status_code == 401
    with pytest.raises((RepositoryNotFoundError, HfHubHTTPError)):
        snapshot_download(repo, endpoint=hubgate.url, cache_dir=hf_cache, token=False)
    with pytest.raises((RepositoryNotFoundError, HfHubHTTPError)):
        HfApi(endpoint=hubgate.url, token=False).model_info(repo)
    with pytest.raises((RepositoryNotFoundError, HfHubHTTPError)):
        hf_hub_download(repo, "data/part-0.txt", endpoint=hubgate.url, cache_dir=hf_cache, token="hg_bad_token")

    token = hubgate.create_token("reader")
    folder = Path(snapshot_download(repo, endpoint=hubgate.url, cache_dir=hf_cache, token=token))
    assert folder.name == commit.sha
    assert (folder / "data/part-0.txt").read_bytes() == commit.bytes_of("data/part-0.txt")
    assert HfApi(endpoint=hubgate.url, token=token).model_info(repo).sha == commit.sha


def test_every_state_change_is_audited_with_who_what_when_and_where(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("audit")
    commit = fake_hub.create_repo(repo, small_files(22))
    requester = hubgate.create_token("requester", "rita")
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    ok = hubgate.request(repo, token=requester)["id"]
    no = hubgate.request(repo, token=requester)["id"]
    hubgate.approve(ok)
    hubgate.api("POST", f"/requests/{no}/reject", json={"reason": "duplicate of the first"})
    fake_hub.corrupt(commit.files["data/part-2.txt"].sha256)
    try:
        hubgate.sync()
    finally:
        fake_hub.corrupt(commit.files["data/part-2.txt"].sha256, on=False)
    hubgate.api("POST", f"/requests/{ok}/retry")
    hubgate.sync()

    events = list(reversed(hubgate.api("GET", "/audit", params={"limit": 1000}).json()))
    mine = [e for e in events if e["target"] in (f"request:{ok}", f"request:{no}")]
    assert [(e["action"], e["target"], e["actor"]) for e in mine] == [
        ("request.create", f"request:{ok}", "rita"),
        ("request.create", f"request:{no}", "rita"),
        ("request.approve", f"request:{ok}", "test-admin"),
        ("request.reject", f"request:{no}", "test-admin"),
        ("request.start", f"request:{ok}", "system"),
        ("request.fail", f"request:{ok}", "system"),
        ("request.retry", f"request:{ok}", "test-admin"),
        ("request.start", f"request:{ok}", "system"),
        ("request.finish", f"request:{ok}", "system"),
    ]
    for e in mine:
        at = datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        assert started <= at <= datetime.now(timezone.utc) + timedelta(seconds=5)
        if e["actor"] != "system":
            assert e["source"] == "127.0.0.1", e
    reject = next(e for e in mine if e["action"] == "request.reject")
    assert reject["detail"]["reason"] == "duplicate of the first"
    fail = next(e for e in mine if e["action"] == "request.fail")
    assert "git blob id mismatch" in fail["detail"]["error"]
    # Filters.
    only = hubgate.api("GET", "/audit", params={"action": "request.approve"}).json()
    assert {e["action"] for e in only} == {"request.approve"}
