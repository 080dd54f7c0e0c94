"""Realistic enrollment packages for the registry tests: synthetic rolled fingerprints
(biometrics.fingerprint.synth), synthetic faces rendered from the real photos
(biometrics.synth.faces) cropped to the ICAO portrait, and a plausible citizen.

A "person" is a seed: the same seed gives the same fingers and face source, and each
``sitting`` is a new capture (new impressions, a new photo), as when someone enrolls
twice. Images are cached per process: generating ten rolled prints takes about a second.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from biometrics.face.pipeline import FaceAnalyzer
from biometrics.fingerprint.synth import impression, master_finger
from biometrics.fingerprint.synth_impression import ImpressionKind, SkinCondition
from biometrics.synth import faces
from enrollment import ansi_nist, images
from enrollment.examples import example_enrollment
from enrollment.keys import Signer
from enrollment.package import BuiltPackage, build_package
from enrollment.record import EnrollmentRecord
from tests.imagekit import ensure_face_assets

SEED = 20261130


@dataclass
class Clock:
    """The registry's clock in a test: ``create_app(settings, clock=clock)``; move
    ``clock.now`` to make leases expire or tokens age."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@functools.cache
def _analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


@functools.cache
def _sources() -> dict[str, faces.SourceFace]:
    folder = ensure_face_assets()
    photos = {
        p.name: np.asarray(Image.open(p).convert("RGB"))
        for p in sorted(folder.iterdir())
        if p.name in faces.SOURCE_PHOTOS
    }
    return faces.prepare_sources(photos, _analyzer())


@functools.cache
def finger_wsq(person: int, position: int, sitting: int) -> tuple[bytes, int, int]:
    """WSQ of a normal-skin, full-contact rolled impression; (data, width, height)."""
    master = master_finger(SEED, person, position)
    shot = impression(
        master,
        SEED,
        person,
        position,
        sitting,
        ImpressionKind.ROLLED,
        condition=SkinCondition.NORMAL,
        partial=False,
    )
    h, w = shot.image.shape
    return images.encode_wsq(shot.image), w, h


@functools.cache
def portrait_jpeg(person: int, sitting: int) -> tuple[bytes, int, int]:
    """A good portrait (ICAO crop, passes the face checks) of ``person``; (jpeg, w, h)."""
    sources = _sources()
    source = sources[faces.source_for(person)]
    analyzer = _analyzer()
    # A synthetic capture is already framed as a portrait (the studio source's geometry).
    capture = faces.capture_for(person, sitting + 1, kind="good")
    portrait = faces.synthetic_face(source, capture)
    if analyzer.analyze(portrait).assessment is None:
        raise AssertionError(f"no face in the portrait of person {person} sitting {sitting}")
    data = images.encode_jpeg(portrait, quality=90)
    return data, portrait.shape[1], portrait.shape[0]


def citizen(
    person: int,
    sitting: int = 0,
    *,
    station_id: str,
    fingers: tuple[int, ...] = tuple(range(1, 11)),
    demographics: int | None = None,
    blank: tuple[int, ...] = (),
    now: datetime | None = None,
) -> tuple[EnrollmentRecord, ansi_nist.EnrollmentTransaction]:
    """Record and transaction of ``person``'s ``sitting``-th enrollment. Demographics come
    from ``example_enrollment(demographics)``, by default the person's own seed (a
    duplicate enrolling again under another identity passes another seed)."""
    prints = {p: finger_wsq(person, p, sitting) for p in fingers}
    for p in blank:  # a smudge with no ridges: what a dirty platen gives
        _, w, h = prints[p]
        grey = np.full((h, w), 200, np.uint8)
        prints[p] = (images.encode_wsq(grey), w, h)
    sizes = {d[1:] for d in prints.values()}
    if len(sizes) != 1:
        raise AssertionError("impressions of different sizes")
    (size,) = sizes
    face, fw, fh = portrait_jpeg(person, sitting)
    slots: list[bytes | None] = [prints[p][0] if p in prints else None for p in range(1, 11)]
    return example_enrollment(
        person if demographics is None else demographics,
        slots,
        size,
        face,
        (fw, fh),
        station_id=station_id,
        now=now or datetime.now(UTC),
    )


def package(
    person: int,
    sitting: int,
    *,
    signer: Signer,
    station_id: str,
    recipient: ec.EllipticCurvePublicKey,
    demographics: int | None = None,
    fingers: tuple[int, ...] = tuple(range(1, 11)),
    blank: tuple[int, ...] = (),
    package_id: str | None = None,
    date_of_birth: str | None = None,
) -> BuiltPackage:
    record, tx = citizen(
        person,
        sitting,
        station_id=station_id,
        demographics=demographics,
        fingers=fingers,
        blank=blank,
    )
    if date_of_birth is not None:
        d = record.demographics.model_copy(update={"date_of_birth": date_of_birth})
        record = record.model_copy(update={"demographics": d})
    return build_package(record, tx, signer=signer, recipient=recipient, package_id=package_id)


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def registry_settings(tmp: Path, database_url: str | None = None, **extra: Any) -> Any:
    """Settings of a registry living under ``tmp`` (database, blobs, keys, JWT secret),
    with cheap password hashing and the worker left to the test."""
    from central.config import RegistrySettings

    values: dict[str, Any] = {
        "database": {"url": database_url or f"sqlite:///{tmp / 'registry.db'}"},
        "blobs": {"backend": "local", "path": tmp / "blobs"},
        "keys": {"path": tmp / "keys"},
        "auth": {
            "jwt_secret_file": tmp / "jwt-secret",
            "argon2_time_cost": 1,
            "argon2_memory_kib": 1024,
            "argon2_parallelism": 1,
        },
        "worker": {"in_process": False},
        "bootstrap_admin": f"{ADMIN[0]}:{ADMIN[1]}",
    }
    for key, value in extra.items():
        if key == "blobs":
            values[key] = value  # a whole other store, not a tweak of the folder's
        elif isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return RegistrySettings(**values)


ADMIN = ("admin", "correct horse battery staple")


def csr_for(key: ec.EllipticCurvePrivateKey, station_id: str) -> str:
    """A PKCS#10 request for ``key``, as a station makes at first boot."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, station_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def login(client: Any, username: str, password: str) -> dict[str, str]:
    """Bearer headers for a registry user (client: a TestClient or httpx.Client)."""
    r = client.post("/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def onboard(
    client: Any,
    admin: dict[str, str],
    station_id: str = "HN-BD-001",
    commune_code: str = "00001",
    office_id: int | None = None,
) -> tuple[Any, int]:
    """Register an office (unless ``office_id``), a station and a token; enroll the station
    with a fresh key through /v1/enroll. Returns (SoftwareKeySigner with its certificate,
    office id)."""
    from cryptography import x509

    from enrollment.keys.software import SoftwareKeySigner

    if office_id is None:
        office = client.post(
            "/v1/offices",
            json={"name": f"Công an {commune_code}", "commune_code": commune_code},
            headers=admin,
        )
        assert office.status_code == 201, office.text
        office_id = int(office.json()["id"])
    station = client.post(
        "/v1/stations", json={"station_id": station_id, "office_id": office_id}, headers=admin
    )
    assert station.status_code == 201, station.text
    token = client.post(f"/v1/stations/{station_id}/tokens", json={}, headers=admin)
    assert token.status_code == 201, token.text
    key = ec.generate_private_key(ec.SECP256R1())
    enrolled = client.post(
        "/v1/enroll", json={"token": token.json()["token"], "csr": csr_for(key, station_id)}
    )
    assert enrolled.status_code == 201, enrolled.text
    cert = x509.load_pem_x509_certificate(enrolled.json()["certificate"].encode())
    return SoftwareKeySigner(key, cert), office_id
