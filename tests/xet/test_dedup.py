"""Deduplication across revisions of a model larger than one xorb (64 MiB).

hf_xet asks the CAS about a file's first chunk and then one chunk in 1024 (about one per 64 MiB). The answer
names every xorb of a stored file that uses the chunk's xorb, so a fine-tune whose header is unchanged finds
all of its base model's xorbs with its first query, not only the xorb that query happened to hit.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from mirror.settings import StorageSettings
from mirror.storage import layout, open_store
from mirror.xet import maintenance
from mirror.xet.builder import XetBuilder, verify_reconstruction

SIZE = 160 * 1024 * 1024  # three xorbs


def test_a_fine_tune_of_a_multi_xorb_model_stores_only_its_new_chunks(tmp_path: Path) -> None:
    store = open_store(StorageSettings(backend="local", local_root=tmp_path / "s"))
    base = bytearray(os.urandom(SIZE))
    tuned = bytearray(base)
    for at in (70 * 2**20, 140 * 2**20):  # in the second and third xorbs; the first chunk is unchanged
        tuned[at:at + 2**20] = os.urandom(2**20)
    builder = XetBuilder(store, threshold=1)
    base_sha = store.ingest_file(io.BytesIO(bytes(base)), size=SIZE).sha256
    first = builder.build_blobs([(base_sha, SIZE)])
    assert first.xorbs_new >= 3
    tuned_sha = store.ingest_file(io.BytesIO(bytes(tuned)), size=SIZE).sha256
    second = builder.build_blobs([(tuned_sha, SIZE)])
    assert second.built == [tuned_sha]
    # 2 MiB changed: the new xorbs hold those and the chunks around them, not whole 64 MiB xorbs
    assert second.xorb_bytes_new < 8 * 2**20, second
    record = builder.xet.get_file(builder.xet.file_hash_of(tuned_sha))  # type: ignore[arg-type]
    base_record = builder.xet.get_file(builder.xet.file_hash_of(base_sha))  # type: ignore[arg-type]
    assert record is not None and base_record is not None and base_record.xorbs <= record.xorbs
    verify_reconstruction(builder.xet, record)
    # the xorb -> file index that widens the answer is swept with the xorbs it names
    assert len(list(store.driver.iter_keys(layout.XET_XORB_FILES_PREFIX))) == len(record.xorbs)
    for sha in (base_sha, tuned_sha):
        store.driver.delete(layout.blob_key(sha))
    report = maintenance.collect(store, set(), cutoff=float("inf"))
    assert report.xorbs_swept == len(record.xorbs)
    assert not list(store.driver.iter_keys(layout.XET_XORB_FILES_PREFIX))
