"""OMS v1.0 snapshot signatures: the standard ``model_signing`` tool verifies what a client downloaded, and
refuses tampered files or a signature of other content; hubgate's own verifier refuses wrong keys,
edited manifests and replays."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mirror import signing
from registry.manifest import Manifest, ManifestEntry
from registry.types import RepoType

from helpers.content import write_tree

from .conftest import (
    Instance,
    flip,
    model_files,
    model_signing_verify_all,
)


def _mismatch(path: str, output: str) -> bool:
    """model_signing names the file whose digest differs (its quoting varies with the path)."""
    return "Verification failed" in output and re.search(r"Hash mismatch for \\?['\"]" + re.escape(path), output) is not None


SIG_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def _signature(inst: Instance, repo_id: str, commit: str) -> bytes:
    r = inst.admin("GET", f"/repos/model/{repo_id}/snapshots/{commit}/signature")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(SIG_MEDIA_TYPE)
    return r.content


@pytest.mark.integration
def test_model_signing_verifies_a_downloaded_snapshot_and_refuses_tampering_or_other_content(
    make_instance, tmp_path: Path
) -> None:
    from huggingface_hub import snapshot_download

    inst: Instance = make_instance()
    v1_files = model_files(1)
    v1 = inst.import_folder(write_tree(tmp_path / "v1", v1_files), "acme/signed")
    # the same repo at another commit (one file changed), and another repo
    v2 = inst.import_folder(write_tree(tmp_path / "v2", {**v1_files, "config.json": b'{"v": 2}\n'}), "acme/signed")
    other = inst.import_folder(write_tree(tmp_path / "other", model_files(2)), "acme/other")
    inst.serve()

    snap = Path(snapshot_download("acme/signed", revision=v1, endpoint=inst.url, cache_dir=tmp_path / "hf"))
    assert snap.name == v1
    assert any(p.is_symlink() for p in snap.rglob("*"))  # the HF cache layout the README's command meets
    assert {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*") if p.is_file()} == v1_files

    # the admin API hands out the signature (to an authenticated caller only)
    assert inst.http.get(f"/registry/v1/repos/model/acme/signed/snapshots/{v1}/signature").status_code == 401
    sigs = tmp_path / "sigs"
    sigs.mkdir()
    sig_v1, sig_v2, sig_other = sigs / "v1.sig", sigs / "v2.sig", sigs / "other.sig"
    sig_v1.write_bytes(_signature(inst, "acme/signed", v1))
    sig_v2.write_bytes(_signature(inst, "acme/signed", v2))
    sig_other.write_bytes(_signature(inst, "acme/other", other))
    bundle = json.loads(sig_v1.read_bytes())
    assert bundle["mediaType"] == SIG_MEDIA_TYPE
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == inst.svc.signer.key_id

    # `hubgate keys export-public` prints the instance's public key
    exported = inst.cli("keys", "export-public")
    assert exported.code == 0, exported
    assert exported.out.encode() == signing.public_pem(inst.svc.signer.private_key.public_key())
    pub = sigs / "hubgate.pub"
    pub.write_text(exported.out)
    stranger_pub = sigs / "stranger.pub"
    stranger_pub.write_bytes(signing.public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))

    # a plain copy of the download (symlinks dereferenced), one byte of the weights flipped
    tampered = Path(shutil.copytree(snap, tmp_path / "tampered", symlinks=False))
    weights = tampered / "model.safetensors"
    weights.write_bytes(flip(weights.read_bytes()))
    pristine = Path(shutil.copytree(snap, tmp_path / "pristine", symlinks=False))
    # a small text file edited, in another copy
    edited = Path(shutil.copytree(snap, tmp_path / "edited", symlinks=False))
    (edited / "docs" / "notes.txt").write_bytes(flip((edited / "docs" / "notes.txt").read_bytes(), at=0))

    (ok, ok_out), (ok_copy, ok_copy_out), (bad, bad_out), (bad_text, text_out), (replay_commit, commit_out), \
        (replay_repo, repo_out), (wrong_key, wrong_key_out) = model_signing_verify_all([
            (snap, sig_v1, pub),
            (pristine, sig_v1, pub),
            (tampered, sig_v1, pub),
            (edited, sig_v1, pub),
            (snap, sig_v2, pub),           # another commit of the same repo
            (snap, sig_other, pub),        # another repo
            (snap, sig_v1, stranger_pub),  # not hubgate's key
        ])
    assert ok == 0 and "Verification succeeded" in ok_out, ok_out
    assert ok_copy == 0 and "Verification succeeded" in ok_copy_out, ok_copy_out
    assert bad != 0 and _mismatch("model.safetensors", bad_out), bad_out
    assert bad_text != 0 and _mismatch("docs/notes.txt", text_out), text_out
    assert replay_commit != 0 and _mismatch("config.json", commit_out), commit_out
    assert replay_repo != 0 and "Verification failed" in repo_out, repo_out
    assert wrong_key != 0 and "Key mismatch" in wrong_key_out, wrong_key_out


@pytest.fixture
def signed() -> tuple[signing.Signer, Manifest, bytes]:
    signer = signing.Signer(ec.generate_private_key(ec.SECP256R1()))
    files = tuple(sorted((
        ManifestEntry(path=".gitattributes", size=10, sha256="a" * 64, git_oid="1" * 40, lfs=False),
        ManifestEntry(path="config.json", size=20, sha256="b" * 64, git_oid="2" * 40, lfs=False),
        ManifestEntry(path="model.safetensors", size=3000, sha256="c" * 64, git_oid="3" * 40, lfs=True),
    ), key=lambda f: f.path))
    manifest = Manifest(repo_type=RepoType.MODEL, repo_id="acme/unit", commit="d" * 40,
                        created_at="2024-05-01T10:00:00.000000Z", source={"kind": "import"}, files=files)
    return signer, manifest, signer.sign(manifest)


def _trusted(*signers: signing.Signer) -> dict[str, ec.EllipticCurvePublicKey]:
    return {s.key_id: s.private_key.public_key() for s in signers}


def test_verify_accepts_its_own_signature(signed: tuple[signing.Signer, Manifest, bytes]) -> None:
    signer, manifest, bundle = signed
    assert signing.verify(bundle, manifest, _trusted(signer)) == signer.key_id
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    # .gitattributes is one of the paths the verifier ignores, so it is not a resource
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["config.json", "model.safetensors"]


def test_verify_refuses_an_untrusted_key(signed: tuple[signing.Signer, Manifest, bytes]) -> None:
    _signer, manifest, bundle = signed
    stranger = signing.Signer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(signing.SignatureError, match="untrusted key"):
        signing.verify(bundle, manifest, _trusted(stranger))
    with pytest.raises(signing.SignatureError, match="untrusted key"):
        signing.verify(bundle, manifest, {})


def test_verify_refuses_a_wrong_key_under_the_right_key_id(signed: tuple[signing.Signer, Manifest, bytes]) -> None:
    signer, manifest, bundle = signed
    impostor = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify(bundle, manifest, {signer.key_id: impostor})


def test_verify_refuses_a_signature_for_an_edited_manifest(signed: tuple[signing.Signer, Manifest, bytes]) -> None:
    signer, manifest, bundle = signed
    files = list(manifest.files)
    files[-1] = files[-1].model_copy(update={"sha256": "e" * 64})
    edited = manifest.model_copy(update={"files": tuple(files)})
    with pytest.raises(signing.SignatureError, match="other content"):
        signing.verify(bundle, edited, _trusted(signer))
    dropped = manifest.model_copy(update={"files": manifest.files[:-1]})
    with pytest.raises(signing.SignatureError, match="other content"):
        signing.verify(bundle, dropped, _trusted(signer))


def test_verify_refuses_a_replay_for_another_commit_or_repo(signed: tuple[signing.Signer, Manifest, bytes]) -> None:
    signer, manifest, bundle = signed
    other_commit = manifest.model_copy(update={"commit": "f" * 40})
    with pytest.raises(signing.SignatureError, match="other content"):
        signing.verify(bundle, other_commit, _trusted(signer))
    other_repo = manifest.model_copy(update={"repo_id": "acme/elsewhere"})
    with pytest.raises(signing.SignatureError, match="other content"):
        signing.verify(bundle, other_repo, _trusted(signer))


def test_verify_refuses_an_edited_payload_or_a_malformed_bundle(signed: tuple[signing.Signer, Manifest, bytes]) -> None:
    signer, manifest, bundle = signed
    doc = json.loads(bundle)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify(json.dumps(doc).encode(), manifest, _trusted(signer))
    for broken in (b"", b"{}", b"not json", json.dumps({**json.loads(bundle), "dsseEnvelope": {}}).encode()):
        with pytest.raises(signing.SignatureError, match="Malformed"):
            signing.verify(broken, manifest, _trusted(signer))


def test_keys_generate_refuses_to_replace_a_key_and_writes_it_owner_only(make_instance) -> None:
    inst: Instance = make_instance()
    key_path = inst.svc.settings.signing_key_path
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600  # created on first start
    before = key_path.read_bytes()
    again = inst.cli("keys", "generate")
    assert again.code not in (0, -1), again
    assert "refusing to replace" in again.err
    assert key_path.read_bytes() == before
    forced = inst.cli("keys", "generate", "--force")
    assert forced.code == 0, forced
    assert key_path.read_bytes() != before
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
