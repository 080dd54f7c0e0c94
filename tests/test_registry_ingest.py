"""Package ingest over signed HTTP: receipts, idempotency, conflicts, resumable chunks,
refusals with their codes (audited, nothing stored), and admission under overload.

The packages here carry placeholder images (tests/pkgkit.py): ingest checks signatures,
encryption and structure, not biometrics, and these build in milliseconds."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.app import create_app
from central.db.models import AuditEntry, Job, Package, Upload
from central.services import Registry
from enrollment.ids import new_package_id
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import build_package
from enrollment.request_signing import StationRequestAuth
from tests import pkgkit, registrykit
from tests.registrykit import ADMIN

STATION = "HN-BD-001"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = registrykit.registry_settings(
        tmp_path, ingest={"max_package_bytes": 2_000_000, "max_chunk_bytes": 64 * 1024}
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def station(client: TestClient) -> SoftwareKeySigner:
    admin = registrykit.login(client, *ADMIN)
    signer, _ = registrykit.onboard(client, admin, STATION)
    return signer  # type: ignore[no-any-return]


def _registry(client: TestClient) -> Registry:
    return client.app.state.registry  # type: ignore[attr-defined,no-any-return]


def _package(client: TestClient, signer: SoftwareKeySigner, seed: int = 1, **kw: Any) -> Any:
    record, tx = pkgkit.example(seed, station_id=STATION)
    recipient = kw.pop("recipient", None) or _registry(client).keys.package_public_key()
    return build_package(record, tx, signer=signer, recipient=recipient, **kw)


def _put(client: TestClient, signer: SoftwareKeySigner, pid: str, data: bytes, **kw: Any) -> Any:
    return client.put(
        f"/v1/packages/{pid}", content=data, auth=StationRequestAuth(signer, STATION), **kw
    )


def _counts(client: TestClient, pid: str) -> tuple[int, int, list[str]]:
    with Session(_registry(client).engine) as s:
        rows = s.scalar(
            select(func.count()).select_from(Package).where(Package.package_id == uuid.UUID(pid))
        )
        jobs = s.scalar(
            select(func.count()).select_from(Job).where(Job.package_id == uuid.UUID(pid))
        )
        actions = list(
            s.scalars(select(AuditEntry.action).where(AuditEntry.subject == f"package:{pid}"))
        )
    return int(rows or 0), int(jobs or 0), actions


def _blobs(client: TestClient, pid: str) -> list[str]:
    return [k for k in _registry(client).blobs.keys("packages/") if pid in k]


def test_receipt_then_same_receipt_then_conflict(
    client: TestClient, station: SoftwareKeySigner
) -> None:
    built = _package(client, station)
    first = _put(client, station, built.package_id, built.data)
    assert first.status_code == 201, first.text
    receipt = first.json()
    assert receipt["sha256"] == hashlib.sha256(built.data).hexdigest()
    assert receipt["state"] == "received"
    assert receipt["receipt_number"]
    again = _put(client, station, built.package_id, built.data)
    assert again.status_code == 200
    assert again.json() == receipt
    # Another body under the used id: refused, nothing changes.
    other = _package(client, station, seed=2, package_id=built.package_id)
    conflict = _put(client, station, built.package_id, other.data)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "package_id_conflict"
    assert _counts(client, built.package_id) == (1, 1, ["package.received"])
    assert len(_blobs(client, built.package_id)) == 1
    status = client.get(
        f"/v1/packages/{built.package_id}", auth=StationRequestAuth(station, STATION)
    )
    assert status.json()["receipt_number"] == receipt["receipt_number"]


def test_refusals_say_why_leave_an_audit_entry_and_store_nothing(
    client: TestClient, station: SoftwareKeySigner
) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "wrong_recipient": _package(client, station, recipient=stranger.public_key()),
        "package_id_mismatch": _package(client, station),
    }
    tampered = bytearray(_package(client, station).data)
    tampered[-40] ^= 0x01
    for code, built in cases.items():
        pid = new_package_id() if code == "package_id_mismatch" else built.package_id
        r = _put(client, station, pid, built.data)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == code
        rows, jobs, actions = _counts(client, pid)
        assert (rows, jobs) == (0, 0)
        assert actions == ["package.refused"]
        assert _blobs(client, pid) == []
    pid = _package(client, station).package_id
    r = _put(client, station, pid, bytes(tampered))
    assert r.status_code == 422
    assert r.json()["error"] in {
        "decryption_failed",
        "malformed",
        "package_id_mismatch",
    }


def test_a_station_cannot_upload_another_stations_package(
    client: TestClient, station: SoftwareKeySigner
) -> None:
    admin = registrykit.login(client, *ADMIN)
    other, _ = registrykit.onboard(client, admin, "HN-BD-002", office_id=1)
    record, tx = pkgkit.example(3, station_id="HN-BD-002")
    built = build_package(
        record, tx, signer=other, recipient=_registry(client).keys.package_public_key()
    )
    r = _put(client, station, built.package_id, built.data)
    assert r.status_code == 403
    assert r.json()["error"] == "signer_not_station"


def test_resumable_upload_in_chunks_with_a_wrong_offset_and_a_retry(
    client: TestClient, station: SoftwareKeySigner
) -> None:
    built = _package(client, station, seed=4)
    data, pid = built.data, built.package_id
    digest = hashlib.sha256(data).hexdigest()
    size = 16_000
    assert len(data) > 3 * size

    def chunk(offset: int) -> Any:
        part = data[offset : offset + size]
        q = f"offset={offset}&length={len(data)}&sha256={digest}"
        return client.put(
            f"/v1/packages/{pid}?{q}", content=part, auth=StationRequestAuth(station, STATION)
        )

    first = chunk(0)
    assert first.status_code == 202
    assert first.headers["Upload-Offset"] == str(size)
    assert chunk(0).status_code == 409  # the same chunk again: the upload moved on
    skipped = chunk(2 * size)
    assert skipped.status_code == 409
    assert skipped.headers["Upload-Offset"] == str(size)
    where = client.get(f"/v1/packages/{pid}", auth=StationRequestAuth(station, STATION))
    assert where.json()["upload"] == {"offset": size, "length": len(data)}
    offset = size
    while True:
        r = chunk(offset)
        if r.status_code != 202:
            break
        offset = int(r.headers["Upload-Offset"])
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == digest
    with Session(_registry(client).engine) as s:
        assert s.scalar(select(func.count()).select_from(Upload)) == 0
    assert list(_registry(client).blobs.keys("uploads/")) == []
    # The whole package again, in one request: the same receipt.
    assert _put(client, station, pid, data).json() == r.json()


def test_oversized_bodies_are_refused_before_they_are_stored(
    client: TestClient, station: SoftwareKeySigner
) -> None:
    pid = new_package_id()
    big = b"\0" * 2_000_001
    r = _put(client, station, pid, big)
    assert r.status_code == 413, r.text
    assert _counts(client, pid)[0] == 0


def test_busy_registry_answers_503_with_retry_after(
    client: TestClient, station: SoftwareKeySigner
) -> None:
    registry = _registry(client)
    held = registry.settings.ingest.max_concurrent_uploads
    for _ in range(held):
        assert registry.admit_upload()
    try:
        built = _package(client, station)
        r = _put(client, station, built.package_id, built.data)
        assert r.status_code == 503
        assert r.headers["Retry-After"]
        assert _counts(client, built.package_id)[0] == 0
    finally:
        for _ in range(held):
            registry.release_upload()
    r = _put(client, station, built.package_id, built.data)
    assert r.status_code == 201


def test_a_chunked_upload_whose_recording_failed_is_finished_by_a_retry(
    client: TestClient, station: SoftwareKeySigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _package(client, station, seed=5)
    data, pid = built.data, built.package_id
    digest = hashlib.sha256(data).hexdigest()
    half = len(data) // 2
    registry = _registry(client)
    real_put = registry.blobs.put
    calls = {"failed": 0}

    def flaky_put(key: str, source: Any, **kw: Any) -> Any:
        if key.startswith("packages/") and not calls["failed"]:
            calls["failed"] += 1
            raise OSError("the object store went away")
        return real_put(key, source, **kw)

    monkeypatch.setattr(registry.blobs, "put", flaky_put)

    def chunk(offset: int, end: int) -> Any:
        q = f"offset={offset}&length={len(data)}&sha256={digest}"
        return client.put(
            f"/v1/packages/{pid}?{q}",
            content=data[offset:end],
            auth=StationRequestAuth(station, STATION),
        )

    assert chunk(0, half).status_code == 202
    with pytest.raises(OSError, match="went away"):
        chunk(half, len(data))  # every byte arrived; recording the package failed
    assert _counts(client, pid)[0] == 0
    retried = chunk(half, len(data))
    assert retried.status_code == 201, retried.text
    assert retried.json()["sha256"] == digest
    assert _counts(client, pid)[:2] == (1, 1)
    assert list(registry.blobs.keys("uploads/")) == []


def test_housekeeping_removes_unrecorded_blobs_and_idle_uploads(
    client: TestClient, station: SoftwareKeySigner
) -> None:
    from datetime import UTC, datetime, timedelta

    from central.ingest import package_blob_key

    registry = _registry(client)
    kept = _package(client, station, seed=6)
    assert _put(client, station, kept.package_id, kept.data).status_code == 201
    orphan = _package(client, station, seed=7)  # stored, then the process died
    sha = hashlib.sha256(orphan.data).hexdigest()
    key = package_blob_key(uuid.UUID(orphan.package_id), sha, datetime.now(UTC))
    registry.blobs.put(key, orphan.data)
    half = _package(client, station, seed=8)  # a chunked upload the station gave up
    q = f"offset=0&length={len(half.data)}&sha256={hashlib.sha256(half.data).hexdigest()}"
    r = client.put(
        f"/v1/packages/{half.package_id}?{q}",
        content=half.data[:1000],
        auth=StationRequestAuth(station, STATION),
    )
    assert r.status_code == 202
    registry.housekeeping()  # too recent: an upload may still be recording them
    assert registry.blobs.exists(key)
    later = datetime.now(UTC) + timedelta(days=4)
    registry.ingest.clock = lambda: later
    assert registry.ingest.sweep_orphans(timedelta(hours=1), days=5) == 1
    assert registry.ingest.expire_uploads(timedelta(hours=72)) == 1
    assert not registry.blobs.exists(key)
    assert list(registry.blobs.keys("uploads/")) == []
    assert len(_blobs(client, kept.package_id)) == 1  # the recorded package stays
