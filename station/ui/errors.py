"""API errors as the officer reads them: what happened and what to do next, translated.

Each screen's module registers the codes its API calls can answer with; the API's own
English detail is shown beneath in small type (it names files and devices, for the
technician). A code nobody registered still gets a sentence that says what to do
(tests/test_ui_errors.py reads the station's source for every code the API has, and
fails on one without its sentence).

A form the kiosk itself cannot read (a field left out: FastAPI's validation error) is said
in words too, naming the fields by their labels (:func:`form_problem`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

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

# Codes no screen registers because no screen's own call meets them first: the card
# encoder's (the cards screen's refusals before a card is touched), the simulated card
# slot's, and base classes' defaults.
register(
    card_present=lambda: _("A card is already on the encoder. Take it off first."),
    card_error=lambda: _(
        "The card encoder reported a problem. Put the card back on it and try again; call the "
        "technician if it keeps happening."
    ),
    access_denied=lambda: _(
        "The card refused access: it may not be a blank card of this programme. Use another "
        "blank card."
    ),
    bac_failed=lambda: _(
        "The card's access check failed. Put it back on the encoder and try again; if it "
        "fails again, use another blank card."
    ),
    pace_failed=lambda: _(
        "The card's access check failed. Put it back on the encoder and try again; if it "
        "fails again, use another blank card."
    ),
    card_locked=lambda: _("This card is locked and cannot be written. Use another blank card."),
    protocol_error=lambda: _(
        "The encoder and the card did not understand each other. Put the card back and try "
        "again; call the technician if it keeps happening."
    ),
    write_failed=lambda: _(
        "The card could not be written. Put it back and try again; if it fails again, use "
        "another blank card."
    ),
    verification_failed=lambda: _(
        "The card did not pass the check after writing. Use another blank card."
    ),
    card_issuance_error=lambda: _(
        "The card could not be encoded. Try again; call the technician if it keeps happening."
    ),
    technician_error=lambda: _(
        "The technician screen refused this. Enter the technician PIN again."
    ),
    # The demographics form's autosave arriving after the form's save: the kiosk drops it
    # without a word (the form was saved); a script that meets it opens the form again.
    draft_stale=lambda: _("This form was saved meanwhile. Open it again to go on editing."),
    # The kiosk's own: an approval with nothing ticked (the supervisor's finger is not
    # asked for).
    nothing_ticked=lambda: _("Tick what you approve, then press Approve again."),
)


# --- forms the kiosk cannot read ------------------------------------------------------------

# The fields a kiosk form requires, by the name they are posted under, as their labels say
# them (a field with a default is never "left out"; hidden fields the officer cannot fill
# are named by no label: the message then asks to fill in the whole form).
_FIELDS: dict[str, Callable[[], str]] = {
    "operator_id": lambda: _("Officer ID"),
    "secret": lambda: _("PIN or password"),
    "supervisor_id": lambda: _("Supervisor ID"),
    "code": lambda: _("Why the finger cannot be rolled"),
    "medium": lambda: _("The USB stick"),
    "export": lambda: _("The export folder on the stick"),
}

# Pydantic's kinds of error that mean "not filled in" (others: filled in wrongly).
_LEFT_OUT = frozenset({"missing", "string_too_short", "too_short"})


def field_labels() -> frozenset[str]:
    """The form fields :func:`form_problem` names by their label."""
    return frozenset(_FIELDS)


def form_problem(problems: Iterable[Mapping[str, Any]]) -> str:
    """A request the kiosk could not read (FastAPI's ``RequestValidationError.errors()``),
    said to the officer: the fields by their labels, never the validator's words (nor the
    values: a PIN may be among them)."""
    named: list[str] = []
    incomplete = True  # every problem a field left out (else one filled in wrongly)
    for problem in problems:
        where = tuple(problem.get("loc") or ())
        if not where or where[0] != "body":
            # A query or path value: the officer did not type it; the address is wrong.
            return _(
                "This page's address is not valid: open the screen again from the kiosk's buttons."
            )
        label = _FIELDS.get(str(where[1])) if len(where) > 1 else None
        if label is None:
            return _("The form was not complete. Fill in every field and send it again.")
        incomplete = incomplete and problem.get("type") in _LEFT_OUT
        if label() not in named:
            named.append(label())
    if not named:
        return _("The form was not complete. Fill in every field and send it again.")
    if incomplete:
        return _("The form was not complete: %(fields)s.", fields=", ".join(named))
    return _("Check these fields and send the form again: %(fields)s.", fields=", ".join(named))


__all__ = ["explain", "field_labels", "form_problem", "register", "registered"]
