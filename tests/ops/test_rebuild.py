"""``hubgate rebuild-index`` (mirror/rebuild.py): with the database lost, the catalog comes back from the
store alone and every Hub API answer is the same as before."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from helpers.content import write_tree

from .conftest import Instance, model_files

# Headers that describe the connection or the moment, not the catalog.
_VOLATILE_HEADERS = {"date", "server", "x-request-id"}  # x-request-id: new for every request


def _populate(inst: Instance, tmp_path: Path) -> dict[str, str]:
    c: dict[str, str] = {}
    c["alpha1"] = inst.import_folder(write_tree(tmp_path / "alpha1", model_files(31)), "acme/alpha",
                                     refs=["main", "refs/tags/v1.0"])
    c["alpha2"] = inst.import_folder(write_tree(tmp_path / "alpha2", {**model_files(31), "config.json": b"{}\n",
                                                                        "extra/new.txt": b"new\n"}), "acme/alpha")
    c["beta1"] = inst.import_folder(write_tree(tmp_path / "beta1", model_files(32, title="beta")), "other/beta")
    c["beta2"] = inst.import_folder(write_tree(tmp_path / "beta2", model_files(33, title="beta2")), "other/beta",
                                    refs=["dev"])
    data = {"README.md": b"---\nlicense: cc-by-4.0\ntask_categories:\n- text-classification\n---\n# data\n",
            "data/train.csv": b"text,label\n" + b"hello,1\nworld,0\n" * 200,
            "data/test.parquet": bytes(range(256)) * 40}
    c["data"] = inst.import_folder(write_tree(tmp_path / "data", data), "acme/data", repo_type="dataset")
    return c


def _hub_answers(inst: Instance, c: dict[str, str]) -> dict[str, Any]:
    """The Hub API as clients see it; absolute URLs (Link headers) are made origin-free."""
    http, base = inst.http, inst.url
    answers: dict[str, Any] = {}

    def record(name: str, method: str, url: str, **kwargs: Any) -> None:
        pages, status = [], None
        while url:
            r = http.request(method, url, **kwargs)
            status = r.status_code
            body: Any = None
            if method != "HEAD":
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
            headers = sorted((k, v.replace(base, "BASE")) for k, v in r.headers.items() if k not in _VOLATILE_HEADERS)
            pages.append({"status": status, "headers": headers, "body": body})
            m = re.search(r'<([^>]+)>;\s*rel="next"', r.headers.get("link", ""))
            url = m.group(1) if m else ""
        answers[name] = pages

    for repo, kind in (("acme/alpha", "models"), ("other/beta", "models"), ("acme/data", "datasets")):
        api = f"/api/{kind}/{repo}"
        record(f"info {repo}", "GET", api)
        record(f"info {repo} blobs", "GET", f"{api}?blobs=true")
        record(f"info {repo} main", "GET", f"{api}/revision/main")
        record(f"tree {repo}", "GET", f"{api}/tree/main?recursive=true&expand=true")
        record(f"tree {repo} top", "GET", f"{api}/tree/main")
        record(f"refs {repo}", "GET", f"{api}/refs")
        record(f"commits {repo}", "GET", f"{api}/commits/main")
    record("info alpha@v1", "GET", f"/api/models/acme/alpha/revision/{c['alpha1']}?blobs=true")
    record("info alpha@v2", "GET", f"/api/models/acme/alpha/revision/{c['alpha2']}")
    record("info alpha@tag", "GET", "/api/models/acme/alpha/revision/v1.0")
    record("tree alpha@v2", "GET", f"/api/models/acme/alpha/tree/{c['alpha2']}/extra?expand=true")
    record("info beta@dev (removed)", "GET", "/api/models/other/beta/revision/dev")
    record("info beta@v2 (removed)", "GET", f"/api/models/other/beta/revision/{c['beta2']}")
    record("paths-info alpha", "POST", "/api/models/acme/alpha/paths-info/main",
           data={"paths": ["config.json", "model.safetensors", "docs", "missing.txt"], "expand": "true"})
    record("paths-info data", "POST", "/api/datasets/acme/data/paths-info/main", data={"paths": ["data/train.csv"]})
    for path in ("config.json", "model.safetensors", "docs/notes.txt", "README.md"):
        record(f"head alpha {path}", "HEAD", f"/acme/alpha/resolve/main/{path}")
        record(f"head alpha@v2 {path}", "HEAD", f"/acme/alpha/resolve/{c['alpha2']}/{path}")
    record("head beta", "HEAD", "/other/beta/resolve/main/model.safetensors")
    record("head data", "HEAD", "/datasets/acme/data/resolve/main/data/test.parquet")
    record("list models", "GET", "/api/models")
    record("list models full", "GET", "/api/models?full=true&sort=lastModified")
    record("list models author", "GET", "/api/models?author=acme")
    record("list datasets", "GET", "/api/datasets")
    return answers


def _admin_listings(inst: Instance) -> dict[str, Any]:
    out = {}
    for path in ("/repos/model/acme/alpha/snapshots", "/repos/model/other/beta/snapshots",
                 "/repos/dataset/acme/data/snapshots", "/repos?repo_type=model", "/repos?repo_type=dataset"):
        r = inst.admin("GET", path)
        assert r.status_code == 200, r.text
        out[path] = r.json()
    return out


@pytest.mark.integration
def test_rebuild_index_after_losing_the_database_answers_identically(make_instance, tmp_path: Path) -> None:
    inst: Instance = make_instance(tree_page_size=3, list_page_size=1, instance_name="low-side")
    c = _populate(inst, tmp_path)
    inst.serve()
    moved = inst.admin("PUT", "/repos/model/acme/alpha/refs/main", json={"commit": c["alpha1"]})  # main moves back
    assert moved.status_code == 200 and moved.json()["changed"] is True, moved.text
    removed = inst.admin("DELETE", f"/repos/model/other/beta/snapshots/{c['beta2']}")
    assert removed.status_code == 200 and removed.json()["refs_removed"] == ["dev"], removed.text

    before = _hub_answers(inst, c)
    admin_before = _admin_listings(inst)
    # sanity: the recorded state is the interesting one
    assert before["info acme/alpha"][0]["body"]["sha"] == c["alpha1"]
    assert before["info beta@dev (removed)"][0]["status"] == 404
    assert len(before["tree acme/alpha"]) > 1  # paginated
    assert len(before["list models"]) > 1
    prov = {s["commit"]: s["provenance"] for s in admin_before["/repos/model/acme/alpha/snapshots"]}
    assert prov[c["alpha1"]]["instance"] == "low-side" and prov[c["alpha1"]]["key_id"] == inst.svc.signer.key_id

    # the database is lost
    inst.close()
    db_files = [p for p in inst.data_dir.iterdir() if p.name.startswith("hubgate.db")]
    assert db_files
    for p in db_files:
        p.unlink()

    rebuilt = inst.cli("rebuild-index")
    assert rebuilt.code == 0, rebuilt
    # alpha v1+v2, beta v1, the dataset; refs: alpha main + tag v1.0, beta main, data main
    assert "rebuilt 4 snapshots and 4 refs from the store (0 skipped)" in rebuilt.out, rebuilt.out

    inst.open().serve()
    after = _hub_answers(inst, c)
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], name
    assert _admin_listings(inst) == admin_before

    # a second rebuild would replace a catalog that is not empty: refused unless --force
    refused = inst.cli("rebuild-index")
    assert refused.code not in (0, -1), refused
    assert "not empty" in refused.err and "--force" in refused.err
    forced = inst.cli("rebuild-index", "--force")
    assert forced.code == 0, forced
    inst.reopen().serve()
    again = _hub_answers(inst, c)
    for name in before:
        assert again[name] == before[name], name


@pytest.mark.integration
@pytest.mark.parametrize("damaged", [
    "model.safetensors",
    "README.md",
])
def test_rebuild_index_keeps_a_snapshot_with_a_quarantined_blob_unavailable(
    make_instance, tmp_path: Path, damaged: str
) -> None:
    """The catalog comes back identical: a snapshot `hubgate verify` took out of service stays out of service
    (503 naming it), and the rebuild does not stop at a blob it cannot read."""
    from mirror.storage import layout

    from .conftest import flip

    inst: Instance = make_instance()
    c = _populate(inst, tmp_path)
    sha = inst.sha_of("other/beta", c["beta1"], damaged)
    key = layout.blob_key(sha)
    inst.write(key, flip(inst.read(key)))
    assert inst.cli("verify").code == 3
    assert inst.snapshot_state("other/beta", c["beta1"]) == "unavailable"

    inst.close()
    for p in [p for p in inst.data_dir.iterdir() if p.name.startswith("hubgate.db")]:
        p.unlink()
    rebuilt = inst.cli("rebuild-index")
    assert rebuilt.code == 0, rebuilt
    inst.open().serve()
    assert inst.snapshot_state("acme/alpha", c["alpha1"]) == "available"
    assert inst.snapshot_state("other/beta", c["beta1"]) == "unavailable"
    for rev in ("main", c["beta1"]):
        r = inst.http.head(f"/other/beta/resolve/{rev}/{damaged}")
        assert r.status_code == 503 and f"other/beta@{c['beta1']}" in r.headers.get("x-error-message", "")
