"""The ``hubgate`` command. Each command loads settings, builds services, calls one function, prints the result.

Exit codes (api/exit_codes.py, the one table): 0 success, 1 operational failure, 2 usage or configuration
error (a missing file, a bad setting, an unusable database, data dir or port), 3 verification failure,
4 content blocked by the scan (nothing of it published), 5 refused (token missing, invalid or too weak).

Imports are lazy (inside the commands): ``hubgate --help`` must not load the web framework, the database
layer or cryptography. With HUBGATE_URL set, the request/decision/token/grant/audit commands call that
server's REST API (api/cli_remote.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api import cli_access, cli_remote, cli_scan, cli_xet
from api.exit_codes import EXIT_BLOCKED, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, EXIT_VERIFY  # noqa: F401 (used by cli_*)
from registry.errors import InvalidInputError

if TYPE_CHECKING:
    from api.settings import Settings
    from registry.audit import Actor

VERSION = "0.1.0"


def _settings(args: argparse.Namespace, **overrides: object) -> "Settings":
    from api import logs
    from api.settings import load

    settings = load(getattr(args, "config", None), **{k: v for k, v in overrides.items() if v is not None})
    logs.configure(settings.log_level, settings.log_format)  # HUBGATE_LOG_LEVEL/FORMAT, any case, every logger
    return settings


def _progress(args: argparse.Namespace, label: str) -> dict[str, object]:
    """``progress=`` for a long operation: a bar on a terminal, periodic lines otherwise; nothing with --quiet."""
    from api.progress import for_cli

    bar = for_cli(label, quiet=bool(getattr(args, "quiet", False)))
    return {} if bar is None else {"progress": bar}


def parse_size(text: str) -> int:
    """``4000000000``, ``4G``, ``500M``, ``4GiB``, ``1.5T``: bytes (k/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: a number of bytes, or with k, M, G or T (4G, 500M, 2GiB)")
    number, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    scale = (1024 if binary else 1000) ** " KMGT".index(unit or " ")
    return int(number * scale)


def existing_path(text: str) -> Path:
    """An argument naming a file or folder that must be there: a missing one is a usage error ("not found")."""
    path = Path(text)
    if not path.exists() and not _volume_list_of(path).exists():
        raise argparse.ArgumentTypeError(f"{text}: not found")
    return path


def _volume_list_of(path: Path) -> Path:
    stem, dot, number = path.name.rpartition(".")
    base = path.with_name(stem) if dot and number.isdigit() else path
    return base.with_name(base.name + ".volumes.json")


def _cmd_serve(args: argparse.Namespace) -> int:
    import functools

    import uvicorn

    from api.app import create_app, settle_heap
    from api.hub.streaming import tune_malloc
    from api.protocol import LimitedHttpToolsProtocol

    settings = _settings(args, host=args.host, port=args.port)
    _check_port(settings.host, settings.port)  # one line naming the setting, not uvicorn's exit 3
    # Stream buffers are reused instead of piling up per thread (api/hub/streaming.py); uvicorn's worker
    # processes get the same through glibc's environment variables.
    for name, value in tune_malloc().items():
        os.environ.setdefault(name, str(value))
    # httptools, plus the header-size and header-time limits it lacks (api/protocol.py)
    http = functools.partial(LimitedHttpToolsProtocol, max_header_bytes=settings.max_header_bytes,
                             header_timeout=settings.header_timeout_seconds)
    # log_config=None: our handler (api/logs.py, installed by _settings; app_from_env in each worker process)
    # stays the only one; uvicorn's access log is off because api/observability.py writes hubgate's own.
    common = dict(host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False, http=http,
                  ws="none",  # no WebSocket route: an Upgrade is just an HTTP request
                  log_config=None,
                  timeout_graceful_shutdown=settings.shutdown_timeout_seconds)  # a slow download must not hold SIGTERM
    if settings.workers > 1:
        from api.app import build_services
        from registry import secrets

        # Once, before the workers start: migrate the DB and create the instance's signing and secret
        # keys, so that workers starting at once neither race to write them nor sign with different keys.
        svc = build_services(settings)
        secrets.load_or_create_key(settings.key_file)
        svc.close()
        svc.engine.dispose()
        _run_uvicorn(uvicorn, "api.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        app = create_app(settings)
        settle_heap()
        _run_uvicorn(uvicorn, app, **common)
    return EXIT_OK


def _check_port(host: str, port: int) -> None:
    """Bind the address as uvicorn will (SO_REUSEADDR), then let it go: refuse a port in use in one line."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror} "
                                    "(another process has it? set HUBGATE_PORT / --port, or HUBGATE_HOST / --host)") from exc


def _run_uvicorn(uvicorn: Any, app: Any, **options: Any) -> None:
    try:
        uvicorn.run(app, **options)
    except SystemExit as exc:  # uvicorn exits 3 when it cannot start: that is not "verification failed"
        if exc.code not in (0, None):
            from registry.errors import HubgateError

            raise HubgateError(f"the server could not start (uvicorn exit {exc.code}; see the log above)") from None


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the Hub-compatible API (127.0.0.1:8080 by default)")
    p.add_argument("--host", help="address to bind (HUBGATE_HOST)")
    p.add_argument("--port", type=int, help="port to bind (HUBGATE_PORT)")
    p.set_defaults(func=_cmd_serve)


def _cmd_import(args: argparse.Namespace) -> int:
    from api.app import build_services
    from mirror.importer import import_folder

    from registry.types import RepoRef

    repo = RepoRef.parse(args.repo_type, args.repo)
    svc = build_services(_settings(args))
    from mirror.scan.gate import Gate

    result = import_folder(svc.engine, svc.store, Path(args.path), repo, revision=args.revision, refs=args.ref or None,
                           signer=svc.signer, instance=svc.settings.instance_name,
                           gate=Gate(svc.store, svc.settings.scan_limits, signer=svc.signer), actor=_cli_actor(),
                           approve_code=args.approve_code, xet=cli_xet.builder(svc), **_progress(args, "import"))
    m = result.manifest
    state = "imported" if result.publish.created else "already present"
    refs = ", ".join(result.publish.refs_moved) or "none moved"
    print(f"{state}: {repo.type.value} {repo.id} @ {m.commit} ({len(m.files)} files, {m.total_size} bytes); refs: {refs}")
    return EXIT_OK


def _add_import_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="import a local folder or an HF cache snapshot folder as a repo")
    p.add_argument("path", help="folder to import")
    p.add_argument("--repo", required=True, help="repo id, e.g. acme/tiny")
    p.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    p.add_argument("--revision", help="40-hex commit sha (default: derived from the content)")
    p.add_argument("--ref", action="append", help="ref to point at the commit (repeatable; default main)")
    p.add_argument("--approve-code", action="store_true",
                   help="you reviewed the folder's code files (*.py, …): record your approval of them, by sha256")
    p.set_defaults(func=_cmd_import)


CLI_ACTOR_NAME = "cli"


def _cli_actor() -> "Actor":
    import getpass

    from registry.audit import Actor

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return Actor(f"{CLI_ACTOR_NAME}:{user}", "admin", "cli")


def _print_request(r) -> None:  # type: ignore[no-untyped-def]
    from api.admin.schemas import RequestPublic

    print(RequestPublic.of(r).model_dump_json(indent=2))


def _cmd_token_create(args: argparse.Namespace) -> int:
    from api.app import build_services
    from registry import tokens
    from registry.db import session_scope

    svc = build_services(_settings(args))
    days = None if args.no_expiry else args.expires_days or svc.settings.token_expiry_days
    with session_scope(svc.engine) as session:
        t = tokens.create(session, name=args.name, role=args.role, actor=_cli_actor(), key=svc.token_key,
                          expires_days=days)
    expiry = f"expires {t.expires_at:%Y-%m-%d %H:%M} UTC" if t.expires_at else "never expires"
    print(f"token {t.token_id} ({t.role}) for {t.name}, {expiry}; shown once, store it now:")
    print(t.token)
    return EXIT_OK


def _add_token_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("token", aliases=["tokens"], help="API tokens (also: hubgate tokens)")
    tsub = p.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser("create", help="create a token (its secret is printed once)")
    c.add_argument("--role", required=True, choices=["reader", "requester", "admin"])
    c.add_argument("--name", default="admin", help="who the token is for")
    expiry = c.add_mutually_exclusive_group()
    expiry.add_argument("--expires-days", type=int, help="valid this many days (default HUBGATE_TOKEN_EXPIRY_DAYS)")
    expiry.add_argument("--no-expiry", action="store_true", help="never expires (an explicit choice)")
    c.set_defaults(func=_cmd_token_create)
    cli_access.add_token_commands(tsub)


def _cmd_request(args: argparse.Namespace) -> int:
    from api.admin.routes import submit_request
    from api.app import build_services

    svc = build_services(_settings(args))
    req = submit_request(svc, args.repo_type, args.repo, args.revision, args.allow, args.ignore, args.reason,
                         _cli_actor())
    _print_request(req)
    return EXIT_OK


def _add_request_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("request", help="request a repo from the upstream at a revision (shows policy findings)")
    p.add_argument("repo", help="repo id, e.g. openai-community/gpt2")
    p.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    p.add_argument("--revision", default="main", help="branch, tag or full commit sha (default main)")
    p.add_argument("--allow", action="append", help="only files matching this pattern (repeatable)")
    p.add_argument("--ignore", action="append", help="skip files matching this pattern (repeatable)")
    p.add_argument("--reason", default="", help="why the repo is needed")
    p.set_defaults(func=_cmd_request)


def _cmd_requests(args: argparse.Namespace) -> int:
    import json

    from sqlmodel import Session

    from api.app import build_services
    from mirror import intake
    from registry import workflow

    if args.action != "list" and not args.file:
        raise InvalidInputError(f"hubgate requests {args.action} needs a FILE")
    svc = build_services(_settings(args))
    if args.action == "export":
        doc = intake.export_requests(svc.engine, instance=svc.settings.instance_name)
        Path(args.file).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"{len(doc['requests'])} pending requests written to {args.file}")
        return EXIT_OK
    if args.action == "import":
        try:
            document = json.loads(Path(args.file).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"Cannot read requests file {args.file}: {exc}") from exc
        created = intake.import_requests(svc.engine, svc.upstream(), svc.settings.policy, document)
        for r in created:
            print(f"request {r.pk}: {r.repo_type}:{r.repo_id}@{r.revision} -> {r.commit} ({r.state}, {r.verdict})")
        print(f"{len(created)} requests imported")
        return EXIT_OK
    with Session(svc.engine) as session:
        rows = workflow.list_requests(session, state=args.state, limit=args.limit)
    print(f"{'ID':>5}  {'STATE':<10} {'VERDICT':<12} {'REPO':<40} {'REVISION':<12} COMMIT")
    for r in rows:
        print(f"{r.pk:>5}  {r.state:<10} {r.verdict:<12} {r.repo_type + ':' + r.repo_id:<40} {r.revision:<12} {r.commit}")
    return EXIT_OK


def _add_requests_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("requests", help="list mirror requests; carry them across the air gap (export/import)")
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "export", "import"],
                   help="show ID: one request (findings, changes, progress, error); export: write the pending "
                        "offline requests to FILE; import: create them here from FILE")
    p.add_argument("file", nargs="?", help="request ID for show; requests file for export/import")
    p.add_argument("--state", choices=["pending", "approved", "syncing", "available", "rejected", "failed", "blocked"])
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=_cmd_requests)


def _decide(args: argparse.Namespace, action: str) -> int:
    from api.app import build_services
    from registry import workflow
    from registry.db import session_scope

    svc = build_services(_settings(args))
    with session_scope(svc.engine) as session:
        if action == "reject":
            req = workflow.reject(session, args.id, _cli_actor(), args.reason)
        elif action == "approve":
            req = workflow.approve(session, args.id, _cli_actor(), reason=args.reason,
                                   require_second_approver=svc.settings.require_second_approver)
        else:
            req = getattr(workflow, action)(session, args.id, _cli_actor())
    _print_request(req)
    return EXIT_OK


def _add_decision_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for action, text in (("approve", "approve a pending request (queues its sync)"),
                         ("reject", "reject a pending, failed or blocked request"),
                         ("retry", "retry a failed or blocked request")):
        p = sub.add_parser(action, help=text)
        p.add_argument("id", type=int, help="request id")
        if action == "reject":
            p.add_argument("--reason", required=True)
        if action == "approve":
            p.add_argument("--reason", help="why (required when the licence is missing or 'other')")
        p.set_defaults(func=lambda a, action=action: _decide(a, action))


def _cmd_worker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from api.app import build_services, build_worker, settle_heap

    settings = _settings(args)
    svc = build_services(settings)
    worker = build_worker(svc)
    settle_heap()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    worker.start(args.threads or settings.worker_threads)
    logging.getLogger(__name__).info("worker %s running", worker.worker_id)
    if settings.worker_metrics_port:  # the worker's own counters (syncs, upstream retries) for Prometheus
        from api.observability import serve_worker_metrics

        serve_worker_metrics(settings, svc)
    done.wait()
    log = logging.getLogger(__name__)
    log.info("worker %s stopping: no new jobs; waiting up to %gs for running ones", worker.worker_id,
             settings.shutdown_timeout_seconds)
    if not worker.stop(settings.shutdown_timeout_seconds):
        log.warning("jobs still running after HUBGATE_SHUTDOWN_TIMEOUT_SECONDS=%g: exiting; they return to the "
                    "queue when their lease expires", settings.shutdown_timeout_seconds)
    return EXIT_OK


def _add_worker_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run sync workers without the API")
    p.add_argument("--threads", type=int, help="jobs at once (HUBGATE_WORKER_THREADS)")
    p.set_defaults(func=_cmd_worker)


def _cmd_upstream_token(args: argparse.Namespace) -> int:
    from api.app import build_services
    from registry import secrets
    from registry.db import session_scope

    settings = _settings(args)
    svc = build_services(settings)
    token = sys.stdin.readline().strip()
    if not token:
        raise InvalidInputError("No token on standard input")
    key = secrets.load_or_create_key(settings.key_file)
    with session_scope(svc.engine) as session:
        secrets.set_secret(session, key, secrets.UPSTREAM_TOKEN, token, actor=_cli_actor())
    print("upstream token stored (encrypted)")
    return EXIT_OK


def _add_upstream_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("upstream-token", help="store the upstream Hub token, encrypted (read from stdin)")
    p.add_argument("action", choices=["set"])
    p.set_defaults(func=_cmd_upstream_token)


def _cmd_keys(args: argparse.Namespace) -> int:
    from mirror import signing

    settings = _settings(args)
    path = settings.signing_key_path
    if args.keys_command == "generate":
        key = signing.generate_key(path, overwrite=args.force)
        print(f"signing key {signing.key_id(key.public_key())} written to {path} (mode 0600)")
    else:
        key = signing.load_private_key(path)
        sys.stdout.write(signing.public_pem(key.public_key()).decode())
    return EXIT_OK


def _add_keys_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keys", help="the snapshot signing key (ECDSA P-256)")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    g = ksub.add_parser("generate", help="create the signing key (HUBGATE_SIGNING_KEY_FILE), owner-readable only")
    g.add_argument("--force", action="store_true", help="replace an existing key")
    g.set_defaults(func=_cmd_keys)
    e = ksub.add_parser("export-public", help="print the public key (PEM) for the importing side's HUBGATE_TRUSTED_KEYS")
    e.set_defaults(func=_cmd_keys)


def _cmd_verify(args: argparse.Namespace) -> int:
    from api.app import build_services, build_worker
    from mirror import scrub

    svc = build_services(_settings(args))
    report = scrub.scrub(svc.engine, svc.store, sample=args.sample, dry_run=args.dry_run, actor=_cli_actor(),
                         bytes_per_second=args.rate_mb * 1e6 if args.rate_mb else None, **_progress(args, "verify"))
    print(f"checked {report.checked} blobs ({report.bytes_checked} bytes): "
          f"{len(report.corrupt)} corrupt, {len(report.missing)} missing")
    for sha in report.corrupt:
        print(f"corrupt  {sha}" + ("" if args.dry_run else " (quarantined)"))
    for sha in report.missing:
        print(f"missing  {sha}")
    for name in report.snapshots_unavailable:
        print(f"unavailable  {name}")
    xet_ok = cli_xet.verify_and_print(svc, sample=args.sample, dry_run=args.dry_run)  # xorbs too (mirror/xet/)
    if args.repair:
        worker = build_worker(svc)
        for name in scrub.repair_from_upstream(svc.engine, svc.store, worker.syncer, gate=worker.syncer.gate):
            print(f"repaired  {name}")
        return EXIT_OK
    return EXIT_OK if report.ok and xet_ok else EXIT_VERIFY


def _add_verify_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("verify", help="re-hash stored blobs; quarantine corrupt ones; mark their snapshots unavailable")
    p.add_argument("--sample", type=float, help="check only this fraction of the blobs, chosen at random (0-1)")
    p.add_argument("--rate-mb", type=float, help="read at most this many MB/s")
    p.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    p.add_argument("--repair", action="store_true", help="then re-fetch missing blobs from the upstream")
    p.set_defaults(func=_cmd_verify)


def _cmd_gc(args: argparse.Namespace) -> int:
    from api.app import build_services
    from mirror import gc

    svc = build_services(_settings(args))
    report = gc.collect(svc.engine, svc.store, grace_seconds=args.grace_hours * 3600, dry_run=args.dry_run,
                        actor=_cli_actor(), **_progress(args, "gc"))
    verb = "would free" if args.dry_run else "freed"
    if args.dry_run:
        for item in report.items:
            print(f"would delete  {item.kind:<7} {item.name}  {item.size} bytes  {item.age_seconds / 3600:.1f} h old")
    print(f"{report.referenced} blobs referenced; {len(report.swept)} unreferenced blobs and "
          f"{report.uploads_swept} stale uploads swept; {verb} {report.bytes_freed} bytes; "
          f"{report.kept_young} young blobs kept; {report.partials_swept} abandoned partial writes swept")
    return EXIT_OK


def _add_gc_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gc", help="delete blobs no manifest references and abandoned partial writes "
                                  "(older than a grace period)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted (key, size, age); delete nothing")
    p.add_argument("--grace-hours", type=float, default=24.0,
                   help="keep unreferenced blobs, uploads and partial writes younger than this")
    p.set_defaults(func=_cmd_gc)


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from api.app import build_services
    from mirror.rebuild import rebuild_index

    svc = build_services(_settings(args))
    report = rebuild_index(svc.engine, svc.store, force=args.force, actor=_cli_actor())
    print(f"rebuilt {report.snapshots} snapshots and {report.refs} refs from the store ({report.skipped} skipped)")
    for name in report.unavailable:
        print(f"unavailable (blobs missing; repair with a re-import, a bundle or verify --repair)  {name}")
    return EXIT_OK


def _add_rebuild_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rebuild-index", help="recreate the database catalog from the object store")
    p.add_argument("--force", action="store_true", help="replace a non-empty catalog")
    p.set_defaults(func=_cmd_rebuild)


def _cmd_export(args: argparse.Namespace) -> int:
    from api.app import build_services
    from mirror.bundles import export_bundle

    settings = _settings(args)
    svc = build_services(settings)
    from registry.types import RepoRef

    repos = [RepoRef.parse(args.repo_type, r) for r in args.repo] if args.repo else None
    if repos is None and not args.all and args.since is None:
        raise InvalidInputError("Say what to export: --repo ID (repeatable), --all, or --since PREVIOUS_BUNDLE")
    result = export_bundle(
        svc.engine, svc.store, svc.signer, Path(args.out), repos=repos,
        since=Path(args.since) if args.since else None, form=args.form, volume_size=args.volume_size,
        instance=settings.instance_name, xet=not args.no_xet, **_progress(args, "export"),
    )
    print(f"exported {len(result.snapshots)} snapshots and {result.blobs} blobs ({result.blob_bytes} bytes) "
          f"as {result.form}; index sha256 {result.index_sha256}, signed by {result.key_id[:16]}")
    if result.xet_files:
        print(f"  {result.xet_files} files in Xet form, with {result.xorbs} new xorbs ({result.xorb_bytes} bytes)")
    for p in result.paths:
        print(f"  {p}")
    return EXIT_OK


def _add_export_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="write a signed, incremental bundle for the other side of the air gap")
    p.add_argument("--out", required=True, help="bundle folder (--form dir) or tar file path (--form tar)")
    p.add_argument("--repo", action="append", help="only this repo (repeatable)")
    p.add_argument("--repo-type", default="model", choices=["model", "dataset"], help="type of the --repo ids")
    p.add_argument("--all", action="store_true", help="every published snapshot")
    p.add_argument("--since", type=existing_path, help="a previous bundle (or its kept index): carry only what it did not")
    p.add_argument("--form", default="dir", choices=["dir", "tar"])
    p.add_argument("--volume-size", type=parse_size,
                   help="split the tar into volumes of this size (removable media): bytes, or 4G, 500M, 2GiB")
    p.add_argument("--no-xet", action="store_true",
                   help="carry every file as plain bytes (a version 1 bundle, for a sealed side whose hubgate "
                        "cannot read Xet bundles); by default a file with a Xet form travels as its record and new xorbs")
    p.set_defaults(func=_cmd_export)


def _cmd_import_bundle(args: argparse.Namespace) -> int:
    from api.app import build_services
    from mirror.bundles import import_bundle, load_trusted_keys

    settings = _settings(args)
    for key in settings.trusted_keys:  # a missing key file is a setting to fix, not a failed verification
        if not Path(key).is_file():
            raise InvalidInputError(f"HUBGATE_TRUSTED_KEYS names {key}: not found")
    svc = build_services(settings)
    from mirror.scan.gate import Gate

    result = import_bundle(svc.engine, svc.store, Path(args.path), trusted=load_trusted_keys(settings.trusted_keys),
                           actor=_cli_actor(), gate=Gate(svc.store, settings.scan_limits, signer=svc.signer),
                           xet=cli_xet.builder(svc), **_progress(args, "import-bundle"))
    print(f"bundle from {result.source_instance} (key {result.key_id[:16]}): {len(result.published)} snapshots "
          f"published, {len(result.unchanged)} unchanged, refs moved: {result.refs_moved or 'none'}; "
          f"{result.blobs_copied} blobs copied ({result.bytes_copied} bytes), {result.blobs_skipped} already here")
    if result.blobs_rebuilt or result.xorbs_copied or result.xorbs_skipped:
        print(f"{result.blobs_rebuilt} files rebuilt from xorbs; {result.xorbs_copied} xorbs copied "
              f"({result.xorb_bytes_copied} bytes), {result.xorbs_skipped} already here")
    cli_remote.print_import_outcome(result)
    for name, why in result.blocked.items():
        print(f"blocked  {name}: {why}", file=sys.stderr)
    return EXIT_BLOCKED if result.blocked else EXIT_OK


def _add_import_bundle_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import-bundle", help="verify a bundle against HUBGATE_TRUSTED_KEYS and publish its snapshots")
    p.add_argument("path", type=existing_path,
                   help="bundle folder, bundle.tar, bundle.tar.volumes.json or one of its volumes")
    p.set_defaults(func=_cmd_import_bundle)


EXIT_CODES_HELP = """exit codes: 0 ok; 1 the operation failed; 2 usage or configuration (bad arguments or setting, a file
not found, an unusable database, data dir or port); 3 verification failed; 4 content blocked by the scan;
5 refused (token missing, invalid, expired or role too low).

remote mode: with HUBGATE_URL (and HUBGATE_TOKEN or HF_TOKEN) the request, requests, approve, reject, retry,
token(s), grants, groups, repos, audit export, approve-code and override commands call that server's REST
API as the token's user; --local forces this machine's database (bootstrap: token create --role admin)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubgate", description="Hugging Face Hub mirror and registry",
                                     epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="TOML settings file (HUBGATE_CONFIG); accepted after the command too")
    parser.add_argument("--version", action="version", version=f"hubgate {VERSION}")
    parser.add_argument("--local", action="store_true",
                        help="use this machine's database even when HUBGATE_URL is set (accepted after the command too)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output (accepted after the command too)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _PARSERS:
        add(sub)
    cli_remote.attach(sub)
    _everywhere(parser)
    return parser


def _everywhere(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--local`` and ``--quiet`` after any (sub)command too, as operators type them."""
    seen: set[int] = set()
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            if id(child) in seen:  # an alias shares its parser
                continue
            seen.add(id(child))
            names = {o for a in child._actions for o in a.option_strings}
            if "--config" not in names:
                child.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            if "--local" not in names:
                child.add_argument("--local", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            if "--quiet" not in names and "-q" not in names:
                child.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            _everywhere(child)


_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    _add_serve_parser,
    _add_import_parser,
    _add_token_parser,
    _add_request_parser,
    _add_requests_parser,
    _add_decision_parsers,
    _add_worker_parser,
    _add_upstream_parser,
    _add_keys_parser,
    _add_verify_parser,
    _add_gc_parser,
    _add_rebuild_parser,
    _add_export_parser,
    _add_import_bundle_parser,
    *cli_scan.PARSERS,
    *cli_xet.PARSERS,
    *cli_access.PARSERS,
]


def main(argv: list[str] | None = None) -> int:
    from api import logs
    from api.exit_codes import classify

    logs.configure_from_environ()  # until the settings are loaded (then from them: _settings)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("hubgate: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - classify() re-raises what it does not know (a bug: traceback)
        code, message = classify(exc)
        logging.getLogger("hubgate.cli").debug("%s failed", args.command, exc_info=True)
        print(f"hubgate: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
