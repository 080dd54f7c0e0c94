"""EF.SOD (ICAO 9303-10 4.6.2): tag 77 around a CMS SignedData whose content is the
LDSSecurityObject, the hashes of the data groups, signed by the Document Signer.

The private key never appears here: signing goes through a :data:`SodSigner`, a callable
that takes the DER of the signed attributes and returns a DER ECDSA-with-SHA256 signature,
so a key in an HSM (``enrollment.keys.pkcs11``) plugs in through :func:`from_signer`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from enrollment.icao import asn1
from enrollment.icao.errors import LdsError
from enrollment.icao.tlv import encode_length, expect, tlv
from enrollment.keys import Signer

__all__ = [
    "LDS_SECURITY_OBJECT",
    "SOD_TAG",
    "SodContents",
    "SodSigner",
    "build_sod",
    "cms_of",
    "from_private_key",
    "from_signer",
    "parse_sod",
]

SOD_TAG = 0x77
LDS_SECURITY_OBJECT = "2.23.136.1.1.1"  # id-icao-mrtd-security-ldsSecurityObject

SodSigner = Callable[[bytes], bytes]
"""Signs the DER of the signed attributes: ECDSA P-256 over SHA-256, DER Ecdsa-Sig-Value."""

_HASHES: dict[str, Callable[[bytes], bytes]] = {
    "sha256": lambda b: hashlib.sha256(b).digest(),
    "sha384": lambda b: hashlib.sha384(b).digest(),
    "sha512": lambda b: hashlib.sha512(b).digest(),
}


def digest(algorithm: str, data: bytes) -> bytes:
    """``data`` hashed with a CMS digest algorithm name (asn1crypto's: 'sha256')."""
    try:
        return _HASHES[algorithm](data)
    except KeyError as exc:
        raise LdsError(f"unsupported hash algorithm {algorithm}") from exc


def from_private_key(key: ec.EllipticCurvePrivateKey) -> SodSigner:
    """A signer for a key held in memory (tests, development)."""

    def sign(message: bytes) -> bytes:
        return key.sign(message, ec.ECDSA(hashes.SHA256()))

    return sign


def from_signer(signer: Signer) -> SodSigner:
    """Adapter for ``enrollment.keys`` signers (software, PKCS#11 HSM, TPM): they return the
    raw ``r || s`` of ES256, which is the same ECDSA-with-SHA256; CMS wants it DER-encoded.
    """

    def sign(message: bytes) -> bytes:
        raw = signer.sign(message)
        half = len(raw) // 2
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return encode_dss_signature(r, s)

    return sign


def _lds_security_object(data_groups: Mapping[int, bytes]) -> bytes:
    values = [
        {"data_group_number": dg, "data_group_hash_value": hashlib.sha256(data).digest()}
        for dg, data in sorted(data_groups.items())
    ]
    return bytes(
        asn1.LdsSecurityObject(
            {
                "version": 0,
                "hash_algorithm": {"algorithm": "sha256"},
                "data_group_hash_values": values,
            }
        ).dump()
    )


def build_sod(
    data_groups: Mapping[int, bytes],
    document_signer: x509.Certificate,
    sign: SodSigner,
    *,
    signing_time: datetime | None = None,
) -> bytes:
    """EF.SOD over ``data_groups`` ({DG number: the DG file's bytes}), SHA-256 throughout."""
    if not data_groups:
        raise LdsError("EF.SOD needs at least one data group")
    if any(not 1 <= dg <= 16 for dg in data_groups):
        raise LdsError(f"data group numbers must be 1-16: {sorted(data_groups)}")
    econtent = _lds_security_object(data_groups)
    attrs: list[dict[str, object]] = [
        {"type": "content_type", "values": [LDS_SECURITY_OBJECT]},
        {"type": "message_digest", "values": [hashlib.sha256(econtent).digest()]},
    ]
    if signing_time is not None:
        attrs.append({"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]})
    signed_attrs = cms.CMSAttributes(attrs)
    signature = sign(signed_attrs.dump())
    cert = asn1_x509.Certificate.load(document_signer.public_bytes(serialization.Encoding.DER))
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": cert.issuer,
                        "serial_number": cert.serial_number,
                    }
                }
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": LDS_SECURITY_OBJECT, "content": econtent},
            "certificates": [cert],
            "signer_infos": [signer_info],
        }
    )
    content_info = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    return tlv(SOD_TAG, content_info.dump())


def cms_of(sod: bytes) -> bytes:
    """The CMS ContentInfo inside EF.SOD's tag 77 (what ``openssl cms`` reads)."""
    return expect(sod, SOD_TAG)


@dataclass(frozen=True)
class SodContents:
    """What EF.SOD says, not yet verified."""

    hash_algorithm: str  # of the data group hashes, e.g. "sha256"
    hashes: dict[int, bytes]  # DG number -> hash
    econtent_type: str
    econtent: bytes  # the DER LDSSecurityObject
    digest_algorithm: str  # the SignerInfo's
    signed_attrs: bytes  # DER, as a SET (tag 31): what the signature covers
    content_type: str | None  # the contentType signed attribute
    message_digest: bytes | None
    signing_time: datetime | None
    signature_algorithm: str  # asn1crypto's names: "ecdsa", "rsassa_pkcs1v15", ...
    signature_hash: str  # "sha256", ...
    signature: bytes
    certificates: tuple[x509.Certificate, ...]
    signer_issuer: bytes | None  # DER Name of issuerAndSerialNumber
    signer_serial: int | None
    signer_key_id: bytes | None


def _certificate(der: bytes) -> x509.Certificate:
    """A certificate from the SOD; one that RFC 5280 forbids (a serial number that is not
    positive) is refused now rather than when cryptography starts refusing it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            cert = x509.load_der_x509_certificate(der)
            cert.serial_number  # noqa: B018 (parsed lazily: force it inside the filter)
        except CryptographyDeprecationWarning as exc:
            raise LdsError(f"EF.SOD carries a malformed certificate: {exc}") from None
    return cert


def parse_sod(sod: bytes) -> SodContents:
    """Read EF.SOD's structure; raises :class:`LdsError` if it is not a one-signer SOD."""
    try:
        info = cms.ContentInfo.load(cms_of(sod), strict=True)
        if info["content_type"].native != "signed_data":
            raise LdsError("EF.SOD does not hold a CMS SignedData")
        sd = info["content"]
        signers = sd["signer_infos"]
        if len(signers) != 1:
            raise LdsError(f"EF.SOD has {len(signers)} signer infos, expected one")
        si = signers[0]
        # RFC 5652 5.1 / 5.3: v3 for a content type other than id-data; a SignerInfo is v1
        # with issuerAndSerialNumber, v3 with subjectKeyIdentifier.
        expected_version = "v1" if si["sid"].name == "issuer_and_serial_number" else "v3"
        if sd["version"].native != "v3" or si["version"].native != expected_version:
            raise LdsError(
                f"EF.SOD versions: SignedData {sd['version'].native}, "
                f"SignerInfo {si['version'].native}"
            )
        listed = {a["algorithm"].native for a in sd["digest_algorithms"]}
        if si["digest_algorithm"]["algorithm"].native not in listed:
            raise LdsError("the signer's digest algorithm is not among SignedData's")
        encap = sd["encap_content_info"]
        econtent = encap["content"].contents
        if econtent is None:
            raise LdsError("EF.SOD has no encapsulated content")
        econtent = bytes(econtent)
        lso = asn1.LdsSecurityObject.load(econtent, strict=True)
        hash_algorithm = lso["hash_algorithm"]["algorithm"].native
        hashes_: dict[int, bytes] = {}
        for item in lso["data_group_hash_values"]:
            dg = int(item["data_group_number"].native)
            if dg in hashes_:
                raise LdsError(f"EF.SOD lists DG{dg} twice")
            hashes_[dg] = bytes(item["data_group_hash_value"].native)
        attrs = si["signed_attrs"]
        if attrs.contents is None:
            raise LdsError("EF.SOD's SignerInfo has no signed attributes")
        signed_der = b"\x31" + encode_length(len(attrs.contents)) + attrs.contents
        content_type = message_digest = signing_time = None
        for attr in attrs:
            kind = attr["type"].native
            values = attr["values"]
            if len(values) != 1:
                raise LdsError(f"signed attribute {kind} has {len(values)} values")
            if kind == "content_type":
                content_type = values[0].dotted
            elif kind == "message_digest":
                message_digest = bytes(values[0].native)
            elif kind == "signing_time":
                signing_time = values[0].native
        certs = tuple(
            _certificate(c.chosen.dump())
            for c in (sd["certificates"] or [])
            if c.name == "certificate"
        )
        sid = si["sid"]
        issuer = serial = key_id = None
        if sid.name == "issuer_and_serial_number":
            issuer = bytes(sid.chosen["issuer"].dump())
            serial = int(sid.chosen["serial_number"].native)
        else:
            key_id = bytes(sid.chosen.native)
        sig_algo = si["signature_algorithm"]
        return SodContents(
            hash_algorithm=hash_algorithm,
            hashes=hashes_,
            econtent_type=encap["content_type"].dotted,
            econtent=econtent,
            digest_algorithm=si["digest_algorithm"]["algorithm"].native,
            signed_attrs=signed_der,
            content_type=content_type,
            message_digest=message_digest,
            signing_time=signing_time.astimezone(UTC) if signing_time else None,
            signature_algorithm=sig_algo.signature_algo,
            signature_hash=_signature_hash(sig_algo, si["digest_algorithm"]["algorithm"].native),
            signature=bytes(si["signature"].native),
            certificates=certs,
            signer_issuer=issuer,
            signer_serial=serial,
            signer_key_id=key_id,
        )
    except LdsError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, x509.InvalidVersion) as exc:
        raise LdsError(f"EF.SOD is malformed: {exc}") from exc


def _signature_hash(algorithm: object, digest_algorithm: str) -> str:
    """The hash an algorithm such as ecdsa-with-SHA256 names, else the SignerInfo's digest."""
    try:
        return str(algorithm.hash_algo)  # type: ignore[attr-defined]
    except ValueError:  # plain "ecdsa" / "rsassa_pkcs1v15" OIDs name no hash
        return digest_algorithm
