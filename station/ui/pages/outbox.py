"""The outbox and sync at a glance: packages by state, the registry link (online or not,
next retry and why), the last sync and how long until enrollment pauses, and the ways to
move packages without a network (export to removable media, receipts back)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import Response

from station.ui import errors
from station.ui.i18n import _, format_number, ngettext
from station.ui.web import Page, PageDep

router = APIRouter()
# What the media forms post: ids from the station's own detection, never a path.
MediumId = Annotated[str, Form(min_length=1, max_length=64)]
ExportChoice = Annotated[str, Form(min_length=3, max_length=300)]

errors.register(
    sync_failed=lambda: _(
        "The sync did not reach the registry. Check the network cable or Wi-Fi, then press "
        "Sync now again; the station keeps trying by itself."
    ),
    media_error=lambda: _(
        "The USB stick could not be used, or what is on it was refused. Check that it is not "
        "full or write-protected and that it holds the folder the registry sent back, or try "
        "another stick."
    ),
    medium_not_detected=lambda: _(
        "That USB stick is no longer detected. Check that it is plugged in, wait a few "
        "seconds, press Refresh and choose it again."
    ),
    export_not_found=lambda: _(
        "That export folder is no longer on the USB stick. Press Refresh and choose again."
    ),
    outbox_error=lambda: _("The outbox refused this. Call the technician."),
)

# What each package state means to an officer, and its tone (ok / warn / bad / info).
_STATES: dict[str, tuple[Callable[[], str], str]] = {
    "queued": (lambda: _("Waiting to be sent"), "warn"),
    "sending": (lambda: _("Being sent"), "info"),
    "exported": (lambda: _("On removable media, waiting for its receipt"), "warn"),
    "refused": (lambda: _("Refused by the registry"), "bad"),
    "acknowledged": (lambda: _("Received by the registry"), "ok"),
    "received": (lambda: _("Received by the registry"), "ok"),
    "verified": (lambda: _("Checked by the registry"), "ok"),
    "quality_checked": (lambda: _("Quality checked"), "ok"),
    "deduplicating": (lambda: _("Checking for duplicates"), "ok"),
    "adjudication": (lambda: _("Being reviewed by an adjudicator"), "warn"),
    "issued": (lambda: _("Issued: a card to encode"), "ok"),
    "card_encoded": (lambda: _("Card encoded"), "ok"),
    "rejected": (lambda: _("Rejected: the citizen must come back"), "bad"),
}
_ORDER = ("queued", "sending", "exported", "refused", "acknowledged", *_STATES)


def state_label(state: str | None) -> str:
    if not state:
        return ""
    known = _STATES.get(state)
    return known[0]() if known else state


def state_tone(state: str | None) -> str:
    known = _STATES.get(state or "")
    return known[1] if known else "info"


def duration(seconds: float | None) -> str:
    """A span as people say it: "2 d 3 h", "5 h 20 min", "4 min", "less than a minute"."""
    if seconds is None:
        return ""
    minutes = int(max(0.0, seconds) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return _("%(d)d d %(h)d h", d=days, h=hours)
    if hours:
        return _("%(h)d h %(m)d min", h=hours, m=mins)
    if mins:
        return _("%(m)d min", m=mins)
    return _("less than a minute")


def size(n: int | None) -> str:
    if n is None:
        return ""
    if n >= 1024**3:
        return _("%(n)s GB", n=format_number(n / 1024**3, 1))
    return _("%(n)s MB", n=format_number(n / 1024**2))


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def package_problem(p: Mapping[str, Any]) -> str:
    """The package's trouble in words, with what to do; "" when there is none."""
    if p.get("file_problem"):
        return _("The package file is damaged or missing. Call the technician.")
    if p.get("state") == "refused":
        return _(
            "The registry refused it (%(code)s). A technician must look at it.",
            code=p.get("refused_code") or "?",
        )
    if p.get("registry_state") == "rejected" or p.get("state") == "rejected":
        return _("Rejected by the registry: %(why)s", why=p.get("reject_text") or "?")
    if p.get("last_error") and p.get("state") in ("queued", "sending", "exported"):
        return _("Not sent yet: the registry could not be reached. The station retries by itself.")
    return ""


def _sync_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """The last sync and how long until enrollment pauses (the staleness limit)."""
    sync = status.get("sync") or {}
    limit = sync.get("limit_s")
    age = sync.get("age_s")
    left = None if age is None or limit is None else float(limit) - float(age)
    return {
        "last_sync_at": sync.get("last_sync_at"),
        "last_error": sync.get("last_error"),
        "limit": duration(limit),
        "age": duration(age),
        "left": duration(left) if left is not None and left > 0 else None,
        "stale": bool(sync.get("stale")),
        # Less than a quarter of the limit left: say so before it happens.
        "soon": left is not None and limit is not None and 0 < left < float(limit) / 4,
    }


def _link_view(status: Mapping[str, Any], outbox: Mapping[str, Any]) -> dict[str, Any]:
    link = status.get("link") or {}
    back_off = outbox.get("link") or {}
    retry_at = _parse(back_off.get("retry_at"))
    now = datetime.now(UTC)
    if retry_at is not None and retry_at <= now:
        retry_at = None  # due already: the uploader tries at its next round
    return {
        "up": bool(link.get("up")),
        "last_contact_at": link.get("last_contact_at") or link.get("last_heartbeat_at"),
        "retry_at": back_off.get("retry_at") if retry_at and retry_at > now else None,
        "retry_in": duration((retry_at - now).total_seconds())
        if retry_at and retry_at > now
        else None,
        "why": back_off.get("last_error") or link.get("heartbeat_error"),
        "failures": back_off.get("failures") or 0,
    }


async def panel_context(page: Page) -> dict[str, Any]:
    status = await page.status()
    # poll=1: reading the outbox is not the officer's activity (the logout still comes).
    outbox = await page.api.get("/outbox", limit=50, poll=1)
    by_state: dict[str, int] = outbox.get("by_state") or {}
    counts = [
        {"state": s, "label": state_label(s), "tone": state_tone(s), "n": by_state[s]}
        for s in dict.fromkeys(_ORDER)
        if by_state.get(s)
    ]
    packages = [
        {
            **p,
            "label": state_label(p.get("registry_state") or p.get("state")),
            "tone": state_tone(p.get("registry_state") or p.get("state")),
            "problem": package_problem(p),
        }
        for p in outbox.get("packages") or []
    ]
    pending = int((outbox.get("counts") or {}).get("pending") or 0)
    return {
        "counts": counts,
        "packages": packages,
        "pending": pending,
        "pending_text": ngettext(
            "%(num)d package not yet received by the registry",
            "%(num)d packages not yet received by the registry",
            pending,
        ),
        "oldest": duration((outbox.get("counts") or {}).get("oldest_pending_s")),
        "sync": _sync_view(status),
        "link": _link_view(status, outbox),
        "file_problems": outbox.get("file_problems") or 0,
    }


def media_context(media: list[dict[str, Any]]) -> dict[str, Any]:
    """The media section: the detected sticks to export to, and the export folders on
    them that hold the registry's receipts (to read back), newest first."""
    exports = [
        {**e, "value": f"{m['id']}/{e['id']}", "medium": m.get("label") or m["path"]}
        for m in media
        for e in m.get("exports") or []
    ]
    return {
        "media": media,
        "with_receipts": [e for e in reversed(exports) if e.get("receipts")],
        "without_receipts": sum(1 for e in exports if not e.get("receipts")),
        "size": size,
    }


@router.get("/outbox")
async def outbox_page(page: PageDep) -> Response:
    status = await page.status()
    if not status["provisioned"]:
        return page.redirect("/setup")
    if page.api.token is None:
        return page.to_login()
    context = await panel_context(page)
    media = await page.api.get("/outbox/media", poll=1)
    return await page.render("outbox/index.html", **media_context(media), **context)


@router.get("/outbox/media")
async def outbox_media(page: PageDep) -> Response:
    """The media section again (Refresh, or after an export): a fresh detection."""
    if page.api.token is None:
        return page.to_login()
    media = await page.api.get("/outbox/media")
    return await page.render("outbox/_media.html", **media_context(media))


@router.get("/outbox/panel")
async def outbox_panel(page: PageDep) -> Response:
    if page.api.token is None:
        return page.to_login()
    return await page.render("outbox/_panel.html", **await panel_context(page))


def _done(response: Response) -> Response:
    # The panel and the media section refresh at once (they listen for this event) instead
    # of at their next poll. After settling, not on arrival: by then the request that
    # answered has released the media section's hx-sync lock, so its refresh is not dropped.
    response.headers["hx-trigger-after-settle"] = "outbox-changed"
    return response


@router.post("/outbox/sync")
async def sync_now(page: PageDep) -> Response:
    # The officer's button, like the rest of the screen (the technician's screen has its own).
    if page.api.token is None:
        return page.to_login()
    report = await page.api.post("/sync")
    text = _(
        "Synced with the registry in %(s)s s.",
        s=format_number(float(report.get("seconds") or 0), 1),
    )
    return _done(await page.render("outbox/_done.html", text=text, detail=None))


@router.post("/outbox/export")
async def export(page: PageDep, medium: MediumId) -> Response:
    result = await page.api.post("/outbox/export", {"medium": medium})
    n = len(result.get("packages") or [])
    if n == 0:
        text = _("Nothing to export: every package has reached the registry.")
    else:
        text = ngettext(
            "%(num)d package copied to the media (%(size)s). Take the USB stick to the registry.",
            "%(num)d packages copied to the media (%(size)s). Take the USB stick to the registry.",
            n,
            size=size(int(result.get("total_bytes") or 0)),
        )
    return _done(await page.render("outbox/_done.html", text=text, detail=result.get("folder")))


@router.post("/outbox/receipts")
async def receipts(page: PageDep, export: ExportChoice) -> Response:
    # "<medium id>/<station>/<export>", as the section offered it.
    medium, _slash, folder = export.partition("/")
    body = {"medium": medium, "export": folder}
    result = await page.api.post("/outbox/import-receipts", body)
    acknowledged = len(result.get("acknowledged") or [])
    refused = len(result.get("refused") or [])
    text = _(
        "Receipts read: %(ok)d received by the registry, %(bad)d refused, %(same)d already known.",
        ok=acknowledged,
        bad=refused,
        same=len(result.get("unchanged") or []),
    )
    return _done(await page.render("outbox/_done.html", text=text, detail=None))
