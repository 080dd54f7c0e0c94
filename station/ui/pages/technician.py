"""The technician's screens: the PIN (a technician PIN, not an officer login), then the
station's insides (versions, identity and certificate, registry, network, sync, disk, data
key, journal, service log) with sync, upload and device retries; and ``/setup``, the
first-boot provisioning (no officer can log in before it: the technician PIN opens it).
The SSH panel turns SSH on for a few hours with the keys on a USB stick, or off.
Every action here goes through the API's technician routes, which refuse it without an
open technician session and journal it. The setup screen can read the registry address and
token from the QR code on the registry's token sheet with the station's camera (``POST
/setup/scan``) instead of having them typed."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import Response

from enrollment.setup_token import SetupCodeError, check_registry_url
from station.ui import errors
from station.ui.client import StationApi, StationApiError
from station.ui.i18n import VIETNAM, _, format_datetime, format_number, ngettext
from station.ui.pages.devices import TECH_COOKIE, device_view, disk_view
from station.ui.pages.outbox import duration
from station.ui.web import Page, PageDep

router = APIRouter()

errors.register(
    technician_pin_wrong=lambda: _("Wrong technician PIN. Try again."),
    technician_locked=lambda: _(
        "Too many wrong technician PINs: the technician screen is locked for a while."
    ),
    technician_pin_unset=lambda: _(
        "No technician PIN is set on this station. It is set in the station's configuration "
        "(python -m station technician-pin)."
    ),
    provisioning_failed=lambda: _(
        "The station could not be set up. Check the registry address and the token, then try again."
    ),
    already_provisioned=lambda: _("This station is already set up."),
    busy=lambda: _("The station is busy with the same thing. Wait a moment and try again."),
    no_code_seen=lambda: _(
        "No QR code was read. Hold the token sheet's QR code in front of the camera and scan again."
    ),
    not_a_setup_code=lambda: _(
        "This QR code is not a station setup code. Hold up the QR code on the registry's "
        "token sheet."
    ),
    ssh_keys_missing=lambda: _(
        "There is no file vn-eid-ssh/authorized_keys on this USB stick. Put the public keys "
        "there (one per line), or choose another stick."
    ),
    ssh_keys_refused=lambda: _(
        "The key file on the USB stick was refused: only ssh-ed25519, ecdsa-sha2-nistp256 or "
        "RSA keys of 3072 bits or more, one per line without options, at most 8. The lines "
        "at fault are listed below."
    ),
)


def _technician_api(page: Page) -> StationApi:
    return StationApi(page.request.app.state.ui_client, page.request.cookies.get(TECH_COOKIE))


def _to_unlock(page: Page) -> Response:
    return page.redirect("/technician/unlock")


async def _as_technician(page: Page, path: str, body: Any = None) -> Any:
    """POST ``path`` as the technician: the API's answer, or (no open technician session:
    none yet, expired, locked) a :class:`Response` sending to the PIN."""
    api = _technician_api(page)
    if not api.token:
        return _to_unlock(page)
    try:
        return await api.post(path, body)
    except StationApiError as exc:
        if exc.code != "technician_required":
            raise
        return _to_unlock(page)


async def _technician_open(page: Page) -> bool:
    api = _technician_api(page)
    if not api.token:
        return False
    try:
        await api.get("/technician/session")
    except StationApiError as exc:
        if exc.code != "technician_required":
            raise
        return False
    return True


# --- the technician PIN ------------------------------------------------------------------


async def _render_unlock(
    page: Page, error: str | None = None, locked: bool = False, status_code: int = 200
) -> Response:
    # Before the setup is finished the PIN is the way to it: the page says so.
    setup = await _setup_state(page) != "done"
    return await page.render(
        "technician/unlock.html", status_code=status_code, error=error, locked=locked, setup=setup
    )


@router.get("/technician/unlock")
async def unlock_form(page: PageDep) -> Response:
    return await _render_unlock(page)


@router.post("/technician/unlock")
async def unlock(page: PageDep, pin: Annotated[str, Form(max_length=64)] = "") -> Response:
    if not pin.strip():
        return await _render_unlock(page, _("Type the technician PIN."))
    try:
        session = await page.api.post("/technician/unlock", {"pin": pin.strip()})
    except StationApiError as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        locked = exc.code == "technician_locked"
        if exc.code == "technician_pin_wrong":
            error = ngettext(
                "Wrong technician PIN. %(num)d try left before the screen locks.",
                "Wrong technician PIN. %(num)d tries left before the screen locks.",
                int(details.get("tries_left") or 0),
            )
        elif locked:
            until = str(details.get("until") or "")
            error = _(
                "Too many wrong PINs: locked until %(when)s. Wait, or ask the registry's support.",
                when=_clock(until),
            )
        else:
            error = errors.explain(exc)
        code = 423 if locked else 401 if exc.status == 401 else 200
        return await _render_unlock(page, error, locked, code)
    # A station not set up yet: the technician unlocked to set it up.
    response = page.redirect("/technician" if await _setup_state(page) == "done" else "/setup")
    # Short-lived, HttpOnly and same-site only: the token opens the station's insides.
    response.set_cookie(
        TECH_COOKIE,
        session["token"],
        max_age=int(session["expires_in_s"]),
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


def _clock(iso: str) -> str:
    if not iso:
        return ""
    return format_datetime(iso)  # Viet Nam's time, whatever the machine's zone


@router.post("/technician/lock")
async def lock(page: PageDep) -> Response:
    api = _technician_api(page)
    if api.token:
        with contextlib.suppress(StationApiError):  # already expired: nothing to end
            await api.post("/technician/lock")
    response = page.redirect("/")
    response.delete_cookie(TECH_COOKIE, path="/")
    return response


# --- the technician screen -----------------------------------------------------------------


_IDENTITY_FIELDS = (
    "station_id", "office_id", "enrolled_at", "certificate_not_after", "certificate_serial",
    "csca_count",
)  # fmt: skip
_SYNC_FIELDS = ("last_error", "last_sync_at", "stale")
_STATUS_FIELDS = (
    "image_version", "link", "outbox", "provisioned", "software_version", "started_at",
)  # fmt: skip
_OVERVIEW_FIELDS = (
    "data_key_provider", "identity_error", "journal", "key_error", "registry_url", "upload_link",
)  # fmt: skip


@router.get("/technician")
async def technician_page(page: PageDep) -> Response:
    api = _technician_api(page)
    if not api.token:
        return page.redirect("/technician/unlock")
    try:
        overview = await api.get("/technician/overview", journal_limit=15)
        network = await api.get("/technician/network")
        logs = await api.get("/technician/logs", lines=60)
    except StationApiError as exc:
        if exc.code == "technician_required":
            return page.redirect("/technician/unlock")
        raise
    status = overview["status"]
    # A station not set up yet has no identity and no sync: the screen shows dashes.
    identity = dict.fromkeys(_IDENTITY_FIELDS) | (status.get("identity") or {})
    cert_days = None
    if identity.get("certificate_not_after"):
        not_after = datetime.fromisoformat(identity["certificate_not_after"])
        cert_days = (not_after - datetime.now(UTC)).days
    devices = sorted(
        (device_view(c) for c in status.get("devices") or []), key=lambda d: d["order"]
    )
    sync = dict.fromkeys(_SYNC_FIELDS) | (status.get("sync") or {})
    expires = datetime.fromisoformat(overview["session_expires_at"])
    ssh = _ssh_view(await api.get("/technician/ssh"))
    return await page.render(
        "technician/index.html",
        # The SSH panel as it first shows: nothing asked yet.
        ssh=ssh,
        message=None,
        error=None,
        detail=None,
        problems=[],
        o=dict.fromkeys(_OVERVIEW_FIELDS) | overview,
        s=dict.fromkeys(_STATUS_FIELDS) | status,
        identity=identity,
        cert_days=cert_days,
        devices=devices,
        disk=disk_view(status),
        network=network,
        logs=logs,
        sync=sync,
        sync_age=duration(sync.get("age_s")),
        sync_limit=duration(sync.get("limit_s")),
        session_left=duration((expires - datetime.now(UTC)).total_seconds()),
    )


@router.post("/technician/sync")
async def technician_sync(page: PageDep) -> Response:
    report = await _as_technician(page, "/technician/sync")
    if isinstance(report, Response):
        return report
    text = _(
        "Synced with the registry in %(s)s s.",
        s=format_number(float(report.get("seconds") or 0), 1),
    )
    return await page.render("technician/_done.html", text=text)


@router.post("/technician/uploads/retry")
async def technician_uploads_retry(page: PageDep) -> Response:
    result = await _as_technician(page, "/technician/uploads/retry")
    if isinstance(result, Response):
        return result
    text = ngettext(
        "The station sends the %(num)d waiting package now, without waiting for its next try.",
        "The station sends the %(num)d waiting packages now, without waiting for its next try.",
        int(result.get("pending") or 0),
    )
    return await page.render("technician/_done.html", text=text)


@router.post("/technician/devices/retry")
async def technician_retry(page: PageDep) -> Response:
    cells = await _as_technician(page, "/technician/devices/retry")
    if isinstance(cells, Response):
        return cells
    bad = [device_view(c)["label"] for c in cells if not c.get("ok")]
    if bad:
        text = _("Tried again. Still not working: %(list)s.", list=", ".join(bad))
    else:
        text = _("Tried again: every device is working.")
    return await page.render("technician/_done.html", text=text)


# --- SSH access ----------------------------------------------------------------------------

# Why root did not carry out the last SSH request (station.ssh_access reasons).
_SSH_REASONS = {
    "wrong_pin": lambda: _("The last SSH request was refused: the technician PIN was wrong."),
    "locked": lambda: _(
        "Too many wrong PINs for SSH: every SSH request is refused for a while. Wait 10 "
        "minutes and try again."
    ),
    "bad_keys": lambda: _(
        "The last SSH request was refused: the keys were not accepted. Check the key file."
    ),
    "no_pin": lambda: _(
        "SSH cannot be turned on: the station's configuration holds no usable technician PIN."
    ),
}


def _hhmm(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(VIETNAM).strftime("%H:%M")


def _ssh_view(info: dict[str, Any]) -> dict[str, Any]:
    """The SSH panel's facts: on (until HH:MM, the keys) or off, a request waiting for
    root, why root refused the last one, and the sticks to take keys from."""
    status = info.get("status") or {}
    on = status.get("state") == "on"
    last = status.get("last") or {}
    refusal = detail = None
    if last.get("outcome") in ("refused", "failed"):
        explain = _SSH_REASONS.get(str(last.get("reason") or ""))
        refusal = (
            explain()
            if explain
            else _("The system could not carry out the last SSH request. Details below.")
        )
        detail = last.get("detail")
    return {
        "on": on,
        "until": _hhmm(status["until"]) if on and status.get("until") else "",
        "keys": (status.get("keys") or []) if on else [],
        "pending": bool(info.get("pending")),
        "refusal": refusal,
        "refusal_detail": detail,
        "media": info.get("media") or [],
        "hours": int(info.get("hours") or 8),
    }


async def _ssh_panel(
    page: Page, message: str | None = None, failure: StationApiError | None = None
) -> Response:
    info = await _technician_api(page).get("/technician/ssh")
    problems: list[str] = []
    if failure is not None and isinstance(failure.details, dict):
        problems = [str(p) for p in failure.details.get("problems") or []]
    return await page.render(
        "technician/_ssh.html",
        ssh=_ssh_view(info),
        message=message,
        error=errors.explain(failure) if failure else None,
        detail=failure.detail if failure else None,
        problems=problems,
    )


@router.get("/technician/ssh")
async def technician_ssh(page: PageDep) -> Response:
    if not await _technician_open(page):
        return _to_unlock(page)
    return await _ssh_panel(page)


# Said on the panel (a wrong confirming PIN counts towards the technician lockout; once
# locked, the next page sends to the PIN screen).
_SSH_REFUSALS = (
    "medium_not_detected",
    "ssh_keys_missing",
    "ssh_keys_refused",
    "technician_pin_wrong",
    "technician_locked",
)


@router.post("/technician/ssh/on")
async def technician_ssh_on(
    page: PageDep,
    medium: Annotated[str, Form(max_length=64)] = "",
    pin: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    if not await _technician_open(page):
        return _to_unlock(page)
    if not medium or not pin.strip():
        return await _ssh_form_problem(
            page, _("Choose a USB stick and type the technician PIN to confirm.")
        )
    try:
        asked = await _as_technician(
            page, "/technician/ssh/on", {"medium": medium, "pin": pin.strip()}
        )
    except StationApiError as exc:
        if exc.code not in _SSH_REFUSALS:
            raise
        return await _ssh_panel(page, failure=exc)
    if isinstance(asked, Response):
        return asked
    message = ngettext(
        "Asked to turn SSH on for %(hours)d hours with %(num)d key. This takes a few seconds.",
        "Asked to turn SSH on for %(hours)d hours with %(num)d keys. This takes a few seconds.",
        len(asked.get("keys") or []),
        hours=int(asked.get("hours") or 0),
    )
    return await _ssh_panel(page, message)


@router.post("/technician/ssh/off")
async def technician_ssh_off(
    page: PageDep, pin: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    if not await _technician_open(page):
        return _to_unlock(page)
    if not pin.strip():
        return await _ssh_form_problem(page, _("Type the technician PIN to confirm."))
    try:
        asked = await _as_technician(page, "/technician/ssh/off", {"pin": pin.strip()})
    except StationApiError as exc:
        if exc.code not in _SSH_REFUSALS:
            raise
        return await _ssh_panel(page, failure=exc)
    if isinstance(asked, Response):
        return asked
    return await _ssh_panel(page, _("Asked to turn SSH off. This takes a few seconds."))


async def _ssh_form_problem(page: Page, error: str) -> Response:
    info = await _technician_api(page).get("/technician/ssh")
    return await page.render(
        "technician/_ssh.html",
        ssh=_ssh_view(info),
        message=None,
        error=error,
        detail=None,
        problems=[],
    )


# --- first boot ----------------------------------------------------------------------------


_REASONS = {
    "unreachable": lambda: _(
        "Nothing answered at this address. Check the network cable or Wi-Fi and the address, "
        "then try again (the token is still valid)."
    ),
    "token_refused": lambda: _(
        "The registry refused this token: it is wrong, used already or expired. Check it, or "
        "ask the registry administrator for a new one."
    ),
    "not_a_registry": lambda: _(
        "Something answered at this address, but it is not the registry. Check the address."
    ),
}


async def _setup_state(page: Page) -> str:
    """new (not provisioned), sync (provisioned, never synced: nobody can log in yet) or
    done."""
    status = await page.status()
    if not status["provisioned"]:
        return "new"
    if not (status.get("sync") or {}).get("last_sync_at"):
        return "sync"
    return "done"


SCAN_SECONDS = 20
"""How long one press of Scan looks for the token sheet's QR code (the bar that shows the
time running out, in technician.css, lasts as long)."""

# Why a QR code read at setup is not usable (enrollment.setup_token.SetupCodeError codes).
_SCAN_REASONS = {
    "wrong_scheme": lambda: _(
        "This QR code is not a station setup code. Hold up the QR code on the registry's "
        "token sheet."
    ),
    "wrong_version": lambda: _(
        "This setup code is made for another version of the station software. Ask the "
        "registry administrator for a new token sheet, or type the address and the token."
    ),
    "insecure_address": lambda: _(
        "The registry address in this QR code does not start with https://, so the station "
        "will not use it. Ask the registry administrator for a new token sheet."
    ),
}


def _scan_problem(exc: StationApiError) -> str:
    details = exc.details if isinstance(exc.details, dict) else {}
    if exc.code == "not_a_setup_code":
        explain = _SCAN_REASONS.get(str(details.get("reason") or ""))
        if explain is not None:
            return explain()
        return _(
            "The setup code in this QR code is damaged or incomplete. Ask the registry "
            "administrator for a new token sheet, or type the address and the token."
        )
    if exc.code == "no_code_seen" and details.get("glimpsed"):
        return _(
            "A QR code was in view but could not be read. Hold the sheet flat and still, "
            "20 to 40 cm from the camera, without glare on it, and scan again."
        )
    if exc.code == "no_code_seen":
        return _(
            "No QR code was seen in %(num)d seconds. Hold the token sheet's QR code in front "
            "of the camera and scan again.",
            num=SCAN_SECONDS,
        )
    return errors.explain(exc)


async def _setup_render(page: Page, step: str, **context: Any) -> Response:
    values: dict[str, Any] = {
        "registry_url": "",
        "token": "",
        "error": None,
        "field": None,
        "detail": None,
        "scanned": False,
        "scan_error": None,
        "scan_detail": None,
    }
    values.update(context)
    if page.is_htmx:
        return await page.render("technician/_setup.html", step=step, **values)
    return await page.render("technician/setup.html", step=step, **values)


@router.get("/setup")
async def setup_page(page: PageDep) -> Response:
    state = await _setup_state(page)
    if state != "done" and not await _technician_open(page):
        return _to_unlock(page)
    return await _setup_render(page, state)


def _address_problem(url: str) -> str | None:
    """The registry address rule of ``enrollment.setup_token`` (the one a QR code's address
    meets too), said to the technician."""
    try:
        check_registry_url(url)
    except SetupCodeError as exc:
        if exc.code == "insecure_address":
            return _(
                "The address must start with https:// (plain http:// only for this station "
                "itself or a private-network IP address, for tests)."
            )
        return _(
            "Write the address in full, starting with https:// (for example "
            "https://registry.example.vn)."
        )
    return None


@router.post("/setup")
async def setup(
    page: PageDep,
    registry_url: Annotated[str, Form(max_length=500)] = "",
    token: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    state = await _setup_state(page)
    if state != "done" and not await _technician_open(page):
        return _to_unlock(page)
    if state != "new":
        return await _setup_render(page, state)
    url, token = registry_url.strip(), token.strip()
    problem = _address_problem(url)
    if problem is not None:
        return await _setup_render(page, "new", registry_url=url, error=problem, field="url")
    if not token:
        error = _("Type the one-time token from the registry.")
        return await _setup_render(page, "new", registry_url=url, error=error, field="token")
    try:
        provisioned = await _as_technician(
            page, "/technician/provision", {"registry_url": url, "token": token}
        )
    except StationApiError as exc:
        if exc.code != "provisioning_failed":
            raise
        details = exc.details if isinstance(exc.details, dict) else {}
        reason = str(details.get("reason") or "")
        explain = _REASONS.get(reason)
        error = explain() if explain else errors.explain(exc)
        field = "token" if reason == "token_refused" else "url"
        return await _setup_render(
            page, "new", registry_url=url, error=error, field=field, detail=exc.detail
        )
    if isinstance(provisioned, Response):
        return provisioned
    page.forget_status()  # provisioned now: the header shows the station's id
    return await _first_sync(page)


@router.post("/setup/scan")
async def setup_scan(page: PageDep) -> Response:
    """Read the registry address and token from the token sheet's QR code with the
    camera, and fill the setup form with them (the technician checks and presses Set
    up)."""
    state = await _setup_state(page)
    if state != "done" and not await _technician_open(page):
        return _to_unlock(page)
    if state != "new":
        return await _setup_render(page, state)
    try:
        found = await _as_technician(
            page, "/technician/setup-code/scan", {"timeout_s": SCAN_SECONDS}
        )
    except StationApiError as exc:
        if exc.code not in ("no_code_seen", "not_a_setup_code", "busy", "device_missing",
                            "no_devices", "already_provisioned"):  # fmt: skip
            raise
        return await _setup_render(
            page, "new", scan_error=_scan_problem(exc), scan_detail=exc.detail
        )
    if isinstance(found, Response):
        return found
    return await _setup_render(
        page,
        "new",
        registry_url=str(found["registry_url"]),
        token=str(found["token"]),
        scanned=True,
    )


async def _first_sync(page: Page) -> Response:
    try:
        synced = await _as_technician(page, "/technician/sync")
    except StationApiError as exc:
        if exc.code != "sync_failed":
            raise
        error = _(
            "The station is set up, but its first sync did not reach the registry. Check the "
            "network and press Sync again: the officers can log in after it."
        )
        page.forget_status()
        return await _setup_render(page, "sync", error=error, detail=exc.detail)
    if isinstance(synced, Response):
        return synced
    return page.redirect("/login")


@router.post("/setup/sync")
async def setup_sync(page: PageDep) -> Response:
    state = await _setup_state(page)
    if state != "done" and not await _technician_open(page):
        return _to_unlock(page)
    if state != "sync":
        return await _setup_render(page, state)
    return await _first_sync(page)
