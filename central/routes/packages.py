"""Package upload and status for stations; package views for the registry's people.

``PUT /v1/packages/{id}`` takes a whole package (the common case: a few hundred KB). A
large package on a poor link goes up in chunks, each a signed
``PUT /v1/packages/{id}?offset=N&length=TOTAL&sha256=HEX`` (the query is part of the
signed target URI, so the offset and the whole body's digest are signed too); the answer
is ``202`` with ``Upload-Offset`` until the last chunk, then the receipt. ``GET`` tells a
station where its upload or package stands. Repeating any request is harmless.

When more uploads arrive than the process takes at once, the extra ones are answered
``503`` with ``Retry-After`` before their body is read: the station's uploader backs off
and retries, nothing is lost, and the acknowledged ones stay fast.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from central.auth.deps import Principal, require_user
from central.auth.stations import StationPrincipal, require_station
from central.db.models import AdjudicationCase, Issuance, Package, PackageState, UserRole
from central.ingest import IngestRefused, Receipt, UploadProgress, parse_package_id
from central.routes.errors import api_error
from central.services import Registry, registry_of

Station = Annotated[StationPrincipal, Depends(require_station())]
CardStation = Annotated[
    StationPrincipal, Depends(require_station(verify_body=True, max_body_bytes=4096))
]
PEOPLE = (UserRole.admin, UserRole.supervisor, UserRole.auditor)
Reader = Annotated[Principal, Depends(require_user(*PEOPLE))]


def _refused(exc: IngestRefused, registry: Registry | None = None) -> Exception:
    if registry is not None:
        registry.metrics.package_refused(exc.code.replace("-", "_"))
    return api_error(exc.status, exc.code, exc.detail, exc.headers)


def _pid(text: str) -> uuid.UUID:
    try:
        return parse_package_id(text)
    except IngestRefused as exc:
        raise _refused(exc) from None


async def _read_body(request: Request, station: StationPrincipal, limit: int) -> bytes:
    """The body, checked against the signed digest as it streams in, at most ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise api_error(413, "too_large", f"{declared} bytes; the limit is {limit}")
    check = station.body_check(limit)
    parts = []
    async for chunk in request.stream():
        check.update(chunk)
        parts.append(chunk)
    check.verify()
    return b"".join(parts)


def _status(registry: Registry, row: Package) -> dict[str, Any]:
    """What a station (or a person) sees of one package."""
    out: dict[str, Any] = {
        "package_id": str(row.package_id),
        "receipt_number": row.receipt_number,
        "station_id": row.station_id,
        "received_at": row.received_at.isoformat().replace("+00:00", "Z"),
        "state": row.state.value,
        "state_changed_at": row.state_changed_at.isoformat().replace("+00:00", "Z"),
    }
    if row.state is PackageState.rejected:
        out["reject_code"] = row.reject_code
        out["reject_text"] = row.reject_text
        quality = (row.findings or {}).get("quality")
        if row.reject_code == "recapture-needed" and quality:
            out["recapture"] = quality.get("reasons", [])
    return out


def packages_router() -> APIRouter:
    router = APIRouter(prefix="/v1/packages", tags=["packages"])

    @router.put(
        "/{package_id}",
        responses={
            200: {"description": "already held: the same receipt"},
            201: {"description": "stored and recorded: the receipt"},
            202: {"description": "chunk stored; continue at Upload-Offset"},
        },
    )
    async def put_package(
        package_id: str,
        request: Request,
        station: Station,
        offset: Annotated[int | None, Query(ge=0)] = None,
        length: Annotated[int | None, Query(ge=1)] = None,
        sha256: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None,
    ) -> JSONResponse:
        """Upload an enrollment package (whole, or one chunk of a resumable upload)."""
        registry = registry_of(request)
        pid = _pid(package_id)
        ingest = registry.ingest
        if not registry.admit_upload():
            raise api_error(
                503,
                "busy",
                "the registry is taking as many uploads as it can: retry after the delay",
                {"Retry-After": str(registry.settings.ingest.retry_after_seconds)},
            )
        try:
            chunked = offset is not None or length is not None or sha256 is not None
            if chunked:
                if offset is None or length is None or sha256 is None:
                    raise api_error(
                        400, "bad_range", "a chunk needs offset, length and sha256 together"
                    )
                limit = min(registry.settings.ingest.max_chunk_bytes, ingest.max_bytes)
                data = await _read_body(request, station, limit)
                try:
                    result = await run_in_threadpool(
                        ingest.accept_chunk,
                        station.station_id,
                        pid,
                        offset,
                        length,
                        data,
                        sha256,
                    )
                except IngestRefused as exc:
                    raise _refused(exc, registry) from None
                if isinstance(result, UploadProgress):
                    return JSONResponse(
                        {"package_id": package_id, "offset": result.offset, "length": result.total},
                        status_code=202,
                        headers={"Upload-Offset": str(result.offset)},
                    )
                receipt, created = result
                return JSONResponse(receipt.as_json(), status_code=201 if created else 200)
            digest = station.content_sha256.hex()
            # The body first, then one trip to a worker thread for the whole ingest (which
            # looks for a package already held before anything else): a retry whose receipt
            # was lost sends its body again, and every other upload saves a thread hop and
            # a database read.
            data = await _read_body(request, station, ingest.max_bytes)
            body_done = time.perf_counter()
            try:
                receipt, created = await run_in_threadpool(
                    ingest.accept, station.station_id, pid, data, digest
                )
            except IngestRefused as exc:
                raise _refused(exc, registry) from None
            if created:
                registry.metrics.package_received(len(data), time.perf_counter() - body_done)
            return JSONResponse(receipt.as_json(), status_code=201 if created else 200)
        finally:
            registry.release_upload()

    @router.get("/{package_id}")
    def package_status(package_id: str, request: Request, station: Station) -> dict[str, Any]:
        """Where this station's package stands: the upload's progress, or its state in the
        pipeline (with the recapture reasons when it needs recapturing)."""
        registry = registry_of(request)
        pid = _pid(package_id)
        progress = registry.ingest.progress(station.station_id, pid)
        if progress is None:
            raise api_error(404, "not_found", "no such package from this station: upload it")
        if isinstance(progress, UploadProgress):
            return {
                "package_id": package_id,
                "upload": {"offset": progress.offset, "length": progress.total},
            }
        with registry.reading() as session:
            row = session.get_one(Package, pid)
            return _status(registry, row)

    @router.get("/{package_id}/issuance")
    def issuance(package_id: str, request: Request, station: Station) -> dict[str, Any]:
        """The chip data to encode, for the station that enrolled the person."""
        registry = registry_of(request)
        pid = _pid(package_id)
        with registry.reading() as session:
            row = session.get(Package, pid)
            if row is None or row.station_id != station.station_id:
                raise api_error(404, "not_found", "no such package from this station")
            issued = session.get(Issuance, pid)
            if issued is None:
                raise api_error(
                    409, "not_issued", f"the package is {row.state.value}; ask again later"
                )
            return {
                "package_id": package_id,
                "personal_number": issued.personal_number,
                "document_number": issued.document_number,
                "issued_at": issued.issued_at.isoformat().replace("+00:00", "Z"),
                "chip": registry.chip_view(issued.chip),
                "chip_cbor": base64.b64encode(issued.chip).decode(),
            }

    @router.post("/{package_id}/card")
    def card_encoded(package_id: str, request: Request, station: CardStation) -> dict[str, Any]:
        """The station reports the card it encoded and verified for this package, as JSON
        ``{"card_serial": "..."}`` (the chip's serial number, unique)."""
        registry = registry_of(request)
        pid = _pid(package_id)
        try:
            serial = str(json.loads(station.body or b"{}")["card_serial"])
        except (ValueError, KeyError, TypeError):
            raise api_error(422, "bad_body", 'send {"card_serial": "..."}') from None
        if not 1 <= len(serial) <= 64:
            raise api_error(422, "bad_body", "card_serial is 1-64 characters")
        return registry.record_card(station.station_id, pid, serial)

    return router


def registry_packages_router() -> APIRouter:
    """Package views for supervisors, auditors and administrators."""
    router = APIRouter(prefix="/v1/registry/packages", tags=["packages"])

    @router.get("/{package_id}")
    def view(package_id: str, request: Request, user: Reader) -> dict[str, Any]:
        registry = registry_of(request)
        pid = _pid(package_id)
        with registry.reading() as session:
            row = session.get(Package, pid)
            if row is None:
                raise api_error(404, "not_found", "no such package")
            out = _status(registry, row)
            out["findings"] = row.findings
            case = session.scalars(
                select(AdjudicationCase).where(AdjudicationCase.package_id == pid)
            ).first()
            if case is not None:
                out["case"] = {"id": case.id, "state": case.state.value}
            issued = session.get(Issuance, pid)
            if issued is not None:
                out["personal_number"] = issued.personal_number
                out["card_serial"] = issued.card_serial
            return out

    @router.get("")
    def counts(request: Request, user: Reader) -> dict[str, int]:
        """How many packages are in each state."""
        registry = registry_of(request)
        with registry.reading() as session:
            rows = session.execute(
                select(Package.state, func.count()).group_by(Package.state)
            ).all()
        return {state.value: n for state, n in rows}

    return router


__all__ = ["Receipt", "packages_router", "registry_packages_router"]
