"""Run by the Xet tests in a fresh interpreter (HF_ENDPOINT, HF_HUB_DISABLE_XET are read at import):
``python xet_client.py '{"actions": [...]}'``; prints ``RESULT {json}``.

Actions: ["download", repo, file] (hf_hub_download), ["snapshot", repo], ["fs", repo, file, [[start, end], ...]]
(HfFileSystem ranged reads: sha256 of each), ["cli", repo] (``hf download``), ["transformers", repo],
["datasets", repo]. The result lists every file of the HF cache (path -> sha256 of its bytes, through links).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def cache_listing(hub: Path) -> dict[str, str]:
    out = {}
    for p in sorted(hub.rglob("*")):
        rel = p.relative_to(hub).as_posix()
        if p.is_dir() or rel.startswith(".locks") or "/.no_exist/" in f"/{rel}":
            continue
        if rel.split("/", 1)[0].startswith(("models--", "datasets--")):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main() -> None:
    args = json.loads(sys.argv[1])
    from huggingface_hub import HfFileSystem, hf_hub_download, snapshot_download

    results: list[object] = []
    for action in args["actions"]:
        kind = action[0]
        if kind == "download":
            path = hf_hub_download(action[1], action[2])
            results.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        elif kind == "snapshot":
            results.append(Path(snapshot_download(action[1])).name)
        elif kind == "fs":
            fs = HfFileSystem(skip_instance_cache=True)
            reads = []
            for start, end in action[3]:
                reads.append(hashlib.sha256(fs.cat_file(f"{action[1]}/{action[2]}", start=start, end=end)).hexdigest())
            results.append(reads)
        elif kind == "cli":
            hf = Path(sys.executable).with_name("hf")
            proc = subprocess.run([str(hf), "download", action[1]], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            results.append(Path(proc.stdout.strip().splitlines()[-1]).name)
        elif kind == "transformers":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(action[1])
            tok = AutoTokenizer.from_pretrained(action[1])
            ids = tok("hello world", return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=4, do_sample=False)
            results.append(out[0].tolist())
        elif kind == "datasets":
            from datasets import load_dataset

            ds = load_dataset(action[1])
            results.append({split: len(ds[split]) for split in ds})
        else:
            raise ValueError(kind)
    hub = Path(os.environ["HF_HOME"]) / "hub"
    print("RESULT " + json.dumps({"results": results, "cache": cache_listing(hub)}))


if __name__ == "__main__":
    main()
