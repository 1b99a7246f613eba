#!/usr/bin/env python3
"""hubgate serving benchmark: file throughput vs nginx and vs the object store, memory, HEAD rate.

usage: .venv/bin/python bench/serve_bench.py [--size-mib 1024] [--runs 5] [--quick]
                                             [--head-n 20000] [--head-rounds 3] [--skip-s3] [--skip-head]

One run measures, on 127.0.0.1 only:
 1. local store: a random SIZE file (generated once in a temp dir, deleted at the end) imported
    with `hubgate import`; `curl -o /dev/null` of GET /{repo}/resolve/main/{file} from
    `hubgate serve` (a real subprocess) vs nginx (Debian nginx-light, 1 worker, the same blob
    file of hubgate's store, `sendfile on` and `sendfile off`), and vs a bare Starlette
    StreamingResponse app (bench/apps/bare_stream.py, 8 MiB reads in the threadpool, same
    uvicorn options): the Python floor. Runs are interleaved (hubgate, bare, nginx sendfile,
    nginx no-sendfile, raw read) so drift hits all alike.
    Without nginx, the reference is a raw page-cache read of the file (and the output says so).
    Plus one `hf_hub_download` through hubgate, for context (the usual client's own ceiling).
 2. S3 store on moto (`moto_server` subprocess) and on Ceph RGW (a single-node cluster from
    ../shared/tools/start-rgw.sh, `--s3-backends`): curl through hubgate with HUBGATE_S3_SERVE=proxy
    vs curl of a presigned URL straight from the same store (the object-store-direct reference);
    then HUBGATE_S3_SERVE=redirect: a HEAD must answer 302 (timed) with the X-Linked-* headers.
 3. hubgate's RSS (psutil, its whole process tree, sampled every 50 ms) during every download.
 4. HEAD /{repo}/resolve/main/{file} requests/s at 64 connections with `hey -n N -c 64 -m HEAD`
    against hubgate vs a bare Starlette app (bench/apps/bare_head.py) sending the same headers,
    both uvicorn 1 worker, uvloop + httptools; p50/p99 latency. (wrk cannot do HEAD with a
    Content-Length: it waits for a body.)
Every timed run first waits (bounded) until processes outside this benchmark use < 0.2 cores,
and records what they used during the run. Results: a table on stdout and
bench/results/serve_bench.json. Servers run in their own process groups and are stopped by
PID at the end, on error and on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))

from benchlib import (HOST, MiB, ForeignLoad, RssSampler, Server, busy_cores, children_cpu, curl_head,  # noqa: E402
                      curl_once, curl_sha256, free_port, hey, install_cleanup, loadavg, med, raw_read, stop_all,
                      pin_cpus, summarize, sys_busy, tool_version)

VENV_BIN = Path(sys.executable).parent
PY = sys.executable
REPO = "bench/model"
FNAME = "model.safetensors"
BUCKET = "hubgate-bench"
RESULTS = BENCH_DIR / "results" / "serve_bench.json"

NGINX_CONF = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type application/octet-stream;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  {sendfile}
  keepalive_timeout 30;
  server {{
    listen {host}:{port};
    root {root};
    location / {{ }}
  }}
}}
"""
NGINX_MODES = {"sendfile": "sendfile on; tcp_nopush on;", "nosendfile": "sendfile off; output_buffers 2 512k;"}

HF_SNIPPET = r"""
import json, os, resource, sys, time
endpoint, repo, fname, cache = sys.argv[1:5]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
from huggingface_hub import hf_hub_download
c0, t0 = cpu(), time.perf_counter()
p = hf_hub_download(repo_id=repo, filename=fname, revision="main", cache_dir=cache, endpoint=endpoint)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "bytes": os.path.getsize(p), "cpu_s": cpu() - c0}))
"""


# ----------------------------------------------------------------- setup helpers


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size = args.size_mib * MiB
        self.tmp = Path(tempfile.mkdtemp(prefix="hubgate-bench-", dir=args.tmp_dir))
        os.chmod(self.tmp, 0o755)  # nginx workers (not root) must traverse into the store
        self.logs = args.output.parent / "serve_bench-logs"  # kept after the run (bench/results/ is git-ignored)
        shutil.rmtree(self.logs, ignore_errors=True)
        self.src = self.tmp / "src"
        self.fl = ForeignLoad(threshold=args.quiet_cores, per_run_wait=args.quiet_run_wait,
                              budget=args.quiet_budget, retries=args.redo)
        self.dl_timeout = max(120.0, self.size / 10e6)
        self.notes: list[str] = []
        self.sha256 = ""

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  NOTE: {text}", flush=True)


def make_file(path: Path, size: int) -> str:
    """A valid safetensors file of ``size`` bytes (one U8 tensor of random bytes: the content scan passes it);
    returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    header_len = 128
    n = size - 8 - header_len
    header = f'{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}'.encode().ljust(header_len, b" ")
    head = header_len.to_bytes(8, "little") + header
    left = size - len(head)
    with open(path, "wb") as f:
        h.update(head)
        f.write(head)
        while left:
            chunk = os.urandom(min(16 * MiB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def hubgate_argv() -> list[str]:
    exe = VENV_BIN / "hubgate"
    return [str(exe)] if exe.exists() else [PY, "-m", "api"]


def hubgate_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}
    # Xet off (the plain paths, comparable with earlier runs; the default is on): bench/xet_bench.py compares the two
    env.update({"HUBGATE_DATA_DIR": str(data_dir), "HUBGATE_XET": "off", **extra})
    return env


def hubgate_import(ctx: Ctx, env: dict[str, str], timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    cp = subprocess.run([*hubgate_argv(), "import", str(ctx.src), "--repo", REPO], env=env, cwd=str(ctx.tmp),
                        capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if cp.returncode != 0:
        raise RuntimeError(f"hubgate import failed ({cp.returncode}): {cp.stderr[-2000:]}")
    return {"seconds": round(seconds, 2), "MBps": round(ctx.size / seconds / 1e6, 1),
            "output": cp.stdout.strip().splitlines()[-1] if cp.stdout.strip() else ""}


def hubgate_server(ctx: Ctx, name: str, env: dict[str, str]) -> Server:
    port = free_port()
    return Server(name, [*hubgate_argv(), "serve", "--host", HOST, "--port", str(port)], port, env=env,
                  cwd=str(ctx.tmp), log_dir=ctx.logs)


def nginx_server(ctx: Ctx, mode: str, root: Path) -> Server:
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix=f"nginx-{mode}-", dir=ctx.tmp))
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, sendfile=NGINX_MODES[mode], host=HOST, port=port, root=root))
    srv = Server(f"nginx-{mode}", [shutil.which("nginx") or "nginx", "-p", str(prefix), "-c", str(conf),
                                   "-g", "daemon off;"], port, log_dir=ctx.logs)
    srv.cleanup_dirs.append(prefix)
    return srv


def uvicorn_argv(app: str, port: int) -> list[str]:
    """The options `hubgate serve` runs uvicorn with (1 worker; uvicorn picks uvloop + httptools when installed)."""
    return [PY, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--workers", "1", "--no-access-log", "--log-level", "info"]


def bare_stream_server(ctx: Ctx, path: Path) -> Server:
    apps = BENCH_DIR / "apps"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(apps), "BARE_FILE": str(path)}
    return Server("bare-stream", uvicorn_argv("bare_stream:app", port), port, env=env, cwd=str(apps), log_dir=ctx.logs)


def server_stack(srv: Server) -> dict[str, bool]:
    """Which event loop / HTTP parser the server process actually loaded (from its memory maps)."""
    try:
        maps = Path(f"/proc/{srv.pid}/maps").read_text()
    except OSError:
        return {}
    return {"uvloop": "uvloop" in maps, "httptools": "httptools" in maps}


def idle_cores(srv: Server, seconds: float = 3.0) -> float:
    c0, t0 = srv.cpu(), time.monotonic()
    time.sleep(seconds)
    return round((srv.cpu() - c0) / (time.monotonic() - t0), 4)


def blob_key(sha256: str) -> str:
    try:
        from mirror.storage import layout
        return layout.blob_key(sha256)
    except Exception:  # noqa: BLE001 - the layout documented in mirror/storage/layout.py
        return f"blobs/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def check_resolve_head(ctx: Ctx, url: str, expect_status: int = 200) -> dict[str, str]:
    status, headers, _ = curl_head(url)
    if status != expect_status:
        raise RuntimeError(f"HEAD {url}: {status}, expected {expect_status}")
    linked = headers.get("x-linked-etag", "").strip('"')
    if linked != ctx.sha256 or headers.get("x-linked-size") != str(ctx.size):
        raise RuntimeError(f"HEAD {url}: unexpected X-Linked-* headers {headers}")
    return headers


# ----------------------------------------------------------------- timed runs


def check_alive(servers: list[Server]) -> None:
    for srv in servers:
        if not srv.alive():
            code = srv.proc.returncode if srv.proc is not None else None
            raise RuntimeError(f"{srv.name} (pid {srv.pid if srv.proc else '?'}) is not running any more (exit code "
                               f"{code}); its log {srv.log_path} ends with:\n{srv.log_tail(1500)}")


def timed_download(ctx: Ctx, url: str, servers: list[Server], rss_of: Server | None = None,
                   extra: tuple[str, ...] = ()) -> dict[str, Any]:
    def once() -> dict[str, Any]:
        check_alive(servers)
        cpu0 = {s.name: s.cpu() for s in servers}
        c0, b0 = children_cpu(), sys_busy()
        sampler = RssSampler(rss_of.pid) if rss_of is not None else None
        with sampler if sampler is not None else contextlib.nullcontext():
            r = curl_once(url, timeout=ctx.dl_timeout, extra=extra)
        r["box_cores"] = busy_cores(b0)
        r["curl_cores"] = (children_cpu() - c0) / max(r["seconds"], 1e-9)
        r["server_cores"] = {s.name: (s.cpu() - cpu0[s.name]) / max(r["seconds"], 1e-9) for s in servers}
        if r["http_code"] != 200 or r["bytes"] != ctx.size:
            raise RuntimeError(f"GET {url}: HTTP {r['http_code']}, {r['bytes']} bytes (expected 200, {ctx.size})")
        if sampler is not None:
            r["rss"] = sampler.result()
        return r

    return ctx.fl.measure(once)


def timed_raw_read(ctx: Ctx, path: Path) -> dict[str, Any]:
    def once() -> dict[str, Any]:
        b0 = sys_busy()
        r = raw_read(path)
        r["box_cores"] = busy_cores(b0)
        return r

    return ctx.fl.measure(once)


def dl_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = summarize([r["MBps"] for r in runs])
    out["unit"] = "MB/s"
    out["box_cores"] = round(med([r["box_cores"] for r in runs]) or 0, 3)
    if runs and "server_cores" in runs[0]:
        out["server_cores"] = {k: round(med([r["server_cores"][k] for r in runs]) or 0, 3) for k in runs[0]["server_cores"]}
        out["curl_cores"] = round(med([r["curl_cores"] for r in runs]) or 0, 3)
    mbps = out.get("median") or 0
    out["box_core_s_per_GB"] = round(out["box_cores"] / (mbps / 1000), 3) if mbps else None
    out["foreign_cores"] = summarize([r["foreign_cores"] for r in runs])
    out["runs"] = runs
    return out


def paired_ratio(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str = "MBps") -> dict[str, Any]:
    """Ratio of medians, and the per-round ratios (runs were interleaved, so round i of a and b are neighbours)."""
    ma, mb = med([r[key] for r in a]), med([r[key] for r in b])
    per = [x[key] / y[key] for x, y in zip(a, b) if y[key]]
    s = summarize(per)
    return {"ratio_of_medians": round(ma / mb, 3) if ma and mb else None,
            "paired_median": s.get("median"), "paired_min": s.get("min"), "paired_max": s.get("max")}


def rss_summary(runs: list[dict[str, Any]], idle_rss: int) -> dict[str, Any]:
    peaks = [r["rss"]["rss_peak_mib"] for r in runs if "rss" in r]
    peak = max(peaks) if peaks else None
    return {"idle_rss_mib": round(idle_rss / MiB, 1), "peak_rss_mib": peak,
            "peak_growth_mib": round(peak - idle_rss / MiB, 1) if peak is not None else None,
            "samples": sum(r["rss"]["samples"] for r in runs if "rss" in r), "per_run_peak_mib": peaks}


# ----------------------------------------------------------------- 1. local store vs nginx (+ 3. RSS, 4. HEAD)


def interleaved_rounds(ctx: Ctx, targets: list[tuple[str, str, list[Server], Server | None]],
                       extra: tuple[str, Callable[[], dict[str, Any]]] | None = None,
                       ) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """One warm-up download per target (not in the stats; it counts for RSS), then ``runs`` rounds
    of every target in turn (plus ``extra`` last), so that drift hits all alike."""
    warm = {name: timed_download(ctx, u, srvs, rss_of) for name, u, srvs, rss_of in targets}
    runs: dict[str, list[dict[str, Any]]] = {t[0]: [] for t in targets}
    for i in range(ctx.args.runs):
        for name, u, srvs, rss_of in targets:
            runs[name].append(timed_download(ctx, u, srvs, rss_of))
        if extra is not None:
            runs.setdefault(extra[0], []).append(extra[1]())
        line = ", ".join(f"{name} {r[-1]['MBps']:.0f}" for name, r in runs.items())
        print(f"  run {i + 1}/{ctx.args.runs} MB/s: {line}  [foreign {runs[targets[0][0]][-1]['foreign_cores']:.2f} cores]",
              flush=True)
    return warm, runs


def bench_local(ctx: Ctx, res: dict[str, Any]) -> None:
    a = ctx.args
    data = ctx.tmp / "data-local"
    env = hubgate_env(data)
    print(f"[local] hubgate import of {a.size_mib} MiB ...", flush=True)
    out: dict[str, Any] = {"import": hubgate_import(ctx, env, timeout=max(300.0, ctx.size / 5e6))}
    res["local"] = out
    print(f"  {out['import']['output']}  ({out['import']['seconds']} s, {out['import']['MBps']} MB/s)", flush=True)
    store = data / "store"
    blob = store / blob_key(ctx.sha256)
    if not blob.exists() or blob.stat().st_size != ctx.size:
        raise RuntimeError(f"blob not found in the local store at {blob}")
    raw_read(blob)  # page cache: every server below reads this same file

    hub = hubgate_server(ctx, "hubgate-local", env).start()
    url = f"http://{HOST}:{hub.port}/{REPO}/resolve/main/{FNAME}"
    headers = check_resolve_head(ctx, url)
    out["server_stack"] = server_stack(hub)
    out["idle_cores"] = idle_cores(hub)
    idle_rss = hub.rss()
    print(f"  hubgate serve pid {hub.pid}: {out['server_stack']}, idle {out['idle_cores']} cores, "
          f"RSS {idle_rss / MiB:.0f} MiB", flush=True)
    got = curl_sha256(url, ctx.dl_timeout)
    out["sha256_ok"] = got == ctx.sha256
    if not out["sha256_ok"]:
        raise RuntimeError(f"hubgate served other bytes: sha256 {got} != {ctx.sha256}")

    servers: list[Server] = []
    targets: list[tuple[str, str, list[Server], Server | None]] = [("hubgate", url, [hub], hub)]
    if not a.skip_bare_stream:
        bare = bare_stream_server(ctx, blob).start()
        servers.append(bare)
        targets.append(("bare-starlette-stream", f"http://{HOST}:{bare.port}/{FNAME}", [bare], None))
    have_nginx = shutil.which("nginx") is not None
    out["nginx"] = tool_version(["nginx", "-v"]) if have_nginx else None
    if have_nginx:
        for mode in NGINX_MODES:
            srv = nginx_server(ctx, mode, store).start()
            servers.append(srv)
            targets.append((f"nginx-{mode}", f"http://{HOST}:{srv.port}/{blob_key(ctx.sha256)}", [srv], None))
    else:
        ctx.note("nginx not found (apt-get install -y nginx-light): the reference is a raw page-cache read of the "
                 "blob file, not an HTTP server")
    try:
        print("[local] warm-up downloads ...", flush=True)
        warm, runs = interleaved_rounds(ctx, targets, extra=("raw-read", lambda: timed_raw_read(ctx, blob)))
        out["downloads"] = {k: dl_summary(v) for k, v in runs.items()}
        ratios: dict[str, Any] = {}
        for name in list(runs):
            if name != "hubgate":
                ratios[f"hubgate/{name}"] = paired_ratio(runs["hubgate"], runs[name])
        out["ratios"] = ratios
        out["rss"] = rss_summary([warm["hubgate"], *runs["hubgate"]], idle_rss)
        out["rss"]["file_mib"] = a.size_mib
    finally:
        for s in servers:
            s.stop()

    if not a.skip_hf:
        out["hf_hub_download"] = hf_download(ctx, hub)
    if not a.skip_head:
        res["head"] = bench_head(ctx, hub, url, headers)
    hub.stop()
    if hub.log_tail().count("Traceback"):
        ctx.note(f"hubgate-local log has tracebacks: {hub.log_path}")


def hf_download(ctx: Ctx, hub: Server) -> dict[str, Any]:
    print("[local] hf_hub_download through hubgate (1 run) ...", flush=True)
    cache = ctx.tmp / "hf-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update({"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HOME": str(ctx.tmp / "hf-home"), "NO_PROXY": "*", "no_proxy": "*"})
    endpoint = f"http://{HOST}:{hub.port}"
    try:
        def once() -> dict[str, Any]:
            shutil.rmtree(cache, ignore_errors=True)
            check_alive([hub])
            s0, b0 = hub.cpu(), sys_busy()
            cp = subprocess.run([PY, "-c", HF_SNIPPET, endpoint, REPO, FNAME, str(cache)], env=env,
                                capture_output=True, text=True, timeout=ctx.dl_timeout * 3)
            box = busy_cores(b0)
            srv_cpu = hub.cpu() - s0
            if cp.returncode != 0:
                raise RuntimeError(cp.stderr[-1500:])
            r = json.loads(cp.stdout.strip().splitlines()[-1])
            if r["bytes"] != ctx.size:
                raise RuntimeError(f"hf_hub_download got {r['bytes']} bytes")
            return {"MBps": round(r["bytes"] / r["seconds"] / 1e6, 1), "seconds": round(r["seconds"], 2),
                    "client_cores": round(r["cpu_s"] / r["seconds"], 3),
                    "server_cores": round(srv_cpu / r["seconds"], 3), "box_cores": round(box, 3)}

        out = ctx.fl.measure(once)
        print(f"  hf_hub_download {out['MBps']} MB/s (client {out['client_cores']} cores)", flush=True)
        return out
    except Exception as exc:  # noqa: BLE001 - context only; the rest of the run goes on
        ctx.note(f"hf_hub_download failed: {exc}")
        return {"error": str(exc)[-1500:]}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(ctx.tmp / "hf-home", ignore_errors=True)


def bench_head(ctx: Ctx, hub: Server, url: str, headers: dict[str, str]) -> dict[str, Any]:
    a = ctx.args
    print(f"[head] hey -n {a.head_n} -c {a.head_conns} -m HEAD, {a.head_rounds} rounds ...", flush=True)
    if not shutil.which("hey"):
        ctx.note("hey not found (apt-get install -y hey): HEAD requests/s not measured")
        return {"error": "hey not installed"}
    apps = BENCH_DIR / "apps"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(apps)
    env["BARE_HEAD_HEADERS"] = json.dumps(sorted(headers.items()))
    port = free_port()
    bare = Server("bare-head", uvicorn_argv("bare_head:app", port), port, env=env, cwd=str(apps), log_dir=ctx.logs)
    out: dict[str, Any] = {"n": a.head_n, "conns": a.head_conns, "rounds": a.head_rounds}
    with bare:
        bare_url = f"http://{HOST}:{port}/{REPO}/resolve/main/{FNAME}"
        _, bare_headers, _ = curl_head(bare_url)
        skip = {"date", "server", "connection"}
        same = {k: v for k, v in headers.items() if k not in skip} == {k: v for k, v in bare_headers.items() if k not in skip}
        out["same_headers"] = same
        out["hubgate_headers"] = headers
        if not same:
            ctx.note(f"bare app headers differ from hubgate's: {bare_headers}")
        out["server_stack"] = {"hubgate": server_stack(hub), "bare": server_stack(bare)}
        commit = headers.get("x-repo-commit", "")
        targets = [("hubgate-main", url, hub), ("bare", bare_url, bare)]
        if commit:
            targets.append(("hubgate-commit", url.replace("/resolve/main/", f"/resolve/{commit}/"), hub))
        for _, u, _ in targets:
            hey(u, n=min(2000, a.head_n), conns=a.head_conns)  # warm-up: connections, caches, lazy imports
        runs: dict[str, list[dict[str, Any]]] = {t[0]: [] for t in targets}
        for i in range(a.head_rounds):
            line = []
            for name, u, srv in targets:
                def once(u: str = u, srv: Server = srv) -> dict[str, Any]:
                    check_alive([srv])
                    s0, b0 = srv.cpu(), sys_busy()
                    r = hey(u, n=a.head_n, conns=a.head_conns, timeout=a.head_timeout)
                    r["box_cores"] = busy_cores(b0)
                    r["server_cores"] = (srv.cpu() - s0) / r["seconds"] if r["seconds"] else None
                    return r

                r = ctx.fl.measure(once)
                bad = {c: k for c, k in r["codes"].items() if c != 200}
                if bad or r["errors"]:
                    ctx.note(f"HEAD {name}: non-200 answers {bad} errors {r['errors']}")
                runs[name].append(r)
                line.append(f"{name} {r['rps']:.0f} req/s (p99 {r['p99_ms'] or float('nan'):.1f} ms)")
                if bad or r["errors"]:
                    check_alive([srv])
            print(f"  round {i + 1}/{a.head_rounds}: " + ", ".join(line), flush=True)
    res: dict[str, Any] = {}
    for name, rs in runs.items():
        s = summarize([r["rps"] for r in rs])
        s["unit"] = "req/s"
        s["p50_ms"] = med([r["p50_ms"] for r in rs])
        s["p99_ms"] = med([r["p99_ms"] for r in rs])
        s["server_cores"] = med([r["server_cores"] for r in rs])
        s["box_cores"] = med([r["box_cores"] for r in rs])
        s["foreign_cores"] = summarize([r["foreign_cores"] for r in rs])
        s["runs"] = rs
        res[name] = s
    out["results"] = res
    out["ratios"] = {"hubgate-main/bare": paired_ratio(runs["hubgate-main"], runs["bare"], "rps")}
    if "hubgate-commit" in runs:
        out["ratios"]["hubgate-commit/bare"] = paired_ratio(runs["hubgate-commit"], runs["bare"], "rps")
    return out


# ----------------------------------------------------------------- 2. S3 (moto, Ceph RGW): proxy vs direct, redirect


@contextlib.contextmanager
def s3_backend(ctx: Ctx, backend: str) -> Any:
    """(endpoint, access key, secret key, the servers whose CPU counts) of a running S3 server: moto's
    ``moto_server`` subprocess, or Ceph RGW (a single-node cluster from ../shared/tools/start-rgw.sh)."""
    if backend == "moto":
        moto_bin = VENV_BIN / "moto_server"
        port = free_port()
        moto = Server("moto", [str(moto_bin) if moto_bin.exists() else "moto_server", "-H", HOST, "-p", str(port)],
                      port, log_dir=ctx.logs)
        with moto:
            yield f"http://{HOST}:{port}", "testing", "testing", [moto]
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.rgw import RgwCluster, missing_tools

    if missing_tools():
        raise RuntimeError(missing_tools())
    cluster = RgwCluster(ctx.tmp)
    endpoint = cluster.acquire("serve-bench")
    try:
        yield endpoint.origin, endpoint.access_key, endpoint.secret_key, []
    finally:
        cluster.release("serve-bench")


def bench_s3(ctx: Ctx, res: dict[str, Any], backend: str = "moto") -> None:
    with s3_backend(ctx, backend) as (endpoint, access_key, secret_key, s3_servers):
        _bench_s3(ctx, res, backend, endpoint, access_key, secret_key, s3_servers)


def _bench_s3(ctx: Ctx, res: dict[str, Any], backend: str, endpoint: str, access_key: str, secret_key: str,
              s3_servers: list[Server]) -> None:
    import boto3
    from botocore.config import Config

    a = ctx.args
    out: dict[str, Any] = {"backend": backend}
    res["s3" if backend == "moto" else f"s3_{backend}"] = out
    hub = None
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                      region_name="us-east-1",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket=BUCKET)
    s3_env = {"HUBGATE_STORAGE": "s3", "HUBGATE_S3_BUCKET": BUCKET, "HUBGATE_S3_ENDPOINT_URL": endpoint,
              "HUBGATE_S3_ACCESS_KEY_ID": access_key, "HUBGATE_S3_SECRET_ACCESS_KEY": secret_key,
              "HUBGATE_S3_REGION": "us-east-1"}
    data = ctx.tmp / f"data-s3-{backend}"
    print(f"[s3 {backend}] hubgate import of {a.size_mib} MiB ...", flush=True)
    out["import"] = hubgate_import(ctx, hubgate_env(data, **s3_env, HUBGATE_S3_SERVE="proxy"),
                                   timeout=max(900.0, ctx.size / 2e6))
    print(f"  {out['import']['output']}  ({out['import']['seconds']} s, {out['import']['MBps']} MB/s)", flush=True)
    key = blob_key(ctx.sha256)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    if int(head["ContentLength"]) != ctx.size:
        raise RuntimeError(f"S3 object {key} has {head['ContentLength']} bytes")
    direct_url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600)
    out["moto_version"] = _pkg_version("moto")

    try:
        hub = hubgate_server(ctx, "hubgate-s3-proxy", hubgate_env(data, **s3_env, HUBGATE_S3_SERVE="proxy")).start()
        url = f"http://{HOST}:{hub.port}/{REPO}/resolve/main/{FNAME}"
        check_resolve_head(ctx, url)
        out["idle_cores"] = idle_cores(hub)
        idle_rss = hub.rss()
        got = curl_sha256(url, ctx.dl_timeout)
        out["sha256_ok"] = got == ctx.sha256
        if not out["sha256_ok"]:
            raise RuntimeError(f"hubgate (S3 proxy) served other bytes: sha256 {got}")
        direct = f"{backend}-direct"
        targets = [("hubgate-proxy", url, [hub, *s3_servers], hub), (direct, direct_url, s3_servers, None)]
        print(f"[s3 {backend}] warm-up downloads ...", flush=True)
        warm, runs = interleaved_rounds(ctx, targets)
        out["downloads"] = {k: dl_summary(v) for k, v in runs.items()}
        out["ratios"] = {f"hubgate-proxy/{direct}": paired_ratio(runs["hubgate-proxy"], runs[direct])}
        out["rss"] = rss_summary([warm["hubgate-proxy"], *runs["hubgate-proxy"]], idle_rss)
        out["rss"]["file_mib"] = a.size_mib
        hub.stop()

        hub = hubgate_server(ctx, "hubgate-s3-redirect", hubgate_env(data, **s3_env, HUBGATE_S3_SERVE="redirect")).start()
        url = f"http://{HOST}:{hub.port}/{REPO}/resolve/main/{FNAME}"
        out["redirect"] = redirect_check(ctx, url, endpoint)
    finally:
        if hub is not None:
            hub.stop()


def redirect_check(ctx: Ctx, url: str, s3_endpoint: str) -> dict[str, Any]:
    print("[s3] redirect mode: HEAD ...", flush=True)
    status, headers, first = curl_head(url)
    def once() -> dict[str, Any]:
        return {"times": [curl_head(url)[2] for _ in range(5)]}

    timed = ctx.fl.measure(once)
    times = timed["times"]
    ok = (status == 302 and headers.get("location", "").startswith(s3_endpoint)
          and headers.get("x-linked-etag", "").strip('"') == ctx.sha256 and headers.get("x-linked-size") == str(ctx.size))
    # follow the Location for the first KiB: the presigned URL must work as handed out
    rr = curl_once(url, timeout=60, extra=("-L", "-r", "0-1023"))
    out = {"status": status, "ok": ok, "first_head_ms": round(first * 1e3, 2),
           "head_ms": summarize([t * 1e3 for t in times]), "location_host": headers.get("location", "")[:60],
           "x_linked_size": headers.get("x-linked-size"), "follow_range_code": rr["http_code"],
           "follow_range_bytes": rr["bytes"], "foreign_cores": round(timed["foreign_cores"], 3)}
    if not ok or rr["http_code"] != 206 or rr["bytes"] != 1024:
        ctx.note(f"redirect mode not as expected: status {status}, headers {headers}, follow {rr}")
    print(f"  HEAD -> {status} in {out['head_ms'].get('median', 0):.1f} ms (first {out['first_head_ms']} ms), "
          f"ranged GET via the Location -> {rr['http_code']}", flush=True)
    return out


# ----------------------------------------------------------------- report


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """The hubgate code measured: HEAD and whether the working tree differs from it (outside bench/)."""
    def git(*args: str) -> str:
        cp = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
        return cp.stdout.rstrip("\n") if cp.returncode == 0 else ""
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if ln[3:] and not ln[3:].startswith("bench/")]
    return {"head": git("rev-parse", "HEAD"), "head_subject": git("log", "-1", "--format=%s")[:120],
            "dirty_files": dirty}


def versions() -> dict[str, Any]:
    pk = {p: _pkg_version(p) for p in ("hubgate", "uvicorn", "uvloop", "httptools", "starlette", "fastapi",
                                       "huggingface_hub", "boto3", "moto", "psutil")}
    tools = {"nginx": tool_version(["nginx", "-v"]) if shutil.which("nginx") else None,
             "curl": tool_version(["curl", "--version"]),
             "hey": "hey (Debian)" if shutil.which("hey") else None}
    return {"python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "packages": pk, "tools": tools}


def fmt_range(s: dict[str, Any], digits: int = 0) -> str:
    if not s or not s.get("n"):
        return "n/a"
    f = f"{{:.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["median"])
    return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"


def fmt_ratio(r: dict[str, Any]) -> str:
    if not r or r.get("ratio_of_medians") is None:
        return "n/a"
    if r.get("paired_min") is not None and r["paired_min"] != r["paired_max"]:
        return f"{r['ratio_of_medians']:.2f} (per round {r['paired_min']:.2f}–{r['paired_max']:.2f})"
    return f"{r['ratio_of_medians']:.2f}"


def summary_lines(res: dict[str, Any]) -> list[str]:
    a = res["args"]
    L: list[str] = []
    w = 44
    L.append(f"hubgate serve benchmark — {a['size_mib']} MiB file, {a['runs']} runs each (+1 warm-up), "
             f"curl -o /dev/null, 127.0.0.1, median (min–max); MB = 10^6 bytes"
             + ("; servers pinned to CPU 0, curl to CPU 1" if a.get("pin") else ""))
    loc = res.get("local")
    if loc:
        L.append("")
        L.append(f"1. Local store (1 uvicorn worker; nginx 1 worker, same blob file)   "
                 f"[hubgate stack: {loc.get('server_stack')}]")
        L.append(f"  {'what':{w}s} {'MB/s':>22s}   srv cores  box cores  box core-s/GB")
        for name, d in loc.get("downloads", {}).items():
            sc = "-" if "server_cores" not in d else f"{sum(d['server_cores'].values()):.2f}"
            L.append(f"  {name:{w}s} {fmt_range(d):>22s}   {sc:>9s}  {d['box_cores']:9.2f}  {d['box_core_s_per_GB'] or 0:13.2f}")
        for k, r in loc.get("ratios", {}).items():
            L.append(f"  ratio {k:{w - 6}s} {fmt_ratio(r)}")
        hf = loc.get("hf_hub_download")
        if hf and "MBps" in hf:
            L.append(f"  {'hf_hub_download via hubgate (1 run)':{w}s} {hf['MBps']:>22.0f}   {hf['server_cores']:9.2f}  "
                     f"{hf['box_cores']:9.2f}   (client {hf['client_cores']:.2f} cores)")
        elif hf:
            L.append(f"  hf_hub_download: FAILED {hf.get('error', '')[:200]}")
        imp = loc["import"]
        L.append(f"  {'hubgate import (local store)':{w}s} {imp['MBps']:>22.0f}   ({imp['seconds']} s, hashing + write + fsync)")
        L.append(f"  hubgate idle CPU (in-process worker polling): {loc.get('idle_cores')} cores")
    for key, title in (("s3", f"moto {(res.get('s3') or {}).get('moto_version')} (a mock: its GET ceiling is "
                                  "~1.3 GB/s, PUT ~0.13 GB/s)"), ("s3_rgw", "Ceph RGW (a real S3 server: one "
                                                                           "memstore OSD, radosgw/beast)")):
        s3 = res.get(key)
        if s3:
            _s3_lines(L, s3, title, w)
    L.append("")
    L.append("3. hubgate RSS (process tree, sampled every 50 ms during each download incl. warm-up)")
    for label, sec in (("local store", loc), ("S3 proxy (moto)", res.get("s3")), ("S3 proxy (RGW)", res.get("s3_rgw"))):
        if sec and sec.get("rss"):
            r = sec["rss"]
            L.append(f"  {label:{w}s} idle {r['idle_rss_mib']:.0f} MiB -> peak {r['peak_rss_mib']:.0f} MiB "
                     f"(+{r['peak_growth_mib']:.0f} MiB while sending {r['file_mib']} MiB; {r['samples']} samples)")
    _head_and_footer_lines(L, res, w)
    return L


def _s3_lines(L: list[str], s3: dict[str, Any], title: str, w: int) -> None:
    if "downloads" in s3:
        L.append("")
        L.append(f"2. S3 store on {title}")
        for name, d in s3["downloads"].items():
            sc = ", ".join(f"{k} {v:.2f}" for k, v in d.get("server_cores", {}).items())
            L.append(f"  {name:{w}s} {fmt_range(d):>22s}   box {d['box_cores']:.2f} cores; {sc}")
        for k, r in s3.get("ratios", {}).items():
            L.append(f"  ratio {k:{w - 6}s} {fmt_ratio(r)}")
        imp = s3["import"]
        L.append(f"  {'hubgate import into ' + s3.get('backend', 'moto'):{w}s} {imp['MBps']:>22.0f}   ({imp['seconds']} s)")
        rd = s3.get("redirect")
        if rd:
            L.append(f"  {'redirect mode HEAD':{w}s} {rd['status']} in {fmt_range(rd['head_ms'], 2)} ms (first "
                     f"{rd['first_head_ms']} ms); X-Linked-Size {rd['x_linked_size']}; Location -> "
                     f"ranged GET {rd['follow_range_code']}; {'OK' if rd['ok'] else 'NOT OK'}")
    else:
        L.append("")
        L.append(f"2. S3 ({s3.get('backend', 'moto')}): FAILED {s3.get('error', '')[:300]}")


def _head_and_footer_lines(L: list[str], res: dict[str, Any], w: int) -> None:
    hd = res.get("head")
    if hd and "results" in hd:
        L.append("")
        L.append(f"4. HEAD resolve, hey -n {hd['n']} -c {hd['conns']}, {hd['rounds']} rounds, 1 uvicorn worker "
                 f"(uvloop+httptools); same headers: {hd['same_headers']}")
        L.append(f"  {'server':{w}s} {'req/s':>22s}   p50 ms   p99 ms  srv cores")
        for name, d in hd["results"].items():
            L.append(f"  {name:{w}s} {fmt_range(d):>22s}   {d['p50_ms'] or float('nan'):6.2f}   "
                     f"{d['p99_ms'] or float('nan'):6.2f}  "
                     f"{(d['server_cores'] or 0):9.2f}")
        for k, r in hd["ratios"].items():
            L.append(f"  ratio {k:{w - 6}s} {fmt_ratio(r)}")
    fl = res["foreign_load"]
    g0, g1 = res.get("git_start", {}), res.get("git_end", {})
    L.append("")
    L.append(f"hubgate code: {g0.get('head', '?')[:10]} {g0.get('head_subject', '')[:60]!r}"
             + (f", uncommitted changes in {len(g0['dirty_files'])} files" if g0.get("dirty_files") else ", clean tree")
             + ("" if g1.get("head") == g0.get("head") and g1.get("dirty_files") == g0.get("dirty_files")
                else f"; CHANGED during the run (now {g1.get('head', '?')[:10]}, {len(g1.get('dirty_files', []))} dirty)"))
    fc = fl["per_run_cores"]
    L.append(f"Foreign load (processes outside this benchmark) during timed runs: median {fc.get('median', 0):.2f}, "
             f"max {fc.get('max', 0):.2f} cores over {fc.get('n', 0)} runs; initial wait {fl['initial']['waited_s']}s "
             f"(quiet: {fl['initial']['quiet']}, {fl['initial']['last_cores']} cores); waited {fl['waited_s']:.0f}s in all; "
             f"measured on a busy box {fl['gave_up']}x; runs redone because disturbed {fl['redone']}x, disturbed runs "
             f"kept {fl['disturbed_kept']}x; loadavg start {fl['loadavg_start']} end {fl['loadavg_end']}")
    for n in res.get("notes", []):
        L.append(f"NOTE: {n}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=None, help="file size (default 1024; 128 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="timed downloads per server (default 5; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="development run: 128 MiB, 1 run, short HEAD rounds")
    ap.add_argument("--head-n", type=int, default=None, help="requests per hey round (default 20000; 4000 quick)")
    ap.add_argument("--head-rounds", type=int, default=None, help="hey rounds per server (default 3; 1 quick)")
    ap.add_argument("--head-conns", type=int, default=64)
    ap.add_argument("--head-timeout", type=float, default=120.0, help="wall-clock cap of one hey round (s)")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--s3-backends", default="moto,rgw", help="S3 servers for part 2: moto, rgw (Ceph RGW)")
    ap.add_argument("--skip-head", action="store_true")
    ap.add_argument("--skip-hf", action="store_true", help="skip the hf_hub_download context run")
    ap.add_argument("--skip-bare-stream", action="store_true",
                    help="skip the bare Starlette StreamingResponse reference (apps/bare_stream.py)")
    ap.add_argument("--quiet-cores", type=float, default=0.2, help="'quiet' = other processes below this many cores")
    ap.add_argument("--quiet-budget", type=float, default=None,
                    help="total time (s) the run may spend waiting for a quiet machine, before it starts and "
                         "between runs (default 1200; 60 with --quick)")
    ap.add_argument("--quiet-run-wait", type=float, default=300.0,
                    help="wait at most this long (s) for quiet before one timed run (within the budget)")
    ap.add_argument("--redo", type=int, default=2,
                    help="redo a timed run that other processes disturbed (> --quiet-cores) up to this many times")
    ap.add_argument("--pin", action="store_true",
                    help="run every server on CPU 0 and curl on CPU 1 (taskset): less spread between runs; "
                         "hey and hf_hub_download stay unpinned")
    ap.add_argument("--tmp-dir", default=None, help="where the temp folder goes (default: the system's)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp folder (file, stores, server logs)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    a = ap.parse_args()
    q = a.quick
    a.size_mib = a.size_mib or (128 if q else 1024)
    a.runs = a.runs or (1 if q else 5)
    a.head_n = a.head_n or (4000 if q else 20000)
    a.head_rounds = a.head_rounds or (1 if q else 3)
    a.quiet_budget = a.quiet_budget if a.quiet_budget is not None else (60.0 if q else 1200.0)
    if not shutil.which("curl"):
        sys.exit("curl is required")

    install_cleanup()
    if a.pin:
        pin_cpus(0, 1)
    ctx = Ctx(a)
    res: dict[str, Any] = {"benchmark": "serve_bench", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                           "command": " ".join([Path(sys.executable).name, *sys.argv]), "versions": versions(),
                           "git_start": git_state()}
    fl_info: dict[str, Any] = {"loadavg_start": loadavg(), "threshold_cores": a.quiet_cores}
    rc = 0
    try:
        print(f"[setup] {a.size_mib} MiB random file in {ctx.tmp} ...", flush=True)
        ctx.sha256 = make_file(ctx.src / FNAME, ctx.size)
        res["file"] = {"size": ctx.size, "sha256": ctx.sha256}
        print(f"[setup] waiting for a quiet machine (other processes < {a.quiet_cores} cores, at most "
              f"{a.quiet_budget:.0f} s); loadavg {loadavg()} ...", flush=True)
        fl_info["initial"] = ctx.fl.wait_quiet(a.quiet_budget, window=2.0, label="waiting")
        print(f"  quiet={fl_info['initial']['quiet']} after {fl_info['initial']['waited_s']} s "
              f"(other processes {fl_info['initial']['last_cores']} cores)", flush=True)
        bench_local(ctx, res)
        for backend in [] if a.skip_s3 else a.s3_backends.split(","):
            try:
                bench_s3(ctx, res, backend)
            except Exception as exc:  # noqa: BLE001 - report the local results even if the S3 part breaks
                ctx.note(f"S3 part ({backend}) failed: {exc!r}")
                res.setdefault("s3" if backend == "moto" else f"s3_{backend}", {"backend": backend})["error"] = \
                    repr(exc)[-2000:]
                rc = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        rc = 130
    except Exception as exc:  # noqa: BLE001 - keep what was measured, say what broke
        import traceback
        traceback.print_exc()
        ctx.note(f"run aborted: {exc!r}"[:3000])
        res["error"] = repr(exc)[-3000:]
        rc = 1
    finally:
        stop_all()
        fl_info.update({"loadavg_end": loadavg(), "per_run_cores": summarize(ctx.fl.readings),
                        "waited_s": round(ctx.fl.waited_s, 1), "gave_up": ctx.fl.gave_up,
                        "redone": ctx.fl.redone, "disturbed_kept": ctx.fl.disturbed_kept})
        res["foreign_load"] = fl_info
        res["git_end"] = git_state()
        res["notes"] = ctx.notes
        if a.keep_tmp:
            print(f"[kept {ctx.tmp}]")
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)
    if rc == 130:
        return rc
    fl_info.setdefault("initial", {"waited_s": 0, "quiet": None, "last_cores": None})
    try:
        lines = summary_lines(res)
    except Exception as exc:  # noqa: BLE001 - a partial run: the JSON still has everything
        lines = [f"(no summary table: {exc!r}; see the JSON)", *[f"NOTE: {n}" for n in ctx.notes]]
    res["summary"] = lines
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(res, indent=2, default=str))
    print()
    print("\n".join(lines))
    print(f"[written {a.output}]")
    return rc


if __name__ == "__main__":
    sys.exit(main())
