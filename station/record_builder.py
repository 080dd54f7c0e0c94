"""From a case's captured pieces to the enrollment record and its ANSI/NIST-ITL transaction
(what :func:`enrollment.package.build_package` signs and encrypts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from enrollment import ansi_nist
from enrollment.record import (
    BiometricException,
    BiometricSample,
    CaptureMetadata,
    Demographics,
    DeviceInfo,
    EnrollmentRecord,
    QualityScore,
)
from station.cases import FaceEntry, FingerEntry

FINGER_QUALITY_ALGORITHM = ("NFIQ2-station", "1")
"""The station's NFIQ 2 predictor (biometrics.fingerprint.quality.StationQuality); the
registry scores every finger again with NIST's NFIQ 2."""
FACE_QUALITY_ALGORITHM = ("vn-eid-face", "0.1")


@dataclass(frozen=True)
class CaptureContext:
    """Who, where and with what the enrollment was captured."""

    station_id: str
    operator_id: str
    supervisor_id: str | None
    software_version: str
    devices: tuple[DeviceInfo, ...]
    started_at: datetime
    consent_at: datetime
    completed_at: datetime


def build_record(
    demographics: Demographics,
    fingers: Mapping[int, FingerEntry],
    face: FaceEntry,
    context: CaptureContext,
    *,
    approvals: Mapping[str, str] | None = None,
    face_exception: str | None = None,
) -> tuple[EnrollmentRecord, ansi_nist.EnrollmentTransaction]:
    """The record and transaction of a complete case (ten finger slots and a face).

    ``approvals`` maps ``finger:<position>`` (and ``face``) to the approving supervisor;
    an exception without an approval is refused here, so no package leaves the station
    with an unapproved exception."""
    approvals = approvals or {}
    missing = sorted(set(range(1, 11)) - set(fingers))
    if missing:
        raise ValueError(f"fingers {missing} are neither captured nor excepted")
    today = context.completed_at.astimezone(UTC).date()
    samples: list[BiometricSample] = []
    prints: list[ansi_nist.FingerprintImage] = []
    idc = 1
    for position in range(1, 11):
        entry = fingers[position]
        exception = None
        if entry.exception_code is not None:
            approver = approvals.get(f"finger:{position}")
            if approver is None:
                raise ValueError(f"the exception on finger {position} is not approved")
            exception = BiometricException(
                code=entry.exception_code, reason=entry.exception_reason, approved_by=approver
            )
        if entry.wsq is None:
            if exception is None:
                raise ValueError(f"finger {position} has neither an image nor an exception")
            samples.append(
                BiometricSample(modality="finger", position=position, exception=exception)
            )
            continue
        quality = (
            QualityScore(
                algorithm=FINGER_QUALITY_ALGORITHM[0],
                version=FINGER_QUALITY_ALGORITHM[1],
                score=entry.quality,
            )
            if entry.quality is not None
            else None
        )
        samples.append(
            BiometricSample(
                modality="finger",
                position=position,
                idc=idc,
                quality=quality,
                attempts=max(1, min(10, entry.attempts)),
                exception=exception,
            )
        )
        prints.append(
            ansi_nist.FingerprintImage(
                idc=idc,
                position=position,
                impression=1,  # live-scan rolled
                width=entry.width,
                height=entry.height,
                data=entry.wsq,
                quality=entry.quality,
                capture_date=today,
                source=context.station_id,
            )
        )
        idc += 1
    face_exc = None
    if face_exception is not None:
        approver = approvals.get("face")
        if approver is None:
            raise ValueError("the face exception is not approved")
        face_exc = BiometricException(code=face_exception, approved_by=approver)
    samples.append(
        BiometricSample(
            modality="face",
            position=0,
            idc=idc,
            quality=QualityScore(
                algorithm=FACE_QUALITY_ALGORITHM[0],
                version=FACE_QUALITY_ALGORITHM[1],
                score=max(0, min(100, face.quality)),
            ),
            exception=face_exc,
        )
    )
    portrait = ansi_nist.FaceImage(
        idc=idc,
        width=face.width,
        height=face.height,
        compression="JPEGB",
        data=face.jpeg,
        capture_date=today,
        source=context.station_id,
        quality=max(0, min(100, face.quality)),
    )
    capture = CaptureMetadata(
        station_id=context.station_id,
        operator_id=context.operator_id,
        supervisor_id=context.supervisor_id,
        software_version=context.software_version,
        devices=list(context.devices),
        started_at=context.started_at,
        completed_at=context.completed_at,
        consent_at=context.consent_at,
    )
    record = EnrollmentRecord(demographics=demographics, capture=capture, samples=samples)
    header = ansi_nist.TransactionHeader(
        tot="ENR",
        dat=today,
        dai="VN-EID-REGISTRY",
        ori=context.station_id,
        tcn="pending",  # the package id, set by build_package
        gmt=context.completed_at.astimezone(UTC).replace(microsecond=0),
    )
    transaction = ansi_nist.EnrollmentTransaction(
        header=header,
        type2={3: "VN-EID enrollment"},
        fingerprints=prints,
        faces=[portrait],
        other_records=[],
    )
    return record, transaction


def device_infos(cells: Sequence[Mapping[str, object]]) -> tuple[DeviceInfo, ...]:
    """The capture devices of the health board (``DeviceHealthBoard.as_json()``)."""
    roles = {
        "fingerprint": "fingerprint_scanner",
        "camera": "camera",
        "card_encoder": "card_encoder",
    }
    out: list[DeviceInfo] = []
    for cell in cells:
        role = roles.get(str(cell.get("kind")))
        if role is None or not cell.get("present"):
            continue
        out.append(
            DeviceInfo(
                role=role,
                model=str(cell.get("model") or cell.get("name") or "unknown")[:200],
                serial=str(cell.get("serial") or "unknown")[:200],
                firmware=str(cell.get("firmware") or "unknown")[:200],
            )
        )
    return tuple(out)


__all__ = ["CaptureContext", "build_record", "device_infos"]
