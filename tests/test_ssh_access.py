"""The technician's SSH switch, both halves without systemd: the key file's checks
(types, sizes, options, how many), the request the station service leaves, and root's side
run as a function against folders of a test (a real argon2 hash; the commands it would run
recorded instead of run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from station import ssh_access
from station.ssh_access import (
    SshKeysError,
    SshPaths,
    SshRequest,
    apply,
    expire,
    parse_authorized_keys,
    read_status,
    write_request,
)
from station.technician import hash_pin

PIN = "97531864"
NOW = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def _openssh(key: object, comment: str = "") -> str:
    assert isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    line = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return f"{line} {comment}".rstrip()


def _ed25519(comment: str = "") -> str:
    return _openssh(ed25519.Ed25519PrivateKey.generate().public_key(), comment)


def _ecdsa(curve: ec.EllipticCurve, comment: str = "") -> str:
    return _openssh(ec.generate_private_key(curve).public_key(), comment)


@pytest.fixture(scope="module")
def rsa_lines() -> dict[int, str]:
    return {
        bits: _openssh(rsa.generate_private_key(65537, bits).public_key(), f"rsa{bits}")
        for bits in (2048, 3072)
    }


@pytest.fixture(scope="module")
def pin_hash() -> str:
    return hash_pin(PIN)


# --- the key file -----------------------------------------------------------------------------


def test_the_allowed_keys_are_read_with_the_fingerprints_ssh_keygen_shows(
    tmp_path: Path, rsa_lines: dict[int, str]
) -> None:
    ed, p256 = _ed25519("tech@laptop"), _ecdsa(ec.SECP256R1(), "field kit")
    text = f"# the technician's keys\n\n{ed}\n  {p256}  \n{rsa_lines[3072]}\n{ed}\n"
    keys = parse_authorized_keys(text)
    assert [k.kind for k in keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
    assert [k.comment for k in keys] == ["tech@laptop", "field kit", "rsa3072"]  # ed once
    assert [k.bits for k in keys] == [256, 256, 3072]
    assert keys[0].line() == ed
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pytest.skip("ssh-keygen (openssh-client) is not installed")
    for key in keys:
        (tmp_path / "k.pub").write_text(key.line() + "\n")
        out = subprocess.run(
            [keygen, "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[1] == key.fingerprint


def test_a_key_file_with_any_bad_line_is_refused_line_by_line(rsa_lines: dict[int, str]) -> None:
    good = _ed25519("ok")
    ed_blob = good.split()[1]
    lines = [
        good,
        f'command="/bin/sh" {_ed25519()}',  # 2: options
        f"no-pty {_ed25519()}",  # 3: options
        rsa_lines[2048],  # 4: too weak
        _ecdsa(ec.SECP384R1()),  # 5: another curve
        f"ssh-dss {ed_blob}",  # 6: type not allowed
        f"ssh-rsa {ed_blob}",  # 7: an ed25519 key called RSA
        "ssh-ed25519 AAAA!!!notbase64",  # 8: damaged
        "ssh-ed25519",  # 9: no key
        f"{_ed25519()} bell\x07",  # 10: control characters
        f"{_ed25519()} {'x' * 101}",  # 11: a comment too long
    ]
    with pytest.raises(SshKeysError) as refused:
        parse_authorized_keys("\n".join(lines))
    problems = refused.value.problems
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in range(2, 12)]
    assert "options" in problems[0]
    assert "options" in problems[1]
    assert "2048 bits is too weak" in problems[2]
    assert "'ecdsa-sha2-nistp384' is not allowed" in problems[3]
    assert "'ssh-dss' is not allowed" in problems[4]
    assert "damaged" in problems[5]
    assert "damaged" in problems[6]
    assert "missing" in problems[7]
    assert "control" in problems[8]
    assert "comment" in problems[9]


def test_a_key_file_holds_one_to_eight_keys() -> None:
    with pytest.raises(SshKeysError, match="no public key"):
        parse_authorized_keys("# nothing but a comment\n\n")
    assert len(parse_authorized_keys("\n".join(_ed25519() for _ in range(8)))) == 8
    with pytest.raises(SshKeysError, match="9 keys; at most 8"):
        parse_authorized_keys("\n".join(_ed25519() for _ in range(9)))


def test_the_stick_file_must_be_a_small_text_file_on_the_stick(tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    (stick / "vn-eid-ssh").mkdir(parents=True)
    target = stick / "vn-eid-ssh" / "authorized_keys"
    with pytest.raises(FileNotFoundError):
        ssh_access.read_stick_keys(stick)
    target.write_text(_ed25519("k") + "\n")
    assert [k.comment for k in ssh_access.read_stick_keys(stick)] == ["k"]
    target.write_bytes(b"\xff\xfe not text")
    with pytest.raises(SshKeysError, match="not a text file"):
        ssh_access.read_stick_keys(stick)
    target.write_bytes(b"#" * (64 * 1024 + 1))
    with pytest.raises(SshKeysError, match="larger than 64 KiB"):
        ssh_access.read_stick_keys(stick)
    # A link to a file elsewhere on the station (one the service may read) is refused.
    outside = tmp_path / "elsewhere"
    outside.write_text(_ed25519() + "\n")
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(SshKeysError, match="leads off the USB stick"):
        ssh_access.read_stick_keys(stick)


# --- root's side ------------------------------------------------------------------------------


class Commands:
    """What root would run: recorded; each answers 0 unless told otherwise."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        self.ran: list[list[str]] = []
        self.failing = list(failing)
        self.sessions_ended = 0

    def __call__(self, command: Sequence[str]) -> int:
        self.ran.append(list(command))
        return 1 if " ".join(command) in self.failing else 0

    def end_sessions(self) -> int:
        self.sessions_ended += 1
        return 0


@pytest.fixture
def paths(tmp_path: Path) -> SshPaths:
    keys = tmp_path / "var-lib-vn-eid" / "ssh"
    keys.mkdir(parents=True, mode=0o700)
    run = tmp_path / "run-vn-eid"
    run.mkdir()
    return SshPaths(
        request=run / "ssh-request.json",
        status=tmp_path / "run-vn-eid-ssh" / "status.json",
        authorized_keys=keys / "authorized_keys",
        owner_uid=os.getuid(),
    )


def _ask(paths: SshPaths, action: str, pin: str, keys: Sequence[str] = (), hours: int = 8) -> str:
    request = SshRequest("r-" + action + pin[:2], action, tuple(keys), hours, pin, NOW)  # type: ignore[arg-type]
    write_request(paths.request, request)
    return request.id


def _apply(paths: SshPaths, pin_hash: str | None, commands: Commands, at: datetime = NOW) -> object:
    return apply(
        paths,
        pin_hash,
        run=commands,
        now=lambda: at,
        helper="/usr/lib/vn-eid/ssh-access",
        end_sessions=commands.end_sessions,
    )


def test_the_right_pin_turns_ssh_on_for_eight_hours_then_off(
    paths: SshPaths, pin_hash: str
) -> None:
    keys = [_ed25519("a"), _ecdsa(ec.SECP256R1(), "b")]
    request_id = _ask(paths, "on", PIN, keys)
    assert paths.request.stat().st_mode & 0o777 == 0o600  # it holds the PIN
    commands = Commands()
    _apply(paths, pin_hash, commands)
    assert not paths.request.exists()
    assert paths.authorized_keys.read_text() == "".join(k + "\n" for k in keys)
    assert paths.authorized_keys.stat().st_mode & 0o777 == 0o600
    assert commands.ran == [
        ["systemctl", "stop", "vn-eid-ssh-off.timer"],
        ["systemctl", "reset-failed", "vn-eid-ssh-off.timer", "vn-eid-ssh-off.service"],
        ["systemd-run", "--unit=vn-eid-ssh-off", "--on-active=8h",
         "--timer-property=AccuracySec=1min", "/usr/lib/vn-eid/ssh-access", "expire"],
        ["systemctl", "start", "ssh.service"],
    ]  # fmt: skip
    status = read_status(paths.status)
    assert status is not None
    assert (status.state, status.until) == ("on", NOW + timedelta(hours=8))
    assert [k["comment"] for k in status.keys] == ["a", "b"]
    assert all(k["fingerprint"].startswith("SHA256:") for k in status.keys)
    assert status.last is not None
    assert (status.last["request_id"], status.last["outcome"]) == (request_id, "done")
    assert paths.status.stat().st_mode & 0o777 == 0o644  # the station service reads it

    _ask(paths, "off", PIN)
    commands = Commands()
    _apply(paths, pin_hash, commands, NOW + timedelta(hours=1))
    assert not paths.request.exists()
    assert paths.authorized_keys.read_text() == ""
    assert commands.ran == [
        ["systemctl", "stop", "ssh.service"],
        ["systemctl", "stop", "vn-eid-ssh-off.timer"],
    ]
    assert commands.sessions_ended == 1  # the sessions still open are ended too
    status = read_status(paths.status)
    assert status is not None
    assert (status.state, status.until, status.keys) == ("off", None, [])


def test_a_wrong_pin_is_refused_and_changes_nothing(paths: SshPaths, pin_hash: str) -> None:
    request_id = _ask(paths, "on", "12345678", [_ed25519()])
    commands = Commands()
    _apply(paths, pin_hash, commands)
    assert not paths.request.exists()  # deleted all the same
    assert not paths.authorized_keys.exists()
    assert commands.ran == []
    status = read_status(paths.status)
    assert status is not None
    assert status.last is not None
    assert status.state == "off"
    assert (status.last["request_id"], status.last["outcome"], status.last["reason"]) == (
        request_id,
        "refused",
        "wrong_pin",
    )
    assert status.wrong_pins == 1
    # No PIN hash configured (or an unusable one): refused too.
    for hashed in (None, "not-an-argon2-hash"):
        _ask(paths, "on", PIN, [_ed25519()])
        _apply(paths, hashed, commands)
        status = read_status(paths.status)
        assert status is not None
        assert status.last is not None
        assert status.last["reason"] == "no_pin"
    assert commands.ran == []
    assert not paths.authorized_keys.exists()


def test_wrong_pins_in_a_row_make_root_refuse_for_a_while(paths: SshPaths, pin_hash: str) -> None:
    commands = Commands()
    for _ in range(ssh_access.MAX_WRONG_PINS):
        _ask(paths, "on", "00000000", [_ed25519()])
        _apply(paths, pin_hash, commands)
    status = read_status(paths.status)
    assert status is not None
    assert status.locked_until == NOW + ssh_access.LOCKOUT
    _ask(paths, "on", PIN, [_ed25519()])  # the right PIN, during the lockout
    _apply(paths, pin_hash, commands, NOW + timedelta(minutes=5))
    status = read_status(paths.status)
    assert status is not None
    assert status.last is not None
    assert (status.state, status.last["reason"]) == ("off", "locked")
    assert commands.ran == []
    assert not paths.authorized_keys.exists()
    _ask(paths, "on", PIN, [_ed25519()])  # after it
    _apply(paths, pin_hash, commands, NOW + timedelta(minutes=11))
    status = read_status(paths.status)
    assert status is not None
    assert status.state == "on"
    assert (status.wrong_pins, status.locked_until) == (0, None)


def test_root_checks_the_keys_and_the_request_again(
    paths: SshPaths, pin_hash: str, rsa_lines: dict[int, str]
) -> None:
    commands = Commands()
    cases: list[tuple[bytes, str]] = [
        (json.dumps(SshRequest("x", "on", (rsa_lines[2048],), 8, PIN, NOW).as_json()).encode(),
         "bad_keys"),
        (json.dumps(SshRequest("x", "on", (f"from=\"*\" {_ed25519()}",), 8, PIN, NOW).as_json())
         .encode(), "bad_keys"),
        (json.dumps(SshRequest("x", "on", (_ed25519(),), 9, PIN, NOW).as_json()).encode(),
         "bad_request"),
        (b"{not json", "bad_request"),
        (json.dumps({"id": "x", "action": "reboot", "keys": [], "hours": 1, "pin": PIN,
                     "requested_at": NOW.isoformat()}).encode(), "bad_request"),
    ]  # fmt: skip
    for data, reason in cases:
        paths.request.write_bytes(data)
        _apply(paths, pin_hash, commands)
        assert not paths.request.exists()
        status = read_status(paths.status)
        assert status is not None
        assert status.last is not None
        assert (status.state, status.last["outcome"], status.last["reason"]) == (
            "off",
            "refused",
            reason,
        ), data
    assert commands.ran == []
    assert not paths.authorized_keys.exists()


def test_a_linked_request_is_refused_and_removed(
    paths: SshPaths, pin_hash: str, tmp_path: Path
) -> None:
    # The station service's user could link the request to a file only root may read.
    secret = tmp_path / "root-only"
    write_request(secret, SshRequest("s", "on", (_ed25519(),), 8, PIN, NOW))
    paths.request.symlink_to(secret)
    commands = Commands()
    _apply(paths, pin_hash, commands)
    assert not paths.request.is_symlink()
    assert not paths.request.exists()
    assert secret.is_file()  # the link is gone, not what it named
    status = read_status(paths.status)
    assert status is not None
    assert status.last is not None
    assert (status.last["outcome"], status.last["reason"]) == ("refused", "bad_request")
    assert "symbolic link" in status.last["detail"]
    assert commands.ran == []
    assert not paths.authorized_keys.exists()


def test_a_failed_start_leaves_ssh_off_and_says_so(paths: SshPaths, pin_hash: str) -> None:
    _ask(paths, "on", PIN, [_ed25519()])
    commands = Commands(failing=["systemctl start ssh.service"])
    _apply(paths, pin_hash, commands)
    assert paths.authorized_keys.read_text() == ""  # the keys taken back
    assert commands.ran[-3:] == [
        ["systemctl", "start", "ssh.service"],  # failed: stopped again, timer dropped
        ["systemctl", "stop", "ssh.service"],
        ["systemctl", "stop", "vn-eid-ssh-off.timer"],
    ]
    status = read_status(paths.status)
    assert status is not None
    assert status.last is not None
    assert (status.state, status.last["outcome"], status.last["reason"]) == (
        "off",
        "failed",
        "command_failed",
    )
    assert "systemctl start ssh.service exited with 1" in status.last["detail"]


def test_root_writes_keys_only_into_a_folder_nobody_else_may_change(
    paths: SshPaths, pin_hash: str
) -> None:
    paths.authorized_keys.parent.chmod(0o770)
    _ask(paths, "on", PIN, [_ed25519()])
    commands = Commands()
    _apply(paths, pin_hash, commands)
    status = read_status(paths.status)
    assert status is not None
    assert status.last is not None
    assert status.last["reason"] == "unsafe_folder"
    assert commands.ran == []
    assert not paths.authorized_keys.exists()


def test_after_a_start_ssh_is_off_and_the_hours_end_it(paths: SshPaths, pin_hash: str) -> None:
    # The first run after a start (no request, no status: /run is empty) makes SSH off.
    paths.authorized_keys.write_text(_ed25519("left from before") + "\n")
    commands = Commands()
    _apply(paths, pin_hash, commands)
    assert paths.authorized_keys.read_text() == ""
    status = read_status(paths.status)
    assert status is not None
    assert status.state == "off"
    # Later runs with nothing asked do nothing.
    commands = Commands()
    assert _apply(paths, pin_hash, commands) is None
    assert commands.ran == []
    # On, then the timer's expire: off, keys emptied, said in the status.
    _ask(paths, "on", PIN, [_ed25519()])
    _apply(paths, pin_hash, commands)
    commands = Commands()
    expire(paths, run=commands, now=lambda: NOW + timedelta(hours=8),
           end_sessions=commands.end_sessions)  # fmt: skip
    assert paths.authorized_keys.read_text() == ""
    assert ["systemctl", "stop", "ssh.service"] in commands.ran
    status = read_status(paths.status)
    assert status is not None
    assert status.last is not None
    assert (status.state, status.last["action"], status.last["outcome"]) == (
        "off",
        "expire",
        "done",
    )


def test_the_pin_hash_is_taken_only_from_a_file_only_its_owner_may_change(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir(mode=0o755)
    config = folder / "station.toml"
    config.write_text("[technician]\n")
    config.chmod(0o640)
    ssh_access.trusted_config(config, os.getuid())
    with pytest.raises(ValueError, match="another user"):
        ssh_access.trusted_config(config, os.getuid() + 1)
    config.chmod(0o660)
    with pytest.raises(ValueError, match="another user"):
        ssh_access.trusted_config(config, os.getuid())
    config.chmod(0o640)
    folder.chmod(0o775)
    with pytest.raises(ValueError, match="another user"):
        ssh_access.trusted_config(config, os.getuid())


def test_off_ends_the_open_sessions(tmp_path: Path) -> None:
    """Real processes behind a /proc of the test's own: those named sshd get SIGTERM,
    the others are left alone."""
    proc = tmp_path / "proc"
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)
    ]
    try:
        for child, name in zip(children, ("sshd", "python3"), strict=True):
            (proc / str(child.pid)).mkdir(parents=True)
            (proc / str(child.pid) / "comm").write_text(name + "\n")
        (proc / "self").mkdir()
        assert ssh_access.end_ssh_sessions(proc) == 1
        assert children[0].wait(timeout=10) != 0
        assert children[1].poll() is None
    finally:
        for child in children:
            child.kill()
            child.wait()
