"""An example enrollment (record + transaction) from already-encoded images.

Used by the demo, the package benchmark and the tests; the images come from the caller
(placeholder or synthetic generators), so this module needs no biometric algorithms.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from enrollment import ansi_nist
from enrollment.record import (
    Address,
    AdministrativeArea,
    BiometricException,
    BiometricSample,
    CaptureMetadata,
    Demographics,
    DeviceInfo,
    EnrollmentRecord,
    QualityScore,
    Sex,
)

_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
_MIDDLE_M = ["Văn", "Đức", "Minh", "Quốc", "Hữu"]
_MIDDLE_F = ["Thị", "Ngọc", "Thu", "Thanh", "Mỹ"]
_GIVEN_M = ["An", "Bình", "Cường", "Dũng", "Hùng", "Khoa", "Long", "Nam", "Phúc", "Quân"]
_GIVEN_F = ["Anh", "Hà", "Hạnh", "Hoa", "Lan", "Linh", "Mai", "Ngọc", "Thảo", "Trang"]
# (province, district, commune) codes with names, pre-2025 structure.
_PLACES = [
    ("01", "Thành phố Hà Nội", "001", "Quận Ba Đình", "00001", "Phường Phúc Xá"),
    ("79", "Thành phố Hồ Chí Minh", "760", "Quận 1", "26734", "Phường Tân Định"),
    ("48", "Thành phố Đà Nẵng", "490", "Quận Liên Chiểu", "20194", "Phường Hòa Hiệp Bắc"),
    ("02", "Tỉnh Hà Giang", "026", "Huyện Đồng Văn", "00712", "Thị trấn Phó Bảng"),
]


def _address(rng: random.Random, detail: str | None) -> Address:
    p = rng.choice(_PLACES)
    area = AdministrativeArea(
        province_code=p[0],
        province_name=p[1],
        district_code=p[2],
        district_name=p[3],
        commune_code=p[4],
        commune_name=p[5],
    )
    return Address(detail=detail, areas=[area])


def example_enrollment(
    seed: int,
    fingers: Sequence[bytes | None],
    finger_size: tuple[int, int],
    face: bytes,
    face_size: tuple[int, int],
    *,
    station_id: str = "HN-BD-001",
    now: datetime | None = None,
) -> tuple[EnrollmentRecord, ansi_nist.EnrollmentTransaction]:
    """A plausible citizen with ten finger slots (None = amputated) and a face.

    ``fingers`` are WSQ images for positions 1..10; the transaction's TCN is filled in
    when the package is built.
    """
    if len(fingers) != 10:
        raise ValueError("ten finger slots, positions 1..10")
    rng = random.Random(seed)  # noqa: S311 - example data, not secrets
    now = now or datetime.now(UTC)
    sex = rng.choice([Sex.male, Sex.female])
    middle, given = (_MIDDLE_M, _GIVEN_M) if sex is Sex.male else (_MIDDLE_F, _GIVEN_F)
    name = f"{rng.choice(_FAMILY)} {rng.choice(middle)} {rng.choice(given)}"
    born = date(rng.randint(1950, 2008), rng.randint(1, 12), rng.randint(1, 28))
    demographics = Demographics(
        full_name=name,
        date_of_birth=born.isoformat(),
        sex=sex,
        ethnicity="01",
        place_of_origin=_address(rng, None),
        permanent_residence=_address(rng, f"Số {rng.randint(1, 200)} phố Hàng Bông"),
        old_id_number=f"{rng.randint(0, 999_999_999):09d}",
        father_name=f"{name.split()[0]} Văn {rng.choice(_GIVEN_M)}",
        mother_name=f"{rng.choice(_FAMILY)} Thị {rng.choice(_GIVEN_F)}",
        identifying_marks=["Nốt ruồi C:1cm dưới sau mép phải"],
    )
    started = now - timedelta(minutes=6)
    capture = CaptureMetadata(
        station_id=station_id,
        operator_id="CB-0042",
        software_version="0.1.0",
        devices=[
            DeviceInfo(
                role="fingerprint_scanner",
                model="TP-800 (simulated)",
                serial="SIM-FP-0001",
                firmware="1.0",
            ),
            DeviceInfo(
                role="camera", model="UVC 1080p (simulated)", serial="SIM-CAM-0001", firmware="1.0"
            ),
        ],
        started_at=started,
        completed_at=now,
        consent_at=now - timedelta(seconds=30),
    )
    samples: list[BiometricSample] = []
    prints: list[ansi_nist.FingerprintImage] = []
    idc = 1
    today = now.date()
    for position, image in enumerate(fingers, start=1):
        if image is None:
            samples.append(
                BiometricSample(
                    modality="finger",
                    position=position,
                    exception=BiometricException(code="amputated", approved_by="GS-0007"),
                )
            )
            continue
        score = rng.randint(55, 90)
        samples.append(
            BiometricSample(
                modality="finger",
                position=position,
                idc=idc,
                attempts=rng.randint(1, 2),
                quality=QualityScore(algorithm="NFIQ2", version="2.3", score=score),
            )
        )
        prints.append(
            ansi_nist.FingerprintImage(
                idc=idc,
                position=position,
                impression=1,
                width=finger_size[0],
                height=finger_size[1],
                data=image,
                quality=score,
                capture_date=today,
                source=station_id,
            )
        )
        idc += 1
    samples.append(
        BiometricSample(
            modality="face",
            position=0,
            idc=idc,
            quality=QualityScore(algorithm="vn-eid-face", version="0.1", score=80),
        )
    )
    portrait = ansi_nist.FaceImage(
        idc=idc,
        width=face_size[0],
        height=face_size[1],
        compression="JPEGB",
        data=face,
        capture_date=today,
        source=station_id,
    )
    record = EnrollmentRecord(demographics=demographics, capture=capture, samples=samples)
    header = ansi_nist.TransactionHeader(
        tot="ENR",
        dat=today,
        dai="VN-EID-REGISTRY",
        ori=station_id,
        tcn="pending",
        gmt=now.astimezone(UTC).replace(microsecond=0),
    )
    transaction = ansi_nist.EnrollmentTransaction(
        header=header,
        type2={3: "VN-EID enrollment"},
        fingerprints=prints,
        faces=[portrait],
        other_records=[],
    )
    return record, transaction
