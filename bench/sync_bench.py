"""Sync throughput from the fake upstream (tests/fakes/fake_hub.py) over loopback, against the limits of the box.

Two repos: one big LFS file (1 GiB by default: the parallel-range path, 302 to the fake CDN; a valid
safetensors file, so the content scan passes it) and many small regular files (the per-file path: one
resolve GET, one stored blob each, their KnownBlob rows in batches). Each is synced by hubgate's own code
(a request, approve, ``Worker.run_once``, the content scan on) into a fresh data dir (SQLite + local
store). In every round the ceilings are measured next to the sync, so the ratios come from one run:

* hashing: sha256 + git sha1 (``mirror.digests.Hasher``, the two side by side) over memory;
* disk: writing the same number of bytes into the data dir's file system, then fsync, through the page cache
  and around it (O_DIRECT, as hubgate's local store writes big blobs); the faster of the two is the limit;
* the upstream read ceiling: the same file fetched from the same fake CDN with httpx as the syncer
  reads it (``--range-workers`` parallel 16 MiB ranges, 4 by default, as hubgate) and in one stream, bytes
  dropped; the ratio is given against the read as hubgate does it and against the faster of the two; and
  with hf_transfer (Rust, 4 and 8 ranges, written to disk), which hubgate could use instead, and the
  hashing that would follow it;
* for small files: bare GETs of the same files with 4 threads (the reference of issue 13), and with as many
  threads as the syncer has file workers when that differs. hubgate fetches many small files in child
  processes (HUBGATE_SYNC_FETCH_PROCESSES); their CPU counts as hubgate's, and they are started by an
  untimed sync first, as a long-running worker keeps them.

The fake hub runs in a child process (its own GIL), like a real upstream would. CPU seconds of both
processes are reported (busy cores = CPU s / wall s), and the CPU other processes used during each
timed run ("foreign cores": the box may be shared), with the load average.

Usage: .venv/bin/python bench/sync_bench.py [--big-mib 1024] [--range-workers 4] [--small-files 1000] [--small-kib 16]
                                            [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
BARE_THREADS = 4  # the small-file reference: bare GETs with 4 threads (issue 13)
BIG_REPO, SMALL_REPO = "bench/big", "bench/many-small"


def small_file(i: int, size: int) -> bytes:
    seed = hashlib.sha256(b"%d" % i).digest()
    return (seed * (size // len(seed) + 1))[:size]


# ----------------------------------------------------------------------------- the fake upstream (child process)


def serve_fake_hub(big_path: str, n_small: int, small_size: int, conn: Any) -> None:
    from fakes.fake_hub import FakeHub

    hub = FakeHub(page_size=1000).start()
    readme = b"---\nlicense: mit\n---\n# bench\n"
    hub.create_repo(BIG_REPO, {"README.md": readme, "model.safetensors": Path(big_path)})
    hub.create_repo(SMALL_REPO, {"README.md": readme,
                                 **{f"shards/{i // 500:03d}/part-{i:05d}.txt": small_file(i, small_size)
                                    for i in range(n_small)}})
    big = hub.repo(BIG_REPO).main.files["model.safetensors"]
    conn.send({"url": hub.url, "cdn_url": hub.cdn_url, "pid": os.getpid(), "big_sha256": big.sha256})
    conn.recv()  # "stop"
    hub.stop()


# ----------------------------------------------------------------------------- measurements


def cpu_of(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _fetcher_cpu(upstream_pid: int) -> dict[int, float]:
    """CPU seconds of hubgate's fetch processes (mirror/fetchpool.py: children started with "spawn")."""
    import psutil

    out = {}
    for p in psutil.Process().children():
        if p.pid == upstream_pid:  # the fake hub, also a spawned child
            continue
        try:
            if any("spawn_main" in part for part in p.cmdline()):
                t = p.cpu_times()
                out[p.pid] = float(t.user + t.system)
        except psutil.Error:
            continue
    return out


class Timed:
    def __init__(self, child_pid: int) -> None:
        self.child_pid = child_pid

    def __enter__(self) -> "Timed":
        self.t0, self.cpu0, self.child0 = time.perf_counter(), time.process_time(), cpu_of(self.child_pid)
        self.reaped0, self.fetchers0 = _reaped_cpu(), _fetcher_cpu(self.child_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        fetchers = _fetcher_cpu(self.child_pid)  # hubgate's fetch processes count as hubgate
        self.cpu = time.process_time() - self.cpu0 + sum(v - self.fetchers0.get(k, 0.0) for k, v in fetchers.items())
        self.child_cpu = cpu_of(self.child_pid) - self.child0
        # hubgate's own children that ended meanwhile: the sandboxed content scanner of a sync
        self.scan_cpu = _reaped_cpu() - self.reaped0

    def line(self, nbytes: int, label: str, extra: str = "") -> str:
        return (f"  {label:<46} {nbytes / self.wall / 1e6:8.1f} MB/s  {self.wall:6.2f} s  "
                f"cores: hubgate {self.cpu / self.wall:4.2f}, upstream {self.child_cpu / self.wall:4.2f}{extra}")


def _reaped_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def hash_rate(nbytes: int = 256 * MiB, chunk: int = 8 * MiB) -> float:
    from mirror.digests import Hasher

    block = os.urandom(chunk)
    h = Hasher(nbytes)
    t0 = time.perf_counter()
    for _ in range(nbytes // chunk):
        h.update(block)
    h.finish()
    return nbytes / (time.perf_counter() - t0)


def disk_rate(folder: Path, nbytes: int, *, direct: bool) -> float:
    from benchlib import disk_write_seconds

    return nbytes / disk_write_seconds(folder, nbytes, direct=direct)


def loopback_read(url: str, size: int, parts: int) -> None:
    """GET ``url`` and drop the bytes: one stream, or ``parts`` parallel ranges (like the syncer's)."""
    import httpx

    with httpx.Client(timeout=120, follow_redirects=True) as client:
        if parts <= 1:
            with client.stream("GET", url) as r:
                for _ in r.iter_raw(MiB):
                    pass
            return
        part = 16 * MiB
        bounds = [(s, min(s + part, size) - 1) for s in range(0, size, part)]

        def one(b: tuple[int, int]) -> int:
            with client.stream("GET", url, headers={"range": f"bytes={b[0]}-{b[1]}"}) as r:
                return sum(len(c) for c in r.iter_raw(MiB))

        with ThreadPoolExecutor(parts) as pool:
            assert sum(pool.map(one, bounds)) == size


def sync_once(upstream: str, cdn: str, data_dir: Path, repo: str, file_workers: int = 4,
              fetch_processes: int = 2, range_workers: int = 4) -> tuple[dict[str, Any], Any]:
    """A request for ``repo``, approved; returns the request and a worker ready to run it."""
    from api.admin.routes import submit_request
    from api.app import build_services, build_worker, settle_heap
    from api.settings import load
    from registry import workflow
    from registry.audit import Actor
    from registry.db import session_scope

    svc = build_services(load(environ={"HUBGATE_DATA_DIR": str(data_dir), "HUBGATE_UPSTREAM_URL": upstream,
                                       # the fake upstream and its CDN are on loopback
                                       "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true",
                                       "HUBGATE_UPSTREAM_REDIRECT_HOSTS": cdn.split("://", 1)[1],
                                       "HUBGATE_WORKER_IN_PROCESS": "false", "HUBGATE_LOG_LEVEL": "warning",
                                       "HUBGATE_SYNC_FILE_WORKERS": str(file_workers),
                                       "HUBGATE_SYNC_FETCH_PROCESSES": str(fetch_processes),
                                       "HUBGATE_SYNC_RANGE_WORKERS": str(range_workers),
                                       "HUBGATE_XET": "off"}))  # the plain sync, comparable with earlier runs
    settle_heap()  # as `hubgate worker` does once it has started
    actor = Actor("bench", "admin", "bench")
    req = submit_request(svc, "model", repo, "main", None, None, "bench", actor)
    with session_scope(svc.engine) as session:
        workflow.approve(session, req.pk, actor)
    return {"pk": req.pk, "svc": svc}, build_worker(svc)


class PhaseClock:
    """Times the phases of one Syncer.run (listing, fetching, publishing) by wrapping its steps."""

    def __init__(self) -> None:
        import mirror.sync as sync_module

        from mirror.scan.gate import Gate

        self.module, self.phases = sync_module, {}
        self._plan, self._publish = sync_module.Syncer.plan, sync_module.publish_manifest
        self._gate_class, self._enforce = Gate, Gate.enforce

    def __enter__(self) -> "PhaseClock":
        plan, publish, enforce, phases = self._plan, self._publish, self._enforce, self.phases

        def timed_enforce(gate: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return enforce(gate, *args, **kwargs)
            finally:
                phases["content scan (in publish)"] = time.perf_counter() - t0

        def timed_plan(syncer: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return plan(syncer, *args, **kwargs)
            finally:
                phases["list + plan"] = time.perf_counter() - t0
                phases["_fetch_start"] = time.perf_counter()

        def timed_publish(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            phases["fetch + verify + store"] = t0 - phases.pop("_fetch_start", t0)
            try:
                return publish(*args, **kwargs)
            finally:
                phases["publish (manifest, sign, DB)"] = time.perf_counter() - t0

        self.module.Syncer.plan = timed_plan  # type: ignore[method-assign]
        self.module.publish_manifest = timed_publish  # type: ignore[assignment]
        self._gate_class.enforce = timed_enforce  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.Syncer.plan = self._plan  # type: ignore[method-assign]
        self.module.publish_manifest = self._publish
        self._gate_class.enforce = self._enforce  # type: ignore[method-assign]

    def line(self) -> str:
        return "  phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.phases.items() if not k.startswith("_"))


def request_state(svc: Any, pk: int) -> tuple[str, str | None, int]:
    from sqlmodel import Session

    from registry import workflow

    with Session(svc.engine) as session:
        r = workflow.get(session, pk)
        return r.state, r.error, r.bytes_done


def write_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of ``size`` random bytes (one U8 tensor), written in 64 MiB blocks."""
    header_len = 128
    n = size - 8 - header_len
    header = f'{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}'.encode().ljust(header_len, b" ")
    block = os.urandom(64 * MiB)
    with open(path, "wb") as f:
        f.write(header_len.to_bytes(8, "little") + header)
        left = n
        while left:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def hf_transfer_download(url: str, dest: Path, size: int, parallel: int) -> tuple[float, float]:
    """(seconds to download ``url`` into ``dest`` with hf_transfer and fsync it, seconds to hash it after)."""
    import hf_transfer

    from mirror.digests import Hasher

    t0 = time.perf_counter()
    hf_transfer.download(url, str(dest), parallel, 16 * MiB, 0, 0)
    with open(dest, "rb") as f:
        os.fsync(f.fileno())
    download = time.perf_counter() - t0
    assert dest.stat().st_size == size
    t0 = time.perf_counter()
    h = Hasher(size)
    with open(dest, "rb", buffering=0) as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    h.finish()
    hashing = time.perf_counter() - t0
    dest.unlink()
    return download, hashing


class Runs:
    """Timed runs with the CPU other processes used meanwhile (benchlib.ForeignLoad) and the load average."""

    def __init__(self, budget: float) -> None:
        from benchlib import ForeignLoad

        self.fl = ForeignLoad(threshold=0.3, per_run_wait=30.0, budget=budget)

    def timed(self, fn: Any, child_pid: int) -> dict[str, Any]:
        with self.fl.guard() as g, Timed(child_pid) as t:
            fn()
        return {"seconds": t.wall, "hubgate_cores": t.cpu / t.wall, "upstream_cores": t.child_cpu / t.wall,
                "scanner_cores": t.scan_cpu / t.wall, "foreign_cores": round(g.cores, 2),
                "loadavg": round(os.getloadavg()[0], 2)}


def big_round(args: Any, info: dict[str, Any], work: Path, runs: Runs, r: int) -> dict[str, Any]:
    size = args.big_mib * MiB
    cdn = f"{info['cdn_url']}/cdn/{info['big_sha256']}"
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    out["hash_MBps"] = hash_rate() / 1e6
    out["disk_buffered_MBps"] = disk_rate(work, size, direct=False) / 1e6
    out["disk_direct_MBps"] = disk_rate(work, size, direct=True) / 1e6
    out["disk_MBps"] = max(out["disk_buffered_MBps"], out["disk_direct_MBps"])  # what the disk can take
    for parts in sorted({1, args.range_workers}):
        run = runs.timed(lambda: loopback_read(cdn, size, parts), info["pid"])
        out[f"httpx_{parts}_MBps"] = size / run["seconds"] / 1e6
        out[f"httpx_{parts}_run"] = run
    for parallel in (4, 8):
        download, hashing = hf_transfer_download(cdn, work / "hf_transfer.bin", size, parallel)
        out[f"hf_transfer_{parallel}_MBps"] = size / download / 1e6
        out[f"hf_transfer_{parallel}_then_hash_MBps"] = size / (download + hashing) / 1e6
    meta, worker = sync_once(info["url"], info["cdn_url"], work / f"data-big-{r}", BIG_REPO,
                             range_workers=args.range_workers)
    with PhaseClock() as phases:
        run = runs.timed(worker.run_once, info["pid"])
    state, error, _ = request_state(meta["svc"], meta["pk"])
    if state != "available":
        raise RuntimeError(f"the big sync ended {state}: {error}")
    out.update(sync_MBps=size / run["seconds"] / 1e6, sync_run=run,
               phases={k: round(v, 3) for k, v in phases.phases.items() if not k.startswith("_")})
    # The upstream read, two ways: with hubgate's number of parallel ranges (with 1 range worker hubgate asks
    # for its 16 MiB ranges one after the other; the reference is then the single stream, which is at least as
    # fast) and the faster of that and one stream (on a small box one stream can beat parallel ranges: less
    # Python per byte, no GIL contention).
    n = args.range_workers
    as_hubgate = f"upstream read (httpx, {n} ranges)" if n > 1 else "upstream read (httpx, 1 stream)"
    limits = {"disk write + fsync": out["disk_MBps"], "hashing": out["hash_MBps"], as_hubgate: out[f"httpx_{n}_MBps"]}
    out["limit"], out["limit_MBps"] = min(limits.items(), key=lambda kv: kv[1])
    out["ratio"] = out["sync_MBps"] / out["limit_MBps"]
    fastest = max(out["httpx_1_MBps"], out[f"httpx_{n}_MBps"])
    out["ratio_fastest_read"] = out["sync_MBps"] / min(out["disk_MBps"], out["hash_MBps"], fastest)
    meta["svc"].close()
    meta["svc"].engine.dispose()
    shutil.rmtree(work / f"data-big-{r}", ignore_errors=True)
    out["round_seconds"] = time.perf_counter() - t0
    return out


def small_round(args: Any, info: dict[str, Any], work: Path, runs: Runs, r: int) -> dict[str, Any]:
    import httpx

    n, size = args.small_files, args.small_kib * 1024
    urls = [f"{info['url']}/{SMALL_REPO}/resolve/main/shards/{i // 500:03d}/part-{i:05d}.txt" for i in range(n)]
    local = threading.local()

    def get(url: str) -> int:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        return len(local.client.get(url).content)

    def bare(threads: int) -> None:
        local.__dict__.clear()
        with ThreadPoolExecutor(threads) as pool:
            assert sum(pool.map(get, urls)) == n * size

    # The reference is the issue's: bare GETs with 4 threads. When hubgate has another number of downloads in
    # flight, bare GETs with that many threads too.
    out: dict[str, Any] = {"bare": runs.timed(lambda: bare(BARE_THREADS), info["pid"])}
    out["bare_files_per_s"] = n / out["bare"]["seconds"]
    if args.file_workers != BARE_THREADS:
        out["bare_same"] = runs.timed(lambda: bare(args.file_workers), info["pid"])
        out["bare_same_files_per_s"] = n / out["bare_same"]["seconds"]
    meta, worker = sync_once(info["url"], info["cdn_url"], work / f"data-small-{r}", SMALL_REPO, args.file_workers,
                             args.fetch_processes)
    with PhaseClock() as phases:
        run = runs.timed(worker.run_once, info["pid"])
    state, error, _ = request_state(meta["svc"], meta["pk"])
    if state != "available":
        raise RuntimeError(f"the small-file sync ended {state}: {error}")
    out.update(sync=run, sync_files_per_s=(n + 1) / run["seconds"],
               phases={k: round(v, 3) for k, v in phases.phases.items() if not k.startswith("_")})
    out["ratio"] = out["sync_files_per_s"] / out["bare_files_per_s"]
    if "bare_same_files_per_s" in out:
        out["ratio_same"] = out["sync_files_per_s"] / out["bare_same_files_per_s"]
    meta["svc"].close()
    meta["svc"].engine.dispose()
    shutil.rmtree(work / f"data-small-{r}", ignore_errors=True)
    return out


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    import statistics

    return statistics.median(r[key] for r in rounds)


def report(res: dict[str, Any]) -> list[str]:
    lines = [f"# sync bench, {res['cores']} cores, load {res['loadavg_start']} at start, {res['loadavg_end']} at end; "
             f"median of {len(res['big']) or len(res['small'])} rounds (min-max); MB = 10^6 bytes"]
    big = res["big"]
    if big:
        def row(label: str, key: str) -> str:
            vals = [r[key] for r in big]
            return f"  {label:<52} {_median(big, key):8.0f} MB/s  ({min(vals):.0f}-{max(vals):.0f})"

        n = res["range_workers"]
        lines += [f"\none {res['big_mib']} MiB LFS file ({n} range workers x 16 MiB parts, content scan on)",
                  row("hashing: sha256 + git sha1 side by side", "hash_MBps"),
                  row("disk: write + fsync, through the page cache", "disk_buffered_MBps"),
                  row("disk: write + fsync, O_DIRECT (as hubgate writes big blobs)", "disk_direct_MBps"),
                  row("upstream read: httpx, 1 stream, dropped", "httpx_1_MBps"),
                  *([row(f"upstream read: httpx, {n} x 16 MiB ranges, dropped", f"httpx_{n}_MBps")] if n > 1 else []),
                  row("hf_transfer, 4 ranges, to disk + fsync", "hf_transfer_4_MBps"),
                  row("hf_transfer, 8 ranges, to disk + fsync", "hf_transfer_8_MBps"),
                  row("hf_transfer, 4 ranges, then hashing the file", "hf_transfer_4_then_hash_MBps"),
                  row("hf_transfer, 8 ranges, then hashing the file", "hf_transfer_8_then_hash_MBps"),
                  row("hubgate sync (verified, stored, scanned, published)", "sync_MBps")]
        ratios = [r["ratio"] for r in big]
        lines.append(f"  sync / min(disk, hashing, upstream read): {_median(big, 'ratio'):.2f} (per round "
                     + ", ".join(f"{x:.2f} of {r['limit']}" for x, r in zip(ratios, big)) + ")")
        lines.append(f"  sync / min(disk, hashing, the faster of the two upstream reads): "
                     f"{_median(big, 'ratio_fastest_read'):.2f} (per round "
                     + ", ".join(f"{r['ratio_fastest_read']:.2f}" for r in big) + ")")
        for r in big:
            run = r["sync_run"]
            lines.append(f"    round: sync {r['sync_MBps']:.0f} MB/s, hubgate {run['hubgate_cores']:.2f} cores, upstream "
                         f"{run['upstream_cores']:.2f}, other processes {run['foreign_cores']:.2f}, load "
                         f"{run['loadavg']}; phases {r['phases']}")
    small = res["small"]
    if small:
        def rate(label: str, key: str) -> str:
            return (f"  {label:<32} {_median(small, key):8.0f} files/s  "
                    f"({min(r[key] for r in small):.0f}-{max(r[key] for r in small):.0f})")

        def ratio(label: str, key: str) -> str:
            return f"  {label}: {_median(small, key):.2f} (per round " + ", ".join(f"{r[key]:.2f}" for r in small) + ")"

        lines += [f"\n{res['small_files']} files of {res['small_kib']} KiB ({res['file_workers']} file workers, "
                  f"{res['fetch_processes']} fetch processes)",
                  rate(f"bare GETs, {BARE_THREADS} threads", "bare_files_per_s")]
        same = "bare_same_files_per_s" in small[0]
        if same:
            lines.append(rate(f"bare GETs, {res['file_workers']} threads", "bare_same_files_per_s"))
        lines += [rate("hubgate sync", "sync_files_per_s"), ratio(f"sync / bare GETs ({BARE_THREADS} threads)", "ratio")]
        if same:
            lines.append(ratio(f"sync / bare GETs ({res['file_workers']} threads)", "ratio_same"))
        for r in small:
            run = r["sync"]
            lines.append(f"    round: hubgate {run['hubgate_cores']:.2f} cores (its scanner {run['scanner_cores']:.2f}), "
                         f"upstream {run['upstream_cores']:.2f}, other processes {run['foreign_cores']:.2f}, load "
                         f"{run['loadavg']}; bare GETs: client {r['bare']['hubgate_cores']:.2f} cores, upstream "
                         f"{r['bare']['upstream_cores']:.2f}; phases {r['phases']}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--small-kib", type=int, default=16)
    parser.add_argument("--file-workers", type=int, default=8, help="HUBGATE_SYNC_FILE_WORKERS for the small files")
    parser.add_argument("--fetch-processes", type=int, default=2,
                        help="HUBGATE_SYNC_FETCH_PROCESSES: child processes for the small files (0: threads only)")
    parser.add_argument("--range-workers", type=int, default=4,
                        help="HUBGATE_SYNC_RANGE_WORKERS for the big file (hubgate's default: 4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--quiet-budget", type=float, default=300.0,
                        help="seconds the run may spend waiting for other processes to calm down")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "sync_bench.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))

    work = Path(tempfile.mkdtemp(prefix="hubgate-sync-bench-", dir=args.dir))
    ctx = mp.get_context("spawn")
    parent, child_end = ctx.Pipe()
    child = None
    res: dict[str, Any] = {"cores": os.cpu_count(), "loadavg_start": round(os.getloadavg()[0], 2), "big_mib": args.big_mib,
                           "range_workers": args.range_workers,
                           "small_files": args.small_files, "small_kib": args.small_kib,
                           "file_workers": args.file_workers, "fetch_processes": args.fetch_processes,
                           "big": [], "small": []}
    try:
        write_safetensors(work / "big.bin", args.big_mib * MiB)
        child = ctx.Process(target=serve_fake_hub, args=(str(work / "big.bin"), args.small_files,
                                                         args.small_kib * 1024, child_end), daemon=True)
        child.start()
        info = parent.recv()
        runs = Runs(args.quiet_budget)
        if not args.skip_small and args.fetch_processes:
            # A worker starts its fetch processes once, at its first sync with many small files, and keeps
            # them: an untimed sync first, so the rounds measure the steady state.
            meta, worker = sync_once(info["url"], info["cdn_url"], work / "data-warmup", SMALL_REPO, args.file_workers,
                                     args.fetch_processes)
            worker.run_once()
            meta["svc"].close()
            shutil.rmtree(work / "data-warmup", ignore_errors=True)
        for r in range(args.rounds):
            if not args.skip_big:
                res["big"].append(big_round(args, info, work, runs, r))
                print(f"round {r}: big sync {res['big'][-1]['sync_MBps']:.0f} MB/s, ratio {res['big'][-1]['ratio']:.2f} "
                      f"({res['big'][-1]['limit']})", flush=True)
            if not args.skip_small:
                res["small"].append(small_round(args, info, work, runs, r))
                print(f"round {r}: small sync {res['small'][-1]['sync_files_per_s']:.0f} files/s, ratio "
                      f"{res['small'][-1]['ratio']:.2f}", flush=True)
        res["loadavg_end"] = round(os.getloadavg()[0], 2)
        lines = report(res)
        print("\n".join(lines))
        res["summary"] = lines
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(res, indent=2, default=str))
        print(f"[written {args.output}]")
        return 0
    finally:
        if child is not None:
            try:
                parent.send("stop")
            except OSError:
                pass
            child.join(15)
            if child.is_alive():
                child.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
