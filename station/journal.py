"""The station's journal: an append-only log of who did what, when, to which case.

    journal = Journal(db)                      # clock defaults to UTC now
    with db.write() as c:
        ...change some state...
        journal.record(c, "officer1", "operator.login", "officer1", factor="pin")
    journal.recent(20, action="operator.login")

Why it exists: an office must be able to answer "who approved this override?" or "why was
this operator locked at 10:42?" days later, with no network. Entries are written in the
caller's transaction, so a state change and its journal line commit (or vanish) together:
a power cut can never leave a login without its entry or an entry for a login that did
not happen.

What it never holds: biometric data (images, templates; a match score as a number is
fine) and secrets (PINs, passwords, their hashes, session tokens). The journal is
readable by technicians and goes out with support bundles, so :meth:`record` refuses such
details rather than trusting every caller to remember: values must be JSON (str, int,
float, bool, None, lists and dicts of those; bytes and arrays are refused outright), and a
key whose name has a part like ``pin``, ``password``, ``token``, ``template`` or
``minutiae`` is refused.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from station.store.database import Schema, StationDatabase

JOURNAL_SCHEMA = Schema(
    "journal",
    (
        """
        CREATE TABLE journal_entries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX journal_entries_action ON journal_entries (action, id);
        CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        """,
    ),
)

# Key-name parts (split on "_", compared lower-case) that would carry a secret or a
# biometric sample. Refused, not silently dropped, so the caller's bug is found in a test.
# Samples themselves are refused by type too: bytes and arrays are not JSON values.
_FORBIDDEN_PARTS = frozenset(
    {
        "pin",
        "pins",
        "password",
        "passwords",
        "passwd",
        "secret",
        "token",
        "template",
        "templates",
        "minutiae",
    }
)


class JournalError(ValueError):
    """A journal entry was refused (a secret or biometric detail, or a value not JSON)."""


@dataclass(frozen=True)
class JournalEntry:
    """One line of the journal."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    detail: dict[str, Any]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_value(path: str, value: object) -> None:
    if isinstance(value, bytes | bytearray | memoryview):
        raise JournalError(f"journal detail {path!r} is binary data; the journal holds no samples")
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise JournalError(f"journal detail {path!r} has a non-string key {key!r}")
            _check_key(f"{path}.{key}", key)
            _check_value(f"{path}.{key}", inner)
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            _check_value(f"{path}[{i}]", inner)
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise JournalError(f"journal detail {path!r} is a {type(value).__name__}, not a JSON value")


def _check_key(path: str, key: str) -> None:
    lowered = key.lower()
    parts = set(lowered.split("_")) | {lowered}
    bad = parts & _FORBIDDEN_PARTS
    if bad:
        raise JournalError(
            f"journal detail {path!r} looks like a secret or a biometric sample "
            f"({sorted(bad)[0]!r}); the journal must never hold those"
        )


class Journal:
    """Append-only event log in the station database (table ``journal_entries``)."""

    def __init__(self, db: StationDatabase, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._db = db
        self._clock = clock

    def record(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        subject: str | None = None,
        /,
        **detail: Any,
    ) -> int:
        """Append one entry inside the caller's write transaction; returns its id.

        ``actor`` is an operator id, or ``"station"`` / ``"sync"`` for the machine itself;
        ``action`` a dotted name (``operator.login``, ``case.opened``). The first four
        arguments are positional, so any detail key (even ``action``) is free.
        Raises :class:`JournalError` for a detail that names a secret or a biometric
        sample, or that is not JSON."""
        if not actor:
            raise JournalError("a journal entry needs an actor")
        if not action:
            raise JournalError("a journal entry needs an action")
        for key, value in detail.items():
            _check_key(key, key)
            _check_value(key, value)
        at = self._clock()
        if at.tzinfo is None:
            raise JournalError("the journal clock must return timezone-aware datetimes")
        cursor = conn.execute(
            "INSERT INTO journal_entries (at, actor, action, subject, detail) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                at.astimezone(UTC).isoformat(timespec="microseconds"),
                actor,
                action,
                subject,
                json.dumps(detail, ensure_ascii=False, sort_keys=True, allow_nan=False),
            ),
        )
        return int(cursor.lastrowid or 0)

    def recent(
        self, limit: int = 50, action: str | Sequence[str] | None = None
    ) -> list[JournalEntry]:
        """The newest entries first (optionally only those of one action or several)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        sql = "SELECT id, at, actor, action, subject, detail FROM journal_entries"
        params: list[object] = []
        if action is not None:
            actions = [action] if isinstance(action, str) else list(action)
            sql += f" WHERE action IN ({', '.join('?' for _ in actions)})"
            params.extend(actions)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._db.read() as c:
            rows = c.execute(sql, params).fetchall()
        return [
            JournalEntry(
                id=int(r["id"]),
                at=datetime.fromisoformat(r["at"]),
                actor=r["actor"],
                action=r["action"],
                subject=r["subject"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]


__all__ = ["JOURNAL_SCHEMA", "Journal", "JournalEntry", "JournalError"]
