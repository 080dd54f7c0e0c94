"""Mounts the kiosk on the station service's ASGI app: static files, the page routes, and
the handlers that turn an API error, or a kiosk form that could not be read, into a page
(or an htmx message) saying what to do."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from station.ui import errors, pages
from station.ui.client import StationApi, StationApiError
from station.ui.web import STATIC, Page, _page

log = logging.getLogger(__name__)

# A page inside one enrollment: its error page leads back to the case, which opens at its
# current step (the case's own address is not "inside": it would only fail again).
_IN_CASE = re.compile(r"/cases/([0-9A-Za-z_-]{1,64})/.+")


def _way_back(path: str, code: str | None) -> str | None:
    """Where "Back to where you were" goes from a page that failed at ``path``; None: only
    the start screen makes sense."""
    found = _IN_CASE.fullmatch(path)
    if found is None or code == "case_not_found":
        return None
    return f"/cases/{found[1]}"


async def _show(page: Page, status: int, message: str, failure: StationApiError | None) -> Response:
    """The message in the page's message area (htmx: whatever the request meant to replace),
    or an error page."""
    if page.is_htmx:
        response = await page.render("_error.html", status, message=message, failure=failure)
        response.headers["hx-retarget"] = "#flash"
        response.headers["hx-reswap"] = "innerHTML"
        return response
    back = _way_back(page.request.url.path, failure.code if failure else None)
    return await page.render("error.html", status, message=message, failure=failure, back=back)


def install_ui(app: FastAPI) -> None:
    """Serve the kiosk from ``app`` (the station API app, which it calls in-process)."""
    app.state.ui_client = StationApi.client_for(app)
    # httpx logs every request's URL at INFO: the pages' own API calls carry residents'
    # names, dates of birth and ID numbers in their queries, which must not reach the
    # service log (nor the technician's log screen).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Every module in station.ui.pages contributes a ``router``: a screen or a group of
    # screens, each with its templates under templates/<module>/.
    for info in sorted(pkgutil.iter_modules(pages.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{pages.__name__}.{info.name}")
        app.include_router(module.router)

    @app.exception_handler(StationApiError)
    async def api_failure(request: Request, exc: StationApiError) -> Response:
        page = await _page(request)
        if exc.needs_login:
            return page.to_login()
        log.info("page %s: %s", request.url.path, exc)
        # htmx gets a 200: its message is swapped like any answer.
        return await _show(page, 200 if page.is_htmx else exc.status, errors.explain(exc), exc)

    @app.exception_handler(RequestValidationError)
    async def unreadable_form(request: Request, exc: RequestValidationError) -> Response:
        path = request.url.path
        if path == "/api" or path.startswith("/api/"):
            return await request_validation_exception_handler(request, exc)  # JSON, as ever
        problems = exc.errors()
        # Where and what kind only: the values may be a PIN or a resident's data.
        log.info(
            "page %s: form not valid: %s",
            path,
            [(".".join(map(str, p.get("loc") or ())), p.get("type")) for p in problems],
        )
        page = await _page(request)
        # 422 for htmx too: station.js swaps a 4xx answer retargeted to the message area.
        return await _show(page, 422, errors.form_problem(problems), None)


__all__ = ["install_ui"]
