"""Software keys: a PEM file readable only by its owner (mode 0600), as ssh does."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from enrollment.errors import DecryptionError, KeyProviderError

HPKE_SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, created with mode 0600 and fsynced."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 under a fresh name: a stale temp file cannot widen it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, pem)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a P-256 private key, refusing files that others can read."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyProviderError(f"key file {path} does not exist") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyProviderError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            f"it must be readable by its owner only: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyProviderError(f"key file {path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyProviderError(f"key file {path} must hold an EC P-256 key")
    return key


def raw_signature(der: bytes) -> bytes:
    """DER ECDSA-Sig-Value -> 64-byte r || s, the form COSE uses."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class SoftwareKeySigner:
    """ES256 signer whose key sits in a 0600 PEM file (the development default)."""

    def __init__(
        self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate | None = None
    ) -> None:
        self._key = key
        self._certificate = certificate

    @classmethod
    def from_file(cls, path: Path, certificate: Path | None = None) -> SoftwareKeySigner:
        cert = None
        if certificate is not None:
            cert = x509.load_pem_x509_certificate(certificate.read_bytes())
        return cls(load_private_key(path), cert)

    @classmethod
    def generate(cls, path: Path) -> SoftwareKeySigner:
        """Create a new key file (mode 0600); refuses to overwrite an existing one."""
        if path.exists():
            raise KeyProviderError(f"{path} exists; refusing to overwrite a key")
        key = ec.generate_private_key(ec.SECP256R1())
        write_private_key(path, key)
        return cls(key)

    def with_certificate(self, certificate: x509.Certificate) -> SoftwareKeySigner:
        return SoftwareKeySigner(self._key, certificate)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def certificate(self) -> x509.Certificate | None:
        return self._certificate

    def sign(self, data: bytes) -> bytes:
        return raw_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))


class SoftwareDecryptor:
    """Registry decryptor with the private key in a 0600 PEM file."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> SoftwareDecryptor:
        return cls(load_private_key(path))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def open(self, enc: bytes, ciphertext: bytes, info: bytes) -> bytes:
        try:
            return HPKE_SUITE.decrypt(enc + ciphertext, self._key, info=info)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError(
                "HPKE open failed: the ciphertext, the encapsulated key or the envelope "
                "header was altered"
            ) from exc
