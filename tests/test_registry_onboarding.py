"""Station onboarding: offices from the code table, one-time tokens (once, even when two
stations race for one; never after expiry), CSRs checked, a key certified for one station
only, suspension and revocation, operators per office."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from central import onboarding
from central.app import create_app
from central.services import Registry
from enrollment.keys.software import SoftwareKeySigner
from enrollment.request_signing import StationRequestAuth
from tests import registrykit
from tests.registrykit import ADMIN, Clock


@dataclass
class Env:
    client: TestClient
    registry: Registry
    admin: dict[str, str]
    clock: Clock
    office: int


def _env(tmp_path: Path, database_url: str | None) -> Iterator[Env]:
    clock = Clock(datetime.now(UTC))
    settings = registrykit.registry_settings(tmp_path, database_url)
    with TestClient(create_app(settings, clock=clock)) as client:
        admin = registrykit.login(client, *ADMIN)
        office = client.post(
            "/v1/offices",
            json={"name": "Công an phường Trúc Bạch", "commune_code": "00004"},
            headers=admin,
        )
        assert office.status_code == 201, office.text
        yield Env(client, client.app.state.registry, admin, clock, office.json()["id"])  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    url = None if request.param == "sqlite" else str(request.getfixturevalue("postgres_db"))
    yield from _env(tmp_path, url)


def _station(env: Env, station_id: str) -> str:
    r = env.client.post(
        "/v1/stations", json={"station_id": station_id, "office_id": env.office}, headers=env.admin
    )
    assert r.status_code == 201, r.text
    token = env.client.post(f"/v1/stations/{station_id}/tokens", json={}, headers=env.admin)
    assert token.status_code == 201, token.text
    return str(token.json()["token"])


def _enroll(env: Env, token: str, csr: str) -> Any:
    return env.client.post("/v1/enroll", json={"token": token, "csr": csr})


def test_office_names_come_from_the_code_table(env: Env) -> None:
    offices = env.client.get("/v1/offices", headers=env.admin).json()
    assert offices[0]["commune_name"] == "Phường Trúc Bạch"
    assert offices[0]["district_code"] == "001"
    bad = env.client.post(
        "/v1/offices", json={"name": "X", "commune_code": "99999"}, headers=env.admin
    )
    assert bad.status_code == 422
    assert bad.json()["error"] == "unknown_commune"
    again = env.client.post(
        "/v1/offices",
        json={"name": "Công an phường Trúc Bạch", "commune_code": "00004"},
        headers=env.admin,
    )
    assert again.status_code == 409


def test_two_stations_racing_for_one_token_one_wins(env: Env) -> None:
    token = _station(env, "HN-BD-010")
    registry = env.registry
    results: list[str] = []
    barrier = threading.Barrier(2)

    def race() -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = registrykit.csr_for(key, "x").encode()
        barrier.wait()
        try:
            with Session(registry.engine) as s, s.begin():
                onboarding.enroll_station(
                    s,
                    token,
                    csr,
                    lambda req, sid: registry.keys.issue_station_certificate_from_csr(req, sid),
                    env.clock(),
                )
            results.append("won")
        except onboarding.OnboardingError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=race) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["token-refused", "won"]


def test_expired_token_and_checked_requests(env: Env) -> None:
    token = _station(env, "HN-BD-011")
    p384 = ec.generate_private_key(ec.SECP384R1())
    refused = _enroll(env, token, registrykit.csr_for(p384, "x"))
    assert refused.status_code == 422
    assert refused.json()["error"] == "bad_csr"
    # A CSR whose self-signature does not hold (the key is not the requester's).
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    real = x509.load_pem_x509_csr(registrykit.csr_for(key, "x").encode())
    forged = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(other, hashes.SHA256())
    )
    spliced = forged.public_bytes(serialization.Encoding.DER).replace(
        other.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        real.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    pem = x509.load_der_x509_csr(spliced).public_bytes(serialization.Encoding.PEM).decode()
    assert _enroll(env, token, pem).status_code == 422
    # The refusals did not spend the token; time does.
    env.clock.now += timedelta(hours=73)
    late = _enroll(env, token, registrykit.csr_for(key, "x"))
    assert late.status_code == 401
    assert "expired" in late.json()["detail"]


def test_one_key_one_station_and_revocation_is_for_good(env: Env) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = _enroll(env, _station(env, "HN-BD-012"), registrykit.csr_for(key, "x"))
    assert first.status_code == 201, first.text
    second = _enroll(env, _station(env, "HN-BD-013"), registrykit.csr_for(key, "x"))
    assert second.status_code == 409
    assert second.json()["error"] == "key_in_use"
    cert = x509.load_pem_x509_certificate(first.json()["certificate"].encode())
    signer = SoftwareKeySigner(key, cert)
    auth = StationRequestAuth(signer, "HN-BD-012")
    assert env.client.get("/v1/station/trust", auth=auth).status_code == 200
    suspend = env.client.post("/v1/stations/HN-BD-012/suspend", json={}, headers=env.admin)
    assert suspend.json()["status"] == "suspended"
    assert env.client.get("/v1/station/trust", auth=auth).status_code == 403
    env.client.post("/v1/stations/HN-BD-012/resume", json={}, headers=env.admin)
    assert env.client.get("/v1/station/trust", auth=auth).status_code == 200
    env.client.post("/v1/stations/HN-BD-012/revoke", json={"reason": "lost"}, headers=env.admin)
    assert env.client.get("/v1/station/trust", auth=auth).status_code == 403
    resume = env.client.post("/v1/stations/HN-BD-012/resume", json={}, headers=env.admin)
    assert resume.status_code == 409
    token = env.client.post("/v1/stations/HN-BD-012/tokens", json={}, headers=env.admin)
    assert token.status_code == 409
    assert token.json()["error"] == "station_revoked"


def test_operators_belong_to_an_office(env: Env) -> None:
    made = env.client.post(
        "/v1/operators",
        json={
            "office_id": env.office,
            "username": "cb.nguyen",
            "full_name": "Nguyễn Văn An",
            "role": "officer",
        },
        headers=env.admin,
    )
    assert made.status_code == 201, made.text
    dup = env.client.post(
        "/v1/operators",
        json={
            "office_id": env.office,
            "username": "cb.nguyen",
            "full_name": "B",
            "role": "officer",
        },
        headers=env.admin,
    )
    assert dup.status_code == 409
    adj = env.client.post(
        "/v1/operators",
        json={
            "office_id": env.office,
            "username": "adj.x",
            "full_name": "C",
            "role": "adjudicator",
        },
        headers=env.admin,
    )
    assert adj.status_code == 422
    listed = env.client.get(f"/v1/operators?office_id={env.office}", headers=env.admin).json()
    assert [o["username"] for o in listed] == ["cb.nguyen"]
