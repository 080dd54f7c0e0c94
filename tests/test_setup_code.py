"""Station setup by QR code: the setup code's format (enrollment.setup_token) and its
refusals; the registry's ``stations token`` command writing the token sheet's QR code; the
simulated camera holding a sheet up (its control socket); and the station's scan route
reading the camera's frames (a token sheet, a receipt slip's code, nothing)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import segno
from fastapi.testclient import TestClient

from enrollment.setup_token import (
    MAX_PAYLOAD,
    SetupCode,
    SetupCodeError,
    check_registry_url,
    parse_setup_code,
)
from station.api import create_app
from station.drivers.camera.sim_control import CameraControl
from station.runtime import StationRuntime
from station.setup_scan import read_qr
from station.slip import slip_payload
from station.technician import hash_pin
from tests import cardkit, processkit, registrykit, stationkit

TOKEN = "i2PhrS8fQKA43NSGOwe4Sk8tQhRW-0wJmBluMaZ4vgw"  # as secrets.token_urlsafe(32) writes
SLIP_PACKAGE_ID = "01a235cd-4500-77bb-9def-3b4291f34648"
PIN = "13572468"
REPO = Path(__file__).resolve().parent.parent


def _decode_png(png: bytes) -> str:
    grey = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    text, found = read_qr(grey, [cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()])
    assert text is not None, f"no QR code read from the PNG (one found: {found})"
    return text


def _qr_png(text: str) -> bytes:
    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="png", scale=8)
    return out.getvalue()


# --- the format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://registry.example.vn",
        "https://registry.example.vn:8443/vneid",
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://10.1.2.3",
        "http://192.168.1.20:8080",
        "http://[::1]:8000",
        "http://[fd00::5]",
        "http://172.20.0.4",
        "http://[fe80::1]",
    ],
)
def test_a_setup_code_round_trips_through_its_text_and_its_qr_code(url: str) -> None:
    code = SetupCode(url, TOKEN)
    text = code.payload()
    assert text.startswith("vneid-setup:1?registry=")
    assert "://" not in text.split("?", 1)[1]  # the address is percent-encoded
    assert parse_setup_code(text) == code
    assert parse_setup_code(f"  {text}\n") == code  # a reader's stray whitespace
    assert parse_setup_code(_decode_png(code.png())) == code
    # The scheme is case-blind (a URI scheme is); fields this version does not know are
    # ignored (a later optional field), whatever their order.
    upper = "VNEID-SETUP" + text[len("vneid-setup") :]
    assert parse_setup_code(upper) == code
    reordered = f"vneid-setup:1?label=HN-01&token={TOKEN}&registry={url}"
    assert parse_setup_code(reordered) == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "wrong_scheme"),
        ("https://registry.example.vn", "wrong_scheme"),
        # A receipt slip's code (a fixed package id: parameters must be the same in every
        # pytest worker).
        (slip_payload(SLIP_PACKAGE_ID, "210301-ABCDEFGH2345"), "wrong_scheme"),
        ("vneid-setup", "wrong_scheme"),
        ("vneid-setup:?registry=https%3A%2F%2Fr.vn&token=" + TOKEN, "malformed"),
        ("vneid-setup:v1?registry=https%3A%2F%2Fr.vn&token=" + TOKEN, "malformed"),
        ("vneid-setup:\u00b9?registry=https%3A%2F%2Fr.vn&token=" + TOKEN, "malformed"),
        ("vneid-setup:2?registry=https%3A%2F%2Fr.vn&token=" + TOKEN, "wrong_version"),
        ("vneid-setup:1?registry=https%3A%2F%2Fr.vn", "missing_field"),
        ("vneid-setup:1?token=" + TOKEN, "missing_field"),
        ("vneid-setup:1?registry=&token=" + TOKEN, "missing_field"),
        ("vneid-setup:1?registry=https%3A%2F%2Fr.vn&token=" + TOKEN + "&token=x", "malformed"),
        ("vneid-setup:1?registry=https%3A%2F%2Fr.vn&&token=" + TOKEN, "malformed"),
        ("vneid-setup:1?" + "&".join(f"f{i}=1" for i in range(20)), "malformed"),
        ("vneid-setup:1?registry=https%3A%2F%2Fr.vn&token=" + "A" * 201, "oversized"),
        ("vneid-setup:1?registry=https%3A%2F%2Fr.vn&token=short", "bad_token"),
        ("vneid-setup:1?registry=https%3A%2F%2Fr.vn&token=" + "A%20" * 8, "bad_token"),
        ("vneid-setup:1?registry=https%3A%2F%2F" + "a" * 500 + "&token=" + TOKEN, "oversized"),
        ("vneid-setup:1?registry=" + "x" * MAX_PAYLOAD, "oversized"),
        ("vneid-setup:1?registry=registry.example.vn&token=" + TOKEN, "bad_address"),
        ("vneid-setup:1?registry=ftp%3A%2F%2Fr.vn&token=" + TOKEN, "bad_address"),
        ("vneid-setup:1?registry=http%3A%2F%2Fregistry.example.vn&token=" + TOKEN,
         "insecure_address"),
        ("vneid-setup:1?registry=http%3A%2F%2F8.8.8.8&token=" + TOKEN, "insecure_address"),
    ],
)  # fmt: skip
def test_what_is_not_a_usable_setup_code_is_refused_with_its_reason(text: str, code: str) -> None:
    with pytest.raises(SetupCodeError) as refused:
        parse_setup_code(text)
    assert refused.value.code == code
    assert TOKEN not in str(refused.value)  # a message never repeats the token


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("", "bad_address"),
        ("https://", "bad_address"),
        ("https://registry.example.vn:99999", "bad_address"),
        ("https://user:secret@registry.example.vn", "bad_address"),
        ("https://registry.example.vn/?next=x", "bad_address"),
        ("https://registry.example.vn/#frag", "bad_address"),
        ("http://registry.local", "insecure_address"),  # a name could resolve anywhere
        ("http://100.64.0.1", "insecure_address"),
        # Python 3.11 calls these private; they are reachable over the internet.
        ("http://[2001::1]", "insecure_address"),  # Teredo
        ("http://[2001:db8::1]", "insecure_address"),
        ("http://[::ffff:8.8.8.8]", "insecure_address"),
        ("http://198.18.0.1", "insecure_address"),
    ],
)
def test_registry_address_rule(url: str, code: str) -> None:
    with pytest.raises(SetupCodeError) as refused:
        check_registry_url(url)
    assert refused.value.code == code
    with pytest.raises(SetupCodeError):
        SetupCode(url, TOKEN)


# --- the registry's command ------------------------------------------------------------------


def _central(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "central", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


@pytest.fixture
def central_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """``python -m central`` in this process (a process start costs seconds): the exit
    status, standard output and error; the logging it sets up is undone afterwards."""
    from central.__main__ import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
        for key, value in env.items():
            if key.startswith("REGISTRY_"):
                monkeypatch.setenv(key, value)
        capsys.readouterr()
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    try:
        yield run
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _tokens(url: str) -> int:
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from central.db.models import EnrollmentToken

    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return int(session.scalar(select(func.count()).select_from(EnrollmentToken)) or 0)
    finally:
        engine.dispose()


def test_the_registry_writes_the_token_sheets_qr_code(
    tmp_path: Path, central_cli: Callable[..., tuple[int, str, str]]
) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from central.db.migrate import upgrade
    from central.onboarding import create_office, create_station

    db = f"sqlite:///{tmp_path / 'registry.db'}"
    env = processkit.registry_env(tmp_path, db, registrykit.ADMIN)
    upgrade(db)
    engine = create_engine(db)
    with Session(engine) as session, session.begin():
        now = datetime.now(UTC)
        office = create_office(session, "Công an xã", "00001", now, "test")
        create_station(session, "HN-QR-01", office.id, now, "test")
    engine.dispose()

    sheet = tmp_path / "sheet.png"
    run = _central(
        env, "stations", "token", "HN-QR-01", "--registry-url", "https://r.example.vn",
        "--qr", str(sheet), "--valid-hours", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
    code = parse_setup_code(lines["setup code"])
    assert code == SetupCode("https://r.example.vn", lines["token"])
    assert parse_setup_code(_decode_png(sheet.read_bytes())) == code
    assert sheet.stat().st_mode & 0o077 == 0  # a credential: the owner's only
    assert _tokens(db) == 1

    # Refused before a token is issued: none is wasted.
    for args, error in (
        (["--qr", str(tmp_path / "x.png")], "give --registry-url"),
        (["--registry-url", "http://registry.example.vn"], "plain http"),
        (["--registry-url", "https://r.example.vn", "--qr", str(tmp_path / "no" / "x.png")],
         "no token issued"),
        (["--valid-hours", "0"], "more than 0"),
    ):  # fmt: skip
        status, out, err = central_cli(env, "stations", "token", "HN-QR-01", *args)
        assert status == 2, out
        assert error in err
    status, _, err = central_cli(
        env, "stations", "token", "HN-NONE", "--registry-url", "https://r.example.vn"
    )
    assert (status, err.strip()) == (2, "HN-NONE: no station HN-NONE")
    assert _tokens(db) == 1
    assert not (tmp_path / "x.png").exists()
    # Without an address: the token alone, as the HTTP route gives it.
    status, out, err = central_cli(env, "stations", "token", "HN-QR-01")
    assert status == 0, err
    assert "token: " in out
    assert "setup code" not in out
    assert _tokens(db) == 2


# --- the station: its camera and the scan ----------------------------------------------------


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[TestClient, StationRuntime, CameraControl]]:
    """A station not set up yet, with a simulated camera (no scanner, no card reader)."""
    settings = stationkit.station_settings(
        tmp_path, technician={"pin_hash": hash_pin(PIN)}, **stationkit.camera_only_devices(tmp_path)
    )
    # The test process's one pcscd: the PC/SC client keeps the first it talks to,
    # and a private one stopped with this station would leave later card tests none.
    runtime = StationRuntime(settings, pcscd=cardkit.shared_pcscd()).start()
    try:
        assert runtime.devices is not None
        camera = CameraControl(runtime.devices.camera_control_path)
        with TestClient(create_app(runtime)) as client:
            yield client, runtime, camera
    finally:
        runtime.stop()


def _unlock(client: TestClient) -> dict[str, str]:
    return stationkit.technician_headers(client, PIN)


def _scan(client: TestClient, auth: dict[str, str], timeout_s: float = 10) -> Any:
    return client.post(
        "/api/technician/setup-code/scan", json={"timeout_s": timeout_s}, headers=auth
    )


def test_the_camera_simulator_holds_a_sheet_up(
    station: tuple[TestClient, StationRuntime, CameraControl],
) -> None:
    _, runtime, camera = station
    assert runtime.devices is not None
    lens = runtime.devices.camera
    sheet = SetupCode("https://r.example.vn", TOKEN)
    assert camera.state()["sheet"] is False
    camera.show(sheet.png())
    assert camera.state()["sheet"] is True
    frame = lens.read(2.0)
    frame = lens.read(2.0)  # one delivered after the sheet went up
    assert frame.metadata["sheet"] is True
    grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
    text, _ = read_qr(grey, [cv2.QRCodeDetector()])
    assert text == sheet.payload()
    # Bad sheets are refused with the reason; the sheet held up stays.
    with pytest.raises(ValueError, match="not an image file"):
        camera.show(b"not a png")
    for bad in ({"png": "!!"}, {"png": 5}, {"png": ""}):
        with pytest.raises(RuntimeError, match="show: "):
            camera.send(cmd="show", **bad)
    assert camera.state()["sheet"] is True
    camera.show(None)
    assert camera.state()["sheet"] is False
    lens.read(2.0)
    assert "sheet" not in lens.read(2.0).metadata


def test_the_scan_reads_the_token_sheet_and_refuses_other_codes(
    station: tuple[TestClient, StationRuntime, CameraControl],
) -> None:
    client, runtime, camera = station
    sheet = SetupCode("http://127.0.0.1:8000", TOKEN)
    camera.show(sheet.png())
    # The technician's route: nobody else's.
    for headers in ({}, {"authorization": "Bearer forged"}):
        r = _scan(client, headers)
        assert (r.status_code, r.json()["error"]) == (401, "technician_required")
    auth = _unlock(client)
    r = _scan(client, auth)
    assert r.status_code == 200, r.text
    found = r.json()
    assert (found["registry_url"], found["token"]) == (sheet.registry_url, TOKEN)
    assert found["seconds"] < 5
    assert found["frames"] >= 1

    # A receipt slip's code: not a setup code, said at once (not after the time).
    camera.show(_qr_png(slip_payload(SLIP_PACKAGE_ID, "210301-ABCDEFGH2345")))
    r = _scan(client, auth, timeout_s=30)
    assert r.status_code == 422, r.text
    assert (r.json()["error"], r.json()["details"]["reason"]) == (
        "not_a_setup_code",
        "wrong_scheme",
    )
    # A setup code of a later version, and one whose address is plain http to the internet.
    camera.show(_qr_png(f"vneid-setup:2?registry=https%3A%2F%2Fr.vn&token={TOKEN}"))
    assert _scan(client, auth).json()["details"]["reason"] == "wrong_version"
    camera.show(_qr_png(f"vneid-setup:1?registry=http%3A%2F%2Fr.vn&token={TOKEN}"))
    assert _scan(client, auth).json()["details"]["reason"] == "insecure_address"

    # Nothing in front of the camera: no code seen, after the time asked for.
    camera.show(None)
    r = _scan(client, auth, timeout_s=1.5)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "no_code_seen"
    assert body["details"] == {"glimpsed": False, "seconds": pytest.approx(1.5, abs=0.3)}

    # Journalled: the address read, how each try ended, never the token.
    entries = list(runtime.journal.recent(50, action="technician.setup_code_scanned"))
    outcomes = [e.detail["outcome"] for e in reversed(entries)]
    assert outcomes == ["ok", "failed", "failed", "failed", "failed"]
    assert entries[-1].detail["registry_url"] == sheet.registry_url
    assert all(TOKEN not in str(e.detail) for e in entries)
    # Bad input: refused before the camera is read.
    for body_in in ({"timeout_s": 0}, {"timeout_s": 61}, {"timeout_s": "x"}):
        r = client.post("/api/technician/setup-code/scan", json=body_in, headers=auth)
        assert r.status_code == 422


def test_the_scan_needs_a_camera(tmp_path: Path) -> None:
    settings = stationkit.station_settings(tmp_path, technician={"pin_hash": hash_pin(PIN)})
    runtime = StationRuntime(settings).start()  # no devices at all
    try:
        with TestClient(create_app(runtime)) as client:
            r = _scan(client, _unlock(client), timeout_s=1)
            assert (r.status_code, r.json()["error"]) == (503, "no_devices")
    finally:
        runtime.stop()
