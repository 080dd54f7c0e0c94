"""SSH into the station: off unless a technician turns it on, for 8 hours, keys only.

Two halves, two users. The station service (user vn-eid) cannot start services: from the
technician screen it reads the technician's public keys off a USB stick
(``vn-eid-ssh/authorized_keys``), checks them (:func:`parse_authorized_keys`) and leaves a
request for root in its runtime folder (:func:`write_request`), with the technician PIN
typed to confirm. Root's side (``python -m station ssh-access apply``, started by
vn-eid-ssh.path when the request appears) deletes the request at once, checks the PIN
against the argon2 hash in the station's root-owned configuration (so the station
service's user alone cannot open SSH), checks the keys again, writes them where sshd reads
them, starts ssh.service and schedules ``ssh-access expire`` (stop, keys emptied) after
the hours asked for; or turns it off. What happened is written to a world-readable status
file (:func:`read_status`) that the technician screen shows.

    keys = parse_authorized_keys(text)                     # SshKeysError: why, per line
    write_request(path, SshRequest.new("on", keys, 8, pin))
    apply(paths, pin_hash, run=subprocess_runner)          # root: the status it wrote
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import json
import os
import secrets
import signal
import stat
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import BaseModel, ConfigDict

from station.store.files import atomic_write

HOURS = 8
"""How long one "turn on" lasts (the most a request may ask for)."""
MAX_KEYS = 8
MIN_RSA_BITS = 3072
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_REQUEST_BYTES = 64 * 1024
MAX_COMMENT = 100
STICK_FILE = Path("vn-eid-ssh") / "authorized_keys"
"""Where the technician's public keys are on the USB stick."""
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")
MAX_WRONG_PINS = 5
"""Wrong PINs in a row before root refuses every request for :data:`LOCKOUT`."""
LOCKOUT = timedelta(minutes=10)
OFF_UNIT = "vn-eid-ssh-off"
"""The transient timer (systemd-run) that turns SSH off again."""
HELPER = "/usr/lib/vn-eid/ssh-access"

Action = Literal["on", "off"]
Runner = Callable[[Sequence[str]], int]
"""Runs one command as root and answers its exit status (tests pass a recorder)."""


class SshAccessSettings(BaseModel):
    """Where the station service leaves an SSH request for root, and where root answers.
    The image's units name the same paths (vn-eid-ssh.path watches the request file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_file: Path | None = None
    """The request for root; None: ``ssh-request.json`` in run_dir (the service's
    RuntimeDirectory, /run/vn-eid on the device)."""
    status_file: Path = Path("/run/vn-eid-ssh/status.json")
    """Root's answer: SSH on or off, until when, the keys' fingerprints, the last
    request's outcome (world-readable; gone after a restart, when SSH is off)."""
    authorized_keys: Path = Path("/var/lib/vn-eid/ssh/authorized_keys")
    """Where root writes the keys (sshd_config.d/vn-eid.conf names it; root-only folder)."""

    def request_path(self, run_dir: Path) -> Path:
        return self.request_file or run_dir / "ssh-request.json"


# --- the keys ---------------------------------------------------------------------------------


class SshKeysError(ValueError):
    """The key file is not usable; ``problems`` says why, one line each."""

    code = "ssh_keys_refused"

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class SshKey:
    kind: str
    """ssh-ed25519, ecdsa-sha2-nistp256 or ssh-rsa."""
    blob: str
    """The key, base64 (as OpenSSH writes it)."""
    comment: str
    bits: int

    @property
    def fingerprint(self) -> str:
        """As ``ssh-keygen -l`` shows it: SHA256 of the key, base64 without padding."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        return f"{self.kind} {self.blob} {self.comment}".rstrip()

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "bits": self.bits,
            "fingerprint": self.fingerprint,
            "comment": self.comment,
        }


def _one_key(kind: str, blob: str, comment: str) -> SshKey | str:
    """The key of one line, or why not."""
    try:
        raw = base64.b64decode(blob, validate=True)
        key = serialization.load_ssh_public_key(f"{kind} {blob}".encode())
    except (binascii.Error, ValueError):
        return f"the {kind} key is damaged (not a key of that type)"
    except Exception as exc:  # cryptography refuses some keys with its own error types
        return f"the {kind} key is not usable ({type(exc).__name__})"
    bits = 256
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            return f"an RSA key of {bits} bits is too weak (at least {MIN_RSA_BITS})"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            return f"the ECDSA curve {key.curve.name} is not allowed (nistp256 only)"
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        return f"a {kind} key is not allowed"
    # Written back as OpenSSH writes the key itself: nothing of the line but key and comment.
    normal = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    out_kind, out_blob = normal.decode().split()[:2]
    if out_kind != kind or base64.b64decode(out_blob) != raw:
        return f"the {kind} key is not in its usual form"
    return SshKey(kind, out_blob, comment, bits)


def parse_authorized_keys(text: str) -> list[SshKey]:
    """The keys of an authorized_keys text: each line ``<type> <base64> [comment]``, of the
    types :data:`KEY_TYPES` (RSA of :data:`MIN_RSA_BITS` bits or more), no options (no
    ``command=``, ``from=``, ...), at most :data:`MAX_KEYS`; blank lines and ``#``
    comments are skipped, a key listed twice counts once. Any bad line refuses the whole
    file (:class:`SshKeysError`, with every problem by line number): half a key file
    is not what the technician meant."""
    problems: list[str] = []
    keys: dict[str, SshKey] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if any(ord(c) < 32 or ord(c) == 127 for c in line.replace("\t", " ")):
            problems.append(f"line {number}: control characters")
            continue
        parts = line.split(None, 2)
        kind = parts[0]
        if kind not in KEY_TYPES:
            if any(t in KEY_TYPES for t in line.split()[1:]) or "=" in kind:
                problems.append(f"line {number}: options before the key are not allowed")
            else:
                problems.append(
                    f"line {number}: key type {kind[:40]!r} is not allowed "
                    f"({', '.join(KEY_TYPES)}; RSA of {MIN_RSA_BITS} bits or more)"
                )
            continue
        if len(parts) < 2:
            problems.append(f"line {number}: the key itself is missing")
            continue
        comment = parts[2].strip() if len(parts) == 3 else ""
        if len(comment) > MAX_COMMENT:
            problems.append(f"line {number}: the comment is longer than {MAX_COMMENT} characters")
            continue
        found = _one_key(kind, parts[1], comment)
        if isinstance(found, str):
            problems.append(f"line {number}: {found}")
            continue
        keys.setdefault(found.fingerprint, found)
    if problems:
        raise SshKeysError(
            f"the key file has {len(problems)} bad line(s): " + "; ".join(problems[:5]), problems
        )
    if not keys:
        raise SshKeysError("the key file holds no public key")
    if len(keys) > MAX_KEYS:
        raise SshKeysError(f"the key file holds {len(keys)} keys; at most {MAX_KEYS}")
    return list(keys.values())


def read_stick_keys(medium: Path) -> list[SshKey]:
    """The keys in ``vn-eid-ssh/authorized_keys`` on the mounted ``medium``: a plain file
    on the stick itself (a link out of it is refused), UTF-8, at most 64 KiB.
    FileNotFoundError when the stick has none; :class:`SshKeysError` for the rest."""
    path = medium / STICK_FILE
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SshKeysError(f"{path} cannot be read: {exc.strerror}") from None
    if not real.is_relative_to(medium.resolve()):
        raise SshKeysError(f"{path} leads off the USB stick")
    data = _read_plain(path, MAX_KEY_FILE_BYTES, SshKeysError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SshKeysError(f"{path} is not a text file (UTF-8)") from None
    return parse_authorized_keys(text)


def _read_plain(path: Path, limit: int, error: Callable[[str], Exception]) -> bytes:
    """A regular file's bytes, opened without following a link (``error`` otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None
        if exc.errno == errno.ELOOP:
            raise error(f"{path} is a symbolic link") from None
        raise error(f"{path} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path} is not a plain file")
        if info.st_size > limit:
            raise error(f"{path} is larger than {limit // 1024} KiB")
        return fh.read(limit + 1)[:limit]


# --- the request (station service -> root) ----------------------------------------------------


class SshRequestError(ValueError):
    """A request file root cannot use."""


@dataclass(frozen=True)
class SshRequest:
    id: str
    action: Action
    keys: tuple[str, ...]
    """The keys' lines as checked by the station (root checks them again)."""
    hours: int
    pin: str
    """The technician PIN typed to confirm (root checks it against the configuration)."""
    requested_at: datetime

    @classmethod
    def new(
        cls, action: Action, keys: Sequence[SshKey], hours: int, pin: str, now: datetime
    ) -> SshRequest:
        return cls(secrets.token_hex(8), action, tuple(k.line() for k in keys), hours, pin, now)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "keys": list(self.keys),
            "hours": self.hours,
            "pin": self.pin,
            "requested_at": self.requested_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: bytes) -> SshRequest:
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raise SshRequestError("the request is not JSON") from None
        if not isinstance(body, dict):
            raise SshRequestError("the request is not a JSON object")
        request_id, action, keys = body.get("id"), body.get("action"), body.get("keys")
        hours, pin, at = body.get("hours"), body.get("pin"), body.get("requested_at")
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64:
            raise SshRequestError("the request has no id")
        if action not in ("on", "off"):
            raise SshRequestError(f"unknown action {str(action)[:20]!r} (on or off)")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise SshRequestError("keys is not a list of lines")
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= HOURS:
            raise SshRequestError(f"hours must be 1 to {HOURS}")
        if not isinstance(pin, str) or not 1 <= len(pin) <= 64:
            raise SshRequestError("the request has no PIN")
        try:
            when = datetime.fromisoformat(str(at))
        except ValueError:
            raise SshRequestError("requested_at is not a time") from None
        return cls(request_id, action, tuple(keys), hours, pin, when)


def write_request(path: Path, request: SshRequest) -> None:
    """Leave ``request`` for root: written beside ``path``, then renamed onto it, so root
    never reads half a request (mode 0600: it holds the PIN)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(request.as_json()).encode(), 0o600)


def request_pending(path: Path) -> bool:
    return path.is_file()


# --- the status (root -> station service) -----------------------------------------------------


@dataclass
class SshStatus:
    state: Literal["on", "off"] = "off"
    until: datetime | None = None
    keys: list[dict[str, Any]] = field(default_factory=list)
    changed_at: datetime | None = None
    last: dict[str, Any] | None = None
    """The last request's outcome: request_id, action, outcome (done, refused, failed),
    reason (a code), detail (English), at."""
    wrong_pins: int = 0
    locked_until: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "until": _iso(self.until),
            "keys": self.keys,
            "changed_at": _iso(self.changed_at),
            "last": self.last,
            "wrong_pins": self.wrong_pins,
            "locked_until": _iso(self.locked_until),
        }

    @classmethod
    def from_json(cls, body: Any) -> SshStatus:
        if not isinstance(body, dict):
            raise ValueError("the SSH status is not a JSON object")
        state = body.get("state")
        if state not in ("on", "off"):
            raise ValueError(f"unknown SSH state {state!r}")
        keys = body.get("keys") or []
        last = body.get("last")
        return cls(
            state=state,
            until=_time(body.get("until")),
            keys=[k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else [],
            changed_at=_time(body.get("changed_at")),
            last=last if isinstance(last, dict) else None,
            wrong_pins=int(body.get("wrong_pins") or 0),
            locked_until=_time(body.get("locked_until")),
        )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None


def read_status(path: Path) -> SshStatus | None:
    """Root's last word, or None when root has not written one since the station started
    (SSH is then off: ssh.service is not enabled) or it cannot be read."""
    try:
        return SshStatus.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError):
        return None


# --- root's side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshPaths:
    request: Path
    status: Path
    authorized_keys: Path
    owner_uid: int = 0
    """Who must own the folders root writes into (root; a test runs as itself)."""


def subprocess_runner(command: Sequence[str]) -> int:
    """Run ``command`` (root's side: systemctl, systemd-run) and answer its exit status."""
    try:
        return subprocess.run(list(command), check=False, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired):
        return 127


def end_ssh_sessions(proc: Path = Path("/proc")) -> int:
    """SIGTERM to every sshd process (the sessions still open once the listener is
    stopped); the number signalled. Read from /proc: the image has no procps."""
    ended = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name in ("sshd", "sshd-session"):
                os.kill(int(entry.name), signal.SIGTERM)
                ended += 1
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return ended


def verify_pin(pin_hash: str | None, pin: str) -> bool | None:
    """True/False for a right/wrong PIN; None when no usable hash is configured."""
    if not pin_hash:
        return None
    try:
        return PasswordHasher().verify(pin_hash, pin)
    except VerifyMismatchError:
        return False
    except (InvalidHashError, VerificationError):
        return None


class _RefusedError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _check_folder(folder: Path, owner_uid: int) -> None:
    """Root writes only into a folder of its own that nobody else may change (a folder
    the station service could write to could swap a file for a link)."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner_uid or info.st_mode & 0o022:
        raise _RefusedError("unsafe_folder", f"{folder} is not a folder only its owner may change")


def _take_request(path: Path) -> bytes | None:
    """The request's bytes, the request deleted at once (whatever is in it); None when
    there is none. A link or anything but a plain file is deleted and refused."""
    try:
        data = _read_plain(path, MAX_REQUEST_BYTES, lambda m: _RefusedError("bad_request", m))
    except FileNotFoundError:
        return None
    finally:
        with contextlib.suppress(OSError):  # gone already, or not a file root deletes
            path.unlink()
    return data


def apply(
    paths: SshPaths,
    pin_hash: str | None,
    *,
    run: Runner = subprocess_runner,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    helper: str = HELPER,
    end_sessions: Callable[[], object] = end_ssh_sessions,
) -> SshStatus | None:
    """Carry out the request at ``paths.request`` as root and write the status; None when
    there was no request and nothing to do. With no request and no status yet (the first
    run after a start: /run is empty) SSH is made off, the keys emptied."""
    at = now()
    status = read_status(paths.status)
    request_id: str | None = None
    action: str | None = None
    try:
        data = _take_request(paths.request)
        if data is None:
            if status is not None:
                return None
            status = SshStatus()
            _turn_off(paths, status, run, at, end_sessions)
            return _save(paths, status)
        status = status or SshStatus()
        request = SshRequest.from_json(data)
        request_id, action = request.id, request.action
        if status.locked_until and status.locked_until > at:
            raise _RefusedError(
                "locked",
                f"too many wrong technician PINs: refused until {status.locked_until.isoformat()}",
            )
        checked = verify_pin(pin_hash, request.pin)
        if checked is None:
            raise _RefusedError("no_pin", "no usable technician PIN hash in the configuration")
        if not checked:
            status.wrong_pins += 1
            if status.wrong_pins >= MAX_WRONG_PINS:
                status.locked_until, status.wrong_pins = at + LOCKOUT, 0
            raise _RefusedError("wrong_pin", "wrong technician PIN")
        status.wrong_pins, status.locked_until = 0, None
        if request.action == "on":
            try:
                keys = parse_authorized_keys("\n".join(request.keys))
            except SshKeysError as exc:
                raise _RefusedError("bad_keys", str(exc)) from None
            _turn_on(paths, status, keys, request.hours, run, at, helper, end_sessions)
        else:
            _turn_off(paths, status, run, at, end_sessions)
        status.last = _outcome(request_id, action, "done", None, None, at)
    except _RefusedError as exc:
        status = status or SshStatus()
        status.last = _outcome(request_id, action, "refused", exc.reason, exc.detail, at)
    except SshRequestError as exc:
        status = status or SshStatus()
        status.last = _outcome(request_id, action, "refused", "bad_request", str(exc), at)
    except _FailedError as exc:
        status = status or SshStatus()
        status.last = _outcome(request_id, action, "failed", "command_failed", str(exc), at)
    return _save(paths, status)


class _FailedError(Exception):
    pass


def _outcome(
    request_id: str | None,
    action: str | None,
    outcome: str,
    reason: str | None,
    detail: str | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "action": action,
        "outcome": outcome,
        "reason": reason,
        "detail": detail,
        "at": at.isoformat(),
    }


def _must(run: Runner, command: Sequence[str]) -> None:
    rc = run(command)
    if rc != 0:
        raise _FailedError(f"{' '.join(command)} exited with {rc}")


def _write_keys(paths: SshPaths, keys: Sequence[SshKey]) -> None:
    _check_folder(paths.authorized_keys.parent, paths.owner_uid)
    text = "".join(k.line() + "\n" for k in keys)
    atomic_write(paths.authorized_keys, text.encode(), 0o600)


def _turn_on(
    paths: SshPaths,
    status: SshStatus,
    keys: Sequence[SshKey],
    hours: int,
    run: Runner,
    at: datetime,
    helper: str,
    end_sessions: Callable[[], object],
) -> None:
    _write_keys(paths, keys)
    # The way back is scheduled before SSH starts; a second "on" replaces the first timer.
    run(["systemctl", "stop", f"{OFF_UNIT}.timer"])
    run(["systemctl", "reset-failed", f"{OFF_UNIT}.timer", f"{OFF_UNIT}.service"])
    try:
        _must(
            run,
            ["systemd-run", f"--unit={OFF_UNIT}", f"--on-active={hours}h",
             "--timer-property=AccuracySec=1min", helper, "expire"],
        )  # fmt: skip
        _must(run, ["systemctl", "start", "ssh.service"])
    except _FailedError:
        _turn_off(paths, status, run, at, end_sessions)
        raise
    status.state, status.until = "on", at + timedelta(hours=hours)
    status.keys, status.changed_at = [k.as_json() for k in keys], at


def _turn_off(
    paths: SshPaths,
    status: SshStatus,
    run: Runner,
    at: datetime,
    end_sessions: Callable[[], object] = end_ssh_sessions,
) -> None:
    """SSH off: the keys emptied first (no new login even if a stop fails), the listener
    stopped, the sessions still open ended, the pending timer dropped."""
    _write_keys(paths, [])
    stopped = run(["systemctl", "stop", "ssh.service"])
    # Debian's ssh.service leaves open sessions running when it stops; off means off.
    end_sessions()
    run(["systemctl", "stop", f"{OFF_UNIT}.timer"])
    status.state, status.until, status.keys, status.changed_at = "off", None, [], at
    if stopped != 0:
        raise _FailedError(f"systemctl stop ssh.service exited with {stopped}")


def expire(
    paths: SshPaths,
    *,
    run: Runner = subprocess_runner,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    end_sessions: Callable[[], object] = end_ssh_sessions,
) -> SshStatus:
    """The hours are up (the transient timer runs this): SSH off, keys emptied."""
    at = now()
    status = read_status(paths.status) or SshStatus()
    try:
        _turn_off(paths, status, run, at, end_sessions)
        status.last = _outcome(None, "expire", "done", None, None, at)
    except (_FailedError, _RefusedError) as exc:
        status.last = _outcome(None, "expire", "failed", "command_failed", str(exc), at)
    return _save(paths, status)


def _save(paths: SshPaths, status: SshStatus) -> SshStatus:
    paths.status.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        _check_folder(paths.status.parent, paths.owner_uid)
    except _RefusedError as exc:
        raise RuntimeError(exc.detail) from None
    atomic_write(paths.status, json.dumps(status.as_json()).encode(), 0o644)
    return status


def trusted_config(path: Path, owner_uid: int = 0) -> None:
    """Root takes the PIN hash only from a configuration file that only ``owner_uid`` can
    change (the file and its folder): ValueError otherwise."""
    for item in (path, path.parent):
        info = item.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid != owner_uid or info.st_mode & 0o022:
            raise ValueError(f"{item} may be changed by another user than uid {owner_uid}")


def status_line(status: SshStatus | None) -> str:
    """One line for the journal of the root helper."""
    if status is None:
        return "VN-EID-SSH nothing to do"
    last = status.last or {}
    words = [f"state={status.state}"]
    if status.until:
        words.append(f"until={status.until.isoformat()}")
    for key in ("action", "outcome", "reason"):
        if last.get(key):
            words.append(f"{key}={last[key]}")
    if last.get("detail"):
        words.append(f"detail={last['detail']}")
    return "VN-EID-SSH " + " ".join(words)


__all__ = [
    "HOURS",
    "MAX_KEYS",
    "STICK_FILE",
    "SshAccessSettings",
    "SshKey",
    "SshKeysError",
    "SshPaths",
    "SshRequest",
    "SshRequestError",
    "SshStatus",
    "apply",
    "end_ssh_sessions",
    "expire",
    "parse_authorized_keys",
    "read_status",
    "read_stick_keys",
    "request_pending",
    "status_line",
    "subprocess_runner",
    "trusted_config",
    "verify_pin",
    "write_request",
]
