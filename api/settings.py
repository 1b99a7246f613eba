"""Typed settings, loaded once: environment ``HUBGATE_*`` over an optional TOML file over defaults.

Only this module reads the environment. It composes the sections the lower layers own
(registry.settings, mirror.settings) and hands them down.
"""

from __future__ import annotations

import os
import tomllib
from ipaddress import ip_address
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mirror.egress import (
    DEFAULT_REDIRECT_HOSTS, EgressPolicy, address_class, describe_address, ip_of, normalize_host, normalize_url,
    parse_target, split_host_entry,
)
from mirror.settings import S3Settings, StorageSettings
from registry.settings import DatabaseSettings, PolicySettings


class ConfigError(Exception):
    """Bad configuration; the message names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUBGATE_", frozen=True, extra="forbid")

    data_dir: Path = Field(Path("./hubgate-data"), description="Folder for the SQLite database and the local store")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/hubgate.db")
    storage: Literal["local", "s3"] = Field("local", description="Where blobs live")
    storage_dir: Path | None = Field(None, description="Local store folder; default <data_dir>/store")
    storage_direct_writes: bool = Field(True, description="Local store: write blobs of 16 MiB or more around the page cache (O_DIRECT, where the file system allows it); false keeps them cached for the first download")
    s3_bucket: str | None = Field(None, description="S3 bucket (required when storage=s3)")
    s3_prefix: str = Field("", description="Key prefix inside the bucket")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint hubgate talks to (MinIO, Ceph); AWS when unset")
    s3_public_endpoint_url: str | None = Field(None, description="S3 origin that clients reach, for presigned URLs")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: str | None = Field(None, description="S3 access key (else boto3's usual credential chain)")
    s3_secret_access_key: str | None = Field(None, description="S3 secret key")
    s3_serve: Literal["redirect", "proxy"] = Field(
        "redirect", description="redirect: 302 to a presigned URL; proxy: stream through hubgate"
    )
    s3_presign_ttl_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Lifetime of presigned URLs")
    host: str = Field("127.0.0.1", description="Address `hubgate serve` binds")
    port: int = Field(8080, ge=0, le=65535, description="Port `hubgate serve` binds")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes for `hubgate serve`")
    public_url: str | None = Field(None, description="Public origin for absolute URLs (pagination links); default: the request's own, from an allowed Host (HUBGATE_ALLOWED_HOSTS)")
    tree_page_size: int = Field(1000, ge=1, le=10000, description="Entries per tree page (the Hub uses 1000)")
    list_page_size: int = Field(1000, ge=1, le=10000, description="Repos per /api/models page")
    ref_cache_seconds: float = Field(2.0, ge=0, le=3600, description="How long a branch -> commit answer is cached per process")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    anonymous_read: bool = Field(True, description="Serve approved content without a token; false: every Hub request needs one")
    secret_key_file: Path | None = Field(None, description="Key that encrypts stored secrets; default <data_dir>/secret.key (created 0600)")
    upstream_url: str | None = Field("https://huggingface.co", description="The Hub (or an outer hubgate) that requests and syncs read from; empty on a sealed side")
    upstream_token: str | None = Field(None, description="Upstream token from the environment (else `hubgate upstream-token set`, stored encrypted)")
    worker_in_process: bool = Field(True, description="`hubgate serve` also runs a sync worker")
    worker_threads: int = Field(1, ge=1, le=32, description="Jobs a worker process runs at once")
    worker_lease_seconds: float = Field(60.0, ge=2, le=3600, description="A job whose worker stops renewing its lease this long returns to the queue")
    sync_file_workers: int = Field(8, ge=1, le=64, description="Files a sync downloads in parallel (shared by its fetch processes)")
    sync_range_workers: int = Field(4, ge=1, le=64, description="Parallel range requests per large file")
    sync_fetch_processes: int = Field(2, ge=0, le=32, description="Child processes that fetch a sync's small files when it has many (0: threads in the worker only)")
    license_allowlist: list[str] = Field([], description="Licenses that may be auto-approved (comma-separated)")
    license_denylist: list[str] = Field([], description="Licenses that block a request (comma-separated)")
    auto_approve_orgs: list[str] = Field([], description="Orgs whose allowed-license, pickle-free, code-free repos are approved automatically")
    max_repo_bytes: int | None = Field(None, ge=1, description="Requests above this many bytes are blocked")
    block_pickle: bool = Field(False, description="Block repos with pickle-based weights")
    block_remote_code: bool = Field(False, description="Block repos carrying remote code")
    instance_name: str = Field("hubgate", min_length=1, max_length=100, description="This instance's name in provenance records and bundles")
    signing_key_file: Path | None = Field(None, description="ECDSA P-256 key that signs snapshots; default <data_dir>/signing-key.pem (created 0600)")
    trusted_keys: list[Path] = Field([], description="Public key files (PEM) whose bundles and signatures are trusted (comma-separated)")
    scan_cpu_seconds: float = Field(60.0, ge=1, le=3600, description="CPU seconds the content scan may spend on one file before it is blocked")
    scan_wall_seconds: float = Field(120.0, ge=1, le=7200, description="Wall-clock seconds the content scan may spend on one file before it is blocked")
    scan_memory_mb: int = Field(2048, ge=256, le=65536, description="Address space of the sandboxed scan process, in MiB")
    token_expiry_days: int = Field(90, ge=1, le=3650, description="Days a new token is valid unless created with another expiry (never only by an explicit --no-expiry)")
    require_second_approver: bool = Field(False, description="Two-person rule: nobody approves their own request")
    rate_limit_auth_failures_per_minute: int = Field(60, ge=0, description="Failed authentications per client address (0: no limit; per replica)")
    rate_limit_requests_per_hour: int = Field(60, ge=0, description="Mirror requests a token may create (0: no limit; per replica)")
    rate_limit_hub_reads_per_minute_per_address: int = Field(60000, ge=0, description="Hub API reads per client address (0: no limit; per replica)")
    rate_limit_hub_reads_per_minute_per_token: int = Field(300000, ge=0, description="Hub API reads per token (0: no limit; per replica)")
    allowed_hosts: list[str] = Field([], description="Host header values served (comma-separated: host, host:port, or *.domain for its subdomains); default: the bind address, localhost, 127.0.0.1, [::1], bare or with the bind port, and the HUBGATE_PUBLIC_URL host. Other Hosts get 400")
    max_header_bytes: int = Field(65536, ge=4096, le=1048576, description="Largest request header block (request line and headers); larger gets 431 (`hubgate serve`)")
    header_timeout_seconds: float = Field(20.0, ge=1, le=600, description="Seconds a client has to send a request's whole header block, else the connection is closed (slow-header clients; `hubgate serve`)")
    upstream_redirect_hosts: list[str] = Field(list(DEFAULT_REDIRECT_HOSTS), description="Hosts the upstream may redirect downloads to, besides its own origin (comma-separated: host, host:port, or *.domain for its subdomains)")
    upstream_allow_private: bool = Field(False, description="Allow an upstream, and redirect hosts named exactly, on loopback/private addresses (a tiered mirror inside the network)")
    ui_session_hours: int = Field(12, ge=1, le=720, description="How long a sign-in to the web pages (/-/) lasts, in hours; a revoked or expired token ends it at once")
    ui_page_size: int = Field(50, ge=10, le=500, description="Repos per page of the web catalog")
    shutdown_timeout_seconds: float = Field(30.0, ge=1, le=3600, description="On SIGTERM, how long `hubgate serve` lets open requests finish and `hubgate worker` lets running jobs finish before exiting (a job left running returns to the queue when its lease expires); Kubernetes terminationGracePeriodSeconds must exceed it")
    xet: Literal["off", "on"] = Field("on", description="on: build a Xet representation of large files at publish time (costs CPU; never fails a publish) and serve the Xet read protocol (refresh route, CAS, xorbs), so hf_xet clients download in parallel; off: no Xet header is ever sent and nothing is built at publish time")
    xet_threshold_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Files of at least this many bytes get a Xet representation (HUBGATE_XET=on and `hubgate xet backfill`)")
    xet_token_ttl_seconds: int = Field(900, ge=60, le=24 * 3600, description="Lifetime of the read tokens the xet-read-token route hands out (clients refresh them)")
    log_format: Literal["text", "json"] = Field("text", description="text: one readable line per record; json: one JSON object per line (for a log collector). Every logger, uvicorn's and alembic's included, uses it")
    access_log: bool = Field(True, description="One log line per HTTP request (request id, method, route, status, bytes, duration, actor; never a token) at the info level")
    metrics: bool = Field(True, description="Count requests, bytes and latencies for Prometheus (/metrics); false: /metrics answers 404 and the request path counts nothing")
    worker_metrics_port: int = Field(0, ge=0, le=65535, description="`hubgate worker` serves Prometheus /metrics on this port (0: off); `hubgate serve` has /metrics on its own port")
    url: str | None = Field(None, description="The hubgate server the CLI calls (remote mode): the request, decision, token, grant and audit commands then use its REST API as the user of HUBGATE_TOKEN")
    token: str | None = Field(None, description="The token the CLI sends in remote mode (else HF_TOKEN)")

    @field_validator("license_allowlist", "license_denylist", "auto_approve_orgs", "trusted_keys", "allowed_hosts",
                     "upstream_redirect_hosts", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v  # LOG_LEVEL=INFO, as operators write it

    @field_validator("upstream_url", mode="before")
    @classmethod
    def _upstream_url(cls, v: object) -> object:
        if v in ("", None):
            return None
        AnyHttpUrl(str(v))
        return normalize_url(str(v))  # refuses userinfo and other schemes; 127.1, 0x7f000001 -> 127.0.0.1

    @field_validator("allowed_hosts", "upstream_redirect_hosts")
    @classmethod
    def _host_entries(cls, v: list[str]) -> list[str]:
        for entry in v:
            name, port = split_host_entry(entry)
            if not name or name == "*" or (port is not None and not 0 < port < 65536):
                raise ValueError(f"{entry!r} is not a host, host:port or *.domain")
        return [e.strip().lower() for e in v]

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        AnyHttpUrl(v)
        return v.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        AnyHttpUrl(v)
        return v.rstrip("/")

    @model_validator(mode="after")
    def _upstream_address(self) -> "Settings":
        if self.upstream_url is None:
            return self
        host = parse_target(self.upstream_url).host
        ip = ip_address("127.0.0.1") if host == "localhost" else ip_of(host)
        if ip is None:
            return self  # a DNS name: its addresses are checked when connecting
        kind = address_class(ip)
        if kind == "forbidden" or (kind == "private" and not self.upstream_allow_private):
            hint = " (an upstream inside the network needs HUBGATE_UPSTREAM_ALLOW_PRIVATE=true)" if kind == "private" else ""
            raise ValueError(f"HUBGATE_UPSTREAM_URL {self.upstream_url} is a {describe_address(ip)} address{hint}")
        return self

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> "Settings":
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("HUBGATE_S3_BUCKET is required when HUBGATE_STORAGE=s3")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # load() merges the TOML file and the environment itself

    # sections for the lower layers
    @property
    def database(self) -> DatabaseSettings:
        url = self.database_url or f"sqlite:///{(self.data_dir / 'hubgate.db').resolve()}"
        return DatabaseSettings(url=url)

    @property
    def policy(self) -> PolicySettings:
        return PolicySettings(
            license_allowlist=tuple(self.license_allowlist), license_denylist=tuple(self.license_denylist),
            auto_approve_orgs=tuple(self.auto_approve_orgs), max_bytes=self.max_repo_bytes,
            block_pickle=self.block_pickle, block_remote_code=self.block_remote_code,
        )

    @property
    def scan_limits(self):  # type: ignore[no-untyped-def]  # mirror.scan.ScanLimits, imported lazily (fast CLI start)
        from mirror.scan import ScanLimits

        return ScanLimits(cpu_seconds=self.scan_cpu_seconds, wall_seconds=self.scan_wall_seconds,
                          memory_bytes=self.scan_memory_mb * 1024 * 1024)

    @property
    def upstream_egress(self) -> EgressPolicy:
        """Where the upstream client may connect; never to this instance itself."""
        own = {(h, self.port) for h in (self.host, "localhost", "127.0.0.1", "::1")}
        if self.public_url:
            public = parse_target(self.public_url)
            own.add((public.host, public.port))
        return EgressPolicy(redirect_hosts=tuple(self.upstream_redirect_hosts), allow_private=self.upstream_allow_private,
                            self_origins=frozenset((normalize_host(h), p) for h, p in own))

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.data_dir / "signing-key.pem"

    @property
    def key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    @property
    def storage_settings(self) -> StorageSettings:
        if self.storage == "local":
            return StorageSettings(backend="local", local_root=self.storage_dir or self.data_dir / "store",
                                   local_direct_writes=self.storage_direct_writes)
        assert self.s3_bucket is not None
        return StorageSettings(
            backend="s3",
            s3=S3Settings(
                bucket=self.s3_bucket, prefix=self.s3_prefix, endpoint_url=self.s3_endpoint_url,
                public_endpoint_url=self.s3_public_endpoint_url, region=self.s3_region,
                access_key_id=self.s3_access_key_id, secret_access_key=self.s3_secret_access_key,
                presign_ttl_seconds=self.s3_presign_ttl_seconds,
            ),
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"HUBGATE_CONFIG: no such file {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"HUBGATE_CONFIG: {path} is not valid TOML: {exc}") from exc
    section = data.get("hubgate", data)
    if not isinstance(section, dict):
        raise ConfigError(f"HUBGATE_CONFIG: {path} must hold a [hubgate] table of settings")
    return section


def load(config_path: Path | None = None, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Load settings once. Raises ConfigError naming the offending setting."""
    environ = os.environ if environ is None else environ
    path = config_path or (Path(environ["HUBGATE_CONFIG"]) if environ.get("HUBGATE_CONFIG") else None)
    file_values = _read_toml(path) if path else {}
    env_names = {f"HUBGATE_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(k for k in environ if k.startswith("HUBGATE_") and k not in env_names | {"HUBGATE_CONFIG"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting (see the configuration table in README.md)")
    values = dict(file_values)
    for name in Settings.model_fields:  # the environment beats the file
        if f"HUBGATE_{name.upper()}" in environ:
            values[name] = environ[f"HUBGATE_{name.upper()}"]
    values.update(overrides)
    unknown_keys = sorted(set(values) - set(Settings.model_fields))
    if unknown_keys:
        raise ConfigError(f"{unknown_keys[0]}: unknown setting in {path}")
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) if err["loc"] else ""
        setting = f"HUBGATE_{name.upper()}" if name else "configuration"
        raise ConfigError(f"{setting}: {err['msg']}") from exc


def cli_token(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """The remote CLI's token: HUBGATE_TOKEN (the ``token`` setting), else the HF clients' HF_TOKEN."""
    environ = os.environ if environ is None else environ
    return settings.token or environ.get("HF_TOKEN") or None


def reference_rows() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README table is checked against this."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None or default == [] else ",".join(map(str, default)) if isinstance(default, list) else str(default)
        rows.append((f"HUBGATE_{name.upper()}", shown, field.description or ""))
    return rows
