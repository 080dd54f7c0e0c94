"""The station's devices built from its configuration, used end to end as the station does.

Real drivers against the simulators over their real transports: the scanner simulator on
a pty, the simulated camera, the card emulator behind pcscd + vpcd, mock GPIO. One
citizen: ten rolled fingers, a face captured and cropped to the ICAO portrait, a chip
built from those captures, personalised, read back under PACE/BAC and verified by passive
authentication, and the status light blinked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from biometrics.face.pipeline import FaceAnalyzer
from enrollment import images
from enrollment.icao.chip import build_chip
from enrollment.icao.lds import FaceImage, FingerImage, parse_dg2
from enrollment.icao.mrz import cccd_td1
from enrollment.icao.pki import SoftwarePki
from station.capture.portrait import first_good_portrait
from station.config import StationSettings
from station.devices import DeviceUnavailableError, StationDevices
from station.drivers.camera import CameraDisconnected, SimulatedCamera, parse_script
from station.drivers.fingerprint.roll_sim import ground_truth
from station.drivers.fingerprint.sim_control import SimulatorProcess
from station.drivers.gpio import MockFactory
from tests import cardkit
from tests.cardkit import CardBay, PcscDaemon
from tests.imagekit import ensure_face_assets

pcscd = cardkit.pcscd
card_bay = cardkit.card_bay

ROOT = Path(__file__).resolve().parent.parent
SEED, PERSON = 5, 2


def _settings(tmp: Path, reader: str) -> StationSettings:
    return StationSettings(
        run_dir=tmp / "run",
        state_dir=tmp / "state",
        scanner={
            "backend": "simulated",
            "simulator": {"seed": SEED, "person": PERSON, "pace": False},
        },
        camera={"backend": "simulated", "seed": 3, "scene_script": ["good:30"], "fps": 15},
        # The test session's pcscd stands in for the station's system pcscd.
        card={"backend": "pcsc", "encoder": {"reader_pattern": f"^{reader}$"}},
        gpio={"backend": "mock"},
    )


@pytest.fixture
def devices(tmp_path: Path, card_bay: CardBay) -> Iterator[StationDevices]:
    ensure_face_assets()
    with StationDevices(_settings(tmp_path, card_bay.reader)) as devices:
        yield devices


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask].astype(np.float64) - a[mask].mean()
    y = b[mask].astype(np.float64) - b[mask].mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


@pytest.mark.timeout(240)
def test_one_citizen_through_every_device(devices: StationDevices, card_bay: CardBay) -> None:
    board = devices.board
    assert {h.name for h in board} == {"gpio", "fingerprint", "camera", "card_encoder"}
    assert board.all_ok(), board.as_json()
    gpio = devices.gpio
    gpio.light.busy()

    # Ten rolled fingers, in the simulator's default order (1..10 of PERSON).
    rolled: dict[int, np.ndarray] = {}
    for finger in range(1, 11):
        capture = devices.scanner.capture_roll(finger, timeout=30.0)
        assert capture.image.shape == (750, 800)
        truth = ground_truth(SEED, PERSON, finger).image
        inked = capture.image < 200
        # the print composed from the stream is this finger, not merely a finger
        assert _ncc(capture.image, truth, inked) > 0.9, finger
        rolled[finger] = capture.image
    assert devices.scanner.health.snapshot().ok

    # A face: frames until one, cropped to the ICAO portrait, passes the quality gate (the
    # gate's geometry is that of the portrait, not of the wider camera frame).
    portrait = first_good_portrait(devices.camera, FaceAnalyzer(), timeout=60.0)
    assert portrait is not None, "no frame of a steady frontal face passed the quality gate"
    assert portrait.coverage > 0.9
    jpeg = images.encode_jpeg(portrait.image, quality=80)

    # The chip from those captures, personalised and verified on the encoder.
    now = datetime.now(UTC)
    pki = SoftwarePki.generate(now=now)
    csca = pki.csca
    h, w = portrait.image.shape[:2]
    chip, secrets = build_chip(
        td1=cccd_td1(
            personal_number="001090012345",
            full_name="Trần Thị Bình",
            birth_date=date(1990, 1, 15),
            sex="F",
            expiry=date(2030, 1, 15),
        ),
        faces=[FaceImage(jpeg, w, h, gender=2)],
        fingers=[FingerImage(images.encode_wsq(rolled[f]), f) for f in (2, 7)],
        document_signer=pki.ds,
        sign=pki.sign,
        signing_time=now - timedelta(minutes=1),
    )
    card = card_bay.card("citizen")
    card.insert()
    devices.encoder.wait_for_card(5.0)
    report = devices.encoder.personalise(chip, secrets)
    assert report.locked
    verified = devices.encoder.verify(chip, [csca])
    assert verified.passive.verified  # the hashes of every data group read back
    assert verified.active_authentication is True
    assert parse_dg2(verified.read.files[0x0102])[0].jpeg == jpeg

    # The light says so: three green blinks, then ready.
    gpio.light.blink(0.03, 0.03, n=3)
    assert gpio.light.wait(2.0)
    assert isinstance(gpio.factory, MockFactory)
    green = gpio.factory.mock_pin(devices.settings.gpio.pins.green)
    assert green.levels()[-6:] == [True, False] * 3
    gpio.light.ready()
    assert board.all_ok(), board.as_json()


def test_a_missing_device_is_reported_and_the_rest_still_work(
    tmp_path: Path, pcscd: PcscDaemon
) -> None:
    ensure_face_assets()
    settings = _settings(tmp_path, "^no such reader$").model_copy(
        update={
            "scanner": StationSettings().scanner.model_copy(
                update={"backend": "serial", "port": str(tmp_path / "unplugged"), "timeout_s": 0.5}
            )
        }
    )
    with StationDevices(settings) as devices:
        by_name = {h.name: h for h in devices.board}
        assert not by_name["fingerprint"].present
        assert "unplugged" in (by_name["fingerprint"].last_error or "")
        assert not by_name["card_encoder"].present
        assert by_name["camera"].ok
        assert by_name["gpio"].ok
        with pytest.raises(DeviceUnavailableError, match="card encoder is not available"):
            _ = devices.encoder
        devices.camera.read(timeout=2.0)  # the camera works without the others


@pytest.mark.timeout(120)
def test_self_check_command_with_every_backend_simulated(tmp_path: Path) -> None:
    """`python -m station.devices` in its own process, where the station starts its own
    private pcscd for the simulated card bay (root only), as the demo does."""
    ensure_face_assets()
    if cardkit.pcscd_unavailable():
        pytest.skip(cardkit.pcscd_unavailable() or "")
    env = {
        **os.environ,
        "STATION_RUN_DIR": str(tmp_path / "run"),
        "STATION_STATE_DIR": str(tmp_path / "state"),
        "STATION_SCANNER__SIMULATOR__PACE": "false",
    }
    env.pop("PCSCLITE_CSOCK_NAME", None)
    env.pop("STATION_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "station.devices", "--json"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"gpio", "fingerprint", "camera", "card_encoder"}
    assert all(r["ok"] for r in rows.values())
    assert rows["card_encoder"]["backend"] == "simulated"
    assert rows["fingerprint"]["serial"]


@pytest.mark.timeout(180)
def test_the_devices_demo_runs() -> None:
    """`make demo`'s second half, as a stranger runs it."""
    ensure_face_assets()
    env = {
        k: v for k, v in os.environ.items() if k not in ("PCSCLITE_CSOCK_NAME", "STATION_CONFIG")
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_devices.py")],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passive authentication OK" in proc.stdout or "card: skipped" in proc.stdout
    if not cardkit.pcscd_unavailable():
        assert "active authentication OK" in proc.stdout
    assert "status light: ready" in proc.stdout


def _simulated_only(tmp: Path) -> StationSettings:
    return _settings(tmp, "^no such reader$")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_error_a_backend_does_not_translate_is_recorded_and_the_rest_work(
    tmp_path: Path, pcscd: PcscDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_face_assets()

    def busy(self: object) -> None:
        raise RuntimeError("Camera __init__ sequence did not complete (device busy)")

    monkeypatch.setattr(SimulatedCamera, "_open_device", busy)
    with StationDevices(_simulated_only(tmp_path)) as devices:
        camera = devices.board.get("camera")
        assert not camera.present
        assert "device busy" in (camera.last_error or "")
        with pytest.raises(DeviceUnavailableError, match="device busy"):
            _ = devices.camera
        assert devices.scanner.health.snapshot().ok  # the others are unaffected
        sim = devices.scanner_simulator
        assert sim is not None
        process = sim._process
        assert process is not None
    assert _gone(process.pid)


def test_whatever_escapes_open_stops_what_was_started(
    tmp_path: Path, pcscd: PcscDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_face_assets()
    started: list[int] = []
    real_start = SimulatorProcess.start

    def start(self: SimulatorProcess) -> SimulatorProcess:
        out = real_start(self)
        assert self._process is not None
        started.append(self._process.pid)
        return out

    def interrupted(self: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SimulatorProcess, "start", start)
    monkeypatch.setattr(SimulatedCamera, "_open_device", interrupted)
    with pytest.raises(KeyboardInterrupt):
        StationDevices(_simulated_only(tmp_path)).open()
    assert started
    assert all(_gone(pid) for pid in started)


def _read_until_it_fails(devices: StationDevices) -> None:
    for _ in range(100):
        devices.camera.read(timeout=2.0)


@pytest.mark.timeout(60)
def test_retry_reopens_a_camera_after_it_was_unplugged(tmp_path: Path, pcscd: PcscDaemon) -> None:
    ensure_face_assets()
    script = tuple(parse_script("good:0.3, unplugged:0.6, good:60"))
    camera = StationSettings().camera.model_copy(update={"seed": 3, "scene_script": script})
    settings = _simulated_only(tmp_path).model_copy(update={"camera": camera})
    with StationDevices(settings) as devices:
        with pytest.raises(CameraDisconnected):
            _read_until_it_fails(devices)
        assert not devices.board.get("camera").present
        deadline = time.monotonic() + 10
        while not devices.board.get("camera").ok:
            assert time.monotonic() < deadline, devices.board.get("camera")
            time.sleep(0.2)
            devices.retry()
        assert devices.camera.read(timeout=2.0).metadata.get("scene") == "good"
