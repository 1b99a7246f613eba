"""The image: built from hash-locked requirements by a multi-stage Dockerfile, run as a non-root user.

No Docker engine is available to the tests, so the Dockerfile is parsed, the locks are checked against
pyproject.toml and against the dependency metadata of what is installed here, and hubgate's wheel is built
(as the image's build stage does) to prove it carries every file of the three packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .tools import ROOT

LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REFRESH = "deploy/refresh-lock.sh"
# The image's Python (Dockerfile: python:3.11.x-slim, Linux): environment markers are evaluated for it.
IMAGE_ENV = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
             "python_version": "3.11", "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256, …])}; fails on any line that is not a hashed ``name==version``."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert m, f"{path.name}: not a pinned, hashed requirement: {line[:120]!r}"
        entries[canonicalize_name(m.group(1))] = (m.group(2), re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
    return entries


def runtime_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies plus the postgres extra: what the image installs."""
    deps = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["postgres"]
    return [Requirement(d) for d in deps]


def stages(dockerfile: str) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) grouped by FROM."""
    kept = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(kept))
    result: list[list[str]] = [[]]
    for line in (raw.strip() for raw in text.splitlines()):
        if line.upper().startswith("FROM "):
            result.append([])
        if line:
            result[-1].append(line)
    return result


# --- the locks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lock", [LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_every_locked_requirement_is_pinned_with_a_hash(lock: Path) -> None:
    entries = parse_lock(lock)
    assert entries
    for name, (version, hashes) in entries.items():
        assert hashes, name
        assert not re.search(r"[*<>!~]", version), (name, version)
    assert REFRESH in lock.read_text()  # the header names the command that made it


def test_lock_covers_every_runtime_dependency_within_its_range() -> None:
    locked = parse_lock(LOCK)
    missing = [str(r) for r in runtime_requirements() if canonicalize_name(r.name) not in locked]
    assert not missing, f"requirements.lock lacks {missing}: run {REFRESH}"
    outside = [(str(r), locked[canonicalize_name(r.name)][0]) for r in runtime_requirements()
               if not r.specifier.contains(locked[canonicalize_name(r.name)][0], prereleases=True)]
    assert not outside, f"locked versions outside pyproject.toml's ranges {outside}: run {REFRESH}"


def test_lock_holds_the_whole_dependency_closure() -> None:
    """Through the metadata of the installed distributions (extras followed, markers for the image's
    Python): every dependency of a dependency is locked too. pip's hash mode and `pip check` in the build
    stage prove it again at build time."""
    locked = parse_lock(LOCK)
    todo = [(r, frozenset(r.extras)) for r in runtime_requirements()]
    seen: set[tuple[str, frozenset[str]]] = set()
    unchecked = []
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        assert name in locked, f"{name} (needed through {req}) is not in requirements.lock: run {REFRESH}"
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            unchecked.append(name)
            continue
        for spec in dist.requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({**IMAGE_ENV, "extra": e}) for e in extras | {""}):
                todo.append((dep, frozenset(dep.extras)))
    assert len(unchecked) <= 3, f"too few locked packages installed here to check the closure: {unchecked}"


def test_build_lock_pins_the_build_backend() -> None:
    locked = parse_lock(BUILD_LOCK)
    for spec in PYPROJECT["build-system"]["requires"]:
        req = Requirement(spec)
        assert canonicalize_name(req.name) in locked
        assert req.specifier.contains(locked[canonicalize_name(req.name)][0])


# --- the Dockerfile --------------------------------------------------------------------------------------

def test_dockerfile_installs_only_from_the_locks_and_hubgate_without_deps() -> None:
    build, final = stages((ROOT / "Dockerfile").read_text())[1:]
    runs = " ".join(i for i in build if i.upper().startswith("RUN "))
    pip_installs = re.findall(r"pip (?:--python \S+ )?install [^&]*", runs)
    assert any("--require-hashes -r requirements.lock" in c for c in pip_installs)
    assert any("--require-hashes" in c and "-r requirements-build.lock" in c for c in pip_installs)
    others = [c for c in pip_installs if "--require-hashes" not in c]
    assert others and all("--no-deps" in c and "--no-index" in c for c in others), others  # hubgate's own wheel
    assert re.search(r"pip --python /opt/hubgate/bin/python check", runs)
    assert "venv --without-pip /opt/hubgate" in runs  # no pip, no setuptools in the runtime venv
    assert "--no-build-isolation" in runs  # the locked setuptools builds it, nothing unpinned is fetched


def test_final_stage_is_non_root_without_build_tools() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    preamble, build, final = stages(dockerfile)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base  # exact, no 'latest'
    assert build[0] == "FROM ${PYTHON_IMAGE} AS build" and final[0] == "FROM ${PYTHON_IMAGE}"
    users = [i.split()[1] for i in final if i.upper().startswith("USER ")]
    assert users, "the final stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users  # numeric: runAsNonRoot can verify it
    text = " ".join(final)
    assert not re.search(r"\b(pip|apt-get|apt|gcc|make|cc)\s+(install|wheel)\b", text), text
    copies = [i for i in final if i.upper().startswith("COPY ")]
    assert copies == ["COPY --from=build /opt/hubgate /opt/hubgate"]
    assert 'ENTRYPOINT ["hubgate"]' in final and 'CMD ["serve"]' in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)


def test_hubgates_wheel_carries_every_file_of_its_packages(tmp_path: Path) -> None:
    """The image installs hubgate from its wheel, not from the checkout: templates, static files and
    migrations missing from package-data would be missing in the image."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
                            "pyproject.toml", "README.md", "registry", "mirror", "api"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"  # a copy, as the build stage has: setuptools writes build/ beside its sources
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(tmp_path / "wheels"), str(src)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("hubgate-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    tracked = [f for f in files if f.startswith(("registry/", "mirror/", "api/")) and (ROOT / f).is_file()]
    missing = sorted(f for f in tracked if f not in inside)
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
