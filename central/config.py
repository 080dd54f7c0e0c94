"""The registry's one configuration object: a TOML file, then environment overrides.

    REGISTRY_CONFIG=/etc/vn-eid/registry.toml                  # the file (optional)
    REGISTRY_DATABASE__URL=postgresql+psycopg://reg@db/registry  # any field, "__" nests

With no file and no environment the registry runs embedded: SQLite and a blob folder
under ./data/registry, the worker in the API process.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from central.abis.settings import AbisSettings
from central.auth.settings import AuthSettings
from central.blobs.settings import BlobSettings
from central.db.engine import DatabaseSettings
from central.keys import KeySettings
from central.pipeline.quality import QualitySettings
from central.pipeline.worker import WorkerSettings
from central.routes.updates import UpdateSettings
from central.station_sync import ResidentListSettings, StationPolicySettings

CONFIG_ENV = "REGISTRY_CONFIG"


def config_path() -> Path | None:
    named = os.environ.get(CONFIG_ENV)
    if not named:
        return None
    path = Path(named)
    if not path.is_file():
        raise FileNotFoundError(f"{CONFIG_ENV}={named}: no such configuration file")
    return path


class IngestSettings(BaseModel):
    """Upload limits and admission."""

    max_package_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest package accepted (enrollment.package.Limits' default; a typical one is
    300-500 KB)."""
    max_chunk_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_concurrent_uploads: int = Field(64, ge=1)
    """Uploads one API process reads at once; more are answered 503 + Retry-After."""
    retry_after_seconds: int = Field(5, ge=1)
    upload_expiry_hours: float = Field(72.0, gt=0)
    """Resumable uploads idle this long are dropped (the station starts again)."""


class RegistrySettings(BaseSettings):
    """Everything one registry process (API or worker) needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="REGISTRY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database: DatabaseSettings = DatabaseSettings()
    blobs: BlobSettings = BlobSettings()
    keys: KeySettings = KeySettings()
    auth: AuthSettings = AuthSettings()
    ingest: IngestSettings = IngestSettings()
    worker: WorkerSettings = WorkerSettings()
    quality: QualitySettings = QualitySettings()
    abis: AbisSettings = AbisSettings()
    station_policy: StationPolicySettings = StationPolicySettings()
    """The rules every station follows (``GET /v1/station/config``)."""
    residents: ResidentListSettings = ResidentListSettings()
    updates: UpdateSettings = UpdateSettings()
    """The station update repository served under /v1/updates/ (image.release)."""
    bootstrap_admin: str | None = None
    """``username:password`` of an administrator created at start when no user exists
    (first start of a new registry); or use ``python -m central users add``."""
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
