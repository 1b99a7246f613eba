"""Scanner throughput and worst cases under the default limits, against plain sha256 of the same file.

Usage: python bench/scan_bench.py [--dir /tmp] [--repeat 3] [--quick]

Files (written to a temp folder under ``--dir``, deleted at the end):

* a 1 GiB safetensors file (one U8 tensor of random bytes): only the header should be read;
* a ~512 MiB ``torch.save`` state dict (zip, 32 tensors of 16 MiB);
* the 20 MB opcode-heavy pickle of security.md T3 (a list of 10 M small ints);
* a crafted 40 MB pickle of BINPUT/BINGET pairs (opcodes the walker cannot batch);
* a ``torch.save`` of 100 000 tiny tensors.

Each scan runs ``scan_items`` on one file in a fresh process of this script (``--one``), so the time
includes starting the sandboxed child, and the peak RSS of that child is ``RUSAGE_CHILDREN``'s
``ru_maxrss`` there. sha256 reads the same file in 1 MiB chunks in this process. Figures are the
median of ``--repeat`` rounds; MB/s is 10^6 bytes per second of the file's size.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirror.scan import ScanContext, ScanItem, scan_items  # noqa: E402

MiB = 1 << 20


def write_random(path: Path, size: int, prefix: bytes = b"") -> None:
    chunk = os.urandom(16 * MiB)
    with open(path, "wb") as f:
        f.write(prefix)
        left = size
        while left:
            part = chunk[: min(left, len(chunk))]
            f.write(part)
            left -= len(part)
            chunk = chunk[1:] + chunk[:1]


def make_files(work: Path, quick: bool) -> dict[str, Path]:
    import torch

    files = {}
    size = (64 if quick else 1024) * MiB
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    files["safetensors 1 GiB" if not quick else "safetensors 64 MiB"] = p = work / "model.safetensors"
    write_random(p, size, struct.pack("<Q", len(header)) + header)
    n = 2 if quick else 32
    files[f"torch zip {n * 16} MiB"] = p = work / "pytorch_model.bin"
    torch.save({f"layer.{i}.weight": torch.rand(4 * MiB) for i in range(n)}, p)
    files["ops-heavy pickle 20 MB"] = p = work / "ops.pkl"
    p.write_bytes(pickle.dumps([i & 0x7F for i in range(10_000_000)], protocol=2))
    files["BINPUT/BINGET pickle 40 MB"] = p = work / "slow.pkl"
    p.write_bytes(b"\x80\x02N" + b"q\x00h\x00" * 10_000_000 + b".")  # tests/scan/corpus.py memo_heavy_pickle
    count = 10_000 if quick else 100_000
    files[f"torch.save {count} tensors"] = p = work / "many.pt"
    buf = io.BytesIO()
    torch.save({f"t{i}": torch.zeros(1) for i in range(count)}, buf)
    p.write_bytes(buf.getvalue())
    return files


def sha256_seconds(path: Path) -> float:
    started = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return time.perf_counter() - started


def scan_once(path: Path) -> dict[str, object]:
    """In a fresh process: scan one file through the sandbox with the default limits."""
    out = subprocess.run([sys.executable, __file__, "--one", str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def one(path: Path) -> None:
    item = ScanItem(path.name, "0" * 64, path.stat().st_size, str(path))
    started = time.perf_counter()
    (result,) = scan_items([item], ScanContext({item.path: item.size}))
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "in_child_ms": result.duration_ms, "rss": rss, "verdict": result.verdict,
                      "format": result.format, "rules": sorted({f.rule for f in result.findings})}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: the system temp folder)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small files, one round")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    work = Path(tempfile.mkdtemp(prefix="scan-bench-", dir=args.dir))
    try:
        run(make_files(work, args.quick), 1 if args.quick else args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(files: dict[str, Path], repeat: int) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {repeat}; default ScanLimits")
    print(f"{'file':<28} {'MB':>7} {'scan s':>8} {'in child ms':>11} {'MB/s':>8} {'sha256 s':>9} {'scan/sha':>9} "
          f"{'child RSS MiB':>13}  verdict")
    rows = {}
    for name, path in files.items():
        size = path.stat().st_size
        sha = statistics.median(sha256_seconds(path) for _ in range(repeat))
        scans = [scan_once(path) for _ in range(repeat)]
        secs = statistics.median(float(s["seconds"]) for s in scans)  # type: ignore[arg-type]
        child = statistics.median(float(s["in_child_ms"]) for s in scans) / 1000  # type: ignore[arg-type]
        rss = max(int(s["rss"]) for s in scans) / MiB  # type: ignore[call-overload]
        verdict = f"{scans[0]['verdict']} {scans[0]['format']} {','.join(scans[0]['rules'])}"  # type: ignore[arg-type]
        rows[name] = {"bytes": size, "scan_seconds": secs, "in_child_seconds": child, "sha256_seconds": sha,
                      "child_rss_mib": rss, "verdict": verdict}
        print(f"{name:<28} {size / 1e6:>7.0f} {secs:>8.3f} {child * 1000:>11.1f} {size / 1e6 / secs:>8.0f} {sha:>9.3f} "
              f"{secs / sha:>9.2f} {rss:>13.0f}  {verdict}")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "scan_bench.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
