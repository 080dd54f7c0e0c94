"""Engines and sessions for SQLite (embedded) and PostgreSQL (at scale).

SQLite: every connection runs in WAL mode with ``synchronous=FULL`` (a commit returns only
after the WAL is on disk: an acknowledged package survives a power cut), foreign keys on,
and a busy timeout so that a second writer waits instead of failing. Transactions start
with ``BEGIN IMMEDIATE`` by default: the writer takes SQLite's single write lock at the
start, so a transaction that reads and then writes (allocating a number, claiming a job)
never meets another writer between its read and its write, and never fails on a stale
snapshot. A read-only caller can ask for deferred transactions with
``engine.execution_options(sqlite_begin="DEFERRED")``.

PostgreSQL: psycopg 3 (``postgresql+psycopg://``), READ COMMITTED, a small pool per process
(several API processes and workers each hold a few connections; PostgreSQL's default is 100
in all), pre-ping so that a restarted server does not fail the first request.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")


class DatabaseSettings(BaseModel):
    """The ``database`` section of the registry's settings.

    ``url``: ``sqlite:///data/registry/registry.db`` (the embedded default, relative to the working
    directory) or ``postgresql+psycopg://user:password@host/db``. A secret, since a
    PostgreSQL URL may carry a password: set it through the settings environment.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr = SecretStr("sqlite:///data/registry/registry.db")
    pool_size: int = Field(5, ge=1)
    max_overflow: int = Field(5, ge=0)
    echo: bool = False


def engine_from_settings(settings: DatabaseSettings) -> Engine:
    return make_engine(
        settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        echo=settings.echo,
    )


def make_engine(
    url: str, *, pool_size: int = 5, max_overflow: int = 5, echo: bool = False
) -> Engine:
    """An engine for ``url`` (``sqlite:///path.db`` or ``postgresql+psycopg://...``)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.get_driver_name() != "pysqlite":
            raise ValueError(f"SQLite through pysqlite only, not {parsed.drivername!r}")
        if parsed.database and parsed.database != ":memory:" and "mode=memory" not in url:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise ValueError(
                f"PostgreSQL through psycopg 3 only: write postgresql+psycopg://..., "
                f"not {parsed.drivername!r}"
            )
        return create_engine(
            parsed,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=True,
            pool_recycle=1800,
            pool_timeout=30,
            connect_args={"connect_timeout": 10, "application_name": "vn-eid-registry"},
        )
    raise ValueError(f"unsupported database {parsed.drivername!r}: use SQLite or PostgreSQL")


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL (it stays so: later connections find it set). The switch
    needs the file to itself and SQLite does not wait for that under busy_timeout, so
    several processes opening a new database at once retry here instead of failing."""
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (the "begin" hook below) decide when transactions start, instead
        # of pysqlite's implicit BEGIN before the first write.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = str(connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
        if mode not in SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {SQLITE_BEGIN_MODES}, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def holds_write_lock(session: Session) -> bool:
    """Whether the session's transaction is one that serialises writers on SQLite (always
    true on PostgreSQL, where row locks do that job)."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return True
    mode = str(connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
    return mode in ("IMMEDIATE", "EXCLUSIVE")
