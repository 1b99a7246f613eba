"""Repo metadata the Hub shows in repo info, derived from a snapshot's own files (README front matter, config.json)."""

from __future__ import annotations

import json
import logging
from typing import Any

import yaml

from registry.manifest import Manifest
from mirror.errors import BlobNotFoundError
from mirror.storage.blobs import BlobStore

log = logging.getLogger(__name__)

_MAX_METADATA_FILE = 4 * 1024 * 1024
_CAUSAL_LM_SUFFIX = "ForCausalLM"


def parse_front_matter(text: str) -> dict[str, Any] | None:
    """The YAML block between leading ``---`` lines of a model card, or None."""
    if not text.startswith("---"):
        return None
    lines = text.splitlines()
    try:
        end = lines[1:].index("---") + 1
    except ValueError:
        return None
    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        log.warning("README front matter is not valid YAML: %s", exc)
        return None
    return data if isinstance(data, dict) else None


def _read_small(store: BlobStore, manifest: Manifest, path: str) -> bytes | None:
    entry = next((f for f in manifest.files if f.path == path), None)
    if entry is None or entry.size > _MAX_METADATA_FILE:
        return None
    try:
        with store.open(entry.sha256) as f:
            return f.read()
    except BlobNotFoundError:  # quarantined or lost: the snapshot is unavailable anyway; describe what is left
        log.warning("%s@%s: %s is missing from the store", manifest.repo, manifest.commit, path)
        return None


def describe(store: BlobStore, manifest: Manifest) -> dict[str, Any]:
    """cardData, pipeline_tag, library_name, tags, license and a config summary for repo info."""
    card: dict[str, Any] | None = None
    readme = _read_small(store, manifest, "README.md")
    if readme is not None:
        card = parse_front_matter(readme.decode("utf-8", errors="replace"))
    config: dict[str, Any] | None = None
    raw_config = _read_small(store, manifest, "config.json")
    if raw_config is not None:
        try:
            loaded = json.loads(raw_config)
            if isinstance(loaded, dict):
                config = {k: loaded[k] for k in ("architectures", "model_type", "auto_map") if k in loaded}
        except ValueError:
            log.warning("%s config.json is not valid JSON", manifest.repo)
    return build_info(manifest, card, config)


def build_info(manifest: Manifest, card: dict[str, Any] | None, config: dict[str, Any] | None) -> dict[str, Any]:
    card = card or {}
    license_ = card.get("license")
    library = card.get("library_name")
    pipeline = card.get("pipeline_tag")
    architectures = (config or {}).get("architectures") or []
    if config is not None and manifest.repo_type.value == "model":
        library = library or "transformers"
        if pipeline is None and any(str(a).endswith(_CAUSAL_LM_SUFFIX) for a in architectures):
            pipeline = "text-generation"
    tags: list[str] = []

    def add(tag: object) -> None:
        if isinstance(tag, str) and tag and tag not in tags:
            tags.append(tag)

    card_tags = card.get("tags")
    for t in card_tags if isinstance(card_tags, list) else [card_tags]:
        add(t)
    add(library)
    if any(f.path.endswith(".safetensors") for f in manifest.files):
        add("safetensors")
    if config:
        add(config.get("model_type"))
    add(pipeline)
    for key in ("language", "datasets", "base_model"):
        values = card.get(key)
        for v in values if isinstance(values, list) else [values]:
            if isinstance(v, str):
                add({"datasets": f"dataset:{v}", "base_model": f"base_model:{v}"}.get(key, v))
    if isinstance(license_, str):
        add(f"license:{license_}")
    return {
        "cardData": card or None,
        "license": license_ if isinstance(license_, str) else None,
        "library_name": library if isinstance(library, str) else None,
        "pipeline_tag": pipeline if isinstance(pipeline, str) else None,
        "tags": tags,
        "config": config,
    }
