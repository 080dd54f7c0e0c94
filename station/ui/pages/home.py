"""The officer's start screen: enrollments in progress (each resumes at its step), the
day's queue at a glance, the way into a new enrollment, and why enrollment is paused when
it is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from station.ui import steps
from station.ui.pages.case import blocker_text
from station.ui.pages.queue import counter_of, queue_view
from station.ui.web import PageDep

router = APIRouter()


@router.get("/")
async def home(page: PageDep) -> Response:
    status = await page.status()
    if not status["provisioned"]:
        return page.redirect("/setup")
    if page.api.token is None:
        return page.to_login()
    cases = await page.api.get("/cases", state=["open"], limit=50)
    queue = queue_view(await page.api.get("/queue"), counter_of(page.request))
    # The queue knows the names the citizens gave at the counter; a case only its ticket.
    names = {t["case_id"]: t for t in queue.elsewhere + ([queue.mine] if queue.mine else [])}
    me = await page.me() or {}
    rows: list[dict[str, Any]] = []
    for case in sorted(cases, key=lambda c: c["started_at"], reverse=True):
        step = steps.current_step(case)
        ticket = names.get(case["id"])
        rows.append(
            {
                "id": case["id"],
                "step": steps.label(step),
                "started_at": case["started_at"],
                "ticket": case.get("ticket"),
                "name": ticket["name"] if ticket else None,
                "mine": case.get("operator_id") == me.get("operator_id"),
            }
        )
    # Why no enrollment may start now, said before the officer calls someone in.
    paused = [blocker_text(b) for b in status.get("blockers") or [] if isinstance(b, dict)]
    return await page.render("home/index.html", cases=rows, q=queue, paused=paused)
