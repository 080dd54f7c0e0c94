# ruff: noqa: N818 -- short names that read as conditions (CardSpoiled, NotIssued), as the UI uses them
"""Card issuance at the station: from "the registry issued this person" to a verified chip
in the citizen's hand, with every card the station touched accounted for.

    issuer = CardIssuer(db, encoder, client.fetch_issuance, client.report_card,
                        csca=lambda: identity.csca, seal=seal, unseal=unseal)
    issuer.on_issued(package_id)                # the outbox saw "issued": fetch the chip data
    card = issuer.encode(package_id, printed_mrz)  # a blank card on the encoder
    issuer.sync_once()                          # fetches and reports that are due

One ``card_job`` row per package walks ``waiting`` (the registry issued it) -> ``fetched``
(the chip data is here, sealed) -> ``encoding`` (a card is being written) -> ``encoded``
(read back, passive and active authentication passed, DG1 and the printed MRZ checked)
-> ``reported`` (the registry answered card_encoded). ``refused`` is the dead end where
the registry said no for good (a person must look).

Every chip the station writes to is a ``card_chip`` row keyed by its serial (the chip's
CPLC identity, :meth:`CardEncoder.chip_serial`), recorded *before* the first write. A card
that fails after that is ``spoiled`` with the reason, and its serial can never be used
again: its body is printed with this person's data and its chip may hold part of it. The
job goes back to ``fetched`` for another blank card. A power cut mid-write leaves the row
in ``encoding``; :meth:`CardIssuer.recover` (run at start) spoils that card. A card is
refused untouched when its serial is known (already used or spoiled), when its printed MRZ
is unreadable or not this person's, or when it is not a blank card of the issued type.
``card_event`` keeps the history of each job (append-only): fetches, every card tried,
refused, spoiled or encoded, and the report.

The chip's private keys (Active and Chip Authentication) are secrets: they live only in
``card_job.chip_sealed``, the chip data CBOR sealed with the station's data key (the
injected ``seal``/``unseal``; :func:`aes_gcm_sealing` makes them from a 32-byte key), and
the column is cleared in the transaction that records the card as encoded: from then on
they are on the card and nowhere on the station. The registry drops its copy when the
report reaches it.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field

from enrollment.icao.chip import ChipSecrets, fid_of
from enrollment.icao.chip_data import ChipData, ChipDataError
from enrollment.icao.errors import LdsError, PassiveAuthError
from enrollment.icao.lds import parse_dg1
from enrollment.icao.mrz import Td1, parse_td1
from enrollment.icao.passive import verify_passive
from station.drivers.card.encoder import (
    ChipImage,
    PersonalisationReport,
    VerificationReport,
)
from station.drivers.card.errors import CardEncoderError
from station.issuance_client import Issuance, RegistryRefused, RegistryUnavailable
from station.store.database import Schema, StationDatabase

log = logging.getLogger(__name__)

__all__ = [
    "CARDS_SCHEMA",
    "AlreadyEncoded",
    "CardEvent",
    "CardIssuanceError",
    "CardIssuanceSettings",
    "CardIssuer",
    "CardJob",
    "CardRefused",
    "CardSpoiled",
    "ChipDataUnusable",
    "ChipRecord",
    "EncodedCard",
    "EncoderBusy",
    "JobRefused",
    "NoSuchJob",
    "NotIssued",
    "aes_gcm_sealing",
    "normalise_mrz",
]

CARDS_SCHEMA = Schema(
    "card",
    (
        """
        CREATE TABLE card_job (
            package_id TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN
                ('waiting', 'fetched', 'encoding', 'encoded', 'reported', 'refused')),
            personal_number TEXT,
            chip_sealed BLOB,
            card_serial TEXT,
            cards_tried INTEGER NOT NULL DEFAULT 0,
            cards_spoiled INTEGER NOT NULL DEFAULT 0,
            sync_attempts INTEGER NOT NULL DEFAULT 0,
            next_sync_at TEXT,
            last_error TEXT,
            registry_state TEXT,
            created_at TEXT NOT NULL,
            fetched_at TEXT,
            encoded_at TEXT,
            reported_at TEXT,
            updated_at TEXT NOT NULL,
            CHECK (chip_sealed IS NULL OR state IN ('fetched', 'encoding'))
        );
        CREATE INDEX card_job_due ON card_job (state, next_sync_at);
        CREATE TABLE card_chip (
            serial TEXT PRIMARY KEY,
            package_id TEXT NOT NULL REFERENCES card_job (package_id),
            outcome TEXT NOT NULL CHECK (outcome IN ('encoding', 'encoded', 'spoiled')),
            code TEXT,
            reason TEXT,
            first_seen_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX card_chip_package ON card_chip (package_id);
        CREATE TABLE card_event (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            package_id TEXT NOT NULL,
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            card_serial TEXT,
            code TEXT,
            detail TEXT
        );
        CREATE INDEX card_event_package ON card_event (package_id, id);
        CREATE TRIGGER card_event_no_update BEFORE UPDATE ON card_event
        BEGIN SELECT RAISE(ABORT, 'card history is append-only'); END;
        CREATE TRIGGER card_event_no_delete BEFORE DELETE ON card_event
        BEGIN SELECT RAISE(ABORT, 'card history is append-only'); END;
        """,
    ),
)

JOB_STATES = ("waiting", "fetched", "encoding", "encoded", "reported", "refused")
FID_DG1 = fid_of(1)

Seal = Callable[[bytes, bytes], bytes]
"""``seal(plaintext, associated_data) -> sealed``: encrypt with the station's data key."""
Unseal = Callable[[bytes, bytes], bytes]
"""``unseal(sealed, associated_data) -> plaintext``; raises ValueError when it cannot."""
FetchIssuance = Callable[[str], Issuance | None]
"""``fetch(package_id)``: the issuance, None while not issued; raises RegistryUnavailable
(try later) or RegistryRefused (for good). :meth:`IssuanceClient.fetch_issuance`."""
ReportCard = Callable[[str, str], str]
"""``report(package_id, card_serial)``: the registry's state afterwards (idempotent);
raises like FetchIssuance. :meth:`IssuanceClient.report_card`."""


class CardEncoderLike(Protocol):
    """What the issuer needs of :class:`station.drivers.card.encoder.CardEncoder`."""

    def wait_for_card(self, timeout: float | None = None) -> bytes: ...

    def chip_serial(self) -> str: ...

    def personalise(
        self, chip: ChipImage, secrets: object | None = None, *, lock: bool = True
    ) -> PersonalisationReport: ...

    def verify(self, chip: ChipImage, csca: Sequence[x509.Certificate]) -> VerificationReport: ...


class CardIssuanceSettings(BaseModel):
    """Card issuance at the station (the lead wires it into StationSettings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    card_wait_s: float = Field(default=60.0, gt=0)
    """How long :meth:`CardIssuer.encode` waits for a card on the encoder."""
    retry_base_s: float = Field(default=5.0, gt=0)
    """First retry of a fetch or report the registry could not answer (then doubling)."""
    retry_cap_s: float = Field(default=900.0, gt=0)
    """Longest wait between retries (full jitter: a random delay up to the doubled one)."""
    sync_interval_s: float = Field(default=30.0, gt=0)
    """How often the background thread looks for fetches and reports that are due."""
    http_timeout_s: float = Field(default=30.0, gt=0)
    """Timeout of one call to the registry (:class:`station.issuance_client.IssuanceClient`)."""


# ------------------------------------------------------------------------------ errors


class CardIssuanceError(Exception):
    """Base class; ``code`` is stable (the UI and the history use it)."""

    code = "card_issuance_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NoSuchJob(CardIssuanceError):
    code = "no_such_job"


class NotIssued(CardIssuanceError):
    """The chip data is not on the station yet (not issued, or the registry is away)."""

    code = "not_issued"


class AlreadyEncoded(CardIssuanceError):
    code = "already_encoded"


class JobRefused(CardIssuanceError):
    """The registry refused this job for good; a person must look."""

    code = "job_refused"


class EncoderBusy(CardIssuanceError):
    code = "encoder_busy"


class ChipDataUnusable(CardIssuanceError):
    """The stored chip data cannot be written (unsealing failed, or it does not verify
    against this station's CSCA list); no card was touched."""

    code = "chip_data_unusable"


class CardRefused(CardIssuanceError):
    """This card was not written: known serial, wrong printed MRZ, not a blank card of the
    issued type. ``serial`` when it could be read."""

    code = "card_refused"

    def __init__(self, message: str, *, code: str, serial: str | None) -> None:
        super().__init__(message, code=code)
        self.serial = serial


class CardSpoiled(CardIssuanceError):
    """This card failed after the station started writing it: recorded as spoiled, never
    to be used again; put a new blank card on the encoder."""

    code = "card_spoiled"

    def __init__(self, message: str, *, code: str, serial: str) -> None:
        super().__init__(message, code=code)
        self.serial = serial


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class CardJob:
    package_id: str
    state: str
    personal_number: str | None
    card_serial: str | None
    """The card being written (``encoding``) or the one encoded."""
    cards_tried: int
    cards_spoiled: int
    sync_attempts: int
    """Failed fetches or reports in a row (drives the backoff)."""
    next_sync_at: datetime | None
    last_error: str | None
    registry_state: str | None
    has_chip_data: bool
    created_at: datetime
    fetched_at: datetime | None
    encoded_at: datetime | None
    reported_at: datetime | None


@dataclass(frozen=True)
class CardEvent:
    at: datetime
    event: str
    """enqueued, fetched, fetch_refused, chip_data_unusable, card_refused, encoding,
    spoiled, encoded, reported, report_refused."""
    card_serial: str | None
    code: str | None
    detail: str | None


@dataclass(frozen=True)
class ChipRecord:
    """One physical chip the station wrote to."""

    serial: str
    package_id: str
    outcome: str
    """encoding (being written, or cut off by a power loss), encoded or spoiled."""
    code: str | None
    reason: str | None
    first_seen_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EncodedCard:
    """A card written, read back and verified."""

    package_id: str
    card_serial: str
    personal_number: str
    verified_groups: tuple[int, ...]
    """Data groups read back whose hashes match the Document Signer's EF.SOD."""
    not_readable: tuple[int, ...]
    """Data groups behind EAC (DG3), checked in plain before the card was locked."""
    active_authentication: bool | None
    access: str
    """How the read-back session was opened: "pace" or "bac"."""
    reported: bool
    registry_state: str | None


# ------------------------------------------------------------------------------ helpers


def aes_gcm_sealing(key: bytes) -> tuple[Seal, Unseal]:
    """A seal/unseal pair over AES-256-GCM with ``key`` (the station data key): a fresh
    96-bit nonce per seal, the associated data bound in (a sealed value moved to another
    row does not open)."""
    if len(key) != 32:
        raise ValueError("the data key must be 32 bytes (AES-256)")
    aead = AESGCM(key)

    def seal(plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + aead.encrypt(nonce, plaintext, associated)

    def unseal(sealed: bytes, associated: bytes) -> bytes:
        if len(sealed) < 12 + 16:
            raise ValueError("sealed data is too short")
        try:
            return aead.decrypt(sealed[:12], sealed[12:], associated)
        except InvalidTag as exc:
            raise ValueError(
                "sealed data does not open with this key (wrong key or altered)"
            ) from exc

    return seal, unseal


def normalise_mrz(text: str) -> str:
    """The 90 characters of a TD1 MRZ read from a card body, line breaks and spaces
    removed (an MRZ reader sends three lines). Case is kept: lower case is a misread."""
    return "".join(text.split())


def _mrz_differences(printed: Td1, issued: Td1) -> list[str]:
    fields = {
        "document number": (printed.document_number, issued.document_number),
        "date of birth": (printed.birth_date, issued.birth_date),
        "sex": (printed.sex, issued.sex),
        "date of expiry": (printed.expiry_date, issued.expiry_date),
        "name": (printed.name, issued.name),
        "personal number": (printed.optional_data1, issued.optional_data1),
        "optional data": (printed.optional_data2, issued.optional_data2),
        "document code": (printed.document_code, issued.document_code),
        "issuing state": (printed.issuing_state, issued.issuing_state),
        "nationality": (printed.nationality, issued.nationality),
    }
    return [label for label, (a, b) in fields.items() if a != b]


def _stamp(at: datetime) -> str:
    """Fixed-width UTC text, so that SQL compares times as strings correctly."""
    if at.tzinfo is None:
        raise ValueError("the issuer's clock must give timezone-aware datetimes")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(text: str | None) -> datetime | None:
    return (
        None
        if text is None
        else datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    )


def _associated(package_id: str) -> bytes:
    return f"card_job.chip_sealed/{package_id}".encode()


def _job(row: sqlite3.Row) -> CardJob:
    created = _time(row["created_at"])
    assert created is not None
    return CardJob(
        package_id=row["package_id"],
        state=row["state"],
        personal_number=row["personal_number"],
        card_serial=row["card_serial"],
        cards_tried=row["cards_tried"],
        cards_spoiled=row["cards_spoiled"],
        sync_attempts=row["sync_attempts"],
        next_sync_at=_time(row["next_sync_at"]),
        last_error=row["last_error"],
        registry_state=row["registry_state"],
        has_chip_data=row["chip_sealed"] is not None,
        created_at=created,
        fetched_at=_time(row["fetched_at"]),
        encoded_at=_time(row["encoded_at"]),
        reported_at=_time(row["reported_at"]),
    )


def _chip_record(row: sqlite3.Row) -> ChipRecord:
    first, updated = _time(row["first_seen_at"]), _time(row["updated_at"])
    assert first is not None
    assert updated is not None
    return ChipRecord(
        serial=row["serial"],
        package_id=row["package_id"],
        outcome=row["outcome"],
        code=row["code"],
        reason=row["reason"],
        first_seen_at=first,
        updated_at=updated,
    )


class _Spoil(Exception):
    """A check after writing failed: spoil the card with this code and reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# ------------------------------------------------------------------------------- issuer


class CardIssuer:
    """The card jobs of one station. Thread-safe; one card is encoded at a time.

    Make one per station database: constructing it runs :meth:`recover`, which spoils any
    card an earlier process left half-written."""

    def __init__(
        self,
        db: StationDatabase,
        encoder: CardEncoderLike,
        fetch_issuance: FetchIssuance,
        report_card: ReportCard,
        csca: Callable[[], Sequence[x509.Certificate]],
        *,
        seal: Seal,
        unseal: Unseal,
        settings: CardIssuanceSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.encoder = encoder
        self.fetch_issuance = fetch_issuance
        self.report_card = report_card
        self.csca = csca
        self.settings = settings or CardIssuanceSettings()
        self.clock = clock
        self._seal = seal
        self._unseal = unseal
        self._rng = rng or random.Random()  # noqa: S311 -- retry jitter, not a secret
        self._encoding = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        db.migrate(CARDS_SCHEMA)
        self.recover()

    # --- small pieces -------------------------------------------------------------------

    def _now(self) -> str:
        return _stamp(self.clock())

    def _event(
        self,
        conn: sqlite3.Connection,
        package_id: str,
        event: str,
        *,
        serial: str | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO card_event (package_id, at, event, card_serial, code, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (package_id, self._now(), event, serial, code, detail),
        )

    def _row(self, conn: sqlite3.Connection, package_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM card_job WHERE package_id = ?", (package_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no card job for package {package_id}: it was never issued here")
        return row  # type: ignore[no-any-return]

    def _backoff(self, attempts: int, retry_after: float | None) -> str:
        ceiling = min(self.settings.retry_cap_s, self.settings.retry_base_s * 2**attempts)
        delay = self._rng.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return _stamp(self.clock() + timedelta(seconds=delay))

    def _sync_failed(self, package_id: str, error: RegistryUnavailable) -> None:
        with self.db.write() as c:
            row = self._row(c, package_id)
            c.execute(
                "UPDATE card_job SET sync_attempts = sync_attempts + 1, next_sync_at = ?, "
                "last_error = ?, updated_at = ? WHERE package_id = ?",
                (
                    self._backoff(row["sync_attempts"], error.retry_after),
                    str(error),
                    self._now(),
                    package_id,
                ),
            )

    # --- reading ------------------------------------------------------------------------

    def job(self, package_id: str) -> CardJob:
        with self.db.read() as c:
            return _job(self._row(c, package_id))

    def jobs(self, state: str | None = None, *, limit: int = 100, offset: int = 0) -> list[CardJob]:
        if state is not None and state not in JOB_STATES:
            raise ValueError(f"state must be one of {JOB_STATES}, not {state!r}")
        with self.db.read() as c:
            rows = c.execute(
                "SELECT * FROM card_job WHERE ? IS NULL OR state = ? "
                "ORDER BY created_at, package_id LIMIT ? OFFSET ?",
                (state, state, limit, offset),
            ).fetchall()
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present, 0 when none): for the UI and heartbeat."""
        with self.db.read() as c:
            rows = c.execute("SELECT state, count(*) FROM card_job GROUP BY state").fetchall()
        counts = dict.fromkeys(JOB_STATES, 0)
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def history(self, package_id: str) -> list[CardEvent]:
        with self.db.read() as c:
            rows = c.execute(
                "SELECT * FROM card_event WHERE package_id = ? ORDER BY id", (package_id,)
            ).fetchall()
        return [
            CardEvent(
                at=_time(r["at"]) or datetime.min.replace(tzinfo=UTC),
                event=r["event"],
                card_serial=r["card_serial"],
                code=r["code"],
                detail=r["detail"],
            )
            for r in rows
        ]

    def chip(self, serial: str) -> ChipRecord | None:
        """What the station did with the chip ``serial``, or None if it never wrote it."""
        with self.db.read() as c:
            row = c.execute("SELECT * FROM card_chip WHERE serial = ?", (serial,)).fetchone()
        return None if row is None else _chip_record(row)

    def chips(self, outcome: str | None = None) -> list[ChipRecord]:
        """Every chip written, oldest first (``outcome="spoiled"``: the spoiled-card list
        an office hands back with its stock count)."""
        with self.db.read() as c:
            rows = c.execute(
                "SELECT * FROM card_chip WHERE ? IS NULL OR outcome = ? "
                "ORDER BY first_seen_at, serial",
                (outcome, outcome),
            ).fetchall()
        return [_chip_record(r) for r in rows]

    # --- enqueue and fetch --------------------------------------------------------------

    def on_issued(self, package_id: str, conn: sqlite3.Connection | None = None) -> bool:
        """The registry issued ``package_id``: make its card job (once; True when new).

        With ``conn`` the job is written in the caller's transaction (the outbox's status
        change and the job commit together); the fetch happens in :meth:`sync_once`."""
        if conn is None:
            with self.db.write() as c:
                created = self._enqueue(c, package_id)
        else:
            created = self._enqueue(conn, package_id)
        if created:
            self.notify()
        return created

    def _enqueue(self, conn: sqlite3.Connection, package_id: str) -> bool:
        now = self._now()
        cursor = conn.execute(
            "INSERT INTO card_job (package_id, state, next_sync_at, created_at, updated_at) "
            "VALUES (?, 'waiting', ?, ?, ?) ON CONFLICT (package_id) DO NOTHING",
            (package_id, now, now, now),
        )
        if cursor.rowcount != 1:
            return False
        self._event(conn, package_id, "enqueued")
        return True

    def fetch(self, package_id: str) -> CardJob:
        """Fetch and seal the chip data of a waiting job (any other state: nothing to do).

        A registry that cannot answer leaves the job waiting with a later retry time; one
        that refuses for good marks it refused."""
        job = self.job(package_id)
        if job.state != "waiting":
            return job
        try:
            issuance = self.fetch_issuance(package_id)
        except RegistryUnavailable as exc:
            self._sync_failed(package_id, exc)
            return self.job(package_id)
        except RegistryRefused as exc:
            self._refuse(package_id, "fetch_refused", exc.code, str(exc))
            return self.job(package_id)
        if issuance is None:
            self._sync_failed(
                package_id, RegistryUnavailable("the registry has no chip data for it yet")
            )
            return self.job(package_id)
        chip = issuance.chip
        if chip.active_auth_key is None:
            # The registry drops the keys once a card is reported: one already was.
            self._refuse(
                package_id,
                "fetch_refused",
                "chip_keys_gone",
                "the registry no longer holds this chip's keys (a card was already recorded "
                "for this issuance); a replacement card needs a new enrollment",
            )
            return self.job(package_id)
        sealed = self._seal(chip.to_bytes(), _associated(package_id))
        with self.db.write() as c:
            if self._row(c, package_id)["state"] != "waiting":
                return _job(self._row(c, package_id))
            now = self._now()
            c.execute(
                "UPDATE card_job SET state = 'fetched', personal_number = ?, chip_sealed = ?, "
                "sync_attempts = 0, next_sync_at = NULL, last_error = NULL, fetched_at = ?, "
                "updated_at = ? WHERE package_id = ?",
                (issuance.personal_number, sealed, now, now, package_id),
            )
            self._event(c, package_id, "fetched", detail=f"issued {issuance.issued_at:%Y-%m-%d}")
            return _job(self._row(c, package_id))

    def _refuse(self, package_id: str, event: str, code: str, detail: str) -> None:
        with self.db.write() as c:
            c.execute(
                "UPDATE card_job SET state = 'refused', chip_sealed = NULL, last_error = ?, "
                "next_sync_at = NULL, updated_at = ? WHERE package_id = ?",
                (f"{code}: {detail}", self._now(), package_id),
            )
            self._event(c, package_id, event, code=code, detail=detail)
        log.warning("card job %s refused: %s: %s", package_id, code, detail)

    # --- encode -------------------------------------------------------------------------

    def encode(
        self,
        package_id: str,
        printed_mrz: str | None = None,
        *,
        card_timeout_s: float | None = None,
    ) -> EncodedCard:
        """Write the person's chip onto the blank card on the encoder, read it back and
        verify it, record it, and report it to the registry (later if it cannot be
        reached now).

        ``printed_mrz``: the MRZ printed on this card's body, as an MRZ reader reads it
        (three lines or 90 characters); checked against the issued data before anything
        is written and against the chip's DG1 after. Raises :class:`CardRefused` (card
        untouched: take it off), :class:`CardSpoiled` (recorded; use a new blank card),
        :class:`NotIssued`, :class:`AlreadyEncoded`, :class:`JobRefused`,
        :class:`ChipDataUnusable`, :class:`EncoderBusy`, or the encoder's
        ``NoCard``/``NoReader`` (nothing was recorded).
        """
        if not self._encoding.acquire(blocking=False):
            raise EncoderBusy("the card encoder is writing another card; wait for it")
        try:
            return self._encode(package_id, printed_mrz, card_timeout_s)
        finally:
            self._encoding.release()

    def _ready_job(self, package_id: str) -> CardJob:
        job = self.fetch(package_id)  # a waiting job: try now, the citizen is here
        if job.state == "encoding":  # we hold the encoder: an earlier run was cut off
            self.recover()
            job = self.job(package_id)
        if job.state == "waiting":
            raise NotIssued(
                f"the chip data of package {package_id} is not on the station yet "
                f"({job.last_error or 'not fetched'}); try again when the registry answers",
            )
        if job.state in ("encoded", "reported"):
            raise AlreadyEncoded(
                f"the card of package {package_id} is already encoded (card {job.card_serial})"
            )
        if job.state == "refused":
            raise JobRefused(f"package {package_id}: {job.last_error}")
        return job

    def _load_chip(self, package_id: str) -> ChipData:
        with self.db.read() as c:
            sealed = self._row(c, package_id)["chip_sealed"]
        try:
            return ChipData.from_bytes(self._unseal(bytes(sealed), _associated(package_id)))
        except (ValueError, TypeError) as exc:
            # The registry keeps the chip data until the card is reported: fetch it again.
            with self.db.write() as c:
                c.execute(
                    "UPDATE card_job SET state = 'waiting', chip_sealed = NULL, "
                    "next_sync_at = ?, last_error = ?, updated_at = ? WHERE package_id = ?",
                    (self._now(), f"stored chip data unusable: {exc}", self._now(), package_id),
                )
                self._event(c, package_id, "chip_data_unusable", code="unseal", detail=str(exc))
            raise ChipDataUnusable(
                f"the stored chip data of package {package_id} cannot be opened ({exc}); "
                "it will be fetched again from the registry",
            ) from exc

    def _check_issued(
        self, package_id: str, chip: ChipData, csca: Sequence[x509.Certificate]
    ) -> tuple[Td1, ChipSecrets]:
        """Before any card: the issued data verifies against our CSCAs and is coherent."""
        try:
            issued = parse_td1(chip.mrz)
            if FID_DG1 not in chip.files or parse_dg1(chip.files[FID_DG1]) != chip.mrz:
                raise LdsError("DG1 does not hold the issued MRZ")
            if issued.mrz_information() != chip.mrz_information:
                raise LdsError("the BAC seed does not match the issued MRZ")
            secrets = chip.secrets()
            verify_passive(chip.sod, chip.data_groups(), csca)
        except (LdsError, ChipDataError, PassiveAuthError) as exc:
            with self.db.write() as c:
                self._event(c, package_id, "chip_data_unusable", code="untrusted", detail=str(exc))
            raise ChipDataUnusable(
                f"the chip data of package {package_id} cannot be written: {exc}. No card was "
                "touched; if the CSCA list is out of date, sync the station's trust",
            ) from exc
        return issued, secrets

    def _refuse_card(
        self, package_id: str, code: str, message: str, serial: str | None
    ) -> CardRefused:
        with self.db.write() as c:
            self._event(c, package_id, "card_refused", serial=serial, code=code, detail=message)
        return CardRefused(message, code=code, serial=serial)

    def _encode(
        self, package_id: str, printed_mrz: str | None, card_timeout_s: float | None
    ) -> EncodedCard:
        job = self._ready_job(package_id)
        chip = self._load_chip(package_id)
        csca = list(self.csca())
        issued, secrets = self._check_issued(package_id, chip, csca)
        self.encoder.wait_for_card(card_timeout_s or self.settings.card_wait_s)
        try:
            serial = self.encoder.chip_serial()
        except CardEncoderError as exc:
            raise self._refuse_card(package_id, exc.code, str(exc), None) from exc
        printed = self._check_card(package_id, serial, issued, printed_mrz)
        now = self._now()
        with self.db.write() as c:  # before the first write: a power cut spoils this card
            if c.execute("SELECT 1 FROM card_chip WHERE serial = ?", (serial,)).fetchone():
                raise CardRefused(
                    f"card {serial} was used meanwhile", code="card_used", serial=serial
                )
            c.execute(
                "INSERT INTO card_chip (serial, package_id, outcome, first_seen_at, updated_at) "
                "VALUES (?, ?, 'encoding', ?, ?)",
                (serial, package_id, now, now),
            )
            c.execute(
                "UPDATE card_job SET state = 'encoding', card_serial = ?, "
                "cards_tried = cards_tried + 1, updated_at = ? WHERE package_id = ?",
                (serial, now, package_id),
            )
            self._event(c, package_id, "encoding", serial=serial)
        try:
            written = self.encoder.personalise(chip, secrets)
            check = self.encoder.verify(chip, csca)
            self._check_read_back(check, chip, printed)
        except CardEncoderError as exc:
            raise self._spoil(package_id, serial, exc.code, str(exc)) from exc
        except _Spoil as exc:
            raise self._spoil(package_id, serial, exc.code, exc.reason) from None
        except BaseException as exc:
            self._spoil(package_id, serial, "station_error", f"{type(exc).__name__}: {exc}")
            raise
        self._encoded(package_id, serial, written, check)
        reported = self.report(package_id)
        return EncodedCard(
            package_id=package_id,
            card_serial=serial,
            personal_number=job.personal_number or "",
            verified_groups=check.passive.verified,
            not_readable=check.passive.not_read,
            active_authentication=check.active_authentication,
            access=check.read.access,
            reported=reported.state == "reported",
            registry_state=reported.registry_state,
        )

    def _check_card(
        self, package_id: str, serial: str, issued: Td1, printed_mrz: str | None
    ) -> Td1 | None:
        """Refuse (untouched) a card already used or spoiled, or printed for someone else."""
        known = self.chip(serial)
        if known is not None:
            if known.outcome == "spoiled":
                message = (
                    f"card {serial} was spoiled on {known.updated_at:%Y-%m-%d %H:%M} "
                    f"({known.reason}); it can never be used: put it with the spoiled cards"
                )
                raise self._refuse_card(package_id, "card_spoiled_before", message, serial)
            whose = "this person" if known.package_id == package_id else "another person"
            message = f"card {serial} is already {known.outcome} for {whose}; take it off"
            raise self._refuse_card(package_id, "card_used", message, serial)
        if printed_mrz is None:
            return None
        try:
            printed = parse_td1(normalise_mrz(printed_mrz))
        except LdsError as exc:
            message = (
                f"the MRZ read from card {serial}'s body is not a valid TD1 ({exc}); scan it again"
            )
            raise self._refuse_card(package_id, "printed_mrz_unreadable", message, serial) from exc
        differences = _mrz_differences(printed, issued)
        if differences:
            message = (
                f"card {serial}'s body is not printed for this person (the printed MRZ differs "
                f"in: {', '.join(differences)}); nothing was written: take it off and use the "
                "card printed for this person"
            )
            raise self._refuse_card(package_id, "printed_mrz_mismatch", message, serial)
        return printed

    @staticmethod
    def _check_read_back(check: VerificationReport, chip: ChipData, printed: Td1 | None) -> None:
        dg1 = check.read.files.get(FID_DG1)
        if dg1 is None:
            raise _Spoil("dg1_unreadable", "DG1 could not be read back from the chip")
        try:
            on_chip = parse_dg1(dg1)
        except LdsError as exc:
            raise _Spoil("dg1_malformed", f"DG1 read back is malformed: {exc}") from exc
        if on_chip != chip.mrz:
            raise _Spoil("dg1_mismatch", "the MRZ in the chip's DG1 is not the issued one")
        if printed is not None and on_chip != printed.text():
            raise _Spoil("printed_mrz_mismatch", "the chip's MRZ differs from the printed one")
        if check.active_authentication is not True:
            raise _Spoil("no_active_authentication", "the chip did not prove its DG15 key")

    def _spoil(self, package_id: str, serial: str, code: str, reason: str) -> CardSpoiled:
        now = self._now()
        with self.db.write() as c:
            c.execute(
                "UPDATE card_chip SET outcome = 'spoiled', code = ?, reason = ?, updated_at = ? "
                "WHERE serial = ?",
                (code, reason, now, serial),
            )
            c.execute(
                "UPDATE card_job SET state = 'fetched', card_serial = NULL, "
                "cards_spoiled = cards_spoiled + 1, last_error = ?, updated_at = ? "
                "WHERE package_id = ?",
                (f"card {serial} spoiled: {code}: {reason}", now, package_id),
            )
            self._event(c, package_id, "spoiled", serial=serial, code=code, detail=reason)
        log.warning("card %s spoiled for package %s: %s: %s", serial, package_id, code, reason)
        return CardSpoiled(
            f"card {serial} failed and is recorded as spoiled ({code}: {reason}); it must not "
            "be used again. Put a new blank card on the encoder",
            code=code,
            serial=serial,
        )

    def _encoded(
        self,
        package_id: str,
        serial: str,
        written: PersonalisationReport,
        check: VerificationReport,
    ) -> None:
        now = self._now()
        detail = (
            f"{sum(written.files.values())} bytes in {len(written.files)} files, "
            f"{written.apdus} APDUs, {written.seconds:.1f} s; read back under "
            f"{check.read.access.upper()}: DGs {list(check.passive.verified)} match EF.SOD "
            f"(Document Signer {check.passive.document_signer.subject.rfc4514_string()}), "
            f"active authentication {check.active_authentication}"
        )
        if written.keys_not_loaded:
            detail += f"; keys this card profile cannot take: {', '.join(written.keys_not_loaded)}"
        with self.db.write() as c:
            c.execute(
                "UPDATE card_chip SET outcome = 'encoded', updated_at = ? WHERE serial = ?",
                (now, serial),
            )
            # The chip's private keys are on the card now: the station's copy goes.
            c.execute(
                "UPDATE card_job SET state = 'encoded', chip_sealed = NULL, encoded_at = ?, "
                "sync_attempts = 0, next_sync_at = ?, last_error = NULL, updated_at = ? "
                "WHERE package_id = ?",
                (now, now, now, package_id),
            )
            self._event(c, package_id, "encoded", serial=serial, detail=detail)

    # --- report -------------------------------------------------------------------------

    def report(self, package_id: str) -> CardJob:
        """Tell the registry which card was encoded (idempotent); a registry that cannot
        answer leaves the job encoded with a later retry time."""
        job = self.job(package_id)
        if job.state != "encoded" or job.card_serial is None:
            return job
        try:
            state = self.report_card(package_id, job.card_serial)
        except RegistryUnavailable as exc:
            self._sync_failed(package_id, exc)
            log.info("card report of %s postponed: %s", package_id, exc)
            return self.job(package_id)
        except RegistryRefused as exc:
            self._refuse(package_id, "report_refused", exc.code, exc.detail)
            return self.job(package_id)
        with self.db.write() as c:
            if self._row(c, package_id)["state"] == "encoded":
                now = self._now()
                c.execute(
                    "UPDATE card_job SET state = 'reported', registry_state = ?, "
                    "reported_at = ?, sync_attempts = 0, next_sync_at = NULL, "
                    "last_error = NULL, updated_at = ? WHERE package_id = ?",
                    (state, now, now, package_id),
                )
                self._event(c, package_id, "reported", serial=job.card_serial, detail=state)
            return _job(self._row(c, package_id))

    # --- recovery and the background round ----------------------------------------------

    def recover(self) -> list[str]:
        """At start: a card left ``encoding`` (the station stopped mid-write) is spoiled and
        its job goes back to ``fetched``. Returns the serials spoiled."""
        with self.db.read() as c:
            rows = c.execute(
                "SELECT package_id, card_serial FROM card_job WHERE state = 'encoding'"
            ).fetchall()
        for row in rows:
            self._spoil(
                row["package_id"],
                row["card_serial"],
                "interrupted",
                "the station stopped while this card was being written",
            )
        return [row["card_serial"] for row in rows]

    def sync_once(self) -> dict[str, int]:
        """Fetch the waiting jobs and report the encoded ones that are due; what happened,
        as counts."""
        now = self._now()
        with self.db.read() as c:
            due = c.execute(
                "SELECT package_id, state FROM card_job WHERE state IN ('waiting', 'encoded') "
                "AND (next_sync_at IS NULL OR next_sync_at <= ?) ORDER BY next_sync_at",
                (now,),
            ).fetchall()
        done = {"fetched": 0, "reported": 0, "postponed": 0, "refused": 0}
        for row in due:
            if self._stop.is_set():
                break
            if row["state"] == "waiting":
                job = self.fetch(row["package_id"])
                success = "fetched"
            else:
                job = self.report(row["package_id"])
                success = "reported"
            if job.state == success:
                done[success] += 1
            elif job.state == "refused":
                done["refused"] += 1
            else:
                done["postponed"] += 1
        return done

    def notify(self) -> None:
        """Wake the background thread (a job was added, or the link came back)."""
        self._wake.set()

    def start(self) -> None:
        """Run :meth:`sync_once` in a background thread every ``sync_interval_s`` (and
        when notified) until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the card issuer's thread is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="card-issuer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background thread after the call in progress (idempotent)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError("the card issuer's thread did not stop")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.sync_once()
            except Exception:  # a bug or a broken store must not kill the thread silently
                log.exception("card issuance round failed")
            self._wake.wait(self.settings.sync_interval_s)
