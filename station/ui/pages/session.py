"""Login (ID + PIN or password, then a finger on the scanner), logout, language."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from station.ui import i18n
from station.ui.client import StationApiError
from station.ui.web import LANG_COOKIE, SESSION_COOKIE, PageDep, safe_next

router = APIRouter()

# The session cookie outlives a browser restart (a kiosk whose browser crashed comes back
# where it was); the station's inactivity logout still ends the session itself.
SESSION_MAX_AGE = 12 * 3600


@router.get("/login")
async def login_form(page: PageDep, next: str = "/") -> Response:
    status = await page.status()
    if not status["provisioned"]:
        return page.redirect("/setup")
    return await page.render("session/login.html", next=safe_next(next), error=None)


@router.post("/login")
async def login_secret(
    page: PageDep,
    operator_id: Annotated[str, Form(min_length=1, max_length=64)],
    secret: Annotated[str, Form(min_length=1, max_length=256)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    # A PIN is digits only; anything else is a password (the API checks whichever is set).
    kind = "pin" if secret.isdigit() else "password"
    challenge = await page.api.post(
        "/login/secret", {"operator_id": operator_id.strip(), kind: secret}
    )
    return await page.render("session/finger.html", challenge=challenge, next=safe_next(next))


@router.post("/login/finger")
async def login_finger(
    page: PageDep,
    challenge: Annotated[str, Form(min_length=1, max_length=200)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    session = await page.api.post("/login/finger", {"challenge": challenge, "timeout_s": 30})
    response = page.redirect(safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        session["token"],
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(page: PageDep) -> Response:
    if page.api.token:
        with contextlib.suppress(StationApiError):  # already logged out: nothing to end
            await page.api.call("POST", "/logout")
    response = page.redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{code}")
async def switch_language(page: PageDep, code: str, next: str = "/") -> Response:
    response = page.redirect(safe_next(next))
    if code in i18n.LANGUAGES:
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 24 * 3600, samesite="strict", path="/")
    return response
