"""The device health board: one place the station asks what each device is and how it is."""

from __future__ import annotations

import threading

import pytest

from station.drivers.health import DeviceHealthBoard, DeviceKind, HealthCell


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cell_lifecycle_present_error_absent_recovered() -> None:
    clock = FakeClock()
    cell = HealthCell("scanner", DeviceKind.FINGERPRINT, "serial", clock=clock)
    assert not cell.snapshot().present
    assert not cell.snapshot().ok

    clock.now = 1001.0
    cell.present(serial="SN1", firmware="1.2", model="R30x-TP", baud="115200")
    h = cell.snapshot()
    assert (h.present, h.ok, h.serial, h.firmware, h.model) == (True, True, "SN1", "1.2", "R30x-TP")
    assert h.details == {"baud": "115200"}
    assert h.updated_at == 1001.0

    clock.now = 1002.0
    cell.error("checksum error, resynchronised")
    h = cell.snapshot()
    assert h.present
    assert not h.ok
    assert h.last_error_at == 1002.0

    cell.absent("unplugged")
    h = cell.snapshot()
    assert not h.present
    assert h.last_error == "unplugged"
    # identity facts survive an unplug: the technician still sees which device it was
    assert h.serial == "SN1"

    clock.now = 1005.0
    cell.present()  # replugged and answering again: the error clears, facts stay
    h = cell.snapshot()
    assert h.ok
    assert h.serial == "SN1"
    assert h.last_error is None
    assert h.details["baud"] == "115200"


def test_board_lists_and_serialises_every_device() -> None:
    board = DeviceHealthBoard()
    a = board.register(HealthCell("scanner", DeviceKind.FINGERPRINT, "serial"))
    board.register(HealthCell("encoder", DeviceKind.CARD_ENCODER, "pcsc"))
    a.present(serial="X")
    assert not board.all_ok()
    assert {h.name for h in board} == {"scanner", "encoder"}
    rows = {r["name"]: r for r in board.as_json()}
    assert rows["scanner"]["ok"] is True
    assert rows["encoder"]["present"] is False
    assert rows["encoder"]["kind"] == "card_encoder"
    with pytest.raises(ValueError, match="already registered"):
        board.register(HealthCell("scanner", DeviceKind.FINGERPRINT, "serial"))
    board.register(a)  # the same cell again is harmless
    board.unregister("encoder")
    assert board.all_ok()
    assert board.get("scanner").serial == "X"
    with pytest.raises(KeyError):
        board.get("encoder")


def test_snapshots_are_consistent_under_concurrent_updates() -> None:
    cell = HealthCell("camera", DeviceKind.CAMERA, "simulated")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            cell.present(serial=f"S{i}", firmware=f"S{i}")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(2000):
            h = cell.snapshot()
            assert h.serial == h.firmware  # never half of one update and half of another
    finally:
        stop.set()
        t.join(timeout=5)
