"""Removable media: packages out on a USB stick, signed receipts back, for stations that
never see a network (a mobile team in the mountains).

Export writes ``<media>/vn-eid/<station_id>/<export_id>/``::

    packages/<package_id>.vnpkg      each file written whole and fsynced
    manifest.json                    written last: a folder without it is incomplete
        {"format": "vn-eid-media/1", "station_id", "export_id", "exported_at",
         "packages": [{"package_id", "size", "sha256"}]}

and marks those packages ``exported``. Every export takes every package the registry has
not acknowledged yet (queued, sending, or exported before): a stick that got lost costs
nothing, and the registry takes a package once however often it arrives.

At the registry, ``python -m central media import <folder>`` ingests the packages through
the same checks as an upload and writes ``receipts.cose`` next to the manifest: a
COSE_Sign1 (ES256) by the registry's station CA key over CBOR
``{"format": "vn-eid-receipts/1", "station_id", "export_id", "issued_at", "receipts":
[{"package_id", "receipt_number"|null, "state"|null, "error"|null, "detail"|null}]}``.
:func:`import_receipts` verifies that signature against the station CA the station got at
enrollment (so a receipts file cannot be forged on the stick), checks that it is for this
station and this export, and then, in one transaction, marks the packages acknowledged
(or refused, with the registry's code). Anything wrong: a clear error and no change.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment import cose
from enrollment.errors import BadSignatureError, PackageError
from enrollment.ids import is_package_id
from enrollment.keys import key_id
from station.outbox import REGISTRY_STATES, Outbox, OutboxFileError
from station.store.files import atomic_write, fsync_dir

log = logging.getLogger(__name__)

MEDIA_FORMAT = "vn-eid-media/1"
RECEIPTS_FORMAT = "vn-eid-receipts/1"
MEDIA_DIR = "vn-eid"
MANIFEST = "manifest.json"
RECEIPTS = "receipts.cose"
MAX_RECEIPTS_BYTES = 16 * 1024 * 1024
SPACE_MARGIN_BYTES = 1024 * 1024
"""Room kept free on the medium beyond the packages (the manifest, the receipts)."""


class MediaError(RuntimeError):
    """An export or a receipts import cannot be done; nothing was changed."""


class ReceiptsError(MediaError):
    """A receipts file is not genuine, not for this station or export, or damaged."""


@dataclass(frozen=True)
class ExportResult:
    """One export: where it went and what it holds."""

    export_id: str
    folder: Path | None
    """None when there was nothing to export (no folder is written)."""
    packages: tuple[str, ...]
    total_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "export_id": self.export_id,
            "folder": str(self.folder) if self.folder is not None else None,
            "packages": list(self.packages),
            "total_bytes": self.total_bytes,
        }


@dataclass(frozen=True)
class ImportResult:
    """What a receipts file changed."""

    export_id: str
    acknowledged: tuple[str, ...]
    refused: tuple[str, ...]
    unchanged: tuple[str, ...]
    """Acknowledged before (by the uploader, or an earlier import of these receipts)."""
    unknown: tuple[str, ...]
    """Receipts for packages this outbox does not hold (logged, ignored)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "export_id": self.export_id,
            "acknowledged": list(self.acknowledged),
            "refused": list(self.refused),
            "unchanged": list(self.unchanged),
            "unknown": list(self.unknown),
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_station_id(station_id: str) -> None:
    if not station_id or "/" in station_id or "\0" in station_id or station_id in (".", ".."):
        raise MediaError(f"{station_id!r} cannot name a folder: not a station id")


def export_folder(media_root: Path, station_id: str, export_id: str) -> Path:
    """``<media>/vn-eid/<station_id>/<export_id>``."""
    _check_station_id(station_id)
    return Path(media_root) / MEDIA_DIR / station_id / export_id


def export_to(
    outbox: Outbox,
    media_root: Path,
    station_id: str,
    *,
    clock: Callable[[], datetime] = _utcnow,
) -> ExportResult:
    """Copy every package not yet acknowledged onto the medium mounted at ``media_root``,
    then mark them ``exported``. Raises :class:`MediaError` (the medium is missing, full
    or fails) leaving no manifest, so the registry never sees a half export."""
    media_root = Path(media_root)
    if not media_root.is_dir():
        raise MediaError(f"no medium at {media_root}: insert and mount the USB stick")
    now = clock()
    export_id = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    entries = outbox.exportable()
    if not entries:
        return ExportResult(export_id, None, (), 0)
    needed = sum(e.size for e in entries) + SPACE_MARGIN_BYTES
    free = shutil.disk_usage(media_root).free
    if free < needed:
        raise MediaError(
            f"the medium at {media_root} has {free} bytes free; this export needs {needed} "
            f"({len(entries)} packages): use a larger or emptier stick"
        )
    folder = export_folder(media_root, station_id, export_id)
    listed: list[dict[str, Any]] = []
    try:
        (folder / "packages").mkdir(parents=True)
        for entry in entries:
            try:
                data = outbox.read(entry.package_id)
            except OutboxFileError as exc:
                log.error("export: package %s left out: %s", entry.package_id, exc)
                continue
            atomic_write(folder / "packages" / f"{entry.package_id}.vnpkg", data)
            listed.append(
                {"package_id": entry.package_id, "size": entry.size, "sha256": entry.sha256}
            )
        manifest = {
            "format": MEDIA_FORMAT,
            "station_id": station_id,
            "export_id": export_id,
            "exported_at": _iso(now),
            "packages": listed,
        }
        atomic_write(folder / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
        for parent in (folder.parent, folder.parent.parent, media_root):
            fsync_dir(parent)  # the new folders' names themselves
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise MediaError(
            f"export to {media_root} failed ({'the medium is full' if full else exc}); "
            "nothing was marked exported: try again, or with another stick"
        ) from exc
    with outbox.db.write() as conn:
        outbox.mark_exported(conn, [item["package_id"] for item in listed], export_id)
    total = sum(int(item["size"]) for item in listed)
    log.info("exported %d packages (%d bytes) to %s", len(listed), total, folder)
    return ExportResult(export_id, folder, tuple(i["package_id"] for i in listed), total)


def _read_manifest(folder: Path) -> Mapping[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise MediaError(f"{folder} has no {MANIFEST}: not a complete export") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MediaError(f"{folder / MANIFEST} is not valid JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MEDIA_FORMAT:
        raise MediaError(f"{folder / MANIFEST} is not a {MEDIA_FORMAT} manifest")
    return manifest


def _verified_receipts(folder: Path, station_ca_cert: x509.Certificate) -> Mapping[str, Any]:
    """The receipts payload after its signature checked out against the station CA."""
    path = folder / RECEIPTS
    try:
        if path.stat().st_size > MAX_RECEIPTS_BYTES:
            raise ReceiptsError(f"{path} is larger than any receipts file: refused")
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise ReceiptsError(
            f"{folder} has no {RECEIPTS}: import the export at the registry first "
            "(python -m central media import <folder>)"
        ) from exc
    ca_key = station_ca_cert.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey):
        raise ReceiptsError("the stored station CA has no EC P-256 key")
    try:
        sign1 = cose.decode_sign1(blob)
    except PackageError as exc:
        raise ReceiptsError(f"{path} is not a COSE_Sign1 receipts file: {exc}") from exc
    if sign1.kid != key_id(ca_key):
        raise ReceiptsError(
            f"{path} is signed by another key than this station's registry (station CA): "
            "refused; were these receipts made by another registry?"
        )
    try:
        sign1.verify(ca_key)
    except BadSignatureError as exc:
        raise ReceiptsError(f"{path}: the signature does not verify: the file was altered") from exc
    try:
        payload = cbor2.loads(sign1.payload)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise ReceiptsError(f"{path}: the signed payload is not CBOR") from exc
    if not isinstance(payload, dict) or payload.get("format") != RECEIPTS_FORMAT:
        raise ReceiptsError(f"{path} is not a {RECEIPTS_FORMAT} document")
    return payload


def _receipt_items(payload: Mapping[str, Any], path: Path) -> list[Mapping[str, Any]]:
    items = payload.get("receipts")
    if not isinstance(items, list):
        raise ReceiptsError(f"{path}: 'receipts' is not a list")
    out: list[Mapping[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ReceiptsError(f"{path}: a receipt is not a map")
        pid = item.get("package_id")
        number = item.get("receipt_number")
        error = item.get("error")
        if not isinstance(pid, str) or not is_package_id(pid):
            raise ReceiptsError(f"{path}: a receipt has no valid package id ({pid!r})")
        if not (isinstance(number, str) and number) and not (isinstance(error, str) and error):
            raise ReceiptsError(f"{path}: the receipt of {pid} has neither a number nor an error")
        out.append(item)
    return out


def import_receipts(
    outbox: Outbox,
    folder: Path,
    station_ca_cert: x509.Certificate,
    *,
    station_id: str,
) -> ImportResult:
    """Apply the registry's signed receipts in ``folder`` (an export folder the registry
    imported) to the outbox, all in one transaction. Raises :class:`ReceiptsError` for a
    file not signed by ``station_ca_cert``'s key, altered, or for another station or
    export; nothing changes then."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest.get("station_id") != station_id:
        raise ReceiptsError(
            f"{folder} is an export of station {manifest.get('station_id')!r}, not of "
            f"{station_id!r}: refused"
        )
    payload = _verified_receipts(folder, station_ca_cert)
    path = folder / RECEIPTS
    if payload.get("station_id") != station_id:
        raise ReceiptsError(
            f"{path} holds receipts for station {payload.get('station_id')!r}, not for "
            f"{station_id!r}: refused"
        )
    if payload.get("export_id") != manifest.get("export_id"):
        raise ReceiptsError(
            f"{path} is for export {payload.get('export_id')!r}, the folder holds export "
            f"{manifest.get('export_id')!r}: refused"
        )
    items = _receipt_items(payload, path)
    acknowledged: list[str] = []
    refused: list[str] = []
    unchanged: list[str] = []
    unknown: list[str] = []
    with outbox.db.write() as conn:
        for item in items:
            pid = str(item["package_id"])
            known = conn.execute(
                "SELECT 1 FROM outbox_package WHERE package_id = ?", (pid,)
            ).fetchone()
            if known is None:
                unknown.append(pid)
                continue
            number = item.get("receipt_number")
            if isinstance(number, str) and number:
                state = item.get("state")
                registry_state = state if isinstance(state, str) else None
                if registry_state not in REGISTRY_STATES:
                    registry_state = None
                if outbox.mark_acknowledged(pid, number, registry_state, conn=conn):
                    acknowledged.append(pid)
                else:
                    unchanged.append(pid)
            else:
                code = str(item.get("error"))
                detail = str(item.get("detail") or "refused at the registry's media import")
                if outbox.mark_refused(pid, code, detail, conn=conn):
                    refused.append(pid)
                else:
                    unchanged.append(pid)
    if unknown:
        log.warning("receipts for %d packages this outbox does not hold: %s", len(unknown), unknown)
    log.info(
        "receipts of export %s: %d acknowledged, %d refused, %d already known",
        payload.get("export_id"),
        len(acknowledged),
        len(refused),
        len(unchanged),
    )
    return ImportResult(
        str(payload.get("export_id")),
        tuple(acknowledged),
        tuple(refused),
        tuple(unchanged),
        tuple(unknown),
    )


def receipts_payload(
    station_id: str, export_id: str, receipts: Sequence[Mapping[str, Any]], issued_at: datetime
) -> bytes:
    """The CBOR a receipts file signs (the registry's side builds the same; also used by
    tests to make receipts): deterministic encoding."""
    return cbor2.dumps(
        {
            "format": RECEIPTS_FORMAT,
            "station_id": station_id,
            "export_id": export_id,
            "issued_at": _iso(issued_at),
            "receipts": [dict(r) for r in receipts],
        },
        canonical=True,
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file (checking what landed on the medium)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "MEDIA_FORMAT",
    "RECEIPTS_FORMAT",
    "ExportResult",
    "ImportResult",
    "MediaError",
    "ReceiptsError",
    "export_folder",
    "export_to",
    "import_receipts",
    "receipts_payload",
    "sha256_file",
]
