"""Package ingest, without HTTP: check, store durably, record, acknowledge.

The order is what makes an acknowledgement mean something:

1. The body is complete and matches the digest the station signed (the HTTP layer hashes it
   as it streams in and enforces the size limit).
2. The package opens: decrypted with the registry's key, signed by a station certificate
   the station CA issued, by the same station that signed the request, under the package id
   of the URL. A refusal answers a specific code (``enrollment.errors`` codes, plus a few of
   our own), leaves an audit entry and nothing else: nothing was stored yet.
3. The body goes to the blob store (``put`` returns once it is durable) under a key that
   includes its SHA-256, so two different bodies sent under one id never touch each other.
4. One transaction records the package, its first pipeline job and an audit entry. The
   package id is the primary key: of two concurrent uploads of one id, one inserts and the
   other finds the row; the same body answers the same receipt, a different body a 409.
5. Only then is the receipt returned.

A crash between 3 and 4 leaves a blob that no row names: the station's retry (the same
day) stores it again under the same key, and :meth:`Ingest.sweep_orphans`, run by the
worker's housekeeping, deletes such blobs once they are old enough that no upload can still
be on its way to recording them.

Resumable uploads (``Content-Range`` chunks) keep each chunk as a blob under
``uploads/<package id>/<offset>`` and the progress in the ``upload`` table, so any API
process can take the next chunk; the last one assembles the body and goes through 1-5.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy import Connection, Engine, Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central.blobs import BlobIntegrityError, BlobStore
from central.db.models import Package, PackageState, ResidentStatus, Upload
from central.db.ops import append_audit, insert_job
from central.residents import mark_resident
from enrollment.errors import PackageError
from enrollment.ids import is_package_id
from enrollment.keys import Decryptor
from enrollment.package import Limits, VerifiedPackage, open_package
from enrollment.trust import TrustStore

log = logging.getLogger(__name__)

FIRST_JOB = "verify"
PACKAGE_PREFIX = "packages"
UPLOAD_PREFIX = "uploads"


class IngestRefused(Exception):  # noqa: N818 (a verdict, like HTTP's)
    """The upload cannot be accepted. ``code`` is stable and machine-readable."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True)
class Receipt:
    """What the station keeps as proof that the registry holds its package."""

    package_id: str
    receipt_number: str
    station_id: str
    received_at: datetime
    sha256: str
    size: int
    state: str

    def as_json(self) -> dict[str, Any]:
        return {
            "package_id": self.package_id,
            "receipt_number": self.receipt_number,
            "station_id": self.station_id,
            "received_at": self.received_at.isoformat().replace("+00:00", "Z"),
            "sha256": self.sha256,
            "size": self.size,
            "state": self.state,
        }


@dataclass(frozen=True)
class UploadProgress:
    """A resumable upload not complete yet: the next chunk starts at ``offset``."""

    package_id: str
    offset: int
    total: int


def receipt_number(package_id: uuid.UUID, received_at: datetime) -> str:
    """``YYMMDD-XXXXXXXXXXXX``: the day (Viet Nam time, as on the citizen's slip) and 60 bits
    of SHA-256 of the package id in Crockford-like base32. Deterministic, so a retried upload
    gets the same number; at half a million packages a day the chance that two of one day
    share a number is about 1e-7."""
    day = (received_at + timedelta(hours=7)).strftime("%y%m%d")
    digest = hashlib.sha256(package_id.bytes).digest()[:8]
    text = base64.b32encode(digest).decode().rstrip("=")[:12]
    return f"{day}-{text}"


def package_blob_key(package_id: uuid.UUID, sha256: str, received_at: datetime) -> str:
    return f"{PACKAGE_PREFIX}/{received_at:%Y/%m/%d}/{package_id}/{sha256}"


def _chunk_key(package_id: uuid.UUID, offset: int) -> str:
    return f"{UPLOAD_PREFIX}/{package_id}/{offset:012d}"


def parse_package_id(text: str) -> uuid.UUID:
    if not is_package_id(text):
        raise IngestRefused(
            400, "bad-package-id", f"{text!r} is not a package id (a UUIDv7 in lower case)"
        )
    return uuid.UUID(text)


@dataclass
class PackageVerifier:
    """Opens packages with the registry's key, trusting certificates of the station CA."""

    decryptor: Decryptor
    station_ca: list[x509.Certificate]
    limits: Limits = field(default_factory=Limits)

    def trust(self) -> TrustStore:
        store = TrustStore()
        for cert in self.station_ca:
            store.add_certificate(cert)
        return store

    def open(self, data: bytes, now: datetime | None = None) -> VerifiedPackage:
        return open_package(
            data, trust=self.trust(), decryptor=self.decryptor, limits=self.limits, now=now
        )

    def verify_upload(
        self, data: bytes, package_id: uuid.UUID, station_id: str, now: datetime
    ) -> VerifiedPackage:
        """Open ``data`` as the package ``package_id`` from ``station_id``, or refuse."""
        try:
            verified = self.open(data, now)
        except PackageError as exc:
            raise IngestRefused(422, exc.code, str(exc.message)) from exc
        if verified.package_id != str(package_id):
            raise IngestRefused(
                422,
                "package-id-mismatch",
                f"the package inside is {verified.package_id}, uploaded as {package_id}",
            )
        if verified.signer.station_id != station_id:
            raise IngestRefused(
                403,
                "signer-not-station",
                f"the package is signed by {verified.signer.station_id!r}, "
                f"the request by {station_id!r}",
            )
        return verified


_HELD = select(
    Package.package_id,
    Package.receipt_number,
    Package.station_id,
    Package.received_at,
    Package.body_sha256,
    Package.size,
    Package.state,
).where(Package.package_id == bindparam("package_id"))
_PACKAGE_INSERT = insert(Package)


def _held_receipt(row: Row[Any]) -> Receipt:
    return Receipt(
        str(row.package_id),
        row.receipt_number,
        row.station_id,
        row.received_at,
        row.body_sha256,
        row.size,
        row.state.value,
    )


def _receipt(row: Package) -> Receipt:
    return Receipt(
        str(row.package_id),
        row.receipt_number,
        row.station_id,
        row.received_at,
        row.body_sha256,
        row.size,
        row.state.value,
    )


class Ingest:
    """The ingest service: one per process, thread-safe (each call has its own session)."""

    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        verifier: PackageVerifier,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_received: Callable[[Receipt], None] | None = None,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.verifier = verifier
        self.clock = clock
        self.on_received = on_received

    @property
    def max_bytes(self) -> int:
        return self.verifier.limits.max_package_bytes

    # --- whole uploads -------------------------------------------------------------------

    def _reading(self) -> Session:
        """A session for reads: on SQLite it does not queue behind the writers."""
        return Session(self.engine.execution_options(sqlite_begin="DEFERRED"))

    def _held(self, package_id: uuid.UUID) -> Receipt | None:
        """The receipt of the package held under this id, if any: one Core read (every
        upload makes one), on PostgreSQL in autocommit (one round trip, not three)."""
        params = {"package_id": package_id}
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execution_options(isolation_level="AUTOCOMMIT")
                row = connection.execute(_HELD, params).one_or_none()
            else:
                connection.execution_options(sqlite_begin="DEFERRED")  # not behind writers
                with connection.begin():
                    row = connection.execute(_HELD, params).one_or_none()
        return None if row is None else _held_receipt(row)

    def existing(self, station_id: str, package_id: uuid.UUID, sha256: str) -> Receipt | None:
        """The receipt of a package already held with this body, None when not held; a 409
        when the id is held with another body (or for another station)."""
        held = self._held(package_id)
        if held is None:
            return None
        return self._same_or_conflict(held, station_id, sha256)

    @staticmethod
    def _same_or_conflict(held: Receipt, station_id: str, sha256: str) -> Receipt:
        if held.station_id != station_id or held.sha256 != sha256:
            raise IngestRefused(
                409,
                "package-id-conflict",
                f"package {held.package_id} is already held with a different body; a new "
                "enrollment needs a new package id",
            )
        return held

    def accept(
        self,
        station_id: str,
        package_id: uuid.UUID,
        data: bytes,
        sha256: str,
        *,
        check: Callable[[VerifiedPackage], None] | None = None,
    ) -> tuple[Receipt, bool]:
        """Verify, store and record one complete package; ``(receipt, created)``.

        ``check``: a further condition on the opened package (raising
        :class:`IngestRefused`), applied like the built-in ones, before anything is
        stored; the removable-media import checks the signer's key against the station's
        key on record there, as request authentication does for an upload.

        ``sha256`` is the body's digest, already checked against what the station signed.
        It is not hashed again here: the blob store checks it before the body is durable
        (``BlobStore.put(sha256=...)`` refuses a mismatch, storing nothing), and nothing is
        recorded before that, so a wrong digest can never be recorded.
        """
        held = self.existing(station_id, package_id, sha256)
        if held is not None:
            return held, False
        now = self.clock()
        try:
            verified = self.verifier.verify_upload(data, package_id, station_id, now)
            if check is not None:
                check(verified)
        except IngestRefused as refusal:
            self._audit_refusal(station_id, package_id, refusal, sha256, len(data))
            raise
        key = package_blob_key(package_id, sha256, now)
        try:
            self.blobs.put(key, data, sha256=sha256)
        except BlobIntegrityError:
            raise IngestRefused(
                400, "digest-mismatch", "the body does not match its digest"
            ) from None
        receipt, created = self._record(station_id, package_id, verified, key, sha256, len(data))
        if created:
            log.info(
                "package received",
                extra={"package_id": str(package_id), "station_id": station_id, "size": len(data)},
            )
            if self.on_received is not None:
                self.on_received(receipt)
        return receipt, created

    def _record(
        self,
        station_id: str,
        package_id: uuid.UUID,
        verified: VerifiedPackage,
        key: str,
        sha256: str,
        size: int,
    ) -> tuple[Receipt, bool]:
        now = self.clock()
        receipt = Receipt(
            str(package_id),
            receipt_number(package_id, now),
            station_id,
            now,
            sha256,
            size,
            PackageState.received.value,
        )
        try:
            # Core statements in one transaction: the ORM's unit of work cost more CPU than
            # the three inserts themselves, on every upload.
            with self.engine.begin() as connection:
                self._insert(connection, receipt, verified, key)
            return receipt, True
        except IntegrityError:
            # Another upload of this id committed first: same body, same receipt.
            held = self._held(package_id)
            if held is None:
                raise
            return self._same_or_conflict(held, station_id, sha256), False

    @staticmethod
    def _insert(
        connection: Connection, receipt: Receipt, verified: VerifiedPackage, key: str
    ) -> None:
        """The package's row, its first job and its ``package.received`` audit entry."""
        package_id = uuid.UUID(receipt.package_id)
        now = receipt.received_at
        connection.execute(
            _PACKAGE_INSERT,
            {
                "package_id": package_id,
                "station_id": receipt.station_id,
                "body_sha256": receipt.sha256,
                "size": receipt.size,
                "blob_key": key,
                "received_at": now,
                "state": PackageState.received,
                "state_changed_at": now,
                "receipt_number": receipt.receipt_number,
            },
        )
        insert_job(connection, FIRST_JOB, package_id, now)
        append_audit(
            connection,
            now,
            f"station:{receipt.station_id}",
            "package.received",
            f"package:{package_id}",
            {
                "sha256": receipt.sha256,
                "size": receipt.size,
                "created": verified.created.isoformat(),
            },
        )
        ref = verified.record.demographics.resident_list_ref
        if ref is not None:
            # The commune's stations learn that this resident is being enrolled.
            mark_resident(connection, receipt.station_id, ref, ResidentStatus.in_progress, now)

    def _audit_refusal(
        self,
        station_id: str,
        package_id: uuid.UUID,
        refusal: IngestRefused,
        sha256: str,
        size: int,
    ) -> None:
        log.warning(
            "package refused",
            extra={"package_id": str(package_id), "station_id": station_id, "code": refusal.code},
        )
        with Session(self.engine) as session, session.begin():
            append_audit(
                session,
                self.clock(),
                f"station:{station_id}",
                "package.refused",
                f"package:{package_id}",
                {"code": refusal.code, "detail": refusal.detail, "sha256": sha256, "size": size},
            )

    # --- resumable uploads ---------------------------------------------------------------

    def progress(self, station_id: str, package_id: uuid.UUID) -> Receipt | UploadProgress | None:
        """Where an upload stands: its receipt, how far a resumable upload got, or None."""
        with self._reading() as session:
            row = session.get(Package, package_id)
            if row is not None:
                if row.station_id != station_id:
                    return None  # another station's package: not this station's business
                return _receipt(row)
            upload = session.get(Upload, package_id)
            if upload is None or upload.station_id != station_id:
                return None
            return UploadProgress(str(package_id), upload.received, upload.total_size)

    def accept_chunk(
        self,
        station_id: str,
        package_id: uuid.UUID,
        start: int,
        total: int,
        data: bytes,
        whole_sha256: str,
    ) -> tuple[Receipt, bool] | UploadProgress:
        """Take the chunk ``data`` at ``start`` of a ``total``-byte body whose digest is
        ``whole_sha256``. Returns the progress, or ``(receipt, created)`` once the body is
        complete."""
        if total > self.max_bytes:
            raise IngestRefused(
                413, "too-large", f"{total} bytes; the registry accepts {self.max_bytes} at most"
            )
        end = start + len(data)
        if not data or end > total:
            raise IngestRefused(400, "bad-range", f"chunk {start}-{end} outside 0-{total}")
        held = self.existing(station_id, package_id, whole_sha256)
        if held is not None:
            # A crash between recording the package and dropping its upload left the upload
            # row and chunks behind (the station got no receipt, so it retries): end them.
            with self._reading() as session:
                leftover = session.get(Upload, package_id) is not None
            if leftover:
                self._drop_upload(package_id)
            return held, False
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            upload = session.get(Upload, package_id)
            if upload is None:
                if start != 0:
                    raise IngestRefused(
                        409,
                        "offset-mismatch",
                        "no upload in progress: start at byte 0",
                        {"Upload-Offset": "0"},
                    )
                upload = Upload(
                    package_id=package_id,
                    station_id=station_id,
                    total_size=total,
                    received=0,
                    body_sha256=whole_sha256,
                    created_at=now,
                    updated_at=now,
                )
                session.add(upload)
                try:
                    session.flush()
                except IntegrityError:
                    raise IngestRefused(
                        409,
                        "offset-mismatch",
                        "another request started this upload at the same moment; ask where "
                        "it stands (GET) and continue there",
                    ) from None
            if (
                upload.station_id != station_id
                or upload.total_size != total
                or upload.body_sha256 != whole_sha256
            ):
                raise IngestRefused(
                    409,
                    "upload-mismatch",
                    "an upload of this id is in progress with another size or digest; "
                    "finish it or wait until it expires",
                )
            complete = upload.received == upload.total_size
            if not complete and upload.received != start:
                raise IngestRefused(
                    409,
                    "offset-mismatch",
                    f"the upload continues at byte {upload.received}",
                    {"Upload-Offset": str(upload.received)},
                )
        if complete:
            # Every byte arrived but recording it failed (a crash, the store or database
            # away): any retry finishes the job instead of being told to continue at the end.
            return self._assemble(station_id, package_id, total, whole_sha256)
        # Store the chunk, then advance the offset only if nobody else did meanwhile.
        self.blobs.put(_chunk_key(package_id, start), data)
        with Session(self.engine) as session, session.begin():
            moved = session.execute(
                update(Upload)
                .where(Upload.package_id == package_id, Upload.received == start)
                .values(received=end, updated_at=self.clock())
                .execution_options(synchronize_session=False)
            )
            if getattr(moved, "rowcount", 0) != 1:
                raise IngestRefused(
                    409, "offset-mismatch", "another request moved this upload on; ask again"
                )
        if end < total:
            return UploadProgress(str(package_id), end, total)
        return self._assemble(station_id, package_id, total, whole_sha256)

    def _chunks(self, package_id: uuid.UUID) -> list[str]:
        return sorted(self.blobs.keys(f"{UPLOAD_PREFIX}/{package_id}/"))

    def _assemble(
        self, station_id: str, package_id: uuid.UUID, total: int, sha256: str
    ) -> tuple[Receipt, bool]:
        parts, offset = [], 0
        for key in self._chunks(package_id):
            if int(key.rsplit("/", 1)[1]) != offset:
                continue  # a chunk stored by a request that then lost the race
            part = self.blobs.get(key)
            parts.append(part)
            offset += len(part)
        data = b"".join(parts)
        try:
            if len(data) != total or hashlib.sha256(data).hexdigest() != sha256:
                raise IngestRefused(
                    400,
                    "digest-mismatch",
                    "the assembled body does not match the declared digest; upload it again",
                )
            receipt, created = self.accept(station_id, package_id, data, sha256)
        except IngestRefused:
            self._drop_upload(package_id)  # a refused body: a retry starts from byte 0
            raise
        # Any other error (database or store unreachable) keeps the chunks for a retry.
        self._drop_upload(package_id)
        return receipt, created

    def _drop_upload(self, package_id: uuid.UUID) -> None:
        # Chunks first, the row last: a crash in between leaves the row, through which a
        # retry or the expiry finds the remaining chunks (the other way round, they would
        # stay for good with nothing naming them).
        for key in self._chunks(package_id):
            self.blobs.delete(key)
        with Session(self.engine) as session, session.begin():
            session.execute(delete(Upload).where(Upload.package_id == package_id))

    def sweep_orphans(self, older_than: timedelta, days: int = 3) -> int:
        """Delete package blobs that no row names, stored more than ``older_than`` ago, in
        the last ``days`` days' folders (where a crash between store and record can have
        left one; older days were swept when they were recent). Returns how many."""
        now = self.clock()
        removed = 0
        for back in range(days):
            day = now - timedelta(days=back)
            prefix = f"{PACKAGE_PREFIX}/{day:%Y/%m/%d}/"
            for key in list(self.blobs.keys(prefix)):
                parts = key.split("/")
                try:
                    package_id = uuid.UUID(parts[4])
                except (IndexError, ValueError):
                    continue
                info = self.blobs.info(key)
                if info is None or info.stored_at > now - older_than:
                    continue
                with self._reading() as session:
                    row = session.get(Package, package_id)
                    if row is not None and row.blob_key == key:
                        continue
                self.blobs.delete(key)
                removed += 1
                log.info("orphan package blob removed", extra={"package_id": str(package_id)})
        return removed

    def expire_uploads(self, older_than: timedelta) -> int:
        """Drop resumable uploads idle for ``older_than`` (their chunks too)."""
        cutoff = self.clock() - older_than
        with Session(self.engine) as session:
            stale = list(
                session.execute(select(Upload.package_id).where(Upload.updated_at < cutoff))
                .scalars()
                .all()
            )
        for package_id in stale:
            self._drop_upload(package_id)
        return len(stale)
