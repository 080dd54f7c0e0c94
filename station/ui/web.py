"""Page plumbing shared by every screen: the template environment, the officer's session
cookie, the language, rendering, redirects that work for plain and htmx requests, and the
translation of API errors into what the officer should do next."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from station.ui import i18n
from station.ui.client import StationApi, StationApiError

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SESSION_COOKIE = "station_session"
LANG_COOKIE = "station_lang"

# Content-Security-Policy of every page: nothing inline, nothing from elsewhere (htmx is
# configured not to inject styles or evaluate code; see base.html).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # newstyle: _("text %(name)s", name=x) escapes values and fails on a missing one.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext, i18n.ngettext, newstyle=True
    )
    env.filters["date"] = i18n.format_date
    env.filters["datetime"] = i18n.format_datetime
    return env


ENV = _environment()


def asset_version() -> str:
    """Changes when a static file changes (cache busting on the kiosk's browser)."""
    newest = max((p.stat().st_mtime_ns for p in STATIC.rglob("*") if p.is_file()), default=0)
    return format(newest, "x")[-8:]


@dataclass
class Page:
    """What one page request has: the request, the API with the officer's token, the
    language."""

    request: Request
    api: StationApi
    lang: str
    _status: dict[str, Any] | None = None
    _me: dict[str, Any] | None = None

    @property
    def is_htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"

    async def status(self) -> dict[str, Any]:
        """The station's status (once per request: the header and the page share it)."""
        if self._status is None:
            self._status = await self.api.get("/status")
        return self._status

    def forget_status(self) -> None:
        """The station changed under this request (provisioned, synced): read it again."""
        self._status = None

    async def me(self) -> dict[str, Any] | None:
        """The logged-in officer, or None."""
        if self.api.token is None:
            return None
        if self._me is None:
            try:
                self._me = await self.api.get("/session")
            except StationApiError as exc:
                if not exc.needs_login:
                    raise
                return None
        return self._me

    async def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """A whole page (with the header's station status and officer), or a fragment
        (templates whose name starts with ``_`` or contains ``/_``: no header)."""
        name = template.rsplit("/", 1)[-1]
        chrome: dict[str, Any] = {}
        if not name.startswith("_"):
            chrome = {"station": await self.status(), "me": await self.me()}
        html = ENV.get_template(template).render(
            lang=self.lang,
            request=self.request,
            path=self.request.url.path,
            here=_here(self.request),
            asset_version=asset_version(),
            **chrome,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        response.headers["content-security-policy"] = CSP
        response.headers["cache-control"] = "no-store"
        return response

    def redirect(self, url: str) -> Response:
        """Go to ``url``: an HX-Redirect for htmx requests, a 303 otherwise."""
        if self.is_htmx:
            return Response(status_code=204, headers={"hx-redirect": url})
        return RedirectResponse(url, status_code=303)

    def to_login(self) -> Response:
        return self.redirect("/login?next=" + quote(_here(self.request), safe="/"))


def _here(request: Request) -> str:
    """The page the officer is on (for htmx requests: the page that sent them)."""
    current = request.headers.get("hx-current-url")
    if current:
        parts = urlsplit(current)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to go to after login (never another site)."""
    # Browsers read "\\" as "/" ("/\\evil.example" is another site); control characters
    # would break the header they end up in.
    if not target or not _LOCAL_PATH.fullmatch(target) or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


_LOCAL_PATH = re.compile(r"/[A-Za-z0-9\-._~/?=&%+]*")


def language_of(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, i18n.DEFAULT_LANGUAGE)
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT_LANGUAGE


async def _page(request: Request) -> Page:
    # async: FastAPI runs a plain function dependency in a worker thread, and the language
    # set there (a context variable) would not reach the page's own code.
    lang = language_of(request)
    i18n.use(lang)
    client: httpx.AsyncClient = request.app.state.ui_client
    return Page(request, StationApi(client, request.cookies.get(SESSION_COOKIE)), lang)


PageDep = Annotated[Page, Depends(_page)]


__all__ = [
    "CSP",
    "ENV",
    "LANG_COOKIE",
    "SESSION_COOKIE",
    "STATIC",
    "Page",
    "PageDep",
    "StationApiError",
    "language_of",
    "safe_next",
]
