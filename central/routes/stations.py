"""Offices, stations, enrollment tokens, operators (administrators), and the station's own
enrollment with a one-time token (no other credential: the token is the credential)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from central import onboarding
from central.auth.deps import Principal, require_user
from central.auth.stations import StationPrincipal, require_station
from central.db.models import Office, Operator, OperatorRole, Station, StationStatus, UserRole
from central.routes.errors import JSON_LIMIT, api_error
from central.services import Registry, registry_of
from central.station_sync import HeartbeatSummary, summary

ADMIN = UserRole.admin
READERS = (UserRole.admin, UserRole.supervisor, UserRole.auditor)
Admin = Annotated[Principal, Depends(require_user(ADMIN))]
Reader = Annotated[Principal, Depends(require_user(*READERS))]
SignedStation = Annotated[StationPrincipal, Depends(require_station())]
# Office ids are 32-bit integer keys: a larger number is a 422 here, not an overflow in the
# database driver (500).
OfficeId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class OfficeIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    commune_code: str = Field(pattern=r"^[0-9]{5}$", description="GSO code, pre-2025")


class OfficeOut(BaseModel):
    id: int
    name: str
    province_code: str
    province_name: str
    district_code: str
    district_name: str
    commune_code: str
    commune_name: str


class StationIn(BaseModel):
    station_id: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")
    office_id: OfficeId


class StationOut(BaseModel):
    id: str
    office_id: int
    status: str
    created_at: datetime
    suspended_at: datetime | None
    revoked_at: datetime | None
    certificate_serial: str | None
    certificate_issued_at: datetime | None
    last_heartbeat_at: datetime | None = Field(None, description="when the latest arrived")
    last_heartbeat: HeartbeatSummary | None = None


class TokenIn(BaseModel):
    valid_hours: float = Field(72.0, gt=0, le=24 * 30)


class TokenOut(BaseModel):
    token: str = Field(description="shown once: give it to the technician")
    station_id: str
    expires_at: datetime


class StatusChange(BaseModel):
    reason: str | None = Field(None, max_length=500)


class OperatorIn(BaseModel):
    office_id: OfficeId
    username: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")
    full_name: str = Field(min_length=1, max_length=200)
    role: OperatorRole


class OperatorOut(BaseModel):
    id: int
    office_id: int
    username: str
    full_name: str
    role: str
    disabled: bool


class EnrollIn(BaseModel):
    token: str = Field(min_length=16, max_length=200)
    csr: str = Field(
        max_length=8000,
        description="PKCS#10 request (PEM), or the public key (SubjectPublicKeyInfo PEM)",
    )


class EnrollOut(BaseModel):
    station_id: str
    office_id: int
    certificate: str = Field(description="the station certificate, PEM")
    station_ca: str = Field(description="the station CA certificate, PEM")
    package_public_key: str = Field(description="encrypt packages to this key (PEM)")
    csca_master_list: str = Field(description="CSCA certificates to verify cards, PEM")


def _office(o: Office) -> OfficeOut:
    return OfficeOut(
        id=o.id,
        name=o.name,
        province_code=o.province_code,
        province_name=o.province_name,
        district_code=o.district_code,
        district_name=o.district_name,
        commune_code=o.commune_code,
        commune_name=o.commune_name,
    )


def _station(s: Station) -> StationOut:
    return StationOut(
        id=s.id,
        office_id=s.office_id,
        status=s.status.value,
        created_at=s.created_at,
        suspended_at=s.suspended_at,
        revoked_at=s.revoked_at,
        certificate_serial=s.certificate_serial,
        certificate_issued_at=s.certificate_issued_at,
        last_heartbeat_at=s.last_heartbeat_at,
        last_heartbeat=_heartbeat(s),
    )


def _heartbeat(s: Station) -> HeartbeatSummary | None:
    try:
        return summary(s.last_heartbeat)
    except ValidationError:  # kept by an older registry in another shape: show none
        return None


def _operator(o: Operator) -> OperatorOut:
    return OperatorOut(
        id=o.id,
        office_id=o.office_id,
        username=o.username,
        full_name=o.full_name,
        role=o.role.value,
        disabled=o.disabled_at is not None,
    )


def _write(registry: Registry, action: Any) -> Any:
    """Run ``action(session)`` in one writing transaction, onboarding refusals as errors."""
    try:
        with Session(registry.engine, expire_on_commit=False) as session, session.begin():
            return action(session)
    except onboarding.OnboardingError as exc:
        raise api_error(exc.status, exc.code, exc.detail) from None


def _read(registry: Registry, action: Any) -> Any:
    with Session(registry.engine.execution_options(sqlite_begin="DEFERRED")) as session:
        return action(session)


def stations_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["onboarding"], max_body_size=JSON_LIMIT)

    @router.post("/offices", status_code=201, response_model=OfficeOut)
    def create_office(body: OfficeIn, request: Request, user: Admin) -> OfficeOut:
        """Register an enrollment office in a commune (pre-2025 GSO code)."""
        r = registry_of(request)
        return _write(  # type: ignore[no-any-return]
            r,
            lambda s: _office(
                onboarding.create_office(s, body.name, body.commune_code, r.now(), user.actor)
            ),
        )

    @router.get("/offices", response_model=list[OfficeOut])
    def list_offices(request: Request, user: Reader) -> list[OfficeOut]:
        return _read(  # type: ignore[no-any-return]
            registry_of(request),
            lambda s: [_office(o) for o in s.scalars(select(Office).order_by(Office.id))],
        )

    @router.post("/stations", status_code=201, response_model=StationOut)
    def create_station(body: StationIn, request: Request, user: Admin) -> StationOut:
        r = registry_of(request)
        return _write(  # type: ignore[no-any-return]
            r,
            lambda s: _station(
                onboarding.create_station(s, body.station_id, body.office_id, r.now(), user.actor)
            ),
        )

    @router.get("/stations", response_model=list[StationOut])
    def list_stations(request: Request, user: Reader) -> list[StationOut]:
        return _read(  # type: ignore[no-any-return]
            registry_of(request),
            lambda s: [_station(x) for x in s.scalars(select(Station).order_by(Station.id))],
        )

    @router.get("/stations/{station_id}", response_model=StationOut)
    def get_station(station_id: str, request: Request, user: Reader) -> StationOut:
        def read(s: Session) -> StationOut:
            try:
                return _station(onboarding.get_station(s, station_id))
            except onboarding.OnboardingError as exc:
                raise api_error(exc.status, exc.code, exc.detail) from None

        return _read(registry_of(request), read)  # type: ignore[no-any-return]

    @router.post("/stations/{station_id}/tokens", status_code=201, response_model=TokenOut)
    def create_token(station_id: str, body: TokenIn, request: Request, user: Admin) -> TokenOut:
        """A one-time enrollment token for the station (shown once, kept only hashed)."""
        r = registry_of(request)
        new = _write(
            r,
            lambda s: onboarding.create_token(
                s, station_id, r.now(), user.actor, timedelta(hours=body.valid_hours)
            ),
        )
        return TokenOut(token=new.token, station_id=new.station_id, expires_at=new.expires_at)

    def _status_endpoint(status: StationStatus, *roles: UserRole) -> Any:
        def change(
            station_id: str,
            body: StatusChange,
            request: Request,
            user: Principal = Depends(require_user(*roles)),  # noqa: B008
        ) -> StationOut:
            r = registry_of(request)
            return _write(  # type: ignore[no-any-return]
                r,
                lambda s: _station(
                    onboarding.set_station_status(
                        s, station_id, status, r.now(), user.actor, body.reason
                    )
                ),
            )

        return change

    router.post(
        "/stations/{station_id}/suspend",
        response_model=StationOut,
        summary="Suspend a station (its requests are refused until resumed)",
    )(_status_endpoint(StationStatus.suspended, UserRole.admin, UserRole.supervisor))
    router.post(
        "/stations/{station_id}/resume",
        response_model=StationOut,
        summary="Resume a suspended station",
    )(_status_endpoint(StationStatus.active, UserRole.admin))
    router.post(
        "/stations/{station_id}/revoke",
        response_model=StationOut,
        summary="Revoke a station for good (its earlier packages stay valid)",
    )(_status_endpoint(StationStatus.revoked, UserRole.admin))

    @router.post("/operators", status_code=201, response_model=OperatorOut)
    def create_operator(body: OperatorIn, request: Request, user: Admin) -> OperatorOut:
        """Register an officer or supervisor of an office."""
        r = registry_of(request)
        return _write(  # type: ignore[no-any-return]
            r,
            lambda s: _operator(
                onboarding.create_operator(
                    s, body.office_id, body.username, body.full_name, body.role, r.now(), user.actor
                )
            ),
        )

    @router.get("/operators", response_model=list[OperatorOut])
    def list_operators(
        request: Request,
        user: Reader,
        office_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> Any:
        def read(s: Session) -> list[OperatorOut]:
            q = select(Operator).order_by(Operator.id)
            if office_id is not None:
                q = q.where(Operator.office_id == office_id)
            return [_operator(o) for o in s.scalars(q)]

        return _read(registry_of(request), read)

    @router.post("/enroll", status_code=201, response_model=EnrollOut, tags=["stations"])
    async def enroll(body: EnrollIn, request: Request) -> EnrollOut:
        """A station's first contact: spend the one-time token, certify the station's key."""
        r = registry_of(request)

        def run() -> EnrollOut:
            pem = serialization.Encoding.PEM
            # Read before the writing transaction (on SQLite a second session would wait
            # for this one's write lock).
            masters = r.keys.master_list_pem().decode()

            def action(s: Session) -> EnrollOut:
                station, cert = onboarding.enroll_station(
                    s,
                    body.token,
                    body.csr.encode(),
                    lambda req, sid: r.keys.issue_station_certificate_from_csr(
                        req, sid, now=r.now()
                    ),
                    r.now(),
                )
                return EnrollOut(
                    station_id=station.id,
                    office_id=station.office_id,
                    certificate=cert.public_bytes(pem).decode(),
                    station_ca=r.keys.station_ca.public_bytes(pem).decode(),
                    package_public_key=r.keys.package_public_key_pem().decode(),
                    csca_master_list=masters,
                )

            return _write(r, action)  # type: ignore[no-any-return]

        return await run_in_threadpool(run)

    @router.get("/station/trust", tags=["stations"])
    def station_trust(request: Request, station: SignedStation) -> dict[str, Any]:
        """What a station needs to keep current: the package key, CAs, its office's staff."""
        r = registry_of(request)
        masters = r.keys.master_list_pem()

        def read(s: Session) -> dict[str, Any]:
            staff = s.scalars(
                select(Operator).where(
                    Operator.office_id == station.office_id, Operator.disabled_at.is_(None)
                )
            )
            pem = serialization.Encoding.PEM
            return {
                "station_id": station.station_id,
                "package_public_key": r.keys.package_public_key_pem().decode(),
                "station_ca": r.keys.station_ca.public_bytes(pem).decode(),
                "csca_master_list": masters.decode(),
                "operators": [_operator(o).model_dump() for o in staff],
            }

        return _read(r, read)  # type: ignore[no-any-return]

    return router
