"""Stations' requests: certificate-bound RFC 9421 signatures (``enrollment.request_signing``).

``Depends(require_station())`` admits a request when, in this order:

1. it carries one signature whose ``keyid`` names a known station (401 ``unknown_station``);
2. the station has a certificate issued by one of ``Access.station_cas``, valid now, whose
   common name is the station id and whose key is the one on record (401);
3. the signature verifies with that key over ``@method``, ``@target-uri`` and
   ``content-digest``, and ``created`` lies within ``signature_max_age_s`` in the past and
   ``clock_skew_s`` in the future (401);
4. the station is active (403 ``station_suspended`` / ``station_revoked``);
5. its nonce was not seen before (401 ``replayed_request``): nonces are stored in
   ``request_nonce`` and pruned once nothing that old can pass step 3 any more.

The signature covers the body through its digest only. With ``verify_body=True`` the
dependency reads the body (up to ``max_signed_body_bytes``, else 413), checks it, and hands
it over as :attr:`StationPrincipal.body`. Otherwise the endpoint reads the body itself and
MUST check it: ``check = principal.body_check(limit)``, ``check.update(chunk)`` for each
chunk, ``check.verify()`` before acting on it (or ``principal.verify_body(data)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Request
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from central.auth.access import Access, access_of
from central.auth.errors import AccessError
from central.db.models import RequestNonce, Station, StationStatus
from enrollment.request_signing import (
    ALGORITHM_ID,
    COVERED_COMPONENTS,
    SIGNATURE_LABEL,
    BodyDigest,
    RequestSignatureError,
    SignedRequest,
    signature_key_id,
    verify_request,
)
from enrollment.trust import station_id_of

NONCE_PRUNE_INTERVAL = timedelta(seconds=60)

# RFC 9421 5.1: tells a client which signature we expect.
_COMPONENT_LIST = " ".join('"' + c + '"' for c in COVERED_COMPONENTS)
ACCEPT_SIGNATURE = f'{SIGNATURE_LABEL}=({_COMPONENT_LIST});created;nonce;keyid;alg="{ALGORITHM_ID}"'
_STATUS_OF_CODE = {"bad_content_digest": 400, "content_digest_mismatch": 400, "body_too_large": 413}


def _refusal(exc: RequestSignatureError) -> AccessError:
    status = _STATUS_OF_CODE.get(exc.code, 401)
    headers = {"Accept-Signature": ACCEPT_SIGNATURE} if status == 401 else None
    return AccessError(status, exc.code, exc.detail, headers)


def _unauthorized(error: str, detail: str) -> AccessError:
    return AccessError(401, error, detail, {"Accept-Signature": ACCEPT_SIGNATURE})


class SignedBodyCheck:
    """Checks a body read chunk by chunk; raises :class:`AccessError` (413, 400)."""

    def __init__(self, expected_sha256: bytes, limit: int | None) -> None:
        self._digest = BodyDigest(expected_sha256, limit)

    @property
    def size(self) -> int:
        return self._digest.size

    def update(self, chunk: bytes) -> None:
        try:
            self._digest.update(chunk)
        except RequestSignatureError as exc:
            raise _refusal(exc) from exc

    def verify(self) -> None:
        try:
            self._digest.verify()
        except RequestSignatureError as exc:
            raise _refusal(exc) from exc


@dataclass(frozen=True)
class StationPrincipal:
    """An authenticated station request."""

    station_id: str
    office_id: int
    certificate_serial: str
    signature: SignedRequest
    body: bytes | None = None
    """The checked body, when the dependency read it (``verify_body=True``)."""

    @property
    def actor(self) -> str:
        return f"station:{self.station_id}"

    @property
    def content_sha256(self) -> bytes:
        """The body's SHA-256 the signature covers (the upload's, for a streamed one)."""
        return self.signature.content_sha256

    def body_check(self, limit: int | None = None) -> SignedBodyCheck:
        return SignedBodyCheck(self.signature.content_sha256, limit)

    def verify_body(self, body: bytes) -> None:
        check = self.body_check()
        check.update(body)
        check.verify()


class _RequestMessage:
    """A Starlette request as ``http_message_signatures`` reads one."""

    def __init__(self, method: str, url: str, headers: Mapping[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


def target_uri(request: Request, public_origin: str | None) -> str:
    """The URI the station signed: the request's own, or under the configured origin."""
    if public_origin is None:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return public_origin.rstrip("/") + request.url.path + query


def certified_key(
    station: Station, cas: Sequence[x509.Certificate], now: datetime
) -> tuple[ec.EllipticCurvePublicKey, x509.Certificate]:
    """The public key of the station's certificate, once the certificate checks out."""
    if not station.certificate_pem:
        raise _unauthorized(
            "station_not_enrolled",
            f"station {station.id} has no certificate yet: enroll it with its one-time token",
        )
    try:
        cert = x509.load_pem_x509_certificate(station.certificate_pem.encode())
    except ValueError as exc:
        raise _unauthorized(
            "bad_certificate", f"station {station.id}'s certificate on record cannot be read"
        ) from exc
    issuers = [ca for ca in cas if ca.subject == cert.issuer]
    if not any(_issued_by(cert, ca, now) for ca in issuers):
        raise _unauthorized(
            "bad_certificate",
            f"station {station.id}'s certificate is not from a current station CA: re-enroll",
        )
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _unauthorized(
            "certificate_expired",
            f"station {station.id}'s certificate is not valid now "
            f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}): "
            "renew it, and check the station's clock",
        )
    try:
        same_station = station_id_of(cert) == station.id
    except ValueError:
        same_station = False
    if not same_station:
        raise _unauthorized(
            "bad_certificate", f"the certificate on record is not station {station.id}'s"
        )
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _unauthorized("bad_certificate", "station certificates must hold an EC P-256 key")
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if station.public_key_sha256 and hashlib.sha256(spki).hexdigest() != station.public_key_sha256:
        raise _unauthorized(
            "bad_certificate", f"station {station.id}'s certificate does not hold its key"
        )
    return key, cert


def _issued_by(cert: x509.Certificate, ca: x509.Certificate, now: datetime) -> bool:
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def remember_nonce(session: Session, station_id: str, nonce: str, now: datetime) -> bool:
    """Record a nonce; False when this station used it before (a replay).

    ``INSERT ... ON CONFLICT DO NOTHING`` on both backends: of two concurrent requests with
    one nonce exactly one inserts, and no failed statement spoils the transaction.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT here.
    inserted = session.execute(
        insert(RequestNonce)
        .values(station_id=station_id, nonce=nonce, seen_at=now)
        .on_conflict_do_nothing()
        .returning(RequestNonce.nonce)
    ).scalar_one_or_none()
    return inserted is not None


def prune_nonces(session: Session, before: datetime) -> int:
    """Forget nonces seen before ``before``; the number removed."""
    result = session.execute(
        delete(RequestNonce)
        .where(RequestNonce.seen_at < before)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


def nonce_retention(access: Access) -> timedelta:
    """How long a nonce must be remembered: a signature made up to ``clock_skew`` ahead
    stays acceptable until ``max_age`` after its ``created``."""
    s = access.settings
    return timedelta(seconds=s.signature_max_age_s + 2 * s.clock_skew_s)


def authenticate_station(
    access: Access, method: str, url: str, headers: Mapping[str, str]
) -> StationPrincipal:
    """Steps 1-5 of the module's list, for a request's method, target URI and headers."""
    now = access.now()
    message = _RequestMessage(method, url, headers)
    try:
        station_id = signature_key_id(headers)
    except RequestSignatureError as exc:
        raise _refusal(exc) from exc
    with access.reading() as session:
        station = session.get(Station, station_id[:32])
        if station is None or station.id != station_id:
            raise _unauthorized(
                "unknown_station",
                f"no station {station_id!r} at this registry: check the station's "
                "configuration, or ask an administrator to register it",
            )
        session.expunge(station)
    key, cert = certified_key(station, access.station_cas, now)
    s = access.settings
    try:
        signed = verify_request(
            message,
            key,
            now=now,
            max_age=timedelta(seconds=s.signature_max_age_s),
            clock_skew=timedelta(seconds=s.clock_skew_s),
        )
    except RequestSignatureError as exc:
        raise _refusal(exc) from exc
    if station.status == StationStatus.suspended:
        raise AccessError(
            403,
            "station_suspended",
            f"station suspended: {station.id} may not send until an administrator "
            "resumes it; its packages wait in the outbox",
        )
    if station.status != StationStatus.active:
        raise AccessError(
            403,
            "station_revoked",
            f"station revoked: {station.id}'s certificate is no longer accepted; the "
            "station must be re-enrolled under a new identity",
        )
    with access.writing() as session, session.begin():
        if not remember_nonce(session, station.id, signed.nonce, now):
            raise _unauthorized(
                "replayed_request",
                "replayed request: this nonce was used already; sign every request afresh",
            )
        last = access.last_nonce_prune
        if last is None or now - last >= NONCE_PRUNE_INTERVAL:
            prune_nonces(session, now - nonce_retention(access))
            access.last_nonce_prune = now
    return StationPrincipal(station.id, station.office_id, format(cert.serial_number, "x"), signed)


async def _read_checked_body(request: Request, principal: StationPrincipal, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise AccessError(
            413,
            "body_too_large",
            f"request body of {declared} bytes exceeds {limit}: large packages go through "
            "the resumable upload",
        )
    check = principal.body_check(limit)
    chunks: list[bytes] = []
    async for chunk in request.stream():
        check.update(chunk)
        chunks.append(chunk)
    check.verify()
    return b"".join(chunks)


def require_station(
    *, verify_body: bool = False, max_body_bytes: int | None = None
) -> Callable[[Request], Coroutine[Any, Any, StationPrincipal]]:
    """A dependency admitting signed requests of active stations.

    ``verify_body``: read and check the body here (small JSON bodies), limited to
    ``max_body_bytes`` (default ``auth.max_signed_body_bytes``); the endpoint then uses
    ``principal.body``. Without it the endpoint must check the body it reads (see the
    module's docstring) — the signature alone does not vouch for it.
    """

    async def dependency(request: Request) -> StationPrincipal:
        access = access_of(request)
        principal = await run_in_threadpool(
            authenticate_station,
            access,
            request.method,
            target_uri(request, access.settings.public_origin),
            request.headers,
        )
        if verify_body:
            limit = max_body_bytes or access.settings.max_signed_body_bytes
            body = await _read_checked_body(request, principal, limit)
            principal = StationPrincipal(
                principal.station_id,
                principal.office_id,
                principal.certificate_serial,
                principal.signature,
                body,
            )
        request.state.station = principal
        return principal

    return dependency
