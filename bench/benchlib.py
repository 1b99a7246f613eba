"""Small helpers for hubgate's benchmarks: child servers, curl/hey runners, CPU and memory accounting.

Everything is loopback-only and bounded:
- servers are child processes in their own process group (``start_new_session``), bound to
  127.0.0.1, stopped by their PID (SIGTERM to the group, then SIGKILL) when the benchmark ends,
  fails or is interrupted (``stop_all`` runs from ``finally``, ``atexit`` and SIGTERM/SIGHUP);
- every load has a fixed count (one curl download, ``hey -n``) and a wall-clock cap.

The machine may be shared with other work, so every timed run records the CPU used by
processes outside this benchmark's own process tree ("foreign load"), and can first wait
(bounded) for the box to be quiet. Ideas and methods follow shared/research/perf-baselines.md.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

HOST = "127.0.0.1"
MiB = 1024 * 1024

# ----------------------------------------------------------------- statistics


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"n": 0}
    med = statistics.median(vals)
    return {
        "n": len(vals),
        "median": round(med, 3),
        "min": round(min(vals), 3),
        "max": round(max(vals), 3),
        "spread_pct": round(100 * (max(vals) - min(vals)) / med, 1) if med else None,
        "values": [round(v, 3) for v in vals],
    }


def med(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# ----------------------------------------------------------------- CPU accounting


def sys_busy() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine, monotonic time) from /proc/stat (irq/softirq included)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / hz, time.monotonic()


def busy_cores(start: tuple[float, float]) -> float:
    b, t = sys_busy()
    return (b - start[0]) / max(t - start[1], 1e-6)


def children_cpu() -> float:
    """CPU seconds of this process's terminated, waited-for children (curl, hey, clients)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_procs(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu(pid: int) -> float:
    total = 0.0
    for q in tree_procs(pid):
        with contextlib.suppress(psutil.Error):
            t = q.cpu_times()
            total += t.user + t.system
    return total


def tree_rss(pid: int) -> int:
    total = 0
    for q in tree_procs(pid):
        with contextlib.suppress(psutil.Error):
            total += q.memory_info().rss
    return total


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.before = tree_rss(pid)
        self.peak = self.before
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = tree_rss(self.pid)
            self.samples += 1
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.after = tree_rss(self.pid)

    def result(self) -> dict[str, Any]:
        return {"rss_before_mib": round(self.before / MiB, 1), "rss_peak_mib": round(self.peak / MiB, 1),
                "rss_after_mib": round(self.after / MiB, 1),
                "rss_growth_mib": round((self.peak - self.before) / MiB, 1), "samples": self.samples}


# ----------------------------------------------------------------- foreign load


class ForeignLoad:
    """CPU used by processes outside this benchmark's tree.

    Before each timed run, ``guard()`` waits until they use < ``threshold`` cores (at most
    ``per_run_wait`` s, and only while the shared waiting ``budget`` lasts), then records what
    they used during the run. ``measure(fn)`` also redoes a run they disturbed (used more than
    ``threshold`` cores during it), up to ``retries`` times while the budget lasts.
    """

    def __init__(self, threshold: float = 0.2, per_run_wait: float = 300.0, budget: float = 1200.0,
                 retries: int = 2) -> None:
        self.threshold, self.per_run_wait, self.retries = threshold, per_run_wait, retries
        self.budget = budget
        self.readings: list[float] = []
        self.waited_s = 0.0
        self.gave_up = 0
        self.redone = 0
        self.disturbed_kept = 0

    def budget_left(self) -> float:
        return max(0.0, self.budget - self.waited_s)

    @staticmethod
    def _snapshot() -> tuple[dict[tuple[int, float], float], float]:
        me = psutil.Process()
        mine = {me.pid} | {c.pid for c in me.children(recursive=True)}
        snap: dict[tuple[int, float], float] = {}
        for p in psutil.process_iter(["pid", "create_time"]):
            if p.pid in mine:
                continue
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                snap[(p.pid, p.info["create_time"])] = t.user + t.system
        return snap, time.monotonic()

    @classmethod
    def cores_since(cls, start: tuple[dict[tuple[int, float], float], float]) -> float:
        snap0, t0 = start
        snap1, t1 = cls._snapshot()
        used = sum(max(0.0, v - snap0.get(k, 0.0)) for k, v in snap1.items())
        return used / max(t1 - t0, 1e-6)

    def measure_window(self, window: float = 2.0) -> float:
        s = self._snapshot()
        time.sleep(window)
        return self.cores_since(s)

    def wait_quiet(self, max_wait: float, window: float = 2.0, label: str = "") -> dict[str, Any]:
        """Block until foreign processes use < threshold cores over ``window`` s, at most ``max_wait`` s."""
        t0 = time.monotonic()
        seen: list[float] = []
        last_note = 0.0
        while True:
            c = self.measure_window(window)
            seen.append(c)
            waited = time.monotonic() - t0
            if c < self.threshold:
                ok = True
                break
            if waited >= max_wait:
                ok = False
                break
            if label and waited - last_note >= 30:
                last_note = waited
                print(f"  [{label}: other processes at {c:.2f} cores (> {self.threshold}); waited {waited:.0f}s of "
                      f"{max_wait:.0f}s; busiest: {busiest()}]", flush=True)
        spent = max(0.0, time.monotonic() - t0 - window)
        self.waited_s += spent
        return {"quiet": ok, "waited_s": round(spent, 1), "last_cores": round(c, 3),
                "readings": [round(x, 3) for x in seen[-10:]]}

    def guard(self) -> "_Guard":
        return _Guard(self)

    def measure(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` (one timed run) inside a guard; redo it if other processes disturbed it."""
        for attempt in range(self.retries + 1):
            with self.guard() as g:
                r = fn()
            r["foreign_cores"] = g.cores
            r["redone"] = attempt
            if g.cores < self.threshold:
                return r
            if attempt < self.retries and self.budget_left() > 0:
                self.redone += 1
                print(f"  [run disturbed: other processes used {g.cores:.2f} cores during it; redoing it]", flush=True)
                continue
            self.disturbed_kept += 1
            return r
        raise AssertionError("unreachable")


class _Guard:
    def __init__(self, fl: ForeignLoad) -> None:
        self.fl = fl
        self.cores = 0.0

    def __enter__(self) -> "_Guard":
        fl = self.fl
        w = fl.wait_quiet(min(fl.per_run_wait, fl.budget_left()), window=1.0, label="waiting before a run")
        if not w["quiet"]:
            fl.gave_up += 1
            print(f"  [busy box: other processes at {w['last_cores']:.2f} cores; measuring anyway]", flush=True)
        self.snap = fl._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cores = self.fl.cores_since(self.snap)
        self.fl.readings.append(self.cores)


def busiest(n: int = 3) -> str:
    """The n processes outside our tree with the most CPU over 0.5 s (for messages)."""
    me = psutil.Process()
    mine = {me.pid} | {c.pid for c in me.children(recursive=True)}
    procs = [p for p in psutil.process_iter(["pid", "name"]) if p.pid not in mine]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(0.5)
    use = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            use.append((p.cpu_percent(None) / 100, p.pid, p.info["name"]))
    use.sort(reverse=True)
    return ", ".join(f"{name}[{pid}] {c:.2f}" for c, pid, name in use[:n] if c > 0.01) or "-"


# ----------------------------------------------------------------- servers

_RUNNING: list["Server"] = []

# CPU pinning (``pin_cpus``): every Server under ``taskset -c SERVER``, every curl under ``taskset -c CLIENT``.
_PIN: dict[str, list[str]] = {"server": [], "client": []}


def pin_cpus(server_cpu: int, client_cpu: int) -> None:
    """Run servers and curl on fixed, different CPUs: fewer scheduler effects, less spread between runs.

    On a 2-core box an unpinned server and client sometimes share a core and sometimes not, which
    makes single runs bimodal. Pinning measures every server the same way; it is not how a
    production box runs, so unpinned runs stay the default.
    """
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("--pin needs taskset (util-linux)")
    _PIN["server"] = [taskset, "-c", str(server_cpu)]
    _PIN["client"] = [taskset, "-c", str(client_cpu)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with contextlib.suppress(OSError):
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout}s")


class Server:
    """A child server in its own process group, stopped by its PID.  ``with Server(...) as s:``"""

    def __init__(self, name: str, argv: list[str], port: int, *, env: dict[str, str] | None = None,
                 cwd: str | None = None, log_dir: Path, startup_timeout: float = 60.0) -> None:
        self.name, self.argv, self.port, self.cwd = name, argv, port, cwd
        self.env = env if env is not None else dict(os.environ)
        self.log_path = Path(log_dir) / f"{name}-{port}.log"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.cleanup_dirs: list[Path] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Server":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*_PIN["server"], *self.argv], stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.cwd, start_new_session=True)
        _RUNNING.append(self)
        try:
            wait_port(self.port, self.startup_timeout, self.proc)
        except Exception:
            self.stop()
            sys.stderr.write(self.log_tail())
            raise
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        return tree_cpu(self.pid) if self.proc else 0.0

    def rss(self) -> int:
        return tree_rss(self.pid) if self.proc else 0

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid  # == its process group id (start_new_session=True)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # stragglers left in its group (worker processes)
        self._log.close()
        self.proc = None
        if self in _RUNNING:
            _RUNNING.remove(self)
        for d in self.cleanup_dirs:
            shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_all() -> None:
    for s in list(reversed(_RUNNING)):
        with contextlib.suppress(Exception):
            s.stop()


def install_cleanup() -> None:
    """Stop every started server at exit and on SIGTERM/SIGHUP (Ctrl-C raises KeyboardInterrupt anyway)."""
    atexit.register(stop_all)

    def _on_signal(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


# ----------------------------------------------------------------- clients

CURL_FMT = "%{http_code} %{size_download} %{time_total} %{time_starttransfer}"


def curl_once(url: str, *, timeout: float, out: str = "/dev/null", extra: Sequence[str] = ()) -> dict[str, Any]:
    argv = [*_PIN["client"], "curl", "-sS", "--noproxy", "*", "-o", out, "-w", CURL_FMT, "--max-time", str(int(timeout)), *extra, url]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 15)
    if cp.returncode != 0:
        raise RuntimeError(f"curl failed rc={cp.returncode}: {cp.stderr.strip()} ({url})")
    code, size, total, ttfb = cp.stdout.strip().split()
    nbytes, seconds = int(size), float(total)
    return {"http_code": int(code), "bytes": nbytes, "seconds": seconds, "ttfb_s": float(ttfb),
            "MBps": nbytes / max(seconds, 1e-9) / 1e6}


def curl_head(url: str, timeout: float = 30) -> tuple[int, dict[str, str], float]:
    """HEAD via curl -I: (status, lower-cased headers, seconds)."""
    argv = ["curl", "-sS", "-I", "--noproxy", "*", "--max-time", str(int(timeout)), "-w", "\n%{time_total}", url]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
    if cp.returncode != 0:
        raise RuntimeError(f"curl -I failed rc={cp.returncode}: {cp.stderr.strip()}")
    lines = [ln.rstrip("\r") for ln in cp.stdout.splitlines()]
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, float(lines[-1])


def curl_sha256(url: str, timeout: float) -> str:
    """Download through curl into sha256sum (a correctness check outside the timed runs)."""
    p1 = subprocess.Popen(["curl", "-sS", "--noproxy", "*", "--max-time", str(int(timeout)), url], stdout=subprocess.PIPE)
    cp = subprocess.run(["sha256sum"], stdin=p1.stdout, capture_output=True, text=True, timeout=timeout + 15)
    p1.stdout.close()  # type: ignore[union-attr]
    if p1.wait(timeout=15) != 0:
        raise RuntimeError(f"curl failed for {url}")
    return cp.stdout.split()[0]




def hey(url: str, *, n: int, conns: int, method: str = "HEAD", timeout: float = 120) -> dict[str, Any]:
    """``hey -n N -c C -m METHOD``: bounded by count (-n), per-request timeout 10 s, wall cap ``timeout``."""
    argv = [shutil.which("hey") or "hey", "-n", str(n), "-c", str(conns), "-m", method, "-t", "10",
            "-disable-compression", url]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    out = cp.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if cp.returncode != 0 or not m:
        raise RuntimeError(f"hey failed rc={cp.returncode}: {cp.stderr[-500:]} {out[-500:]}")
    lat = {}
    for pct in ("50", "90", "99"):
        mm = re.search(rf"\s{pct}%+ in ([\d.]+) secs", out)
        lat[pct] = float(mm.group(1)) * 1e3 if mm else None
    codes = {int(k): int(v) for k, v in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = re.search(r"Error distribution:(.*)", out, re.S)
    total = re.search(r"Total:\s+([\d.]+) secs", out)
    return {"rps": float(m.group(1)), "p50_ms": lat["50"], "p90_ms": lat["90"], "p99_ms": lat["99"],
            "codes": codes, "errors": errors.group(1).strip()[:300] if errors else None,
            "seconds": float(total.group(1)) if total else None, "n": n, "conns": conns}


def raw_read(path: Path, chunk: int = 8 * MiB) -> dict[str, Any]:
    """Read a (page-cached) file into one reused buffer: the 'bytes off the page cache' anchor."""
    buf = bytearray(chunk)
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    dt = time.perf_counter() - t0
    return {"bytes": n, "seconds": dt, "MBps": n / dt / 1e6}


def disk_write_seconds(folder: Path, size: int, *, direct: bool = False) -> float:
    """Seconds to write ``size`` new bytes to a new file in ``folder`` and fsync it: through the page cache, or
    with ``direct`` around it (O_DIRECT from an aligned buffer, the last partial block buffered), as hubgate's
    local store writes a big blob. The disk's write limit is the faster of the two; on the project's VM the
    buffered copy costs 0.3-1.5 s of kernel CPU per GiB and its speed swings 4x from run to run."""
    import mmap

    block = mmap.mmap(-1, 8 * MiB)
    block.write(os.urandom(8 * MiB))
    path = folder / "disk-probe"
    os.sync()
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o644)
    try:
        left = size
        while left >= len(block) or (not direct and left):
            left -= os.write(fd, memoryview(block)[: min(left, len(block))])
        if left:  # direct: the aligned part, then the tail through the page cache
            aligned = left - left % 4096
            if aligned:
                left -= os.write(fd, memoryview(block)[:aligned])
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, memoryview(block)[:left])
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    path.unlink()
    block.close()
    return seconds


def tool_version(argv: list[str]) -> str | None:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (cp.stdout + cp.stderr).strip()
    return text.splitlines()[0] if text else None


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
