"""Offices, stations, one-time enrollment tokens, station certificates, operators.

An administrator registers an office (a commune's police, by its GSO commune code), a
station of that office, and a one-time token for it. The technician types or scans the
token on the station at first boot; the station sends it with a CSR for the key it made
(in its TPM where fitted), and gets a certificate from the registry's station CA. The
token is spent atomically (``central.db.ops.use_token``): of two stations presenting one
token, one wins.

Suspending a station refuses its requests until it is resumed; revoking is for good (a
stolen or scrapped station): its certificate is no longer accepted, while the packages it
sent before stay valid (they were verified and recorded when they arrived).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central.db.models import (
    EnrollmentToken,
    Office,
    Operator,
    OperatorRole,
    Station,
    StationStatus,
)
from central.db.ops import append_audit, token_sha256, use_token
from enrollment import divisions
from enrollment.record import DivisionScheme

STATION_ID = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,31}$")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


class OnboardingError(Exception):
    """A refused administrative request: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


CertificateIssuer = Callable[[bytes, str], x509.Certificate]
"""(CSR or public key, PEM or DER; station id) -> station certificate."""


@dataclass(frozen=True)
class NewToken:
    token: str  # shown once; only its SHA-256 is kept
    station_id: str
    expires_at: datetime


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def create_office(
    session: Session, name: str, commune_code: str, now: datetime, actor: str
) -> Office:
    """An office in a commune of the pre-2025 (63-province) structure; names are taken from
    the code table, so a wrong code is caught here rather than in the reports."""
    try:
        commune = divisions.load().commune(commune_code, DivisionScheme.pre_2025)
    except KeyError as exc:
        raise OnboardingError(422, "unknown-commune", str(exc.args[0])) from None
    office = Office(
        name=name.strip(),
        province_code=commune.province_code,
        province_name=commune.province_name,
        district_code=commune.district_code or "",
        district_name=commune.district_name or "",
        commune_code=commune.code,
        commune_name=commune.name,
        created_at=now,
    )
    session.add(office)
    try:
        session.flush()
    except IntegrityError:
        raise OnboardingError(
            409, "office-exists", f"an office named {name!r} exists in commune {commune_code}"
        ) from None
    append_audit(session, now, actor, "office.created", f"office:{office.id}", {"name": name})
    return office


def create_station(
    session: Session, station_id: str, office_id: int, now: datetime, actor: str
) -> Station:
    if not STATION_ID.match(station_id):
        raise OnboardingError(
            422,
            "bad-station-id",
            "a station id is 3-32 upper-case letters, digits and '-' (e.g. HN-BD-001)",
        )
    if session.get(Office, office_id) is None:
        raise OnboardingError(404, "unknown-office", f"no office {office_id}")
    if session.get(Station, station_id) is not None:
        raise OnboardingError(409, "station-exists", f"station {station_id} exists")
    station = Station(
        id=station_id, office_id=office_id, status=StationStatus.active, created_at=now
    )
    session.add(station)
    session.flush()
    append_audit(
        session, now, actor, "station.created", f"station:{station_id}", {"office": office_id}
    )
    return station


def get_station(session: Session, station_id: str) -> Station:
    station = session.get(Station, station_id)
    if station is None:
        raise OnboardingError(404, "unknown-station", f"no station {station_id}")
    return station


def create_token(
    session: Session, station_id: str, now: datetime, actor: str, ttl: timedelta
) -> NewToken:
    """A one-time token for ``station_id`` (256 random bits, URL-safe)."""
    station = get_station(session, station_id)
    if station.status is StationStatus.revoked:
        raise OnboardingError(409, "station-revoked", f"station {station_id} is revoked")
    token = secrets.token_urlsafe(32)
    session.add(
        EnrollmentToken(
            token_sha256=token_sha256(token),
            station_id=station_id,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    session.flush()
    append_audit(
        session,
        now,
        actor,
        "token.created",
        f"station:{station_id}",
        {"expires_at": (now + ttl).isoformat()},
    )
    return NewToken(token, station_id, now + ttl)


def enroll_station(
    session: Session, token: str, request: bytes, issue: CertificateIssuer, now: datetime
) -> tuple[Station, x509.Certificate]:
    """Spend ``token`` and certify the key in ``request`` (a CSR or a public key) for the
    token's station. Re-enrolling with a new token replaces the certificate (a repaired
    station with a new TPM); the old certificate stops being accepted at once."""
    from central.db.ops import TokenRefused

    try:
        station = use_token(session, token, now)
    except TokenRefused as exc:
        raise OnboardingError(401, "token-refused", exc.reason) from None
    if station.status is not StationStatus.active:
        raise OnboardingError(
            403, f"station-{station.status.value}", f"station {station.id} is {station.status}"
        )
    try:
        cert = issue(request, station.id)
    except ValueError as exc:
        raise OnboardingError(422, "bad-csr", str(exc)) from None
    key_sha = spki_sha256(cert)
    other = session.execute(
        select(Station.id).where(Station.public_key_sha256 == key_sha, Station.id != station.id)
    ).scalar_one_or_none()
    if other is not None:
        raise OnboardingError(409, "key-in-use", "this key is certified for another station")
    station.certificate_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    station.certificate_serial = format(cert.serial_number, "x")
    station.public_key_sha256 = key_sha
    station.certificate_issued_at = now
    append_audit(
        session,
        now,
        f"station:{station.id}",
        "station.enrolled",
        f"station:{station.id}",
        {"serial": station.certificate_serial, "key_sha256": key_sha},
    )
    return station, cert


def set_station_status(
    session: Session,
    station_id: str,
    status: StationStatus,
    now: datetime,
    actor: str,
    reason: str | None = None,
) -> Station:
    station = get_station(session, station_id)
    if station.status is StationStatus.revoked and status is not StationStatus.revoked:
        raise OnboardingError(409, "station-revoked", "a revoked station stays revoked")
    if station.status is status:
        return station
    station.status = status
    if status is StationStatus.suspended:
        station.suspended_at = now
    elif status is StationStatus.revoked:
        station.revoked_at = now
    else:
        station.suspended_at = None
    append_audit(
        session,
        now,
        actor,
        f"station.{status.value}",
        f"station:{station_id}",
        {"reason": reason},
    )
    return station


def create_operator(
    session: Session,
    office_id: int,
    username: str,
    full_name: str,
    role: OperatorRole,
    now: datetime,
    actor: str,
) -> Operator:
    if not USERNAME.match(username):
        raise OnboardingError(
            422, "bad-username", "2-64 lower-case letters, digits, '.', '_' or '-'"
        )
    if role is OperatorRole.adjudicator:
        raise OnboardingError(
            422, "bad-role", "adjudicators are registry users (users add), not office staff"
        )
    if session.get(Office, office_id) is None:
        raise OnboardingError(404, "unknown-office", f"no office {office_id}")
    operator = Operator(
        office_id=office_id, username=username, full_name=full_name, role=role, created_at=now
    )
    session.add(operator)
    try:
        session.flush()
    except IntegrityError:
        raise OnboardingError(409, "operator-exists", f"operator {username} exists") from None
    append_audit(
        session,
        now,
        actor,
        "operator.created",
        f"operator:{username}",
        {"office": office_id, "role": role.value},
    )
    return operator
