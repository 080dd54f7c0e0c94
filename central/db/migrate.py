"""Schema migrations, run programmatically (no alembic.ini): the service calls
:func:`upgrade` at start; ``python -m central.db.migrate revision -m "..."`` autogenerates a
new revision against a scratch SQLite database at head.

Several processes may start at once: on PostgreSQL the upgrade holds a transaction-level
advisory lock, on SQLite the engine's ``BEGIN IMMEDIATE`` write lock, so one migrates and
the others then find the schema at head.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from central.db.engine import make_engine
from central.db.models import Base

MIGRATIONS = Path(__file__).with_name("migrations")
_ADVISORY_LOCK = 0x76_6E_65_69_64  # "vneid": any constant shared by all registry processes


def make_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _migration_connection(url: str) -> Iterator[Connection]:
    """One connection in one transaction, exclusive among migrating processes."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Batch migrations copy tables; foreign keys must be off while they do, and
                # SQLite ignores this pragma inside a transaction. The engine is disposed
                # afterwards, so this connection never goes back to a pool.
                connection.connection.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA foreign_keys = OFF"
                )
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK}
                    )
                yield connection
                if connection.dialect.name == "sqlite":
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent)."""
    with _migration_connection(url) as connection:
        command.upgrade(make_config(connection), revision)


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` back to ``revision`` ("base": empty). Development and
    tests only: a production registry moves forward."""
    with _migration_connection(url) as connection:
        command.downgrade(make_config(connection), revision)


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; None for an empty database."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision this code base has."""
    revision = ScriptDirectory.from_config(make_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return revision


def schema_differences(url: str) -> list[Any]:
    """What differs between the database at ``url`` and the models (empty: in step)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _revision(message: str, rev_id: str | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/scratch.db"
        upgrade(url)
        with _migration_connection(url) as connection:
            command.revision(
                make_config(connection), message=message, autogenerate=True, rev_id=rev_id
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m central.db.migrate")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("revision", help="autogenerate a revision against SQLite")
    new.add_argument("-m", "--message", required=True)
    new.add_argument("--rev-id", help='e.g. "0002" (default: random)')
    up = commands.add_parser("upgrade", help="upgrade a database to head")
    up.add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "revision":
        _revision(args.message, args.rev_id)
    else:
        upgrade(args.url)
        print(current(args.url))


if __name__ == "__main__":
    main()
