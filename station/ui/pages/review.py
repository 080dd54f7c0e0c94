"""An enrollment's last steps: the review (everything at a glance, what is missing, what a
supervisor must approve), submit, and the done page that follows the registry's answers
(a fragment polled until the case leaves the station's hands), with the slip to print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from station.ui import steps
from station.ui.i18n import _
from station.ui.pages.case import (
    LABELS,
    approval_items,
    case_at_step,
    dob_from_iso,
    eligibility_text,
    finger_exception,
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
            fingers.append(finger_name(int(code[7:])))
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
    if away is not None:
        return away
    return await page.render(
        "review/done.html", case=case, trail=steps.trail(case, "done"), **_progress(case)
    )


@router.get("/cases/{case_id}/progress")
async def progress(page: PageDep, case_id: str) -> Response:
    """The registry's answer so far (polled by the done page until it is final; a read
    that is not the officer's activity)."""
    case: dict[str, Any] = await page.api.get(f"/cases/{case_id}", poll=1)
    return await page.render("review/_progress.html", case=case, **_progress(case))


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
    recapture = []
    for reason in case.get("recapture") or []:
        if reason.get("what") == "finger" and isinstance(reason.get("position"), int):
            recapture.append(finger_name(int(reason["position"])))
        elif reason.get("what") == "face":
            recapture.append(_("the portrait"))
    return {
        "stage": stage,
        "polling": stage not in _FINAL and stage != "recapture",
        "recapture": recapture,
        "short_package": (case.get("package_id") or "")[:8],
    }


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
