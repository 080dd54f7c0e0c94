"""One error shape for every endpoint: ``{"error": "<code>", "detail": "<what to do>"}``.

Codes are lower case with underscores. The package format's codes (``enrollment.errors``,
spelled with hyphens there) are answered in the same spelling as the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

from central.auth.errors import AccessError


def api_error(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> AccessError:
    return AccessError(status, code.replace("-", "_"), detail, headers)
