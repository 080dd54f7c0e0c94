"""The reporting API: ``/v1/reports/...`` as JSON, or CSV for spreadsheets.

Every report answers ``GET /v1/reports/<name>`` with JSON and ``GET /v1/reports/<name>.csv``
(or ``?format=csv``) with a CSV download: UTF-8 with a byte-order mark, because Excel
otherwise reads the file as the local code page and garbles Vietnamese names. CSV times
are local (+07:00) ISO 8601, JSON times UTC.

The router is built by :func:`reports_router`, given the dependency that checks the
caller's role and the one that opens a database session, so the app decides both.
"""

# No "from __future__ import annotations": FastAPI must see the route signatures' real
# types, including the session dependency built inside reports_router.
import csv
import dataclasses
import enum
import io
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from central import reporting
from central.reporting import LOCAL_TZ, Area, Level

MAX_DAYS = 366  # a report over more days than this is a data export, not a report
DEFAULT_DAYS = 30
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
Format = Literal["json", "csv"]


def registry_session(request: Request) -> Iterator[Session]:
    """A read-only session on the app's engine (``request.app.state.registry.engine``).

    Deferred transactions on SQLite: a report must not take the write lock that ingest
    and the workers need (the engine's default is BEGIN IMMEDIATE)."""
    engine = request.app.state.registry.engine.execution_options(sqlite_begin="DEFERRED")
    with Session(engine) as session:
        try:
            yield session
        finally:
            session.rollback()  # nothing to keep: end the read transaction promptly


# --- output ------------------------------------------------------------------------------


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(LOCAL_TZ).isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def csv_response(rows: Sequence[Any], columns: Sequence[str], filename: str) -> Response:
    """Dataclass rows as a CSV download (header row first, UTF-8 with BOM, CRLF lines)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        values = dataclasses.asdict(row)
        writer.writerow([_csv_value(values[c]) for c in columns])
    body = "\ufeff" + buffer.getvalue()
    return Response(
        body.encode("utf-8"),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _wants_csv(request: Request, fmt: Format) -> bool:
    return fmt == "csv" or request.url.path.endswith(".csv")


def _respond(
    request: Request,
    fmt: Format,
    name: str,
    rows: Sequence[Any],
    row_type: type,
    params: dict[str, Any],
) -> Response:
    if _wants_csv(request, fmt):
        suffix = "_".join(str(v) for v in params.values() if v is not None)
        filename = f"{name}{'_' + suffix if suffix else ''}.csv"
        columns = [f.name for f in dataclasses.fields(row_type)]
        return csv_response(rows, columns, filename)
    payload = {
        "report": name,
        "generated_at": datetime.now(UTC),
        "params": params,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    return JSONResponse(jsonable_encoder(payload))


def _bad_request(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def _area(level: Level | None, code: str | None) -> Area | None:
    if level is None and code is None:
        return None
    if level is None or code is None:
        raise _bad_request("give both level and code to filter by area, or neither")
    try:
        return Area(level, code)
    except ValueError as exc:
        raise _bad_request(str(exc)) from None


def _range(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    end = end or today
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if end < start:
        raise _bad_request(f"end {end} is before start {start}")
    if (end - start).days + 1 > MAX_DAYS:
        raise _bad_request(f"at most {MAX_DAYS} days per report: narrow start..end")
    return start, end


# --- the router ---------------------------------------------------------------------------

StartQ = Annotated[date | None, Query(description="first local day (default: 30 days ago)")]
EndQ = Annotated[date | None, Query(description="last local day, included (default: today)")]
LevelQ = Annotated[Level | None, Query(description="area level to filter by")]
CodeQ = Annotated[str | None, Query(description="area code (pre-2025 GSO code)")]
FormatQ = Annotated[Format, Query(alias="format", description="json or csv")]


def reports_router(
    require_reporting: Callable[..., Any],
    get_session: Callable[..., Any] = registry_session,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    """``/v1/reports`` with ``require_reporting`` applied to every route (for example
    ``require_user("reporting", "supervisor", "auditor", "admin")``) and sessions from
    ``get_session`` (a FastAPI dependency yielding a Session). ``clock`` says what "now"
    is (tests pin it)."""
    router = APIRouter(
        prefix="/v1/reports", tags=["reports"], dependencies=[Depends(require_reporting)]
    )
    SessionDep = Annotated[Session, Depends(get_session)]  # noqa: N806 (a type alias)

    def today() -> date:
        return reporting.local_today(clock())

    @router.get("/enrollments/daily", summary="Enrollments per local day")
    @router.get("/enrollments/daily.csv", include_in_schema=False)
    def enrollments_daily(
        request: Request,
        session: SessionDep,
        start: StartQ = None,
        end: EndQ = None,
        level: LevelQ = None,
        code: CodeQ = None,
        fmt: FormatQ = "json",
    ) -> Response:
        """Packages received, rejected and enrolled (received, not rejected) per day."""
        first, last = _range(start, end, today())
        rows = reporting.enrollments_per_day(session, first, last, _area(level, code))
        params = {"start": first, "end": last, "level": level, "code": code}
        return _respond(request, fmt, "enrollments-daily", rows, reporting.DayCount, params)

    @router.get("/progress", summary="Progress against quotas, per area")
    @router.get("/progress.csv", include_in_schema=False)
    def progress(
        request: Request,
        session: SessionDep,
        level: Level = "province",
        as_of: Annotated[date | None, Query(description="default: today")] = None,
        province: Annotated[str | None, Query(description="only this province's areas")] = None,
        fmt: FormatQ = "json",
    ) -> Response:
        """Each area's quota in force on ``as_of``: enrolled, target, percent, remaining
        and the daily rate needed to finish by the period's end."""
        day = as_of or today()
        try:
            rows = reporting.quota_progress(session, level, day, province)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        params = {"level": level, "as_of": day, "province": province}
        return _respond(request, fmt, "progress", rows, reporting.QuotaProgress, params)

    @router.get("/duplicates", summary="Adjudication cases opened and decided per day")
    @router.get("/duplicates.csv", include_in_schema=False)
    def duplicates(
        request: Request,
        session: SessionDep,
        start: StartQ = None,
        end: EndQ = None,
        level: LevelQ = None,
        code: CodeQ = None,
        fmt: FormatQ = "json",
    ) -> Response:
        """Duplicates found (cases decided "same"), cases opened and decided "different"."""
        first, last = _range(start, end, today())
        rows = reporting.duplicates_found(session, first, last, _area(level, code))
        params = {"start": first, "end": last, "level": level, "code": code}
        return _respond(request, fmt, "duplicates", rows, reporting.CaseDay, params)

    @router.get("/adjudication", summary="The adjudication backlog")
    @router.get("/adjudication.csv", include_in_schema=False)
    def adjudication(
        request: Request,
        session: SessionDep,
        days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 7,
        fmt: FormatQ = "json",
    ) -> Response:
        """Open cases and the oldest one's age; JSON adds cases per day over ``days``.
        The CSV is the per-day table."""
        backlog = reporting.adjudication_backlog(session, clock(), days)
        if _wants_csv(request, fmt):
            return _respond(request, fmt, "adjudication", backlog.per_day, reporting.CaseDay, {})
        return JSONResponse(
            jsonable_encoder(
                {
                    "report": "adjudication",
                    "generated_at": datetime.now(UTC),
                    "params": {"days": days},
                    **dataclasses.asdict(backlog),
                }
            )
        )

    @router.get("/stations", summary="Activity per station")
    @router.get("/stations.csv", include_in_schema=False)
    def stations(
        request: Request,
        session: SessionDep,
        level: LevelQ = None,
        code: CodeQ = None,
        fmt: FormatQ = "json",
    ) -> Response:
        """Per station: status, last package received, packages today and this week."""
        rows = reporting.station_activity(session, clock(), _area(level, code))
        params = {"level": level, "code": code}
        return _respond(request, fmt, "stations", rows, reporting.StationActivity, params)

    @router.get("/pipeline", summary="Packages per pipeline state")
    @router.get("/pipeline.csv", include_in_schema=False)
    def pipeline(request: Request, session: SessionDep, fmt: FormatQ = "json") -> Response:
        rows = reporting.pipeline_states(session)
        return _respond(request, fmt, "pipeline", rows, reporting.StateCount, {})

    @router.get("/rejections", summary="Rejected packages by reason")
    @router.get("/rejections.csv", include_in_schema=False)
    def rejections(
        request: Request,
        session: SessionDep,
        start: StartQ = None,
        end: EndQ = None,
        level: LevelQ = None,
        code: CodeQ = None,
        fmt: FormatQ = "json",
    ) -> Response:
        first, last = _range(start, end, today())
        rows = reporting.rejections(session, first, last, _area(level, code))
        params = {"start": first, "end": last, "level": level, "code": code}
        return _respond(request, fmt, "rejections", rows, reporting.RejectCount, params)

    return router
