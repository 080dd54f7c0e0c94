"""ICAO 9303 LDS: TLV, TD1 MRZ, data groups, EF.SOD and passive authentication.

Independent checks: the `mrz` package for TD1 check digits, a real CCCD's MRZ, the ICAO
worked example for the BAC seed, `openssl cms -verify` and `openssl asn1parse` for EF.SOD.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
import subprocess
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from mrz.checker.td1 import TD1CodeChecker
from mrz.generator.td1 import TD1CodeGenerator
from PIL import Image

from enrollment import images
from enrollment.icao import lds, tlv
from enrollment.icao.chip import (
    FID_COM,
    FID_SOD,
    ChipContents,
    build_chip,
    dg_number,
    fid_of,
)
from enrollment.icao.errors import LdsError, PassiveAuthError
from enrollment.icao.from_record import chip_from_record
from enrollment.icao.mrz import (
    cccd_td1,
    check_digit,
    mrz_information,
    name_field,
    parse_td1,
    transliterate,
)
from enrollment.icao.passive import verify_passive
from enrollment.icao.pki import issue_document_signer, make_csca
from enrollment.icao.sod import build_sod, cms_of, from_signer, parse_sod
from enrollment.icao.validity import cccd_expiry
from enrollment.keys.pkcs11 import Pkcs11Signer
from enrollment.keys.software import SoftwareKeySigner
from tests import icaokit, pkgkit

if TYPE_CHECKING:
    from tests.conftest import SoftHsmToken

# ----------------------------------------------------------------------------------- TLV

# Tags as ICAO uses them: one byte (primitive / constructed), two bytes (5F1F, 7F61),
# three bytes (5F8101 style) built from valid continuation bytes.
one_byte = st.integers(0, 0xFF).filter(lambda t: t & 0x1F != 0x1F)
two_byte = st.tuples(st.sampled_from([0x5F, 0x7F, 0x9F, 0xBF]), st.integers(0, 0x7F)).map(
    lambda p: p[0] << 8 | p[1]
)
three_byte = st.tuples(
    st.sampled_from([0x5F, 0x7F]), st.integers(0x80, 0xFF), st.integers(0, 0x7F)
).map(lambda p: p[0] << 16 | p[1] << 8 | p[2])
tags = st.one_of(one_byte, two_byte, three_byte)


def test_tlv_known_encodings() -> None:
    assert tlv.tlv(0x5F1F, b"AB") == bytes.fromhex("5F1F024142")
    assert tlv.tlv(0x61, b"\x00" * 0x80) == bytes.fromhex("618180") + b"\x00" * 0x80
    assert tlv.tlv(0x75, b"\x00" * 0x1234)[:4] == bytes.fromhex("75821234")
    obj, end = tlv.decode_tlv(bytes.fromhex("7F6103020101ff"))
    assert (obj.tag, obj.value, end) == (0x7F61, b"\x02\x01\x01", 6)
    assert tlv.is_constructed(0x7F61)
    assert not tlv.is_constructed(0x5F1F)
    assert tlv.object_length(bytes.fromhex("7582123400")) == 4 + 0x1234


@given(tag=tags, value=st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_tlv_round_trip(tag: int, value: bytes) -> None:
    encoded = tlv.tlv(tag, value)
    assert tlv.expect(encoded, tag) == value
    assert tlv.object_length(encoded[:8]) == len(encoded)
    pair = encoded + tlv.tlv(0x02, b"\x01")
    assert [(o.tag, o.value) for o in tlv.iter_tlv(pair)] == [(tag, value), (0x02, b"\x01")]


@given(tag=tags, value=st.binary(min_size=1, max_size=200), cut=st.integers(1, 400))
@settings(max_examples=200, deadline=None)
def test_tlv_truncation_is_an_lds_error(tag: int, value: bytes, cut: int) -> None:
    encoded = tlv.tlv(tag, value)
    short = encoded[: max(0, len(encoded) - cut)]
    with pytest.raises(LdsError):
        tlv.expect(short, tag)


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_tlv_fuzz_only_lds_errors(data: bytes) -> None:
    try:
        objs = list(tlv.iter_tlv(data))
    except LdsError:
        return
    # What parses re-encodes to the same length (lengths may be non-minimal on input).
    assert sum(len(tlv.tlv(o.tag, o.value)) for o in objs) <= len(data)


def test_tlv_rejects_bad_lengths_and_trailing_bytes() -> None:
    with pytest.raises(LdsError, match="indefinite"):
        tlv.decode_tlv(bytes.fromhex("618000"))
    with pytest.raises(LdsError, match="5 bytes"):
        tlv.decode_tlv(bytes.fromhex("61850000000001"))
    with pytest.raises(LdsError, match="declares 5 bytes"):
        tlv.decode_tlv(bytes.fromhex("6105414243"))
    with pytest.raises(LdsError, match="follow"):
        tlv.expect(bytes.fromhex("61014100"), 0x61)
    with pytest.raises(LdsError, match="expected tag 61"):
        tlv.expect(bytes.fromhex("620141"), 0x61)
    with pytest.raises(LdsError, match="longer than three"):
        tlv.decode_tlv(bytes.fromhex("5F818181010041"))
    with pytest.raises(ValueError, match="not a valid BER tag"):
        tlv.encode_tag(0x5F80)


# ----------------------------------------------------------------------------------- MRZ


def test_cccd_mrz_matches_a_real_card() -> None:
    # The MRZ of a real CCCD (as published in a public repository): last nine digits as the
    # document number, the 12-digit number and its check digit in optional data 1.
    td1 = cccd_td1(
        personal_number="051091005513",
        full_name="Đinh Duy Tân",
        birth_date=date(1991, 1, 1),
        sex="M",
        expiry=date(2031, 1, 1),
    )
    assert td1.lines() == (
        "IDVNM0910055134051091005513<<0",
        "9101014M3101012VNM<<<<<<<<<<<8",
        "DINH<<DUY<TAN<<<<<<<<<<<<<<<<<",
    )
    assert td1.personal_number == "051091005513"


def test_bac_seed_matches_the_icao_worked_example() -> None:
    # ICAO 9303-11 Appendix D.2.
    assert mrz_information("L898902C", "690806", "940623") == "L898902C<369080619406236"


@pytest.mark.parametrize(
    ("name", "sex", "born", "expiry"),
    [
        ("Nguyễn Văn Đức", "M", date(1990, 1, 15), date(2030, 1, 15)),
        ("Đặng Thị Ngọc Ánh", "F", date(2005, 12, 31), date(2030, 12, 31)),
        ("Hoàng Ngọc Phương Quỳnh", "F", date(1961, 7, 4), date(2036, 7, 4)),
        ("Lò Văn Páo", "M", date(1978, 2, 28), date(2038, 2, 28)),
    ],
)
def test_td1_agrees_with_the_mrz_package(name: str, sex: str, born: date, expiry: date) -> None:
    number = f"0010{born:%y}{born:%m%d}45"
    td1 = cccd_td1(personal_number=number, full_name=name, birth_date=born, sex=sex, expiry=expiry)
    words = transliterate(name).split("<")
    theirs = TD1CodeGenerator(
        "ID",
        "VNM",
        number[3:],
        born.strftime("%y%m%d"),
        sex,
        expiry.strftime("%y%m%d"),
        "VNM",
        words[0],
        " ".join(words[1:]),
        optional_data1=number + "<<" + check_digit(number),
    )
    lines = td1.lines()
    assert str(theirs).split("\n")[:2] == list(lines[:2])
    assert TD1CodeChecker("\n".join(lines))
    assert parse_td1("\n".join(lines)) == td1
    assert len(td1.text()) == 90


def test_names_transliterate_and_truncate() -> None:
    assert transliterate("Đặng Thị Ngọc Ánh") == "DANG<THI<NGOC<ANH"
    assert name_field("Đặng Thị Ngọc Ánh") == "DANG<<THI<NGOC<ANH".ljust(30, "<")
    assert name_field("Nguyễn") == "NGUYEN".ljust(30, "<")
    long = name_field("Tôn Nữ Thị Hoàng Ngọc Phương Quỳnh Như Ý")
    assert len(long) == 30
    assert long == "TON<<NU<THI<HOANG<NGOC<P<Q<N<Y"
    assert long[-1] != "<"
    with pytest.raises(LdsError, match="no MRZ characters"):
        name_field("  ")


def test_partial_birth_date_and_no_expiry() -> None:
    td1 = cccd_td1(
        personal_number="001090012345",
        full_name="Lê Văn Minh",
        birth_date="1950",
        sex="M",
        expiry=None,
    )
    line2 = td1.lines()[1]
    assert line2.startswith("50<<<<" + check_digit("50<<<<") + "M<<<<<<")
    assert parse_td1(td1.text()) == td1
    assert td1.mrz_information() == "090012345" + check_digit("090012345") + line2[:7] + line2[8:15]


def test_parse_td1_names_the_broken_check_digit() -> None:
    text = icaokit.sample_td1().text()
    broken = text[:30] + ("1" if text[30] != "1" else "2") + text[31:]
    with pytest.raises(LdsError, match="date of birth"):
        parse_td1(broken)
    with pytest.raises(LdsError, match="90 characters"):
        parse_td1(text[:-1])
    with pytest.raises(LdsError, match="12 digits"):
        cccd_td1(
            personal_number="12345",
            full_name="A B",
            birth_date=date(2000, 1, 1),
            sex="M",
            expiry=None,
        )


# ----------------------------------------------------------------------------------- LDS


def test_ef_com_and_dg1() -> None:
    assert lds.build_com([15, 1, 2]) == bytes.fromhex(
        "60155F0104303130375F36063034303030305C0361756F"
    )
    assert lds.parse_com(lds.build_com([1, 2, 3, 13, 14, 15])) == [1, 2, 3, 13, 14, 15]
    mrz = icaokit.sample_td1().text()
    dg1 = lds.build_dg1(mrz)
    assert dg1[:5] == bytes.fromhex("615D5F1F5A")
    assert lds.parse_dg1(dg1) == mrz


def test_dg2_face_round_trip() -> None:
    jpeg = icaokit.face_jpeg()
    w, h = icaokit.FACE_SIZE
    face = lds.FaceImage(jpeg, w, h, gender=2)
    dg2 = lds.build_dg2([face])
    assert lds.parse_dg2(dg2) == [face]
    # The biometric data block is an ISO/IEC 19794-5 record whose length field is right.
    block = dg2[dg2.index(b"FAC\x00") :]
    assert block[4:8] == b"010\x00"
    assert int.from_bytes(block[8:12], "big") == len(block) == 14 + 32 + len(jpeg)
    with Image.open(io.BytesIO(lds.parse_dg2(dg2)[0].jpeg)) as im:
        assert im.size == (w, h)


def test_dg3_fingers_round_trip() -> None:
    wsq = icaokit.finger_wsq()
    dg3 = lds.build_dg3([lds.FingerImage(wsq, 2), lds.FingerImage(icaokit.finger_wsq(2), 7)])
    fingers = lds.parse_dg3(dg3)
    assert [f.position for f in fingers] == [2, 7]
    assert (fingers[0].width, fingers[0].height) == icaokit.FINGER_SIZE
    assert fingers[0].wsq == wsq
    assert fingers[0].ppi == 500
    assert images.decode_wsq(fingers[0].wsq).shape == icaokit.FINGER_SIZE[::-1]
    # CBEFF subtype: right index = 01 | 08; left index = 02 | 08.
    assert bytes.fromhex("820109") in dg3
    assert bytes.fromhex("82010A") in dg3
    with pytest.raises(LdsError, match="not WSQ"):
        lds.build_dg3([lds.FingerImage(b"not a wsq image", 1)])


def test_dg13_round_trip_keeps_vietnamese() -> None:
    data = icaokit.sample_national_data()
    dg13 = lds.build_dg13(data)
    assert lds.parse_dg13(dg13) == data
    assert "Nguyễn Văn Đức".encode() in dg13
    no_expiry = lds.NationalData(**{**data.__dict__, "date_of_expiry": None, "father_name": None})
    assert lds.parse_dg13(lds.build_dg13(no_expiry)) == no_expiry


def test_dg13_rejects_unknown_layout_and_missing_fields() -> None:
    with pytest.raises(LdsError, match="layout version"):
        lds.parse_dg13(tlv.tlv(0x6D, tlv.tlv(0x80, b"\x09")))
    with pytest.raises(LdsError, match="lacks personal_number"):
        lds.parse_dg13(tlv.tlv(0x6D, tlv.tlv(0x80, b"\x01") + tlv.tlv(0x82, b"A")))


def test_dg14_and_dg15_round_trip(tmp_path: Path) -> None:
    ca = ec.generate_private_key(ec.SECP256R1()).public_key()
    infos = lds.SecurityInfos(chip_auth_key=ca, aa_signature_algorithm=lds.ECDSA_PLAIN_SHA256)
    dg14 = lds.build_dg14(infos)
    parsed = lds.parse_dg14(dg14)
    assert parsed.pace_protocols == (lds.ID_PACE_ECDH_GM_AES_CBC_CMAC_128,)
    assert parsed.chip_auth_protocol == lds.ID_CA_ECDH_AES_CBC_CMAC_128
    assert parsed.aa_signature_algorithm == lds.ECDSA_PLAIN_SHA256
    assert parsed.chip_auth_key is not None
    assert parsed.chip_auth_key.public_numbers() == ca.public_numbers()
    # openssl reads the SecurityInfos as a DER SET with the object identifiers in it.
    der = tmp_path / "dg14.der"
    der.write_bytes(tlv.expect(dg14, 0x6E))
    out = _openssl("asn1parse", "-inform", "DER", "-in", str(der))
    assert out.splitlines()[0].split("cons:")[1].strip() == "SET"
    for oid in ("0.4.0.127.0.7.2.2.4.2.2", "0.4.0.127.0.7.2.2.1.2", "2.23.136.1.1.5"):
        assert oid in out
    aa = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert lds.parse_dg15(lds.build_dg15(aa)).public_numbers() == aa.public_numbers()


# ------------------------------------------------------------------------ chip and SOD


def test_chip_files_and_identifiers() -> None:
    chip, secrets, _ = icaokit.sample_chip()
    assert sorted(chip.files) == [0x0101, 0x0102, 0x0103, 0x010D, 0x010E, 0x010F, 0x011D, 0x011E]
    assert sorted(chip.data_groups()) == [1, 2, 3, 13, 14, 15]
    assert lds.parse_com(chip.files[FID_COM]) == [1, 2, 3, 13, 14, 15]
    assert chip.mrz == icaokit.sample_td1().text()
    assert chip.mrz_information == icaokit.sample_td1().mrz_information()
    assert secrets.active_auth_key is not None
    assert secrets.chip_auth_key is not None
    aa = lds.parse_dg15(chip.files[fid_of(15)])
    assert aa.public_numbers() == secrets.active_auth_key.public_key().public_numbers()
    assert (fid_of(13), dg_number(0x010D), dg_number(FID_SOD)) == (0x010D, 13, None)
    assert parse_sod(chip.sod).hashes == {
        dg: hashlib.sha256(data).digest() for dg, data in chip.data_groups().items()
    }


def test_passive_authentication_accepts_a_good_chip() -> None:
    chip, _, pki = icaokit.sample_chip()
    result = verify_passive(chip.sod, chip.data_groups(), [pki.csca])
    assert result.verified == (1, 2, 3, 13, 14, 15)
    assert result.not_read == ()
    assert result.document_signer == pki.ds
    assert result.csca == pki.csca
    assert result.signing_time is not None
    # DG3 behind EAC: not read, reported, not a failure.
    groups = {dg: b for dg, b in chip.data_groups().items() if dg != 3}
    assert verify_passive(chip.sod, groups, [pki.csca]).not_read == (3,)


def test_passive_authentication_rejects_a_forged_data_group() -> None:
    chip, _, pki = icaokit.sample_chip()
    groups = chip.data_groups()
    dg2 = bytearray(groups[2])
    dg2[-10] ^= 0x01
    groups[2] = bytes(dg2)
    with pytest.raises(PassiveAuthError, match="DG2 does not match"):
        verify_passive(chip.sod, groups, [pki.csca])
    with pytest.raises(PassiveAuthError, match="DG5 is not listed"):
        verify_passive(chip.sod, {**chip.data_groups(), 5: b"\x65\x00"}, [pki.csca])


def test_passive_authentication_rejects_a_swapped_sod() -> None:
    chip, _, pki = icaokit.sample_chip()
    other, _, _ = icaokit.sample_chip(pki, seed=5)
    with pytest.raises(PassiveAuthError, match="DG2 does not match"):
        verify_passive(other.sod, chip.data_groups(), [pki.csca])


def test_passive_authentication_rejects_an_altered_security_object() -> None:
    chip, _, pki = icaokit.sample_chip(fingers=False)
    h = parse_sod(chip.sod).hashes[1]
    altered = chip.sod.replace(h, bytes(32))
    with pytest.raises(PassiveAuthError, match="messageDigest"):
        verify_passive(altered, chip.data_groups(), [pki.csca])
    sig = parse_sod(chip.sod).signature
    bad_sig = chip.sod.replace(sig[-8:], bytes(8))
    with pytest.raises(PassiveAuthError, match=r"signature is invalid|cannot be read"):
        verify_passive(bad_sig, chip.data_groups(), [pki.csca])
    with pytest.raises(PassiveAuthError, match="cannot be read"):
        verify_passive(chip.sod[:-20], chip.data_groups(), [pki.csca])


def test_passive_authentication_rejects_an_unknown_csca() -> None:
    chip, _, _ = icaokit.sample_chip(fingers=False)
    stranger = icaokit.make_pki()
    with pytest.raises(PassiveAuthError, match="unknown CSCA"):
        verify_passive(chip.sod, chip.data_groups(), [stranger.csca])


def test_passive_authentication_rejects_an_expired_document_signer() -> None:
    now = datetime.now(UTC)
    pki = icaokit.make_pki(now=now - timedelta(days=400), ds_not_after=now - timedelta(days=1))
    chip, _, _ = icaokit.sample_chip(pki, fingers=False)
    with pytest.raises(PassiveAuthError, match="Document Signer certificate expired"):
        verify_passive(chip.sod, chip.data_groups(), [pki.csca])
    # The same chip verifies at a time the DS was valid.
    verify_passive(chip.sod, chip.data_groups(), [pki.csca], at=now - timedelta(days=30))


def test_a_csca_cannot_act_as_document_signer() -> None:
    pki = icaokit.make_pki()
    as_ds = icaokit.IcaoPki(pki.csca_key, pki.csca, pki.csca_key, pki.csca)
    chip, _, _ = icaokit.sample_chip(as_ds, fingers=False)
    with pytest.raises(PassiveAuthError, match="digitalSignature"):
        verify_passive(chip.sod, chip.data_groups(), [pki.csca])


def test_enrollment_signer_adapter_and_record_adapter() -> None:
    pki = icaokit.make_pki()
    record, _ = pkgkit.example(3)
    fingers = {2: icaokit.finger_wsq(3), 7: icaokit.finger_wsq(4)}
    chip, _ = chip_from_record(
        record,
        "001090012345",
        icaokit.face_jpeg(3),
        fingers,
        date(2021, 4, 15),
        date(2031, 4, 15),
        document_signer=pki.ds,
        sign=from_signer(SoftwareKeySigner(pki.ds_key)),
    )
    result = verify_passive(chip.sod, chip.data_groups(), [pki.csca])
    assert result.verified == (1, 2, 3, 13, 14, 15)
    national = lds.parse_dg13(chip.files[fid_of(13)])
    d = record.demographics
    assert national.full_name == d.full_name
    assert national.date_of_birth == d.date_of_birth.replace("-", "")
    assert national.ethnicity == "Kinh"
    assert national.date_of_expiry == "20310415"
    assert national.identifying_marks == tuple(d.identifying_marks)
    area = d.permanent_residence.areas[0]
    assert national.place_of_residence.endswith(
        f"{area.commune_name}, {area.district_name}, {area.province_name}"
    )
    td1 = parse_td1(chip.mrz)
    assert td1.personal_number == "001090012345"
    assert lds.parse_dg2(chip.files[fid_of(2)])[0].gender == (1 if d.sex.value == "M" else 2)


def test_sod_needs_data_groups() -> None:
    pki = icaokit.make_pki()
    with pytest.raises(LdsError, match="at least one"):
        build_sod({}, pki.ds, pki.sign)
    with pytest.raises(LdsError, match="1-16"):
        build_sod({17: b""}, pki.ds, pki.sign)
    chip, _ = build_chip(
        td1=icaokit.sample_td1(),
        faces=[lds.FaceImage(icaokit.face_jpeg(), *icaokit.FACE_SIZE)],
        document_signer=pki.ds,
        sign=pki.sign,
        active_authentication=False,
        chip_authentication=False,
        pace=False,
    )
    assert sorted(chip.data_groups()) == [1, 2]


# ------------------------------------------------------------- independent: openssl


def _openssl(*args: str) -> str:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"openssl {args[0]} failed: {done.stderr}")
    return done.stdout


def _pem(cert: object, path: Path) -> Path:
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_openssl_verifies_the_sod_and_its_hashes(tmp_path: Path) -> None:
    chip, _, pki = icaokit.sample_chip()
    sod = tmp_path / "sod.der"
    sod.write_bytes(cms_of(chip.sod))
    econtent = tmp_path / "econtent.der"
    csca = _pem(pki.csca, tmp_path / "csca.pem")
    _openssl(
        "cms", "-verify", "-inform", "DER", "-in", str(sod), "-CAfile", str(csca),
        "-purpose", "any", "-out", str(econtent),
    )  # fmt: skip
    # Read the LDSSecurityObject with openssl too: (INTEGER dg, OCTET STRING hash) pairs.
    parsed = _openssl("asn1parse", "-inform", "DER", "-in", str(econtent))
    numbers = re.findall(r"prim: INTEGER\s+:([0-9A-F]+)", parsed)
    hashes = re.findall(r"prim: OCTET STRING\s+\[HEX DUMP\]:([0-9A-F]+)", parsed)
    assert "sha256" in parsed
    assert numbers[0] == "00"  # LDSSecurityObject version v0
    found = {int(n, 16): bytes.fromhex(h) for n, h in zip(numbers[1:], hashes, strict=True)}
    assert found == {dg: hashlib.sha256(b).digest() for dg, b in chip.data_groups().items()}


def test_openssl_rejects_the_sod_under_another_csca(tmp_path: Path) -> None:
    chip, _, _ = icaokit.sample_chip(fingers=False)
    sod = tmp_path / "sod.der"
    sod.write_bytes(cms_of(chip.sod))
    stranger = _pem(icaokit.make_pki().csca, tmp_path / "other.pem")
    with pytest.raises(AssertionError, match="openssl cms failed"):
        _openssl(
            "cms", "-verify", "-inform", "DER", "-in", str(sod), "-CAfile", str(stranger),
            "-purpose", "any", "-out", str(tmp_path / "x.der"),
        )  # fmt: skip


def test_personal_number_needs_its_check_digit() -> None:
    td1 = icaokit.sample_td1()
    assert td1.personal_number == icaokit.PERSONAL_NUMBER
    wrong = int(check_digit(icaokit.PERSONAL_NUMBER)) ^ 1
    other = replace(td1, optional_data1=f"{icaokit.PERSONAL_NUMBER}<<{wrong}")
    assert other.personal_number is None


@pytest.mark.hsm
def test_document_signer_key_in_an_hsm(softhsm_token: SoftHsmToken) -> None:
    # The registry's DS key never leaves the token: the SOD is signed through the adapter.
    t = softhsm_token
    csca_key = ec.generate_private_key(ec.SECP256R1())
    csca = make_csca(csca_key)
    label = f"ds-{uuid.uuid4().hex[:12]}"
    with Pkcs11Signer.generate(t.module_path, t.label, t.pin, label) as hsm:
        ds = issue_document_signer(csca_key, csca, hsm.public_key())
        chip, _ = build_chip(
            td1=icaokit.sample_td1(),
            faces=[lds.FaceImage(icaokit.face_jpeg(), *icaokit.FACE_SIZE)],
            document_signer=ds,
            sign=from_signer(hsm),
        )
    result = verify_passive(chip.sod, chip.data_groups(), [csca])
    assert result.document_signer == ds


_PARSERS = {
    FID_COM: lds.parse_com,
    fid_of(1): lds.parse_dg1,
    fid_of(2): lds.parse_dg2,
    fid_of(3): lds.parse_dg3,
    fid_of(13): lds.parse_dg13,
    fid_of(14): lds.parse_dg14,
    fid_of(15): lds.parse_dg15,
    FID_SOD: parse_sod,
}


@given(
    fid=st.sampled_from(sorted(_PARSERS)),
    at=st.floats(0, 1),
    xor=st.integers(1, 255),
    cut=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_damaged_files_raise_only_lds_errors(fid: int, at: float, xor: int, cut: bool) -> None:
    # A card's files are untrusted input: a flipped byte or a short read must end in
    # LdsError (or a parse of what is still well formed), never in another exception.
    data = bytearray(_fuzz_chip().files[fid])
    i = min(int(at * len(data)), len(data) - 1)
    if cut:
        del data[i:]
    else:
        data[i] ^= xor
    with contextlib.suppress(LdsError):
        _PARSERS[fid](bytes(data))


@cache
def _fuzz_sample() -> tuple[ChipContents, icaokit.IcaoPki]:
    chip, _, pki = icaokit.sample_chip()
    return chip, pki


def _fuzz_chip() -> ChipContents:
    return _fuzz_sample()[0]


def _fuzz_pki() -> icaokit.IcaoPki:
    return _fuzz_sample()[1]


@given(at=st.floats(0, 1), xor=st.integers(1, 255))
@settings(max_examples=200, deadline=None)
def test_damaged_sod_fails_passive_authentication_cleanly(at: float, xor: int) -> None:
    chip, pki = _fuzz_chip(), _fuzz_pki()
    data = bytearray(chip.sod)
    data[min(int(at * len(data)), len(data) - 1)] ^= xor
    # Flips inside unsigned, unchecked fields (a NULL parameter) may pass; the signed
    # content is then unchanged. Anything else must be a PassiveAuthError.
    with contextlib.suppress(PassiveAuthError):
        result = verify_passive(bytes(data), chip.data_groups(), [pki.csca])
        assert result.verified == (1, 2, 3, 13, 14, 15)


@pytest.mark.parametrize(
    ("born", "issued", "expiry"),
    [
        # The real cards above: born 1991-01-01 -> 2031-01-01; born 1982-02-02 -> 2042-02-02.
        (date(1991, 1, 1), date(2021, 4, 1), date(2031, 1, 1)),
        (date(1982, 2, 2), date(2021, 7, 2), date(2042, 2, 2)),
        (date(2005, 3, 10), date(2021, 3, 10), date(2030, 3, 10)),  # 16: to 25
        (date(1997, 6, 1), date(2021, 5, 31), date(2037, 6, 1)),  # within 2 years of 25
        (date(1997, 6, 1), date(2020, 5, 31), date(2022, 6, 1)),  # just outside them
        (date(1962, 9, 1), date(2021, 1, 5), None),  # 58: within 2 years of 60, for life
        (date(1950, 1, 1), date(2021, 1, 5), None),
        (date(1996, 2, 29), date(2015, 1, 5), date(2021, 2, 28)),
    ],
)
def test_card_validity(born: date, issued: date, expiry: date | None) -> None:
    assert cccd_expiry(born, issued) == expiry


def test_a_sod_whose_signer_certificate_breaks_rfc5280_is_refused() -> None:
    """A non-positive certificate serial number (RFC 5280 forbids it; cryptography will
    refuse it one day): refused now, with a reason, and no warning leaks out."""
    from asn1crypto import cms

    chip, pki = _fuzz_chip(), _fuzz_pki()
    info = cms.ContentInfo.load(cms_of(chip.sod))
    cert = info["content"]["certificates"][0].chosen
    cert["tbs_certificate"]["serial_number"] = -5
    forged = tlv.tlv(0x77, info.dump(force=True))
    with pytest.raises(LdsError, match="malformed certificate"):
        parse_sod(forged)
    with pytest.raises(PassiveAuthError):
        verify_passive(forged, chip.data_groups(), [pki.csca])
