"""ICAO fixtures shared by the LDS tests and the card driver tests: a CSCA and Document
Signer, small real images, and a complete signed chip for a sample citizen."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from functools import cache

from biometrics.placeholder import face_image, finger_image
from enrollment import images
from enrollment.icao.chip import ChipContents, ChipSecrets, build_chip
from enrollment.icao.lds import FaceImage, FingerImage, NationalData
from enrollment.icao.mrz import Td1, cccd_td1
from enrollment.icao.pki import SoftwarePki

FACE_SIZE = (120, 160)
FINGER_SIZE = (200, 240)
PERSONAL_NUMBER = "001090012345"  # Ha Noi, male born in the 20th century, 1990


IcaoPki = SoftwarePki
"""A CSCA + Document Signer with software keys (enrollment.icao.pki.SoftwarePki)."""


def make_pki(*, now: datetime | None = None, ds_not_after: datetime | None = None) -> IcaoPki:
    return SoftwarePki.generate(now=now, ds_not_after=ds_not_after)


@cache
def face_jpeg(seed: int = 1) -> bytes:
    buf = io.BytesIO()
    face_image(seed, *FACE_SIZE).save(buf, "JPEG", quality=80)
    return buf.getvalue()


@cache
def finger_wsq(seed: int = 1) -> bytes:
    return images.encode_wsq(finger_image(seed, *FINGER_SIZE))


def sample_td1(expiry: date | None = date(2030, 1, 15)) -> Td1:
    return cccd_td1(
        personal_number=PERSONAL_NUMBER,
        full_name="Nguyễn Văn Đức",
        birth_date=date(1990, 1, 15),
        sex="M",
        expiry=expiry,
    )


def sample_national_data() -> NationalData:
    return NationalData(
        personal_number=PERSONAL_NUMBER,
        full_name="Nguyễn Văn Đức",
        date_of_birth="19900115",
        sex="M",
        nationality="VNM",
        ethnicity="Kinh",
        religion="Không",
        place_of_origin="Phường Phúc Xá, Quận Ba Đình, Thành phố Hà Nội",
        place_of_residence="Số 12 phố Hàng Bông, Phường Tân Định, Quận 1, Thành phố Hồ Chí Minh",
        date_of_issue="20210415",
        date_of_expiry="20300115",
        identifying_marks=("Nốt ruồi C:1cm dưới sau mép phải", "Sẹo chấm cánh mũi trái"),
        father_name="Nguyễn Văn An",
        mother_name="Trần Thị Lan",
        old_id_number="012345678",
    )


def sample_chip(
    pki: IcaoPki | None = None, *, fingers: bool = True, seed: int = 1
) -> tuple[ChipContents, ChipSecrets, IcaoPki]:
    """A complete chip: DG1, DG2, DG3 (index fingers, if ``fingers``), DG13, DG14, DG15, SOD."""
    pki = pki or make_pki()
    w, h = FACE_SIZE
    finger_list = (
        [FingerImage(finger_wsq(seed), 2), FingerImage(finger_wsq(seed + 1), 7)] if fingers else []
    )
    contents, secrets = build_chip(
        td1=sample_td1(),
        faces=[FaceImage(face_jpeg(seed), w, h, gender=1)],
        fingers=finger_list,
        national_data=sample_national_data(),
        document_signer=pki.ds,
        sign=pki.sign,
        signing_time=datetime.now(UTC) - timedelta(minutes=1),
    )
    return contents, secrets, pki
