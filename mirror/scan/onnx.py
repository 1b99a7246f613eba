"""ONNX external data and operator domains (security.md §5.2), on the protobuf wire format.

An initializer stored outside the model names its file in ``external_data`` (``location``, ``offset``,
``length``); runtimes join that to the model's folder and read it. Older onnx and onnxruntime followed
``../`` and absolute paths (CVE-2022-25882, CVE-2024-27318, CVE-2026-27489, CVE-2026-34446). Every
tensor that can carry external data is visited: graph initializers and sparse initializers, node
attributes (``t``, ``tensors``, ``sparse_tensor(s)``, and subgraphs ``g``/``graphs`` recursively),
functions, and training graphs. Each ``location`` must be a plain relative NFC name naming a file
of the snapshot (``ScanContext.tree``, not the file system), and ``offset + length`` must fit in it.
Opset domains outside the standard ones are a warning: they need native custom-operator libraries.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Iterator

from . import protowire as pw
from .base import FileScan, ScanContext, ScanFinding, ScanItem, Source
from .paths import path_problems

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
                              "com.microsoft"})
MAX_DEPTH = 64
_EXTERNAL = 1
# message -> {field number: message kind} for fields that lead to tensors, graphs and domains
_PATHS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 8: "opset", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute", 9: "opset"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def _walk(src: Source, kind: str, start: int, end: int, depth: int) -> Iterator[tuple[str, pw.Field]]:
    """(kind, field) for every tensor and opset message reachable from the message at [start, end)."""
    if depth > MAX_DEPTH:
        raise pw.WireError(f"messages nested deeper than {MAX_DEPTH}")
    for f in pw.fields(src, start, end):
        child = _PATHS.get(kind, {}).get(f.number)
        if child is None or f.wire != pw.LEN:
            continue
        if child in ("tensor", "opset"):
            yield child, f
        else:
            yield from _walk(src, child, f.value, f.value + f.length, depth + 1)


def _external(src: Source, tensor: pw.Field) -> dict[str, str] | None:
    """A tensor's external_data entries if its data_location is EXTERNAL (or it has any entries)."""
    entries: dict[str, str] = {}
    external = False
    for f in pw.fields(src, tensor.value, tensor.value + tensor.length):
        if f.number == 14 and f.wire == pw.VARINT:
            external = f.value == _EXTERNAL
        elif f.number == 13 and f.wire == pw.LEN:
            kv = {g.number: pw.text(src, g) for g in pw.fields(src, f.value, f.value + f.length) if g.wire == pw.LEN}
            entries[kv.get(1, "")] = kv.get(2, "")
    return entries if external or entries else None


def check_location(entries: dict[str, str], model_path: str, tree: dict[str, int]) -> ScanFinding | None:
    """None if the external data reference stays inside the snapshot and fits its target."""
    loc = entries.get("location", "")
    data = {"location": loc}
    if not loc or path_problems(loc) or not unicodedata.is_normalized("NFC", loc):
        return ScanFinding("onnx.external-path", f"external data location {loc!r} is not a plain relative name",
                           data=data)
    folder = posixpath.dirname(model_path)
    target = f"{folder}/{loc}" if folder else loc
    if target not in tree:
        return ScanFinding("onnx.external-missing", f"external data file {target!r} is not in the snapshot", data=data)
    try:
        offset, length = int(entries.get("offset") or 0), int(entries.get("length") or 0)
    except ValueError:
        return ScanFinding("onnx.external-bounds", f"external data offset/length of {loc!r} are not integers",
                           data=data)
    if offset < 0 or length < 0 or offset + length > tree[target]:
        return ScanFinding("onnx.external-bounds", f"external data [{offset}, {offset + length}) runs past the end "
                           f"of {target!r} ({tree[target]} bytes)", data=data)
    return None


class OnnxScanner:
    name = "onnx"

    def applies(self, fmt: str, path: str) -> bool:
        return fmt == "onnx"

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        domains: set[str] = set()
        try:
            for kind, f in _walk(src, "model", 0, src.size, 0):
                if kind == "opset":
                    domains.update(pw.text(src, g) for g in pw.fields(src, f.value, f.value + f.length)
                                   if g.number == 1 and g.wire == pw.LEN)
                    continue
                entries = _external(src, f)
                if entries is not None:
                    finding = check_location(entries, item.path, ctx.tree)
                    if finding and finding not in out.findings:
                        out.findings.append(finding)
        except pw.WireError as e:
            out.findings.append(ScanFinding("onnx.parse", f"not a well-formed ONNX model: {e}"))
            return
        custom = sorted(domains - STANDARD_DOMAINS)
        if custom:
            out.findings.append(ScanFinding("onnx.custom-domain", f"operators from {', '.join(custom)} need native "
                                            "custom-op libraries", "warn", data={"domains": custom}))
