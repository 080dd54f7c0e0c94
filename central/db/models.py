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
from datetime import UTC, date, datetime
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
    LargeBinary,
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


class UserRole(enum.StrEnum):
    """Roles of the registry's people (OAuth2 password flow); a user may hold several."""

    admin = "admin"  # offices, stations, tokens, operators, users, keys
    supervisor = "supervisor"  # oversees the pipeline: packages, stations' activity
    adjudicator = "adjudicator"  # decides dedup cases
    auditor = "auditor"  # reads the audit log and everything else, changes nothing
    reporting = "reporting"  # reads progress reports and exports


class ResidentStatus(enum.StrEnum):
    """Where a resident of the pre-loaded list (DC01) stands with the registry."""

    pending = "pending"  # nobody has enrolled them yet
    in_progress = "in_progress"  # a package naming them was received
    enrolled = "enrolled"  # that package was issued


class CaseState(enum.StrEnum):
    open = "open"
    decided = "decided"


class CaseDecision(enum.StrEnum):
    same = "same"  # the enrollment is linked to the candidate's existing number
    different = "different"  # a different person: continues to issuance


class SignerKind(enum.StrEnum):
    csca = "csca"  # Country Signing CA (ICAO 9303-12)
    ds = "ds"  # Document Signer: signs each chip's EF.SOD


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
    # The latest heartbeat (central.station_sync.Heartbeat as JSON) and when it arrived.
    last_heartbeat_at: Mapped[datetime | None]
    last_heartbeat: Mapped[dict[str, Any] | None] = mapped_column(JSON)


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
    # What the office's stations check offline (central.station_sync): Argon2id PHC strings
    # of the PIN and the password, and ISO/IEC 19794-2 finger templates as
    # [{"position": 1-10, "template": base64}].
    pin_hash: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    fingers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    credentials_updated_at: Mapped[datetime | None]


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
        # Per-day reports and quota progress range over received_at alone.
        Index(None, "received_at"),
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
    # The acknowledgement the station keeps (printed on the citizen's slip).
    receipt_number: Mapped[str] = mapped_column(String(32), unique=True)
    # Filled by the verify stage from the decrypted record (reporting, the demographic
    # pre-check and the adjudicator's view; the body itself stays encrypted in the store).
    office_id: Mapped[int | None] = mapped_column(ForeignKey("office.id"), index=True)
    name_key: Mapped[str | None] = mapped_column(String(200), index=True)
    date_of_birth: Mapped[str | None] = mapped_column(String(10))
    sex: Mapped[str | None] = mapped_column(String(1))
    place_code: Mapped[str | None] = mapped_column(String(5))
    # Recapture reasons (quality stage) and other per-stage findings, as JSON.
    findings: Mapped[dict[str, Any] | None] = mapped_column(JSON)


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


class User(Base):
    """A person who uses the registry's API (not a station operator): OAuth2 password flow.

    ``password_hash`` is an Argon2id PHC string; ``roles`` a list of :class:`UserRole`."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class RequestNonce(Base):
    """Nonces of station-signed requests seen recently: a replayed request is refused.

    Rows older than the signature's accepted age can be deleted (nothing older is accepted).
    """

    __tablename__ = "request_nonce"

    station_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(index=True)


class Upload(Base):
    """A resumable upload in progress (ranged PUTs): chunks wait in the blob store under
    ``uploads/<package id>/<offset>`` until the last one arrives."""

    __tablename__ = "upload"

    package_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("station.id"), index=True)
    total_size: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    # The whole body's SHA-256 as the station declared it (Repr-Digest), hex.
    body_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class GalleryEntry(Base):
    """One enrollment in the dedup gallery: its templates (``BiometricTemplate``) and,
    once known, the person it belongs to. Gallery labels are this table's ids."""

    __tablename__ = "gallery_entry"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    package_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("package.package_id"), unique=True)
    person_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("person.id"), index=True)
    inserted_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class BiometricTemplate(Base):
    """A template of one gallery entry: a finger (position 1-10) or the face (position 0).
    ``model`` names the extractor and its version: templates of different models are never
    compared."""

    __tablename__ = "biometric_template"
    __table_args__ = (UniqueConstraint("entry_id", "modality", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("gallery_entry.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(100))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class GalleryChange(Base):
    """The gallery's change log: every process holding a gallery replays the rows after
    the last ``seq`` it applied, so all copies stay in step with the database."""

    __tablename__ = "gallery_change"
    __table_args__ = (CheckConstraint("op IN ('insert', 'delete', 'link')", name="op"),)

    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("gallery_entry.id"), index=True)
    op: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime]


class DedupLock(Base):
    """A single row that dedup holds (``FOR UPDATE``) while it identifies a probe and
    inserts it, so that two enrollments of one person processed at once still meet."""

    __tablename__ = "dedup_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class AdjudicationCase(Base):
    """A probe with candidates above the review threshold, waiting for a person's decision.

    ``candidates``: the ranked list the ABIS returned (entry ids, person ids, fused and
    per-finger scores, face score, demographic agreement)."""

    __tablename__ = "adjudication_case"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    package_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("package.package_id"), unique=True)
    state: Mapped[CaseState] = mapped_column(_enum(CaseState, "case_state"), index=True)
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    opened_at: Mapped[datetime]
    decision: Mapped[CaseDecision | None] = mapped_column(_enum(CaseDecision, "case_decision"))
    # For "same": the existing person the enrollment is linked to.
    decided_person_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("person.id"))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(index=True)
    reason: Mapped[str | None] = mapped_column(Text)


class Issuance(Base):
    """The chip data issued for one enrollment (package): the number it carries, the
    encoded LDS files as CBOR, which Document Signer signed them, and the card once the
    station has encoded it."""

    __tablename__ = "issuance"

    package_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("package.package_id"), primary_key=True
    )
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("person.id"), index=True)
    personal_number: Mapped[str] = mapped_column(String(12), index=True)
    # The MRZ's document number (the CCCD's: the personal number's last 9 digits), shared
    # by every card of one person.
    document_number: Mapped[str] = mapped_column(String(12))
    chip: Mapped[bytes] = mapped_column(LargeBinary)
    signer_id: Mapped[int] = mapped_column(ForeignKey("signer_certificate.id"))
    issued_at: Mapped[datetime]
    card_serial: Mapped[str | None] = mapped_column(String(64), unique=True)
    card_encoded_at: Mapped[datetime | None]


class SignerCertificate(Base):
    """CSCA and Document Signer certificates, with where their private key lives
    (``key_ref``: a PKCS#11 key label or a key file name). Rotation adds a row; the newest
    unretired DS within its private-key usage period signs."""

    __tablename__ = "signer_certificate"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[SignerKind] = mapped_column(_enum(SignerKind, "signer_kind"))
    certificate_pem: Mapped[str] = mapped_column(Text)
    key_ref: Mapped[str] = mapped_column(String(200))
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    # The DS's private-key usage period ends long before its certificate expires: cards
    # it signed stay verifiable for their whole validity (ICAO 9303-12 section 5).
    signs_until: Mapped[datetime]
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class Quota(Base):
    """An area's enrollment target over a period (imported from CSV): province (2-digit
    code), district (3) or commune (5), pre-2025 structure as offices use."""

    __tablename__ = "quota"
    __table_args__ = (
        UniqueConstraint("level", "area_code", "period_start"),
        CheckConstraint("level IN ('province', 'district', 'commune')", name="level"),
        CheckConstraint("target >= 0", name="target"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(String(8))
    area_code: Mapped[str] = mapped_column(String(5))
    period_start: Mapped[date]
    period_end: Mapped[date]
    target: Mapped[int] = mapped_column(Integer)


class Resident(Base):
    """A row of a commune's pre-loaded resident list (the paper DC01 collection), which the
    commune's stations sync (``central.residents``).

    ``seq`` is global: every insert and every change takes the next value of
    :class:`ResidentSequence`, so a station asks for the rows after the last ``seq`` it
    saw and gets exactly what changed. ``removed_at``: left out of the latest list
    (``--replace``); shown to stations as "removed" while ``status`` keeps what happened.
    """

    __tablename__ = "resident"
    __table_args__ = (
        UniqueConstraint("commune_code", "ref"),
        Index(None, "commune_code", "seq"),
        CheckConstraint("sex IN ('male', 'female')", name="sex"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    commune_code: Mapped[str] = mapped_column(String(5))
    ref: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    status: Mapped[ResidentStatus] = mapped_column(
        _enum(ResidentStatus, "resident_status"), default=ResidentStatus.pending
    )
    full_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[str] = mapped_column(String(10))
    sex: Mapped[str] = mapped_column(String(6))
    old_id_number: Mapped[str | None] = mapped_column(String(9))
    household_number: Mapped[str | None] = mapped_column(String(32))
    father_name: Mapped[str | None] = mapped_column(String(100))
    mother_name: Mapped[str | None] = mapped_column(String(100))
    permanent_residence: Mapped[dict[str, Any]] = mapped_column(JSON)
    place_of_origin: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # SHA-256 of the fields above as canonical JSON: a re-import compares this, not them.
    fields_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class ResidentSequence(Base):
    """The single row holding the last resident ``seq`` given out
    (``central.db.ops.resident_sequence``). A row lock, not a database sequence: a
    sequence hands out numbers before their transactions commit, so a station could see
    101 committed while 100 is still on its way, move its cursor past 100 and never
    receive it. Under the row lock, numbers commit in the order they are given."""

    __tablename__ = "resident_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
