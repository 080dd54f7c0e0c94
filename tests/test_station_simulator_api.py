"""The simulated card slot of the station API (``/api/simulator/card``): the hand that lays
a blank card on the simulated encoder and takes it off, from outside the station process
(the demo, a technician without cards). Each POST is a new blank card; DELETE returns
only when the encoder sees the reader empty; a station with a real encoder refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from station.api import create_app
from station.drivers.card.bay import pcscd_unavailable
from station.runtime import StationRuntime
from tests import cardkit, stationkit


def _runtime(tmp: Path, card_backend: str, open_devices: bool) -> StationRuntime:
    settings = stationkit.station_settings(
        tmp,
        open_devices=open_devices,
        # Only the card encoder matters here: the other devices are left absent.
        scanner={"backend": "serial", "port": str(tmp / "no-scanner")},
        camera={"backend": "opencv", "device": str(tmp / "no-camera.mp4")},
        card={"backend": card_backend},
    )
    # The test process's one pcscd (the PC/SC client keeps the first it talks to).
    pcscd = cardkit.shared_pcscd() if card_backend == "simulated" else None
    return StationRuntime(settings, pcscd=pcscd).start()


@pytest.fixture
def simulated(tmp_path: Path) -> Iterator[tuple[TestClient, StationRuntime]]:
    reason = pcscd_unavailable()
    if reason is not None:
        pytest.skip(reason)
    runtime = _runtime(tmp_path, "simulated", open_devices=True)
    try:
        with TestClient(create_app(runtime)) as api:
            yield api, runtime
    finally:
        runtime.stop()


@pytest.mark.timeout(120)
def test_each_card_put_on_is_a_new_blank_one(simulated: tuple[TestClient, StationRuntime]) -> None:
    api, runtime = simulated
    assert runtime.devices is not None
    encoder = runtime.devices.encoder
    assert not encoder.link.card_present()

    serials = []
    for _ in range(2):
        r = api.post("/api/simulator/card")
        assert r.status_code == 201, r.text
        assert r.json()["reader"] == runtime.devices.card_bay.reader  # type: ignore[union-attr]
        encoder.wait_for_card(5)
        serials.append(encoder.chip_serial())
        # One card at a time: a second one is refused while the first is on.
        again = api.post("/api/simulator/card")
        assert again.status_code == 409, again.text
        assert again.json()["error"] == "card_present"
        # Off again; when DELETE answers, the encoder already sees the reader empty.
        assert api.delete("/api/simulator/card").status_code == 204
        assert not encoder.link.card_present()
    assert serials[0] != serials[1]
    # Nothing on the reader: taking the card off is a no-op, not an error.
    assert api.delete("/api/simulator/card").status_code == 204


def test_a_real_encoder_has_no_simulated_slot(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, "pcsc", open_devices=False)
    try:
        with TestClient(create_app(runtime)) as api:
            for method in ("POST", "DELETE"):
                r = api.request(method, "/api/simulator/card")
                assert r.status_code == 409, r.text
                assert r.json()["error"] == "not_simulated"
    finally:
        runtime.stop()


def test_a_simulated_encoder_that_did_not_start_says_why(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, "simulated", open_devices=False)
    try:
        with TestClient(create_app(runtime)) as api:
            r = api.post("/api/simulator/card")
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "device_missing"
            assert "without devices" in r.json()["detail"]
    finally:
        runtime.stop()
