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
from tests import cardkit, processkit, registrykit, stationkit
from tests.imagekit import ensure_face_assets
from tests.registrykit import ADMIN

pytestmark = pytest.mark.skipif(pcscd_unavailable() is not None, reason=str(pcscd_unavailable()))

ADJUDICATOR = ("adjudicator", "adjudicator password 1")
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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    assets = ensure_face_assets()
    tmp = tmp_path_factory.mktemp("e2e")
    port = processkit.free_port()
    env = processkit.registry_env(
        tmp / "registry",
        f"sqlite:///{tmp / 'registry.db'}",
        ADMIN,
        {"REGISTRY_WORKER__IN_PROCESS": "true", "REGISTRY_WORKER__IDLE_POLL_SECONDS": "0.2"},
    )
    (tmp / "registry").mkdir()
    process = processkit.RegistryProcess(
        "registry", ["serve", "--port", str(port)], env, tmp / "registry.log"
    )
    url = f"http://127.0.0.1:{port}"
    with processkit.ProcessSet() as processes:
        processes.add(process).start()
        process.wait_http(f"{url}/readyz", timeout=180)
        with httpx.Client(base_url=url, timeout=60) as registry:
            admin = registrykit.login(registry, *ADMIN)
            registry.post(
                "/v1/users",
                json={"username": ADJUDICATOR[0], "password": ADJUDICATOR[1],
                      "roles": ["adjudicator"]},
                headers=admin,
            ).raise_for_status()  # fmt: skip
            office = stationkit.setup_office(registry, admin, commune_code="00001")
            token = stationkit.station_token(registry, admin, office, STATION_ID)
            settings = stationkit.station_settings(
                tmp / "station",
                open_devices=True,
                background=True,
                scanner={
                    "backend": "simulated",
                    "simulator": {"seed": stationkit.SIM_SEED, "pace": False},
                },
                camera={
                    "backend": "simulated",
                    "seed": 0,
                    "assets": assets,
                    "scene_script": ["walk_in:1", "good:600"],
                },
                card={"backend": "simulated"},
                uploader={"status_poll_s": 0.5, "idle_wait_s": 1.0},
                cards={"sync_interval_s": 1.0},
            )
            # The test process's one pcscd (the PC/SC client keeps the first it talks to).
            runtime = StationRuntime(settings, pcscd=cardkit.shared_pcscd()).start()
            try:
                assert runtime.devices is not None
                board = {c["name"]: c for c in runtime.devices.board.as_json()}
                assert all(board[n]["ok"] for n in ("fingerprint", "camera", "card_encoder")), board
                with TestClient(create_app(runtime)) as api:
                    r = api.post("/api/provision", json={"registry_url": url, "token": token})
                    assert r.status_code == 201, r.text
                    assert api.post("/api/sync").status_code == 200
                    camera = CameraControl(runtime.devices.camera_control_path)
                    yield World(url, registry, admin, runtime, api, camera)
            finally:
                runtime.stop()


def _scanner(world: World) -> Any:
    assert world.runtime.devices is not None
    sim = world.runtime.devices.scanner_simulator
    assert sim is not None
    return sim.control


def _login(world: World, who: tuple[str, str, int, str]) -> dict[str, str]:
    r = world.api.post("/api/login/secret", json={"operator_id": who[0], "pin": who[3]})
    assert r.status_code == 200, r.text
    _scanner(world).present(finger=2, person=who[2])
    r = world.api.post("/api/login/finger", json={"challenge": r.json()["challenge"]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _enroll(
    world: World,
    auth: dict[str, str],
    person: int,
    resident_ref: str | None,
    form: dict[str, Any],
    ticket: str | None = None,
) -> dict[str, Any]:
    api = world.api
    r = api.post("/api/cases", json={"resident_ref": resident_ref, "ticket": ticket}, headers=auth)
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    proposal = api.get(f"/api/cases/{case_id}/proposal", headers=auth).json() or {}
    r = api.put(f"/api/cases/{case_id}/demographics", json={**proposal, **form}, headers=auth)
    assert r.status_code == 200, r.text
    assert api.post(f"/api/cases/{case_id}/consent", headers=auth).status_code == 200

    world.camera.sit(person, ["walk_in:1", "good:600"])
    r = api.post(f"/api/cases/{case_id}/face/start", json={"timeout_s": 60}, headers=auth)
    assert r.status_code == 202, r.text
    face: dict[str, Any] = {}
    for _ in range(20):
        face = api.get(f"/api/cases/{case_id}/face", params={"wait_s": 5}, headers=auth).json()
        if face["state"] != "running":
            break
    assert face["state"] == "stored", face

    scanner = _scanner(world)
    for position in range(1, 11):
        outcome: dict[str, Any] = {}
        for _attempt in range(3):
            scanner.present(finger=position, person=person)
            r = api.post(f"/api/cases/{case_id}/fingers/{position}/roll", json={}, headers=auth)
            assert r.status_code == 200, r.text
            outcome = r.json()
            if outcome["done"]:
                break
        assert outcome["stored"], outcome
        assert not outcome.get("hand_warnings"), outcome

    review = api.get(f"/api/cases/{case_id}/review", headers=auth).json()
    if review["needs_approval"]:
        scanner.present(finger=2, person=SUPERVISOR[2])
        r = api.post(
            f"/api/cases/{case_id}/approve",
            json={"supervisor_id": SUPERVISOR[0], "pin": SUPERVISOR[3],
                  "items": [i["code"] for i in review["needs_approval"]]},
            headers=auth,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        review = api.get(f"/api/cases/{case_id}/review", headers=auth).json()
    assert review["can_submit"], review
    r = api.post(f"/api/cases/{case_id}/submit", headers=auth)
    assert r.status_code == 200, r.text
    submitted: dict[str, Any] = r.json()
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
    area = {"province_code": "01", "district_code": "001", "commune_code": "00001"}
    walk_in = {
        "full_name": "Lê Văn Cương",
        "date_of_birth": "1985-04-21",
        "sex": "M",
        "ethnicity": "01",
        "place_of_origin": {"areas": [area]},
        "permanent_residence": {"detail": "Số 50 phố Phúc Xá", "areas": [area]},
    }
    duplicate = _enroll(world, auth, 0, None, walk_in)
    dup_id = duplicate["case"]["id"]
    _wait_cases(world, auth, [dup_id], {"adjudication"}, 300)
    adjudicator = registrykit.login(world.registry, *ADJUDICATOR)
    cases = world.registry.get("/v1/cases", headers=adjudicator).json()
    assert len(cases) == 1, cases
    view = world.registry.get(f"/v1/cases/{cases[0]['id']}", headers=adjudicator).json()
    best = view["candidates"][0]
    r = world.registry.post(
        f"/v1/cases/{cases[0]['id']}/decision",
        json={"decision": "same", "person_id": best["person_id"], "reason": "same fingers"},
        headers=adjudicator,
    )
    assert r.status_code == 200, r.text
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
