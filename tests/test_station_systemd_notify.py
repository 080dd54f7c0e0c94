"""The service's systemd notifications: READY=1 once it answers HTTP, then WATCHDOG=1 at
half the watchdog timeout from its event loop (what keeps the device's
``Type=notify``/``WatchdogSec=`` unit alive), and nothing at all off systemd."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import httpx

from station.systemd_notify import Notifier
from tests import processkit, stationkit


def _listener(tmp: Path, abstract: bool) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"vn-eid-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        return sock, "@" + name
    path = str(tmp / "notify.sock")
    sock.bind(path)
    return sock, path


def test_notifications_reach_a_path_or_abstract_socket(tmp_path: Path) -> None:
    for abstract in (False, True):
        sock, address = _listener(tmp_path, abstract)
        with sock:
            notifier = Notifier({"NOTIFY_SOCKET": address})
            assert notifier.enabled
            assert notifier.ready("serving")
            assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
            assert notifier.watchdog()
            assert sock.recv(4096) == b"WATCHDOG=1"
        if not abstract:
            os.unlink(address)


def test_off_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not Notifier({}).enabled
    assert Notifier({}).ready() is False
    # The manager went away (its socket is gone): the service goes on.
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).watchdog() is False


def test_the_watchdog_interval_is_half_the_timeout_and_only_for_its_pid() -> None:
    mine = Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_s == 30.0
    assert mine.ping_interval_s() == 15.0
    # Inherited from a parent that was the one meant to ping: not ours.
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_s is None


def test_the_service_says_ready_after_it_answers_then_pings(tmp_path: Path) -> None:
    sock, address = _listener(tmp_path, abstract=False)
    port = processkit.free_port()
    env = stationkit.station_env(tmp_path)
    env.update({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
    station = stationkit.StationProcess(env, tmp_path / "station.log", port).start()
    try:
        sock.settimeout(180)
        first = sock.recv(4096)
        assert first.startswith(b"READY=1"), first
        # READY comes from the running loop: the API answers by then.
        assert httpx.get(f"{station.url}/api/status", timeout=10).status_code == 200
        sock.settimeout(10)
        pings: list[tuple[float, bytes]] = []
        while len(pings) < 4:
            pings.append((time.monotonic(), sock.recv(4096)))
        assert {p for _, p in pings} == {b"WATCHDOG=1"}
        # Every second (half of 2 s), not every tick: the first may have waited in the
        # socket, the three after it span two intervals.
        assert pings[-1][0] - pings[1][0] >= 1.5
    finally:
        station.kill()
        sock.close()
