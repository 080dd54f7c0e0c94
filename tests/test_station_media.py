"""Removable media: export of the unacknowledged packages, signed receipts back.

Most tests sign the receipts themselves with a station CA key made by
``enrollment.pki.make_station_ca``, exactly as the wire format describes (COSE_Sign1
ES256 by the station CA key over the CBOR receipts document), so each refusal can be
made on purpose. One test goes the whole way: the station's export imported by the
registry's own command (``python -m central media import``), its receipts read back.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from central.app import create_app
from enrollment import cose
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import BuiltPackage, build_package
from enrollment.pki import make_station_ca
from enrollment.request_signing import StationRequestAuth
from station.media import (
    MediaError,
    ReceiptsError,
    export_to,
    import_receipts,
    receipts_payload,
)
from station.outbox import OUTBOX_SCHEMA, Outbox
from station.store.database import StationDatabase
from tests import pkgkit, processkit, registrykit, tmpfskit

REPO = Path(__file__).resolve().parent.parent
STATION = pkgkit.STATION
CONTENT_TYPE = "application/vnd.vn-eid.receipts+cbor"


class Registry:
    """The registry's station CA as far as receipts go."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert: x509.Certificate = make_station_ca(self.key)

    def sign(
        self,
        folder: Path,
        receipts: Sequence[Mapping[str, Any]],
        *,
        station_id: str | None = None,
        export_id: str | None = None,
    ) -> Path:
        manifest = json.loads((folder / "manifest.json").read_text())
        payload = receipts_payload(
            station_id or manifest["station_id"],
            export_id or manifest["export_id"],
            receipts,
            datetime.now(UTC),
        )
        blob = cose.sign1(payload, SoftwareKeySigner(self.key, self.cert), CONTENT_TYPE)
        path = folder / "receipts.cose"
        path.write_bytes(blob)
        return path


def accepted(package_id: str, number: str) -> dict[str, Any]:
    return {
        "package_id": package_id,
        "receipt_number": number,
        "state": "received",
        "error": None,
        "detail": None,
    }


@pytest.fixture(scope="module")
def packages() -> list[BuiltPackage]:
    kit = pkgkit.make_kit()
    record, tx = pkgkit.example(2)
    return [
        build_package(record, tx, signer=kit.signer, recipient=kit.registry_key.public_key())
        for _ in range(4)
    ]


@pytest.fixture
def outbox(tmp_path: Path, packages: list[BuiltPackage]) -> Iterator[Outbox]:
    db = StationDatabase(tmp_path / "station.db")
    db.migrate(OUTBOX_SCHEMA)
    box = Outbox(db, tmp_path / "outbox")
    for i, built in enumerate(packages):
        box.add(built, f"case-{i}")
    try:
        yield box
    finally:
        db.close()


def snapshot(outbox: Outbox) -> list[dict[str, Any]]:
    return [e.as_json() for e in outbox.list(limit=100)]


def test_export_writes_the_packages_and_the_manifest_last(
    outbox: Outbox, packages: list[BuiltPackage], tmp_path: Path
) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    outbox.mark_acknowledged(packages[3].package_id, "R-3")  # sent over the network already
    result = export_to(outbox, media, STATION)
    assert result.folder == media / "vn-eid" / STATION / result.export_id
    wanted = [p.package_id for p in packages[:3]]
    assert list(result.packages) == wanted
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["format"] == "vn-eid-media/1"
    assert (manifest["station_id"], manifest["export_id"]) == (STATION, result.export_id)
    assert manifest["exported_at"].endswith("Z")
    assert [m["package_id"] for m in manifest["packages"]] == wanted
    for item, built in zip(manifest["packages"], packages, strict=False):
        data = (result.folder / "packages" / f"{item['package_id']}.vnpkg").read_bytes()
        assert data == built.data
        assert item == {
            "package_id": built.package_id,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    assert sorted(p.name for p in result.folder.rglob("*") if p.name.startswith(".")) == []
    states = {e.package_id: (e.state, e.export_id) for e in outbox.list()}
    assert states[packages[0].package_id] == ("exported", result.export_id)
    assert states[packages[3].package_id] == ("acknowledged", None)
    assert result.total_bytes == sum(len(p.data) for p in packages[:3])
    assert json.loads(json.dumps(result.as_json()))["packages"] == wanted

    # Until a receipt comes back, every export carries them again.
    outbox.mark_acknowledged(packages[0].package_id, "R-0")
    again = export_to(outbox, media, STATION)
    assert again.export_id != result.export_id
    assert list(again.packages) == wanted[1:]


def test_nothing_to_export(outbox: Outbox, packages: list[BuiltPackage], tmp_path: Path) -> None:
    for i, built in enumerate(packages):
        outbox.mark_acknowledged(built.package_id, f"R-{i}")
    media = tmp_path / "usb"
    media.mkdir()
    result = export_to(outbox, media, STATION)
    assert (result.folder, result.packages) == (None, ())
    assert list(media.iterdir()) == []
    with pytest.raises(MediaError, match="insert and mount"):
        export_to(outbox, tmp_path / "no-stick", STATION)


def test_receipts_acknowledge_and_refuse(
    outbox: Outbox, packages: list[BuiltPackage], tmp_path: Path
) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    registry = Registry()
    export = export_to(outbox, media, STATION)
    assert export.folder is not None
    ids = [p.package_id for p in packages]
    registry.sign(
        export.folder,
        [
            accepted(ids[0], "R-000"),
            accepted(ids[1], "R-001"),
            {
                "package_id": ids[2],
                "receipt_number": None,
                "state": None,
                "error": "bad_signature",
                "detail": "the manifest signature does not verify",
            },
            accepted("0190c0de-0000-7000-8000-000000000000", "R-X"),  # not ours
        ],
    )
    result = import_receipts(outbox, export.folder, registry.cert, station_id=STATION)
    assert result.export_id == export.export_id
    assert list(result.acknowledged) == ids[:2]
    assert list(result.refused) == [ids[2]]
    assert list(result.unknown) == ["0190c0de-0000-7000-8000-000000000000"]
    assert result.as_json()["refused"] == [ids[2]]
    first = outbox.get(ids[0])
    assert first is not None
    assert (first.state, first.receipt_number, first.registry_state) == (
        "acknowledged",
        "R-000",
        "received",
    )
    third = outbox.get(ids[2])
    assert third is not None
    assert (third.state, third.refused_code) == ("refused", "bad_signature")
    fourth = outbox.get(ids[3])
    assert fourth is not None
    assert fourth.state == "exported"  # no receipt for it: still pending

    # The same receipts again (a second look at the stick): nothing new, nothing broken.
    again = import_receipts(outbox, export.folder, registry.cert, station_id=STATION)
    assert (again.acknowledged, again.refused) == ((), ())
    assert sorted(again.unchanged) == sorted(ids[:3])


@pytest.mark.parametrize("forgery", ["other-key", "other-station", "other-export", "tampered"])
def test_forged_or_misplaced_receipts_change_nothing(
    forgery: str, outbox: Outbox, packages: list[BuiltPackage], tmp_path: Path
) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    registry = Registry()
    export = export_to(outbox, media, STATION)
    assert export.folder is not None
    receipts = [accepted(p.package_id, f"R-{i}") for i, p in enumerate(packages)]
    before = snapshot(outbox)
    if forgery == "other-key":
        Registry().sign(export.folder, receipts)
        match = "signed by another key"
    elif forgery == "other-station":
        registry.sign(export.folder, receipts, station_id="HN-BD-002")
        match = "for station 'HN-BD-002'"
    elif forgery == "other-export":
        registry.sign(export.folder, receipts, export_id="20260101T000000Z-abcdef")
        match = "is for export"
    else:
        path = registry.sign(export.folder, receipts)
        blob = bytearray(path.read_bytes())
        at = blob.index(b"R-1")
        blob[at + 2] = ord("7")  # R-1 -> R-7 inside the signed payload
        path.write_bytes(bytes(blob))
        match = "signature does not verify"
    with pytest.raises(ReceiptsError, match=match):
        import_receipts(outbox, export.folder, registry.cert, station_id=STATION)
    assert snapshot(outbox) == before


def test_receipts_problems_are_explained(
    outbox: Outbox, packages: list[BuiltPackage], tmp_path: Path
) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    registry = Registry()
    export = export_to(outbox, media, STATION)
    assert export.folder is not None
    with pytest.raises(ReceiptsError, match="import the export at the registry first"):
        import_receipts(outbox, export.folder, registry.cert, station_id=STATION)
    (export.folder / "receipts.cose").write_bytes(b"not cbor")
    with pytest.raises(ReceiptsError, match="not a COSE_Sign1"):
        import_receipts(outbox, export.folder, registry.cert, station_id=STATION)
    with pytest.raises(ReceiptsError, match="export of station"):
        import_receipts(outbox, export.folder, registry.cert, station_id="HN-BD-009")
    with pytest.raises(MediaError, match="not a complete export"):
        import_receipts(outbox, tmp_path, registry.cert, station_id=STATION)
    registry.sign(export.folder, [{"package_id": packages[0].package_id}])
    with pytest.raises(ReceiptsError, match="neither a number nor an error"):
        import_receipts(outbox, export.folder, registry.cert, station_id=STATION)


SMALL_STICK = """
import pickle
from station.media import MediaError, export_to
from station.outbox import OUTBOX_SCHEMA, Outbox
from station.store.database import StationDatabase
db = StationDatabase(base / "station.db")
db.migrate(OUTBOX_SCHEMA)
outbox = Outbox(db, base / "outbox")
for i, built in enumerate(pickle.loads((base / "packages.pickle").read_bytes())):
    outbox.add(built, f"case-{i}")
try:
    export_to(outbox, base / "usb", "HN-BD-001")
except MediaError as exc:
    print("refused:", exc)
else:
    raise SystemExit("exported onto a stick too small")
assert list((base / "usb").iterdir()) == []
assert {e.state for e in outbox.list()} == {"queued"}
print("ok")
"""


def test_a_stick_too_small_is_refused_before_copying(
    tmp_path: Path, packages: list[BuiltPackage]
) -> None:
    """A real small medium: a 256 KiB tmpfs in a private mount namespace."""
    (tmp_path / "packages.pickle").write_bytes(pickle.dumps(packages))
    out = tmpfskit.run_on_tmpfs(SMALL_STICK, tmp_path, "usb", "256k")
    assert "larger or emptier stick" in out
    assert out.strip().endswith("ok")


def test_round_trip_through_the_registrys_media_import(tmp_path: Path) -> None:
    """Export here, ``python -m central media import`` there, receipts back here."""
    registry_dir = tmp_path / "registry"
    registry_dir.mkdir()
    with TestClient(create_app(registrykit.registry_settings(registry_dir))) as client:
        admin = registrykit.login(client, *registrykit.ADMIN)
        signer, _ = registrykit.onboard(client, admin, STATION)
        trust = client.get("/v1/station/trust", auth=StationRequestAuth(signer, STATION))
        assert trust.status_code == 200, trust.text
    station_ca = x509.load_pem_x509_certificate(trust.json()["station_ca"].encode())
    recipient = serialization.load_pem_public_key(trust.json()["package_public_key"].encode())
    assert isinstance(recipient, ec.EllipticCurvePublicKey)
    record, tx = pkgkit.example(3)
    good = [build_package(record, tx, signer=signer, recipient=recipient) for _ in range(2)]
    # Signed by a key of a CA the registry never heard of: refused there.
    untrusted = build_package(record, tx, signer=pkgkit.make_kit().signer, recipient=recipient)

    db = StationDatabase(tmp_path / "station.db")
    try:
        db.migrate(OUTBOX_SCHEMA)
        outbox = Outbox(db, tmp_path / "outbox")
        for i, built in enumerate([*good, untrusted]):
            outbox.add(built, f"case-{i}")
        media = tmp_path / "usb"
        media.mkdir()
        export = export_to(outbox, media, STATION)
        assert export.folder is not None

        env = processkit.registry_env(
            registry_dir, f"sqlite:///{registry_dir / 'registry.db'}", registrykit.ADMIN
        )
        command = [sys.executable, "-m", "central", "media", "import", str(export.folder)]
        first = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert first.returncode == 1, first.stdout + first.stderr  # one package refused
        result = import_receipts(outbox, export.folder, station_ca, station_id=STATION)
        assert sorted(result.acknowledged) == sorted(b.package_id for b in good)
        assert list(result.refused) == [untrusted.package_id]
        refused = outbox.get(untrusted.package_id)
        assert refused is not None
        assert refused.state == "refused"
        assert refused.refused_code
        numbers = {b.package_id: outbox.get(b.package_id).receipt_number for b in good}  # type: ignore[union-attr]
        assert all(numbers.values())

        # The stick goes through the registry again: the same receipts, nothing new here.
        second = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert second.returncode == 1, second.stdout + second.stderr
        again = import_receipts(outbox, export.folder, station_ca, station_id=STATION)
        assert (again.acknowledged, again.refused) == ((), ())
        assert {b.package_id: outbox.get(b.package_id).receipt_number for b in good} == numbers  # type: ignore[union-attr]
    finally:
        db.close()
