"""The station service's parts, wired together: one object that the HTTP layer, the
command line and the tests use.

    runtime = StationRuntime(settings).start()
    runtime.provision("https://registry.example", token)   # first boot only
    ...
    runtime.stop()

:meth:`StationRuntime.start` opens the local store (migrating every component's tables),
unseals the data key, recovers the outbox (files of an interrupted write), opens the
devices, and, once the station is provisioned, starts the threads that talk to the
registry: the uploader, the sync loop and the heartbeat. Then it finishes what a power
cut interrupted (a case caught while its package was being built).

Nothing here waits on the network: a station that is offline for days starts, enrolls
and queues exactly as when it is online.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from station import blockers
from station.appointments import APPOINTMENTS_SCHEMA, Appointments
from station.blockers import Blocker
from station.cards import CardIssuer, aes_gcm_sealing
from station.cases import CASES_SCHEMA, CaseState
from station.config import StationSettings
from station.devices import StationDevices
from station.heartbeat import Heartbeat, HeartbeatSources, read_image_version
from station.identity import (
    NotProvisionedError,
    StationIdentity,
    is_provisioned,
    load_identity,
    provision,
)
from station.issuance_client import IssuanceClient
from station.journal import JOURNAL_SCHEMA, Journal
from station.live_capture import LiveCapture
from station.operators import (
    OPERATORS_SCHEMA,
    Authenticator,
    OperatorDirectory,
    OperatorPolicy,
)
from station.outbox import OUTBOX_SCHEMA, Outbox
from station.policy import StationPolicy
from station.record_builder import device_infos
from station.residents import RESIDENTS_SCHEMA, ResidentList
from station.store.database import Schema, StationDatabase
from station.store.drafts import DRAFTS_SCHEMA, DraftStore
from station.store.sealing import DataKeySettings, provider_for
from station.sync import SYNC_SCHEMA, SyncError, Synchronizer
from station.uploader import Uploader
from station.workflow import EnrollmentWorkflow, StationContext, WorkflowError

log = logging.getLogger(__name__)


META_SCHEMA = Schema(
    "meta",
    ("CREATE TABLE station_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",),
)


def software_version() -> str:
    try:
        return metadata.version("vn-eid")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Online:
    """The parts that exist once the station has an identity."""

    identity: StationIdentity
    client: httpx.Client
    synchronizer: Synchronizer
    uploader: Uploader
    heartbeat: Heartbeat
    workflow: EnrollmentWorkflow
    cards: CardIssuer
    issuance: IssuanceClient


class _LazyEncoder:
    """The card encoder as the issuer sees it: looked up at each use, so a station whose
    encoder was unplugged at start can issue cards once a technician plugs it in."""

    def __init__(self, runtime: StationRuntime) -> None:
        self._runtime = runtime

    def _encoder(self) -> Any:
        devices = self._runtime.devices
        if devices is None:
            raise NotReadyError("this station runs without devices", code="no_devices")
        return devices.encoder

    def wait_for_card(self, timeout: float | None = None) -> bytes:
        return bytes(self._encoder().wait_for_card(timeout))

    def chip_serial(self) -> str:
        return str(self._encoder().chip_serial())

    def personalise(self, chip: Any, secrets: object | None = None, *, lock: bool = True) -> Any:
        return self._encoder().personalise(chip, secrets, lock=lock)

    def verify(self, chip: Any, csca: Any) -> Any:
        return self._encoder().verify(chip, csca)


class NotReadyError(RuntimeError):
    """The station cannot do this now; ``code`` says why (not_provisioned, no_devices,
    device_missing, busy, provisioned), the message what to do."""

    def __init__(self, message: str, *, code: str = "not_provisioned") -> None:
        super().__init__(message)
        self.code = code


class StationRuntime:
    """Owns the store, the devices, the workflow and the background threads."""

    def __init__(
        self,
        settings: StationSettings,
        *,
        clock: Callable[[], datetime] = _utc_now,
        extra_schemas: tuple[Any, ...] = (),
        pcscd: Any = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state_dir = settings.state_dir
        self.identity_dir = settings.state_dir / "identity"
        self.db = StationDatabase(settings.state_dir / "station.db")
        self.devices: StationDevices | None = None
        self.journal = Journal(self.db, clock=clock)
        self.residents = ResidentList(self.db)
        self.operators = OperatorDirectory(self.db, self.journal)
        self.appointments = Appointments(self.db, clock)
        self._authenticator = Authenticator(self.db, self.operators, self.journal, clock=clock)
        self.outbox = Outbox(self.db, settings.state_dir / "outbox", clock=clock)
        self.drafts: DraftStore | None = None
        self.online: Online | None = None
        self._extra_schemas = extra_schemas
        self._pcscd = pcscd
        """A private pcscd to put the simulated card bay on (tests share one per process)."""
        self._sync_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sync_wake = threading.Event()
        self.started_at: datetime | None = None
        self.identity_error: str | None = None
        self.key_error: str | None = None
        self._provisioning = threading.Lock()
        self._link_lock = threading.Lock()
        self._link_ok = False
        self.scanner_lock = threading.Lock()
        """One capture at a time on the scanner (login, approval, ten prints)."""
        self.live = LiveCapture(
            lambda: self.devices, self.workflow, self.policy, self.scanner_lock,
            face_settings=settings.face,
        )  # fmt: skip

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> StationRuntime:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.db.migrate(
            JOURNAL_SCHEMA,
            RESIDENTS_SCHEMA,
            OPERATORS_SCHEMA,
            APPOINTMENTS_SCHEMA,
            DRAFTS_SCHEMA,
            OUTBOX_SCHEMA,
            CASES_SCHEMA,
            SYNC_SCHEMA,
            META_SCHEMA,
            *self._extra_schemas,
        )
        keys = self.settings.keys
        provider = provider_for(
            DataKeySettings(backend=keys.backend, tcti=keys.tcti), self.settings.state_dir
        )
        self._data_key = provider.load_or_create()
        self._check_data_key(self._data_key)
        self.drafts = DraftStore(self.db, self._data_key)
        self.operators.use_sealing(*aes_gcm_sealing(self._data_key))
        report = self.outbox.recover()
        log.info("outbox recovered: %s", report)
        if self.settings.open_devices:
            self.devices = StationDevices(self.settings, pcscd=self._pcscd).open()
        if is_provisioned(self.identity_dir):
            try:
                self._go_online(load_identity(self.identity_dir, self.settings.keys))
            except NotProvisionedError as exc:
                # A damaged identity must not stop the station: the technician page says why.
                log.error("the station identity cannot be used: %s", exc)
                self.identity_error = str(exc)
        self.started_at = self.clock()
        return self

    def _check_data_key(self, key: bytes) -> None:
        """The first key's fingerprint stays in the database: a key file lost or swapped
        later (a new key made silently) is detected instead of every draft failing."""
        check = hmac.new(key, b"vn-eid station data key", hashlib.sha256).hexdigest()
        with self.db.write() as c:
            row = c.execute(
                "SELECT value FROM station_meta WHERE key = 'data_key_check'"
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO station_meta (key, value) VALUES ('data_key_check', ?)", (check,)
                )
            elif not hmac.compare_digest(str(row[0]), check):
                self.key_error = (
                    "the data key is not the one the drafts were sealed with (key file lost "
                    "or replaced, or another TPM): open cases cannot be read; call a technician"
                )
                log.error(self.key_error)

    def stop(self) -> None:
        """Stop every thread, close the devices and the store; each part is stopped even
        when another fails to (a hung thread must not leave pcscd or the database open)."""
        self._stopping.set()
        self._sync_wake.set()
        online, self.online = self.online, None
        steps: list[tuple[str, Callable[[], object]]] = [("live capture", self.live.stop)]
        if online is not None:
            steps += [
                ("heartbeat", online.heartbeat.stop),
                ("card issuer", online.cards.stop),
                ("uploader", online.uploader.stop),
                ("sync", online.synchronizer.close),
                ("registry client", online.client.close),
                ("issuance client", online.issuance.close),
            ]
        thread, self._sync_thread = self._sync_thread, None
        if thread is not None:
            steps.append(("sync loop", lambda: thread.join(30)))
        devices, self.devices = self.devices, None
        if devices is not None:
            steps.append(("devices", devices.close))
        steps.append(("database", self.db.close))
        for name, step in steps:
            try:
                step()
            except Exception:
                log.exception("stopping the %s failed", name)

    # --- identity ----------------------------------------------------------------------------

    @property
    def provisioned(self) -> bool:
        return self.online is not None

    def provision(self, registry_url: str, token: str) -> StationIdentity:
        """First boot: enroll with the registry's token, then start the online parts and
        a first sync (in the background: its result shows in the status)."""
        if not self._provisioning.acquire(blocking=False):
            raise NotReadyError("provisioning is already under way", code="busy")
        try:
            if self.online is not None:
                raise NotReadyError("this station is already provisioned", code="provisioned")
            identity = provision(self.identity_dir, registry_url, token, keys=self.settings.keys)
        finally:
            self._provisioning.release()
        self.identity_error = None
        with self.db.write() as c:
            self.journal.record(
                c, "technician", "station.provisioned", identity.station_id,
                registry=registry_url, office_id=identity.office_id,
            )  # fmt: skip
        self._go_online(identity)
        return identity

    def _registry_url(self, identity: StationIdentity) -> str:
        return self.settings.registry_url or identity.registry_url

    def _package_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_public_key(
            (self.identity_dir / "package-key.pem").read_bytes()
        )
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise NotReadyError("the stored package key is not an EC key")
        return key

    def _go_online(self, identity: StationIdentity) -> None:
        url = self._registry_url(identity)
        client = httpx.Client(base_url=url, auth=identity.auth(), timeout=30.0)
        synchronizer = Synchronizer(
            self.db,
            identity,
            self.identity_dir,
            self.residents,
            self.operators,
            client=client,
            clock=self.clock,
        )
        uploader_settings = self.settings.uploader.model_copy(update={"registry_url": url})
        workflow = EnrollmentWorkflow(
            self.db,
            self._drafts(),
            self.outbox,
            self.residents,
            self.journal,
            StationContext(
                station_id=identity.station_id,
                signer=identity.signer,
                package_key=self._package_key,
                policy=synchronizer.policy,
                blockers=self.blockers,
                software_version=software_version(),
                devices=self._capture_devices,
                citizen_is_operator=self._citizen_is_operator,
                min_free_bytes=self.settings.min_free_disk_mb * 1024 * 1024,
            ),
            clock=self.clock,
        )
        uploader = Uploader(
            self.outbox,
            uploader_settings,
            identity.auth(),
            on_status=self._on_status,
            clock=self.clock,
        )
        workflow.on_queued = lambda _pid: uploader.notify()
        heartbeat = Heartbeat(
            client,
            HeartbeatSources(
                software_version=software_version(),
                image_version=lambda: read_image_version(self.settings.image_version_file),
                devices=lambda: self.devices.board.as_json() if self.devices else [],
                queue=lambda: self.outbox.counts().heartbeat(),
                disk_path=self.settings.state_dir,
                last_sync_at=lambda: synchronizer.staleness().last_sync_at,
            ),
            interval=lambda: synchronizer.policy().heartbeat_seconds,
            on_answer=self._on_heartbeat,
            clock=self.clock,
        )
        issuance = IssuanceClient(
            url, identity.auth(), timeout_s=self.settings.cards.http_timeout_s
        )
        seal, unseal = aes_gcm_sealing(self._data_key)

        def report_card(package_id: str, card_serial: str) -> str:
            # The uploader stops asking once a package is issued; the card report's answer
            # is how the case learns it is done (idempotent: a re-report says it again).
            state = issuance.report_card(package_id, card_serial)
            workflow.on_registry_status(package_id, state, {})
            return state

        cards = CardIssuer(
            self.db,
            _LazyEncoder(self),
            issuance.fetch_issuance,
            report_card,
            lambda: load_identity(self.identity_dir, self.settings.keys).csca,
            seal=seal,
            unseal=unseal,
            settings=self.settings.cards,
            clock=self.clock,
        )
        # The card job is created in the same transaction that marks the case issued.
        workflow.on_issued = lambda conn, package_id: cards.on_issued(package_id, conn)
        self.online = Online(
            identity, client, synchronizer, uploader, heartbeat, workflow, cards, issuance
        )
        finished = workflow.recover()
        if finished:
            log.info("finished packaging %d case(s) a power cut interrupted", len(finished))
        caught_up = workflow.reconcile(self.outbox)
        if caught_up:
            log.info("caught up the registry's state of %d case(s)", caught_up)
        if self.settings.background:
            uploader.start()
            heartbeat.start()
            cards.start()
            self._start_sync_loop()

    def _drafts(self) -> DraftStore:
        if self.drafts is None:
            raise NotReadyError("the station is not started")
        return self.drafts

    def authenticator(self) -> Authenticator:
        """Logins, sessions and approvals, under the registry's current policy."""
        online = self.online
        if online is not None:
            settings = {
                k: v for k, v in online.synchronizer.policy().model_dump().items() if v is not None
            }
            try:
                policy = OperatorPolicy.from_station_config(settings, self._authenticator.policy)
            except ValueError as exc:  # pydantic's ValidationError: keep the last good one
                log.error("the registry's login policy is not usable, keeping the last: %s", exc)
            else:
                if policy != self._authenticator.policy:
                    self._authenticator.set_policy(policy)
        return self._authenticator

    def _citizen_is_operator(self, operator_id: str, templates: Mapping[int, bytes]) -> bool:
        from biometrics.fingerprint.iso19794 import decode_minutiae
        from biometrics.fingerprint.matcher import make_template

        # Full templates on both sides: a 1:1 check, not a 1:N gallery search.
        probes = {
            p: make_template(decode_minutiae(t), max_cylinders=0) for p, t in templates.items()
        }
        return self.authenticator().citizen_is_operator(operator_id, probes)

    def capture_flat(self, timeout_s: float) -> Any:
        """A flat impression from the scanner (an operator's or supervisor's finger)."""
        if self.devices is None:
            raise NotReadyError("this station runs without devices", code="no_devices")
        from station.devices import DeviceUnavailableError

        if not self.scanner_lock.acquire(timeout=2.0):
            raise NotReadyError("the scanner is busy with another capture", code="busy")
        try:
            return self.devices.scanner.capture_flat(0, timeout=timeout_s)
        except DeviceUnavailableError as exc:
            raise NotReadyError(str(exc), code="device_missing") from exc
        finally:
            self.scanner_lock.release()

    def _capture_devices(self) -> tuple[Any, ...]:
        if self.devices is None:
            return ()
        return device_infos(self.devices.board.as_json())

    # --- background ----------------------------------------------------------------------------

    def _start_sync_loop(self) -> None:
        """Sync at start, when a heartbeat announces newer data, after a failed round
        (every heartbeat period until one succeeds) and otherwise a few times a day, with
        jitter so that a fleet does not sync in step."""
        import random

        rng = random.Random()  # noqa: S311 -- spreading load, not a secret

        def loop() -> None:
            while not self._stopping.is_set():
                try:
                    ok = self.sync_now(quiet=True) is not None
                except Exception:  # a bug or a broken store must not end syncing for good
                    log.exception("sync round failed")
                    ok = False
                online = self.online
                policy = online.synchronizer.policy() if online else StationPolicy()
                if ok:
                    fallback = min(policy.staleness_limit_hours * 3600 / 8, 6 * 3600)
                    wait = fallback * rng.uniform(0.8, 1.0)
                else:
                    wait = policy.heartbeat_seconds * rng.uniform(0.8, 1.2)
                self._sync_wake.wait(max(5.0, wait))
                self._sync_wake.clear()

        self._sync_thread = threading.Thread(target=loop, name="sync", daemon=True)
        self._sync_thread.start()

    def sync_now(self, *, quiet: bool = False) -> Any:
        online = self.online
        if online is None:
            raise NotReadyError("provision the station before syncing")
        try:
            report = online.synchronizer.sync_once()
        except SyncError as exc:
            self._link_down()
            if not quiet:
                raise
            log.info("sync failed (will retry): %s", exc)
            return None
        self._link_up()
        return report

    def _link_up(self) -> None:
        """The registry answered. Only a change from down to up clears the uploads'
        back-off (a registry that keeps answering 503 keeps its Retry-After)."""
        online = self.online
        if online is None:
            return
        with self._link_lock:
            was_down, self._link_ok = not self._link_ok, True
        online.uploader.notify(link_up=was_down)

    def _link_down(self) -> None:
        with self._link_lock:
            self._link_ok = False

    def _on_heartbeat(self, answer: Mapping[str, Any]) -> None:
        online = self.online
        if online is not None and online.synchronizer.needs_sync(answer):
            self._sync_wake.set()
        self._link_up()

    def _on_status(self, package_id: str, state: str, payload: Mapping[str, Any]) -> None:
        online = self.online
        if online is None:
            return
        online.workflow.on_registry_status(package_id, state, payload)

    # --- what the station may do now ----------------------------------------------------------

    def policy(self) -> StationPolicy:
        online = self.online
        return online.synchronizer.policy() if online else StationPolicy()

    def blockers(self) -> list[Blocker]:
        """Why no new enrollment may start now; [] when it may."""
        found = self._identity_blockers()
        # The disk guard stops taking people *before* the disk is full, so nothing captured
        # is lost; it counts whatever else is wrong.
        needed = self.settings.min_free_disk_mb * 1024 * 1024
        free = self.outbox.disk().free_bytes
        if free < needed:
            found.append(blockers.disk_full(free, needed))
        return found

    def _identity_blockers(self) -> list[Blocker]:
        online = self.online
        if self.key_error:
            return [blockers.key_error(self.key_error)]
        if online is None:
            if self.identity_error:
                return [blockers.identity_damaged(self.identity_error)]
            return [blockers.not_provisioned()]
        staleness = online.synchronizer.staleness()
        if staleness.last_sync_at is None:
            return [blockers.never_synced()]
        if staleness.stale:
            return [blockers.stale(staleness.age_s or 0.0, staleness.limit_s)]
        return []

    def slip(self, case_id: str, lang: Literal["vi", "en"] = "vi") -> bytes:
        """The acknowledgement slip of a submitted case (PDF)."""
        from station.slip import SlipData, render_slip

        online = self.online
        if online is None:
            raise NotReadyError("the station is not provisioned")
        workflow = online.workflow
        case = workflow.get(case_id)
        demographics = workflow.demographics(case_id)
        if case.package_id is None or case.completed_at is None:
            raise WorkflowError("not_submitted", "the slip is printed once the case is submitted")
        if demographics is None:
            raise WorkflowError("slip_gone", "this case's personal data has left the station")
        officer = self.operators.get(case.operator_id)
        data = SlipData(
            office=f"{online.identity.station_id} (office {online.identity.office_id})",
            station_id=online.identity.station_id,
            at=case.completed_at,
            citizen_name=demographics.full_name,
            date_of_birth=demographics.date_of_birth,
            package_id=case.package_id,
            operator=officer.full_name if officer else case.operator_id,
            receipt_number=case.receipt_number,
            ticket=case.ticket,
        )
        return render_slip(data, lang)

    def cards(self) -> CardIssuer:
        online = self.online
        if online is None:
            raise NotReadyError("the station is not provisioned")
        return online.cards

    def workflow(self) -> EnrollmentWorkflow:
        online = self.online
        if online is None:
            raise NotReadyError("the station is not provisioned")
        return online.workflow

    def status(self) -> dict[str, Any]:
        """Everything the status bar and the technician page show."""
        online = self.online
        usage = shutil.disk_usage(self.settings.state_dir)
        counts = self.outbox.counts()
        out: dict[str, Any] = {
            "software_version": software_version(),
            "image_version": read_image_version(self.settings.image_version_file),
            "provisioned": online is not None,
            "identity": online.identity.as_json() if online else None,
            "blockers": [b.as_json() for b in self.blockers()],
            "outbox": counts.heartbeat(),
            "disk": {"free_bytes": usage.free, "total_bytes": usage.total},
            "devices": self.devices.board.as_json() if self.devices else [],
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }
        if online is not None:
            out["sync"] = online.synchronizer.staleness().as_json()
            out["policy"] = online.synchronizer.policy().model_dump()
            out["link"] = {
                # Up: the last sync and the last heartbeat both reached the registry.
                "up": self._link_ok and online.heartbeat.last_error is None,
                "last_contact_at": (
                    online.uploader.last_contact_at.isoformat()
                    if online.uploader.last_contact_at
                    else None
                ),
                "last_heartbeat_at": (
                    online.heartbeat.last_beat_at.isoformat()
                    if online.heartbeat.last_beat_at
                    else None
                ),
                "heartbeat_error": online.heartbeat.last_error,
            }
            out["cases"] = {s.value: n for s, n in self._case_counts().items() if n}
        return out

    def _case_counts(self) -> dict[CaseState, int]:
        with self.db.read() as c:
            rows = c.execute("SELECT state, COUNT(*) FROM enrollment_case GROUP BY state")
            return {CaseState(r[0]): int(r[1]) for r in rows}


__all__ = ["NotReadyError", "Online", "StationRuntime", "software_version"]
