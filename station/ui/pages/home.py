"""The officer's start screen: enrollments in progress (each resumes at its step), the
day's queue at a glance, and the way into a new enrollment."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

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
    return await page.render("home/index.html", cases=cases)
