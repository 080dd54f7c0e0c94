"""SSH access from the technician screen, through the station's API and its kiosk pages
(no systemd: root's side is called as a function on the same folders, as
vn-eid-ssh.service would run it): behind the technician session, keys only from a stick
the station detected, clear refusals, every request journalled, root's answer shown."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from station import ssh_access
from station.api import create_app
from station.runtime import StationRuntime
from station.technician import hash_pin, medium_id
from tests import stationkit

PIN = "13572468"
_key = stationkit.ssh_public_key
ORIGIN = {"origin": "http://testserver"}


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[TestClient, StationRuntime, Path]]:
    ssh = {
        "status_file": tmp_path / "run-vn-eid-ssh" / "status.json",
        "authorized_keys": tmp_path / "ssh" / "authorized_keys",
    }
    (tmp_path / "ssh").mkdir(mode=0o700)
    settings = stationkit.station_settings(
        tmp_path, technician={"pin_hash": hash_pin(PIN)}, ssh=ssh
    )
    runtime = StationRuntime(settings).start()
    try:
        with TestClient(create_app(runtime)) as client:
            yield client, runtime, tmp_path
    finally:
        runtime.stop()


def _stick(tmp: Path, name: str, keys: str | None) -> str:
    """A USB stick "mounted" under the station's media folder; its id."""
    point = tmp / "media" / name
    point.mkdir(parents=True)
    if keys is not None:
        (point / "vn-eid-ssh").mkdir()
        (point / "vn-eid-ssh" / "authorized_keys").write_text(keys)
    device = f"/dev/sd{name}1"
    with (tmp / "mounts").open("a") as fh:
        fh.write(f"{device} {point} vfat rw 0 0\n")
    return medium_id(device, str(point))


def _unlock(client: TestClient) -> dict[str, str]:
    r = client.post("/api/technician/unlock", json={"pin": PIN})
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


def _root(runtime: StationRuntime) -> None:
    """Root's side on the station's own paths, the commands recorded."""
    settings = runtime.settings
    paths = ssh_access.SshPaths(
        request=settings.ssh.request_path(settings.run_dir),
        status=settings.ssh.status_file,
        authorized_keys=settings.ssh.authorized_keys,
        owner_uid=os.getuid(),
    )
    ssh_access.apply(
        paths, settings.technician.pin_hash, run=lambda _command: 0, end_sessions=lambda: 0
    )


def _journal(runtime: StationRuntime, action: str) -> list[Any]:
    return list(runtime.journal.recent(50, action=action))


def test_ssh_routes_need_the_technician(station: tuple[TestClient, StationRuntime, Path]) -> None:
    client, runtime, tmp = station
    medium = _stick(tmp, "b", _key("k"))
    for headers in ({}, {"authorization": "Bearer forged"}):
        assert client.get("/api/technician/ssh", headers=headers).status_code == 401
        r = client.post("/api/technician/ssh/on", json={"medium": medium, "pin": PIN},
                        headers=headers)  # fmt: skip
        assert (r.status_code, r.json()["error"]) == (401, "technician_required")
        r = client.post("/api/technician/ssh/off", json={"pin": PIN}, headers=headers)
        assert r.status_code == 401
    assert not runtime.settings.ssh.request_path(runtime.settings.run_dir).exists()
    # The kiosk's pages send to the PIN.
    r = client.post("/technician/ssh/on", data={"medium": medium, "pin": PIN}, headers=ORIGIN,
                    follow_redirects=False)  # fmt: skip
    assert (r.status_code, r.headers["location"]) == (303, "/technician/unlock")


def test_keys_from_a_detected_stick_only_with_clear_refusals(
    station: tuple[TestClient, StationRuntime, Path],
) -> None:
    client, runtime, tmp = station
    auth = _unlock(client)
    request_file = runtime.settings.ssh.request_path(runtime.settings.run_dir)

    def on(medium: str) -> Any:
        return client.post(
            "/api/technician/ssh/on", json={"medium": medium, "pin": PIN}, headers=auth
        )

    # No stick at all.
    r = on("0123456789ab")
    assert (r.status_code, r.json()["error"]) == (409, "medium_not_detected")
    # A stick without the key file; one with a bad file.
    empty = _stick(tmp, "c", None)
    r = on(empty)
    assert (r.status_code, r.json()["error"]) == (409, "ssh_keys_missing")
    assert "vn-eid-ssh/authorized_keys" in r.json()["detail"]
    bad = _stick(tmp, "d", f'{_key("ok")}\ncommand="sh" {_key("x")}\nssh-dss AAAA\n')
    r = on(bad)
    assert (r.status_code, r.json()["error"]) == (422, "ssh_keys_refused")
    assert [p.split(":")[0] for p in r.json()["details"]["problems"]] == ["line 2", "line 3"]
    # A path instead of a medium's id is no medium.
    r = client.post("/api/technician/ssh/on", headers=auth,
                    json={"medium": empty, "pin": PIN, "path": str(tmp)})  # fmt: skip
    assert r.status_code == 422
    assert not request_file.exists()
    failed = _journal(runtime, "technician.ssh_on_requested")
    assert [e.detail["outcome"] for e in failed] == ["failed"] * 3

    # The panel's facts: off (root has said nothing), the sticks, which hold keys.
    good = _stick(tmp, "e", f"# tech\n{_key('tech@laptop')}\n")
    info = client.get("/api/technician/ssh", headers=auth).json()
    assert (info["status"], info["pending"], info["hours"]) == (None, False, 8)
    assert {m["id"]: m["keys"] for m in info["media"]} == {empty: False, bad: True, good: True}

    r = on(good)
    assert r.status_code == 202, r.text
    asked = r.json()
    [key] = asked["keys"]
    assert key["comment"] == "tech@laptop"
    request = json.loads(request_file.read_text())
    assert (request["id"], request["action"], request["hours"], request["pin"]) == (
        asked["request_id"],
        "on",
        8,
        PIN,
    )
    assert request_file.stat().st_mode & 0o777 == 0o600
    [entry] = [e for e in _journal(runtime, "technician.ssh_on_requested")
               if e.detail["outcome"] == "ok"]  # fmt: skip
    assert entry.detail["fingerprints"] == [key["fingerprint"]]
    assert PIN not in json.dumps(entry.detail)  # the journal never holds the PIN
    assert client.get("/api/technician/ssh", headers=auth).json()["pending"] is True

    # Root carries it out; the panel shows the truth.
    _root(runtime)
    info = client.get("/api/technician/ssh", headers=auth).json()
    assert info["pending"] is False
    assert info["status"]["state"] == "on"
    assert info["status"]["last"]["request_id"] == asked["request_id"]
    assert [k["fingerprint"] for k in info["status"]["keys"]] == [key["fingerprint"]]
    client.cookies.set("station_technician", auth["authorization"].split()[1])
    panel = client.get("/technician/ssh").text
    assert 'id="ssh-panel"' in panel
    assert key["fingerprint"] in panel
    assert 'id="ssh-refused"' not in panel

    # Off, with a wrong PIN: the station refuses it itself (counted towards the technician
    # lockout), nothing is asked of root, and SSH stays on.
    r = client.post("/api/technician/ssh/off", json={"pin": "99999999"}, headers=auth | ORIGIN)
    assert (r.status_code, r.json()["error"]) == (401, "technician_pin_wrong")
    assert r.json()["details"]["tries_left"] == runtime.settings.technician.max_failures - 1
    assert not request_file.exists()
    assert runtime.settings.ssh.authorized_keys.read_text() != ""  # still on
    # Root still checks on its own: a request carrying a wrong PIN (written by anyone who
    # is the station's user) is refused there and said on the panel.
    ssh_access.write_request(
        request_file,
        ssh_access.SshRequest.new("off", [], ssh_access.HOURS, "99999999", runtime.clock()),
    )
    _root(runtime)
    panel = client.get("/technician/ssh").text
    assert 'id="ssh-refused"' in panel
    assert "mã PIN kỹ thuật viên sai" in panel  # the kiosk speaks Vietnamese
    assert runtime.settings.ssh.authorized_keys.read_text() != ""  # still on
    r = client.post("/api/technician/ssh/off", json={"pin": PIN}, headers=auth | ORIGIN)
    assert r.status_code == 202
    [off] = [e for e in _journal(runtime, "technician.ssh_off_requested")
             if e.detail["outcome"] == "ok"]  # fmt: skip
    assert off.detail["request_id"] == r.json()["request_id"]


def test_the_kiosk_panel_asks_and_shows(station: tuple[TestClient, StationRuntime, Path]) -> None:
    client, runtime, tmp = station
    r = client.post("/technician/unlock", data={"pin": PIN}, follow_redirects=False)
    client.cookies.set("station_technician", r.cookies["station_technician"])
    panel = client.get("/technician/ssh").text
    assert 'id="ssh-no-stick"' in panel
    medium = _stick(tmp, "f", _key("a") + "\n" + _key("b") + "\n")
    htmx = {**ORIGIN, "hx-request": "true"}
    r = client.post("/technician/ssh/on", data={"medium": medium, "pin": ""}, headers=htmx)
    assert 'id="ssh-error"' in r.text  # no PIN typed: nothing asked
    assert not runtime.settings.ssh.request_path(runtime.settings.run_dir).exists()
    r = client.post("/technician/ssh/on", data={"medium": medium, "pin": "99999999"}, headers=htmx)
    assert 'id="ssh-error"' in r.text  # a wrong PIN: said on the panel, nothing asked
    assert "Sai mã PIN kỹ thuật viên. Hãy thử lại." in r.text
    assert not runtime.settings.ssh.request_path(runtime.settings.run_dir).exists()
    r = client.post("/technician/ssh/on", data={"medium": medium, "pin": PIN}, headers=htmx)
    assert 'id="ssh-message"' in r.text
    assert 'hx-trigger="every 2s"' in r.text  # waiting for root: the panel asks again
    _root(runtime)
    panel = client.get("/technician/ssh", headers=htmx).text
    assert 'id="ssh-pending"' not in panel
    assert 'id="ssh-keys"' in panel
    bad = _stick(tmp, "g", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7\n")
    r = client.post("/technician/ssh/on", data={"medium": bad, "pin": PIN}, headers=htmx)
    assert 'id="ssh-error"' in r.text
    assert "line 1" in r.text
