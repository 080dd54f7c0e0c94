"""The pipeline worker: rejections with reasons, leases that expire when a worker dies
(and a late worker's result dropped), retries with backoff, stale jobs, an adjudicated
"different", and two workers at once on PostgreSQL each package processed exactly once.

Packages carry four real rolled fingers (1, 2, 6, 7) and a face; the quality stage uses
the station's NFIQ 2 model here to keep the tests quick (the registry's default, the
real NFIQ 2, runs in tests/test_registry_e2e.py)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.app import create_app
from central.db.models import AuditEntry, Job, JobState, Package, Person
from central.db.ops import claim_next_job
from central.services import Registry
from enrollment.ids import new_package_id
from enrollment.keys.software import SoftwareKeySigner
from enrollment.request_signing import StationRequestAuth
from tests import registrykit
from tests.registrykit import ADMIN, Clock

STATION = "HN-BD-001"
FINGERS = (1, 2, 6, 7)


@dataclass
class Setup:
    client: TestClient
    registry: Registry
    signer: SoftwareKeySigner
    clock: Clock
    admin: dict[str, str]

    def upload(self, person: int, sitting: int = 0, **kw: Any) -> str:
        built = registrykit.package(
            person,
            sitting,
            signer=self.signer,
            station_id=STATION,
            recipient=self.registry.keys.package_public_key(),
            fingers=kw.pop("fingers", FINGERS),
            **kw,
        )
        r = self.client.put(
            f"/v1/packages/{built.package_id}",
            content=built.data,
            auth=StationRequestAuth(self.signer, STATION),
        )
        assert r.status_code == 201, r.text
        return built.package_id

    def state(self, package_id: str) -> dict[str, Any]:
        r = self.client.get(
            f"/v1/packages/{package_id}", auth=StationRequestAuth(self.signer, STATION)
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


def _setup(tmp_path: Path, database_url: str | None) -> Iterator[Setup]:
    clock = Clock(datetime.now(UTC))
    settings = registrykit.registry_settings(
        tmp_path,
        database_url,
        quality={"finger_scorer": "station-model", "min_fingers": 4},
        worker={"in_process": False, "lease_seconds": 60, "retry_base_seconds": 10},
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        admin = registrykit.login(client, *ADMIN)
        signer, _ = registrykit.onboard(client, admin, STATION)
        registry = client.app.state.registry  # type: ignore[attr-defined]
        yield Setup(client, registry, signer, clock, admin)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    yield from _setup(tmp_path, None)


def test_recapture_and_ineligible_are_rejected_with_reasons(setup: Setup) -> None:
    smudged = setup.upload(1, blank=(2,))
    child = setup.upload(6, date_of_birth="2016-05-01")
    setup.registry.make_worker("w").drain()
    s = setup.state(smudged)
    assert s["state"] == "rejected"
    assert s["reject_code"] == "recapture-needed"
    assert [(r["what"], r["position"]) for r in s["recapture"]] == [("finger", 2)]
    assert "right index" in s["recapture"][0]["text"]
    c = setup.state(child)
    assert c["state"] == "rejected"
    assert c["reject_code"] == "ineligible-age"


def test_a_dead_workers_job_is_taken_over_and_its_late_result_dropped(setup: Setup) -> None:
    pid = setup.upload(1)
    registry = setup.registry
    dead = registry.make_worker("dead")
    with Session(registry.engine) as session, session.begin():
        job = claim_next_job(session, "dead", setup.clock(), timedelta(seconds=60))
        assert job is not None
        assert job.kind == "verify"
        session.expunge(job)
    # Nobody else may take it while the lease runs ...
    assert registry.make_worker("other").run_once() is None
    # ... and once it has run out, another worker does the job.
    setup.clock.now += timedelta(seconds=61)
    results = registry.make_worker("other").drain()
    assert [r.kind for r in results][:1] == ["verify"]
    assert setup.state(pid)["state"] == "issued"
    # The dead worker wakes up and finishes its stale copy: dropped, nothing applied twice.
    assert dead._run(job).outcome in ("lost", "stale")
    with Session(registry.engine) as session:
        actions = list(
            session.scalars(select(AuditEntry.action).where(AuditEntry.subject == f"package:{pid}"))
        )
    assert actions.count("package.verified") == 1
    assert actions.count("package.issued") == 1


def test_a_failing_stage_is_retried_with_backoff_then_succeeds(setup: Setup) -> None:
    pid = setup.upload(1)
    registry = setup.registry
    with Session(registry.engine) as session:
        key = session.get_one(Package, uuid.UUID(pid)).blob_key
    data = registry.blobs.get(key)
    registry.blobs.delete(key)  # the object store loses it for a while
    worker = registry.make_worker("w")
    result = worker.run_once()
    assert result is not None
    assert result.outcome == "retry"
    with Session(registry.engine) as session:
        job = session.scalars(select(Job).where(Job.package_id == uuid.UUID(pid))).one()
        assert job.state is JobState.pending
        assert job.not_before >= setup.clock() + timedelta(seconds=9)
        assert job.last_error
    assert worker.run_once() is None  # not due yet
    registry.blobs.put(key, data)
    setup.clock.now += timedelta(seconds=11)
    worker.drain()
    assert setup.state(pid)["state"] == "issued"


def test_adjudicated_different_gets_its_own_number(setup: Setup) -> None:
    first = setup.upload(1)
    setup.registry.make_worker("w").drain()
    again = setup.upload(1, 1, demographics=55)
    setup.registry.make_worker("w").drain()
    assert setup.state(again)["state"] == "adjudication"
    setup.client.post(
        "/v1/users",
        json={"username": "adj", "password": "adjudicate me please", "roles": ["adjudicator"]},
        headers=setup.admin,
    ).raise_for_status()
    adj = registrykit.login(setup.client, "adj", "adjudicate me please")
    case = setup.client.get("/v1/cases", headers=adj).json()[0]
    bad = setup.client.post(
        f"/v1/cases/{case['id']}/decision",
        json={"decision": "same", "person_id": str(uuid.uuid4())},
        headers=adj,
    )
    assert bad.status_code == 422
    ok = setup.client.post(
        f"/v1/cases/{case['id']}/decision",
        json={"decision": "different", "reason": "twins"},
        headers=adj,
    )
    assert ok.status_code == 200, ok.text
    setup.registry.make_worker("w").drain()
    with Session(setup.registry.engine) as session:
        numbers = {session.get_one(Package, uuid.UUID(p)).person_id for p in (first, again)}
        assert len(numbers) == 2
        assert session.scalar(select(func.count()).select_from(Person)) == 2


@pytest.fixture
def pg_setup(tmp_path: Path, postgres_db: str) -> Iterator[Setup]:
    yield from _setup(tmp_path, postgres_db)


@pytest.mark.timeout(600)
def test_two_workers_on_postgresql_process_each_package_once(pg_setup: Setup) -> None:
    setup = pg_setup
    packages = [setup.upload(p) for p in (1, 6, 10)] + [setup.upload(1, 1, demographics=9)]
    workers = [setup.registry.make_worker(f"w{i}") for i in range(2)]
    done: list[list[Any]] = [[], []]
    threads = [
        threading.Thread(target=lambda w=w, i=i: done[i].extend(w.drain()))
        for i, w in enumerate(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(done), "both workers took jobs"
    states = [setup.state(p)["state"] for p in packages]
    assert states == ["issued", "issued", "issued", "adjudication"]
    with Session(setup.registry.engine) as session:
        assert session.scalar(select(func.count()).select_from(Person)) == 3
        per = session.execute(
            select(AuditEntry.subject, AuditEntry.action, func.count())
            .where(AuditEntry.action.like("package.%"))
            .group_by(AuditEntry.subject, AuditEntry.action)
        ).all()
        assert all(n == 1 for _, _, n in per), per
        left = session.scalar(
            select(func.count()).select_from(Job).where(Job.state != JobState.done)
        )
        assert left == 0


def test_a_job_that_kills_its_worker_is_failed_then_retried_by_a_supervisor(
    setup: Setup,
) -> None:
    pid = setup.upload(1)
    registry = setup.registry
    attempts = registry.settings.worker.max_attempts
    for _ in range(attempts):  # each claim's worker "dies": the lease runs out
        with Session(registry.engine) as session, session.begin():
            job = claim_next_job(session, "doomed", setup.clock(), timedelta(seconds=60), attempts)
            assert job is not None
        setup.clock.now += timedelta(seconds=61)
    assert registry.make_worker("next").run_once() is None  # failed, not claimed again
    setup.clock.now = datetime.now(UTC)  # back to the station's time (its signatures)
    setup.client.post(
        "/v1/users",
        json={"username": "sup", "password": "supervise the queue", "roles": ["supervisor"]},
        headers=setup.admin,
    ).raise_for_status()
    sup = registrykit.login(setup.client, "sup", "supervise the queue")
    failed = setup.client.get("/v1/registry/jobs", headers=sup).json()
    assert [(j["kind"], j["package_id"]) for j in failed] == [("verify", pid)]
    assert "stopped" in failed[0]["last_error"]
    again = setup.client.post(f"/v1/registry/jobs/{failed[0]['id']}/retry", headers=sup)
    assert again.status_code == 200, again.text
    assert again.json()["state"] == "pending"
    assert (
        setup.client.post(f"/v1/registry/jobs/{failed[0]['id']}/retry", headers=sup).status_code
        == 409
    )
    registry.make_worker("w").drain()
    assert setup.state(pid)["state"] == "issued"


def test_two_adjudicators_deciding_one_case_at_once_on_postgresql(
    tmp_path: Path, postgres_db: str
) -> None:
    from central import adjudication
    from central.db.engine import make_engine
    from central.db.migrate import upgrade
    from central.db.models import (
        AdjudicationCase,
        CaseDecision,
        CaseState,
        Office,
        PackageState,
        Station,
    )

    upgrade(postgres_db)
    engine = make_engine(postgres_db)
    now = datetime.now(UTC)
    pid = uuid.UUID(new_package_id())
    with Session(engine) as s, s.begin():
        s.add(
            Office(
                id=1,
                name="o",
                province_code="01",
                province_name="p",
                district_code="001",
                district_name="d",
                commune_code="00001",
                commune_name="c",
                created_at=now,
            )
        )
        s.add(Station(id="HN-BD-001", office_id=1, created_at=now))
        s.flush()
        s.add(
            Package(
                package_id=pid,
                station_id="HN-BD-001",
                body_sha256="0" * 64,
                size=1,
                blob_key="k",
                received_at=now,
                state=PackageState.adjudication,
                state_changed_at=now,
                receipt_number="r1",
            )
        )
        s.flush()
        s.add(AdjudicationCase(package_id=pid, state=CaseState.open, candidates=[], opened_at=now))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def decide(name: str) -> None:
        barrier.wait()
        try:
            with Session(engine) as s, s.begin():
                adjudication.decide(s, 1, CaseDecision.different, None, None, name, now)
            outcomes.append("decided")
        except adjudication.AdjudicationError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=decide, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert sorted(outcomes) == ["already_decided", "decided"]
