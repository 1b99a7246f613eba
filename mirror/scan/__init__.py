"""Content scanners (issue 8, "Nothing unsafe passes approval"): what each stored file is, and what is wrong with it.

Entry points:

* ``scan_items(items, ctx, limits)``: scan files in a sandboxed child process; one ``FileScan`` each;
* ``check_tree(paths)``: the path grammar over a whole tree (pure; usable before download);
* ``is_code_path(path)``: whether a path is code a client could run (remote-code rule C1).

Verdicts fail closed: anything that cannot be parsed, opened or finished blocks.
"""

from __future__ import annotations

from .allowlist import ALLOWLIST_VERSION
from .base import (
    BLOCK,
    PASS,
    SCANNER_NAME,
    SCANNER_VERSION,
    SEVERITIES,
    WARN,
    FileScan,
    ScanContext,
    ScanFinding,
    ScanItem,
    Scanner,
    Source,
)
from .configs import is_code_path
from .limits import ScanLimits
from .paths import check_tree
from .registry import scan_file
from .sandbox import scan_items

__all__ = [
    "ALLOWLIST_VERSION", "BLOCK", "PASS", "SCANNER_NAME", "SCANNER_VERSION", "SEVERITIES", "WARN", "FileScan",
    "ScanContext", "ScanFinding", "ScanItem", "ScanLimits", "Scanner", "Source", "check_tree", "is_code_path",
    "scan_file", "scan_items",
]
