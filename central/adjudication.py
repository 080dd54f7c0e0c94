"""Adjudication: what an adjudicator sees of a case, and how the decision is applied.

A case holds a probe (the new enrollment) and the candidates the ABIS found above the
review threshold. The view puts them side by side: demographics and portraits out of the
stored (encrypted) packages, and for each finger the matched minutiae between the probe's
and the candidate's templates. The decision is "same" (the enrollment is linked to the
candidate's existing person: same number, a new card, never a second number) or
"different" (it goes on to issuance with a new number). Both are audited, once: a decided
case cannot be decided again.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.blobs import BlobStore
from central.db.models import (
    AdjudicationCase,
    BiometricTemplate,
    CaseDecision,
    CaseState,
    GalleryEntry,
    Package,
    PackageState,
    Person,
)
from central.db.ops import append_audit, enqueue_job
from central.ingest import PackageVerifier
from enrollment.package import VerifiedPackage


class AdjudicationError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


@dataclass
class CaseViewer:
    """Builds the side-by-side view; opens packages with the registry's key."""

    blobs: BlobStore
    verifier: PackageVerifier

    def _open(self, row: Package) -> VerifiedPackage:
        return self.verifier.open(self.blobs.get(row.blob_key), now=row.received_at)

    def _side(self, session: Session, package_id: uuid.UUID) -> dict[str, Any]:
        row = session.get_one(Package, package_id)
        verified = self._open(row)
        d = verified.record.demographics
        face = verified.transaction.faces[0].data if verified.transaction.faces else None
        person = None if row.person_id is None else session.get(Person, row.person_id)
        return {
            "package_id": str(package_id),
            "station_id": row.station_id,
            "received_at": row.received_at.isoformat(),
            "state": row.state.value,
            "person_id": None if row.person_id is None else str(row.person_id),
            "personal_number": None if person is None else person.personal_number,
            "demographics": d.model_dump(mode="json"),
            "face_jpeg": None if face is None else base64.b64encode(face).decode(),
            "fingers_present": sorted(f.position for f in verified.transaction.fingerprints),
        }

    @staticmethod
    def _templates(session: Session, package_id: uuid.UUID) -> dict[int, bytes]:
        entry = session.scalars(
            select(GalleryEntry).where(GalleryEntry.package_id == package_id)
        ).first()
        if entry is None:
            return {}
        rows = session.scalars(
            select(BiometricTemplate).where(
                BiometricTemplate.entry_id == entry.id, BiometricTemplate.modality == "finger"
            )
        )
        return {t.position: t.data for t in rows}

    def _fingers(self, probe: dict[int, bytes], other: dict[int, bytes]) -> list[dict[str, Any]]:
        # The matchers (numpy, scipy) load when a case is viewed, not with every API process.
        from central.abis.matched_minutiae import match_minutiae
        from central.abis.templates import minutiae_from_bytes

        out = []
        for position in sorted(set(probe) & set(other)):
            a, b = minutiae_from_bytes(probe[position]), minutiae_from_bytes(other[position])
            match = match_minutiae(a, b)
            out.append(
                {
                    "position": position,
                    "score": round(match.score, 4),
                    "rotation_degrees": round(match.rotation * 57.29578, 1),
                    "shift": [round(match.shift[0], 1), round(match.shift[1], 1)],
                    "pairs": [
                        {
                            "probe": [int(a.x[i]), int(a.y[i]), round(float(a.angle[i]), 3)],
                            "candidate": [int(b.x[j]), int(b.y[j]), round(float(b.angle[j]), 3)],
                        }
                        for i, j in match.pairs
                    ],
                }
            )
        return out

    def view(self, session: Session, case_id: int) -> dict[str, Any]:
        case = session.get(AdjudicationCase, case_id)
        if case is None:
            raise AdjudicationError(404, "not_found", f"no case {case_id}")
        probe_templates = self._templates(session, case.package_id)
        candidates = []
        for c in case.candidates:
            pid = uuid.UUID(c["package_id"])
            side = self._side(session, pid)
            side["scores"] = c
            side["fingers"] = self._fingers(probe_templates, self._templates(session, pid))
            candidates.append(side)
        return {
            **summary(case),
            "probe": self._side(session, case.package_id),
            "candidates": candidates,
        }


def summary(case: AdjudicationCase) -> dict[str, Any]:
    return {
        "id": case.id,
        "package_id": str(case.package_id),
        "state": case.state.value,
        "opened_at": case.opened_at.isoformat(),
        "best_score": max((float(c.get("score", 0.0)) for c in case.candidates), default=None),
        "candidates_count": len(case.candidates),
        "decision": None if case.decision is None else case.decision.value,
        "decided_by": case.decided_by,
        "decided_at": None if case.decided_at is None else case.decided_at.isoformat(),
        "person_id": None if case.decided_person_id is None else str(case.decided_person_id),
        "reason": case.reason,
    }


def list_cases(session: Session, state: CaseState | None, limit: int) -> list[dict[str, Any]]:
    q = select(AdjudicationCase).order_by(AdjudicationCase.opened_at).limit(limit)
    if state is not None:
        q = q.where(AdjudicationCase.state == state)
    return [summary(c) for c in session.scalars(q)]


def decide(
    session: Session,
    case_id: int,
    decision: CaseDecision,
    person_id: uuid.UUID | None,
    reason: str | None,
    username: str,
    now: datetime,
    on_decided: Callable[[AdjudicationCase], None] | None = None,
) -> AdjudicationCase:
    """Apply an adjudicator's decision (inside the caller's writing transaction). The case
    row is locked: of two adjudicators deciding at once, the second sees it decided."""
    case = session.get(AdjudicationCase, case_id, with_for_update=True)
    if case is None:
        raise AdjudicationError(404, "not_found", f"no case {case_id}")
    if case.state is CaseState.decided:
        raise AdjudicationError(
            409, "already_decided", f"case {case_id} was decided by {case.decided_by}"
        )
    row = session.get_one(Package, case.package_id)
    if row.state is not PackageState.adjudication:
        raise AdjudicationError(409, "not_in_adjudication", f"the package is {row.state.value}")
    if decision is CaseDecision.same:
        if person_id is None:
            raise AdjudicationError(
                422, "person_required", "name the candidate's person_id the enrollment joins"
            )
        # The candidates' persons as they are now: one may have been issued since.
        current = {
            c["package_id"]: session.get_one(Package, uuid.UUID(c["package_id"])).person_id
            for c in case.candidates
        }
        if person_id not in set(current.values()):
            pending = [pid for pid, person in current.items() if person is None]
            detail = "that person is not among this case's candidates"
            if pending:
                detail += (
                    f"; candidates {', '.join(pending)} have no number yet: decide once "
                    "they are issued"
                )
            raise AdjudicationError(422, "not_a_candidate", detail)
        if session.get(Person, person_id) is None:
            raise AdjudicationError(422, "not_a_candidate", "no such person")
    elif person_id is not None:
        raise AdjudicationError(422, "person_not_expected", "a 'different' decision names no one")
    case.state = CaseState.decided
    case.decision = decision
    case.decided_person_id = person_id
    case.decided_by = username
    case.decided_at = now
    case.reason = reason
    enqueue_job(session, "issue", case.package_id, now)
    append_audit(
        session,
        now,
        f"user:{username}",
        f"case.decided.{decision.value}",
        f"case:{case_id}",
        {
            "package": str(case.package_id),
            "person": None if person_id is None else str(person_id),
            "reason": reason,
        },
    )
    if on_decided is not None:
        on_decided(case)
    return case
