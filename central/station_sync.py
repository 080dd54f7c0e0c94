"""What the registry tells its stations, and what it hears back from them.

- The **station policy** (``[station_policy]`` in the settings): the same rules for every
  station (minimum age, quality gates, staleness limit, lockouts, match thresholds),
  versioned by the SHA-256 of its canonical JSON so a station knows when it changed.
- **Operator credentials**: an office's officers and supervisors log in at its stations
  offline, by PIN or password (Argon2id PHC strings, which the station checks with
  argon2-cffi) plus a finger (ISO/IEC 19794-2 templates). The registry is where they are
  set; each station keeps a copy, replaced whole when the list's version changes.
  Disabled operators stay in the list so that a station learns of the disabling.
- **Heartbeats**: software and image version, device health, queue depth, disk, last
  sync. The latest one is kept per station (the station listing shows it); the answer
  carries the versions a station compares with its own to decide whether to sync.

Versions are ``sha256(canonical JSON)``: keys sorted, no white space, UTF-8. Equal data
gives equal versions on every registry process, with nothing stored.

Pure functions over a session; the HTTP layer is ``central.routes.station_sync``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from central.auth.users import Passwords, UserError
from central.db.models import Office, Operator, Resident, Station
from central.db.ops import append_audit

PIN = re.compile(r"^[0-9]{4,8}$")
MAX_TEMPLATE_BYTES = 8 * 1024
"""A 19794-2 record of 255 minutiae is about 1.6 KB; more is not a template."""
MIN_TEMPLATE_MINUTIAE = 8
"""Fewer minutiae than this cannot be matched with any confidence: re-capture the finger."""


class StationPolicySettings(BaseModel):
    """The ``[station_policy]`` section: rules every station follows
    (``GET /v1/station/config``). A change reaches the stations at their next heartbeat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_age_years: int = Field(14, ge=0, le=120)
    """Eligibility for the chip ID card (the registry checks it again at verify)."""
    finger_min_quality: int = Field(40, ge=0, le=100)
    """NFIQ 2 a captured finger must reach before the station accepts it."""
    finger_max_attempts: int = Field(3, ge=1, le=10)
    face_min_quality: int = Field(50, ge=0, le=100)
    staleness_limit_hours: float = Field(72.0, gt=0)
    """Without a successful sync for this long, a station stops enrolling (its operator
    and resident lists may be out of date)."""
    heartbeat_seconds: float = Field(300.0, gt=0)
    inactivity_logout_seconds: float = Field(300.0, gt=0)
    lockout_failures: int = Field(5, ge=1)
    """Failed operator logins in a row before the station locks that operator out."""
    lockout_minutes: float = Field(15.0, gt=0)
    operator_match_threshold: float = Field(0.22, ge=0, le=1)
    """``biometrics.fingerprint.matcher.verify`` score an operator's finger must reach:
    no genuine pair refused, 0.013 % of impostor pairs accepted on the station's
    measurement (docs/station-operators.md, "The threshold")."""
    same_finger_threshold: float = Field(0.30, ge=0, le=1)
    """Score at or above which two of one citizen's captured positions count as the same
    finger presented twice: different fingers of one person score up to 0.21, impressions
    of one finger a median of 0.45 (``station.capture.tenprint``)."""


class ResidentListSettings(BaseModel):
    """The ``[residents]`` section: the pre-loaded resident lists (``central.residents``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest CSV ``POST /v1/offices/{id}/residents`` takes (a large commune's list of
    50,000 people is about 15 MB); larger files go through ``residents import``."""
    page_limit: int = Field(5000, ge=1)
    """Most rows one ``GET /v1/station/residents`` page returns."""


def canonical_json(value: Any) -> bytes:
    """The one byte spelling of ``value`` that versions are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def version_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def policy_document(policy: StationPolicySettings) -> dict[str, Any]:
    """``GET /v1/station/config``'s answer."""
    settings = policy.model_dump(mode="json")
    return {"version": version_of(settings), "settings": settings}


# --- operator credentials ---------------------------------------------------------------


class CredentialError(ValueError):
    """Credentials that cannot be stored as given; ``status`` is the HTTP status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class FingerTemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    position: int = Field(ge=1, le=10, description="ISO/ANSI finger position 1-10")
    template: str = Field(
        max_length=MAX_TEMPLATE_BYTES * 4 // 3 + 4,
        description="ISO/IEC 19794-2:2005 record (one finger view), base64",
    )


class CredentialsIn(BaseModel):
    """``PUT /v1/operators/{id}/credentials``: the operator's whole credential set (what is
    null or absent is cleared)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pin: str | None = Field(None, max_length=8, description="4-8 digits")
    password: str | None = Field(None, max_length=200)
    fingers: list[FingerTemplateIn] = Field(default_factory=list, max_length=10)


def check_template(position: int, text: str) -> str:
    """The template in its canonical base64 spelling, or a :class:`CredentialError`."""
    from biometrics.errors import TemplateFormatError
    from biometrics.fingerprint.iso19794 import decode_record

    where = f"finger {position}"
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialError(422, "bad_template", f"{where}: the template is not base64") from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise CredentialError(
            422, "bad_template", f"{where}: {len(data)} bytes; a template is at most 8 KB"
        )
    try:
        record = decode_record(data)
    except TemplateFormatError as exc:
        raise CredentialError(422, "bad_template", f"{where}: {exc}") from None
    if len(record.views) != 1:
        raise CredentialError(
            422, "bad_template", f"{where}: {len(record.views)} finger views; send one per finger"
        )
    view = record.views[0]
    if view.position not in (0, position):
        raise CredentialError(
            422,
            "bad_template",
            f"{where}: the record says finger {view.position}; send it under that position",
        )
    if len(view.minutiae) < MIN_TEMPLATE_MINUTIAE:
        raise CredentialError(
            422,
            "bad_template",
            f"{where}: {len(view.minutiae)} minutiae, at least {MIN_TEMPLATE_MINUTIAE} are "
            "needed to match: capture the finger again",
        )
    return base64.b64encode(data).decode()


def set_credentials(
    session: Session,
    passwords: Passwords,
    username: str,
    credentials: CredentialsIn,
    now: datetime,
    actor: str,
) -> Operator:
    """Replace ``username``'s PIN, password and finger templates, audited (the audit entry
    says what is set, never the secrets). Does not commit."""
    operator = session.execute(
        select(Operator).where(Operator.username == username)
    ).scalar_one_or_none()
    if operator is None:
        raise CredentialError(404, "unknown_operator", f"no operator {username!r}")
    if credentials.pin is None and credentials.password is None:
        raise CredentialError(
            422, "no_secret", "give a PIN or a password (or both): the station asks for one"
        )
    if credentials.pin is not None and not PIN.match(credentials.pin):
        raise CredentialError(422, "bad_pin", "a PIN is 4 to 8 digits")
    positions = [f.position for f in credentials.fingers]
    if len(set(positions)) != len(positions):
        raise CredentialError(422, "bad_template", "one template per finger position")
    fingers = [
        {"position": f.position, "template": check_template(f.position, f.template)}
        for f in sorted(credentials.fingers, key=lambda f: f.position)
    ]
    password_hash = None
    if credentials.password is not None:
        try:
            password_hash = passwords.hash(credentials.password)
        except UserError as exc:
            raise CredentialError(422, "weak_password", str(exc)) from None
    operator.pin_hash = None if credentials.pin is None else passwords.hasher.hash(credentials.pin)
    operator.password_hash = password_hash
    operator.fingers = fingers
    operator.credentials_updated_at = now
    session.flush()
    append_audit(
        session,
        now,
        actor,
        "operator.credentials_set",
        f"operator:{username}",
        {
            "pin": credentials.pin is not None,
            "password": credentials.password is not None,
            "fingers": positions,
        },
    )
    return operator


def set_operator_disabled(
    session: Session, username: str, disabled: bool, now: datetime, actor: str
) -> Operator:
    """Disable (or enable again) an operator, audited. The office's stations learn it at
    their next sync and refuse the operator's logins from then on. Does not commit."""
    operator = session.execute(
        select(Operator).where(Operator.username == username)
    ).scalar_one_or_none()
    if operator is None:
        raise CredentialError(404, "unknown_operator", f"no operator {username!r}")
    if (operator.disabled_at is not None) == disabled:
        return operator
    operator.disabled_at = now if disabled else None
    session.flush()
    action = "operator.disabled" if disabled else "operator.enabled"
    append_audit(session, now, actor, action, f"operator:{username}", {})
    return operator


def operator_entry(operator: Operator) -> dict[str, Any]:
    """One operator as the stations see it."""
    return {
        "operator_id": operator.username,
        "full_name": operator.full_name,
        "role": operator.role.value,
        "pin_hash": operator.pin_hash,
        "password_hash": operator.password_hash,
        "fingers": list(operator.fingers or []),
        "disabled": operator.disabled_at is not None,
    }


def operators_document(session: Session, office_id: int) -> dict[str, Any]:
    """``GET /v1/station/operators``: the office's operators, disabled ones included, and
    the list's version."""
    staff = session.scalars(
        select(Operator).where(Operator.office_id == office_id).order_by(Operator.username)
    )
    operators = [operator_entry(o) for o in staff]
    return {"version": version_of(operators), "operators": operators}


# --- heartbeats -------------------------------------------------------------------------

Short = Annotated[str, Field(max_length=200)]


class DeviceCell(BaseModel):
    """One cell of the station's ``DeviceHealthBoard.as_json()``; fields the registry does
    not know are kept as sent."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=64)]
    ok: bool
    present: bool | None = None
    kind: Short | None = None
    last_error: Annotated[str, Field(max_length=2000)] | None = None


class QueueState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pending: int = Field(ge=0, le=2**31 - 1)
    oldest_pending_s: float | None = Field(None, ge=0)
    refused: int = Field(0, ge=0, le=2**31 - 1)


class DiskState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    free_bytes: int = Field(ge=0, le=2**62)
    total_bytes: int = Field(ge=0, le=2**62)

    @model_validator(mode="after")
    def _fits(self) -> DiskState:
        if self.free_bytes > self.total_bytes:
            raise ValueError("free_bytes exceeds total_bytes")
        return self


class Heartbeat(BaseModel):
    """``POST /v1/station/heartbeat``'s body. Fields a newer station adds are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sent_at: AwareDatetime
    software_version: Annotated[str, Field(min_length=1, max_length=100)]
    image_version: Annotated[str, Field(max_length=100)] | None = None
    devices: list[DeviceCell] = Field(default_factory=list, max_length=32)
    queue: QueueState
    disk: DiskState
    last_sync_at: AwareDatetime | None = None


class HeartbeatSummary(BaseModel):
    """What the station listing shows of a station's latest heartbeat."""

    sent_at: datetime
    software_version: str
    image_version: str | None
    queue: QueueState
    disk: DiskState
    last_sync_at: datetime | None
    devices_not_ok: list[str] = Field(description="devices absent or failing")


def summary(stored: dict[str, Any] | None) -> HeartbeatSummary | None:
    """The summary of a heartbeat as stored (None when the station never sent one)."""
    if not stored:
        return None
    beat = Heartbeat.model_validate(stored)
    return HeartbeatSummary(
        sent_at=beat.sent_at,
        software_version=beat.software_version,
        image_version=beat.image_version,
        queue=beat.queue,
        disk=beat.disk,
        last_sync_at=beat.last_sync_at,
        devices_not_ok=[d.name for d in beat.devices if not d.ok],
    )


def residents_next(session: Session, commune_code: str) -> int:
    """The highest resident ``seq`` of a commune (0 without residents): a station whose
    cursor is below it has changes to fetch."""
    top = session.execute(
        select(func.max(Resident.seq)).where(Resident.commune_code == commune_code)
    ).scalar_one_or_none()
    return int(top or 0)


def record_heartbeat(
    session: Session,
    station_id: str,
    beat: Heartbeat,
    now: datetime,
    policy: StationPolicySettings,
) -> dict[str, Any]:
    """Keep ``beat`` as the station's latest and answer with what it needs to know: the
    registry's time and the current versions of its config, operators and residents."""
    session.execute(
        update(Station)
        .where(Station.id == station_id)
        .values(last_heartbeat_at=now, last_heartbeat=beat.model_dump(mode="json"))
        .execution_options(synchronize_session=False)
    )
    office = session.execute(
        select(Office.id, Office.commune_code)
        .join(Station, Station.office_id == Office.id)
        .where(Station.id == station_id)
    ).one()
    return {
        "server_time": now.isoformat().replace("+00:00", "Z"),
        "config_version": policy_document(policy)["version"],
        "operators_version": operators_document(session, office.id)["version"],
        "residents_next": residents_next(session, office.commune_code),
    }
