#!/usr/bin/env bash
# Refresh the image's hash-locked requirements from pyproject.toml (README.md, "Docker image"):
#   requirements.lock        hubgate's runtime dependencies, with the postgres extra
#   requirements-build.lock  its build backend ([build-system] requires), used only in the build stage
# Both are for the image's Python (3.11, Linux) and carry every file's sha256 (pip --require-hashes).
# Pins already in the locks are kept; `deploy/refresh-lock.sh --upgrade` takes the newest releases.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=.venv/bin/uv
uv_version=0.13.9
if ! "$uv" --version 2>/dev/null | grep -q " $uv_version"; then
  .venv/bin/pip install -q --disable-pip-version-check "uv==$uv_version"
fi
common=(--generate-hashes --python-version 3.11 --python-platform linux --quiet
        --custom-compile-command deploy/refresh-lock.sh "$@")

# -o names the lock itself: uv keeps the pins it already holds unless --upgrade
"$uv" pip compile pyproject.toml --extra postgres "${common[@]}" -o requirements.lock
build_in="$(mktemp)"
trap 'rm -f "$build_in"' EXIT
.venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  > "$build_in"
"$uv" pip compile "$build_in" --no-annotate "${common[@]}" -o requirements-build.lock
echo "requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock) packages; requirements-build.lock: $(grep -c '^[a-z0-9]' requirements-build.lock)"
