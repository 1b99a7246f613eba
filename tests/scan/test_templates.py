"""Chat templates: real-world shapes pass, injection constructs block."""

from __future__ import annotations

import json

import pytest

from mirror.scan.templates import check_template

from .conftest import rules
from .corpus import CHATML_TEMPLATE, LLAMA3_TEMPLATE, MISTRAL_TEMPLATE, TOOLS_TEMPLATE

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | "
    "trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)


@pytest.mark.parametrize("template", [LLAMA3_TEMPLATE, CHATML_TEMPLATE, MISTRAL_TEMPLATE, TOOLS_TEMPLATE,
                                      GEMMA_TEMPLATE, "{{ messages | tojson(indent=2) }}{%- generation %}x"
                                      "{%- endgeneration %}"])
def test_real_world_templates_pass(template: str) -> None:
    assert check_template(template, "t") == []


@pytest.mark.parametrize("template,rule,token", [
    ("{{ ''.__class__ }}", "template.dunder", "__class__"),
    ("{{ x.__init__.__globals__ }}", "template.dunder", "__globals__"),
    ("{{ x['__builtins__'] }}", "template.dunder", "__builtins__"),
    ("{{ x['\\x5f\\x5fclass\\x5f\\x5f'] }}", "template.dunder", "__class__"),
    ("{{ x['_' ~ '_imp' ~ 'ort__'] }}", "template.dunder", "__import__"),
    ("{{ self._TemplateReference__context }}", "template.dunder", "_TemplateReference__context"),
    ("{{ x|attr('y') }}", "template.name", "attr"),
    ("{{ x.mro() }}", "template.name", "mro"),
    ("{{ x.os.popen('id') }}", "template.name", "popen"),
    ("{% include 'other.jinja' %}", "template.name", "include"),
    ("{% from 'x' import y %}", "template.name", "import"),
    ("{{ eval('1') }}", "template.name", "eval"),
])
def test_injection_constructs_block_and_are_named(template: str, rule: str, token: str) -> None:
    findings = check_template(template, "t")
    assert [f.rule for f in findings] == [rule]
    assert token in findings[0].data["tokens"] and findings[0].severity == "block"


def test_text_outside_tags_is_never_code() -> None:
    assert check_template("Explain __init__ and import os in Python. {{ messages[0]['content'] }}", "t") == []


def test_untokenizable_template_only_warns() -> None:
    findings = check_template("{{ 'unterminated }}", "t")
    assert [(f.rule, f.severity) for f in findings] == [("template.syntax", "warn")]


def test_template_sha256_recorded_per_named_template(scan) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    doc = {"chat_template": [{"name": "default", "template": CHATML_TEMPLATE},
                             {"name": "rag", "template": LLAMA3_TEMPLATE}]}
    result = scan("tokenizer_config.json", json.dumps(doc).encode())
    assert result.verdict == "pass"
    assert result.facts["chat_templates"] == {
        "chat_template.default": hashlib.sha256(CHATML_TEMPLATE.encode()).hexdigest(),
        "chat_template.rag": hashlib.sha256(LLAMA3_TEMPLATE.encode()).hexdigest()}


def test_jinja_file_template_is_hashed(scan) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    result = scan("chat_template.jinja", MISTRAL_TEMPLATE.encode())
    assert rules(result) == set()
    assert result.facts["chat_template_sha256"] == hashlib.sha256(MISTRAL_TEMPLATE.encode()).hexdigest()
