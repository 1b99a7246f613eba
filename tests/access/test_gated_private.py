"""Gated and private repos through the real huggingface_hub client: a repo gated upstream stays gated here;
GatedRepoError without a grant (401 anonymous, 403 with a token), success with one (directly or through a
group), RepositoryNotFoundError (and absence from listings) for a private repo."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fakes.fake_hub import FakeHub
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from .conftest import UPSTREAM_TOKEN, Hubgate, model_files, unique_repo, wait_for

pytestmark = pytest.mark.integration


def _cache(tmp_path: Path) -> Path:
    # A fresh cache per call: hf_hub_download answers a refused HEAD from its cache when it can.
    return tmp_path / f"hf-{uuid.uuid4().hex[:8]}"


def _token_id(token: str) -> str:
    return token.split("_")[1]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def gated(fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], tiny_files: dict[str, bytes]) -> tuple[Hubgate, str, dict]:
    """A hubgate with a repo synced from a gated upstream repo (the upstream token accepted its terms)."""
    hubgate = make_hubgate(upstream_token=UPSTREAM_TOKEN)
    repo = unique_repo("gated")
    commit = fake_hub.create_repo(repo, model_files(tiny_files), gated="manual")
    doc = hubgate.request(repo)
    assert any(f["rule"] == "gated" for f in doc["findings"]), doc["findings"]
    assert hubgate.approve_and_sync(doc["id"])["state"] == "available"
    return hubgate, repo, {"commit": commit, "request": doc["id"]}


def test_a_repo_gated_upstream_is_gated_here(gated: tuple[Hubgate, str, dict], tmp_path: Path) -> None:
    hubgate, repo, info = gated
    url = hubgate.url
    with pytest.raises(GatedRepoError) as anonymous:
        hf_hub_download(repo, "config.json", endpoint=url, cache_dir=_cache(tmp_path), token=False)
    assert anonymous.value.response.status_code == 401

    stranger = hubgate.create_token("reader", "stranger")
    with pytest.raises(GatedRepoError) as refused:
        hf_hub_download(repo, "config.json", endpoint=url, cache_dir=_cache(tmp_path), token=stranger)
    assert refused.value.response.status_code == 403
    api = HfApi(endpoint=url, token=stranger)
    for call in (lambda: api.model_info(repo), lambda: api.list_repo_files(repo), lambda: api.list_repo_refs(repo),
                 lambda: api.list_repo_commits(repo), lambda: api.get_paths_info(repo, ["config.json"]),
                 lambda: snapshot_download(repo, endpoint=url, cache_dir=_cache(tmp_path), token=stranger)):
        with pytest.raises(GatedRepoError):
            call()
    assert api.repo_exists(repo)  # the Hub's answer: it exists, you may not read it
    r = httpx.head(f"{url}/{repo}/resolve/main/config.json", headers={"Authorization": f"Bearer {stranger}"})
    assert (r.status_code, r.headers["x-error-code"]) == (403, "GatedRepo") and "x-repo-commit" not in r.headers

    # Granted: the whole snapshot, byte for byte; the repo says it is gated.
    granted = hubgate.create_token("reader", "granted")
    r = hubgate.api("POST", f"/repos/model/{repo}/grants", json={"token_id": _token_id(granted)},
                    headers={"X-Request-Id": "ticket-4711.grant"})
    assert r.status_code == 201, r.text
    folder = Path(snapshot_download(repo, endpoint=url, cache_dir=_cache(tmp_path), token=granted))
    assert _files(folder) == {p: f.read_bytes() for p, f in info["commit"].files.items()}
    assert HfApi(endpoint=url, token=granted).model_info(repo).gated == "manual"
    assert hf_hub_download(repo, "config.json", endpoint=url, cache_dir=_cache(tmp_path), token=hubgate.admin_token)

    # The request says which grants its repo has; the audit log says who gated it and who granted what.
    assert hubgate.get_request(info["request"])["access"] == {"visibility": "gated",
                                                              "grants": [f"token:{_token_id(granted)}"]}
    events = {e["action"]: e for e in hubgate.api("GET", "/audit", params={"target": f"model:{repo}"}).json()}
    assert events["repo.visibility"]["actor"] == "system" and events["repo.visibility"]["detail"]["after"] == "gated"
    assert events["grant.add"]["detail"]["subject"] == f"token:{_token_id(granted)}"
    assert events["grant.add"]["token_id"] == _token_id(hubgate.admin_token)
    assert events["grant.add"]["request_id"] == "ticket-4711.grant"  # the HTTP request that made it

    # Taken back: refused again at once (this process made the change).
    r = hubgate.api("DELETE", f"/repos/model/{repo}/grants/token:{_token_id(granted)}")
    assert r.status_code == 200 and r.json()["grants"] == []
    with pytest.raises(GatedRepoError):
        hf_hub_download(repo, "config.json", endpoint=url, cache_dir=_cache(tmp_path), token=granted)


def test_a_group_grant_reaches_its_members(gated: tuple[Hubgate, str, dict], tmp_path: Path) -> None:
    hubgate, repo, _ = gated
    member, outsider = hubgate.create_token("reader", "member"), hubgate.create_token("reader", "outsider")
    assert hubgate.api("PUT", f"/groups/ml-team/members/{_token_id(member)}").status_code == 200
    assert hubgate.api("POST", f"/repos/model/{repo}/grants", json={"group": "ml-team"}).status_code == 201
    assert HfApi(endpoint=hubgate.url, token=member).model_info(repo).sha
    with pytest.raises(GatedRepoError):
        HfApi(endpoint=hubgate.url, token=outsider).model_info(repo)
    assert hubgate.api("DELETE", f"/groups/ml-team/members/{_token_id(member)}").status_code == 200
    with pytest.raises(GatedRepoError):
        HfApi(endpoint=hubgate.url, token=member).model_info(repo)
    bad = hubgate.api("POST", f"/repos/model/{repo}/grants", json={"token_id": "x", "group": "y"})
    assert bad.status_code == 422


def test_a_private_repo_does_not_exist_without_a_grant(fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate],
                                                       tiny_files: dict[str, bytes], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    hubgate = make_hubgate()
    name = f"secret-{uuid.uuid4().hex[:8]}"
    repo = f"acme/{name}"
    fake_hub.create_repo(repo, model_files(tiny_files))
    assert hubgate.approve_and_sync(hubgate.request(repo)["id"])["state"] == "available"
    url = hubgate.url
    reader = hubgate.create_token("reader", "reader")
    assert HfApi(endpoint=url, token=reader).model_info(repo).private is False

    r = hubgate.api("PUT", f"/repos/model/{repo}/visibility", json={"visibility": "private", "reason": "embargo"})
    assert r.status_code == 200 and r.json()["visibility"] == "private"
    for token in (False, reader):
        api = HfApi(endpoint=url, token=token)
        with pytest.raises(RepositoryNotFoundError) as err:
            api.model_info(repo)
        assert not isinstance(err.value, GatedRepoError)
        assert not api.repo_exists(repo)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo, "config.json", endpoint=url, cache_dir=_cache(tmp_path), token=token)
        assert repo not in [m.id for m in api.list_models(search=name)]
    # Exactly what a repo that does not exist gets, apart from its name.
    missing = f"acme/missing-{uuid.uuid4().hex[:8]}"
    answers = [httpx.get(f"{url}/api/models/{r}", headers={"Authorization": f"Bearer {reader}"}) for r in (repo, missing)]
    assert [(a.status_code, a.headers["x-error-code"]) for a in answers] == [(404, "RepoNotFound")] * 2
    assert answers[0].text.replace(repo, "X") == answers[1].text.replace(missing, "X")
    # The catalog of the admin API hides it too.
    assert repo not in [s["repo_id"] for s in hubgate.api("GET", "/repos", token=reader).json()]
    assert hubgate.api("GET", f"/repos/model/{repo}/snapshots", token=reader).status_code == 404

    # A new request for it does not show an ungranted requester what is published here; an admin sees it.
    requester = hubgate.create_token("requester", "curious")
    asked = hubgate.request(repo, token=requester)
    assert asked["changes"] is None
    assert hubgate.get_request(asked["id"])["changes"]["from_commit"] == asked["commit"]

    # Granted from the CLI (another process, as an admin would): visible within a second.
    for key, value in hubgate.env.items():
        monkeypatch.setenv(key, value)
    from api.cli import main

    assert main(["grants", "add", repo, "--token", _token_id(reader)]) == 0
    assert f"model:{repo}: private; grants: token:{_token_id(reader)}" in capsys.readouterr().out
    api = HfApi(endpoint=url, token=reader)
    wait_for(lambda: repo in [m.id for m in api.list_models(search=name)], timeout=1.5, interval=0.05,
             what="the granted private repo in the listing")
    assert api.model_info(repo).private is True
    assert Path(snapshot_download(repo, endpoint=url, cache_dir=_cache(tmp_path), token=reader)).is_dir()
    assert repo in [s["repo_id"] for s in hubgate.api("GET", "/repos", token=reader).json()]
    # An admin always sees it; the CLI puts it back to public.
    assert HfApi(endpoint=url, token=hubgate.admin_token).model_info(repo).private is True
    assert main(["repos", "set-visibility", repo, "public", "--reason", "embargo over"]) == 0
    wait_for(lambda: HfApi(endpoint=url, token=False).repo_exists(repo), timeout=1.5, interval=0.05,
             what="the repo to be public again")


def test_only_admins_change_access_and_their_refusals_are_audited(gated: tuple[Hubgate, str, dict]) -> None:
    hubgate, repo, _ = gated
    requester = hubgate.create_token("requester", "pushy")
    for method, path, body in (("PUT", f"/repos/model/{repo}/visibility", {"visibility": "public"}),
                               ("POST", f"/repos/model/{repo}/grants", {"group": "everyone"}),
                               ("GET", f"/repos/model/{repo}/access", None)):
        r = hubgate.api(method, path, token=requester, json=body)
        assert r.status_code == 403, r.text
    denied = hubgate.api("GET", "/audit", params={"action": "admin.denied"}).json()
    assert len(denied) == 3 and {e["token_id"] for e in denied} == {_token_id(requester)}
    assert {e["detail"]["method"] for e in denied} == {"PUT", "POST", "GET"}
    assert hubgate.api("GET", f"/repos/model/{repo}/access").json()["visibility"] == "gated"
