"""Bundle export and import throughput for a 1 GiB snapshot on local storage, against a plain file copy.

Usage: python bench/bundle_bench.py [--size-mib 1024] [--repeat 3] [--dir /tmp]

One run measures, on the same disk and the same bytes: ``shutil.copyfile`` of the snapshot's
files (the baseline), ``export_bundle`` in the folder and tar forms, and ``import_bundle`` of
each into a fresh local instance. Each figure is the median of ``--repeat`` rounds; every round
writes to new files, so no step finds its output already in place. MB/s is 10^6 bytes per second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import build_services  # noqa: E402
from api.settings import load  # noqa: E402
from mirror import signing  # noqa: E402
from mirror.bundles import export_bundle, import_bundle, load_trusted_keys  # noqa: E402
from mirror.importer import import_folder  # noqa: E402
from registry.types import RepoRef  # noqa: E402


def make_snapshot(folder: Path, size: int) -> int:
    """One big LFS file (random bytes, so nothing compresses) and a small config; returns the total size."""
    folder.mkdir(parents=True)
    chunk = os.urandom(16 * 1024 * 1024)
    with open(folder / "model.safetensors", "wb") as f:
        left = size
        while left:
            part = chunk[: min(left, len(chunk))]
            f.write(part)
            left -= len(part)
            chunk = chunk[1:] + chunk[:1]  # different blocks, cheaply
    (folder / "config.json").write_text('{"model_type": "gpt2"}\n')
    return sum(p.stat().st_size for p in folder.iterdir())


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # no step pays for the previous one's writeback
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bundle-bench-", dir=args.dir))
    try:
        run(work, args.size_mib * 1024 * 1024, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size: int, repeat: int) -> None:
    src = work / "src"
    total = make_snapshot(src, size)
    a = build_services(load(environ={"HUBGATE_DATA_DIR": str(work / "a")}))
    import_folder(a.engine, a.store, src, RepoRef.parse("model", "bench/one-gib"), signer=a.signer)
    pub = work / "a.pub"
    pub.write_bytes(signing.public_pem(a.signer.private_key.public_key()))
    blobs = [a.store.local_path(sha) for sha in a.store.iter_digests()]
    times: dict[str, list[float]] = {k: [] for k in ("copyfile", "export dir", "export tar", "import dir", "import tar")}
    for i in range(repeat):
        r = work / f"round{i}"
        (r / "copy").mkdir(parents=True)
        times["copyfile"].append(timed(lambda: [shutil.copyfile(p, r / "copy" / p.name) for p in blobs if p]))
        times["export dir"].append(timed(lambda: export_bundle(a.engine, a.store, a.signer, r / "bundle", form="dir")))
        times["export tar"].append(timed(
            lambda: export_bundle(a.engine, a.store, a.signer, r / "bundle.tar", form="tar")))
        for form, path in (("dir", r / "bundle"), ("tar", r / "bundle.tar")):
            b = build_services(load(environ={"HUBGATE_DATA_DIR": str(r / f"b-{form}"), "HUBGATE_TRUSTED_KEYS": str(pub)}))
            trusted = load_trusted_keys(b.settings.trusted_keys)
            times[f"import {form}"].append(timed(lambda: import_bundle(b.engine, b.store, path, trusted=trusted)))
            b.engine.dispose()
        shutil.rmtree(r)
    base = total / statistics.median(times["copyfile"]) / 1e6
    print(f"snapshot: {total} bytes ({total / 2**30:.2f} GiB), {repeat} rounds, median; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'step':<12} {'seconds':>8} {'MB/s':>8} {'vs copyfile':>12}")
    for name, values in times.items():
        seconds = statistics.median(values)
        rate = total / seconds / 1e6
        print(f"{name:<12} {seconds:>8.2f} {rate:>8.0f} {rate / base:>11.2f}x")


if __name__ == "__main__":
    main()
