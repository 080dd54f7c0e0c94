"""The registry's parts, put together once per process from its settings.

``open_registry`` opens the database (migrating it), the blob store and the keys, and
builds the ingest and access services the API needs. The pipeline's heavier parts (NFIQ 2,
the face models, the dedup gallery) load only in processes that run a worker: the API
process when the worker runs in it (the embedded default), or ``python -m central worker``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central.auth.access import Access
from central.auth.errors import AccessError
from central.blobs import BlobStore, make_blob_store
from central.chipdata import ChipData, allocate_personal_number, build_chip_data
from central.config import RegistrySettings
from central.db.engine import engine_from_settings
from central.db.migrate import upgrade
from central.db.models import Issuance, Package, PackageState
from central.db.ops import append_audit
from central.ingest import Ingest, PackageVerifier
from central.keys import RegistryKeys
from central.metrics import Metrics
from central.pipeline.quality import QualityChecker
from central.pipeline.stages import DedupOutcome, IssuedChip, PipelineContext
from central.pipeline.worker import JobResult, Worker, WorkerThread
from enrollment.package import Limits, VerifiedPackage
from enrollment.record import EnrollmentRecord

if TYPE_CHECKING:  # the dedup engine loads in processes that run a worker, not in every API
    from central.abis.service import Abis
    from central.abis.templates import EnrollmentTemplates, Extractors

VIETNAM = timedelta(hours=7)
log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class AbisDedup:
    """The pipeline's dedup engine: template extraction plus the ABIS gallery."""

    def __init__(self, abis: Abis, metrics: Metrics | None = None) -> None:
        self.abis = abis
        self.metrics = metrics
        self._extractors: Extractors | None = None
        self._lock = threading.Lock()

    def extract(self, verified: VerifiedPackage) -> EnrollmentTemplates:
        from central.abis.templates import Extractors, extract_templates, images_from_package

        images = images_from_package(verified)
        with self._lock:  # the extractors' models are not thread-safe
            if self._extractors is None:
                self._extractors = Extractors.from_settings(self.abis.settings)
            return extract_templates(
                images.fingers, images.face, self.abis.settings, self._extractors, ppi=images.ppi
            )

    def identify_and_insert(
        self, session: Session, package_id: uuid.UUID, templates: Any, demographics: Package
    ) -> DedupOutcome:
        started = time.perf_counter()
        result = self.abis.identify_and_insert(session, package_id, templates)
        if self.metrics is not None:
            self.metrics.observe_dedup(time.perf_counter() - started)
            self.metrics.set_gallery_size(sum(entries for entries, _, _ in self.abis.stats()))
        return DedupOutcome(str(result.verdict), result.candidates_json())

    def link(self, session: Session, package_id: uuid.UUID, person_id: uuid.UUID) -> None:
        self.abis.link(session, package_id, person_id)


class KeysIssuer:
    """Numbers from the database's sequences, chips signed by the current Document Signer."""

    def __init__(self, keys: RegistryKeys) -> None:
        self.keys = keys

    def allocate_number(self, session: Session, record: EnrollmentRecord) -> str:
        return allocate_personal_number(session, record)

    def build(
        self, session: Session, verified: VerifiedPackage, personal_number: str, now: datetime
    ) -> IssuedChip:
        row, signer = self.keys.document_signer(session, now)
        chip = build_chip_data(
            verified, personal_number, (now + VIETNAM).date(), row, signer, signing_time=now
        )
        return IssuedChip(chip.to_bytes(), row.id, chip.document_number)


@dataclass
class Registry:
    """What a request handler reaches through ``request.app.state.registry``."""

    settings: RegistrySettings
    engine: Engine
    blobs: BlobStore
    keys: RegistryKeys
    access: Access
    ingest: Ingest
    metrics: Metrics
    clock: Any = utc_now
    worker_thread: WorkerThread | None = None
    abis: Abis | None = None
    _uploads: int = field(default=0, init=False)
    _uploads_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def now(self) -> datetime:
        return self.clock()  # type: ignore[no-any-return]

    def reading(self) -> Session:
        """A read-only session (on SQLite it takes no write lock)."""
        return Session(self.engine.execution_options(sqlite_begin="DEFERRED"))

    def admit_upload(self) -> bool:
        with self._uploads_lock:
            if self._uploads >= self.settings.ingest.max_concurrent_uploads:
                return False
            self._uploads += 1
            return True

    def release_upload(self) -> None:
        with self._uploads_lock:
            self._uploads = max(self._uploads - 1, 0)

    def chip_view(self, chip: bytes) -> dict[str, Any]:
        return ChipData.from_bytes(chip).to_json()

    def record_card(self, station_id: str, package_id: uuid.UUID, serial: str) -> dict[str, Any]:
        """The station encoded (and read back) the card of this issuance."""
        now = self.now()
        try:
            with Session(self.engine) as session, session.begin():
                row = session.get(Package, package_id)
                if row is None or row.station_id != station_id:
                    raise AccessError(404, "not_found", "no such package from this station")
                # Locked: two reports at once must not both apply (or overwrite a serial).
                issued = session.get(Issuance, package_id, with_for_update=True)
                if issued is None:
                    raise AccessError(409, "not_issued", "the package has no chip data yet")
                if issued.card_serial is not None:
                    if issued.card_serial != serial:
                        raise AccessError(
                            409,
                            "card_already_recorded",
                            f"card {issued.card_serial} is recorded for this issuance; a "
                            "replacement card needs a new enrollment",
                        )
                    return {"package_id": str(package_id), "state": row.state.value}
                issued.card_serial = serial
                issued.card_encoded_at = now
                # The chip's private keys are on the card now: the registry forgets them.
                issued.chip = ChipData.from_bytes(issued.chip).without_secrets().to_bytes()
                row.state = PackageState.card_encoded
                row.state_changed_at = now
                append_audit(
                    session,
                    now,
                    f"station:{station_id}",
                    "package.card_encoded",
                    f"package:{package_id}",
                    {"card_serial": serial},
                )
                return {"package_id": str(package_id), "state": row.state.value}
        except IntegrityError:
            raise AccessError(
                409, "card_serial_in_use", f"card {serial} is recorded for another issuance"
            ) from None

    def pipeline_context(self) -> PipelineContext:
        from central.abis.service import Abis

        if self.abis is None:
            self.abis = Abis(self.engine, self.settings.abis, clock=self.clock)
        return PipelineContext(
            blobs=self.blobs,
            verifier=self.ingest.verifier,
            quality=QualityChecker(self.settings.quality),
            dedup=AbisDedup(self.abis, self.metrics),
            issuer=KeysIssuer(self.keys),
            clock=self.clock,
        )

    def make_worker(self, name: str | None = None) -> Worker:
        metrics = self.metrics

        def observe(result: JobResult, seconds: float) -> None:
            if result.outcome in ("done", "rejected"):
                metrics.observe_stage(result.kind, seconds)

        return Worker(
            self.engine,
            self.pipeline_context(),
            self.settings.worker,
            name=name,
            on_result=observe,
            housekeeping=self.housekeeping,
        )

    def housekeeping(self) -> None:
        """Expire idle resumable uploads; remove package blobs no row names (a crash
        between storing and recording), once no upload can still be recording them, and
        the blob store's temporary files of interrupted writes."""
        expiry = timedelta(hours=self.settings.ingest.upload_expiry_hours)
        expired = self.ingest.expire_uploads(expiry)
        orphans = self.ingest.sweep_orphans(timedelta(hours=1))
        temporary = self.blobs.sweep(older_than=3600.0)  # interrupted puts' temporary files
        if expired or orphans or temporary:
            log.info(
                "housekeeping",
                extra={"uploads_expired": expired, "orphans": orphans, "temporary": temporary},
            )

    def start_worker(self) -> None:
        self.worker_thread = WorkerThread(self.make_worker())
        self.worker_thread.start()

    def close(self) -> None:
        if self.worker_thread is not None:
            self.worker_thread.stop()
        if self.abis is not None:
            self.abis.close()
        self.engine.dispose()


def open_registry(settings: RegistrySettings, *, clock: Any = utc_now) -> Registry:
    url = settings.database.url.get_secret_value()
    if settings.migrate_on_start:
        upgrade(url)
    engine = engine_from_settings(settings.database)
    blobs = make_blob_store(settings.blobs)
    keys = RegistryKeys.open_or_create(settings.keys, engine, now=clock())
    access = Access(engine, settings.auth, station_cas=[keys.station_ca], clock=clock)
    limits = Limits(max_package_bytes=settings.ingest.max_package_bytes)
    verifier = PackageVerifier(keys.package_decryptor, [keys.station_ca], limits)
    ingest = Ingest(engine, blobs, verifier, clock=clock)
    metrics = Metrics(engine)
    return Registry(settings, engine, blobs, keys, access, ingest, metrics, clock)


def registry_of(request: Request) -> Registry:
    registry = getattr(request.app.state, "registry", None)
    if not isinstance(registry, Registry):
        raise RuntimeError("the registry is not open (create_app's lifespan opens it)")
    return registry


def today_in_vietnam(now: datetime) -> date:
    return (now + VIETNAM).date()
