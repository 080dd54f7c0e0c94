"""The card PKI's hierarchy (ICAO 9303-12): Country Signing CA (CSCA) -> Document Signers
(DS), kept in the ``signer_certificate`` table, with rotation of both.

- The newest unretired DS whose private-key usage period (``signs_until``) has not ended
  signs each chip's EF.SOD. Rotating the DS retires the old one for signing only: its
  certificate stays valid (key usage + the longest card validity), so cards it signed
  keep verifying.
- Rotating the CSCA makes a new self-signed CSCA and a *link certificate* (the new CSCA's
  key and name, signed by the old CSCA key), so a verifier that trusts only the old CSCA
  can come to trust the new one; the old self-signed CSCA stays in the master list for the
  cards issued under it. A new DS under the new CSCA replaces the current DS.
- Link certificates are rows of kind ``csca`` whose issuer is not their subject; they never
  sign, so they are written already retired (``retired_at`` = creation).

Private keys live where ``key_ref`` says: ``file:<name>`` (a 0600 PEM file in the registry's
key directory) or ``pkcs11:<label>`` (a non-extractable key on the HSM token). Certificates
are built with ``cryptography`` and signed through the :class:`enrollment.keys.Signer`
interface, so a CSCA key inside an HSM signs certificates as well as a key in a file.

Every change of the hierarchy takes a lock (PostgreSQL: an advisory transaction lock;
SQLite: the write lock every transaction holds) so that several processes starting at once
create one CSCA and one DS, and is written to the audit log. Nothing here commits.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from central.db.engine import holds_write_lock
from central.db.models import SignerCertificate, SignerKind
from central.db.ops import append_audit
from enrollment.errors import KeyProviderError
from enrollment.icao.pki import issue_document_signer
from enrollment.icao.sod import from_signer
from enrollment.keys import Signer
from enrollment.keys.pkcs11 import Pkcs11Signer
from enrollment.keys.software import SoftwareKeySigner, load_private_key
from enrollment.pki import key_usage

__all__ = [
    "CscaRotation",
    "FileKeyStore",
    "HierarchyError",
    "KeyStore",
    "Keyring",
    "NoDocumentSignerError",
    "Pkcs11KeyStore",
    "SignerPolicy",
    "current_csca",
    "current_document_signer",
    "ensure_signers",
    "fingerprint",
    "master_list",
    "rotate_csca",
    "rotate_document_signer",
]

_HIERARCHY_LOCK = 0x63_73_63_61  # "csca": PostgreSQL advisory lock key of the hierarchy
DOCUMENT_VALIDITY_DAYS = 22 * 365 + 10  # the longest CCCD (enrollment.icao.validity)


class HierarchyError(RuntimeError):
    """The CSCA / DS hierarchy cannot do what was asked; the message says what to do."""


class NoDocumentSignerError(HierarchyError):
    """No Document Signer may sign now (none yet, or all retired or past their usage)."""


# --------------------------------------------------------------------------- key stores


class KeyStore(Protocol):
    """Where new signer keys are made, and how a ``key_ref`` becomes a Signer."""

    scheme: str  # the key_ref prefix this store answers: "file" or "pkcs11"

    def generate(self, name: str) -> tuple[str, Signer]:
        """A new P-256 key named after ``name``: its key_ref and a Signer for it."""
        ...

    def signer(self, key_ref: str) -> Signer:
        """The Signer for a key_ref of this store's scheme."""
        ...


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Publish ``data`` at ``path`` atomically and only if nothing is there yet: a temp file
    (created 0600, fsynced) hard-linked into place, so a crash leaves no half-written key and
    two writers cannot overwrite each other."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.link(tmp, path)  # FileExistsError if another writer got there first
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_new_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """``key`` as unencrypted PKCS#8 PEM, mode 0600, never replacing an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new_file(path, pem, 0o600)


def write_new_public_file(path: Path, data: bytes) -> None:
    """A certificate or public key (mode 0644), never replacing an existing file."""
    _write_new_file(path, data, 0o644)


class FileKeyStore:
    """Signer keys as 0600 PEM files in the registry's key directory (the embedded default)."""

    scheme = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def generate(self, name: str) -> tuple[str, Signer]:
        filename = f"{name}.key.pem"
        key = ec.generate_private_key(ec.SECP256R1())
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_new_private_key(self.directory / filename, key)
        return f"{self.scheme}:{filename}", SoftwareKeySigner(key)

    def signer(self, key_ref: str) -> Signer:
        filename = key_ref.removeprefix(f"{self.scheme}:")
        if "/" in filename or filename.startswith("."):
            raise KeyProviderError(f"key_ref {key_ref!r} must name a file in the key directory")
        return SoftwareKeySigner(load_private_key(self.directory / filename))


class Pkcs11KeyStore:
    """Signer keys generated on a PKCS#11 token: sensitive, non-extractable, sign-only."""

    scheme = "pkcs11"

    def __init__(self, module: str, token_label: str, pin: str, label_prefix: str) -> None:
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self.label_prefix = label_prefix

    def generate(self, name: str) -> tuple[str, Signer]:
        label = f"{self.label_prefix}-{name}"
        signer = Pkcs11Signer.generate(self.module, self.token_label, self._pin, label)
        return f"{self.scheme}:{label}", signer

    def signer(self, key_ref: str) -> Signer:
        label = key_ref.removeprefix(f"{self.scheme}:")
        return Pkcs11Signer(self.module, self.token_label, self._pin, label)


class Keyring:
    """New keys go to ``create_in``; existing ones are found by their key_ref's scheme (a
    registry moved from files to an HSM still reads the DS and CSCA keys it had). Signers
    are cached: a PKCS#11 signer checks its key with a test signature when made."""

    def __init__(self, create_in: KeyStore, *others: KeyStore) -> None:
        self.create_in = create_in
        self._stores = {s.scheme: s for s in (*others, create_in)}
        self._cache: dict[str, Signer] = {}
        self._lock = threading.Lock()

    def generate(self, name: str) -> tuple[str, Signer]:
        key_ref, signer = self.create_in.generate(name)
        with self._lock:
            self._cache[key_ref] = signer
        return key_ref, signer

    def signer(self, key_ref: str) -> Signer:
        with self._lock:
            cached = self._cache.get(key_ref)
        if cached is not None:
            return cached
        scheme = key_ref.partition(":")[0]
        store = self._stores.get(scheme)
        if store is None:
            raise KeyProviderError(
                f"key {key_ref!r} lives in a {scheme!r} key store this registry is not "
                f"configured for (configured: {sorted(self._stores)}); set keys.pkcs11 for "
                "pkcs11 keys"
            )
        signer = store.signer(key_ref)
        with self._lock:
            self._cache[key_ref] = signer
        return signer


# ------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class SignerPolicy:
    """Validity periods and names of the card PKI (from the registry's key settings)."""

    csca_key_usage_days: int = 5 * 365
    csca_validity_days: int = 32 * 365
    ds_key_usage_days: int = 90
    country: str = "VN"
    organisation: str = "Ministry of Public Security"
    auto_rotate: bool = True
    """Create / rotate the CSCA and DS by themselves when none may sign (embedded use)."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, hex: how operators compare certificates."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _resign(draft: x509.Certificate, signer: Signer) -> x509.Certificate:
    """``draft``'s TBSCertificate signed by ``signer``: cryptography's builder signs only
    with keys it holds, so drafts are signed with a throwaway P-256 key (same algorithm
    identifier) and their to-be-signed part is signed again by the real key."""
    tbs = asn1_x509.TbsCertificate.load(draft.tbs_certificate_bytes)
    cert = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature_value": from_signer(signer)(draft.tbs_certificate_bytes),
        }
    )
    return x509.load_der_x509_certificate(cert.dump())


def _throwaway() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _csca_name(policy: SignerPolicy, generation: int) -> x509.Name:
    # 9303-12 7.1.1: the serialNumber attribute tells CSCA generations of one country apart.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, policy.country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, policy.organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"CSCA {policy.country}"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{generation:02d}"),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_ski: x509.SubjectKeyIdentifier,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )


def _self_signed_csca(
    signer: Signer, policy: SignerPolicy, generation: int, now: datetime
) -> x509.Certificate:
    public_key = signer.public_key()
    name = _csca_name(policy, generation)
    builder = _ca_builder(
        name,
        name,
        public_key,
        x509.SubjectKeyIdentifier.from_public_key(public_key),
        now - timedelta(minutes=5),
        now + timedelta(days=policy.csca_validity_days),
    ).add_extension(
        x509.PrivateKeyUsagePeriod(now, now + timedelta(days=policy.csca_key_usage_days)),
        critical=False,
    )
    return _resign(builder.sign(_throwaway(), hashes.SHA256()), signer)


def _link_certificate(
    new: x509.Certificate, old: x509.Certificate, old_signer: Signer, now: datetime
) -> x509.Certificate:
    """The new CSCA's name and key certified by the old CSCA (9303-12 5.1.1), valid while
    both are, so a verifier holding the old CSCA may extend its trust to the new one."""
    new_key = new.public_key()
    if not isinstance(new_key, ec.EllipticCurvePublicKey):
        raise HierarchyError("a CSCA key must be EC P-256")
    old_ski = old.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = _ca_builder(
        new.subject,
        old.subject,
        new_key,
        old_ski,
        now - timedelta(minutes=5),
        min(new.not_valid_after_utc, old.not_valid_after_utc),
    )
    return _resign(builder.sign(_throwaway(), hashes.SHA256()), old_signer)


def _document_signer(
    csca: x509.Certificate,
    csca_signer: Signer,
    public_key: ec.EllipticCurvePublicKey,
    policy: SignerPolicy,
    now: datetime,
) -> x509.Certificate:
    draft = issue_document_signer(
        _throwaway(),
        csca,
        public_key,
        common_name=f"Document Signer {policy.country} {now:%Y%m%d%H%M%S}",
        organisation=policy.organisation,
        key_usage_days=policy.ds_key_usage_days,
        document_validity_days=DOCUMENT_VALIDITY_DAYS,
        now=now,
    )
    # The DS must not outlive its CSCA: cards it signs must chain to a valid anchor.
    if draft.not_valid_after_utc > csca.not_valid_after_utc:
        raise HierarchyError(
            "a new Document Signer would outlive its CSCA certificate; rotate the CSCA "
            "(python -m central keys rotate-csca)"
        )
    return _resign(draft, csca_signer)


# ------------------------------------------------------------------------------ queries


def _certificate(row: SignerCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(row.certificate_pem.encode())


def _is_self_signed(row: SignerCertificate) -> bool:
    cert = _certificate(row)
    return cert.issuer == cert.subject


def current_csca(session: Session, now: datetime) -> SignerCertificate | None:
    """The CSCA that certifies new Document Signers: the newest unretired self-signed CSCA
    whose private-key usage period has not ended; None if there is none."""
    rows = session.execute(
        select(SignerCertificate)
        .where(
            SignerCertificate.kind == SignerKind.csca,
            SignerCertificate.retired_at.is_(None),
            SignerCertificate.signs_until > now,
        )
        .order_by(SignerCertificate.id.desc())
    ).scalars()
    return next((row for row in rows if _is_self_signed(row)), None)


def _current_ds_row(session: Session, now: datetime) -> SignerCertificate | None:
    return session.execute(
        select(SignerCertificate)
        .where(
            SignerCertificate.kind == SignerKind.ds,
            SignerCertificate.retired_at.is_(None),
            SignerCertificate.signs_until > now,
            SignerCertificate.not_before <= now,
        )
        .order_by(SignerCertificate.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def current_document_signer(
    session: Session, keyring: Keyring, now: datetime
) -> tuple[SignerCertificate, Signer]:
    """The DS to sign with now and a Signer for its key; raises NoDocumentSignerError."""
    row = _current_ds_row(session, now)
    if row is None:
        raise NoDocumentSignerError(
            "no Document Signer may sign now (none yet, or its key usage period ended); "
            "rotate it: python -m central keys rotate-ds"
        )
    return row, keyring.signer(row.key_ref)


def master_list(session: Session) -> list[x509.Certificate]:
    """Every CSCA certificate a verifier needs: the self-signed ones of each generation
    (cards issued under a retired CSCA still chain to it) first, then link certificates."""
    rows = session.execute(
        select(SignerCertificate)
        .where(SignerCertificate.kind == SignerKind.csca)
        .order_by(SignerCertificate.id)
    ).scalars()
    certs = [_certificate(row) for row in rows]
    return [c for c in certs if c.issuer == c.subject] + [c for c in certs if c.issuer != c.subject]


# -------------------------------------------------------------------------- changes


def _lock_hierarchy(session: Session) -> None:
    if not holds_write_lock(session):
        raise RuntimeError(
            "changing the CSCA / DS hierarchy needs a writing transaction: on SQLite use an "
            "engine without sqlite_begin='DEFERRED'"
        )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _HIERARCHY_LOCK})


def _signs_until(cert: x509.Certificate) -> datetime:
    period = cert.extensions.get_extension_for_class(x509.PrivateKeyUsagePeriod).value
    if period.not_after is None:
        raise HierarchyError("a CSCA / DS certificate needs a private key usage period")
    end = period.not_after
    # cryptography gives the GeneralizedTime as a naive datetime: it is UTC.
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


def _add_row(
    session: Session,
    kind: SignerKind,
    cert: x509.Certificate,
    key_ref: str,
    now: datetime,
    *,
    signs_until: datetime | None = None,
    retired_at: datetime | None = None,
) -> SignerCertificate:
    row = SignerCertificate(
        kind=kind,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_ref=key_ref,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        signs_until=signs_until if signs_until is not None else _signs_until(cert),
        created_at=now,
        retired_at=retired_at,
    )
    session.add(row)
    session.flush()
    return row


def _audit(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    row: SignerCertificate,
    reason: str,
    **extra: object,
) -> None:
    cert = _certificate(row)
    append_audit(
        session,
        now,
        actor,
        action,
        f"signer_certificate:{row.id}",
        {
            "kind": row.kind.value,
            "subject": cert.subject.rfc4514_string(),
            "serial": format(cert.serial_number, "x"),
            "sha256": fingerprint(cert),
            "key_ref": row.key_ref,
            "signs_until": row.signs_until.isoformat(),
            "not_after": row.not_after.isoformat(),
            "reason": reason,
            **extra,
        },
    )


def _key_name(kind: str, now: datetime) -> str:
    # Unique even if an earlier attempt left a key behind (its transaction rolled back).
    return f"{kind}-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _csca_generation(session: Session) -> int:
    rows = session.execute(
        select(SignerCertificate).where(SignerCertificate.kind == SignerKind.csca)
    ).scalars()
    return sum(1 for row in rows if _is_self_signed(row)) + 1


def _new_csca(
    session: Session, keyring: Keyring, policy: SignerPolicy, now: datetime
) -> tuple[SignerCertificate, Signer]:
    generation = _csca_generation(session)
    key_ref, signer = keyring.generate(_key_name(f"csca{generation:02d}", now))
    cert = _self_signed_csca(signer, policy, generation, now)
    return _add_row(session, SignerKind.csca, cert, key_ref, now), signer


def _new_ds(
    session: Session,
    keyring: Keyring,
    policy: SignerPolicy,
    csca: SignerCertificate,
    now: datetime,
) -> SignerCertificate:
    key_ref, signer = keyring.generate(_key_name("ds", now))
    cert = _document_signer(
        _certificate(csca), keyring.signer(csca.key_ref), signer.public_key(), policy, now
    )
    return _add_row(session, SignerKind.ds, cert, key_ref, now)


def _retire_current_ds(session: Session, now: datetime) -> list[int]:
    rows = session.execute(
        select(SignerCertificate).where(
            SignerCertificate.kind == SignerKind.ds, SignerCertificate.retired_at.is_(None)
        )
    ).scalars()
    retired = []
    for row in rows:
        row.retired_at = now
        retired.append(row.id)
    session.flush()
    return retired


def rotate_document_signer(
    session: Session,
    keyring: Keyring,
    policy: SignerPolicy,
    now: datetime,
    *,
    actor: str,
    reason: str = "rotation",
) -> SignerCertificate:
    """A new DS key and certificate from the current CSCA; every earlier DS stops signing
    (its certificate stays valid for verification). Returns the new DS row."""
    _lock_hierarchy(session)
    csca = current_csca(session, now)
    if csca is None:
        raise HierarchyError(
            "no CSCA may certify a new Document Signer (none yet, or its key usage period "
            "ended); rotate the CSCA first: python -m central keys rotate-csca"
        )
    retired = _retire_current_ds(session, now)
    row = _new_ds(session, keyring, policy, csca, now)
    _audit(session, now, actor, "keys.ds.rotate", row, reason, retired=retired, csca=csca.id)
    return row


@dataclass(frozen=True)
class CscaRotation:
    """What a CSCA rotation wrote: the new CSCA, the link certificate from the old one
    (None for the first CSCA) and the new DS it certified."""

    csca: SignerCertificate
    link: SignerCertificate | None
    document_signer: SignerCertificate


def rotate_csca(
    session: Session,
    keyring: Keyring,
    policy: SignerPolicy,
    now: datetime,
    *,
    actor: str,
    reason: str = "rotation",
) -> CscaRotation:
    """A new CSCA (new key), a link certificate signed by the previous CSCA key when there
    is one, and a new DS under the new CSCA; the previous CSCA and DS stop signing."""
    _lock_hierarchy(session)
    old = session.execute(
        select(SignerCertificate)
        .where(SignerCertificate.kind == SignerKind.csca, SignerCertificate.retired_at.is_(None))
        .order_by(SignerCertificate.id.desc())
    ).scalars()
    previous = [row for row in old if _is_self_signed(row)]
    csca, _ = _new_csca(session, keyring, policy, now)
    link = None
    if previous:
        newest = previous[0]
        link_cert = _link_certificate(
            _certificate(csca), _certificate(newest), keyring.signer(newest.key_ref), now
        )
        # The link never signs: written retired, its usage period already over.
        link = _add_row(
            session, SignerKind.csca, link_cert, csca.key_ref, now, signs_until=now, retired_at=now
        )
        for row in previous:
            row.retired_at = now
        session.flush()
    _audit(
        session,
        now,
        actor,
        "keys.csca.rotate" if previous else "keys.csca.create",
        csca,
        reason,
        retired=[row.id for row in previous],
        link=None if link is None else link.id,
    )
    retired = _retire_current_ds(session, now)
    ds = _new_ds(session, keyring, policy, csca, now)
    _audit(session, now, actor, "keys.ds.rotate", ds, reason, retired=retired, csca=csca.id)
    return CscaRotation(csca, link, ds)


def ensure_signers(
    session: Session, keyring: Keyring, policy: SignerPolicy, now: datetime, *, actor: str
) -> SignerCertificate:
    """Make sure a DS may sign now, creating the first CSCA and DS on an empty registry
    and (with ``policy.auto_rotate``) rotating whichever has reached the end of its key
    usage period. Returns the DS to sign with. Safe when several processes call it at once.
    """
    row = _current_ds_row(session, now)
    if row is not None:
        return row
    _lock_hierarchy(session)
    row = _current_ds_row(session, now)  # another process may have made one meanwhile
    if row is not None:
        return row
    has_csca = session.execute(
        select(SignerCertificate.id).where(SignerCertificate.kind == SignerKind.csca).limit(1)
    ).first()
    if has_csca is not None and not policy.auto_rotate:
        raise NoDocumentSignerError(
            "no Document Signer may sign now and automatic rotation is off; run "
            "python -m central keys rotate-ds (or rotate-csca if the CSCA's usage ended)"
        )
    if current_csca(session, now) is None:
        reason = "first start" if has_csca is None else "CSCA key usage period ended"
        return rotate_csca(
            session, keyring, policy, now, actor=actor, reason=reason
        ).document_signer
    return rotate_document_signer(
        session, keyring, policy, now, actor=actor, reason="DS key usage period ended"
    )
