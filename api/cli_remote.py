"""The CLI's remote mode, ``--json``, ``--wait``, ``requests show``, ``repos list`` and ``tokens``.

``attach(sub)`` runs once the parsers of api/cli.py, cli_access, cli_scan and cli_xet exist and wraps the
commands that have a remote form: with ``HUBGATE_URL`` set (and not ``--local``) they call the REST API
as the user of ``HUBGATE_TOKEN`` / ``HF_TOKEN`` (api/remote.py); otherwise the local command runs on
the server's own database, as before (bootstrap: ``hubgate --local token create --role admin``; store
operations such as import, export, verify and gc are local only). Every listing takes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from api.remote import RemoteClient, RemoteError

Row = dict[str, Any]
TERMINAL = ("available", "failed", "blocked", "rejected")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BLOCKED = 0, 1, 2, 4
WAIT_EXIT = {"available": EXIT_OK, "failed": EXIT_FAILURE, "rejected": EXIT_FAILURE, "blocked": EXIT_BLOCKED}


def client_for(args: argparse.Namespace) -> RemoteClient | None:
    """The REST client when remote mode is on (HUBGATE_URL set, no ``--local``), else None."""
    if getattr(args, "local", False):
        return None
    from api.cli import _settings
    from api.settings import cli_token

    settings = _settings(args)
    if settings.url is None:
        return None
    return RemoteClient(settings.url, cli_token(settings))


def _jsonable(model: Any) -> Row:
    return model.model_dump(mode="json")  # type: ignore[no-any-return]


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


# -- reading, locally or remotely: both give the REST API's documents ---------------------------------


def _local(args: argparse.Namespace, fn: Callable[[Any, Any], Any]) -> Any:
    """``fn(services, session)`` on this machine's database (local mode)."""
    from sqlmodel import Session

    from api.app import build_services
    from api.cli import _settings

    svc = build_services(_settings(args))
    with Session(svc.engine) as session:
        return fn(svc, session)


def fetch_request(args: argparse.Namespace, client: RemoteClient | None, pk: int) -> Row:
    if client is not None:
        return client.call("GET", f"/requests/{pk}")  # type: ignore[no-any-return]
    from api.admin.schemas import RequestPublic
    from registry import access, workflow

    def get(svc: Any, session: Any) -> Row:
        req = workflow.get(session, pk)
        doc = RequestPublic.of(req)
        doc.access = access.repo_access(session, _repo(req.repo_type, req.repo_id))
        return _jsonable(doc)

    return _local(args, get)  # type: ignore[no-any-return]


def _repo(repo_type: str, repo_id: str) -> Any:
    from registry.types import RepoRef

    return RepoRef.parse(repo_type, repo_id)


def list_requests(args: argparse.Namespace, client: RemoteClient | None) -> list[Row]:
    if client is not None:
        return client.call("GET", "/requests", params={"state": args.state, "limit": args.limit})  # type: ignore[no-any-return]
    from api.admin.schemas import RequestPublic
    from registry import workflow

    return _local(args, lambda svc, s: [_jsonable(RequestPublic.of(r)) for r in workflow.list_requests(
        s, state=args.state, limit=args.limit)])  # type: ignore[no-any-return]


def list_tokens(args: argparse.Namespace, client: RemoteClient | None) -> list[Row]:
    if client is not None:
        return client.call("GET", "/tokens")  # type: ignore[no-any-return]
    from api.admin.schemas import TokenPublic
    from registry import tokens

    return _local(args, lambda svc, s: [_jsonable(TokenPublic.of(t)) for t in tokens.list_tokens(s)])  # type: ignore[no-any-return]


def list_grants(args: argparse.Namespace, client: RemoteClient | None) -> list[Row]:
    repo = getattr(args, "repo", None)
    if client is not None:
        rows: list[Row] = client.call("GET", "/grants")
        return [r for r in rows if repo is None or (r["repo_type"], r["repo_id"]) == (args.repo_type, repo)]
    from registry import access

    return _local(args, lambda svc, s: [  # type: ignore[no-any-return]
        {"repo_type": g.repo_type, "repo_id": g.repo_id, "subject": g.subject, "created_by": g.created_by}
        for g in access.list_grants(s, _repo(args.repo_type, repo) if repo else None)])


def list_members(args: argparse.Namespace, client: RemoteClient | None) -> list[Row]:
    group = getattr(args, "group", None)
    if client is not None:
        return client.call("GET", "/groups", params={"group": group})  # type: ignore[no-any-return]
    from registry import access

    return _local(args, lambda svc, s: [{"group": m.group_name, "token_id": m.token_id, "created_by": m.created_by}
                                  for m in access.list_members(s, group)])  # type: ignore[no-any-return]


def list_repos(args: argparse.Namespace, client: RemoteClient | None) -> list[Row]:
    types = [args.repo_type] if args.repo_type else ["model", "dataset"]
    if client is not None:
        return [dict(r, visibility=r.get("visibility")) for t in types
                for r in client.call("GET", "/repos", params={"repo_type": t})]
    from registry import access, catalog
    from registry.types import RepoType

    def rows(svc: Any, session: Any) -> list[Row]:
        out = []
        for t in types:
            for snap in catalog.list_repos(session, RepoType.parse(t)):
                refs = [r.name for r in catalog.list_refs(session, snap.repo) if r.commit == snap.commit]
                out.append({"repo_type": t, "repo_id": snap.repo.id, "commit": snap.commit, "refs": refs,
                            "file_count": snap.file_count, "total_size": snap.total_size, "state": snap.state,
                            "created_at": snap.created_at.isoformat(),
                            "visibility": access.get_visibility(session, snap.repo)})
        return out

    return _local(args, rows)  # type: ignore[no-any-return]


# -- printing ----------------------------------------------------------------------------------------


def print_requests(rows: list[Row]) -> None:
    print(f"{'ID':>5}  {'STATE':<10} {'VERDICT':<12} {'REPO':<40} {'REVISION':<12} COMMIT")
    for r in rows:
        print(f"{r['id']:>5}  {r['state']:<10} {r['verdict']:<12} {r['repo_type'] + ':' + r['repo_id']:<40} "
              f"{r['revision']:<12} {r['commit']}")


def print_request(r: Row) -> None:
    """One request, for people: what it is, where it stands, why (findings, changes, scan, error)."""
    from api.progress import human_bytes

    p = r.get("progress") or {}
    print(f"request {r['id']}: {r['repo_type']}:{r['repo_id']} @ {r['revision']} -> {r['commit'] or '(resolved on the connected side)'}")
    print(f"  state     {r['state']}" + (f" ({p.get('phase')})" if p.get("phase") else ""))
    print(f"  verdict   {r['verdict']}")
    print(f"  requester {r['requester']}" + (f": {r['reason']}" if r.get("reason") else ""))
    if r.get("decided_by"):
        print(f"  decided   by {r['decided_by']} at {r.get('decided_at')}"
              + (f": {r['decision_reason']}" if r.get("decision_reason") else ""))
    if p.get("files_total") or p.get("bytes_total"):
        print(f"  progress  {p['files_done']}/{p['files_total']} files, "
              f"{human_bytes(p['bytes_done'])} / {human_bytes(p['bytes_total'])}")
    if r.get("error"):
        print(f"  error     {r['error']}")
    if r.get("access"):
        print(f"  access    {r['access'].get('visibility')}; grants: {', '.join(r['access'].get('grants') or []) or 'none'}")
    if r.get("findings"):
        print("  findings")
        for f in r["findings"]:
            print(f"    {f.get('severity', ''):<7} {f.get('rule', ''):<22} {f.get('message', '')}")
    changes = r.get("changes")
    if changes:
        print(f"  changes   from {changes.get('from_commit')}: {len(changes.get('added') or [])} added, "
              f"{len(changes.get('removed') or [])} removed, {len(changes.get('changed') or [])} changed"
              + (f"; licence {changes['license']['from']} -> {changes['license']['to']}" if changes.get("license") else ""))
        for kind in ("added", "removed", "changed"):
            for path in (changes.get(kind) or [])[:20]:
                print(f"    {kind:<8} {path}")
    blocking = (r.get("scan") or {}).get("blocking") or []
    if blocking:
        print("  blocked by the content scan")
        for b in blocking[:20]:
            print(f"    {b.get('path') or '(tree)'}: {b.get('message')} [{b.get('rule')}]")
    for c in r.get("code_files") or []:
        print(f"  code      {c.get('path')} sha256:{c.get('sha256')} {'approved' if c.get('approved') else 'NOT approved'}")


def _table(rows: list[Row], columns: list[tuple[str, str, int]]) -> None:
    print("  ".join(f"{title:<{width}}" for title, _, width in columns).rstrip())
    for r in rows:
        print("  ".join(f"{_cell(r.get(key)):<{width}}" for _, key, width in columns).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)[:19] if isinstance(value, str) and value[:4].isdigit() and "T" in value[:11] else str(value)


def print_import_outcome(result: Any) -> None:
    """What an import-bundle restored, kept and settled, beyond its counts (api/cli.py prints those)."""
    if result.restored or (result.blobs_copied and not result.published):
        names = ", ".join(str(k) for k in result.restored) or "no snapshot was unavailable"
        print(f"restored {result.blobs_copied} blob{'s' if result.blobs_copied != 1 else ''} "
              f"({result.bytes_copied} bytes); available again: {names}")
    elif not result.published and not result.blobs_copied and not result.refs_moved:
        print("nothing to restore: every snapshot and blob of this bundle is already here")
    for kept in result.refs_kept:
        print(f"ref kept: {kept} is newer here than this bundle (an older bundle only restores blobs)")
    for done in result.requests_fulfilled:
        print(f"{done}: available (its revision arrived in this bundle)")
    if result.resumed:
        first = min(result.resumed.values())
        print(f"resumed {len(result.resumed)} blob{'s' if len(result.resumed) != 1 else ''} at byte {first} "
              "(an interrupted import had copied that much)")


# -- waiting for a request ------------------------------------------------------------------------------


def wait_for(args: argparse.Namespace, client: RemoteClient | None, pk: int) -> int:
    """Poll request ``pk`` until it is available, failed, blocked or rejected, showing its progress."""
    from api.progress import TerminalProgress

    deadline = time.monotonic() + args.timeout if args.timeout else None
    bar = None if getattr(args, "quiet", False) else TerminalProgress(f"request {pk}")
    phase, done = None, 0
    try:
        while True:
            r = fetch_request(args, client, pk)
            p = r.get("progress") or {}
            if r["state"] in TERMINAL:
                break
            if bar is not None:
                now_phase = p.get("phase") or r["state"]
                if now_phase != phase:
                    phase, done = now_phase, 0
                    bar.begin(now_phase, total_bytes=p.get("bytes_total") or 0, total_files=p.get("files_total") or 0)
                bar.advance(max(0, (p.get("bytes_done") or 0) - done))
                done = max(done, p.get("bytes_done") or 0)
            if deadline is not None and time.monotonic() > deadline:
                print(f"hubgate: request {pk} is still {r['state']} after {args.timeout:g}s (--timeout)", file=sys.stderr)
                return EXIT_FAILURE
            time.sleep(args.poll)
    finally:
        if bar is not None:
            bar.end()
    if args.json:
        _print_json(r)
    else:
        print_request(r)
    return WAIT_EXIT[r["state"]]


# -- the remote commands ---------------------------------------------------------------------------------


def _show_request(args: argparse.Namespace, r: Row) -> int:
    if getattr(args, "wait", False) and r["state"] not in TERMINAL:
        return wait_for(args, client_for(args), r["id"])
    _print_json(r)  # the REST document, as the local commands print it
    return EXIT_OK


def remote_request(args: argparse.Namespace, client: RemoteClient) -> int:
    body = {"repo_type": args.repo_type, "repo_id": args.repo, "revision": args.revision,
            "allow_patterns": args.allow, "ignore_patterns": args.ignore, "reason": args.reason}
    return _show_request(args, client.call("POST", "/requests", json=body))


def remote_decision(action: str) -> Callable[[argparse.Namespace, RemoteClient], int]:
    def run(args: argparse.Namespace, client: RemoteClient) -> int:
        body: dict[str, Any] | None = None
        if action == "reject":
            body = {"reason": args.reason}
        elif action == "approve" and args.reason:
            body = {"reason": args.reason}
        return _show_request(args, client.call("POST", f"/requests/{args.id}/{action}", json=body))

    return run


def remote_approve_code(args: argparse.Namespace, client: RemoteClient) -> int:
    files = dict(f.split("=", 1) for f in args.file or []) or None
    return _show_request(args, client.call("POST", f"/requests/{args.id}/code-approval",
                                           json={"files": files, "retry": args.retry}))


def remote_override(args: argparse.Namespace, client: RemoteClient) -> int:
    o = client.call("POST", f"/requests/{args.id}/overrides",
                    json={"path": args.path, "rule": args.rule, "justification": args.justification})
    print(f"override recorded: {o.get('path')} (sha256:{o.get('sha256')}) rule {o.get('rule')}: {o.get('justification')}")
    print(f"retry the request to publish it: hubgate retry {args.id}")
    return EXIT_OK


def remote_token_create(args: argparse.Namespace, client: RemoteClient) -> int:
    t = client.call("POST", "/tokens", json={"name": args.name, "role": args.role, "expires_days": args.expires_days,
                                             "no_expiry": args.no_expiry})
    expiry = f"expires {t['expires_at'][:16]} UTC" if t.get("expires_at") else "never expires"
    print(f"token {t['token_id']} ({t['role']}) for {t['name']}, {expiry}; shown once, store it now:")
    print(t["token"])
    return EXIT_OK


def remote_token_revoke(args: argparse.Namespace, client: RemoteClient) -> int:
    client.call("DELETE", f"/tokens/{args.token_id}")
    print(f"token {args.token_id} revoked (refused by every hubgate process within a second)")
    return EXIT_OK


def remote_grants(args: argparse.Namespace, client: RemoteClient) -> int:
    if args.grants_command == "list":
        return show_listing(list_grants, _GRANT_COLUMNS)(args, client)
    path = client.repo_path(args.repo_type, args.repo) + "/grants"
    if args.grants_command == "add":
        doc = client.call("POST", path, json={"token_id": args.token} if args.token else {"group": args.group})
    else:
        subject = f"token:{args.token}" if args.token else f"group:{args.group}"
        doc = client.call("DELETE", f"{path}/{subject}")
    print(f"{doc['repo_type']}:{doc['repo_id']}: {doc['visibility']}; grants: {', '.join(doc['grants']) or 'none'}")
    return EXIT_OK


def remote_groups(args: argparse.Namespace, client: RemoteClient) -> int:
    if args.groups_command == "add":
        client.call("PUT", f"/groups/{args.group}/members/{args.token_id}")
    elif args.groups_command == "remove":
        client.call("DELETE", f"/groups/{args.group}/members/{args.token_id}")
    return show_listing(list_members, _MEMBER_COLUMNS)(args, client)


def remote_visibility(args: argparse.Namespace, client: RemoteClient) -> int:
    doc = client.call("PUT", client.repo_path(args.repo_type, args.repo) + "/visibility",
                      json={"visibility": args.visibility, "reason": args.reason})
    print(f"{doc['repo_type']}:{doc['repo_id']}: {doc['visibility']}; grants: {', '.join(doc['grants']) or 'none'}")
    return EXIT_OK


def remote_audit_export(args: argparse.Namespace, client: RemoteClient) -> int:
    rows = client.call("GET", "/audit", params={"limit": 1000})
    since = args.since
    rows = sorted(rows, key=lambda e: e.get("seq") or e["id"])
    if since and since.isdigit():
        rows = [e for e in rows if (e.get("seq") or 0) > int(since)]
    elif since:
        rows = [e for e in rows if e["at"] >= since]
    from api.cli_access import write_jsonl

    write_jsonl(rows, args.out)
    if args.out:
        print(f"{len(rows)} audit entries written to {args.out} (the newest 1000 at most, over the REST API)")
    return EXIT_OK


def remote_only_local(what: str) -> Callable[[argparse.Namespace, RemoteClient], int]:
    def run(args: argparse.Namespace, client: RemoteClient) -> int:
        raise RemoteError(f"{what} reads the server's database directly: run it on the server with --local "
                          "(or without HUBGATE_URL)", EXIT_USAGE)

    return run


# -- listings (local or remote, table or --json) ------------------------------------------------------------

_TOKEN_COLUMNS = [("ID", "token_id", 17), ("ROLE", "role", 10), ("REVOKED", "revoked", 8), ("EXPIRES", "expires_at", 19),
                  ("LAST USED", "last_used_at", 19), ("NAME", "name", 0)]
_GRANT_COLUMNS = [("REPO", "repo_id", 40), ("TYPE", "repo_type", 8), ("SUBJECT", "subject", 30), ("BY", "created_by", 0)]
_MEMBER_COLUMNS = [("GROUP", "group", 24), ("TOKEN", "token_id", 17), ("BY", "created_by", 0)]
_REPO_COLUMNS = [("REPO", "repo_id", 40), ("TYPE", "repo_type", 8), ("COMMIT", "commit", 40), ("REFS", "refs", 12),
                 ("FILES", "file_count", 6), ("BYTES", "total_size", 12), ("STATE", "state", 11),
                 ("VISIBILITY", "visibility", 0)]


def show_listing(fetch: Callable[[argparse.Namespace, RemoteClient | None], list[Row]],
                 columns: list[tuple[str, str, int]] | None) -> Callable[[argparse.Namespace, RemoteClient | None], int]:
    def run(args: argparse.Namespace, client: RemoteClient | None) -> int:
        rows = fetch(args, client)
        if getattr(args, "json", False):
            _print_json(rows)
        elif columns is None:
            print_requests(rows)
        else:
            _table(rows, columns)
        return EXIT_OK

    return run


def _requests_command(original: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if args.action == "show":
            if not (args.file or "").isdigit():
                raise RemoteError("hubgate requests show needs a request ID (a number)", EXIT_USAGE)
            client = client_for(args)
            r = fetch_request(args, client, int(args.file))
            if getattr(args, "wait", False) and r["state"] not in TERMINAL:
                return wait_for(args, client, r["id"])
            if args.json:
                _print_json(r)
            else:
                print_request(r)
            return EXIT_OK
        if args.action == "list":
            client = client_for(args)
            if client is not None or args.json:
                return show_listing(list_requests, None)(args, client)
        return original(args)

    return run


# -- wiring ------------------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices  # type: ignore[return-value]
    return {}


def _wrap(parser: argparse.ArgumentParser, remote: Callable[[argparse.Namespace, RemoteClient], int] | None = None,
          listing: Callable[[argparse.Namespace, RemoteClient | None], int] | None = None, *,
          wait: bool = False, local: Callable[[argparse.Namespace], int] | None = None) -> None:
    """Remote mode for ``parser``'s command (and ``--json``/``--wait`` where given); local runs stay as they were."""
    original = parser.get_default("func")
    if listing is not None:
        parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    if wait:
        parser.add_argument("--wait", action="store_true",
                            help="then wait until the request is available, failed, blocked or rejected, showing "
                                 "its progress (exit 0 available, 1 failed/rejected, 4 blocked)")
        parser.add_argument("--timeout", type=float, default=0, help="give up waiting after this many seconds (exit 1)")
        parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
        if listing is None:
            parser.add_argument("--json", action="store_true", help="with --wait: print the request as JSON")

    def run(args: argparse.Namespace) -> int:
        client = client_for(args) if remote is not None or listing is not None else None
        if client is not None:
            try:
                return (remote or listing)(args, client)  # type: ignore[operator]
            finally:
                client.close()
        if listing is not None and getattr(args, "json", False):
            return listing(args, None)
        if local is not None:
            return local(args)
        code = int(original(args))
        if wait and args.wait and code == EXIT_OK:
            return wait_for(args, None, args.id)
        return code

    parser.set_defaults(func=run)


def local_request(args: argparse.Namespace) -> int:
    """``hubgate request`` on this machine's database (as api/cli.py's), then ``--wait`` for it."""
    from api.admin.routes import submit_request
    from api.app import build_services
    from api.cli import _cli_actor, _print_request, _settings

    svc = build_services(_settings(args))
    req = submit_request(svc, args.repo_type, args.repo, args.revision, args.allow, args.ignore, args.reason,
                         _cli_actor())
    if args.wait and req.state not in TERMINAL:
        return wait_for(args, None, req.pk)
    _print_request(req)
    return EXIT_OK


def attach(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Give the existing commands their remote form and the new flags; add ``repos list``."""
    top: dict[str, argparse.ArgumentParser] = sub.choices  # type: ignore[assignment]
    _wrap(top["request"], remote_request, wait=True, local=local_request)
    for action in ("approve", "retry"):
        _wrap(top[action], remote_decision(action), wait=True)
    _wrap(top["reject"], remote_decision("reject"))
    requests = top["requests"]
    requests.add_argument("--json", action="store_true", help="print the list (or the request) as JSON")
    requests.add_argument("--wait", action="store_true", help="show: wait until the request is done")
    requests.add_argument("--timeout", type=float, default=0, help="give up waiting after this many seconds")
    requests.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    requests.set_defaults(func=_requests_command(requests.get_default("func")))
    if "token" in top:  # "tokens" is an alias: the same parser
        tokens = _subparsers(top["token"])
        if "create" in tokens:
            _wrap(tokens["create"], remote_token_create)
        if "list" in tokens:
            _wrap(tokens["list"], listing=show_listing(list_tokens, _TOKEN_COLUMNS))
        if "revoke" in tokens:
            _wrap(tokens["revoke"], remote_token_revoke)
    if "grants" in top:
        grants = _subparsers(top["grants"])
        for name in ("add", "remove"):
            _wrap(grants[name], remote_grants)
        _wrap(grants["list"], listing=show_listing(list_grants, _GRANT_COLUMNS))
    if "groups" in top:
        groups = _subparsers(top["groups"])
        for name in ("add", "remove"):
            _wrap(groups[name], remote_groups)
        _wrap(groups["list"], listing=show_listing(list_members, _MEMBER_COLUMNS))
    if "repos" in top:
        repos = _subparsers(top["repos"])
        if "set-visibility" in repos:
            _wrap(repos["set-visibility"], remote_visibility)
        rsub = next(a for a in top["repos"]._actions if isinstance(a, argparse._SubParsersAction))
        p = rsub.add_parser("list", help="published repos: default commit, refs, size, state, visibility")
        p.add_argument("--repo-type", choices=["model", "dataset"], help="only this type (default both)")
        p.add_argument("--json", action="store_true", help="print the rows as JSON")
        p.set_defaults(func=_listing_command(show_listing(list_repos, _REPO_COLUMNS)))
    if "audit" in top:
        audit = _subparsers(top["audit"])
        _wrap(audit["export"], remote_audit_export)
        _wrap(audit["verify"], remote_only_local("hubgate audit verify"))
    if "approve-code" in top:
        _wrap(top["approve-code"], remote_approve_code)
    if "override" in top:
        _wrap(top["override"], remote_override)


def _listing_command(listing: Callable[[argparse.Namespace, RemoteClient | None], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        client = client_for(args)
        try:
            return listing(args, client)
        finally:
            if client is not None:
                client.close()

    return run
