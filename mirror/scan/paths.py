"""Path grammar over a whole tree: names no client may be handed (security.md T11, §7.1, §7.4).

A repo path becomes a file name on every client that downloads it, on Linux, macOS and Windows,
and old huggingface_hub clients do not protect themselves. Refused: ``.git`` segments (a client
``local_dir`` inside a git checkout would write into the repository's own metadata), case and Unicode
normalisation twins (one overwrites the other on case-insensitive or normalising file systems),
trailing dots and spaces (Windows strips them, creating twins), control characters, ``.``/``..``/
empty segments, backslashes and absolute paths. Pure functions: usable before anything is downloaded.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

from .base import ScanFinding

MAX_LISTED = 100

_MESSAGES = {
    "path.absolute": "absolute path",
    "path.backslash": "backslash in a path",
    "path.control": "control character in a path",
    "path.dot-segment": "'.', '..' or empty path segment",
    "path.trailing-dot-space": "path segment ending in a dot or a space",
    "path.git": "'.git' path segment",
}


_SEGMENT = r"[A-Za-z0-9_\-](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_\-])?"
_PLAIN = re.compile(f"{_SEGMENT}(?:/{_SEGMENT})*")


def path_problems(path: str) -> list[str]:
    """The rules one path breaks on its own (twins need the whole tree: ``check_tree``)."""
    if _PLAIN.fullmatch(path):  # the common case, cheaply: ASCII segments not starting or ending with a dot
        return []
    rules = []
    if path.startswith("/") or (len(path) >= 2 and path[1] == ":" and path[0].isascii() and path[0].isalpha()):
        rules.append("path.absolute")
    if "\\" in path:
        rules.append("path.backslash")
    if any(unicodedata.category(c) == "Cc" for c in path):
        rules.append("path.control")
    segments = path.split("/")
    if path.startswith("/"):
        segments = segments[1:]
    if any(s in ("", ".", "..") for s in segments):
        rules.append("path.dot-segment")
    if any(s not in (".", "..") and s[-1:] in (".", " ") for s in segments):
        rules.append("path.trailing-dot-space")
    if any(s.casefold() == ".git" for s in segments):
        rules.append("path.git")
    return rules


def check_tree(paths: Iterable[str]) -> list[ScanFinding]:
    """Blocking findings for every path of the tree that breaks the grammar; ``data["paths"]`` names them.

    One finding per rule for per-path rules; one per group for ``path.case-twin`` and ``path.nfc-twin``
    (directories count: ``Model/a`` and ``model/b`` are twins through their folders).
    """
    all_paths = sorted(set(paths))
    by_rule: dict[str, list[str]] = defaultdict(list)
    for p in all_paths:
        for rule in path_problems(p):
            by_rule[rule].append(p)
    findings = [_finding(rule, _MESSAGES[rule], listed) for rule, listed in sorted(by_rule.items())]
    findings += _twins(all_paths)
    return findings


def _twins(paths: list[str]) -> list[ScanFinding]:
    names = set(paths)
    for p in paths:  # folders too: a file "A/x" and a file "a/y" collide through "A" and "a"
        parts = p.split("/")
        names.update("/".join(parts[:i]) for i in range(1, len(parts)))
    nfc: dict[str, set[str]] = defaultdict(set)
    for n in names:
        nfc[unicodedata.normalize("NFC", n)].add(n)
    folded: dict[str, set[str]] = defaultdict(set)
    for norm in nfc:
        folded[norm.casefold()].add(norm)
    findings = [_finding("path.nfc-twin", "paths that differ only in Unicode normalisation", _expand(group, paths))
                for group in nfc.values() if len(group) > 1]
    findings += [_finding("path.case-twin", "paths that differ only in case",
                          _expand({n for norm in group for n in nfc[norm]}, paths))
                 for group in folded.values() if len(group) > 1]
    return sorted(findings, key=lambda f: (f.rule, f.data["paths"]))


def _expand(group: set[str], paths: list[str]) -> list[str]:
    """The tree's paths at or under the colliding names (the files a user would look for)."""
    return sorted(p for p in paths if any(p == g or p.startswith(g + "/") for g in group))


def _finding(rule: str, message: str, listed: list[str]) -> ScanFinding:
    more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
    return ScanFinding(rule, f"{message}: {', '.join(map(repr, listed[:5]))}{more}",
                       data={"paths": listed[:MAX_LISTED], "count": len(listed)})
