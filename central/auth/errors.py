"""Refusals of access, rendered as ``{"error": "<code>", "detail": "<what to do>"}``."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse


class AccessError(HTTPException):
    """An HTTP refusal with a stable machine-readable ``error`` code and advice.

    Without :func:`access_error_handler` installed FastAPI still answers with the status
    and ``{"detail": ...}``; with it, with ``{"error": ..., "detail": ...}``.
    """

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail, dict(headers) if headers else None)
        self.error = error


async def access_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AccessError)
    return JSONResponse(
        {"error": exc.error, "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )
