"""The enrollment workflow: what an officer does with a citizen, as state changes that
survive a power cut.

    case = workflow.open_case(officer, resident_ref="DC01-...", ticket="A-007")
    workflow.save_demographics(case.id, officer, {...})     # validated; eligibility checked
    workflow.record_consent(case.id, officer)
    workflow.store_face(case.id, officer, face_entry)        # from station.capture.face
    workflow.store_finger(case.id, officer, finger_entry)    # x10, from station.capture.tenprint
    workflow.review(case.id)                                 # what is missing, what needs approval
    workflow.approve(case.id, supervisor, ["finger:4"])      # after the supervisor's PIN + finger
    result = workflow.submit(case.id, officer)               # package signed -> outbox

Every method is one write transaction: the piece of data (encrypted in the drafts) and
the case's bookkeeping commit together, and a journal entry with them. The live capture
loops (camera, scanner) run outside; only their results come here.

The rules (the registry's policy, :class:`station.policy.StationPolicy`):
- no new case while the station's data is stale, the disk is nearly full, or the station
  is not provisioned;
- consent before any biometric capture;
- the citizen is at least ``min_age_years`` old on the day, and has no open or finished
  enrollment the station knows of (the resident list's status, or another case here);
- a supervisor approves every finger exception, every finger kept below the minimum
  quality after the last attempt, a face exception, and a change of name, date of birth
  or sex against the pre-loaded resident list;
- the citizen is not the logged-in officer (their fingers are compared 1:1).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from enrollment.ids import new_package_id
from enrollment.keys import Signer
from enrollment.modalities import FACE, FINGER
from enrollment.package import BuiltPackage, build_package
from enrollment.record import Demographics
from station.blockers import Blocker
from station.cases import EDITABLE, FINAL, Case, CaseState, FaceEntry, FingerEntry
from station.journal import Journal
from station.policy import StationPolicy
from station.record_builder import CaptureContext, build_record
from station.residents import (
    OPEN_HERE,
    SUBMITTED_HERE,
    LocalStatus,
    Resident,
    age_on,
    eligibility,
)
from station.store.database import StationDatabase

log = logging.getLogger(__name__)

FINGER_NAMES = {
    1: "right thumb",
    2: "right index",
    3: "right middle",
    4: "right ring",
    5: "right little",
    6: "left thumb",
    7: "left index",
    8: "left middle",
    9: "left ring",
    10: "left little",
}
#: Fields whose change against the resident list needs a supervisor.
PROTECTED_FIELDS = ("full_name", "date_of_birth", "sex")


_RANK = {
    CaseState.queued: 0,
    CaseState.acknowledged: 1,
    CaseState.issued: 2,
    CaseState.card_encoded: 3,
    CaseState.rejected: 3,
}
"""How far along the registry's answers have taken a submitted case."""


class WorkflowError(RuntimeError):
    """The action is not possible now; ``code`` is stable for the UI, the message says why."""

    def __init__(self, code: str, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class DraftStore(Protocol):
    def put(self, conn: sqlite3.Connection, case_id: str, name: str, data: bytes) -> None: ...

    def get(self, case_id: str, name: str) -> bytes | None: ...

    def delete_case(self, conn: sqlite3.Connection, case_id: str) -> Any: ...

    def names(self, case_id: str, *, conn: sqlite3.Connection | None = None) -> list[str]: ...

    def delete(self, conn: sqlite3.Connection, case_id: str, name: str) -> bool: ...


class OutboxLike(Protocol):
    def stage(self, built: BuiltPackage) -> Any: ...

    def record(self, conn: sqlite3.Connection, built: BuiltPackage, case_id: str) -> Any: ...

    def space_ok(self, min_free_bytes: int) -> bool: ...


class ResidentLookup(Protocol):
    def get(self, ref: str) -> Resident | None: ...

    def mark_local(
        self, conn: sqlite3.Connection, ref: str, status: LocalStatus | None
    ) -> None: ...


@dataclass(frozen=True)
class StationContext:
    """What the workflow needs to know about the station itself (callables: they change
    while the service runs: the package key after a rotation, the policy after a sync)."""

    station_id: str
    signer: Signer
    package_key: Callable[[], ec.EllipticCurvePublicKey]
    policy: Callable[[], StationPolicy]
    blockers: Callable[[], list[Blocker]]
    """Why no new case may start now (stale data, disk nearly full...); [] when none."""
    software_version: str
    devices: Callable[[], tuple[Any, ...]]
    """enrollment.record.DeviceInfo of the capture devices in use."""
    citizen_is_operator: Callable[[str, Mapping[int, bytes]], bool]
    """(operator id, ISO 19794-2 templates by position) -> whether they match the operator."""
    min_free_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class ReviewItem:
    code: str
    message: str
    subject: str | None = None


@dataclass(frozen=True)
class Review:
    """What the review screen shows: the case, what is missing, what needs approval."""

    case: Case
    missing: list[ReviewItem]
    needs_approval: list[ReviewItem]
    eligibility: list[ReviewItem]

    @property
    def can_submit(self) -> bool:
        return not self.missing and not self.needs_approval and not self.eligibility

    def as_json(self) -> dict[str, Any]:
        def items(xs: list[ReviewItem]) -> list[dict[str, Any]]:
            return [{"code": x.code, "message": x.message, "subject": x.subject} for x in xs]

        return {
            "case": self.case.as_json(),
            "missing": items(self.missing),
            "needs_approval": items(self.needs_approval),
            "eligibility": items(self.eligibility),
            "can_submit": self.can_submit,
        }


@dataclass(frozen=True)
class SubmitResult:
    case: Case
    package_id: str
    size: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EnrollmentWorkflow:
    """The state machine of enrollment cases (thread-safe: every step is a transaction)."""

    def __init__(
        self,
        db: StationDatabase,
        drafts: DraftStore,
        outbox: OutboxLike,
        residents: ResidentLookup,
        journal: Journal,
        station: StationContext,
        *,
        clock: Callable[[], datetime] = _utc_now,
        on_queued: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.drafts = drafts
        self.outbox = outbox
        self.residents = residents
        self.journal = journal
        self.station = station
        self.clock = clock
        self.on_queued = on_queued
        self.on_issued: Callable[[sqlite3.Connection, str], Any] | None = None
        """Called inside the transaction that marks a case issued (the card job)."""

    # --- reading ------------------------------------------------------------------------

    def get(self, case_id: str) -> Case:
        with self.db.read() as c:
            row = c.execute("SELECT * FROM enrollment_case WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise WorkflowError("case_not_found", f"no case {case_id} at this station")
        return Case.from_row(row)

    def by_package(self, package_id: str) -> Case | None:
        with self.db.read() as c:
            row = c.execute(
                "SELECT * FROM enrollment_case WHERE package_id = ?", (package_id,)
            ).fetchone()
        return None if row is None else Case.from_row(row)

    def cases(self, states: Sequence[CaseState] | None = None, limit: int = 100) -> list[Case]:
        sql = "SELECT * FROM enrollment_case"
        params: list[Any] = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            params.extend(s.value for s in states)
        sql += " ORDER BY updated_at DESC LIMIT ?"
        params.append(limit)
        with self.db.read() as c:
            return [Case.from_row(r) for r in c.execute(sql, params)]

    def demographics(self, case_id: str) -> Demographics | None:
        raw = self.drafts.get(case_id, "demographics")
        return None if raw is None else Demographics.model_validate_json(raw)

    def face(self, case_id: str) -> FaceEntry | None:
        raw = self.drafts.get(case_id, "face")
        return None if raw is None else FaceEntry.from_bytes(raw)

    def finger(self, case_id: str, position: int) -> FingerEntry | None:
        raw = self.drafts.get(case_id, f"finger.{position}")
        return None if raw is None else FingerEntry.from_bytes(raw)

    def fingers(self, case_id: str) -> dict[int, FingerEntry]:
        out: dict[int, FingerEntry] = {}
        for position in range(1, 11):
            entry = self.finger(case_id, position)
            if entry is not None:
                out[position] = entry
        return out

    # --- helpers --------------------------------------------------------------------------

    def _row(self, c: sqlite3.Connection, case_id: str) -> Case:
        row = c.execute("SELECT * FROM enrollment_case WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise WorkflowError("case_not_found", f"no case {case_id} at this station")
        return Case.from_row(row)

    def _editable(self, c: sqlite3.Connection, case_id: str) -> Case:
        case = self._row(c, case_id)
        if case.state not in EDITABLE:
            raise WorkflowError(
                "case_not_editable",
                f"case {case_id} is {case.state.value}; it can no longer change",
            )
        return case

    def _touch(
        self, c: sqlite3.Connection, case_id: str, *, actor: str | None = None, **columns: Any
    ) -> None:
        columns["updated_at"] = self.clock().isoformat()
        if actor is not None:
            row = c.execute(
                "SELECT actors FROM enrollment_case WHERE id = ?", (case_id,)
            ).fetchone()
            actors = list(json.loads(row["actors"])) if row else []
            if actor not in actors:
                columns["actors"] = json.dumps([*actors, actor])
        sets = ", ".join(f"{k} = ?" for k in columns)
        # Column names come from this module's own keyword arguments, never from input.
        sql = f"UPDATE enrollment_case SET {sets} WHERE id = ?"  # noqa: S608
        c.execute(sql, (*columns.values(), case_id))

    def _resident(self, ref: str) -> Resident | None:
        return self.residents.get(ref)

    def _eligibility(self, c: sqlite3.Connection, case: Case, dob: str | None) -> list[ReviewItem]:
        """Why this case's citizen may not enroll: age on the day of birth given (the
        form's, else the list's), the resident list's status (ignoring this station's own
        note, which is this case), and another live case here for the same resident."""
        policy = self.station.policy()
        today = self.clock().date()
        problems: list[ReviewItem] = []
        resident = self._resident(case.resident_ref) if case.resident_ref else None
        if dob is None and resident is not None:
            dob = resident.date_of_birth
        if dob is not None:
            age = age_on(dob, today)
            if age < policy.min_age_years:
                problems.append(
                    ReviewItem(
                        "under_age",
                        f"the citizen is {age}; enrollment starts at {policy.min_age_years}",
                    )
                )
        if resident is not None:
            for code in eligibility(resident, today, policy.min_age_years):
                if code in (OPEN_HERE, SUBMITTED_HERE, "under_age"):
                    continue  # this case's own note; age is judged above
                problems.append(
                    ReviewItem(
                        code,
                        "the registry already has an enrollment of this resident "
                        f"({code.replace('_', ' ')})",
                        case.resident_ref,
                    )
                )
        if case.resident_ref:
            other = c.execute(
                "SELECT id, state FROM enrollment_case WHERE resident_ref = ? AND id != ? "
                "AND state NOT IN ('cancelled', 'rejected')",
                (case.resident_ref, case.id),
            ).fetchone()
            if other is not None:
                problems.append(
                    ReviewItem(
                        "open_case_here",
                        f"this station already has case {other['id']} ({other['state']}) for "
                        "this resident",
                        other["id"],
                    )
                )
        return problems

    # --- steps ----------------------------------------------------------------------------

    def open_case(
        self, operator_id: str, *, resident_ref: str | None = None, ticket: str | None = None
    ) -> Case:
        """Start a case; refused when the station may not enroll now (``enrollment_paused``,
        ``details``: each blocker's code, values and English message; the disk guard is one
        of them) or the resident is not eligible (reasons in ``details``)."""
        blockers = self.station.blockers()
        if blockers:
            raise WorkflowError(
                "enrollment_paused",
                "; ".join(b.message for b in blockers),
                details=[b.as_json() for b in blockers],
            )
        now = self.clock()
        case_id = uuid.uuid4().hex
        with self.db.write() as c:
            c.execute(
                "INSERT INTO enrollment_case (id, state, operator_id, ticket, resident_ref, "
                "started_at, created_at, updated_at, actors) "
                "VALUES (?, 'open', ?, ?, ?, ?, ?, ?, ?)",
                (case_id, operator_id, ticket, resident_ref, now.isoformat(), now.isoformat(),
                 now.isoformat(), json.dumps([operator_id])),
            )  # fmt: skip
            case = self._row(c, case_id)
            if resident_ref is not None:
                resident = self._resident(resident_ref)
                if resident is None:
                    raise WorkflowError(
                        "resident_not_found", f"{resident_ref} is not in this office's list"
                    )
                problems = self._eligibility(c, case, None)
                if problems:
                    raise WorkflowError(
                        "not_eligible",
                        "; ".join(p.message for p in problems),
                        details=[p.code for p in problems],
                    )
                self.residents.mark_local(c, resident_ref, "open")
            self.journal.record(
                c, operator_id, "case.opened", case_id, resident_ref=resident_ref, ticket=ticket
            )
        return case

    def proposal(self, case_id: str) -> dict[str, Any] | None:
        """The demographics the resident list proposes for the form (None: a new record)."""
        case = self.get(case_id)
        resident = self._resident(case.resident_ref) if case.resident_ref else None
        if resident is None:
            return None
        out: dict[str, Any] = {}
        for key, value in resident.prefill().items():
            out[key] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        return out

    def save_demographics(
        self, case_id: str, operator_id: str, data: Mapping[str, Any]
    ) -> Demographics:
        """Validate and store the form. ``WorkflowError("invalid_demographics")`` carries
        the field errors (path + message) for the form to show."""
        try:
            demographics = Demographics.model_validate(dict(data))
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ]
            raise WorkflowError(
                "invalid_demographics", "some fields are not valid", details=errors
            ) from None
        with self.db.write() as c:
            case = self._editable(c, case_id)
            if case.resident_ref and demographics.resident_list_ref not in (
                None,
                case.resident_ref,
            ):
                raise WorkflowError(
                    "invalid_demographics",
                    "the form refers to another resident than the case",
                    details=[{"field": "resident_list_ref", "message": "does not match"}],
                )
            if case.resident_ref and demographics.resident_list_ref is None:
                demographics = demographics.model_copy(
                    update={"resident_list_ref": case.resident_ref}
                )
            problems = [
                p
                for p in self._eligibility(c, case, demographics.date_of_birth)
                if p.code == "under_age"
            ]
            if problems:
                raise WorkflowError(
                    "not_eligible", problems[0].message, details=[p.code for p in problems]
                )
            self.drafts.put(c, case_id, "demographics", demographics.model_dump_json().encode())
            approvals = dict(case.approvals)
            approvals.pop("demographics", None)  # an approval covers what was approved
            self._touch(
                c,
                case_id,
                actor=operator_id,
                has_demographics=1,
                approvals=json.dumps(approvals),
            )
            self.journal.record(c, operator_id, "case.demographics", case_id)
        return demographics

    def record_consent(self, case_id: str, operator_id: str) -> Case:
        now = self.clock()
        with self.db.write() as c:
            self._editable(c, case_id)
            self._touch(c, case_id, actor=operator_id, consent_at=now.isoformat())
            self.journal.record(c, operator_id, "case.consent", case_id)
            return self._row(c, case_id)

    def _need_consent(self, case: Case) -> None:
        if case.consent_at is None:
            raise WorkflowError(
                "consent_missing", "the citizen's consent comes before any biometric capture"
            )

    def store_face(
        self, case_id: str, operator_id: str, face: FaceEntry, *, exception: str | None = None
    ) -> Case:
        """Keep the captured portrait (replacing an earlier one). ``exception`` names an
        ICAO criterion the citizen cannot meet (needs a supervisor)."""
        if exception is not None and exception not in FACE.exceptions:
            raise WorkflowError(
                "bad_exception", f"face exception must be one of {sorted(FACE.exceptions)}"
            )
        with self.db.write() as c:
            case = self._editable(c, case_id)
            self._need_consent(case)
            self.drafts.put(c, case_id, "face", face.to_bytes())
            approvals = dict(case.approvals)
            approvals.pop("face", None)
            if exception is not None:
                self.drafts.put(c, case_id, "face.exception", exception.encode())
            else:
                self.drafts.put(c, case_id, "face.exception", b"")
            self._touch(c, case_id, actor=operator_id, has_face=1, approvals=json.dumps(approvals))
            self.journal.record(
                c, operator_id, "case.face", case_id, quality=face.quality, exception=exception
            )
            return self._row(c, case_id)

    def store_finger(self, case_id: str, operator_id: str, entry: FingerEntry) -> Case:
        """Keep one finger's chosen capture or its exception (replacing an earlier one)."""
        if entry.position not in FINGER.positions:
            raise WorkflowError("bad_position", f"finger position {entry.position} is not 1-10")
        if entry.exception_code is not None and entry.exception_code not in FINGER.exceptions:
            raise WorkflowError(
                "bad_exception",
                f"finger exception must be one of {sorted(FINGER.exceptions)}",
            )
        if entry.wsq is None and entry.exception_code is None:
            raise WorkflowError("bad_finger", "a finger needs a capture or an exception code")
        if entry.exception_code is not None and entry.wsq is not None:
            _, without_image = FINGER.exceptions[entry.exception_code]
            if without_image:
                entry = FingerEntry(
                    position=entry.position,
                    exception_code=entry.exception_code,
                    exception_reason=entry.exception_reason,
                )
        with self.db.write() as c:
            case = self._editable(c, case_id)
            self._need_consent(case)
            self.drafts.put(c, case_id, f"finger.{entry.position}", entry.to_bytes())
            fingers = dict(case.fingers)
            fingers[entry.position] = entry.summary()
            approvals = dict(case.approvals)
            approvals.pop(f"finger:{entry.position}", None)  # a new capture needs a new look
            self._touch(
                c,
                case_id,
                actor=operator_id,
                fingers=json.dumps(fingers),
                approvals=json.dumps(approvals),
            )
            self.journal.record(
                c,
                operator_id,
                "case.finger",
                case_id,
                position=entry.position,
                quality=entry.quality,
                attempts=entry.attempts,
                exception=entry.exception_code,
            )
            return self._row(c, case_id)

    def _approval_items(self, case: Case) -> list[ReviewItem]:
        policy = self.station.policy()
        items: list[ReviewItem] = []
        for position, summary in sorted(case.fingers.items()):
            key = f"finger:{position}"
            if key in case.approvals:
                continue
            name = FINGER_NAMES.get(position, str(position))
            if summary.get("exception"):
                items.append(ReviewItem(key, f"{name}: exception '{summary['exception']}'", key))
            elif summary.get("low_quality") or (
                summary.get("quality") is not None
                and int(summary["quality"]) < policy.finger_min_quality
            ):
                items.append(
                    ReviewItem(
                        key,
                        f"{name}: quality {summary.get('quality')} below "
                        f"{policy.finger_min_quality} after {summary.get('attempts')} attempts",
                        key,
                    )
                )
        if case.has_face and "face" not in case.approvals:
            exc = self.drafts.get(case.id, "face.exception")
            if exc:
                items.append(ReviewItem("face", f"face exception '{exc.decode()}'", "face"))
        if case.resident_ref and case.has_demographics and "demographics" not in case.approvals:
            changed = self._changed_fields(case)
            if changed:
                items.append(
                    ReviewItem(
                        "demographics",
                        "changed against the resident list: " + ", ".join(changed),
                        "demographics",
                    )
                )
        return items

    def _changed_fields(self, case: Case) -> list[str]:
        if case.resident_ref is None:
            return []
        resident = self._resident(case.resident_ref)
        demographics = self.demographics(case.id)
        if resident is None or demographics is None:
            return []
        mine = demographics.model_dump(mode="json")
        listed = resident.prefill()  # the list's values in the form's terms (sex "M"/"F")
        return [f for f in PROTECTED_FIELDS if f in listed and str(listed[f]) != str(mine.get(f))]

    def review(self, case_id: str) -> Review:
        case = self.get(case_id)
        missing: list[ReviewItem] = []
        if not case.has_demographics:
            missing.append(ReviewItem("demographics", "demographics not saved"))
        if case.consent_at is None:
            missing.append(ReviewItem("consent", "consent not recorded"))
        if not case.has_face:
            missing.append(ReviewItem("face", "no portrait"))
        for position in range(1, 11):
            if position not in case.fingers:
                missing.append(
                    ReviewItem(
                        f"finger:{position}",
                        f"{FINGER_NAMES[position]} not captured",
                        f"finger:{position}",
                    )
                )
        demographics = self.demographics(case_id)
        with self.db.read() as c:
            problems = self._eligibility(
                c, case, demographics.date_of_birth if demographics else None
            )
        return Review(case, missing, self._approval_items(case), problems)

    def approve(self, case_id: str, supervisor_id: str, items: Sequence[str]) -> Case:
        """Record a supervisor's approval of ``items`` (from :meth:`review`). The caller has
        verified the supervisor (PIN + finger, station.operators)."""
        with self.db.write() as c:
            case = self._editable(c, case_id)
            if supervisor_id == case.operator_id or supervisor_id in case.actors:
                raise WorkflowError(
                    "self_approval",
                    "someone who worked on a case cannot approve it: ask another supervisor",
                )
            pending = {i.code for i in self._approval_items(case)}
            unknown = [i for i in items if i not in pending]
            if unknown:
                raise WorkflowError(
                    "nothing_to_approve", f"nothing to approve for {', '.join(unknown)}"
                )
            approvals = dict(case.approvals)
            for item in items:
                approvals[item] = supervisor_id
            self._touch(c, case_id, approvals=json.dumps(approvals), supervisor_id=supervisor_id)
            self.journal.record(c, supervisor_id, "case.approved", case_id, items=list(items))
            return self._row(c, case_id)

    def cancel(self, case_id: str, operator_id: str, reason: str) -> Case:
        """Abandon an open case: its drafts are deleted at once."""
        with self.db.write() as c:
            case = self._editable(c, case_id)
            self.drafts.delete_case(c, case_id)
            self._touch(c, case_id, state=CaseState.cancelled.value)
            if case.resident_ref and self._resident(case.resident_ref) is not None:
                self.residents.mark_local(c, case.resident_ref, None)
            self.journal.record(c, operator_id, "case.cancelled", case_id, reason=reason[:200])
            return self._row(c, case_id)

    # --- submit ---------------------------------------------------------------------------

    def submit(self, case_id: str, operator_id: str) -> SubmitResult:
        """Build, sign and encrypt the package and put it in the outbox.

        A case caught in ``packaging`` (the build failed: a key error, a full disk) is
        packaged again under its id: nothing of it was sent, the outbox has no row."""
        import time

        t0 = time.perf_counter()
        current = self.get(case_id)
        if current.state is CaseState.packaging:
            return self._package(case_id, operator_id, t0)
        review = self.review(case_id)
        if not review.can_submit:
            problems = review.missing + review.needs_approval + review.eligibility
            raise WorkflowError(
                "not_ready",
                "; ".join(p.message for p in problems),
                details=[p.code for p in problems],
            )
        fingers = self.fingers(case_id)
        templates = {p: f.template for p, f in fingers.items() if f.template}
        case = review.case
        people = dict.fromkeys([case.operator_id, *case.actors, operator_id])
        for person in people:
            if templates and self.station.citizen_is_operator(person, templates):
                with self.db.write() as c:
                    self.journal.record(
                        c, operator_id, "case.citizen_is_operator", case_id, operator=person
                    )
                raise WorkflowError(
                    "citizen_is_operator",
                    "the fingerprints are those of an officer who worked on this case: an "
                    "officer cannot enroll themselves; ask another officer",
                )
        if not self.outbox.space_ok(self.station.min_free_bytes // 4):
            raise WorkflowError(
                "disk_full", "the disk is full: upload or export the outbox, then submit again"
            )
        with self.db.write() as c:
            case = self._editable(c, case_id)
            if case.updated_at != review.case.updated_at:
                # Something was captured or edited while the checks ran: check again.
                raise WorkflowError(
                    "case_changed", "the case changed while it was being checked; submit again"
                )
            package_id = case.package_id or new_package_id()
            self._touch(
                c,
                case_id,
                actor=operator_id,
                state=CaseState.packaging.value,
                package_id=package_id,
                completed_at=self.clock().isoformat(),
            )
        return self._package(case_id, operator_id, t0)

    def _package(self, case_id: str, actor: str, t0: float) -> SubmitResult:
        import time

        case = self.get(case_id)
        if case.package_id is None or case.completed_at is None:
            raise WorkflowError("not_ready", f"case {case_id} is not being packaged")
        demographics = self.demographics(case_id)
        face = self.face(case_id)
        if demographics is None or face is None or case.consent_at is None:
            raise WorkflowError("not_ready", f"case {case_id} lost a piece before packaging")
        context = CaptureContext(
            station_id=self.station.station_id,
            operator_id=case.operator_id,
            supervisor_id=case.supervisor_id,
            software_version=self.station.software_version,
            devices=tuple(self.station.devices()),
            started_at=case.started_at,
            consent_at=case.consent_at,
            completed_at=case.completed_at,
        )
        t1 = time.perf_counter()
        try:
            return self._build_and_queue(case, demographics, face, context, actor, t0, t1)
        except WorkflowError:
            raise
        except Exception as exc:  # a signer, key or store failure: the case stays packaging
            log.exception("packaging case %s failed", case_id)
            raise WorkflowError(
                "packaging_failed",
                f"the package could not be built ({type(exc).__name__}: {exc}); "
                "submit again, or call a technician if it repeats",
            ) from exc

    def _build_and_queue(
        self,
        case: Case,
        demographics: Demographics,
        face: FaceEntry,
        context: CaptureContext,
        actor: str,
        t0: float,
        t1: float,
    ) -> SubmitResult:
        import time

        case_id = case.id
        assert case.package_id is not None
        face_exception = self.drafts.get(case_id, "face.exception")
        record, transaction = build_record(
            demographics,
            self.fingers(case_id),
            face,
            context,
            approvals=case.approvals,
            face_exception=face_exception.decode() if face_exception else None,
        )
        t2 = time.perf_counter()
        built = build_package(
            record,
            transaction,
            signer=self.station.signer,
            recipient=self.station.package_key(),
            package_id=case.package_id,
            created=case.completed_at,
        )
        t3 = time.perf_counter()
        try:
            self.outbox.stage(built)
        except OSError as exc:
            raise WorkflowError(
                "packaging_failed",
                f"the package could not be written ({exc}); free space, then submit again",
            ) from exc
        with self.db.write() as c:
            current = self._row(c, case_id)
            if current.state is not CaseState.packaging or current.package_id != built.package_id:
                raise WorkflowError("case_changed", f"case {case_id} changed while packaging")
            self.outbox.record(c, built, case_id)
            self._touch(c, case_id, state=CaseState.queued.value)
            if current.resident_ref and self._resident(current.resident_ref) is not None:
                self.residents.mark_local(c, current.resident_ref, "submitted")
            self.journal.record(
                c, actor, "case.queued", case_id, package_id=built.package_id, size=len(built.data)
            )
            case = self._row(c, case_id)
        t4 = time.perf_counter()
        if self.on_queued is not None:
            try:
                self.on_queued(built.package_id)
            except Exception:  # the uploader's wake-up must not fail the submit
                log.exception("waking the uploader failed")
        return SubmitResult(
            case=case,
            package_id=built.package_id,
            size=len(built.data),
            seconds=t4 - t0,
            timings={
                "checks": t1 - t0,
                "record": t2 - t1,
                "package": t3 - t2,
                "outbox": t4 - t3,
            },
        )

    def recover(self) -> list[str]:
        """After a restart: finish the packaging a power cut interrupted (same package id:
        nothing was sent, since the outbox had no row). Returns the case ids finished."""
        done: list[str] = []
        for case in self.cases([CaseState.packaging], limit=1000):
            try:
                self._package(case.id, "station", 0.0)
                done.append(case.id)
            except Exception:
                log.exception("could not finish packaging case %s", case.id)
        return done

    # --- the registry's view --------------------------------------------------------------

    def on_registry_status(self, package_id: str, state: str, payload: Mapping[str, Any]) -> None:
        """Mirror what the registry says about a package (the uploader's callback)."""
        case = self.by_package(package_id)
        if case is None:
            return
        with self.db.write() as c:
            case = self._row(c, case.id)
            if case.package_id != package_id:
                return  # an older package of a case that was recaptured since
            receipt = payload.get("receipt_number") or case.receipt_number
            reject = payload.get("reject_code")
            if state == "rejected" and reject == "recapture-needed":
                if case.state in (CaseState.queued, CaseState.acknowledged):
                    self._reopen(c, case, payload)
                return
            new_state = {
                "acknowledged": CaseState.acknowledged,
                "received": CaseState.acknowledged,
                "verified": CaseState.acknowledged,
                "quality_checked": CaseState.acknowledged,
                "deduplicating": CaseState.acknowledged,
                "adjudication": CaseState.acknowledged,
                "issued": CaseState.issued,
                "card_encoded": CaseState.card_encoded,
                "rejected": CaseState.rejected,
            }.get(state)
            columns: dict[str, Any] = {"registry_state": state, "receipt_number": receipt}
            if reject:
                columns["reject_code"] = reject
            if new_state is not None and _RANK.get(new_state, 0) < _RANK.get(case.state, 0):
                return  # an older answer arriving late: states only move forward
            if new_state is not None and case.state not in FINAL | {CaseState.open}:
                columns["state"] = new_state.value
            self._touch(c, case.id, **columns)
            if new_state in FINAL and case.state not in FINAL:
                # Nothing more to do here: every piece of the case leaves the station.
                self.drafts.delete_case(c, case.id)
                self.journal.record(c, "station", "case.closed", case.id, state=state)
            elif new_state is CaseState.issued and case.state is not CaseState.issued:
                if self.on_issued is not None:
                    self.on_issued(c, package_id)
                # The registry holds the package and issued the card data: the captures go
                # (the chip is made from the registry's data); the demographics stay for
                # the slip and the card hand-over until the card is encoded.
                for name in self.drafts.names(case.id, conn=c):
                    if name != "demographics":
                        self.drafts.delete(c, case.id, name)

    def reconcile(self, outbox: Any) -> int:
        """After a restart: apply registry states the outbox recorded but the cases missed
        (a power cut between the two commits). Returns how many cases moved."""
        moved = 0
        live = [CaseState.queued, CaseState.acknowledged, CaseState.issued]
        for case in self.cases(live, limit=100_000):
            if case.package_id is None:
                continue
            entry = outbox.get(case.package_id)
            if entry is None:
                continue
            state = entry.registry_state or (
                "acknowledged" if entry.receipt_number is not None else None
            )
            if state is None or state == case.registry_state:
                continue
            payload = {
                "receipt_number": entry.receipt_number,
                "reject_code": entry.reject_code,
                "recapture": entry.recapture or [],
            }
            self.on_registry_status(case.package_id, state, payload)
            moved += 1
        return moved

    def _reopen(self, c: sqlite3.Connection, case: Case, payload: Mapping[str, Any]) -> None:
        reasons = list(payload.get("recapture") or [])
        fingers = dict(case.fingers)
        has_face = case.has_face
        for reason in reasons:
            what = str(reason.get("what") or "")
            position = reason.get("position")
            if what == "finger" and isinstance(position, int):
                fingers.pop(position, None)
            elif what == "face":
                has_face = False
        if not reasons:  # no detail: capture the biometrics again
            fingers, has_face = {}, False
        # The captures sent back go too: a live capture rebuilt from the drafts would
        # otherwise count the old print or portrait as taken, and skip it.
        for position in set(case.fingers) - set(fingers):
            self.drafts.delete(c, case.id, f"finger.{position}")
        if case.has_face and not has_face:
            self.drafts.delete(c, case.id, "face")
        self._touch(
            c,
            case.id,
            state=CaseState.open.value,
            recapture_of=case.package_id,
            package_id=None,
            registry_state="rejected",
            reject_code="recapture-needed",
            recapture=json.dumps(reasons),
            fingers=json.dumps(fingers),
            has_face=int(has_face),
            approvals="{}",
            completed_at=None,
        )
        self.journal.record(
            c,
            "station",
            "case.recapture",
            case.id,
            package_id=case.package_id,
            reasons=len(reasons),
        )


__all__ = [
    "FINGER_NAMES",
    "DraftStore",
    "EnrollmentWorkflow",
    "OutboxLike",
    "ResidentLookup",
    "Review",
    "ReviewItem",
    "StationContext",
    "SubmitResult",
    "WorkflowError",
    "age_on",
]
