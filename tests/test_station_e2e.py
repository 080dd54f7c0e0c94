"""The whole journey on one machine, through the station service's HTTP API: the real
drivers against the simulators (the scanner simulator on a pty, the simulated camera with
its control socket, a private pcscd with the card emulator), a registry process with its
pipeline, and the people: an administrator, an officer, a supervisor and an adjudicator.

Citizens are synthetic people whose face and fingers share one seed (0, 6 and 10 have
three different real faces as their source). Four enrollments: three residents from the
office's list and one of them again, under a new walk-in record. The registry finds the
duplicate, an adjudicator links it, every package is issued with the duplicate keeping
the first number, and the cards of the first three are personalised, read back,
verified and reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from station.api import create_app
from station.drivers.camera.sim_control import CameraControl
from station.drivers.card.bay import pcscd_unavailable
from station.runtime import StationRuntime
from tests import stationkit

pytestmark = pytest.mark.skipif(pcscd_unavailable() is not None, reason=str(pcscd_unavailable()))

ADJUDICATOR = stationkit.ADJUDICATOR
OFFICER, SUPERVISOR = stationkit.staff("00001")
STATION_ID = "HN-BD-E2E"


@dataclass
class World:
    registry_url: str
    registry: httpx.Client
    admin: dict[str, str]
    runtime: StationRuntime
    api: TestClient
    camera: CameraControl

    @property
    def scanner(self) -> Any:
        return stationkit.scanner_control(self.runtime)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("e2e")
    with stationkit.world(tmp, STATION_ID) as made:
        runtime, central = made.runtime, made.registry
        assert runtime.devices is not None
        board = {c["name"]: c for c in runtime.devices.board.as_json()}
        assert all(board[n]["ok"] for n in ("fingerprint", "camera", "card_encoder")), board
        with TestClient(create_app(runtime)) as api:
            stationkit.provision(api, made)
            camera = CameraControl(runtime.devices.camera_control_path)
            yield World(central.url, central.client, central.admin, runtime, api, camera)


def _login(world: World, who: tuple[str, str, int, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {stationkit.api_login(world.api, world.scanner, who)}"}


def _enroll(
    world: World,
    auth: dict[str, str],
    person: int,
    resident_ref: str | None,
    form: dict[str, Any],
    ticket: str | None = None,
) -> dict[str, Any]:
    api = world.api
    case_id = stationkit.open_case(
        api, form, resident_ref=resident_ref, ticket=ticket, headers=auth
    )
    stationkit.capture_face(api, world.camera, case_id, person, headers=auth)
    outcomes = stationkit.capture_fingers(api, world.scanner, case_id, person, headers=auth)
    assert not any(o.get("hand_warnings") for o in outcomes), outcomes
    submitted = stationkit.submit(
        api, case_id, supervisor=SUPERVISOR, scanner=world.scanner, headers=auth
    )
    slip = api.get(f"/api/cases/{case_id}/slip.pdf", headers=auth)
    assert slip.status_code == 200
    assert slip.content.startswith(b"%PDF")
    return submitted


def _wait_cases(
    world: World, auth: dict[str, str], case_ids: list[str], states: set[str], timeout: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        cases = {c: world.api.get(f"/api/cases/{c}", headers=auth).json() for c in case_ids}
        done = all(c["state"] in states or c["registry_state"] in states for c in cases.values())
        if done:
            return cases
        if time.monotonic() > deadline:
            raise AssertionError(f"cases did not reach {states}: {cases}")
        time.sleep(1.0)


def test_journey_with_a_duplicate_and_cards(world: World) -> None:
    auth = _login(world, OFFICER)
    # The first citizen came without an appointment: a walk-in ticket, called to counter 1.
    r = world.api.post("/api/queue/walk-in", json={"name": "Lê Văn Cường"}, headers=auth)
    assert r.status_code == 201, r.text
    called = world.api.post("/api/queue/call-next", json={"counter": "1"}, headers=auth).json()
    assert called["number"] == r.json()["number"]
    citizens = [
        (0, "DC01-0001", {"ethnicity": "01"}),
        (6, "DC01-0002", {"ethnicity": "01"}),
        (10, "DC01-0004", {"ethnicity": "01"}),
    ]
    submitted = [
        _enroll(world, auth, p, ref, form, ticket=called["number"] if n == 0 else None)
        for n, (p, ref, form) in enumerate(citizens)
    ]
    queue = world.api.get("/api/queue", headers=auth).json()
    (ticket,) = queue["tickets"]
    assert ticket["state"] == "done"
    assert ticket["case_id"] == submitted[0]["case"]["id"]
    hours = world.api.get("/api/queue/throughput", headers=auth).json()
    assert sum(h["served"] for h in hours) == 1
    ids = [s["case"]["id"] for s in submitted]
    first = _wait_cases(world, auth, ids, {"issued"}, 300)
    assert all(c["receipt_number"] for c in first.values())

    # The first citizen comes back as a walk-in under another name: the registry holds it for an
    # adjudicator, who links it to the first enrollment.
    walk_in = stationkit.walk_in_form("Lê Văn Cương", "1985-04-21", "M", "Số 50 phố Phúc Xá")
    duplicate = _enroll(world, auth, 0, None, walk_in)
    dup_id = duplicate["case"]["id"]
    _wait_cases(world, auth, [dup_id], {"adjudication"}, 300)
    stationkit.adjudicate_same(world.registry)
    _wait_cases(world, auth, [dup_id], {"issued"}, 300)
    numbers = {}
    for case_id in [*ids, dup_id]:
        package = world.api.get(f"/api/cases/{case_id}", headers=auth).json()["package_id"]
        issued = world.registry.get(
            f"/v1/packages/{package}/issuance",
            auth=world.runtime.online.identity.auth(),  # type: ignore[union-attr]
        ).json()
        numbers[case_id] = issued["personal_number"]
    assert numbers[dup_id] == numbers[ids[0]]
    assert len({numbers[i] for i in ids}) == 3

    # Cards: a blank card on the encoder for each of the three first citizens.
    assert world.runtime.devices is not None
    bay = world.runtime.devices.card_bay
    assert bay is not None
    for n, case_id in enumerate(ids):
        package = world.api.get(f"/api/cases/{case_id}", headers=auth).json()["package_id"]
        card = bay.card(f"blank-{n}")
        card.insert()
        try:
            r = world.api.post(f"/api/cards/{package}/encode", json={}, headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["card_serial"]
        finally:
            card.remove()
            # The officer hands the card over; the encoder sees the reader empty before
            # the next blank card goes on (pcscd notices a removal on its next poll).
            world.runtime.devices.encoder.wait_for_removal(10)
    final = _wait_cases(world, auth, ids, {"card_encoded"}, 120)
    assert all(c["state"] == "card_encoded" for c in final.values()), final
    jobs = world.api.get("/api/cards", headers=auth).json()
    assert jobs["counts"].get("reported", 0) >= 3, jobs
