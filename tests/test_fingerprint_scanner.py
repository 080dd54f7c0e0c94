"""The scanner driver and pyfingerprint against the simulator, over a real pty."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyfingerprint.pyfingerprint import PyFingerprint

from biometrics.fingerprint.synth import contact_mask
from station.drivers.fingerprint.errors import (
    CaptureCancelled,
    NoFinger,
    ProtocolFault,
    ScannerDisconnected,
    ScannerNotFound,
    ScannerTimeout,
    WrongPassword,
)
from station.drivers.fingerprint.frames import RollFrame
from station.drivers.fingerprint.roll_sim import ground_truth
from station.drivers.fingerprint.rolled import RollError
from station.drivers.fingerprint.scanner import FingerprintScanner
from station.drivers.fingerprint.sim_control import SimulatorProcess
from station.drivers.fingerprint.sim_fingers import base_image, flat_image
from station.drivers.fingerprint.simulator import ScannerSimulator, SimConfig, load_script
from station.drivers.health import DeviceHealthBoard

SEED = 11
PERSON = 4

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    """One unpaced simulator for the module (a process: ~1 s to start)."""
    link = tmp_path_factory.mktemp("fpsim") / "ttyFP0"
    with SimulatorProcess(link, seed=SEED, person=PERSON, pace=False) as process:
        yield process


@pytest.fixture(autouse=True)
def fresh_script(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        sim: SimulatorProcess = request.getfixturevalue("sim")
        if not sim.link.exists():  # a failed unplug test: wait for the replug
            deadline = time.monotonic() + 10
            while not sim.link.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        sim.control.reset()


@pytest.fixture
def scanner(sim: SimulatorProcess) -> Iterator[FingerprintScanner]:
    with FingerprintScanner(str(sim.link), timeout=1.0, board=DeviceHealthBoard()) as s:
        yield s


def last_served(sim: SimulatorProcess) -> dict[str, object]:
    served = sim.control.served()
    assert served, "the simulator served nothing"
    return served[-1]


# --- pyfingerprint, an independent host implementation -----------------------------------


def test_pyfingerprint_handshake_and_system_parameters(sim: SimulatorProcess) -> None:
    f = PyFingerprint(str(sim.link), 57600)
    assert f.verifyPassword() is True
    assert f.getSystemParameters() == (0, 9, 1000, 3, 0xFFFFFFFF, 2, 6)
    assert f.getMaxPacketSize() == 128
    assert f.getBaudRate() == 57600
    assert f.getTemplateCount() == 0
    wrong = PyFingerprint(str(sim.link), 57600, password=0x1234)
    assert wrong.verifyPassword() is False


def test_pyfingerprint_reads_and_downloads_the_served_image(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    sim.control.present(finger=7)
    f = PyFingerprint(str(sim.link), 57600)
    assert f.verifyPassword()
    deadline = time.monotonic() + 10
    while not f.readImage():
        assert time.monotonic() < deadline, "no finger within 10 s"
    out = tmp_path / "finger.bmp"
    f.downloadImage(str(out))
    got = np.asarray(Image.open(out).convert("L"))
    served = last_served(sim)
    assert (served["kind"], served["person"], served["finger"]) == ("base", PERSON, 7)
    expected = base_image(SEED, PERSON, 7, int(str(served["impression"])), "none")
    assert got.shape == (288, 256)
    assert np.array_equal(got, expected)
    assert hashlib.sha256(got.tobytes()).hexdigest() == served["sha256"]
    assert got.std() > 20, "a blank image would also round-trip"


def test_pyfingerprint_packet_size_change(sim: SimulatorProcess, tmp_path: Path) -> None:
    f = PyFingerprint(str(sim.link), 57600)
    assert f.verifyPassword()
    f.setMaxPacketSize(32)
    try:
        assert f.getMaxPacketSize() == 32
        while not f.readImage():
            pass
        f.downloadImage(str(tmp_path / "small.bmp"))
        served = last_served(sim)
        got = np.asarray(Image.open(tmp_path / "small.bmp").convert("L"))
        assert hashlib.sha256(got.tobytes()).hexdigest() == served["sha256"]
    finally:
        f.setMaxPacketSize(128)


# --- our driver ----------------------------------------------------------------------


def test_open_identifies_and_reports_health(sim: SimulatorProcess) -> None:
    board = DeviceHealthBoard()
    with FingerprintScanner(str(sim.link), board=board) as s:
        info = s.device_info()
        assert (info.platen_width, info.platen_height, info.resolution_ppi) == (800, 750, 500)
        assert (info.flat_width, info.flat_height) == (400, 500)
        assert info.serial.startswith("SIM")
        assert len(info.calibration_date) == 8
        health = board.get("fingerprint")
        assert health.ok
        assert (health.serial, health.firmware, health.model) == (
            info.serial,
            info.firmware,
            info.model,
        )
        sysp = s.read_system_parameters()
        assert (sysp.packet_size, sysp.baudrate) == (128, 57600)
    assert not s.is_open


def test_led(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    scanner.set_led("breathing", "purple", speed=100, cycles=0)
    assert sim.control.state()["led"] == [1, 100, 3, 0]
    scanner.set_led("off")
    assert sim.control.state()["led"][0] == 4
    with pytest.raises(ValueError, match="LED mode"):
        scanner.set_led("disco")


def test_base_capture_matches_served_image(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    sim.control.present(finger=2, fault="dry")
    image = scanner.capture_image(timeout=5)
    served = last_served(sim)
    assert (served["finger"], served["fault"]) == (2, "dry")
    assert np.array_equal(image, base_image(SEED, PERSON, 2, int(str(served["impression"])), "dry"))
    stats = scanner.last_transfer
    assert stats is not None
    assert stats.command == "UpImage"
    assert stats.packets == 288
    assert stats.bytes >= 36864


def test_flat_capture_8_and_4_bit(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    sim.control.present(finger=3)
    image = scanner.capture_flat(3, timeout=5)
    served = last_served(sim)
    expected = flat_image(SEED, PERSON, 3, int(str(served["impression"])), "none")
    assert image.shape == (500, 400)
    assert np.array_equal(image, expected)
    sim.control.present(finger=3)
    packed = scanner.capture_flat(3, timeout=5, pack4=True)
    served = last_served(sim)
    expected = flat_image(SEED, PERSON, 3, int(str(served["impression"])), "none")
    assert np.array_equal(packed, (expected >> 4) * 17)


def test_roll_capture_streams_frames_to_the_composer(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    sim.control.present(finger=2)
    scanner.set_stream_packet_size(4096)
    seen: list[RollFrame] = []
    capture = scanner.capture_roll(2, timeout=5, on_frame=seen.append)
    served = last_served(sim)
    assert (served["kind"], served["finger"]) == ("roll", 2)
    assert len(seen) == served["frames"]
    assert len(seen) > 10
    assert [f.index for f in seen] == list(range(len(seen)))
    assert capture.image.shape == (750, 800)
    assert capture.frames_used > 0
    stats = scanner.last_transfer
    assert stats is not None
    assert (stats.frames, stats.dropped_frames) == (len(seen), 0)


def test_trimmed_and_full_roll_streams_make_the_same_print(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    """Trimming is the default: the scanner reports each frame's band and sends the columns
    around its centre; asked for whole windows it sends those, and the prints agree."""
    scanner.set_stream_packet_size(4096)
    captures = {}
    streams = {}
    for trim in (True, False):
        sim.control.present(finger=7)
        seen: list[RollFrame] = []
        captures[trim] = scanner.capture_roll(7, timeout=5, on_frame=seen.append, trim=trim)
        assert scanner.last_transfer is not None
        streams[trim] = (seen, scanner.last_transfer)
    (cut, cut_stats), (whole, whole_stats) = streams[True], streams[False]
    assert all(f.band is not None for f in cut)
    assert all(f.band is None for f in whole)
    assert len(cut) == len(whole) == cut_stats.frames
    assert whole_stats.bytes > 3 * cut_stats.bytes
    a, b = captures[True], captures[False]
    assert (a.width_px, a.band_px, a.left_px, a.right_px) == (
        b.width_px,
        b.band_px,
        b.left_px,
        b.right_px,
    )
    mask = contact_mask(ground_truth(SEED, PERSON, 7).params)
    x = a.image[mask].astype(np.float64) - a.image[mask].mean()
    y = b.image[mask].astype(np.float64) - b.image[mask].mean()
    assert (x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()) > 0.99


def test_trimmed_faults_raise_the_composers_error(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    for fault, code in (("smeared", "smeared"), ("partial", "too_short")):
        sim.control.present(finger=2, fault=fault)
        with pytest.raises(RollError) as err:
            scanner.capture_roll(2, timeout=5, pack4=True)
        assert err.value.code == code


def test_bad_roll_raises_the_composers_error(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    sim.control.present(finger=6, fault="too_fast")
    with pytest.raises(RollError) as err:
        scanner.capture_roll(6, timeout=5)
    assert err.value.code
    sim.control.present(finger=6)
    assert scanner.capture_roll(6, timeout=5).image.shape == (750, 800)


def test_no_finger_then_retry(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    sim.control.present(finger=1, fault="no_finger", ms=1500)
    started = time.monotonic()
    with pytest.raises(NoFinger) as err:
        scanner.capture_image(timeout=0.5)
    assert isinstance(err.value, ScannerTimeout)
    assert err.value.code == "no_finger"
    assert time.monotonic() - started < 2
    assert scanner.health.snapshot().ok, "a missing finger is not a device fault"
    image = scanner.capture_image(timeout=5)
    assert last_served(sim)["finger"] == 1
    assert image.shape == (288, 256)


def test_no_finger_on_a_roll_then_retry(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    sim.control.present(finger=8, fault="no_finger", ms=10_000)
    with pytest.raises(NoFinger):
        scanner.capture_roll(8, timeout=0.4)
    sim.control.present(finger=8)
    image = scanner.capture_flat(8, timeout=5)
    assert image.shape == (500, 400)


def test_cancel_mid_roll_is_quick(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    sim.control.present(finger=4)
    cancel = threading.Event()
    set_at: list[float] = []

    def on_frame(frame: RollFrame) -> None:
        if frame.index == 3:
            set_at.append(time.monotonic())
            cancel.set()

    with pytest.raises(CaptureCancelled) as err:
        scanner.capture_roll(4, timeout=5, on_frame=on_frame, cancel=cancel)
    assert err.value.code == "cancelled"
    assert time.monotonic() - set_at[0] < 0.5
    # The person is still there: the retry rolls the same finger.
    assert scanner.capture_roll(4, timeout=5).image.shape == (750, 800)
    assert last_served(sim)["finger"] == 4


def test_cancel_from_another_thread(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    sim.control.present(finger=5, fault="no_finger", ms=10_000)
    timer = threading.Timer(0.3, scanner.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(CaptureCancelled):
        scanner.capture_roll(5, timeout=8)
    timer.join()
    assert time.monotonic() - started < 1.0


def test_unplug_mid_upload_then_reconnect(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    sim.control.present(finger=9, fault="unplug_mid_transfer", ms=600)
    with pytest.raises(ScannerDisconnected) as err:
        scanner.capture_image(timeout=5)
    assert err.value.code == "disconnected"
    health = scanner.health.snapshot()
    assert not health.present
    assert not scanner.is_open
    scanner.reconnect(timeout=5)
    assert scanner.health.snapshot().ok
    image = scanner.capture_image(timeout=5)
    served = last_served(sim)
    assert (served["finger"], served["fault"]) == (9, "none")
    assert np.array_equal(
        image, base_image(SEED, PERSON, 9, int(str(served["impression"])), "none")
    )


def test_unplug_mid_roll_then_reconnect(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    sim.control.present(finger=10, fault="unplug_mid_transfer", ms=300)
    with pytest.raises(ScannerDisconnected):
        scanner.capture_roll(10, timeout=5)
    with pytest.raises(ScannerDisconnected):
        scanner.reconnect(timeout=0.05)  # not back yet
    scanner.reconnect(timeout=5)
    assert scanner.capture_flat(10, timeout=5).shape == (500, 400)


def test_idle_unplug_is_seen_by_the_next_command(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    sim.control.unplug(ms=300)
    deadline = time.monotonic() + 5
    while sim.link.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ScannerDisconnected):
        scanner.read_system_parameters()
    scanner.reconnect(timeout=5)
    assert scanner.read_system_parameters().packet_size == 128


def test_bad_checksums_resync_and_retry(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    before = scanner.corrupt_packets
    sim.control.corrupt(count=1)
    assert scanner.read_system_parameters().baudrate == 57600
    assert scanner.corrupt_packets == before + 1
    # A damaged data packet in the middle of UpImage: the upload is retried.
    sim.control.present(finger=2)
    deadline = time.monotonic() + 5
    while not scanner.generate_image():
        assert time.monotonic() < deadline
    sim.control.corrupt(count=1, after=100)
    image = scanner.upload_image()
    assert scanner.corrupt_packets == before + 2
    served = sim.control.served()
    assert served[-1]["sha256"] == served[-2]["sha256"]  # the same image, sent twice
    assert hashlib.sha256(image.tobytes()).hexdigest() == served[-1]["sha256"]


def test_line_noise_is_skipped(scanner: FingerprintScanner, sim: SimulatorProcess) -> None:
    sim.control.noise(b"\x00\xef\x01\xff\xff\xff\xff\x07\x00\x50 junk \xef")
    time.sleep(0.1)
    assert scanner.read_system_parameters().packet_size == 128


def test_silent_scanner_times_out(sim: SimulatorProcess) -> None:
    # A scanner at another address ignores us, exactly as a mute one would.
    s = FingerprintScanner(str(sim.link), address=0x12345678, timeout=0.2, retries=1)
    started = time.monotonic()
    with pytest.raises(ScannerTimeout) as err:
        s.open()
    assert err.value.code == "timeout"
    assert time.monotonic() - started < 2
    assert s.health.snapshot().last_error is not None
    assert not s.is_open


def test_wrong_password(sim: SimulatorProcess) -> None:
    s = FingerprintScanner(str(sim.link), password=0x1234)
    with pytest.raises(WrongPassword) as err:
        s.open()
    assert err.value.code == "wrong_password"


def test_missing_port(tmp_path: Path) -> None:
    s = FingerprintScanner(str(tmp_path / "nothing"))
    with pytest.raises(ScannerNotFound) as err:
        s.open()
    assert err.value.code == "not_found"
    assert not s.health.snapshot().present


# --- pacing (what the benches measure) ---------------------------------------------------


def test_cdc_pacing_rate(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path / "ttyFP1", seed=1, transport="cdc") as sim:
        s = FingerprintScanner(str(sim.link), timeout=2.0, stream_packet_size=4096)
        with s:
            s.capture_flat(1, timeout=5)
            stats = s.last_transfer
    assert stats is not None
    assert stats.bytes > 200_000
    assert stats.wait_seconds >= 0.15  # the finger's arrival, not counted in the rate
    assert 0.3e6 < stats.bytes_per_second < 1.15e6  # a ~1 MB/s link


@pytest.mark.slow
def test_uart_pacing_rate(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path / "ttyFP2", seed=1, baud=115200) as sim:
        s = FingerprintScanner(str(sim.link), baudrate=115200, timeout=2.0)
        with s:
            s.capture_image(timeout=5)
            stats = s.last_transfer
    assert stats is not None
    assert 9_000 < stats.bytes_per_second < 11_600  # 115200 baud = 11,520 B/s


def test_download_then_upload_round_trip(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    image = np.random.default_rng(5).integers(0, 256, (288, 256), dtype=np.uint8)
    scanner.download_image(image)
    back = scanner.upload_image()
    assert np.array_equal(back, (image >> 4) * 17)
    assert last_served(sim)["kind"] == "downloaded"


def test_cancel_a_flat_capture_while_waiting(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    sim.control.present(finger=1, fault="no_finger", ms=10_000)
    timer = threading.Timer(0.2, scanner.cancel)
    timer.start()
    with pytest.raises(CaptureCancelled):
        scanner.capture_flat(1, timeout=5)
    timer.join()
    assert scanner.read_system_parameters().packet_size == 128


# --- in-process simulator, script file, baud switch --------------------------------------


def test_in_process_simulator_follows_a_script(tmp_path: Path) -> None:
    script = tmp_path / "script.jsonl"
    script.write_text('{"finger": 6, "person": 2}\n{"finger": 1, "fault": "partial"}\n')
    config = SimConfig(
        tmp_path / "ttyFP3", seed=3, person=9, pace=False, script=load_script(script, 9)
    )
    sim = ScannerSimulator(config).start()
    try:
        with FingerprintScanner(str(config.link), timeout=1.0) as s:
            s.set_baudrate(115200)
            assert s.read_system_parameters().baudrate == 115200
            first = s.capture_image(timeout=5)
            second = s.capture_image(timeout=5)
        assert [(r["person"], r["finger"], r["fault"]) for r in sim.served] == [
            (2, 6, "none"),
            (9, 1, "partial"),
        ]
        assert np.array_equal(first, base_image(3, 2, 6, 0, "none"))
        assert np.array_equal(second, base_image(3, 9, 1, 0, "partial"))
    finally:
        sim.stop()
    assert not config.link.exists()


def test_a_failing_frame_consumer_stops_the_scanner(
    scanner: FingerprintScanner, sim: SimulatorProcess
) -> None:
    sim.control.present(finger=3)

    def broken(frame: RollFrame) -> None:
        raise RuntimeError("preview window closed")

    with pytest.raises(RuntimeError, match="preview window closed"):
        scanner.capture_roll(3, timeout=5, on_frame=broken)
    # The roll was cancelled and drained: the line is clean for the next command.
    assert scanner.read_system_parameters().packet_size == 128


def test_a_frame_off_the_platen_is_a_protocol_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanner whose firmware places a window past the platen's edge: the officer gets
    a clear ProtocolFault to retry, not a bare ValueError from deep in the composer."""
    import station.drivers.fingerprint.simulator as simulator_module

    def off_the_edge(
        seed: int, person: int, finger: int, fault: str, fps: float
    ) -> list[RollFrame]:
        pixels = np.full((100, 120), 200, np.uint8)
        return [RollFrame(0, 0, 760, 0, pixels)]  # 760 + 120 > 800

    monkeypatch.setattr(simulator_module, "roll_sequence", off_the_edge)
    config = SimConfig(tmp_path / "ttyFP4", seed=3, person=1, pace=False)
    sim = ScannerSimulator(config).start()
    try:
        with FingerprintScanner(str(config.link), timeout=1.0) as scanner:
            with pytest.raises(ProtocolFault, match="cannot place"):
                scanner.capture_roll(1, timeout=5, trim=False)
            assert scanner.read_system_parameters()  # and the scanner still answers
    finally:
        sim.stop()


def test_a_killed_parent_takes_its_simulator_with_it(tmp_path: Path) -> None:
    """A test run or a station killed with SIGKILL cannot stop its simulator; the
    simulator notices it was orphaned and stops, so no stray pty server lingers."""
    import os
    import signal
    import subprocess
    import sys

    link = tmp_path / "ttyFP9"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from station.drivers.fingerprint.sim_control import SimulatorProcess\n"
        f"sim = SimulatorProcess(Path({str(link)!r}), pace=False).start()\n"
        "print(sim._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert link.exists()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the simulator outlived its killed parent")
    assert not link.exists()  # it cleaned up its pty link on the way out
