"""The registry's HTTP service (FastAPI): built from settings, health first.

`create_app(settings)` opens the database (migrating it to the newest schema unless told
not to) and the blob store at start-up and closes them on the way out. Routers for
onboarding, ingest, adjudication and reporting attach to the same app as they are built.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from central.blobs import BlobStore, make_blob_store
from central.config import RegistrySettings
from central.db.engine import engine_from_settings
from central.db.migrate import current, head, upgrade


@dataclass
class Registry:
    """What a request handler reaches through ``request.app.state.registry``."""

    settings: RegistrySettings
    engine: Engine
    blobs: BlobStore


def open_registry(settings: RegistrySettings) -> Registry:
    url = settings.database.url.get_secret_value()
    if settings.migrate_on_start:
        upgrade(url)
    return Registry(
        settings, engine_from_settings(settings.database), make_blob_store(settings.blobs)
    )


def readiness(registry: Registry) -> dict[str, str]:
    """What stops this process from serving, by component; empty when ready."""
    problems: dict[str, str] = {}
    try:
        with registry.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        schema = current(registry.settings.database.url.get_secret_value())
        if schema != head():
            problems["schema"] = f"database schema at {schema}, code expects {head()}"
    except Exception as exc:  # any driver error means "not ready", with its reason
        problems["database"] = f"{type(exc).__name__}: {exc}"
    try:
        # A read that touches the store: missing is fine, unreachable is not.
        registry.blobs.exists(f"readyz/{secrets.token_hex(4)}")
    except Exception as exc:
        problems["blobs"] = f"{type(exc).__name__}: {exc}"
    return problems


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = open_registry(settings)
        app.state.registry = registry
        try:
            yield
        finally:
            registry.engine.dispose()

    app = FastAPI(title="VN-EID registry", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is alive (liveness): no dependency is checked."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz(request: Request) -> JSONResponse:
        """The process can serve (readiness): database reachable at the expected schema,
        blob store reachable. 503 with the reasons otherwise."""
        problems = readiness(request.app.state.registry)
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app
