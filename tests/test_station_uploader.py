"""The uploader against a real registry process (``python -m central serve``, SQLite):
whole and chunked uploads, idempotent re-sends, the registry away and back, a connection
cut mid-body and mid-answer (a TCP proxy in this file), 503 + Retry-After (a tiny HTTP
server in this file), a forged package refused with its code, and the status mirror with
the registry's in-process worker (issued, rejected, recapture reasons).

Back-off tests run on an injected clock: they check the delays the uploader *chose* and
persisted, and that it sends nothing before they are over, without sleeping for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import BuiltPackage, build_package
from enrollment.request_signing import StationRequestAuth
from station.outbox import OUTBOX_SCHEMA, Outbox
from station.store.database import StationDatabase
from station.uploader import Uploader, UploaderSettings, _retry_after, full_jitter
from tests import processkit, registrykit
from tests.registrykit import ADMIN

STATION = "HN-BD-001"
OTHER_STATION = "HN-BD-002"
FINGERS = (1, 2, 6, 7)  # four fingers: packages of ~190 KB, dedup in ~2 s
CHUNK = 32 * 1024
REGISTRY_ENV = {
    "REGISTRY_QUALITY__FINGER_SCORER": "station-model",
    "REGISTRY_QUALITY__MIN_FINGERS": str(len(FINGERS)),
    "REGISTRY_ABIS__SEARCH_POSITIONS": "[2, 7]",
    "REGISTRY_INGEST__MAX_CHUNK_BYTES": str(CHUNK),
    "REGISTRY_WORKER__IDLE_POLL_SECONDS": "0.1",
}


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Registry:
    """A registry process with two stations of one office enrolled."""

    url: str
    process: processkit.RegistryProcess
    signer: SoftwareKeySigner
    other: SoftwareKeySigner
    recipient: ec.EllipticCurvePublicKey
    admin: dict[str, str]

    def auth(self) -> StationRequestAuth:
        return StationRequestAuth(self.signer, STATION)

    def restart(self) -> None:
        self.process.kill()
        self.start()

    def start(self) -> None:
        self.process.start()
        self.process.wait_http(f"{self.url}/readyz")

    def held(self, package_id: str) -> dict[str, Any] | None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            r = client.get(f"/v1/registry/packages/{package_id}", headers=self.admin)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return dict(r.json())

    def build(
        self,
        person: int = 1,
        *,
        signer: SoftwareKeySigner | None = None,
        station_id: str = STATION,
        blank: tuple[int, ...] = (),
        date_of_birth: str | None = None,
    ) -> BuiltPackage:
        """A new package of ``person`` (cached images; a new id and signature each)."""
        record, tx = registrykit.citizen(
            person, 0, station_id=station_id, fingers=FINGERS, blank=blank
        )
        if date_of_birth is not None:
            d = record.demographics.model_copy(update={"date_of_birth": date_of_birth})
            record = record.model_copy(update={"demographics": d})
        return build_package(record, tx, signer=signer or self.signer, recipient=self.recipient)


def start_registry(
    tmp: Path, procs: processkit.ProcessSet, extra: Mapping[str, str] | None = None
) -> Registry:
    tmp.mkdir(parents=True, exist_ok=True)
    env = processkit.registry_env(
        tmp, f"sqlite:///{tmp / 'registry.db'}", ADMIN, {**REGISTRY_ENV, **(extra or {})}
    )
    port = processkit.free_port()
    url = f"http://127.0.0.1:{port}"
    process = procs.add(
        processkit.RegistryProcess("serve", ["serve", "--port", str(port)], env, tmp / "serve.log")
    )
    process.start()
    process.wait_http(f"{url}/readyz")
    with httpx.Client(base_url=url, timeout=60) as client:
        admin = registrykit.login(client, *ADMIN)
        signer, office = registrykit.onboard(client, admin, STATION)
        other, _ = registrykit.onboard(client, admin, OTHER_STATION, office_id=office)
        trust = client.get("/v1/station/trust", auth=StationRequestAuth(signer, STATION))
        assert trust.status_code == 200, trust.text
    recipient = serialization.load_pem_public_key(trust.json()["package_public_key"].encode())
    assert isinstance(recipient, ec.EllipticCurvePublicKey)
    return Registry(url, process, signer, other, recipient, admin)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry for the module, pipeline off (packages stay ``received``)."""
    with processkit.ProcessSet() as procs:
        yield start_registry(tmp_path_factory.mktemp("registry"), procs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[Outbox]:
    """An outbox on the test's clock (moved by hand)."""
    db = StationDatabase(tmp_path / "station.db")
    db.migrate(OUTBOX_SCHEMA)
    try:
        yield Outbox(db, tmp_path / "outbox", clock=clock)
    finally:
        db.close()


@pytest.fixture
def live_outbox(tmp_path: Path) -> Iterator[Outbox]:
    """An outbox on the real clock, for the uploader's own thread."""
    db = StationDatabase(tmp_path / "live.db")
    db.migrate(OUTBOX_SCHEMA)
    try:
        yield Outbox(db, tmp_path / "live-outbox")
    finally:
        db.close()


class Requests:
    """An httpx event hook that notes every request the uploader makes."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.seen.append(request)

    def offsets(self) -> list[int | None]:
        out: list[int | None] = []
        for r in self.seen:
            if r.method == "PUT":
                given = r.url.params.get("offset")
                out.append(int(given) if given is not None else None)
        return out


Events = list[tuple[str, str, dict[str, Any]]]


def make_uploader(
    outbox: Outbox,
    url: str,
    auth: httpx.Auth,
    *,
    clock: Callable[[], datetime] | None = None,
    requests: Requests | None = None,
    events: Events | None = None,
    **settings: Any,
) -> tuple[Uploader, httpx.Client]:
    hooks = {"request": [requests]} if requests is not None else {}
    client = httpx.Client(base_url=url, timeout=30, event_hooks=hooks)  # type: ignore[arg-type]

    def on_status(package_id: str, state: str, payload: Mapping[str, Any]) -> None:
        if events is not None:
            events.append((package_id, state, dict(payload)))

    options: dict[str, Any] = {
        "registry_url": url,
        "chunk_threshold_bytes": 64 * 1024,
        "chunk_bytes": CHUNK,
        "backoff_base_s": 2.0,
        "backoff_cap_s": 300.0,
    }
    options.update(settings)
    uploader = Uploader(
        outbox,
        UploaderSettings(**options),
        auth,
        on_status=on_status,
        client=client,
        clock=clock,
        rng=random.Random(7),
    )
    return uploader, client


# --- whole, chunked, idempotent -------------------------------------------------------------


def test_whole_and_chunked_uploads_are_acknowledged_once(
    registry: Registry, outbox: Outbox
) -> None:
    small, large = sorted((registry.build(1), registry.build(6)), key=lambda b: len(b.data))
    requests, events = Requests(), Events()
    uploader, client = make_uploader(
        outbox,
        registry.url,
        registry.auth(),
        requests=requests,
        events=events,
        chunk_threshold_bytes=len(small.data),  # small goes whole, large in chunks
    )
    with client:
        outbox.add(small, "case-small")
        outbox.add(large, "case-large")
        report = uploader.run_once()
        assert sorted(report.acknowledged) == sorted([small.package_id, large.package_id])
        chunks = -(-len(large.data) // CHUNK)
        assert requests.offsets().count(None) == 1  # the whole upload
        assert [o for o in requests.offsets() if o is not None] == [
            i * CHUNK for i in range(chunks)
        ]
        for built in (small, large):
            entry = outbox.get(built.package_id)
            assert entry is not None
            assert entry.state == "acknowledged"
            held = registry.held(built.package_id)
            assert held is not None
            assert held["receipt_number"] == entry.receipt_number
            assert held["state"] == "received"
        assert [(pid, state) for pid, state, _ in events] == [
            (pid, "acknowledged") for pid in report.acknowledged
        ]

        # A power cut after the registry's 201 and before our commit: the row is still
        # pending. Sending again gets 200 and the same receipt, not a second package.
        first = outbox.get(large.package_id)
        assert first is not None
        with outbox.db.write() as conn:
            conn.execute(
                "UPDATE outbox_package SET state = 'sending', receipt_number = NULL, "
                "upload_offset = 0 WHERE package_id = ?",
                (large.package_id,),
            )
        requests.seen.clear()
        assert uploader.run_once().acknowledged == [large.package_id]
        again = outbox.get(large.package_id)
        assert again is not None
        assert again.receipt_number == first.receipt_number
        assert requests.offsets() == [0]  # the registry holds it: the first chunk ends it


def test_a_forged_package_is_refused_with_its_code(registry: Registry, outbox: Outbox) -> None:
    # A genuine package of the other station, sent as this station's.
    forged = registry.build(10, signer=registry.other, station_id=OTHER_STATION)
    events: Events = []
    uploader, client = make_uploader(outbox, registry.url, registry.auth(), events=events)
    with client:
        outbox.add(forged, "case-forged")
        report = uploader.run_once()
        assert report.refused == [forged.package_id]
        entry = outbox.get(forged.package_id)
        assert entry is not None
        assert (entry.state, entry.refused_code) == ("refused", "signer_not_station")
        assert OTHER_STATION in (entry.refused_detail or "")
        assert events[0][:2] == (forged.package_id, "refused")
        assert outbox.pending() == []
        assert uploader.run_once().sent == []  # never sent again by itself
        assert registry.held(forged.package_id) is None
        assert outbox.link_state().failures == 0  # the registry answered: the link is fine


# --- back-off -------------------------------------------------------------------------------


def test_backoff_is_full_jitter_persisted_and_survives_a_restart(
    registry: Registry, outbox: Outbox, clock: Clock
) -> None:
    built = registry.build(1)
    outbox.add(built, "case-1")
    closed = f"http://127.0.0.1:{processkit.free_port()}"  # nothing listens: refused
    requests = Requests()
    uploader, client = make_uploader(
        outbox, closed, registry.auth(), clock=clock, requests=requests, backoff_base_s=2.0
    )
    with client:
        limits = []
        for attempt in range(8):
            before = len(requests.seen)
            report = uploader.run_once()
            assert len(requests.seen) == before + 1, "one probe per back-off period"
            assert report.retried == [built.package_id]
            assert report.link_paused
            entry = outbox.get(built.package_id)
            assert entry is not None
            assert entry.attempts == attempt + 1
            assert entry.state == "queued"
            assert "ConnectError" in (entry.last_error or "")
            assert entry.next_attempt_at is not None
            delay = (entry.next_attempt_at - clock.now).total_seconds()
            limit = min(300.0, 2.0 * 2**attempt)
            assert 0.0 <= delay <= limit
            limits.append(delay)
            link = outbox.link_state()
            assert link.failures == attempt + 1
            assert link.retry_at is not None
            # Nothing goes out before both back-offs are over, however often it looks.
            pause = max(delay, (link.retry_at - clock.now).total_seconds())
            clock.advance(pause * 0.99)
            assert uploader.run_once().sent == []
            assert len(requests.seen) == before + 1
            clock.advance(pause * 0.01 + 0.001)
        # Full jitter: the delays spread over the range, not pinned to its top.
        assert any(d < 0.5 * min(300.0, 2.0 * 2**i) for i, d in enumerate(limits))

        # One more failure, then a restart (a new uploader on the same outbox) while the
        # registry is still away, and a new enrollment arrives: due at once, but the link's
        # back-off survived the restart, so nothing goes out until it ends.
        uploader.run_once()
    newer = registry.build(6)
    outbox.add(newer, "case-2")
    assert [e.package_id for e in outbox.pending()] == [newer.package_id]
    restarted, client2 = make_uploader(
        outbox, closed, registry.auth(), clock=clock, requests=requests
    )
    with client2:
        before = len(requests.seen)
        assert restarted.run_once().sent == []
        assert len(requests.seen) == before
        restarted.notify(link_up=True)  # the network came back: try at once, oldest first
        assert restarted.run_once().sent == [built.package_id]
        assert len(requests.seen) == before + 1


def test_full_jitter_and_retry_after_parsing() -> None:
    rng = random.Random(1)
    draws = [full_jitter(rng, 2.0, 300.0, 3) for _ in range(2000)]
    assert 0.0 <= min(draws) < 0.5
    assert 15.5 < max(draws) <= 16.0
    assert all(full_jitter(rng, 2.0, 300.0, 40) <= 300.0 for _ in range(100))
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert _retry_after("7", now, 3600) == 7.0
    assert _retry_after("Mon, 02 Mar 2026 08:01:30 GMT", now, 3600) == 90.0
    assert _retry_after("99999", now, 3600) == 3600.0
    assert _retry_after("soon", now, 3600) is None
    assert _retry_after(None, now, 3600) is None


def test_registry_down_then_up_is_drained(registry: Registry, live_outbox: Outbox) -> None:
    """The real thing on a real clock: the registry process is away, the uploader's
    thread backs off (short settings), the registry comes back, everything arrives once."""
    built = [registry.build(p) for p in (1, 6, 10)]
    requests = Requests()
    registry.process.kill()
    try:
        uploader, client = make_uploader(
            live_outbox,
            registry.url,
            registry.auth(),
            requests=requests,
            backoff_base_s=0.05,
            backoff_cap_s=0.4,
        )
        for i, b in enumerate(built):
            live_outbox.add(b, f"case-{i}")
        uploader.start()
        try:
            time.sleep(1.5)
            assert requests.seen, "the uploader did not try"
            # Backing off: a handful of probes, not a tight loop (0.05 s doubling to 0.4 s).
            assert len(requests.seen) < 40, len(requests.seen)
            assert {e.state for e in live_outbox.list()} <= {"queued", "sending"}
            assert live_outbox.link_state().failures >= 2
            assert any("ConnectError" in (e.last_error or "") for e in live_outbox.list())
            registry.start()
            uploader.notify(link_up=True)
            deadline = time.monotonic() + 60
            while live_outbox.counts().pending and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            uploader.stop()
            client.close()
        assert not uploader.running
        assert {e.state for e in live_outbox.list()} == {"acknowledged"}
        for b in built:
            held = registry.held(b.package_id)
            assert held is not None
            assert held["receipt_number"] == live_outbox.get(b.package_id).receipt_number  # type: ignore[union-attr]
        assert live_outbox.link_state().failures == 0
    finally:
        if not registry.process.alive():
            registry.start()


# --- a link that drops mid-body and mid-answer ----------------------------------------------

_REQUEST_LINE = re.compile(rb"(PUT|GET) /v1/packages/[0-9a-f-]+(\?[^ ]*)? HTTP/1\.1\r\n")


class CuttingProxy:
    """A TCP proxy to the registry that cuts chosen requests: ``cut_body[offset]`` closes
    the connection after forwarding that many body bytes of the chunk at ``offset``;
    ``drop_answer`` offsets are forwarded whole, and the connection is closed when the
    registry's answer comes back (the registry did the work, the station never hears)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_body: dict[int, int] = {}
        self.drop_answer: set[int] = set()
        self.log: list[tuple[str, int | None]] = []
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            state: dict[str, Any] = {"drop": False}
            self._spawn(self._upward, client, upstream, state)
            self._spawn(self._downward, upstream, client, state)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _upward(
        self, client: socket.socket, upstream: socket.socket, state: dict[str, Any]
    ) -> None:
        seen = bytearray()  # everything the station sent on this connection
        searched = 0  # request lines ending before this were handled
        limit: int | None = None
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(client, upstream)
                return
            start = len(seen)
            seen += data
            for match in _REQUEST_LINE.finditer(seen, max(searched, start - 300)):
                searched = match.end()
                offset = re.search(rb"offset=(\d+)", match.group(2) or b"")
                at = int(offset.group(1)) if offset else None
                self.log.append((match.group(1).decode(), at))
                if at in self.cut_body:
                    head_end = seen.find(b"\r\n\r\n", match.end())
                    body_at = head_end + 4 if head_end >= 0 else match.end() + 2000
                    limit = body_at + self.cut_body.pop(at)
                if at in self.drop_answer:
                    self.drop_answer.discard(at)
                    state["drop"] = True
            if limit is not None and len(seen) >= limit:
                upstream.sendall(data[: max(0, limit - start)])
                self.cuts += 1
                self._close(client, upstream)
                return
            try:
                upstream.sendall(data)
            except OSError:
                self._close(client, upstream)
                return

    def _downward(
        self, upstream: socket.socket, client: socket.socket, state: dict[str, Any]
    ) -> None:
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data or state["drop"]:
                if data:
                    self.cuts += 1
                self._close(client, upstream)
                return
            try:
                client.sendall(data)
            except OSError:
                self._close(client, upstream)
                return

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            socks, self._sockets = self._sockets, []
            threads = list(self._threads)
        self._close(*socks)
        for thread in threads:
            thread.join(5)


def test_a_cut_connection_resumes_from_the_registrys_offset(
    registry: Registry, outbox: Outbox, clock: Clock
) -> None:
    built = registry.build(11)
    chunks = -(-len(built.data) // CHUNK)
    assert chunks >= 6
    port = int(registry.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port)
    proxy.cut_body[2 * CHUNK] = CHUNK // 2  # half of the third chunk, then the line drops
    proxy.drop_answer.add(4 * CHUNK)  # the fifth chunk arrives, its 202 is lost
    try:
        uploader, client = make_uploader(
            outbox, f"http://127.0.0.1:{proxy.port}", registry.auth(), clock=clock
        )
        with client:
            outbox.add(built, "case-1")
            for _ in range(5):
                report = uploader.run_once()
                if report.acknowledged:
                    break
                entry = outbox.get(built.package_id)
                assert entry is not None
                assert entry.next_attempt_at is not None
                clock.now = max(entry.next_attempt_at, outbox.link_state().retry_at or clock.now)
        assert proxy.cuts == 2
        entry = outbox.get(built.package_id)
        assert entry is not None
        assert entry.state == "acknowledged"
        assert entry.attempts == 2  # two failed attempts, the third finished it
        offsets = [at for method, at in proxy.log if method == "PUT"]
        c = CHUNK
        assert offsets == [
            0,
            c,
            2 * c,  # cut mid-body: the registry kept 0..2c
            2 * c,
            3 * c,
            4 * c,  # resumed where both sides agree; the answer to 4c lost
            4 * c,  # the station's hint; the registry says 409 offset_mismatch at 5c
            *range(5 * c, chunks * c, c),  # and it goes on from there, not from zero
        ]
        held = registry.held(built.package_id)
        assert held is not None
        assert held["receipt_number"] == entry.receipt_number
    finally:
        proxy.close()


# --- 503 with Retry-After -------------------------------------------------------------------


class BusyRegistry:
    """A stand-in registry that answers ``answers`` in turn (status, headers, body)."""

    def __init__(self, answers: list[tuple[int, dict[str, str], dict[str, Any]]]) -> None:
        self.answers = answers
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.requests.append(self.path)
                status, headers, body = outer.answers.pop(0)
                payload = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_busy_registry_retry_after_is_honoured(
    registry: Registry, outbox: Outbox, clock: Clock
) -> None:
    built = registry.build(1)
    receipt = {
        "package_id": built.package_id,
        "receipt_number": "R-2026-000001",
        "station_id": STATION,
        "received_at": "2026-03-02T08:00:00Z",
        "sha256": hashlib.sha256(built.data).hexdigest(),
        "size": len(built.data),
        "state": "received",
    }
    busy = {"error": "busy", "detail": "retry after the delay"}
    server = BusyRegistry(
        [
            (503, {"Retry-After": "7"}, busy),
            (503, {}, busy),  # no Retry-After: an ordinary back-off
            (201, {}, receipt),
        ]
    )
    try:
        uploader, client = make_uploader(
            outbox, server.url, registry.auth(), clock=clock, chunk_threshold_bytes=10**7
        )
        with client:
            outbox.add(built, "case-1")
            start = clock.now
            uploader.run_once()
            entry = outbox.get(built.package_id)
            assert entry is not None
            assert entry.next_attempt_at == start + timedelta(seconds=7)
            assert entry.attempts == 0  # being busy is not the package's failure
            assert outbox.link_state().retry_at == start + timedelta(seconds=7)
            assert outbox.link_state().failures == 0
            clock.advance(6.9)
            uploader.run_once()
            assert len(server.requests) == 1  # not before the registry said
            clock.advance(0.1)
            uploader.run_once()
            assert len(server.requests) == 2
            entry = outbox.get(built.package_id)
            assert entry is not None
            assert entry.attempts == 1
            assert outbox.link_state().failures == 1
            assert entry.next_attempt_at is not None
            clock.now = max(entry.next_attempt_at, outbox.link_state().retry_at or clock.now)
            assert uploader.run_once().acknowledged == [built.package_id]
            entry = outbox.get(built.package_id)
            assert entry is not None
            assert entry.receipt_number == "R-2026-000001"
    finally:
        server.close()


def test_the_thread_survives_a_failing_callback_and_restarts(
    registry: Registry, live_outbox: Outbox
) -> None:
    """on_status raising is logged, never fatal; stop() then start() works again."""
    built = registry.build(1)
    receipt = {
        "package_id": built.package_id,
        "receipt_number": "R-2026-000002",
        "sha256": hashlib.sha256(built.data).hexdigest(),
        "state": "received",
    }
    server = BusyRegistry([(201, {}, receipt)])
    calls: list[str] = []

    def broken(package_id: str, state: str, payload: Mapping[str, Any]) -> None:
        calls.append(state)
        raise RuntimeError("a bug in the workflow's handler")

    settings = UploaderSettings(registry_url=server.url, idle_wait_s=0.2)
    uploader = Uploader(live_outbox, settings, registry.auth(), on_status=broken)
    try:
        uploader.start()
        live_outbox.add(built, "case-1")
        uploader.notify()
        deadline = time.monotonic() + 20
        while live_outbox.counts().pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == ["acknowledged"]
        assert uploader.running
        uploader.stop()
        assert not uploader.running
        uploader.start()  # its own HTTP client, made again
        assert uploader.running
    finally:
        uploader.stop()
        server.close()
    entry = live_outbox.get(built.package_id)
    assert entry is not None
    assert entry.receipt_number == "R-2026-000002"


# --- the status mirror ----------------------------------------------------------------------


def test_status_mirror_sees_issued_and_rejected(tmp_path: Path, live_outbox: Outbox) -> None:
    """The registry's in-process worker runs the pipeline; the uploader mirrors each
    package to its final state, reports the changes and retires the files."""
    with processkit.ProcessSet() as procs:
        registry = start_registry(
            tmp_path / "registry", procs, {"REGISTRY_WORKER__IN_PROCESS": "true"}
        )
        good = registry.build(1)
        child = registry.build(6, date_of_birth="2016-05-01")
        smudged = registry.build(10, blank=(2,))
        for i, b in enumerate((good, child, smudged)):
            live_outbox.add(b, f"case-{i}")
        events: Events = []
        uploader, client = make_uploader(
            live_outbox, registry.url, registry.auth(), events=events, status_poll_s=0.2
        )
        uploader.start()
        try:
            deadline = time.monotonic() + 180
            final = {"issued", "rejected"}
            while time.monotonic() < deadline:
                if {e.state for e in live_outbox.list()} <= final:
                    break
                time.sleep(0.2)
        finally:
            uploader.stop()
            client.close()
    states = {e.package_id: e for e in live_outbox.list()}
    assert states[good.package_id].state == "issued"
    assert states[child.package_id].state == "rejected"
    assert states[child.package_id].reject_code == "ineligible-age"
    assert states[smudged.package_id].state == "rejected"
    assert states[smudged.package_id].reject_code == "recapture-needed"
    recapture = states[smudged.package_id].recapture or []
    assert [(r["what"], r["position"]) for r in recapture] == [("finger", 2)]
    for entry in states.values():
        assert entry.retired_at is not None
        assert not live_outbox.path_of(entry.package_id).exists()
    seen = {(pid, state) for pid, state, _ in events}
    assert (good.package_id, "acknowledged") in seen
    assert (good.package_id, "issued") in seen
    assert (child.package_id, "rejected") in seen
    last = [payload for pid, state, payload in events if pid == smudged.package_id][-1]
    assert last["reject_code"] == "recapture-needed"
    assert last["recapture"][0]["position"] == 2
