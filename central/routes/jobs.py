"""The work queue for supervisors: failed jobs with their last error, and retrying them
once the cause is fixed (a Document Signer rotated, the object store back)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from central.auth.deps import Principal, require_user
from central.db.models import Job, JobState, UserRole
from central.db.ops import append_audit, requeue_job
from central.routes.errors import api_error
from central.services import registry_of

Reader = Annotated[
    Principal, Depends(require_user(UserRole.supervisor, UserRole.admin, UserRole.auditor))
]
Operator = Annotated[Principal, Depends(require_user(UserRole.supervisor, UserRole.admin))]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "package_id": None if job.package_id is None else str(job.package_id),
        "state": job.state.value,
        "attempts": job.attempts,
        "not_before": job.not_before.isoformat(),
        "locked_by": job.locked_by,
        "last_error": job.last_error,
        "updated_at": job.updated_at.isoformat(),
    }


def jobs_router() -> APIRouter:
    router = APIRouter(prefix="/v1/registry/jobs", tags=["operations"])

    @router.get("")
    def jobs(
        request: Request,
        user: Reader,
        state: JobState = JobState.failed,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Jobs in a state (failed by default), oldest first."""
        with registry_of(request).reading() as session:
            rows = session.scalars(
                select(Job).where(Job.state == state).order_by(Job.updated_at).limit(limit)
            )
            return [job_view(j) for j in rows]

    @router.post("/{job_id}/retry")
    def retry(job_id: JobId, request: Request, user: Operator) -> dict[str, Any]:
        """Put a failed job back in the queue with a fresh count of attempts."""
        registry = registry_of(request)
        with Session(registry.engine) as session, session.begin():
            try:
                job = requeue_job(session, job_id, registry.now())
            except LookupError as exc:
                raise api_error(404, "not_found", str(exc)) from None
            except ValueError as exc:
                raise api_error(409, "not_failed", str(exc)) from None
            append_audit(
                session,
                registry.now(),
                user.actor,
                "job.retried",
                f"job:{job_id}",
                {"kind": job.kind, "package": str(job.package_id)},
            )
            return job_view(job)

    return router
