"""Settings owned by the registry layer. Loaded by api/settings.py; never read from the environment here."""

from pydantic import BaseModel, ConfigDict


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str
    echo: bool = False
