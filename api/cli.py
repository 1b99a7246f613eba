"""The ``hubgate`` command. Each command loads settings, builds services, calls one function, prints the result.

Exit codes: 0 success, 1 operational failure, 2 usage or configuration error, 3 verification failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from api.settings import ConfigError, Settings, load
from mirror.errors import DigestMismatchError
from registry.errors import HubgateError, InvalidInputError
from registry.types import RepoRef

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load(args.config, **{k: v for k, v in overrides.items() if v is not None})


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings(args, host=args.host, port=args.port)
    logging.getLogger(__name__).info("hubgate serving on http://%s:%d", settings.host, settings.port)
    common = dict(host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)
    if settings.workers > 1:
        uvicorn.run("api.app:app_from_env", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
    return EXIT_OK


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the Hub-compatible API (127.0.0.1:8080 by default)")
    p.add_argument("--host", help="address to bind (HUBGATE_HOST)")
    p.add_argument("--port", type=int, help="port to bind (HUBGATE_PORT)")
    p.set_defaults(func=_cmd_serve)


def _cmd_import(args: argparse.Namespace) -> int:
    from api.app import build_services
    from mirror.importer import import_folder

    repo = RepoRef.parse(args.repo_type, args.repo)
    svc = build_services(_settings(args))
    result = import_folder(svc.engine, svc.store, Path(args.path), repo, revision=args.revision, refs=args.ref or None)
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
    p.set_defaults(func=_cmd_import)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubgate", description="Hugging Face Hub mirror and registry")
    parser.add_argument("--config", type=Path, help="TOML settings file (HUBGATE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _PARSERS:
        add(sub)
    return parser


_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    _add_serve_parser,
    _add_import_parser,
]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"hubgate: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidInputError as exc:
        print(f"hubgate: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except DigestMismatchError as exc:
        print(f"hubgate: verification failed: {exc.message}", file=sys.stderr)
        return EXIT_VERIFY
    except HubgateError as exc:
        print(f"hubgate: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
