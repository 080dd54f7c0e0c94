"""The station API as the kiosk pages reach it: in-process, over ASGI, with the officer's
session token. The pages see the same answers and errors as any other client, so the
workflow's rules live in one place (``station.api`` and below)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from starlette.applications import Starlette


def api_host(allowed_hosts: Sequence[str]) -> str:
    """The host name the pages' in-process calls give: one the service answers to (its
    host check sees these calls too), so a station configured under another name still
    serves its own pages. A plain name first; else one a pattern such as
    ``*.station.vn`` admits; "*" alone admits any."""
    names = [h for h in allowed_hosts if "*" not in h]
    if names:
        host = names[0]
        return f"[{host}]" if ":" in host else host  # an IPv6 address
    pattern = next((h for h in allowed_hosts if h.startswith("*.")), None)
    return "kiosk" + pattern[1:] if pattern else "localhost"


class StationApiError(Exception):
    """An error answer from the station API: ``{"error": code, "detail": ...}``."""

    def __init__(self, status: int, code: str, detail: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.details = details

    @property
    def needs_login(self) -> bool:
        return self.status == 401 and self.code in ("login_required", "session_expired")


class StationApi:
    """Calls on the station API for one page request."""

    def __init__(self, client: httpx.AsyncClient, token: str | None) -> None:
        self._client = client
        self.token = token

    @staticmethod
    def client_for(app: Starlette) -> httpx.AsyncClient:
        """The pages' client of ``app`` (the station API app, ``app.state.runtime`` set),
        under a host name its settings allow."""
        host = api_host(app.state.runtime.settings.service.allowed_hosts)
        # Long captures (a finger roll waits for the finger) end by their own timeouts in
        # the API (at most minutes); the transport gives up only well after those.
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{host}", timeout=900.0
        )

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    async def response(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """The raw answer (for images and PDFs); error answers raise :class:`StationApiError`."""
        response = await self._client.request(
            method, "/api" + path, json=json, params=params, headers=self._headers()
        )
        if response.status_code >= 400:
            raise _failure(response)
        return response

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for 204)."""
        response = await self.response(method, path, json=json, params=params)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return await self.call("GET", path, params=clean or None)

    async def post(self, path: str, json: Any = None) -> Any:
        return await self.call("POST", path, json=json if json is not None else {})

    async def put(self, path: str, json: Any) -> Any:
        return await self.call("PUT", path, json=json)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)


def _failure(response: httpx.Response) -> StationApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error") or "http_" + str(response.status_code))
    detail = body.get("detail")
    if not isinstance(detail, str):
        # FastAPI's own 422 (a body that failed validation) carries a list here.
        detail = str(detail) if detail is not None else response.reason_phrase
    return StationApiError(response.status_code, code, detail, body.get("details"))


__all__ = ["StationApi", "StationApiError", "api_host"]
