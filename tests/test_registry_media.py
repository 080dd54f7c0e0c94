"""Removable-media import: a station that never sees a network writes its packages and a
manifest to a USB stick; ``python -m central media import`` ingests them through the same
checks as an HTTP upload and writes ``receipts.cose``, signed with the station CA's key.

Media folders are built here as a station writes them, with real packages
(``tests.registrykit``) from stations onboarded through the API. The receipts' signature
is checked with cbor2 and cryptography directly (not with ``enrollment.cose``, which signed
them), against the station CA the station received from ``/v1/station/trust``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.app import create_app
from central.db.models import AuditEntry, Package
from central.media_import import MediaError, import_media
from central.services import Registry
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import BuiltPackage, build_package
from enrollment.request_signing import StationRequestAuth
from tests import registrykit
from tests.registrykit import ADMIN

ROOT = Path(__file__).resolve().parents[1]
FINGERS = (1, 2)


@dataclass
class World:
    client: TestClient
    registry: Registry
    admin: dict[str, str]
    tmp: Path
    office_id: int = 0
    signers: dict[str, SoftwareKeySigner] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def station(self) -> str:
        station_id = f"HN-MEDIA-{next(self.counter):03d}"
        signer, office = registrykit.onboard(
            self.client, self.admin, station_id, office_id=self.office_id or None
        )
        self.office_id = office
        self.signers[station_id] = signer
        return station_id

    def auth(self, station_id: str) -> StationRequestAuth:
        return StationRequestAuth(self.signers[station_id], station_id)

    def package(self, station_id: str, person: int = 3) -> BuiltPackage:
        record, tx = registrykit.citizen(person, 0, station_id=station_id, fingers=FINGERS)
        return build_package(
            record,
            tx,
            signer=self.signers[station_id],
            recipient=self.registry.keys.package_public_key(),
        )

    def export(self, station_id: str, packages: list[BuiltPackage]) -> Path:
        """``<media>/vn-eid/<station_id>/<export_id>/`` as the station writes it."""
        export_id = f"{next(self.counter):04d}-20261201T0300Z"
        folder = self.tmp / "media" / "vn-eid" / station_id / export_id
        (folder / "packages").mkdir(parents=True)
        listed = []
        for built in packages:
            (folder / "packages" / f"{built.package_id}.vnpkg").write_bytes(built.data)
            listed.append(
                {
                    "package_id": built.package_id,
                    "size": len(built.data),
                    "sha256": hashlib.sha256(built.data).hexdigest(),
                }
            )
        manifest = {
            "format": "vn-eid-media/1",
            "station_id": station_id,
            "export_id": export_id,
            "exported_at": "2026-12-01T03:00:00.000Z",
            "packages": listed,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return folder

    def station_ca(self, station_id: str) -> x509.Certificate:
        """The station CA as the station holds it (from its trust sync)."""
        trust = self.client.get("/v1/station/trust", auth=self.auth(station_id))
        assert trust.status_code == 200, trust.text
        return x509.load_pem_x509_certificate(trust.json()["station_ca"].encode())

    def receipt(self, station_id: str, package_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/packages/{package_id}", auth=self.auth(station_id))
        assert r.status_code == 200, r.text
        return dict(r.json())

    def package_rows(self) -> int:
        with Session(self.registry.engine) as session:
            return int(session.execute(select(func.count()).select_from(Package)).scalar_one())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("media")
    with TestClient(create_app(registrykit.registry_settings(tmp))) as client:
        admin = registrykit.login(client, *ADMIN)
        registry: Registry = client.app.state.registry  # type: ignore[attr-defined]
        yield World(client, registry, admin, tmp)


def signed_receipts(folder: Path, station_ca: x509.Certificate) -> dict[str, Any]:
    """Verify ``receipts.cose`` (COSE_Sign1, ES256, RFC 9052) with the station CA's key and
    return its payload, decoded."""
    tag = cbor2.loads((folder / "receipts.cose").read_bytes())
    assert isinstance(tag, cbor2.CBORTag)
    assert tag.tag == 18
    protected, unprotected, payload, signature = tag.value
    assert unprotected == {}
    header = cbor2.loads(protected)
    assert header[1] == -7  # ES256
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key = station_ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(der, to_be_signed, ec.ECDSA(hashes.SHA256()))  # raises when it does not
    # The signer's certificate travels in x5chain: the station CA itself.
    assert header[33] == station_ca.public_bytes(serialization.Encoding.DER)
    decoded = cbor2.loads(payload)
    assert isinstance(decoded, dict)
    return decoded


def by_package(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["package_id"]: r for r in payload["receipts"]}


def test_every_package_gets_a_signed_receipt(world: World) -> None:
    station = world.station()
    packages = [world.package(station, person) for person in (3, 4, 5)]
    folder = world.export(station, packages)
    result = import_media(world.registry, folder)
    assert (result.received, result.held, result.refused) == (3, 0, 0)
    payload = signed_receipts(folder, world.station_ca(station))
    assert payload["format"] == "vn-eid-receipts/1"
    assert payload["station_id"] == station
    assert payload["export_id"] == folder.name
    assert payload["issued_at"].endswith("Z")
    receipts = by_package(payload)
    assert list(receipts) == [p.package_id for p in packages]
    for built in packages:
        held = world.receipt(station, built.package_id)  # the station can ask online too
        assert receipts[built.package_id] == {
            "package_id": built.package_id,
            "receipt_number": held["receipt_number"],
            "state": "received",
            "error": None,
            "detail": None,
        }
    with Session(world.registry.engine) as session:
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "media.imported")
        ).all()
    assert [a.details["received"] for a in audit if a.subject == f"station:{station}"] == [3]


def test_importing_again_gives_the_same_receipts(world: World) -> None:
    station = world.station()
    online, offline = world.package(station, 6), world.package(station, 7)
    uploaded = world.client.put(
        f"/v1/packages/{online.package_id}", content=online.data, auth=world.auth(station)
    )
    assert uploaded.status_code == 201, uploaded.text
    folder = world.export(station, [online, offline])
    ca = world.station_ca(station)
    first = import_media(world.registry, folder)
    assert (first.received, first.held) == (1, 1)  # the uploaded one was held already
    receipts = by_package(signed_receipts(folder, ca))
    assert receipts[online.package_id]["receipt_number"] == uploaded.json()["receipt_number"]
    rows = world.package_rows()
    again = import_media(world.registry, folder)
    assert (again.received, again.held, again.refused) == (0, 2, 0)
    assert by_package(signed_receipts(folder, ca)) == receipts
    assert world.package_rows() == rows


def test_a_damaged_or_tampered_package_is_refused_alone(world: World) -> None:
    station = world.station()
    good, damaged, forged, lost, short = (world.package(station, p) for p in (8, 9, 10, 11, 12))
    folder = world.export(station, [good, damaged, forged, lost, short])
    files = folder / "packages"
    # A flipped byte the manifest does not know of: the media is damaged.
    data = bytearray((files / f"{damaged.package_id}.vnpkg").read_bytes())
    data[len(data) // 2] ^= 0x01
    (files / f"{damaged.package_id}.vnpkg").write_bytes(bytes(data))
    # Tampered, the manifest's digest updated to match: the package's own checks refuse it.
    data = bytearray((files / f"{forged.package_id}.vnpkg").read_bytes())
    data[-100] ^= 0x01
    (files / f"{forged.package_id}.vnpkg").write_bytes(bytes(data))
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["packages"]:
        if entry["package_id"] == forged.package_id:
            entry["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
        if entry["package_id"] == short.package_id:
            entry["size"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (files / f"{lost.package_id}.vnpkg").unlink()
    rows = world.package_rows()

    result = import_media(world.registry, folder)
    receipts = by_package(signed_receipts(folder, world.station_ca(station)))
    assert receipts[good.package_id]["receipt_number"]
    assert receipts[damaged.package_id]["error"] == "digest_mismatch"
    assert receipts[forged.package_id]["error"] in {"decryption_failed", "malformed_package"}
    assert receipts[lost.package_id]["error"] == "missing_file"
    assert receipts[short.package_id]["error"] == "size_mismatch"
    for refused in (damaged, forged, lost, short):
        assert receipts[refused.package_id]["receipt_number"] is None
        assert receipts[refused.package_id]["detail"]
    assert result.refused == 4
    assert world.package_rows() == rows + 1


def test_another_stations_package_is_refused(world: World) -> None:
    mine, theirs = world.station(), world.station()
    own, foreign = world.package(mine, 13), world.package(theirs, 14)
    folder = world.export(mine, [own, foreign])
    import_media(world.registry, folder)
    receipts = by_package(signed_receipts(folder, world.station_ca(mine)))
    assert receipts[own.package_id]["receipt_number"]
    assert receipts[foreign.package_id]["error"] == "signer_not_station"
    assert theirs in receipts[foreign.package_id]["detail"]
    with Session(world.registry.engine) as session:
        assert session.get(Package, uuid.UUID(foreign.package_id)) is None


def test_a_suspended_or_revoked_station_has_everything_refused(world: World) -> None:
    station = world.station()
    packages = [world.package(station, p) for p in (15, 16)]
    ca = world.station_ca(station)
    rows = world.package_rows()
    admin = world.admin
    world.client.post(f"/v1/stations/{station}/suspend", json={}, headers=admin).raise_for_status()
    folder = world.export(station, packages)
    import_media(world.registry, folder)
    assert {r["error"] for r in signed_receipts(folder, ca)["receipts"]} == {"station_suspended"}
    world.client.post(f"/v1/stations/{station}/resume", json={}, headers=admin).raise_for_status()
    world.client.post(f"/v1/stations/{station}/revoke", json={}, headers=admin).raise_for_status()
    folder = world.export(station, packages)
    result = import_media(world.registry, folder)
    assert result.refused == 2
    assert {r["error"] for r in signed_receipts(folder, ca)["receipts"]} == {"station_revoked"}
    assert world.package_rows() == rows


def test_a_re_enrolled_stations_old_key_is_refused(world: World) -> None:
    station = world.station()
    old = world.package(station, 17)
    token = world.client.post(f"/v1/stations/{station}/tokens", json={}, headers=world.admin)
    key = ec.generate_private_key(ec.SECP256R1())
    enrolled = world.client.post(
        "/v1/enroll",
        json={"token": token.json()["token"], "csr": registrykit.csr_for(key, station)},
    )
    assert enrolled.status_code == 201, enrolled.text
    cert = x509.load_pem_x509_certificate(enrolled.json()["certificate"].encode())
    world.signers[station] = SoftwareKeySigner(key, cert)
    new = world.package(station, 18)
    folder = world.export(station, [old, new])
    import_media(world.registry, folder)
    receipts = by_package(signed_receipts(folder, world.station_ca(station)))
    assert receipts[old.package_id]["error"] == "signer_key_not_current"
    assert receipts[new.package_id]["receipt_number"]


def test_a_folder_without_a_readable_manifest_is_refused(world: World) -> None:
    station = world.station()
    folder = world.export(station, [world.package(station, 19)])
    manifest = json.loads((folder / "manifest.json").read_text())
    for broken in (
        {**manifest, "format": "vn-eid-media/2"},
        {**manifest, "station_id": "../etc"},
        {key: value for key, value in manifest.items() if key != "packages"},
    ):
        (folder / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(MediaError, match="manifest"):
            import_media(world.registry, folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(MediaError, match="does not exist"):
        import_media(world.registry, folder)
    assert not (folder / "receipts.cose").exists()


def test_a_folder_where_receipts_cannot_be_written(world: World) -> None:
    station = world.station()
    built = world.package(station, 22)
    folder = world.export(station, [built])
    (folder / "receipts.cose").mkdir()  # in the way, as a read-only stick would be
    with pytest.raises(MediaError, match="import it again"):
        import_media(world.registry, folder)
    (folder / "receipts.cose").rmdir()
    again = import_media(world.registry, folder)  # the package was ingested: same receipt
    assert (again.received, again.held) == (0, 1)
    receipts = by_package(signed_receipts(folder, world.station_ca(station)))
    assert (
        receipts[built.package_id]["receipt_number"]
        == world.receipt(station, built.package_id)["receipt_number"]
    )


def test_command_line_prints_a_summary(world: World) -> None:
    station = world.station()
    good, lost = world.package(station, 20), world.package(station, 21)
    folder = world.export(station, [good, lost])
    (folder / "packages" / f"{lost.package_id}.vnpkg").unlink()
    settings = world.registry.settings
    env = {
        **os.environ,
        "REGISTRY_DATABASE__URL": settings.database.url.get_secret_value(),
        "REGISTRY_KEYS__PATH": str(settings.keys.path),
        "REGISTRY_BLOBS__BACKEND": "local",
        "REGISTRY_BLOBS__PATH": str(world.tmp / "blobs"),
        "REGISTRY_AUTH__JWT_SECRET_FILE": str(world.tmp / "jwt-secret"),
        "REGISTRY_WORKER__IN_PROCESS": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "central", "--log-format", "text", "media", "import", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # one package refused
    lines = done.stdout.splitlines()
    assert any(good.package_id in line and "received" in line for line in lines), done.stdout
    assert any(lost.package_id in line and "missing_file" in line for line in lines)
    assert "2 listed: 1 received, 0 already held, 1 refused" in done.stdout
    receipts = by_package(signed_receipts(folder, world.station_ca(station)))
    assert (
        receipts[good.package_id]["receipt_number"]
        == world.receipt(station, good.package_id)["receipt_number"]
    )
