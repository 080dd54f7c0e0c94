"""The registry's one configuration object: a TOML file, then environment overrides.

    REGISTRY_CONFIG=/etc/vn-eid/registry.toml                  # the file (optional)
    REGISTRY_DATABASE__URL=postgresql+psycopg://reg@db/registry  # any field, "__" nests

With no file and no environment the registry runs embedded: SQLite and a blob folder
under ./data/registry, the worker in the API process.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from central.blobs.settings import BlobSettings
from central.db.engine import DatabaseSettings

CONFIG_ENV = "REGISTRY_CONFIG"


def config_path() -> Path | None:
    named = os.environ.get(CONFIG_ENV)
    if not named:
        return None
    path = Path(named)
    if not path.is_file():
        raise FileNotFoundError(f"{CONFIG_ENV}={named}: no such configuration file")
    return path


class RegistrySettings(BaseSettings):
    """Everything one registry process (API or worker) needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="REGISTRY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database: DatabaseSettings = DatabaseSettings()
    blobs: BlobSettings = BlobSettings()
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    migrate_on_start: bool = True
    """Bring the schema to the newest migration at start (safe with several processes)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
