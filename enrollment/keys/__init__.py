"""Keys behind one interface: station signers and registry decryptors.

A :class:`Signer` makes ES256 signatures (ECDSA P-256 over SHA-256, raw ``r || s``) for the
package manifest; where the private key lives is the backend's business: a software key file
(default), a PKCS#11 token (HSM, SoftHSM in tests) or a TPM 2.0 (swtpm in tests).

A :class:`Decryptor` opens the HPKE envelope addressed to the registry.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["Decryptor", "Signer", "key_id"]


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the id both sides use for a key."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


@runtime_checkable
class Signer(Protocol):
    """Makes ES256 signatures with a P-256 key it may never reveal."""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The P-256 public key that verifies this signer's signatures."""
        ...

    def certificate(self) -> x509.Certificate | None:
        """The X.509 certificate for the key, if one was issued (station certificate)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(data); returns the 64-byte raw ``r || s``."""
        ...


@runtime_checkable
class Decryptor(Protocol):
    """Holds a P-256 private key and opens HPKE (RFC 9180) base-mode envelopes to it."""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The recipient public key that stations encrypt to."""
        ...

    def open(self, enc: bytes, ciphertext: bytes, info: bytes) -> bytes:
        """HPKE single-shot open, suite DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM.

        Raises :class:`enrollment.errors.DecryptionError` when authentication fails.
        """
        ...
