"""The air-gap defects a round trip of the README's runbook found, each reproduced (and failing on the code
before its fix): an older bundle moving ``main`` back, a killed import-bundle starting a blob again from byte
0, rebuild-index changing ``createdAt``, sizes in bytes only, a missing file reported as a failed
verification, ``gc --dry-run`` not listing, an offline request left pending after its revision arrived."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Instance, model_files, unique_repo

pytestmark = pytest.mark.integration


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _pair(make_instance, tmp_path: Path) -> tuple[Instance, Instance]:  # type: ignore[no-untyped-def]
    low = make_instance(name="low", instance_name="low")
    pub = tmp_path / "low.pub"
    exported = low.cli("keys", "export-public")
    assert exported.code == 0, exported
    pub.write_text(exported.out)
    high = make_instance(name="high", instance_name="high", upstream_url="", trusted_keys=str(pub))
    return low, high


def _main_of(inst: Instance, repo_id: str) -> str:
    from sqlmodel import Session

    from registry import catalog
    from registry.types import RepoRef

    with Session(inst.svc.engine) as session:
        return next(r.commit for r in catalog.list_refs(session, RepoRef.parse("model", repo_id)) if r.name == "main")


def test_an_older_bundle_reimported_never_moves_main_back_and_says_what_it_restored(make_instance, tmp_path: Path) -> None:
    low, high = _pair(make_instance, tmp_path)
    repo = unique_repo("pinned")
    old = low.import_folder(_folder(tmp_path / "v1", model_files(1)), repo)
    b1 = tmp_path / "b1"
    assert low.cli("export", "--out", str(b1), "--all").code == 0
    time.sleep(0.01)  # the second bundle is signed later
    new = low.import_folder(_folder(tmp_path / "v2", model_files(2)), repo)
    b2 = tmp_path / "b2"
    assert low.cli("export", "--out", str(b2), "--since", str(b1)).code == 0

    assert high.cli("import-bundle", str(b1)).code == 0
    assert high.cli("import-bundle", str(b2)).code == 0
    assert _main_of(high, repo) == new

    # the README's repair flow: a blob of the old snapshot is lost, verify marks it, the old bundle restores it
    lost = high.sha_of(repo, old, "model.safetensors")
    high.remove(f"blobs/sha256/{lost[:2]}/{lost[2:4]}/{lost}")
    verified = high.cli("verify")
    assert verified.code == 3, verified
    again = high.cli("import-bundle", str(b1))
    assert again.code == 0, again
    assert _main_of(high, repo) == new, "an older bundle moved main back to its older commit"
    assert high.snapshot_state(repo, old) == "available"
    assert "restored" in again.out and "1 blobs" in again.out.replace("1 blob ", "1 blobs "), again.out
    assert re.search(r"main.*newer", again.out), again.out  # says the ref was kept on the newer commit

    # and re-importing it with nothing missing changes nothing, and says so
    quiet = high.cli("import-bundle", str(b1))
    assert quiet.code == 0 and _main_of(high, repo) == new, quiet
    assert "nothing to restore" in quiet.out or "0 blobs copied" in quiet.out, quiet.out


def test_rebuild_index_keeps_created_at_when_bundles_arrive_out_of_order(make_instance, tmp_path: Path) -> None:
    """Two bundles carried on two drives, the newer imported first: the repo is as old as its oldest snapshot,
    live and after rebuild-index."""
    low, high = _pair(make_instance, tmp_path)
    repo = unique_repo("dated")
    first = low.import_folder(_folder(tmp_path / "v1", model_files(3)), repo)
    b1 = tmp_path / "b1"
    assert low.cli("export", "--out", str(b1), "--all").code == 0
    time.sleep(0.01)
    v2 = {**model_files(4, title="second"), ".gitattributes": b"# v2\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
    low.import_folder(_folder(tmp_path / "v2", v2), repo)  # no file in common with v1: b2 stands alone
    b2 = tmp_path / "b2"
    assert low.cli("export", "--out", str(b2), "--since", str(b1)).code == 0
    assert high.cli("import-bundle", str(b2)).code == 0
    assert high.cli("import-bundle", str(b1)).code == 0
    high.serve()
    before = high.http.get(f"/api/models/{repo}").json()
    assert high.cli("rebuild-index", "--force").code == 0
    high.reopen().serve()
    after = high.http.get(f"/api/models/{repo}").json()
    assert after["createdAt"] == before["createdAt"], (before["createdAt"], after["createdAt"])
    assert before["createdAt"][:19] == low.manifest(repo, first).created_at[:19]  # the oldest snapshot's date


def test_volume_sizes_take_units_and_missing_files_are_not_found(make_instance, tmp_path: Path) -> None:
    low, high = _pair(make_instance, tmp_path)
    low.import_folder(_folder(tmp_path / "v1", model_files(5)), unique_repo("sized"))
    out = tmp_path / "b.tar"
    made = low.cli("export", "--out", str(out), "--all", "--form", "tar", "--volume-size", "64k")
    assert made.code == 0, made
    assert all(p.stat().st_size <= 64_000 for p in tmp_path.glob("b.tar.0*"))
    assert low.cli("export", "--out", str(tmp_path / "c.tar"), "--form", "tar", "--all", "--volume-size", "4G").code == 0
    missing = low.cli("export", "--out", str(tmp_path / "d"), "--since", str(tmp_path / "nope.index.json"))
    assert missing.code == 2 and "not found" in missing.err and "verification" not in missing.err, missing
    absent = high.cli("import-bundle", str(tmp_path / "nowhere.tar"))
    assert absent.code == 2 and "not found" in absent.err and "verification" not in absent.err, absent


def test_gc_dry_run_lists_what_it_would_delete(make_instance, tmp_path: Path) -> None:
    inst = make_instance()
    repo = unique_repo("swept")
    commit = inst.import_folder(_folder(tmp_path / "v1", model_files(6)), repo)
    inst.serve()
    assert inst.admin("DELETE", f"/repos/model/{repo}/snapshots/{commit}").status_code == 200
    listed = inst.cli("gc", "--dry-run", "--grace-hours", "0")
    assert listed.code == 0, listed
    assert re.search(r"would delete\s+blob\s+\S*[0-9a-f]{64}\s+\d+ bytes", listed.out), listed.out
    assert inst.blob_keys(), "a dry run deleted something"


def test_an_offline_request_is_available_once_its_revision_arrives_by_bundle(make_instance, tmp_path: Path) -> None:
    low, high = _pair(make_instance, tmp_path)
    repo = unique_repo("asked")
    asked = high.cli("request", repo, "--reason", "eval")
    assert asked.code == 0, asked
    pk = json.loads(asked.out)["id"]
    commit = low.import_folder(_folder(tmp_path / "v1", model_files(7)), repo)
    bundle = tmp_path / "b"
    assert low.cli("export", "--out", str(bundle), "--all").code == 0
    imported = high.cli("import-bundle", str(bundle))
    assert imported.code == 0, imported
    shown = high.cli("requests", "show", str(pk), "--json")
    assert shown.code == 0, shown
    doc = json.loads(shown.out)
    assert (doc["state"], doc["commit"]) == ("available", commit), doc
    assert f"request {pk}" in imported.out, imported.out  # the import says which requests it fulfilled
    exported = high.cli("requests", "export", str(tmp_path / "requests.json"))
    assert exported.code == 0 and "0 pending requests" in exported.out, exported


def test_a_killed_import_bundle_resumes_inside_the_blob(make_instance, tmp_path: Path) -> None:
    """SIGKILL while a large blob is being copied; the next run goes on from the bytes already there."""
    low, high = _pair(make_instance, tmp_path)
    repo = unique_repo("big")
    size = 160 * 1024 * 1024
    with open(tmp_path / "big.bin", "wb") as f:
        f.write(os.urandom(size))
    folder = _folder(tmp_path / "v1", {".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
                                       "README.md": b"---\nlicense: mit\n---\n"})
    os.replace(tmp_path / "big.bin", folder / "big.bin")
    low.import_folder(folder, repo)
    bundle = tmp_path / "b"
    assert low.cli("export", "--out", str(bundle), "--all").code == 0
    high.close()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}, **high.env}
    cmd = [str(Path(sys.executable).with_name("hubgate")), "import-bundle", str(bundle)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tmp = high.data_dir / "store" / ".tmp"
    deadline = time.monotonic() + 120
    partial = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            sizes = [p.stat().st_size for p in tmp.glob("*") if p.is_file()] if tmp.is_dir() else []
            partial = max(sizes, default=0)
            if partial >= 24 * 1024 * 1024:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert partial >= 24 * 1024 * 1024 and proc.returncode == -signal.SIGKILL, (partial, proc.returncode)
    high.open()
    resumed = high.cli("import-bundle", str(bundle))
    assert resumed.code == 0, resumed
    m = re.search(r"resumed (\d+) blobs? at byte (\d+)", resumed.out)
    assert m is not None, resumed.out
    assert int(m.group(2)) >= 16 * 1024 * 1024, resumed.out
    assert high.snapshot_state(repo, _main_of(high, repo)) == "available"
