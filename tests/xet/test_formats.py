"""Xet hashing, xorb and shard formats, and reconstruction plans: checked against hf_xet itself."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from mirror.settings import StorageSettings
from mirror.storage import open_store
from mirror.xet import formats, hashing, reconstruct
from mirror.xet.builder import XetBuilder


def test_hash_string_form_reverses_each_8_byte_quarter() -> None:
    raw = bytes(range(32))
    assert hashing.text(raw) == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    assert hashing.raw(hashing.text(raw)) == raw
    with pytest.raises(ValueError):
        hashing.raw("G" * 64)


def _store(root: Path):  # type: ignore[no-untyped-def]
    return open_store(StorageSettings(backend="local", local_root=root))


def _ingest(store, data: bytes) -> str:  # type: ignore[no-untyped-def]
    import io

    return store.ingest_file(io.BytesIO(data), size=len(data)).sha256  # type: ignore[no-any-return]


def test_file_hash_equals_hf_xet_hash_files_and_records_replay_to_the_blob(tmp_path: Path) -> None:
    import hf_xet

    rng = random.Random(3)
    floats = b"".join(int(rng.gauss(0, 3000)).to_bytes(4, "little", signed=True) for _ in range(600_000))
    files = {"random.bin": rng.randbytes(9_000_000), "floats.bin": floats, "zeros.bin": bytes(3_000_000)}
    store = _store(tmp_path / "store")
    shas = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        shas[name] = _ingest(store, data)
    builder = XetBuilder(store, threshold=1)
    report = builder.build_blobs([(shas[n], len(d)) for n, d in files.items()])
    assert sorted(report.built) == sorted(shas.values()) and not report.failed
    expected = {i.hash: n for n, i in zip(files, hf_xet.hash_files([str(tmp_path / n) for n in files]))}
    for name, sha in shas.items():
        file_hash = builder.xet.file_hash_of(sha)
        assert expected[file_hash] == name
        record = builder.xet.get_file(file_hash)
        assert record is not None and record.sha256 == sha and record.size == len(files[name])
    # every stored xorb verifies on its own (chunks, then the xorb hash over them)
    for x in builder.xet.iter_xorbs():
        footer = formats.verify_xorb(builder.xet.read_xorb(x), x)
        assert footer.num_chunks > 0
    schemes = {data[footer.chunk_start(i) + 4] for x in builder.xet.iter_xorbs()
               for data in [builder.xet.read_xorb(x)] for footer in [formats.verify_xorb(data, x)]
               for i in range(footer.num_chunks)}
    assert schemes >= {0}  # random data is stored as is; the others compress (LZ4 / byte groups)
    assert schemes & {1, 2}


def test_upload_without_footer_gets_ours_and_corruption_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    data = random.Random(1).randbytes(2_000_000)
    sha = _ingest(store, data)
    builder = XetBuilder(store, threshold=1)
    builder.build_blobs([(sha, len(data))])
    xorb = next(builder.xet.iter_xorbs())
    stored = builder.xet.read_xorb(xorb)
    footer = formats.verify_xorb(stored, xorb)
    body = stored[:footer.chunk_ends[-1]]  # what hf_xet uploads: the chunks alone
    again_footer, again = formats.verify_upload(body, xorb)
    assert again == stored and again_footer == footer
    assert formats.verify_upload(stored, xorb)[1] == stored  # a full xorb is accepted as well
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 1
    with pytest.raises(formats.XetFormatError):
        formats.verify_upload(bytes(flipped), xorb)
    with pytest.raises(formats.XetFormatError):
        formats.verify_upload(body, "0" * 64)
    with pytest.raises(formats.XetFormatError):
        formats.verify_upload(body[:-1], xorb)


def test_bg4_ungroup_inverts_grouping() -> None:
    for n in (0, 1, 5, 64, 4097):
        data = random.Random(n).randbytes(n)
        groups = b"".join(data[i::4] for i in range(4))
        assert formats._bg4_ungroup(groups) == data


def test_dedup_shard_parses_back() -> None:
    info = formats.XorbInfo("ab" * 32, ((bytes(range(32)), 0, 100), (bytes(32), 108, 50)), 150, 300)
    shard = formats.parse_shard(formats.dedup_shard([info]))
    assert shard.files == () and shard.xorbs == (info,)


def test_reconstruction_plans_cover_exactly_the_asked_bytes(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    data = random.Random(5).randbytes(5_000_000)
    sha = _ingest(store, data)
    builder = XetBuilder(store, threshold=1)
    builder.build_blobs([(sha, len(data))])
    record = builder.xet.get_file(builder.xet.file_hash_of(sha))  # type: ignore[arg-type]
    assert record is not None
    rng = random.Random(9)
    cases = [(0, len(data) - 1), (0, 0), (len(data) - 1, len(data) - 1), (10, len(data) + 100)]
    cases += [tuple(sorted((rng.randrange(len(data)), rng.randrange(len(data))))) for _ in range(20)]
    for first, last in cases:
        plan = reconstruct.plan(record, (first, last), builder.xet.xorb_footer)
        out = b""
        for t in plan.terms:
            footer = builder.xet.xorb_footer(t.xorb)
            assert footer.byte_range(t.chunk_start, t.chunk_end) == (t.byte_first, t.byte_last)
            blob = builder.xet.read_xorb(t.xorb)
            out += b"".join(formats.iter_chunks(blob, footer, t.chunk_start, t.chunk_end))
        got = out[plan.offset_into_first_range:][:min(last, len(data) - 1) - first + 1]
        assert got == data[first:last + 1], (first, last)
    with pytest.raises(reconstruct.RangeNotSatisfiable):
        reconstruct.plan(record, (len(data), len(data) + 5), builder.xet.xorb_footer)
    assert hashlib.sha256(data).hexdigest() == record.sha256
