"""Pre-approval policy: findings computed from upstream facts, each naming the rule that produced it.

Pure functions over ``RepoFacts``; the mirror layer gathers the facts from the upstream.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from registry.settings import PolicySettings

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy")
INFO, WARN, BLOCK = "info", "warn", "block"


@dataclass(frozen=True)
class FileFact:
    path: str
    size: int


@dataclass(frozen=True)
class BaseModelFact:
    repo_id: str
    in_hubgate: bool
    license: str | None = None


@dataclass(frozen=True)
class RepoFacts:
    repo_id: str
    license: str | None
    gated: bool
    has_upstream_token: bool
    files: tuple[FileFact, ...]
    auto_map: bool = False
    base_models: tuple[BaseModelFact, ...] = ()


def select_files(paths: list[str], allow: list[str] | None, ignore: list[str] | None) -> list[str]:
    """The Hub client's own pattern rules: fnmatch on the full path; a pattern ending in '/' gets '*'."""
    def norm(patterns: list[str] | None) -> list[str] | None:
        return None if patterns is None else [p + "*" if p.endswith("/") else p for p in patterns]

    allow_n, ignore_n = norm(allow), norm(ignore)
    return [
        p for p in paths
        if (allow_n is None or any(fnmatch.fnmatch(p, a) for a in allow_n))
        and not (ignore_n and any(fnmatch.fnmatch(p, i) for i in ignore_n))
    ]


def _finding(rule: str, severity: str, message: str, **data: Any) -> dict[str, Any]:
    return {"rule": rule, "severity": severity, "message": message, "data": data}


def check_license(facts: RepoFacts, s: PolicySettings) -> list[dict[str, Any]]:
    lic = facts.license
    if lic is None:
        return [_finding("license.missing", WARN, "The repo declares no license")]
    if lic in s.license_denylist:
        return [_finding("license.denied", BLOCK, f"License {lic!r} is on the denylist", license=lic)]
    if s.license_allowlist and lic not in s.license_allowlist:
        return [_finding("license.not-allowed", WARN, f"License {lic!r} is not on the allowlist", license=lic)]
    return [_finding("license.allowed" if s.license_allowlist else "license.declared", INFO, f"License {lic!r}", license=lic)]


def check_gated(facts: RepoFacts, s: PolicySettings) -> list[dict[str, Any]]:
    if not facts.gated:
        return []
    if not facts.has_upstream_token:
        return [_finding("gated.no-token", BLOCK, "The repo is gated upstream and no upstream token is configured")]
    return [_finding("gated", WARN, "The repo is gated upstream: its terms were accepted with the upstream token")]


def check_pickle(facts: RepoFacts, s: PolicySettings) -> list[dict[str, Any]]:
    pickles = [f.path for f in facts.files if f.path.lower().endswith(PICKLE_SUFFIXES)]
    if not pickles:
        return []
    has_safetensors = any(f.path.endswith(".safetensors") for f in facts.files)
    hint = " (safetensors weights exist beside them: consider ignore patterns)" if has_safetensors else ""
    return [_finding(
        "weights.pickle", BLOCK if s.block_pickle else WARN,
        f"{len(pickles)} pickle-based file(s) can run code when loaded{hint}",
        files=pickles[:50], safetensors_present=has_safetensors,
    )]


def check_remote_code(facts: RepoFacts, s: PolicySettings) -> list[dict[str, Any]]:
    py = [f.path for f in facts.files if f.path.endswith(".py")]
    if not py and not facts.auto_map:
        return []
    return [_finding(
        "code.remote", BLOCK if s.block_remote_code else WARN,
        "The repo carries code that trust_remote_code would run: after the sync scans it, an admin approves "
        "each code file by its sha256 before it is published", files=py[:50], auto_map=facts.auto_map,
    )]


def check_size(facts: RepoFacts, s: PolicySettings) -> list[dict[str, Any]]:
    total = sum(f.size for f in facts.files)
    if s.max_bytes is not None and total > s.max_bytes:
        return [_finding("size.too-large", BLOCK, f"{total} bytes exceed the limit of {s.max_bytes}",
                         bytes=total, files=len(facts.files))]
    return [_finding("size", INFO, f"{len(facts.files)} files, {total} bytes", bytes=total, files=len(facts.files))]


def check_base_model(facts: RepoFacts, s: PolicySettings) -> list[dict[str, Any]]:
    return [
        _finding("lineage.base-model", INFO,
                 f"Derived from {b.repo_id}" + (f", mirrored here under license {b.license!r}" if b.in_hubgate else ", not in hubgate"),
                 base_model=b.repo_id, in_hubgate=b.in_hubgate, license=b.license)
        for b in facts.base_models
    ]


CHECKS = (check_license, check_gated, check_pickle, check_remote_code, check_size, check_base_model)


def evaluate(facts: RepoFacts, settings: PolicySettings) -> tuple[list[dict[str, Any]], str]:
    """All findings and the verdict: ``blocked``, ``auto-approve`` or ``review``."""
    findings = [f for check in CHECKS for f in check(facts, settings)]
    if any(f["severity"] == BLOCK for f in findings):
        return findings, "blocked"
    org = facts.repo_id.split("/")[0] if "/" in facts.repo_id else None
    rules = {f["rule"] for f in findings}
    if (
        org in settings.auto_approve_orgs
        and "license.allowed" in rules
        and not rules & {"weights.pickle", "code.remote", "gated"}
    ):
        return findings, "auto-approve"
    return findings, "review"
