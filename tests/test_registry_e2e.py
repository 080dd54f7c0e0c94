"""The registry end to end, embedded (SQLite, blob folder) and at scale (a real PostgreSQL
and an S3-compatible object store): an administrator onboards
a station, the station uploads real packages (synthetic rolled prints, synthetic faces)
over signed HTTP, the pipeline runs (NFIQ 2, dedup, issuance), a duplicate under another
identity lands in adjudication and is linked to the existing number, the chip verifies,
the card is recorded, and a revoked station is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.app import create_app
from central.chipdata import ChipData
from central.db.models import AuditEntry, Person
from central.services import Registry
from enrollment.icao.passive import verify_passive
from enrollment.keys.software import SoftwareKeySigner
from enrollment.request_signing import StationRequestAuth
from tests import registrykit, s3kit
from tests.registrykit import ADMIN

STATION = "HN-BD-001"


s3_server = s3kit.s3_server


@pytest.fixture(params=["sqlite", "postgresql+s3"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    """The embedded registry (SQLite, blob folder), or the scale one: PostgreSQL and an
    S3-compatible object store (moto's server over HTTP)."""
    extra: dict[str, Any] = {}
    database_url = None
    if request.param == "postgresql+s3":
        database_url = str(request.getfixturevalue("postgres_db"))
        server: s3kit.S3Server = request.getfixturevalue("s3_server")
        extra["blobs"] = {
            "backend": "s3",
            "bucket": server.new_bucket(),
            "endpoint_url": server.endpoint_url,
            "region": server.region,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
        }
    settings = registrykit.registry_settings(tmp_path, database_url, **extra)
    with TestClient(create_app(settings)) as c:
        yield c


def upload(
    client: TestClient, signer: SoftwareKeySigner, data: bytes, package_id: str
) -> dict[str, Any]:
    auth = StationRequestAuth(signer, STATION)
    r = client.put(f"/v1/packages/{package_id}", content=data, auth=auth)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def status(client: TestClient, signer: SoftwareKeySigner, package_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/packages/{package_id}", auth=StationRequestAuth(signer, STATION))
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.timeout(600)
def test_enrollment_to_card_with_a_duplicate(client: TestClient) -> None:
    registry: Registry = client.app.state.registry  # type: ignore[attr-defined]
    admin = registrykit.login(client, *ADMIN)
    signer, _ = registrykit.onboard(client, admin, STATION)
    # Re-enrolling (a repaired station with a new key) replaces the certificate: the old
    # key is refused from then on, and a token works once.
    token = client.post(f"/v1/stations/{STATION}/tokens", json={}, headers=admin).json()["token"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = registrykit.csr_for(key, STATION)
    renewed = client.post("/v1/enroll", json={"token": token, "csr": csr})
    assert renewed.status_code == 201, renewed.text
    again = client.post("/v1/enroll", json={"token": token, "csr": csr})
    assert again.status_code == 401
    assert again.json()["error"] == "token_refused"
    old = client.get("/v1/station/trust", auth=StationRequestAuth(signer, STATION))
    assert old.status_code == 401, old.text
    cert = x509.load_pem_x509_certificate(renewed.json()["certificate"].encode())
    signer = SoftwareKeySigner(key, cert)
    trust = client.get("/v1/station/trust", auth=StationRequestAuth(signer, STATION))
    assert trust.status_code == 200, trust.text
    recipient = registry.keys.package_public_key()
    client.post(
        "/v1/users",
        json={"username": "adj", "password": "adjudicate me", "roles": ["adjudicator"]},
        headers=admin,
    ).raise_for_status()
    adjudicator = registrykit.login(client, "adj", "adjudicate me")

    first = registrykit.package(1, 0, signer=signer, station_id=STATION, recipient=recipient)
    # Person 6's face comes from another real photo than person 1's (registrykit).
    other = registrykit.package(6, 0, signer=signer, station_id=STATION, recipient=recipient)
    # Person 1 again, new impressions and photo, under another person's demographics.
    dup = registrykit.package(
        1, 1, signer=signer, station_id=STATION, recipient=recipient, demographics=77
    )
    receipts = [upload(client, signer, b.data, b.package_id) for b in (first, other)]
    assert {r["state"] for r in receipts} == {"received"}
    # The same package again answers the same receipt.
    assert upload(client, signer, first.data, first.package_id) == receipts[0]

    worker = registry.make_worker("test")
    worker.drain()
    for b in (first, other):
        assert status(client, signer, b.package_id)["state"] == "issued"
    upload(client, signer, dup.data, dup.package_id)
    worker.drain()
    assert status(client, signer, dup.package_id)["state"] == "adjudication"

    cases = client.get("/v1/cases", headers=adjudicator).json()
    assert len(cases) == 1
    assert cases[0]["package_id"] == dup.package_id
    view = client.get(f"/v1/cases/{cases[0]['id']}", headers=adjudicator).json()
    best = view["candidates"][0]
    assert best["package_id"] == first.package_id
    assert best["demographics"]["full_name"] != view["probe"]["demographics"]["full_name"]
    assert best["face_jpeg"]
    assert view["probe"]["face_jpeg"]
    assert any(len(f["pairs"]) >= 12 for f in best["fingers"]), best["fingers"]
    person_of_first = best["scores"]["person_id"] or _person(registry, first.package_id)
    decided = client.post(
        f"/v1/cases/{cases[0]['id']}/decision",
        json={"decision": "same", "person_id": person_of_first, "reason": "fingers and face"},
        headers=adjudicator,
    )
    assert decided.status_code == 200, decided.text
    twice = client.post(
        f"/v1/cases/{cases[0]['id']}/decision",
        json={"decision": "different"},
        headers=adjudicator,
    )
    assert twice.status_code == 409
    worker.drain()

    issued = {}
    for b in (first, other, dup):
        r = client.get(
            f"/v1/packages/{b.package_id}/issuance", auth=StationRequestAuth(signer, STATION)
        )
        assert r.status_code == 200, r.text
        issued[b.package_id] = r.json()
    numbers = {k: v["personal_number"] for k, v in issued.items()}
    assert numbers[dup.package_id] == numbers[first.package_id]  # linked, no second number
    assert numbers[other.package_id] != numbers[first.package_id]
    with Session(registry.engine) as session:
        assert session.scalar(select(func.count()).select_from(Person)) == 2

    chip = ChipData.from_bytes(
        __import__("base64").b64decode(issued[other.package_id]["chip_cbor"])
    )
    verdict = verify_passive(chip.sod, chip.data_groups(), registry.keys.master_list())
    assert verdict is not None

    card = client.post(
        f"/v1/packages/{other.package_id}/card",
        json={"card_serial": "CARD-0001"},
        auth=StationRequestAuth(signer, STATION),
    )
    assert card.status_code == 200, card.text
    assert status(client, signer, other.package_id)["state"] == "card_encoded"

    # A revoked station: refused from now on; its packages stay as they were.
    revoked = client.post(
        f"/v1/stations/{STATION}/revoke", json={"reason": "stolen"}, headers=admin
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    late = registrykit.package(10, 0, signer=signer, station_id=STATION, recipient=recipient)
    refused = client.put(
        f"/v1/packages/{late.package_id}",
        content=late.data,
        auth=StationRequestAuth(signer, STATION),
    )
    assert refused.status_code == 403, refused.text
    view = client.get(f"/v1/registry/packages/{first.package_id}", headers=admin).json()
    assert view["state"] == "issued"

    audit = client.get("/v1/audit/verify", headers=admin)
    assert audit.status_code == 200, audit.text
    assert audit.json()["intact"]
    with Session(registry.engine) as session:
        actions = set(session.scalars(select(AuditEntry.action)))
    assert {"package.received", "package.issued", "case.decided.same", "station.revoked"} <= actions


def _person(registry: Registry, package_id: str) -> str:
    from central.db.models import Package

    with Session(registry.engine) as session:
        row = session.get_one(Package, uuid.UUID(package_id))
        return str(row.person_id)
