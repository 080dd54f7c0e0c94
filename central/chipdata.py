"""Issuance: the personal number of a new person, and the chip data of one card.

:func:`allocate_personal_number` takes the number's prefix from the record (province of
the place of birth registration, century and sex, birth year) and the next sequence of
that prefix from the database (``central.db.ops.allocate_sequence``: consecutive, never
reused, safe under concurrent workers on SQLite and PostgreSQL).

:func:`build_chip_data` makes every LDS file of the card (EF.COM, DG1 TD1 MRZ, DG2 face,
DG3 the two index fingers, DG13 national data, DG14, DG15, EF.SOD signed by the current
Document Signer) and the chip's private keys for Active and Chip Authentication, generated
per card. :class:`ChipData` (the shared codec, :mod:`enrollment.icao.chip_data`, re-exported
here) is what the registry stores (deterministic CBOR) and what the enrolling station
fetches to personalise the card.

The chip's private keys are secrets that must reach the card and nothing else: they travel
to the station inside the authenticated HTTPS response and should be dropped from the
registry's copy once the station reports the card encoded (:meth:`ChipData.without_secrets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from central.db.models import SignerCertificate
from central.db.ops import allocate_sequence
from enrollment import divisions
from enrollment.icao.chip_data import CHIP_DATA_VERSION, ChipData, ChipDataError
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

CCCD_FINGERS = (2, 7)  # the right and left index fingers (ANSI/NIST FGP)


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


def _key_der(key: ec.EllipticCurvePrivateKey | None) -> bytes | None:
    if key is None:
        return None
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


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
