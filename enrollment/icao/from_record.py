"""The thin adapter from an enrollment record to the chip's plain values: the registry
calls :func:`chip_from_record` once it has issued the personal number.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment.icao.chip import ChipContents, ChipSecrets, build_chip
from enrollment.icao.lds import FaceImage, FingerImage, NationalData
from enrollment.icao.mrz import cccd_td1
from enrollment.icao.sod import SodSigner
from enrollment.images import read_image_header
from enrollment.record import Address, DivisionScheme, EnrollmentRecord, Sex
from enrollment.reference import ETHNIC_GROUPS

__all__ = ["address_text", "chip_from_record", "national_data"]


def address_text(address: Address, scheme: DivisionScheme = DivisionScheme.pre_2025) -> str:
    """One line as the card prints it: detail, commune, district, province.

    Uses the area of ``scheme`` if the address has one, otherwise its other area; names
    missing from the record are looked up in the code tables.
    """
    area = address.area(scheme) or address.areas[0]
    commune, district, province = area.commune_name, area.district_name, area.province_name
    if commune is None or province is None or (area.district_code and district is None):
        from enrollment import divisions  # the code tables load in ~0.2 s: only when needed

        found = divisions.load().commune(area.commune_code, area.scheme)
        commune = commune or found.name
        district = district or found.district_name
        province = province or found.province_name
    parts = [address.detail, commune, district, province]
    return ", ".join(p for p in parts if p)


def _digits(partial_date: str) -> str:
    return partial_date.replace("-", "")


def national_data(
    record: EnrollmentRecord,
    personal_number: str,
    issue_date: date,
    expiry: date | None,
    *,
    scheme: DivisionScheme = DivisionScheme.pre_2025,
) -> NationalData:
    """DG13's values from the record's demographics."""
    d = record.demographics
    return NationalData(
        personal_number=personal_number,
        full_name=d.full_name,
        date_of_birth=_digits(d.date_of_birth),
        sex=d.sex.value,
        nationality=d.nationality,
        ethnicity=ETHNIC_GROUPS[d.ethnicity],
        religion=d.religion,
        place_of_origin=address_text(d.place_of_origin, scheme),
        place_of_residence=address_text(d.permanent_residence, scheme),
        date_of_issue=issue_date.strftime("%Y%m%d"),
        date_of_expiry=expiry.strftime("%Y%m%d") if expiry else None,
        identifying_marks=tuple(d.identifying_marks),
        father_name=d.father_name,
        mother_name=d.mother_name,
        spouse_name=d.spouse_name,
        old_id_number=d.old_id_number,
    )


def chip_from_record(
    record: EnrollmentRecord,
    personal_number: str,
    photo_jpeg: bytes,
    fingers_wsq: Mapping[int, bytes],
    issue_date: date,
    expiry: date | None,
    *,
    document_signer: x509.Certificate,
    sign: SodSigner,
    active_auth_key: ec.EllipticCurvePrivateKey | None = None,
    chip_auth_key: ec.EllipticCurvePrivateKey | None = None,
    signing_time: datetime | None = None,
    scheme: DivisionScheme = DivisionScheme.pre_2025,
) -> tuple[ChipContents, ChipSecrets]:
    """The chip for an issued enrollment: MRZ, portrait, the fingers given (ANSI/NIST
    position -> WSQ; the CCCD keeps the two index fingers, 2 and 7), DG13, DG14, DG15, SOD.
    """
    d = record.demographics
    header = read_image_header(photo_jpeg, "JPEGB")
    td1 = cccd_td1(
        personal_number=personal_number,
        full_name=d.full_name,
        birth_date=d.date_of_birth,
        sex=d.sex.value,
        expiry=expiry,
    )
    gender = {Sex.male: 1, Sex.female: 2}[d.sex]
    fingers = [FingerImage(wsq, pos) for pos, wsq in sorted(fingers_wsq.items())]
    return build_chip(
        td1=td1,
        faces=[FaceImage(photo_jpeg, header.width, header.height, gender=gender)],
        fingers=fingers,
        national_data=national_data(record, personal_number, issue_date, expiry, scheme=scheme),
        document_signer=document_signer,
        sign=sign,
        active_auth_key=active_auth_key,
        chip_auth_key=chip_auth_key,
        signing_time=signing_time,
    )
