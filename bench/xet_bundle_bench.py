"""Bundles with and without the Xet form: size of a fine-tune's incremental bundle, export and import speed.

Usage: python bench/xet_bundle_bench.py [--size-mib 512] [--changed-mib 8] [--dir /tmp]

One run, local store: instance A imports a model (one safetensors file of random bytes, ``--size-mib``) and
builds its Xet form, then a fine-tune of it that changes ``--changed-mib`` in 8 places spread over the file (its first
MiB, where the safetensors header is, unchanged: hf_xet's dedup query for a file's first chunk then finds
the base's xorbs).
A exports the base (full) and the fine-tune (``--since`` the base) twice: in Xet form (records and new
xorbs, format version 2) and plain (``--no-xet``, version 1). Each bundle is imported into a fresh instance
B (for the incremental ones, after its base bundle). Printed: bundle sizes, the incremental bundle's share
of the plain one, and MB/s of export and import (file bytes published per second; an import of a Xet
bundle verifies every xorb and rebuilds the file from them). MB/s is 10^6 bytes per second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import build_services  # noqa: E402
from api.cli_xet import builder  # noqa: E402
from api.settings import load  # noqa: E402
from mirror import signing  # noqa: E402
from mirror.bundles import export_bundle, import_bundle, load_trusted_keys  # noqa: E402
from mirror.importer import import_folder  # noqa: E402
from registry.types import RepoRef  # noqa: E402

REPO = RepoRef.parse("model", "bench/xet-bundle")


def write_model(folder: Path, data: bytes) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(data)
    (folder / "config.json").write_text('{"model_type": "gpt2"}\n')


def safetensors(size: int) -> bytearray:
    header_len = 128
    n = size - 8 - header_len
    header = f'{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}'.encode().ljust(header_len, b" ")
    return bytearray(header_len.to_bytes(8, "little") + header + os.urandom(n))


def bundle_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--changed-mib", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xet-bundle-bench-", dir=args.dir))
    try:
        run(work, args.size_mib * 2**20, args.changed_mib * 2**20)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size: int, changed: int) -> None:
    base = safetensors(size)
    tuned = bytearray(base)
    piece = changed // 8
    for i in range(8):
        at = size // 16 + i * (size // 8)  # the header and the first chunk stay as they were, as in a fine-tune
        tuned[at:at + piece] = os.urandom(piece)
    write_model(work / "base", bytes(base))
    write_model(work / "tuned", bytes(tuned))
    env = {"HUBGATE_XET": "on", "HUBGATE_WORKER_IN_PROCESS": "false"}
    a = build_services(load(environ={"HUBGATE_DATA_DIR": str(work / "a"), **env}))
    xet = builder(a)
    t = time.perf_counter()
    manifest = import_folder(a.engine, a.store, work / "base", REPO, signer=a.signer).manifest
    plain_import = time.perf_counter() - t
    t = time.perf_counter()
    assert xet is not None and xet.build_manifest(manifest).built
    build = time.perf_counter() - t
    pub = work / "a.pub"
    pub.write_bytes(signing.public_pem(a.signer.private_key.public_key()))
    rows = []
    out = work / "bundles"
    for mode, use_xet in (("xet", True), ("plain", False)):
        t = time.perf_counter()
        export_bundle(a.engine, a.store, a.signer, out / f"{mode}-full", xet=use_xet)
        rows.append((mode, "full", out / f"{mode}-full", time.perf_counter() - t, size))
    import_folder(a.engine, a.store, work / "tuned", REPO, signer=a.signer, xet=xet)
    for mode, use_xet in (("xet", True), ("plain", False)):
        t = time.perf_counter()
        export_bundle(a.engine, a.store, a.signer, out / f"{mode}-inc", since=out / f"{mode}-full", xet=use_xet)
        rows.append((mode, "fine-tune", out / f"{mode}-inc", time.perf_counter() - t, size))
    print(f"model {size / 2**20:.0f} MiB, fine-tune changes {changed / 2**20:.0f} MiB in 8 places; python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"A: plain import {size / plain_import / 1e6:.0f} MB/s; building the Xet form {size / build / 1e6:.0f} MB/s")
    print(f"{'bundle':<18} {'bytes':>12} {'export MB/s':>12} {'import MB/s':>12}")
    sizes = {}
    for mode in ("xet", "plain"):
        b = build_services(load(environ={"HUBGATE_DATA_DIR": str(work / f"b-{mode}"), "HUBGATE_TRUSTED_KEYS": str(pub),
                                         "HUBGATE_XET": "off", "HUBGATE_WORKER_IN_PROCESS": "false"}))
        trusted = load_trusted_keys(b.settings.trusted_keys)
        for m, kind, path, seconds, nbytes in rows:
            if m != mode:
                continue
            os.sync()
            t = time.perf_counter()
            import_bundle(b.engine, b.store, path, trusted=trusted)
            took = time.perf_counter() - t
            sizes[(mode, kind)] = bundle_size(path)
            print(f"{mode + ' ' + kind:<18} {sizes[(mode, kind)]:>12} {nbytes / seconds / 1e6:>12.0f} {nbytes / took / 1e6:>12.0f}")
        b.engine.dispose()
    print(f"fine-tune bundle with Xet: {sizes[('xet', 'fine-tune')] / sizes[('plain', 'fine-tune')]:.1%} of the plain one "
          f"(the change is {changed / size:.1%} of the file)")


if __name__ == "__main__":
    main()
