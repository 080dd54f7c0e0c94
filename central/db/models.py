"""The registry's core state as SQLAlchemy 2 typed models, portable between SQLite and
PostgreSQL.

Portable choices: enums are stored as short strings with a CHECK constraint (no PostgreSQL
enum types to migrate), ids are ``Uuid`` (native on PostgreSQL, 32 hex characters on
SQLite), every timestamp is :class:`UtcDateTime` (timezone-aware UTC in Python, whatever the
database keeps), and JSON is the generic ``JSON`` type.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

from enrollment.ids import new_package_id

# Named constraints: Alembic (and SQLite's batch mode) can only alter what has a name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT that still becomes SQLite's auto-incrementing rowid (only INTEGER PRIMARY KEY does).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Refuses naive datetimes (their zone is a guess); stores UTC (SQLite keeps no zone, so it
    stores the UTC wall time); always returns an aware datetime in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: registry timestamps must be aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def new_id() -> uuid.UUID:
    """A time-ordered UUIDv7 (the package id generator), for rows without a natural id."""
    return uuid.UUID(new_package_id())


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class StationStatus(enum.StrEnum):
    active = "active"
    suspended = "suspended"
    revoked = "revoked"


class OperatorRole(enum.StrEnum):
    officer = "officer"  # enrolls citizens at a station
    supervisor = "supervisor"  # approves exceptions (unprintable fingers, overrides)
    adjudicator = "adjudicator"  # decides close dedup candidates at the registry


class PackageState(enum.StrEnum):
    received = "received"
    verified = "verified"
    quality_checked = "quality_checked"
    deduplicating = "deduplicating"
    adjudication = "adjudication"
    issued = "issued"
    card_encoded = "card_encoded"
    rejected = "rejected"


class JobState(enum.StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), uuid.UUID: Uuid()}


class Office(Base):
    """An enrollment office (usually a commune's or district's police), in the pre-2025
    63-province structure: GSO codes, province 2 digits, district 3, commune 5
    (``enrollment.divisions``)."""

    __tablename__ = "office"
    __table_args__ = (UniqueConstraint("commune_code", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    province_code: Mapped[str] = mapped_column(String(2), index=True)
    province_name: Mapped[str] = mapped_column(String(100))
    district_code: Mapped[str] = mapped_column(String(3))
    district_name: Mapped[str] = mapped_column(String(100))
    commune_code: Mapped[str] = mapped_column(String(5))
    commune_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class Station(Base):
    """An enrollment station ("HN-BD-001") of one office, and its certificate once enrolled.

    A revoked station's new packages are refused; its earlier ones stay valid (their
    ``received_at`` is before ``revoked_at``)."""

    __tablename__ = "station"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    office_id: Mapped[int] = mapped_column(ForeignKey("office.id"), index=True)
    status: Mapped[StationStatus] = mapped_column(
        _enum(StationStatus, "station_status"), default=StationStatus.active
    )
    created_at: Mapped[datetime]
    suspended_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    # X.509 serial in lower-case hex (up to 20 octets) and SHA-256 of the SubjectPublicKeyInfo.
    certificate_serial: Mapped[str | None] = mapped_column(String(40), unique=True)
    public_key_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    certificate_issued_at: Mapped[datetime | None]


class EnrollmentToken(Base):
    """A one-time token that lets a named station obtain its certificate.

    Only SHA-256 of the token is kept (the token is 256 random bits, so a plain hash cannot
    be reversed by search). ``used_at`` is set once, atomically (``central.db.ops.use_token``).
    """

    __tablename__ = "enrollment_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("station.id"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Operator(Base):
    """A person who works at an office's stations (or adjudicates at the registry)."""

    __tablename__ = "operator"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    office_id: Mapped[int] = mapped_column(ForeignKey("office.id"), index=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[OperatorRole] = mapped_column(_enum(OperatorRole, "operator_role"))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class Person(Base):
    """A person known to the registry: one personal number, never reused."""

    __tablename__ = "person"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    personal_number: Mapped[str] = mapped_column(String(12), unique=True)
    # The package whose enrollment created this person (no FK: package also points here).
    created_from_package_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    created_at: Mapped[datetime]


class Package(Base):
    """An enrollment package as received: where its body is, and where it is in the pipeline."""

    __tablename__ = "package"
    __table_args__ = (
        CheckConstraint(
            "(state = 'rejected') = (reject_code IS NOT NULL)", name="rejected_has_reason"
        ),
        Index(None, "station_id", "received_at"),
    )

    package_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("station.id"))
    body_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(512))
    received_at: Mapped[datetime]
    state: Mapped[PackageState] = mapped_column(
        _enum(PackageState, "package_state"), default=PackageState.received, index=True
    )
    state_changed_at: Mapped[datetime]
    reject_code: Mapped[str | None] = mapped_column(String(64))
    reject_text: Mapped[str | None] = mapped_column(Text)
    person_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("person.id"), index=True)


class Job(Base):
    """The work queue. A job is due when pending and ``not_before`` has passed, or when
    running and its lease (``locked_until``) has expired (its worker died)."""

    __tablename__ = "job"
    __table_args__ = (
        # One job of a kind per package: enqueueing on a state change is idempotent.
        UniqueConstraint("kind", "package_id"),
        Index(None, "state", "not_before"),
        Index(None, "state", "locked_until"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    package_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("package.package_id"), index=True
    )
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime]
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PersonalNumberSequence(Base):
    """The next 6-digit sequence for one personal-number prefix: 3-digit province code,
    century/sex digit, 2-digit birth year (``central.db.ops.allocate_sequence``)."""

    __tablename__ = "personal_number_sequence"
    __table_args__ = (CheckConstraint("next_value BETWEEN 1 AND 1000000", name="next_value"),)

    prefix: Mapped[str] = mapped_column(String(6), primary_key=True)
    next_value: Mapped[int] = mapped_column(Integer, default=1)


class AuditEntry(Base):
    """The append-only audit log; hashes as ``central.audit_chain`` defines them.

    ``prev_hash`` is unique, so the chain cannot fork: each entry has one successor at most.
    """

    __tablename__ = "audit_entry"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
