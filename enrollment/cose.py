"""COSE_Sign1 (RFC 9052) with ES256, the signature over the package manifest.

We build the Sig_structure ourselves rather than through pycose because the private key may
live in a TPM or an HSM that only signs digests: pycose needs the key in memory. The tests
cross-check both directions against pycose as an independent implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from enrollment import cbor
from enrollment.errors import BadSignatureError, MalformedPackageError
from enrollment.keys import Signer, key_id

COSE_SIGN1_TAG = 18
ALG_ES256 = -7
# Header labels (RFC 9052 section 3.1; x5chain from RFC 9360).
H_ALG, H_CONTENT_TYPE, H_KID, H_X5CHAIN = 1, 3, 4, 33


@dataclass(frozen=True)
class Sign1:
    """A decoded COSE_Sign1 whose signature has not been checked yet."""

    protected: bytes
    payload: bytes
    signature: bytes
    kid: bytes
    content_type: str
    chain: tuple[x509.Certificate, ...]

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected, self.payload)

    def verify(self, public_key: ec.EllipticCurvePublicKey) -> None:
        """Raise BadSignatureError unless the signature verifies with ``public_key``."""
        if len(self.signature) != 64:
            raise BadSignatureError("ES256 signature must be 64 bytes (r || s)")
        der = encode_dss_signature(
            int.from_bytes(self.signature[:32], "big"), int.from_bytes(self.signature[32:], "big")
        )
        try:
            public_key.verify(der, self.to_be_signed(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise BadSignatureError("the manifest signature does not verify") from exc


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    return cbor.dumps(["Signature1", protected, external_aad, payload])


def sign1(payload: bytes, signer: Signer, content_type: str) -> bytes:
    """A tagged COSE_Sign1 with the payload embedded; kid = SHA-256 of the signer's SPKI."""
    header: dict[int, object] = {
        H_ALG: ALG_ES256,
        H_CONTENT_TYPE: content_type,
        H_KID: key_id(signer.public_key()),
    }
    cert = signer.certificate()
    if cert is not None:
        header[H_X5CHAIN] = cert.public_bytes(Encoding.DER)
    protected = cbor.dumps(header)
    signature = signer.sign(sig_structure(protected, payload))
    return cbor.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def decode_sign1(data: bytes) -> Sign1:
    """Parse a tagged COSE_Sign1 we accept: ES256, kid present, payload embedded."""
    obj = cbor.loads_strict(data, "manifest signature", allowed_tags=frozenset({COSE_SIGN1_TAG}))
    if not (isinstance(obj, cbor2.CBORTag) and obj.tag == COSE_SIGN1_TAG):
        raise MalformedPackageError("manifest signature is not a tagged COSE_Sign1")
    parts = obj.value
    if not (isinstance(parts, list) and len(parts) == 4):
        raise MalformedPackageError("COSE_Sign1 must be an array of four items")
    protected, unprotected, payload, signature = parts
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)):
        raise MalformedPackageError("COSE_Sign1 protected, payload and signature are bytes")
    if unprotected != {}:
        raise MalformedPackageError("COSE_Sign1 unprotected header must be empty")
    header = cbor.loads_strict(protected, "COSE protected header")
    if not isinstance(header, dict):
        raise MalformedPackageError("COSE protected header is not a map")
    if header.get(H_ALG) != ALG_ES256:
        raise MalformedPackageError("COSE algorithm must be ES256 (-7)")
    kid, ctype = header.get(H_KID), header.get(H_CONTENT_TYPE)
    if not isinstance(kid, bytes) or len(kid) != 32:
        raise MalformedPackageError("COSE kid must be the 32-byte SHA-256 of the signer's key")
    if not isinstance(ctype, str):
        raise MalformedPackageError("COSE content type is missing")
    unknown = set(header) - {H_ALG, H_CONTENT_TYPE, H_KID, H_X5CHAIN}
    if unknown:
        raise MalformedPackageError(f"COSE protected header has unknown labels {sorted(unknown)}")
    chain_raw = header.get(H_X5CHAIN)
    ders = [chain_raw] if isinstance(chain_raw, bytes) else chain_raw or []
    if not isinstance(ders, list) or not all(isinstance(d, bytes) for d in ders):
        raise MalformedPackageError("COSE x5chain must be bytes or an array of bytes")
    try:
        chain = tuple(x509.load_der_x509_certificate(d) for d in ders)
    except ValueError as exc:
        raise MalformedPackageError(f"COSE x5chain holds an unreadable certificate: {exc}") from exc
    return Sign1(protected, payload, signature, kid, ctype, chain)
