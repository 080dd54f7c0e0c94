"""The uploader: sends the outbox to the registry and mirrors what the registry did.

One background thread (:meth:`Uploader.start`, :meth:`Uploader.stop`; :meth:`notify`
wakes it when a package is added or the link comes back). Each round:

1. unless the link is backing off, send due packages oldest first: a whole
   ``PUT /v1/packages/{id}`` for small ones, resumable chunks
   (``PUT ...?offset=&length=&sha256=``) above ``chunk_threshold_bytes``, continuing from
   the registry's offset after a dropped link or a restart;
2. ask ``GET /v1/packages/{id}`` for acknowledged packages not in a final state (every
   ``status_poll_s``, oldest first, ``status_batch`` a round) and report each change
   through ``on_status(package_id, state, payload)``.

What an answer means:

==========================  ============================================================
201 / 200 + receipt         ``acknowledged`` (a retry gets the same receipt: idempotent)
409 package_id_conflict,    ``refused``: another body under this id; never sent blindly
409 upload_mismatch
other 4xx                   ``refused`` with the registry's code (a technician's job),
                            except those that are about the station or the moment, not
                            the package (401 signature/clock, 403 station_suspended, 408,
                            400 digest errors in transit): retried with back-off
503 / 429                   the registry is busy: wait ``Retry-After``, no back-off growth
no answer, 5xx              retried with exponential back-off and full jitter:
                            ``random(0, min(cap, base * 2**attempts))``
==========================  ============================================================

Back-off is kept twice, both persisted: per package (``next_attempt_at``, so a package
that keeps failing waits longer and longer without blocking the others) and for the link
(``outbox_link``: consecutive failures across packages, so a registry that is away gets
one probe per back-off period, not one per package, also right after a restart).

The thread never holds a write transaction during network I/O: every outbox call is its
own short transaction.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from station.outbox import (
    ACKNOWLEDGED,
    FINAL_STATES,
    REFUSED,
    REGISTRY_STATES,
    LinkState,
    Outbox,
    OutboxEntry,
    OutboxError,
    OutboxFileError,
)

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, str, Mapping[str, Any]], None]
"""``on_status(package_id, state, payload)``: ``state`` is ``acknowledged`` (payload: the
receipt), ``refused`` (payload: ``{"error", "detail", "status"}``) or a registry state
(payload: the registry's status JSON, with ``reject_code`` and ``recapture`` when
rejected)."""

# 4xx answers that say nothing about the package itself: the station's clock or
# signature, a suspension, a body damaged in transit. Retried with back-off.
_TRANSIENT_4XX_CODES = frozenset(
    {
        "station_suspended",
        "content_digest_mismatch",
        "digest_mismatch",
        "bad_content_digest",
        "busy",
    }
)


class UploaderSettings(BaseModel):
    """How the station talks to the registry (``STATION_UPLOADER__REGISTRY_URL=...``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry_url: str = "http://127.0.0.1:8000"
    chunk_threshold_bytes: int = Field(1024 * 1024, ge=1)
    """Packages larger than this go up in resumable chunks."""
    chunk_bytes: int = Field(256 * 1024, ge=1024)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_cap_s: float = Field(300.0, gt=0)
    retry_after_cap_s: float = Field(3600.0, gt=0)
    """A ``Retry-After`` longer than this is taken as this (a misconfigured proxy)."""
    status_poll_s: float = Field(60.0, gt=0)
    status_batch: int = Field(50, ge=1)
    upload_batch: int = Field(50, ge=1)
    """Packages sent per round before the thread looks at statuses and stop requests."""
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)
    write_timeout_s: float = Field(60.0, gt=0)
    idle_wait_s: float = Field(30.0, gt=0)
    """Longest sleep between rounds when nothing is due (notify() wakes it earlier)."""
    retire_final: bool = True
    """Delete a package's file once the registry issued or rejected it (the row stays)."""


def full_jitter(rng: random.Random, base: float, cap: float, attempts: int) -> float:
    """AWS's "full jitter": uniform in [0, min(cap, base * 2**attempts)]."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(max(attempts, 0), 62)))


def _retry_after(value: str | None, now: datetime, cap: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), cap)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """The registry's ``{"error", "detail"}``, or a stand-in for a body that is not one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"]), str(body.get("detail") or "")
    return f"http_{response.status_code}", response.text[:300]


@dataclass(frozen=True)
class _Verdict:
    kind: Literal["ack", "refused", "retry", "busy", "stopped", "skip"]
    code: str = ""
    detail: str = ""
    wait_s: float | None = None
    receipt: Mapping[str, Any] | None = None
    status: int | None = None


@dataclass
class RoundReport:
    """What one round did (for tests and logs)."""

    sent: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    status_changes: list[tuple[str, str]] = field(default_factory=list)
    link_paused: bool = False


class Uploader:
    """Sends the outbox's due packages and mirrors their registry state (thread-safe)."""

    def __init__(
        self,
        outbox: Outbox,
        settings: UploaderSettings,
        auth: httpx.Auth,
        *,
        on_status: StatusCallback | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.on_status = on_status
        self.clock = clock or outbox.clock
        self._rng = rng or random.SystemRandom()
        self._own_client = client is None
        self._client = client or self._make_client()
        self._auth = auth
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()
        self.last_contact_at: datetime | None = None
        """When the registry last answered (any HTTP answer): for the heartbeat and UI."""

    def _make_client(self) -> httpx.Client:
        s = self.settings
        return httpx.Client(
            base_url=s.registry_url,
            timeout=httpx.Timeout(
                connect=s.connect_timeout_s,
                read=s.read_timeout_s,
                write=s.write_timeout_s,
                pool=s.connect_timeout_s,
            ),
        )

    # --- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (again after :meth:`stop` too)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the uploader is running already")
        if self._own_client and self._client.is_closed:
            self._client = self._make_client()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the request in flight (a chunked upload stops between chunks, its
        progress kept); close the HTTP client if the uploader made it. A request that
        outlasts ``timeout`` (a very slow link) is left to finish on its own: the thread
        is a daemon, and whatever it records afterwards is as valid as before."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the uploader's request in flight outlasted %.0f s of stop()", timeout)
                return
        if self._own_client:
            self._client.close()

    def notify(self, *, link_up: bool = False) -> None:
        """Something changed: a package was added (look now, within the link's back-off),
        or the network came back (``link_up``: end the back-off and try at once)."""
        if link_up:
            link = self.outbox.link_state()
            if link.retry_at is not None:
                self.outbox.set_link_state(LinkState(link.failures, None, link.last_error))
            self.outbox.make_due()
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            busy = False
            try:
                report = self.run_once()
                busy = bool(report.sent or report.status_changes)
                wait = self._sleep_s()
            except Exception:  # the thread must survive anything a round meets
                log.exception("uploader round failed; trying again after a pause")
                wait = self.settings.idle_wait_s
            if self._stopping.is_set():
                break
            # A round that did nothing although something looked due (a status check the
            # registry did not answer) must not spin: a short floor.
            self._wake.wait(wait if busy else max(wait, 0.2))
            self._wake.clear()

    def _sleep_s(self) -> float:
        """Until the next thing is due: a package or a status check, not before the link's
        back-off ends."""
        moments: list[datetime] = []
        due = self.outbox.next_due()
        if due is not None:
            moments.append(due)
        check = self.outbox.next_status_check()
        if check is not None:
            moments.append(check + timedelta(seconds=self.settings.status_poll_s))
        if not moments:
            return self.settings.idle_wait_s
        earliest = min(moments)
        retry_at = self.outbox.link_state().retry_at
        if retry_at is not None and retry_at > earliest:
            earliest = retry_at
        wait = (earliest - self.clock()).total_seconds()
        return min(max(wait, 0.0), self.settings.idle_wait_s)

    # --- one round -------------------------------------------------------------------------

    def run_once(self) -> RoundReport:
        """Send what is due and check statuses that are due; returns what it did."""
        with self._round_lock:
            report = RoundReport()
            if self._link_open():
                self._send_due(report)
            if self._link_open() and not self._stopping.is_set():
                self._poll_statuses(report)
            report.link_paused = not self._link_open()
            return report

    def _link_open(self) -> bool:
        retry_at = self.outbox.link_state().retry_at
        return retry_at is None or retry_at <= self.clock()

    def _send_due(self, report: RoundReport) -> None:
        for entry in self.outbox.pending(limit=self.settings.upload_batch, now=self.clock()):
            if self._stopping.is_set():
                return
            verdict = self._send(entry)
            report.sent.append(entry.package_id)
            if not self._settle(entry, verdict, report):
                return  # the link is backing off: no more this round

    def _settle(self, entry: OutboxEntry, verdict: _Verdict, report: RoundReport) -> bool:
        """Record what an attempt came to; False when the link must back off."""
        pid = entry.package_id
        now = self.clock()
        if verdict.kind in ("stopped", "skip"):
            return verdict.kind == "skip"
        if verdict.kind == "ack":
            assert verdict.receipt is not None
            receipt = verdict.receipt
            state = receipt.get("state")
            changed = self.outbox.mark_acknowledged(
                pid,
                str(receipt["receipt_number"]),
                state if isinstance(state, str) and state in REGISTRY_STATES else None,
            )
            self._link_ok()
            report.acknowledged.append(pid)
            log.info("package %s acknowledged, receipt %s", pid, receipt["receipt_number"])
            if changed:
                self._callback(pid, ACKNOWLEDGED, receipt)
            return True
        if verdict.kind == "refused":
            self.outbox.mark_refused(pid, verdict.code, verdict.detail)
            self._link_ok()
            report.refused.append(pid)
            log.error(
                "package %s refused by the registry (%s %s): %s",
                pid,
                verdict.status,
                verdict.code,
                verdict.detail,
            )
            self._callback(
                pid,
                REFUSED,
                {"error": verdict.code, "detail": verdict.detail, "status": verdict.status},
            )
            return True
        # retry or busy: the package and the link wait
        link = self.outbox.link_state()
        error = f"{verdict.code}: {verdict.detail}" if verdict.detail else verdict.code
        if verdict.kind == "busy":
            package_wait = link_wait = verdict.wait_s or 0.0
            failures = link.failures
            count = False
        else:
            s = self.settings
            package_wait = full_jitter(self._rng, s.backoff_base_s, s.backoff_cap_s, entry.attempts)
            link_wait = full_jitter(self._rng, s.backoff_base_s, s.backoff_cap_s, link.failures)
            failures = link.failures + 1
            count = True
        self.outbox.mark_retry(pid, error, now + timedelta(seconds=package_wait), count=count)
        self.outbox.set_link_state(
            LinkState(failures, now + timedelta(seconds=link_wait), error[:500])
        )
        report.retried.append(pid)
        log.warning(
            "package %s not sent (%s); package retries in %.1f s, the link in %.1f s",
            pid,
            error,
            package_wait,
            link_wait,
        )
        return False

    def _link_ok(self) -> None:
        self.last_contact_at = self.clock()
        link = self.outbox.link_state()
        if link.failures or link.retry_at or link.last_error:
            self.outbox.set_link_state(LinkState(0, None, None))

    def _callback(self, package_id: str, state: str, payload: Mapping[str, Any]) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status(package_id, state, payload)
        except Exception:
            log.exception("on_status(%s, %s) failed; the uploader goes on", package_id, state)

    # --- sending ---------------------------------------------------------------------------

    def _send(self, entry: OutboxEntry) -> _Verdict:
        try:
            data = self.outbox.read(entry.package_id)
        except OutboxFileError as exc:
            log.error("package %s cannot be sent: %s", entry.package_id, exc)
            return _Verdict("skip")
        if not self.outbox.mark_sending(entry.package_id):
            return _Verdict("skip")  # acknowledged meanwhile (media receipts)
        try:
            if len(data) > self.settings.chunk_threshold_bytes:
                return self._send_chunked(entry, data)
            response = self._client.put(
                f"/v1/packages/{entry.package_id}",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
                auth=self._auth,
            )
            return self._verdict(response, entry, data)
        except httpx.TransportError as exc:
            return _Verdict("retry", type(exc).__name__, str(exc) or "connection failed")
        except Exception as exc:  # a signer failure (TPM away), a bug: log, retry later
            log.exception("uploading %s failed unexpectedly", entry.package_id)
            return _Verdict("retry", type(exc).__name__, str(exc))

    def _send_chunked(self, entry: OutboxEntry, data: bytes) -> _Verdict:
        url = f"/v1/packages/{entry.package_id}"
        total = len(data)
        offset = entry.upload_offset if 0 <= entry.upload_offset < total else 0
        corrections = 0
        while True:
            if self._stopping.is_set():
                return _Verdict("stopped")
            part = data[offset : offset + self.settings.chunk_bytes]
            response = self._client.put(
                url,
                params={"offset": offset, "length": total, "sha256": entry.sha256},
                content=part,
                headers={"Content-Type": "application/octet-stream"},
                auth=self._auth,
            )
            self.last_contact_at = self.clock()
            code = _error_of(response)[0] if response.status_code >= 400 else ""
            if response.status_code == 202 or code == "offset_mismatch":
                if response.status_code == 202:
                    corrections = 0
                else:
                    corrections += 1
                    if corrections > 3:
                        return _Verdict(
                            "retry", "offset_mismatch", "the registry's offset keeps moving"
                        )
                given = response.headers.get("Upload-Offset")
                new = int(given) if given and given.isdigit() else self._registry_offset(url)
                if not 0 <= new <= total:
                    return _Verdict("retry", "bad_offset", f"the registry said offset {new}")
                if new == total and response.status_code == 202:
                    return _Verdict("retry", "bad_offset", "202 for the whole body, no receipt")
                offset = new
                self.outbox.mark_progress(entry.package_id, offset)
                continue
            return self._verdict(response, entry, data)

    def _registry_offset(self, url: str) -> int:
        """Where the registry's upload stands (0 when it has none): ask it."""
        response = self._client.get(url, auth=self._auth)
        if response.status_code == 200:
            upload = response.json().get("upload")
            if isinstance(upload, dict) and isinstance(upload.get("offset"), int):
                return int(upload["offset"])
        return 0  # no upload in progress (expired, or the package is held: any chunk ends it)

    def _verdict(self, response: httpx.Response, entry: OutboxEntry, data: bytes) -> _Verdict:
        self.last_contact_at = self.clock()
        status = response.status_code
        if status in (200, 201):
            try:
                receipt = response.json()
            except ValueError:
                return _Verdict("retry", "bad_receipt", "the receipt is not JSON", status=status)
            if not isinstance(receipt, dict) or not receipt.get("receipt_number"):
                return _Verdict("retry", "bad_receipt", f"no receipt number in {receipt!r}")
            if receipt.get("package_id") != entry.package_id or (
                receipt.get("sha256") not in (None, entry.sha256)
            ):
                return _Verdict(
                    "refused",
                    "receipt_mismatch",
                    f"the receipt is for another package or body: {receipt!r}",
                    status=status,
                )
            return _Verdict("ack", receipt=receipt, status=status)
        code, detail = _error_of(response)
        if status in (429, 503):
            wait = _retry_after(
                response.headers.get("Retry-After"), self.clock(), self.settings.retry_after_cap_s
            )
            if wait is None:  # busy without saying how long: an ordinary back-off
                return _Verdict("retry", code, detail, status=status)
            return _Verdict("busy", code, detail, wait_s=wait, status=status)
        if 400 <= status < 500:
            if status in (401, 408, 425) or code in _TRANSIENT_4XX_CODES:
                return _Verdict("retry", code, detail, status=status)
            return _Verdict("refused", code, detail, status=status)
        return _Verdict("retry", code, detail, status=status)

    # --- status mirror ---------------------------------------------------------------------

    def _poll_statuses(self, report: RoundReport) -> None:
        older_than = self.clock() - timedelta(seconds=self.settings.status_poll_s)
        for entry in self.outbox.status_due(older_than, limit=self.settings.status_batch):
            if self._stopping.is_set():
                return
            pid = entry.package_id
            try:
                response = self._client.get(f"/v1/packages/{pid}", auth=self._auth)
            except httpx.TransportError as exc:
                log.warning("status of %s: %s; asking again later", pid, exc)
                self.outbox.mark_checked(pid)
                return
            self.last_contact_at = self.clock()
            if response.status_code == 404:
                self._lost(entry, "the registry does not hold it (404)")
                continue
            if response.status_code != 200:
                code, detail = _error_of(response)
                self.outbox.mark_checked(pid, f"status {response.status_code} {code}: {detail}")
                if response.status_code >= 500 or response.status_code in (429, 503):
                    return
                continue
            body = response.json()
            state = body.get("state") if isinstance(body, dict) else None
            if state not in REGISTRY_STATES:
                if isinstance(body, dict) and "upload" in body:
                    self._lost(entry, "the registry has only an unfinished upload of it")
                else:
                    self.outbox.mark_checked(pid, f"status answer without a known state: {body}")
                continue
            recapture = body.get("recapture")
            changed = self.outbox.mark_status(
                pid,
                str(state),
                reject_code=body.get("reject_code"),
                reject_text=body.get("reject_text"),
                recapture=recapture if isinstance(recapture, list) else None,
            )
            if changed:
                report.status_changes.append((pid, str(state)))
                log.info("package %s is %s at the registry", pid, state)
                self._callback(pid, str(state), body)
            if state in FINAL_STATES and self.settings.retire_final:
                self.outbox.retire(pid)

    def _lost(self, entry: OutboxEntry, why: str) -> None:
        """An acknowledged package the registry says it does not hold (a registry restored
        from an older backup): send it again, which the registry asks for."""
        try:
            self.outbox.requeue(entry.package_id, f"acknowledged as {entry.receipt_number}, {why}")
        except OutboxError as exc:
            log.error("package %s: %s, and it cannot be sent again: %s", entry.package_id, why, exc)
            self.outbox.mark_checked(entry.package_id, f"{why}; {exc}")
        else:
            self.notify()


__all__ = ["RoundReport", "StatusCallback", "Uploader", "UploaderSettings", "full_jitter"]
