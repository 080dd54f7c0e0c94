"""The registry's storage foundation on SQLite and on a real PostgreSQL: migrations, the
invariants the schema holds, and the operations that must stay safe under concurrency
(personal-number sequences, the job queue, one-time tokens)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from central.audit_chain import ChainBroken, verify_chain
from central.db import migrate
from central.db.engine import (
    DatabaseSettings,
    engine_from_settings,
    make_engine,
)
from central.db.models import (
    AuditEntry,
    Base,
    EnrollmentToken,
    Job,
    JobState,
    Office,
    Package,
    PackageState,
    Person,
    Station,
    StationStatus,
)
from central.db.ops import (
    TokenRefused,
    allocate_sequence,
    append_audit,
    audit_entries,
    claim_next_job,
    complete_job,
    enqueue_job,
    retry_job,
    token_sha256,
    use_token,
)
from enrollment.ids import new_package_id
from enrollment.personal_number import compose
from tests.pgkit import ENV_URL, PgCluster, postgres_unavailable

T0 = datetime(2021, 3, 1, 8, 0, tzinfo=UTC)
PREFIX = "001" + "0" + "85"  # Ha Noi, 20th century male, born 1985


def _station(sessions: sessionmaker[Session], station_id: str = "HN-BD-001") -> Station:
    with sessions.begin() as session:
        office = Office(
            name="Công an phường Phúc Xá",
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
        station = Station(id=station_id, office_id=office.id, created_at=T0)
        session.add(station)
    return station


def _package(station_id: str, package_id: str | None = None) -> Package:
    pid = uuid.UUID(package_id or new_package_id())
    return Package(
        package_id=pid,
        receipt_number=pid.hex[:16],
        station_id=station_id,
        body_sha256="ab" * 32,
        size=123_456,
        blob_key="packages/x",
        received_at=T0,
        state_changed_at=T0,
    )


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]


# --- Migrations ---------------------------------------------------------------------------


def test_migrations_apply_from_empty_and_are_idempotent(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()
    migrate.upgrade(db_url)  # a second start finds nothing to do
    assert migrate.current(db_url) == migrate.head()
    assert migrate.schema_differences(db_url) == []
    engine = make_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_migrations_go_down_and_up_again(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate.upgrade(db_url)
    assert migrate.schema_differences(db_url) == []


def test_settings_make_an_engine(tmp_path: Path) -> None:
    settings = DatabaseSettings(url=SecretStr(f"sqlite:///{tmp_path / 'var' / 'registry.db'}"))
    assert "registry.db" not in repr(settings)  # the URL may hold a password
    engine = engine_from_settings(settings)
    try:
        migrate.upgrade(settings.url.get_secret_value())
        assert (tmp_path / "var" / "registry.db").exists()  # its folder made on the way
    finally:
        engine.dispose()


def test_migrations_from_several_processes_at_once(db_url: str) -> None:
    """API processes and workers all call upgrade() at start: one migrates, the rest wait."""
    _run_threads(4, lambda _i: migrate.upgrade(db_url))
    assert migrate.current(db_url) == migrate.head()


def test_sqlite_connections_are_durable_and_strict(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with engine.connect() as connection:

            def pragma(name: str) -> object:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 2  # FULL: the WAL is synced at every commit
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == 30_000
    finally:
        engine.dispose()


def test_engine_refuses_other_drivers() -> None:
    with pytest.raises(ValueError, match="psycopg"):
        make_engine("postgresql://u@localhost/db")
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://u@localhost/db")


# --- Invariants ---------------------------------------------------------------------------


def test_timestamps_are_aware_utc(sessions: sessionmaker[Session]) -> None:
    _station(sessions)
    hanoi = timezone(timedelta(hours=7))
    with sessions.begin() as session:
        session.get_one(Station, "HN-BD-001").suspended_at = datetime(
            2021, 3, 1, 15, 0, tzinfo=hanoi
        )
    with sessions() as session:
        suspended = session.execute(select(Station.suspended_at)).scalar_one()
    assert suspended == T0
    assert suspended is not None
    assert suspended.tzinfo is not None
    assert suspended.utcoffset() == timedelta(0)
    with sessions() as session:
        session.get_one(Station, "HN-BD-001").revoked_at = datetime(2021, 3, 1)
        with pytest.raises(StatementError, match="naive"):
            session.flush()


def test_a_package_id_is_stored_once(sessions: sessionmaker[Session]) -> None:
    _station(sessions)
    package_id = new_package_id()
    with sessions.begin() as session:
        session.add(_package("HN-BD-001", package_id))
    with sessions() as session:
        session.add(_package("HN-BD-001", package_id))
        with pytest.raises(IntegrityError):
            session.flush()
    with sessions() as session:
        stored = session.get_one(Package, uuid.UUID(package_id))
        assert str(stored.package_id) == package_id
        assert stored.state is PackageState.received


def test_a_rejected_package_has_a_reason(sessions: sessionmaker[Session]) -> None:
    _station(sessions)
    package = _package("HN-BD-001")
    package.state = PackageState.rejected
    with sessions() as session:
        session.add(package)
        with pytest.raises(IntegrityError):
            session.flush()


def test_a_package_needs_a_known_station(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        session.add(_package("HN-XX-999"))
        with pytest.raises(IntegrityError):
            session.flush()


def test_a_personal_number_belongs_to_one_person(sessions: sessionmaker[Session]) -> None:
    def person() -> Person:
        return Person(
            personal_number="001085000001", created_from_package_id=uuid.uuid4(), created_at=T0
        )

    with sessions.begin() as session:
        session.add(person())
    with sessions() as session:
        session.add(person())
        with pytest.raises(IntegrityError):
            session.flush()


# --- One-time enrollment tokens -----------------------------------------------------------


def _token(sessions: sessionmaker[Session], token: str, expires: datetime) -> None:
    with sessions.begin() as session:
        session.add(
            EnrollmentToken(
                token_sha256=token_sha256(token),
                station_id="HN-BD-001",
                created_at=T0,
                expires_at=expires,
            )
        )


def test_a_token_is_used_once(sessions: sessionmaker[Session]) -> None:
    _station(sessions)
    _token(sessions, "secret-1", T0 + timedelta(days=7))
    _token(sessions, "secret-2", T0 + timedelta(hours=1))
    with sessions.begin() as session:
        station = use_token(session, "secret-1", T0 + timedelta(minutes=5))
        assert station.id == "HN-BD-001"
        assert station.status is StationStatus.active
    with sessions.begin() as session, pytest.raises(TokenRefused, match="already used"):
        use_token(session, "secret-1", T0 + timedelta(minutes=6))
    with sessions.begin() as session, pytest.raises(TokenRefused, match="expired"):
        use_token(session, "secret-2", T0 + timedelta(hours=1))
    with sessions.begin() as session, pytest.raises(TokenRefused, match="unknown"):
        use_token(session, "guess", T0)
    with sessions() as session:
        stored = session.execute(
            select(EnrollmentToken).where(EnrollmentToken.token_sha256 == token_sha256("secret-1"))
        ).scalar_one()
        assert stored.used_at == T0 + timedelta(minutes=5)


def test_a_token_raced_by_many_is_used_once(sessions: sessionmaker[Session]) -> None:
    _station(sessions)
    _token(sessions, "contested", T0 + timedelta(days=1))
    winners: list[int] = []
    refused: list[int] = []

    def attempt(index: int) -> None:
        try:
            with sessions.begin() as session:
                use_token(session, "contested", T0)
            winners.append(index)
        except TokenRefused:
            refused.append(index)

    _run_threads(6, attempt)
    assert len(winners) == 1
    assert len(refused) == 5


# --- Personal-number sequences ------------------------------------------------------------


def _issue(sessions: sessionmaker[Session], prefix: str, roll_back: bool = False) -> int | None:
    """One issuance transaction: allocate a number and create the person who gets it."""
    with sessions() as session, session.begin():
        sequence = allocate_sequence(session, prefix)
        session.add(
            Person(
                personal_number=compose(prefix, sequence),
                created_from_package_id=uuid.uuid4(),
                created_at=T0,
            )
        )
        session.flush()
        if roll_back:
            session.rollback()
            return None
    return sequence


def test_sequence_starts_at_one_and_a_rollback_leaves_no_gap(
    sessions: sessionmaker[Session],
) -> None:
    assert _issue(sessions, PREFIX) == 1
    assert _issue(sessions, PREFIX, roll_back=True) is None
    assert _issue(sessions, PREFIX) == 2  # the rolled-back 2 was never given to anyone
    assert _issue(sessions, "079" + "3" + "07") == 1  # each prefix counts on its own
    with pytest.raises(ValueError, match="six digits"), sessions.begin() as session:
        allocate_sequence(session, "0010")


def test_concurrent_workers_get_consecutive_numbers(sessions: sessionmaker[Session]) -> None:
    """The core safety property: no number twice, no number skipped, under contention."""
    workers, per_worker = 8, 15
    issued: list[int] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for n in range(per_worker):
            # Every fifth transaction of some workers fails after allocating.
            sequence = _issue(sessions, PREFIX, roll_back=(index % 2 == 0 and n % 5 == 4))
            if sequence is not None:
                with lock:
                    issued.append(sequence)

    _run_threads(workers, worker)
    assert sorted(issued) == list(range(1, len(issued) + 1))
    with sessions() as session:
        numbers = session.execute(select(Person.personal_number)).scalars().all()
    assert sorted(numbers) == [compose(PREFIX, s) for s in range(1, len(issued) + 1)]


# A worker process: connects, says "ready", waits for "go", allocates, prints its numbers.
_ALLOCATOR = """
import sys, uuid
from datetime import UTC, datetime
from central.db.engine import (
    DatabaseSettings,
    engine_from_settings,
    make_engine,
    session_factory,
)
from central.db.models import Person
from central.db.ops import allocate_sequence
from enrollment.personal_number import compose
url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
sessions = session_factory(make_engine(url))
with sessions() as session:
    session.connection()
print("ready", flush=True)
sys.stdin.readline()
for _ in range(count):
    with sessions.begin() as session:
        value = allocate_sequence(session, prefix)
        session.add(Person(personal_number=compose(prefix, value),
                           created_from_package_id=uuid.uuid4(), created_at=datetime.now(UTC)))
    print(value, flush=True)
"""


def test_sqlite_worker_processes_get_consecutive_numbers(tmp_path: Path) -> None:
    """SQLite at its limit: separate worker processes on one file, one writer at a time."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    workers, per_worker = 3, 25
    root = Path(__file__).parent.parent
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _ALLOCATOR, url, PREFIX, str(per_worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        for _ in range(workers)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        values = []
        for process in processes:
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0
            values += [int(line) for line in out.split()]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert sorted(values) == list(range(1, workers * per_worker + 1))


# --- The job queue ------------------------------------------------------------------------


def test_each_due_job_goes_to_exactly_one_worker(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        ids = [
            enqueue_job(session, f"kind{i}", None, T0 + timedelta(seconds=i)).id for i in range(40)
        ]
        enqueue_job(session, "later", None, T0 + timedelta(hours=1))  # not due yet
    claimed: dict[str, list[int]] = {}
    now = T0 + timedelta(minutes=1)

    def worker(index: int) -> None:
        mine = claimed.setdefault(f"w{index}", [])
        while True:
            with sessions.begin() as session:
                job = claim_next_job(session, f"w{index}", now, timedelta(minutes=5))
                if job is None:
                    return
                mine.append(job.id)

    _run_threads(6, worker)
    every = [job_id for jobs in claimed.values() for job_id in jobs]
    assert sorted(every) == ids  # all due jobs, none twice, the later one left alone
    with sessions() as session:
        running = session.execute(select(Job).where(Job.state == JobState.running)).scalars().all()
        assert {job.id for job in running} == set(ids)
        assert all(
            job.attempts == 1 and job.locked_until == now + timedelta(minutes=5) for job in running
        )


def test_jobs_are_claimed_in_due_order(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        late = enqueue_job(session, "b", None, T0 + timedelta(seconds=2)).id
        early = enqueue_job(session, "a", None, T0 + timedelta(seconds=1)).id
    with sessions.begin() as session:
        first = claim_next_job(session, "w", T0 + timedelta(seconds=5), timedelta(seconds=30))
        assert first is not None
        assert first.id == early
    with sessions.begin() as session:
        second = claim_next_job(session, "w", T0 + timedelta(seconds=5), timedelta(seconds=30))
        assert second is not None
        assert second.id == late


def test_an_expired_lease_makes_a_job_claimable_again(sessions: sessionmaker[Session]) -> None:
    lease = timedelta(seconds=60)
    with sessions.begin() as session:
        job_id = enqueue_job(session, "verify", None, T0).id
    with sessions.begin() as session:
        first = claim_next_job(session, "crashed", T0, lease)
        assert first is not None
        assert first.id == job_id
    with sessions.begin() as session:
        assert claim_next_job(session, "other", T0 + timedelta(seconds=59), lease) is None
    with sessions.begin() as session:
        again = claim_next_job(session, "other", T0 + timedelta(seconds=60), lease)
        assert again is not None
        assert again.id == job_id
        assert again.locked_by == "other"
        assert again.attempts == 2
    # The first worker comes back late: its result no longer counts.
    with sessions.begin() as session:
        assert not complete_job(
            session, session.get_one(Job, job_id), "crashed", T0 + timedelta(seconds=61)
        )
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        assert complete_job(session, job, "other", T0 + timedelta(seconds=62))
        assert job.state is JobState.done
        assert job.locked_by is None


def test_a_failed_job_is_retried_after_a_backoff(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job_id = enqueue_job(session, "dedup", None, T0).id
    delays = []
    now = T0
    for _attempt in range(3):
        with sessions.begin() as session:
            job = claim_next_job(session, "w", now + timedelta(days=1), timedelta(seconds=30))
            assert job is not None
            assert job.id == job_id
            now = now + timedelta(days=1)
            assert retry_job(session, job, "w", now, "matcher down", max_attempts=3)
            delays.append(job.not_before - now)
    assert delays[:2] == [timedelta(seconds=10), timedelta(seconds=20)]
    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.failed
        assert job.last_error == "matcher down"
        assert job.attempts == 3


def test_one_job_of_a_kind_per_package(sessions: sessionmaker[Session]) -> None:
    _station(sessions)
    package = _package("HN-BD-001")
    with sessions.begin() as session:
        session.add(package)
        session.flush()
        enqueue_job(session, "verify", package.package_id, T0)
    with sessions() as session, pytest.raises(IntegrityError):
        enqueue_job(session, "verify", package.package_id, T0)
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 1


# --- The audit log -------------------------------------------------------------------------


def test_concurrent_audit_appends_make_one_chain(sessions: sessionmaker[Session]) -> None:
    def writer(index: int) -> None:
        for n in range(5):
            with sessions.begin() as session:
                append_audit(
                    session,
                    T0 + timedelta(seconds=n),
                    f"worker:w{index}",
                    "package.verified",
                    str(uuid.uuid4()),
                    {"n": n, "note": "Đã xác minh"},
                )

    _run_threads(4, writer)
    with sessions() as session:
        entries = list(audit_entries(session))
        assert verify_chain(entries) == 20
        assert [e.seq for e in entries] == list(range(1, 21))
        session.execute(update(AuditEntry).where(AuditEntry.seq == 7).values(details={"n": 99}))
        with pytest.raises(ChainBroken, match="entry 7"):
            verify_chain(audit_entries(session))
        session.rollback()


# --- The test cluster itself --------------------------------------------------------------

_KILLED_PARENT = """
import os, signal, sys
from tests.pgkit import PgCluster
cluster = PgCluster()
cluster.start()
print(cluster.base, cluster.port, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(bool(os.environ.get(ENV_URL)), reason=f"{ENV_URL} names a server")
def test_the_test_cluster_dies_with_a_killed_test_run() -> None:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_PARENT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    base, port = result.stdout.split()
    deadline = time.monotonic() + 15
    while Path(base).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(base).exists(), "the cluster's directory outlived the killed run"
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", int(port)), timeout=1),
    ):
        pass


def test_each_test_gets_its_own_database(postgres_db: str, postgres_url: str) -> None:
    engine = make_engine(postgres_db)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT current_database()")).scalar() != "postgres"
            assert inspect(connection).get_table_names() == []
    finally:
        engine.dispose()


def test_cluster_start_and_stop_leave_nothing(tmp_path: Path) -> None:
    if os.environ.get(ENV_URL) or postgres_unavailable():
        pytest.skip("no local PostgreSQL binaries, or a server is given")
    cluster = PgCluster()
    cluster.start()
    base = cluster.base
    assert base is not None
    assert (base / "data").is_dir()
    cluster.stop()
    assert not base.exists()
