"""CLI commands around the content scan: code approval, per-file overrides, re-scanning published snapshots."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def _cmd_approve_code(args: argparse.Namespace) -> int:
    from api.app import build_services
    from api.cli import EXIT_OK, _cli_actor, _print_request, _settings
    from registry.scanning import approve_request_code
    from registry.db import session_scope

    svc = build_services(_settings(args))
    files = dict(f.split("=", 1) for f in args.file or []) or None
    with session_scope(svc.engine) as session:
        req, approved = approve_request_code(session, args.id, _cli_actor(), files=files)
    for a in approved:
        print(f"approved  {a.path}  sha256:{a.sha256}")
    if args.retry and req.state == "blocked":
        from registry import workflow

        with session_scope(svc.engine) as session:
            req = workflow.retry(session, args.id, _cli_actor())
    _print_request(req)
    return EXIT_OK


def _cmd_override(args: argparse.Namespace) -> int:
    from api.app import build_services
    from api.cli import EXIT_OK, _cli_actor, _settings
    from registry.scanning import override_request_finding
    from registry.db import session_scope

    svc = build_services(_settings(args))
    with session_scope(svc.engine) as session:
        o = override_request_finding(session, args.id, _cli_actor(), path=args.path, rule=args.rule,
                                     justification=args.justification)
    print(f"override recorded: {o.path} (sha256:{o.sha256}) rule {o.rule}: {o.justification}")
    print(f"retry the request to publish it: hubgate retry {args.id}")
    return EXIT_OK


def _cmd_rescan(args: argparse.Namespace) -> int:
    from api.app import build_services
    from api.cli import EXIT_BLOCKED, EXIT_OK, _cli_actor, _settings
    from mirror.scan.gate import Gate
    from mirror.scan.rescan import rescan
    from registry.types import RepoRef

    svc = build_services(_settings(args))
    repo = None
    if args.repo:
        repo_type, _, repo_id = args.repo.partition(":") if ":" in args.repo else ("model", "", args.repo)
        repo = RepoRef.parse(repo_type, repo_id)
    report = rescan(svc.engine, svc.store, Gate(svc.store, svc.settings.scan_limits, signer=svc.signer), repo=repo, force=args.force,
                    actor=_cli_actor())
    svc.cache.invalidate()
    if args.json:
        print(json.dumps({"checked": report.checked, "skipped": report.skipped, "blocked": report.blocked,
                          "unblocked": report.unblocked}, indent=2))
    else:
        for name in report.checked:
            state = "BLOCKED" if name in report.blocked else "passed"
            print(f"{state:<8} {name}")
            for b in report.blocked.get(name, [])[:10]:
                print(f"         {b.get('path') or '(tree)'}: {b['message']} [{b['rule']}]")
        print(f"{len(report.checked)} re-scanned, {len(report.skipped)} already scanned by this scanner version, "
              f"{len(report.blocked)} blocked, {len(report.unblocked)} unblocked")
    return EXIT_BLOCKED if report.blocked else EXIT_OK


def _add_approve_code_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("approve-code", help="approve the remote code a blocked request carries (after reviewing it)")
    p.add_argument("id", type=int, help="request id")
    p.add_argument("--file", action="append", metavar="PATH=SHA256",
                   help="a code file you reviewed, with its sha256 as the request shows it (repeatable; "
                        "default: every code file of the request's last scan)")
    p.add_argument("--retry", action="store_true", help="then retry the blocked request")
    p.set_defaults(func=_cmd_approve_code)


def _add_override_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("override", help="record a justified exception to one blocking finding of a request's file")
    p.add_argument("id", type=int, help="request id (blocked)")
    p.add_argument("--path", required=True, help="the file, as the request's scan names it")
    p.add_argument("--rule", required=True, help="the blocking rule, e.g. pickle.global")
    p.add_argument("--justification", required=True, help="why this exception is safe (audited; travels with the snapshot)")
    p.set_defaults(func=_cmd_override)


def _add_rescan_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rescan", help="re-scan published snapshots scanned by another scanner/allowlist version")
    p.add_argument("--repo", help="only this repo: ORG/NAME or dataset:ORG/NAME")
    p.add_argument("--force", action="store_true", help="re-scan even snapshots scanned by this version")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_rescan)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    _add_approve_code_parser, _add_override_parser, _add_rescan_parser,
]
