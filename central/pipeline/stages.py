"""The pipeline's stages: what each job kind does to one package.

Every stage has two halves. ``prepare`` does the slow work (decrypting, NFIQ 2, template
extraction) outside any transaction; it may run twice when a worker dies, so it writes
nothing. ``commit`` runs inside the transaction that also completes the job: it checks the
package is still where the job expects it, moves it on, enqueues the next job and writes
the audit entry. A stage's effects and its job's completion commit together or not at all,
which is what makes a restart at any point neither lose nor repeat work.

States: received -> verified -> quality_checked -> deduplicating -> [adjudication] ->
issued -> card_encoded, or rejected with a reason. ``deduplicating`` starts when the dedup
job runs and lasts until the package is issued or goes to adjudication.
"""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.blobs import BlobStore
from central.db.models import (
    AdjudicationCase,
    CaseDecision,
    CaseState,
    Issuance,
    Package,
    PackageState,
    Person,
    ResidentStatus,
    Station,
)
from central.db.ops import append_audit, enqueue_job
from central.ingest import PackageVerifier
from central.pipeline.quality import QualityChecker
from central.residents import mark_resident
from enrollment.errors import PackageError
from enrollment.package import VerifiedPackage
from enrollment.record import DivisionScheme, EnrollmentRecord, youngest_age_on

log = logging.getLogger(__name__)

MIN_AGE = 14


class StageError(Exception):
    """A transient failure: the job is retried with backoff."""


class Rejection(Exception):  # noqa: N818 (a verdict on the package)
    """The package cannot go on: it ends ``rejected`` with this code and text."""

    def __init__(self, code: str, text: str, findings: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.findings = findings or {}


@dataclass(frozen=True)
class DedupOutcome:
    """What the dedup engine answers: ``verdict`` "no_match" or "review", and the
    candidates as JSON-ready dicts (each with at least ``person_id`` when known)."""

    verdict: str
    candidates: list[dict[str, Any]] = field(default_factory=list)


class DedupEngine(Protocol):
    def extract(self, verified: VerifiedPackage) -> Any: ...

    def identify_and_insert(
        self, session: Session, package_id: uuid.UUID, templates: Any, demographics: Package
    ) -> DedupOutcome: ...

    def link(self, session: Session, package_id: uuid.UUID, person_id: uuid.UUID) -> None: ...


@dataclass(frozen=True)
class IssuedChip:
    chip: bytes
    signer_id: int
    document_number: str


class ChipIssuer(Protocol):
    def allocate_number(self, session: Session, record: EnrollmentRecord) -> str: ...

    def build(
        self, session: Session, verified: VerifiedPackage, personal_number: str, now: datetime
    ) -> IssuedChip: ...


@dataclass
class PipelineContext:
    """What the stages need; one per worker process."""

    blobs: BlobStore
    verifier: PackageVerifier
    quality: QualityChecker
    dedup: DedupEngine
    issuer: ChipIssuer
    clock: Callable[[], datetime]

    def open(self, row: Package) -> VerifiedPackage:
        """Re-open the stored package (the store checks its SHA-256 on the way)."""
        data = self.blobs.get(row.blob_key)
        try:
            return self.verifier.open(data, now=row.received_at)
        except PackageError as exc:
            # It opened at ingest: failing now means the registry's keys or trust changed.
            raise Rejection(exc.code, f"the stored package no longer opens: {exc}") from exc


def name_key(full_name: str) -> str:
    """Upper case, no diacritics, single spaces: "Nguyễn Văn  An" -> "NGUYEN VAN AN"."""
    text = full_name.replace("Đ", "D").replace("đ", "d")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.upper().split())


def place_code(record: EnrollmentRecord) -> str | None:
    """The place of birth's (else origin's, else residence's) commune or province code."""
    d = record.demographics
    for address in (d.place_of_birth, d.place_of_origin, d.permanent_residence):
        area = None if address is None else address.area(DivisionScheme.pre_2025)
        if area is not None:
            return area.commune_code or area.district_code or area.province_code
    return None


class Stage(Protocol):
    kind: str
    expects: tuple[PackageState, ...]

    def prepare(self, ctx: PipelineContext, row: Package) -> Any: ...

    def commit(
        self, ctx: PipelineContext, session: Session, row: Package, prepared: Any
    ) -> None: ...


def move(
    session: Session,
    row: Package,
    state: PackageState,
    now: datetime,
    actor: str,
    details: dict[str, Any] | None = None,
) -> None:
    previous = row.state
    row.state = state
    row.state_changed_at = now
    append_audit(
        session,
        now,
        actor,
        f"package.{state.value}",
        f"package:{row.package_id}",
        {"from": previous.value, **(details or {})},
    )


def reject(session: Session, row: Package, rejection: Rejection, now: datetime, actor: str) -> None:
    """End the package ``rejected``: code, text and state change together (the table's
    CHECK wants a reason with the state, so nothing may flush in between)."""
    with session.no_autoflush:
        findings = row.findings
        previous = row.state
        row.reject_code = rejection.code
        row.reject_text = rejection.text
        if rejection.findings:
            row.findings = {**(findings or {}), **rejection.findings}
        row.state = PackageState.rejected
        row.state_changed_at = now
    session.flush()
    append_audit(
        session,
        now,
        actor,
        "package.rejected",
        f"package:{row.package_id}",
        {"from": previous.value, "code": rejection.code},
    )


class VerifyStage:
    """Re-open the stored package and check the rules the signature cannot: eligibility,
    the station's office; fill in the fields reporting and dedup use."""

    kind: str = "verify"
    expects: tuple[PackageState, ...] = (PackageState.received,)

    def prepare(self, ctx: PipelineContext, row: Package) -> VerifiedPackage:
        return ctx.open(row)

    def commit(
        self, ctx: PipelineContext, session: Session, row: Package, prepared: VerifiedPackage
    ) -> None:
        now = ctx.clock()
        record = prepared.record
        d = record.demographics
        station = session.get_one(Station, row.station_id)
        row.office_id = station.office_id
        row.name_key = name_key(d.full_name)[:200]
        row.date_of_birth = d.date_of_birth
        row.sex = d.sex.value
        row.place_code = place_code(record)
        captured = record.capture.completed_at.date()
        if youngest_age_on(d.date_of_birth, captured) < MIN_AGE:
            raise Rejection(
                "ineligible-age",
                f"born {d.date_of_birth}: under {MIN_AGE} on the capture date {captured}",
            )
        move(session, row, PackageState.verified, now, "pipeline:verify")
        enqueue_job(session, "quality", row.package_id, now)


class QualityStage:
    kind: str = "quality"
    expects: tuple[PackageState, ...] = (PackageState.verified,)

    def prepare(self, ctx: PipelineContext, row: Package) -> Any:
        return ctx.quality.check(ctx.open(row))

    def commit(self, ctx: PipelineContext, session: Session, row: Package, prepared: Any) -> None:
        now = ctx.clock()
        row.findings = {**(row.findings or {}), "quality": prepared.as_json()}
        if not prepared.passed:
            codes = sorted({r.code for r in prepared.reasons})
            raise Rejection(
                "recapture-needed",
                "; ".join(r.text for r in prepared.reasons),
                {"quality": prepared.as_json(), "codes": codes},
            )
        move(session, row, PackageState.quality_checked, now, "pipeline:quality")
        enqueue_job(session, "dedup", row.package_id, now)


class DedupStage:
    kind: str = "dedup"
    expects: tuple[PackageState, ...] = (PackageState.quality_checked, PackageState.deduplicating)

    def start(self, ctx: PipelineContext, session: Session, row: Package) -> None:
        """Show the package as deduplicating while its templates are extracted."""
        if row.state is PackageState.quality_checked:
            move(session, row, PackageState.deduplicating, ctx.clock(), "pipeline:dedup")

    def prepare(self, ctx: PipelineContext, row: Package) -> Any:
        return ctx.dedup.extract(ctx.open(row))

    def commit(self, ctx: PipelineContext, session: Session, row: Package, prepared: Any) -> None:
        now = ctx.clock()
        if row.state is PackageState.quality_checked:
            move(session, row, PackageState.deduplicating, now, "pipeline:dedup")
        outcome = ctx.dedup.identify_and_insert(session, row.package_id, prepared, row)
        row.findings = {
            **(row.findings or {}),
            "dedup": {"verdict": outcome.verdict, "candidates": len(outcome.candidates)},
        }
        if outcome.verdict == "review":
            session.add(
                AdjudicationCase(
                    package_id=row.package_id,
                    state=CaseState.open,
                    candidates=outcome.candidates,
                    opened_at=now,
                )
            )
            move(
                session,
                row,
                PackageState.adjudication,
                now,
                "pipeline:dedup",
                {"candidates": len(outcome.candidates)},
            )
        else:
            enqueue_job(session, "issue", row.package_id, now)


class IssueStage:
    """Give the enrollment its number (a new one, or the existing person's when an
    adjudicator linked it) and its chip data, in one transaction."""

    kind: str = "issue"
    expects: tuple[PackageState, ...] = (PackageState.deduplicating, PackageState.adjudication)

    def prepare(self, ctx: PipelineContext, row: Package) -> VerifiedPackage:
        return ctx.open(row)

    def commit(
        self, ctx: PipelineContext, session: Session, row: Package, prepared: VerifiedPackage
    ) -> None:
        now = ctx.clock()
        case = session.execute(
            select(AdjudicationCase).where(AdjudicationCase.package_id == row.package_id)
        ).scalar_one_or_none()
        if row.state is PackageState.adjudication and (
            case is None or case.state is not CaseState.decided
        ):
            raise StageError("the adjudication case is not decided yet")
        linked = case is not None and case.decision is CaseDecision.same
        if case is not None and linked:
            if case.decided_person_id is None:
                raise Rejection("bad-decision", "linked without naming the person")
            person = session.get_one(Person, case.decided_person_id)
        else:
            number = ctx.issuer.allocate_number(session, prepared.record)
            person = Person(
                personal_number=number, created_from_package_id=row.package_id, created_at=now
            )
            session.add(person)
            session.flush()
        chip = ctx.issuer.build(session, prepared, person.personal_number, now)
        session.add(
            Issuance(
                package_id=row.package_id,
                person_id=person.id,
                personal_number=person.personal_number,
                document_number=chip.document_number,
                chip=chip.chip,
                signer_id=chip.signer_id,
                issued_at=now,
            )
        )
        row.person_id = person.id
        ctx.dedup.link(session, row.package_id, person.id)
        move(
            session,
            row,
            PackageState.issued,
            now,
            "pipeline:issue",
            {"linked": linked, "person": str(person.id)},
        )
        ref = prepared.record.demographics.resident_list_ref
        if ref is not None:
            # After the audit entry: the audit lock, then the residents' counter (ops).
            mark_resident(session.connection(), row.station_id, ref, ResidentStatus.enrolled, now)


STAGES: dict[str, Stage] = {
    s.kind: s for s in (VerifyStage(), QualityStage(), DedupStage(), IssueStage())
}
