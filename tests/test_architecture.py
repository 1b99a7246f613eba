"""Layering rules, checked on the source with ``ast`` (nothing is imported).

registry (metadata, decisions)  <-  mirror (bytes)  <-  api (HTTP, CLI: the composition root)
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("registry", "mirror", "api")
SKIP_DIRS = {".venv", "venv", ".git", "tests", "node_modules", "build", "dist", "__pycache__"}


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    line: int

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every module ``source`` imports, relative imports resolved, ``import_module("x")`` included."""
    found: list[Import] = []
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                if node.level - 1 > len(base_parts):
                    raise ValueError(f"{module}:{node.lineno}: relative import beyond the top package")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if node.module is None:  # "from . import x": x may be a module
                found += [Import(f"{base}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append(Import(base, node.lineno))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append(Import(arg.value, node.lineno))
    return found


def source_files(*packages: str) -> list[Path]:
    files: list[Path] = []
    for pkg in packages:
        files += sorted((ROOT / pkg).rglob("*.py"))
    return files


def all_project_files() -> list[Path]:
    """Every .py file of the repo outside tests/ and virtual environments."""
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".") and not d.endswith(".egg-info")]
        out += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return sorted(out)


def imports_in(path: Path) -> list[Import]:
    return imports_of(path.read_text("utf-8"), module_name(path), is_package=path.name == "__init__.py")


def violations(files: list[Path], forbidden: set[str]) -> list[str]:
    out = []
    for path in files:
        for imp in imports_in(path):
            if imp.top in forbidden:
                out.append(f"{path.relative_to(ROOT)}:{imp.line} imports {imp.module}")
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# -- the parser itself (so that the rules below can fail) ---------------------------------------


def test_parser_finds_plain_from_and_lazy_imports() -> None:
    src = (
        "import os, boto3.session as s\n"
        "from fastapi import FastAPI\n"
        "def f():\n"
        "    import uvicorn\n"
        "    from importlib import import_module\n"
        "    import_module('huggingface_hub')\n"
        "    __import__('moto')\n"
    )
    mods = {i.module for i in imports_of(src, "api.x")}
    assert {"os", "boto3.session", "fastapi", "uvicorn", "importlib", "huggingface_hub", "moto"} <= mods


def test_parser_resolves_relative_imports() -> None:
    src = "from . import layout\nfrom .. import errors\nfrom ..storage.s3 import S3Driver\nfrom ...api import app\n"
    mods = {i.module for i in imports_of(src, "mirror.storage.blobs")}
    assert mods == {"mirror.storage.layout", "mirror.errors", "mirror.storage.s3", "api"}
    pkg_mods = {i.module for i in imports_of("from . import x\n", "registry", is_package=True)}
    assert pkg_mods == {"registry.x"}


def test_parser_sees_the_real_tree() -> None:
    """If discovery or parsing broke, every rule below would pass vacuously."""
    for pkg in PACKAGES:
        assert len(source_files(pkg)) >= 3, f"no sources found under {pkg}/"
    s3 = {i.top for i in imports_in(ROOT / "mirror/storage/s3.py")}
    assert {"boto3", "botocore", "mirror"} <= s3
    app = {i.top for i in imports_in(ROOT / "api/app.py")}
    assert {"fastapi", "starlette", "registry", "mirror"} <= app
    cli = {i.module for i in imports_in(ROOT / "api/cli.py")}
    assert "uvicorn" in cli  # imported lazily inside a function
    assert violations([ROOT / "mirror/storage/s3.py"], {"boto3"}), "violations() must report a forbidden import"
    project = {_rel(p) for p in all_project_files()}
    assert "registry/types.py" in project and "api/cli.py" in project
    assert not any(p.startswith(("tests/", ".venv/")) for p in project)


# -- the rules ---------------------------------------------------------------------------------


def test_registry_depends_on_no_outer_layer_or_transport() -> None:
    forbidden = {"mirror", "api", "fastapi", "starlette", "boto3", "botocore", "httpx", "huggingface_hub",
                 "hf_transfer", "uvicorn", "moto", "requests"}
    assert violations(source_files("registry"), forbidden) == []


def test_mirror_does_not_depend_on_api_or_http_server() -> None:
    assert violations(source_files("mirror"), {"api", "fastapi", "starlette", "uvicorn"}) == []


def test_only_the_s3_driver_imports_boto() -> None:
    files = [p for p in source_files(*PACKAGES) if _rel(p) != "mirror/storage/s3.py"]
    assert violations(files, {"boto3", "botocore", "s3transfer"}) == []


def test_only_api_imports_the_web_framework() -> None:
    files = [p for p in source_files(*PACKAGES) if not _rel(p).startswith("api/")]
    assert violations(files, {"fastapi", "starlette", "uvicorn"}) == []


def test_nothing_outside_tests_imports_moto() -> None:
    assert violations(all_project_files(), {"moto"}) == []


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_source_file_parses(pkg: str) -> None:
    for path in source_files(pkg):
        ast.parse(path.read_text("utf-8"), filename=str(path))
