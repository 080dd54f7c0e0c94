"""The station service's API edges, without a registry or devices: who may call it (host
names, origins, sessions), error shapes, and the start-up checks that keep a damaged
station usable enough to say what is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from station.api import create_app
from station.heartbeat import Heartbeat, HeartbeatSources
from station.runtime import StationRuntime
from tests import stationkit


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    runtime = StationRuntime(stationkit.station_settings(tmp_path)).start()
    try:
        with TestClient(create_app(runtime)) as client:
            yield client
    finally:
        runtime.stop()


def test_only_the_stations_own_names_and_pages_are_served(api: TestClient) -> None:
    assert api.get("/api/status").status_code == 200
    # DNS rebinding: another site's name pointed at 127.0.0.1.
    rebound = api.get("/api/status", headers={"host": "rebind.evil.example"})
    assert rebound.status_code == 400
    # A page of another site may not change anything.
    forged = api.post(
        "/api/provision",
        json={"registry_url": "http://evil.example", "token": "x"},
        headers={"origin": "http://evil.example"},
    )
    assert forged.status_code == 403
    assert forged.json()["error"] == "foreign_origin"
    own = api.post("/api/sync", headers={"origin": "http://testserver"})
    assert own.status_code == 409  # let through: refused for its own reason
    assert own.json()["error"] == "not_provisioned"
    # Another program's page on the same machine is another site (cookies do not tell
    # ports apart): refused, as is a browser request with cookies that hides its origin.
    other_port = api.post("/api/sync", headers={"origin": "http://127.0.0.1:8080"})
    assert (other_port.status_code, other_port.json()["error"]) == (403, "foreign_origin")
    api.cookies.set("station_session", "whatever")
    hidden = api.post("/api/sync")
    assert (hidden.status_code, hidden.json()["error"]) == (403, "foreign_origin")
    api.cookies.clear()


def test_the_session_cookie_only_reads(api: TestClient) -> None:
    """The kiosk's cookie stands in for the bearer header on reads (images, the preview
    socket); what changes something needs the header, so a cookie alone changes nothing."""
    r = api.post(
        "/api/cases",
        json={},
        headers={"origin": "http://testserver"},
        cookies={"station_session": "forged"},
    )
    assert (r.status_code, r.json()["error"]) == (401, "login_required")
    r = api.get("/api/cases", cookies={"station_session": "forged"})
    assert (r.status_code, r.json()["error"]) == (401, "session_expired")


def test_errors_have_one_shape_and_say_whose_move_it_is(api: TestClient) -> None:
    r = api.post("/api/cases", json={})
    assert r.status_code == 401
    assert r.json()["error"] == "login_required"
    r = api.post("/api/cases", json={}, headers={"authorization": "Bearer forged"})
    assert r.status_code == 401
    assert r.json()["error"] == "session_expired"
    # A stale or forged challenge is refused before the scanner is touched.
    r = api.post("/api/login/finger", json={"challenge": "forged"})
    assert r.status_code == 401
    assert r.json()["error"] == "login_failed"
    r = api.post("/api/login/secret", json={"operator_id": "nobody", "pin": "1234"})
    assert r.status_code == 401
    assert set(r.json()) >= {"error", "detail"}
    r = api.post("/api/provision", json={"registry_url": "", "token": ""})
    assert r.status_code == 422


def test_a_heartbeat_answered_by_a_captive_portal_keeps_beating(tmp_path: Path) -> None:
    answers = iter(
        [
            httpx.Response(200, text="<html>Wi-Fi login</html>"),
            httpx.Response(200, json={"config_version": "v2"}),
        ]
    )
    client = httpx.Client(
        base_url="http://registry.test", transport=httpx.MockTransport(lambda _: next(answers))
    )
    seen: list[object] = []
    beat = Heartbeat(
        client,
        HeartbeatSources(
            software_version="1",
            image_version=lambda: None,
            devices=list,
            queue=lambda: {"pending": 0, "oldest_pending_s": None, "refused": 0},
            disk_path=tmp_path,
            last_sync_at=lambda: None,
        ),
        interval=lambda: 1.0,
        on_answer=seen.append,
    )
    assert beat.beat() is None
    assert beat.last_error is not None
    assert "not the registry's" in beat.last_error
    assert beat.beat() == {"config_version": "v2"}
    assert beat.last_error is None
    assert seen == [{"config_version": "v2"}]


def test_a_replaced_data_key_is_noticed_not_papered_over(tmp_path: Path) -> None:
    settings = stationkit.station_settings(tmp_path)
    runtime = StationRuntime(settings).start()
    runtime.stop()
    (tmp_path / "state" / "data-key").unlink()  # lost: the next start makes another one
    runtime = StationRuntime(settings).start()
    try:
        (blocker,) = runtime.blockers()
        assert blocker.code == "key_error"
        assert "data key" in blocker.message
        assert blocker.values["detail"] == blocker.message  # the technician's detail
    finally:
        runtime.stop()


def test_status_says_why_enrollment_is_paused_in_codes(tmp_path: Path) -> None:
    """Each blocker is a code with its values (a screen translates it) and an English
    message (for scripts); the disk guard is one of them, with what is free and needed."""
    settings = stationkit.station_settings(tmp_path)
    huge = settings.model_copy(update={"min_free_disk_mb": 1 << 40})  # more than any disk
    for current, codes in ((settings, ["not_provisioned"]),
                           (huge, ["not_provisioned", "disk_full"])):  # fmt: skip
        runtime = StationRuntime(current).start()
        try:
            with TestClient(create_app(runtime)) as client:
                said = client.get("/api/status").json()["blockers"]
            assert [b["code"] for b in said] == codes, said
            assert all(b["message"] and isinstance(b["values"], dict) for b in said), said
            # (free bytes move between two reads: the machine is shared)
            assert [b["code"] for b in said] == [b.code for b in runtime.blockers()]
        finally:
            runtime.stop()
    disk = said[1]["values"]
    assert disk["needed_bytes"] == (1 << 40) * 1024 * 1024
    assert 0 <= disk["free_bytes"] < disk["needed_bytes"]
