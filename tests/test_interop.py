"""Interop: each layer of a package against an independent implementation or tool.

- COSE_Sign1 both ways with pycose 1.1.0 (which verifies and signs with python-ecdsa, pure
  Python, so not even the elliptic-curve code is shared with us);
- HPKE both ways with pyhpke 0.6 (its own RFC 9180 key schedule on top of pyca primitives),
  and RFC 9180's published test vector for DHKEM(P-256, HKDF-SHA256) + HKDF-SHA256;
- signers whose keys live in a PKCS#11 token (SoftHSM2) or a TPM (swtpm), through the whole
  build/open path, trusted through a CA certificate and through a pinned key;
- the ANSI/NIST-ITL part read by nistitl, its images decoded to their declared sizes;
- a key file from ``python -m enrollment keygen`` read by OpenSSL's command line.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2
import nistitl
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding
from PIL import Image
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm, ContentType, X5chain
from pycose.keys.curves import P256
from pycose.keys.ec2 import EC2Key
from pycose.messages.sign1message import Sign1Message
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, OpenError

from enrollment import cbor, cose, envelope
from enrollment.errors import (
    BadSignatureError,
    DecryptionError,
    MalformedPackageError,
    UnknownSignerError,
)
from enrollment.ids import new_package_id
from enrollment.images import decode_wsq
from enrollment.keys import Signer, key_id
from enrollment.keys.pkcs11 import Pkcs11Signer
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner
from enrollment.keys.tpm import TpmSigner
from enrollment.manifest import MANIFEST_CONTENT_TYPE, TRANSACTION_PART
from enrollment.package import (
    BuiltPackage,
    VerifiedPackage,
    build_package,
    format_time,
    open_package,
)
from enrollment.pki import issue_station_certificate
from enrollment.record import EnrollmentRecord
from enrollment.trust import TrustStore
from tests import forge
from tests.pkgkit import FACE_SIZE, FINGER_SIZE, STATION, Kit, example, make_kit

if TYPE_CHECKING:
    from enrollment.ansi_nist import EnrollmentTransaction
    from tests.conftest import SoftHsmToken, Swtpm

REPO = Path(__file__).resolve().parent.parent
HPKE_SUITE_IDS = (KEMId.DHKEM_P256_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
# HPKE info = this || header bytes (docs/package-format.md section 2), spelled out here
# rather than taken from enrollment.envelope so that a change there cannot go unnoticed.
SPEC_INFO_PREFIX = b"vn-eid/package/v1\x00"


def pyhpke_suite() -> CipherSuite:
    """pyhpke's implementation of the package suite (0x0010, 0x0001, 0x0002)."""
    return CipherSuite.new(*HPKE_SUITE_IDS)


# --- shared material: one CA, one registry key, one station key, one package ------------


@pytest.fixture(scope="module")
def kit() -> Kit:
    return make_kit()


@pytest.fixture(scope="module")
def registry_key() -> ec.EllipticCurvePrivateKey:
    """The registry's HPKE key, held here so that pyhpke can use it too."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def decryptor(registry_key: ec.EllipticCurvePrivateKey) -> SoftwareDecryptor:
    return SoftwareDecryptor(registry_key)


@pytest.fixture(scope="module")
def station_key() -> ec.EllipticCurvePrivateKey:
    """The station's signing key, held here so that pycose can sign with it too."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def station_cert(kit: Kit, station_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return issue_station_certificate(kit.ca_key, kit.ca_cert, STATION, station_key.public_key())


@pytest.fixture(scope="module")
def enrollment_example() -> tuple[EnrollmentRecord, EnrollmentTransaction]:
    return example(21, amputated=(7,))


@pytest.fixture(scope="module")
def built(
    enrollment_example: tuple[EnrollmentRecord, EnrollmentTransaction],
    station_key: ec.EllipticCurvePrivateKey,
    station_cert: x509.Certificate,
    decryptor: SoftwareDecryptor,
) -> BuiltPackage:
    record, tx = enrollment_example
    signer = SoftwareKeySigner(station_key, station_cert)
    return build_package(record, tx, signer=signer, recipient=decryptor.public_key())


@pytest.fixture(scope="module")
def verified(built: BuiltPackage, kit: Kit, decryptor: SoftwareDecryptor) -> VerifiedPackage:
    return open_package(built.data, trust=kit.trust, decryptor=decryptor)


def ec2_public(public_key: ec.EllipticCurvePublicKey) -> EC2Key:
    """A pycose verification key from the P-256 point's coordinates."""
    numbers = public_key.public_numbers()
    return EC2Key(crv=P256, x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))


def ec2_private(private_key: ec.EllipticCurvePrivateKey) -> EC2Key:
    numbers = private_key.private_numbers()
    public = numbers.public_numbers
    return EC2Key(
        crv=P256,
        x=public.x.to_bytes(32, "big"),
        y=public.y.to_bytes(32, "big"),
        d=numbers.private_value.to_bytes(32, "big"),
    )


def pycose_sign1(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    phdr: dict[Any, Any] | None = None,
    uhdr: dict[Any, Any] | None = None,
    *,
    tag: bool = True,
) -> bytes:
    """A COSE_Sign1 made and signed by pycose (ES256 via python-ecdsa, RFC 6979 nonces).

    The default header is what our format prescribes. pycose encodes the protected map in
    the dict's insertion order, so the labels are inserted in ascending order (1, 3, 4): that
    is the deterministic order our reader insists on.
    """
    if phdr is None:
        phdr = {
            Algorithm: Es256,
            ContentType: MANIFEST_CONTENT_TYPE,
            KID: key_id(key.public_key()),
        }
    msg = Sign1Message(phdr=phdr, uhdr=uhdr or {}, payload=payload)
    msg.key = ec2_private(key)
    return bytes(msg.encode(tag=tag))


# --- 1. COSE_Sign1 with pycose ------------------------------------------------------------


def test_pycose_verifies_our_cose_sign1(
    built: BuiltPackage,
    decryptor: SoftwareDecryptor,
    station_key: ec.EllipticCurvePrivateKey,
    station_cert: x509.Certificate,
) -> None:
    opened = forge.take_apart(built.data, decryptor)
    msg = Sign1Message.decode(opened.signed_manifest)
    assert isinstance(msg, Sign1Message)  # pycose read the tag 18 itself
    # The payload pycose sees is our manifest encoding, byte for byte.
    assert msg.payload == built.manifest.encode()
    assert msg.phdr == {
        Algorithm: Es256,
        ContentType: MANIFEST_CONTENT_TYPE,
        KID: key_id(station_key.public_key()),
        X5chain: station_cert.public_bytes(Encoding.DER),
    }
    assert msg.uhdr == {}
    assert len(msg.signature) == 64

    msg.key = ec2_public(station_key.public_key())
    assert msg.verify_signature() is True
    # Meaningful: another key, or one changed payload byte, does not verify in pycose either.
    msg.key = ec2_public(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert msg.verify_signature() is False
    tampered = Sign1Message.decode(opened.signed_manifest)
    tampered.key = ec2_public(station_key.public_key())
    tampered.payload = msg.payload.replace(STATION.encode(), b"HN-BD-999", 1)
    assert tampered.payload != msg.payload
    assert tampered.verify_signature() is False


def test_our_reader_accepts_pycose_sign1(
    built: BuiltPackage,
    kit: Kit,
    decryptor: SoftwareDecryptor,
    station_key: ec.EllipticCurvePrivateKey,
    station_cert: x509.Certificate,
) -> None:
    """pycose signs the manifest; our reader decodes and verifies it, alone and in a package.

    What pycose needed to produce a COSE_Sign1 our strict reader accepts: every header in
    the protected bucket (the common COSE practice of putting kid in the unprotected one is
    refused), and the protected labels inserted in ascending order (1, 3, 4, 33), since pycose
    serialises the map in the dict's insertion order rather than deterministically (see the
    refusals test below). Nothing else: the tag, the array, the payload and the 64-byte
    r || s signature pycose writes are exactly what our reader expects.
    """
    pub = station_key.public_key()
    payload = built.manifest.encode()
    der = station_cert.public_bytes(Encoding.DER)
    header = {
        Algorithm: Es256,
        ContentType: MANIFEST_CONTENT_TYPE,
        KID: key_id(pub),
        X5chain: der,
    }
    theirs = pycose_sign1(payload, station_key, header)

    sign1 = cose.decode_sign1(theirs)
    sign1.verify(pub)
    assert sign1.payload == payload
    assert sign1.kid == key_id(pub)
    assert sign1.content_type == MANIFEST_CONTENT_TYPE
    assert [c.public_bytes(Encoding.DER) for c in sign1.chain] == [der]
    with pytest.raises(BadSignatureError):
        sign1.verify(ec.generate_private_key(ec.SECP256R1()).public_key())

    # Byte-level agreement: pycose's COSE_Sign1 equals ours except for the signature (ours
    # uses random ECDSA nonces, pycose RFC 6979 ones, so signatures always differ).
    ours = forge.take_apart(built.data, decryptor).signed_manifest
    ours_obj, theirs_obj = cbor2.loads(ours), cbor2.loads(theirs)
    assert ours_obj.tag == theirs_obj.tag == 18
    assert ours_obj.value[:3] == theirs_obj.value[:3]  # protected bytes, {}, payload
    assert ours_obj.value[3] != theirs_obj.value[3]
    assert pycose_sign1(payload, station_key, header) == theirs  # deterministic in pycose

    # A package whose manifest pycose signed opens end to end, trusted through the CA.
    opened = forge.take_apart(built.data, decryptor)
    opened.signed_manifest = theirs
    data = forge.put_together(opened, decryptor.public_key())
    result = open_package(data, trust=kit.trust, decryptor=decryptor)
    assert result.signer.trusted_by == "certificate chain"
    assert result.station_id == STATION
    assert result.manifest == built.manifest


def _kid_first(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    phdr = {KID: key_id(key.public_key()), Algorithm: Es256, ContentType: MANIFEST_CONTENT_TYPE}
    return pycose_sign1(payload, key, phdr)


def _kid_unprotected(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    phdr = {Algorithm: Es256, ContentType: MANIFEST_CONTENT_TYPE}
    return pycose_sign1(payload, key, phdr, {KID: key_id(key.public_key())})


def _untagged(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    return pycose_sign1(payload, key, tag=False)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_kid_first, "deterministic"),
        (_kid_unprotected, "unprotected header must be empty"),
        (_untagged, "not a tagged COSE_Sign1"),
    ],
    ids=["protected-map-not-sorted", "kid-unprotected", "untagged"],
)
def test_pycose_encodings_outside_our_profile_are_refused(
    built: BuiltPackage,
    station_key: ec.EllipticCurvePrivateKey,
    make: Callable[[ec.EllipticCurvePrivateKey, bytes], bytes],
    reason: str,
) -> None:
    """Valid COSE as far as pycose is concerned, refused by our deterministic profile.

    pycose writes these when asked to, or when a caller does not know our profile: protected
    labels in the order the caller wrote them, kid in the unprotected bucket, no tag 18.
    """
    data = make(station_key, built.manifest.encode())
    msg = Sign1Message.decode(data) if data[0] == 0xD2 else None
    if msg is not None:  # the tagged ones: pycose itself verifies them
        msg.key = ec2_public(station_key.public_key())
        assert msg.verify_signature() is True
    with pytest.raises(MalformedPackageError, match=reason):
        cose.decode_sign1(data)


# --- 2. HPKE with pyhpke and RFC 9180 -------------------------------------------------------


def test_pyhpke_opens_our_envelope(
    built: BuiltPackage,
    registry_key: ec.EllipticCurvePrivateKey,
    decryptor: SoftwareDecryptor,
) -> None:
    suite = pyhpke_suite()
    skr = KEMKey.from_pyca_cryptography_key(registry_key)

    # A known plaintext sealed by enrollment.envelope.seal.
    plaintext = os.urandom(3000)
    pid, created = new_package_id(), format_time(datetime.now(UTC))
    env = envelope.parse(
        envelope.seal(plaintext, registry_key.public_key(), pid, created), max_plaintext=1 << 20
    )
    info = SPEC_INFO_PREFIX + env.header_bytes
    assert suite.create_recipient_context(env.enc, skr, info=info).open(env.ciphertext) == plaintext
    # info is exactly prefix || header: without the prefix, or with another header, it fails.
    with pytest.raises(OpenError):
        suite.create_recipient_context(env.enc, skr, info=env.header_bytes).open(env.ciphertext)
    other_header = envelope.EnvelopeHeader(
        new_package_id(), created, key_id(registry_key.public_key()), 3000
    )
    with pytest.raises(OpenError):
        suite.create_recipient_context(
            env.enc, skr, info=SPEC_INFO_PREFIX + other_header.encode()
        ).open(env.ciphertext)
    # aad is empty: a non-empty one fails.
    with pytest.raises(OpenError):
        suite.create_recipient_context(env.enc, skr, info=info).open(env.ciphertext, aad=b"x")

    # A whole package: pyhpke gets the same content our decryptor does.
    env = envelope.parse(built.data, max_plaintext=1 << 26)
    content = suite.create_recipient_context(
        env.enc, skr, info=SPEC_INFO_PREFIX + env.header_bytes
    ).open(env.ciphertext)
    assert content == envelope.open_envelope(env, decryptor)
    assert len(content) == env.header.plaintext_size
    assert set(cbor.loads_strict(content, "content")) == {"manifest", "parts"}


def pyhpke_envelope(
    content: bytes, recipient: ec.EllipticCurvePublicKey, package_id: str, created: str
) -> bytes:
    """A package envelope built by hand from docs/package-format.md section 2, with pyhpke."""
    header = cbor.dumps(
        {
            "id": package_id,
            "created": created,
            "kid": hashlib.sha256(
                recipient.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ).digest(),
            "suite": [16, 1, 2],
            "size": len(content),
        }
    )
    suite = pyhpke_suite()
    enc, sender = suite.create_sender_context(
        KEMKey.from_pyca_cryptography_key(recipient), info=SPEC_INFO_PREFIX + header
    )
    ciphertext = sender.seal(content, aad=b"")
    return b"\xd9\xd9\xf7" + cbor.dumps(["vn-eid/package", 1, header, enc, ciphertext])


def test_we_open_a_pyhpke_envelope(
    built: BuiltPackage,
    kit: Kit,
    registry_key: ec.EllipticCurvePrivateKey,
    decryptor: SoftwareDecryptor,
) -> None:
    plaintext = os.urandom(5000)
    pid, created = new_package_id(), format_time(datetime.now(UTC))
    data = pyhpke_envelope(plaintext, registry_key.public_key(), pid, created)
    env = envelope.parse(data, max_plaintext=1 << 20)
    assert env.header == envelope.EnvelopeHeader(
        pid, created, key_id(registry_key.public_key()), len(plaintext)
    )
    assert env.header.encode() == env.header_bytes  # the hand-built header is ours, byte for byte
    assert envelope.open_envelope(env, decryptor) == plaintext
    # Our seal lays out the same bytes around its own (random) enc and ciphertext.
    ours = envelope.seal(plaintext, registry_key.public_key(), pid, created)
    assert ours[:3] == data[:3] == b"\xd9\xd9\xf7"
    assert len(ours) == len(data)
    assert envelope.parse(ours, max_plaintext=1 << 20).header_bytes == env.header_bytes

    # A whole package re-encrypted by pyhpke (a station using another HPKE library) opens.
    content = envelope.open_envelope(envelope.parse(built.data, max_plaintext=1 << 26), decryptor)
    data = pyhpke_envelope(content, registry_key.public_key(), built.package_id, built.created)
    result = open_package(data, trust=kit.trust, decryptor=decryptor)
    assert result.package_id == built.package_id
    assert result.manifest == built.manifest

    # Meaningful: pyhpke's ciphertext to another registry key does not open here.
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    forged = pyhpke_envelope(plaintext, other, pid, created).replace(
        key_id(other), key_id(registry_key.public_key())
    )
    with pytest.raises(DecryptionError):
        envelope.open_envelope(envelope.parse(forged, max_plaintext=1 << 20), decryptor)


# RFC 9180 Appendix A.3.1: DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, Base Setup
# Information, and its encryption with sequence number 0 (values as published in the RFC;
# copied from golang/go src/crypto/internal/hpke/testdata/rfc9180-vectors.json).
#
# The package suite differs from it in the AEAD only (AES-256-GCM, 0x0002). The RFC prints
# no vector for 0x0010/0x0001/0x0002; the CFRG's test-vectors.json has one, but no
# authentic copy of that file's final version was reachable here (only pre-RFC drafts with
# other labels), so this checks the KEM and the KDF we share with the RFC's own vector.
RFC9180_A3 = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "ikmE": "4270e54ffd08d79d5928020af4686d8f6b7d35dbe470265f1f5aa22816ce860e",
    "pkEm": "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac9"
    "8536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4",
    "skEm": "4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb",
    "ikmR": "668b37171f1072f3cf12ea8a236a45df23fc13b82af3609ad1e354f6ef817550",
    "pkRm": "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a82"
    "6a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0",
    "skRm": "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2",
    "enc": "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac9"
    "8536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4",
    "key": "868c066ef58aae6dc589b6cfdd18f97e",
    "base_nonce": "4e0bc5018beba4bf004cca59",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
    "aad": "436f756e742d30",
    "ct": "5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f"
    "9076ac232e3ab2523f39513434",
}


def test_rfc9180_p256_vector_pyhpke_and_cryptography() -> None:
    v = {name: bytes.fromhex(value) for name, value in RFC9180_A3.items()}
    point = serialization.PublicFormat.UncompressedPoint

    # pyhpke (the oracle of the two tests above) reproduces the vector exactly: DeriveKeyPair,
    # the encapsulation from the fixed ephemeral key, and the ciphertext.
    suite = CipherSuite.new(KEMId.DHKEM_P256_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)
    recipient_pair = suite.kem.derive_key_pair(v["ikmR"])
    ephemeral_pair = suite.kem.derive_key_pair(v["ikmE"])
    assert recipient_pair.public_key.to_public_bytes() == v["pkRm"]
    assert ephemeral_pair.public_key.to_public_bytes() == v["pkEm"]
    enc, sender = suite.create_sender_context(
        suite.kem.deserialize_public_key(v["pkRm"]), info=v["info"], eks=ephemeral_pair
    )
    assert enc == v["enc"]
    assert sender.seal(v["pt"], aad=v["aad"]) == v["ct"]

    # cryptography's HPKE (which SoftwareDecryptor uses) derives the vector's key and
    # base_nonce from (enc, skRm, info): it opens a ciphertext made with exactly those
    # under the empty aad its single-shot API uses, and nothing else.
    skr = ec.derive_private_key(int.from_bytes(v["skRm"], "big"), ec.SECP256R1())
    assert skr.public_key().public_bytes(Encoding.X962, point) == v["pkRm"]
    cs = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    ct_empty_aad = AESGCM(v["key"]).encrypt(v["base_nonce"], v["pt"], b"")
    assert cs.decrypt(v["enc"] + ct_empty_aad, skr, info=v["info"]) == v["pt"]
    wrong_nonce = bytes([v["base_nonce"][0] ^ 1]) + v["base_nonce"][1:]
    with pytest.raises(InvalidTag):
        cs.decrypt(
            v["enc"] + AESGCM(v["key"]).encrypt(wrong_nonce, v["pt"], b""), skr, info=v["info"]
        )
    # The published ciphertext itself (aad "Count-0") through cryptography's internal
    # aad-taking entry point, where this cryptography has it.
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl

    decrypt_with_aad = getattr(rust_openssl.hpke, "_decrypt_with_aad", None)
    if decrypt_with_aad is not None:
        opened = decrypt_with_aad(cs, v["enc"] + v["ct"], skr, info=v["info"], aad=v["aad"])
        assert opened == v["pt"]


# --- 3. signers inside real key stores ----------------------------------------------------


def assert_signer_interoperates(
    signer: Signer,
    with_certificate: Callable[[x509.Certificate], Signer],
    kit: Kit,
    decryptor: SoftwareDecryptor,
    enrollment_example: tuple[EnrollmentRecord, EnrollmentTransaction],
) -> None:
    """Package signed in the key store: trusted by CA certificate, then by pinned key."""
    record, tx = enrollment_example
    pub = signer.public_key()
    cert = issue_station_certificate(kit.ca_key, kit.ca_cert, STATION, pub)
    certified = with_certificate(cert)
    assert certified.certificate() is cert

    data = build_package(record, tx, signer=certified, recipient=decryptor.public_key()).data
    result = open_package(data, trust=kit.trust, decryptor=decryptor)
    assert result.signer.trusted_by == "certificate chain"
    assert result.signer.kid == key_id(pub)
    assert result.signer.certificate == cert
    assert result.station_id == STATION
    assert result.record == record
    # The signature the key store made verifies in pycose (python-ecdsa) too.
    msg = Sign1Message.decode(forge.take_apart(data, decryptor).signed_manifest)
    msg.key = ec2_public(pub)
    assert msg.verify_signature() is True

    # Without a certificate: unknown to a CA-only store, trusted once its key is pinned.
    bare = build_package(record, tx, signer=signer, recipient=decryptor.public_key()).data
    with pytest.raises(UnknownSignerError, match="sent no certificate"):
        open_package(bare, trust=kit.trust, decryptor=decryptor)
    pinned = TrustStore()
    pinned.pin_key(STATION, pub)
    result = open_package(bare, trust=pinned, decryptor=decryptor)
    assert result.signer.trusted_by == "pinned key"
    assert result.signer.certificate is None
    assert result.station_id == STATION
    # A pin for another key does not let it in.
    other = TrustStore()
    other.pin_key(STATION, ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(UnknownSignerError):
        open_package(bare, trust=other, decryptor=decryptor)


@pytest.mark.hsm
def test_pkcs11_signer_packages_open(
    softhsm_token: SoftHsmToken,
    kit: Kit,
    decryptor: SoftwareDecryptor,
    enrollment_example: tuple[EnrollmentRecord, EnrollmentTransaction],
) -> None:
    t = softhsm_token
    label = f"interop-{uuid.uuid4().hex[:12]}"
    with Pkcs11Signer.generate(t.module_path, t.label, t.pin, label) as signer:
        assert_signer_interoperates(
            signer, signer.with_certificate, kit, decryptor, enrollment_example
        )


@pytest.mark.tpm
def test_tpm_signer_packages_open(
    swtpm: Swtpm,
    tmp_path: Path,
    kit: Kit,
    decryptor: SoftwareDecryptor,
    enrollment_example: tuple[EnrollmentRecord, EnrollmentTransaction],
) -> None:
    signer = TpmSigner.create(swtpm.tcti, tmp_path / "station.tpmkey")
    assert_signer_interoperates(signer, signer.with_certificate, kit, decryptor, enrollment_example)


# --- 4. ANSI/NIST-ITL and images with nistitl and Pillow ---------------------------------


def test_nistitl_reads_the_transaction_and_images_decode(verified: VerifiedPackage) -> None:
    msg = nistitl.Message()
    msg.parse(verified.parts[TRANSACTION_PART])
    types = [record.type for record in msg]
    assert types[:2] == [1, 2]
    header = msg[0]
    assert verified.package_id == header.TCN
    assert verified.station_id == header.ORI

    fingers = list(msg.iter(14))
    assert len(fingers) == 9  # position 7 amputated
    assert sorted(int(r.FGP) for r in fingers) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    for record in fingers:
        assert record.CGA == "WSQ20"
        width, height = int(record.HLL), int(record.VLL)
        assert (width, height) == FINGER_SIZE
        pixels = decode_wsq(record.DATA)
        assert pixels.shape == (height, width)
        assert pixels.std() > 0  # a real image, not a blank frame

    (face,) = msg.iter(10)
    assert face.CGA == "JPEGB"
    width, height = int(face.HLL), int(face.VLL)
    assert (width, height) == FACE_SIZE
    with Image.open(io.BytesIO(face.DATA)) as image:
        assert image.format == "JPEG"
        image.load()
        assert image.size == (width, height)
    assert types == [1, 2] + [14] * 9 + [10]


# --- 5. a key file from the command line, read by OpenSSL ---------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_keygen_key_file_reads_in_openssl(tmp_path: Path) -> None:
    key = tmp_path / "station.pem"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # umask 0: the key must be 0600 because keygen makes it so, not thanks to the umask.
    done = subprocess.run(
        [sys.executable, "-m", "enrollment", "keygen", str(key)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        umask=0,
        check=True,
    )
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = tmp_path / "station.pub.pem"
    assert pub.exists()

    text = subprocess.run(
        ["openssl", "ec", "-in", str(key), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "ASN1 OID: prime256v1" in text
    assert "NIST CURVE: P-256" in text
    assert "Private-Key: (256 bit" in text

    # OpenSSL's public key for the file is the .pub.pem keygen wrote, and the key id keygen
    # printed is the SHA-256 of OpenSSL's DER SubjectPublicKeyInfo.
    openssl_pub = subprocess.run(
        ["openssl", "ec", "-in", str(key), "-pubout"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    assert openssl_pub == pub.read_bytes()
    der = subprocess.run(
        ["openssl", "ec", "-in", str(key), "-pubout", "-outform", "DER"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    printed = re.search(r"key id ([0-9a-f]{64})", done.stdout)
    assert printed is not None
    assert printed.group(1) == hashlib.sha256(der).hexdigest()
