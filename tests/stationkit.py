"""The station's side of the world for tests: an office at the registry with operators
(PIN + enrolled finger templates from synthetic prints), a resident list, a station token,
and a station runtime provisioned against it.

Fingers: the scanner simulator renders person ``p``'s finger ``f`` from
``master_finger(seed, p, f)``; an operator enrolled here with ``person=p`` therefore logs
in by presenting finger ``f`` of person ``p`` on a simulator with the same ``seed``.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.iso19794 import encode_minutiae
from biometrics.fingerprint.minutiae import extract_minutiae
from biometrics.fingerprint.synth import impression, master_finger
from biometrics.fingerprint.synth_impression import ImpressionKind, SkinCondition

SIM_SEED = 7
"""The synthetic-finger seed the station tests' scanner simulators use."""
OFFICER = ("canbo.an", "Nguyễn Văn An", 900, "246810")
"""(username, full name, finger person, PIN) of the officer of the test office."""
SUPERVISOR = ("giamsat.binh", "Trần Thị Bình", 901, "135790")

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
    office_name: str = "Công an phường Phúc Xá",
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


__all__ = [
    "OFFICER",
    "RESIDENTS_CSV",
    "SIM_SEED",
    "SUPERVISOR",
    "add_operator",
    "finger_image",
    "finger_template",
    "setup_office",
    "staff",
    "station_settings",
    "station_token",
]


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
