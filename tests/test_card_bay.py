"""The private pcscd of the simulated card bay: how long it lives, and who stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from station.drivers.card.bay import PcscDaemon, pcscd_unavailable, private_pcscd

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(pcscd_unavailable() is not None, reason=str(pcscd_unavailable())),
]

ROOT = Path(__file__).resolve().parents[1]


def pcscd_pids(daemon_dir: Path) -> list[int]:
    """PIDs of the pcscd processes whose --config lies under ``daemon_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pcscd") and str(daemon_dir).encode() in b" ".join(argv):
            found.append(int(entry.name))
    return found


def wait_until_gone(daemon_dir: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := pcscd_pids(daemon_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_a_daemon_started_on_a_worker_thread_outlives_the_thread(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the parent THREAD exits (prctl(2)), not the process:
    a pcscd started from a worker thread must not die when that thread ends."""
    daemon = PcscDaemon(tmp_path / "pcscd")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            daemon.start()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    worker = threading.Thread(target=start)
    worker.start()
    worker.join(30)
    try:
        assert not errors, errors
        pids = pcscd_pids(daemon.workdir)
        assert len(pids) == 1, pids
        time.sleep(2.0)
        assert pcscd_pids(daemon.workdir) == pids, "pcscd died with the thread that started it"
        assert daemon.running
        assert daemon.socket_path.exists()
    finally:
        daemon.stop()
    assert not daemon.running
    assert wait_until_gone(daemon.workdir) == []


def test_stop_leaves_no_pcscd_behind(tmp_path: Path) -> None:
    daemon = PcscDaemon(tmp_path / "pcscd")
    daemon.start()
    assert len(pcscd_pids(daemon.workdir)) == 1
    daemon.stop()
    daemon.stop()  # twice is harmless
    assert wait_until_gone(daemon.workdir, 1.0) == []


SCRIPT = """
import sys, threading, time
from pathlib import Path
from station.drivers.card.bay import PcscDaemon

daemon = PcscDaemon(Path(sys.argv[1]))
worker = threading.Thread(target=daemon.start)
worker.start()
worker.join()
print("started", flush=True)
if sys.argv[2] == "exit":
    sys.exit(0)  # a normal exit without calling stop(): the atexit hook stops it
time.sleep(600)  # until killed
"""


@pytest.mark.parametrize("end", ["exit", "sigkill"])
def test_the_process_ending_takes_its_pcscd_along(tmp_path: Path, end: str) -> None:
    """Exiting without stop(), or being killed with SIGKILL (a test run killed by its
    timeout), leaves no pcscd behind, even when a worker thread started it."""
    workdir = tmp_path / "pcscd"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(workdir), end],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        if end == "sigkill":
            assert len(pcscd_pids(workdir)) == 1
            os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert wait_until_gone(workdir) == [], "pcscd outlived the process that started it"


def test_private_pcscd_starts_points_the_process_at_it_and_always_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PCSCLITE_CSOCK_NAME", raising=False)
    seen: list[PcscDaemon] = []

    def use_and_fail() -> None:
        with private_pcscd() as daemon:
            seen.append(daemon)
            assert daemon.running
            assert os.environ["PCSCLITE_CSOCK_NAME"] == str(daemon.socket_path)
            assert len(pcscd_pids(daemon.workdir)) == 1
            raise KeyError("the caller fails half way")

    with pytest.raises(KeyError):
        use_and_fail()
    (daemon,) = seen
    assert not daemon.running
    assert wait_until_gone(daemon.workdir, 1.0) == []
    assert "PCSCLITE_CSOCK_NAME" not in os.environ
    assert not daemon.workdir.exists()  # its temporary directory went with it


def test_private_pcscd_refuses_a_second_daemon_and_leaves_none_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCSCLITE_CSOCK_NAME", "/elsewhere/pcscd.comm")

    def enter() -> None:
        with private_pcscd(tmp_path / "p"):
            pytest.fail("entered")

    with pytest.raises(RuntimeError, match="another pcscd"):
        enter()
    assert wait_until_gone(tmp_path / "p", 1.0) == []
    assert os.environ["PCSCLITE_CSOCK_NAME"] == "/elsewhere/pcscd.comm"
