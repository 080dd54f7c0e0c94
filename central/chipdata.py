"""Issuance: the personal number of a new person, and the chip data of one card.

:func:`allocate_personal_number` takes the number's prefix from the record (province of
the place of birth registration, century and sex, birth year) and the next sequence of
that prefix from the database (``central.db.ops.allocate_sequence``: consecutive, never
reused, safe under concurrent workers on SQLite and PostgreSQL).

:func:`build_chip_data` makes every LDS file of the card (EF.COM, DG1 TD1 MRZ, DG2 face,
DG3 the two index fingers, DG13 national data, DG14, DG15, EF.SOD signed by the current
Document Signer) and the chip's private keys for Active and Chip Authentication, generated
per card. :class:`ChipData` is what the registry stores (deterministic CBOR) and what the
enrolling station fetches (a JSON view) to personalise the card.

The chip's private keys are secrets that must reach the card and nothing else: they travel
to the station inside the authenticated HTTPS response and should be dropped from the
registry's copy once the station reports the card encoded (:meth:`ChipData.without_secrets`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from central.db.models import SignerCertificate
from central.db.ops import allocate_sequence
from enrollment import cbor, divisions
from enrollment.errors import MalformedPackageError
from enrollment.icao.chip import FID_COM, FID_SOD, fid_of
from enrollment.icao.from_record import chip_from_record
from enrollment.icao.sod import from_signer
from enrollment.icao.validity import cccd_expiry
from enrollment.keys import Signer
from enrollment.package import VerifiedPackage
from enrollment.personal_number import compose, number_prefix
from enrollment.record import Address, DivisionScheme, EnrollmentRecord, parse_partial_date

__all__ = [
    "CCCD_FINGERS",
    "CHIP_DATA_VERSION",
    "ChipData",
    "ChipDataError",
    "ChipSource",
    "allocate_personal_number",
    "birth_date",
    "build_chip_data",
    "province_of_registration",
]

CHIP_DATA_VERSION = 1
CCCD_FINGERS = (2, 7)  # the right and left index fingers (ANSI/NIST FGP)


class ChipDataError(ValueError):
    """Chip data cannot be built from this enrollment, or stored chip data is unreadable."""


# ------------------------------------------------------------------ personal number


def province_of_registration(record: EnrollmentRecord) -> str:
    """The 2-digit province code (2016 code table, the pre-2025 63 provinces) of the place
    of birth registration, or of the permanent residence when the place of birth is not
    recorded (the person is then registered where they live).

    A place recorded only in the 2025 structure is traced back through the legacy communes
    that became it; when those lie in more than one old province the number cannot be
    decided and the record must carry the pre-2025 area."""
    d = record.demographics
    place: Address = d.place_of_birth or d.permanent_residence
    legacy = place.area(DivisionScheme.pre_2025)
    if legacy is not None:
        return legacy.province_code
    current = place.area(DivisionScheme.y2025)
    assert current is not None  # an address has at least one area
    tables = divisions.load()
    provinces = {
        tables.commune(old).province_code
        for old, new in tables.successors.items()
        if new == current.commune_code
    }
    if len(provinces) != 1:
        raise ChipDataError(
            f"2025 commune {current.commune_code} was formed from communes of "
            f"{len(provinces)} pre-2025 provinces; the record must give the pre-2025 area of "
            "the place of birth registration to decide the personal number's province"
        )
    return provinces.pop()


def allocate_personal_number(session: Session, record: EnrollmentRecord) -> str:
    """Allocate the next personal number for the person ``record`` describes.

    Call inside the transaction that also creates the person: the sequence is taken under
    the database's lock and a rolled-back transaction leaves no gap (nothing commits here).
    """
    d = record.demographics
    year, _, _ = parse_partial_date(d.date_of_birth)
    prefix = number_prefix(province_of_registration(record), d.sex, year)
    return compose(prefix, allocate_sequence(session, prefix))


def birth_date(partial: str) -> date:
    """A full date for a partial date of birth: the latest it allows (as eligibility does),
    so that an unknown day or month never makes a card expire early."""
    year, month, day = parse_partial_date(partial)
    month_ = month or 12
    if day is None:
        next_month = date(year + 1, 1, 1) if month_ == 12 else date(year, month_ + 1, 1)
        return date.fromordinal(next_month.toordinal() - 1)
    return date(year, month_, day)


# ------------------------------------------------------------------------- chip data


@dataclass(frozen=True)
class ChipSource:
    """What a chip is built from: the record, the face JPEG and fingers by position (WSQ)."""

    record: EnrollmentRecord
    face_jpeg: bytes
    fingers_wsq: Mapping[int, bytes]

    @classmethod
    def from_package(cls, package: VerifiedPackage) -> ChipSource:
        """The record and images of a verified package (Type-10 face, Type-14 fingers)."""
        tx = package.transaction
        if not tx.faces:
            raise ChipDataError(f"package {package.package_id} has no face image for DG2")
        face = tx.faces[0]
        if face.compression != "JPEGB":
            raise ChipDataError(
                f"package {package.package_id}: the face is {face.compression}, DG2 needs JPEG"
            )
        fingers = {f.position: f.data for f in tx.fingerprints if f.position in CCCD_FINGERS}
        return cls(package.record, face.data, fingers)


def _file_name(fid: int) -> str:
    if fid == FID_COM:
        return "EF.COM"
    if fid == FID_SOD:
        return "EF.SOD"
    return f"DG{fid - 0x0100}"


def _fid_of_name(name: str) -> int:
    if name == "EF.COM":
        return FID_COM
    if name == "EF.SOD":
        return FID_SOD
    if name.startswith("DG") and name[2:].isdigit():
        return fid_of(int(name[2:]))
    raise ChipDataError(f"unknown chip file {name!r}")


def _key_der(key: ec.EllipticCurvePrivateKey | None) -> bytes | None:
    if key is None:
        return None
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class ChipData:
    """Everything the station writes onto one card.

    ``files``: LDS file identifier -> content (EF.COM, DG1-DG15 present, EF.SOD).
    ``active_auth_key`` / ``chip_auth_key``: PKCS#8 DER of the chip's private keys (DG15
    and DG14 carry their public halves), None once dropped from the registry's copy.
    """

    personal_number: str
    document_number: str
    issue_date: date
    expiry: date | None
    signer_id: int
    mrz: str
    mrz_information: str
    files: Mapping[int, bytes]
    active_auth_key: bytes | None
    chip_auth_key: bytes | None

    def data_groups(self) -> dict[int, bytes]:
        """{DG number: bytes}, for passive authentication."""
        return {fid - 0x0100: data for fid, data in self.files.items() if 0x0101 <= fid <= 0x0110}

    @property
    def sod(self) -> bytes:
        return self.files[FID_SOD]

    def without_secrets(self) -> ChipData:
        """The same chip data less the chip's private keys (what the registry keeps once
        the card is encoded)."""
        return replace(self, active_auth_key=None, chip_auth_key=None)

    def _plain(self) -> dict[str, Any]:
        return {
            "version": CHIP_DATA_VERSION,
            "personal_number": self.personal_number,
            "document_number": self.document_number,
            "issue_date": self.issue_date.isoformat(),
            "expiry": None if self.expiry is None else self.expiry.isoformat(),
            "signer_id": self.signer_id,
            "mrz": self.mrz,
            "mrz_information": self.mrz_information,
        }

    def to_bytes(self) -> bytes:
        """Deterministic CBOR: one chip, one byte string."""
        plain = self._plain()
        plain["files"] = {
            _file_name(fid): {"fid": fid, "data": data} for fid, data in self.files.items()
        }
        plain["active_auth_key"] = self.active_auth_key
        plain["chip_auth_key"] = self.chip_auth_key
        return cbor.dumps(plain)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChipData:
        try:
            obj = cbor.loads_strict(data, "chip data")
        except MalformedPackageError as exc:
            raise ChipDataError(str(exc)) from exc
        try:
            if obj["version"] != CHIP_DATA_VERSION:
                raise ChipDataError(
                    f"chip data version {obj['version']} is not {CHIP_DATA_VERSION}"
                )
            files: dict[int, bytes] = {}
            for name, entry in obj["files"].items():
                fid = int(entry["fid"])
                if fid != _fid_of_name(name) or not isinstance(entry["data"], bytes):
                    raise ChipDataError(f"chip file {name} is malformed")
                files[fid] = entry["data"]
            return cls(
                personal_number=str(obj["personal_number"]),
                document_number=str(obj["document_number"]),
                issue_date=date.fromisoformat(obj["issue_date"]),
                expiry=None if obj["expiry"] is None else date.fromisoformat(obj["expiry"]),
                signer_id=int(obj["signer_id"]),
                mrz=str(obj["mrz"]),
                mrz_information=str(obj["mrz_information"]),
                files=files,
                active_auth_key=obj["active_auth_key"],
                chip_auth_key=obj["chip_auth_key"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ChipDataError):
                raise
            raise ChipDataError(f"chip data is malformed: {exc!r}") from exc

    def to_json(self) -> dict[str, Any]:
        """The view the station fetches: each file as {fid (hex), data (base64)}, and the
        chip's private keys as base64 PKCS#8 DER (null once dropped)."""

        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode()

        plain = self._plain()
        plain["files"] = {
            _file_name(fid): {"fid": f"{fid:04X}", "data": b64(data)}
            for fid, data in sorted(self.files.items())
        }
        plain["active_auth_key"] = b64(self.active_auth_key)
        plain["chip_auth_key"] = b64(self.chip_auth_key)
        return plain


def build_chip_data(
    source: VerifiedPackage | ChipSource,
    personal_number: str,
    issue_date: date,
    signer_row: SignerCertificate,
    signer: Signer,
    *,
    signing_time: datetime | None = None,
) -> ChipData:
    """The chip of a card issued on ``issue_date`` for ``personal_number``, its EF.SOD
    signed by ``signer`` (the Document Signer of ``signer_row``,
    ``RegistryKeys.document_signer``). Active and Chip Authentication keys are new per card.
    """
    if isinstance(source, VerifiedPackage):
        source = ChipSource.from_package(source)
    ds = x509.load_pem_x509_certificate(signer_row.certificate_pem.encode())
    if ds.public_key() != signer.public_key():
        raise ChipDataError(
            f"the signer given is not the key of Document Signer {signer_row.id} "
            f"({signer_row.key_ref}); pass the pair RegistryKeys.document_signer returns"
        )
    born = birth_date(source.record.demographics.date_of_birth)
    expiry = cccd_expiry(born, issue_date)
    fingers = {p: wsq for p, wsq in source.fingers_wsq.items() if p in CCCD_FINGERS}
    contents, secrets = chip_from_record(
        source.record,
        personal_number,
        source.face_jpeg,
        fingers,
        issue_date,
        expiry,
        document_signer=ds,
        sign=from_signer(signer),
        active_auth_key=ec.generate_private_key(ec.SECP256R1()),
        signing_time=signing_time or datetime.now(UTC),
    )
    return ChipData(
        personal_number=personal_number,
        document_number=personal_number[3:],
        issue_date=issue_date,
        expiry=expiry,
        signer_id=signer_row.id,
        mrz=contents.mrz,
        mrz_information=contents.mrz_information,
        files=dict(contents.files),
        active_auth_key=_key_der(secrets.active_auth_key),
        chip_auth_key=_key_der(secrets.chip_auth_key),
    )
