"""Remote code and chat templates in configuration files (security.md §5.3), plus JSON well-formedness.

Nothing here blocks remote code itself: the gate decides code approval from the facts recorded here.

* ``code``: any ``.py .pyc .so .dll .dylib .sh .ipynb`` file, anywhere (rule C1);
* ``auto_map`` (C2): every value of the ``auto_map`` of the transformers config files; values of the
  form ``org/repo--module.Class`` make transformers fetch code from *another* repo, unpinned (C3):
  those repos go to ``auto_map_repos``; local values name modules of this repo (``auto_map_modules``);
* ``custom_pipelines`` (C4) in ``config.json``: task -> implementation;
* chat templates in ``tokenizer_config.json``, ``processor_config.json``, ``chat_template.json`` and
  ``*.jinja`` files: checked (``templates.check_template``) and hashed.

A ``.json`` file whose text is not JSON gets a ``format.mismatch`` warning: a broken config breaks
loading but runs nothing (the bytes were already classified as text, so no parser runs code on them).
"""

from __future__ import annotations

import json
from typing import Any

from .base import FileScan, ScanContext, ScanFinding, ScanItem, Source
from .templates import check_template, template_facts

CODE_EXTENSIONS = frozenset({".py", ".pyc", ".so", ".dll", ".dylib", ".sh", ".ipynb"})
CONFIG_NAMES = frozenset({"config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                          "image_processor_config.json", "feature_extractor_config.json"})
TEMPLATE_NAMES = frozenset({"tokenizer_config.json", "processor_config.json", "chat_template.json"})
JSON_MAX = 64 << 20  # larger .json files (datasets) are not parsed


def is_code_path(path: str) -> bool:
    """Whether a repo path is code a client could run (rule C1), by its extension."""
    name = path.rsplit("/", 1)[-1].lower()
    return any(name.endswith(ext) for ext in CODE_EXTENSIONS)


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _load_json(src: Source, out: FileScan, path: str) -> Any:
    try:
        return json.loads(src.read_at(0, src.size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        out.findings.append(ScanFinding("format.mismatch", f"{path} is named .json but is not valid JSON: {e}",
                                        "warn", data={"extension": ".json", "detected": "text", "expected": ["json"]}))
        return None


def _strings(value: Any) -> list[str]:
    """auto_map values are a string or a list like ``["tok--m.Slow", null]``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def remote_code_facts(doc: dict[str, Any], out: FileScan) -> None:
    """``auto_map``, ``auto_map_repos``, ``auto_map_modules`` and ``custom_pipelines`` facts of one config."""
    refs: list[str] = []
    auto_map = doc.get("auto_map")
    if isinstance(auto_map, dict):
        for value in auto_map.values():
            refs += _strings(value)
        out.facts["auto_map"] = refs
    pipelines = doc.get("custom_pipelines")
    if isinstance(pipelines, dict) and pipelines:
        impls = {task: spec.get("impl") for task, spec in pipelines.items() if isinstance(spec, dict)}
        out.facts["custom_pipelines"] = impls
        refs += [i for i in impls.values() if isinstance(i, str)]
    repos = sorted({r.split("--", 1)[0] for r in refs if "--" in r})
    modules = sorted({r.rsplit(".", 1)[0] for r in refs if "--" not in r and "." in r})
    if repos:
        out.facts["auto_map_repos"] = repos
    if modules:
        out.facts["auto_map_modules"] = modules


def _templates(doc: Any, name: str) -> dict[str, str]:
    """Templates in a tokenizer/processor config: a string, or a list of ``{name, template}``."""
    value = doc.get("chat_template") if isinstance(doc, dict) else None
    if isinstance(value, str):
        return {"chat_template": value}
    if isinstance(value, list):
        return {f"chat_template.{t['name']}": t["template"] for t in value
                if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)}
    return {}


class ConfigScanner:
    """Code files, JSON configs (remote code, templates) and ``.jinja`` templates."""

    name = "config"

    def applies(self, fmt: str, path: str) -> bool:
        low = path.lower()
        return is_code_path(path) or (fmt in ("text", "empty") and (low.endswith(".json") or low.endswith(".jinja")))

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        if is_code_path(item.path):
            out.facts["code"] = True
        name = _basename(item.path)
        templates: dict[str, str] = {}
        if name.lower().endswith(".jinja"):
            text = src.read_at(0, src.size).decode("utf-8", "replace")
            templates = {name: text}
        elif name.lower().endswith(".json") and src.size <= JSON_MAX:
            doc = _load_json(src, out, item.path)
            if isinstance(doc, dict) and name in CONFIG_NAMES:
                remote_code_facts(doc, out)
            if name in TEMPLATE_NAMES:
                templates = _templates(doc, name)
        for where, template in sorted(templates.items()):
            out.findings.extend(check_template(template, where=f"{item.path}: {where}"))
        template_facts(out, templates)
