"""The sandbox: limits block the file that hit them, the next file still scans, and a child can't be trusted blindly."""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import pytest

from mirror.scan import FileScan, ScanContext, ScanItem, ScanLimits, scan_items
from mirror.scan.sandbox import _ROOT

from . import corpus

SMALL = ScanLimits(cpu_seconds=1, wall_seconds=30, memory_bytes=256 << 20)


def _items(tmp_path: Path, files: dict[str, bytes]) -> tuple[list[ScanItem], ScanContext]:
    items = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        items.append(ScanItem(name, "0" * 64, len(data), str(tmp_path / name)))
    return items, ScanContext({i.path: i.size for i in items})


def _finding(scan: FileScan) -> tuple[str, object]:
    assert scan.verdict == "block"
    (f,) = scan.findings
    return f.rule, f.data.get("limit")


def _patched_child(body: str) -> tuple[str, ...]:
    """The real child with ``_scan_one`` wrapped: ``body`` runs first with ``raw`` (the item dict) in scope."""
    code = (f"import os, sys, signal; sys.path.insert(0, {_ROOT!r})\n"
            "from mirror.scan import child\n"
            "real = child._scan_one\n"
            "def patched(raw, ctx, limits):\n"
            + "".join(f"    {line}\n" for line in body.splitlines()) +
            "    return real(raw, ctx, limits)\n"
            "child._scan_one = patched\n"
            "sys.exit(child.main())\n")
    return (sys.executable, "-I", "-c", code)


def test_cpu_limit_blocks_the_file_and_the_next_one_scans(tmp_path: Path) -> None:
    slow = corpus.memo_heavy_pickle(40_000_000)
    items, ctx = _items(tmp_path, {"slow.pkl": slow, "ok.pkl": corpus.benign_pickle()})
    started = time.monotonic()
    first, second = scan_items(items, ctx, SMALL)
    assert _finding(first) == ("scan.timeout", "cpu_seconds")
    assert second.verdict == "pass" and second.format == "pickle"
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("build", [corpus.memo_heavy_pickle, lambda: corpus.many_tensors(20_000)],
                         ids=["opcode-heavy-20MB", "many-tiny-tensors"])
def test_wall_clock_limit_blocks_worst_case_files(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    items, ctx = _items(tmp_path, {"heavy.bin": build(), "config.json": b"{}"})
    started = time.monotonic()
    first, second = scan_items(items, ctx, ScanLimits(cpu_seconds=30, wall_seconds=0.2))
    assert _finding(first) == ("scan.timeout", "wall_seconds")
    assert "0.2 s" in first.findings[0].message
    assert second.verdict == "pass"
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_hundred_thousand_tensors_block_under_small_limits_and_pass_under_defaults(tmp_path: Path) -> None:
    items, ctx = _items(tmp_path, {"many.pt": corpus.many_tensors(100_000)})
    (small,) = scan_items(items, ctx, ScanLimits(cpu_seconds=1, wall_seconds=30))
    assert _finding(small)[0] == "scan.timeout"
    (default,) = scan_items(items, ctx)
    assert default.verdict == "pass" and default.format == "torch-zip"


def test_memory_limit_blocks_the_file_and_the_next_one_scans(tmp_path: Path) -> None:
    header = b'{"__metadata__":{"k":"' + b"x" * 95_000_000 + b'"}}'
    huge = struct.pack("<Q", len(header)) + header
    items, ctx = _items(tmp_path, {"huge.safetensors": huge, "ok.safetensors": corpus.safetensors({})})
    first, second = scan_items(items, ctx, SMALL)
    assert _finding(first) == ("scan.memory", "memory_bytes")
    assert second.verdict == "pass" and second.format == "safetensors"


def test_child_crash_blocks_that_file_only(tmp_path: Path) -> None:
    files = {"a.json": b"{}", "crash.json": b"{}", "c.json": b"{}"}
    items, ctx = _items(tmp_path, files)
    command = _patched_child("if 'crash' in raw['path']:\n    os.kill(os.getpid(), signal.SIGSEGV)")
    a, crashed, c = scan_items(items, ctx, SMALL, command=command)
    assert (a.verdict, c.verdict) == ("pass", "pass")
    assert crashed.findings[0].rule == "scan.crashed" and "SIGSEGV" in crashed.findings[0].message


@pytest.mark.parametrize("lie", [
    "print('not json', flush=True)",
    "print('{\"result\": {\"path\": \"other\", \"sha256\": \"x\", \"size\": 1, \"format\": \"text\"}}', flush=True)",
])
def test_child_answering_garbage_blocks_every_unfinished_file(tmp_path: Path, lie: str) -> None:
    files = {"a.json": b"{}", "garbage.json": b"{}", "c.json": b"{}", "d.json": b"{}"}
    items, ctx = _items(tmp_path, files)
    command = _patched_child(f"if 'garbage' in raw['path']:\n    {lie}")
    results = scan_items(items, ctx, SMALL, command=command)
    assert results[0].verdict == "pass"
    assert [r.findings[0].rule for r in results[1:]] == ["scan.protocol"] * 3
    assert [r.path for r in results] == list(files)


def test_child_that_cannot_start_blocks_files_with_a_reason(tmp_path: Path) -> None:
    items, ctx = _items(tmp_path, {"a.json": b"{}", "b.json": b"{}"})
    results = scan_items(items, ctx, SMALL, command=(sys.executable, "-c", "import sys; sys.exit(7)"))
    assert [(r.findings[0].rule, r.findings[0].data["returncode"]) for r in results] == [("scan.crashed", 7)] * 2


def test_unreadable_and_resized_files_block(tmp_path: Path) -> None:
    items, ctx = _items(tmp_path, {"a.json": b"{}"})
    missing = ScanItem("gone.bin", "0" * 64, 3, str(tmp_path / "nope"))
    resized = ScanItem("a.json", "0" * 64, 99, items[0].local_path)
    results = scan_items([missing, resized, items[0]], ctx, SMALL)
    assert [r.findings[0].rule if r.findings else None for r in results] == ["scan.unreadable", "scan.unreadable", None]


def test_child_inherits_no_environment_no_descriptors_and_runs_niced(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HUBGATE_TEST_SECRET", "s3cret")
    items, ctx = _items(tmp_path, {"probe.json": b"{}"})
    body = ("scan, ex = real(raw, ctx, limits)\n"
            "scan.facts.update(env=sorted(os.environ), fds=sorted(os.listdir('/proc/self/fd')), nice=os.nice(0),\n"
            "                  cwd=os.getcwd())\n"
            "return scan, ex")
    (result,) = scan_items(items, ctx, SMALL, command=_patched_child(body))
    assert "HUBGATE_TEST_SECRET" not in result.facts["env"]
    assert set(result.facts["env"]) <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE"}
    assert len(result.facts["fds"]) <= 5  # stdin, stdout, stderr, the scanned file, and listdir's own
    assert result.facts["nice"] >= 10 and result.facts["cwd"] == "/"


def test_one_child_scans_many_files_quickly(tmp_path: Path) -> None:
    items, ctx = _items(tmp_path, {f"f{i}.json": b'{"a": %d}' % i for i in range(300)})
    started = time.monotonic()
    results = scan_items(items, ctx, SMALL)
    assert [r.verdict for r in results] == ["pass"] * 300
    assert time.monotonic() - started < 10
