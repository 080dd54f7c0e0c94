"""Keeping the station's copy of the registry's data current, and knowing when it is not.

One round (:meth:`Synchronizer.sync_once`) pulls, in order: the station policy
(``/v1/station/config``), the trust anchors (``/v1/station/trust``: the package key and the
CSCA list change when the registry rotates keys), the office's operators
(``/v1/station/operators``, replaced whole when their version changed) and the resident
list (``/v1/station/residents``: the whole list the first time, then only what changed
since the last cursor, page by page). Each page is applied in its own transaction with the
cursor, so a power cut or a dropped link mid-list resumes where it stopped.

Only a round that completed counts as a sync. When the last one is older than the
policy's staleness limit, :meth:`Synchronizer.staleness` says enrollment must pause: an
operator disabled at the registry could still log in, and a resident enrolled elsewhere
could enroll twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from station.identity import StationIdentity
from station.policy import StationPolicy
from station.store.database import Schema, StationDatabase
from station.store.files import atomic_write

log = logging.getLogger(__name__)

SYNC_SCHEMA = Schema(
    "sync",
    (
        """
        CREATE TABLE sync_state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
    ),
)

RESIDENT_PAGE = 1000


class ResidentSink(Protocol):
    """Where resident pages go (station.residents.ResidentList)."""

    def apply(
        self, conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]], next_seq: int
    ) -> Any: ...

    def cursor(self) -> int: ...

    def reset(self, conn: sqlite3.Connection) -> None: ...


class OperatorSink(Protocol):
    """Where the operator list goes (station.operators.OperatorDirectory)."""

    def validate(self, operators: Sequence[Mapping[str, Any]]) -> Any: ...

    def replace(self, conn: sqlite3.Connection, operators: Any, version: str) -> Any: ...

    def invalidate(self) -> None: ...


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class SyncError(RuntimeError):
    """A sync round failed; the message says where (the last good data stays in use)."""


@dataclass(frozen=True)
class SyncReport:
    """What one completed round changed."""

    at: datetime
    config_changed: bool
    operators_changed: bool
    residents_applied: int
    residents_next: int
    seconds: float


@dataclass(frozen=True)
class Staleness:
    """How current the station's copy is."""

    last_sync_at: datetime | None
    age_s: float | None
    limit_s: float
    stale: bool
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "last_sync_at": self.last_sync_at.isoformat() if self.last_sync_at else None,
            "age_s": self.age_s,
            "limit_s": self.limit_s,
            "stale": self.stale,
            "last_error": self.last_error,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _set(conn: sqlite3.Connection, key: str, value: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO sync_state (key, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, at.isoformat()),
    )


class Synchronizer:
    """Pulls the registry's data for this station into the local store."""

    def __init__(
        self,
        db: StationDatabase,
        identity: StationIdentity,
        identity_folder: Path,
        residents: ResidentSink,
        operators: OperatorSink,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] = _now,
        timeout_s: float = 30.0,
    ) -> None:
        self.db = db
        self.identity = identity
        self.identity_folder = identity_folder
        self.residents = residents
        self.operators = operators
        self.clock = clock
        self._client = client or httpx.Client(
            base_url=identity.registry_url, auth=identity.auth(), timeout=timeout_s
        )
        self._owns_client = client is None
        self._round = threading.Lock()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # --- state -------------------------------------------------------------------------

    def _get(self, key: str) -> str | None:
        with self.db.read() as c:
            row = c.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def policy(self) -> StationPolicy:
        """The registry's policy as last synced, or the built-in defaults."""
        raw = self._get("config")
        if raw is None:
            return StationPolicy()
        return StationPolicy.model_validate(json.loads(raw))

    def versions(self) -> dict[str, str | None]:
        return {
            "config_version": self._get("config_version"),
            "operators_version": self._get("operators_version"),
        }

    def staleness(self) -> Staleness:
        last = self._get("last_sync_at")
        limit = self.policy().staleness_limit_hours * 3600.0
        error = self._get("last_error")
        if last is None:
            return Staleness(None, None, limit, True, error)
        at = datetime.fromisoformat(last)
        age = max(0.0, (self.clock() - at).total_seconds())
        return Staleness(at, age, limit, age > limit, error)

    # --- a round -------------------------------------------------------------------------

    def _json(self, path: str, **params: Any) -> Any:
        try:
            response = self._client.get(path, params=params or None)
        except httpx.HTTPError as exc:
            raise SyncError(f"GET {path}: the registry is unreachable ({exc})") from exc
        if response.status_code != 200:
            raise SyncError(f"GET {path}: {response.status_code} {response.text[:300]}")
        try:
            return response.json()
        except ValueError as exc:
            raise SyncError(f"GET {path}: the answer is not JSON") from exc

    def sync_once(self) -> SyncReport:
        """One full round; raises :class:`SyncError` (and records it) when it cannot finish.
        Rounds never overlap (a heartbeat asking for a sync waits for the running one)."""
        with self._round:
            started = self.clock()
            try:
                return self._round_locked(started)
            except SyncError as exc:
                with self.db.write() as c:
                    _set(c, "last_error", str(exc), self.clock())
                raise

    def _round_locked(self, started: datetime) -> SyncReport:
        config = self._json("/v1/station/config")
        try:
            policy = StationPolicy.model_validate(config["settings"])
            config_version = str(config["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SyncError(f"the station config is malformed: {exc}") from exc
        config_changed = config_version != self._get("config_version")
        with self.db.write() as c:
            _set(c, "config", policy.model_dump_json(), started)
            _set(c, "config_version", config_version, started)

        trust = self._json("/v1/station/trust")
        try:
            csca = x509.load_pem_x509_certificates(trust["csca_master_list"].encode())
            station_ca = x509.load_pem_x509_certificate(trust["station_ca"].encode())
        except (KeyError, ValueError, AttributeError) as exc:
            raise SyncError(f"the trust anchors are malformed: {exc}") from exc
        self._write_if_changed("station-ca.pem", _pem(station_ca))
        self._write_if_changed("csca.pem", b"".join(_pem(c) for c in csca))
        key_pem = trust.get("package_public_key")
        if key_pem:
            try:
                key = serialization.load_pem_public_key(str(key_pem).encode())
            except (ValueError, TypeError) as exc:
                raise SyncError(f"the registry's package key is malformed: {exc}") from exc
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, ec.SECP256R1
            ):
                raise SyncError("the registry's package key is not a P-256 key")
            self._write_if_changed(
                "package-key.pem",
                key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )

        staff = self._json("/v1/station/operators")
        try:
            operators_version = str(staff["version"])
            operators = list(staff["operators"])
        except (KeyError, TypeError) as exc:
            raise SyncError(f"the operator list is malformed: {exc}") from exc
        operators_changed = operators_version != self._get("operators_version")
        if operators_changed:
            checked = self.operators.validate(operators)  # slow: outside the write lock
            with self.db.write() as c:
                self.operators.replace(c, checked, operators_version)
                _set(c, "operators_version", operators_version, started)
            self.operators.invalidate()

        applied = 0
        cursor = self.residents.cursor()
        while True:
            page = self._json("/v1/station/residents", after=cursor, limit=RESIDENT_PAGE)
            try:
                rows = list(page["residents"])
                next_seq = int(page["next"])
                complete = bool(page["complete"])
            except (KeyError, TypeError, ValueError) as exc:
                raise SyncError(f"a resident page is malformed: {exc}") from exc
            if rows or next_seq != cursor:
                with self.db.write() as c:
                    if next_seq < cursor:
                        # The registry's list was rebuilt (a restore): start over.
                        log.warning("resident cursor %d is behind ours; full reload", next_seq)
                        self.residents.reset(c)
                    self.residents.apply(c, rows, next_seq)
                applied += len(rows)
            if complete or next_seq <= cursor:
                cursor = next_seq
                break
            cursor = next_seq

        finished = self.clock()
        with self.db.write() as c:
            _set(c, "last_sync_at", finished.isoformat(), finished)
            _set(c, "residents_next", str(cursor), finished)
            c.execute("DELETE FROM sync_state WHERE key = 'last_error'")
        report = SyncReport(
            at=finished,
            config_changed=config_changed,
            operators_changed=operators_changed,
            residents_applied=applied,
            residents_next=cursor,
            seconds=(finished - started).total_seconds(),
        )
        log.info("sync round done: %s", report)
        return report

    def _write_if_changed(self, name: str, data: bytes) -> None:
        """Rewrite a trust file only when it changed (an SD card wears with every fsync)."""
        path = self.identity_folder / name
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        atomic_write(path, data)

    def needs_sync(self, answer: Mapping[str, Any]) -> bool:
        """Whether a heartbeat answer announces data newer than ours."""
        mine = self.versions()
        if answer.get("config_version") not in (None, mine["config_version"]):
            return True
        if answer.get("operators_version") not in (None, mine["operators_version"]):
            return True
        nxt = answer.get("residents_next")
        return isinstance(nxt, int) and nxt > self.residents.cursor()


def is_stale(last_sync_at: datetime | None, policy: StationPolicy, now: datetime) -> bool:
    """The staleness rule on its own (for the UI's countdown)."""
    if last_sync_at is None:
        return True
    return now - last_sync_at > timedelta(hours=policy.staleness_limit_hours)


__all__ = [
    "SYNC_SCHEMA",
    "OperatorSink",
    "ResidentSink",
    "Staleness",
    "SyncError",
    "SyncReport",
    "Synchronizer",
    "is_stale",
]
