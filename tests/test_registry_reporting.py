"""Registry reports on SQLite and a real PostgreSQL: every number against a hand count of a
small fixed data set, with timestamps on both sides of midnight in Viet Nam (17:00 UTC);
the CSV exports parse back to the same numbers; quota import is all or nothing."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from central.api_reports import reports_router
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
from central.quotas import import_quotas
from central.reporting import (
    Area,
    CaseDay,
    DayCount,
    RejectCount,
    adjudication_backlog,
    duplicates_found,
    enrollments_per_day,
    pipeline_states,
    quota_progress,
    rejections,
    station_activity,
)
from enrollment.ids import new_package_id

T0 = datetime(2021, 3, 1, tzinfo=UTC)
# Tuesday 16 March 2021, 10:15 in Ha Noi.
NOW = datetime(2021, 3, 16, 3, 15, tzinfo=UTC)
D14, D15, D16 = date(2021, 3, 14), date(2021, 3, 15), date(2021, 3, 16)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2021, 3, day, hour, minute, tzinfo=UTC)


OFFICES = {
    # key: (name, province, district, commune)
    "phucxa": ("CA phường Phúc Xá", "01", "001", "00001"),
    "trucbach": ("CA phường Trúc Bạch", "01", "001", "00004"),
    "tandinh": ("CA phường Tân Định", "79", "760", "26734"),
}
NAMES = {
    "01": "Thành phố Hà Nội",
    "79": "Thành phố Hồ Chí Minh",
    "001": "Quận Ba Đình",
    "760": "Quận 1",
    "00001": "Phường Phúc Xá",
    "00004": "Phường Trúc Bạch",
    "26734": "Phường Tân Định",
}

# name: (station, office override, received_at, state, reject_code)
PACKAGES: dict[str, tuple[str, str | None, datetime, PackageState, str | None]] = {
    # Sunday 14 March 23:59 local: the day before, and before the week began.
    "p1": ("S1", None, utc(14, 16, 59), PackageState.issued, None),
    # Monday 15 March 00:00 local exactly.
    "p2": ("S1", None, utc(14, 17, 0), PackageState.card_encoded, None),
    "p3": ("S1", None, utc(15, 10), PackageState.issued, None),
    # S2's office is Trúc Bạch; p4 has no office yet (falls back to the station's), p5's
    # record names Tân Định (the package's office wins).
    "p4": ("S2", None, utc(15, 4), PackageState.verified, None),
    "p5": ("S2", "tandinh", utc(15, 5), PackageState.deduplicating, None),
    "p6": ("S1", None, utc(15, 2), PackageState.rejected, "bad_signature"),
    "p9": ("S2", None, utc(15, 6), PackageState.rejected, "quality"),
    "p10": ("S1", None, utc(15, 7), PackageState.rejected, "quality"),
    # Monday 23:30 local, and Tuesday 00:30 local.
    "p7": ("S3", None, utc(15, 16, 30), PackageState.adjudication, None),
    "p8": ("S3", None, utc(15, 17, 30), PackageState.quality_checked, None),
}
# package: (opened_at, decision, decided_at)
CASES: dict[str, tuple[datetime, CaseDecision | None, datetime | None]] = {
    # opened Monday 10:00 local, decided "same" Tuesday 01:00 local
    "p3": (utc(15, 3), CaseDecision.same, utc(15, 18)),
    # opened Monday 23:45 local, still open at NOW (10.5 hours)
    "p7": (utc(15, 16, 45), None, None),
    # opened Tuesday 00:45 local, decided "different" Tuesday 12:00 local
    "p8": (utc(15, 17, 45), CaseDecision.different, utc(16, 5)),
}


@pytest.fixture
def seeded(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with sessions.begin() as session:
        offices: dict[str, Office] = {}
        for key, (name, province, district, commune) in OFFICES.items():
            office = Office(
                name=name,
                province_code=province,
                province_name=NAMES[province],
                district_code=district,
                district_name=NAMES[district],
                commune_code=commune,
                commune_name=NAMES[commune],
                created_at=T0,
            )
            session.add(office)
            offices[key] = office
        session.flush()
        for sid, office_key, status in (
            ("S1", "phucxa", StationStatus.active),
            ("S2", "trucbach", StationStatus.active),
            ("S3", "tandinh", StationStatus.suspended),
            ("S4", "phucxa", StationStatus.active),  # never sent anything
        ):
            session.add(
                Station(id=sid, office_id=offices[office_key].id, status=status, created_at=T0)
            )
        session.flush()
        ids: dict[str, uuid.UUID] = {}
        for name, (sid, override, at, state, code) in PACKAGES.items():
            pid = uuid.UUID(new_package_id())
            ids[name] = pid
            session.add(
                Package(
                    package_id=pid,
                    receipt_number=pid.hex[-16:],
                    station_id=sid,
                    body_sha256="ab" * 32,
                    size=1000,
                    blob_key=f"packages/{pid}",
                    received_at=at,
                    state=state,
                    state_changed_at=at.replace(minute=at.minute // 2),
                    reject_code=code,
                    office_id=offices[override].id if override else None,
                )
            )
        session.flush()
        for name, (opened, decision, decided) in CASES.items():
            session.add(
                AdjudicationCase(
                    package_id=ids[name],
                    state=CaseState.decided if decision else CaseState.open,
                    candidates=[],
                    opened_at=opened,
                    decision=decision,
                    decided_at=decided,
                )
            )
        quotas = (
            ("commune", "00001", date(2021, 3, 1), date(2021, 3, 31), 100),
            ("province", "01", date(2021, 3, 1), date(2021, 6, 30), 1000),
            ("province", "01", date(2021, 2, 1), date(2021, 2, 28), 50),  # not in force
            ("province", "79", date(2021, 3, 16), date(2021, 3, 31), 500),
        )
        for level, code, start, end, target in quotas:
            session.add(
                Quota(
                    level=level, area_code=code, period_start=start, period_end=end, target=target
                )
            )
    return sessions


# --- reports against hand counts ----------------------------------------------------------


def test_enrollments_per_day_by_local_day(seeded: sessionmaker[Session]) -> None:
    with seeded() as s:
        assert enrollments_per_day(s, D14, D16) == [
            DayCount(D14, 1, 0, 1),  # p1 at 23:59 local
            DayCount(D15, 8, 3, 5),  # p2 (00:00 local) .. p7 (23:30 local)
            DayCount(D16, 1, 0, 1),  # p8 at 00:30 local
        ]
        # Hanoi: p5 counts for Tân Định (its record's office), p4 and p9 for Trúc Bạch.
        assert enrollments_per_day(s, D14, D16, Area("province", "01")) == [
            DayCount(D14, 1, 0, 1),
            DayCount(D15, 6, 3, 3),
            DayCount(D16, 0, 0, 0),
        ]
        assert enrollments_per_day(s, D15, D15, Area("commune", "00004")) == [
            DayCount(D15, 2, 1, 1)  # p4 (no office yet: the station's) and p9
        ]
        assert enrollments_per_day(s, D15, D16, Area("district", "760")) == [
            DayCount(D15, 2, 0, 2),  # p5, p7
            DayCount(D16, 1, 0, 1),  # p8
        ]
        assert enrollments_per_day(s, date(2021, 3, 20), date(2021, 3, 21)) == [
            DayCount(date(2021, 3, 20), 0, 0, 0),
            DayCount(date(2021, 3, 21), 0, 0, 0),
        ]


def test_quota_progress_against_quotas_in_force(seeded: sessionmaker[Session]) -> None:
    with seeded() as s:
        provinces = {p.area_code: p for p in quota_progress(s, "province", D16)}
        assert set(provinces) == {"01", "79"}
        hanoi = provinces["01"]
        assert (hanoi.area_name, hanoi.target, hanoi.enrolled) == ("Thành phố Hà Nội", 1000, 4)
        assert (hanoi.percent, hanoi.remaining, hanoi.days_left) == (0.4, 996, 107)
        assert hanoi.daily_rate_needed == 10  # ceil(996 / 107)
        # Ho Chi Minh City's period starts on the 16th: only p8 (00:30 local) is in it.
        hcm = provinces["79"]
        assert (hcm.enrolled, hcm.remaining, hcm.days_left, hcm.daily_rate_needed) == (
            1,
            499,
            16,
            32,
        )
        [phucxa] = quota_progress(s, "commune", D16)
        assert (phucxa.area_code, phucxa.enrolled, phucxa.percent) == ("00001", 3, 3.0)
        assert (phucxa.remaining, phucxa.days_left, phucxa.daily_rate_needed) == (97, 16, 7)
        # As of the 14th, only p1 had arrived; the February quota is over by then too.
        [early] = quota_progress(s, "province", D14)
        assert (early.area_code, early.enrolled, early.days_left) == ("01", 1, 109)
        assert quota_progress(s, "province", D16, province="79")[0].area_code == "79"
        assert quota_progress(s, "district", D16) == []
        with pytest.raises(ValueError, match="unknown province"):
            quota_progress(s, "commune", D16, province="99")


def test_duplicates_and_adjudication_backlog(seeded: sessionmaker[Session]) -> None:
    with seeded() as s:
        assert duplicates_found(s, D15, D16) == [
            CaseDay(D15, opened=2, duplicates=0, different=0),
            CaseDay(D16, opened=1, duplicates=1, different=1),
        ]
        assert duplicates_found(s, D15, D16, Area("commune", "00001")) == [
            CaseDay(D15, opened=1, duplicates=0, different=0),
            CaseDay(D16, opened=0, duplicates=1, different=0),
        ]
        backlog = adjudication_backlog(s, NOW, days=2)
        assert backlog.open_cases == 1
        assert backlog.oldest_opened_at == utc(15, 16, 45)
        assert backlog.oldest_age_hours == 10.5
        assert backlog.per_day == duplicates_found(s, D15, D16)


def test_station_activity(seeded: sessionmaker[Session]) -> None:
    with seeded() as s:
        rows = {r.station_id: r for r in station_activity(s, NOW)}
    assert list(rows) == ["S1", "S2", "S3", "S4"]
    s1, s2, s3, s4 = rows["S1"], rows["S2"], rows["S3"], rows["S4"]
    # The week began Monday 00:00 local: p2 is in it, p1 (Sunday 23:59) is not.
    assert (s1.last_received_at, s1.packages_today, s1.packages_this_week) == (utc(15, 10), 0, 4)
    assert (s2.last_received_at, s2.packages_today, s2.packages_this_week) == (utc(15, 6), 0, 3)
    assert (s3.last_received_at, s3.packages_today, s3.packages_this_week) == (
        utc(15, 17, 30),
        1,
        2,
    )
    assert s3.status is StationStatus.suspended
    assert s3.commune_code == "26734"
    assert (s4.last_received_at, s4.packages_today, s4.packages_this_week) == (None, 0, 0)
    with seeded() as s:
        hanoi = station_activity(s, NOW, Area("province", "01"))
    assert [r.station_id for r in hanoi] == ["S1", "S2", "S4"]


def test_pipeline_states_and_rejections(seeded: sessionmaker[Session]) -> None:
    with seeded() as s:
        states = {r.state: r for r in pipeline_states(s)}
        assert {k.value: v.packages for k, v in states.items()} == {
            "received": 0,
            "verified": 1,
            "quality_checked": 1,
            "deduplicating": 1,
            "adjudication": 1,
            "issued": 2,
            "card_encoded": 1,
            "rejected": 3,
        }
        assert states[PackageState.verified].oldest_changed_at == utc(15, 4)
        assert states[PackageState.adjudication].oldest_changed_at == utc(15, 16, 15)
        assert states[PackageState.issued].oldest_changed_at is None  # finished: not tracked
        assert rejections(s, D14, D16) == [
            RejectCount("quality", 2),
            RejectCount("bad_signature", 1),
        ]
        assert rejections(s, D15, D15, Area("commune", "00004")) == [RejectCount("quality", 1)]
        assert rejections(s, D16, D16) == []


def test_area_and_range_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown commune code"):
        Area("commune", "99999")
    with pytest.raises(ValueError, match="level"):
        Area("ward", "00001")  # type: ignore[arg-type]


# --- the HTTP API and CSV export ----------------------------------------------------------


def _client(sessions: sessionmaker[Session], role_check: Any = None) -> TestClient:
    def open_session() -> Iterator[Session]:
        with sessions() as session:
            yield session

    def allow_all() -> None:
        return None

    app = FastAPI()
    app.include_router(reports_router(role_check or allow_all, open_session, clock=lambda: NOW))
    return TestClient(app)


def _csv_rows(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "CSV must start with a UTF-8 BOM for Excel"
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def test_reports_as_json_and_csv(seeded: sessionmaker[Session]) -> None:
    client = _client(seeded)
    daily = client.get("/v1/reports/enrollments/daily", params={"start": D14, "end": D16})
    assert daily.status_code == 200, daily.text
    assert [(r["day"], r["received"], r["enrolled"]) for r in daily.json()["rows"]] == [
        ("2021-03-14", 1, 1),
        ("2021-03-15", 8, 5),
        ("2021-03-16", 1, 1),
    ]
    as_csv = client.get("/v1/reports/enrollments/daily.csv", params={"start": D14, "end": D16})
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"] == (
        'attachment; filename="enrollments-daily_2021-03-14_2021-03-16.csv"'
    )
    assert [
        (r["day"], int(r["received"]), int(r["rejected"])) for r in _csv_rows(as_csv.content)
    ] == [
        ("2021-03-14", 1, 0),
        ("2021-03-15", 8, 3),
        ("2021-03-16", 1, 0),
    ]
    # The default range ends today (local) and spans 30 days.
    default = client.get("/v1/reports/enrollments/daily").json()
    assert default["params"]["end"] == "2021-03-16"
    assert len(default["rows"]) == 30

    progress = client.get("/v1/reports/progress", params={"format": "csv", "as_of": D16})
    rows = {r["area_code"]: r for r in _csv_rows(progress.content)}
    assert rows["01"]["area_name"] == "Thành phố Hà Nội"  # survives the round trip
    assert (rows["01"]["enrolled"], rows["01"]["target"], rows["01"]["percent"]) == (
        "4",
        "1000",
        "0.4",
    )
    assert rows["01"]["daily_rate_needed"] == "10"
    assert rows["79"]["enrolled"] == "1"

    stations = _csv_rows(client.get("/v1/reports/stations.csv").content)
    s3 = next(r for r in stations if r["station_id"] == "S3")
    # CSV times are local: p8 arrived at 00:30 on the 16th in Viet Nam.
    assert s3["last_received_at"] == "2021-03-16T00:30:00+07:00"
    assert (s3["status"], s3["packages_today"]) == ("suspended", "1")
    json_s3 = next(
        r for r in client.get("/v1/reports/stations").json()["rows"] if r["station_id"] == "S3"
    )
    assert json_s3["last_received_at"].startswith("2021-03-15T17:30:00")

    backlog = client.get("/v1/reports/adjudication", params={"days": 2}).json()
    assert (backlog["open_cases"], backlog["oldest_age_hours"]) == (1, 10.5)
    per_day = _csv_rows(client.get("/v1/reports/adjudication.csv?days=2").content)
    assert [(r["day"], r["duplicates"]) for r in per_day] == [
        ("2021-03-15", "0"),
        ("2021-03-16", "1"),
    ]
    dups = client.get("/v1/reports/duplicates", params={"start": D15, "end": D16}).json()
    assert [r["opened"] for r in dups["rows"]] == [2, 1]
    pipeline = _csv_rows(client.get("/v1/reports/pipeline?format=csv").content)
    assert {r["state"]: int(r["packages"]) for r in pipeline}["rejected"] == 3
    rejected = client.get(
        "/v1/reports/rejections",
        params={"start": D14, "end": D16, "level": "province", "code": "01"},
    ).json()["rows"]
    assert rejected == [
        {"reject_code": "quality", "packages": 2},
        {"reject_code": "bad_signature", "packages": 1},
    ]


def test_api_refuses_bad_parameters_with_reasons(seeded: sessionmaker[Session]) -> None:
    client = _client(seeded)
    r = client.get("/v1/reports/enrollments/daily", params={"level": "commune", "code": "99999"})
    assert r.status_code == 422
    assert "unknown commune code" in r.json()["detail"]
    r = client.get("/v1/reports/enrollments/daily", params={"level": "commune"})
    assert r.status_code == 422
    assert "both level and code" in r.json()["detail"]
    r = client.get("/v1/reports/rejections", params={"start": D16, "end": D14})
    assert r.status_code == 422
    assert "before start" in r.json()["detail"]
    r = client.get("/v1/reports/duplicates", params={"start": "2020-01-01", "end": D16})
    assert r.status_code == 422
    assert "at most 366 days" in r.json()["detail"]


def test_the_role_dependency_guards_every_report(seeded: sessionmaker[Session]) -> None:
    from fastapi import HTTPException

    def deny() -> None:
        raise HTTPException(status_code=403, detail="reporting role required")

    client = _client(seeded, deny)
    for path in (
        "/v1/reports/enrollments/daily",
        "/v1/reports/progress.csv",
        "/v1/reports/duplicates",
        "/v1/reports/adjudication",
        "/v1/reports/stations",
        "/v1/reports/pipeline",
        "/v1/reports/rejections.csv",
    ):
        assert client.get(path).status_code == 403, path


# --- quota import ------------------------------------------------------------------------

GOOD_CSV = (
    "\ufefflevel,area_code,tên đơn vị,period_start,period_end,target\r\n"
    "province,01,Thành phố Hà Nội,01/03/2021,30/06/2021,5200000\r\n"
    "district,001,Quận Ba Đình,2021-03-01,2021-06-30,180000\r\n"
    "commune,00001,Phường Phúc Xá,01/03/2021,31/03/2021,21000\r\n"
    "\r\n"
)


def _quotas(sessions: sessionmaker[Session]) -> list[tuple[str, str, date, date, int]]:
    with sessions() as s:
        rows = s.execute(
            select(
                Quota.level, Quota.area_code, Quota.period_start, Quota.period_end, Quota.target
            ).order_by(Quota.level, Quota.area_code, Quota.period_start)
        ).tuples()
        return list(rows)


def test_quota_import_upserts(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        result = import_quotas(s, GOOD_CSV)
    assert (result.ok, result.inserted, result.updated) == (True, 3, 0)
    assert _quotas(sessions) == [
        ("commune", "00001", date(2021, 3, 1), date(2021, 3, 31), 21000),
        ("district", "001", date(2021, 3, 1), date(2021, 6, 30), 180000),
        ("province", "01", date(2021, 3, 1), date(2021, 6, 30), 5200000),
    ]
    # Same keys again with a new target and end: replaced, not duplicated. Semicolons too.
    again = (
        "level;area_code;period_start;period_end;target\n"
        "province;01;01/03/2021;31/07/2021;5300000\n"
    )
    with sessions.begin() as s:
        result = import_quotas(s, again)
    assert (result.ok, result.inserted, result.updated) == (True, 0, 1)
    assert ("province", "01", date(2021, 3, 1), date(2021, 7, 31), 5300000) in _quotas(sessions)


def test_quota_import_refuses_a_bad_file_whole(sessions: sessionmaker[Session]) -> None:
    bad = (
        "level,area_code,period_start,period_end,target\n"
        "province,01,01/03/2021,30/06/2021,5200000\n"  # line 2: good
        "commune,00001,01/03/2021,31/03/2021,21000\n"  # line 3: good
        "commune,99999,01/03/2021,31/03/2021,100\n"  # line 4: unknown commune
    )
    with sessions.begin() as s:
        result = import_quotas(s, bad)
    assert not result.ok
    assert [(e.line, e.message) for e in result.errors] == [
        (4, "unknown commune code 99999 (pre-2025 GSO code table)")
    ]
    assert _quotas(sessions) == []  # the good rows were not imported either

    many = (
        "level,area_code,period_start,period_end,target\n"
        "province,1,01/03/2021,30/06/2021,10\n"  # 2: code length
        "district,001,31/02/2021,30/06/2021,10\n"  # 3: no such date
        "district,002,01/07/2021,30/06/2021,10\n"  # 4: ends before it starts
        "commune,00004,01/03/2021,31/03/2021,-5\n"  # 5: negative
        "ward,00004,01/03/2021,31/03/2021,5\n"  # 6: level
        "commune,00006,01/03/2021,31/03/2021,5\n"  # 7: good...
        "commune,00006,15/03/2021,15/04/2021,5\n"  # 8: ...but this overlaps it
    )
    with sessions.begin() as s:
        result = import_quotas(s, many)
    assert [e.line for e in result.errors] == [2, 3, 4, 5, 6, 8]
    assert "overlaps line 7" in result.errors[-1].message
    assert "must be 2 digits" in result.errors[0].message
    assert "negative" in result.errors[3].message
    assert _quotas(sessions) == []

    with sessions.begin() as s:
        result = import_quotas(s, "level,area_code,target\nprovince,01,5\n")
    assert [str(e) for e in result.errors] == [
        "line 1: header lacks column(s) period_start, period_end"
    ]


def test_quota_import_refuses_overlap_with_a_stored_quota(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        assert import_quotas(s, GOOD_CSV).ok
    later = "level,area_code,period_start,period_end,target\nprovince,01,15/06/2021,31/12/2021,9\n"
    with sessions.begin() as s:
        result = import_quotas(s, later)
    assert [e.line for e in result.errors] == [2]
    assert "overlaps the stored quota 2021-03-01...2021-06-30" in result.errors[0].message
    following = (
        "level,area_code,period_start,period_end,target\nprovince,01,01/07/2021,31/12/2021,9\n"
    )
    with sessions.begin() as s:
        assert import_quotas(s, following).inserted == 1


def test_quota_cli(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from central.config import RegistrySettings
    from central.quotas import add_quotas_parser, run_quotas

    parser = argparse.ArgumentParser()
    add_quotas_parser(parser.add_subparsers(dest="command"))
    settings = RegistrySettings(
        database={"url": db_url}, blobs={"backend": "local", "path": tmp_path}
    )
    path = tmp_path / "quotas.csv"
    path.write_text(GOOD_CSV.replace("21000", "lots"), encoding="utf-8")
    assert run_quotas(parser.parse_args(["quotas", "import", str(path)]), settings) == 2
    err = capsys.readouterr().err
    assert "line 4: target 'lots' is not a whole number" in err
    assert "nothing imported" in err
    path.write_text(GOOD_CSV, encoding="utf-8")
    assert run_quotas(parser.parse_args(["quotas", "import", "--check", str(path)]), settings) == 0
    assert _quotas(sessions) == []
    assert run_quotas(parser.parse_args(["quotas", "import", str(path)]), settings) == 0
    assert "imported 3 new and 0 updated" in capsys.readouterr().out
    assert len(_quotas(sessions)) == 3


def test_default_session_reads_beside_a_writer(
    seeded: sessionmaker[Session], engine: Engine, db_url: str
) -> None:
    """The router's own session dependency (the app's engine) reads without the write
    lock: on SQLite a report still answers while a writer holds the database."""
    import sqlite3
    import time
    from types import SimpleNamespace

    app = FastAPI()
    app.state.registry = SimpleNamespace(engine=engine)
    app.include_router(reports_router(lambda: None, clock=lambda: NOW))
    client = TestClient(app)
    writer = None
    if db_url.startswith("sqlite"):
        writer = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # what ingest holds while it writes
    try:
        started = time.monotonic()
        response = client.get("/v1/reports/pipeline")
        assert time.monotonic() - started < 5  # not queued behind the writer
    finally:
        if writer is not None:
            writer.execute("ROLLBACK")
            writer.close()
    assert response.status_code == 200
    assert {r["state"]: r["packages"] for r in response.json()["rows"]}["issued"] == 2
