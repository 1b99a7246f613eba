"""What access control costs on the hot path: HEAD /{repo}/resolve/main/{file} requests/s and latency
with a gated repo + a granted token + the rate limits on, against a public repo with the limits off.

    .venv/bin/python bench/access_bench.py [--n 20000] [--conns 64] [--rounds 3]

Two ``hubgate serve`` processes (1 uvicorn worker each, the same data imported into each), measured in
interleaved rounds (on, off, off, on, ...) by ``hey`` (else a small keep-alive HTTP/1.1 client on uvloop),
the same token on both. "on": the repo is gated and the token granted (every request takes the access decision),
the rate limits are set so high they never refuse but every request spends from its address's and its
token's buckets. "off": no visibility row, every limit 0. Everything stays on 127.0.0.1; both servers are
stopped (by PID) at the end. Writes bench/results/access_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HUBGATE = Path(sys.executable).with_name("hubgate")
REPO = "acme/bench-head"
FILE = "model.safetensors"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(HUBGATE), *args], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"hubgate {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def _env(data: Path, on: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBGATE_", "HF_"))}
    env |= {"HUBGATE_DATA_DIR": str(data), "HUBGATE_WORKER_IN_PROCESS": "false", "HUBGATE_LOG_LEVEL": "warning",
            "HUBGATE_UPSTREAM_URL": ""}
    big = str(10**12)  # on: every request spends from the buckets, none is ever refused
    for name in ("AUTH_FAILURES_PER_MINUTE", "REQUESTS_PER_HOUR", "HUB_READS_PER_MINUTE_PER_ADDRESS",
                 "HUB_READS_PER_MINUTE_PER_TOKEN"):
        env[f"HUBGATE_RATE_LIMIT_{name}"] = big if on else "0"
    return env


def _prepare(base: Path, on: bool, folder: Path) -> tuple[dict[str, str], str]:
    data = base / ("on" if on else "off")
    env = _env(data, on)
    _run(env, "import", str(folder), "--repo", REPO)
    token = _run(env, "token", "create", "--role", "reader", "--name", "bench").strip().splitlines()[-1]
    if on:
        _run(env, "repos", "set-visibility", REPO, "gated")
        _run(env, "grants", "add", REPO, "--token", token.split("_")[1])
    return env, token


def _safetensors(floats: int) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, 4 * floats]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + os.urandom(4 * floats)


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = env | {"HUBGATE_PORT": str(port)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(HUBGATE), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def _worker(port: int, request: bytes, count: int, latencies: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")  # HEAD: headers only
            latencies.append(time.perf_counter() - t0)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _load(port: int, token: str, n: int, conns: int) -> dict[str, Any]:
    request = (f"HEAD /{REPO}/resolve/main/{FILE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {token}\r\nUser-Agent: access-bench\r\n\r\n").encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    per = n // conns
    started = time.perf_counter()
    await asyncio.gather(*(_worker(port, request, per, latencies, statuses) for _ in range(conns)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"n": len(latencies), "rps": len(latencies) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "statuses": statuses}


def _hey(port: int, token: str, n: int, conns: int) -> dict[str, Any]:
    """``hey -n N -c C -m HEAD`` with the token (Go, about a core of its own: a lower bound, comparable within a run)."""
    import re

    url = f"http://127.0.0.1:{port}/{REPO}/resolve/main/{FILE}"
    argv = [shutil.which("hey") or "hey", "-n", str(n), "-c", str(conns), "-m", "HEAD", "-t", "10",
            "-H", f"Authorization: Bearer {token}", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"hey failed: {out[-500:]}")
    lat = {p: re.search(rf"\s{p}%+ in ([\d.]+) secs", out) for p in ("50", "99")}
    codes = {int(k): int(v) for k, v in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    return {"n": n, "rps": float(rps.group(1)), "statuses": codes,
            **{f"p{p}_ms": float(m.group(1)) * 1e3 if m else float("nan") for p, m in lat.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="HEAD requests per timed run")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="on/off pairs, interleaved")
    ap.add_argument("--client", choices=["hey", "python"], default="hey" if shutil.which("hey") else "python",
                    help="load generator (default: hey when installed)")
    a = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    base = Path(tempfile.mkdtemp(prefix="hubgate-access-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        folder = base / "repo"
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "gpt2"}\n')
        (folder / FILE).write_bytes(_safetensors(1 << 18))  # valid, or the content scan would block it
        servers = {}
        for name, on in (("on", True), ("off", False)):
            env, token = _prepare(base, on, folder)
            proc, port = _serve(env, base / f"{name}.log")
            procs.append(proc)
            servers[name] = (port, token)
        for name, (port, token) in servers.items():  # warm-up: connections, caches, lazy imports
            warm = asyncio.run(_load(port, token, 2000, a.conns))
            assert set(warm["statuses"]) == {200}, (name, warm["statuses"])
        runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        order = []
        for i in range(a.rounds):
            order += ["on", "off"] if i % 2 == 0 else ["off", "on"]
        for name in order:
            port, token = servers[name]
            r = _hey(port, token, a.n, a.conns) if a.client == "hey" else asyncio.run(_load(port, token, a.n, a.conns))
            runs[name].append(r)
            print(f"  {name:>3}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                  f"{r['statuses']}", flush=True)
        summary = {name: {"rps_median": statistics.median(r["rps"] for r in rs),
                          "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
                          "p99_ms_median": statistics.median(r["p99_ms"] for r in rs)} for name, rs in runs.items()}
        ratio = summary["on"]["rps_median"] / summary["off"]["rps_median"]
        print(f"on/off requests/s (medians): {ratio:.3f}; p99 on {summary['on']['p99_ms_median']:.2f} ms, "
              f"off {summary['off']['p99_ms_median']:.2f} ms")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "access_bench.json").write_text(json.dumps(
            {"args": vars(a), "runs": runs, "summary": summary, "ratio_rps": ratio}, indent=2) + "\n")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
