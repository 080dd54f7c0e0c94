"""The ICAO PKI of the card (9303-12): a Country Signing CA (CSCA) for Viet Nam and the
Document Signers (DS) it certifies. ECDSA P-256 with SHA-256.

Profiles (9303-12 7.1.1 and Table 6): the country (ISO 3166-1 alpha-2, "VN") in subject
and issuer; key identifiers; a private key usage period; the CSCA signs certificates and
CRLs only (basicConstraints CA, pathLen 0); a DS signs documents only (digitalSignature)
and lists the document types it may sign (DocumentTypeList, "ID").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from enrollment.icao import asn1
from enrollment.icao.sod import SodSigner, from_private_key
from enrollment.pki import key_usage, subject_name

__all__ = ["DOCUMENT_TYPE_LIST", "SoftwarePki", "issue_document_signer", "make_csca"]

DOCUMENT_TYPE_LIST = ObjectIdentifier("2.23.136.1.1.6.2")  # id-icao-mrtd-security-extensions


def make_csca(
    key: ec.EllipticCurvePrivateKey,
    *,
    country: str = "VN",
    organisation: str = "Ministry of Public Security",
    common_name: str = "CSCA Viet Nam",
    key_usage_days: int = 5 * 365,
    days: int = 32 * 365,
    now: datetime | None = None,
) -> x509.Certificate:
    """A self-signed CSCA certificate. Its key signs DS certificates for ``key_usage_days``;
    the certificate stays valid long enough to verify the last documents those DSs sign
    (key usage + a DS's key usage + the longest card validity, 22 years: issued at 38,
    renewed at 60).
    """
    now = now or datetime.now(UTC)
    name = subject_name(common_name, organisation, country)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.PrivateKeyUsagePeriod(now, now + timedelta(days=key_usage_days)),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def issue_document_signer(
    csca_key: ec.EllipticCurvePrivateKey,
    csca: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    *,
    common_name: str = "Document Signer VN-EID",
    organisation: str = "Ministry of Public Security",
    document_types: tuple[str, ...] = ("ID",),
    key_usage_days: int = 90,
    document_validity_days: int = 22 * 365 + 10,
    now: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    """A DS certificate for ``public_key`` (which may live in an HSM).

    The DS key signs for ``key_usage_days``; the certificate is valid that long plus the
    validity of the documents it signs (a CCCD runs at most 22 years, see
    :mod:`enrollment.icao.validity`), unless ``not_after`` says otherwise.
    """
    now = now or datetime.now(UTC)
    country = csca.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value
    csca_ski = csca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    doc_types = asn1.DocumentTypeList({"version": 0, "doc_type_list": list(document_types)})
    end = not_after or now + timedelta(days=key_usage_days + document_validity_days)
    return (
        x509.CertificateBuilder()
        .subject_name(subject_name(common_name, organisation, str(country)))
        .issuer_name(csca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(end)
        .add_extension(key_usage(certificates=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(csca_ski),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.PrivateKeyUsagePeriod(now, now + timedelta(days=key_usage_days)),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(DOCUMENT_TYPE_LIST, doc_types.dump()), critical=False
        )
        .sign(csca_key, hashes.SHA256())
    )


@dataclass(frozen=True)
class SoftwarePki:
    """A CSCA and a Document Signer with their keys in memory: for development, the demo,
    benchmarks and tests. In production the DS key lives in the registry's HSM and signs
    through :func:`enrollment.icao.sod.from_signer`."""

    csca_key: ec.EllipticCurvePrivateKey
    csca: x509.Certificate
    ds_key: ec.EllipticCurvePrivateKey
    ds: x509.Certificate

    @classmethod
    def generate(
        cls, *, now: datetime | None = None, ds_not_after: datetime | None = None
    ) -> SoftwarePki:
        now = now or datetime.now(UTC)
        csca_key = ec.generate_private_key(ec.SECP256R1())
        csca = make_csca(csca_key, now=now)
        ds_key = ec.generate_private_key(ec.SECP256R1())
        ds = issue_document_signer(
            csca_key, csca, ds_key.public_key(), now=now, not_after=ds_not_after
        )
        return cls(csca_key, csca, ds_key, ds)

    @property
    def sign(self) -> SodSigner:
        return from_private_key(self.ds_key)
