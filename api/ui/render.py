"""Templates, the static assets' versioned URLs, and model cards: Markdown to sanitised HTML.

A model card is untrusted input (anyone upstream wrote it). It is rendered by markdown-it-py
(CommonMark, raw HTML allowed, as the Hub allows it) and the result goes through nh3 (the
Ammonia sanitiser) with an allowlist: no ``<script>``, ``<style>``, ``<iframe>``, ``<form>``,
``<object>``, no ``on*=`` attribute, no ``style=``, links only ``http(s):``/``mailto:`` or
relative. Relative links and images are rewritten to this instance's ``resolve`` URL of the
commit shown, so a card's own figures load from hubgate and nothing else. The page's
Content-Security-Policy would block a script that slipped through anyway: two layers.
"""

from __future__ import annotations

import hashlib
import posixpath
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import nh3
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt

HERE = Path(__file__).parent
STATIC = HERE / "static"
PREFIX = "/-"  # no repo id can start with '-' (registry/types.py), so no Hub path starts with /-/

CARD_TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}  # image maps: more links to police, no use in a card
CARD_SCHEMES = {"http", "https", "mailto"}
CARD_LIMIT = 1024 * 1024  # a README larger than this is not rendered (the file list still links it)


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def human_size(size: int | None) -> str:
    """Decimal units, as the Hub shows sizes: 1.2 GB."""
    if size is None:
        return "–"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # not reached


def when(value: datetime | str | None) -> str:
    """A UTC timestamp to the minute: 2026-12-01 14:03 UTC."""
    if value is None:
        return "–"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)  # 3.11 reads a trailing Z
        except ValueError:
            return value
    else:
        moment = value
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    version = _static_version()
    env.globals.update(prefix=PREFIX, static=lambda name: f"{PREFIX}/static/{name}?v={version}")
    env.filters.update(size=human_size, when=when, iso=iso, short=lambda sha: (sha or "")[:10],
                       urlpath=lambda value: quote(str(value), safe="/"))
    return env


# -- model cards


_MARKDOWN = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"])


def strip_front_matter(text: str) -> str:
    """The card without its leading YAML block (shown as metadata instead)."""
    if not text.startswith("---"):
        return text
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines[1:], start=1):
        if line.rstrip("\r\n") == "---":
            return "".join(lines[i + 1:])
    return text


def _rewrite(base: str | None, value: str) -> str | None:
    """A card link or image source as this page may use it; None drops the attribute."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme:
        return value if parts.scheme.lower() in CARD_SCHEMES else None
    if value.startswith(("#", "/", "?")) or base is None:
        return value if value.startswith("#") else None
    path = posixpath.normpath(parts.path)
    if not path or path.startswith(("../", "/")) or path in (".", ".."):
        return None
    return f"{base}/{quote(path)}"


def render_card(markdown: str, resolve_base: str | None) -> str:
    """Sanitised HTML of a model card. ``resolve_base`` (``/{repo}/resolve/{commit}``) anchors relative
    links and images; None drops them."""

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        if (tag, attr) in (("a", "href"), ("img", "src")):
            return _rewrite(resolve_base, value)
        return value

    html = _MARKDOWN.render(strip_front_matter(markdown))
    return nh3.clean(html, tags=CARD_TAGS, clean_content_tags={"script", "style"}, url_schemes=CARD_SCHEMES,
                     attribute_filter=attribute_filter, link_rel="noopener noreferrer nofollow", strip_comments=True)


def card_metadata(info: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs of the card's front matter worth a line each."""
    card = info.get("cardData") or {}
    rows: list[tuple[str, str]] = []
    for label, value in (("Licence", info.get("license")), ("Library", info.get("library_name")),
                         ("Pipeline", info.get("pipeline_tag")), ("Base model", card.get("base_model")),
                         ("Datasets", card.get("datasets")), ("Language", card.get("language")),
                         ("Model type", (info.get("config") or {}).get("model_type"))):
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value[:20])
        if value:
            rows.append((label, str(value)[:500]))
    return rows
