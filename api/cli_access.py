"""CLI commands for who may read what and for the record of it: tokens (list, revoke), grants, groups,
repo visibility, and the hash-chained audit log (verify, export for a SIEM)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def _when(value: datetime | None, never: str = "never") -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else never


# -- tokens (``hubgate token list|revoke``; ``token create`` is in api/cli.py)


def _cmd_token_list(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from api.app import build_services
    from api.cli import EXIT_OK, _settings
    from registry import tokens
    from registry.models import utcnow

    svc = build_services(_settings(args))
    with Session(svc.engine) as session:
        rows = tokens.list_tokens(session)
    now = utcnow()
    print(f"{'ID':<17} {'ROLE':<10} {'STATE':<8} {'EXPIRES':<17} {'LAST USED':<17} NAME")
    for t in rows:
        state = "revoked" if t.revoked else "expired" if t.expires_at is not None and t.expires_at <= now else "active"
        print(f"{t.token_id:<17} {t.role:<10} {state:<8} {_when(t.expires_at):<17} {_when(t.last_used_at, '-'):<17} {t.name}")
    return EXIT_OK


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from api.app import build_services
    from api.cli import EXIT_OK, _cli_actor, _settings
    from registry import tokens
    from registry.db import session_scope

    svc = build_services(_settings(args))
    with session_scope(svc.engine) as session:
        tokens.revoke(session, args.token_id, actor=_cli_actor())
    print(f"token {args.token_id} revoked (refused by every hubgate process within a second)")
    return EXIT_OK


def add_token_commands(tsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``token list`` and ``token revoke``, added to the ``token`` parser of api/cli.py."""
    p = tsub.add_parser("list", help="every token: role, state, expiry, last use (never the secret)")
    p.set_defaults(func=_cmd_token_list)
    p = tsub.add_parser("revoke", help="revoke a token at once, on every replica")
    p.add_argument("token_id")
    p.set_defaults(func=_cmd_token_revoke)


# -- grants, groups, visibility


def _subject(args: argparse.Namespace) -> str:
    return f"token:{args.token}" if args.token else f"group:{args.group}"


def _print_access(session, repo) -> None:  # type: ignore[no-untyped-def]
    from registry import access

    doc = access.repo_access(session, repo)
    print(f"{repo}: {doc['visibility']}; grants: {', '.join(doc['grants']) or 'none'}")


def _cmd_grants(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from api.app import build_services
    from api.cli import EXIT_OK, _cli_actor, _settings
    from registry import access
    from registry.db import session_scope
    from registry.types import RepoRef

    svc = build_services(_settings(args))
    repo = RepoRef.parse(args.repo_type, args.repo) if args.repo else None
    if args.grants_command in ("add", "remove"):
        assert repo is not None
        with session_scope(svc.engine) as session:
            if args.grants_command == "add":
                access.add_grant(session, repo, _subject(args), actor=_cli_actor())
            else:
                access.remove_grant(session, repo, _subject(args), actor=_cli_actor())
    with Session(svc.engine) as session:
        if repo is not None:
            _print_access(session, repo)
        else:
            for g in access.list_grants(session):
                print(f"{g.repo_type}:{g.repo_id}  {g.subject}  (by {g.created_by}, {_when(g.created_at)})")
    return EXIT_OK


def add_grants_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("grants", help="who may read a gated or private repo (a token, or a group of tokens)")
    gsub = p.add_subparsers(dest="grants_command", required=True)
    for name, text in (("add", "grant a token or a group read access to a repo"), ("remove", "take a grant back")):
        c = gsub.add_parser(name, help=text)
        c.add_argument("repo", help="repo id, e.g. meta-llama/Llama-3.2-1B")
        c.add_argument("--repo-type", default="model", choices=["model", "dataset"])
        who = c.add_mutually_exclusive_group(required=True)
        who.add_argument("--token", help="token id (see hubgate token list)")
        who.add_argument("--group", help="group name (see hubgate groups)")
        c.set_defaults(func=_cmd_grants)
    c = gsub.add_parser("list", help="every grant, or one repo's visibility and grants")
    c.add_argument("repo", nargs="?")
    c.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    c.set_defaults(func=_cmd_grants)


def _cmd_groups(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from api.app import build_services
    from api.cli import EXIT_OK, _cli_actor, _settings
    from registry import access
    from registry.db import session_scope

    svc = build_services(_settings(args))
    if args.groups_command != "list":
        with session_scope(svc.engine) as session:
            change = access.add_member if args.groups_command == "add" else access.remove_member
            change(session, args.group, args.token_id, actor=_cli_actor())
    with Session(svc.engine) as session:
        for m in access.list_members(session, args.group):
            print(f"{m.group_name}  {m.token_id}")
    return EXIT_OK


def add_groups_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("groups", help="groups of tokens (a grant to group:NAME reaches every member)")
    gsub = p.add_subparsers(dest="groups_command", required=True)
    for name, text in (("add", "put a token in a group"), ("remove", "take a token out of a group")):
        c = gsub.add_parser(name, help=text)
        c.add_argument("group")
        c.add_argument("token_id")
        c.set_defaults(func=_cmd_groups)
    c = gsub.add_parser("list", help="members of every group, or of one")
    c.add_argument("group", nargs="?")
    c.set_defaults(func=_cmd_groups)


def _cmd_set_visibility(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from api.app import build_services
    from api.cli import EXIT_OK, _cli_actor, _settings
    from registry import access
    from registry.db import session_scope
    from registry.types import RepoRef

    svc = build_services(_settings(args))
    repo = RepoRef.parse(args.repo_type, args.repo)
    with session_scope(svc.engine) as session:
        access.set_visibility(session, repo, args.visibility, actor=_cli_actor(), reason=args.reason)
    with Session(svc.engine) as session:
        _print_access(session, repo)
    return EXIT_OK


def add_repos_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("repos", help="repo settings: visibility")
    rsub = p.add_subparsers(dest="repos_command", required=True)
    c = rsub.add_parser("set-visibility", help="public, gated (GatedRepo without a grant) or private (RepoNotFound)")
    c.add_argument("repo")
    c.add_argument("visibility", choices=["public", "gated", "private"])
    c.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    c.add_argument("--reason", help="recorded in the audit log")
    c.set_defaults(func=_cmd_set_visibility)


# -- the audit log


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from api.app import build_services
    from api.cli import EXIT_OK, EXIT_VERIFY, _settings
    from registry import audit

    svc = build_services(_settings(args))
    with Session(svc.engine) as session:
        report = audit.verify(session)
    if not report.ok:
        print(f"audit chain broken: {report.problem}", file=sys.stderr)
        return EXIT_VERIFY
    print(f"audit chain intact: {report.entries} entries, seq 1..{report.head_seq}, head hash {report.head_hash}")
    if report.chained_at_upgrade:
        print(f"the first {report.chained_at_upgrade} entries predate the chain: the 0003 upgrade chained them as it "
              "found them (their content before the upgrade is not proven)")
    print("keep the head hash outside this database (a ticket, the SIEM) to detect a rewritten chain later")
    return EXIT_OK


def _since(value: str) -> dict[str, object]:
    from registry.errors import InvalidInputError

    if value.isdigit():
        return {"since_seq": int(value)}
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(f"--since wants an entry seq (a number) or a date (2026-12-01[T10:00]), not {value!r}") from exc
    return {"since_at": when if when.tzinfo else when.replace(tzinfo=timezone.utc)}


def _cmd_audit_export(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from api.app import build_services
    from api.cli import EXIT_OK, _settings
    from registry import audit

    since = _since(args.since) if args.since else {}
    svc = build_services(_settings(args))
    with Session(svc.engine) as session:
        n = write_jsonl(audit.export(session, **since), args.out)  # type: ignore[arg-type]
    if args.out:
        print(f"{n} audit entries written to {Path(args.out)}")
    return EXIT_OK


def write_jsonl(docs: Iterable[dict[str, Any]], path: str | None) -> int:
    """One JSON object per line (keys sorted) to ``path``, or to stdout; returns how many."""
    out = open(path, "w", encoding="utf-8") if path else sys.stdout
    n = 0
    try:
        for doc in docs:
            out.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    finally:
        if path:
            out.close()
    return n


def add_audit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="the hash-chained audit log: verify it, export it for a SIEM")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="check every entry's hash and link; exit 3 naming the first bad one")
    v.set_defaults(func=_cmd_audit_verify)
    e = asub.add_parser("export", help="entries as JSON lines, in chain order")
    e.add_argument("--since", help="after this entry seq, or from this date (2026-12-01 or 2026-12-01T10:00Z)")
    e.add_argument("--out", help="file to write (default: standard output)")
    e.set_defaults(func=_cmd_audit_export)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    add_grants_parser,
    add_groups_parser,
    add_repos_parser,
    add_audit_parser,
]
