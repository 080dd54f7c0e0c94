"""The station's SQLite database: WAL, ``synchronous=FULL``, one connection per thread.

    db = StationDatabase(settings.state_dir / "station.db")
    db.migrate(OUTBOX_SCHEMA, QUEUE_SCHEMA, ...)
    with db.write() as c:                 # BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)
        c.execute("INSERT INTO ...")
    with db.read() as c:                  # one consistent snapshot
        rows = c.execute("SELECT ...").fetchall()

Why these settings: the station loses power without warning (a mobile team's generator,
a tripped breaker). In WAL mode with ``synchronous=FULL`` a commit returns only after the
WAL is fsynced, so whatever the service acknowledged to the officer is on the card; a
commit cut short is rolled back on the next open. Writers take the lock up front
(``BEGIN IMMEDIATE``) so two threads never deadlock upgrading a read lock.

Each component owns its tables and declares them as a :class:`Schema`: an ordered list of
steps, applied once each and recorded in ``schema_version``. Components never alter each
other's tables; they may reference them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


class StoreError(RuntimeError):
    """The local store cannot do what was asked (disk full, corrupt file, bad schema)."""


@dataclass(frozen=True)
class Schema:
    """The tables of one component, as ordered migration steps (each a SQL script).
    Never edit a step that has shipped: append a new one."""

    component: str
    steps: tuple[str, ...]


_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)
"""


class StationDatabase:
    """One SQLite file shared by the station's components (thread-safe)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- connections -----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the station database is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout_s,
                    isolation_level=None,  # we issue BEGIN / COMMIT ourselves
                    check_same_thread=False,
                )
                conn.row_factory = sqlite3.Row
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: SQLite refused WAL mode ({mode})")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open the station database {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed (and fsynced) when the block ends, rolled back
        when it raises."""
        conn = self._connection()
        if conn.in_transaction:
            raise StoreError("nested write transaction: pass the connection down instead")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # disk full at commit: nothing was written
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"the station database could not commit: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in the block sees the same snapshot."""
        conn = self._connection()
        if conn.in_transaction:
            yield conn  # inside a write: read what it wrote
            return
        conn.execute("BEGIN DEFERRED")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (checkpointing the WAL); safe to call twice."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._closed = True
        for conn in connections:
            with suppress(sqlite3.Error):
                conn.close()

    # --- schema ----------------------------------------------------------------------------

    def migrate(self, *schemas: Schema) -> None:
        """Apply the steps of each component that this file has not seen yet."""
        conn = self._connection()
        conn.execute(_VERSIONS)
        for schema in schemas:
            row = conn.execute(
                "SELECT version FROM schema_version WHERE component = ?", (schema.component,)
            ).fetchone()
            done = int(row[0]) if row else 0
            if done > len(schema.steps):
                raise StoreError(
                    f"{self.path}: component {schema.component!r} is at schema version {done}, "
                    f"newer than this software ({len(schema.steps)}); update the station"
                )
            for version, step in enumerate(schema.steps[done:], start=done + 1):
                # executescript would commit on its own: wrap the step in one transaction.
                script = (
                    f"BEGIN IMMEDIATE;\n{step.strip().rstrip(';')};\n"
                    "INSERT INTO schema_version (component, version) "
                    f"VALUES ('{schema.component}', {version}) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version;\n"
                    "COMMIT;"
                )
                try:
                    conn.executescript(script)
                except sqlite3.Error as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise StoreError(
                        f"{self.path}: migrating {schema.component!r} to version {version} "
                        f"failed: {exc}"
                    ) from exc

    def integrity_check(self) -> list[str]:
        """SQLite's own check; ``[]`` when the file is sound."""
        rows = self._connection().execute("PRAGMA integrity_check").fetchall()
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems


__all__ = ["Schema", "StationDatabase", "StoreError"]
