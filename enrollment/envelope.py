"""The outer envelope: HPKE (RFC 9180) base mode to the registry's P-256 key.

    envelope = tag 55799 [ "vn-eid/package", version, header: bstr .cbor Header,
                           enc: bstr(65), ciphertext: bstr ]
    Header   = { "id": tstr, "created": tstr, "kid": bstr(32), "suite": [16, 1, 2],
                 "size": uint }

The header travels in the clear (the uploader and the registry route by package id before
decrypting) but is bound into the HPKE key schedule through ``info``: change one byte of it
and decryption fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment import cbor
from enrollment.errors import (
    MalformedPackageError,
    SizeLimitError,
    UnsupportedVersionError,
    WrongRecipientError,
)
from enrollment.ids import is_package_id
from enrollment.keys import Decryptor, key_id
from enrollment.keys.software import HPKE_SUITE

FORMAT_NAME = "vn-eid/package"
FORMAT_VERSION = 1
SELF_DESCRIBED_CBOR = 55799  # d9 d9 f7: the file's magic number
# HPKE ids (RFC 9180 section 7): DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
SUITE_IDS = [0x0010, 0x0001, 0x0002]
ENC_LEN = 65
INFO_PREFIX = b"vn-eid/package/v1\x00"


@dataclass(frozen=True)
class EnvelopeHeader:
    package_id: str
    created: str  # RFC 3339 UTC, e.g. 2026-11-21T09:30:00.123Z
    recipient_kid: bytes
    plaintext_size: int

    def encode(self) -> bytes:
        return cbor.dumps(
            {
                "id": self.package_id,
                "created": self.created,
                "kid": self.recipient_kid,
                "suite": SUITE_IDS,
                "size": self.plaintext_size,
            }
        )


@dataclass(frozen=True)
class Envelope:
    header: EnvelopeHeader
    header_bytes: bytes
    enc: bytes
    ciphertext: bytes


def seal(
    plaintext: bytes, recipient: ec.EllipticCurvePublicKey, package_id: str, created: str
) -> bytes:
    header = EnvelopeHeader(package_id, created, key_id(recipient), len(plaintext))
    header_bytes = header.encode()
    sealed = HPKE_SUITE.encrypt(plaintext, recipient, info=INFO_PREFIX + header_bytes)
    enc, ciphertext = sealed[:ENC_LEN], sealed[ENC_LEN:]
    body = [FORMAT_NAME, FORMAT_VERSION, header_bytes, enc, ciphertext]
    return cbor.dumps(cbor2.CBORTag(SELF_DESCRIBED_CBOR, body))


def parse(data: bytes, *, max_plaintext: int) -> Envelope:
    """Read the envelope and its clear header without decrypting anything."""
    if data[:3] != b"\xd9\xd9\xf7":
        raise MalformedPackageError("not an enrollment package (no d9d9f7 CBOR magic)")
    # cbor2 drops tag 55799 when decoding, so check the magic and read what follows it.
    body = cbor.loads_strict(data[3:], "envelope")
    if not isinstance(body, list) or len(body) < 2 or body[0] != FORMAT_NAME:
        raise MalformedPackageError(f"envelope is not a {FORMAT_NAME} array")
    if body[1] != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"package format version {body[1]!r}; this reader implements {FORMAT_VERSION}"
        )
    if len(body) != 5 or not all(isinstance(x, bytes) for x in body[2:]):
        raise MalformedPackageError("envelope must be [name, version, header, enc, ciphertext]")
    header_bytes, enc, ciphertext = body[2], body[3], body[4]
    fields = cbor.loads_strict(header_bytes, "envelope header")
    if not isinstance(fields, dict) or set(fields) != {"id", "created", "kid", "suite", "size"}:
        raise MalformedPackageError("envelope header must have id, created, kid, suite, size")
    pid, created, kid, suite, size = (
        fields["id"],
        fields["created"],
        fields["kid"],
        fields["suite"],
        fields["size"],
    )
    if not (isinstance(pid, str) and is_package_id(pid)):
        raise MalformedPackageError("package id must be a lower-case UUIDv7")
    if not isinstance(created, str) or not isinstance(kid, bytes) or len(kid) != 32:
        raise MalformedPackageError("envelope header created/kid are malformed")
    if suite != SUITE_IDS:
        raise UnsupportedVersionError(f"HPKE suite {suite!r} is not supported")
    if not isinstance(size, int) or size < 0:
        raise MalformedPackageError("envelope header size must be a non-negative integer")
    if size > max_plaintext:
        raise SizeLimitError(f"declared content size {size} bytes is over {max_plaintext}")
    if len(enc) != ENC_LEN:
        raise MalformedPackageError(f"HPKE encapsulated key must be {ENC_LEN} bytes")
    # AES-GCM adds a 16-byte tag: any other length cannot be the declared content.
    if len(ciphertext) != size + 16:
        raise MalformedPackageError("ciphertext length does not match the declared size")
    return Envelope(EnvelopeHeader(pid, created, kid, size), header_bytes, enc, ciphertext)


def open_envelope(envelope: Envelope, decryptor: Decryptor) -> bytes:
    mine = key_id(decryptor.public_key())
    if envelope.header.recipient_kid != mine:
        raise WrongRecipientError(
            f"package is encrypted to key {envelope.header.recipient_kid.hex()[:16]}…, "
            f"this registry holds {mine.hex()[:16]}…"
        )
    return decryptor.open(envelope.enc, envelope.ciphertext, INFO_PREFIX + envelope.header_bytes)
