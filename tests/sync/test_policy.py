"""Policy findings shown with a request, each naming its rule; auto-approval and hard blocks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fakes.fake_hub import FakeHub

from .conftest import PICKLE_BYTES, UPSTREAM_TOKEN, Hubgate, finding, model_files, rules, small_files, unique_repo

pytestmark = pytest.mark.integration

ALLOW, DENY, ORG = "mit,apache-2.0", "gpl-3.0,cc-by-nc-4.0", "trusted"


@pytest.fixture
def ruled(make_hubgate: Callable[..., Hubgate]) -> Hubgate:
    return make_hubgate(license_allowlist=ALLOW, license_denylist=DENY, auto_approve_orgs=ORG)


def _check_shape(doc: dict[str, Any]) -> None:
    assert doc["findings"], "a request always shows findings"
    for f in doc["findings"]:
        assert f["rule"] and isinstance(f["rule"], str)
        assert f["severity"] in ("info", "warn", "block")
        assert f["message"]


def test_license_against_allowlist_and_denylist(fake_hub: FakeHub, ruled: Hubgate, make_hubgate,  # type: ignore[no-untyped-def]
                                                tiny_files: dict[str, bytes]) -> None:
    docs = {}
    for lic in ("mit", "gpl-3.0", "bsd-3-clause", None):
        repo = unique_repo(f"lic-{lic or 'none'}")
        fake_hub.create_repo(repo, model_files(tiny_files, license=lic))
        docs[lic] = ruled.request(repo)
        _check_shape(docs[lic])

    assert finding(docs["mit"], "license.allowed")["data"]["license"] == "mit"  # type: ignore[index]
    assert docs["mit"]["verdict"] == "review"

    denied = finding(docs["gpl-3.0"], "license.denied")
    assert denied is not None and denied["severity"] == "block" and "gpl-3.0" in denied["message"]
    assert docs["gpl-3.0"]["verdict"] == "blocked"

    not_allowed = finding(docs["bsd-3-clause"], "license.not-allowed")
    assert not_allowed is not None and not_allowed["severity"] == "warn"
    assert docs["bsd-3-clause"]["verdict"] == "review"

    missing = finding(docs[None], "license.missing")
    assert missing is not None and missing["severity"] == "warn"

    # Without an allowlist a license is only declared.
    plain = make_hubgate()
    repo = unique_repo("lic-plain")
    fake_hub.create_repo(repo, model_files(tiny_files, license="apache-2.0"))
    assert finding(plain.request(repo), "license.declared")["data"]["license"] == "apache-2.0"  # type: ignore[index]


def test_a_blocked_license_cannot_be_approved(fake_hub: FakeHub, ruled: Hubgate, tiny_files: dict[str, bytes]) -> None:
    repo = unique_repo("blocked")
    fake_hub.create_repo(repo, model_files(tiny_files, license="cc-by-nc-4.0"))
    doc = ruled.request(repo)
    r = ruled.api("POST", f"/requests/{doc['id']}/approve")
    assert r.status_code == 422, r.text
    body = r.json()
    assert [f["rule"] for f in body["findings"]] == ["license.denied"]
    assert "cc-by-nc-4.0" in body["message"]
    assert ruled.get_request(doc["id"])["state"] == "pending"
    assert ruled.sync() == 0
    # It can still be rejected.
    assert ruled.api("POST", f"/requests/{doc['id']}/reject", json={"reason": "license"}).status_code == 200


def test_pickle_weights_and_whether_safetensors_exist_beside_them(fake_hub: FakeHub, ruled: Hubgate,
                                                                   tiny_files: dict[str, bytes]) -> None:
    both, only_bin, clean = unique_repo("pickle-both"), unique_repo("pickle-only"), unique_repo("pickle-none")
    fake_hub.create_repo(both, model_files(tiny_files, pickle_weights=True))
    fake_hub.create_repo(only_bin, model_files(tiny_files, pickle_weights=True, safetensors=False,
                                               extra={"optimizer.pt": PICKLE_BYTES}))
    fake_hub.create_repo(clean, model_files(tiny_files))

    f = finding(ruled.request(both), "weights.pickle")
    assert f is not None and f["severity"] == "warn"
    assert f["data"] == {"files": ["pytorch_model.bin"], "safetensors_present": True}
    assert "safetensors" in f["message"]

    f = finding(ruled.request(only_bin), "weights.pickle")
    assert f is not None
    assert f["data"] == {"files": ["optimizer.pt", "pytorch_model.bin"], "safetensors_present": False}

    assert "weights.pickle" not in rules(ruled.request(clean))
    # Ignoring the pickle files removes the finding (findings are about what would be mirrored).
    assert "weights.pickle" not in rules(ruled.request(both, ignore_patterns=["*.bin"]))


def test_remote_code_from_py_files_and_auto_map(fake_hub: FakeHub, ruled: Hubgate, tiny_files: dict[str, bytes]) -> None:
    code, map_only = unique_repo("code"), unique_repo("automap")
    fake_hub.create_repo(code, model_files(tiny_files, remote_code=True))
    files = model_files(tiny_files)
    config = json.loads(files["config.json"])
    config["auto_map"] = {"AutoModelForCausalLM": "other-org/code--modeling.XForCausalLM"}
    files["config.json"] = json.dumps(config).encode()
    fake_hub.create_repo(map_only, files)

    f = finding(ruled.request(code), "code.remote")
    assert f is not None and f["severity"] == "warn"
    assert f["data"] == {"files": ["modeling_x.py"], "auto_map": True}
    f = finding(ruled.request(map_only), "code.remote")
    assert f is not None and f["data"] == {"files": [], "auto_map": True}
    # Ignoring the code files leaves the auto_map (config.json still names code to run).
    f = finding(ruled.request(code, ignore_patterns=["*.py"]), "code.remote")
    assert f is not None and f["data"] == {"files": [], "auto_map": True}


def test_total_bytes_and_file_count_after_allow_and_ignore_patterns(fake_hub: FakeHub, ruled: Hubgate,
                                                                    tiny_files: dict[str, bytes]) -> None:
    repo = unique_repo("size")
    files = model_files(tiny_files, pickle_weights=True, extra=small_files(40))
    fake_hub.create_repo(repo, files)

    def size(**patterns: Any) -> dict[str, Any]:
        f = finding(ruled.request(repo, **patterns), "size")
        assert f is not None and f["severity"] == "info"
        return f["data"]  # type: ignore[no-any-return]

    assert size() == {"bytes": sum(map(len, files.values())), "files": len(files)}
    jsons = {p: d for p, d in files.items() if p.endswith(".json")}
    assert size(allow_patterns=["*.json"]) == {"bytes": sum(map(len, jsons.values())), "files": len(jsons)}
    kept = {p: d for p, d in files.items() if not p.endswith((".bin", ".safetensors")) and not p.startswith("data/")}
    assert size(ignore_patterns=["*.bin", "*.safetensors", "data/"]) == {
        "bytes": sum(map(len, kept.values())), "files": len(kept)}


def test_max_repo_bytes_blocks(fake_hub: FakeHub, make_hubgate, tiny_files: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    hg = make_hubgate(max_repo_bytes=1000)
    repo = unique_repo("too-big")
    fake_hub.create_repo(repo, model_files(tiny_files))
    doc = hg.request(repo)
    assert finding(doc, "size.too-large")["severity"] == "block" and doc["verdict"] == "blocked"  # type: ignore[index]
    assert hg.request(repo, allow_patterns=["README.md"])["verdict"] == "review"


def test_base_model_lineage(fake_hub: FakeHub, ruled: Hubgate, tiny_files: dict[str, bytes]) -> None:
    base, missing = unique_repo("base"), unique_repo("elsewhere")
    fake_hub.create_repo(base, model_files(tiny_files, license="apache-2.0"))
    derived = unique_repo("derived")
    files = model_files(tiny_files)
    files["README.md"] = files["README.md"].replace(b"license: mit\n",
                                                    f"license: mit\nbase_model:\n- {base}\n- {missing}\n".encode())
    fake_hub.create_repo(derived, files)

    before = [f for f in ruled.request(derived)["findings"] if f["rule"] == "lineage.base-model"]
    assert [(f["data"]["base_model"], f["data"]["in_hubgate"]) for f in before] == [(base, False), (missing, False)]

    assert ruled.approve_and_sync(ruled.request(base)["id"])["state"] == "available"
    after = {f["data"]["base_model"]: f for f in ruled.request(derived)["findings"] if f["rule"] == "lineage.base-model"}
    assert after[base]["data"] == {"base_model": base, "in_hubgate": True, "license": "apache-2.0"}
    assert "apache-2.0" in after[base]["message"]
    assert after[missing]["data"]["in_hubgate"] is False


def test_auto_approve_needs_allowed_org_license_and_no_pickle_or_code(fake_hub: FakeHub, ruled: Hubgate,
                                                                       tiny_files: dict[str, bytes]) -> None:
    clean = unique_repo("auto", org=ORG)
    fake_hub.create_repo(clean, model_files(tiny_files, license="apache-2.0"))
    doc = ruled.request(clean)
    assert (doc["verdict"], doc["state"], doc["decided_by"]) == ("auto-approve", "approved", "policy")
    assert ruled.sync() == 1
    assert ruled.get_request(doc["id"])["state"] == "available"
    events = ruled.api("GET", "/audit", params={"target": f"request:{doc['id']}"}).json()
    assert any(e["action"] == "request.approve" and e["actor"] == "policy" for e in events)

    cases = {
        "other org": (unique_repo("auto-org", org="elsewhere"), model_files(tiny_files)),
        "pickle": (unique_repo("auto-pickle", org=ORG), model_files(tiny_files, pickle_weights=True)),
        "remote code": (unique_repo("auto-code", org=ORG), model_files(tiny_files, remote_code=True)),
        "license not allowed": (unique_repo("auto-lic", org=ORG), model_files(tiny_files, license="bsd-3-clause")),
        "no license": (unique_repo("auto-nolic", org=ORG), model_files(tiny_files, license=None)),
    }
    for why, (repo, files) in cases.items():
        fake_hub.create_repo(repo, files)
        doc = ruled.request(repo)
        assert (doc["verdict"], doc["state"]) == ("review", "pending"), why
    denied = unique_repo("auto-denied", org=ORG)
    fake_hub.create_repo(denied, model_files(tiny_files, license="gpl-3.0"))
    assert ruled.request(denied)["verdict"] == "blocked"
    assert ruled.sync() == 0


def test_gated_upstream_and_whether_a_token_is_configured(fake_hub: FakeHub, make_hubgate,  # type: ignore[no-untyped-def]
                                                           tiny_files: dict[str, bytes]) -> None:
    repo = unique_repo("gated-finding")
    fake_hub.create_repo(repo, model_files(tiny_files), gated="manual")
    without = make_hubgate().request(repo)
    f = finding(without, "gated.no-token")
    assert f is not None and f["severity"] == "block" and without["verdict"] == "blocked"
    assert "token" in f["message"]

    with_token = make_hubgate(upstream_token=UPSTREAM_TOKEN).request(repo)
    f = finding(with_token, "gated")
    assert f is not None and f["severity"] == "warn" and with_token["verdict"] == "review"
    assert "gated.no-token" not in rules(with_token)
