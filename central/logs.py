"""Structured logs: one JSON object per line on stderr, with the request's id on every line.

    {"ts": "2021-03-15T03:00:00.123Z", "level": "INFO", "logger": "central.ingest",
     "msg": "package stored", "request_id": "3f9c...", "package_id": "0190...",
     "station_id": "HN-BD-001", "duration_ms": 41.7}

Fields beyond ts/level/logger/msg come from ``extra=`` (``package_id``, ``station_id``,
``job``, ``stage``, ``duration_ms``...), so log processors index them without parsing text.

Never log secrets or personal data: no headers, no tokens, no names, personal numbers,
dates of birth or addresses; identify things by package id, station id, job id. As a net
under that rule, extra fields whose names say secret or personal (authorization, password,
token, full_name, personal_number...) are written as "[redacted]", and bearer tokens in
message text are masked. The access line of each request carries the route template
(``/v1/packages/{package_id}``), never the query string.
"""

from __future__ import annotations

import json as jsonlib
import logging
import re
import secrets
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

REQUEST_ID_HEADER = "x-request-id"
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_HANDLER_MARK = "_central_logs_handler"

# LogRecord's own attributes: everything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
SENSITIVE_FRAGMENTS = (
    "authorization",
    "password",
    "passwd",
    "secret",
    "token",
    "cookie",
    "api_key",
    "private_key",
)
# Exact names (fragments like "pin" would catch "mapping"): personal data and short secrets.
PERSONAL_FIELDS = frozenset(
    {
        "name",
        "full_name",
        "person_name",
        "personal_number",
        "id_number",
        "old_id",
        "date_of_birth",
        "dob",
        "address",
        "phone",
        "email",
        "pin",
    }
)
REDACTED = "[redacted]"


def request_id() -> str | None:
    """The id of the request this code runs for, if any."""
    return _request_id.get()


def _sensitive(key: str) -> bool:
    lowered = key.lower()
    return lowered in PERSONAL_FIELDS or any(f in lowered for f in SENSITIVE_FRAGMENTS)


def redact_text(text: str) -> str:
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (no newlines inside: tracebacks go in ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        current = _request_id.get()
        if current is not None:
            out["request_id"] = current
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS or key.startswith("_"):
                continue
            out[key] = REDACTED if _sensitive(key) else value
        if record.exc_info:
            out["exc"] = redact_text("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            out["exc"] = redact_text(record.exc_text)
        return jsonlib.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a developer's terminal, same redaction as JSON."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={REDACTED if _sensitive(k) else v}"
            for k, v in record.__dict__.items()
            if k not in _RECORD_FIELDS and not k.startswith("_")
        )
        current = _request_id.get()
        parts = [
            rfc3339(record.created),
            f"{record.levelname:<7}",
            record.name,
            redact_text(record.getMessage()),
        ]
        if current:
            parts.append(f"request_id={current}")
        if extras:
            parts.append(extras)
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + redact_text("".join(traceback.format_exception(*record.exc_info)))
        return line


def configure_logging(
    level: str | int = "INFO", json: bool = True, stream: TextIO | None = None
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) as JSON lines (or text).

    Replaces a handler this function installed before (calling it twice is safe) and
    leaves other handlers alone. Uvicorn's loggers are routed through the same handler;
    its access log is switched off because :class:`RequestIdMiddleware` writes a better
    one (with the request id, without the query string). Returns the handler.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    return handler


# --- request ids (ASGI middleware) ------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIdMiddleware:
    """Give each HTTP request an id: the caller's ``X-Request-ID`` when it is a sane token
    (a proxy's or the station's, so one id follows the request across systems), else a
    new random one. The id is on every log record written while the request runs
    (contextvars), echoed in the response's ``X-Request-ID``, and on one access line per
    request (method, route template, status, duration_ms).

    ``app.add_middleware(RequestIdMiddleware)``. Pure ASGI (not BaseHTTPMiddleware), so
    streamed responses and the context variable work unchanged.
    """

    def __init__(self, app: ASGIApp, logger_name: str = "central.access") -> None:
        self.app = app
        self.log = logging.getLogger(logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (
                value.decode("latin-1")
                for key, value in scope.get("headers", [])
                if key.lower() == REQUEST_ID_HEADER.encode()
            ),
            None,
        )
        rid = given if given and _VALID_REQUEST_ID.match(given) else secrets.token_hex(16)
        token = _request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "(unmatched)"
            self.log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "route": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            _request_id.reset(token)
