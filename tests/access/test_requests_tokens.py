"""Requests are private to their author; the two-person rule; the token lifecycle over REST and the CLI
(expiry, last use, immediate revocation); denied admin calls are audited, boundedly."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from fakes.fake_hub import FakeHub
from huggingface_hub import HfApi
from sqlmodel import Session

from registry.models import ApiToken, utcnow

from .conftest import Hubgate, model_files, unique_repo

pytestmark = pytest.mark.integration


def _id(token: str) -> str:
    return token.split("_")[1]


def test_requests_are_private_to_their_author(fake_hub: FakeHub, hubgate: Hubgate,
                                              tiny_files: dict[str, bytes]) -> None:
    repo = unique_repo("mine")
    fake_hub.create_repo(repo, model_files(tiny_files))
    alice, bob = hubgate.create_token("requester", "alice"), hubgate.create_token("requester", "bob")
    carol = hubgate.create_token("reader", "carol")
    mine = hubgate.request(repo, token=alice)["id"]
    theirs = hubgate.request(repo, token=bob)["id"]

    assert [r["id"] for r in hubgate.api("GET", "/requests", token=alice).json()] == [mine]
    assert [r["id"] for r in hubgate.api("GET", "/requests", token=bob).json()] == [theirs]
    assert hubgate.api("GET", "/requests", token=carol).json() == []
    assert {mine, theirs} <= {r["id"] for r in hubgate.api("GET", "/requests").json()}  # admins see all
    own = hubgate.api("GET", f"/requests/{mine}", token=alice)
    assert own.status_code == 200 and own.json()["access"] is None  # grants are for admins' eyes

    # Another's request answers exactly as one that does not exist.
    other = hubgate.api("GET", f"/requests/{theirs}", token=alice)
    missing = hubgate.api("GET", "/requests/999999", token=alice)
    assert other.status_code == missing.status_code == 404
    assert other.json()["message"].replace(str(theirs), "N") == missing.json()["message"].replace("999999", "N")


def test_two_person_rule_over_rest_and_the_cli(fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate],
                                               tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    hubgate = make_hubgate(require_second_approver=True)
    repo = unique_repo("two-person")
    fake_hub.create_repo(repo, model_files(tiny_files))
    pk = hubgate.request(repo)["id"]  # by the admin token itself
    r = hubgate.api("POST", f"/requests/{pk}/approve")
    assert r.status_code == 403 and "two-person rule" in r.json()["message"]
    assert hubgate.get_request(pk)["state"] == "pending"
    second = hubgate.create_token("admin", "second-admin")
    assert hubgate.approve(pk, token=second)["state"] == "approved"
    denied = hubgate.api("GET", "/audit", params={"action": "admin.denied"}).json()
    assert denied[0]["detail"]["status"] == 403 and "two-person" in denied[0]["detail"]["reason"]

    # The CLI acts as cli:<user>: its own request is refused to it, and approved by another admin.
    for key, value in hubgate.env.items():
        monkeypatch.setenv(key, value)
    from api.cli import main

    assert main(["request", repo, "--reason", "from the cli"]) == 0
    cli_pk = next(r["id"] for r in hubgate.api("GET", "/requests").json() if r["requester"].startswith("cli:"))
    capsys.readouterr()
    assert main(["approve", str(cli_pk)]) == 5  # refused (api/exit_codes.py)
    assert "two-person rule" in capsys.readouterr().err
    assert hubgate.approve(cli_pk)["state"] == "approved"


def test_token_expiry_default_explicit_and_refusal(hubgate: Hubgate) -> None:
    r = hubgate.api("POST", "/tokens", json={"name": "default", "role": "reader"})
    default = r.json()
    expires = default["expires_at"]
    assert expires is not None
    days = (datetime.fromisoformat(expires) - utcnow()) / timedelta(days=1)
    assert 89.9 < days <= 90
    short = hubgate.api("POST", "/tokens", json={"name": "short", "role": "reader", "expires_days": 7}).json()
    never = hubgate.api("POST", "/tokens", json={"name": "never", "role": "reader", "no_expiry": True}).json()
    assert never["expires_at"] is None and short["expires_at"] < expires
    assert hubgate.api("POST", "/tokens", json={"name": "x", "role": "reader", "expires_days": 0}).status_code == 422

    # Past its expiry a token is refused with a message that says so, on the admin API and the Hub API.
    with Session(hubgate.svc.engine) as session:
        row = session.get(ApiToken, short["token_id"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(minutes=1)
        session.add(row)
        session.commit()
    r = hubgate.api("GET", "/requests", token=short["token"])
    assert r.status_code == 401 and "expired" in r.json()["message"]
    r = hubgate.client.get("/api/models", headers={"Authorization": f"Bearer {short['token']}"})
    assert r.status_code == 401 and "expired" in r.headers["x-error-message"]

    listed = {t["token_id"]: t for t in hubgate.api("GET", "/tokens").json()}
    assert listed[never["token_id"]]["expires_at"] is None
    assert listed[default["token_id"]]["last_used_at"] is None  # never used
    assert hubgate.api("GET", "/requests", token=default["token"]).status_code == 200
    listed = {t["token_id"]: t for t in hubgate.api("GET", "/tokens").json()}
    assert listed[default["token_id"]]["last_used_at"] is not None


def test_revocation_takes_effect_at_once_in_the_process_that_revoked(hubgate: Hubgate) -> None:
    token = hubgate.create_token("reader", "revoke-me")
    api = HfApi(endpoint=hubgate.url, token=token)
    assert api.whoami()["name"] == "revoke-me"  # cached now
    assert hubgate.api("GET", "/requests", token=token).status_code == 200
    assert hubgate.api("DELETE", f"/tokens/{_id(token)}").status_code == 200
    assert hubgate.api("GET", "/requests", token=token).status_code == 401  # no wait
    row = {t["token_id"]: t for t in hubgate.api("GET", "/tokens").json()}[_id(token)]
    assert row["revoked"] and row["revoked_at"] is not None


def test_cli_token_create_list_revoke(hubgate: Hubgate, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in hubgate.env.items():
        monkeypatch.setenv(key, value)
    from api.cli import main

    assert main(["token", "create", "--role", "reader", "--name", "ci", "--expires-days", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[-1]
    assert "expires" in out[0]
    assert main(["token", "create", "--role", "reader", "--name", "svc", "--no-expiry"]) == 0
    assert "never expires" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["token", "create", "--role", "reader", "--expires-days", "3", "--no-expiry"])
    capsys.readouterr()
    assert main(["token", "list"]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if line.startswith(_id(token)))
    assert "active" in line and line.rstrip().endswith("ci")
    assert any(line.rstrip().endswith("svc") and " never " in line for line in listing.splitlines())
    assert hubgate.api("GET", "/requests", token=token).status_code == 200
    started = time.monotonic()
    assert main(["token", "revoke", _id(token)]) == 0
    # Another process revoked it: this server refuses it within a second.
    while hubgate.api("GET", "/requests", token=token).status_code != 401:
        assert time.monotonic() - started < 1.0, "the revoked token was still accepted after 1 s"
        time.sleep(0.02)
    assert main(["token", "list"]) == 0
    assert "revoked" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith(_id(token)))


def test_denied_admin_calls_are_audited_but_a_flood_is_only_counted(hubgate: Hubgate) -> None:
    reader = hubgate.create_token("reader", "curious")
    for _ in range(100):
        assert hubgate.api("GET", "/audit", token=reader).status_code == 403
    assert hubgate.api("GET", "/tokens", token=None).status_code == 401
    denied = hubgate.api("GET", "/audit", params={"action": "admin.denied", "limit": 1000}).json()
    assert 55 <= len(denied) <= 65, len(denied)  # the recording budget: 60 a minute
    assert all(e["token_id"] == _id(reader) and e["actor"] == "curious" for e in denied)
    time.sleep(1.1)  # the budget refills one a second
    assert hubgate.api("GET", "/tokens", token=None).status_code == 401
    last = hubgate.api("GET", "/audit", params={"action": "admin.denied", "limit": 1}).json()[0]
    assert last["actor"] == "anonymous" and last["detail"]["status"] == 401
    assert last["detail"]["unrecorded_before"] >= 30
