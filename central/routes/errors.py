"""One error shape for every endpoint: ``{"error": "<code>", "detail": "<what to do>"}``.

Codes are lower case with underscores. The package format's codes (``enrollment.errors``,
spelled with hyphens there) are answered in the same spelling as the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from central.auth.errors import AccessError

log = logging.getLogger(__name__)


def api_error(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> AccessError:
    return AccessError(status, code.replace("-", "_"), detail, headers)


async def database_refused_value(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses (PostgreSQL: a NUL character in text, a number out of
    the column's range) came from the request: a 422, not a 500. Request models bound what
    they can; this covers strings that reach a query from paths, queries and forms."""
    assert isinstance(exc, DataError)
    log.warning(
        "database refused a request's value",
        extra={"path": request.url.path, "reason": str(exc.orig).splitlines()[0]},
    )
    return JSONResponse(
        {
            "error": "invalid_value",
            "detail": "a value in the request cannot be stored or searched for (a NUL "
            "character, or a number out of range): correct it and send again",
        },
        status_code=422,
    )


JSON_LIMIT = 64 * 1024
"""Largest JSON body the people's endpoints read (a CSR, a decision, an office): refused
with 413 before it is parsed."""
