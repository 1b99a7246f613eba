"""Bundles that carry the Xet form of large files (format version 2): records and xorbs instead of bytes.

Instance A builds the Xet form of a 40 MiB model and of a fine-tune that changes 1 MiB of it (the
fine-tune's unchanged chunks are found in the base model's xorbs). Its first bundle carries the model as a
record plus its xorbs; the incremental one carries the fine-tune's record and only its new xorbs. The
sealed side B verifies every xorb and record, rebuilds the files from xorbs through its verifying blob
writer, and then serves them over Xet too. A bad or altered record, xorb or chain is refused by name with
nothing published.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror.bundles import BundleError, export_bundle, import_bundle
from mirror.bundles.format import INDEX_PAYLOAD_TYPE, Index, canonical_json, sign_detached
from mirror.xet import maintenance
from mirror.xet.builder import verify_reconstruction
from mirror.xet.store import XetFile, XetStore
from tests.xet.support import big_models

from .conftest import Instance, approve_by_request, assert_nothing_published, build_instance, import_repo

XET_ON = {"HUBGATE_XET": "on", "HUBGATE_XET_THRESHOLD_BYTES": "4096"}
REPO = "acme/big"
WEIGHTS = "model.safetensors"


@dataclass
class XetSource:
    a: Instance
    public_key: Path
    base: bytes
    tuned: bytes
    commits: tuple[str, str]
    full: Path  # the base model, Xet form
    incremental: Path  # the fine-tune, since ``full``
    plain_full: Path  # the same two, --no-xet
    plain_incremental: Path
    results: dict[str, Any]

    def sha(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def xsource(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XetSource]:
    from api.cli_xet import builder

    root = tmp_path_factory.mktemp("xet-source")
    base_dir, tuned_dir = big_models(root / "models")
    a = build_instance(root / "a", HUBGATE_INSTANCE_NAME="low-side", **XET_ON)
    xet = builder(a.services)
    assert xet is not None
    first = import_repo(a, base_dir, REPO, xet=xet)
    approve_by_request(a, first, repo_id=REPO)
    out = root / "bundles"
    results = {"full": export_bundle(a.engine, a.store, a.signer, out / "full", instance="low-side"),
               "plain_full": export_bundle(a.engine, a.store, a.signer, out / "plain-full", xet=False)}
    second = import_repo(a, tuned_dir, REPO, xet=xet)
    results["incremental"] = export_bundle(a.engine, a.store, a.signer, out / "inc", since=out / "full")
    results["plain_incremental"] = export_bundle(a.engine, a.store, a.signer, out / "plain-inc",
                                                 since=out / "plain-full", xet=False)
    yield XetSource(a, a.write_public_key(root / "a.pub"), (base_dir / WEIGHTS).read_bytes(),
                    (tuned_dir / WEIGHTS).read_bytes(), (first, second), out / "full", out / "inc",
                    out / "plain-full", out / "plain-inc", results)
    a.engine.dispose()


@pytest.fixture
def make_sealed(tmp_path: Path, xsource: XetSource) -> Iterator[Any]:
    made: list[Instance] = []

    def make(name: str = "b", **env: str) -> Instance:
        b = build_instance(tmp_path / name, HUBGATE_TRUSTED_KEYS=str(xsource.public_key), **env)
        made.append(b)
        return b

    yield make
    for b in made:
        b.engine.dispose()


def _import(b: Instance, bundle: Path) -> Any:
    return import_bundle(b.engine, b.store, bundle, trusted=b.trusted())


def _stored(b: Instance, sha256: str) -> bytes:
    with b.store.open(sha256) as f:
        return f.read()  # type: ignore[no-any-return]


def _index(bundle: Path) -> Index:
    return Index.from_bytes((bundle / "index.json").read_bytes())


def _paths(bundle: Path, prefix: str) -> list[str]:
    return [m.path for m in _index(bundle).members if m.path.startswith(prefix)]


def test_the_weights_travel_as_a_record_and_xorbs_and_are_rebuilt_byte_for_byte(xsource: XetSource, make_sealed) -> None:  # type: ignore[no-untyped-def]
    index = _index(xsource.full)
    base_sha = xsource.sha(xsource.base)
    assert index.version == 2 and index.xorbs
    assert f"blobs/{base_sha[:2]}/{base_sha}" not in _paths(xsource.full, "blobs/")  # no plain copy of the weights
    assert _paths(xsource.full, "xet/") == [f"xet/{base_sha[:2]}/{base_sha}.json"]
    assert len(_paths(xsource.full, "xorbs/")) == len(index.xorbs) == xsource.results["full"].xorbs
    assert _paths(xsource.full, "blobs/")  # config.json is under the threshold: plain bytes as before

    b = make_sealed(HUBGATE_XET="off")  # rebuilding needs no Xet setting on the sealed side
    result = _import(b, xsource.full)
    assert [k.commit for k in result.published] == [xsource.commits[0]]
    assert result.blobs_rebuilt == 1 and result.xorbs_copied == len(index.xorbs) and result.blobs_copied == 1
    assert _stored(b, base_sha) == xsource.base
    # B holds A's Xet form, checked: the same record, and every xorb re-hashed by verify
    a_xet, b_xet = XetStore(xsource.a.store), XetStore(b.store)
    file_hash = a_xet.file_hash_of(base_sha)
    assert file_hash is not None and b_xet.file_hash_of(base_sha) == file_hash
    record = b_xet.get_file(file_hash)
    assert record is not None and record.terms == a_xet.get_file(file_hash).terms  # type: ignore[union-attr]
    verify_reconstruction(b_xet, record)
    report = maintenance.verify(b.store)
    assert report.ok and report.xorbs_checked == len(index.xorbs)

    again = _import(b, xsource.full)  # importing twice changes nothing
    assert again.blobs_rebuilt == 0 and again.xorbs_copied == 0 and again.xorbs_skipped == len(index.xorbs)
    assert [k.commit for k in again.unchanged] == [xsource.commits[0]]


def test_a_fine_tune_bundle_carries_only_its_new_chunks(xsource: XetSource, make_sealed) -> None:  # type: ignore[no-untyped-def]
    inc, plain = xsource.results["incremental"], xsource.results["plain_incremental"]
    tuned_sha = xsource.sha(xsource.tuned)
    first_xorbs = set(_index(xsource.full).xorbs)
    new_xorbs = {p.rsplit("/", 1)[1] for p in _paths(xsource.incremental, "xorbs/")}
    assert new_xorbs and not new_xorbs & first_xorbs
    assert set(_index(xsource.incremental).xorbs) == first_xorbs | new_xorbs  # the xorb watermark goes on
    assert _index(xsource.incremental).since == xsource.results["full"].index_sha256
    # 1 MiB of 40 changed: the bundle holds a few MiB of new xorbs, the plain one the whole 40 MiB file
    assert plain.blob_bytes >= len(xsource.tuned)
    assert inc.xorb_bytes + inc.blob_bytes < 0.2 * len(xsource.tuned), (inc.xorb_bytes, inc.blob_bytes)
    assert inc.size < 0.2 * plain.size
    print(f"\nfine-tune bundle: {inc.size} bytes with Xet ({inc.xorbs} xorbs, {inc.xorb_bytes} bytes), "
          f"{plain.size} bytes plain: {inc.size / plain.size:.1%}")

    b = make_sealed()
    _import(b, xsource.full)
    result = _import(b, xsource.incremental)
    assert [k.commit for k in result.published] == [xsource.commits[1]]
    assert result.blobs_rebuilt == 1 and result.xorbs_copied == len(new_xorbs)
    assert _stored(b, tuned_sha) == xsource.tuned
    record = XetStore(b.store).get_file(XetStore(b.store).file_hash_of(tuned_sha))  # type: ignore[arg-type]
    assert record is not None and record.xorbs & first_xorbs  # it reuses the base model's xorbs
    assert maintenance.verify(b.store).ok


def test_a_fine_tune_bundle_without_the_one_before_is_refused_naming_the_xorb(xsource: XetSource, make_sealed) -> None:  # type: ignore[no-untyped-def]
    b = make_sealed()
    with pytest.raises(BundleError, match=r"needs xorb [0-9a-f]{64} \(for blob .*import the bundle it continues first"):
        _import(b, xsource.incremental)
    assert_nothing_published(b, REPO)
    assert not list(b.store.driver.iter_keys("xorbs/"))  # refused before anything was copied


def test_plain_export_writes_a_version_1_bundle(xsource: XetSource, make_sealed) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((xsource.plain_full / "index.json").read_bytes())
    assert raw["version"] == 1 and "xorbs" not in raw  # what a hubgate without Xet bundles reads
    assert not _paths(xsource.plain_full, "xet/") and not _paths(xsource.plain_full, "xorbs/")
    b = make_sealed()
    assert _import(b, xsource.plain_full).blobs_copied == 2
    assert _stored(b, xsource.sha(xsource.base)) == xsource.base


def _copy(bundle: Path, dest: Path) -> Path:
    return Path(shutil.copytree(bundle, dest / bundle.name))


def _resign(bundle: Path, a: Instance, index: Index) -> None:
    """Rewrite index.json with ``index`` and sign it with A's own (trusted) key: a faulty or compromised exporter."""
    data = index.to_bytes()
    (bundle / "index.json").write_bytes(data)
    (bundle / "index.json.sig").write_bytes(sign_detached(a.signer, INDEX_PAYLOAD_TYPE, data))


def _replace_member(bundle: Path, a: Instance, path: str, data: bytes) -> None:
    (bundle / path).write_bytes(data)
    index = _index(bundle)
    members = tuple(m.model_copy(update={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                    if m.path == path else m for m in index.members)
    _resign(bundle, a, index.model_copy(update={"members": members}))


def test_a_tampered_xorb_is_refused(xsource: XetSource, make_sealed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(xsource.full, tmp_path / "x")
    xorb = bundle / _paths(bundle, "xorbs/")[0]
    raw = bytearray(xorb.read_bytes())
    raw[1000] ^= 0xFF
    xorb.write_bytes(bytes(raw))
    b = make_sealed()
    with pytest.raises(BundleError, match=r"xorbs/.*: sha256 mismatch"):
        _import(b, bundle)
    assert_nothing_published(b, REPO)


def test_a_xorb_that_is_not_its_hash_is_refused_even_when_the_index_vouches_for_it(xsource: XetSource, make_sealed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = _copy(xsource.full, tmp_path / "x")
    path = _paths(bundle, "xorbs/")[0]
    raw = bytearray((bundle / path).read_bytes())
    raw[1000] ^= 0xFF
    _replace_member(bundle, xsource.a, path, bytes(raw))  # the index's sha256 now matches the altered bytes
    b = make_sealed()
    with pytest.raises(BundleError, match=r"xorbs/.*altered or damaged"):
        _import(b, bundle)
    assert_nothing_published(b, REPO)
    assert not list(b.store.driver.iter_keys("xorbs/" + path.split("/")[1] + "/" + path.rsplit("/", 1)[1]))


def test_a_record_that_does_not_rebuild_the_signed_bytes_is_refused(xsource: XetSource, make_sealed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The fine-tune's record swapped for the base model's terms and file hash (same size, valid xorbs): the
    file hash checks out against the xorbs, but the bytes rebuilt are not the signed manifest's."""
    bundle = _copy(xsource.full, tmp_path / "x")
    base_sha, tuned_sha = xsource.sha(xsource.base), xsource.sha(xsource.tuned)
    path = f"xet/{base_sha[:2]}/{base_sha}.json"
    record = XetFile.from_json((bundle / path).read_bytes())
    other = XetStore(xsource.a.store).get_file(XetStore(xsource.a.store).file_hash_of(tuned_sha))  # type: ignore[arg-type]
    assert other is not None and other.size == record.size
    forged = XetFile(other.file_hash, base_sha, other.size, other.terms)
    # the fine-tune's new xorbs have to travel too for its terms to be checkable
    index = _index(bundle)
    extra = sorted(other.xorbs - set(index.xorbs))
    members = list(index.members)
    for x in extra:
        data = XetStore(xsource.a.store).read_xorb(x)
        (bundle / f"xorbs/{x[:2]}").mkdir(exist_ok=True)
        (bundle / f"xorbs/{x[:2]}/{x}").write_bytes(data)
        members.insert(next(i for i, m in enumerate(members) if m.path.startswith("blobs/")),
                       type(members[0])(path=f"xorbs/{x[:2]}/{x}", size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    _resign(bundle, xsource.a, index.model_copy(update={"members": tuple(members),
                                                       "xorbs": tuple(sorted(set(index.xorbs) | set(extra)))}))
    _replace_member(bundle, xsource.a, path, forged.to_json())
    b = make_sealed()
    with pytest.raises(BundleError, match="do not give the signed bytes"):
        _import(b, bundle)
    assert_nothing_published(b, REPO)
    assert not b.store.has(base_sha) and XetStore(b.store).file_hash_of(base_sha) is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("file_hash", "0" * 64, "does not match its xorbs: .*file hash does not match its chunks"),
    ("sha256", "1" * 64, "carried for blob {sha} is for blob 1111"),
])
def test_a_tampered_record_is_refused(xsource: XetSource, make_sealed, tmp_path: Path, field: str, value: str,  # type: ignore[no-untyped-def]
                                      message: str) -> None:
    """A record whose file hash its terms do not give, or that names another blob: refused, nothing published."""
    bundle = _copy(xsource.full, tmp_path / "x")
    base_sha = xsource.sha(xsource.base)
    path = f"xet/{base_sha[:2]}/{base_sha}.json"
    doc = json.loads((bundle / path).read_bytes())
    doc[field] = value
    _replace_member(bundle, xsource.a, path, canonical_json(doc))
    b = make_sealed()
    with pytest.raises(BundleError, match=message.format(sha=base_sha)):
        _import(b, bundle)
    assert_nothing_published(b, REPO)


def test_an_interrupted_rebuild_resumes_without_copying_the_xorbs_again(xsource: XetSource, make_sealed, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from mirror.bundles import xet as bundle_xet

    b = make_sealed()
    real = bundle_xet.XetImport._rebuild_one

    def killed(self, *args: Any) -> None:  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("test: killed while rebuilding")

    monkeypatch.setattr(bundle_xet.XetImport, "_rebuild_one", killed)
    with pytest.raises(KeyboardInterrupt):
        _import(b, xsource.full)
    assert_nothing_published(b, REPO)
    monkeypatch.setattr(bundle_xet.XetImport, "_rebuild_one", real)
    result = _import(b, xsource.full)
    assert result.xorbs_copied == 0 and result.xorbs_skipped == len(_index(xsource.full).xorbs)
    assert result.blobs_rebuilt == 1 and _stored(b, xsource.sha(xsource.base)) == xsource.base


@pytest.mark.parametrize("form", ["tar", "volumes"])
def test_tar_forms_carry_xet_members_too(xsource: XetSource, make_sealed, tmp_path: Path, form: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "t" / "bundle.tar"
    export_bundle(xsource.a.engine, xsource.a.store, xsource.a.signer, out, form="tar",
                  volume_size=8 * 1024 * 1024 if form == "volumes" else None, repos=None)
    b = make_sealed()
    _import(b, out.with_name("bundle.tar.volumes.json") if form == "volumes" else out)
    for data in (xsource.base, xsource.tuned):
        assert _stored(b, xsource.sha(data)) == data
    assert maintenance.verify(b.store).ok


@pytest.mark.slow
@pytest.mark.integration
def test_a_sealed_side_on_s3_serves_the_rebuilt_files_over_xet(xsource: XetSource, moto_s3: str, tmp_path: Path) -> None:
    """B on S3 (moto's server, proxy mode) imports both bundles, then a stock client downloads the fine-tune from it
    over Xet and without: the same bytes, and resolve names the file hash A built."""
    import json as _json
    import subprocess
    import sys
    import uuid

    import httpx

    from helpers.subproc import client_env

    from .test_s3_round_trip import _s3_client, serving

    bucket = f"hubgate-x-{uuid.uuid4().hex[:12]}"
    _s3_client(moto_s3).create_bucket(Bucket=bucket)
    b = build_instance(tmp_path / "b", HUBGATE_STORAGE="s3", HUBGATE_S3_BUCKET=bucket, HUBGATE_S3_ENDPOINT_URL=moto_s3,
                       HUBGATE_S3_ACCESS_KEY_ID="testing", HUBGATE_S3_SECRET_ACCESS_KEY="testing",
                       HUBGATE_S3_SERVE="proxy", HUBGATE_TRUSTED_KEYS=str(xsource.public_key), **XET_ON)
    try:
        assert _import(b, xsource.full).blobs_rebuilt == 1
        assert _import(b, xsource.incremental).blobs_rebuilt == 1
        tuned_sha = xsource.sha(xsource.tuned)
        with serving(b) as endpoint:
            head = httpx.head(f"{endpoint}/{REPO}/resolve/main/{WEIGHTS}")
            assert head.status_code == 200 and head.headers["x-repo-commit"] == xsource.commits[1]
            assert head.headers["x-xet-hash"] == XetStore(xsource.a.store).file_hash_of(tuned_sha)
            caches = []
            for xet in (True, False):
                env = client_env(endpoint, tmp_path / f"hf-{xet}")
                if not xet:
                    env["HF_HUB_DISABLE_XET"] = "1"
                proc = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "xet" / "xet_client.py"),
                                       _json.dumps({"actions": [["download", REPO, WEIGHTS]]})],
                                      capture_output=True, text=True, env=env, timeout=300)
                lines = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                assert proc.returncode == 0 and lines, proc.stderr[-4000:]
                result = _json.loads(lines[-1])
                assert result["results"] == [tuned_sha]
                caches.append(result["cache"])
            assert caches[0] == caches[1]
    finally:
        b.engine.dispose()


def test_the_cli_exports_xet_form_by_default_and_plain_with_no_xet(xsource: XetSource, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    hubgate = str(Path(sys.executable).with_name("hubgate"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}

    def cli(data_dir: Path, *argv: str, **settings: str) -> str:
        proc = subprocess.run([hubgate, *argv], env=env | {"HUBGATE_DATA_DIR": str(data_dir), **settings},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    a_dir = xsource.a.data_dir
    out = cli(a_dir, "export", "--out", str(tmp_path / "x"), "--all")
    assert "2 files in Xet form, with" in out
    plain = cli(a_dir, "export", "--out", str(tmp_path / "p"), "--all", "--no-xet")
    assert "Xet form" not in plain and json.loads((tmp_path / "p" / "index.json").read_bytes())["version"] == 1
    got = cli(tmp_path / "b", "import-bundle", str(tmp_path / "x"), HUBGATE_TRUSTED_KEYS=str(xsource.public_key))
    assert "2 files rebuilt from xorbs;" in got
