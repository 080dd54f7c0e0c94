"""Progress reports over the registry's database: every number is one SQL aggregate.

The registry holds tens of millions of packages at scale, so each report is a GROUP BY (or
a handful of index lookups) evaluated in the database, never a loop over rows in Python.
Python only fills in empty days and does arithmetic on the aggregated rows.

Days are the registry's local days (Asia/Ho_Chi_Minh, UTC+7 all year since 1975): an
enrollment at 23:30 in Ha Noi counts for that day even though it is 16:30 UTC. Timestamps
are stored in UTC (``UtcDateTime``); :class:`LocalDay` converts in SQL on both backends,
and date ranges become half-open UTC instant ranges on ``received_at`` so an index on it
can serve them.

An enrollment counts for the area of the office whose station took it: ``package.office_id``
(set by the verify stage), else the station's office. "Enrolled" means received and not
rejected.

Indexes used (central/db/models.py): ``package(station_id, received_at)`` for station
activity, ``package(state)`` for pipeline counts and rejections, ``package(office_id)`` and
``station(office_id)`` for area joins, ``adjudication_case(state)`` for the backlog.
Wanted at scale (not in the schema yet): ``package(received_at)`` for per-day counts and
quota progress over all areas, and ``adjudication_case(decided_at)`` for decisions per day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import ColumnElement, Date, Select, and_, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from central.db.models import (
    AdjudicationCase,
    CaseDecision,
    CaseState,
    Office,
    Package,
    PackageState,
    Quota,
    Station,
    StationStatus,
)
from central.quotas import LEVELS, area_names

LOCAL_ZONE_NAME = "Asia/Ho_Chi_Minh"
# Viet Nam has kept UTC+7 without daylight saving since 1975: a fixed offset is exact for
# every timestamp the registry holds, and needs no tz database on SQLite.
LOCAL_TZ = timezone(timedelta(hours=7), "ICT")
Level = Literal["province", "district", "commune"]
OPEN_STATES = (
    PackageState.received,
    PackageState.verified,
    PackageState.quality_checked,
    PackageState.deduplicating,
    PackageState.adjudication,
)


class LocalDay(FunctionElement[date]):
    """The Vietnamese calendar day of a UTC timestamp column, computed in SQL."""

    type = Date()
    name = "local_day"
    inherit_cache = True


@compiles(LocalDay, "sqlite")
def _local_day_sqlite(element: LocalDay, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC wall time as text; date() shifts it by the fixed offset.
    return f"date({compiler.process(element.clauses, **kw)}, '+7 hours')"


@compiles(LocalDay, "postgresql")
def _local_day_postgresql(element: LocalDay, compiler: SQLCompiler, **kw: Any) -> str:
    # A literal zone (not a bind parameter) so that SELECT and GROUP BY render the same
    # expression and PostgreSQL sees them as one.
    column = compiler.process(element.clauses, **kw)
    return f"CAST(({column} AT TIME ZONE '{LOCAL_ZONE_NAME}') AS DATE)"


def local_day(column: ColumnElement[datetime] | Any) -> LocalDay:
    return LocalDay(column)


def local_today(now: datetime) -> date:
    return now.astimezone(LOCAL_TZ).date()


def day_start_utc(day: date) -> datetime:
    """The UTC instant at which local ``day`` begins."""
    return datetime.combine(day, time(0), LOCAL_TZ).astimezone(UTC)


def _day_range(column: Any, start: date, end: date) -> ColumnElement[bool]:
    """``column`` (UTC) within local days start..end inclusive, as an index-friendly range."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    return and_(column >= day_start_utc(start), column < day_start_utc(end + timedelta(days=1)))


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


# --- areas -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Area:
    """An area filter: all enrollments of offices in this province, district or commune."""

    level: Level
    code: str

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level {self.level!r}: use one of {', '.join(LEVELS)}")
        if self.code not in area_names(self.level):
            raise ValueError(f"unknown {self.level} code {self.code!r} (pre-2025 GSO codes)")


def _area_column(level: str) -> Any:
    return {
        "province": Office.province_code,
        "district": Office.district_code,
        "commune": Office.commune_code,
    }[level]


def _with_office(statement: Select[Any]) -> Select[Any]:
    """Join a statement over ``package`` to the office the enrollment counts for."""
    return statement.join(Station, Station.id == Package.station_id).join(
        Office, Office.id == func.coalesce(Package.office_id, Station.office_id)
    )


def _filter_area(statement: Select[Any], area: Area | None) -> Select[Any]:
    if area is None:
        return statement
    return _with_office(statement).where(_area_column(area.level) == area.code)


# --- enrollments per day -----------------------------------------------------------------


@dataclass(frozen=True)
class DayCount:
    day: date
    received: int
    rejected: int
    enrolled: int  # received and not rejected


def enrollments_per_day(
    session: Session, start: date, end: date, area: Area | None = None
) -> list[DayCount]:
    """Packages received per local day from ``start`` to ``end`` (inclusive), every day
    listed (zeros included), optionally for one area."""
    day = local_day(Package.received_at).label("day")
    rejected = func.sum(case((Package.state == PackageState.rejected, 1), else_=0))
    statement = select(day, func.count().label("received"), rejected.label("rejected")).where(
        _day_range(Package.received_at, start, end)
    )
    statement = _filter_area(statement, area).group_by(day)
    found = {row.day: row for row in session.execute(statement)}
    out: list[DayCount] = []
    for d in _days(start, end):
        row = found.get(d)
        received, refused = (int(row.received), int(row.rejected or 0)) if row else (0, 0)
        out.append(DayCount(d, received, refused, received - refused))
    return out


# --- quota progress ----------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaProgress:
    level: str
    area_code: str
    area_name: str
    period_start: date
    period_end: date
    target: int
    enrolled: int
    percent: float | None  # of the target; None for a zero target
    remaining: int
    days_left: int  # local days from ``as_of`` to the period's end, both included
    daily_rate_needed: int | None  # enrollments a day to finish on time; None when over


def quota_progress(
    session: Session, level: Level, as_of: date, province: str | None = None
) -> list[QuotaProgress]:
    """Each ``level`` area's quota in force on ``as_of`` against enrollments received from
    the period's start up to the end of ``as_of``; ``province`` narrows districts or
    communes to one province. Ordered by area code."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: use one of {', '.join(LEVELS)}")
    in_force = and_(Quota.level == level, Quota.period_start <= as_of, Quota.period_end >= as_of)
    if province is not None:
        codes = _codes_in_province(level, province)
        in_force = and_(in_force, Quota.area_code.in_(codes))
    first = session.execute(select(func.min(Quota.period_start)).where(in_force)).scalar()
    if first is None:
        return []
    code = _area_column(level).label("code")
    day = local_day(Package.received_at).label("day")
    daily = (
        _with_office(select(code, day, func.count().label("n")))
        .where(
            Package.state != PackageState.rejected,
            _day_range(Package.received_at, first, as_of),
        )
        .group_by(code, day)
        .subquery()
    )
    enrolled = func.coalesce(func.sum(daily.c.n), 0).label("enrolled")
    statement = (
        select(Quota.area_code, Quota.period_start, Quota.period_end, Quota.target, enrolled)
        .outerjoin(
            daily,
            and_(
                daily.c.code == Quota.area_code,
                daily.c.day >= Quota.period_start,
                daily.c.day <= Quota.period_end,
            ),
        )
        .where(in_force)
        .group_by(Quota.id, Quota.area_code, Quota.period_start, Quota.period_end, Quota.target)
        .order_by(Quota.area_code)
    )
    names = area_names(level)
    out = []
    for row in session.execute(statement):
        done, target = int(row.enrolled), int(row.target)
        remaining = max(target - done, 0)
        days_left = (row.period_end - as_of).days + 1
        out.append(
            QuotaProgress(
                level=level,
                area_code=row.area_code,
                area_name=names.get(row.area_code, ""),
                period_start=row.period_start,
                period_end=row.period_end,
                target=target,
                enrolled=done,
                percent=round(100 * done / target, 1) if target else None,
                remaining=remaining,
                days_left=days_left,
                daily_rate_needed=math.ceil(remaining / days_left) if remaining else None,
            )
        )
    return out


def _codes_in_province(level: str, province: str) -> list[str]:
    if province not in area_names("province"):
        raise ValueError(f"unknown province code {province!r} (pre-2025 GSO codes)")
    if level == "province":
        return [province]
    from enrollment import divisions

    communes = [c for c in divisions.load().iter_communes() if c.province_code == province]
    if level == "district":
        return sorted({c.district_code for c in communes if c.district_code})
    return sorted(c.code for c in communes)


# --- duplicates and adjudication ---------------------------------------------------------


@dataclass(frozen=True)
class CaseDay:
    day: date
    opened: int  # adjudication cases opened (a candidate close enough to review)
    duplicates: int  # decided "same": linked to an existing person
    different: int  # decided "different": a new person after all


def duplicates_found(
    session: Session, start: date, end: date, area: Area | None = None
) -> list[CaseDay]:
    """Cases opened and decided per local day (every day listed), optionally for one area."""
    opened_day = local_day(AdjudicationCase.opened_at).label("day")
    opened = select(opened_day, func.count().label("n")).where(
        _day_range(AdjudicationCase.opened_at, start, end)
    )
    decided_day = local_day(AdjudicationCase.decided_at).label("day")
    decided = select(
        decided_day,
        func.sum(case((AdjudicationCase.decision == CaseDecision.same, 1), else_=0)).label("s"),
        func.sum(case((AdjudicationCase.decision == CaseDecision.different, 1), else_=0)).label(
            "d"
        ),
    ).where(
        AdjudicationCase.state == CaseState.decided,
        _day_range(AdjudicationCase.decided_at, start, end),
    )
    if area is not None:
        opened = _filter_area(
            opened.join(Package, Package.package_id == AdjudicationCase.package_id), area
        )
        decided = _filter_area(
            decided.join(Package, Package.package_id == AdjudicationCase.package_id), area
        )
    opened_by_day = {r.day: int(r.n) for r in session.execute(opened.group_by(opened_day))}
    decided_by_day = {r.day: r for r in session.execute(decided.group_by(decided_day))}
    out = []
    for d in _days(start, end):
        row = decided_by_day.get(d)
        same, different = (int(row.s or 0), int(row.d or 0)) if row else (0, 0)
        out.append(CaseDay(d, opened_by_day.get(d, 0), same, different))
    return out


@dataclass(frozen=True)
class AdjudicationBacklog:
    open_cases: int
    oldest_opened_at: datetime | None
    oldest_age_hours: float | None
    per_day: list[CaseDay]


def adjudication_backlog(session: Session, now: datetime, days: int = 7) -> AdjudicationBacklog:
    """Open cases, how long the oldest has waited, and cases opened/decided per local day
    over the last ``days`` days (today included)."""
    count, oldest = session.execute(
        select(func.count(), func.min(AdjudicationCase.opened_at)).where(
            AdjudicationCase.state == CaseState.open
        )
    ).one()
    oldest = _as_utc(oldest)
    today = local_today(now)
    age = None if oldest is None else round((now - oldest).total_seconds() / 3600, 1)
    per_day = duplicates_found(session, today - timedelta(days=days - 1), today)
    return AdjudicationBacklog(int(count), oldest, age, per_day)


# --- stations --------------------------------------------------------------------------


@dataclass(frozen=True)
class StationActivity:
    station_id: str
    status: StationStatus
    office_name: str
    province_code: str
    district_code: str
    commune_code: str
    last_received_at: datetime | None
    packages_today: int
    packages_this_week: int  # since Monday (local)


def station_activity(
    session: Session, now: datetime, area: Area | None = None
) -> list[StationActivity]:
    """Per station: status, last package received, packages today and this week.

    Correlated subqueries, one index range on ``package(station_id, received_at)`` each per
    station, so the cost follows the number of stations and recent packages, not history.
    """
    today = local_today(now)
    today_start = day_start_utc(today)
    week_start = day_start_utc(today - timedelta(days=today.weekday()))

    def packages(*conditions: ColumnElement[bool]) -> Any:
        return (
            select(func.count())
            .where(Package.station_id == Station.id, *conditions)
            .correlate(Station)
            .scalar_subquery()
        )

    last = (
        select(func.max(Package.received_at))
        .where(Package.station_id == Station.id)
        .correlate(Station)
        .scalar_subquery()
    )
    statement = (
        select(
            Station.id,
            Station.status,
            Office.name,
            Office.province_code,
            Office.district_code,
            Office.commune_code,
            last.label("last"),
            packages(Package.received_at >= today_start).label("today"),
            packages(Package.received_at >= week_start).label("week"),
        )
        .join(Office, Office.id == Station.office_id)
        .order_by(Station.id)
    )
    if area is not None:
        statement = statement.where(_area_column(area.level) == area.code)
    out = []
    for row in session.execute(statement):
        out.append(
            StationActivity(
                station_id=row.id,
                status=row.status,
                office_name=row.name,
                province_code=row.province_code,
                district_code=row.district_code,
                commune_code=row.commune_code,
                last_received_at=_as_utc(row.last),
                packages_today=int(row.today),
                packages_this_week=int(row.week),
            )
        )
    return out


def _as_utc(value: datetime | str | None) -> datetime | None:
    """An aggregate (max/min) of a UtcDateTime column comes back untyped: text on SQLite,
    an aware datetime on PostgreSQL."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- pipeline --------------------------------------------------------------------------


@dataclass(frozen=True)
class StateCount:
    state: PackageState
    packages: int
    oldest_changed_at: datetime | None  # for unfinished states: the longest waiting


def pipeline_states(session: Session) -> list[StateCount]:
    """Packages per pipeline state (every state listed), with the oldest state change of
    the unfinished ones (a stuck stage shows as an old timestamp)."""
    counts = {
        state: n
        for state, n in session.execute(select(Package.state, func.count()).group_by(Package.state))
    }
    oldest = {
        state: at
        for state, at in session.execute(
            select(Package.state, func.min(Package.state_changed_at))
            .where(Package.state.in_(OPEN_STATES))
            .group_by(Package.state)
        )
    }
    return [
        StateCount(state, int(counts.get(state, 0)), _as_utc(oldest.get(state)))
        for state in PackageState
    ]


@dataclass(frozen=True)
class RejectCount:
    reject_code: str
    packages: int


def rejections(
    session: Session, start: date, end: date, area: Area | None = None
) -> list[RejectCount]:
    """Rejected packages by reason among those received from ``start`` to ``end``, most
    frequent first."""
    statement = select(Package.reject_code, func.count().label("n")).where(
        Package.state == PackageState.rejected, _day_range(Package.received_at, start, end)
    )
    statement = _filter_area(statement, area).group_by(Package.reject_code)
    rows = session.execute(statement.order_by(func.count().desc(), Package.reject_code))
    return [RejectCount(str(r.reject_code), int(r.n)) for r in rows]


__all__ = [
    "LOCAL_TZ",
    "AdjudicationBacklog",
    "Area",
    "CaseDay",
    "DayCount",
    "QuotaProgress",
    "RejectCount",
    "StateCount",
    "StationActivity",
    "adjudication_backlog",
    "day_start_utc",
    "duplicates_found",
    "enrollments_per_day",
    "local_day",
    "local_today",
    "pipeline_states",
    "quota_progress",
    "rejections",
    "station_activity",
]
