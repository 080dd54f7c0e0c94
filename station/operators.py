"""Operators: the synced directory, two-factor login, lockout, sessions, supervisor approvals.

    directory = OperatorDirectory(db, journal)
    with db.write() as c:                      # what GET /v1/station/operators returned
        directory.replace(c, body["operators"], body["version"])
    auth = Authenticator(db, directory, journal, OperatorPolicy())
    challenge = auth.begin_login("officer1", pin="1234")       # factor 1: PIN or password
    session = auth.complete_login(challenge.token, scanner.capture_image())  # factor 2
    auth.touch(session.token)                  # on every action; session() expires it
    auth.approve("super1", "9876", image, "finger_exception", case_id, requested_by="officer1")

Offline first: the registry sends each operator's argon2id PIN / password hashes and
ISO/IEC 19794-2 finger templates, so the station checks both factors with no network (a
mobile team works for days without one). Neither the PIN nor the fingerprint alone logs
anyone in.

Fingerprint step. The scanner image goes through mindtct (:func:`extract_minutiae`) into
a full :func:`make_template` (every minutia; 1:1 verification uses the full template, see
``docs/benchmarks.md``, "Fingerprint accuracy"); the enrolled ISO records are decoded with
:func:`decode_minutiae` into templates the same way, and :func:`verify` scores the probe
against each enrolled finger of *that* operator (1:few, never a search of everyone). The
best score must reach ``operator_match_threshold``.

Choice of the default threshold (0.22). :func:`verify` scores ``paired^2 / (nA * nB)``
over the minutiae in the common area: 1 for a template against itself, 0 for nothing in
common. Measured here with mindtct + full templates on 150 synthetic fingers
(``biometrics.fingerprint.synth``, flat impressions, normal skin, full contact: what a
placement that passed the scanner's quality gate looks like), two impressions each:
genuine scores from 0.23 (lowest) through 0.31 (5th percentile) to 0.52 (median);
impostors (22,350 pairs) median 0.03, 99.9th percentile 0.17, highest 0.25. At 0.22 the
genuine pairs all pass and 3 of 22,350 impostor pairs (0.013 %) do; with ten enrolled
fingers an attempt makes ten comparisons, so an impostor attempt passes with probability
at most ~0.13 %, after a correct PIN, and the lockout stops the attempts. At 0.20 that
would be 0.3 %, at 0.25 genuine placements start to fail (0.7 %). Dry, wet or partial
placements score lower (the quality gate should have refused them); re-derive the value
on real operators (the registry sends it in ``/v1/station/config``).

Lockout. ``lockout_failures`` consecutive failures of either factor lock the operator for
``lockout_minutes``; the count and the lock are in the database (a restart does not clear
them) and a full login resets the count. A fingerprint image too poor to extract, a PIN
asked of an account without one, or a login step that ran out of time are not counted:
they are no guesses. Disabled operators cannot log in, and their open sessions end.

Sessions live in memory: a restart of the station service logs everyone out, which is
what a power cut should do. ``session(token)`` raises :class:`SessionExpired` once
``inactivity_logout_seconds`` passed since the last ``touch``.

Approvals: the supervisor proves both factors at the officer's screen. The rule: the
approver must be an enabled, unlocked supervisor and must not be the operator who asks
(``requested_by``): nobody approves their own case, also not a supervisor working as the
officer; another supervisor must come. Failed approval attempts count towards the
supervisor's lockout like failed logins.

The citizen is not the operator: :meth:`Authenticator.citizen_is_operator` compares every
captured finger of the citizen with every enrolled finger of the operator. Same-position
pairs use ``operator_match_threshold``; pairs of different positions (a swapped finger)
use the stricter ``cross_finger_threshold`` (0.30, above every impostor score measured),
because up to 90 such comparisons per citizen would otherwise raise false alarms.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from biometrics.errors import BiometricsError, TemplateFormatError
from biometrics.fingerprint.iso19794 import decode_minutiae
from biometrics.fingerprint.matcher import FingerTemplate, make_template, verify
from biometrics.fingerprint.minutiae import PPI, extract_minutiae
from enrollment.record import Name
from station.journal import Journal
from station.store.database import Schema, StationDatabase

OPERATORS_SCHEMA = Schema(
    "operators",
    (
        """
        CREATE TABLE operators (
            operator_id TEXT PRIMARY KEY,
            full_name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('officer', 'supervisor')),
            pin_hash TEXT,
            password_hash TEXT,
            disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE operators_fingers (
            operator_id TEXT NOT NULL REFERENCES operators (operator_id) ON DELETE CASCADE,
            position INTEGER NOT NULL CHECK (position BETWEEN 1 AND 10),
            iso_record BLOB NOT NULL,
            PRIMARY KEY (operator_id, position)
        );
        CREATE TABLE operators_lockout (
            operator_id TEXT PRIMARY KEY,
            failures INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT
        );
        CREATE TABLE operators_meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
)

Role = Literal["officer", "supervisor"]
_VERSION_KEY = "operators_version"


def _utc_now() -> datetime:
    return datetime.now(UTC)


_REGISTRY_FIELDS = (
    "lockout_failures",
    "lockout_minutes",
    "inactivity_logout_seconds",
    "operator_match_threshold",
)


class OperatorPolicy(BaseModel):
    """Login and approval rules. The first four fields come from the registry
    (``GET /v1/station/config``, same names); the others are station-side."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lockout_failures: int = Field(5, ge=1, le=100)
    lockout_minutes: float = Field(15, gt=0, le=24 * 60)
    inactivity_logout_seconds: float = Field(300, ge=10, le=24 * 3600)
    operator_match_threshold: float = Field(0.22, gt=0, le=1)
    """Lowest :func:`verify` score of an operator's finger (see the module docstring)."""
    cross_finger_threshold: float = Field(0.30, gt=0, le=1)
    """For the citizen-is-operator check across different finger positions."""
    login_step_seconds: float = Field(120, gt=0, le=3600)
    """How long the fingerprint step waits after a correct PIN or password."""

    @classmethod
    def from_station_config(
        cls, settings: Mapping[str, Any], base: OperatorPolicy | None = None
    ) -> OperatorPolicy:
        """The policy with the registry's values (the ``settings`` of
        ``/v1/station/config``) over ``base``; keys that are not policy, and None values,
        are ignored."""
        current = (base or cls()).model_dump()
        for key in _REGISTRY_FIELDS:
            if settings.get(key) is not None:  # None: the registry leaves it to the station
                current[key] = settings[key]
        return cls.model_validate(current)


# --- errors ------------------------------------------------------------------------------


class AuthError(Exception):
    """A login, session or approval was refused; ``code`` is a stable reason for the UI."""

    code = "refused"


class LoginFailed(AuthError):  # noqa: N818 (a verdict, named as the UI says it)
    """A factor did not match (or the login step timed out)."""

    code = "login_failed"

    def __init__(self, message: str, *, attempts_left: int | None = None) -> None:
        super().__init__(message)
        self.attempts_left = attempts_left


class OperatorLocked(AuthError):  # noqa: N818 (a verdict, named as the UI says it)
    """Too many failures: no attempt is checked until ``until``."""

    code = "locked"

    def __init__(self, operator_id: str, until: datetime) -> None:
        super().__init__(
            f"operator {operator_id} is locked after repeated failures until "
            f"{until:%H:%M} UTC; wait, or ask the registry administrator"
        )
        self.until = until


class OperatorDisabled(AuthError):  # noqa: N818 (a verdict, named as the UI says it)
    code = "disabled"


class NoEnrolledFingers(AuthError):  # noqa: N818 (a verdict, named as the UI says it)
    code = "no_fingers"


class FingerUnreadable(AuthError):  # noqa: N818 (a verdict, named as the UI says it)
    """The image gave no usable minutiae: place the finger again (not counted)."""

    code = "finger_unreadable"


class SessionExpired(AuthError):  # noqa: N818 (a verdict, named as the UI says it)
    code = "session_expired"


class ApprovalRefused(AuthError):  # noqa: N818 (a verdict, named as the UI says it)
    code = "approval.refused"


# --- the directory -----------------------------------------------------------------------


class FingerWire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    position: int = Field(ge=1, le=10)
    template: str


class OperatorWire(BaseModel):
    """One operator of ``GET /v1/station/operators``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    operator_id: str = Field(min_length=1, max_length=100)
    full_name: Name
    role: Role
    pin_hash: str | None = None
    password_hash: str | None = None
    fingers: list[FingerWire] = Field(default_factory=list)
    disabled: bool = False


@dataclass(frozen=True)
class Operator:
    """An operator as the station knows it (hashes kept out of ``repr``)."""

    operator_id: str
    full_name: str
    role: Role
    disabled: bool
    finger_positions: tuple[int, ...]
    pin_hash: str | None = field(default=None, repr=False)
    password_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SkippedCredential:
    """Part of an operator ``replace`` refused: a finger template, a hash or the whole
    operator (``position`` None and ``what`` "operator")."""

    operator_id: str | None
    what: Literal["operator", "finger", "pin_hash", "password_hash"]
    position: int | None
    reason: str


@dataclass(frozen=True)
class ReplaceResult:
    operators: int
    disabled: int
    skipped: tuple[SkippedCredential, ...]


def _check_hash(value: str) -> str | None:
    """Why an argon2id hash is unusable, or None."""
    try:
        params = extract_parameters(value)
    except (InvalidHashError, ValueError) as exc:
        return f"not an argon2 hash ({exc or 'unparseable'})"
    if params.type is not Type.ID:
        return f"argon2 type {params.type.name}, expected argon2id"
    return None


def _template_of(iso_record: bytes) -> FingerTemplate:
    """The full matcher template of a one-view ISO/IEC 19794-2 record."""
    return make_template(decode_minutiae(iso_record), max_cylinders=0)


_SEALED = b"VNS1"
"""Prefix of a template sealed with the station data key."""


@dataclass(frozen=True)
class Validated:
    """The registry's operator list, checked and decoded (:meth:`OperatorDirectory.validate`)."""

    valid: dict[str, tuple[OperatorWire, dict[int, bytes], str | None, str | None]]
    skipped: list[SkippedCredential]


class OperatorDirectory:
    """The office's operators as last synced (tables ``operators*``)."""

    def __init__(self, db: StationDatabase, journal: Journal | None = None) -> None:
        self._db = db
        self._journal = journal or Journal(db)
        self._templates: dict[str, dict[int, FingerTemplate]] = {}
        self._lock = threading.Lock()
        self._seal: Callable[[bytes, bytes], bytes] | None = None
        self._unseal: Callable[[bytes, bytes], bytes] | None = None

    def use_sealing(
        self, seal: Callable[[bytes, bytes], bytes], unseal: Callable[[bytes, bytes], bytes]
    ) -> None:
        """Keep the operators' finger templates encrypted with the station data key
        (biometric data at rest); records stored before are read as they are."""
        self._seal, self._unseal = seal, unseal

    def _sealed(self, operator_id: str, position: int, record: bytes) -> bytes:
        if self._seal is None:
            return record
        return _SEALED + self._seal(record, f"operator/{operator_id}/{position}".encode())

    def _opened(self, operator_id: str, position: int, stored: bytes) -> bytes:
        if not stored.startswith(_SEALED):
            return stored
        if self._unseal is None:
            raise TemplateFormatError("a sealed template, and no data key to open it")
        return self._unseal(stored[len(_SEALED) :], f"operator/{operator_id}/{position}".encode())

    def invalidate(self) -> None:
        """Forget cached templates (call after the transaction of :meth:`replace`
        committed: a read between the clear and the commit could cache the old ones)."""
        with self._lock:
            self._templates.clear()

    def version(self) -> str | None:
        """The ``version`` of the operator list last applied (None before the first sync)."""
        with self._db.read() as c:
            row = c.execute(
                "SELECT value FROM operators_meta WHERE key = ?", (_VERSION_KEY,)
            ).fetchone()
        return None if row is None else str(row["value"])

    def validate(self, operators: Iterable[Mapping[str, Any] | OperatorWire]) -> Validated:
        """Check and decode the registry's list (slow: every template is decoded), before
        the write transaction that :meth:`replace` needs, so that it holds the lock only
        for the SQL."""
        skipped: list[SkippedCredential] = []
        valid: dict[str, tuple[OperatorWire, dict[int, bytes], str | None, str | None]] = {}
        for raw in operators:
            try:
                op = raw if isinstance(raw, OperatorWire) else OperatorWire.model_validate(raw)
            except ValidationError as exc:
                ref = raw.get("operator_id") if isinstance(raw, Mapping) else None
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                skipped.append(
                    SkippedCredential(
                        ref if isinstance(ref, str) else None,
                        "operator",
                        None,
                        f"{where}: {first['msg']}",
                    )
                )
                continue
            if op.operator_id in valid:
                skipped.append(SkippedCredential(op.operator_id, "operator", None, "listed twice"))
                continue
            pin_hash, password_hash = op.pin_hash, op.password_hash
            if pin_hash is not None and (why := _check_hash(pin_hash)):
                skipped.append(SkippedCredential(op.operator_id, "pin_hash", None, why))
                pin_hash = None
            if password_hash is not None and (why := _check_hash(password_hash)):
                skipped.append(SkippedCredential(op.operator_id, "password_hash", None, why))
                password_hash = None
            fingers: dict[int, bytes] = {}
            for finger in op.fingers:
                why = None
                if finger.position in fingers:
                    why = "position listed twice"
                else:
                    try:
                        record = base64.b64decode(finger.template, validate=True)
                        if len(_template_of(record).cylinders) == 0:
                            why = "too few minutiae to match"
                    except TemplateFormatError as exc:  # a ValueError too: first
                        why = f"not an ISO/IEC 19794-2 record: {exc}"
                    except (binascii.Error, ValueError) as exc:
                        why = f"not base64: {exc}"
                if why is not None:
                    skipped.append(
                        SkippedCredential(op.operator_id, "finger", finger.position, why)
                    )
                else:
                    fingers[finger.position] = record
            valid[op.operator_id] = (op, fingers, pin_hash, password_hash)
        return Validated(valid, skipped)

    def replace(
        self,
        conn: sqlite3.Connection,
        operators: Iterable[Mapping[str, Any] | OperatorWire] | Validated,
        version: str,
    ) -> ReplaceResult:
        """Make the directory exactly ``operators`` (the registry's full list, or what
        :meth:`validate` made of it), in the caller's transaction. Malformed operators,
        hashes and finger templates are skipped and journalled
        (``operators.credential_skipped``): one bad template must not lock an office out.
        Operators no longer listed are removed with their lockout state; listed ones keep
        theirs. The template cache is emptied once the caller's transaction commits."""
        checked = operators if isinstance(operators, Validated) else self.validate(operators)
        valid, skipped = checked.valid, checked.skipped
        keep = list(valid)
        marks = ", ".join("?" for _ in keep) or "NULL"
        # Only "?" placeholders are spliced in; the ids are bound.
        conn.execute(f"DELETE FROM operators WHERE operator_id NOT IN ({marks})", keep)  # noqa: S608
        conn.execute(
            f"DELETE FROM operators_lockout WHERE operator_id NOT IN ({marks})",  # noqa: S608
            keep,
        )
        for op, fingers, pin_hash, password_hash in valid.values():
            conn.execute(
                "INSERT INTO operators (operator_id, full_name, role, pin_hash, password_hash, "
                "disabled) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (operator_id) DO UPDATE SET "
                "full_name = excluded.full_name, role = excluded.role, "
                "pin_hash = excluded.pin_hash, password_hash = excluded.password_hash, "
                "disabled = excluded.disabled",
                (op.operator_id, op.full_name, op.role, pin_hash, password_hash, op.disabled),
            )
            conn.execute("DELETE FROM operators_fingers WHERE operator_id = ?", (op.operator_id,))
            conn.executemany(
                "INSERT INTO operators_fingers (operator_id, position, iso_record) "
                "VALUES (?, ?, ?)",
                [
                    (op.operator_id, pos, self._sealed(op.operator_id, pos, rec))
                    for pos, rec in sorted(fingers.items())
                ],
            )
        conn.execute(
            "INSERT INTO operators_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_VERSION_KEY, version),
        )
        for skip in skipped:
            self._journal.record(
                conn,
                "sync",
                "operators.credential_skipped",
                skip.operator_id,
                what=skip.what,
                position=skip.position,
                reason=skip.reason,
            )
        disabled = sum(1 for op, *_ in valid.values() if op.disabled)
        self._journal.record(
            conn,
            "sync",
            "operators.replaced",
            None,
            version=version,
            operators=len(valid),
            disabled=disabled,
            skipped=len(skipped),
        )
        with self._lock:
            self._templates.clear()
        return ReplaceResult(len(valid), disabled, tuple(skipped))

    def get(self, operator_id: str) -> Operator | None:
        with self._db.read() as c:
            row = c.execute(
                "SELECT operator_id, full_name, role, pin_hash, password_hash, disabled "
                "FROM operators WHERE operator_id = ?",
                (operator_id,),
            ).fetchone()
            if row is None:
                return None
            positions = tuple(
                int(r[0])
                for r in c.execute(
                    "SELECT position FROM operators_fingers WHERE operator_id = ? "
                    "ORDER BY position",
                    (operator_id,),
                )
            )
        return Operator(
            operator_id=row["operator_id"],
            full_name=row["full_name"],
            role=row["role"],
            disabled=bool(row["disabled"]),
            finger_positions=positions,
            pin_hash=row["pin_hash"],
            password_hash=row["password_hash"],
        )

    def all(self) -> list[Operator]:
        """Every operator, by id."""
        with self._db.read() as c:
            ids = [r[0] for r in c.execute("SELECT operator_id FROM operators ORDER BY 1")]
        return [op for op in (self.get(i) for i in ids) if op is not None]

    def templates(self, operator_id: str) -> dict[int, FingerTemplate]:
        """The operator's enrolled fingers as matcher templates, by position (cached until
        the next ``replace``)."""
        with self._lock:
            cached = self._templates.get(operator_id)
        if cached is not None:
            return cached
        with self._db.read() as c:
            rows = c.execute(
                "SELECT position, iso_record FROM operators_fingers WHERE operator_id = ?",
                (operator_id,),
            ).fetchall()
        built = {
            int(r["position"]): _template_of(
                self._opened(operator_id, int(r["position"]), bytes(r["iso_record"]))
            )
            for r in rows
        }
        with self._lock:
            self._templates[operator_id] = built
        return built


# --- login, sessions, approvals ----------------------------------------------------------


@dataclass(frozen=True)
class LoginChallenge:
    """Factor 1 passed: ask for the finger, then :meth:`Authenticator.complete_login`."""

    token: str
    operator_id: str
    full_name: str
    expires: datetime
    finger_positions: tuple[int, ...]


@dataclass(frozen=True)
class OperatorSession:
    token: str
    operator_id: str
    full_name: str
    role: Role
    started: datetime
    last_seen: datetime


@dataclass(frozen=True)
class Approval:
    """A supervisor's approval of ``action`` on ``subject`` (journalled under its id)."""

    approval_id: str
    supervisor_id: str
    requested_by: str
    action: str
    subject: str
    at: datetime
    score: float


@dataclass(frozen=True)
class LockState:
    failures: int
    locked_until: datetime | None


@dataclass
class _Pending:
    operator_id: str
    factor: str
    expires: datetime


class Authenticator:
    """Two-factor login against the synced directory; lockout; sessions; approvals."""

    def __init__(
        self,
        db: StationDatabase,
        directory: OperatorDirectory,
        journal: Journal,
        settings: OperatorPolicy | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._db = db
        self._directory = directory
        self._journal = journal
        self._policy = settings or OperatorPolicy()
        self._clock = clock
        self._hasher = PasswordHasher()
        self._dummy_hash: str | None = None
        self._pending: dict[str, _Pending] = {}
        self._sessions: dict[str, OperatorSession] = {}
        self._lock = threading.Lock()
        self._attempts: dict[str, threading.Lock] = {}
        """One attempt at a time per operator: the lock check, the slow hash and the
        failure count would otherwise race (parallel guesses past the lockout)."""

    @contextlib.contextmanager
    def _attempt(self, operator_id: str) -> Iterator[None]:
        with self._lock:
            lock = self._attempts.setdefault(operator_id, threading.Lock())
        with lock:
            yield

    @property
    def policy(self) -> OperatorPolicy:
        return self._policy

    def set_policy(self, policy: OperatorPolicy) -> None:
        """Apply a new policy (after a config sync); open sessions follow it at once."""
        self._policy = policy

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the authenticator's clock must return timezone-aware datetimes")
        return now

    # --- lockout -----------------------------------------------------------------------

    def lock_state(self, operator_id: str) -> LockState:
        with self._db.read() as c:
            row = c.execute(
                "SELECT failures, locked_until FROM operators_lockout WHERE operator_id = ?",
                (operator_id,),
            ).fetchone()
        if row is None:
            return LockState(0, None)
        until = row["locked_until"]
        return LockState(int(row["failures"]), datetime.fromisoformat(until) if until else None)

    def _check_unlocked(self, operator_id: str) -> None:
        state = self.lock_state(operator_id)
        if state.locked_until is not None and state.locked_until > self._now():
            raise OperatorLocked(operator_id, state.locked_until)

    def _fail(self, operator_id: str, actor: str, factor: str, reason: str, **detail: Any) -> int:
        """Count a failure (and lock when it is the last allowed); attempts left."""
        now = self._now()
        limit = self._policy.lockout_failures
        with self._db.write() as c:
            row = c.execute(
                "SELECT failures, locked_until FROM operators_lockout WHERE operator_id = ?",
                (operator_id,),
            ).fetchone()
            held = row["locked_until"] if row else None
            if held is not None and datetime.fromisoformat(held) > now:
                # Locked meanwhile (by an attempt of another process): keep that lock.
                raise OperatorLocked(operator_id, datetime.fromisoformat(held))
            failures = (int(row["failures"]) if row else 0) + 1
            until: datetime | None = None
            if failures >= limit:
                until = now + timedelta(minutes=self._policy.lockout_minutes)
            c.execute(
                "INSERT INTO operators_lockout (operator_id, failures, locked_until) "
                "VALUES (?, ?, ?) ON CONFLICT (operator_id) DO UPDATE SET "
                "failures = excluded.failures, locked_until = excluded.locked_until",
                (operator_id, 0 if until else failures, until.isoformat() if until else None),
            )
            self._journal.record(
                c,
                actor,
                f"operator.{factor}_failed",
                operator_id,
                reason=reason,
                failures=failures,
                **detail,
            )
            if until is not None:
                self._journal.record(
                    c,
                    "station",
                    "operator.locked",
                    operator_id,
                    until=until.isoformat(),
                    minutes=self._policy.lockout_minutes,
                )
        if until is not None:
            with self._lock:
                self._pending = {
                    k: v for k, v in self._pending.items() if v.operator_id != operator_id
                }
            raise OperatorLocked(operator_id, until)
        return limit - failures

    def _succeeded(self, c: sqlite3.Connection, operator_id: str) -> None:
        c.execute("DELETE FROM operators_lockout WHERE operator_id = ?", (operator_id,))

    # --- factors -----------------------------------------------------------------------

    def _usable(self, operator_id: str, *, actor: str, action: str) -> Operator:
        op = self._directory.get(operator_id)
        if op is None:
            self._burn_time()
            with self._db.write() as c:
                self._journal.record(c, actor, action, operator_id, reason="unknown_operator")
            raise LoginFailed("wrong operator ID, PIN or password")
        if op.disabled:
            with self._db.write() as c:
                self._journal.record(c, actor, action, operator_id, reason="disabled")
            raise OperatorDisabled(
                f"operator {operator_id} is disabled; ask the registry administrator"
            )
        self._check_unlocked(operator_id)
        return op

    def _burn_time(self) -> None:
        """Verify against a throwaway hash, so an unknown ID takes as long as a wrong PIN."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_hex(8))
        with contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy_hash, "0000")

    def _check_secret(
        self, op: Operator, pin: str | None, password: str | None, *, actor: str
    ) -> str:
        """Factor 1; returns which factor was used. Counts a mismatch."""
        if (pin is None) == (password is None):
            raise LoginFailed("enter either the PIN or the password")
        factor = "pin" if pin is not None else "password"
        stored = op.pin_hash if pin is not None else op.password_hash
        secret = pin if pin is not None else password
        assert secret is not None
        if stored is None:
            raise LoginFailed(
                f"operator {op.operator_id} has no {factor} on this station; use the "
                f"{'password' if factor == 'pin' else 'PIN'}, or sync operators"
            )
        try:
            self._hasher.verify(stored, secret)
        except (VerificationError, InvalidHashError):
            left = self._fail(op.operator_id, actor, factor, "mismatch")
            raise LoginFailed("wrong operator ID, PIN or password", attempts_left=left) from None
        return factor

    def _match_finger(
        self, op: Operator, image: NDArray[np.uint8], ppi: int, *, actor: str
    ) -> tuple[int, float]:
        """Factor 2: (matched position, score). Counts a mismatch."""
        enrolled = self._directory.templates(op.operator_id)
        if not enrolled:
            raise NoEnrolledFingers(
                f"operator {op.operator_id} has no enrolled fingerprints on this station; "
                "the registry administrator must enroll them"
            )
        try:
            probe = make_template(extract_minutiae(np.asarray(image), ppi), max_cylinders=0)
        except (BiometricsError, ValueError) as exc:
            raise FingerUnreadable(
                f"the fingerprint could not be read ({exc}); place it again"
            ) from exc
        if len(probe.cylinders) == 0:
            raise FingerUnreadable("too little of the finger was seen; place it flat again")
        scores = {pos: verify(probe, t) for pos, t in enrolled.items()}
        position = max(scores, key=lambda p: scores[p])
        best = scores[position]
        if best < self._policy.operator_match_threshold:
            left = self._fail(op.operator_id, actor, "finger", "no_match", score=round(best, 3))
            raise LoginFailed("the fingerprint does not match; try again", attempts_left=left)
        return position, best

    # --- login ---------------------------------------------------------------------------

    def begin_login(
        self, operator_id: str, *, pin: str | None = None, password: str | None = None
    ) -> LoginChallenge:
        """Factor 1 (PIN or password). Raises :class:`LoginFailed`,
        :class:`OperatorLocked` or :class:`OperatorDisabled`."""
        with self._attempt(operator_id):
            op = self._usable(operator_id, actor="station", action="operator.login_refused")
            factor = self._check_secret(op, pin, password, actor="station")
        now = self._now()
        token = secrets.token_urlsafe(24)
        expires = now + timedelta(seconds=self._policy.login_step_seconds)
        with self._lock:
            self._pending = {k: v for k, v in self._pending.items() if v.expires > now}
            self._pending[token] = _Pending(op.operator_id, factor, expires)
        return LoginChallenge(token, op.operator_id, op.full_name, expires, op.finger_positions)

    def complete_login(
        self, challenge: str, finger_image: NDArray[np.uint8], *, ppi: int = PPI
    ) -> OperatorSession:
        """Factor 2 (the finger). The challenge stays valid for another placement after an
        unreadable image or a mismatch, until it expires or the operator is locked."""
        now = self._now()
        with self._lock:
            pending = self._pending.get(challenge)
        if pending is None or pending.expires <= now:
            with self._lock:
                self._pending.pop(challenge, None)
            raise LoginFailed("the login step timed out; enter the PIN or password again")
        with self._attempt(pending.operator_id):
            op = self._usable(pending.operator_id, actor="station", action="operator.login_refused")
            position, score = self._match_finger(op, finger_image, ppi, actor="station")
        token = secrets.token_urlsafe(32)
        session = OperatorSession(token, op.operator_id, op.full_name, op.role, now, now)
        with self._db.write() as c:
            self._succeeded(c, op.operator_id)
            self._journal.record(
                c,
                op.operator_id,
                "operator.login",
                op.operator_id,
                factor=pending.factor,
                position=position,
                score=round(score, 3),
            )
        with self._lock:
            self._pending.pop(challenge, None)
            # One screen, one operator: a new login ends the operator's older session.
            for old in [k for k, s in self._sessions.items() if s.operator_id == op.operator_id]:
                del self._sessions[old]
            self._sessions[token] = session
        return session

    def challenge_open(self, challenge: str) -> bool:
        """Whether a login challenge (factor 1 passed) is still waiting for its finger."""
        now = self._now()
        with self._lock:
            pending = self._pending.get(challenge)
        return pending is not None and pending.expires > now

    def session(self, token: str) -> OperatorSession:
        """The open session, or :class:`SessionExpired` (unknown, idle too long, or the
        operator was disabled or removed since)."""
        now = self._now()
        with self._lock:
            session = self._sessions.get(token)
        if session is None:
            raise SessionExpired("not logged in")
        reason = None
        idle = (now - session.last_seen).total_seconds()
        if idle > self._policy.inactivity_logout_seconds:
            reason = "inactivity"
        else:
            op = self._directory.get(session.operator_id)
            if op is None or op.disabled:
                reason = "operator_disabled"
        if reason is None:
            return session
        with self._lock:
            self._sessions.pop(token, None)
        with self._db.write() as c:
            self._journal.record(
                c,
                session.operator_id,
                "operator.session_expired",
                session.operator_id,
                reason=reason,
            )
        raise SessionExpired(
            "logged out after inactivity; log in again"
            if reason == "inactivity"
            else "this account was disabled"
        )

    def touch(self, token: str) -> OperatorSession:
        """Mark activity on the session (call on every action); raises like :meth:`session`."""
        session = self.session(token)
        fresh = OperatorSession(
            session.token,
            session.operator_id,
            session.full_name,
            session.role,
            session.started,
            max(session.last_seen, self._now()),
        )
        with self._lock:
            if token in self._sessions:
                self._sessions[token] = fresh
        return fresh

    def logout(self, token: str) -> None:
        """End the session (unknown tokens are ignored: logging out twice is fine)."""
        with self._lock:
            session = self._sessions.pop(token, None)
        if session is not None:
            with self._db.write() as c:
                self._journal.record(c, session.operator_id, "operator.logout", session.operator_id)

    def sessions(self) -> list[OperatorSession]:
        """Open sessions (expired ones are dropped on their next use)."""
        with self._lock:
            return list(self._sessions.values())

    # --- approvals and the citizen check -------------------------------------------------

    def approve(
        self,
        supervisor_id: str,
        pin: str | None,
        finger_image: NDArray[np.uint8],
        action: str,
        subject: str,
        *,
        requested_by: str,
        password: str | None = None,
        ppi: int = PPI,
    ) -> Approval:
        """A supervisor's approval, both factors at once. Raises :class:`ApprovalRefused`
        (not a supervisor, or their own request), or the login errors."""
        if not action or not subject:
            raise ValueError("an approval needs an action and a subject")
        if supervisor_id == requested_by:
            with self._db.write() as c:
                self._journal.record(
                    c, supervisor_id, "approval.refused", subject, action=action, reason="own_case"
                )
            raise ApprovalRefused(
                "nobody approves their own case: another supervisor must approve it"
            )
        with self._attempt(supervisor_id):
            score = self._approver(
                supervisor_id, pin, password, finger_image, ppi, action, subject, requested_by
            )
        approval = Approval(
            approval_id=secrets.token_hex(8),
            supervisor_id=supervisor_id,
            requested_by=requested_by,
            action=action,
            subject=subject,
            at=self._now(),
            score=round(score, 3),
        )
        return self._granted(approval)

    def _approver(
        self,
        supervisor_id: str,
        pin: str | None,
        password: str | None,
        finger_image: NDArray[np.uint8],
        ppi: int,
        action: str,
        subject: str,
        requested_by: str,
    ) -> float:
        op = self._usable(supervisor_id, actor=requested_by, action="approval.refused")
        if op.role != "supervisor":
            with self._db.write() as c:
                self._journal.record(
                    c,
                    requested_by,
                    "approval.refused",
                    subject,
                    action=action,
                    approver=supervisor_id,
                    reason="not_a_supervisor",
                )
            raise ApprovalRefused(f"{op.full_name} is not a supervisor")
        self._check_secret(op, pin, password, actor=supervisor_id)
        _, score = self._match_finger(op, finger_image, ppi, actor=supervisor_id)
        return score

    def _granted(self, approval: Approval) -> Approval:
        supervisor_id, subject, action = approval.supervisor_id, approval.subject, approval.action
        with self._db.write() as c:
            self._succeeded(c, supervisor_id)
            self._journal.record(
                c,
                supervisor_id,
                "approval.granted",
                subject,
                approval_id=approval.approval_id,
                action=action,
                requested_by=approval.requested_by,
                score=approval.score,
            )
        return approval

    def citizen_is_operator(
        self, operator_id: str, finger_templates_by_position: Mapping[int, FingerTemplate]
    ) -> bool:
        """Whether any captured finger of the citizen matches any enrolled finger of the
        operator (thresholds in the module docstring). A match is journalled (positions
        and score only)."""
        enrolled = self._directory.templates(operator_id)
        for citizen_pos, probe in finger_templates_by_position.items():
            for op_pos, template in enrolled.items():
                threshold = (
                    self._policy.operator_match_threshold
                    if citizen_pos == op_pos
                    else self._policy.cross_finger_threshold
                )
                score = verify(probe, template)
                if score >= threshold:
                    with self._db.write() as c:
                        self._journal.record(
                            c,
                            operator_id,
                            "operator.citizen_match",
                            operator_id,
                            citizen_position=citizen_pos,
                            operator_position=op_pos,
                            score=round(score, 3),
                        )
                    return True
        return False


__all__ = [
    "OPERATORS_SCHEMA",
    "Approval",
    "ApprovalRefused",
    "AuthError",
    "Authenticator",
    "FingerUnreadable",
    "LockState",
    "LoginChallenge",
    "LoginFailed",
    "NoEnrolledFingers",
    "Operator",
    "OperatorDirectory",
    "OperatorDisabled",
    "OperatorLocked",
    "OperatorPolicy",
    "OperatorSession",
    "OperatorWire",
    "ReplaceResult",
    "Role",
    "SessionExpired",
    "SkippedCredential",
]
