"""The outbox: built, signed, encrypted packages waiting for (and after) the registry.

A station works for days without a network, so every package it builds waits here until
the registry acknowledges it, and stays listed afterwards while the registry processes it
(its state mirrored by the uploader). Two halves, each durable:

- the package itself, a file ``<folder>/<package_id>.vnpkg`` written whole or not at all
  (:func:`station.store.files.atomic_write`) *before* anything refers to it;
- its row in ``outbox_package``, inserted in the caller's transaction, so the case's
  state change ("packaged") and the outbox row commit together or not at all.

A power cut between the two leaves a file with no row; :meth:`Outbox.recover` removes it
at the next start (the case was not marked packaged either, so the officer's work is still
in the drafts and the package is built again). A row whose file is missing cannot happen
through this code; if the disk lost one anyway, recovery flags the row (``file_problem``)
for a technician instead of crashing, and the uploader leaves it alone.

States::

    queued ──▶ sending ──▶ acknowledged ──▶ received ▶ verified ▶ ... ▶ issued ▶ card_encoded
       │          │              (the registry's states, mirrored)   └────▶ rejected
       │          └──▶ refused   (a permanent 4xx: a technician must look; requeue() after)
       └──▶ exported             (copied to removable media, waiting for its receipt)

``queued``, ``sending`` and ``exported`` are *pending*: the registry has not acknowledged
them, and the uploader sends them when they are due (an exported package that finds a
network goes up too; the registry takes a package once, whichever way it came).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enrollment.ids import is_package_id
from enrollment.package import BuiltPackage
from station.store.database import Schema, StationDatabase
from station.store.files import atomic_write, remove_durably, sweep_temporaries

log = logging.getLogger(__name__)

SUFFIX = ".vnpkg"

QUEUED, SENDING, ACKNOWLEDGED, REFUSED, EXPORTED = (
    "queued",
    "sending",
    "acknowledged",
    "refused",
    "exported",
)
PENDING_STATES = (QUEUED, SENDING, EXPORTED)
"""Not yet acknowledged by the registry: the uploader sends these when due."""
REGISTRY_STATES = (
    "received",
    "verified",
    "quality_checked",
    "deduplicating",
    "adjudication",
    "issued",
    "card_encoded",
    "rejected",
)
"""The registry's package states, mirrored after acknowledgement."""
FINAL_STATES = ("issued", "card_encoded", "rejected")
"""Where the registry is done with the package itself: the file may be retired, and the
status is no longer polled (card issuance follows ``issued`` through its own endpoint)."""
STATES = (QUEUED, SENDING, ACKNOWLEDGED, REFUSED, EXPORTED, *REGISTRY_STATES)
# The queries below spell these counts out as placeholders.
assert len(PENDING_STATES) == 3
assert len(FINAL_STATES) == 3

_STATE_LIST = ", ".join(f"'{s}'" for s in STATES)

OUTBOX_SCHEMA = Schema(
    "outbox",
    (
        f"""
        CREATE TABLE outbox_package (
            package_id TEXT PRIMARY KEY,
            case_id TEXT NOT NULL,
            created TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({_STATE_LIST})),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_error TEXT,
            receipt_number TEXT,
            registry_state TEXT,
            reject_code TEXT,
            reject_text TEXT,
            recapture TEXT,
            refused_code TEXT,
            refused_detail TEXT,
            upload_offset INTEGER NOT NULL DEFAULT 0,
            acknowledged_at TEXT,
            status_checked_at TEXT,
            export_id TEXT,
            exported_at TEXT,
            file_problem TEXT,
            retired_at TEXT,
            queued_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX outbox_package_state ON outbox_package (state, created);
        CREATE INDEX outbox_package_case ON outbox_package (case_id);
        CREATE TABLE outbox_link (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            failures INTEGER NOT NULL,
            retry_at TEXT,
            last_error TEXT,
            updated_at TEXT NOT NULL
        )
        """,
    ),
)


class OutboxError(RuntimeError):
    """The outbox cannot do what was asked."""


class OutboxFullError(OutboxError):
    """The disk has no room for the package: nothing was written. Free space (send or
    export packages, remove old retired ones) before enrolling more people."""


class OutboxFileError(OutboxError):
    """A package's file is missing or does not match its row (a damaged disk)."""


def _ts(moment: datetime) -> str:
    """UTC, fixed width: text comparison is time order."""
    if moment.tzinfo is None:
        raise ValueError("outbox times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OutboxEntry:
    """One package as the outbox knows it."""

    package_id: str
    case_id: str
    created: str
    size: int
    sha256: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    receipt_number: str | None
    registry_state: str | None
    reject_code: str | None
    reject_text: str | None
    recapture: list[Any] | None
    refused_code: str | None
    refused_detail: str | None
    upload_offset: int
    acknowledged_at: datetime | None
    status_checked_at: datetime | None
    export_id: str | None
    exported_at: datetime | None
    file_problem: str | None
    retired_at: datetime | None
    queued_at: datetime
    updated_at: datetime

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    def as_json(self) -> dict[str, Any]:
        """For the UI and logs (times as ISO text)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = (
                value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value
            )
        return out

    @classmethod
    def _of(cls, row: sqlite3.Row) -> OutboxEntry:
        recapture = json.loads(row["recapture"]) if row["recapture"] is not None else None
        queued_at = _parse_ts(row["queued_at"])
        updated_at = _parse_ts(row["updated_at"])
        assert queued_at is not None
        assert updated_at is not None
        return cls(
            package_id=row["package_id"],
            case_id=row["case_id"],
            created=row["created"],
            size=int(row["size"]),
            sha256=row["sha256"],
            state=row["state"],
            attempts=int(row["attempts"]),
            next_attempt_at=_parse_ts(row["next_attempt_at"]),
            last_error=row["last_error"],
            receipt_number=row["receipt_number"],
            registry_state=row["registry_state"],
            reject_code=row["reject_code"],
            reject_text=row["reject_text"],
            recapture=recapture,
            refused_code=row["refused_code"],
            refused_detail=row["refused_detail"],
            upload_offset=int(row["upload_offset"]),
            acknowledged_at=_parse_ts(row["acknowledged_at"]),
            status_checked_at=_parse_ts(row["status_checked_at"]),
            export_id=row["export_id"],
            exported_at=_parse_ts(row["exported_at"]),
            file_problem=row["file_problem"],
            retired_at=_parse_ts(row["retired_at"]),
            queued_at=queued_at,
            updated_at=updated_at,
        )


Entries = list[OutboxEntry]
"""(An alias: inside :class:`Outbox` the name ``list`` is its method.)"""


@dataclass(frozen=True)
class OutboxCounts:
    """What the UI and the heartbeat show of the queue."""

    by_state: dict[str, int]
    pending: int
    """Not yet acknowledged (queued, sending, exported)."""
    oldest_pending_s: float | None
    """Age of the oldest pending package (from its creation), None when none waits."""
    refused: int
    file_problems: int

    def heartbeat(self) -> dict[str, Any]:
        """The heartbeat's ``queue`` object."""
        return {
            "pending": self.pending,
            "oldest_pending_s": self.oldest_pending_s,
            "refused": self.refused,
        }


@dataclass(frozen=True)
class DiskSpace:
    free_bytes: int
    total_bytes: int

    def heartbeat(self) -> dict[str, int]:
        return {"free_bytes": self.free_bytes, "total_bytes": self.total_bytes}


@dataclass(frozen=True)
class LinkState:
    """The uploader's back-off towards the registry, kept across restarts so a station
    that restarts while the registry is away does not hammer it."""

    failures: int
    retry_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`Outbox.recover` found at start."""

    orphans_removed: tuple[str, ...]
    """Files staged before a power cut, never recorded: removed."""
    temporaries_removed: int
    missing: tuple[str, ...]
    """Rows whose file is gone (flagged ``file_problem = 'missing'``): a technician's job."""


def _check_package_id(package_id: str) -> None:
    if not is_package_id(package_id):
        raise OutboxError(f"{package_id!r} is not a package id (a UUIDv7)")


class Outbox:
    """The durable queue of packages: files in ``folder``, rows in the station database.

    Thread-safe (each method is its own transaction, or runs in the caller's). Only
    :meth:`recover` and :meth:`retire` delete package files.
    """

    def __init__(
        self,
        db: StationDatabase,
        folder: Path,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.db = db
        self.folder = Path(folder)
        self.clock = clock

    # --- adding ----------------------------------------------------------------------------

    def path_of(self, package_id: str) -> Path:
        _check_package_id(package_id)
        return self.folder / f"{package_id}{SUFFIX}"

    def stage(self, built: BuiltPackage) -> Path:
        """Write the package file (durably), before :meth:`record` refers to it.

        Raises :class:`OutboxFullError` on a full disk, leaving no partial file."""
        path = self.path_of(built.package_id)
        if path.exists():
            if path.read_bytes() == built.data:
                return path  # staged already (a retry after an error further on)
            if self.get(built.package_id) is not None:
                raise OutboxError(f"{path} exists with other content: package ids must be unique")
            # Staged by an earlier attempt that never recorded it (so never sent): a
            # rebuild under the same id has other bytes (new nonce); it replaces it.
        try:
            atomic_write(path, built.data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutboxFullError(
                    f"no room for package {built.package_id} ({len(built.data)} bytes) in "
                    f"{self.folder}: the disk is full. Send or export the waiting packages "
                    "before enrolling more people"
                ) from exc
            raise OutboxError(f"cannot write package file {path}: {exc}") from exc
        return path

    def record(self, conn: sqlite3.Connection, built: BuiltPackage, case_id: str) -> None:
        """Insert the package's row in the caller's write transaction (its file must have
        been staged): it is queued for upload when that transaction commits."""
        path = self.path_of(built.package_id)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise OutboxError(
                f"package {built.package_id} was not staged: stage() it first"
            ) from exc
        if size != len(built.data):
            raise OutboxError(f"{path} holds {size} bytes, the package {len(built.data)}")
        if not case_id:
            raise OutboxError("a package needs the case id it was built for")
        now = _ts(self.clock())
        try:
            conn.execute(
                "INSERT INTO outbox_package (package_id, case_id, created, size, sha256, "
                "state, queued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    built.package_id,
                    case_id,
                    built.created,
                    len(built.data),
                    hashlib.sha256(built.data).hexdigest(),
                    QUEUED,
                    now,
                    now,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise OutboxError(f"package {built.package_id} is in the outbox already") from exc

    def add(self, built: BuiltPackage, case_id: str) -> Path:
        """Stage and record in a transaction of its own (for callers with no case state
        to commit alongside)."""
        path = self.stage(built)
        with self.db.write() as conn:
            self.record(conn, built, case_id)
        return path

    def recover(self) -> RecoveryReport:
        """At start, before anything stages packages: remove files that a power cut left
        without a row (and those of retired rows), sweep temporaries, flag rows whose
        file is gone. Never raises for what it finds; it reports and logs it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        swept = sweep_temporaries(self.folder)
        with self.db.read() as conn:
            rows = {
                str(r[0]): (r[1] is not None, r[2])
                for r in conn.execute(
                    "SELECT package_id, retired_at, file_problem FROM outbox_package"
                )
            }
        files = {p.name[: -len(SUFFIX)]: p for p in self.folder.glob(f"*{SUFFIX}")}
        orphans: list[str] = []
        for package_id, path in sorted(files.items()):
            known = rows.get(package_id)
            if known is None or known[0]:
                remove_durably(path)
                if known is None:
                    orphans.append(package_id)
        missing = sorted(
            pid for pid, (retired, _) in rows.items() if not retired and pid not in files
        )
        found_again = [
            pid for pid, (_, problem) in rows.items() if problem == "missing" and pid in files
        ]
        now = _ts(self.clock())
        if missing or found_again:
            with self.db.write() as conn:
                conn.executemany(
                    "UPDATE outbox_package SET file_problem = 'missing', updated_at = ? "
                    "WHERE package_id = ? AND file_problem IS NOT 'missing'",
                    [(now, pid) for pid in missing],
                )
                conn.executemany(
                    "UPDATE outbox_package SET file_problem = NULL, updated_at = ? "
                    "WHERE package_id = ?",
                    [(now, pid) for pid in found_again],
                )
        for pid in missing:
            log.error(
                "outbox: package %s has a row but no file in %s; it cannot be sent. "
                "A technician must restore the file (or export the case again)",
                pid,
                self.folder,
            )
        if orphans:
            log.warning("outbox: removed %d staged package file(s) never recorded", len(orphans))
        return RecoveryReport(tuple(orphans), swept, tuple(missing))

    # --- reading ---------------------------------------------------------------------------

    def get(self, package_id: str) -> OutboxEntry | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM outbox_package WHERE package_id = ?", (package_id,)
            ).fetchone()
        return OutboxEntry._of(row) if row is not None else None

    def list(self, state: str | None = None, *, limit: int = 100, offset: int = 0) -> Entries:
        """Newest first (the UI's list), optionally only one state."""
        if state is not None and state not in STATES:
            raise OutboxError(f"unknown outbox state {state!r}")
        if limit < 1 or offset < 0:
            raise OutboxError("limit must be positive and offset not negative")
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM outbox_package {where} "  # noqa: S608 (fixed text)
                "ORDER BY created DESC, package_id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [OutboxEntry._of(r) for r in rows]

    def for_case(self, case_id: str) -> Entries:
        """The packages built for one case, oldest first (a recapture adds one)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_package WHERE case_id = ? ORDER BY created, package_id",
                (case_id,),
            ).fetchall()
        return [OutboxEntry._of(r) for r in rows]

    def pending(self, *, limit: int = 50, now: datetime | None = None) -> Entries:
        """What the uploader should send now: pending, due, file sound; oldest first."""
        moment = _ts(now or self.clock())
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_package WHERE state IN (?, ?, ?) "
                "AND file_problem IS NULL "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
                "ORDER BY created, package_id LIMIT ?",
                (*PENDING_STATES, moment, limit),
            ).fetchall()
        return [OutboxEntry._of(r) for r in rows]

    def next_due(self) -> datetime | None:
        """When the next pending package becomes due (None: nothing pending; a time in
        the past: due now)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT COUNT(*), MIN(COALESCE(next_attempt_at, '')) FROM outbox_package "
                "WHERE state IN (?, ?, ?) AND file_problem IS NULL",
                PENDING_STATES,
            ).fetchone()
        if not row[0]:
            return None
        return _parse_ts(row[1]) if row[1] else datetime.min.replace(tzinfo=UTC)

    def exportable(self) -> Entries:
        """Every package not yet acknowledged whose file is sound, oldest first (what goes
        on removable media: again each time until a receipt comes back)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_package WHERE state IN (?, ?, ?) "
                "AND file_problem IS NULL ORDER BY created, package_id",
                PENDING_STATES,
            ).fetchall()
        return [OutboxEntry._of(r) for r in rows]

    def status_due(self, older_than: datetime, *, limit: int = 50) -> Entries:
        """Acknowledged packages whose registry state is not final and was last asked
        before ``older_than``; oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_package WHERE state NOT IN (?, ?, ?, ?, ?, ?, ?) "
                "AND (status_checked_at IS NULL OR status_checked_at <= ?) "
                "ORDER BY created, package_id LIMIT ?",
                (*PENDING_STATES, REFUSED, *FINAL_STATES, _ts(older_than), limit),
            ).fetchall()
        return [OutboxEntry._of(r) for r in rows]

    def next_status_check(self) -> datetime | None:
        """The oldest status check among packages still moving at the registry."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT COUNT(*), MIN(COALESCE(status_checked_at, '')) FROM outbox_package "
                "WHERE state NOT IN (?, ?, ?, ?, ?, ?, ?)",
                (*PENDING_STATES, REFUSED, *FINAL_STATES),
            ).fetchone()
        if not row[0]:
            return None
        return _parse_ts(row[1]) if row[1] else datetime.min.replace(tzinfo=UTC)

    def counts(self) -> OutboxCounts:
        """Packages per state, and the age of the oldest one still waiting to be sent."""
        with self.db.read() as conn:
            by_state = {
                str(r[0]): int(r[1])
                for r in conn.execute("SELECT state, COUNT(*) FROM outbox_package GROUP BY state")
            }
            oldest = conn.execute(
                "SELECT MIN(created) FROM outbox_package WHERE state IN (?, ?, ?)",
                PENDING_STATES,
            ).fetchone()[0]
            problems = conn.execute(
                "SELECT COUNT(*) FROM outbox_package WHERE file_problem IS NOT NULL "
                "AND retired_at IS NULL"
            ).fetchone()[0]
        age: float | None = None
        if oldest is not None:
            try:
                created = datetime.fromisoformat(str(oldest).replace("Z", "+00:00"))
                age = max(0.0, (self.clock() - created).total_seconds())
            except ValueError:
                age = None
        return OutboxCounts(
            by_state=by_state,
            pending=sum(by_state.get(s, 0) for s in PENDING_STATES),
            oldest_pending_s=age,
            refused=by_state.get(REFUSED, 0),
            file_problems=int(problems),
        )

    def read(self, package_id: str) -> bytes:
        """The package's bytes, checked against its row (size and SHA-256). A missing or
        damaged file is flagged on the row and raises :class:`OutboxFileError`."""
        entry = self.get(package_id)
        if entry is None:
            raise OutboxError(f"package {package_id} is not in the outbox")
        path = self.path_of(package_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._flag(package_id, "missing")
            raise OutboxFileError(f"package file {path} is missing") from None
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            self._flag(package_id, "corrupt")
            raise OutboxFileError(f"package file {path} does not match its SHA-256: damaged")
        return data

    def _flag(self, package_id: str, problem: str) -> None:
        log.error("outbox: package %s file is %s", package_id, problem)
        with self.db.write() as conn:
            conn.execute(
                "UPDATE outbox_package SET file_problem = ?, updated_at = ? WHERE package_id = ?",
                (problem, _ts(self.clock()), package_id),
            )

    # --- transitions (each its own transaction unless a connection is given) --------------

    def _update(self, sql: str, args: Sequence[Any], conn: sqlite3.Connection | None) -> int:
        if conn is not None:
            return conn.execute(sql, args).rowcount
        with self.db.write() as c:
            return c.execute(sql, args).rowcount

    def mark_sending(self, package_id: str) -> bool:
        """An upload starts: ``queued`` becomes ``sending`` (an exported package stays
        ``exported``). False when the package is no longer pending."""
        n = self._update(
            "UPDATE outbox_package SET state = CASE state WHEN 'queued' THEN 'sending' "
            "ELSE state END, updated_at = ? WHERE package_id = ? AND state IN (?, ?, ?)",
            (_ts(self.clock()), package_id, *PENDING_STATES),
            None,
        )
        return n == 1

    def make_due(self) -> int:
        """Every pending package due now (the network came back: no reason to wait out
        back-offs earned while it was away); how many."""
        return self._update(
            "UPDATE outbox_package SET next_attempt_at = NULL, updated_at = ? "
            "WHERE state IN (?, ?, ?) AND next_attempt_at IS NOT NULL",
            (_ts(self.clock()), *PENDING_STATES),
            None,
        )

    def mark_progress(self, package_id: str, offset: int) -> None:
        """Where a resumable upload stands at the registry (a hint for the next attempt;
        the registry's own offset wins)."""
        self._update(
            "UPDATE outbox_package SET upload_offset = ?, updated_at = ? "
            "WHERE package_id = ? AND state IN (?, ?, ?)",
            (offset, _ts(self.clock()), package_id, *PENDING_STATES),
            None,
        )

    def mark_retry(
        self, package_id: str, error: str, next_attempt_at: datetime, *, count: bool = True
    ) -> bool:
        """An attempt failed for a passing reason: try again at ``next_attempt_at``
        (``sending`` goes back to ``queued``; ``count`` adds to the attempts)."""
        n = self._update(
            "UPDATE outbox_package SET state = CASE state WHEN 'sending' THEN 'queued' "
            "ELSE state END, attempts = attempts + ?, next_attempt_at = ?, last_error = ?, "
            "updated_at = ? WHERE package_id = ? AND state IN (?, ?, ?)",
            (
                1 if count else 0,
                _ts(next_attempt_at),
                error[:2000],
                _ts(self.clock()),
                package_id,
                *PENDING_STATES,
            ),
            None,
        )
        return n == 1

    def mark_acknowledged(
        self,
        package_id: str,
        receipt_number: str,
        registry_state: str | None = None,
        *,
        conn: sqlite3.Connection | None = None,
    ) -> bool:
        """The registry holds the package (its receipt). From a pending or refused state;
        False (no change) when it was acknowledged already."""
        if not receipt_number:
            raise OutboxError("an acknowledgement needs the receipt number")
        if registry_state is not None and registry_state not in REGISTRY_STATES:
            registry_state = None  # a state this software does not know: ask again later
        now = _ts(self.clock())
        n = self._update(
            "UPDATE outbox_package SET state = 'acknowledged', receipt_number = ?, "
            "registry_state = ?, acknowledged_at = ?, status_checked_at = ?, "
            "next_attempt_at = NULL, last_error = NULL, refused_code = NULL, "
            "refused_detail = NULL, updated_at = ? WHERE package_id = ? AND state IN (?, ?, ?, ?)",
            (receipt_number, registry_state, now, now, now, package_id, *PENDING_STATES, REFUSED),
            conn,
        )
        if n == 0:
            held = self._receipt_of(package_id, conn)
            if held is not None and held != receipt_number:
                log.error(
                    "outbox: package %s acknowledged as %s, now %s: keeping the first",
                    package_id,
                    held,
                    receipt_number,
                )
        return n == 1

    def _receipt_of(self, package_id: str, conn: sqlite3.Connection | None) -> str | None:
        query = "SELECT receipt_number FROM outbox_package WHERE package_id = ?"
        if conn is not None:
            row = conn.execute(query, (package_id,)).fetchone()
        else:
            with self.db.read() as c:
                row = c.execute(query, (package_id,)).fetchone()
        return None if row is None else row[0]

    def mark_refused(
        self,
        package_id: str,
        code: str,
        detail: str,
        *,
        conn: sqlite3.Connection | None = None,
    ) -> bool:
        """The registry refused the package for good (a 4xx): keep the code and detail
        for a technician; never sent again unless :meth:`requeue`."""
        n = self._update(
            "UPDATE outbox_package SET state = 'refused', refused_code = ?, refused_detail = ?, "
            "last_error = ?, next_attempt_at = NULL, updated_at = ? "
            "WHERE package_id = ? AND state IN (?, ?, ?)",
            (
                code,
                detail[:2000],
                f"{code}: {detail}"[:2000],
                _ts(self.clock()),
                package_id,
                *PENDING_STATES,
            ),
            conn,
        )
        return n == 1

    def mark_exported(
        self, conn: sqlite3.Connection, package_ids: Iterable[str], export_id: str
    ) -> int:
        """Packages copied to removable media (caller's transaction); how many changed."""
        now = _ts(self.clock())
        total = 0
        for pid in package_ids:
            total += conn.execute(
                "UPDATE outbox_package SET state = 'exported', export_id = ?, exported_at = ?, "
                "updated_at = ? WHERE package_id = ? AND state IN (?, ?, ?)",
                (export_id, now, now, pid, *PENDING_STATES),
            ).rowcount
        return total

    def mark_status(
        self,
        package_id: str,
        registry_state: str,
        *,
        reject_code: str | None = None,
        reject_text: str | None = None,
        recapture: Sequence[Any] | None = None,
    ) -> bool:
        """Mirror the registry's state of an acknowledged package; True when anything the
        workflow cares about changed (state, reject code, recapture reasons)."""
        if registry_state not in REGISTRY_STATES:
            raise OutboxError(f"unknown registry state {registry_state!r}")
        recapture_json = json.dumps(recapture, sort_keys=True) if recapture is not None else None
        now = _ts(self.clock())
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT state, reject_code, recapture FROM outbox_package WHERE package_id = ?",
                (package_id,),
            ).fetchone()
            if row is None or row["state"] in (*PENDING_STATES, REFUSED):
                return False
            changed = (row["state"], row["reject_code"], row["recapture"]) != (
                registry_state,
                reject_code,
                recapture_json,
            )
            conn.execute(
                "UPDATE outbox_package SET state = ?, registry_state = ?, reject_code = ?, "
                "reject_text = ?, recapture = ?, status_checked_at = ?, "
                "updated_at = CASE WHEN ? THEN ? ELSE updated_at END WHERE package_id = ?",
                (
                    registry_state,
                    registry_state,
                    reject_code,
                    reject_text,
                    recapture_json,
                    now,
                    changed,
                    now,
                    package_id,
                ),
            )
        return changed

    def mark_checked(self, package_id: str, error: str | None = None) -> None:
        """A status check that learned nothing new (or failed with ``error``)."""
        self._update(
            "UPDATE outbox_package SET status_checked_at = ?, last_error = COALESCE(?, "
            "last_error) WHERE package_id = ?",
            (_ts(self.clock()), error, package_id),
            None,
        )

    def requeue(self, package_id: str, reason: str) -> bool:
        """Send again: a refused package after a technician fixed the cause, or an
        acknowledged one the registry says it does not hold. Needs the file."""
        entry = self.get(package_id)
        if entry is None:
            raise OutboxError(f"package {package_id} is not in the outbox")
        if entry.retired_at is not None or entry.state in FINAL_STATES:
            raise OutboxError(f"package {package_id} is {entry.state}: nothing to send again")
        if not self.path_of(package_id).exists():
            raise OutboxFileError(f"package {package_id} has no file left to send")
        log.warning("outbox: package %s queued again: %s", package_id, reason)
        n = self._update(
            "UPDATE outbox_package SET state = 'queued', attempts = 0, next_attempt_at = NULL, "
            "upload_offset = 0, last_error = ?, receipt_number = NULL, registry_state = NULL, "
            "acknowledged_at = NULL, status_checked_at = NULL, file_problem = NULL, "
            "updated_at = ? WHERE package_id = ? AND state = ?",
            (reason[:2000], _ts(self.clock()), package_id, entry.state),
            None,
        )
        return n == 1

    def retire(self, package_id: str) -> bool:
        """Delete the package file once the registry has issued or rejected it (the row
        stays, with its receipt). False when it is not final yet or retired already."""
        n = self._update(
            "UPDATE outbox_package SET retired_at = ?, updated_at = ? "
            "WHERE package_id = ? AND retired_at IS NULL AND state IN (?, ?, ?)",
            (_ts(self.clock()), _ts(self.clock()), package_id, *FINAL_STATES),
            None,
        )
        if n == 1:
            # After the row says retired: a power cut between the two leaves a file that
            # recover() removes, never a live row without its file.
            remove_durably(self.path_of(package_id))
        return n == 1

    # --- the registry link (the uploader's back-off) --------------------------------------

    def link_state(self) -> LinkState:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT failures, retry_at, last_error FROM outbox_link WHERE id = 1"
            ).fetchone()
        if row is None:
            return LinkState(0, None, None)
        return LinkState(int(row[0]), _parse_ts(row[1]), row[2])

    def set_link_state(self, state: LinkState) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO outbox_link (id, failures, retry_at, last_error, updated_at) "
                "VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "failures = excluded.failures, retry_at = excluded.retry_at, "
                "last_error = excluded.last_error, updated_at = excluded.updated_at",
                (
                    state.failures,
                    _ts(state.retry_at) if state.retry_at else None,
                    state.last_error,
                    _ts(self.clock()),
                ),
            )

    # --- disk ------------------------------------------------------------------------------

    def disk(self) -> DiskSpace:
        """Free and total bytes of the file system holding the outbox."""
        self.folder.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(self.folder)
        return DiskSpace(int(usage.free), int(usage.total))

    def space_ok(self, min_free_bytes: int) -> bool:
        """Whether at least ``min_free_bytes`` are free: the workflow asks before starting
        an enrollment, so the station stops taking people *before* the disk is full and
        nothing captured is lost."""
        return self.disk().free_bytes >= min_free_bytes


__all__ = [
    "ACKNOWLEDGED",
    "EXPORTED",
    "FINAL_STATES",
    "OUTBOX_SCHEMA",
    "PENDING_STATES",
    "QUEUED",
    "REFUSED",
    "REGISTRY_STATES",
    "SENDING",
    "STATES",
    "DiskSpace",
    "LinkState",
    "Outbox",
    "OutboxCounts",
    "OutboxEntry",
    "OutboxError",
    "OutboxFileError",
    "OutboxFullError",
    "RecoveryReport",
]
