"""Settings owned by the registry layer. Loaded by api/settings.py; never read from the environment here."""

from pydantic import BaseModel, ConfigDict


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str
    echo: bool = False


class PolicySettings(BaseModel):
    """Rules applied to upstream metadata before approval."""

    model_config = ConfigDict(frozen=True)

    license_allowlist: tuple[str, ...] = ()  # empty: every license is merely reported
    license_denylist: tuple[str, ...] = ()
    auto_approve_orgs: tuple[str, ...] = ()
    max_bytes: int | None = None
    block_pickle: bool = False
    block_remote_code: bool = False
