"""Snapshot signatures in the OpenSSF model-signing format (OMS v1.0), with an ECDSA P-256 key.

An in-toto Statement lists every file's sha256 (taken from the manifest: no file is re-read),
wrapped in a DSSE envelope inside a Sigstore bundle (v0.3, public-key verification material).
The standard verifier accepts it:

    model_signing verify key SNAPSHOT_FOLDER --signature SIG --public_key KEY.pub
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import ConflictError, HubgateError
from registry.manifest import Manifest

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# Paths the verifier skips in a downloaded folder (git metadata, HF local_dir metadata, the signature).
IGNORE_PATHS = (".git", ".gitattributes", ".github", ".gitignore", ".cache", "model.sig")


class SignatureError(HubgateError):
    """A signature is malformed, made by an untrusted key, or does not match its manifest."""


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the PEM SubjectPublicKeyInfo: the Sigstore bundle's ``publicKey.hint``."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def public_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_key(path: Path, *, overwrite: bool = False) -> ec.EllipticCurvePrivateKey:
    """Create an ECDSA P-256 key file readable by its owner only."""
    if path.exists() and not overwrite:
        raise ConflictError(f"{path} exists; refusing to replace a signing key (use --force)")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    return key


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"Cannot read the signing key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SignatureError(f"{path} is not an ECDSA P-256 private key")
    return key


def load_public_key(data: bytes, where: str = "public key") -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(f"Cannot read {where}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SignatureError(f"{where} is not an ECDSA P-256 public key")
    return key


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature covers."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def statement(manifest: Manifest) -> dict[str, object]:
    files = sorted(
        (f for f in manifest.files if f.path.split("/")[0] not in IGNORE_PATHS), key=lambda f: f.path
    )
    root = hashlib.sha256(b"".join(bytes.fromhex(f.sha256) for f in files)).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": manifest.repo_id, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": True,
                              "ignore_paths": list(IGNORE_PATHS)},
            "resources": [{"name": f.path, "algorithm": "sha256", "digest": f.sha256} for f in files],
            # Extra predicate fields are ignored by v1.0 verifiers; hubgate's own verifier checks them
            # so that a signature cannot be replayed for another repo or commit.
            "hubgate": {"repo_type": manifest.repo_type.value, "repo_id": manifest.repo_id,
                        "commit": manifest.commit, "manifest_sha256": manifest.digest()},
        },
    }


@dataclass(frozen=True)
class Signer:
    private_key: ec.EllipticCurvePrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    def sign(self, manifest: Manifest) -> bytes:
        """The Sigstore bundle (JSON bytes) signing ``manifest``."""
        payload = json.dumps(statement(manifest), sort_keys=True, separators=(",", ":")).encode()
        sig = self.private_key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": self.key_id}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
            },
        }
        return json.dumps(bundle, indent=2).encode() + b"\n"


PROVENANCE_PAYLOAD_TYPE = "application/vnd.hubgate.provenance.v1+json"


def provenance_statement(manifest: Manifest, provenance: dict[str, object]) -> dict[str, object]:
    """What a provenance signature covers: the snapshot it is about (repo, commit, manifest digest) and the
    whole record (who approved, every file's scan record, overrides, code approvals)."""
    return {"repo_type": manifest.repo_type.value, "repo_id": manifest.repo_id, "commit": manifest.commit,
            "manifest_sha256": manifest.digest(), "provenance": provenance}


def sign_provenance(signer: "Signer", manifest: Manifest, provenance: dict[str, object]) -> bytes:
    """A DSSE envelope (JSON) over the canonical provenance statement, by this instance's key."""
    payload = json.dumps(provenance_statement(manifest, provenance), sort_keys=True, separators=(",", ":")).encode()
    sig = signer.private_key.sign(pae(PROVENANCE_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {"payloadType": PROVENANCE_PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
                "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(sig).decode()}]}
    return json.dumps(envelope, indent=2).encode() + b"\n"


def verify_provenance(envelope_bytes: bytes, manifest: Manifest,
                      trusted: dict[str, ec.EllipticCurvePublicKey]) -> dict[str, object]:
    """Check a provenance envelope against a trusted key and ``manifest``; return the signed provenance.

    Raises SignatureError on a malformed envelope, an untrusted key, a bad signature, or a statement
    about another snapshot."""
    try:
        env = json.loads(envelope_bytes)
        keyid = env["signatures"][0]["keyid"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise SignatureError(f"Malformed provenance signature: {exc}") from exc
    payload = _verified_payload(env, keyid, PROVENANCE_PAYLOAD_TYPE, trusted, "Provenance signature")
    doc = json.loads(payload)
    if (doc.get("repo_type"), doc.get("repo_id"), doc.get("commit"), doc.get("manifest_sha256")) != (
            manifest.repo_type.value, manifest.repo_id, manifest.commit, manifest.digest()):
        raise SignatureError(f"The provenance signature is about another snapshot than {manifest.repo_id}@{manifest.commit}")
    return dict(doc["provenance"])


def _verified_payload(env: object, keyid: object, payload_type: str, trusted: dict[str, ec.EllipticCurvePublicKey],
                      what: str) -> bytes:
    """The payload of a DSSE envelope once its one signature verifies with the trusted key ``keyid``.

    Raises SignatureError for a malformed envelope, an untrusted key, another payload type or a bad signature."""
    try:
        payload = base64.b64decode(env["payload"], validate=True)  # type: ignore[index]
        sig = base64.b64decode(env["signatures"][0]["sig"], validate=True)  # type: ignore[index]
        found_type = env["payloadType"]  # type: ignore[index]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise SignatureError(f"Malformed {what.lower()}: {exc}") from exc
    key = trusted.get(keyid) if isinstance(keyid, str) else None
    if key is None:
        raise SignatureError(f"{what} by an untrusted key {str(keyid)[:16]}…")
    if found_type != payload_type:
        raise SignatureError(f"Unexpected payload type {found_type!r}")
    try:
        key.verify(sig, pae(found_type, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureError(f"{what} does not verify") from exc
    return payload


def verify(bundle_bytes: bytes, manifest: Manifest, trusted: dict[str, ec.EllipticCurvePublicKey]) -> str:
    """Check a bundle against ``manifest`` and the trusted keys (key id -> key). Returns the signing key id.

    Raises SignatureError on a malformed bundle, an unknown key, a bad signature, or a statement
    that does not describe exactly this manifest (repo, commit and every file's sha256).
    """
    try:
        bundle = json.loads(bundle_bytes)
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        env = bundle["dsseEnvelope"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise SignatureError(f"Malformed signature bundle: {exc}") from exc
    payload = _verified_payload(env, hint, PAYLOAD_TYPE, trusted, "Signature")
    if json.loads(payload) != json.loads(json.dumps(statement(manifest), sort_keys=True)):
        raise SignatureError(f"The signature describes other content than {manifest.repo_id}@{manifest.commit}")
    return hint
