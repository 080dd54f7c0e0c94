"""Packages that arrive on removable media, from stations that never see a network.

The station writes ``<media>/vn-eid/<station_id>/<export_id>/`` holding
``packages/<package_id>.vnpkg`` and ``manifest.json``::

    {"format": "vn-eid-media/1", "station_id", "export_id", "exported_at",
     "packages": [{"package_id", "size", "sha256"}]}

``python -m central media import <folder>`` takes each listed package through the same
ingest as an HTTP upload (``Ingest.accept``: opened with the registry's key, signed by a
station certificate of the station CA, by the station the manifest names, stored durably,
recorded once by package id), after the checks request authentication makes for an
upload: the station exists, is active (not suspended or revoked) and signed with the key
on record. Its file must match the size and SHA-256 the manifest lists.

It then writes ``receipts.cose`` next to ``manifest.json``: a COSE_Sign1 (ES256) by the
registry's station CA key over the CBOR map::

    {"format": "vn-eid-receipts/1", "station_id", "export_id", "issued_at",
     "receipts": [{"package_id", "receipt_number", "state", "error", "detail"}]}

one receipt per listed package (a receipt number and state, or an error code and what to
do). The station checks it against the station CA it received at enrollment and marks
the receipted packages acknowledged. Importing a folder again gives the same receipts: a
package already held answers its receipt, as a repeated upload does.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from central.db.models import Station, StationStatus
from central.db.ops import append_audit
from central.ingest import IngestRefused
from enrollment import cbor, cose
from enrollment.errors import BadSignatureError, MalformedPackageError
from enrollment.ids import is_package_id
from enrollment.package import VerifiedPackage, format_time

if TYPE_CHECKING:
    from central.services import Registry

MEDIA_FORMAT = "vn-eid-media/1"
RECEIPTS_FORMAT = "vn-eid-receipts/1"
RECEIPTS_CONTENT_TYPE = "application/vnd.vn-eid.media-receipts+cbor"
MANIFEST_FILE = "manifest.json"
RECEIPTS_FILE = "receipts.cose"
PACKAGES_DIR = "packages"
PACKAGE_SUFFIX = ".vnpkg"
MAX_MANIFEST_BYTES = 32 * 1024 * 1024


class MediaError(Exception):
    """The folder cannot be imported at all (no manifest, an unreadable one)."""


class ListedPackage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    package_id: Annotated[str, Field(max_length=64)]
    size: int = Field(ge=0)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class MediaManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["vn-eid-media/1"]
    station_id: Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")]
    export_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    exported_at: Annotated[str, Field(max_length=64)]
    packages: list[ListedPackage] = Field(max_length=1_000_000)


@dataclass(frozen=True)
class MediaReceipt:
    """The outcome for one listed package: a receipt (``receipt_number``, ``state``) or
    an error (``error``, ``detail``). ``created``: recorded by this import (not in the
    signed receipts: a second import must give the same ones)."""

    package_id: str
    receipt_number: str | None = None
    state: str | None = None
    error: str | None = None
    detail: str | None = None
    created: bool = False

    def as_cbor(self) -> dict[str, Any]:
        return {
            "package_id": self.package_id,
            "receipt_number": self.receipt_number,
            "state": self.state,
            "error": self.error,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class MediaImport:
    manifest: MediaManifest
    receipts: list[MediaReceipt]
    receipts_path: Path

    @property
    def received(self) -> int:
        return sum(1 for r in self.receipts if r.created)

    @property
    def held(self) -> int:
        return sum(1 for r in self.receipts if r.receipt_number and not r.created)

    @property
    def refused(self) -> int:
        return sum(1 for r in self.receipts if r.error)


def read_manifest(folder: Path) -> MediaManifest:
    path = folder / MANIFEST_FILE
    try:
        with path.open("rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise MediaError(
            f"{path} does not exist: give the export's folder "
            "(<media>/vn-eid/<station_id>/<export_id>)"
        ) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise MediaError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return MediaManifest.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise MediaError(f"{path} is not a {MEDIA_FORMAT} manifest: {problems}") from None


def _station_refusal(station: Station | None, station_id: str) -> tuple[str, str] | None:
    """Why a station's media is refused as a whole (as its requests would be), or None."""
    if station is None:
        return "unknown_station", f"no station {station_id} at this registry"
    if station.status is StationStatus.suspended:
        return "station_suspended", f"station {station_id} is suspended: resume it first"
    if station.status is StationStatus.revoked:
        return "station_revoked", f"station {station_id} is revoked: its packages are refused"
    if not station.public_key_sha256:
        return "station_not_enrolled", f"station {station_id} has no certificate yet"
    return None


def _key_check(station_id: str, key_sha256: str) -> Callable[[VerifiedPackage], None]:
    """The ingest's extra check for media: signed with the station's key on record (an
    upload's request signature is checked against that key; a re-enrolled station's old
    key is refused from then on)."""

    def check(verified: VerifiedPackage) -> None:
        spki = verified.signer.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if hashlib.sha256(spki).hexdigest() != key_sha256:
            raise IngestRefused(
                403,
                "signer-key-not-current",
                f"the package is signed with a key that is not station {station_id}'s "
                "current one (re-enrolled since?)",
            )

    return check


def _read_package(folder: Path, listed: ListedPackage, limit: int) -> bytes | MediaReceipt:
    """The package's bytes once they match the manifest, or the error receipt."""
    pid = listed.package_id

    def error(code: str, detail: str) -> MediaReceipt:
        return MediaReceipt(pid, error=code, detail=detail)

    if not is_package_id(pid):
        return error("bad_package_id", f"{pid!r} is not a package id (a UUIDv7 in lower case)")
    path = folder / PACKAGES_DIR / f"{pid}{PACKAGE_SUFFIX}"
    try:
        size = path.stat().st_size
        if size != listed.size:
            return error(
                "size_mismatch", f"the file has {size} bytes, the manifest lists {listed.size}"
            )
        if size > limit:
            return error("too_large", f"{size} bytes; the limit is {limit}")
        data = path.read_bytes()
    except FileNotFoundError:
        return error("missing_file", f"{PACKAGES_DIR}/{path.name} is not on the media")
    except OSError as exc:
        return error("unreadable_file", f"{PACKAGES_DIR}/{path.name}: {exc.strerror}")
    if len(data) != listed.size or hashlib.sha256(data).hexdigest() != listed.sha256:
        return error(
            "digest_mismatch",
            "the file does not match the manifest's SHA-256 (damaged media?): export again",
        )
    return data


def receipts_payload(
    manifest: MediaManifest, receipts: list[MediaReceipt], issued_at: datetime
) -> dict[str, Any]:
    return {
        "format": RECEIPTS_FORMAT,
        "station_id": manifest.station_id,
        "export_id": manifest.export_id,
        "issued_at": format_time(issued_at),
        "receipts": [r.as_cbor() for r in receipts],
    }


def verify_receipts(data: bytes, station_ca: x509.Certificate) -> dict[str, Any]:
    """The receipts map of a ``receipts.cose`` once its signature verifies with the station
    CA's key (what the station's ``media import-receipts`` does); PackageError otherwise."""
    signed = cose.decode_sign1(data)
    if signed.content_type != RECEIPTS_CONTENT_TYPE:
        raise MalformedPackageError(f"content type {signed.content_type!r}, not receipts")
    public = station_ca.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise BadSignatureError("the station CA does not hold an EC key")
    signed.verify(public)
    payload = cbor.loads_strict(signed.payload, "media receipts")
    if not isinstance(payload, dict) or payload.get("format") != RECEIPTS_FORMAT:
        raise MalformedPackageError(f"the signed content is not {RECEIPTS_FORMAT}")
    return payload


def _write_atomically(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the folder: a pulled stick holds the old
    receipts or the new ones, never half of them."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass  # some media file systems cannot sync a directory; the file itself is synced
    finally:
        os.close(folder)


def import_media(registry: Registry, folder: Path, *, actor: str = "cli") -> MediaImport:
    """Ingest every package of the export ``folder`` and write its ``receipts.cose``.

    A database or blob store that fails raises (nothing is wrong with the media: run it
    again); so does a folder where the receipts cannot be written (:class:`MediaError`);
    every other problem is a per-package error in the receipts.
    """
    manifest = read_manifest(folder)
    station_id = manifest.station_id
    with registry.reading() as session:
        station = session.get(Station, station_id)
        refusal = _station_refusal(station, station_id)
        key_sha256 = None if station is None else station.public_key_sha256
    receipts: list[MediaReceipt] = []
    for listed in manifest.packages:
        if refusal is not None:
            receipts.append(MediaReceipt(listed.package_id, error=refusal[0], detail=refusal[1]))
            continue
        assert key_sha256 is not None
        read = _read_package(folder, listed, registry.ingest.max_bytes)
        if isinstance(read, MediaReceipt):
            receipts.append(read)
            continue
        try:
            receipt, created = registry.ingest.accept(
                station_id,
                uuid.UUID(listed.package_id),
                read,
                listed.sha256,
                check=_key_check(station_id, key_sha256),
            )
        except IngestRefused as exc:
            receipts.append(
                MediaReceipt(listed.package_id, error=exc.code.replace("-", "_"), detail=exc.detail)
            )
            continue
        receipts.append(
            MediaReceipt(
                listed.package_id,
                receipt_number=receipt.receipt_number,
                state=receipt.state,
                created=created,
            )
        )
    now = registry.now()
    payload = receipts_payload(manifest, receipts, now)
    signed = cose.sign1(
        cbor.dumps(payload), registry.keys.station_ca_signer(), RECEIPTS_CONTENT_TYPE
    )
    path = folder / RECEIPTS_FILE
    try:
        _write_atomically(path, signed)
    except OSError as exc:
        raise MediaError(
            f"cannot write {path}: {exc.strerror}. The packages are ingested; copy the "
            "folder somewhere writable and import it again for the same receipts"
        ) from exc
    result = MediaImport(manifest, receipts, path)
    with Session(registry.engine) as session, session.begin():
        append_audit(
            session,
            now,
            actor,
            "media.imported",
            f"station:{station_id}",
            {
                "export_id": manifest.export_id,
                "listed": len(receipts),
                "received": result.received,
                "held": result.held,
                "refused": result.refused,
            },
        )
    return result


def summary_table(result: MediaImport) -> str:
    """One line per package for the terminal."""
    lines = [f"{'package':36}  {'result':8}  {'receipt / error':22}  detail"]
    for r in result.receipts:
        if r.error:
            lines.append(f"{r.package_id[:36]:36}  {'refused':8}  {r.error:22}  {r.detail or ''}")
        else:
            outcome = "received" if r.created else "held"
            lines.append(f"{r.package_id:36}  {outcome:8}  {r.receipt_number or '':22}  {r.state}")
    lines.append(
        f"{len(result.receipts)} listed: {result.received} received, {result.held} already "
        f"held, {result.refused} refused; receipts in {result.receipts_path}"
    )
    return "\n".join(lines)
