"""Device health: scanner, camera, card encoder (and the status lights), each ok or with
what its problem means and what to do; the disk; "Retry" after a replug."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from station.ui import errors
from station.ui.client import StationApi
from station.ui.i18n import _
from station.ui.pages.outbox import size
from station.ui.web import Page, PageDep

router = APIRouter()

TECH_COOKIE = "station_technician"

errors.register(
    technician_required=lambda: _("Enter the technician PIN first (Technician screen)."),
)

_NAMES: dict[str, Callable[[], str]] = {
    "fingerprint": lambda: _("Fingerprint scanner"),
    "camera": lambda: _("Camera"),
    "card_encoder": lambda: _("Card encoder"),
    "gpio": lambda: _("Status lights and buttons"),
}
# The officer's devices first; the lights matter least.
_ORDER = ("fingerprint", "camera", "card_encoder", "gpio")


def device_view(cell: Mapping[str, Any]) -> dict[str, Any]:
    """One device as the officer reads it: name, ok or not, what it means, what to do."""
    name = str(cell.get("name"))
    kind = str(cell.get("kind") or name)
    label = _NAMES.get(kind, _NAMES.get(name, lambda: name))()
    if cell.get("ok"):
        meaning, todo, tone = _("Working."), "", "ok"
    elif not cell.get("present"):
        tone = "bad"
        meaning = _("Not connected, or it does not answer.")
        todo = _(
            "Check its cable. Unplug it, wait 5 seconds, plug it back in, then press Retry. "
            "If it still fails, call the technician."
        )
    else:
        tone = "warn"
        meaning = _("Connected, but its last operation failed.")
        todo = _(
            "Try the operation again. If it fails again, unplug and replug it, press Retry, "
            "and call the technician if it keeps happening."
        )
    at = cell.get("last_error_at")
    return {
        **cell,
        "since": datetime.fromtimestamp(float(at), UTC).isoformat() if at else None,
        "label": label,
        "meaning": meaning,
        "todo": todo,
        "tone": tone,
        "order": _ORDER.index(kind) if kind in _ORDER else len(_ORDER),
    }


def disk_view(status: Mapping[str, Any]) -> dict[str, Any]:
    disk = status.get("disk") or {}
    free = int(disk.get("free_bytes") or 0)
    total = int(disk.get("total_bytes") or 0) or 1
    share = free / total
    low = share < 0.10 or free < 2 * 1024**3
    return {
        "free": size(free),
        "total": size(total),
        "percent": round(share * 100),
        "tone": "bad" if free < 1024**3 else ("warn" if low else "ok"),
        "low": low,
    }


async def _context(page: Page) -> dict[str, Any]:
    cells = await page.api.get("/devices")
    devices = sorted((device_view(c) for c in cells), key=lambda d: d["order"])
    status = await page.status()
    return {
        "devices": devices,
        "problems": sum(1 for d in devices if d["tone"] != "ok"),
        "disk": disk_view(status),
    }


@router.get("/devices")
async def devices_page(page: PageDep) -> Response:
    # No login needed to look: with the scanner broken nobody can log in with a finger.
    return await page.render("devices/index.html", **await _context(page))


@router.get("/devices/panel")
async def devices_panel(page: PageDep) -> Response:
    return await page.render("devices/_panel.html", **await _context(page))


@router.post("/devices/retry")
async def retry(page: PageDep) -> Response:
    """Retry as the officer logged in, else as the technician; else log in first."""
    technician = page.request.cookies.get(TECH_COOKIE)
    if page.api.token is not None:
        await page.api.post("/devices/retry")
    elif technician:
        client = page.request.app.state.ui_client
        await StationApi(client, technician).post("/technician/devices/retry")
    else:
        return page.to_login()
    response = await page.render("devices/_panel.html", **await _context(page), retried=True)
    return response
