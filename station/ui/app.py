"""Mounts the kiosk on the station service's ASGI app: static files, the page routes, and
one handler that turns an API error into a page (or an htmx fragment) saying what to do."""

from __future__ import annotations

import importlib
import logging
import pkgutil

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from station.ui import errors, pages
from station.ui.client import StationApi, StationApiError
from station.ui.web import STATIC, _page

log = logging.getLogger(__name__)


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
        message = errors.explain(exc)
        if page.is_htmx:
            # Shown in the page's message area, whatever the request meant to replace.
            response = await page.render("_error.html", message=message, failure=exc)
            response.headers["hx-retarget"] = "#flash"
            response.headers["hx-reswap"] = "innerHTML"
            return response
        return await page.render("error.html", status_code=exc.status, message=message, failure=exc)


__all__ = ["install_ui"]
