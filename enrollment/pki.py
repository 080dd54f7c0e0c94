"""Certificates for stations: a station CA, station certificates, signing requests.

The registry runs the station CA (central issues the certificates); the station makes the
signing request from a key that may never leave its TPM. Both use these helpers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def subject_name(common_name: str, organisation: str, country: str = "VN") -> x509.Name:
    """C / O / CN, the subject every certificate of the project carries."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def key_usage(*, certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a station signs data only."""
    return x509.KeyUsage(
        digital_signature=not certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificates,
        crl_sign=certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_station_ca(
    key: ec.EllipticCurvePrivateKey,
    common_name: str = "VN-EID Station CA",
    *,
    days: int = 3650,
    now: datetime | None = None,
) -> x509.Certificate:
    """A self-signed CA certificate that may issue station certificates only."""
    now = now or datetime.now(UTC)
    name = subject_name(common_name, "VN-EID Registry")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(certificates=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def issue_station_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    station_id: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    days: int = 730,
    now: datetime | None = None,
) -> x509.Certificate:
    """A station certificate: CN = station id, signing only, issued by the station CA."""
    now = now or datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject_name(station_id, "VN-EID Enrollment Station"))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(certificates=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
