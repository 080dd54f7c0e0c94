"""API errors as the officer reads them: what happened and what to do next, translated.

Each screen's module registers the codes its API calls can answer with; the API's own
English detail is shown beneath in small type (it names files and devices, for the
technician). A code nobody registered still gets a sentence that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable

from station.ui.client import StationApiError
from station.ui.i18n import _

# Lazily translated: the language is the request's, known only when the error is shown.
_MESSAGES: dict[str, Callable[[], str]] = {}


def register(**messages: Callable[[], str]) -> None:
    """``register(code=lambda: _("What to do"))``; a code registered twice must say the same
    thing (two screens that disagree would confuse the officer)."""
    for code, message in messages.items():
        known = _MESSAGES.get(code)
        if known is not None and known() != message():
            raise ValueError(f"error code {code!r} is explained twice, differently")
        _MESSAGES[code] = message


def explain(failure: StationApiError) -> str:
    message = _MESSAGES.get(failure.code)
    if message is None:
        return _(
            "The station refused this (%(code)s). Read the details below, correct what they "
            "name and try again; call the technician if it keeps happening.",
            code=failure.code,
        )
    return message()


def registered() -> frozenset[str]:
    return frozenset(_MESSAGES)


register(
    login_required=lambda: _("Log in first: your ID and PIN, then a finger."),
    session_expired=lambda: _("You were logged out. Log in again to go on."),
    login_failed=lambda: _("That did not match. Check your ID and PIN, and try again."),
    auth_failed=lambda: _("That did not match. Check your ID and PIN, and try again."),
    operator_locked=lambda: _(
        "Too many failed tries: this account is locked for a while. Ask a supervisor."
    ),
    operator_disabled=lambda: _("This account is disabled. Ask a supervisor."),
    foreign_origin=lambda: _("This page may not change anything here. Use the kiosk."),
    not_provisioned=lambda: _("This station is not set up yet. Call the technician."),
    enrollment_paused=lambda: _(
        "Enrollment is paused: the station has not synced for too long. Connect it to the "
        "network, or call the technician."
    ),
    disk_full=lambda: _(
        "The station's disk is nearly full. Export the outbox to a USB stick or call the "
        "technician before going on."
    ),
    no_devices=lambda: _(
        "The devices are not connected. Check the cables, then press Retry on the Devices page."
    ),
    device_missing=lambda: _(
        "A device is missing. Check its cable, then press Retry on the Devices page."
    ),
    camera_busy=lambda: _("The camera is busy with another capture. Wait a moment."),
    scanner_busy=lambda: _("The scanner is busy with another capture. Wait a moment."),
    case_not_found=lambda: _("This enrollment no longer exists. Go back to the list."),
    case_not_editable=lambda: _("This enrollment was submitted and can no longer be changed."),
    queue_error=lambda: _(
        "The queue refused this: the ticket may have moved on at another counter. Open the "
        "queue again and call the citizen again."
    ),
    slip_failed=lambda: _(
        "The slip could not be made. The enrollment itself is safe: try printing again, and "
        "call the technician if it keeps failing."
    ),
    slot_required=lambda: _("Choose an appointment slot first, then try again."),
    bad_request=lambda: _("Something typed is not valid. Correct it and try again."),
    internal=lambda: _(
        "Something went wrong inside the station. It has been logged: try again, and call the "
        "technician if it keeps happening."
    ),
)

__all__ = ["explain", "register", "registered"]
