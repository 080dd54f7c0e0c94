"""An enrollment's last steps: the review (everything at a glance, what is missing, what a
supervisor must approve), submit, and the done page that follows the registry's answers
(a fragment polled until the case leaves the station's hands), with the slip to print."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from station.ui import steps
from station.ui.i18n import _
from station.ui.pages.capture import FACE_HINTS
from station.ui.pages.case import (
    LABELS,
    approval_items,
    case_at_step,
    dob_from_iso,
    eligibility_text,
    finger_exception,
    finger_in_sentence,
    finger_name,
)
from station.ui.web import Page, PageDep

router = APIRouter()

_MISSING_STEP = {"demographics": "demographics", "consent": "consent", "face": "face"}


def missing_items(review: Mapping[str, Any]) -> list[dict[str, str]]:
    """What is still missing, each with the step that fixes it."""
    out: list[dict[str, str]] = []
    fingers: list[str] = []
    case_id = review["case"]["id"]
    for item in review.get("missing") or []:
        code = str(item["code"])
        if code.startswith("finger:") and code[7:].isdigit():
            fingers.append(finger_in_sentence(int(code[7:])))
            continue
        label = {
            "demographics": _("The citizen's details are not saved"),
            "consent": _("The citizen's consent is not recorded"),
            "face": _("No portrait yet"),
        }.get(code, str(item.get("message") or code))
        out.append({"label": label, "url": steps.step_url(case_id, _MISSING_STEP.get(code, ""))})
    if fingers:
        out.append(
            {
                "label": _("Fingers not captured: %(names)s", names=", ".join(fingers)),
                "url": steps.step_url(case_id, "fingers"),
            }
        )
    return out


def finger_rows(case: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for position in steps.FINGER_POSITIONS:
        summary = (case.get("fingers") or {}).get(str(position)) or {}
        approved = f"finger:{position}" in (case.get("approvals") or {})
        if summary.get("exception"):
            state, text = "exception", finger_exception(summary["exception"])
        elif summary.get("captured"):
            low = bool(summary.get("low_quality"))
            state = "low" if low else "ok"
            text = _("quality %(q)s", q=summary.get("quality"))
        else:
            state, text = "missing", _("not captured")
        rows.append(
            {
                "position": position,
                "name": finger_name(position),
                "state": state,
                "text": text,
                "attempts": summary.get("attempts") or 0,
                "approved": approved,
            }
        )
    return rows


def address_text(address: Mapping[str, Any] | None) -> str:
    """One line: detail, commune, district, province (the pre-2025 names first)."""
    if not address:
        return ""
    areas = sorted(address.get("areas") or [], key=lambda a: a.get("scheme") != "pre-2025")
    area = areas[0] if areas else {}
    parts = [address.get("detail"), area.get("commune_name"), area.get("district_name"),
             area.get("province_name")]  # fmt: skip
    return ", ".join(str(p) for p in parts if p)


async def _review_context(page: Page, case_id: str) -> dict[str, Any]:
    review: dict[str, Any] = await page.api.get(f"/cases/{case_id}/review")
    case = review["case"]
    demographics = await page.api.get(f"/cases/{case_id}/demographics")
    return {
        "case": case,
        "review": review,
        "demographics": demographics,
        "person": None
        if not demographics
        else {
            "dob": dob_from_iso(demographics.get("date_of_birth")),
            "residence": address_text(demographics.get("permanent_residence")),
            "origin": address_text(demographics.get("place_of_origin")),
        },
        "labels": {name: label() for name, label in LABELS.items()},
        "missing": missing_items(review),
        "approvals": approval_items(review),
        "eligibility": [eligibility_text(str(i["code"])) for i in review.get("eligibility") or []],
        "fingers": finger_rows(case),
        "hand_warnings": [
            w.get(page.lang) or w.get("en") or "" for w in review.get("hand_warnings") or []
        ],
    }


@router.get("/cases/{case_id}/review")
async def review(page: PageDep, case_id: str) -> Response:
    _, away = await case_at_step(page, case_id, "review")
    if away is not None:
        return away
    context = await _review_context(page, case_id)
    return await page.render(
        "review/review.html",
        trail=steps.trail(context["case"], "review"),
        case_id=case_id,
        return_to=steps.step_url(case_id, "review"),
        **context,
    )


@router.post("/cases/{case_id}/submit")
async def submit(page: PageDep, case_id: str) -> Response:
    await page.api.post(f"/cases/{case_id}/submit")
    return page.redirect(steps.step_url(case_id, "done"))


@router.get("/cases/{case_id}/done")
async def done(page: PageDep, case_id: str) -> Response:
    case, away = await case_at_step(page, case_id, "done")
    view = _progress(case) if case else {}
    # A case the registry sent back is open again at a capture step; its done page says
    # what the registry asks (the page that showed the answer reloads into this).
    recapture = view.get("stage") == "recapture"
    if away is not None and not recapture:
        return away
    # The step bar shows where the case is now: the reopened steps are not finished.
    here = steps.current_step(case) if recapture else "done"
    return await page.render("review/done.html", case=case, trail=steps.trail(case, here), **view)


@router.get("/cases/{case_id}/progress")
async def progress(page: PageDep, case_id: str) -> Response:
    """The registry's answer so far (polled by the done page until it is final; a read
    that is not the officer's activity)."""
    case: dict[str, Any] = await page.api.get(f"/cases/{case_id}", poll=1)
    view = _progress(case)
    if view["stage"] == "recapture":
        # Not just this box: the title, the steps and what to do all change.
        return page.redirect(steps.step_url(case_id, "done"))
    return await page.render("review/_progress.html", case=case, **view)


_FINAL = ("card_encoded", "rejected", "cancelled")


def _progress(case: Mapping[str, Any]) -> dict[str, Any]:
    """Where the case is, as the done page says it: a state name for the template, and
    whether polling goes on."""
    state, registry = case["state"], case.get("registry_state")
    if state == "open" and case.get("recapture_of"):
        stage = "recapture"
    elif state in ("packaging", "queued"):
        stage = "queued"
    elif state == "acknowledged":
        stage = "adjudication" if registry == "adjudication" else "received"
    else:
        stage = state  # issued, card_encoded, rejected, cancelled
    return {
        "stage": stage,
        "polling": stage not in _FINAL and stage != "recapture",
        "recapture": [recapture_item(r) for r in case.get("recapture") or []],
        "recapture_url": steps.step_url(case["id"], steps.current_step(case)),
        "short_package": (case.get("package_id") or case.get("recapture_of") or "")[:8],
    }


# Why the registry sends a capture back (central.pipeline.quality.Reason codes; a face's
# criteria come as the capture's own hint keys).
_RECAPTURE_WHY: dict[str, Callable[[], str]] = {
    "low-quality": lambda: _("the print is not clear enough for the registry's checks"),
    "too-few-fingers": lambda: _("too few fingers carry a print for the duplicate check"),
    "no-face": lambda: _("the package carried no portrait"),
    "no-face-found": lambda: _("no face was found in the portrait"),
}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def recapture_item(reason: Mapping[str, Any]) -> dict[str, str]:
    """One thing the registry asks to capture again: its name as a label and inside a
    sentence, and why (in words; the registry's own English text for a code not known)."""
    what, position, code = reason.get("what"), reason.get("position"), str(reason.get("code"))
    if what == "finger" and isinstance(position, int) and position in steps.FINGER_POSITIONS:
        name, in_sentence = finger_name(position), finger_in_sentence(position)
    elif what == "face":
        name, in_sentence = _("Portrait"), _("the portrait")
    else:
        name, in_sentence = _("Fingerprints"), _("the fingerprints")
    if code in _RECAPTURE_WHY:
        why = _RECAPTURE_WHY[code]()
    elif what == "face" and code in FACE_HINTS:
        why = _lower_first(FACE_HINTS[code]())
    else:
        why = str(reason.get("text") or code)
    return {"name": name, "in_sentence": in_sentence, "why": why}


@router.get("/cases/{case_id}/slip.pdf")
async def slip(page: PageDep, case_id: str) -> Response:
    path = f"/cases/{case_id}/slip.pdf"
    answer = await page.api.response("GET", path, params={"lang": page.lang})
    return Response(
        answer.content,
        media_type="application/pdf",
        headers={
            "cache-control": "no-store",
            "content-disposition": f'inline; filename="slip-{case_id[:8]}.pdf"',
        },
    )
