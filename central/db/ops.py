"""The operations whose safety rests on the database's locking, written once for both
backends.

How concurrent callers are kept apart:

- PostgreSQL (READ COMMITTED): row locks. ``SELECT ... FOR UPDATE`` on the sequence row
  makes a second allocator for the same prefix wait until the first commits or rolls back;
  it then reads the committed value. The job queue's ``FOR UPDATE SKIP LOCKED`` lets each
  worker pass over rows another worker is claiming instead of waiting for them.
- SQLite: one writer at a time. The engine (``central.db.engine``) starts every transaction
  with ``BEGIN IMMEDIATE``, which takes the database's write lock before the first read;
  a second writer waits (busy timeout) until the first commits. ``FOR UPDATE`` is not
  rendered on SQLite; the write lock already gives the same guarantee.

None of these functions commits: the caller commits the whole unit of work, so that (for
example) a sequence number and the person who receives it are written together or not at
all. A rolled-back allocation leaves no gap: the number was never given to anyone and the
next allocation gets it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from central.audit_chain import ChainEntry, next_entry
from central.db.models import (
    AuditEntry,
    EnrollmentToken,
    Job,
    JobState,
    PersonalNumberSequence,
    ResidentSequence,
    Station,
)

SEQUENCE_MAX = 999_999
_AUDIT_LOCK = 0x61_75_64_69_74  # "audit": PostgreSQL advisory lock key of the chain's head
_PREFIX = re.compile(r"^[0-9]{6}$")


class RegistryDbError(Exception):
    """Base of this module's refusals."""


class TokenRefused(RegistryDbError):  # noqa: N818 (a verdict on the token)
    """The enrollment token is unknown, expired or already used."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"enrollment token refused: {reason}")
        self.reason = reason


class SequenceExhaustedError(RegistryDbError):
    """All 999,999 numbers of a prefix are issued."""


def _require_write_lock(session: Session, what: str) -> None:
    _require_write_lock_on(session.connection(), what)


def _require_write_lock_on(connection: Connection, what: str) -> None:
    # central.db.engine.holds_write_lock, for a Connection as well as a Session.
    if connection.dialect.name != "sqlite":
        return
    mode = str(connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
    if mode not in ("IMMEDIATE", "EXCLUSIVE"):
        raise RuntimeError(
            f"{what} needs a writing transaction: on SQLite use an engine without "
            "sqlite_begin='DEFERRED' (central.db.engine)"
        )


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def use_token(session: Session, token: str, now: datetime) -> Station:
    """Mark a one-time enrollment token used and return its station.

    One conditional UPDATE (unused and unexpired) decides atomically: of two concurrent
    callers with the same token, exactly one changes the row; the other is refused.
    """
    digest = token_sha256(token)
    result = session.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.token_sha256 == digest,
            EnrollmentToken.used_at.is_(None),
            EnrollmentToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(EnrollmentToken.station_id)
        .execution_options(synchronize_session=False)
    )
    station_id = result.scalar_one_or_none()
    if station_id is None:
        row = session.execute(
            select(EnrollmentToken.used_at, EnrollmentToken.expires_at).where(
                EnrollmentToken.token_sha256 == digest
            )
        ).one_or_none()
        if row is None:
            raise TokenRefused("unknown token")
        if row.used_at is not None:
            raise TokenRefused("already used")
        raise TokenRefused("expired")
    return session.get_one(Station, station_id)


def allocate_sequence(session: Session, prefix: str) -> int:
    """The next 6-digit sequence number (1..999999) for a personal-number prefix.

    ``prefix`` is the first six digits: 3-digit province code, century/sex digit, 2-digit
    birth year. Consecutive, never repeated among committed transactions.
    """
    if not _PREFIX.match(prefix):
        raise ValueError(f"personal-number prefix {prefix!r} is not six digits")
    _require_write_lock(session, "allocate_sequence")
    locked = (
        select(PersonalNumberSequence.next_value)
        .where(PersonalNumberSequence.prefix == prefix)
        .with_for_update()
    )
    value = session.execute(locked).scalar_one_or_none()
    if value is None:
        # First number of this prefix: create the row unless a concurrent transaction just
        # did (then the INSERT waits for it and does nothing), and lock it.
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(
            insert(PersonalNumberSequence)
            .values(prefix=prefix, next_value=1)
            .on_conflict_do_nothing()
        )
        value = session.execute(locked).scalar_one()
    if value > SEQUENCE_MAX:
        raise SequenceExhaustedError(f"prefix {prefix} has issued all {SEQUENCE_MAX} numbers")
    session.execute(
        update(PersonalNumberSequence)
        .where(PersonalNumberSequence.prefix == prefix)
        .values(next_value=value + 1)
        .execution_options(synchronize_session=False)
    )
    return int(value)


class ResidentSeq:
    """Hands out resident ``seq`` values inside one transaction (:func:`resident_sequence`)."""

    def __init__(self, last: int) -> None:
        self.first_last = last
        self.last = last

    def next(self) -> int:
        self.last += 1
        return self.last

    def give_back(self) -> None:
        """Return the number :meth:`next` just gave (it was not used after all)."""
        if self.last == self.first_last:
            raise RuntimeError("no number to give back")
        self.last -= 1


_RESIDENT_SEQ_ROW = (
    select(ResidentSequence.last_seq).where(ResidentSequence.id == 1).with_for_update()
)


@contextmanager
def resident_sequence(session: Session | Connection) -> Iterator[ResidentSeq]:
    """The resident list's change counter, locked until the caller's transaction ends.

    Every resident insert or change takes ``seq.next()``. Numbers are given out under the
    counter row's lock, held until commit, so they commit in the order they were given: a
    station that has seen ``seq`` N committed can never later find a smaller one appear
    (with a database sequence it could, and its cursor would skip that row for good).

    On PostgreSQL the audit log's advisory lock is taken first: every writer of residents
    also appends to the audit log, and taking the two locks in one order everywhere
    (audit, then counter) is what keeps them from deadlocking. On SQLite the write lock
    (``BEGIN IMMEDIATE``) already serialises writers.
    """
    connection = session.connection() if isinstance(session, Session) else session
    _require_write_lock_on(connection, "resident_sequence")
    if connection.dialect.name == "postgresql":
        connection.execute(_AUDIT_LOCK_SQL, {"key": _AUDIT_LOCK})
    last = connection.execute(_RESIDENT_SEQ_ROW).scalar_one_or_none()
    if last is None:
        raise RuntimeError("the resident_sequence row is missing: run the migrations")
    seq = ResidentSeq(int(last))
    yield seq
    if seq.last != seq.first_last:
        connection.execute(
            update(ResidentSequence).where(ResidentSequence.id == 1).values(last_seq=seq.last)
        )


def _new_job(kind: str, package_id: uuid.UUID | None, now: datetime) -> dict[str, Any]:
    return {
        "kind": kind,
        "package_id": package_id,
        "state": JobState.pending,
        "attempts": 0,
        "not_before": now,
        "created_at": now,
        "updated_at": now,
    }


def enqueue_job(session: Session, kind: str, package_id: uuid.UUID | None, now: datetime) -> Job:
    """Add a pending job, due now. (One job per kind and package: a unique constraint.)"""
    job = Job(**_new_job(kind, package_id, now))
    session.add(job)
    session.flush()
    return job


_JOB_INSERT = insert(Job)


def insert_job(connection: Connection, kind: str, package_id: uuid.UUID, now: datetime) -> None:
    """:func:`enqueue_job` as one Core statement, for the ingest's hot path (no ORM object,
    no unit of work), inside the caller's transaction."""
    connection.execute(_JOB_INSERT, _new_job(kind, package_id, now))


def claim_next_job(
    session: Session,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    max_attempts: int | None = None,
) -> Job | None:
    """Claim the job due first, for ``lease``; None when nothing is due.

    Due: pending with ``not_before <= now``, or running with an expired lease (its worker
    stopped without finishing; the claim counts as a new attempt). With ``max_attempts``,
    a job whose lease expired that many times is failed instead of claimed again: a
    package that kills its worker every time must not take the workers down forever.
    Commit right after claiming: the lease is what keeps other workers away once the row
    lock is gone.
    """
    _require_write_lock(session, "claim_next_job")
    if max_attempts is not None:
        session.execute(
            update(Job)
            .where(
                Job.state == JobState.running,
                Job.locked_until <= now,
                Job.attempts >= max_attempts,
            )
            .values(
                state=JobState.failed,
                locked_by=None,
                locked_until=None,
                updated_at=now,
                last_error=f"its worker stopped during {max_attempts} attempts in a row",
            )
            .execution_options(synchronize_session=False)
        )
    due = or_(
        and_(Job.state == JobState.pending, Job.not_before <= now),
        and_(Job.state == JobState.running, Job.locked_until <= now),
    )
    job = session.execute(
        select(Job)
        .where(due)
        .order_by(Job.not_before, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if job is None:
        return None
    job.state = JobState.running
    job.locked_by = worker_id
    job.locked_until = now + lease
    job.attempts += 1
    job.updated_at = now
    session.flush()
    return job


def _finish(session: Session, job: Job, worker_id: str, now: datetime, **values: object) -> bool:
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == JobState.running, Job.locked_by == worker_id)
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    return bool(getattr(result, "rowcount", 0) == 1)


def complete_job(session: Session, job: Job, worker_id: str, now: datetime) -> bool:
    """Mark a claimed job done. False when this worker no longer holds it (its lease expired
    and another worker claimed it): the caller must then drop its result."""
    return _finish(
        session, job, worker_id, now, state=JobState.done, locked_by=None, locked_until=None
    )


def retry_job(
    session: Session,
    job: Job,
    worker_id: str,
    now: datetime,
    error: str,
    *,
    max_attempts: int = 8,
    base_delay: timedelta = timedelta(seconds=10),
) -> bool:
    """Record a failed attempt: pending again after an exponential backoff
    (``base_delay * 2**(attempts-1)``), or failed for good after ``max_attempts``."""
    if job.attempts >= max_attempts:
        values: dict[str, object] = {"state": JobState.failed}
    else:
        values = {
            "state": JobState.pending,
            "not_before": now + base_delay * 2 ** max(job.attempts - 1, 0),
        }
    return _finish(
        session, job, worker_id, now, locked_by=None, locked_until=None, last_error=error, **values
    )


def requeue_job(session: Session, job_id: int, now: datetime) -> Job:
    """Put a failed job back in the queue, due now, with a fresh count of attempts (after
    its cause was fixed: a rotated Document Signer, an object store back online)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise LookupError(f"no job {job_id}")
    if job.state is not JobState.failed:
        raise ValueError(f"job {job_id} is {job.state.value}, only failed jobs are retried")
    job.state = JobState.pending
    job.attempts = 0
    job.not_before = now
    job.updated_at = now
    session.flush()
    return job


def _chain_entry(row: AuditEntry) -> ChainEntry:
    return ChainEntry(
        row.seq, row.at, row.actor, row.action, row.subject, row.details, row.prev_hash, row.hash
    )


def append_audit(
    session: Session | Connection,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any] | None = None,
) -> ChainEntry:
    """Append one entry to the hash-chained audit log (``central.audit_chain``); the entry.

    Appenders are serialised so that each links to the true last entry: on PostgreSQL by
    a transaction-level advisory lock (a row lock on the last entry would not do: a
    waiter would then link to an entry that is no longer last), on SQLite by the write
    lock. The unique ``prev_hash`` refuses a fork should anything bypass this.

    Core statements, not ORM objects: they run on every upload, and the unit of work's
    flush cost more than the rest of the append. A Session runs them in its transaction
    (after flushing what it holds); a Connection, inside its own transaction.
    """
    connection = session.connection() if isinstance(session, Session) else session
    _require_write_lock_on(connection, "append_audit")
    if connection.dialect.name == "postgresql":
        connection.execute(_AUDIT_LOCK_SQL, {"key": _AUDIT_LOCK})
    if isinstance(session, Session):
        session.flush()  # entries the session holds come before this one
    last = connection.execute(_AUDIT_HEAD).one_or_none()
    previous = None if last is None else ChainEntry(*last)
    entry = next_entry(previous, at, actor, action, subject, details)
    connection.execute(
        _AUDIT_INSERT,
        {
            "seq": entry.seq,
            "at": entry.at,
            "actor": entry.actor,
            "action": entry.action,
            "subject": entry.subject,
            "details": dict(entry.details),
            "prev_hash": entry.prev_hash,
            "hash": entry.hash,
        },
    )
    return entry


_AUDIT_LOCK_SQL = text("SELECT pg_advisory_xact_lock(:key)")
_AUDIT_HEAD = (
    select(
        AuditEntry.seq,
        AuditEntry.at,
        AuditEntry.actor,
        AuditEntry.action,
        AuditEntry.subject,
        AuditEntry.details,
        AuditEntry.prev_hash,
        AuditEntry.hash,
    )
    .order_by(AuditEntry.seq.desc())
    .limit(1)
)
_AUDIT_INSERT = insert(AuditEntry)


def audit_entries(session: Session, after_seq: int = 0) -> Iterator[ChainEntry]:
    """The audit log in order (from ``after_seq + 1``), for ``audit_chain.verify_chain``."""
    rows = session.execute(
        select(AuditEntry).where(AuditEntry.seq > after_seq).order_by(AuditEntry.seq)
    ).scalars()
    for row in rows:
        yield _chain_entry(row)
