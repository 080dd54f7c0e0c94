"""Passive authentication (ICAO 9303-11 5.1): EF.SOD is signed by a Document Signer that
a trusted CSCA certified, and every data group read hashes to the value EF.SOD holds.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from enrollment.icao.errors import LdsError, PassiveAuthError
from enrollment.icao.sod import LDS_SECURITY_OBJECT, SodContents, digest, parse_sod

__all__ = ["PassiveAuthResult", "verify_passive"]

_HASH_CLASSES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class PassiveAuthResult:
    """A successful passive authentication: who signed, and what was checked."""

    document_signer: x509.Certificate
    csca: x509.Certificate
    hash_algorithm: str
    verified: tuple[int, ...]  # data groups read and matching EF.SOD
    not_read: tuple[int, ...]  # in EF.SOD but not given (e.g. DG3 behind EAC)
    signing_time: datetime | None


def verify_passive(
    sod: bytes,
    data_groups: Mapping[int, bytes],
    csca: Sequence[x509.Certificate],
    *,
    at: datetime | None = None,
) -> PassiveAuthResult:
    """Check EF.SOD and ``data_groups`` ({DG number: file bytes}) against trusted CSCAs.

    Raises :class:`PassiveAuthError` naming the failed check.
    """
    at = at or datetime.now(UTC)
    try:
        contents = parse_sod(sod)
    except LdsError as exc:
        raise PassiveAuthError(f"EF.SOD cannot be read: {exc}") from exc
    if contents.econtent_type != LDS_SECURITY_OBJECT:
        raise PassiveAuthError(f"EF.SOD content type {contents.econtent_type} is not an LDS SO")
    try:
        ds = _document_signer(contents)
        _check_signed_attributes(contents)
        _check_signature(ds, contents)
        anchor = _chain(ds, csca, at)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # cryptography parses certificate fields and keys lazily: a damaged DS
        # certificate surfaces here rather than in parse_sod.
        raise PassiveAuthError(f"the Document Signer certificate is malformed: {exc}") from exc
    verified = _check_hashes(contents, data_groups)
    return PassiveAuthResult(
        document_signer=ds,
        csca=anchor,
        hash_algorithm=contents.hash_algorithm,
        verified=verified,
        not_read=tuple(sorted(set(contents.hashes) - set(data_groups))),
        signing_time=contents.signing_time,
    )


def _document_signer(contents: SodContents) -> x509.Certificate:
    for cert in contents.certificates:
        if contents.signer_serial is not None and contents.signer_issuer is not None:
            if (
                cert.serial_number == contents.signer_serial
                and cert.issuer.public_bytes() == contents.signer_issuer
            ):
                return cert
        elif contents.signer_key_id is not None:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == contents.signer_key_id:
                return cert
    raise PassiveAuthError("EF.SOD does not carry the Document Signer certificate it names")


def _check_signed_attributes(contents: SodContents) -> None:
    if contents.content_type != LDS_SECURITY_OBJECT:
        raise PassiveAuthError("the signed contentType attribute is not the LDS Security Object")
    if contents.message_digest is None:
        raise PassiveAuthError("EF.SOD has no signed messageDigest attribute")
    try:
        expected = digest(contents.digest_algorithm, contents.econtent)
    except LdsError as exc:
        raise PassiveAuthError(str(exc)) from exc
    if not hmac.compare_digest(expected, contents.message_digest):
        raise PassiveAuthError("the signed messageDigest does not match the LDS Security Object")


def _check_signature(ds: x509.Certificate, contents: SodContents) -> None:
    hash_class = _HASH_CLASSES.get(contents.signature_hash)
    if hash_class is None:
        raise PassiveAuthError(f"unsupported signature hash {contents.signature_hash}")
    key = ds.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and contents.signature_algorithm == "ecdsa":
            key.verify(contents.signature, contents.signed_attrs, ec.ECDSA(hash_class()))
        elif (
            isinstance(key, rsa.RSAPublicKey) and contents.signature_algorithm == "rsassa_pkcs1v15"
        ):
            key.verify(contents.signature, contents.signed_attrs, padding.PKCS1v15(), hash_class())
        else:
            raise PassiveAuthError(
                f"signature algorithm {contents.signature_algorithm} does not fit the "
                "Document Signer's key"
            )
    except InvalidSignature as exc:
        raise PassiveAuthError(
            "the EF.SOD signature is invalid for the Document Signer's key"
        ) from exc


def _has_usage(cert: x509.Certificate, usage: str) -> bool:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(getattr(ku, usage))


def _check_validity(cert: x509.Certificate, at: datetime, role: str) -> None:
    if at < cert.not_valid_before_utc:
        raise PassiveAuthError(
            f"the {role} certificate is not yet valid at {at.isoformat()} "
            f"(from {cert.not_valid_before_utc.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise PassiveAuthError(
            f"the {role} certificate expired on {cert.not_valid_after_utc.isoformat()}"
        )


def _chain(
    ds: x509.Certificate, cscas: Sequence[x509.Certificate], at: datetime
) -> x509.Certificate:
    issuer = next((c for c in cscas if _issued(ds, c)), None)
    if issuer is None:
        raise PassiveAuthError(
            f"unknown CSCA: the Document Signer ({ds.subject.rfc4514_string()}) was not issued "
            f"by any of the {len(cscas)} trusted CSCA certificates"
        )
    try:
        ca = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca or not _has_usage(issuer, "key_cert_sign"):
        raise PassiveAuthError("the CSCA certificate is not a CA allowed to sign certificates")
    if not _has_usage(ds, "digital_signature"):
        raise PassiveAuthError("the Document Signer certificate lacks digitalSignature usage")
    _check_validity(issuer, at, "CSCA")
    _check_validity(ds, at, "Document Signer")
    return issuer


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_hashes(contents: SodContents, data_groups: Mapping[int, bytes]) -> tuple[int, ...]:
    for dg, data in sorted(data_groups.items()):
        if dg not in contents.hashes:
            raise PassiveAuthError(f"DG{dg} is not listed in EF.SOD")
        try:
            actual = digest(contents.hash_algorithm, data)
        except LdsError as exc:
            raise PassiveAuthError(str(exc)) from exc
        if not hmac.compare_digest(actual, contents.hashes[dg]):
            raise PassiveAuthError(f"DG{dg} does not match its hash in EF.SOD (altered?)")
    return tuple(sorted(data_groups))
