"""First-boot provisioning against the real registry app: the station makes its key (software
file or TPM), sends a self-signed PKCS#10 request with the one-time token, stores what the
registry answers, and signs requests the registry accepts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from central.app import create_app
from station.identity import (
    KeySettings,
    NotProvisionedError,
    ProvisioningError,
    certification_request,
    is_provisioned,
    load_identity,
    provision,
    reset_identity,
)
from tests import registrykit
from tests.registrykit import ADMIN

URL = "http://registry.test"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], int]]:
    settings = registrykit.registry_settings(tmp_path / "registry")
    with TestClient(create_app(settings), base_url=URL) as client:
        admin = registrykit.login(client, *ADMIN)
        office = client.post(
            "/v1/offices", json={"name": "Công an phường Phúc Xá", "commune_code": "00001"},
            headers=admin,
        )  # fmt: skip
        assert office.status_code == 201, office.text
        yield client, admin, int(office.json()["id"])


def _token(client: TestClient, admin: dict[str, str], office: int, station_id: str) -> str:
    r = client.post("/v1/stations", json={"station_id": station_id, "office_id": office},
                    headers=admin)  # fmt: skip
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/stations/{station_id}/tokens", json={}, headers=admin)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_request_is_self_signed_by_the_station_key(tmp_path: Path) -> None:
    from enrollment.keys.software import SoftwareKeySigner

    signer = SoftwareKeySigner.generate(tmp_path / "k.pem")
    csr = x509.load_pem_x509_csr(certification_request(signer, "HN-BD-001"))
    assert csr.is_signature_valid
    assert csr.public_key() == signer.public_key()
    assert csr.subject.rfc4514_string() == "CN=HN-BD-001"


def test_provision_software_key_then_signed_requests_work(
    tmp_path: Path, registry: tuple[TestClient, dict[str, str], int]
) -> None:
    client, admin, office = registry
    token = _token(client, admin, office, "HN-BD-001")
    folder = tmp_path / "identity"
    assert not is_provisioned(folder)
    with pytest.raises(NotProvisionedError, match="not provisioned"):
        load_identity(folder)
    identity = provision(folder, URL, token, client=client)
    assert identity.station_id == "HN-BD-001"
    assert identity.office_id == office
    assert identity.csca, "the CSCA master list is stored for card verification"
    assert (folder / "station-key.pem").stat().st_mode & 0o777 == 0o600
    # A restart loads the same identity, and the registry accepts its signed requests.
    again = load_identity(folder)
    assert again.certificate == identity.certificate
    trust = client.get("/v1/station/trust", auth=again.auth())
    assert trust.status_code == 200, trust.text
    assert trust.json()["station_id"] == "HN-BD-001"
    # Provisioned once: a second token is refused locally, before spending it.
    with pytest.raises(ProvisioningError, match="already provisioned"):
        provision(folder, URL, _token(client, admin, office, "HN-BD-002"), client=client)


def test_spent_or_bad_token_is_refused_with_advice(
    tmp_path: Path, registry: tuple[TestClient, dict[str, str], int]
) -> None:
    client, admin, office = registry
    token = _token(client, admin, office, "HN-BD-003")
    provision(tmp_path / "a", URL, token, client=client)
    with pytest.raises(ProvisioningError, match="new token"):
        provision(tmp_path / "b", URL, token, client=client)  # spent
    with pytest.raises(ProvisioningError, match="new token"):
        provision(tmp_path / "c", URL, "not-a-token", client=client)
    assert not is_provisioned(tmp_path / "b")
    assert not is_provisioned(tmp_path / "c")
    with pytest.raises(ProvisioningError, match="empty"):
        provision(tmp_path / "d", URL, "  ", client=client)


def test_unreachable_registry_leaves_nothing_and_keeps_the_token(
    tmp_path: Path, registry: tuple[TestClient, dict[str, str], int]
) -> None:
    client, admin, office = registry
    token = _token(client, admin, office, "HN-BD-004")
    dead = httpx.Client(base_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(ProvisioningError, match="cannot reach"):
        provision(tmp_path / "id", "http://127.0.0.1:9", token, client=dead)
    assert not is_provisioned(tmp_path / "id")
    # The token was not spent: the technician tries again when the link is up.
    identity = provision(tmp_path / "id", URL, token, client=client)
    assert identity.station_id == "HN-BD-004"


def test_reset_then_reprovision_replaces_the_certificate(
    tmp_path: Path, registry: tuple[TestClient, dict[str, str], int]
) -> None:
    client, admin, office = registry
    folder = tmp_path / "identity"
    first = provision(folder, URL, _token(client, admin, office, "HN-BD-005"), client=client)
    reset_identity(folder)
    r = client.post("/v1/stations/HN-BD-005/tokens", json={}, headers=admin)
    second = provision(folder, URL, r.json()["token"], client=client)
    assert second.certificate.public_key() != first.certificate.public_key()
    # The old key no longer signs for the station.
    old = client.get("/v1/station/trust", auth=first.auth())
    assert old.status_code in (401, 403), old.text
    assert client.get("/v1/station/trust", auth=second.auth()).status_code == 200


def test_damaged_identity_says_so(
    tmp_path: Path, registry: tuple[TestClient, dict[str, str], int]
) -> None:
    client, admin, office = registry
    folder = tmp_path / "identity"
    provision(folder, URL, _token(client, admin, office, "HN-BD-006"), client=client)
    (folder / "station-cert.pem").write_bytes(b"garbage")
    with pytest.raises(NotProvisionedError, match="damaged"):
        load_identity(folder)


@pytest.mark.tpm
def test_provision_with_the_key_in_a_tpm(
    tmp_path: Path, registry: tuple[TestClient, dict[str, str], int], swtpm: object
) -> None:
    client, admin, office = registry
    keys = KeySettings(backend="tpm", tcti=swtpm.tcti)  # type: ignore[attr-defined]
    folder = tmp_path / "identity"
    identity = provision(
        folder, URL, _token(client, admin, office, "HN-BD-007"), keys=keys, client=client
    )
    assert (folder / "station-key.tpm").is_file()
    assert not (folder / "station-key.pem").exists()
    loaded = load_identity(folder, keys)
    assert client.get("/v1/station/trust", auth=loaded.auth()).status_code == 200
    # The software backend cannot use a TPM-provisioned identity.
    with pytest.raises(NotProvisionedError, match="backend"):
        load_identity(folder, KeySettings())
    assert identity.station_id == "HN-BD-007"
