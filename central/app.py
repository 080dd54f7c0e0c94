"""The registry's HTTP service (FastAPI), built from settings.

`create_app(settings)` opens the registry at start-up (``central.services.open_registry``:
database migrated, blob store, keys, access checks), starts the in-process pipeline
worker when configured (the embedded default), and closes everything on the way out.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from central.api_reports import reports_router
from central.auth import routers as auth_routers
from central.auth.deps import require_user
from central.auth.users import UserError, ensure_admin
from central.config import RegistrySettings
from central.db.migrate import head
from central.db.models import UserRole
from central.logs import RequestIdMiddleware, configure_logging
from central.metrics import metrics_router
from central.routes.adjudication import adjudication_router
from central.routes.errors import database_refused_value
from central.routes.jobs import jobs_router
from central.routes.packages import packages_router, registry_packages_router
from central.routes.station_sync import residents_router, station_sync_router
from central.routes.stations import stations_router
from central.routes.updates import updates_router
from central.services import Registry, open_registry, registry_of, utc_now

log = logging.getLogger(__name__)


@functools.cache
def expected_schema() -> str | None:
    """The newest migration (parsed once per process)."""
    return head()


def readiness(registry: Registry) -> dict[str, str]:
    """What stops this process from serving, by component; empty when ready."""
    problems: dict[str, str] = {}
    try:
        # Through the pool: a probe must not open a connection of its own each time.
        with registry.engine.connect() as connection:
            schema = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if schema != expected_schema():
            problems["schema"] = f"database schema at {schema}, code expects {expected_schema()}"
    except Exception as exc:  # any driver error means "not ready"
        # The answer is public: the reason's class only; the text (hosts, paths) is logged.
        log.warning("readiness: database: %s", exc)
        problems["database"] = f"unreachable ({type(exc).__name__}); see the registry's log"
    try:
        # A read that touches the store: missing is fine, unreachable is not.
        registry.blobs.exists(f"readyz/{secrets.token_hex(4)}")
    except Exception as exc:
        log.warning("readiness: blob store: %s", exc)
        problems["blobs"] = f"unreachable ({type(exc).__name__}); see the registry's log"
    thread = registry.worker_thread
    if thread is not None and not thread.thread.is_alive():
        problems["worker"] = "the in-process pipeline worker has stopped"
    return problems


def _bootstrap_admin(registry: Registry) -> None:
    spec = registry.settings.bootstrap_admin
    if not spec:
        return
    username, _, password = spec.partition(":")
    if not username or not password:
        raise ValueError("bootstrap_admin is 'username:password'")
    try:
        with Session(registry.engine) as session, session.begin():
            try:
                created = ensure_admin(
                    session, registry.access.passwords, username, password, registry.now()
                )
            except UserError as exc:
                raise ValueError(f"bootstrap_admin: {exc}") from exc
    except IntegrityError:
        # Several API processes starting at once: another one created it first.
        created = False
    if created:
        log.info("created the first administrator", extra={"username": username})


def create_app(
    settings: RegistrySettings | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
    start_worker: bool | None = None,
) -> FastAPI:
    """The registry app. ``start_worker`` overrides ``settings.worker.in_process`` (tests
    drive the pipeline themselves)."""
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = open_registry(settings, clock=clock)
        app.state.registry = registry
        app.state.access = registry.access
        app.state.metrics = registry.metrics
        try:
            _bootstrap_admin(registry)
            run_worker = settings.worker.in_process if start_worker is None else start_worker
            if run_worker:
                registry.start_worker()
            yield
        finally:
            registry.close()

    app = FastAPI(
        title="VN-EID registry",
        version="0.1.0",
        lifespan=lifespan,
        description=(
            "Station onboarding, package ingest, the processing pipeline, adjudication, "
            "issuance and reporting. People authenticate with OAuth2 (password flow, "
            "bearer tokens); stations sign every request (RFC 9421)."
        ),
    )
    app.add_middleware(RequestIdMiddleware)
    auth_routers.install(app)
    app.add_exception_handler(DataError, database_refused_value)
    app.include_router(stations_router())
    app.include_router(station_sync_router())
    app.include_router(residents_router())
    app.include_router(packages_router())
    app.include_router(registry_packages_router())
    app.include_router(adjudication_router())
    app.include_router(jobs_router())
    app.include_router(updates_router(settings.updates))
    app.include_router(
        reports_router(
            require_user(UserRole.reporting, UserRole.supervisor, UserRole.auditor, UserRole.admin),
            clock=clock,
        )
    )
    app.include_router(metrics_router(), include_in_schema=False)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is alive (liveness): no dependency is checked."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz(request: Request) -> JSONResponse:
        """The process can serve (readiness): database reachable at the expected schema,
        blob store reachable, the in-process worker alive. 503 with the reasons otherwise."""
        problems = readiness(registry_of(request))
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app


LOG_LEVEL_ENV = "CENTRAL_LOG_LEVEL"
LOG_FORMAT_ENV = "CENTRAL_LOG_FORMAT"


def app_factory() -> FastAPI:
    """What ``serve --workers N`` gives uvicorn: each worker process configures its own
    logging (from the command line's choice, passed in the environment) before the app."""
    configure_logging(
        os.environ.get(LOG_LEVEL_ENV, "INFO"), json=os.environ.get(LOG_FORMAT_ENV) != "text"
    )
    return create_app()


__all__: list[Any] = ["app_factory", "create_app", "readiness"]
