"""Sharded-checkpoint indexes (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``, any
``*.index.json`` with a ``weight_map``): every shard must be a clean relative name present in the snapshot.

Loaders join ``weight_map`` values to the index's folder and open them: a ``../`` or absolute name reads
outside the snapshot (transformers PR #46279 was this class of bug), a missing shard fails mid-load.
Shards are looked up in ``ScanContext.tree`` (the snapshot manifest), never on a file system.
"""

from __future__ import annotations

import json

from .base import FileScan, ScanContext, ScanFinding, ScanItem, Source
from .paths import path_problems

INDEX_MAX = 256 << 20


def check_index(doc: object, index_path: str, tree: dict[str, int]) -> list[ScanFinding]:
    """Findings for one parsed index; an index without a ``weight_map`` is not a weights index (none)."""
    if not isinstance(doc, dict) or "weight_map" not in doc:
        return []
    weight_map = doc["weight_map"]
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return [ScanFinding("index.json", f"{index_path}: weight_map must map tensor names to file names")]
    folder = index_path.rsplit("/", 1)[0] + "/" if "/" in index_path else ""
    findings = []
    bad = sorted({s for s in weight_map.values() if path_problems(s)})
    if bad:
        findings.append(ScanFinding("index.path", f"{index_path} names shards outside the plain relative grammar: "
                                    f"{', '.join(map(repr, bad[:5]))}", data={"shards": bad}))
    missing = sorted({s for s in weight_map.values() if s not in bad and folder + s not in tree})
    if missing:
        findings.append(ScanFinding("index.missing-shard", f"{index_path} names shards absent from the snapshot: "
                                    f"{', '.join(map(repr, missing[:5]))}", data={"shards": missing}))
    return findings


class IndexScanner:
    name = "index"

    def applies(self, fmt: str, path: str) -> bool:
        return fmt == "text" and path.lower().endswith(".index.json")

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        if src.size > INDEX_MAX:
            out.findings.append(ScanFinding("index.json", f"{item.path} is larger than {INDEX_MAX} bytes"))
            return
        try:
            doc = json.loads(src.read_at(0, src.size).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return  # the config scanner reports text that is not JSON
        out.findings.extend(check_index(doc, item.path, ctx.tree))
