"""Which station keys the registry believes: CA anchors, pinned keys, revocations.

A trust directory holds PEM files:
- CA certificates (basicConstraints CA=true): station certificates they issued are trusted;
- station certificates (end-entity): pinned, trusted as they are;
- ``<station-id>.pub.pem`` public keys: pinned keys for stations without a certificate;
- ``revoked.txt``: one hex key id (SHA-256 of the SubjectPublicKeyInfo) per line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enrollment.errors import (
    InconsistentPackageError,
    KeyProviderError,
    RevokedSignerError,
    UnknownSignerError,
)
from enrollment.keys import key_id


@dataclass(frozen=True)
class SignerIdentity:
    """Who signed: the station id and how we came to trust its key."""

    station_id: str
    kid: bytes
    public_key: ec.EllipticCurvePublicKey
    certificate: x509.Certificate | None
    trusted_by: str  # "certificate chain", "pinned certificate" or "pinned key"


def station_id_of(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise UnknownSignerError("station certificate must have exactly one common name")
    return str(names[0].value)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


@dataclass
class TrustStore:
    anchors: list[x509.Certificate] = field(default_factory=list)
    pinned_certificates: dict[bytes, x509.Certificate] = field(default_factory=dict)
    pinned_keys: dict[bytes, tuple[str, ec.EllipticCurvePublicKey]] = field(default_factory=dict)
    revoked: set[bytes] = field(default_factory=set)

    @classmethod
    def from_dir(cls, path: Path) -> TrustStore:
        if not path.is_dir():
            raise KeyProviderError(f"trust store {path} is not a directory")
        store = cls()
        for file in sorted(path.iterdir()):
            if file.name == "revoked.txt":
                for line in file.read_text().split():
                    store.revoked.add(bytes.fromhex(line))
            elif file.name.endswith(".pub.pem"):
                key = serialization.load_pem_public_key(file.read_bytes())
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    raise KeyProviderError(f"{file} is not an EC public key")
                store.pin_key(file.name.removesuffix(".pub.pem"), key)
            elif file.suffix in {".pem", ".crt", ".cer"}:
                for cert in x509.load_pem_x509_certificates(file.read_bytes()):
                    store.add_certificate(cert)
        return store

    def add_certificate(self, cert: x509.Certificate) -> None:
        if _is_ca(cert):
            self.anchors.append(cert)
        else:
            pub = cert.public_key()
            if not isinstance(pub, ec.EllipticCurvePublicKey):
                raise KeyProviderError("station certificates must hold EC P-256 keys")
            self.pinned_certificates[key_id(pub)] = cert

    def pin_key(self, station_id: str, key: ec.EllipticCurvePublicKey) -> None:
        self.pinned_keys[key_id(key)] = (station_id, key)

    def revoke(self, kid: bytes) -> None:
        self.revoked.add(kid)

    def resolve(
        self, kid: bytes, chain: Iterable[x509.Certificate], at: datetime
    ) -> SignerIdentity:
        """The trusted identity for ``kid``, or UnknownSignerError / RevokedSignerError."""
        if kid in self.revoked:
            raise RevokedSignerError(f"signer {kid.hex()[:16]}… is revoked")
        if kid in self.pinned_keys:
            station_id, key = self.pinned_keys[kid]
            return SignerIdentity(station_id, kid, key, None, "pinned key")
        if kid in self.pinned_certificates:
            cert = self.pinned_certificates[kid]
            _check_validity(cert, at)
            return SignerIdentity(
                station_id_of(cert), kid, _ec_key(cert), cert, "pinned certificate"
            )
        certs = list(chain)
        if not certs:
            raise UnknownSignerError(
                f"signer {kid.hex()[:16]}… is not in the trust store and sent no certificate"
            )
        leaf = certs[0]
        leaf_key = _ec_key(leaf)
        if key_id(leaf_key) != kid:
            raise InconsistentPackageError("the COSE kid does not match the certificate's key")
        _check_validity(leaf, at)
        if _is_ca(leaf):
            raise UnknownSignerError("a CA certificate cannot sign packages")
        if self._chains_to_anchor(leaf, certs[1:], at):
            return SignerIdentity(station_id_of(leaf), kid, leaf_key, leaf, "certificate chain")
        raise UnknownSignerError(
            f"the station certificate {leaf.subject.rfc4514_string()} does not chain to a "
            "trusted CA"
        )

    def _chains_to_anchor(
        self, cert: x509.Certificate, intermediates: list[x509.Certificate], at: datetime
    ) -> bool:
        # Short chains only (station CA -> station): walk at most four issuers.
        current = cert
        for _ in range(4):
            for anchor in self.anchors:
                if _issued_by(current, anchor):
                    _check_validity(anchor, at)
                    return True
            nxt = next((c for c in intermediates if _is_ca(c) and _issued_by(current, c)), None)
            if nxt is None:
                return False
            _check_validity(nxt, at)
            current = nxt
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_validity(cert: x509.Certificate, at: datetime) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise UnknownSignerError(
            f"certificate {cert.subject.rfc4514_string()} is not valid at {at.isoformat()}"
        )


def _ec_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UnknownSignerError("station certificates must hold EC P-256 keys")
    return key
