"""The station service's HTTP API (ASGI, loopback only): what the kiosk UI calls.

Layering: routes translate HTTP to calls on :class:`station.runtime.StationRuntime` and its
parts, and errors to ``{"error": code, "detail": message, "details": ...}`` with a status
that says whose move it is (400/422 the officer's input, 401 log in, 403 not allowed,
404 unknown, 409 not now, 503 a device or the registry is missing). Blocking work (device
captures, packaging, the data key) runs in the thread pool, never on the event loop.

Every route but the status, the first-boot provisioning, the login steps and the simulated
card slot (``/api/simulator/card``: a hand laying a card on the reader) needs an
operator session (``Authorization: Bearer <token>`` from ``POST /api/login/finger``); each
call counts as activity for the inactivity logout.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import secrets
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from time import monotonic
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.websockets import WebSocketDisconnect

from enrollment.record import DivisionScheme
from station.appointments import QueueError
from station.cards import CardIssuanceError, CardSpoiled
from station.cases import CaseState
from station.devices import DeviceUnavailableError
from station.drivers.card.bay import CardBay
from station.drivers.card.emulator import CardEmulator
from station.drivers.card.errors import CardEncoderError
from station.identity import NotProvisionedError, ProvisioningError
from station.live_capture import feedback_json
from station.media import MediaError
from station.operators import (
    ApprovalRefused,
    AuthError,
    LoginFailed,
    OperatorDisabled,
    OperatorLocked,
    OperatorSession,
    SessionExpired,
)
from station.outbox import OutboxError
from station.residents import ResidentListError
from station.runtime import NotReadyError, StationRuntime
from station.slip import SlipError
from station.technician import TechnicianError, TechnicianGate, TechnicianSession, log_ring
from station.workflow import WorkflowError

T = TypeVar("T")
log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, details: Any = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.details = details


WORKFLOW_STATUS = {
    "case_not_found": 404,
    "resident_not_found": 404,
    "invalid_demographics": 422,
    "bad_exception": 422,
    "bad_position": 422,
    "bad_finger": 422,
    "enrollment_paused": 409,
    "not_eligible": 409,
    "case_not_editable": 409,
    "consent_missing": 409,
    "not_ready": 409,
    "nothing_to_approve": 409,
    "self_approval": 403,
    "citizen_is_operator": 409,
    "disk_full": 507,
    "case_changed": 409,
    "not_submitted": 409,
    "slip_gone": 410,
    "no_devices": 503,
    "device_missing": 503,
    "camera_busy": 409,
    "scanner_busy": 409,
}


def _runtime(request: Request) -> StationRuntime:
    runtime: StationRuntime = request.app.state.runtime
    return runtime


SESSION_COOKIE = "station_session"
"""The kiosk's HttpOnly session cookie (station.ui.web sets it at login): what the kiosk's
own scripts present (a browser cannot put a header on a WebSocket or an image)."""


def _token(authorization: str | None, cookie: str | None) -> str | None:
    """The session token: the bearer header first, else the kiosk's cookie (never a URL
    parameter: URLs end up in logs and the browser's history)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization.split(" ", 1)[1].strip() or None
    return cookie or None


def _session(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> OperatorSession:
    runtime = _runtime(request)
    # The kiosk's cookie stands in for the header only where a browser cannot send one
    # (images, the preview socket): reads. Whatever changes something needs the header.
    cookie = request.cookies.get(SESSION_COOKIE) if request.method in ("GET", "HEAD") else None
    token = _token(authorization, cookie)
    if token is None:
        raise ApiError(401, "login_required", "log in first (PIN or password, then a finger)")
    # A page polling a status (``?poll=1``) is not the officer's activity: the inactivity
    # logout must still come to a kiosk left on a status screen.
    auth = runtime.authenticator()
    check = auth.session if request.query_params.get("poll") == "1" else auth.touch
    try:
        return check(token)
    except SessionExpired as exc:
        raise ApiError(401, "session_expired", str(exc)) from None


Session = Annotated[OperatorSession, Depends(_session)]


def _gate(request: Request) -> TechnicianGate:
    gate: TechnicianGate = request.app.state.technician
    return gate


def _technician(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> TechnicianSession:
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization.split(" ", 1)[1].strip()
    return _gate(request).check(token)


Technician = Annotated[TechnicianSession, Depends(_technician)]
Runtime = Annotated[StationRuntime, Depends(_runtime)]


async def _call(fn: Callable[[], T]) -> T:
    """Run blocking station work off the event loop."""
    return await run_in_threadpool(fn)


# --- bodies --------------------------------------------------------------------------------


class ProvisionIn(BaseModel):
    registry_url: str = Field(min_length=1, max_length=500)
    token: str = Field(min_length=1, max_length=500)


class SetupScanIn(BaseModel):
    timeout_s: float = Field(20.0, gt=0, le=60)
    """How long to look for the token sheet's QR code."""


class TechnicianPinIn(BaseModel):
    pin: str = Field(min_length=1, max_length=64)


class SshOnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a medium the station found, never a path

    medium: str = Field(min_length=1, max_length=64)
    """The id of a medium from ``GET /api/technician/ssh``."""
    pin: str = Field(min_length=1, max_length=64)
    """The technician PIN again, for root to check (the service's user alone cannot)."""


class SshOffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pin: str = Field(min_length=1, max_length=64)


class LoginIn(BaseModel):
    operator_id: str = Field(min_length=1, max_length=64)
    pin: str | None = Field(None, max_length=64)
    password: str | None = Field(None, max_length=256)


class FingerLoginIn(BaseModel):
    challenge: str = Field(min_length=1, max_length=200)
    timeout_s: float = Field(15.0, gt=0, le=60)


class OpenCaseIn(BaseModel):
    resident_ref: str | None = Field(None, max_length=64)
    ticket: str | None = Field(None, max_length=32)


FORM_PAGE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
"""A form page's token (one per rendered demographics form): its drafts and its save."""


class FormDraftIn(BaseModel):
    fields: dict[str, Annotated[str, Field(max_length=500)]] = Field(max_length=100)
    token: str | None = Field(None, pattern=FORM_PAGE_PATTERN)


class CancelIn(BaseModel):
    reason: str = Field(min_length=1, max_length=200)


class ApproveIn(BaseModel):
    supervisor_id: str = Field(min_length=1, max_length=64)
    pin: str | None = Field(None, max_length=64)
    password: str | None = Field(None, max_length=256)
    items: list[str] = Field(min_length=1, max_length=20)
    timeout_s: float = Field(15.0, gt=0, le=60)


class PlanIn(BaseModel):
    day: date
    opens: time
    closes: time
    slot_minutes: int = Field(30, ge=5, le=240)
    capacity: int = Field(8, ge=1, le=200)
    breaks: list[tuple[time, time]] = Field(default_factory=list, max_length=10)


class BookIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    slot_id: int | None = Field(None, ge=1)
    phone: str | None = Field(None, max_length=20)
    resident_ref: str | None = Field(None, max_length=64)
    priority: str | None = Field(None, max_length=20)


class EncodeIn(BaseModel):
    printed_mrz: str | None = Field(None, max_length=200)
    """The MRZ the reader scanned off the printed card body (checked against the chip)."""


class CaptureIn(BaseModel):
    timeout_s: float | None = Field(None, gt=0, le=300)


class RollCancelIn(BaseModel):
    roll: str | None = Field(None, min_length=1, max_length=64)
    """The id of the roll to stop (``GET .../fingers``' ``roll``); none: whatever runs."""


class ExceptionIn(BaseModel):
    code: str = Field(min_length=1, max_length=40)
    reason: str | None = Field(None, max_length=200)


class ExportIn(BaseModel):
    # A path is not accepted (extra fields are refused): only a medium the station found.
    model_config = ConfigDict(extra="forbid")

    medium: str = Field(min_length=1, max_length=64)
    """The id of a medium from ``GET /api/outbox/media``."""


class ReceiptsIn(ExportIn):
    export: str = Field(min_length=1, max_length=200)
    """The id of an export folder on that medium (``<station>/<export>``), as listed."""


class CallIn(BaseModel):
    counter: str = Field(min_length=1, max_length=20)


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready values (dates as ISO text)."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(obj).items():
        out[key] = value.isoformat() if isinstance(value, date | datetime | time) else value
    return out


def _finish_ticket(runtime: StationRuntime, ticket: str) -> None:
    try:
        runtime.appointments.finish(ticket)
    except QueueError:
        log.info("ticket %s was not being served", ticket)


FORM_DRAFT = "demographics.form"
"""The draft name of the demographics form as typed (not validated)."""
FORM_SAVED = "demographics.form.saved"
"""The tokens of the form pages whose save went through (tombstones): a draft of one of
them that arrives after its save is stale."""
SAVED_TOKENS_KEPT = 50
"""How many saved forms' tokens a case keeps (a few are saved per case, at most)."""


def _draft_store(runtime: StationRuntime) -> Any:
    if runtime.drafts is None:
        raise NotReadyError("the station is not started")
    return runtime.drafts


@functools.cache
def _division_level(
    scheme: DivisionScheme, province: str | None, district: str | None
) -> dict[str, Any]:
    from enrollment.divisions import load

    communes = list(load().iter_communes(scheme))
    units: dict[str, str]
    if province is None:
        level = "province"
        units = {c.province_code: c.province_name for c in communes}
    elif scheme is DivisionScheme.pre_2025 and district is None:
        level = "district"
        units = {
            c.district_code: c.district_name or ""
            for c in communes
            if c.province_code == province and c.district_code
        }
    else:
        level = "commune"
        units = {
            c.code: c.name
            for c in communes
            if c.province_code == province and (district is None or c.district_code == district)
        }
    if not units and province is not None:
        raise ApiError(404, "division_not_found", f"no {scheme.value} units under {province}"
                       f"{'/' + district if district else ''}")  # fmt: skip
    return {
        "scheme": scheme.value,
        "level": level,
        "items": [{"code": k, "name": v} for k, v in sorted(units.items())],
    }


def _provisioning_reason(exc: Exception) -> str:
    """Why provisioning failed, for the setup screen's advice: ``unreachable`` (nothing
    answered at that address), ``token_refused`` (the registry said no to the token),
    ``not_a_registry`` (something answered, but not a registry), or ``other``."""
    import httpx

    if isinstance(exc.__cause__, httpx.HTTPError):
        return "unreachable"
    text = str(exc)
    status = re.search(r"refused the enrollment \((\d{3}) ", text)
    if status is not None:
        code = int(status.group(1))
        if code in (400, 401, 403, 409, 410, 422):
            return "token_refused"
        return "not_a_registry"
    if "malformed" in text or "not an EC key" in text:
        return "not_a_registry"
    return "other"


def _case_json(case: Any) -> dict[str, Any]:
    out: dict[str, Any] = case.as_json()
    return out


def _sync(runtime: StationRuntime) -> dict[str, Any]:
    """One sync round now, as the API answers it."""
    from station.sync import SyncError

    try:
        report = runtime.sync_now()
    except SyncError as exc:
        raise ApiError(503, "sync_failed", str(exc)) from None
    return {
        "at": report.at.isoformat(),
        "config_changed": report.config_changed,
        "operators_changed": report.operators_changed,
        "residents_applied": report.residents_applied,
        "seconds": report.seconds,
    }


def _provision(runtime: StationRuntime, body: ProvisionIn) -> dict[str, Any]:
    try:
        return runtime.provision(body.registry_url, body.token).as_json()
    except ProvisioningError as exc:
        status = 409 if "already" in str(exc) else 502
        reason = {"reason": _provisioning_reason(exc)}
        raise ApiError(status, "provisioning_failed", str(exc), reason) from None
    except NotReadyError as exc:
        raise ApiError(409, "already_provisioned", str(exc)) from None


def _scan_setup_code(runtime: StationRuntime, scanner: Any, timeout_s: float) -> dict[str, Any]:
    """The setup code on the token sheet held up to the camera (first boot only)."""
    from enrollment.setup_token import SetupCodeError
    from station.drivers.camera.errors import CameraError
    from station.setup_scan import NoCodeSeenError, ScanBusyError

    if runtime.online is not None:
        raise ApiError(409, "already_provisioned", "this station is already provisioned")
    if runtime.devices is None:
        raise NotReadyError("this station runs without devices", code="no_devices")
    try:
        camera = runtime.devices.camera
        return dict(scanner.scan(camera, timeout_s).as_json())
    except DeviceUnavailableError as exc:
        raise NotReadyError(str(exc), code="device_missing") from None
    except ScanBusyError as exc:
        raise NotReadyError(str(exc), code="busy") from None
    except SetupCodeError as exc:
        raise ApiError(422, "not_a_setup_code", str(exc), {"reason": exc.code}) from None
    except NoCodeSeenError as exc:
        details = {"glimpsed": exc.glimpsed, "seconds": round(exc.seconds, 1)}
        raise ApiError(409, "no_code_seen", str(exc), details) from None
    except CameraError as exc:  # it stopped or went away while the scan read it
        raise NotReadyError(f"the camera failed: {exc}", code="device_missing") from None


def _retry_devices(runtime: StationRuntime) -> list[dict[str, object]]:
    if runtime.devices is None:
        raise ApiError(409, "no_devices", "this station runs without devices")
    runtime.devices.retry()
    return runtime.devices.board.as_json()


def _failing(board: list[dict[str, object]]) -> list[str]:
    """The devices still not working after a retry (the journal's outcome)."""
    return [str(c.get("name")) for c in board if not c.get("ok")]


def _media(runtime: StationRuntime) -> list[dict[str, Any]]:
    """The removable media the station detects now."""
    from station.technician import removable_media

    settings = runtime.settings.media
    return removable_media(settings.roots, settings.mounts)


def _medium(runtime: StationRuntime, wanted: str) -> dict[str, Any]:
    """The detected medium a client named by its id (looked up in a fresh detection: a
    stick pulled out since the page was drawn is refused, and no path is ever taken)."""
    media = _media(runtime)
    found = next((m for m in media if m["id"] == wanted), None)
    if found is None:
        raise ApiError(
            409,
            "medium_not_detected",
            f"no removable medium {wanted!r} is mounted now"
            + ("" if media else " (none is detected)"),
            {"detected": [m["id"] for m in media]},
        )
    return found


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api")

    # --- station ---------------------------------------------------------------------------

    @router.get("/status")
    async def status(runtime: Runtime) -> dict[str, Any]:
        """The station at a glance; ``blockers`` says why no enrollment may start now
        (``[]``: it may), each ``{"code", "message", "values"}``: a stable code
        (key_error, identity_damaged, not_provisioned, never_synced, stale, disk_full),
        an English message for scripts, and the values a translated sentence needs. The
        409 ``enrollment_paused`` of ``POST /api/cases`` carries the same list as its
        ``details``."""
        return await _call(runtime.status)

    @router.post("/provision", status_code=201)
    async def provision(body: ProvisionIn, runtime: Runtime) -> dict[str, Any]:
        """First boot, for scripts and the command line: the registry's one-time token is
        the credential (the kiosk's setup goes through the technician's route)."""
        return await _call(lambda: _provision(runtime, body))

    @router.post("/sync")
    async def sync(runtime: Runtime) -> dict[str, Any]:
        """One sync round now (no login: before the first sync nobody can log in)."""
        return await _call(lambda: _sync(runtime))

    @router.get("/devices")
    async def devices(runtime: Runtime) -> list[dict[str, object]]:
        return runtime.devices.board.as_json() if runtime.devices else []

    @router.post("/devices/retry")
    async def devices_retry(runtime: Runtime, session: Session) -> list[dict[str, object]]:
        def run() -> list[dict[str, object]]:
            board = _retry_devices(runtime)
            with runtime.db.write() as c:
                runtime.journal.record(
                    c, session.operator_id, "devices.retried", None, failing=_failing(board)
                )
            return board

        return await _call(run)

    @router.get("/journal")
    async def journal(
        runtime: Runtime, _: Session, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[dict[str, Any]]:
        entries = await _call(lambda: runtime.journal.recent(limit))
        return [
            {"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "action": e.action,
             "subject": e.subject, "detail": e.detail}
            for e in entries
        ]  # fmt: skip

    # --- technician ------------------------------------------------------------------------
    # Behind the technician PIN (not an officer login): POST /technician/unlock answers a
    # short-lived token, sent as ``Authorization: Bearer`` to the other technician routes.

    @router.post("/technician/unlock")
    async def technician_unlock(body: TechnicianPinIn, request: Request) -> dict[str, Any]:
        gate = _gate(request)
        session = await _call(lambda: gate.unlock(body.pin))
        return session.as_json(datetime.now(UTC))

    @router.get("/technician/session")
    async def technician_session(technician: Technician) -> dict[str, Any]:
        """Whether a technician session is open, and until when (never its token)."""
        session = technician.as_json(datetime.now(UTC))
        return {"expires_at": session["expires_at"], "expires_in_s": session["expires_in_s"]}

    @router.post("/technician/lock", status_code=204)
    async def technician_lock(request: Request, technician: Technician) -> Response:
        await _call(lambda: _gate(request).lock(technician.token))
        return Response(status_code=204)

    @router.get("/technician/overview")
    async def technician_overview(
        runtime: Runtime,
        technician: Technician,
        journal_limit: Annotated[int, Query(ge=1, le=200)] = 30,
    ) -> dict[str, Any]:
        """What the technician screen shows beyond the status: the effective registry
        address, why the identity or the data key is unusable, the key provider, the
        uploader's back-off, the newest journal entries."""

        def run() -> dict[str, Any]:
            online = runtime.online
            link = runtime.outbox.link_state()
            entries = runtime.journal.recent(journal_limit)
            return {
                "status": runtime.status(),
                "registry_url": runtime.settings.registry_url
                or (online.identity.registry_url if online else None),
                "identity_error": runtime.identity_error,
                "key_error": runtime.key_error,
                "data_key_provider": runtime.settings.keys.backend,
                "upload_link": {
                    "failures": link.failures,
                    "retry_at": link.retry_at.isoformat() if link.retry_at else None,
                    "last_error": link.last_error,
                },
                "journal": [
                    {
                        "id": e.id,
                        "at": e.at.isoformat(),
                        "actor": e.actor,
                        "action": e.action,
                        "subject": e.subject,
                        "detail": e.detail,
                    }
                    for e in entries
                ],
                "session_expires_at": technician.expires_at.isoformat(),
            }

        return await _call(run)

    @router.get("/technician/network")
    async def technician_network(_: Technician) -> list[dict[str, Any]]:
        """The network interfaces and their addresses, as the OS has them."""
        from station.technician import network_interfaces

        return await _call(network_interfaces)

    @router.get("/technician/logs")
    async def technician_logs(
        _: Technician, lines: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> list[dict[str, str]]:
        """The service log's last lines (newest last)."""
        from station.technician import log_ring

        return log_ring().tail(lines)

    # Every technician action is journalled: the session, what, when, and how it ended.

    @router.post("/technician/devices/retry")
    async def technician_devices_retry(
        request: Request, runtime: Runtime, technician: Technician
    ) -> list[dict[str, object]]:
        return await _call(
            lambda: _gate(request).attempt(
                technician,
                "technician.devices_retried",
                lambda: _retry_devices(runtime),
                lambda board: {"failing": _failing(board)},
            )
        )

    @router.post("/technician/sync")
    async def technician_sync(
        request: Request, runtime: Runtime, technician: Technician
    ) -> dict[str, Any]:
        """One sync round now, for the technician."""
        return await _call(
            lambda: _gate(request).attempt(
                technician,
                "technician.synced",
                lambda: _sync(runtime),
                lambda report: {"seconds": report["seconds"]},
            )
        )

    @router.post("/technician/uploads/retry")
    async def technician_uploads_retry(
        request: Request, runtime: Runtime, technician: Technician
    ) -> dict[str, Any]:
        """End the uploads' back-off: the uploader tries the waiting packages at once."""

        def run() -> dict[str, Any]:
            online = runtime.online
            if online is None:
                raise NotReadyError("provision the station before sending packages")
            before = runtime.outbox.link_state()
            online.uploader.notify(link_up=True)
            pending = runtime.outbox.counts().heartbeat()["pending"]
            return {"pending": pending, "failures": before.failures}

        return await _call(
            lambda: _gate(request).attempt(technician, "technician.uploads_retried", run, dict)
        )

    @router.post("/technician/provision", status_code=201)
    async def technician_provision(
        body: ProvisionIn, request: Request, runtime: Runtime, technician: Technician
    ) -> dict[str, Any]:
        """First boot from the kiosk: the technician's PIN and the registry's token."""
        return await _call(
            lambda: _gate(request).attempt(
                technician,
                "technician.provisioned",
                lambda: _provision(runtime, body),
                lambda identity: {"station_id": identity.get("station_id")},
                subject=body.registry_url,
            )
        )

    from station.setup_scan import SetupCodeScanner

    setup_scanner = SetupCodeScanner()  # one scan at a time: one camera

    @router.post("/technician/setup-code/scan")
    async def technician_setup_code_scan(
        body: SetupScanIn, request: Request, runtime: Runtime, technician: Technician
    ) -> dict[str, Any]:
        """First boot from the kiosk: read the setup code (``enrollment.setup_token``) on
        the registry's token sheet held up to the camera, for up to ``timeout_s``; answers
        ``registry_url`` and ``token`` for the setup form. Refused once provisioned (409
        ``already_provisioned``); 409 ``no_code_seen`` (``details.glimpsed``: a code was in
        view but unreadable), 422 ``not_a_setup_code`` (``details.reason``: the
        ``SetupCodeError`` code), 409 ``busy``, 503 ``device_missing``. The journal keeps
        the address read, never the token."""
        return await _call(
            lambda: _gate(request).attempt(
                technician,
                "technician.setup_code_scanned",
                lambda: _scan_setup_code(runtime, setup_scanner, body.timeout_s),
                lambda found: {"registry_url": found["registry_url"], "seconds": found["seconds"]},
            )
        )

    # SSH for the technician (station.ssh_access): the station checks the keys on the stick
    # and leaves a request for root, which checks the PIN again and answers in a status
    # file; a client polls GET /technician/ssh until ``status.last.request_id`` is its own.

    @router.get("/technician/ssh")
    async def technician_ssh(runtime: Runtime, _: Technician) -> dict[str, Any]:
        """SSH now as root last wrote it (``status`` null: not turned on since the station
        started, so off), whether a request waits for root, and the detected media with
        whether each holds ``vn-eid-ssh/authorized_keys``."""
        from station import ssh_access

        def run() -> dict[str, Any]:
            settings = runtime.settings.ssh
            status = ssh_access.read_status(settings.status_file)
            waiting = settings.request_path(runtime.settings.run_dir)
            return {
                "status": status.as_json() if status else None,
                "pending": ssh_access.request_pending(waiting),
                "hours": ssh_access.HOURS,
                "media": [
                    {"id": m["id"], "label": m["label"], "path": m["path"],
                     "keys": (Path(m["path"]) / ssh_access.STICK_FILE).is_file()}
                    for m in _media(runtime)
                ],
            }  # fmt: skip

        return await _call(run)

    @router.post("/technician/ssh/on", status_code=202)
    async def technician_ssh_on(
        body: SshOnIn, request: Request, runtime: Runtime, technician: Technician
    ) -> dict[str, Any]:
        """Ask root to turn SSH on for 8 hours with the public keys on a detected stick
        (409 ``medium_not_detected``, 409 ``ssh_keys_missing``: no key file on it, 422
        ``ssh_keys_refused``: ``details.problems`` by line). Answers the request's id and
        the keys' fingerprints; root's outcome comes in ``GET /technician/ssh``."""
        from station import ssh_access

        def run() -> dict[str, Any]:
            _gate(request).confirm(body.pin)  # wrong ones count towards the lockout
            medium = _medium(runtime, body.medium)
            try:
                keys = ssh_access.read_stick_keys(Path(medium["path"]))
            except FileNotFoundError:
                raise ApiError(
                    409,
                    "ssh_keys_missing",
                    f"no {ssh_access.STICK_FILE} on the USB stick at {medium['path']}",
                ) from None
            except ssh_access.SshKeysError as exc:
                raise ApiError(422, exc.code, str(exc), {"problems": exc.problems}) from None
            ask = ssh_access.SshRequest.new("on", keys, ssh_access.HOURS, body.pin, runtime.clock())
            settings = runtime.settings.ssh
            ssh_access.write_request(settings.request_path(runtime.settings.run_dir), ask)
            return {
                "request_id": ask.id,
                "hours": ask.hours,
                "keys": [k.as_json() for k in keys],
                "medium": medium["label"],
            }

        return await _call(
            lambda: _gate(request).attempt(
                technician,
                "technician.ssh_on_requested",
                run,
                lambda out: {
                    "request_id": out["request_id"],
                    "medium": out["medium"],
                    "fingerprints": [k["fingerprint"] for k in out["keys"]],
                },
            )
        )

    @router.post("/technician/ssh/off", status_code=202)
    async def technician_ssh_off(
        body: SshOffIn, request: Request, runtime: Runtime, technician: Technician
    ) -> dict[str, Any]:
        """Ask root to turn SSH off now (and empty the keys)."""
        from station import ssh_access

        def run() -> dict[str, Any]:
            _gate(request).confirm(body.pin)
            ask = ssh_access.SshRequest.new("off", [], ssh_access.HOURS, body.pin, runtime.clock())
            settings = runtime.settings.ssh
            ssh_access.write_request(settings.request_path(runtime.settings.run_dir), ask)
            return {"request_id": ask.id}

        return await _call(
            lambda: _gate(request).attempt(technician, "technician.ssh_off_requested", run, dict)
        )

    # --- login -----------------------------------------------------------------------------

    @router.post("/login/secret")
    async def login_secret(body: LoginIn, runtime: Runtime) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            challenge = runtime.authenticator().begin_login(
                body.operator_id, pin=body.pin, password=body.password
            )
            return {
                "challenge": challenge.token,
                "operator_id": challenge.operator_id,
                "full_name": challenge.full_name,
                "expires": challenge.expires.isoformat(),
                "finger_positions": list(challenge.finger_positions),
            }

        return await _call(run)

    @router.post("/login/finger")
    async def login_finger(body: FingerLoginIn, runtime: Runtime) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            if not runtime.authenticator().challenge_open(body.challenge):
                # Checked before the scanner is touched: a stale or forged challenge must
                # not tie up the scanner (or the API's threads waiting for it).
                raise ApiError(401, "login_failed", "the login step timed out; start again")
            image = runtime.capture_flat(body.timeout_s)
            session = runtime.authenticator().complete_login(body.challenge, image)
            return {
                "token": session.token,
                "operator_id": session.operator_id,
                "full_name": session.full_name,
                "role": session.role,
            }

        return await _call(run)

    @router.get("/session")
    async def whoami(runtime: Runtime, session: Session) -> dict[str, Any]:
        """Who is logged in with this token (the kiosk's header), and when the inactivity
        logout falls due."""
        idle = runtime.authenticator().policy.inactivity_logout_seconds
        return {
            "operator_id": session.operator_id,
            "full_name": session.full_name,
            "role": session.role,
            "started": session.started.isoformat(),
            "logout_after_s": idle,
        }

    @router.post("/logout", status_code=204)
    async def logout(runtime: Runtime, session: Session) -> Response:
        await _call(lambda: runtime.authenticator().logout(session.token))
        return Response(status_code=204)

    # --- residents -------------------------------------------------------------------------

    @router.get("/residents")
    async def residents(
        runtime: Runtime,
        _: Session,
        q: Annotated[str, Query(max_length=200)] = "",
        date_of_birth: Annotated[str | None, Query(max_length=10)] = None,
        old_id: Annotated[str | None, Query(max_length=12)] = None,
        household: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            hits = runtime.residents.search(
                q, date_of_birth=date_of_birth, old_id=old_id, household=household, limit=limit
            )
            return [
                {
                    **h.resident.model_dump(mode="json"),
                    "rank": h.rank,
                    "matched_words": h.matched_words,
                }
                for h in hits
            ]

        return await _call(run)

    # --- cases -----------------------------------------------------------------------------

    @router.post("/cases", status_code=201)
    async def open_case(body: OpenCaseIn, runtime: Runtime, session: Session) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            if body.ticket is not None:
                # An unknown ticket, or one not called to a counter: refused before a case
                # is opened (else the case would exist without its ticket's service).
                held = runtime.appointments.get(body.ticket)
                if held.state != "called":
                    raise QueueError(f"ticket {body.ticket} is {held.state}; call it first")
            case = runtime.workflow().open_case(
                session.operator_id, resident_ref=body.resident_ref, ticket=body.ticket
            )
            if body.ticket is not None:
                # The queue's clock for this citizen: service starts now.
                runtime.appointments.start_service(body.ticket, case.id)
            return _case_json(case)

        return await _call(run)

    @router.get("/cases")
    async def list_cases(
        runtime: Runtime,
        _: Session,
        state: Annotated[list[CaseState] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        cases = await _call(lambda: runtime.workflow().cases(state, limit))
        return [_case_json(c) for c in cases]

    @router.get("/cases/{case_id}")
    async def get_case(case_id: str, runtime: Runtime, _: Session) -> dict[str, Any]:
        return _case_json(await _call(lambda: runtime.workflow().get(case_id)))

    @router.get("/cases/{case_id}/proposal")
    async def proposal(case_id: str, runtime: Runtime, _: Session) -> dict[str, Any] | None:
        return await _call(lambda: runtime.workflow().proposal(case_id))

    @router.get("/cases/{case_id}/demographics")
    async def get_demographics(case_id: str, runtime: Runtime, _: Session) -> dict[str, Any] | None:
        demographics = await _call(lambda: runtime.workflow().demographics(case_id))
        return None if demographics is None else demographics.model_dump(mode="json")

    @router.put("/cases/{case_id}/demographics")
    async def put_demographics(
        case_id: str,
        body: dict[str, Any],
        runtime: Runtime,
        session: Session,
        form_token: Annotated[str | None, Query(pattern=FORM_PAGE_PATTERN)] = None,
    ) -> dict[str, Any]:
        """Validate and store the form; ``form_token`` names the form page it came from, so
        that an autosave of that page arriving after this save is not taken as news."""

        def run() -> Any:
            saved = runtime.workflow().save_demographics(case_id, session.operator_id, body)
            with runtime.db.write() as c:  # the form's draft is now saved: it goes
                drafts = _draft_store(runtime)
                drafts.delete(c, case_id, FORM_DRAFT)
                if form_token is not None:
                    raw = drafts.get(case_id, FORM_SAVED, conn=c)
                    tokens = [t for t in json.loads(raw) if t != form_token] if raw else []
                    tokens = [*tokens, form_token][-SAVED_TOKENS_KEPT:]
                    drafts.put(c, case_id, FORM_SAVED, json.dumps(tokens).encode())
            return saved

        demographics = await _call(run)
        out: dict[str, Any] = demographics.model_dump(mode="json")
        return out

    # The demographics form as typed, before it validates (the kiosk autosaves it so that a
    # reload or a browser restart loses nothing): encrypted in the drafts like the rest of
    # the case, deleted when the demographics are saved or the case ends. An autosave sent
    # just before the save can be handled just after it; it carries its form page's token,
    # and a token already saved (a tombstone) makes it stale (409 draft_stale), so a late
    # draft never outlives the save it preceded. A new form page has a new token.

    @router.get("/cases/{case_id}/demographics/draft")
    async def get_form_draft(case_id: str, runtime: Runtime, _: Session) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            runtime.workflow().get(case_id)  # an unknown case: 404
            raw = _draft_store(runtime).get(case_id, FORM_DRAFT)
            return None if raw is None else dict(json.loads(raw))

        return await _call(run)

    @router.put("/cases/{case_id}/demographics/draft")
    async def put_form_draft(
        case_id: str, body: FormDraftIn, runtime: Runtime, session: Session
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            draft = {"fields": body.fields, "saved_at": datetime.now(UTC).isoformat()}
            with runtime.db.write() as c:
                state = c.execute(
                    "SELECT state FROM enrollment_case WHERE id = ?", (case_id,)
                ).fetchone()
                if state is None:
                    raise ApiError(404, "case_not_found", f"no case {case_id} at this station")
                if state["state"] != CaseState.open.value:
                    raise ApiError(409, "case_not_editable", f"case {case_id} is {state[0]}")
                drafts = _draft_store(runtime)
                saved = drafts.get(case_id, FORM_SAVED, conn=c)
                if body.token is not None and saved and body.token in json.loads(saved):
                    raise ApiError(
                        409,
                        "draft_stale",
                        "this form was saved after this draft was typed; open the form "
                        "again to go on editing",
                    )
                drafts.put(c, case_id, FORM_DRAFT, json.dumps(draft).encode())
            return draft

        return await _call(run)

    @router.delete("/cases/{case_id}/demographics/draft", status_code=204)
    async def delete_form_draft(case_id: str, runtime: Runtime, _: Session) -> Response:
        def run() -> None:
            with runtime.db.write() as c:
                _draft_store(runtime).delete(c, case_id, FORM_DRAFT)

        await _call(run)
        return Response(status_code=204)

    @router.get("/divisions")
    async def divisions(
        _: Session,
        scheme: Annotated[DivisionScheme, Query()] = DivisionScheme.pre_2025,
        province: Annotated[str | None, Query(pattern=r"^\d{2}$")] = None,
        district: Annotated[str | None, Query(pattern=r"^\d{3}$")] = None,
    ) -> dict[str, Any]:
        """The administrative units one level below the given one (the form's pickers):
        provinces; a province's districts (pre-2025) or communes (2025); a district's
        communes (pre-2025)."""
        return await _call(lambda: _division_level(scheme, province, district))

    @router.get("/divisions/successor/{commune_code}")
    async def division_successor(
        commune_code: Annotated[str, PathParam(pattern=r"^\d{5}$")], _: Session
    ) -> dict[str, Any]:
        """The 2025 commune a pre-2025 commune became part of (the form fills the new
        structure from the old one)."""
        from enrollment.divisions import load

        commune = await _call(lambda: load().successor(commune_code))
        if commune is None:
            raise ApiError(404, "division_not_found", f"no 2025 successor of {commune_code}")
        return {
            "scheme": commune.scheme.value,
            "province_code": commune.province_code,
            "province_name": commune.province_name,
            "commune_code": commune.code,
            "commune_name": commune.name,
        }

    @router.post("/cases/{case_id}/consent")
    async def consent(case_id: str, runtime: Runtime, session: Session) -> dict[str, Any]:
        case = await _call(lambda: runtime.workflow().record_consent(case_id, session.operator_id))
        return _case_json(case)

    @router.get("/cases/{case_id}/review")
    async def review(case_id: str, runtime: Runtime, _: Session) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            out = runtime.workflow().review(case_id).as_json()
            out["hand_warnings"] = runtime.live.hand_warnings(case_id)
            return out

        return await _call(run)

    # --- live capture ----------------------------------------------------------------------

    @router.post("/cases/{case_id}/face/start", status_code=202)
    async def face_start(
        case_id: str, body: CaptureIn, runtime: Runtime, session: Session
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            runtime.live.start_face(case_id, session.operator_id, body.timeout_s)
            return runtime.live.face_status(case_id)

        return await _call(run)

    @router.get("/cases/{case_id}/face")
    async def face_status(
        case_id: str,
        runtime: Runtime,
        _: Session,
        wait_s: Annotated[float, Query(ge=0, le=30)] = 0,
    ) -> dict[str, Any]:
        if wait_s > 0:
            return await _call(lambda: runtime.live.wait_face(case_id, wait_s))
        return await _call(lambda: runtime.live.face_status(case_id))

    @router.get("/cases/{case_id}/face/preview.jpg")
    async def face_preview(case_id: str, runtime: Runtime, _: Session) -> Response:
        preview = runtime.live.face_preview(case_id)
        if preview is None:
            raise ApiError(404, "no_preview", "no live preview for this case now")
        return Response(preview, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.get("/cases/{case_id}/face/portrait.jpg")
    async def face_portrait(case_id: str, runtime: Runtime, _: Session) -> Response:
        face = await _call(lambda: runtime.workflow().face(case_id))
        if face is None:
            raise ApiError(404, "no_portrait", "no portrait stored for this case")
        return Response(face.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.post("/cases/{case_id}/face/cancel", status_code=204)
    async def face_cancel(case_id: str, runtime: Runtime, _: Session) -> Response:
        runtime.live.cancel_face(case_id)
        return Response(status_code=204)

    @router.websocket("/cases/{case_id}/face/stream")
    async def face_stream(websocket: WebSocket, case_id: str) -> None:
        """The live preview of a running face capture, for the kiosk's screen.

        Each frame is one binary message: a 4-byte big-endian length, that many bytes of
        JSON (``state``, ``feedback`` of the newest frame, ``preview``: the frame number
        and ``captured_at``, epoch seconds when the camera took the image) and the preview
        JPEG (empty when no new image came since the last message). The browser answers
        each message with any text once it has drawn it; only then is the next sent, and
        it is the newest frame then: a slow screen skips frames, it never lags behind.
        When the capture ends (or this case has none): a text message ``{"type": "end",
        ...the face status}`` and the socket closes. Refusals: a page of another site
        (its Origin) gets the handshake refused. The session and the case are checked at
        the handshake and again every :data:`STREAM_RECHECK_S` while streaming: no session
        (never one, expired, logged out) is ``{"type": "error"}`` then close 4401; a case
        that is gone is 4404; a case no longer at its captures (submitted, cancelled) is
        4409; the close reason is the error's code."""
        runtime: StationRuntime = websocket.app.state.runtime
        origin = websocket.headers.get("origin")
        hosts = runtime.settings.service.allowed_hosts
        if origin and (urlsplit(origin).hostname or "") not in hosts:
            # The HTTP origin check (create_app) does not see WebSockets: a page of another
            # site must not watch the camera through the officer's cookie.
            await websocket.close(code=1008)
            return
        await websocket.accept()
        headers, cookies = websocket.headers, websocket.cookies
        token = _token(headers.get("authorization"), cookies.get(SESSION_COOKIE))
        try:
            # Opening the preview is the officer's action; watching it is not.
            refusal = await _stream_refusal(runtime, token, case_id, touch=True)
            if refusal is None:
                refusal = await _face_frames(websocket, runtime, case_id, token)
            if refusal is not None:
                await _refuse_stream(websocket, refusal)
        except WebSocketDisconnect:
            return  # the page went away (a reload reconnects)

    @router.get("/cases/{case_id}/fingers")
    async def finger_states(case_id: str, runtime: Runtime, _: Session) -> dict[str, Any]:
        """Each finger as the capture sees it now (attempts of a finger not done yet
        included), the roll waiting on the scanner (``roll``: its ``id``, ``position``
        and ``started_at``; null when none), the rules (attempts, minimum quality) and
        the exception codes."""
        from station.capture.tenprint import EXCEPTION_CODES

        def run() -> dict[str, Any]:
            policy = runtime.policy()
            running = runtime.live.running_roll(case_id)
            return {
                "fingers": runtime.live.finger_states(case_id),
                "roll": running.to_json() if running is not None else None,
                "max_attempts": policy.finger_max_attempts,
                "min_quality": policy.finger_min_quality,
                "exception_codes": [{"code": c, "meaning": m} for c, m in EXCEPTION_CODES.items()],
                "hand_warnings": runtime.live.hand_warnings(case_id),
            }

        return await _call(run)

    @router.post("/cases/{case_id}/fingers/{position}/roll")
    async def finger_roll(
        case_id: str,
        position: Annotated[int, PathParam(ge=1, le=10)],
        body: CaptureIn,
        runtime: Runtime,
        session: Session,
    ) -> dict[str, Any]:
        return await _call(
            lambda: runtime.live.roll(case_id, session.operator_id, position, body.timeout_s)
        )

    @router.post("/cases/{case_id}/fingers/{position}/exception")
    async def finger_exception(
        case_id: str,
        position: Annotated[int, PathParam(ge=1, le=10)],
        body: ExceptionIn,
        runtime: Runtime,
        session: Session,
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            runtime.live.mark_exception(
                case_id, session.operator_id, position, body.code, body.reason
            )
            return _case_json(runtime.workflow().get(case_id))

        return await _call(run)

    @router.post("/cases/{case_id}/fingers/cancel")
    async def finger_cancel(
        case_id: str, runtime: Runtime, _: Session, body: RollCancelIn | None = None
    ) -> dict[str, Any]:
        """Stop the case's running roll: with ``roll``, only that roll (a page stopping
        the one it saw waiting must not stop a roll started since); without, whatever
        runs (the Stop button). ``cancelled``: the id of the roll stopped, or null."""
        roll = body.roll if body is not None else None
        return {"cancelled": runtime.live.cancel_roll(case_id, roll)}

    @router.post("/cases/{case_id}/approve")
    async def approve(
        case_id: str, body: ApproveIn, runtime: Runtime, session: Session
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            image = runtime.capture_flat(body.timeout_s)
            runtime.authenticator().approve(
                body.supervisor_id, body.pin, image, "case.approve", case_id,
                requested_by=session.operator_id, password=body.password,
            )  # fmt: skip
            return _case_json(runtime.workflow().approve(case_id, body.supervisor_id, body.items))

        return await _call(run)

    @router.post("/cases/{case_id}/submit")
    async def submit(case_id: str, runtime: Runtime, session: Session) -> dict[str, Any]:
        result = await _call(lambda: runtime.workflow().submit(case_id, session.operator_id))
        runtime.live.forget(case_id)  # the captures' copies in memory go with the case
        ticket = result.case.ticket
        if ticket is not None:
            await _call(lambda: _finish_ticket(runtime, ticket))
        return {
            "case": _case_json(result.case),
            "package_id": result.package_id,
            "size": result.size,
            "seconds": result.seconds,
            "timings": result.timings,
        }

    @router.post("/cases/{case_id}/cancel")
    async def cancel(
        case_id: str, body: CancelIn, runtime: Runtime, session: Session
    ) -> dict[str, Any]:
        case = await _call(
            lambda: runtime.workflow().cancel(case_id, session.operator_id, body.reason)
        )
        runtime.live.forget(case_id)
        ticket = case.ticket
        if ticket is not None:
            await _call(lambda: _finish_ticket(runtime, ticket))
        return _case_json(case)

    @router.get("/cases/{case_id}/slip.pdf")
    async def slip(
        case_id: str,
        runtime: Runtime,
        _: Session,
        lang: Annotated[Literal["vi", "en"], Query()] = "vi",
    ) -> Response:
        pdf = await _call(lambda: runtime.slip(case_id, lang))
        return Response(pdf, media_type="application/pdf")

    # --- queue -----------------------------------------------------------------------------

    @router.get("/queue")
    async def queue(runtime: Runtime, _: Session) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            a = runtime.appointments
            return {
                "day": a.today().isoformat(),
                "slots": [_plain(s) for s in a.slots()],
                "tickets": [_plain(t) for t in a.tickets()],
                "waiting": [t.number for t in a.waiting()],
            }

        return await _call(run)

    @router.post("/queue/plan", status_code=201)
    async def plan_day(body: PlanIn, runtime: Runtime, session: Session) -> list[dict[str, Any]]:
        if session.role != "supervisor":
            # The day's opening hours and capacity are the office's decision.
            raise ApiError(403, "supervisor_only", "only a supervisor plans the day's slots")
        slots = await _call(
            lambda: runtime.appointments.plan_day(
                body.day, body.opens, body.closes, slot_minutes=body.slot_minutes,
                capacity=body.capacity,
                breaks=[(b[0], b[1]) for b in body.breaks],
            )
        )  # fmt: skip
        return [_plain(s) for s in slots]

    @router.post("/queue/book", status_code=201)
    async def book(body: BookIn, runtime: Runtime, _: Session) -> dict[str, Any]:
        if body.slot_id is None:
            raise ApiError(422, "slot_required", "choose a slot to book into")
        slot_id = body.slot_id
        ticket = await _call(
            lambda: runtime.appointments.book(
                slot_id, body.name, phone=body.phone, resident_ref=body.resident_ref,
                priority=body.priority,
            )
        )  # fmt: skip
        return _plain(ticket)

    @router.post("/queue/walk-in", status_code=201)
    async def walk_in(body: BookIn, runtime: Runtime, _: Session) -> dict[str, Any]:
        ticket = await _call(
            lambda: runtime.appointments.walk_in(
                body.name, phone=body.phone, resident_ref=body.resident_ref,
                priority=body.priority,
            )
        )  # fmt: skip
        return _plain(ticket)

    @router.post("/queue/{ticket}/check-in")
    async def check_in(ticket: str, runtime: Runtime, _: Session) -> dict[str, Any]:
        return _plain(await _call(lambda: runtime.appointments.check_in(ticket)))

    @router.post("/queue/call-next")
    async def call_next(body: CallIn, runtime: Runtime, _: Session) -> dict[str, Any] | None:
        ticket = await _call(lambda: runtime.appointments.call_next(body.counter))
        return None if ticket is None else _plain(ticket)

    @router.post("/queue/{ticket}/no-show")
    async def no_show(ticket: str, runtime: Runtime, _: Session) -> dict[str, Any]:
        return _plain(await _call(lambda: runtime.appointments.no_show(ticket)))

    @router.post("/queue/{ticket}/finish")
    async def finish(ticket: str, runtime: Runtime, _: Session) -> dict[str, Any]:
        return _plain(await _call(lambda: runtime.appointments.finish(ticket)))

    @router.get("/queue/throughput")
    async def throughput(runtime: Runtime, _: Session) -> list[dict[str, Any]]:
        hours = await _call(runtime.appointments.throughput)
        return [{**_plain(h), "verdict": h.verdict} for h in hours]

    # --- cards -----------------------------------------------------------------------------

    @router.get("/cards")
    async def cards(
        runtime: Runtime,
        _: Session,
        state: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            issuer = runtime.cards()
            return {
                "counts": issuer.counts(),
                "jobs": [_plain(j) for j in issuer.jobs(state, limit=limit)],
            }

        return await _call(run)

    @router.get("/cards/{package_id}")
    async def card_job(package_id: str, runtime: Runtime, _: Session) -> dict[str, Any]:
        """One card job and its history (the encoding screen polls it while a card is
        written: ``fetched`` waiting for a card, ``encoding`` writing and verifying)."""

        def run() -> dict[str, Any]:
            issuer = runtime.cards()
            job = issuer.job(package_id)
            return {
                **_plain(job),
                "events": [_plain(e) for e in issuer.history(package_id)],
            }

        return await _call(run)

    @router.post("/cards/{package_id}/encode")
    async def encode_card(
        package_id: str, body: EncodeIn, runtime: Runtime, session: Session
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            result = runtime.cards().encode(package_id, body.printed_mrz)
            with runtime.db.write() as c:
                runtime.journal.record(c, session.operator_id, "card.encoded", package_id)
            return _plain(result)

        return await _call(run)

    # --- simulator -------------------------------------------------------------------------

    inserted: list[CardEmulator] = []  # the simulated card on the encoder now (0 or 1)
    card_slot = threading.Lock()

    def simulated_bay(runtime: StationRuntime) -> CardBay:
        if runtime.settings.card.backend != "simulated":
            raise ApiError(409, "not_simulated", "the card encoder is real hardware: put a "
                           "blank card on it by hand")  # fmt: skip
        bay = runtime.devices.card_bay if runtime.devices is not None else None
        if bay is None:
            why = "the station runs without devices"
            if runtime.devices is not None:
                why = runtime.devices.board.get("card_encoder").last_error or "not opened"
            raise ApiError(503, "device_missing", f"the simulated card bay is not running: {why}")
        return bay

    @router.post("/simulator/card", status_code=201)
    async def simulator_card_insert(runtime: Runtime) -> dict[str, Any]:
        """Put a new blank emulated card on the simulated encoder: the hand that lays a
        card on the reader, for the demo and a technician without cards. No login, as
        the hand needs none; refused (409) on a station with a real encoder."""

        def run() -> dict[str, Any]:
            bay = simulated_bay(runtime)
            with card_slot:
                if inserted and inserted[0].inserted:
                    raise ApiError(409, "card_present", "a card is already on the encoder; "
                                   "take it off first (DELETE /api/simulator/card)")  # fmt: skip
                name = f"blank-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
                card = bay.card(name)
                try:
                    card.insert()
                except (TimeoutError, RuntimeError, OSError) as exc:
                    raise ApiError(
                        503, "device_missing", f"the card did not go on: {exc}"
                    ) from None
                inserted[:] = [card]
                return {"card": name, "reader": bay.reader}

        return await _call(run)

    @router.delete("/simulator/card", status_code=204)
    async def simulator_card_remove(runtime: Runtime) -> Response:
        """Take the simulated card off the encoder and wait until the encoder sees the
        reader empty (pcscd notices on its next poll), so that the next card is not met
        by this one's ghost. Nothing on the encoder: nothing to do."""

        def run() -> None:
            simulated_bay(runtime)
            with card_slot:
                cards, inserted[:] = list(inserted), []
                try:
                    for card in cards:
                        card.remove()
                    if cards and runtime.devices is not None:
                        runtime.devices.encoder.wait_for_removal(10)
                except (CardEncoderError, DeviceUnavailableError, TimeoutError) as exc:
                    raise ApiError(503, "device_missing", str(exc)) from None

        await _call(run)
        return Response(status_code=204)

    # --- outbox ----------------------------------------------------------------------------

    @router.post("/outbox/export")
    async def export(body: ExportIn, runtime: Runtime, session: Session) -> dict[str, Any]:
        """Copy the unsent packages onto a removable medium the station detected (no
        network at all); the medium is named by its id, never by a path."""
        from station.media import export_to

        def run() -> dict[str, Any]:
            medium = _medium(runtime, body.medium)
            online = runtime.online
            if online is None:
                raise NotReadyError("the station is not provisioned")
            result = export_to(runtime.outbox, Path(medium["path"]), online.identity.station_id)
            out: dict[str, Any] = result.as_json()
            with runtime.db.write() as c:
                runtime.journal.record(
                    c,
                    session.operator_id,
                    "outbox.exported",
                    medium["path"],
                    medium=medium["id"],
                    device=medium["device"],
                    packages=len(out.get("packages") or []),
                )
            return out

        return await _call(run)

    @router.post("/outbox/import-receipts")
    async def import_receipts(
        body: ReceiptsIn, runtime: Runtime, session: Session
    ) -> dict[str, Any]:
        """Read the registry's signed receipts back from an export folder the station
        found on a detected medium."""
        from station.media import import_receipts as read_receipts

        def run() -> dict[str, Any]:
            medium = _medium(runtime, body.medium)
            folder = next((e for e in medium["exports"] if e["id"] == body.export), None)
            if folder is None:
                raise ApiError(
                    409,
                    "export_not_found",
                    f"no export folder {body.export!r} on the medium at {medium['path']}",
                    {"exports": [e["id"] for e in medium["exports"]]},
                )
            online = runtime.online
            if online is None:
                raise NotReadyError("the station is not provisioned")
            result = read_receipts(
                runtime.outbox,
                Path(folder["folder"]),
                online.identity.station_ca,
                station_id=online.identity.station_id,
            )
            with runtime.db.write() as c:
                runtime.journal.record(
                    c, session.operator_id, "outbox.receipts", folder["folder"], medium=medium["id"]
                )
            out: dict[str, Any] = result.as_json()
            return out

        return await _call(run)

    @router.get("/outbox/media")
    async def outbox_media(runtime: Runtime, _: Session) -> list[dict[str, Any]]:
        """Removable media mounted now (under ``[media] roots``), each with its id, free
        space and the export folders on it (receipts there or not)."""
        return await _call(lambda: _media(runtime))

    @router.get("/outbox")
    async def outbox(
        runtime: Runtime,
        _: Session,
        state: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            entries = runtime.outbox.list(state, limit=limit, offset=offset)
            counts = runtime.outbox.counts()
            link = runtime.outbox.link_state()
            next_due = runtime.outbox.next_due()
            return {
                "counts": counts.heartbeat(),
                "by_state": counts.by_state,
                "file_problems": counts.file_problems,
                # The uploader's back-off: when it tries the registry again, and why.
                "link": {
                    "failures": link.failures,
                    "retry_at": link.retry_at.isoformat() if link.retry_at else None,
                    "last_error": link.last_error,
                },
                "next_due": next_due.isoformat() if next_due else None,
                "packages": [e.as_json() for e in entries],
            }

        return await _call(run)

    return router


STREAM_RECHECK_S = 1.0
"""How often the live preview's socket checks again that its session and case allow it."""

StreamRefusal = tuple[int, str, str]
"""Why the preview stream stops: (close code, error code, detail)."""


async def _stream_refusal(
    runtime: StationRuntime, token: str | None, case_id: str, *, touch: bool
) -> StreamRefusal | None:
    """Why the preview of ``case_id`` may not (or no longer) go to the holder of
    ``token``; None when it may. ``touch``: counts as the officer's activity."""
    if token is None:
        return (4401, "login_required", "log in first")
    auth = runtime.authenticator()
    check = auth.touch if touch else auth.session
    try:
        await _call(lambda: check(token))
        case = await _call(lambda: runtime.workflow().get(case_id))
    except SessionExpired as exc:
        return (4401, "session_expired", str(exc))
    except WorkflowError as exc:
        return (4404, exc.code, str(exc))
    if case.state != CaseState.open or case.consent_at is None:
        return (4409, "case_moved", f"the case is {case.state.value}: no face capture now")
    return None


async def _refuse_stream(websocket: WebSocket, refusal: StreamRefusal) -> None:
    code, error, detail = refusal
    await websocket.send_json({"type": "error", "error": error, "detail": detail})
    await websocket.close(code=code, reason=error)


async def _face_frames(
    websocket: WebSocket, runtime: StationRuntime, case_id: str, token: str | None
) -> StreamRefusal | None:
    """Send the newest frame, wait for the browser's answer, again (see face_stream);
    every :data:`STREAM_RECHECK_S`, and before saying the capture ended, the session and
    the case are checked again: why they no longer allow the stream, or None once the
    capture ended and the socket closed."""
    sent_feedback, sent_preview = -1, -1
    checked = monotonic()
    while True:
        if monotonic() - checked >= STREAM_RECHECK_S:
            refusal = await _stream_refusal(runtime, token, case_id, touch=False)
            if refusal is not None:
                return refusal
            checked = monotonic()
        after = max(sent_feedback, sent_preview)
        now = await run_in_threadpool(runtime.live.face_frame, case_id, after, 1.0)
        if now is None or not now.running:
            # A case cancelled or submitted ends its capture too: say that, not "ended".
            refusal = await _stream_refusal(runtime, token, case_id, touch=False)
            if refusal is not None:
                return refusal
            status = await _call(lambda: runtime.live.face_status(case_id))
            await websocket.send_json({"type": "end", **status})
            await websocket.close(code=1000)
            return None
        fresh = now.feedback is not None and now.feedback.frame > sent_feedback
        shown = now.previewed if now.preview and now.previewed else None
        if not fresh and (shown is None or shown[0] <= sent_preview):
            continue  # nothing new within the second (the camera is starting)
        epoch = datetime.now(UTC).timestamp() - monotonic()  # the browser's clock too
        feedback = feedback_json(now.feedback) or {}
        if now.feedback is not None:
            feedback["captured_at"] = round(now.feedback.captured + epoch, 4)
            sent_feedback = now.feedback.frame
        header: dict[str, Any] = {"state": "running", "feedback": feedback, "preview": None}
        image = b""
        if shown is not None and shown[0] > sent_preview and now.preview:
            image, sent_preview = now.preview, shown[0]
            header["preview"] = {"frame": shown[0], "captured_at": round(shown[1] + epoch, 4)}
        header["sent_at"] = round(datetime.now(UTC).timestamp(), 4)
        head = json.dumps(header).encode()
        await websocket.send_bytes(len(head).to_bytes(4, "big") + head + image)
        await websocket.receive_text()  # drawn: the next one may go


def _error_response(status: int, code: str, detail: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


def create_app(runtime: StationRuntime) -> FastAPI:
    """The ASGI app over a started runtime (the caller owns its lifecycle)."""
    app = FastAPI(title="vn-eid station", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.runtime = runtime
    app.state.technician = TechnicianGate(
        runtime.settings.technician, runtime.db, runtime.journal, clock=runtime.clock
    )
    log_ring()  # the technician screen's log tail starts with the service
    app.include_router(api_router())
    hosts = list(runtime.settings.service.allowed_hosts)
    # DNS rebinding: a page from elsewhere that resolves its own name to 127.0.0.1 sends
    # its own Host; only the station's names are served.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)

    @app.middleware("http")
    async def same_origin(request: Request, call_next: Any) -> Any:
        # A browser names the page a request comes from; a page of another site may not
        # change anything here (the kiosk's own page is served from these hosts).
        # The whole origin counts, port included: SameSite cookies do not tell ports
        # apart, and another program's page on 127.0.0.1 is another site. A browser
        # request carrying cookies (the officer's, the technician's) must name its origin.
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("origin")
            own = request.headers.get("host", "")
            if origin:
                parts = urlsplit(origin)
                if (parts.hostname or "") not in hosts or parts.netloc != own:
                    return _error_response(403, "foreign_origin", f"requests from {origin} refused")
            elif request.cookies:
                return _error_response(
                    403, "foreign_origin", "a browser request without its origin refused"
                )
        return await call_next(request)

    def handler(status: int, code: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handle(_: Request, exc: Exception) -> JSONResponse:
            return _error_response(status, code, str(exc))

        return handle

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.detail, exc.details)

    @app.exception_handler(WorkflowError)
    async def workflow_error(_: Request, exc: WorkflowError) -> JSONResponse:
        return _error_response(WORKFLOW_STATUS.get(exc.code, 409), exc.code, str(exc), exc.details)

    @app.exception_handler(NotReadyError)
    async def not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
        status = {"no_devices": 503, "device_missing": 503, "busy": 409}.get(exc.code, 409)
        return _error_response(status, exc.code, str(exc))

    @app.exception_handler(CardEncoderError)
    async def card_encoder(_: Request, exc: CardEncoderError) -> JSONResponse:
        return _error_response(409, getattr(exc, "code", "card_error"), str(exc))

    for bad_input in (ResidentListError, ValueError):
        app.add_exception_handler(bad_input, handler(422, "bad_request"))
    app.add_exception_handler(OutboxError, handler(409, "outbox_error"))
    app.add_exception_handler(MediaError, handler(422, "media_error"))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error_response(500, "internal", "an unexpected error; it has been logged")

    app.add_exception_handler(NotProvisionedError, handler(409, "not_provisioned"))
    app.add_exception_handler(OperatorLocked, handler(423, "operator_locked"))
    app.add_exception_handler(OperatorDisabled, handler(403, "operator_disabled"))
    app.add_exception_handler(LoginFailed, handler(401, "login_failed"))
    app.add_exception_handler(ApprovalRefused, handler(403, "approval_refused"))
    app.add_exception_handler(AuthError, handler(401, "auth_failed"))
    app.add_exception_handler(QueueError, handler(409, "queue_error"))

    @app.exception_handler(CardIssuanceError)
    async def card_error(_: Request, exc: CardIssuanceError) -> JSONResponse:
        status = 404 if exc.code == "no_such_job" else 409
        detail: dict[str, Any] | None = None
        serial = getattr(exc, "serial", None)
        if serial is not None:
            # spoiled: written to and failed (never to be used again); else untouched.
            detail = {"card_serial": serial, "spoiled": isinstance(exc, CardSpoiled)}
        return _error_response(status, exc.code, str(exc), detail)

    app.add_exception_handler(SlipError, handler(500, "slip_failed"))

    @app.exception_handler(TechnicianError)
    async def technician_error(_: Request, exc: TechnicianError) -> JSONResponse:
        return _error_response(exc.status, exc.code, str(exc), exc.details)

    from station.ui.app import install_ui  # the kiosk's pages, over this same API

    install_ui(app)
    return app


__all__ = ["ApiError", "api_router", "create_app"]
