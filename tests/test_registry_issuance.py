"""Issuance on SQLite and a real PostgreSQL: personal numbers from the record's facts,
allocated by concurrent workers without duplicates or gaps; the chip data of a real
package (encrypted to the registry's key, signed by a station the registry certified),
checked by passive authentication, by `openssl cms -verify` and by the `mrz` package."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mrz.checker.td1 import TD1CodeChecker
from sqlalchemy import Engine, select

from central.chipdata import (
    ChipData,
    ChipDataError,
    ChipSource,
    allocate_personal_number,
    birth_date,
    build_chip_data,
    province_of_registration,
)
from central.db.engine import session_factory
from central.db.models import Person
from central.keys import KeySettings, RegistryKeys
from enrollment.icao import lds
from enrollment.icao.passive import verify_passive
from enrollment.icao.sod import cms_of
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import VerifiedPackage, build_package, open_package
from enrollment.personal_number import parse
from enrollment.record import Address, AdministrativeArea, DivisionScheme, EnrollmentRecord, Sex
from enrollment.trust import TrustStore
from tests import pkgkit

T0 = datetime(2021, 3, 1, 8, 0, tzinfo=UTC)


def _record(
    born: str = "1985-06-15",
    sex: Sex = Sex.male,
    place_of_birth: Address | None = None,
    seed: int = 1,
) -> EnrollmentRecord:
    record, _ = pkgkit.example(seed)
    d = record.demographics.model_copy(
        update={"date_of_birth": born, "sex": sex, "place_of_birth": place_of_birth}
    )
    return record.model_copy(update={"demographics": d})


HO_CHI_MINH = Address(
    areas=[
        AdministrativeArea(province_code="79", district_code="760", commune_code="26734"),
    ]
)


# ------------------------------------------------------------------- personal number


def test_the_prefix_comes_from_the_place_of_birth_sex_and_year() -> None:
    record = _record("2003-02-01", Sex.female, HO_CHI_MINH)
    assert province_of_registration(record) == "79"
    # Without a place of birth, the permanent residence (where the person is registered).
    plain = _record("1985", Sex.male)
    residence = plain.demographics.permanent_residence.area(DivisionScheme.pre_2025)
    assert residence is not None
    assert province_of_registration(plain) == residence.province_code


def test_a_2025_only_place_is_traced_to_its_old_province() -> None:
    # Phường Sài Gòn (2025) was formed from communes of District 1, Ho Chi Minh City (79).
    from enrollment import divisions

    tables = divisions.load()
    new_code = tables.successors["26734"]
    place = Address(areas=[tables.commune(new_code, DivisionScheme.y2025).area()])
    assert province_of_registration(_record(place_of_birth=place)) == "79"


def test_numbers_allocated_one_by_one(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions.begin() as session:
        first = allocate_personal_number(session, _record("2003-02-01", Sex.female, HO_CHI_MINH))
        second = allocate_personal_number(session, _record("2003-12-31", Sex.female, HO_CHI_MINH))
        other = allocate_personal_number(session, _record("1985-06-15", Sex.male, HO_CHI_MINH))
    assert (first, second, other) == ("079303000001", "079303000002", "079085000001")
    facts = parse(first)
    assert (facts.province, facts.sex, facts.birth_year) == ("079", Sex.female, 2003)
    with sessions.begin() as session:  # a rolled-back allocation leaves no gap
        allocate_personal_number(session, _record("2003", Sex.female, HO_CHI_MINH))
        session.rollback()
    with sessions.begin() as session:
        again = allocate_personal_number(session, _record("2003", Sex.female, HO_CHI_MINH))
    assert again == "079303000003"


def test_concurrent_workers_get_distinct_numbers_without_gaps(engine: Engine) -> None:
    sessions = session_factory(engine)
    record = _record("1990-01-01", Sex.male, HO_CHI_MINH)
    workers, each = 6, 8
    issued: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(each):
                with sessions.begin() as session:
                    number = allocate_personal_number(session, record)
                    # The number and the person who receives it commit together.
                    session.add(
                        Person(
                            personal_number=number,
                            created_from_package_id=uuid.uuid4(),
                            created_at=T0,
                        )
                    )
                with lock:
                    issued.append(number)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(issued) == len(set(issued)) == workers * each
    assert sorted(issued) == [f"079090{n:06d}" for n in range(1, workers * each + 1)]
    with sessions.begin() as session:
        stored = session.execute(select(Person.personal_number)).scalars().all()
    assert sorted(stored) == sorted(issued)


def test_partial_birth_dates_take_the_latest_day() -> None:
    assert birth_date("1990") == date(1990, 12, 31)
    assert birth_date("2004-02") == date(2004, 2, 29)
    assert birth_date("1990-04-30") == date(1990, 4, 30)


# ------------------------------------------------------------------------- chip data


@pytest.fixture
def keys(engine: Engine, tmp_path: Path) -> RegistryKeys:
    return RegistryKeys.open_or_create(KeySettings(path=tmp_path / "keys"), engine, now=T0)


def _package_through_the_registry(keys: RegistryKeys) -> VerifiedPackage:
    """A package as production makes it: the station's key certified by the registry's
    station CA from a CSR, the package encrypted to the registry's package key."""
    station_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(station_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    cert = keys.issue_station_certificate_from_csr(csr, pkgkit.STATION)
    record, tx = pkgkit.example(5)
    built = build_package(
        record,
        tx,
        signer=SoftwareKeySigner(station_key, cert),
        recipient=keys.package_public_key(),
    )
    trust = TrustStore()
    trust.add_certificate(keys.station_ca)
    return open_package(built.data, trust=trust, decryptor=keys.package_decryptor)


def _issue(keys: RegistryKeys, package: VerifiedPackage, now: datetime) -> ChipData:
    with session_factory(keys.engine).begin() as session:
        number = allocate_personal_number(session, package.record)
        row, signer = keys.document_signer(session, now)
        return build_chip_data(package, number, now.date(), row, signer, signing_time=now)


def test_chip_data_of_a_package_passes_passive_authentication(keys: RegistryKeys) -> None:
    package = _package_through_the_registry(keys)
    chip = _issue(keys, package, T0)
    result = verify_passive(chip.sod, chip.data_groups(), keys.master_list(), at=T0)
    assert result.verified == (1, 2, 3, 13, 14, 15)
    # DG2 is the package's face, DG3 its two index fingers (positions 2 and 7) only.
    assert lds.parse_dg2(chip.data_groups()[2])[0].jpeg == package.transaction.faces[0].data
    fingers = {f.position: f.wsq for f in lds.parse_dg3(chip.data_groups()[3])}
    wanted = {f.position: f.data for f in package.transaction.fingerprints if f.position in (2, 7)}
    assert fingers == wanted
    # DG1 holds a TD1 MRZ the independent `mrz` package accepts, for this number.
    assert bool(TD1CodeChecker("\n".join(chip.mrz[i : i + 30] for i in (0, 30, 60))))
    assert chip.mrz[5:14] == chip.document_number == chip.personal_number[3:]
    assert chip.personal_number in chip.mrz
    national = lds.parse_dg13(chip.data_groups()[13])
    assert national.personal_number == chip.personal_number
    assert national.full_name == package.record.demographics.full_name
    # The AA key the station writes onto the card is the one DG15 publishes.
    assert chip.active_auth_key is not None
    aa = serialization.load_der_private_key(chip.active_auth_key, None)
    assert isinstance(aa, ec.EllipticCurvePrivateKey)
    assert lds.parse_dg15(chip.data_groups()[15]) == aa.public_key()
    # A changed data group fails.
    tampered = dict(chip.data_groups())
    tampered[13] = tampered[13][:-1] + bytes([tampered[13][-1] ^ 1])
    with pytest.raises(Exception, match="DG13 does not match"):
        verify_passive(chip.sod, tampered, keys.master_list(), at=T0)


def test_every_card_gets_its_own_authentication_keys(keys: RegistryKeys) -> None:
    package = _package_through_the_registry(keys)
    one, two = _issue(keys, package, T0), _issue(keys, package, T0)
    assert one.personal_number != two.personal_number
    assert one.active_auth_key != two.active_auth_key
    assert one.chip_auth_key != two.chip_auth_key


def test_chip_data_round_trips_as_cbor_and_json(keys: RegistryKeys) -> None:
    chip = _issue(keys, _package_through_the_registry(keys), T0)
    data = chip.to_bytes()
    assert ChipData.from_bytes(data) == chip
    assert ChipData.from_bytes(data).to_bytes() == data
    view = chip.to_json()
    assert sorted(view["files"]) == sorted(
        ["EF.COM", "EF.SOD", "DG1", "DG2", "DG3", "DG13", "DG14", "DG15"]
    )
    assert view["files"]["EF.SOD"]["fid"] == "011D"
    for entry in view["files"].values():
        assert base64.b64decode(entry["data"]) == chip.files[int(entry["fid"], 16)]
    assert base64.b64decode(view["active_auth_key"]) == chip.active_auth_key
    kept = ChipData.from_bytes(chip.without_secrets().to_bytes())
    assert kept.active_auth_key is None
    assert kept.chip_auth_key is None
    assert kept.files == chip.files
    with pytest.raises(ChipDataError, match="trailing bytes"):
        ChipData.from_bytes(data + b"\x00")


def test_the_signer_must_be_the_document_signers_key(keys: RegistryKeys) -> None:
    package = _package_through_the_registry(keys)
    with session_factory(keys.engine).begin() as session:
        row, _ = keys.document_signer(session, T0)
        stranger = SoftwareKeySigner(ec.generate_private_key(ec.SECP256R1()))
        with pytest.raises(ChipDataError, match="not the key of Document Signer"):
            build_chip_data(package, "001090000001", T0.date(), row, stranger)


def test_a_package_without_index_fingers_gets_no_dg3(keys: RegistryKeys) -> None:
    record, tx = pkgkit.example(6, amputated=(2, 7))
    source = ChipSource(record, tx.faces[0].data, {f.position: f.data for f in tx.fingerprints})
    with session_factory(keys.engine).begin() as session:
        row, signer = keys.document_signer(session, T0)
        chip = build_chip_data(source, "001090000001", T0.date(), row, signer)
    assert 3 not in chip.data_groups()
    verify_passive(chip.sod, chip.data_groups(), keys.master_list(), at=T0)


def test_openssl_verifies_the_sod_against_the_exported_csca(
    keys: RegistryKeys, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    chip = _issue(keys, _package_through_the_registry(keys), T0)
    sod, econtent, csca = tmp_path / "sod.der", tmp_path / "lso.der", tmp_path / "csca.pem"
    sod.write_bytes(cms_of(chip.sod))
    csca.write_bytes(keys.master_list_pem())

    def verify(ca_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(sod),
             "-CAfile", str(ca_file), "-purpose", "any", "-out", str(econtent)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    done = verify(csca)
    assert done.returncode == 0, done.stderr
    parsed = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER", "-in", str(econtent)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    hashes_ = re.findall(r"prim: OCTET STRING\s+\[HEX DUMP\]:([0-9A-F]+)", parsed)
    assert sorted(bytes.fromhex(h) for h in hashes_) == sorted(
        hashlib.sha256(b).digest() for b in chip.data_groups().values()
    )
    # Under a CSCA rotation's new anchor only, the old chip's SOD does not verify.
    keys.rotate_csca(actor="test", now=T0 + timedelta(days=1))
    (tmp_path / "new.pem").write_bytes(
        keys.master_list()[1].public_bytes(serialization.Encoding.PEM)
    )
    assert verify(tmp_path / "new.pem").returncode != 0
