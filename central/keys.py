"""The registry's keys: where they live, created on first start, loaded afterwards.

- the package decryption key (HPKE P-256): stations encrypt every package to its public key;
- the station CA (key + self-signed certificate): issues the stations' certificates;
- the card PKI, a CSCA and the current Document Signer (``central.signers``): their
  certificates in the database, their private keys in the key directory (``software``, the
  embedded default) or on a PKCS#11 HSM token (``pkcs11``).

With no configuration the registry creates what is missing under ``data/registry/keys``
(relative to the working directory, like the database): files written atomically, private
keys 0600 in a 0700 directory. Several processes starting at once create each key once (a
lock file for the directory, the database for the card PKI).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from central.db.engine import session_factory
from central.db.models import SignerCertificate
from central.signers import (
    DOCUMENT_VALIDITY_DAYS,
    CscaRotation,
    FileKeyStore,
    Keyring,
    KeyStore,
    NoDocumentSignerError,
    Pkcs11KeyStore,
    SignerPolicy,
    current_document_signer,
    ensure_signers,
    master_list,
    rotate_csca,
    rotate_document_signer,
    write_new_private_key,
    write_new_public_file,
)
from enrollment.errors import KeyProviderError
from enrollment.keys import Signer
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner, load_private_key
from enrollment.pki import issue_station_certificate, make_station_ca

__all__ = [
    "PACKAGE_KEY_FILE",
    "STATION_CA_CERT_FILE",
    "STATION_CA_KEY_FILE",
    "KeySettings",
    "Pkcs11Settings",
    "RegistryKeys",
    "StationRequestError",
]

PACKAGE_KEY_FILE = "package-decryption.key.pem"
STATION_CA_KEY_FILE = "station-ca.key.pem"
STATION_CA_CERT_FILE = "station-ca.cert.pem"
LOCK_FILE = ".lock"


class Pkcs11Settings(BaseModel):
    """The HSM token that holds the CSCA and Document Signer keys (``keys.pkcs11``).

    Set the PIN through the environment (``REGISTRY_KEYS__PKCS11__PIN``), never in a file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str = Field(description="the token's PKCS#11 library, e.g. libsofthsm2.so")
    token_label: str
    pin: SecretStr
    key_label_prefix: str = "vn-eid"


class KeySettings(BaseModel):
    """The ``keys`` section of the registry's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Path("data/registry/keys")
    signer_backend: Literal["software", "pkcs11"] = "software"
    """Where new CSCA and Document Signer keys are made: key files in ``path``, or the
    PKCS#11 token of ``pkcs11``."""
    pkcs11: Pkcs11Settings | None = None
    csca_key_usage_days: int = Field(5 * 365, ge=1)
    csca_validity_days: int = Field(32 * 365, ge=1)
    ds_key_usage_days: int = Field(90, ge=1)
    station_ca_days: int = Field(20 * 365, ge=1)
    station_certificate_days: int = Field(730, ge=1)
    auto_rotate: bool = True
    """Rotate the DS (and the CSCA) by itself when its key usage period ends; turn off
    where rotations are a ceremony run by people (``python -m central keys rotate-ds``)."""
    country: str = Field("VN", pattern=r"^[A-Z]{2}$")
    organisation: str = "Ministry of Public Security"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.signer_backend == "pkcs11" and self.pkcs11 is None:
            raise ValueError("keys.signer_backend 'pkcs11' needs the keys.pkcs11 section")
        # The last DS a CSCA certifies signs cards valid up to 22 years: the CSCA
        # certificate must still be valid when the last of them is checked.
        needed = self.csca_key_usage_days + self.ds_key_usage_days + DOCUMENT_VALIDITY_DAYS
        if self.csca_validity_days < needed:
            raise ValueError(
                f"keys.csca_validity_days must be at least {needed} (CSCA key usage + DS key "
                "usage + the longest card validity)"
            )
        return self

    def policy(self) -> SignerPolicy:
        return SignerPolicy(
            csca_key_usage_days=self.csca_key_usage_days,
            csca_validity_days=self.csca_validity_days,
            ds_key_usage_days=self.ds_key_usage_days,
            country=self.country,
            organisation=self.organisation,
            auto_rotate=self.auto_rotate,
        )

    def keyring(self) -> Keyring:
        """New keys where ``signer_backend`` says; file keys readable in any case."""
        files = FileKeyStore(self.path.resolve())
        hsm: KeyStore | None = None
        if self.pkcs11 is not None:
            hsm = Pkcs11KeyStore(
                self.pkcs11.module,
                self.pkcs11.token_label,
                self.pkcs11.pin.get_secret_value(),
                self.pkcs11.key_label_prefix,
            )
        if self.signer_backend == "pkcs11":
            assert hsm is not None  # the validator requires the section
            return Keyring(hsm, files)
        return Keyring(files, *([hsm] if hsm is not None else []))


class StationRequestError(ValueError):
    """A station's certificate request (CSR or public key) cannot be accepted."""


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on the key directory, held while keys are looked for or made."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _package_key(directory: Path) -> SoftwareDecryptor:
    path = directory / PACKAGE_KEY_FILE
    if not path.exists():
        write_new_private_key(path, ec.generate_private_key(ec.SECP256R1()))
    return SoftwareDecryptor.from_file(path)


def _station_ca(
    directory: Path, settings: KeySettings, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = directory / STATION_CA_KEY_FILE, directory / STATION_CA_CERT_FILE
    if not key_path.exists():
        if cert_path.exists():
            raise KeyProviderError(
                f"{cert_path} exists but its key {key_path} does not; restore the key from "
                "the backup (a new key would orphan every station certificate)"
            )
        write_new_private_key(key_path, ec.generate_private_key(ec.SECP256R1()))
    key = load_private_key(key_path)
    if not cert_path.exists():  # first start, or a crash between writing key and certificate
        write_new_public_file(
            cert_path, _pem(make_station_ca(key, days=settings.station_ca_days, now=now))
        )
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.public_key() != key.public_key():
        raise KeyProviderError(
            f"{cert_path} does not belong to the key {key_path}; restore both from one backup"
        )
    return key, cert


def _public_key_from_request(data: bytes) -> ec.EllipticCurvePublicKey:
    """The key of a CSR (its self-signature checked: proof the station holds the private
    key) or of a bare SubjectPublicKeyInfo, PEM or DER."""
    # Only PEM may be trimmed: a DER encoding can end in a byte that looks like white space.
    pem = data.lstrip().startswith(b"-----")
    stripped = data.strip() if pem else data
    if not pem or stripped.startswith(b"-----BEGIN CERTIFICATE REQUEST-----"):
        try:
            csr = x509.load_pem_x509_csr(stripped) if pem else x509.load_der_x509_csr(stripped)
        except ValueError:
            csr = None  # DER that is no request: perhaps a bare public key
        if csr is not None:
            if not csr.is_signature_valid:
                raise StationRequestError(
                    "the certificate request's signature does not verify with its own key; "
                    "make the request with the station's private key"
                )
            return _p256(csr.public_key())
    try:
        key = (
            serialization.load_pem_public_key(stripped)
            if pem
            else serialization.load_der_public_key(stripped)
        )
    except (ValueError, TypeError) as exc:
        raise StationRequestError(
            "expected a PKCS#10 certificate request or a SubjectPublicKeyInfo, PEM or DER"
        ) from exc
    return _p256(key)


def _p256(key: object) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise StationRequestError(
            "station keys must be EC P-256 (ES256); generate the station key on that curve"
        )
    return key


class RegistryKeys:
    """The keys one registry process uses; open with :meth:`open_or_create`."""

    def __init__(
        self,
        settings: KeySettings,
        engine: Engine,
        package_decryptor: SoftwareDecryptor,
        station_ca_key: ec.EllipticCurvePrivateKey,
        station_ca: x509.Certificate,
        keyring: Keyring,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.package_decryptor = package_decryptor
        self._station_ca_key = station_ca_key
        self.station_ca = station_ca
        self.keyring = keyring
        self._sessions = session_factory(engine)

    @classmethod
    def open_or_create(
        cls,
        settings: KeySettings,
        engine: Engine,
        *,
        now: datetime | None = None,
        actor: str = "registry",
    ) -> RegistryKeys:
        """Load the keys, creating what is missing (the database must be migrated)."""
        now = now or datetime.now(UTC)
        directory = settings.path.resolve()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _directory_lock(directory):
            decryptor = _package_key(directory)
            ca_key, ca_cert = _station_ca(directory, settings, now)
        keyring = settings.keyring()
        # With rotation left to people (auto_rotate off) an expired DS must not stop the
        # start: they need this to rotate, and issuance says what to do until they have.
        with session_factory(engine).begin() as session, suppress(NoDocumentSignerError):
            ensure_signers(session, keyring, settings.policy(), now, actor=actor)
        return cls(settings, engine, decryptor, ca_key, ca_cert, keyring)

    # ---------------------------------------------------------------- packages, stations

    def package_public_key(self) -> ec.EllipticCurvePublicKey:
        """The key stations encrypt packages to."""
        return self.package_decryptor.public_key()

    def package_public_key_pem(self) -> bytes:
        return self.package_public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def issue_station_certificate_from_csr(
        self,
        csr_pem_or_der: bytes | ec.EllipticCurvePublicKey,
        station_id: str,
        *,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """A station certificate for the key of a PKCS#10 request (PEM or DER; its
        self-signature must verify), of a bare public key (SubjectPublicKeyInfo, PEM or DER),
        or of a key object. The request's subject is ignored: the certificate names
        ``station_id``, which the caller took from the enrollment token it checked."""
        if isinstance(csr_pem_or_der, ec.EllipticCurvePublicKey):
            public_key = _p256(csr_pem_or_der)
        else:
            public_key = _public_key_from_request(csr_pem_or_der)
        now = now or datetime.now(UTC)
        return issue_station_certificate(
            self._station_ca_key,
            self.station_ca,
            station_id,
            public_key,
            days=self.settings.station_certificate_days,
            now=now,
        )

    def station_ca_signer(self) -> Signer:
        """The station CA's key as a COSE/ES256 signer, with the CA certificate: for what
        the registry signs for stations offline (removable-media receipts), which they
        check against the station CA they received at enrollment."""
        return SoftwareKeySigner(self._station_ca_key, self.station_ca)

    # ------------------------------------------------------------------------- card PKI

    def document_signer(self, session: Session, now: datetime) -> tuple[SignerCertificate, Signer]:
        """The DS to sign a chip with now, and its Signer. With ``auto_rotate`` an expired
        DS is rotated first (inside ``session``'s transaction: the caller commits)."""
        try:
            return current_document_signer(session, self.keyring, now)
        except NoDocumentSignerError:
            if not self.settings.auto_rotate:
                raise
        ensure_signers(session, self.keyring, self.settings.policy(), now, actor="registry")
        return current_document_signer(session, self.keyring, now)

    def rotate_document_signer(
        self, *, actor: str, reason: str = "rotation", now: datetime | None = None
    ) -> SignerCertificate:
        with self._sessions.begin() as session:
            return rotate_document_signer(
                session,
                self.keyring,
                self.settings.policy(),
                now or datetime.now(UTC),
                actor=actor,
                reason=reason,
            )

    def rotate_csca(
        self, *, actor: str, reason: str = "rotation", now: datetime | None = None
    ) -> CscaRotation:
        with self._sessions.begin() as session:
            return rotate_csca(
                session,
                self.keyring,
                self.settings.policy(),
                now or datetime.now(UTC),
                actor=actor,
                reason=reason,
            )

    def master_list(self) -> list[x509.Certificate]:
        """The CSCA and link certificates a verifier of the registry's cards needs."""
        with self._sessions.begin() as session:
            return master_list(session)

    def master_list_pem(self) -> bytes:
        return b"".join(_pem(cert) for cert in self.master_list())
