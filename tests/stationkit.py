"""The station's side of the world for tests: an office at the registry with operators
(PIN + enrolled finger templates from synthetic prints), a resident list, a station token,
and a station runtime provisioned against it (:func:`world`: a registry process and a
station on the simulators, as the end-to-end and kiosk tests use); an enrollment driven
through the station's JSON API (:func:`open_case`, :func:`capture_face`,
:func:`capture_fingers`, :func:`submit`).

Fingers: the scanner simulator renders person ``p``'s finger ``f`` from
``master_finger(seed, p, f)``; an operator enrolled here with ``person=p`` therefore logs
in by presenting finger ``f`` of person ``p`` on a simulator with the same ``seed``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from numpy.typing import NDArray

from biometrics.fingerprint.iso19794 import encode_minutiae
from biometrics.fingerprint.minutiae import extract_minutiae
from biometrics.fingerprint.synth import impression, master_finger
from biometrics.fingerprint.synth_impression import ImpressionKind, SkinCondition

if TYPE_CHECKING:
    from station.runtime import StationRuntime

SIM_SEED = 7
"""The synthetic-finger seed the station tests' scanner simulators use."""
OFFICER = ("canbo.an", "Nguyễn Văn An", 900, "246810")
"""(username, full name, finger person, PIN) of the officer of the test office."""
SUPERVISOR = ("giamsat.binh", "Trần Thị Bình", 901, "135790")

OFFICE_NAME = "Công an phường Phúc Xá"
"""The test office's name (:func:`setup_office`)."""

RESIDENTS_CSV = "\n".join(
    [
        "ref,full_name,date_of_birth,sex,old_id_number,household_number,father_name,"
        "mother_name,residence_detail,origin_commune,origin_detail",
        "DC01-0001,Lê Văn Cường,1985-04-12,male,012345678,HK-101,Lê Văn Dũng,Phạm Thị Em,"
        "Số 5 phố Phúc Xá,00001,",
        "DC01-0002,Phạm Thị Hoa,1992-11-03,female,023456789,HK-102,,,Số 7 phố Phúc Xá,00004,",
        "DC01-0003,Đỗ Minh Khôi,2015-06-30,male,,HK-103,,,Số 9 phố Phúc Xá,00001,",
        "DC01-0004,Vũ Thị Lan,1978,female,034567890,HK-104,,,Ngõ 12 phố Phúc Xá,00001,",
        "",
    ]
)


@functools.cache
def finger_image(
    person: int, finger: int, index: int = 0, kind: ImpressionKind = ImpressionKind.ROLLED
) -> NDArray[np.uint8]:
    master = master_finger(SIM_SEED, person, finger)
    shot = impression(
        master, SIM_SEED, person, finger, index, kind,
        condition=SkinCondition.NORMAL, partial=False,
    )  # fmt: skip
    return shot.image


@functools.cache
def finger_template(person: int, finger: int, index: int = 0) -> bytes:
    """ISO/IEC 19794-2 record of a rolled impression (what an operator enrolls)."""
    return encode_minutiae(extract_minutiae(finger_image(person, finger, index)), position=finger)


def add_operator(
    client: Any,
    admin: dict[str, str],
    office_id: int,
    who: tuple[str, str, int, str],
    role: str,
    fingers: tuple[int, ...] = (2, 7),
) -> None:
    username, full_name, person, pin = who
    r = client.post(
        "/v1/operators",
        json={"office_id": office_id, "username": username, "full_name": full_name, "role": role},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    body = {
        "pin": pin,
        "fingers": [
            {"position": f, "template": base64.b64encode(finger_template(person, f)).decode()}
            for f in fingers
        ],
    }
    r = client.put(f"/v1/operators/{username}/credentials", json=body, headers=admin)
    assert r.status_code == 200, r.text


def staff(commune_code: str) -> tuple[tuple[str, str, int, str], tuple[str, str, int, str]]:
    """The officer and supervisor of the office of ``commune_code`` (usernames are unique
    across the registry, so each office's carry its commune code)."""
    return (
        (f"{OFFICER[0]}.{commune_code}", *OFFICER[1:]),
        (f"{SUPERVISOR[0]}.{commune_code}", *SUPERVISOR[1:]),
    )


def setup_office(
    client: Any,
    admin: dict[str, str],
    *,
    commune_code: str = "00001",
    residents_csv: str = RESIDENTS_CSV,
    office_name: str = OFFICE_NAME,
) -> int:
    """An office with an officer and a supervisor (:func:`staff`) and the commune's
    resident list."""
    r = client.post(
        "/v1/offices", json={"name": office_name, "commune_code": commune_code}, headers=admin
    )
    assert r.status_code == 201, r.text
    office = int(r.json()["id"])
    officer, supervisor = staff(commune_code)
    add_operator(client, admin, office, officer, "officer")
    add_operator(client, admin, office, supervisor, "supervisor")
    r = client.post(
        f"/v1/offices/{office}/residents",
        content=residents_csv.encode(),
        headers={**admin, "content-type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    return office


def station_token(client: Any, admin: dict[str, str], office_id: int, station_id: str) -> str:
    r = client.post(
        "/v1/stations", json={"station_id": station_id, "office_id": office_id}, headers=admin
    )
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/stations/{station_id}/tokens", json={}, headers=admin)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def station_settings(tmp: Path, **overrides: Any) -> Any:
    """Settings of a station living under ``tmp``, without devices or background threads
    unless asked."""
    from station.config import StationSettings

    values: dict[str, Any] = {
        "station_id": "TEST",
        "run_dir": tmp / "run",
        "state_dir": tmp / "state",
        "open_devices": False,
        "background": False,
        "image_version_file": tmp / "image-version",
        "min_free_disk_mb": 16,
        # TestClient calls itself "testserver".
        "service": {"allowed_hosts": ["127.0.0.1", "localhost", "testserver"]},
        # Removable media: only what a test "mounts" (a line in its own mounts file),
        # never the machine's own USB sticks.
        "media": {"roots": [tmp / "media"], "mounts": tmp / "mounts"},
    }
    values.update(overrides)
    return StationSettings(**values)


def camera_only_devices(tmp: Path) -> dict[str, Any]:
    """Device settings for a station with only its simulated camera (a setup, a scan): no
    scanner answers and no card reader matches."""
    from tests.imagekit import ensure_face_assets

    return {
        "open_devices": True,
        "camera": {
            "backend": "simulated",
            "seed": 0,
            "assets": ensure_face_assets(),
            "scene_script": FACE_SCRIPT,
        },
        "scanner": {"backend": "serial", "port": str(tmp / "no-scanner")},
        "card": {"backend": "pcsc", "encoder": {"reader_pattern": "^no such reader$"}},
    }


def ssh_public_key(comment: str) -> str:
    """A new ed25519 public key as a line of an authorized_keys file."""
    line = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return f"{line.decode()} {comment}"


def technician_headers(client: Any, pin: str) -> dict[str, str]:
    """Unlock the technician screens with ``pin``: the bearer header of that session."""
    r = client.post("/api/technician/unlock", json={"pin": pin})
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


def station_env(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``python -m station serve`` process living under ``tmp``:
    simulated scanner (unpaced), camera and card bay; the caller's own ``STATION_*``
    variables are dropped so nothing of the developer's configuration leaks in."""
    import os

    from tests.imagekit import ensure_face_assets

    env = {k: v for k, v in os.environ.items() if not k.startswith("STATION_")}
    env.update(
        {
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "STATION_STATE_DIR": str(tmp / "state"),
            "STATION_RUN_DIR": str(tmp / "run"),
            "STATION_IMAGE_VERSION_FILE": str(tmp / "image-version"),
            "STATION_MIN_FREE_DISK_MB": "16",
            "STATION_SCANNER__BACKEND": "simulated",
            "STATION_SCANNER__SIMULATOR__SEED": str(SIM_SEED),
            "STATION_SCANNER__SIMULATOR__PACE": "false",
            "STATION_CAMERA__BACKEND": "simulated",
            "STATION_CAMERA__SEED": "0",
            "STATION_CAMERA__ASSETS": str(ensure_face_assets()),
            "STATION_CAMERA__SCENE_SCRIPT": '["walk_in:1", "good:600"]',
            "STATION_CARD__BACKEND": "simulated",
            "STATION_UPLOADER__STATUS_POLL_S": "0.5",
            "STATION_UPLOADER__IDLE_WAIT_S": "1",
        }
    )
    env.update(extra or {})
    return env


class StationProcess:
    """``python -m station serve`` as a child process in its own session: :meth:`kill`
    SIGKILLs the whole session (the service, its scanner simulator and private pcscd), as
    a power cut would."""

    def __init__(self, env: dict[str, str], log: Path, port: int) -> None:
        self.env = env
        self.log = log
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: Any = None
        self.started: list[int] = []

    def start(self) -> StationProcess:
        import subprocess
        import sys

        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "station", "serve", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(self.process.pid)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 120.0) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"the station exited while starting:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/api/status", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the station was not ready in {timeout} s:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole session and reap the service."""
        import contextlib
        import os
        import signal

        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout``."""
        import contextlib
        import os
        import signal
        import subprocess

        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


# --- A whole world: a registry process and a station runtime on the simulators -------------

ADJUDICATOR = ("adjudicator", "adjudicator password 1")
"""The registry's adjudicator (username, password) in :func:`world`."""
FACE_SCRIPT = ["walk_in:1", "good:600"]
"""A citizen who sits down and holds a good pose: the camera simulator's script."""


@dataclass
class Registry:
    """A ``python -m central serve`` process (its pipeline in-process) and an admin's
    client; :meth:`restart` brings it back on the same state with other settings."""

    url: str
    client: httpx.Client
    admin: dict[str, str]
    process: Any
    """The :class:`tests.processkit.RegistryProcess`."""
    env: dict[str, str]
    """The environment it first started with (what :meth:`restart` goes back to)."""

    def restart(self, extra: Mapping[str, str] | None = None) -> None:
        """Stop the registry (SIGTERM: jobs in flight finish or go back to the queue) and
        start it on the same database with ``extra`` over its first environment (none:
        the first settings again), as an operator changing its configuration would."""
        process = self.process
        if process.process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.process.wait(30)
        process.kill()
        process.env = {**self.env, **(extra or {})}
        process.start()
        process.wait_http(f"{self.url}/readyz", timeout=180)


@dataclass
class World:
    """A registry, an office with its staff and resident list, and a started station
    runtime (devices simulated, background threads on) holding a one-time station token;
    the caller serves the station's API and provisions it (:func:`provision`)."""

    registry: Registry
    runtime: StationRuntime
    token: str


@contextlib.contextmanager
def registry(tmp: Path) -> Iterator[Registry]:
    """A registry process under ``tmp`` on SQLite, with an administrator and an
    adjudicator; killed on exit."""
    from tests import processkit, registrykit

    port = processkit.free_port()
    env = processkit.registry_env(
        tmp / "registry",
        f"sqlite:///{tmp / 'registry.db'}",
        registrykit.ADMIN,
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
        with httpx.Client(base_url=url, timeout=60) as client:
            admin = registrykit.login(client, *registrykit.ADMIN)
            client.post(
                "/v1/users",
                json={"username": ADJUDICATOR[0], "password": ADJUDICATOR[1],
                      "roles": ["adjudicator"]},
                headers=admin,
            ).raise_for_status()  # fmt: skip
            yield Registry(url, client, admin, process, env)


def simulated_station_settings(tmp: Path, **overrides: Any) -> Any:
    """:func:`station_settings` with every device simulated (the scanner unpaced, the
    camera on the face assets, a card bay) and the background threads on, polling fast."""
    from tests.imagekit import ensure_face_assets

    values: dict[str, Any] = {
        "open_devices": True,
        "background": True,
        "scanner": {"backend": "simulated", "simulator": {"seed": SIM_SEED, "pace": False}},
        "camera": {
            "backend": "simulated",
            "seed": 0,
            "assets": ensure_face_assets(),
            "scene_script": FACE_SCRIPT,
        },
        "card": {"backend": "simulated"},
        "uploader": {"status_poll_s": 0.5, "idle_wait_s": 1.0},
        "cards": {"sync_interval_s": 1.0},
    }
    values.update(overrides)
    return station_settings(tmp, **values)


@contextlib.contextmanager
def world(tmp: Path, station_id: str, **station: Any) -> Iterator[World]:
    """:func:`registry`, the office of commune 00001 (:func:`setup_office`), a token for
    ``station_id`` and a station runtime (:func:`simulated_station_settings` with
    ``station`` over them) on the test process's one pcscd; all stopped on exit."""
    from station.runtime import StationRuntime
    from tests import cardkit

    with registry(tmp) as central:
        office = setup_office(central.client, central.admin, commune_code="00001")
        token = station_token(central.client, central.admin, office, station_id)
        settings = simulated_station_settings(tmp / "station", **station)
        # The PC/SC client library keeps the first pcscd it talks to: one per process.
        runtime = StationRuntime(settings, pcscd=cardkit.shared_pcscd()).start()
        try:
            assert runtime.devices is not None
            yield World(central, runtime, token)
        finally:
            runtime.stop()


def adjudicate_same(client: httpx.Client, package_id: str | None = None) -> None:
    """As the registry's adjudicator: the case held for the package ``package_id`` (none:
    the only case held) is the same person as its best candidate."""
    import uuid

    from tests import registrykit

    adjudicator = registrykit.login(client, *ADJUDICATOR)
    cases = client.get("/v1/cases", headers=adjudicator).json()
    if package_id is not None:
        cases = [c for c in cases if uuid.UUID(c["package_id"]) == uuid.UUID(package_id)]
    (held,) = cases
    view = client.get(f"/v1/cases/{held['id']}", headers=adjudicator).json()
    best = view["candidates"][0]
    r = client.post(
        f"/v1/cases/{held['id']}/decision",
        json={"decision": "same", "person_id": best["person_id"], "reason": "same fingers"},
        headers=adjudicator,
    )
    assert r.status_code == 200, r.text


def scanner_control(runtime: StationRuntime) -> Any:
    """The control of a runtime's scanner simulator: ``present(finger=, person=)`` lays
    a finger on the platen."""
    assert runtime.devices is not None
    sim = runtime.devices.scanner_simulator
    assert sim is not None
    return sim.control


def provision(station: httpx.Client, world: World) -> None:
    """Provision the station served at ``station`` with the world's token, then sync
    (the office's operators and resident list arrive)."""
    r = station.post(
        "/api/provision", json={"registry_url": world.registry.url, "token": world.token}
    )
    assert r.status_code == 201, r.text
    assert station.post("/api/sync").status_code == 200


# --- An enrollment through the station's JSON API -------------------------------------------
# ``api`` is an httpx client of the station (a TestClient is one); ``headers`` carry the
# bearer token where the client does not.

Headers = Mapping[str, str] | None


def walk_in_form(full_name: str, date_of_birth: str, sex: str, detail: str) -> dict[str, Any]:
    """The demographics of a citizen not on the resident list: Kinh, from and living in
    the test office's commune (00001), at ``detail``."""
    area = {"province_code": "01", "district_code": "001", "commune_code": "00001"}
    return {
        "full_name": full_name,
        "date_of_birth": date_of_birth,
        "sex": sex,
        "ethnicity": "01",
        "place_of_origin": {"areas": [area]},
        "permanent_residence": {"detail": detail, "areas": [area]},
    }


def api_login(api: httpx.Client, scanner: Any, who: tuple[str, str, int, str]) -> str:
    """Log ``who`` in (PIN, then their finger on the scanner simulator ``scanner``); the
    session token. One officer has one session: this ends any other of theirs."""
    r = api.post("/api/login/secret", json={"operator_id": who[0], "pin": who[3]})
    assert r.status_code == 200, r.text
    scanner.present(finger=2, person=who[2])
    r = api.post("/api/login/finger", json={"challenge": r.json()["challenge"]})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def open_case(
    api: httpx.Client,
    form: Mapping[str, Any] | None = None,
    *,
    resident_ref: str | None = None,
    ticket: str | None = None,
    headers: Headers = None,
) -> str:
    """A new case with its demographics (the resident list's proposal, ``form`` over it)
    saved and consent given; its id."""
    body = {"resident_ref": resident_ref, "ticket": ticket}
    r = api.post("/api/cases", json=body, headers=headers)
    assert r.status_code == 201, r.text
    case_id = str(r.json()["id"])
    proposal = api.get(f"/api/cases/{case_id}/proposal", headers=headers).json() or {}
    r = api.put(
        f"/api/cases/{case_id}/demographics", json={**proposal, **(form or {})}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert api.post(f"/api/cases/{case_id}/consent", headers=headers).status_code == 200
    return case_id


def capture_face(
    api: httpx.Client, camera: Any, case_id: str, person: int, headers: Headers = None
) -> None:
    """``person`` sits in front of the camera simulator (``camera``: its control) and
    the portrait is taken and stored."""
    camera.sit(person, FACE_SCRIPT)
    r = api.post(f"/api/cases/{case_id}/face/start", json={"timeout_s": 60}, headers=headers)
    assert r.status_code == 202, r.text
    face: dict[str, Any] = {}
    for _ in range(20):
        face = api.get(f"/api/cases/{case_id}/face", params={"wait_s": 5}, headers=headers).json()
        if face["state"] != "running":
            break
    assert face["state"] == "stored", face


def capture_fingers(
    api: httpx.Client,
    scanner: Any,
    case_id: str,
    person: int,
    *,
    bandaged: int | None = None,
    headers: Headers = None,
) -> list[dict[str, Any]]:
    """Ten fingers of ``person`` rolled on the scanner simulator, each up to three times
    until the station is done with it (finger ``bandaged``: an exception instead); the
    last roll's outcome of each rolled finger."""
    outcomes: list[dict[str, Any]] = []
    for position in range(1, 11):
        if position == bandaged:
            r = api.post(
                f"/api/cases/{case_id}/fingers/{position}/exception",
                json={"code": "bandaged", "reason": "burn"},
                headers=headers,
            )
            assert r.status_code == 200, r.text
            continue
        outcome: dict[str, Any] = {}
        for _attempt in range(3):
            scanner.present(finger=position, person=person)
            url = f"/api/cases/{case_id}/fingers/{position}/roll"
            r = api.post(url, json={}, headers=headers)
            assert r.status_code == 200, r.text
            outcome = r.json()
            if outcome["done"]:
                break
        assert outcome["stored"], outcome
        outcomes.append(outcome)
    return outcomes


def submit(
    api: httpx.Client,
    case_id: str,
    *,
    supervisor: tuple[str, str, int, str] | None = None,
    scanner: Any = None,
    headers: Headers = None,
) -> dict[str, Any]:
    """Submit the case; with ``supervisor`` (and the ``scanner`` simulator for their
    finger), what waits for approval is approved first. The station's answer."""
    review = api.get(f"/api/cases/{case_id}/review", headers=headers).json()
    if review["needs_approval"] and supervisor is not None:
        scanner.present(finger=2, person=supervisor[2])
        r = api.post(
            f"/api/cases/{case_id}/approve",
            json={"supervisor_id": supervisor[0], "pin": supervisor[3],
                  "items": [i["code"] for i in review["needs_approval"]]},
            headers=headers,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        review = api.get(f"/api/cases/{case_id}/review", headers=headers).json()
    assert review["can_submit"], review
    r = api.post(f"/api/cases/{case_id}/submit", headers=headers)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


__all__ = [
    "ADJUDICATOR",
    "FACE_SCRIPT",
    "OFFICER",
    "OFFICE_NAME",
    "RESIDENTS_CSV",
    "SIM_SEED",
    "SUPERVISOR",
    "Registry",
    "StationProcess",
    "World",
    "add_operator",
    "adjudicate_same",
    "api_login",
    "capture_face",
    "capture_fingers",
    "finger_image",
    "finger_template",
    "open_case",
    "provision",
    "registry",
    "scanner_control",
    "setup_office",
    "simulated_station_settings",
    "staff",
    "station_env",
    "station_settings",
    "station_token",
    "submit",
    "walk_in_form",
    "world",
]
