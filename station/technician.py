"""The technician's way into the station: a PIN of its own (not an officer login), a
short-lived token after it, a lockout after repeated wrong PINs, and what the technician
screen shows that the rest of the API does not (network interfaces, the service log).

    gate = TechnicianGate(settings.technician, db, journal)
    session = gate.unlock("246810")      # TechnicianPinWrongError / TechnicianLockedError / ...
    gate.check(session.token)            # TechnicianRequiredError once it has expired

    gate.attempt(session, "technician.sync", runtime.sync_now)   # done and journalled

The failure count and the lockout live in the station database (``station_meta``), so a
restart does not lift a lockout; every unlock, wrong PIN and lockout is journalled, and
so is every action a technician takes (with the session's ref, never its token, and how
it ended). :func:`removable_media` is the station's own detection of USB sticks: what
may be exported to is only ever chosen from its list.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import re
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from station.config import TechnicianSettings
from station.journal import Journal
from station.store.database import StationDatabase

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTOR = "technician"
_FAILURES = "technician_failures"
_LOCKED_UNTIL = "technician_locked_until"
MIN_PIN_DIGITS = 6


class TechnicianError(Exception):
    """Refused; ``code`` and ``status`` are what the API answers."""

    code = "technician_error"
    status = 403

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details


class TechnicianPinUnsetError(TechnicianError):
    code = "technician_pin_unset"
    status = 409


class TechnicianPinWrongError(TechnicianError):
    code = "technician_pin_wrong"
    status = 401


class TechnicianLockedError(TechnicianError):
    code = "technician_locked"
    status = 423


class TechnicianRequiredError(TechnicianError):
    code = "technician_required"
    status = 401


@dataclass(frozen=True)
class TechnicianSession:
    token: str
    expires_at: datetime

    @property
    def ref(self) -> str:
        """The session's name in the journal (not the token: the journal is read on the
        screen and uploaded)."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:8]

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "token": self.token,
            "expires_at": self.expires_at.isoformat(),
            "expires_in_s": max(0, int((self.expires_at - now).total_seconds())),
        }


def hash_pin(pin: str) -> str:
    """The argon2id hash to put in ``[technician] pin_hash`` (digits only, 6 or more)."""
    if not pin.isdigit() or len(pin) < MIN_PIN_DIGITS:
        raise ValueError(f"a technician PIN is {MIN_PIN_DIGITS} or more digits")
    return PasswordHasher().hash(pin)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TechnicianGate:
    """Unlocks with the technician PIN; holds the open technician sessions (in memory:
    a restart ends them, which is what a technician expects)."""

    def __init__(
        self,
        settings: TechnicianSettings,
        db: StationDatabase,
        journal: Journal,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self._db = db
        self._journal = journal
        self._clock = clock
        self._hasher = PasswordHasher()
        self._sessions: dict[str, TechnicianSession] = {}
        # One PIN check at a time: parallel guesses cannot slip past the lockout.
        self._lock = threading.Lock()

    def _meta(self, key: str) -> str | None:
        with self._db.read() as c:
            row = c.execute("SELECT value FROM station_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set(c: Any, key: str, value: str) -> None:
        c.execute(
            "INSERT INTO station_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def locked_until(self) -> datetime | None:
        text = self._meta(_LOCKED_UNTIL)
        if not text:
            return None
        until = datetime.fromisoformat(text)
        return until if until > self._clock() else None

    def _verify(self, pin: str, now: datetime) -> None:
        """``pin`` against the configured hash, counting wrong ones towards the lockout
        (the caller holds ``self._lock``)."""
        if not self.settings.pin_hash:
            raise TechnicianPinUnsetError(
                "no technician PIN is set on this station: set one with "
                "`python -m station technician-pin` and restart the service"
            )
        until = self.locked_until()
        if until is not None:
            raise TechnicianLockedError(
                f"too many wrong technician PINs: locked until {until.isoformat()}",
                {"until": until.isoformat()},
            )
        try:
            self._hasher.verify(self.settings.pin_hash, pin)
        except VerifyMismatchError:
            self._failed(now)
        except (InvalidHashError, VerificationError) as exc:
            log.error("the configured technician PIN hash is not usable: %s", exc)
            raise TechnicianPinUnsetError(
                "the technician PIN hash in the configuration is not valid: make a new one "
                "with `python -m station technician-pin`"
            ) from None

    def unlock(self, pin: str) -> TechnicianSession:
        with self._lock:
            now = self._clock()
            self._verify(pin, now)
            session = TechnicianSession(
                secrets.token_urlsafe(32), now + timedelta(minutes=self.settings.session_minutes)
            )
            with self._db.write() as c:
                self._set(c, _FAILURES, "0")
                self._set(c, _LOCKED_UNTIL, "")
                self._journal.record(c, ACTOR, "technician.unlocked", None, session=session.ref)
            self._sessions = {t: s for t, s in self._sessions.items() if s.expires_at > now} | {
                session.token: session
            }
            return session

    def confirm(self, pin: str) -> None:
        """The PIN typed again inside a session to confirm a weighty action (SSH): checked
        like an unlock, a wrong one counting towards the same lockout."""
        with self._lock:
            now = self._clock()
            self._verify(pin, now)
            with self._db.write() as c:
                self._set(c, _FAILURES, "0")

    def _failed(self, now: datetime) -> NoReturn:
        failures = int(self._meta(_FAILURES) or 0) + 1
        limit = self.settings.max_failures
        if failures < limit:
            with self._db.write() as c:
                self._set(c, _FAILURES, str(failures))
                self._journal.record(c, ACTOR, "technician.pin_wrong", None, failures=failures)
            raise TechnicianPinWrongError("wrong technician PIN", {"tries_left": limit - failures})
        until = now + timedelta(minutes=self.settings.lockout_minutes)
        with self._db.write() as c:
            self._set(c, _FAILURES, "0")
            self._set(c, _LOCKED_UNTIL, until.isoformat())
            self._journal.record(
                c, ACTOR, "technician.locked", None, failures=failures, until=until.isoformat()
            )
        raise TechnicianLockedError(
            f"{failures} wrong technician PINs: locked until {until.isoformat()}",
            {"until": until.isoformat()},
        )

    def check(self, token: str | None) -> TechnicianSession:
        """The open technician session of ``token``, or :class:`TechnicianRequiredError`."""
        session = self._sessions.get(token or "")
        if session is None or session.expires_at <= self._clock():
            if session is not None:
                self._sessions.pop(session.token, None)
            raise TechnicianRequiredError("enter the technician PIN first")
        return session

    def lock(self, token: str) -> None:
        """End a technician session (leaving the screen); unknown tokens are ignored."""
        session = self._sessions.pop(token, None)
        if session is not None:
            with self._db.write() as c:
                self._journal.record(
                    c, ACTOR, "technician.locked_screen", None, session=session.ref
                )

    def attempt(
        self,
        session: TechnicianSession,
        action: str,
        work: Callable[[], T],
        outcome: Callable[[T], dict[str, Any]] = lambda _: {},
        subject: str | None = None,
    ) -> T:
        """Do ``work`` for the technician of ``session`` and journal it (``action``, the
        session, when, and how it ended: ``outcome="ok"`` with what ``outcome`` says of
        the result, or ``"failed"`` with the error, which is raised on)."""
        try:
            result = work()
        except Exception as exc:
            self._record(session, action, subject, outcome="failed", error=_error_text(exc))
            raise
        self._record(session, action, subject, outcome="ok", **outcome(result))
        return result

    def _record(
        self, session: TechnicianSession, action: str, subject: str | None, **detail: Any
    ) -> None:
        with self._db.write() as c:
            self._journal.record(c, ACTOR, action, subject, session=session.ref, **detail)


def _error_text(exc: Exception) -> str:
    """An error as the journal keeps it: its code (where it has one) and its message."""
    code = getattr(exc, "code", None)
    text = str(exc) or type(exc).__name__
    return (f"{code}: {text}" if isinstance(code, str) else text)[:500]


# --- what only the technician screen shows ------------------------------------------------


class LogRing(logging.Handler):
    """The service log's last lines, in memory: the technician reads them on the screen
    (the device's journald keeps the full log)."""

    def __init__(self, capacity: int = 500) -> None:
        super().__init__(logging.INFO)
        self._lines: collections.deque[dict[str, str]] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            at = datetime.fromtimestamp(record.created, UTC).isoformat()
            self._lines.append(
                {
                    "at": at,
                    "level": record.levelname,
                    "logger": record.name,
                    "message": self.format(record)[:2000],
                }
            )
        except Exception:  # a log handler must never break the code that logs
            self.handleError(record)

    def tail(self, lines: int) -> list[dict[str, str]]:
        items = list(self._lines)
        return items[-lines:]


_ring: LogRing | None = None
_ring_lock = threading.Lock()


def log_ring() -> LogRing:
    """The process's one ring, attached to the root logger on first use."""
    global _ring
    with _ring_lock:
        if _ring is None:
            _ring = LogRing()
            logging.getLogger().addHandler(_ring)
        return _ring


def network_interfaces() -> list[dict[str, Any]]:
    """Each network interface: name, state, MAC and addresses (``ip -j address``; the
    names alone from the kernel when iproute2 is missing)."""
    try:
        out = subprocess.run(
            ["ip", "-j", "address", "show"], capture_output=True, text=True, timeout=3, check=True
        ).stdout
        raw = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.info("ip -j address failed (%s): interface names only", exc)
        raw = None
    if isinstance(raw, list):
        return [
            {
                "name": str(i.get("ifname", "?")),
                "state": str(i.get("operstate", "UNKNOWN")).lower(),
                "mac": i.get("address"),
                "addresses": [
                    f"{a.get('local')}/{a.get('prefixlen')}"
                    for a in i.get("addr_info", [])
                    if a.get("local")
                ],
            }
            for i in raw
            if isinstance(i, dict)
        ]
    result: list[dict[str, Any]] = []
    for _, name in socket.if_nameindex():
        sysfs = Path("/sys/class/net") / name
        state = (sysfs / "operstate").read_text().strip() if (sysfs / "operstate").exists() else ""
        mac = (sysfs / "address").read_text().strip() if (sysfs / "address").exists() else None
        result.append({"name": name, "state": state or "unknown", "mac": mac, "addresses": []})
    return result


def _unescape_mount(field: str) -> str:
    """A path as /proc/mounts writes it: spaces and the like as octal (\\040); the rest
    is UTF-8 as it is (a stick labelled "DỮ LIỆU")."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field.encode())
    return raw.decode("utf-8", "replace")


def medium_id(device: str, point: str) -> str:
    """A short, stable name for one mounted medium: the same device mounted at the same
    place gets the same id on every detection (so a page can name the stick it showed),
    a stick mounted elsewhere another."""
    return hashlib.sha256(f"{device}\0{point}".encode()).hexdigest()[:12]


def _exports(point: Path) -> list[dict[str, Any]]:
    """The export folders on a medium (``vn-eid/<station>/<export>`` with a manifest)."""
    base = point / "vn-eid"
    if not base.is_dir():
        return []
    return [
        {
            "id": f"{folder.parent.name}/{folder.name}",
            "folder": str(folder),
            "receipts": (folder / "receipts.cose").is_file(),
        }
        for folder in sorted(base.glob("*/*"))
        if (folder / "manifest.json").is_file()
    ]


def removable_media(
    roots: Sequence[Path | str] = (Path("/media"), Path("/run/media"), Path("/mnt")),
    mounts: Path = Path("/proc/mounts"),
) -> list[dict[str, Any]]:
    """The file systems mounted under the removable-media folders ``roots`` (as the
    kernel's ``mounts`` list has them): each with its id (:func:`medium_id`), device,
    label (the folder's name), free space and the export folders already on it
    (receipts or not)."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return []
    folders = [str(r).rstrip("/") for r in roots]
    found: list[dict[str, Any]] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, point = _unescape_mount(parts[0]), _unescape_mount(parts[1])
        if not any(point == r or point.startswith(r + "/") for r in folders):
            continue
        path = Path(point)
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue  # listed but gone (pulled out a moment ago)
        found.append(
            {
                "id": medium_id(device, point),
                "path": point,
                "device": device,
                "label": path.name,
                "filesystem": parts[2],
                "free_bytes": usage.free,
                "total_bytes": usage.total,
                "exports": _exports(path),
            }
        )
    return found


__all__ = [
    "TechnicianError",
    "TechnicianGate",
    "TechnicianLockedError",
    "TechnicianPinUnsetError",
    "TechnicianPinWrongError",
    "TechnicianRequiredError",
    "TechnicianSession",
    "hash_pin",
    "log_ring",
    "medium_id",
    "network_interfaces",
    "removable_media",
]
