"""Who this station is: its key, its certificate and the registry's trust anchors.

First boot (a technician types the one-time token the registry's administrator gave them):

    identity = provision(folder, registry_url, token, keys=KeySettings(backend="tpm", ...))

makes the station key (in the TPM where fitted, else a 0600 software key file), sends a
PKCS#10 request signed with that key to ``POST /v1/enroll`` and stores what comes back: the
station certificate, the registry's station CA, the package key the station encrypts to,
and the CSCA master list that card verification needs. Every later start just loads the
folder (:func:`load_identity`). Nothing is written until the registry has answered, and
the folder is written file by file with ``identity.json`` last, so a power cut during
provisioning leaves either nothing usable (provision again with a fresh token) or a
complete identity.

The request is built here with asn1crypto rather than ``cryptography``'s CSR builder,
because that builder needs the private key in memory and a TPM key never is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pydantic import BaseModel, ConfigDict

from enrollment.keys import Signer
from enrollment.keys.software import SoftwareKeySigner
from enrollment.request_signing import StationRequestAuth
from station.store.files import atomic_write

IDENTITY_FILE = "identity.json"
KEY_FILES = {"software": "station-key.pem", "tpm": "station-key.tpm"}


class KeySettings(BaseModel):
    """Where the station's keys live: ``tpm`` (a TPM 2.0, through a TCTI such as
    ``device:/dev/tpmrm0``) or ``software`` (0600 files; desks, demos, boards without a
    TPM)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["software", "tpm"] = "software"
    tcti: str | None = None
    """TPM only, e.g. ``device:/dev/tpmrm0`` or ``swtpm:host=127.0.0.1,port=2321``."""


class ProvisioningError(RuntimeError):
    """First-boot provisioning failed; the message says what the technician should do."""


class NotProvisionedError(RuntimeError):
    """The station has no identity yet: provision it with a registry token first."""


@dataclass(frozen=True)
class StationIdentity:
    """A provisioned station: its signer (with certificate) and the registry's anchors."""

    station_id: str
    office_id: int
    registry_url: str
    enrolled_at: datetime
    signer: Signer
    certificate: x509.Certificate
    station_ca: x509.Certificate
    package_key: ec.EllipticCurvePublicKey
    csca: tuple[x509.Certificate, ...]

    def auth(self) -> StationRequestAuth:
        """httpx auth that signs this station's requests (RFC 9421)."""
        return StationRequestAuth(self.signer, self.station_id)

    def as_json(self) -> dict[str, Any]:
        """What the technician page shows (no secrets)."""
        return {
            "station_id": self.station_id,
            "office_id": self.office_id,
            "registry_url": self.registry_url,
            "enrolled_at": self.enrolled_at.isoformat(),
            "certificate_serial": format(self.certificate.serial_number, "x"),
            "certificate_not_after": self.certificate.not_valid_after_utc.isoformat(),
            "csca_count": len(self.csca),
        }


def certification_request(signer: Signer, common_name: str) -> bytes:
    """A PEM PKCS#10 request for ``signer``'s key, self-signed with ECDSA-SHA256 by the
    signer itself (so the registry sees proof that the station holds the key)."""
    spki = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": asn1_csr.Name.build({"common_name": common_name}),
            "subject_pk_info": asn1_keys.PublicKeyInfo.load(spki),
            "attributes": [],
        }
    )
    raw = signer.sign(info.dump())  # r || s, 32 bytes each
    signature = encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    request = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }
    )
    der = request.dump()
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)


def _new_signer(folder: Path, keys: KeySettings) -> Signer:
    path = folder / KEY_FILES[keys.backend]
    if path.exists():
        path.unlink()  # a key from a provisioning that never completed: never certified
    if keys.backend == "tpm":
        if not keys.tcti:
            raise ProvisioningError("keys.backend is tpm but keys.tcti is not set")
        from enrollment.keys.tpm import TpmSigner

        return TpmSigner.create(keys.tcti, path)
    return SoftwareKeySigner.generate(path)


def _load_signer(folder: Path, keys: KeySettings, certificate: x509.Certificate) -> Signer:
    path = folder / KEY_FILES[keys.backend]
    if not path.is_file():
        raise NotProvisionedError(
            f"the station key {path} is missing (keys.backend={keys.backend}); "
            "provision the station again with a new registry token"
        )
    if keys.backend == "tpm":
        if not keys.tcti:
            raise NotProvisionedError("keys.backend is tpm but keys.tcti is not set")
        from enrollment.keys.tpm import TpmSigner

        return TpmSigner(keys.tcti, path, certificate)
    return SoftwareKeySigner.from_file(path).with_certificate(certificate)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def provision(
    folder: Path,
    registry_url: str,
    token: str,
    *,
    keys: KeySettings | None = None,
    client: httpx.Client | None = None,
    now: datetime | None = None,
) -> StationIdentity:
    """Enroll this station with the registry's one-time ``token`` and store the result.

    Refuses when the folder already holds an identity (a station is provisioned once; a
    technician resets it explicitly with :func:`reset_identity`)."""
    keys = keys or KeySettings()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / IDENTITY_FILE).exists():
        raise ProvisioningError(
            "this station is already provisioned; reset its identity first to re-enroll it"
        )
    token = token.strip()
    if not token:
        raise ProvisioningError("the enrollment token is empty")
    signer = _new_signer(folder, keys)
    request = certification_request(signer, "vn-eid station")
    own = client is None
    http = client or httpx.Client(base_url=registry_url, timeout=30.0)
    try:
        response = http.post("/v1/enroll", json={"token": token, "csr": request.decode()})
    except httpx.HTTPError as exc:
        raise ProvisioningError(
            f"cannot reach the registry at {registry_url}: {exc}; check the network and the "
            "registry address, then try again (the token is still valid)"
        ) from exc
    finally:
        if own:
            http.close()
    if response.status_code != 201:
        try:
            body = response.json()
            why = f"{body.get('error')}: {body.get('detail')}"
        except ValueError:
            why = response.text[:200]
        raise ProvisioningError(
            f"the registry refused the enrollment ({response.status_code} {why}); "
            "ask the registry administrator for a new token"
        )
    answer = response.json()
    try:
        certificate = x509.load_pem_x509_certificate(answer["certificate"].encode())
        station_ca = x509.load_pem_x509_certificate(answer["station_ca"].encode())
        package_key = serialization.load_pem_public_key(answer["package_public_key"].encode())
        csca = x509.load_pem_x509_certificates(answer["csca_master_list"].encode())
        station_id = str(answer["station_id"])
        office_id = int(answer["office_id"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ProvisioningError(f"the registry's answer is malformed: {exc}") from exc
    if not isinstance(package_key, ec.EllipticCurvePublicKey):
        raise ProvisioningError("the registry's package key is not an EC key")
    if certificate.public_key() != signer.public_key():
        raise ProvisioningError("the registry certified another key than this station's")
    enrolled = now or datetime.now(UTC)
    write_trust(folder, certificate=certificate, station_ca=station_ca, csca=csca)
    atomic_write(folder / "package-key.pem", answer["package_public_key"].encode())
    meta = {
        "station_id": station_id,
        "office_id": office_id,
        "registry_url": registry_url,
        "enrolled_at": enrolled.isoformat(),
        "key_backend": keys.backend,
    }
    atomic_write(folder / IDENTITY_FILE, json.dumps(meta, indent=2).encode())
    return load_identity(folder, keys)


def write_trust(
    folder: Path,
    *,
    certificate: x509.Certificate | None = None,
    station_ca: x509.Certificate | None = None,
    csca: list[x509.Certificate] | tuple[x509.Certificate, ...] | None = None,
) -> None:
    """Replace the stored anchors (sync calls this when the registry's change)."""
    if certificate is not None:
        atomic_write(folder / "station-cert.pem", _pem(certificate))
    if station_ca is not None:
        atomic_write(folder / "station-ca.pem", _pem(station_ca))
    if csca is not None:
        atomic_write(folder / "csca.pem", b"".join(_pem(c) for c in csca))


def is_provisioned(folder: Path) -> bool:
    return (folder / IDENTITY_FILE).is_file()


def load_identity(folder: Path, keys: KeySettings | None = None) -> StationIdentity:
    """The stored identity; :class:`NotProvisionedError` when there is none."""
    keys = keys or KeySettings()
    meta_path = folder / IDENTITY_FILE
    if not meta_path.is_file():
        raise NotProvisionedError(
            "this station is not provisioned yet: enter the registry address and the "
            "one-time token from the registry administrator"
        )
    try:
        meta = json.loads(meta_path.read_text())
        certificate = x509.load_pem_x509_certificate((folder / "station-cert.pem").read_bytes())
        station_ca = x509.load_pem_x509_certificate((folder / "station-ca.pem").read_bytes())
        package_key = serialization.load_pem_public_key((folder / "package-key.pem").read_bytes())
        csca = tuple(x509.load_pem_x509_certificates((folder / "csca.pem").read_bytes()))
    except (OSError, ValueError, KeyError) as exc:
        raise NotProvisionedError(
            f"the station identity in {folder} is damaged ({exc}); reset and provision again"
        ) from exc
    if meta.get("key_backend", keys.backend) != keys.backend:
        raise NotProvisionedError(
            f"the station was provisioned with keys.backend={meta['key_backend']}, "
            f"but is configured with {keys.backend}"
        )
    if not isinstance(package_key, ec.EllipticCurvePublicKey):
        raise NotProvisionedError("the stored package key is not an EC key")
    signer = _load_signer(folder, keys, certificate)
    if signer.public_key() != certificate.public_key():
        raise NotProvisionedError(
            f"the station certificate in {folder} is not for the station's key (an "
            "interrupted provisioning?); reset the identity and provision again"
        )
    return StationIdentity(
        station_id=str(meta["station_id"]),
        office_id=int(meta["office_id"]),
        registry_url=str(meta["registry_url"]),
        enrolled_at=datetime.fromisoformat(meta["enrolled_at"]),
        signer=signer,
        certificate=certificate,
        station_ca=station_ca,
        package_key=package_key,
        csca=csca,
    )


def reset_identity(folder: Path) -> None:
    """Forget the identity (a technician re-provisions a repaired station). The outbox and
    drafts are not touched: packages already signed stay valid."""
    if folder.is_dir():
        shutil.rmtree(folder)


__all__ = [
    "KEY_FILES",
    "KeySettings",
    "NotProvisionedError",
    "ProvisioningError",
    "StationIdentity",
    "certification_request",
    "is_provisioned",
    "load_identity",
    "provision",
    "reset_identity",
    "write_trust",
]
