"""Ingest throughput for a 1 GiB snapshot on local storage: ``hubgate import`` of a folder, bundle export and
``import-bundle``, against the limits of the box measured in the same run.

Usage: python bench/bundle_bench.py [--size-mib 1024] [--repeat 3] [--dir /tmp]

One run measures, on the same disk and the same bytes: the limits, ``shutil.copyfile`` of the snapshot's
files, ``import_folder`` (what ``hubgate import`` runs) into a fresh local instance, ``export_bundle`` in
the folder and tar forms, and ``import_bundle`` of each into a fresh local instance; the content scan runs
in every import (its share is reported). The limits: the disk (writing the same number of new bytes,
then fsync, as an import must: the faster of through the page cache and around it with O_DIRECT, as
hubgate's local store writes big blobs) and hashing (sha256 and git sha1 side by side over memory, as the blob
store does); an import cannot beat min(disk, hashing). Each figure is the median of ``--repeat`` rounds;
every round writes to new files, so no step finds its output already in place. MB/s is 10^6 bytes per
second. The load average and the CPU other processes used are printed with every round.
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
sys.path.insert(0, str(ROOT / "bench"))

from api.app import build_services  # noqa: E402
from api.settings import load  # noqa: E402
from mirror import signing  # noqa: E402
from mirror.bundles import export_bundle, import_bundle, load_trusted_keys  # noqa: E402
from mirror.importer import import_folder  # noqa: E402
from registry.types import RepoRef  # noqa: E402

PLAIN = {"HUBGATE_XET": "off"}  # every instance without the Xet build (the default is on): comparable with earlier runs


def make_snapshot(folder: Path, size: int) -> int:
    """One big LFS file (a valid safetensors of random bytes, so nothing compresses and the content scan
    passes it) and a small config; returns the total size."""
    folder.mkdir(parents=True)
    chunk = os.urandom(16 * 1024 * 1024)
    header_len = 128
    n = size - 8 - header_len
    header = f'{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}'.encode().ljust(header_len, b" ")
    with open(folder / "model.safetensors", "wb") as f:
        f.write(header_len.to_bytes(8, "little") + header)
        left = n
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


def disk_seconds(folder: Path, size: int) -> float:
    """Seconds to write ``size`` new bytes to a new file in ``folder`` and fsync it (the disk's part of an import):
    the faster of writing through the page cache and around it (O_DIRECT, as hubgate writes big blobs)."""
    from benchlib import disk_write_seconds

    return min(disk_write_seconds(folder, size, direct=False), disk_write_seconds(folder, size, direct=True))


def hash_seconds(size: int) -> float:
    """Seconds to hash ``size`` bytes from memory as the blob store does (sha256 and git sha1 side by side)."""
    from mirror.digests import Hasher

    block = os.urandom(8 * 1024 * 1024)
    h = Hasher(size)
    t0 = time.perf_counter()
    left = size
    while left:
        n = min(left, len(block))
        h.update(block[:n] if n < len(block) else block)
        left -= n
    h.finish()
    return time.perf_counter() - t0


class GateClock:
    """Seconds the content gate (mirror.scan.gate.Gate.enforce) took, per import step."""

    def __init__(self) -> None:
        from mirror.scan.gate import Gate

        self.gate, self.real, self.seconds = Gate, Gate.enforce, 0.0

    def __enter__(self) -> "GateClock":
        real = self.real

        def timed(gate: object, *args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return real(gate, *args, **kwargs)  # type: ignore[arg-type]
            finally:
                self.seconds += time.perf_counter() - t0

        self.gate.enforce = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.enforce = self.real  # type: ignore[method-assign]


def run(work: Path, size: int, repeat: int) -> None:
    src = work / "src"
    total = make_snapshot(src, size)
    a = build_services(load(environ={"HUBGATE_DATA_DIR": str(work / "a"), **PLAIN}))
    import_folder(a.engine, a.store, src, RepoRef.parse("model", "bench/one-gib"), signer=a.signer)
    pub = work / "a.pub"
    pub.write_bytes(signing.public_pem(a.signer.private_key.public_key()))
    blobs = [a.store.local_path(sha) for sha in a.store.iter_digests()]
    steps = ("hubgate import", "export dir", "import dir", "export tar", "import tar")
    times: dict[str, list[float]] = {k: [] for k in ("hashing", "copyfile", *steps)}
    disk: dict[str, list[float]] = {k: [] for k in steps}  # the disk probe run just before each step
    gate: dict[str, list[float]] = {k: [] for k in ("hubgate import", "import dir", "import tar")}
    # On the project's VM, writing into memory the guest has not touched lately costs ~2.5 s per GiB of kernel
    # copy time (the host backs freed pages again on first touch), ten times what reusing just-freed pages
    # costs. So each step's output is deleted before the next step, and the disk is probed (write, fsync,
    # delete) right before each step: probe and step meet the same memory, and the ratio compares the two.
    for i in range(repeat):
        r = work / f"round{i}"
        (r / "copy").mkdir(parents=True)
        times["hashing"].append(hash_seconds(total))
        times["copyfile"].append(timed(lambda: [shutil.copyfile(p, r / "copy" / p.name) for p in blobs if p]))
        shutil.rmtree(r / "copy")
        c = build_services(load(environ={"HUBGATE_DATA_DIR": str(r / "c"), **PLAIN}))
        disk["hubgate import"].append(disk_seconds(r, total))
        with GateClock() as clock:
            times["hubgate import"].append(timed(lambda: import_folder(
                c.engine, c.store, src, RepoRef.parse("model", "bench/one-gib"), signer=c.signer)))
        gate["hubgate import"].append(clock.seconds)
        c.engine.dispose()
        shutil.rmtree(r / "c")
        for form, path in (("dir", r / "bundle"), ("tar", r / "bundle.tar")):
            disk[f"export {form}"].append(disk_seconds(r, total))
            times[f"export {form}"].append(timed(lambda: export_bundle(a.engine, a.store, a.signer, path, form=form)))
            b = build_services(load(environ={"HUBGATE_DATA_DIR": str(r / f"b-{form}"), "HUBGATE_TRUSTED_KEYS": str(pub),
                                             **PLAIN}))
            trusted = load_trusted_keys(b.settings.trusted_keys)
            disk[f"import {form}"].append(disk_seconds(r, total))
            with GateClock() as clock:
                times[f"import {form}"].append(timed(lambda: import_bundle(b.engine, b.store, path, trusted=trusted)))
            gate[f"import {form}"].append(clock.seconds)
            b.engine.dispose()
            shutil.rmtree(r / f"b-{form}")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"round {i}: load {os.getloadavg()[0]:.2f}; hashing {total / times['hashing'][-1] / 1e6:.0f} MB/s; " + ", ".join(
            f"{k} {total / times[k][-1] / 1e6:.0f} MB/s (disk just before {total / disk[k][-1] / 1e6:.0f}; "
            f"{max(disk[k][-1], times['hashing'][-1]) / times[k][-1]:.2f} of the limit)" for k in steps), flush=True)
        shutil.rmtree(r)
    print(f"snapshot: {total} bytes ({total / 2**30:.2f} GiB), {repeat} rounds, median; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'step':<16} {'seconds':>8} {'MB/s':>8} {'disk MB/s':>10} {'vs limit':>9} {'scan s':>7}   (limit: min(disk write+fsync "
          f"just before the step, hashing of the round))")
    for name, values in times.items():
        seconds = statistics.median(values)
        rate = total / seconds / 1e6
        if name in disk:
            limits = [max(d, h) for d, h in zip(disk[name], times["hashing"])]
            ratio = f"{statistics.median(lim / v for lim, v in zip(limits, values)):9.2f}"
            probe = f"{total / statistics.median(disk[name]) / 1e6:10.0f}"
        else:
            ratio, probe = f"{'':9}", f"{'':10}"
        scan = f"{statistics.median(gate[name]):7.2f}" if name in gate else ""
        print(f"{name:<16} {seconds:>8.2f} {rate:>8.0f} {probe} {ratio} {scan}")


if __name__ == "__main__":
    main()
