"""The bundle format on its own: member names, the index's consistency rules, detached signatures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mirror import signing
from mirror.bundles.format import (
    INDEX_PAYLOAD_TYPE, VOLUMES_PAYLOAD_TYPE, BundleError, Index, MemberEntry, SnapshotKey, VolumeEntry, VolumeList,
    blob_member, canonical_json, load_trusted_keys, member_kind, sign_detached, snapshot_member, verify_detached,
)

SHA = hashlib.sha256(b"x").hexdigest()
MSHA = hashlib.sha256(b"manifest").hexdigest()


def _signer() -> signing.Signer:
    return signing.Signer(ec.generate_private_key(ec.SECP256R1()))


def _key(commit: str = "a" * 40) -> SnapshotKey:
    return SnapshotKey(repo_type="model", repo_id="acme/tiny", commit=commit, manifest_sha256=MSHA)


def _members(*extra: MemberEntry) -> list[MemberEntry]:
    return [
        MemberEntry(path=snapshot_member(MSHA, "manifest"), size=8, sha256=MSHA),
        MemberEntry(path=snapshot_member(MSHA, "signature"), size=1, sha256=SHA),
        MemberEntry(path=snapshot_member(MSHA, "approval"), size=1, sha256=SHA),
        *extra,
    ]


def _index(**changes: object) -> Index:
    fields: dict[str, object] = dict(
        instance="low", key_id=SHA, created_at="2026-01-01T00:00:00Z", snapshots=(_key(),), watermark=(_key(),),
        members=tuple(_members(MemberEntry(path=blob_member(SHA), size=1, sha256=SHA))),
    )
    fields.update(changes)
    return Index.model_validate(fields)


def test_member_names_are_lowercase_hex_paths_only() -> None:
    assert member_kind(blob_member(SHA)) == ("blob", SHA)
    assert member_kind(snapshot_member(MSHA, "approval")) == ("approval", MSHA)
    for bad in (f"blobs/00/{SHA}", f"blobs/{SHA[:2]}/{SHA.upper()}", f"../blobs/{SHA[:2]}/{SHA}", f"/blobs/{SHA[:2]}/{SHA}",
                f"snapshots/{MSHA}/other.json", "index.json", f"blobs/{SHA[:2]}/{SHA}/x"):
        assert member_kind(bad) is None, bad


def test_index_round_trips_through_canonical_bytes() -> None:
    index = _index()
    data = index.to_bytes()
    assert data == canonical_json(index.model_dump(mode="json")) and data.endswith(b"\n")
    assert Index.from_bytes(data) == index


@pytest.mark.parametrize(("changes", "message"), [
    ({"members": tuple(_members(MemberEntry(path=blob_member(SHA), size=1, sha256=MSHA)))}, "has sha256"),
    ({"members": tuple(reversed(_members(MemberEntry(path=blob_member(SHA), size=1, sha256=SHA))))}, "after the blobs"),
    ({"members": tuple(_members()[1:])}, "manifest of"),
    ({"watermark": ()}, "watermark"),
    ({"snapshots": (_key(), _key())}, "twice"),
    ({"members": tuple(_members(*[MemberEntry(path=blob_member(SHA), size=1, sha256=SHA)] * 2))}, "duplicate"),
    ({"members": tuple(_members(MemberEntry(path="blobs/../x", size=1, sha256=SHA)))}, "invalid member name"),
])
def test_inconsistent_index_is_refused(changes: dict[str, object], message: str) -> None:
    data = canonical_json({**_index().model_dump(mode="json"), **{
        k: [x.model_dump(mode="json") for x in v] for k, v in changes.items()}})  # type: ignore[attr-defined]
    with pytest.raises(BundleError, match=message):
        Index.from_bytes(data)


def test_newer_format_version_is_named() -> None:
    doc = _index().model_dump(mode="json") | {"version": 2}
    with pytest.raises(BundleError, match="version 2 is not supported"):
        Index.from_bytes(canonical_json(doc))


def test_detached_signature_verifies_only_the_same_bytes_type_and_trusted_key() -> None:
    signer, stranger = _signer(), _signer()
    trusted = {signer.key_id: signer.private_key.public_key()}
    sig = sign_detached(signer, INDEX_PAYLOAD_TYPE, b"data")
    assert verify_detached(sig, b"data", INDEX_PAYLOAD_TYPE, trusted, "index") == signer.key_id
    with pytest.raises(BundleError, match="does not verify"):
        verify_detached(sig, b"datA", INDEX_PAYLOAD_TYPE, trusted, "index")
    with pytest.raises(BundleError, match="not 'application"):  # a volume list signature is not an index signature
        verify_detached(sign_detached(signer, VOLUMES_PAYLOAD_TYPE, b"data"), b"data", INDEX_PAYLOAD_TYPE, trusted, "index")
    with pytest.raises(BundleError, match="untrusted key"):
        verify_detached(sign_detached(stranger, INDEX_PAYLOAD_TYPE, b"data"), b"data", INDEX_PAYLOAD_TYPE, trusted, "index")
    with pytest.raises(BundleError, match="Malformed"):
        verify_detached(b"{}", b"data", INDEX_PAYLOAD_TYPE, trusted, "index")


def test_volume_list_names_and_sizes_are_checked() -> None:
    good = VolumeList(bundle="b.tar", key_id=SHA, index_sha256=SHA, volume_size=4096, volumes=(
        VolumeEntry(name="b.tar.000", size=4096, sha256=SHA), VolumeEntry(name="b.tar.001", size=10, sha256=SHA)))
    assert VolumeList.from_bytes(good.to_bytes()) == good
    for volumes in ([("b.tar.001", 4096)], [("b.tar.000", 10), ("b.tar.001", 10)], [("../b.tar.000", 4096)]):
        doc = good.model_dump(mode="json") | {"volumes": [{"name": n, "size": s, "sha256": SHA} for n, s in volumes]}
        with pytest.raises(BundleError, match="Invalid volume list"):
            VolumeList.from_bytes(canonical_json(doc))


def test_trusted_keys_load_from_pem_files_and_name_a_bad_one(tmp_path: Path) -> None:
    signer = _signer()
    good = tmp_path / "a.pub"
    good.write_bytes(signing.public_pem(signer.private_key.public_key()))
    assert set(load_trusted_keys([good])) == {signer.key_id}
    bad = tmp_path / "bad.pub"
    bad.write_bytes(b"not a key")
    with pytest.raises(BundleError, match="bad.pub"):
        load_trusted_keys([good, bad])
    with pytest.raises(BundleError, match="missing.pub"):
        load_trusted_keys([tmp_path / "missing.pub"])
