"""The package contract: round trip, and every way a package can be wrong, each with its
specific error (enrollment.errors)."""

from __future__ import annotations

import dataclasses
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrollment import ansi_nist, cbor, envelope
from enrollment.errors import (
    BadSignatureError,
    DecryptionError,
    ExtraPartError,
    InconsistentPackageError,
    InvalidRecordError,
    MalformedPackageError,
    MalformedTransactionError,
    MissingPartError,
    PackageError,
    RevokedSignerError,
    SizeLimitError,
    TamperedPartError,
    UnknownSignerError,
    UnsupportedVersionError,
    WrongRecipientError,
)
from enrollment.keys import key_id
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner
from enrollment.manifest import RECORD_PART, TRANSACTION_PART, PartEntry
from enrollment.package import Limits, build_package, open_package, read_header
from tests import forge
from tests.pkgkit import STATION, Kit, example, make_kit


@pytest.fixture(scope="module")
def kit() -> Kit:
    return make_kit()


@pytest.fixture(scope="module")
def enrollment_example():  # type: ignore[no-untyped-def]
    return example(1, amputated=(10,))


@pytest.fixture(scope="module")
def package(kit: Kit, enrollment_example) -> bytes:  # type: ignore[no-untyped-def]
    record, tx = enrollment_example
    return build_package(record, tx, signer=kit.signer, recipient=kit.decryptor.public_key()).data


def reopen(kit: Kit, data: bytes, **kw: object) -> object:
    return open_package(data, trust=kit.trust, decryptor=kit.decryptor, **kw)  # type: ignore[arg-type]


def test_round_trip(kit: Kit, package: bytes, enrollment_example) -> None:  # type: ignore[no-untyped-def]
    record, tx = enrollment_example
    verified = open_package(package, trust=kit.trust, decryptor=kit.decryptor)
    assert verified.record == record
    assert verified.station_id == STATION
    assert verified.signer.trusted_by == "certificate chain"
    assert verified.transaction.header.tcn == verified.package_id
    assert [f.data for f in verified.transaction.fingerprints] == [f.data for f in tx.fingerprints]
    assert verified.transaction.faces[0].data == tx.faces[0].data
    assert read_header(package).package_id == verified.package_id
    assert len(verified.transaction.fingerprints) == 9  # little finger amputated


def test_names_are_nfc(kit: Kit) -> None:
    import unicodedata

    record, tx = example(2)
    decomposed = unicodedata.normalize("NFD", "Nguyễn  Thị   Ánh")
    demo = record.demographics.model_copy(update={"full_name": decomposed})
    record2 = type(record).model_validate(
        {**record.model_dump(), "demographics": {**demo.model_dump(), "full_name": decomposed}}
    )
    assert record2.demographics.full_name == unicodedata.normalize("NFC", "Nguyễn Thị Ánh")
    data = build_package(record2, tx, signer=kit.signer, recipient=kit.decryptor.public_key()).data
    assert reopen(kit, data).record.demographics.full_name == "Nguyễn Thị Ánh"  # type: ignore[attr-defined]


# --- each part, one flipped byte -------------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("part", [RECORD_PART, TRANSACTION_PART])
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_flipped_byte_in_a_part_is_tampering(
    kit: Kit, package: bytes, part: str, where: float
) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    stored = opened.stored[part]
    opened.stored[part] = _flip(
        stored, int(where * len(stored)) if where != -1 else len(stored) - 1
    )
    with pytest.raises(TamperedPartError, match=part):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_flipped_byte_in_signed_manifest_is_bad_signature(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    sign1 = opened.signed_manifest
    payload_at = sign1.index(b"vn-eid/package")  # inside the embedded manifest
    opened.signed_manifest = sign1[:payload_at] + b"vn-eid/packagf" + sign1[payload_at + 14 :]
    with pytest.raises(BadSignatureError):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_flipped_byte_in_signature_is_bad_signature(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    opened.signed_manifest = _flip(opened.signed_manifest, len(opened.signed_manifest) - 5)
    with pytest.raises(BadSignatureError):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


@pytest.mark.parametrize("target", ["header", "enc", "ciphertext"])
def test_flipped_byte_in_envelope_fails_decryption(kit: Kit, package: bytes, target: str) -> None:
    env = envelope.parse(package, max_plaintext=2**30)
    header_at = package.index(env.header_bytes)
    offsets = {
        "header": header_at + len(env.header_bytes) - 3,  # the declared size
        "enc": package.index(env.enc) + 10,
        "ciphertext": len(package) - 100,
    }
    data = _flip(package, offsets[target])
    with pytest.raises((DecryptionError, MalformedPackageError, WrongRecipientError)):
        reopen(kit, data)
    if target != "header":
        with pytest.raises(DecryptionError):
            reopen(kit, data)


def test_part_swapped_in_from_another_package(kit: Kit, package: bytes) -> None:
    record, tx = example(3)
    other = build_package(record, tx, signer=kit.signer, recipient=kit.decryptor.public_key())
    mine = forge.take_apart(package, kit.decryptor)
    theirs = forge.take_apart(other.data, kit.decryptor)
    for part in (RECORD_PART, TRANSACTION_PART):
        swapped = dataclasses.replace(mine, stored={**mine.stored, part: theirs.stored[part]})
        with pytest.raises(TamperedPartError, match=part):
            reopen(kit, forge.put_together(swapped, kit.decryptor.public_key()))
    # The whole signed manifest and parts of another package under this envelope's id.
    theirs.header = mine.header
    with pytest.raises(InconsistentPackageError, match="envelope id"):
        reopen(kit, forge.put_together(theirs, kit.decryptor.public_key()))


def test_resigned_by_untrusted_key(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    stranger = SoftwareKeySigner(ec.generate_private_key(ec.SECP256R1()))
    forge.resign(opened, stranger)
    with pytest.raises(UnknownSignerError, match="not in the trust store"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_resigned_with_certificate_from_another_ca(kit: Kit, package: bytes) -> None:
    rogue = make_kit()  # its own CA, not trusted by kit
    opened = forge.take_apart(package, kit.decryptor)
    forge.resign(opened, rogue.signer)
    with pytest.raises(UnknownSignerError, match="does not chain"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_other_trusted_station_cannot_sign_for_this_one(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    forge.resign(opened, kit.station_signer("HCM-Q1-002"))
    with pytest.raises(InconsistentPackageError, match="station"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_revoked_station(kit: Kit, package: bytes) -> None:
    trust = dataclasses.replace(kit.trust, revoked={key_id(kit.signer.public_key())})
    with pytest.raises(RevokedSignerError):
        open_package(package, trust=trust, decryptor=kit.decryptor)


def test_expired_station_certificate(kit: Kit) -> None:
    from enrollment.pki import issue_station_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    old = datetime.now(UTC) - timedelta(days=800)
    cert = issue_station_certificate(kit.ca_key, kit.ca_cert, STATION, key.public_key(), now=old)
    record, tx = example(4)
    data = build_package(
        record, tx, signer=SoftwareKeySigner(key, cert), recipient=kit.decryptor.public_key()
    ).data
    with pytest.raises(UnknownSignerError, match="not valid at"):
        reopen(kit, data)


def test_wrong_recipient(kit: Kit, package: bytes) -> None:
    other_registry = SoftwareDecryptor(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(WrongRecipientError):
        open_package(package, trust=kit.trust, decryptor=other_registry)


def test_wrong_recipient_claiming_our_key_id_fails_decryption(kit: Kit, package: bytes) -> None:
    env = envelope.parse(package, max_plaintext=2**30)
    mine = key_id(kit.decryptor.public_key())
    other = SoftwareDecryptor(ec.generate_private_key(ec.SECP256R1()))
    sealed = envelope.seal(b"x" * 10, other.public_key(), env.header.package_id, env.header.created)
    forged = sealed.replace(key_id(other.public_key()), mine)
    with pytest.raises(DecryptionError):
        reopen(kit, forged)


@pytest.mark.parametrize("keep", [0, 1, 3, 20, 100, 0.5, -17, -1])
def test_truncation(kit: Kit, package: bytes, keep: float) -> None:
    n = int(keep * len(package)) if isinstance(keep, float) else keep
    with pytest.raises(MalformedPackageError):
        reopen(kit, package[:n])


def test_trailing_garbage(kit: Kit, package: bytes) -> None:
    with pytest.raises(MalformedPackageError, match="trailing"):
        reopen(kit, package + b"\x00")


def test_unsupported_version(kit: Kit, package: bytes) -> None:
    body = cbor.loads_strict(package[3:], "t")
    body[1] = 2
    with pytest.raises(UnsupportedVersionError):
        reopen(kit, package[:3] + cbor.dumps(body))


def test_not_a_package(kit: Kit) -> None:
    with pytest.raises(MalformedPackageError, match="magic"):
        reopen(kit, b"PK\x03\x04 a zip file")


# --- sizes and bombs ---------------------------------------------------------------------


def test_file_over_limit(kit: Kit, package: bytes) -> None:
    with pytest.raises(SizeLimitError):
        reopen(kit, package, limits=Limits(max_package_bytes=len(package) - 1))


def test_declared_content_over_limit(kit: Kit, package: bytes) -> None:
    with pytest.raises(SizeLimitError, match="declared content size"):
        reopen(kit, package, limits=Limits(max_content_bytes=1000))


def test_decompression_bomb_in_a_part(kit: Kit, package: bytes) -> None:
    """A signed (trusted!) part that claims 2 KB but inflates to 1 GB stops at 2 KB."""
    opened = forge.take_apart(package, kit.decryptor)
    bomb = zlib.compressobj(9)
    stored = b"".join(bomb.compress(b"\x00" * (1 << 20)) for _ in range(1024)) + bomb.flush()
    assert len(stored) < 1_100_000
    import hashlib

    entry = PartEntry(
        RECORD_PART,
        "application/vnd.vn-eid.record+cbor",
        "deflate",
        2048,
        len(stored),
        hashlib.sha256(stored).digest(),
    )
    forge.set_entry(opened, entry, stored, kit.signer)
    with pytest.raises(SizeLimitError, match="decompression bomb"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_declared_part_size_over_limit(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    entry = opened.manifest.part(RECORD_PART)
    assert entry is not None
    forge.set_entry(
        opened, dataclasses.replace(entry, size=1 << 40), opened.stored[RECORD_PART], kit.signer
    )
    with pytest.raises(SizeLimitError, match="declares"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_image_dimension_bomb(kit: Kit, package: bytes) -> None:
    """A signed image record declaring 60,000 x 60,000 pixels is refused before decoding."""
    opened = forge.take_apart(package, kit.decryptor)
    low = ansi_nist.decode(opened.stored[TRANSACTION_PART])
    first_finger = next(r for r in low.records if r.type == 14)
    first_finger.set_text(6, "60000")
    first_finger.set_text(7, "60000")
    forge.replace_part(opened, TRANSACTION_PART, ansi_nist.encode(low), kit.signer)
    with pytest.raises(SizeLimitError, match="60000"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


# --- missing, extra, malformed content under a valid signature ----------------------------


def test_missing_part(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    del opened.stored[TRANSACTION_PART]
    with pytest.raises(MissingPartError, match=TRANSACTION_PART):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_required_part_not_in_manifest(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    manifest = opened.manifest
    parts = tuple(p for p in manifest.parts if p.name != RECORD_PART)
    del opened.stored[RECORD_PART]
    forge.resign(opened, kit.signer, dataclasses.replace(manifest, parts=parts))
    with pytest.raises(MissingPartError, match=RECORD_PART):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_extra_part(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    opened.stored["payload.exe"] = b"MZ"
    with pytest.raises(ExtraPartError, match=r"payload\.exe"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_malformed_transaction_under_valid_signature(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    forge.replace_part(opened, TRANSACTION_PART, b"1.001:17\x1d1.002:0500\x1c", kit.signer)
    with pytest.raises(MalformedTransactionError):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_invalid_record_under_valid_signature(kit: Kit, package: bytes) -> None:
    opened = forge.take_apart(package, kit.decryptor)
    record = cbor.loads_strict(zlib.decompress(opened.stored[RECORD_PART]), "r")
    record["demographics"]["date_of_birth"] = "2021-02-30"
    forge.replace_part(opened, RECORD_PART, cbor.dumps(record), kit.signer)
    with pytest.raises(InvalidRecordError, match="date_of_birth"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_transaction_of_another_package(kit: Kit, package: bytes) -> None:
    """A correctly signed package whose ANSI/NIST TCN names another package."""
    opened = forge.take_apart(package, kit.decryptor)
    parsed = ansi_nist.parse_transaction(opened.stored[TRANSACTION_PART])
    other = dataclasses.replace(
        parsed,
        header=dataclasses.replace(parsed.header, tcn="01a1fe20-ad58-76de-9e33-c43e6e7b3881"),
    )
    forge.replace_part(opened, TRANSACTION_PART, ansi_nist.build_transaction(other), kit.signer)
    with pytest.raises(InconsistentPackageError, match="TCN"):
        reopen(kit, forge.put_together(opened, kit.decryptor.public_key()))


def test_build_refuses_samples_without_images(kit: Kit) -> None:
    record, tx = example(6)
    tx2 = dataclasses.replace(tx, fingerprints=tx.fingerprints[1:])
    with pytest.raises(InconsistentPackageError, match="no image record"):
        build_package(record, tx2, signer=kit.signer, recipient=kit.decryptor.public_key())


def test_future_package(kit: Kit) -> None:
    record, tx = example(7)
    data = build_package(
        record,
        tx,
        signer=kit.signer,
        recipient=kit.decryptor.public_key(),
        created=datetime.now(UTC) + timedelta(days=2),
    ).data
    with pytest.raises(InconsistentPackageError, match="future"):
        reopen(kit, data)


# --- any single-byte change is rejected ---------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_is_rejected(kit: Kit, package: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(package) - 1), label="index")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != package[index]), label="value")
    mutated = package[:index] + bytes([value]) + package[index + 1 :]
    with pytest.raises(PackageError):
        reopen(kit, mutated)
