#!/usr/bin/env python3
"""Fan-out: 1, 8, 64 and 256 clients downloading the same 1 GiB file at once from one hubgate replica.

usage: .venv/bin/python bench/fanout_bench.py [--size-mib 1024] [--clients 1,8,64,256] [--seconds 8]
                                              [--rounds 2] [--workers 1,2] [--skip-s3]

Servers, each a real subprocess on 127.0.0.1, measured level by level in turn (interleaved, so drift on a
shared box hits all alike):

* nginx (Debian nginx-light, 1 worker, ``sendfile on``) serving the very blob file of hubgate's local store:
  the reference;
* ``hubgate serve`` on that local store, with 1 uvicorn worker and with 2 (one replica either way);
* S3 redirect: ``hubgate serve`` over Ceph RGW (a single-node cluster, tests/helpers/rgw.py) with
  ``HUBGATE_S3_SERVE=redirect``: clients follow its 302 to a presigned URL (``curl -L``), so hubgate answers
  one request per client and the bytes come from RGW; next to it, the same presigned GET straight from RGW.

A level starts N ``curl -o /dev/null`` processes at once; each downloads the whole file or stops after
``--seconds`` (so 256 clients of 1 GiB stay bounded). Reported per level: aggregate MB/s (bytes received by
all clients / the level's wall time), p50/p99 time to first byte (curl's ``time_starttransfer``, the redirect
included for ``-L``), the server's busy cores, and its RSS (whole process tree, every 50 ms) over its idle
RSS. The CPU other processes used during each level and the load average are recorded. Results:
bench/results/fanout_bench.json and a table. Everything is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import (HOST, MiB, ForeignLoad, RssSampler, Server, install_cleanup, loadavg,  # noqa: E402
                      stop_all)
from serve_bench import FNAME, REPO, hubgate_argv, hubgate_env, make_file, nginx_server  # noqa: E402

RESULTS = BENCH_DIR / "results" / "fanout_bench.json"
CURL_FMT = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size = args.size_mib * MiB
        self.tmp = Path(tempfile.mkdtemp(prefix="hubgate-fanout-", dir=args.tmp_dir))
        os.chmod(self.tmp, 0o755)  # nginx's workers (not root) read the store
        self.src = self.tmp / "src"
        self.logs = RESULTS.parent / "fanout_bench-logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.fl = ForeignLoad(threshold=0.3, per_run_wait=30.0, budget=args.quiet_budget, retries=0)


def fleet(url: str, n: int, seconds: float, follow: bool, server: Server | None) -> dict[str, Any]:
    """``n`` curls of ``url`` at once, each cut after ``seconds``; the aggregate and the server's cost."""
    argv = ["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", CURL_FMT, "--max-time", str(seconds),
            *(["-L"] if follow else []), url]
    rss = RssSampler(server.pid) if server is not None else None
    cpu0 = server.cpu() if server is not None else 0.0
    t0 = time.perf_counter()
    with rss if rss is not None else _nothing():
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(n)]
        outs = [p.communicate(timeout=seconds + 60)[0].split() for p in procs]
    wall = time.perf_counter() - t0
    cpu = (server.cpu() - cpu0) / wall if server is not None else None
    codes = [int(o[0]) for o in outs if o]
    sizes = [int(o[1]) for o in outs if o]
    ttfb = sorted(float(o[2]) for o in outs if o and int(o[1]) > 0)
    # 0: curl gave up (--max-time) before an answer; 302 with -L: hubgate answered but the store sent no byte in time
    allowed = (0, 200, 206, 302) if follow else (0, 200, 206)
    if not ttfb or any(c not in allowed for c in codes) or (follow and any(c == 302 and s > 0 for c, s in zip(codes, sizes))):
        raise RuntimeError(f"{url}: unexpected answers {sorted(set(codes))}")
    out = {"clients": n, "MBps": sum(sizes) / wall / 1e6, "wall_s": wall, "complete": sum(s == sizes[0] for s in sizes),
           "no_byte_in_time": (len(outs) - len(codes)) + sizes.count(0),
           "ttfb_p50_ms": 1e3 * ttfb[len(ttfb) // 2], "ttfb_p99_ms": 1e3 * ttfb[min(len(ttfb) - 1, int(len(ttfb) * 0.99))],
           "server_cores": cpu}
    if rss is not None:
        out.update(rss.result())
    return out


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def start_rgw(ctx: Ctx) -> tuple[Any, Any]:
    from helpers.rgw import RgwCluster, missing_tools

    why = missing_tools()
    if why:
        raise RuntimeError(why)
    cluster = RgwCluster(ctx.tmp)
    endpoint = cluster.acquire("fanout-bench")
    return cluster, endpoint


def hubgate_import(env: dict[str, str], src: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([*hubgate_argv(), "import", str(src), "--repo", REPO], env=env, check=True, capture_output=True,
                   timeout=1800)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--clients", default="1,8,64,256")
    ap.add_argument("--seconds", type=float, default=8.0, help="a client stops after this long (bounded load)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", default="1,2", help="uvicorn workers of the local-store replica, one server each")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--quiet-budget", type=float, default=300.0)
    ap.add_argument("--tmp-dir", default=None)
    a = ap.parse_args()
    levels = [int(x) for x in a.clients.split(",")]
    install_cleanup()
    ctx = Ctx(a)
    res: dict[str, Any] = {"benchmark": "fanout_bench", "size_mib": a.size_mib, "seconds": a.seconds,
                           "loadavg_start": loadavg(), "levels": levels, "runs": []}
    rgw = None
    try:
        print(f"[setup] {a.size_mib} MiB file, hubgate import ...", flush=True)
        sha = make_file(ctx.src / FNAME, ctx.size)
        res["sha256"] = sha
        local_env = hubgate_env(ctx.tmp / "data-local", HUBGATE_LOG_LEVEL="warning")
        res["import_s"] = hubgate_import(local_env, ctx.src)
        blob = ctx.tmp / "data-local" / "store" / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha
        os.chmod(ctx.tmp / "data-local", 0o755)
        servers: list[tuple[str, str, bool, Server | None]] = []
        nginx = nginx_server_for(ctx, blob.parent)
        servers.append(("nginx", f"http://{HOST}:{nginx.port}/{sha}", False, nginx))
        for w in [int(x) for x in a.workers.split(",")]:
            hub = hubgate(ctx, f"hubgate-local-w{w}", local_env, HUBGATE_WORKERS=str(w))
            servers.append((f"hubgate local ({w} worker{'s' if w > 1 else ''})",
                            f"http://{HOST}:{hub.port}/{REPO}/resolve/main/{FNAME}", False, hub))
        if not a.skip_s3:
            rgw, endpoint = start_rgw(ctx)
            bucket = f"fanout-{uuid.uuid4().hex[:8]}"
            endpoint.client().create_bucket(Bucket=bucket)
            s3_env = hubgate_env(ctx.tmp / "data-s3", HUBGATE_LOG_LEVEL="warning", HUBGATE_STORAGE="s3",
                                 HUBGATE_S3_BUCKET=bucket, HUBGATE_S3_ENDPOINT_URL=endpoint.origin,
                                 HUBGATE_S3_ACCESS_KEY_ID=endpoint.access_key,
                                 HUBGATE_S3_SECRET_ACCESS_KEY=endpoint.secret_key, HUBGATE_S3_SERVE="redirect")
            res["import_s3_s"] = hubgate_import(s3_env, ctx.src)
            hub = hubgate(ctx, "hubgate-s3-redirect", s3_env)
            from mirror.storage import layout

            presigned = endpoint.client().generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": layout.blob_key(sha)}, ExpiresIn=24 * 3600)
            servers.append(("RGW presigned GET (direct)", presigned, False, None))
            servers.append(("hubgate S3 redirect -> RGW", f"http://{HOST}:{hub.port}/{REPO}/resolve/main/{FNAME}", True,
                            hub))
        for name, url, follow, srv in servers:  # warm: the first request's lazy work is not a client's wait
            subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-r", "0-1023", *(["-L"] if follow else []),
                            url], check=True, timeout=60)
        idle = {name: (srv.rss() if srv is not None else 0) for name, _, _, srv in servers}
        for r in range(a.rounds):
            for n in levels:
                for name, url, follow, srv in servers:
                    with ctx.fl.guard() as g:
                        run = fleet(url, n, a.seconds, follow, srv)
                    run.update(server=name, round=r, foreign_cores=round(g.cores, 2), loadavg=loadavg(),
                               rss_idle_mib=round(idle[name] / MiB, 1))
                    res["runs"].append(run)
                    print(f"  {name:<34} {n:4d} clients {run['MBps']:8.0f} MB/s  ttfb p99 {run['ttfb_p99_ms']:8.1f} ms  "
                          f"no byte within {a.seconds:.0f} s: {run['no_byte_in_time']}  "
                          f"rss +{run.get('rss_peak_mib', 0) - run['rss_idle_mib']:.0f} MiB  "
                          f"other processes {run['foreign_cores']} cores", flush=True)
        res["loadavg_end"] = loadavg()
        lines = summary(res, [s[0] for s in servers])
        res["summary"] = lines
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2, default=str))
        print("\n".join(lines))
        print(f"[written {RESULTS}]")
        return 0
    finally:
        stop_all()
        if rgw is not None:
            rgw.release("fanout-bench")
        shutil.rmtree(ctx.tmp, ignore_errors=True)


def nginx_server_for(ctx: Ctx, root: Path) -> Server:
    class _A:  # the bits of serve_bench's Ctx that nginx_server reads
        tmp, logs = ctx.tmp, ctx.logs

    return nginx_server(_A, "sendfile", root).start()  # type: ignore[arg-type]


def hubgate(ctx: Ctx, name: str, env: dict[str, str], **extra: str) -> Server:
    from benchlib import free_port

    port = free_port()
    return Server(name, [*hubgate_argv(), "serve", "--host", HOST, "--port", str(port)], port, env={**env, **extra},
                  cwd=str(ctx.tmp), log_dir=ctx.logs).start()


def summary(res: dict[str, Any], names: list[str]) -> list[str]:
    lines = [f"# fan-out: one {res['size_mib']} MiB file, N clients at once (each stops after {res['seconds']} s); "
             f"medians of {max(r['round'] for r in res['runs']) + 1} rounds; load {res['loadavg_start']} -> "
             f"{res['loadavg_end']}",
             f"{'server':<34} {'clients':>7} {'MB/s':>8} {'vs nginx':>8} {'TTFB p50':>9} {'p99 ms':>8} {'cores':>6} "
             f"{'RSS +MiB':>8}"]
    for n in res["levels"]:
        base = statistics.median(r["MBps"] for r in res["runs"] if r["server"] == "nginx" and r["clients"] == n)
        for name in names:
            runs = [r for r in res["runs"] if r["server"] == name and r["clients"] == n]
            mbps = statistics.median(r["MBps"] for r in runs)
            cores = [r["server_cores"] for r in runs if r["server_cores"] is not None]
            rss = [r["rss_peak_mib"] - r["rss_idle_mib"] for r in runs if "rss_peak_mib" in r]
            lines.append(f"{name:<34} {n:>7} {mbps:>8.0f} {mbps / base:>8.2f} "
                         f"{statistics.median(r['ttfb_p50_ms'] for r in runs):>9.1f} "
                         f"{statistics.median(r['ttfb_p99_ms'] for r in runs):>8.1f} "
                         f"{(statistics.median(cores) if cores else float('nan')):>6.2f} "
                         f"{(max(rss) if rss else float('nan')):>8.0f}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
