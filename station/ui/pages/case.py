"""An enrollment's screens up to the captures: opening a case (and why one is refused),
the demographics form (prefilled, autosaved as a draft while typed, validated by the
API), consent, cancelling, and the supervisor's approval panel (a fragment the review
and the finger screens embed).

Every step has its own URL and renders from the case as the API holds it, so a reload or
a restarted browser lands where the officer was; a step not reachable yet sends the
officer to the case's current one (:mod:`station.ui.steps`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from enrollment.reference import ETHNIC_GROUPS  # a code table (the record's), no workflow
from station.ui import errors, steps
from station.ui.client import StationApiError
from station.ui.i18n import _, format_number
from station.ui.pages.outbox import size
from station.ui.web import Page, PageDep, safe_next

router = APIRouter()

# --- names the officer reads ----------------------------------------------------------------

_FINGERS: dict[int, Callable[[], str]] = {
    1: lambda: _("Right thumb"),
    2: lambda: _("Right index finger"),
    3: lambda: _("Right middle finger"),
    4: lambda: _("Right ring finger"),
    5: lambda: _("Right little finger"),
    6: lambda: _("Left thumb"),
    7: lambda: _("Left index finger"),
    8: lambda: _("Left middle finger"),
    9: lambda: _("Left ring finger"),
    10: lambda: _("Left little finger"),
}

_FINGER_EXCEPTIONS: dict[str, Callable[[], str]] = {
    "amputated": lambda: _("amputated"),
    "unable_to_print": lambda: _("cannot be printed (worn or damaged skin)"),
    "bandaged": lambda: _("bandaged or injured"),
}

_FACE_EXCEPTIONS: dict[str, Callable[[], str]] = {
    "eyes_not_visible": lambda: _("eyes cannot be shown"),
    "facial_condition": lambda: _("a medical condition affects the pose or expression"),
    "religious_head_covering": lambda: _("religious head covering"),
    "medical_device": lambda: _("a medical device that cannot be removed"),
}

_PROTECTED: dict[str, Callable[[], str]] = {
    "full_name": lambda: _("full name"),
    "date_of_birth": lambda: _("date of birth"),
    "sex": lambda: _("sex"),
}


def finger_name(position: int) -> str:
    """The finger's name as a label or at the start of a sentence ("Right thumb")."""
    return _FINGERS[position]() if position in _FINGERS else str(position)


def finger_in_sentence(position: int) -> str:
    """The finger's name inside a sentence ("roll the right thumb"): the label with its
    first letter lowered (no finger's name starts with a proper noun, in either language)."""
    name = finger_name(position)
    return name[:1].lower() + name[1:]


def finger_exception(code: str | None) -> str:
    if not code:
        return ""
    return _FINGER_EXCEPTIONS[code]() if code in _FINGER_EXCEPTIONS else code


def approval_label(item: Mapping[str, Any], case: Mapping[str, Any]) -> str:
    """What a supervisor is asked to approve, in words (the API's own text is English)."""
    code = str(item.get("code") or "")
    if code.startswith("finger:") and code[7:].isdigit():
        position = int(code[7:])
        summary = (case.get("fingers") or {}).get(str(position)) or {}
        if summary.get("exception"):
            return _(
                "%(finger)s: not captured, %(why)s",
                finger=finger_name(position),
                why=finger_exception(summary["exception"]),
            )
        return _(
            "%(finger)s: quality %(quality)s is below the minimum after %(attempts)s tries",
            finger=finger_name(position),
            quality=summary.get("quality", "?"),
            attempts=summary.get("attempts", "?"),
        )
    if code == "face":
        found = re.search(r"'([a-z_]+)'", str(item.get("message") or ""))
        why = found.group(1) if found else ""
        return _(
            "Portrait: %(why)s",
            why=_FACE_EXCEPTIONS[why]() if why in _FACE_EXCEPTIONS else why,
        )
    if code == "demographics":
        text = str(item.get("message") or "")
        names = [_PROTECTED[f]() for f in _PROTECTED if f in text]
        return _(
            "Details changed against the resident list: %(fields)s",
            fields=", ".join(names) or text,
        )
    return str(item.get("message") or code)


_ELIGIBILITY: dict[str, Callable[[], str]] = {
    "under_age": lambda: _(
        "The citizen is younger than 14: the card is issued from the age of 14. Ask them to "
        "come back then."
    ),
    "already_enrolled": lambda: _(
        "The registry already has this citizen's enrollment: no new one is needed. For a lost "
        "or damaged card, use the card replacement procedure."
    ),
    "in_progress_elsewhere": lambda: _(
        "Another office already sent this citizen's enrollment and the registry is working on "
        "it. Tell the citizen to wait for that card."
    ),
    "open_case_here": lambda: _(
        "This station already has an enrollment for this citizen. Continue that one instead "
        "of starting again."
    ),
}


def eligibility_text(code: str) -> str:
    message = _ELIGIBILITY.get(code)
    return message() if message else code


_CODES: dict[str, Callable[[], str]] = dict(
    not_eligible=lambda: _(
        "This citizen cannot be enrolled now. Read the reason below and tell the citizen what "
        "to do."
    ),
    resident_not_found=lambda: _(
        "This resident is not in the office's list (it may have changed at the last sync). "
        "Search again, or start a new record."
    ),
    invalid_demographics=lambda: _(
        "Some details are not valid. Correct the fields marked in red, then save again."
    ),
    consent_missing=lambda: _(
        "Record the citizen's consent first: open the Consent step and read it to them."
    ),
    not_ready=lambda: _(
        "The enrollment is not complete yet. Open the Review step: it lists what is missing."
    ),
    nothing_to_approve=lambda: _(
        "There is nothing (left) to approve here: the case changed. Look at the review again."
    ),
    self_approval=lambda: _(
        "A supervisor who worked on this enrollment cannot approve it. Ask another supervisor."
    ),
    approval_refused=lambda: _(
        "This approval is refused: only another supervisor, who did not work on this "
        "enrollment, can approve it."
    ),
    citizen_is_operator=lambda: _(
        "These fingerprints belong to an officer who worked on this enrollment: an officer "
        "cannot enroll themselves. Ask another officer to do it."
    ),
    case_changed=lambda: _("The enrollment changed while it was being checked. Submit again."),
    packaging_failed=lambda: _(
        "The package could not be built. Submit again; call the technician if it happens again."
    ),
    not_submitted=lambda: _("The slip is printed once the enrollment is submitted."),
    slip_gone=lambda: _(
        "This citizen's data has already left the station, so the slip cannot be printed again."
    ),
    division_not_found=lambda: _(
        "That place is not in the list of administrative units. Choose it again from the list."
    ),
)

# Codes another screen explained first keep its words (one code, one message).
errors.register(**{code: text for code, text in _CODES.items() if code not in errors.registered()})


# --- the demographics form ------------------------------------------------------------------

PLACES = ("origin", "residence", "birth")
"""The form's addresses: place of origin, permanent residence, place of birth (optional)."""
_PLACE_FIELDS = {
    "origin": "place_of_origin",
    "residence": "permanent_residence",
    "birth": "place_of_birth",
}
_PLACE_PARTS = ("detail", "old.province", "old.district", "old.commune", "new.province",
                "new.commune")  # fmt: skip
TEXT_FIELDS = (
    "full_name",
    "dob",
    "sex",
    "nationality",
    "ethnicity",
    "religion",
    "old_id_number",
    "father_name",
    "mother_name",
    "spouse_name",
    "mark1",
    "mark2",
    "resident_list_ref",
)
FORM_FIELDS = TEXT_FIELDS + tuple(f"{p}.{part}" for p in PLACES for part in _PLACE_PARTS)
_MODEL_TO_FORM = {
    "full_name": "full_name",
    "date_of_birth": "dob",
    "sex": "sex",
    "nationality": "nationality",
    "ethnicity": "ethnicity",
    "religion": "religion",
    "old_id_number": "old_id_number",
    "father_name": "father_name",
    "mother_name": "mother_name",
    "spouse_name": "spouse_name",
    "resident_list_ref": "resident_list_ref",
}

_HOW_TO_FIX: dict[str, Callable[[], str]] = {
    "full_name": lambda: _("Type the full name as on the birth certificate (at most 100 letters)."),
    "dob": lambda: _(
        "Type the date of birth as dd/mm/yyyy (or mm/yyyy, or only the year when that is all "
        "that is known)."
    ),
    "sex": lambda: _("Choose Male or Female."),
    "nationality": lambda: _("Type the 3-letter country code: VNM for Viet Nam."),
    "ethnicity": lambda: _("Choose the ethnic group from the list."),
    "religion": lambda: _("Type the religion, or “Không” for none (at most 200 letters)."),
    "old_id_number": lambda: _(
        "The old ID card number has exactly 9 digits. Leave it empty if there is none."
    ),
    "father_name": lambda: _("At most 100 letters. Leave it empty if not known."),
    "mother_name": lambda: _("At most 100 letters. Leave it empty if not known."),
    "spouse_name": lambda: _("At most 100 letters. Leave it empty if not known."),
    "mark1": lambda: _("At most 200 letters."),
    "mark2": lambda: _("At most 200 letters."),
    "place": lambda: _(
        "Choose the province, the district and the commune (or the province and the commune of "
        "the 2025 structure)."
    ),
    "place.partial": lambda: _(
        "Choose down to the commune, or leave this structure empty and fill in the other one."
    ),
    "place.detail": lambda: _("At most 200 letters: house number, street, hamlet or village."),
    "resident_list_ref": lambda: _(
        "The form belongs to another resident. Cancel this enrollment and open the right one."
    ),
}


LABELS: dict[str, Callable[[], str]] = {
    "full_name": lambda: _("Full name"),
    "dob": lambda: _("Date of birth"),
    "sex": lambda: _("Sex"),
    "old_id_number": lambda: _("Old ID card number (CMND)"),
    "nationality": lambda: _("Nationality"),
    "ethnicity": lambda: _("Ethnicity"),
    "religion": lambda: _("Religion"),
    "origin": lambda: _("Place of origin"),
    "residence": lambda: _("Permanent residence"),
    "residence.detail": lambda: _("Permanent residence: house, street"),
    "birth": lambda: _("Place of birth"),
    "birth.detail": lambda: _("Place of birth: detail"),
    "father_name": lambda: _("Father's full name"),
    "mother_name": lambda: _("Mother's full name"),
    "spouse_name": lambda: _("Spouse's full name"),
    "mark1": lambda: _("Identifying mark 1"),
    "mark2": lambda: _("Identifying mark 2"),
    "resident_list_ref": lambda: _("Resident list entry"),
    "form": lambda: _("The form"),
}
"""The form's fields as the officer reads them (labels, and the error summary's links)."""


def how_to_fix(field: str) -> str:
    return _HOW_TO_FIX[field]() if field in _HOW_TO_FIX else _("Check this field.")


_DOB_FULL = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_DOB_MONTH = re.compile(r"^(\d{1,2})[/.-](\d{4})$")
_DOB_YEAR = re.compile(r"^(\d{4})$")


def dob_to_iso(typed: str) -> str | None:
    """dd/mm/yyyy, mm/yyyy or yyyy as the record's partial ISO date; None if unreadable
    (the API checks that the date exists)."""
    text = typed.strip()
    if m := _DOB_FULL.match(text):
        return f"{m[3]}-{int(m[2]):02d}-{int(m[1]):02d}"
    if m := _DOB_MONTH.match(text):
        return f"{m[2]}-{int(m[1]):02d}"
    if _DOB_YEAR.match(text):
        return text
    return None


def dob_from_iso(value: str | None) -> str:
    parts = (value or "").split("-")
    return "/".join(reversed(parts)) if value else ""


def form_from_record(record: Mapping[str, Any] | None) -> dict[str, str]:
    """The form's fields from demographics (saved, or the resident list's proposal)."""
    out = dict.fromkeys(FORM_FIELDS, "")
    out["nationality"], out["religion"] = "VNM", "Không"
    if not record:
        return out
    for key, name in _MODEL_TO_FORM.items():
        value = record.get(key)
        if value is not None:
            out[name] = str(value)
    out["dob"] = dob_from_iso(record.get("date_of_birth"))
    marks = list(record.get("identifying_marks") or [])
    out["mark1"], out["mark2"] = [*marks, "", ""][:2]
    for place, key in _PLACE_FIELDS.items():
        address = record.get(key) or {}
        out[f"{place}.detail"] = address.get("detail") or ""
        for area in address.get("areas") or []:
            if area.get("scheme", "pre-2025") == "pre-2025":
                out[f"{place}.old.province"] = area.get("province_code") or ""
                out[f"{place}.old.district"] = area.get("district_code") or ""
                out[f"{place}.old.commune"] = area.get("commune_code") or ""
            else:
                out[f"{place}.new.province"] = area.get("province_code") or ""
                out[f"{place}.new.commune"] = area.get("commune_code") or ""
    return out


def form_from_request(data: Mapping[str, Any]) -> dict[str, str]:
    out = dict.fromkeys(FORM_FIELDS, "")
    for name in FORM_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            out[name] = value[:500]
    return out


async def _units(
    page: Page, scheme: str, province: str | None = None, district: str | None = None
) -> list[dict[str, str]]:
    try:
        answer = await page.api.get(
            "/divisions", scheme=scheme, province=province or None, district=district or None
        )
    except StationApiError as exc:
        if exc.code in ("division_not_found", "http_422"):
            return []
        raise
    return list(answer["items"])


async def place_picker(
    page: Page, place: str, form: dict[str, str], *, old_changed: bool = False
) -> dict[str, Any]:
    """One address's pickers: the lists for what is chosen so far (a choice that does not
    belong to its parent any more is dropped), the 2025 commune filled in from the
    pre-2025 one when it is empty or when the pre-2025 choice just changed."""
    old_p, old_d, old_c = (form[f"{place}.old.{k}"] for k in ("province", "district", "commune"))
    new_p, new_c = form[f"{place}.new.province"], form[f"{place}.new.commune"]
    if old_changed:
        new_p = new_c = ""  # the new structure follows the old one just chosen
    provinces = await _units(page, "pre-2025")
    if old_p not in {u["code"] for u in provinces}:
        old_p = ""
    districts = await _units(page, "pre-2025", old_p) if old_p else []
    if old_d not in {u["code"] for u in districts}:
        old_d = ""
    communes = await _units(page, "pre-2025", old_p, old_d) if old_d else []
    if old_c not in {u["code"] for u in communes}:
        old_c = ""
    if old_c and not new_p and not new_c:
        try:
            successor = await page.api.get(f"/divisions/successor/{old_c}")
            new_p, new_c = successor["province_code"], successor["commune_code"]
        except StationApiError:
            pass  # no known successor: the officer picks it
    new_provinces = await _units(page, "2025")
    if new_p not in {u["code"] for u in new_provinces}:
        new_p = ""
    new_communes = await _units(page, "2025", new_p) if new_p else []
    if new_c not in {u["code"] for u in new_communes}:
        new_c = ""
    form.update(
        {
            f"{place}.old.province": old_p,
            f"{place}.old.district": old_d,
            f"{place}.old.commune": old_c,
            f"{place}.new.province": new_p,
            f"{place}.new.commune": new_c,
        }
    )
    return {
        "place": place,
        "old": {"provinces": provinces, "districts": districts, "communes": communes},
        "new": {"provinces": new_provinces, "communes": new_communes},
    }


def _name(units: list[dict[str, str]], code: str) -> str | None:
    return next((u["name"] for u in units if u["code"] == code), None)


def _address(
    place: str, form: Mapping[str, str], picker: Mapping[str, Any], problems: dict[str, str]
) -> dict[str, Any] | None:
    """The record's Address from the form, or None when nothing of it was filled in."""
    old, new = picker["old"], picker["new"]
    areas: list[dict[str, Any]] = []
    old_codes = [form[f"{place}.old.{k}"] for k in ("province", "district", "commune")]
    new_codes = [form[f"{place}.new.{k}"] for k in ("province", "commune")]
    if all(old_codes):
        areas.append(
            {
                "scheme": "pre-2025",
                "province_code": old_codes[0],
                "district_code": old_codes[1],
                "commune_code": old_codes[2],
                "province_name": _name(old["provinces"], old_codes[0]),
                "district_name": _name(old["districts"], old_codes[1]),
                "commune_name": _name(old["communes"], old_codes[2]),
            }
        )
    elif any(old_codes):
        problems[place] = how_to_fix("place.partial")
    if all(new_codes):
        areas.append(
            {
                "scheme": "2025",
                "province_code": new_codes[0],
                "commune_code": new_codes[1],
                "province_name": _name(new["provinces"], new_codes[0]),
                "commune_name": _name(new["communes"], new_codes[1]),
            }
        )
    elif any(new_codes):
        problems[place] = how_to_fix("place.partial")
    detail = form[f"{place}.detail"].strip()
    if not areas and not detail and place == "birth":
        return None
    return {"detail": detail or None, "areas": areas}


def build_record(
    form: Mapping[str, str], pickers: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The API's demographics from the form, and what the form itself can tell is wrong
    (the API judges the rest)."""
    problems: dict[str, str] = {}
    record: dict[str, Any] = {}
    for key, name in _MODEL_TO_FORM.items():
        value = form[name].strip()
        if value or key in ("full_name", "sex", "ethnicity"):
            record[key] = value
    if key_value := form["nationality"].strip():
        record["nationality"] = key_value.upper()
    dob = dob_to_iso(form["dob"])
    record["date_of_birth"] = dob if dob is not None else form["dob"].strip()
    if dob is None:
        problems["dob"] = how_to_fix("dob")
    record["identifying_marks"] = [m.strip() for m in (form["mark1"], form["mark2"]) if m.strip()]
    for place, key in _PLACE_FIELDS.items():
        address = _address(place, form, pickers[place], problems)
        if address is not None:
            record[key] = address
    return record, problems


def field_of(path: str) -> str:
    """The form field an API validation error's path names."""
    parts = path.split(".")
    head = parts[0]
    if head in _MODEL_TO_FORM:
        return _MODEL_TO_FORM[head]
    if head == "identifying_marks":
        return "mark2" if len(parts) > 1 and parts[1] == "1" else "mark1"
    for place, key in _PLACE_FIELDS.items():
        if head == key:
            return f"{place}.detail" if "detail" in parts else place
    return "form"


def api_problems(details: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in details if isinstance(details, list) else []:
        if not isinstance(item, Mapping):
            continue
        field = field_of(str(item.get("field") or ""))
        if field in out:
            continue
        if field.endswith(".detail"):
            out[field] = how_to_fix("place.detail")
        elif field in PLACES:
            out[field] = how_to_fix("place")
        elif field == "form":
            out[field] = str(item.get("message") or "")
        else:
            out[field] = how_to_fix(field)
    return out


# --- helpers ------------------------------------------------------------------------------


async def get_case(page: Page, case_id: str) -> dict[str, Any]:
    case: dict[str, Any] = await page.api.get(f"/cases/{case_id}")
    return case


async def case_at_step(
    page: Page, case_id: str, step: str
) -> tuple[dict[str, Any], Response | None]:
    """The case, and a redirect to its current step when ``step`` is not reachable yet."""
    if page.api.token is None:
        return {}, page.to_login()
    case = await get_case(page, case_id)
    if not steps.reachable(case, step):
        return case, page.redirect(steps.step_url(case_id, steps.current_step(case)))
    return case, None


# --- opening a case -------------------------------------------------------------------------


@router.post("/cases")
async def open_case(
    page: PageDep,
    resident_ref: Annotated[str, Form(max_length=64)] = "",
    ticket: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    if page.api.token is None:
        return page.to_login()
    body = {"resident_ref": resident_ref.strip() or None, "ticket": ticket.strip() or None}
    try:
        case = await page.api.post("/cases", body)
    except StationApiError as exc:
        if exc.code not in ("not_eligible", "resident_not_found", "enrollment_paused"):
            raise
        return await _refused(page, exc, body["resident_ref"])
    return page.redirect(f"/cases/{case['id']}")


# Why enrollment is paused (station.blockers), each code said with its values.
_BLOCKERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "key_error": lambda v: _("The station cannot open its data key. Call the technician."),
    "identity_damaged": lambda v: _(
        "The station's identity is damaged. Call the technician to set it up again."
    ),
    "not_provisioned": lambda v: _(
        "The station is not set up yet. Call the technician to connect it to the registry."
    ),
    "never_synced": lambda v: _(
        "The station has never synced with the registry. Connect it to the network and sync once."
    ),
    "stale": lambda v: _(
        "The station's data is %(age)s h old (limit %(limit)s h): connect to the network or sync.",
        age=format_number(float(v.get("age_h") or 0)),
        limit=format_number(float(v.get("limit_h") or 0)),
    ),
    "disk_full": lambda v: _(
        "The station's disk is nearly full (%(free)s free, %(needed)s needed): send the "
        "outbox, or export it to a USB stick.",
        free=size(int(v.get("free_bytes") or 0)),
        needed=size(int(v.get("needed_bytes") or 0)),
    ),
}


def blocker_text(blocker: Mapping[str, Any]) -> str:
    """One reason enrollment is paused (an item of the API's ``blockers``), in the
    officer's language; a code this kiosk does not know yet keeps the API's English."""
    say = _BLOCKERS.get(str(blocker.get("code")))
    values = blocker.get("values")
    if say is None:
        return str(blocker.get("message") or blocker.get("code") or "")
    return say(values if isinstance(values, Mapping) else {})


def blocker_details(blockers: object) -> list[str]:
    """The technician's detail of each blocker that has one (a damaged key or identity)."""
    if not isinstance(blockers, list):
        return []
    out = []
    for blocker in blockers:
        values = blocker.get("values") if isinstance(blocker, Mapping) else None
        if isinstance(values, Mapping) and values.get("detail"):
            out.append(str(values["detail"]))
    return out


async def _refused(page: Page, failure: StationApiError, resident_ref: str | None) -> Response:
    reasons: list[str] = []
    messages = [errors.explain(failure)]
    technical = [failure.detail]
    if failure.code == "not_eligible" and isinstance(failure.details, list):
        reasons = [eligibility_text(str(code)) for code in failure.details]
        technical = []
    elif failure.code == "enrollment_paused" and isinstance(failure.details, list):
        # The reasons themselves are the message: the generic explanation names one cause
        # (not synced) that may not be this one.
        paused = [blocker_text(b) for b in failure.details if isinstance(b, Mapping)]
        if paused:
            messages, technical = paused, blocker_details(failure.details)
    other = None
    if failure.details and "open_case_here" in failure.details and resident_ref:
        cases = await page.api.get("/cases", state=["open"], limit=200)
        other = next((c for c in cases if c.get("resident_ref") == resident_ref), None)
    response = await page.render(
        "case/refused.html",
        status_code=409 if failure.status < 500 else failure.status,
        messages=messages,
        technical=technical,
        paused=failure.code == "enrollment_paused",
        reasons=reasons,
        open_case=other,
    )
    if page.is_htmx:  # shown as a page of its own, whatever the form meant to swap
        response.headers["hx-retarget"] = "#main"
        response.headers["hx-reswap"] = "innerHTML"
        response.headers["hx-push-url"] = "false"
    return response


@router.get("/cases/{case_id}")
async def resume(page: PageDep, case_id: str) -> Response:
    if page.api.token is None:
        return page.to_login()
    case = await get_case(page, case_id)
    return page.redirect(steps.step_url(case_id, steps.current_step(case)))


# --- demographics ---------------------------------------------------------------------------


async def _demographics_page(
    page: Page,
    case: dict[str, Any],
    form: dict[str, str],
    problems: dict[str, str],
    *,
    restored_at: str | None = None,
    status_code: int = 200,
) -> Response:
    pickers = {place: await place_picker(page, place, form) for place in PLACES}
    return await page.render(
        "case/demographics.html",
        status_code=status_code,
        case=case,
        trail=steps.trail(case, "demographics"),
        form=form,
        # Each rendering is a new form page: its autosaves and its save carry this token, so
        # that an autosave handled after the save is refused instead of coming back.
        form_token=secrets.token_urlsafe(16),
        pickers=pickers,
        problems=problems,
        restored_at=restored_at,
        labels={name: label() for name, label in LABELS.items()},
        ethnic_options=[{"code": c, "name": f"{n} ({c})"} for c, n in ETHNIC_GROUPS.items()],
        religions=RELIGIONS,
    )


@router.get("/cases/{case_id}/demographics")
async def demographics(page: PageDep, case_id: str) -> Response:
    case, away = await case_at_step(page, case_id, "demographics")
    if away is not None:
        return away
    saved = await page.api.get(f"/cases/{case_id}/demographics")
    base = form_from_record(saved if saved else await page.api.get(f"/cases/{case_id}/proposal"))
    if not saved and case.get("resident_ref") and not base["resident_list_ref"]:
        base["resident_list_ref"] = case["resident_ref"]
    draft = await page.api.get(f"/cases/{case_id}/demographics/draft")
    restored_at = None
    form = base
    if draft and isinstance(draft.get("fields"), dict):
        typed = {**base, **form_from_request(draft["fields"])}
        # Saving deletes the draft (and the API refuses a late autosave of the saved page),
        # so a draft is newer than what was saved; one that says the same is no news.
        if typed != base:
            form, restored_at = typed, draft.get("saved_at")
    return await _demographics_page(page, case, form, {}, restored_at=restored_at)


@router.post("/cases/{case_id}/demographics/draft")
async def demographics_draft(page: PageDep, case_id: str, request: Request) -> Response:
    posted = await request.form()
    form = form_from_request(posted)
    fields = {k: v for k, v in form.items() if v}
    body: dict[str, Any] = {"fields": fields}
    token = posted.get("form_token")
    if isinstance(token, str) and token:
        body["token"] = token
    try:
        draft = await page.api.put(f"/cases/{case_id}/demographics/draft", body)
    except StationApiError as exc:
        if exc.code == "draft_stale":  # the page was saved meanwhile: nothing to say
            return Response(status_code=204)
        raise
    return await page.render("case/_draft_state.html", saved_at=draft["saved_at"])


@router.get("/cases/{case_id}/place/{place}")
async def place(page: PageDep, case_id: str, place: str, request: Request) -> Response:
    """One address's pickers again, after a province or district was chosen."""
    if place not in PLACES:
        return Response(status_code=404)
    form = form_from_request(request.query_params)
    trigger = request.headers.get("hx-trigger-name") or ""
    picker = await place_picker(page, place, form, old_changed=trigger.startswith(f"{place}.old."))
    return await page.render(
        "case/_place.html",
        case={"id": case_id},
        form=form,
        picker=picker,
        problems={},
    )


@router.post("/cases/{case_id}/demographics")
async def save_demographics(page: PageDep, case_id: str, request: Request) -> Response:
    case, away = await case_at_step(page, case_id, "demographics")
    if away is not None:
        return away
    form = form_from_request(await request.form())
    pickers = {place: await place_picker(page, place, form) for place in PLACES}
    record, problems = build_record(form, pickers)
    token = (await request.form()).get("form_token")
    # Naming the form page makes the API refuse that page's autosaves handled after this.
    saved_page = {"form_token": token} if isinstance(token, str) and token else None
    try:
        await page.api.call("PUT", f"/cases/{case_id}/demographics", json=record, params=saved_page)
    except StationApiError as exc:
        if exc.code == "invalid_demographics":
            problems = {**api_problems(exc.details), **problems}
        elif exc.code == "not_eligible":
            problems["dob"] = eligibility_text("under_age")
        else:
            raise
        return await _demographics_page(page, case, form, problems, status_code=422)
    if problems:  # the API took it (e.g. a half-chosen 2025 area beside a full old one)
        return await _demographics_page(page, case, form, problems, status_code=422)
    return page.redirect(steps.step_url(case_id, "consent"))


# --- consent --------------------------------------------------------------------------------


@router.get("/cases/{case_id}/consent")
async def consent(page: PageDep, case_id: str) -> Response:
    case, away = await case_at_step(page, case_id, "consent")
    if away is not None:
        return away
    return await page.render("case/consent.html", case=case, trail=steps.trail(case, "consent"))


@router.post("/cases/{case_id}/consent")
async def give_consent(page: PageDep, case_id: str) -> Response:
    case = await page.api.post(f"/cases/{case_id}/consent")
    return page.redirect(steps.step_url(case_id, steps.current_step(case)))


# --- cancel ---------------------------------------------------------------------------------

CANCEL_REASONS: dict[str, Callable[[], str]] = {
    "consent_refused": lambda: _("The citizen refuses consent"),
    "citizen_left": lambda: _("The citizen left"),
    "wrong_citizen": lambda: _("Opened for the wrong citizen, or by mistake"),
    "other": lambda: _("Another reason (write it below)"),
}
_CANCEL_JOURNAL = {
    "consent_refused": "the citizen refused consent",
    "citizen_left": "the citizen left",
    "wrong_citizen": "opened for the wrong citizen or by mistake",
    "other": "other",
}


@router.get("/cases/{case_id}/cancel")
async def cancel_form(page: PageDep, case_id: str, reason: str = "", back: str = "") -> Response:
    if page.api.token is None:
        return page.to_login()
    case = await get_case(page, case_id)
    if case["state"] != "open":
        return page.redirect(steps.step_url(case_id, "done"))
    return await page.render(
        "case/cancel.html",
        case=case,
        trail=steps.trail(case, steps.current_step(case)),
        reasons=CANCEL_REASONS,
        chosen=reason if reason in CANCEL_REASONS else "",
        back=safe_next(back, f"/cases/{case_id}"),
        error=None,
    )


@router.post("/cases/{case_id}/cancel")
async def cancel(
    page: PageDep,
    case_id: str,
    reason: Annotated[str, Form(max_length=40)] = "",
    note: Annotated[str, Form(max_length=150)] = "",
    back: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    if reason not in CANCEL_REASONS or (reason == "other" and not note.strip()):
        case = await get_case(page, case_id)
        return await page.render(
            "case/cancel.html",
            status_code=422,
            case=case,
            trail=steps.trail(case, steps.current_step(case)),
            reasons=CANCEL_REASONS,
            chosen=reason if reason in CANCEL_REASONS else "",
            back=safe_next(back, f"/cases/{case_id}"),
            error=_(
                "Choose why the enrollment is cancelled (and write it down for “Another reason”)."
            ),
        )
    text = _CANCEL_JOURNAL[reason] + (f": {note.strip()}" if note.strip() else "")
    await page.api.post(f"/cases/{case_id}/cancel", {"reason": text[:200]})
    return page.redirect(steps.step_url(case_id, "done"))


# --- the supervisor's approval (a fragment other screens embed) ------------------------------


def approval_items(review: Mapping[str, Any]) -> list[dict[str, str]]:
    """The review's ``needs_approval`` as the approval panel lists them."""
    case = review.get("case") or {}
    return [
        {"code": str(i["code"]), "label": approval_label(i, case)}
        for i in review.get("needs_approval") or []
    ]


@router.post("/cases/{case_id}/approve")
async def approve(
    page: PageDep,
    case_id: str,
    supervisor_id: Annotated[str, Form(min_length=1, max_length=64)],
    secret: Annotated[str, Form(min_length=1, max_length=256)],
    items: Annotated[list[str] | None, Form()] = None,
    return_to: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    if not items:
        # Nothing ticked: said before the supervisor's finger is asked for (the API would
        # refuse an empty list as a malformed request).
        raise StationApiError(422, "nothing_ticked", "no item was ticked for approval")
    kind = "pin" if secret.isdigit() else "password"
    await page.api.post(
        f"/cases/{case_id}/approve",
        {
            "supervisor_id": supervisor_id.strip(),
            kind: secret,
            "items": items[:20],
            "timeout_s": 30,
        },
    )
    return page.redirect(safe_next(return_to, steps.step_url(case_id, "review")))


# --- code lists ------------------------------------------------------------------------------

RELIGIONS = (
    "Không",
    "Phật giáo",
    "Công giáo",
    "Tin lành",
    "Cao Đài",
    "Phật giáo Hòa Hảo",
    "Hồi giáo",
    "Tôn giáo Baha'i",
    "Tịnh độ Cư sĩ Phật hội Việt Nam",
    "Cơ đốc Phục lâm",
    "Phật giáo Tứ Ân Hiếu Nghĩa",
    "Minh Sư Đạo",
    "Minh Lý Đạo - Tam Tông Miếu",
    "Bà-la-môn",
    "Mặc môn",
    "Phật giáo Hiếu Nghĩa Tà Lơn",
    "Bửu Sơn Kỳ Hương",
)
"""The religions recognised in Viet Nam, as written on records (the field stays free text)."""
