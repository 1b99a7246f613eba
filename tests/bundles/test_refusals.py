"""Every bad bundle is refused with a BundleError that says why, and nothing is published.

The bad bundles are made from the good ones of the ``source`` fixture: bytes flipped, files
cut or removed, and tars rebuilt with ``tarfile`` member by member (links, devices, ``..``,
absolute names, duplicates, members the index does not list).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mirror import signing
from mirror.bundles import BundleError, import_bundle
from mirror.bundles.format import INDEX_PAYLOAD_TYPE, Index, sign_detached

from .conftest import Source, assert_nothing_published, copy_bundle

Maker = Callable[[Source, Path], Path]


def _flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset if offset >= 0 else len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _index(bundle: Path) -> Index:
    return Index.from_bytes((bundle / "index.json").read_bytes())


def _members(tar: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tar) as tf:
        return [(m, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]


def _write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


def _crafted(insert: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> Maker:
    """A maker that rebuilds the good tar with ``insert`` applied to its member list."""

    def make(source: Source, tmp: Path) -> Path:
        members = _members(source.tar)
        insert(members)
        tmp.mkdir(parents=True, exist_ok=True)
        return _write_tar(tmp / "crafted.tar", members)

    return make


def _in_dir(change: Callable[[Path, Index], None]) -> Maker:
    def make(source: Source, tmp: Path) -> Path:
        bundle = copy_bundle(source.dir, tmp)
        change(bundle, _index(bundle))
        return bundle

    return make


def _in_volumes(change: Callable[[Path], None]) -> Maker:
    def make(source: Source, tmp: Path) -> Path:
        bundle = copy_bundle(source.volumes, tmp)
        change(bundle.parent)
        return bundle

    return make


def _last_volume(folder: Path) -> Path:
    return sorted(folder.glob("bundle.tar.[0-9][0-9][0-9]"))[-1]


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _resigned_by_stranger(bundle: Path, index: Index) -> None:
    _flip(bundle / index.blob_members[0].path)  # any change, then a valid signature by an unknown key
    stranger = signing.Signer(ec.generate_private_key(ec.SECP256R1()))
    (bundle / "index.json.sig").write_bytes(sign_detached(stranger, INDEX_PAYLOAD_TYPE, (bundle / "index.json").read_bytes()))


def _symlink_blob(bundle: Path, index: Index) -> None:
    blob = bundle / index.blob_members[0].path
    shutil.move(blob, bundle.parent / "elsewhere")
    blob.symlink_to(bundle.parent / "elsewhere")


def _member_after_head(info: tarfile.TarInfo, data: bytes = b"") -> Maker:
    return _crafted(lambda m: m.insert(2, (info, data)))


CASES: dict[str, tuple[Maker, str]] = {
    # folder form
    "tampered blob": (_in_dir(lambda b, i: _flip(b / i.blob_members[-1].path)), "altered or damaged"),
    "tampered manifest": (_in_dir(lambda b, i: _flip(b / f"snapshots/{i.snapshots[0].manifest_sha256}/manifest.json")),
                          "manifest.json: sha256 mismatch"),
    "tampered approval": (_in_dir(lambda b, i: _flip(b / f"snapshots/{i.snapshots[0].manifest_sha256}/approval.json")),
                          "approval.json: sha256 mismatch"),
    "tampered index": (_in_dir(lambda b, i: _flip(b / "index.json", 20)), "does not verify"),
    "unsigned": (_in_dir(lambda b, i: (b / "index.json.sig").unlink()), "index.json.sig: it is missing"),
    "re-signed by a stranger": (_in_dir(_resigned_by_stranger), "untrusted key"),
    "blob cut short": (_in_dir(lambda b, i: _truncate(b / i.blob_members[-1].path, 10)), "size mismatch"),
    "blob missing": (_in_dir(lambda b, i: (b / i.blob_members[-1].path).unlink()), "it is missing"),
    "symlink in the folder": (_in_dir(_symlink_blob), "symbolic link"),
    "extra file in the folder": (_in_dir(lambda b, i: (b / "blobs" / "extra").write_bytes(b"x")), "unexpected file"),
    "fifo in the folder": (_in_dir(lambda b, i: os.mkfifo(b / "snapshots" / "pipe")), "special file"),
    # volumes
    "truncated volume": (_in_volumes(lambda f: _truncate(f / "bundle.tar.002", 1000)),
                         "Volume bundle.tar.002 is truncated: 1000 of"),
    "missing volume": (_in_volumes(lambda f: (f / "bundle.tar.001").unlink()), "Volume bundle.tar.001 is missing"),
    "damaged volume": (_in_volumes(lambda f: _flip(f / "bundle.tar.003")), "Volume bundle.tar.003 is damaged|altered"),
    # the end-of-archive padding is in no member: only the volume's checksum sees it
    "damaged volume padding": (_in_volumes(lambda f: _flip(_last_volume(f), _last_volume(f).stat().st_size - 1)),
                               r"Volume bundle.tar.\d+ is damaged"),
    "volume list altered": (_in_volumes(lambda f: _flip(f / "bundle.tar.volumes.json", 30)), "volume list.*does not verify"),
    # single tar
    "truncated tar": (lambda s, t: (_truncate(p := copy_bundle(s.tar, t), p.stat().st_size // 2), p)[1],
                      "truncated|damaged|size mismatch"),
    "dot-dot member": (_member_after_head(_info("../escape.txt", size=2), b"hi"), "contains '..'"),
    "dot-dot member first": (_crafted(lambda m: m.insert(0, (_info("blobs/../../x", size=1), b"x"))), "contains '..'"),
    "symlink member": (_member_after_head(_info("blobs/aa/link", tarfile.SYMTYPE, link="/etc/passwd")), "symbolic link"),
    "hard link member": (_member_after_head(_info("blobs/aa/hard", tarfile.LNKTYPE, link="index.json")), "hard link"),
    "device member": (_member_after_head(_info("blobs/aa/null", tarfile.CHRTYPE)), "device file"),
    "fifo member": (_member_after_head(_info("blobs/aa/fifo", tarfile.FIFOTYPE)), "fifo"),
    "absolute member": (_member_after_head(_info("/tmp/evil", size=1), b"x"), "absolute name"),
    "unknown member kind": (_member_after_head(_info("blobs/aa/cont", tarfile.CONTTYPE, size=1), b"x"), "unsupported kind"),
    "duplicate member": (_crafted(lambda m: m.append(m[-1])), "appears twice"),
    "unlisted member": (_crafted(lambda m: m.append((_info("blobs/aa/extra", size=1), b"x"))), "not listed"),
    "members out of order": (_crafted(lambda m: m.__setitem__(slice(2, 4), m[3:1:-1])), "out of order"),
    "index not first": (_crafted(lambda m: m.insert(0, m.pop(-1))), "must start with index.json"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_bundle_is_refused_and_nothing_published(source: Source, make_b, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    make, message = CASES[case]
    bundle = make(source, tmp_path / "bad")
    b = make_b()
    with pytest.raises(BundleError, match=message):
        import_bundle(b.engine, b.store, bundle, trusted=b.trusted())
    assert_nothing_published(b)
    if case in ("truncated volume", "missing volume", "unsigned", "tampered index", "re-signed by a stranger",
                "volume list altered", "index not first", "dot-dot member first"):
        assert not list(b.store.driver.iter_keys("blobs/")), "refused before any member was read"


def test_bundle_from_an_untrusted_instance_is_refused(source: Source, make_b, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = signing.Signer(ec.generate_private_key(ec.SECP256R1()))
    key = tmp_path / "other.pub"
    key.write_bytes(signing.public_pem(other.private_key.public_key()))
    b = make_b(key)
    for form in ("dir", "tar", "volumes"):
        with pytest.raises(BundleError, match="untrusted key"):
            import_bundle(b.engine, b.store, source.bundle(form), trusted=b.trusted())
    assert_nothing_published(b)
    with pytest.raises(BundleError, match="No trusted keys"):
        import_bundle(b.engine, b.store, source.dir, trusted={})
    assert not list(b.store.driver.iter_keys("blobs/"))


def test_what_is_not_a_bundle_is_named(source: Source, make_b, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b = make_b()
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_bytes(b"hello")
    for path, message in ((tmp_path / "nothing", "not a bundle"), (tmp_path / "empty", "index.json: it is missing"),
                          (tmp_path / "notes.txt", "Not a readable tar bundle|must start with index.json")):
        with pytest.raises(BundleError, match=message):
            import_bundle(b.engine, b.store, path, trusted=b.trusted())
    assert_nothing_published(b)
