"""The update signing keys. RAUC checks every bundle against the keyring in the image
(a CA certificate); the build signs bundles with a certificate that CA issued.

A development CA and signing key are made on the first build in build/image/keys/ (never
committed). For stations in the field the CA lives offline and the signing key in an HSM:
point ``--keys`` at a folder holding ``ca.pem``, ``signing.pem`` and ``signing.key`` (or a
PKCS#11 URI in ``signing.key.uri``), see docs/technician.md.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SigningKeys:
    ca: Path
    cert: Path
    key: str  # a file path or a pkcs11: URI

    @classmethod
    def in_folder(cls, folder: Path) -> SigningKeys:
        uri = folder / "signing.key.uri"
        key = uri.read_text().strip() if uri.exists() else str(folder / "signing.key")
        return cls(folder / "ca.pem", folder / "signing.pem", key)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_development_keys(folder: Path, name: str = "vn-eid development") -> SigningKeys:
    """A CA and a signing certificate it issued (EC P-256), unless already there."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = SigningKeys.in_folder(folder)
    if keys.ca.exists() and keys.cert.exists() and Path(keys.key).exists():
        return keys
    folder.chmod(0o700)
    ca_key = folder / "ca.key"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    _openssl("req", "-new", "-x509", "-key", str(ca_key), "-out", str(keys.ca), "-days",
             "3650", "-subj", f"/O=vn-eid/CN={name} update CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keys.key)
    csr = folder / "signing.csr"
    _openssl("req", "-new", "-key", keys.key, "-out", str(csr),
             "-subj", f"/O=vn-eid/CN={name} update signing")  # fmt: skip
    ext = folder / "signing.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(keys.ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(keys.cert), "-days", "1825",
             "-extfile", str(ext))  # fmt: skip
    csr.unlink()
    ext.unlink()
    return keys
