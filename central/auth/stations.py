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

import contextlib
import functools
import hashlib
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Request
from sqlalchemy import Connection, bindparam, delete, select, text
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


@dataclass(frozen=True)
class StationFacts:
    """What authentication reads of a station's row on every request (status included, so
    that a suspension or revocation takes effect at the next request)."""

    id: str
    office_id: int
    status: StationStatus
    certificate_pem: str | None
    public_key_sha256: str | None


_STATION_FACTS = select(
    Station.id,
    Station.office_id,
    Station.status,
    Station.certificate_pem,
    Station.public_key_sha256,
).where(Station.id == bindparam("station_id"))


@dataclass(frozen=True)
class _Examined:
    """The time-independent verdicts on one certificate on record (see :func:`_examine`)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePublicKey | None
    issuers: tuple[x509.Certificate, ...]  # the station CAs whose signature on it verifies
    names_station: bool
    key_matches: bool
    not_before: datetime
    not_after: datetime


@functools.lru_cache(maxsize=8192)
def _examine(
    station_id: str, pem: str, key_sha256: str | None, cas: tuple[x509.Certificate, ...]
) -> _Examined:
    """Parse a station's certificate and check what does not change with time: which CAs
    signed it, whose name it bears, and whether it holds the key on record.

    Cached because it is most of the CPU of authenticating a request (PEM parsing, an ECDSA
    verification per CA, DER re-encoding of the key) and its result is a pure function of
    its arguments: a re-enrolled station has another PEM, hence another entry, and a
    revocation or suspension is the station's status, read from the database on every
    request. Validity periods are checked per request against the cached dates.
    """
    cert = x509.load_pem_x509_certificate(pem.encode())  # ValueError: not cached
    issuers = tuple(ca for ca in cas if ca.subject == cert.issuer and _signed_by(cert, ca))
    try:
        names_station = station_id_of(cert) == station_id
    except ValueError:
        names_station = False
    public = cert.public_key()
    key = public if isinstance(public, ec.EllipticCurvePublicKey) else None
    key_matches = True
    if key is not None and key_sha256:
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_matches = hashlib.sha256(spki).hexdigest() == key_sha256
    return _Examined(
        cert,
        key,
        issuers,
        names_station,
        key_matches,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


def certified_key(
    station: StationFacts | Station, cas: Sequence[x509.Certificate], now: datetime
) -> tuple[ec.EllipticCurvePublicKey, x509.Certificate]:
    """The public key of the station's certificate, once the certificate checks out."""
    if not station.certificate_pem:
        raise _unauthorized(
            "station_not_enrolled",
            f"station {station.id} has no certificate yet: enroll it with its one-time token",
        )
    try:
        examined = _examine(
            station.id, station.certificate_pem, station.public_key_sha256, tuple(cas)
        )
    except ValueError as exc:
        raise _unauthorized(
            "bad_certificate", f"station {station.id}'s certificate on record cannot be read"
        ) from exc
    if not any(ca.not_valid_before_utc <= now <= ca.not_valid_after_utc for ca in examined.issuers):
        raise _unauthorized(
            "bad_certificate",
            f"station {station.id}'s certificate is not from a current station CA: re-enroll",
        )
    if not examined.not_before <= now <= examined.not_after:
        raise _unauthorized(
            "certificate_expired",
            f"station {station.id}'s certificate is not valid now "
            f"({examined.not_before:%Y-%m-%d} to {examined.not_after:%Y-%m-%d}): "
            "renew it, and check the station's clock",
        )
    if not examined.names_station:
        raise _unauthorized(
            "bad_certificate", f"the certificate on record is not station {station.id}'s"
        )
    if examined.key is None:
        raise _unauthorized("bad_certificate", "station certificates must hold an EC P-256 key")
    if not examined.key_matches:
        raise _unauthorized(
            "bad_certificate", f"station {station.id}'s certificate does not hold its key"
        )
    return examined.key, examined.cert


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# One statement text for both backends (SQLite >= 3.35 and PostgreSQL share this syntax):
# a text() statement is compiled once and cached, where the dialect insert() constructs
# with ON CONFLICT were compiled again on every request. RETURNING, not rowcount: psycopg
# reports -1 for an INSERT ... ON CONFLICT here.
_REMEMBER_NONCE = text(
    "INSERT INTO request_nonce (station_id, nonce, seen_at) "
    "VALUES (:station_id, :nonce, :seen_at) ON CONFLICT DO NOTHING RETURNING nonce"
).bindparams(bindparam("seen_at", type_=RequestNonce.__table__.c.seen_at.type))
# The same on PostgreSQL in autocommit mode, with synchronous_commit off for its own
# implicit transaction only (set_config(..., true) is SET LOCAL): see _nonce_durability.
_REMEMBER_NONCE_ASYNC_PG = text(
    "INSERT INTO request_nonce (station_id, nonce, seen_at) "
    "SELECT :station_id, :nonce, :seen_at "
    "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed "
    "ON CONFLICT DO NOTHING RETURNING nonce"
).bindparams(bindparam("seen_at", type_=RequestNonce.__table__.c.seen_at.type))


def remember_nonce(
    session: Session | Connection, station_id: str, nonce: str, now: datetime
) -> bool:
    """Record a nonce; False when this station used it before (a replay).

    ``INSERT ... ON CONFLICT DO NOTHING`` on both backends: of two concurrent requests with
    one nonce exactly one inserts, and no failed statement spoils the transaction.
    """
    inserted = session.execute(
        _REMEMBER_NONCE, {"station_id": station_id, "nonce": nonce, "seen_at": now}
    ).scalar_one_or_none()
    return inserted is not None


def prune_nonces(session: Session | Connection, before: datetime) -> int:
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


@contextlib.contextmanager
def _station_connection(access: Access) -> Iterator[Connection]:
    """One pooled connection for the station read and the nonce write of a request.

    PostgreSQL: autocommit, so each of the two statements is one round trip (no BEGIN,
    COMMIT or ROLLBACK around a single statement, which gains nothing from them).
    SQLite: ordinary transactions (the engine's begin hook; an autocommit connection
    would bypass it), started per statement below.
    """
    with access.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


def _read_station(connection: Connection, station_id: str) -> StationFacts | None:
    if connection.dialect.name == "sqlite":
        # A deferred transaction: the read never queues behind SQLite's writers.
        connection.execution_options(sqlite_begin="DEFERRED")
        with connection.begin():
            row = connection.execute(_STATION_FACTS, {"station_id": station_id}).one_or_none()
    else:
        row = connection.execute(_STATION_FACTS, {"station_id": station_id}).one_or_none()
        connection.rollback()  # ends SQLAlchemy's autobegun (no-op, autocommit) transaction
    return None if row is None else StationFacts(*row)


def _remember_nonce_relaxed(
    connection: Connection, access: Access, station_id: str, nonce: str, now: datetime
) -> bool:
    """Store the nonce with the cheapest durability that keeps replays out while the
    registry runs; prune old ones once a minute. False for a replay.

    The commit does not wait for the disk: on PostgreSQL ``synchronous_commit`` is off for
    this transaction only (no WAL flush wait), on SQLite ``synchronous = NORMAL`` for it
    (no WAL fsync; the next FULL commit, e.g. the package's record, syncs these frames
    too). Both stay crash-consistent; what a crash (power cut, OS crash: not a killed
    process) can lose is the last few hundred milliseconds of nonces, which reopens a
    replay window for those requests only until their ``created`` time ages past
    ``signature_max_age_s`` (minutes at most). A replayed upload is harmless anyway (an
    upload is idempotent by package id); what the nonce guards are the non-idempotent
    station requests, which an attacker would have to have captured in those milliseconds.
    """
    values = {"station_id": station_id, "nonce": nonce, "seen_at": now}
    last = access.last_nonce_prune
    prune = last is None or now - last >= NONCE_PRUNE_INTERVAL
    if connection.dialect.name == "postgresql":
        fresh = connection.execute(_REMEMBER_NONCE_ASYNC_PG, values).scalar_one_or_none()
        if fresh is not None and prune:
            prune_nonces(connection, now - nonce_retention(access))
            access.last_nonce_prune = now
        connection.rollback()  # ends SQLAlchemy's autobegun (no-op, autocommit) transaction
        return fresh is not None
    raw = connection.connection.driver_connection
    assert raw is not None
    # Outside any transaction: SQLite refuses to change the safety level inside one.
    raw.execute("PRAGMA synchronous = NORMAL")
    try:
        connection.execution_options(sqlite_begin="IMMEDIATE")
        with connection.begin():
            fresh = connection.execute(_REMEMBER_NONCE, values).scalar_one_or_none()
            if fresh is not None and prune:
                prune_nonces(connection, now - nonce_retention(access))
                access.last_nonce_prune = now
    finally:
        # Back to the engine's FULL before the connection returns to the pool; should
        # this fail, the connection is dropped rather than reused with weaker commits.
        try:
            raw.execute("PRAGMA synchronous = FULL")
        except BaseException:
            connection.invalidate()
            raise
    return fresh is not None


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
    with _station_connection(access) as connection:
        station = _read_station(connection, station_id[:32])
        if station is None or station.id != station_id:
            raise _unauthorized(
                "unknown_station",
                f"no station {station_id!r} at this registry: check the station's "
                "configuration, or ask an administrator to register it",
            )
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
        if not _remember_nonce_relaxed(connection, access, station.id, signed.nonce, now):
            raise _unauthorized(
                "replayed_request",
                "replayed request: this nonce was used already; sign every request afresh",
            )
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
