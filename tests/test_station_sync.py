"""The station's sync with a real registry process: policy, operators (then an offline
login with PIN + finger), the resident list in full then as deltas, staleness pausing
enrollment, and the heartbeat."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from biometrics.fingerprint.synth_impression import ImpressionKind
from station.operators import LoginFailed
from station.runtime import StationRuntime
from tests import processkit, registrykit, stationkit
from tests.registrykit import ADMIN, Clock


@dataclass
class Registry:
    url: str
    client: httpx.Client
    admin: dict[str, str]
    process: processkit.RegistryProcess


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("registry")
    port = processkit.free_port()
    env = processkit.registry_env(tmp, f"sqlite:///{tmp / 'registry.db'}", ADMIN)
    process = processkit.RegistryProcess(
        "registry", ["serve", "--port", str(port)], env, tmp / "registry.log"
    )
    url = f"http://127.0.0.1:{port}"
    with processkit.ProcessSet() as processes:
        processes.add(process).start()
        process.wait_http(f"{url}/readyz")
        with httpx.Client(base_url=url, timeout=60) as client:
            yield Registry(url, client, registrykit.login(client, *ADMIN), process)


def _station(
    registry: Registry, tmp: Path, station_id: str, commune: str, clock: Clock | None = None
) -> StationRuntime:
    office = stationkit.setup_office(registry.client, registry.admin, commune_code=commune)
    token = stationkit.station_token(registry.client, registry.admin, office, station_id)
    kwargs = {"clock": clock} if clock else {}
    runtime = StationRuntime(stationkit.station_settings(tmp), **kwargs).start()  # type: ignore[arg-type]
    runtime.provision(registry.url, token)
    return runtime


def test_first_sync_then_offline_login_and_deltas(registry: Registry, tmp_path: Path) -> None:
    runtime = _station(registry, tmp_path, "SYNC-001", "00004")
    try:
        assert [b.code for b in runtime.blockers()] == ["never_synced"]
        report = runtime.sync_now()
        assert report.residents_applied == 4
        assert report.operators_changed
        assert runtime.blockers() == []
        assert runtime.residents.count() == 4
        hits = runtime.residents.search("do minh khoi")
        assert [h.resident.full_name for h in hits] == ["Đỗ Minh Khôi"]
        assert runtime.policy().min_age_years == 14
        # The operators' finger templates are biometric data: sealed at rest.
        with runtime.db.read() as c:
            stored = [bytes(r[0]) for r in c.execute("SELECT iso_record FROM operators_fingers")]
        assert stored
        assert all(record.startswith(b"VNS1") for record in stored)

        # The operator list is on the station: the officer logs in with PIN + finger,
        # even with the registry out of reach.
        registry.process.kill()
        auth = runtime.authenticator()
        officer, _ = stationkit.staff("00004")
        with pytest.raises(LoginFailed):
            auth.begin_login(officer[0], pin="000000")
        challenge = auth.begin_login(officer[0], pin=officer[3])
        assert set(challenge.finger_positions) == {2, 7}
        flat = stationkit.finger_image(stationkit.OFFICER[2], 2, 3, ImpressionKind.FLAT)
        session = auth.complete_login(challenge.token, flat)
        assert session.role == "officer"
        assert runtime.sync_now(quiet=True) is None  # offline: the last good data stays
        assert runtime.blockers() == []
    finally:
        runtime.stop()
        if not registry.process.alive():
            registry.process.start()
            registry.process.wait_http(f"{registry.url}/readyz")

    # A changed row and a new one: the next round fetches only those two.
    runtime = StationRuntime(stationkit.station_settings(tmp_path)).start()
    try:
        office = runtime.online.identity.office_id  # type: ignore[union-attr]
        changed = stationkit.RESIDENTS_CSV.replace("Số 7 phố Phúc Xá", "Số 70 phố Phúc Xá")
        changed += "DC01-0005,Hoàng Văn Nam,1999-01-01,male,,HK-105,,,Số 1 phố Phúc Xá,00001,\n"
        r = registry.client.post(
            f"/v1/offices/{office}/residents",
            content=changed.encode(),
            headers={**registry.admin, "content-type": "text/csv"},
        )
        assert r.status_code == 200, r.text
        report = runtime.sync_now()
        assert report.residents_applied == 2
        assert not report.operators_changed
        assert runtime.residents.count() == 5
    finally:
        runtime.stop()


def test_staleness_pauses_enrollment_and_heartbeat_reports(
    registry: Registry, tmp_path: Path
) -> None:
    clock = Clock(datetime.now(UTC))
    runtime = _station(registry, tmp_path, "SYNC-002", "00007", clock)
    try:
        runtime.sync_now()
        assert runtime.blockers() == []
        clock.now += timedelta(hours=71)
        assert runtime.blockers() == []
        clock.now += timedelta(hours=2)
        (blocker,) = runtime.blockers()
        assert (blocker.code, dict(blocker.values)) == ("stale", {"age_h": 73, "limit_h": 72})
        assert "73 h old" in blocker.message
        assert runtime.status()["sync"]["stale"] is True
        runtime.sync_now()
        assert runtime.blockers() == []

        answer = runtime.online.heartbeat.beat()  # type: ignore[union-attr]
        assert answer is not None
        assert answer["config_version"] == runtime.online.synchronizer.versions()["config_version"]  # type: ignore[union-attr]
        assert not runtime.online.synchronizer.needs_sync(answer)  # type: ignore[union-attr]
        stations = registry.client.get("/v1/stations", headers=registry.admin).json()
        mine = next(s for s in stations if s["id"] == "SYNC-002")
        assert mine["last_heartbeat_at"] is not None
    finally:
        runtime.stop()
