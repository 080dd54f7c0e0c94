"""Cards to encode: the jobs waiting for a blank card, those done and the spoiled cards;
the encoding screen of one person's card (a blank card on the encoder, Encode, then the
result: the card's serial and its checks, or a spoiled card and what to do next)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import Response

from station.ui import errors
from station.ui.client import StationApiError
from station.ui.i18n import _
from station.ui.web import Page, PageDep

router = APIRouter()


def _next_card() -> str:
    return _(
        "Put a new blank card, printed for this person, on the encoder and press Encode again."
    )


# What the officer does after each refusal (the card untouched) or failure.
_CARD_ERRORS: dict[str, Callable[[], str]] = {
    "no_card": lambda: _(
        "No card was found on the encoder. Put a blank card on it and press Encode again."
    ),
    "no_reader": lambda: _(
        "The card encoder is not connected. Check its cable, press Retry on the Devices page, "
        "then try again."
    ),
    "card_used": lambda: _(
        "This card was already used. Take it off and put a new blank card on the encoder."
    ),
    "card_spoiled_before": lambda: _(
        "This card was spoiled before and can never be used. Put it in the spoiled-card tray "
        "and use a new blank card."
    ),
    "printed_mrz_unreadable": lambda: _(
        "The MRZ scanned off the card could not be read. Scan it again, or leave the field empty."
    ),
    "printed_mrz_mismatch": lambda: _(
        "The card's printed MRZ is not this person's. Nothing was written: take it off and use "
        "the card printed for this person."
    ),
    "wrong_card_type": lambda: _(
        "This is not a blank identity card. Take it off and use a blank card of the right type."
    ),
    "card_removed": lambda: _(
        "The card was taken off too early. Put it back only if the station asks; otherwise "
        "use a new blank card."
    ),
    "encoder_busy": lambda: _("The encoder is writing another card. Wait until it finishes."),
    "not_issued": lambda: _(
        "The registry has not sent this card's data yet. Wait: the station fetches it by "
        "itself, and this page updates."
    ),
    "already_encoded": lambda: _("This person's card is already encoded. Nothing to do."),
    "job_refused": lambda: _("The registry refused this card. Call the technician."),
    "chip_data_unusable": lambda: _(
        "The chip data on the station cannot be used; the station fetches it again. Try again "
        "in a minute; call the technician if it repeats."
    ),
    "no_such_job": lambda: _("There is no card to encode for this package. Go back to the list."),
}
errors.register(**_CARD_ERRORS)

_JOB_STATES: dict[str, tuple[Callable[[], str], str]] = {
    "waiting": (lambda: _("Waiting for the registry's chip data"), "warn"),
    "fetched": (lambda: _("Ready: waiting for a blank card"), "info"),
    "encoding": (lambda: _("Being written"), "info"),
    "encoded": (lambda: _("Encoded"), "ok"),
    "reported": (lambda: _("Encoded and reported"), "ok"),
    "refused": (lambda: _("Refused by the registry"), "bad"),
}


def job_view(job: Mapping[str, Any]) -> dict[str, Any]:
    label, tone = _JOB_STATES.get(str(job.get("state")), (lambda: str(job.get("state")), "info"))
    return {**job, "label": label(), "tone": tone}


async def _job(page: Page, package_id: str) -> dict[str, Any]:
    # poll=1: the encoding screen polls this while it waits.
    job: dict[str, Any] = await page.api.get(f"/cards/{package_id}", poll=1)
    return job_view(job)


def _guard(page: Page, status: Mapping[str, Any]) -> Response | None:
    if not status["provisioned"]:
        return page.redirect("/setup")
    if page.api.token is None:
        return page.to_login()
    return None


@router.get("/cards")
async def cards_page(page: PageDep) -> Response:
    blocked = _guard(page, await page.status())
    if blocked is not None:
        return blocked
    data = await page.api.get("/cards", limit=200)
    jobs = [job_view(j) for j in data.get("jobs") or []]
    groups = {
        "todo": [j for j in jobs if j["state"] in ("fetched", "encoding")],
        "waiting": [j for j in jobs if j["state"] == "waiting"],
        "done": [j for j in jobs if j["state"] in ("encoded", "reported")],
        "refused": [j for j in jobs if j["state"] == "refused"],
    }
    spoiled = sum(int(j.get("cards_spoiled") or 0) for j in jobs)
    return await page.render("cards/index.html", groups=groups, spoiled=spoiled)


@router.get("/cards/{package_id}")
async def encode_screen(page: PageDep, package_id: str) -> Response:
    blocked = _guard(page, await page.status())
    if blocked is not None:
        return blocked
    job = await _job(page, package_id)
    return await page.render("cards/encode.html", job=job, outcome=None)


@router.get("/cards/{package_id}/progress")
async def progress(page: PageDep, package_id: str) -> Response:
    """What the encoder is doing now (polled while Encode waits)."""
    job = await _job(page, package_id)
    return await page.render("cards/_progress.html", job=job)


@router.post("/cards/{package_id}/encode")
async def encode(
    page: PageDep,
    package_id: str,
    printed_mrz: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    mrz = printed_mrz.strip() or None
    try:
        result = await page.api.post(f"/cards/{package_id}/encode", {"printed_mrz": mrz})
    except StationApiError as exc:
        if exc.code in ("login_required", "session_expired"):
            raise
        outcome = _failure(exc)
    else:
        outcome = {"ok": True, "result": result, "mrz_printed": mrz is not None}
    job = await _job(page, package_id)
    return await page.render("cards/_encode.html", job=job, outcome=outcome)


def _failure(exc: StationApiError) -> dict[str, Any]:
    details = exc.details if isinstance(exc.details, dict) else {}
    spoiled = bool(details.get("spoiled"))
    serial = details.get("card_serial")
    known = _CARD_ERRORS.get(exc.code)
    todo = _next_card() if spoiled else (known() if known else errors.explain(exc))
    return {
        "ok": False,
        "spoiled": spoiled,
        "serial": serial,
        "todo": todo,
        "code": exc.code,
        "detail": exc.detail,
    }


@router.get("/cards/{package_id}/panel")
async def encode_panel(page: PageDep, package_id: str) -> Response:
    """The encoding screen's body (polled while the chip data is awaited)."""
    job = await _job(page, package_id)
    return await page.render("cards/_encode.html", job=job, outcome=None)
