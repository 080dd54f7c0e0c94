"""The pipeline worker: claims due jobs from the database queue and runs their stage.

One loop, the same embedded (a thread of the API process on SQLite: a single worker, as
SQLite has one writer) and at scale (``python -m central worker`` processes on PostgreSQL,
any number, kept apart by ``FOR UPDATE SKIP LOCKED`` and leases).

Per job: claim (commit) -> the stage's ``prepare`` outside any transaction -> one
transaction that completes the job, checks the package is still where the job expects it,
and applies the stage. If the worker dies anywhere, the job's lease expires and another
claim repeats the whole job; since nothing of a stage commits without the job's
completion, no work is lost or done twice. A surge only lengthens the queue: ingest never
waits for the pipeline.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from central.db.models import Job, Package
from central.db.ops import claim_next_job, complete_job, retry_job
from central.pipeline.stages import (
    STAGES,
    DedupStage,
    PipelineContext,
    Rejection,
    Stage,
    reject,
)

log = logging.getLogger(__name__)


class WorkerSettings(BaseModel):
    in_process: bool = True
    """Run one worker thread inside the API process (the embedded default)."""
    lease_seconds: float = Field(300.0, gt=0)
    """How long a claimed job stays this worker's; longer than any stage takes."""
    idle_poll_seconds: float = Field(0.5, gt=0)
    max_attempts: int = Field(8, ge=1)
    retry_base_seconds: float = Field(5.0, gt=0)
    housekeeping_seconds: float = Field(600.0, gt=0)
    """How often the worker also expires idle resumable uploads and removes package blobs
    a crash left unrecorded."""


@dataclass
class JobResult:
    job_id: int
    kind: str
    outcome: str  # "done", "rejected", "retry", "stale", "lost"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class Worker:
    def __init__(
        self,
        engine: Engine,
        ctx: PipelineContext,
        settings: WorkerSettings,
        *,
        name: str | None = None,
        on_result: Callable[[JobResult, float], None] | None = None,
        housekeeping: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.ctx = ctx
        self.settings = settings
        self.name = name or worker_id()
        self.on_result = on_result
        self.housekeeping = housekeeping
        self._stop = threading.Event()
        self._next_housekeeping = time.monotonic()

    def now(self) -> datetime:
        return self.ctx.clock()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Work until :meth:`stop`; an idle worker polls the queue."""
        log.info("worker started", extra={"worker": self.name})
        while not self._stop.is_set():
            self._housekeeping()
            try:
                result = self.run_once()
            except Exception:
                log.exception("worker loop error; pausing")
                result = None
                self._stop.wait(self.settings.idle_poll_seconds * 4)
                continue
            if result is None:
                self._stop.wait(self.settings.idle_poll_seconds)
        log.info("worker stopped", extra={"worker": self.name})

    def _housekeeping(self) -> None:
        if self.housekeeping is None or time.monotonic() < self._next_housekeeping:
            return
        self._next_housekeeping = time.monotonic() + self.settings.housekeeping_seconds
        try:
            self.housekeeping()
        except Exception:  # housekeeping must never stop the pipeline
            log.exception("housekeeping failed; trying again later")

    def drain(self, limit: int = 10_000) -> list[JobResult]:
        """Run due jobs until none is left or :meth:`stop` (tests, ``worker --once``)."""
        results = []
        for _ in range(limit):
            if self._stop.is_set():
                break
            result = self.run_once()
            if result is None:
                break
            results.append(result)
        return results

    def run_once(self) -> JobResult | None:
        lease = timedelta(seconds=self.settings.lease_seconds)
        with Session(self.engine) as session, session.begin():
            job = claim_next_job(session, self.name, self.now(), lease, self.settings.max_attempts)
            if job is None:
                return None
            session.expunge(job)
        started = time.perf_counter()
        result = self._run(job)
        if self.on_result is not None:
            self.on_result(result, time.perf_counter() - started)
        log.info(
            "job %s",
            result.outcome,
            extra={
                "job": job.id,
                "kind": job.kind,
                "package_id": str(job.package_id),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return result

    def _load(self, job: Job, stage: Stage) -> Package | None:
        """The package, if it is still where this job expects it."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            row = session.get(Package, job.package_id)
            if row is None or row.state not in stage.expects:
                return None
            if isinstance(stage, DedupStage):
                stage.start(self.ctx, session, row)
            return row

    def _run(self, job: Job) -> JobResult:
        stage = STAGES.get(job.kind)
        if stage is None:
            return self._retry(job, f"no stage for job kind {job.kind!r}")
        row = self._load(job, stage)
        if row is None:
            return self._finish_stale(job)
        try:
            prepared = stage.prepare(self.ctx, row)
        except Rejection as rejection:
            return self._reject(job, rejection)
        except Exception as exc:  # transient until proven otherwise: retry with backoff
            log.warning("stage %s failed: %s", job.kind, exc, exc_info=True)
            return self._retry(job, f"{type(exc).__name__}: {exc}")
        try:
            with Session(self.engine) as session, session.begin():
                if not complete_job(session, session.get_one(Job, job.id), self.name, self.now()):
                    return JobResult(job.id, job.kind, "lost")
                fresh = session.get(Package, job.package_id, populate_existing=True)
                if fresh is None or fresh.state not in stage.expects:
                    return JobResult(job.id, job.kind, "stale")
                try:
                    with session.begin_nested():
                        stage.commit(self.ctx, session, fresh, prepared)
                except Rejection as rejection:
                    reject(session, fresh, rejection, self.now(), f"pipeline:{job.kind}")
                    return JobResult(job.id, job.kind, "rejected")
            return JobResult(job.id, job.kind, "done")
        except Exception as exc:
            log.warning("commit of %s failed: %s", job.kind, exc, exc_info=True)
            return self._retry(job, f"{type(exc).__name__}: {exc}")

    def _finish_stale(self, job: Job) -> JobResult:
        with Session(self.engine) as session, session.begin():
            complete_job(session, session.get_one(Job, job.id), self.name, self.now())
        return JobResult(job.id, job.kind, "stale")

    def _reject(self, job: Job, rejection: Rejection) -> JobResult:
        with Session(self.engine) as session, session.begin():
            if not complete_job(session, session.get_one(Job, job.id), self.name, self.now()):
                return JobResult(job.id, job.kind, "lost")
            row = session.get_one(Package, job.package_id)
            reject(session, row, rejection, self.now(), f"pipeline:{job.kind}")
        return JobResult(job.id, job.kind, "rejected")

    def _retry(self, job: Job, error: str) -> JobResult:
        with Session(self.engine) as session, session.begin():
            retry_job(
                session,
                session.get_one(Job, job.id),
                self.name,
                self.now(),
                error[:2000],
                max_attempts=self.settings.max_attempts,
                base_delay=timedelta(seconds=self.settings.retry_base_seconds),
            )
        return JobResult(job.id, job.kind, "retry")


class WorkerThread:
    """The embedded registry's in-process worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, name="pipeline-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)


def utc_now() -> datetime:
    return datetime.now(UTC)
