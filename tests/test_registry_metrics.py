"""Registry operations: Prometheus metrics (recorded events, queue depth read from SQLite
and a real PostgreSQL at scrape time) and structured JSON logs with request ids."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from central.db.engine import make_engine, session_factory
from central.db.models import Job, JobState, Office, Package, PackageState, Station
from central.logs import RequestIdMiddleware, configure_logging, request_id
from central.metrics import Metrics, metrics_router
from enrollment.ids import new_package_id

T0 = datetime(2021, 3, 15, 3, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _seed_queue(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        office = Office(
            name="CA phường Phúc Xá",
            province_code="01",
            province_name="Thành phố Hà Nội",
            district_code="001",
            district_name="Quận Ba Đình",
            commune_code="00001",
            commune_name="Phường Phúc Xá",
            created_at=T0,
        )
        session.add(office)
        session.flush()
        session.add(Station(id="HN-BD-001", office_id=office.id, created_at=T0))
        session.flush()
        states = [PackageState.received] * 3 + [
            PackageState.adjudication,
            PackageState.issued,
            PackageState.issued,
        ]
        jobs = [
            ("verify", JobState.pending),
            ("verify", JobState.pending),
            ("verify", JobState.running),
            ("dedup", JobState.failed),
            ("dedup", JobState.done),
            ("issue", JobState.done),
        ]
        for state, (kind, job_state) in zip(states, jobs, strict=True):
            pid = uuid.UUID(new_package_id())
            session.add(
                Package(
                    package_id=pid,
                    receipt_number=pid.hex[-16:],
                    station_id="HN-BD-001",
                    body_sha256="ab" * 32,
                    size=10,
                    blob_key=f"packages/{pid}",
                    received_at=T0,
                    state=state,
                    state_changed_at=T0,
                )
            )
            session.flush()
            session.add(
                Job(
                    kind=kind,
                    package_id=pid,
                    state=job_state,
                    not_before=T0,
                    created_at=T0,
                    updated_at=T0,
                )
            )


def test_scrape_reads_queue_depth_from_the_database(engine: Engine) -> None:
    _seed_queue(engine)
    metrics = Metrics(engine)
    found = samples(metrics.render().decode())
    assert found[("registry_database_up", ())] == 1
    assert found[("registry_jobs", (("kind", "verify"), ("state", "pending")))] == 2
    assert found[("registry_jobs", (("kind", "verify"), ("state", "running")))] == 1
    assert found[("registry_jobs", (("kind", "verify"), ("state", "failed")))] == 0
    assert found[("registry_jobs", (("kind", "dedup"), ("state", "failed")))] == 1
    assert found[("registry_jobs", (("kind", "dedup"), ("state", "pending")))] == 0
    # Finished work is history, not queue: no "done" series, no kind with only done jobs.
    assert not [k for k in found if k[0] == "registry_jobs" and ("state", "done") in k[1]]
    assert not [k for k in found if ("kind", "issue") in k[1]]
    assert found[("registry_packages_in_flight", (("state", "received"),))] == 3
    assert found[("registry_packages_in_flight", (("state", "adjudication"),))] == 1
    assert found[("registry_packages_in_flight", (("state", "verified"),))] == 0
    assert not [k for k in found if ("state", "issued") in k[1]]

    # The next scrape sees the database as it is then.
    with session_factory(engine).begin() as session:
        job = session.query(Job).filter(Job.state == JobState.pending).first()
        assert job is not None
        job.state = JobState.running
    found = samples(metrics.render().decode())
    assert found[("registry_jobs", (("kind", "verify"), ("state", "pending")))] == 1
    assert found[("registry_jobs", (("kind", "verify"), ("state", "running")))] == 2


def test_an_unreadable_database_does_not_fail_the_scrape(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: queries fail
    try:
        metrics = Metrics(engine)
        metrics.package_received(100, 0.05)
        found = samples(metrics.render().decode())
    finally:
        engine.dispose()
    assert found[("registry_database_up", ())] == 0
    assert found[("registry_packages_received_total", ())] == 1
    assert not [k for k in found if k[0] == "registry_jobs"]


def test_recorded_events() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.package_received(1500, 0.2)
    metrics.package_received(500, 3.0)
    metrics.package_refused("Bad-Signature")
    metrics.package_refused("bad_signature")
    metrics.package_refused("free text with spaces!")  # never a new series per message
    metrics.observe_stage("verify", 0.03)
    with pytest.raises(RuntimeError), metrics.stage_timer("dedup"):
        raise RuntimeError("failed, and timed all the same")
    metrics.observe_dedup(0.7)
    metrics.set_gallery_size(12_345)
    found = samples(metrics.render().decode())
    assert found[("registry_packages_received_total", ())] == 2
    assert found[("registry_package_bytes_received_total", ())] == 2000
    assert found[("registry_package_ack_seconds_count", ())] == 2
    assert found[("registry_package_ack_seconds_bucket", (("le", "0.25"),))] == 1
    assert found[("registry_package_ack_seconds_bucket", (("le", "5.0"),))] == 2
    assert found[("registry_packages_refused_total", (("reason", "bad_signature"),))] == 2
    assert found[("registry_packages_refused_total", (("reason", "other"),))] == 1
    assert found[("registry_stage_seconds_count", (("stage", "verify"),))] == 1
    assert found[("registry_stage_seconds_count", (("stage", "dedup"),))] == 1
    assert found[("registry_dedup_identify_seconds_sum", ())] == pytest.approx(0.7)
    assert found[("registry_gallery_entries", ())] == 12_345
    assert "registry_database_up" not in {name for name, _ in found}  # no engine given


def test_each_app_has_its_own_registry_and_metrics_endpoint(tmp_path: Path) -> None:
    apps = []
    for n in range(2):  # the global registry would refuse the second set of names
        metrics = Metrics(process_metrics=True)
        metrics.package_received(10 * (n + 1), 0.1)
        app = FastAPI()
        app.include_router(metrics_router(metrics))
        apps.append(app)
    for n, app in enumerate(apps):
        response = TestClient(app).get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")
        found = samples(response.text)
        assert found[("registry_package_bytes_received_total", ())] == 10 * (n + 1)
        assert ("process_cpu_seconds_total", ()) in found

    # Without a Metrics given, the router serves the app's own (set at start-up).
    late = FastAPI()
    late.include_router(metrics_router())
    late.state.metrics = Metrics(process_metrics=False)
    late.state.metrics.set_gallery_size(7)
    found = samples(TestClient(late).get("/metrics").text)
    assert found[("registry_gallery_entries", ())] == 7


# --- structured logs ---------------------------------------------------------------------

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """The registry's lines (the test client's own httpx lines left out)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"].startswith("central")]


def test_json_lines_with_extra_fields(log_stream: io.StringIO) -> None:
    log = logging.getLogger("central.pipeline")
    log.info(
        "stage done for %s",
        "0190",
        extra={"package_id": "0190", "stage": "verify", "duration_ms": 41.7, "job": 12},
    )
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        log.exception("stage failed", extra={"stage": "dedup"})
    assert len(log_stream.getvalue().splitlines()) == 2  # the traceback stays on its line
    done, failed = _lines(log_stream)
    assert RFC3339_UTC.match(done["ts"]), done["ts"]
    assert done == {
        "ts": done["ts"],
        "level": "INFO",
        "logger": "central.pipeline",
        "msg": "stage done for 0190",
        "package_id": "0190",
        "stage": "verify",
        "duration_ms": 41.7,
        "job": 12,
    }
    assert failed["level"] == "ERROR"
    assert "ValueError: broken\nacross lines" in failed["exc"]
    assert "request_id" not in done  # outside a request


def test_secret_and_personal_fields_are_redacted(log_stream: io.StringIO) -> None:
    logging.getLogger("central.auth").warning(
        "refused Authorization: Bearer eyJhbGciOi.payload.sig for %s",
        "officer7",
        extra={
            "password": "hunter2",
            "api_token": "t0k3n",
            "full_name": "Nguyễn Văn An",
            "personal_number": "001085000123",
            "station_id": "HN-BD-001",
            "mapping": "kept",  # contains "pin" but is not a secret
        },
    )
    [line] = _lines(log_stream)
    text = log_stream.getvalue()
    for secret in ("hunter2", "t0k3n", "Nguyễn", "001085000123", "eyJhbGciOi"):
        assert secret not in text
    assert line["msg"] == "refused Authorization: Bearer [redacted] for officer7"
    assert line["password"] == line["full_name"] == "[redacted]"
    assert (line["station_id"], line["mapping"]) == ("HN-BD-001", "kept")


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)
    log = logging.getLogger("central.things")

    @app.get("/v1/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str | None]:
        # A careless handler: the value goes into a field named for what it is.
        log.info("looked up", extra={"authorization": "Bearer s3cr3t-v4lue", "thing": thing_id})
        return {"request_id": request_id()}

    @app.get("/async")
    async def in_event_loop() -> dict[str, str | None]:
        log.info("async handler")
        return {"request_id": request_id()}

    return app


def test_request_ids_on_every_line_and_no_authorization(log_stream: io.StringIO) -> None:
    client = TestClient(_app())
    response = client.get(
        "/v1/things/001085000123?name=Nguyen",
        headers={"Authorization": "Bearer s3cr3t-v4lue", "X-Request-ID": "station-42.abc"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "station-42.abc"
    assert response.json() == {"request_id": "station-42.abc"}
    text = log_stream.getvalue()
    assert "s3cr3t-v4lue" not in text
    handler_line, access = _lines(log_stream)
    assert handler_line["request_id"] == access["request_id"] == "station-42.abc"
    assert handler_line["authorization"] == "[redacted]"
    # The access line names the route template: neither the path's number nor the query.
    assert (access["logger"], access["msg"], access["method"]) == (
        "central.access",
        "request",
        "GET",
    )
    assert (access["route"], access["status"]) == ("/v1/things/{thing_id}", 200)
    assert isinstance(access["duration_ms"], float)
    assert "Nguyen" not in access["route"]
    assert "001085000123" not in json.dumps(access)


def test_request_id_is_made_when_missing_or_unusable(log_stream: io.StringIO) -> None:
    client = TestClient(_app())
    made = client.get("/async")
    rid = made.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert made.json() == {"request_id": rid}
    forged = client.get("/async", headers={"X-Request-ID": "a" * 129})
    assert forged.headers["x-request-id"] != "a" * 129
    assert client.get("/nowhere").status_code == 404
    lines = _lines(log_stream)
    assert [line["request_id"] for line in lines[:2]] == [rid, rid]
    assert lines[-1]["route"] == "(unmatched)"
    assert lines[-1]["status"] == 404
    assert request_id() is None  # reset after each request


def test_text_format_and_reconfiguring(log_stream: io.StringIO) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", json=False, stream=stream)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_central_logs_handler", False)]
    assert ours == [handler]  # the JSON handler from the fixture was replaced, not doubled
    logging.getLogger("central.x").debug("hidden")
    logging.getLogger("central.x").info("shown", extra={"token": "abc123", "stage": "issue"})
    line = stream.getvalue().strip()
    assert "hidden" not in line
    assert line.endswith("INFO    central.x shown token=[redacted] stage=issue")
    assert "abc123" not in line
