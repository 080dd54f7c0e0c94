"""Small pieces the pages poll: the link indicator in the header."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from station.ui.web import PageDep

router = APIRouter()


@router.get("/partials/link")
async def link(page: PageDep) -> Response:
    # Status only, never the session: polling must not count as the officer's activity
    # (the inactivity logout would never come).
    return await page.render("_link.html", station=await page.status())
