"""The technician's side of the station without a registry or devices: removable media as
the station detects them (from its mounts file, under its media folders), the technician
routes behind the technician PIN (the kiosk's pages included), every technician action
journalled with how it ended, and the kiosk's own API calls under the host name the
station is configured with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from station.api import create_app
from station.runtime import StationRuntime
from station.technician import hash_pin, medium_id, removable_media
from station.ui.client import api_host
from tests import stationkit

PIN = "13572468"
ORIGIN = {"origin": "http://testserver"}


def _mount(mounts: Path, device: str, point: Path, fstype: str = "vfat") -> None:
    """One line of a mounts file, escaped as the kernel writes it (a space is \\040)."""
    escaped = str(point).replace(" ", "\\040")
    with mounts.open("a") as fh:
        fh.write(f"{device} {escaped} {fstype} rw,nosuid,nodev 0 0\n")


def _export(medium: Path, station: str, export: str, receipts: bool) -> None:
    folder = medium / "vn-eid" / station / export
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    if receipts:
        (folder / "receipts.cose").write_bytes(b"\xd2")


def test_removable_media_are_what_is_mounted_under_the_media_folders(tmp_path: Path) -> None:
    media, mounts = tmp_path / "media", tmp_path / "mounts"
    stick = media / "DỮ LIỆU 1"  # a Vietnamese label with a space, as udisks mounts it
    other = media / "usb"
    for folder in (stick, other, tmp_path / "media-not", tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
    mounts.write_text("/dev/root / ext4 rw 0 0\nproc /proc proc rw 0 0\n")
    _mount(mounts, "/dev/sdb1", stick)
    _mount(mounts, "/dev/sdc1", other, "exfat")
    _mount(mounts, "/dev/sdd1", tmp_path / "media-not")  # a sibling, not under media/
    _mount(mounts, "/dev/sde1", tmp_path / "elsewhere")
    _mount(mounts, "/dev/sdf1", media / "pulled-out")  # listed, but the folder is gone
    _export(stick, "HN-01", "E1", receipts=True)
    _export(stick, "HN-01", "E2", receipts=False)
    (stick / "vn-eid" / "HN-01" / "half-written").mkdir()  # no manifest: not an export

    found = removable_media([media], mounts)
    assert [m["path"] for m in found] == [str(stick), str(other)]
    first, second = found
    assert (first["device"], first["label"], first["filesystem"]) == (
        "/dev/sdb1",
        "DỮ LIỆU 1",
        "vfat",
    )
    assert first["total_bytes"] >= first["free_bytes"] > 0
    assert [(e["id"], e["receipts"]) for e in first["exports"]] == [
        ("HN-01/E1", True),
        ("HN-01/E2", False),
    ]
    assert second["exports"] == []
    # Ids: the same on every detection, one per medium, and not the path itself.
    assert first["id"] == medium_id("/dev/sdb1", str(stick))
    assert [m["id"] for m in removable_media([media], mounts)] == [first["id"], second["id"]]
    assert first["id"] != second["id"]
    assert str(stick) not in first["id"]
    # Nothing mounted there, or no mounts file at all: nothing detected.
    assert removable_media([tmp_path / "nowhere"], mounts) == []
    assert removable_media([media], tmp_path / "no-such-file") == []


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[TestClient, StationRuntime]]:
    settings = stationkit.station_settings(tmp_path, technician={"pin_hash": hash_pin(PIN)})
    runtime = StationRuntime(settings).start()
    try:
        with TestClient(create_app(runtime)) as client:
            yield client, runtime
    finally:
        runtime.stop()


def _unlock(client: TestClient) -> dict[str, str]:
    return stationkit.technician_headers(client, PIN)


def _journal(runtime: StationRuntime, action: str) -> list[Any]:
    return list(runtime.journal.recent(50, action=action))


@pytest.mark.parametrize(
    ("route", "action"),
    [
        ("/api/technician/sync", "technician.synced"),
        ("/api/technician/uploads/retry", "technician.uploads_retried"),
        ("/api/technician/devices/retry", "technician.devices_retried"),
    ],
)
def test_technician_actions_need_the_pin_and_are_journalled(
    station: tuple[TestClient, StationRuntime], route: str, action: str
) -> None:
    client, runtime = station
    # Nobody, a forged token, an officer's kind of token: refused, nothing done or written.
    for headers in ({}, {"authorization": "Bearer forged"}):
        r = client.post(route, headers=headers)
        assert (r.status_code, r.json()["error"]) == (401, "technician_required")
    assert _journal(runtime, action) == []
    auth = _unlock(client)
    # This bare station can do none of them (not provisioned, no devices): the refusal
    # is answered as usual, and journalled with the technician's session and the error.
    r = client.post(route, headers=auth)
    assert r.status_code == 409, r.text
    [entry] = _journal(runtime, action)
    assert entry.actor == "technician"
    assert entry.detail["outcome"] == "failed"
    assert r.json()["error"] in entry.detail["error"]
    [unlocked] = _journal(runtime, "technician.unlocked")
    assert entry.detail["session"] == unlocked.detail["session"]
    assert auth["authorization"].split()[1] not in str(entry.detail)  # never the token


def test_setup_is_behind_the_technician_pin_and_journalled(
    station: tuple[TestClient, StationRuntime],
) -> None:
    client, runtime = station
    # Not set up: the start, the login and the setup all lead to the technician's PIN.
    for path in ("/", "/login", "/setup"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        assert r.url.path == "/technician/unlock", path
        assert 'id="setup-note"' in r.text
    form = {"registry_url": "http://127.0.0.1:9", "token": "t"}
    r = client.post("/setup", data=form, headers=ORIGIN, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/technician/unlock")
    r = client.post("/setup/sync", headers=ORIGIN, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/technician/unlock")
    assert client.post("/api/technician/provision", json=form).status_code == 401
    assert _journal(runtime, "technician.provisioned") == []

    r = client.post("/technician/unlock", data={"pin": PIN}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/setup")  # what it is for
    client.cookies.set("station_technician", r.cookies["station_technician"])
    assert 'id="registry_url"' in client.get("/setup").text
    # Nothing answers at the address: said on the page, and journalled as failed.
    r = client.post("/setup", data=form, headers=ORIGIN)
    assert 'id="setup-error"' in r.text
    [entry] = _journal(runtime, "technician.provisioned")
    assert (entry.subject, entry.detail["outcome"]) == (form["registry_url"], "failed")
    assert "provisioning_failed" in entry.detail["error"]
    assert not runtime.provisioned


def test_the_kiosk_technician_actions_send_to_the_pin_without_a_session(
    station: tuple[TestClient, StationRuntime],
) -> None:
    client, runtime = station
    for path in ("/technician/sync", "/technician/uploads/retry", "/technician/devices/retry"):
        r = client.post(path, headers=ORIGIN, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/technician/unlock"), path
        # htmx asks: it is told where to go instead.
        r = client.post(path, headers={**ORIGIN, "hx-request": "true"}, follow_redirects=False)
        assert r.headers["hx-redirect"] == "/technician/unlock", path
        # A session that ended (locked, expired) is no better.
        client.cookies.set("station_technician", "ended")
        r = client.post(path, headers=ORIGIN, follow_redirects=False)
        assert r.headers["location"] == "/technician/unlock", path
        client.cookies.clear()
    assert [e.action for e in runtime.journal.recent(50) if e.actor == "technician"] == []
    # The outbox's own Sync now is an officer's button: nobody logged in, the login.
    r = client.post("/outbox/sync", headers=ORIGIN, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=/outbox/sync")


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        (["127.0.0.1", "localhost"], "127.0.0.1"),
        (["station.hn-bd.local"], "station.hn-bd.local"),
        (["*.kiosk.vn", "::1"], "[::1]"),
        (["*.kiosk.vn"], "kiosk.kiosk.vn"),
        (["*"], "localhost"),
    ],
)
def test_the_pages_call_the_api_under_an_allowed_name(allowed: list[str], host: str) -> None:
    assert api_host(allowed) == host


def test_a_station_under_its_own_name_serves_its_pages(tmp_path: Path) -> None:
    """The host check sees the pages' in-process API calls too: a station that answers
    only to its own name must still serve its own pages."""
    settings = stationkit.station_settings(
        tmp_path, service={"allowed_hosts": ["station.hn-bd.local"]}
    )
    runtime = StationRuntime(settings).start()
    try:
        app = create_app(runtime)
        with TestClient(app, base_url="http://station.hn-bd.local") as client:
            r = client.get("/technician/unlock")
            assert r.status_code == 200, r.text
            assert 'id="pin"' in r.text
        with TestClient(app, base_url="http://127.0.0.1") as client:
            assert client.get("/technician/unlock").status_code == 400  # still checked
    finally:
        runtime.stop()


def test_the_technician_screen_shows_on_a_station_not_set_up(
    station: tuple[TestClient, StationRuntime],
) -> None:
    """No identity, no sync yet: dashes and a way to the setup, the SSH panel, no error."""
    client, _ = station
    r = client.post("/technician/unlock", data={"pin": PIN}, follow_redirects=False)
    client.cookies.set("station_technician", r.cookies["station_technician"])
    r = client.get("/technician", follow_redirects=False)
    assert r.status_code == 200, r.text[:500]
    assert "Chưa thiết lập" in r.text  # "Not set up", with a link to the setup
    assert 'href="/setup"' in r.text
    assert 'id="ssh-panel"' in r.text
