"""Fixture repos made in the test session, and the digests the Hub would give their files.

Everything here is deterministic: the same session builds the same bytes, so any two
hubgate servers fed these folders publish the same commits.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent / "scripts"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# What the Hub's default .gitattributes stores in LFS, for the suffixes these fixtures use.
LFS_SUFFIXES = (".safetensors", ".bin", ".parquet")

TINY_README = """---
license: mit
library_name: transformers
pipeline_tag: text-generation
tags:
- tiny
- hubgate-test
---
# tiny

A 1-layer GPT-2 made by the hubgate test suite.
"""


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data``: the Hub's ETag for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def hub_etag(path: str, data: bytes) -> str:
    """The unquoted ETag the Hub sends (and the HF cache names the blob by)."""
    return sha256(data) if is_lfs(path) else git_blob_sha1(data)


def safetensors_bytes(size: int, seed: int = 0) -> bytes:
    """A valid safetensors file of exactly ``size`` bytes (one U8 tensor of random data): what the content
    scan accepts as ``.safetensors``, where plain random bytes under that name are blocked as malformed."""
    rng = random.Random(seed)
    header_len = 128  # padded with spaces, as the format allows, so the total size is exact
    n = size - 8 - header_len
    if n < 0:
        raise ValueError(f"a safetensors file needs at least {8 + header_len} bytes")
    header = f'{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}'.encode()
    if len(header) > header_len:
        raise ValueError("header does not fit")
    return header_len.to_bytes(8, "little") + header.ljust(header_len, b" ") + rng.randbytes(n)


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its repo path (``/``-separated)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[p.relative_to(folder).as_posix()] = p.read_bytes()
    return out


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@dataclass(frozen=True)
class FixtureRepo:
    """One folder to publish: where it is, as which repo, and which refs point at it."""

    key: str
    repo_type: str  # "model" | "dataset"
    repo_id: str
    folder: Path
    refs: tuple[str, ...] = ("main",)
    files: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def url_prefix(self) -> str:
        """The prefix of its file URLs: ``/acme/x`` or ``/datasets/acme/x``."""
        return ("/datasets/" if self.repo_type == "dataset" else "/") + self.repo_id

    @property
    def api_prefix(self) -> str:
        return f"/api/{self.repo_type}s/{self.repo_id}"


def fixture_repo(key: str, repo_type: str, repo_id: str, folder: Path, refs: tuple[str, ...] = ("main",)) -> FixtureRepo:
    return FixtureRepo(key, repo_type, repo_id, folder, refs, read_tree(folder))


# ---------------------------------------------------------------------------------------------
# builders


def build_tiny_model(out: Path, *, timeout: float = 180) -> Path:
    """The README quick start's model (examples/make_tiny_model.py: a 1-layer GPT-2 + BPE tokenizer
    saved with transformers' own save_pretrained) with this suite's card; built in a subprocess, so
    that the test process never imports torch."""
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    env["HF_HOME"] = str(out.parent / "hf-home-build")
    proc = subprocess.run([sys.executable, str(EXAMPLES / "make_tiny_model.py"), str(tmp)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"building the tiny model failed:\n{proc.stdout}\n{proc.stderr}")
    (tmp / "README.md").write_text(TINY_README)
    tmp.rename(out)
    return out


def build_tiny_variant(tiny: Path, out: Path) -> Path:
    """acme/tiny as it was in an open pull request: the same files, another README."""
    shutil.copytree(tiny, out)
    (out / "README.md").write_text(TINY_README.replace("# tiny\n", "# tiny (PR #1 draft)\n"))
    return out


def _text(rng: random.Random, n: int) -> bytes:
    words = ["hub", "gate", "mirror", "blob", "commit", "tree", "page", "range", "etag", "cache"]
    out = []
    size = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return (" ".join(out))[:n].encode()


def build_tree_repo(out: Path) -> Path:
    """acme/tree: a sub-folder, a nested folder, LFS and regular files; 7 root entries, 11 in all,
    so that pages of 3 need several requests."""
    rng = random.Random(1234)
    files = {
        "README.md": b"---\nlicense: apache-2.0\ntags:\n- fixture\n---\n# tree\n",
        "a.txt": _text(rng, 6000),
        "b.txt": b"bee\n",
        "c.txt": b"",  # an empty file
        "d.bin": rng.randbytes(40_000),
        "e.txt": "\u00fcber caf\u00e9\n".encode(),
        "sub/x.txt": _text(rng, 300),
        "sub/y.json": b'{"y": 1}\n',
        "sub/deep/z.bin": rng.randbytes(3000),  # sorts before sub/x.txt, unlike os.walk's order
    }
    return write_tree(out, files)


def build_notes_repo(out: Path) -> Path:
    """beta/tiny-notes: another author's model (for list_models filters)."""
    return write_tree(out, {
        "README.md": b"---\nlicense: apache-2.0\npipeline_tag: text-classification\ntags:\n- tiny\n---\n# notes\n",
        "notes.txt": b"just notes\n",
    })


def parquet_frames():  # type: ignore[no-untyped-def]
    import pandas as pd

    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]

    def frame(n: int, start: int):  # type: ignore[no-untyped-def]
        return pd.DataFrame({
            "id": list(range(start, start + n)),
            "text": [" ".join(rng.choice(words) for _ in range(4)) for _ in range(n)],
            "label": [rng.randrange(3) for _ in range(n)],
            "score": [round(rng.random(), 6) for _ in range(n)],
        })

    return {"train": frame(300, 0), "test": frame(9, 1000)}


def build_parquet_dataset(out: Path) -> Path:
    frames = parquet_frames()
    (out / "data").mkdir(parents=True)
    for split, df in frames.items():
        df.to_parquet(out / "data" / f"{split}-00000-of-00001.parquet", index=False)
    (out / "README.md").write_text(
        "---\nlicense: mit\ntask_categories:\n- text-classification\npretty_name: tiny parquet\n---\n# parquet data\n"
    )
    return out


def csv_frame():  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame({
        "id": list(range(12)),
        "city": ["Paris", "Oslo", "Lima", "Kyiv", "Rome", "Cairo", "Quito", "Seoul", "Accra", "Hanoi", "Bern", "Riga"],
        "population": [2100000, 700000, 10000000, 2900000, 2800000, 9500000, 2800000, 9700000, 2500000, 8000000,
                       140000, 600000],
    })


def build_csv_dataset(out: Path) -> Path:
    out.mkdir(parents=True)
    csv_frame().to_csv(out / "cities.csv", index=False)
    return out


def lfs_pointer(data: bytes) -> bytes:
    """The pointer file git stores for an LFS file (the Hub's tree ``oid`` of an LFS file is its blob id)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256(data)}\nsize {len(data)}\n".encode()


def tree_oid(path: str, data: bytes) -> str:
    """The ``oid`` a Hub tree listing gives a file."""
    return git_blob_sha1(lfs_pointer(data) if is_lfs(path) else data)


def git_tree_ids(files: dict[str, bytes], workdir: Path) -> dict[str, str]:
    """Folder path ("" = root) -> git tree id, computed by git itself over the files as git stores
    them (LFS files as pointers): an independent oracle for the tree listing's folder oids."""
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=workdir, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    write_tree(workdir, {p: (lfs_pointer(d) if is_lfs(p) else d) for p, d in files.items()})
    git("init", "-q")
    git("add", "-A")
    root = git("write-tree")
    out = {"": root}
    for line in git("ls-tree", "-r", "-t", root).splitlines():
        meta, name = line.split("\t", 1)
        _mode, kind, oid = meta.split()
        if kind == "tree":
            out[name] = oid
    return out
