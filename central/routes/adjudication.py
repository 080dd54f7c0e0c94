"""Adjudication cases: listed and viewed by adjudicators (and read by auditors and
administrators, as docs/registry-access.md's roles say), decided by adjudicators only.
Supervisors see a package's state, not the biometrics and identities of a case."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from central import adjudication
from central.auth.deps import Principal, require_user
from central.db.models import CaseDecision, CaseState, UserRole
from central.routes.errors import JSON_LIMIT, api_error
from central.services import registry_of

READERS = (UserRole.adjudicator, UserRole.auditor, UserRole.admin)
Reader = Annotated[Principal, Depends(require_user(*READERS))]
Adjudicator = Annotated[Principal, Depends(require_user(UserRole.adjudicator))]
# Case ids are 32-bit integer keys: a larger number is a 422, not a driver overflow (500).
CaseId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class Decision(BaseModel):
    decision: CaseDecision
    person_id: uuid.UUID | None = Field(
        None, description='for "same": the candidate person the enrollment joins'
    )
    reason: str | None = Field(None, max_length=2000)


def adjudication_router() -> APIRouter:
    router = APIRouter(prefix="/v1/cases", tags=["adjudication"], max_body_size=JSON_LIMIT)

    @router.get("")
    def cases(
        request: Request,
        user: Reader,
        state: CaseState | None = CaseState.open,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Cases, oldest first (open ones by default: the backlog)."""
        with registry_of(request).reading() as session:
            return adjudication.list_cases(session, state, limit)

    @router.get("/{case_id}")
    def case(case_id: CaseId, request: Request, user: Reader) -> dict[str, Any]:
        """Probe and candidates side by side: demographics, portraits (base64 JPEG), and
        per finger the matched minutiae (x, y, angle in the probe's and the candidate's
        images)."""
        registry = registry_of(request)
        viewer = adjudication.CaseViewer(registry.blobs, registry.ingest.verifier)
        with registry.reading() as session:
            try:
                return viewer.view(session, case_id)
            except adjudication.AdjudicationError as exc:
                raise api_error(exc.status, exc.code, exc.detail) from None

    @router.post("/{case_id}/decision")
    def decide(
        case_id: CaseId, body: Decision, request: Request, user: Adjudicator
    ) -> dict[str, Any]:
        """Decide a case: "same" links the enrollment to the named existing person (no
        second number, ever); "different" sends it on to issuance."""
        registry = registry_of(request)
        try:
            with Session(registry.engine, expire_on_commit=False) as session, session.begin():
                decided = adjudication.decide(
                    session,
                    case_id,
                    body.decision,
                    body.person_id,
                    body.reason,
                    user.username,
                    registry.now(),
                )
                return adjudication.summary(decided)
        except adjudication.AdjudicationError as exc:
            raise api_error(exc.status, exc.code, exc.detail) from None

    return router
