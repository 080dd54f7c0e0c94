"""Keys, trust and an example package for the package tests (small images, fast)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from biometrics.placeholder import face_image, finger_image
from enrollment import ansi_nist, images
from enrollment.examples import example_enrollment
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner
from enrollment.pki import issue_station_certificate, make_station_ca
from enrollment.record import EnrollmentRecord
from enrollment.trust import TrustStore

STATION = "HN-BD-001"
FINGER_SIZE = (320, 360)
FACE_SIZE = (240, 320)


@dataclass
class Kit:
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    signer: SoftwareKeySigner
    registry_key: ec.EllipticCurvePrivateKey
    trust: TrustStore

    @property
    def decryptor(self) -> SoftwareDecryptor:
        return SoftwareDecryptor(self.registry_key)

    def station_signer(self, station_id: str) -> SoftwareKeySigner:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_station_certificate(self.ca_key, self.ca_cert, station_id, key.public_key())
        return SoftwareKeySigner(key, cert)


def make_kit() -> Kit:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = make_station_ca(ca_key)
    station_key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_station_certificate(ca_key, ca_cert, STATION, station_key.public_key())
    trust = TrustStore()
    trust.add_certificate(ca_cert)
    registry_key = ec.generate_private_key(ec.SECP256R1())
    return Kit(ca_key, ca_cert, SoftwareKeySigner(station_key, cert), registry_key, trust)


def encoded_fingers(seed: int, size: tuple[int, int] = FINGER_SIZE) -> list[bytes]:
    w, h = size
    return [images.encode_wsq(finger_image(seed * 10 + i, w, h)) for i in range(10)]


def encoded_face(seed: int, size: tuple[int, int] = FACE_SIZE) -> bytes:
    buf = io.BytesIO()
    face_image(seed, *size).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def example(
    seed: int = 1, *, amputated: tuple[int, ...] = (), station_id: str = STATION
) -> tuple[EnrollmentRecord, ansi_nist.EnrollmentTransaction]:
    fingers: list[bytes | None] = list(encoded_fingers(seed))
    for position in amputated:
        fingers[position - 1] = None
    return example_enrollment(
        seed,
        fingers,
        FINGER_SIZE,
        encoded_face(seed),
        FACE_SIZE,
        station_id=station_id,
        now=datetime.now(UTC),
    )
