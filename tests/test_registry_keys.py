"""The registry's keys on SQLite and a real PostgreSQL: created once on first start (also
when several processes start together), loaded afterwards; station certificates from
CSRs; the CSCA -> DS hierarchy with rotation, its chips verifying against the master list
before and after each rotation; DS keys inside SoftHSM; the keys command line."""

from __future__ import annotations

import argparse
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from central.audit_chain import verify_chain
from central.chipdata import ChipData, ChipSource, build_chip_data
from central.db import migrate
from central.db.engine import DatabaseSettings, make_engine, session_factory
from central.db.models import AuditEntry, SignerCertificate, SignerKind
from central.db.ops import audit_entries
from central.keys import (
    PACKAGE_KEY_FILE,
    STATION_CA_KEY_FILE,
    KeySettings,
    Pkcs11Settings,
    RegistryKeys,
    StationRequestError,
)
from central.keys_cli import TRUST_FILES, add_keys_parser, run_keys
from central.signers import NoDocumentSignerError
from enrollment.icao.errors import PassiveAuthError
from enrollment.icao.passive import verify_passive
from enrollment.keys.pkcs11 import Pkcs11Signer
from tests import icaokit, pkgkit
from tests.conftest import SoftHsmToken

T0 = datetime(2021, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _settings(tmp_path: Path, **kw: object) -> KeySettings:
    return KeySettings(path=tmp_path / "keys", **kw)


def _rows(engine: Engine) -> list[SignerCertificate]:
    with session_factory(engine).begin() as session:
        return list(
            session.execute(select(SignerCertificate).order_by(SignerCertificate.id)).scalars()
        )


def _chip(keys: RegistryKeys, now: datetime) -> ChipData:
    record, _ = pkgkit.example(3)
    source = ChipSource(record, icaokit.face_jpeg(), {2: icaokit.finger_wsq(1)})
    with session_factory(keys.engine).begin() as session:
        row, signer = keys.document_signer(session, now)
        return build_chip_data(source, "001090000001", now.date(), row, signer, signing_time=now)


def _verifies(chip: ChipData, cscas: list[x509.Certificate], at: datetime) -> x509.Certificate:
    """The CSCA certificate (of ``cscas``) the chip's Document Signer chains to."""
    return verify_passive(chip.sod, chip.data_groups(), cscas, at=at).csca


# ----------------------------------------------------------------- creation, loading


def test_first_start_creates_every_key_then_loads_them(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = RegistryKeys.open_or_create(settings, engine, now=T0)
    directory = settings.path
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.glob("*.key.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not list(directory.glob(".*.pem.*")), "temp files left behind"
    rows = _rows(engine)
    assert [r.kind for r in rows] == [SignerKind.csca, SignerKind.ds]
    assert all(r.key_ref.startswith("file:") for r in rows)

    again = RegistryKeys.open_or_create(settings, engine, now=T0 + timedelta(days=1))
    assert again.package_public_key() == first.package_public_key()
    assert again.station_ca == first.station_ca
    assert [r.id for r in _rows(engine)] == [r.id for r in rows]
    with session_factory(engine).begin() as session:
        entries = list(audit_entries(session))
    verify_chain(entries)
    assert [e.action for e in entries] == ["keys.csca.create", "keys.ds.rotate"]


def test_keys_refuse_files_others_can_read(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    RegistryKeys.open_or_create(settings, engine, now=T0)
    (settings.path / PACKAGE_KEY_FILE).chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        RegistryKeys.open_or_create(settings, engine, now=T0)


def test_a_lost_station_ca_key_is_not_silently_replaced(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    RegistryKeys.open_or_create(settings, engine, now=T0)
    (settings.path / STATION_CA_KEY_FILE).unlink()
    with pytest.raises(Exception, match="restore the key from the backup"):
        RegistryKeys.open_or_create(settings, engine, now=T0)


def test_processes_starting_together_make_one_hierarchy(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    opened: list[RegistryKeys] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def start() -> None:
        try:
            barrier.wait()
            opened.append(RegistryKeys.open_or_create(settings, engine, now=T0))
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert [r.kind for r in _rows(engine)] == [SignerKind.csca, SignerKind.ds]
    assert len({k.package_public_key().public_numbers() for k in opened}) == 1
    assert len({k.station_ca.serial_number for k in opened}) == 1


def test_settings_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"needs the keys\.pkcs11 section"):
        KeySettings(signer_backend="pkcs11")
    with pytest.raises(ValidationError, match="csca_validity_days must be at least"):
        KeySettings(csca_validity_days=20 * 365)
    assert KeySettings().path == Path("data/registry/keys")


# -------------------------------------------------------------- station certificates


@pytest.fixture
def sqlite_keys(sqlite_engine: Engine, tmp_path: Path) -> RegistryKeys:
    return RegistryKeys.open_or_create(_settings(tmp_path), sqlite_engine, now=T0)


def _csr(key: ec.EllipticCurvePrivateKey, common_name: str = "I am the registry") -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def test_station_certificate_from_a_csr_names_the_tokens_station(
    sqlite_keys: RegistryKeys,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sqlite_keys.issue_station_certificate_from_csr(_csr(key), "HN-BD-007", now=T0)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "HN-BD-007"
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(sqlite_keys.station_ca)
    der = x509.load_pem_x509_csr(_csr(key)).public_bytes(serialization.Encoding.DER)
    assert sqlite_keys.issue_station_certificate_from_csr(der, "X").public_key() == key.public_key()


def test_station_certificate_from_a_bare_public_key(sqlite_keys: RegistryKeys) -> None:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    for data in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ):
        assert sqlite_keys.issue_station_certificate_from_csr(data, "S1").public_key() == public
    assert sqlite_keys.issue_station_certificate_from_csr(public, "S1").public_key() == public


def test_station_requests_that_are_refused(sqlite_keys: RegistryKeys) -> None:
    # A request whose signed part was changed: the signature no longer proves possession.
    good = x509.load_pem_x509_csr(_csr(ec.generate_private_key(ec.SECP256R1())))
    der = good.public_bytes(serialization.Encoding.DER)
    forged = der.replace(b"the registry", b"the regisTry")
    assert forged != der
    with pytest.raises(StationRequestError, match="does not verify"):
        sqlite_keys.issue_station_certificate_from_csr(forged, "S1")
    with pytest.raises(StationRequestError, match="P-256"):
        sqlite_keys.issue_station_certificate_from_csr(
            _csr(ec.generate_private_key(ec.SECP384R1())), "S1"
        )
    with pytest.raises(StationRequestError, match="PKCS#10"):
        sqlite_keys.issue_station_certificate_from_csr(b"not a request", "S1")


# ------------------------------------------------------------------------- rotation


def test_chips_before_and_after_a_ds_rotation_both_verify(engine: Engine, tmp_path: Path) -> None:
    keys = RegistryKeys.open_or_create(_settings(tmp_path), engine, now=T0)
    before = _chip(keys, T0)
    new = keys.rotate_document_signer(actor="admin", reason="test", now=T0 + timedelta(days=1))
    after = _chip(keys, T0 + timedelta(days=2))
    assert after.signer_id == new.id != before.signer_id
    cscas = keys.master_list()
    assert len(cscas) == 1
    later = T0 + timedelta(days=400)  # both DS keys retired; their certificates still valid
    assert _verifies(before, cscas, later) == _verifies(after, cscas, later) == cscas[0]
    rows = _rows(engine)
    assert [r.retired_at is not None for r in rows if r.kind is SignerKind.ds] == [True, False]
    with session_factory(engine).begin() as session:
        last = session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc())).scalars().first()
    assert last is not None
    assert last.action == "keys.ds.rotate"
    assert last.actor == "admin"
    assert last.details["retired"] == [before.signer_id]


def test_chips_before_and_after_a_csca_rotation_both_verify(engine: Engine, tmp_path: Path) -> None:
    keys = RegistryKeys.open_or_create(_settings(tmp_path), engine, now=T0)
    old_csca = keys.master_list()[0]
    before = _chip(keys, T0)
    rotation = keys.rotate_csca(actor="admin", now=T0 + timedelta(days=30))
    after = _chip(keys, T0 + timedelta(days=31))
    assert after.signer_id == rotation.document_signer.id
    master = keys.master_list()
    assert len(master) == 3  # two self-signed CSCAs, then the link certificate
    new_csca, link = master[1], master[2]
    assert new_csca.issuer == new_csca.subject != old_csca.subject
    assert link.subject == new_csca.subject
    assert link.issuer == old_csca.subject
    assert link.public_key() == new_csca.public_key()
    link.verify_directly_issued_by(old_csca)
    at = T0 + timedelta(days=400)
    assert _verifies(before, master, at) == old_csca
    assert _verifies(after, master, at) == new_csca
    # A verifier that trusted only the old CSCA reaches new cards through the link.
    assert _verifies(after, [old_csca, link], at) == link
    with pytest.raises(PassiveAuthError, match="unknown CSCA"):
        _verifies(after, [old_csca], at)
    with pytest.raises(PassiveAuthError, match="unknown CSCA"):
        _verifies(before, [new_csca], at)
    # The old CSCA no longer certifies Document Signers: the next DS comes from the new one.
    ds = keys.rotate_document_signer(actor="admin", now=T0 + timedelta(days=32))
    x509.load_pem_x509_certificate(ds.certificate_pem.encode()).verify_directly_issued_by(new_csca)


def test_an_expired_ds_is_rotated_when_it_is_next_needed(engine: Engine, tmp_path: Path) -> None:
    keys = RegistryKeys.open_or_create(_settings(tmp_path, ds_key_usage_days=10), engine, now=T0)
    first = _chip(keys, T0)
    second = _chip(keys, T0 + timedelta(days=11))
    assert second.signer_id != first.signer_id
    assert [r.kind for r in _rows(engine)] == [SignerKind.csca, SignerKind.ds, SignerKind.ds]


def test_without_auto_rotation_an_expired_ds_stops_issuance(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path, ds_key_usage_days=10, auto_rotate=False)
    keys = RegistryKeys.open_or_create(settings, engine, now=T0)
    with pytest.raises(NoDocumentSignerError, match="keys rotate-ds"):
        _chip(keys, T0 + timedelta(days=11))


def test_an_expired_csca_is_rotated_with_a_link(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path, csca_key_usage_days=30, ds_key_usage_days=10)
    keys = RegistryKeys.open_or_create(settings, engine, now=T0)
    _chip(keys, T0 + timedelta(days=31))
    kinds = [(r.kind, r.retired_at is not None) for r in _rows(engine)]
    assert kinds == [
        (SignerKind.csca, True),
        (SignerKind.ds, True),
        (SignerKind.csca, False),
        (SignerKind.csca, True),  # the link: never signs
        (SignerKind.ds, False),
    ]


# --------------------------------------------------------------------------- SoftHSM


@pytest.mark.hsm
def test_card_pki_keys_inside_softhsm(
    softhsm_token: SoftHsmToken, sqlite_engine: Engine, tmp_path: Path
) -> None:
    t = softhsm_token
    settings = _settings(
        tmp_path,
        signer_backend="pkcs11",
        pkcs11=Pkcs11Settings(
            module=t.module_path,
            token_label=t.label,
            pin=SecretStr(t.pin),
            key_label_prefix=f"reg-{tmp_path.name}",
        ),
    )
    keys = RegistryKeys.open_or_create(settings, sqlite_engine, now=T0)
    rows = _rows(sqlite_engine)
    assert all(r.key_ref.startswith("pkcs11:") for r in rows)
    assert not list(settings.path.glob("csca*"))
    assert not list(settings.path.glob("ds-*"))
    chip = _chip(keys, T0)
    assert _verifies(chip, keys.master_list(), T0) == keys.master_list()[0]
    ds_label = rows[1].key_ref.removeprefix("pkcs11:")
    lib = pkcs11.lib(os.path.realpath(t.module_path))
    with lib.get_token(token_label=t.label).open(user_pin=t.pin) as session:
        private = session.get_key(
            object_class=pkcs11.ObjectClass.PRIVATE_KEY,
            key_type=pkcs11.KeyType.EC,
            label=ds_label,
        )
        assert private[pkcs11.Attribute.SENSITIVE] is True
        assert private[pkcs11.Attribute.EXTRACTABLE] is False
        assert private[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            private[pkcs11.Attribute.VALUE]
    # Rotation makes the next DS key on the token as well.
    new = keys.rotate_document_signer(actor="admin", now=T0 + timedelta(days=1))
    assert new.key_ref.startswith("pkcs11:")
    assert isinstance(keys.keyring.signer(new.key_ref), Pkcs11Signer)


# ---------------------------------------------------------------------- command line


@dataclass(frozen=True)
class _Settings:
    database: DatabaseSettings
    keys: KeySettings
    migrate_on_start: bool = True


def _cli(settings: _Settings) -> Callable[..., tuple[int, str]]:
    parser = argparse.ArgumentParser()
    add_keys_parser(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str, now: datetime = T0) -> tuple[int, str]:
        out = io.StringIO()
        code = run_keys(parser.parse_args(["keys", *argv]), settings, out=out, now=now)
        return code, out.getvalue()

    return run


def test_keys_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _Settings(
        DatabaseSettings(url=SecretStr(f"sqlite:///{tmp_path / 'registry.db'}")),
        _settings(tmp_path),
    )
    cli = _cli(settings)
    code, shown = cli("show")
    assert code == 0
    assert "CSCA #1 (active)" in shown
    assert "DS #2 (SIGNS NOW)" in shown
    assert shown.count("sha256    ") == 3  # station CA, CSCA, DS

    code, text = cli("rotate-ds", "--actor", "admin", now=T0 + timedelta(hours=1))
    assert (code, text.split(",")[0]) == (0, "new Document Signer #3")
    code, text = cli(
        "rotate-csca", "--actor", "admin", "--reason", "drill", now=T0 + timedelta(hours=2)
    )
    assert code == 0
    assert "link certificate #5" in text
    assert "new Document Signer #6" in text
    code, shown = cli("show", now=T0 + timedelta(hours=3))
    assert "DS #6 (SIGNS NOW)" in shown
    assert "link #5 (verification only)" in shown
    assert "DS #2 (retired" in shown

    code, text = cli("export-trust", str(tmp_path / "trust"), now=T0 + timedelta(hours=3))
    assert code == 0
    exported = {name: (tmp_path / "trust" / name).read_bytes() for name in TRUST_FILES.values()}
    assert len(x509.load_pem_x509_certificates(exported["csca-master-list.pem"])) == 3
    station_ca = x509.load_pem_x509_certificate(exported["station-ca.pem"])
    assert station_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(
        serialization.load_pem_public_key(exported["registry-package-key.pem"]),
        ec.EllipticCurvePublicKey,
    )

    # Without automatic rotation and with the CSCA's usage over, rotate-ds says what to do.
    strict = _Settings(settings.database, _settings(tmp_path, auto_rotate=False))
    code, _ = _cli(strict)("rotate-ds", "--actor", "admin", now=T0 + timedelta(days=6 * 365))
    assert code == 1
    assert "keys rotate-csca" in capsys.readouterr().err


def test_sessions_in_a_deferred_transaction_cannot_rotate(
    sqlite_keys: RegistryKeys, sqlite_engine: Engine
) -> None:
    # A read-only SQLite transaction does not hold the write lock: rotating there could
    # race another process, so it is refused with the reason.
    from central.signers import rotate_document_signer

    deferred: sessionmaker[Session] = session_factory(
        sqlite_engine.execution_options(sqlite_begin="DEFERRED")
    )
    with deferred.begin() as session, pytest.raises(RuntimeError, match="writing transaction"):
        rotate_document_signer(
            session, sqlite_keys.keyring, sqlite_keys.settings.policy(), T0, actor="x"
        )
