"""What the ingest speed-ups must not change: a cached certificate check still follows a
re-enrollment and a revocation at the next request, the relaxed nonce commit leaves every
pooled SQLite connection at ``synchronous = FULL``, a body that does not match its digest
is still refused with nothing stored, and the faster ANSI/NIST-ITL decoder still takes
only ASCII digits for numbers."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from central.app import create_app
from central.db.models import Package, Station, StationStatus
from central.ingest import IngestRefused
from central.services import Registry
from enrollment import ansi_nist
from enrollment.errors import MalformedTransactionError
from enrollment.ids import new_package_id
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import build_package
from enrollment.request_signing import StationRequestAuth
from tests import pkgkit, registrykit
from tests.registrykit import ADMIN

STATION = "HN-BD-001"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(registrykit.registry_settings(tmp_path))) as c:
        yield c


def _registry(client: TestClient) -> Registry:
    return client.app.state.registry  # type: ignore[attr-defined,no-any-return]


def _status(client: TestClient, signer: SoftwareKeySigner) -> Any:
    """An authenticated station request (the status of a package it never sent: 404)."""
    return client.get(f"/v1/packages/{new_package_id()}", auth=StationRequestAuth(signer, STATION))


def _enroll_again(client: TestClient, admin: dict[str, str]) -> SoftwareKeySigner:
    """A new key and certificate for the same station, through a new one-time token."""
    from cryptography import x509

    token = client.post(f"/v1/stations/{STATION}/tokens", json={}, headers=admin)
    assert token.status_code == 201, token.text
    key = ec.generate_private_key(ec.SECP256R1())
    enrolled = client.post(
        "/v1/enroll",
        json={"token": token.json()["token"], "csr": registrykit.csr_for(key, STATION)},
    )
    assert enrolled.status_code == 201, enrolled.text
    cert = x509.load_pem_x509_certificate(enrolled.json()["certificate"].encode())
    return SoftwareKeySigner(key, cert)


def test_cached_certificate_follows_reenrollment_and_revocation(client: TestClient) -> None:
    admin = registrykit.login(client, *ADMIN)
    first, _ = registrykit.onboard(client, admin, STATION)
    assert _status(client, first).status_code == 404  # accepted: its certificate is cached
    second = _enroll_again(client, admin)
    # The old key's signatures stop at once: the certificate on record is another one.
    refused = _status(client, first)
    assert refused.status_code == 401, refused.text
    assert _status(client, second).status_code == 404
    with Session(_registry(client).engine) as s, s.begin():
        s.execute(update(Station).values(status=StationStatus.revoked))
    revoked = _status(client, second)
    assert revoked.status_code == 403
    assert revoked.json()["error"] == "station_revoked"


def test_pooled_sqlite_connections_stay_synchronous_full(client: TestClient) -> None:
    admin = registrykit.login(client, *ADMIN)
    signer, _ = registrykit.onboard(client, admin, STATION)
    for _ in range(3):
        assert _status(client, signer).status_code == 404  # each stores a nonce
    engine = _registry(client).engine
    idle = engine.pool.checkedin()  # type: ignore[attr-defined]
    assert idle >= 1
    connections = [engine.connect() for _ in range(idle)]
    try:
        for connection in connections:
            level = connection.exec_driver_sql("PRAGMA synchronous").scalar()
            assert level == 2, "a pooled connection was left with weaker commits"
    finally:
        for connection in connections:
            connection.close()


def test_a_body_that_does_not_match_its_digest_is_refused_and_not_stored(
    client: TestClient,
) -> None:
    admin = registrykit.login(client, *ADMIN)
    signer, _ = registrykit.onboard(client, admin, STATION)
    registry = _registry(client)
    record, tx = pkgkit.example(1, station_id=STATION)
    built = build_package(record, tx, signer=signer, recipient=registry.keys.package_public_key())
    wrong = hashlib.sha256(built.data + b"x").hexdigest()
    pid = uuid.UUID(built.package_id)
    with pytest.raises(IngestRefused) as refused:
        registry.ingest.accept(STATION, pid, built.data, wrong)
    assert (refused.value.status, refused.value.code) == (400, "digest-mismatch")
    with Session(registry.engine) as s:
        assert s.scalar(select(func.count()).select_from(Package)) == 0
    assert list(registry.blobs.keys("packages/")) == []


@pytest.mark.parametrize("digits", ["\u0663", "\uff13", "3\u00b2"])
def test_numbers_take_ascii_digits_only(digits: str) -> None:
    _, enrollment = pkgkit.example(1)
    decoded = ansi_nist.decode(ansi_nist.build_transaction(enrollment))
    finger = next(r for r in decoded.records if r.type == 14)
    finger.set_text(13, digits)  # FGP, the finger position: Arabic-Indic, full-width, ...
    with pytest.raises(MalformedTransactionError, match="FGP"):
        ansi_nist.parse_transaction(ansi_nist.encode(decoded))
