"""Which files the Hub stores in LFS: the repo's ``.gitattributes`` rules, or the Hub's defaults."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

# The .gitattributes the Hub writes into every new model and dataset repo.
HUB_DEFAULT_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    # dataset repos add these
    "*.lz4", "*.mds", "*.mp3", "*.ogg", "*.wav", "*.flac", "*.m4a", "*.bmp", "*.gif", "*.jpeg",
    "*.jpg", "*.png", "*.tiff", "*.webp", "*.mp4", "*.avi", "*.mkv", "*.mov", "*.webm", "*.gguf",
)


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    anchored: bool  # a pattern with a "/" matches from the repo root, else any basename
    lfs: bool


def _compile(pattern: str) -> re.Pattern[str]:
    # "**/" spans folders, "*" does not cross "/".
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            j = pattern.find("]", i)
            if j == -1:
                out.append(re.escape("["))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i : j + 1])[4:-3])
                i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


class LfsRules:
    """Matches paths against gitattributes ``filter=lfs`` rules; the last matching line wins, as in git."""

    def __init__(self, rules: list[_Rule]) -> None:
        self._rules = rules

    @classmethod
    def hub_default(cls) -> "LfsRules":
        return cls.from_patterns(HUB_DEFAULT_PATTERNS)

    @classmethod
    def from_patterns(cls, patterns: tuple[str, ...] | list[str]) -> "LfsRules":
        return cls([_Rule(_compile(p.lstrip("/")), "/" in p, True) for p in patterns])

    @classmethod
    def from_gitattributes(cls, text: str) -> "LfsRules":
        rules = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pattern, *attrs = line.split()
            if "filter=lfs" in attrs:
                lfs = True
            elif "-filter" in attrs or "!filter" in attrs or any(a.startswith("filter=") for a in attrs):
                lfs = False
            else:
                continue
            rules.append(_Rule(_compile(pattern.lstrip("/")), "/" in pattern, lfs))
        return cls(rules)

    def is_lfs(self, path: str) -> bool:
        result = False
        basename = path.rsplit("/", 1)[-1]
        for rule in self._rules:
            if rule.regex.match(path if rule.anchored else basename):
                result = rule.lfs
        return result
