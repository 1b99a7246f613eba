"""Run an HF client script in a fresh interpreter (transformers and datasets read HF_ENDPOINT at
import time) and return the JSON object it prints on its last ``RESULT`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .content import SCRIPTS


def client_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "HUBGATE_", "TRANSFORMERS_", "HF_DATASETS_"))}
    env.update({
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DISABLE_SAFETENSORS_CONVERSION": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "false",  # datasets would HEAD s3.amazonaws.com per load
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(SCRIPTS),
        "NO_PROXY": "127.0.0.1,localhost",
    })
    return env


def run_script(name: str, args: dict[str, Any], env: dict[str, str], timeout: float = 240) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        raise AssertionError(
            f"{name} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return json.loads(results[-1])
