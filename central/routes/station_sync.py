"""Station sync over HTTP: what a station fetches (its policy, its office's operators, its
commune's residents), its heartbeat, and the administrators' side (operator credentials,
resident list imports). The logic is in ``central.station_sync`` and ``central.residents``.

Every ``/v1/station/*`` request is signed by the station (``require_station``); the
station's office, hence its commune, comes from its identity, never from the request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session

from central import residents
from central.auth.deps import Principal, require_user
from central.auth.stations import StationPrincipal, require_station
from central.db.models import UserRole
from central.routes.errors import JSON_LIMIT, api_error
from central.services import registry_of
from central.station_sync import (
    CredentialError,
    CredentialsIn,
    Heartbeat,
    operators_document,
    policy_document,
    record_heartbeat,
    set_credentials,
    set_operator_disabled,
)

Admin = Annotated[Principal, Depends(require_user(UserRole.admin))]
SignedStation = Annotated[StationPrincipal, Depends(require_station())]
HEARTBEAT_LIMIT = 64 * 1024
HeartbeatStation = Annotated[
    StationPrincipal, Depends(require_station(verify_body=True, max_body_bytes=HEARTBEAT_LIMIT))
]
CSV_TYPES = ("text/csv", "text/plain", "application/octet-stream")


class HeartbeatAnswer(BaseModel):
    server_time: str = Field(description="the registry's clock (UTC), to spot a drifting one")
    config_version: str = Field(description="sync /v1/station/config when it differs")
    operators_version: str = Field(description="sync /v1/station/operators when it differs")
    residents_next: int = Field(description="sync /v1/station/residents when above the cursor")


class CredentialsOut(BaseModel):
    operator_id: str
    pin: bool
    password: bool
    fingers: list[int]
    credentials_updated_at: datetime | None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema with its ``$defs`` written in place, for ``openapi_extra``
    (where a ``#/$defs/...`` reference would point outside the schema)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def station_sync_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["stations"], max_body_size=JSON_LIMIT)

    @router.get("/station/config")
    def station_config(request: Request, station: SignedStation) -> dict[str, Any]:
        """The rules every station follows, and their version."""
        return policy_document(registry_of(request).settings.station_policy)

    @router.get("/station/operators")
    def station_operators(request: Request, station: SignedStation) -> dict[str, Any]:
        """The station's office's operators with their credentials (hashes, templates),
        disabled ones included, and the list's version."""
        with registry_of(request).reading() as session:
            return operators_document(session, station.office_id)

    @router.get("/station/residents")
    def station_residents(
        request: Request,
        station: SignedStation,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> dict[str, Any]:
        """The rows of the station's commune's resident list changed after ``after``
        (a ``seq``), oldest change first; pass ``next`` as ``after`` for the rest."""
        registry = registry_of(request)
        limit = min(limit, registry.settings.residents.page_limit)
        with registry.reading() as session:
            commune = residents.office_commune(session, station.office_id)
            return residents.residents_page(session, commune, after, limit)

    @router.post(
        "/station/heartbeat",
        response_model=HeartbeatAnswer,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": inline_schema(Heartbeat)}},
            }
        },
    )
    def station_heartbeat(request: Request, station: HeartbeatStation) -> dict[str, Any]:
        """The station's state (versions, devices, queue, disk, last sync); the answer
        says whether it should sync."""
        # Parsed here, after the signature and the body's digest were checked: an unsigned
        # request is refused as such (401) whatever its body holds.
        try:
            beat = Heartbeat.model_validate_json(station.body or b"")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise api_error(422, "bad_body", problems) from None
        registry = registry_of(request)
        now = registry.now()
        with Session(registry.engine) as session, session.begin():
            return record_heartbeat(
                session, station.station_id, beat, now, registry.settings.station_policy
            )

    @router.put("/operators/{operator_id}/credentials", response_model=CredentialsOut)
    def put_credentials(
        operator_id: Annotated[str, Path(max_length=64)],
        body: CredentialsIn,
        request: Request,
        user: Admin,
    ) -> CredentialsOut:
        """Set an operator's PIN and/or password (Argon2id) and finger templates
        (ISO/IEC 19794-2), replacing what was set. ``operator_id`` is the username."""
        registry = registry_of(request)
        try:
            with Session(registry.engine) as session, session.begin():
                operator = set_credentials(
                    session,
                    registry.access.passwords,
                    operator_id,
                    body,
                    registry.now(),
                    user.actor,
                )
                return CredentialsOut(
                    operator_id=operator.username,
                    pin=operator.pin_hash is not None,
                    password=operator.password_hash is not None,
                    fingers=[f["position"] for f in operator.fingers or []],
                    credentials_updated_at=operator.credentials_updated_at,
                )
        except CredentialError as exc:
            raise api_error(exc.status, exc.code, exc.detail) from None

    def _disable_endpoint(disabled: bool) -> Any:
        def change(
            operator_id: Annotated[str, Path(max_length=64)], request: Request, user: Admin
        ) -> dict[str, Any]:
            registry = registry_of(request)
            try:
                with Session(registry.engine) as session, session.begin():
                    operator = set_operator_disabled(
                        session, operator_id, disabled, registry.now(), user.actor
                    )
                    return {"operator_id": operator.username, "disabled": disabled}
            except CredentialError as exc:
                raise api_error(exc.status, exc.code, exc.detail) from None

        return change

    router.post(
        "/operators/{operator_id}/disable",
        summary="Disable an operator (the office's stations refuse them after their next sync)",
    )(_disable_endpoint(True))
    router.post("/operators/{operator_id}/enable", summary="Enable a disabled operator")(
        _disable_endpoint(False)
    )

    return router


def residents_router() -> APIRouter:
    """The CSV import, in a router of its own: its body is far above the JSON limit."""
    router = APIRouter(prefix="/v1", tags=["onboarding"])

    @router.post(
        "/offices/{office_id}/residents",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        },
    )
    async def import_residents(
        office_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
        request: Request,
        user: Admin,
        replace: Annotated[
            bool, Query(description="mark the rows absent from the file removed")
        ] = False,
        check: Annotated[bool, Query(description="validate only, write nothing")] = False,
    ) -> dict[str, Any]:
        """Import the resident list (DC01) of the office's commune from CSV (the columns
        are in docs/registry.md): new rows added, changed rows updated, bad rows reported
        by line and skipped."""
        registry = registry_of(request)
        limit = registry.settings.residents.max_upload_bytes
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and kind not in CSV_TYPES:
            raise api_error(415, "unsupported_media_type", "send the list as text/csv (UTF-8)")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise api_error(413, "too_large", f"{declared} bytes; the limit is {limit}")
        parts: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise api_error(
                    413,
                    "too_large",
                    f"over {limit} bytes: use `python -m central residents import`",
                )
            parts.append(chunk)
        data = b"".join(parts)

        def run() -> dict[str, Any]:
            try:
                result = residents.import_residents(
                    registry.engine,
                    office_id,
                    data,
                    registry.now(),
                    user.actor,
                    replace=replace,
                    check=check,
                )
                return result.as_json()
            except LookupError as exc:
                raise api_error(404, "unknown_office", str(exc)) from None
            except residents.ResidentFileError as exc:
                raise api_error(422, "bad_file", str(exc)) from None

        return await run_in_threadpool(run)

    return router
