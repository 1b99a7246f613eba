"""sentence-transformers through hubgate: ``SentenceTransformer("acme/tiny-st")`` with HF_ENDPOINT at hubgate,
Xet on (hf_xet's CAS path), Xet on with HF_HUB_DISABLE_XET=1 and Xet off (plain HTTP): the embeddings equal
those of the model as it was saved, and the three HF caches are equal (names and bytes) and hold the
published bytes. On the local store, and on Ceph RGW (a real S3 server) in proxy and redirect mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.content import FixtureRepo, fixture_repo, sha256
from helpers.hubgate import HubgateServer
from helpers.subproc import client_env

from tests.xet.support import start_xet_hubgate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLIENT = Path(__file__).with_name("st_client.py")
REPO = "acme/tiny-st"


@pytest.fixture(scope="module")
def st_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[FixtureRepo, list[list[float]]]:
    """The tiny sentence-transformers model (built offline in a subprocess) and its reference embeddings."""
    out = tmp_path_factory.mktemp("st-model") / "tiny-st"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TOKENIZERS_PARALLELISM="false", HF_HOME=str(out.parent / "hf-home-build"))
    proc = subprocess.run([sys.executable, str(CLIENT), "build", str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, f"building the sentence-transformers model failed:\n{proc.stderr[-4000:]}"
    reference = json.loads(out.with_name("tiny-st.embeddings.json").read_text())
    return fixture_repo("tiny-st", "model", REPO, out), reference


def load(hub: HubgateServer, home: Path, *, xet: bool = True) -> dict:  # type: ignore[type-arg]
    env = client_env(hub.base_url, home)
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    proc = subprocess.run([sys.executable, str(CLIENT), "load", REPO], capture_output=True, text=True, env=env,
                          timeout=300)
    lines = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def check_cache(cache: dict[str, str], repo: FixtureRepo, commit: str) -> None:
    """Every snapshot file is a published file with its bytes; the weights and the modules came through."""
    prefix = f"models--acme--tiny-st/snapshots/{commit}/"
    snap = {k[len(prefix):]: v for k, v in cache.items() if k.startswith(prefix)}
    assert {"model.safetensors", "modules.json", "tokenizer.json", "1_Pooling/config.json"} <= set(snap), sorted(cache)
    assert snap == {p: sha256(repo.files[p]) for p in snap}
    others = [k for k in cache if not k.startswith(prefix)]
    assert all(k.startswith(("models--acme--tiny-st/blobs/", "models--acme--tiny-st/refs/")) for k in others), others


@pytest.fixture(scope="module", params=["local", "s3-proxy-rgw", "s3-redirect-rgw"])
def st_hubs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            st_model: tuple[FixtureRepo, list[list[float]]]) -> Iterator[tuple[HubgateServer, HubgateServer]]:
    """(hubgate with Xet on, hubgate with Xet off) over one store flavour, both publishing acme/tiny-st."""
    import uuid

    flavour: str = request.param
    repo = st_model[0]
    hubs = []
    try:
        for xet in ("on", "off"):
            s3 = request.getfixturevalue("rgw_s3") if flavour != "local" else None
            bucket = None
            if s3 is not None:
                bucket = f"st-{xet}-{uuid.uuid4().hex[:8]}"
                s3.client().create_bucket(Bucket=bucket)
            hubs.append(start_xet_hubgate(flavour, tmp_path_factory.mktemp(f"st-{flavour}-{xet}"), [repo],
                                          extra={"HUBGATE_XET": xet}, s3_origin=s3.origin if s3 else None,
                                          bucket=bucket, s3_keys=(s3.access_key, s3.secret_key) if s3 else None))
        yield hubs[0], hubs[1]
    finally:
        for hub in hubs:
            hub.stop()


def test_sentence_transformer_loads_through_hubgate_with_and_without_xet(
        st_hubs: tuple[HubgateServer, HubgateServer], st_model: tuple[FixtureRepo, list[list[float]]],
        tmp_path: Path) -> None:
    on, off = st_hubs
    repo, reference = st_model
    commit = on.commits["tiny-st"]
    assert off.commits["tiny-st"] == commit  # the same folder publishes the same commit
    with on.recording() as log:
        with_xet = load(on, tmp_path / "xet")
    no_xet = load(on, tmp_path / "no-xet", xet=False)  # Xet advertised, the client says no
    with off.recording() as plain_log:
        plain = load(off, tmp_path / "plain")  # Xet off on the server: plain HTTP

    for run in (with_xet, no_xet, plain):
        assert run["embeddings"] == reference
        check_cache(run["cache"], repo, commit)
    assert with_xet["cache"] == no_xet["cache"] == plain["cache"]
    # the Xet run really went through the CAS, the plain one never saw a Xet header
    assert any("/reconstructions/" in r.path and r.status == 200 for r in log.records), [r.path for r in log.records]
    gets = [r for r in log.records if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert all(r.request_header("range") for r in gets), "no plain full download of a Xet file"
    assert not any(r.header("x-xet-hash") for r in plain_log.records)
    # the only refusals: optional files and folders probed (additional_chat_templates, ...), as EntryNotFound
    errors = [(r.method, r.path, r.status, r.header("x-error-code")) for r in (*log.records, *plain_log.records)
              if (r.status or 0) >= 400]
    assert all(e[2] == 404 and e[3] == "EntryNotFound" for e in errors), errors
