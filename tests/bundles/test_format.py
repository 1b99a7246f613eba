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
    xet_file_member, xorb_member,
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
    doc = index.model_dump(mode="json")
    assert doc.pop("xorbs") == [] and index.version == 1
    assert data == canonical_json(doc) and data.endswith(b"\n")  # version 1: the bytes earlier hubgates read
    assert Index.from_bytes(data) == index


@pytest.mark.parametrize(("changes", "message"), [
    ({"members": tuple(_members(MemberEntry(path=blob_member(SHA), size=1, sha256=MSHA)))}, "has sha256"),
    ({"members": tuple(reversed(_members(MemberEntry(path=blob_member(SHA), size=1, sha256=SHA))))}, "out of order"),
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
    doc = _index().model_dump(mode="json") | {"version": 3}
    with pytest.raises(BundleError, match="version 3 is not supported"):
        Index.from_bytes(canonical_json(doc))


XORB = hashlib.sha256(b"xorb").hexdigest()


def _xet_members(*, xorb: str = XORB) -> list[MemberEntry]:
    return [MemberEntry(path=xet_file_member(SHA), size=10, sha256=SHA),
            MemberEntry(path=xorb_member(xorb), size=100, sha256=SHA)]


def test_xet_members_are_named_by_blob_and_xorb_hash() -> None:
    assert member_kind(xet_file_member(SHA)) == ("xet-file", SHA)
    assert member_kind(xorb_member(XORB)) == ("xorb", XORB)
    for bad in (f"xet/{SHA[:2]}/{SHA}", f"xorbs/{XORB[:2]}/{XORB}.json", f"xorbs/00/{XORB}", f"xet/00/{SHA}.json",
                f"blobs/{SHA[:2]}/{SHA}.json"):
        assert member_kind(bad) is None, bad


def test_version_2_index_lists_its_xorbs_and_round_trips() -> None:
    index = _index(version=2, xorbs=(XORB,), members=tuple(_members(*_xet_members())))
    data = index.to_bytes()
    assert b'"xorbs":["' + XORB.encode() in data
    assert Index.from_bytes(data) == index
    assert [m.path for m in index.members_of("xorb")] == [xorb_member(XORB)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": 2}, "must list xorbs"),  # version 2 without its xorb list
    ({"xorbs": (XORB,)}, "cannot list xorbs"),  # a xorb list in a version 1 index
    ({"version": 2, "xorbs": (XORB, XORB)}, "sorted, without duplicates"),
    ({"version": 2, "xorbs": (XORB.upper(),)}, "64-hex"),
    ({"version": 2, "xorbs": (SHA,), "members": tuple(_members(*_xet_members()))}, "not in the index's xorb list"),
    ({"version": 2, "xorbs": (XORB,), "members": tuple(_members(*reversed(_xet_members())))}, "out of order"),
    ({"version": 2, "xorbs": (XORB,), "members": tuple(_members(MemberEntry(path=blob_member(SHA), size=1, sha256=SHA),
                                                                *_xet_members()))}, "out of order"),
    ({"members": tuple(_members(_xet_members()[0]))}, "Xet member .* in a version 1 index"),
    ({"version": 2, "xorbs": (XORB,),
      "members": tuple(_members(MemberEntry(path=xorb_member(XORB), size=66 * 1024 * 1024, sha256=SHA)))}, "over"),
])
def test_inconsistent_xet_index_is_refused(changes: dict[str, object], message: str) -> None:
    doc = _index().model_dump(mode="json")
    for k, v in changes.items():
        doc[k] = [x.model_dump(mode="json") if hasattr(x, "model_dump") else x for x in v] \
            if isinstance(v, tuple) else v  # type: ignore[attr-defined]
    with pytest.raises(BundleError, match=message):
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
