"""The same request / approval actions from the ``hubgate`` CLI (``api.cli.main``), against a running hubgate."""

from __future__ import annotations

import json

import pytest

from fakes.fake_hub import FakeHub

from .conftest import Hubgate, small_files, unique_repo

pytestmark = pytest.mark.integration


class Cli:
    def __init__(self, hubgate: Hubgate, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        for key, value in hubgate.env.items():
            monkeypatch.setenv(key, value)

    def __call__(self, *argv: str, expect: int = 0) -> str:
        from api.cli import main

        self.capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert code == expect, f"hubgate {' '.join(argv)} exited {code}\n{out}\n{err}"
        return out if expect == 0 else err

    def request_doc(self, *argv: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self(*argv))  # type: ignore[no-any-return]


@pytest.fixture
def cli(hubgate: Hubgate, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(hubgate, monkeypatch, capsys)


def test_cli_request_list_approve_reject_retry(fake_hub: FakeHub, hubgate: Hubgate, cli: Cli) -> None:
    repo = unique_repo("cli")
    commit = fake_hub.create_repo(repo, small_files(30))

    made = cli.request_doc("request", repo, "--revision", "main", "--ignore", "*.safetensors", "--reason", "baseline")
    assert (made["commit"], made["state"], made["reason"]) == (commit.sha, "pending", "baseline")
    assert made["ignore_patterns"] == ["*.safetensors"]
    assert any(f["rule"] == "size" and f["data"]["files"] == len(commit.files) - 1 for f in made["findings"])
    other = cli.request_doc("request", repo)

    listing = cli("requests", "--state", "pending")
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert {(int(r[0]), r[1], r[5]) for r in rows} >= {(made["id"], "pending", commit.sha),
                                                       (other["id"], "pending", commit.sha)}
    assert cli("requests", "--state", "available").splitlines()[1:] == []

    approved = cli.request_doc("approve", str(made["id"]), "--reason", "baseline for the eval")
    assert approved["state"] == "approved" and approved["decided_by"].startswith("cli:")
    rejected = cli.request_doc("reject", str(other["id"]), "--reason", "duplicate")
    assert (rejected["state"], rejected["decision_reason"]) == ("rejected", "duplicate")
    # An illegal transition fails with a message and a non-zero exit code; nothing changes.
    err = cli("approve", str(other["id"]), expect=1)
    assert "rejected" in err and "cannot approve" in err
    err = cli("reject", str(made["id"]), expect=2)  # --reason is required
    assert "--reason" in err

    fake_hub.corrupt(commit.files["data/part-0.txt"].sha256)
    try:
        hubgate.sync()
    finally:
        fake_hub.corrupt(commit.files["data/part-0.txt"].sha256, on=False)
    assert hubgate.get_request(made["id"])["state"] == "failed"
    assert cli.request_doc("retry", str(made["id"]))["state"] == "approved"
    hubgate.sync()
    done = hubgate.get_request(made["id"])
    assert done["state"] == "available"
    assert done["progress"]["files_done"] == len(commit.files) - 1  # the ignore pattern held

    events = hubgate.api("GET", "/audit", params={"limit": 1000}).json()
    by_cli = [e for e in events if e["source"] == "cli"]
    assert {e["action"] for e in by_cli} >= {"request.create", "request.approve", "request.reject", "request.retry"}
    assert all(e["actor"].startswith("cli:") for e in by_cli)


def test_cli_request_for_an_unknown_repo_fails_cleanly(hubgate: Hubgate, cli: Cli) -> None:
    err = cli("request", unique_repo("nope"), expect=1)
    assert "upstream" in err.lower() or "not found" in err.lower()
