"""The station's one configuration object: a TOML file, then environment overrides.

    STATION_CONFIG=/etc/vn-eid/station.toml          # the file (optional)
    STATION_SCANNER__BACKEND=serial                   # any field, nested with "__"

Every section defaults to the simulated devices, so a desk machine runs the station with
no hardware and no file; the device image ships a file that names the real ones.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from station.capture.face import FaceCaptureSettings
from station.cards import CardIssuanceSettings
from station.drivers.camera.settings import CameraSettings
from station.drivers.card.settings import CardSettings
from station.drivers.fingerprint.settings import ScannerSettings
from station.drivers.gpio.settings import GpioSettings
from station.identity import KeySettings
from station.ssh_access import SshAccessSettings
from station.uploader import UploaderSettings

CONFIG_ENV = "STATION_CONFIG"
DEFAULT_CONFIG = Path("/etc/vn-eid/station.toml")


def config_path() -> Path | None:
    """The file named by STATION_CONFIG, else the device default when it exists."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV}={named}: no such configuration file")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


class ServiceSettings(BaseModel):
    """The station service's HTTP listener. Loopback only: the kiosk browser runs on the
    same device, and nothing else may reach the station's API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    """Host names the API answers to (anything else: 400, against DNS rebinding)."""


class TechnicianSettings(BaseModel):
    """The technician's access to the kiosk's technician screens: a PIN of its own,
    separate from every officer login. Only its argon2 hash is kept here; a technician
    makes one with ``python -m station technician-pin`` and puts it in the file
    (``[technician] pin_hash = "..."``) or in ``STATION_TECHNICIAN__PIN_HASH``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pin_hash: str | None = None
    """argon2id hash of the PIN; None: the technician screens cannot be unlocked."""
    session_minutes: int = Field(15, ge=1, le=240)
    """How long an unlock lasts (the technician cookie and token expire with it)."""
    max_failures: int = Field(5, ge=1, le=20)
    """Wrong PINs in a row before the lockout."""
    lockout_minutes: int = Field(10, ge=1, le=1440)


class MediaSettings(BaseModel):
    """Where the station looks for removable media (USB sticks for stations without a
    network): file systems the kernel lists as mounted under one of ``roots``. Export
    goes only to a medium found there, never to a path a page or a client names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    roots: tuple[Path, ...] = (Path("/media"), Path("/run/media"), Path("/mnt"))
    mounts: Path = Path("/proc/mounts")
    """The kernel's list of mounted file systems (fstab format)."""


class UpdateSettings(BaseModel):
    """Updates over the network (``python -m station updates check|fetch``, run as root by
    vn-eid-net-update.timer): TUF metadata from the update repository, trusted through the
    root the image ships; bundles newer than the running image downloaded and checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository_url: str | None = None
    """The update repository; None: the registry's address + ``/v1/updates/``."""
    trusted_root: Path = Path("/etc/vn-eid/tuf/root.json")
    """The repository's root metadata the image ships: the anchor of every check."""
    metadata_dir: Path | None = None
    """Trusted metadata kept between runs (rollback protection); None: ``updates/metadata``
    beside state_dir (root's, out of the station service's reach)."""
    download_dir: Path | None = None
    """Where a checked bundle is left for the installer; None: ``updates/downloads`` beside
    state_dir."""
    timeout_s: int = Field(30, ge=1, le=600)
    """Longest wait for the repository to connect or to send the next bytes."""


class StationSettings(BaseSettings):
    """Everything one station process needs to know about its devices and folders."""

    model_config = SettingsConfigDict(
        env_prefix="STATION_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    station_id: str = "DEV-000"
    run_dir: Path = Path("data/station/run")
    """Sockets, pty links and other things that live only while the station runs."""
    state_dir: Path = Path("data/station/state")
    """What survives a power cut (the outbox, local store; emulated cards in the demo)."""
    scanner: ScannerSettings = ScannerSettings()
    camera: CameraSettings = CameraSettings()
    card: CardSettings = CardSettings()
    gpio: GpioSettings = GpioSettings()
    keys: KeySettings = KeySettings()
    """Where the station key and the drafts' data key live (TPM or software files)."""
    service: ServiceSettings = ServiceSettings()
    registry_url: str | None = None
    """The registry's address; set at provisioning (this overrides the provisioned one)."""
    image_version_file: Path = Path("/etc/vn-eid/image-version")
    min_free_disk_mb: int = Field(512, ge=16)
    """New cases are refused below this much free space, so nothing captured is lost."""
    open_devices: bool = True
    """False: the service runs without devices (a technician's bench, some tests)."""
    background: bool = True
    """Run the uploader, sync and heartbeat threads (False: tests drive them by hand)."""
    uploader: UploaderSettings = UploaderSettings()
    cards: CardIssuanceSettings = CardIssuanceSettings()
    face: FaceCaptureSettings = FaceCaptureSettings()
    technician: TechnicianSettings = TechnicianSettings()
    media: MediaSettings = MediaSettings()
    updates: UpdateSettings = UpdateSettings()
    ssh: SshAccessSettings = SshAccessSettings()
    """SSH for a technician: where the request for root and root's status are."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: arguments, then the environment, then the file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


__all__ = [
    "CONFIG_ENV",
    "MediaSettings",
    "ServiceSettings",
    "StationSettings",
    "TechnicianSettings",
    "UpdateSettings",
    "config_path",
]
