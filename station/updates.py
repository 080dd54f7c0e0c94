"""Updates over the network: which signed bundle is newer than the running image, and
downloading it checked, through TUF (python-tuf's ``ngclient.Updater``).

    python -m station updates check    # VN-EID-NETUPDATE available|none|refused ...
    python -m station updates fetch    # VN-EID-NETUPDATE downloaded|none|refused ...

Trust starts at the root metadata the image ships (``updates.trusted_root``); the metadata
seen last is kept in ``updates.metadata_dir``, so a repository (or anyone between) that
later serves older metadata is refused (rollback), as is expired metadata (a frozen
mirror), metadata not signed by the keys root names, metadata of another repository state
(snapshot pins targets by hash) and a bundle whose bytes differ from what targets lists.
Installing is root's job (/usr/lib/vn-eid/net-update runs ``fetch``, then RAUC checks
the bundle's own signature and installs it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.version import InvalidVersion, Version
from tuf.api import exceptions
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from station.config import StationSettings
from station.identity import IDENTITY_FILE

log = logging.getLogger(__name__)

LINE_TAG = "VN-EID-NETUPDATE"
# A bundle becomes a file in the download folder under its target name: a plain name only.
BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\.raucb$")

State = Literal["none", "available", "downloaded", "refused"]


@dataclass(frozen=True)
class Outcome:
    """What one check or fetch found; :meth:`line` is what the installer reads."""

    state: State
    running: str | None = None
    version: str | None = None
    target: str | None = None
    path: Path | None = None
    reason: str | None = None

    def line(self) -> str:
        if self.state == "refused":
            return f"{LINE_TAG} refused reason={self.reason}"
        if self.state == "none":
            return f"{LINE_TAG} none running={self.running}"
        if self.state == "available":
            return f"{LINE_TAG} available version={self.version} target={self.target}"
        return f"{LINE_TAG} downloaded path={self.path} version={self.version}"


class UpdateRefusedError(Exception):
    """The update cannot go on; ``code`` is one word the tests and the console show."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code} {detail}")
        self.code = code
        self.detail = detail


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def refusal(exc: BaseException, stage: str) -> UpdateRefusedError:
    """What a TUF error means for the technician, by kind. ``stage``: metadata or a
    bundle's name (a hash mismatch in metadata is mixed repository states; in a bundle,
    altered bytes)."""
    detail = _one_line(f"({stage}) {exc}")
    if isinstance(exc, exceptions.ExpiredMetadataError):
        return UpdateRefusedError("expired", detail)
    if isinstance(exc, exceptions.BadVersionNumberError):
        return UpdateRefusedError("rollback", detail)
    if isinstance(exc, exceptions.UnsignedMetadataError):
        return UpdateRefusedError("bad-signature", detail)
    if isinstance(
        exc, exceptions.LengthOrHashMismatchError | exceptions.DownloadLengthMismatchError
    ):
        return UpdateRefusedError("hash-mismatch", detail)
    if isinstance(exc, exceptions.DownloadHTTPError) and exc.status_code == 404:
        return UpdateRefusedError("not-published", f"{detail}: the repository has no such file")
    if isinstance(exc, exceptions.DownloadError):
        cause = exc.__cause__ or exc.__context__
        return UpdateRefusedError("unreachable", _one_line(f"{detail} {cause or ''}"))
    if isinstance(exc, exceptions.RepositoryError):
        return UpdateRefusedError("invalid-metadata", detail)
    return UpdateRefusedError("error", detail)


def running_version(settings: StationSettings) -> Version:
    """The running image's version; an image without the file counts as 0, as the USB
    update does (any signed bundle is newer)."""
    path = settings.image_version_file
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        log.warning("no %s: the running version counts as 0", path)
        text = "0"
    try:
        return Version(text)
    except InvalidVersion:
        raise UpdateRefusedError(
            "bad-running-version", f"{path} holds {text[:80]!r}, not a comparable version"
        ) from None


def repository_url(settings: StationSettings) -> str:
    """``updates.repository_url``, else the registry's address (configured or provisioned)
    + /v1/updates/."""
    if settings.updates.repository_url:
        return settings.updates.repository_url.rstrip("/") + "/"
    registry = settings.registry_url
    if registry is None:
        identity = settings.state_dir / "identity" / IDENTITY_FILE
        try:
            registry = str(json.loads(identity.read_text())["registry_url"])
        except (OSError, ValueError, KeyError):
            raise UpdateRefusedError(
                "not-configured",
                "the station is not provisioned and updates.repository_url is not set",
            ) from None
    return registry.rstrip("/") + "/v1/updates/"


def unsafe_folder(folder: Path, owner: int = 0) -> Path | None:
    """The first folder on the way from ``/`` to ``folder`` that someone other than
    ``owner`` (or root) can change, so could swap what is in it; None when there is none.
    A sticky folder (/tmp) is safe for an entry ``owner`` owns."""
    trusted = {0, owner}
    parts = folder.resolve().parts
    for depth in range(1, len(parts) + 1):
        path = Path(*parts[:depth])
        st = path.stat()
        if st.st_uid not in trusted:
            return path
        if st.st_mode & 0o022 and depth < len(parts):
            child = Path(*parts[: depth + 1]).stat()
            if not (st.st_mode & stat.S_ISVTX and child.st_uid in trusted):
                return path
        elif st.st_mode & 0o022:
            return path
    return None


def _folders(settings: StationSettings) -> tuple[Path, Path]:
    # Beside the state folder, not in it: root runs the update and trusts what it finds
    # here (the metadata that stops rollbacks, the bundle it hands to RAUC), while the
    # station service owns state_dir and could rename a folder in it and put its own there.
    base = settings.state_dir.parent / "updates"
    metadata = settings.updates.metadata_dir or base / "metadata"
    downloads = settings.updates.download_dir or base / "downloads"
    for folder in (metadata, downloads):
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and (loose := unsafe_folder(folder)) is not None:
            raise UpdateRefusedError(
                "unsafe-folder",
                f"{folder}: {loose} can be changed by another user than root; give "
                "updates.metadata_dir and download_dir in a folder only root writes",
            )
    return metadata, downloads


def _version_of(target: TargetFile) -> Version | None:
    custom = target.custom
    if not isinstance(custom, dict):
        return None
    try:
        return Version(str(custom.get("version")))
    except InvalidVersion:
        return None


def _newest(metadata_dir: Path, running: Version) -> tuple[str, Version] | None:
    """The newest bundle newer than ``running`` among the targets the Updater has just
    verified and kept (it writes targets.json only after checking it)."""
    md = Metadata[Targets].from_file(str(metadata_dir / "targets.json"))
    best: tuple[str, Version] | None = None
    for name, target in md.signed.targets.items():
        version = _version_of(target)
        if version is None or not BUNDLE_NAME.match(name):
            log.warning("target %s has no usable version or name: skipped", name)
            continue
        if version > running and (best is None or version > best[1]):
            best = (name, version)
    return best


def _forget_downloads(download_dir: Path, keep: Path | None) -> None:
    """Bundles downloaded earlier (installed, or superseded): the data partition is small."""
    for old in download_dir.glob("*.raucb"):
        if old != keep:
            old.unlink()


def _updater(settings: StationSettings, metadata_dir: Path, download_dir: Path) -> Updater:
    url = repository_url(settings)
    try:
        root = settings.updates.trusted_root.read_bytes()
    except OSError as exc:
        raise UpdateRefusedError(
            "no-trusted-root", f"{settings.updates.trusted_root}: {exc.strerror or exc}"
        ) from None
    try:
        return Updater(
            metadata_dir=str(metadata_dir),
            metadata_base_url=url + "metadata/",
            target_dir=str(download_dir),
            target_base_url=url + "targets/",
            fetcher=Urllib3Fetcher(
                socket_timeout=settings.updates.timeout_s, app_user_agent="vn-eid-station"
            ),
            config=UpdaterConfig(app_user_agent="vn-eid-station"),
            bootstrap=root,
        )
    except (exceptions.RepositoryError, ValueError) as exc:
        raise UpdateRefusedError(
            "no-trusted-root", _one_line(f"{settings.updates.trusted_root}: {exc}")
        ) from None


def check(settings: StationSettings, *, download: bool) -> Outcome:
    """Refresh the metadata; with ``download``, fetch the newest newer bundle (or find it
    already downloaded and intact). Never raises for a refusal: the outcome says it."""
    try:
        running = running_version(settings)
        metadata_dir, download_dir = _folders(settings)
        updater = _updater(settings, metadata_dir, download_dir)
        try:
            updater.refresh()
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise refusal(exc, "metadata") from exc
        newest = _newest(metadata_dir, running)
        if newest is None:
            if download:
                _forget_downloads(download_dir, keep=None)
            return Outcome("none", running=str(running))
        name, version = newest
        try:
            info = updater.get_targetinfo(name)
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise refusal(exc, "metadata") from exc
        if info is None or _version_of(info) != version:
            raise UpdateRefusedError("invalid-metadata", f"{name} is not in the verified targets")
        if not download:
            return Outcome("available", running=str(running), version=str(version), target=name)
        path = download_dir / name
        _forget_downloads(download_dir, keep=path)
        cached = updater.find_cached_target(info, str(path))
        if cached is None:
            log.info("downloading %s (%d bytes)", name, info.length)
            try:
                updater.download_target(info, str(path))
            except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
                path.unlink(missing_ok=True)
                raise refusal(exc, name) from exc
        return Outcome("downloaded", running=str(running), version=str(version), path=path)
    except UpdateRefusedError as refused:
        return Outcome("refused", reason=str(refused))
    except OSError as exc:
        return Outcome("refused", reason=_one_line(f"local-error {exc}"))


__all__ = [
    "LINE_TAG",
    "Outcome",
    "UpdateRefusedError",
    "check",
    "refusal",
    "repository_url",
    "unsafe_folder",
]
