"""Build and open enrollment packages: the one API both the station and the registry use.

    build_package(record, transaction, signer=..., recipient=...) -> BuiltPackage
    open_package(data, trust=..., decryptor=...) -> VerifiedPackage   (or a PackageError)

Opening checks, in order, each failure with its own error (enrollment.errors): size limits,
envelope structure and version, recipient, decryption, inner structure, signer trust,
signature, every part against the signed manifest (missing, extra, tampered, bombs), the
record schema, the ANSI/NIST-ITL transaction, and that all of them agree with each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from enrollment import ansi_nist, cbor, cose, envelope, modalities
from enrollment.errors import (
    BadSignatureError,
    ExtraPartError,
    InconsistentPackageError,
    InvalidRecordError,
    MalformedPackageError,
    MissingPartError,
    SizeLimitError,
)
from enrollment.ids import new_package_id
from enrollment.keys import Decryptor, Signer
from enrollment.manifest import (
    MANIFEST_CONTENT_TYPE,
    RECORD_PART,
    RECORD_TYPE,
    REQUIRED_PARTS,
    TRANSACTION_PART,
    TRANSACTION_TYPE,
    Manifest,
    PartEntry,
    check_and_decode_part,
    decode_manifest,
    encode_part,
)
from enrollment.record import EnrollmentRecord
from enrollment.trust import SignerIdentity, TrustStore


@dataclass(frozen=True)
class Limits:
    """What a reader accepts. Checked against declared sizes before any work is done."""

    max_package_bytes: int = 16 * 1024 * 1024
    max_content_bytes: int = 16 * 1024 * 1024
    max_parts: int = 16
    max_part_bytes: int = 12 * 1024 * 1024
    max_records: int = 64
    max_image_width: int = 4000
    max_image_height: int = 4000
    # Stations run offline for days, but a package from the future means a broken clock.
    max_clock_skew: timedelta = timedelta(hours=12)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class ExtraPart:
    """An additional signed part (for example a consent signature image)."""

    name: str
    media_type: str
    content: bytes
    encoding: str = "identity"


@dataclass(frozen=True)
class BuiltPackage:
    package_id: str
    created: str
    data: bytes
    manifest: Manifest


@dataclass(frozen=True)
class VerifiedPackage:
    package_id: str
    created: datetime
    signer: SignerIdentity
    manifest: Manifest
    record: EnrollmentRecord
    transaction: ansi_nist.EnrollmentTransaction
    parts: dict[str, bytes] = field(repr=False)

    @property
    def station_id(self) -> str:
        return self.manifest.station_id


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the one spelling packages use."""
    if moment.tzinfo is None:
        raise ValueError("package times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise MalformedPackageError(f"time {text!r} is not RFC 3339") from exc
    if moment.tzinfo is None or format_time(moment) != text:
        raise MalformedPackageError(f"time {text!r} must be UTC as YYYY-MM-DDTHH:MM:SS.mmmZ")
    return moment


def build_package(
    record: EnrollmentRecord,
    transaction: ansi_nist.EnrollmentTransaction,
    *,
    signer: Signer,
    recipient: ec.EllipticCurvePublicKey,
    package_id: str | None = None,
    created: datetime | None = None,
    extra_parts: tuple[ExtraPart, ...] = (),
) -> BuiltPackage:
    """Sign and encrypt a package. The transaction's TCN and ORI are set from the package.

    Raises InconsistentPackageError when the record and the transaction disagree, so a
    station cannot produce a package the registry will refuse for that reason.
    """
    package_id = package_id or new_package_id()
    created_text = format_time(created or datetime.now(UTC))
    station_id = record.capture.station_id
    transaction = dataclasses.replace(
        transaction,
        header=dataclasses.replace(transaction.header, tcn=package_id, ori=station_id),
    )
    check_samples(record, transaction)
    contents = [
        (
            RECORD_PART,
            RECORD_TYPE,
            cbor.dumps(record.model_dump(mode="json", exclude_none=True)),
            "deflate",
        ),
        (TRANSACTION_PART, TRANSACTION_TYPE, ansi_nist.build_transaction(transaction), "identity"),
    ] + [(p.name, p.media_type, p.content, p.encoding) for p in extra_parts]
    entries: list[PartEntry] = []
    stored: dict[str, bytes] = {}
    for name, media_type, content, encoding in contents:
        entry, data = encode_part(name, media_type, content, encoding)
        entries.append(entry)
        stored[name] = data
    manifest = Manifest(package_id, created_text, station_id, tuple(entries))
    signed = cose.sign1(manifest.encode(), signer, MANIFEST_CONTENT_TYPE)
    inner = cbor.dumps({"manifest": signed, "parts": stored})
    data = envelope.seal(inner, recipient, package_id, created_text)
    return BuiltPackage(package_id, created_text, data, manifest)


def read_limited(source: bytes | BinaryIO | Path, limit: int) -> bytes:
    """Read at most ``limit`` bytes, refusing larger inputs without reading them whole."""
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, Path):
        if source.stat().st_size > limit:
            raise SizeLimitError(f"{source} is {source.stat().st_size} bytes; limit {limit}")
        with source.open("rb") as fh:
            data = fh.read(limit + 1)
    else:
        data = source.read(limit + 1)
    if len(data) > limit:
        raise SizeLimitError(f"package is over the {limit}-byte limit")
    return data


def read_header(
    source: bytes | BinaryIO | Path, limits: Limits = DEFAULT_LIMITS
) -> envelope.EnvelopeHeader:
    """The clear header (id, created, recipient, size) without decrypting."""
    data = read_limited(source, limits.max_package_bytes)
    return envelope.parse(data, max_plaintext=limits.max_content_bytes).header


def open_package(
    source: bytes | BinaryIO | Path,
    *,
    trust: TrustStore,
    decryptor: Decryptor,
    limits: Limits = DEFAULT_LIMITS,
    now: datetime | None = None,
) -> VerifiedPackage:
    """Decrypt, verify and parse a package, or raise the specific PackageError."""
    inner, env = _decrypt(source, decryptor, limits)
    sign1, stored = _split_inner(inner)
    created = parse_time(env.header.created)
    now = now or datetime.now(UTC)
    if created > now + limits.max_clock_skew:
        raise InconsistentPackageError(f"package created {env.header.created}, in the future")
    identity = trust.resolve(sign1.kid, sign1.chain, created)
    sign1.verify(identity.public_key)
    contents = _decode_contents(sign1, stored, limits)
    manifest, record, transaction = contents.manifest, contents.record, contents.transaction
    _check_agreement(env.header, manifest, identity, record, transaction)
    check_samples(record, transaction)
    return VerifiedPackage(
        env.header.package_id, created, identity, manifest, record, transaction, contents.parts
    )


@dataclass(frozen=True)
class Contents:
    """What a package holds once its parts match the manifest (signer not yet trusted)."""

    manifest: Manifest
    record: EnrollmentRecord
    transaction: ansi_nist.EnrollmentTransaction
    parts: dict[str, bytes] = field(repr=False)


def unseal_unverified(
    source: bytes | BinaryIO | Path, decryptor: Decryptor, limits: Limits = DEFAULT_LIMITS
) -> tuple[envelope.EnvelopeHeader, cose.Sign1, Contents]:
    """Decrypt and decode WITHOUT trusting the signer: for inspection tools, never ingest."""
    inner, env = _decrypt(source, decryptor, limits)
    sign1, stored = _split_inner(inner)
    return env.header, sign1, _decode_contents(sign1, stored, limits)


def _decode_contents(sign1: cose.Sign1, stored: dict[str, bytes], limits: Limits) -> Contents:
    if sign1.content_type != MANIFEST_CONTENT_TYPE:
        raise BadSignatureError(f"signed content is {sign1.content_type!r}, not a manifest")
    manifest = decode_manifest(
        sign1.payload, max_parts=limits.max_parts, max_part_size=limits.max_part_bytes
    )
    parts = _check_parts(manifest, stored)
    record = _parse_record(parts[RECORD_PART])
    transaction = ansi_nist.parse_transaction(
        parts[TRANSACTION_PART],
        max_image_width=limits.max_image_width,
        max_image_height=limits.max_image_height,
        max_records=limits.max_records,
    )
    return Contents(manifest, record, transaction, parts)


def _decrypt(
    source: bytes | BinaryIO | Path, decryptor: Decryptor, limits: Limits
) -> tuple[bytes, envelope.Envelope]:
    data = read_limited(source, limits.max_package_bytes)
    env = envelope.parse(data, max_plaintext=limits.max_content_bytes)
    return envelope.open_envelope(env, decryptor), env


def _split_inner(inner: bytes) -> tuple[cose.Sign1, dict[str, bytes]]:
    obj = cbor.loads_strict(inner, "package content")
    if not isinstance(obj, dict) or set(obj) != {"manifest", "parts"}:
        raise MalformedPackageError("package content must be {manifest, parts}")
    signed, stored = obj["manifest"], obj["parts"]
    if not isinstance(signed, bytes) or not isinstance(stored, dict):
        raise MalformedPackageError("package content: manifest is bytes, parts a map")
    if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in stored.items()):
        raise MalformedPackageError("package parts must map names to bytes")
    return cose.decode_sign1(signed), stored


def _check_parts(manifest: Manifest, stored: dict[str, bytes]) -> dict[str, bytes]:
    listed = {p.name for p in manifest.parts}
    for name in REQUIRED_PARTS:
        if name not in listed:
            raise MissingPartError(f"the manifest does not list the required part {name}")
    extra = sorted(set(stored) - listed)
    if extra:
        raise ExtraPartError(f"parts not in the signed manifest: {', '.join(extra)}")
    missing = sorted(listed - set(stored))
    if missing:
        raise MissingPartError(f"parts listed in the manifest but absent: {', '.join(missing)}")
    return {p.name: check_and_decode_part(p, stored[p.name]) for p in manifest.parts}


def _parse_record(data: bytes) -> EnrollmentRecord:
    obj = cbor.loads_strict(data, "enrollment record", error=InvalidRecordError)
    try:
        return EnrollmentRecord.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise InvalidRecordError(f"enrollment record is invalid: {problems}") from exc


def _check_agreement(
    header: envelope.EnvelopeHeader,
    manifest: Manifest,
    identity: SignerIdentity,
    record: EnrollmentRecord,
    transaction: ansi_nist.EnrollmentTransaction,
) -> None:
    pairs = [
        ("envelope id", header.package_id, "manifest id", manifest.package_id),
        ("envelope time", header.created, "manifest time", manifest.created),
        ("manifest id", manifest.package_id, "transaction TCN", transaction.header.tcn),
        ("signer's station", identity.station_id, "manifest station", manifest.station_id),
        ("manifest station", manifest.station_id, "record station", record.capture.station_id),
        ("manifest station", manifest.station_id, "transaction ORI", transaction.header.ori),
    ]
    for name_a, a, name_b, b in pairs:
        if a != b:
            raise InconsistentPackageError(f"{name_a} {a!r} differs from {name_b} {b!r}")


def check_samples(record: EnrollmentRecord, transaction: ansi_nist.EnrollmentTransaction) -> None:
    """Every sample with an image points at one image record of its modality and position,
    and every image record in the transaction is claimed by exactly one sample."""
    images: dict[int, tuple[int, int | None]] = {}  # idc -> (record type, position)
    for finger in transaction.fingerprints:
        images[finger.idc] = (14, finger.position)
    for face in transaction.faces:
        images[face.idc] = (10, 0)
    for other in transaction.other_records:
        images[other.idc] = (other.type, None)
    claimed: set[int] = set()
    for sample in record.samples:
        if sample.idc is None:
            continue
        if sample.idc not in images:
            raise InconsistentPackageError(
                f"{sample.modality} {sample.position}: no image record with IDC {sample.idc}"
            )
        rtype, position = images[sample.idc]
        modality = modalities.get(sample.modality)
        if modality is not None and rtype != modality.record_type:
            raise InconsistentPackageError(
                f"{sample.modality} {sample.position}: IDC {sample.idc} is a Type-{rtype} "
                f"record, expected Type-{modality.record_type}"
            )
        if position is not None and position != sample.position:
            raise InconsistentPackageError(
                f"{sample.modality} {sample.position}: IDC {sample.idc} holds position {position}"
            )
        claimed.add(sample.idc)
    unclaimed = sorted(set(images) - claimed)
    if unclaimed:
        raise InconsistentPackageError(f"image records {unclaimed} belong to no sample")
