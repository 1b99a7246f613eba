"""``hubgate xet …``: the Xet representation of stored files (backfill for existing snapshots, verify)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from mirror.xet.builder import XetBuilder


def builder(svc: Any) -> "XetBuilder | None":
    """The publish-time builder for ``import``/``import-bundle`` when HUBGATE_XET=on, else None."""
    if svc.settings.xet != "on":
        return None
    from mirror.xet.builder import XetBuilder

    return XetBuilder(svc.store, threshold=svc.settings.xet_threshold_bytes)


def _cmd_backfill(args: argparse.Namespace) -> int:
    from api.app import build_services
    from api.cli import EXIT_FAILURE, EXIT_OK, _settings
    from mirror.xet.builder import XetBuilder
    from mirror.xet.maintenance import backfill
    from registry.types import RepoRef

    svc = build_services(_settings(args))
    repos = [RepoRef.parse(args.repo_type, r) for r in args.repo] if args.repo else None
    build = XetBuilder(svc.store, threshold=svc.settings.xet_threshold_bytes)
    todo, report = backfill(svc.engine, build, repos=repos, dry_run=args.dry_run)
    if args.dry_run:
        for sha, size in todo:
            print(f"would build  {sha}  {size} bytes")
        print(f"{len(todo)} blobs ({sum(s for _, s in todo)} bytes) need a Xet representation")
        return EXIT_OK
    rate = report.bytes_in / report.seconds / 1e6 if report.seconds else 0.0
    print(f"built {len(report.built)} of {len(todo)} blobs ({report.bytes_in} bytes, {rate:.0f} MB/s): "
          f"{report.xorbs_new} new xorbs ({report.xorb_bytes_new} bytes), {report.xorbs_reused} already stored")
    for sha, why in sorted(report.failed.items()):
        print(f"failed  {sha}: {why}")
    if svc.settings.xet != "on":
        print("note: HUBGATE_XET is off, so clients are not offered Xet yet")
    return EXIT_FAILURE if report.failed else EXIT_OK


def verify_and_print(svc: Any, *, sample: float | None, dry_run: bool) -> bool:
    """The Xet part of ``hubgate verify``; True when nothing is wrong."""
    from mirror.xet.maintenance import verify

    report = verify(svc.store, sample=sample, dry_run=dry_run)
    print(f"checked {report.xorbs_checked} xorbs ({report.xorb_bytes_checked} bytes): "
          f"{len(report.corrupt_xorbs)} corrupt")
    for x in report.corrupt_xorbs:
        print(f"corrupt xorb  {x}" + ("" if dry_run else " (quarantined)"))
    for sha in report.files_withdrawn:
        print(f"xet withdrawn  {sha} (served plain until `hubgate xet backfill`)")
    return report.ok


def _cmd_verify(args: argparse.Namespace) -> int:
    from api.app import build_services
    from api.cli import EXIT_OK, EXIT_VERIFY, _settings

    svc = build_services(_settings(args))
    return EXIT_OK if verify_and_print(svc, sample=args.sample, dry_run=args.dry_run) else EXIT_VERIFY


def _add_xet_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("xet", help="the Xet representation of large files (HUBGATE_XET)")
    xsub = p.add_subparsers(dest="xet_command", required=True)
    b = xsub.add_parser("backfill", help="build the Xet form of published files that lack it")
    b.add_argument("--repo", action="append", help="only this repo (repeatable; default every published snapshot)")
    b.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    b.add_argument("--dry-run", action="store_true", help="list the blobs that would be built")
    b.set_defaults(func=_cmd_backfill)
    v = xsub.add_parser("verify", help="re-hash every xorb; quarantine corrupt ones (their files are served plain)")
    v.add_argument("--sample", type=float, help="check only this fraction of the xorbs (0-1)")
    v.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    v.set_defaults(func=_cmd_verify)


PARSERS: list["Callable[[argparse._SubParsersAction], None]"] = [_add_xet_parser]  # type: ignore[type-arg]
