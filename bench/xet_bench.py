"""Xet on vs off for a stock client, in one run, on 127.0.0.1 (issue 12).

For a 1 GiB and a 4 GiB safetensors file (``--sizes``), published once through ``hubgate import`` with
HUBGATE_XET=on (timed: the publish-time cost of the Xet build) and once with it off (plain import):

* ``hf_hub_download`` in a fresh interpreter and a fresh HF cache, with Xet (hf_xet: parallel range
  requests to hubgate's CAS) and with ``HF_HUB_DISABLE_XET=1`` (one plain HTTP stream read by Python):
  MB/s and the client's CPU (user+sys of the client process tree, in cores = CPU s / wall s);
* ``curl -o /dev/null`` of the plain resolve URL: the reference of what the server can send.

Runs are interleaved (xet, plain, curl, …) ``--runs`` times; medians are reported. Writes
bench/results/xet_bench.json and prints a table. Disk: two copies of each file in the stores plus one
in a client cache at a time (~15 GiB for the defaults); every temporary folder is removed at the end.

    .venv/bin/python bench/xet_bench.py                  # 1 GiB and 4 GiB, 3 runs
    .venv/bin/python bench/xet_bench.py --sizes 256 --runs 1   # quick (MiB)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
HUBGATE = str(Path(PY).with_name("hubgate"))
MiB = 1024 * 1024


def make_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of ``size`` bytes (one U8 tensor of random bytes), written in 64 MiB blocks."""
    header_len = 128
    n = size - 8 - header_len
    header = f'{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}'.encode().ljust(header_len, b" ")
    with open(path, "wb") as f:
        f.write(header_len.to_bytes(8, "little") + header)
        left = n
        while left:
            block = os.urandom(min(64 * MiB, left))
            f.write(block)
            left -= len(block)


def env_for(data: Path, xet: bool, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBGATE_", "HF_"))}
    env.update({"HUBGATE_DATA_DIR": str(data), "HUBGATE_XET": "on" if xet else "off", "HUBGATE_PORT": str(port),
                "HUBGATE_WORKER_IN_PROCESS": "false", "HUBGATE_UPSTREAM_URL": "", "HUBGATE_LOG_LEVEL": "warning",
                "HUBGATE_RATE_LIMIT_HUB_READS_PER_MINUTE_PER_ADDRESS": "0"})
    return env


def timed_import(folder: Path, repo: str, env: dict[str, str]) -> float:
    t = time.monotonic()
    subprocess.run([HUBGATE, "import", str(folder), "--repo", repo], env=env, check=True, capture_output=True,
                   timeout=3600)
    return time.monotonic() - t


CLIENT = r"""
import json, os, resource, sys, time
from huggingface_hub import hf_hub_download
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
c, t = cpu(), time.monotonic()  # after the imports: the download alone
p = hf_hub_download(sys.argv[1], "model.safetensors")
wall, used = time.monotonic() - t, cpu() - c
print("RESULT " + json.dumps({"wall": wall, "cpu": used, "size": os.path.getsize(p)}))
"""


def client_run(base: str, repo: str, home: Path, *, xet: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": base, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    t0 = time.monotonic()
    cp = subprocess.run([PY, "-c", CLIENT, repo], env=env, capture_output=True, text=True, timeout=3600)
    total = time.monotonic() - t0
    shutil.rmtree(home, ignore_errors=True)
    line = [x for x in cp.stdout.splitlines() if x.startswith("RESULT ")]
    if cp.returncode != 0 or not line:
        raise RuntimeError(cp.stderr[-3000:])
    r = json.loads(line[-1][7:])
    return {"MBps": r["size"] / r["wall"] / 1e6, "seconds": r["wall"], "client_cores": r["cpu"] / r["wall"],
            "client_cpu_s": r["cpu"], "process_s": total}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,4096", help="file sizes in MiB (comma-separated)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where the stores and files go (default: a temp folder)")
    ap.add_argument("--client-dir", default=None,
                    help="where the clients write (HF caches, curl's file); default /dev/shm when it has room, so "
                         "that this box's disk (~250 MB/s buffered) does not cap every client alike")
    args = ap.parse_args()
    benchlib.install_cleanup()
    work = Path(tempfile.mkdtemp(prefix="xet-bench-", dir=args.workdir))
    biggest = max(int(s) for s in args.sizes.split(",")) * MiB
    shm = Path("/dev/shm")
    default_client = shm if shm.is_dir() and shutil.disk_usage(shm).free > 2.5 * biggest else work
    client = Path(tempfile.mkdtemp(prefix="xet-bench-client-", dir=args.client_dir or default_client))
    results: dict[str, object] = {"sizes_mib": [], "runs": args.runs, "box": os.cpu_count()}
    try:
        for size_mib in [int(s) for s in args.sizes.split(",")]:
            results["sizes_mib"].append(size_mib)  # type: ignore[attr-defined]
            results[str(size_mib)] = run_size(work, client, size_mib, args.runs)
            print(json.dumps({size_mib: results[str(size_mib)]["summary"]}, indent=1), flush=True)
    finally:
        benchlib.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(client, ignore_errors=True)
    results["client_dir"] = str(client.parent)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "xet_bench.json").write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


def run_size(work: Path, client: Path, size_mib: int, runs: int) -> dict[str, object]:
    folder = work / f"src-{size_mib}"
    folder.mkdir()
    make_safetensors(folder / "model.safetensors", size_mib * MiB)
    (folder / "config.json").write_text('{"model_type": "bench"}')
    size = size_mib * MiB
    port_on, port_off = benchlib.free_port(), benchlib.free_port()
    env_on, env_off = env_for(work / f"on-{size_mib}", True, port_on), env_for(work / f"off-{size_mib}", False, port_off)
    t_plain = timed_import(folder, "bench/plain", env_off)
    t_xet = timed_import(folder, "bench/xet", env_on)
    shutil.rmtree(folder)  # the stores hold it now
    rec: dict[str, list[dict[str, float]]] = {"xet": [], "plain": [], "curl": [], "curl_file": []}
    with benchlib.Server("hubgate-xet", [HUBGATE, "serve"], port_on, env=env_on, log_dir=work / "logs") as srv_on, \
            benchlib.Server("hubgate-off", [HUBGATE, "serve"], port_off, env=env_off, log_dir=work / "logs") as srv_off:
        base_on, base_off = f"http://127.0.0.1:{port_on}", f"http://127.0.0.1:{port_off}"
        head = benchlib.curl_head(f"{base_on}/bench/xet/resolve/main/model.safetensors")[1]
        assert "x-xet-hash" in head, "the Xet build did not happen"
        client_run(base_on, "bench/xet", client / "warm", xet=True)  # warm the page cache and the servers
        url = f"{base_off}/bench/plain/resolve/main/model.safetensors"
        for _ in range(runs):
            rec["xet"].append(served(srv_on, lambda: client_run(base_on, "bench/xet", client / "hf-xet", xet=True)))
            rec["plain"].append(served(srv_off, lambda: client_run(base_off, "bench/plain", client / "hf-plain",
                                                                   xet=False)))
            rec["curl"].append(benchlib.curl_once(url, timeout=3600))
            rec["curl_file"].append(benchlib.curl_once(url, timeout=3600, out=str(client / "curl.out")))
            (client / "curl.out").unlink(missing_ok=True)
    summary = {
        "xet_MBps": benchlib.med([r["MBps"] for r in rec["xet"]]),
        "xet_client_cores": benchlib.med([r["client_cores"] for r in rec["xet"]]),
        "plain_MBps": benchlib.med([r["MBps"] for r in rec["plain"]]),
        "plain_client_cores": benchlib.med([r["client_cores"] for r in rec["plain"]]),
        "xet_server_cores": benchlib.med([r["server_cores"] for r in rec["xet"]]),
        "plain_server_cores": benchlib.med([r["server_cores"] for r in rec["plain"]]),
        "curl_MBps": benchlib.med([r["MBps"] for r in rec["curl"]]),
        "curl_file_MBps": benchlib.med([r["MBps"] for r in rec["curl_file"]]),
        "import_plain_MBps": size / t_plain / 1e6,
        "import_xet_MBps": size / t_xet / 1e6,
        "xet_build_MBps": size / max(t_xet - t_plain, 1e-9) / 1e6,
    }
    summary["xet_vs_plain"] = summary["xet_MBps"] / summary["plain_MBps"]  # type: ignore[operator]
    summary["xet_vs_curl"] = summary["xet_MBps"] / summary["curl_MBps"]  # type: ignore[operator]
    summary["xet_vs_curl_file"] = summary["xet_MBps"] / summary["curl_file_MBps"]  # type: ignore[operator]
    for d in (work / f"on-{size_mib}", work / f"off-{size_mib}"):
        shutil.rmtree(d, ignore_errors=True)
    return {"summary": summary, "runs": rec, "import_seconds": {"plain": t_plain, "xet": t_xet}}


def served(server: benchlib.Server, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``run``'s result plus the cores the server used meanwhile (its whole process tree)."""
    cpu0 = server.cpu()
    result = run()
    result["server_cores"] = (server.cpu() - cpu0) / result["process_s"]
    return result


def print_table(results: dict[str, object]) -> None:
    print(f"\nclients write to {results.get('client_dir')}")
    print("| file | Xet on MB/s (client, server cores) | Xet off MB/s (client, server cores) | curl MB/s: /dev/null, to a file | "
          "on/off | on/curl (/dev/null, file) | import plain MB/s | import with Xet MB/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in results["sizes_mib"]:  # type: ignore[attr-defined]
        s = results[str(size)]["summary"]  # type: ignore[index]
        print(f"| {size} MiB | {s['xet_MBps']:.0f} ({s['xet_client_cores']:.2f}, {s['xet_server_cores']:.2f}) | "
              f"{s['plain_MBps']:.0f} ({s['plain_client_cores']:.2f}, {s['plain_server_cores']:.2f}) | "
              f"{s['curl_MBps']:.0f}, {s['curl_file_MBps']:.0f} | "
              f"{s['xet_vs_plain']:.2f}x | {s['xet_vs_curl']:.0%}, {s['xet_vs_curl_file']:.0%} | "
              f"{s['import_plain_MBps']:.0f} | {s['import_xet_MBps']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
