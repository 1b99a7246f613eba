#!/usr/bin/env python3
"""HEAD resolve rate of `hubgate serve` with metrics counting on and off (and with the access log at info).

usage: .venv/bin/python bench/metrics_bench.py [--n 20000] [--c 64] [--rounds 3]

Imports a one-file repo into a temp data dir, starts four `hubgate serve` processes on 127.0.0.1 (1 uvicorn
worker each; the same data): HUBGATE_METRICS=false (twice: the spread between two identical servers is the noise floor), HUBGATE_METRICS=true (access log off), and both on at
HUBGATE_LOG_LEVEL=info (the access log written to a file). Then `hey -n N -c C -m HEAD` on the resolve URL,
interleaved round by round so that load from elsewhere hits all three alike. Prints requests/s per round,
medians and the ratios to "metrics off". Servers are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HUBGATE = str(Path(sys.executable).with_name("hubgate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hey(url: str, n: int, c: int) -> float:
    out = subprocess.run(["hey", "-n", str(n), "-c", str(c), "-m", "HEAD", url], capture_output=True, text=True,
                         timeout=600).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--c", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("hey") is None:
        print("needs hey (apt-get install hey)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="hubgate-metrics-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        (tmp / "m").mkdir()
        (tmp / "m" / "config.json").write_text('{"a": 1}\n')
        base = {**os.environ, "HUBGATE_DATA_DIR": str(tmp / "data"), "HUBGATE_UPSTREAM_URL": "",
                "HUBGATE_WORKER_IN_PROCESS": "false", "HUBGATE_LOG_LEVEL": "warning"}
        subprocess.run([HUBGATE, "import", str(tmp / "m"), "--repo", "bench/m", "--quiet"], env=base, check=True,
                       capture_output=True)
        variants = {"metrics off": {"HUBGATE_METRICS": "false", "HUBGATE_ACCESS_LOG": "false"},
                    "metrics off (again)": {"HUBGATE_METRICS": "false", "HUBGATE_ACCESS_LOG": "false"},
                    "metrics on": {"HUBGATE_METRICS": "true", "HUBGATE_ACCESS_LOG": "false"},
                    "metrics + access log": {"HUBGATE_METRICS": "true", "HUBGATE_ACCESS_LOG": "true",
                                             "HUBGATE_LOG_LEVEL": "info"}}
        urls = {}
        for name, extra in variants.items():
            port = free_port()
            log = open(tmp / f"{name.replace(' ', '_')}.log", "wb")
            procs.append(subprocess.Popen([HUBGATE, "serve", "--port", str(port)], env={**base, **extra},
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            urls[name] = f"http://127.0.0.1:{port}/bench/m/resolve/main/config.json"
        for url in urls.values():
            for _ in range(300):
                try:
                    urllib.request.urlopen(url.replace("/bench/m/resolve/main/config.json", "/readyz"), timeout=2)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.2)
            hey(url, 2000, args.c)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in urls}
        names = list(urls)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # each variant goes first in turn
                rates[name].append(hey(urls[name], args.n, args.c))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()), flush=True)
        off = statistics.median(rates["metrics off"])
        for name, values in rates.items():
            ratios = [v / o for v, o in zip(values, rates["metrics off"])]
            print(f"{name:<22} median {statistics.median(values):7.0f} req/s  ratio to off {statistics.median(values) / off:5.2f}"
                  f"  (per round {min(ratios):.2f}-{max(ratios):.2f})")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
