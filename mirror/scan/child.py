"""The scan child: reads work as JSON lines on stdin, answers one JSON line per file on stdout.

Started by ``sandbox.py`` with an empty environment, isolated mode (``python -I``), its own session,
``nice 10``, no core dumps and no right to write files. The first line carries the limits and the
snapshot tree; each further line is one ``ScanItem``. Before each file the CPU limit is moved to
"CPU used so far + budget", so ``SIGXCPU`` ends the child on the file that overran; the address-space
limit turns runaway allocations into ``MemoryError``, answered as ``scan.memory``, after which the
child exits (its heap may be fragmented) and the parent starts a fresh one.

Protocol: ``{"limits": {...}, "tree": {...}}``, answered ``{"ready": true}`` once the child is set up
(so interpreter start-up never counts against a file's wall clock); then ``{"item": {...}}`` lines, each
answered ``{"result": FileScan.to_dict(), "exit": bool}``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from typing import Any

from .base import FileScan, ScanContext, ScanFinding, ScanItem
from .limits import ScanLimits
from .registry import scan_file


def _harden(limits: ScanLimits) -> None:
    os.nice(10)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # the scanner writes no files; pipes are not files
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))


def _cpu_budget(seconds: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))


def _answer(scan: FileScan, exit_after: bool) -> None:
    sys.stdout.write(json.dumps({"result": scan.to_dict(), "exit": exit_after}) + "\n")
    sys.stdout.flush()


def _scan_one(raw: dict[str, Any], ctx: ScanContext, limits: ScanLimits) -> tuple[FileScan, bool]:
    item = ScanItem(**raw)
    try:
        return scan_file(item, ctx, limits), False
    except MemoryError:
        scan = FileScan(path=item.path, sha256=item.sha256, size=item.size, format="unknown")
        scan.findings.append(ScanFinding("scan.memory", f"scan needed more than {limits.memory_bytes} bytes",
                                         data={"limit": "memory_bytes", "bytes": limits.memory_bytes}))
        return scan, True


def main() -> int:
    first = json.loads(sys.stdin.readline())
    limits = ScanLimits.from_dict(first["limits"])
    ctx = ScanContext(tree={str(k): int(v) for k, v in first["tree"].items()})
    del first
    _harden(limits)
    sys.stdout.write('{"ready": true}\n')
    sys.stdout.flush()
    for line in sys.stdin:
        _cpu_budget(limits.cpu_seconds)
        scan, exit_after = _scan_one(json.loads(line)["item"], ctx, limits)
        _answer(scan, exit_after)
        if exit_after:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
