"""Chat templates (Jinja): refuse the constructs that server-side template injection needs (security.md §5.3 J).

Templates are rendered by every client that calls ``apply_chat_template`` and by inference servers;
unsandboxed renderers have been exploited (CVE-2024-34359 llama-cpp-python, CVE-2026-5760 SGLang).
The check tokenizes with Jinja's own lexer (so escapes like ``'\\x5f'`` are decoded exactly as the
renderer decodes them, and text outside ``{{ }}``/``{% %}`` is never mistaken for code) and blocks:

* ``template.dunder``: a name containing ``__`` (``__class__``, ``_TemplateReference__context``), or a
  string literal, or the joined literals of one tag (``'_' ~ '_class__'``), spelling ``__word__``;
* ``template.name``: the names attribute walking and code execution use: ``attr``, ``getattr``, ``mro``,
  ``subclasses``, ``globals``, ``builtins``, ``import``, ``include``, ``extends``, ``os``, ``subprocess``,
  ``popen``, ``eval``, ``exec``.

A template Jinja cannot even tokenize cannot render either: ``template.syntax`` is a warning.
Ordinary templates (Llama 3, ChatML, Mistral, tool-calling ones) use none of these.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import jinja2
from jinja2.lexer import get_lexer

from .base import FileScan, ScanFinding

FORBIDDEN_NAMES = frozenset({"attr", "getattr", "mro", "subclasses", "globals", "builtins", "import", "include",
                             "extends", "os", "subprocess", "popen", "eval", "exec"})
_DUNDER = re.compile(r"__\w+__")
_TAG_END = {"variable_end", "block_end"}
_LEXER = get_lexer(jinja2.Environment())


def check_template(template: str, where: str) -> list[ScanFinding]:
    """Findings for one template; ``where`` names it in messages (``chat_template``, a GGUF key, ...)."""
    names: set[str] = set()
    dunders: set[str] = set()
    literals: list[str] = []
    try:
        for tok in _LEXER.tokenize(template):
            if tok.type == "name":
                if "__" in tok.value:
                    dunders.add(tok.value)
                elif tok.value in FORBIDDEN_NAMES:
                    names.add(tok.value)
            elif tok.type == "string":
                literals.append(tok.value)
                dunders.update(_DUNDER.findall(tok.value))
            elif tok.type in _TAG_END:
                dunders.update(_DUNDER.findall("".join(literals)))
                literals = []
    except jinja2.TemplateSyntaxError as e:
        return [ScanFinding("template.syntax", f"{where} does not tokenize as Jinja: {e.message}", "warn",
                            data={"template": where})]
    findings = []
    if dunders:
        findings.append(ScanFinding("template.dunder",
                                    f"{where} reaches dunder attributes: {', '.join(sorted(dunders))}",
                                    data={"template": where, "tokens": sorted(dunders)}))
    if names:
        findings.append(ScanFinding("template.name", f"{where} uses {', '.join(sorted(names))}",
                                    data={"template": where, "tokens": sorted(names)}))
    return findings


def sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8", "surrogatepass")).hexdigest()


def template_facts(out: FileScan, templates: Mapping[str, str]) -> None:
    """Record each template's sha256 (``chat_templates``: name -> sha256; ``chat_template_sha256`` for one)."""
    if not templates:
        return
    out.facts["chat_templates"] = {name: sha256(t) for name, t in sorted(templates.items())}
    if len(templates) == 1:
        out.facts["chat_template_sha256"] = next(iter(out.facts["chat_templates"].values()))
