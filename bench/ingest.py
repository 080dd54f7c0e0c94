"""Registry ingest: sustained packages/s and acknowledgement latency over real HTTP.

    .venv/bin/python bench/ingest.py [--backends sqlite,postgresql] [--stations 1,8,32,128]
        [--sizes small,typical,large] [--packages 400] [--surge 1000] [--api-workers 2]
        [--pipeline-worker] [--plot docs/img/ingest-latency.png] [--quick]

For each backend it starts a real registry process (``python -m central serve``; on
PostgreSQL ``--workers N`` API processes and a private PostgreSQL server with fsync and
synchronous commit ON, as a production server runs), with the pipeline worker OUT of
process (``REGISTRY_WORKER__IN_PROCESS=false``) so that only ingest is measured; with
``--pipeline-worker`` one ``python -m central worker`` runs beside it, as in production.

Simulated stations are onboarded through the API (office, station, one-time token,
``/v1/enroll`` with a CSR each) and upload concurrently (asyncio + httpx, one connection
per station, RFC 9421-signed PUTs, one package at a time as a station's uploader does).
Packages are realistic (synthetic rolled prints and a synthetic face, tests/registrykit),
re-signed by the uploading station and re-encrypted to the registry under a fresh id for
every upload, all built before the timed phase so that the client does not limit it.

Measured per point: acknowledged packages/s (over the whole point and over its middle 80 %
of receipts), acknowledgement latency p50/p95/p99/max (request start to receipt, of the
attempt that got the receipt), 503 refusals retried (Retry-After honoured, with jitter),
and CPU in cores of the API processes, the database server and this client. Baselines in
the same run (the machine is shared and noisy, so read ratios): the same number of
``GET /healthz`` at the same concurrency (the HTTP floor), and the ingest core
(``central.ingest.Ingest.accept``) called in this process without HTTP. The surge is the
evening sync: ``--surge`` stations each upload at once; admission control answers 503 to
the excess and the stations come back after Retry-After. Nothing may be lost: at the end
every package has a receipt and the database holds exactly that many packages, first jobs
and ``package.received`` audit entries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import platform
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.auth.users import ensure_admin
from central.config import RegistrySettings
from central.db.engine import make_engine
from central.db.models import AuditEntry, Job, Package
from central.ingest import FIRST_JOB
from central.services import open_registry
from enrollment.ids import new_package_id
from enrollment.keys.software import SoftwareKeySigner
from enrollment.package import ExtraPart, build_package
from enrollment.record import EnrollmentRecord
from enrollment.request_signing import StationRequestAuth, content_digest
from tests import pgkit, registrykit

ADMIN = registrykit.ADMIN
COMMUNE = "00001"  # Phuc Xa ward, Ba Dinh, Ha Noi: any valid pre-2025 code does
PERSONS = (1, 6, 10)  # seeds whose synthetic faces come from different real photos
SIZES: dict[str, tuple[tuple[int, ...], int]] = {
    # name: (fingers captured, bytes of a scanned supporting document as an extra part)
    "small": ((2, 7), 0),  # two index fingers and the face (a mobile team's minimum)
    "typical": (tuple(range(1, 11)), 0),  # ten rolled prints and the face
    "large": (tuple(range(1, 11)), 1_100_000),  # plus a scanned document (JPEG)
}
PG_FAST_FLAGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- processes and their CPU --------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) for every process readable now."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        # utime + stime, plus cutime + cstime: the time of children it reaped (a
        # PostgreSQL backend that exited still counts, in the postmaster's total).
        used = sum(int(v) for v in fields[11:15])
        table[int(entry.name)] = (int(fields[1]), used / tick)
    return table


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and its descendants (uvicorn's API processes,
    PostgreSQL's backends), the exited ones included once their parent has reaped them."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_values(base: Path, database_url: str, **ingest: Any) -> dict[str, Any]:
    """The registry's settings as nested values: given to this process as
    ``RegistrySettings(**values)`` and to the servers as ``REGISTRY_*`` variables."""
    return {
        "database": {"url": database_url, "pool_size": 8, "max_overflow": 8},
        "blobs": {"backend": "local", "path": str(base / "blobs")},
        "keys": {"path": str(base / "keys")},
        "auth": {
            "jwt_secret_file": str(base / "jwt-secret"),
            "argon2_time_cost": 1,
            "argon2_memory_kib": 1024,
            "argon2_parallelism": 1,
        },
        "worker": {"in_process": False},
        "quality": {"finger_scorer": "station-model"},
        "ingest": {"retry_after_seconds": 1, **ingest},
    }


def prepare_registry(values: dict[str, Any]) -> None:
    """Migrate, create the keys and the first administrator once, before the API processes
    start. (``bootstrap_admin`` in several processes at once on PostgreSQL races: two
    insert the admin and the loser's start-up fails, which stops uvicorn.)"""
    registry = open_registry(RegistrySettings(**values))
    try:
        with Session(registry.engine) as session, session.begin():
            ensure_admin(session, registry.access.passwords, *ADMIN, registry.now())
    finally:
        registry.close()


def settings_env(values: dict[str, Any], prefix: str = "REGISTRY_") -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict):
            env.update(settings_env(value, name + "__"))
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class RegistryProcess:
    """``python -m central serve`` (or ``worker``) with the given settings, logs in a file."""

    def __init__(self, values: dict[str, Any], base: Path, command: Sequence[str]) -> None:
        self.port = free_port()
        self.log_path = base / f"{command[0]}-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(settings_env(values))
        env["REGISTRY_PORT"] = str(self.port)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "central", *command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the registry exited: see {self.log_path}\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the registry was not ready in {timeout:.0f} s: {self.log_path}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def cpu(self) -> float:
        return tree_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@contextlib.contextmanager
def durable_postgres() -> Iterator[tuple[str, int]]:
    """A private PostgreSQL server (tests/pgkit.py's cluster) with fsync, synchronous
    commit and full-page writes ON: an acknowledged package must survive a power cut, so
    the test cluster's speed flags would flatter the numbers. Yields (database URL, pid)."""
    reason = pgkit.postgres_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    if PG_FAST_FLAGS not in pgkit._SCRIPT:
        raise RuntimeError("tests/pgkit.py changed how it starts PostgreSQL: update the bench")
    script = pgkit._SCRIPT
    pgkit._SCRIPT = script.replace(PG_FAST_FLAGS, "-c fsync=on -c synchronous_commit=on")
    cluster = pgkit.PgCluster()
    try:
        cluster.start()
    finally:
        pgkit._SCRIPT = script
    try:
        assert cluster._process is not None
        yield pgkit.create_database(cluster.url), cluster._process.pid
    finally:
        cluster.stop()


# --- stations and packages ----------------------------------------------------------------


@dataclass(frozen=True)
class StationKey:
    station_id: str
    signer: SoftwareKeySigner
    auth: StationRequestAuth


@dataclass(frozen=True)
class Upload:
    package_id: str
    data: bytes
    digest: str  # Content-Digest, computed before the timed phase


def _csr(key: ec.EllipticCurvePrivateKey, station_id: str) -> str:
    return registrykit.csr_for(key, station_id)


async def onboard(
    client: httpx.AsyncClient, admin: dict[str, str], ids: Sequence[str], office: int
) -> tuple[list[StationKey], ec.EllipticCurvePublicKey]:
    """Register, token and enroll each station (eight at a time), as technicians do."""
    gate = asyncio.Semaphore(8)
    recipient: list[ec.EllipticCurvePublicKey] = []

    async def one(station_id: str) -> StationKey:
        async with gate:
            r = await client.post(
                "/v1/stations", json={"station_id": station_id, "office_id": office}, headers=admin
            )
            r.raise_for_status()
            r = await client.post(f"/v1/stations/{station_id}/tokens", json={}, headers=admin)
            r.raise_for_status()
            key = ec.generate_private_key(ec.SECP256R1())
            r = await client.post(
                "/v1/enroll", json={"token": r.json()["token"], "csr": _csr(key, station_id)}
            )
            r.raise_for_status()
            body = r.json()
            cert = x509.load_pem_x509_certificate(body["certificate"].encode())
            if not recipient:
                public = serialization.load_pem_public_key(body["package_public_key"].encode())
                assert isinstance(public, ec.EllipticCurvePublicKey)
                recipient.append(public)
            signer = SoftwareKeySigner(key, cert)
            return StationKey(station_id, signer, StationRequestAuth(signer, station_id))

    stations = await asyncio.gather(*(one(s) for s in ids))
    return list(stations), recipient[0]


def document_scan(size: int) -> bytes:
    """A JPEG of about ``size`` bytes standing in for a scanned supporting document."""
    rng = np.random.default_rng(size)
    side = 256
    while True:
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=85)
        if out.tell() >= size:
            return out.getvalue()
        side = int(side * (size / out.tell()) ** 0.5) + 8


class PackageFactory:
    """Realistic packages for any onboarded station, built fresh for every upload."""

    def __init__(self, recipient: ec.EllipticCurvePublicKey, persons: Sequence[int]) -> None:
        self.recipient = recipient
        self.persons = tuple(persons)
        self._records: dict[tuple[int, str, str], tuple[EnrollmentRecord, Any]] = {}
        self._extra: dict[int, tuple[ExtraPart, ...]] = {}

    def _record(self, person: int, station_id: str, size: str) -> tuple[EnrollmentRecord, Any]:
        key = (person, station_id, size)
        if key not in self._records:
            fingers = SIZES[size][0]
            self._records[key] = registrykit.citizen(
                person, 0, station_id=station_id, fingers=fingers
            )
        return self._records[key]

    def _extras(self, size: str) -> tuple[ExtraPart, ...]:
        scan_bytes = SIZES[size][1]
        if not scan_bytes:
            return ()
        if scan_bytes not in self._extra:
            scan = document_scan(scan_bytes)
            self._extra[scan_bytes] = (ExtraPart("document-scan", "image/jpeg", scan),)
        return self._extra[scan_bytes]

    def warm(self, sizes: Sequence[str]) -> None:
        """Render every person's prints and face once (about 1.5 s each)."""
        for person in self.persons:
            for size in sizes:
                self._record(person, "WARM-UP-000", size)

    def build(self, station: StationKey, size: str, n: int) -> list[Upload]:
        out = []
        for i in range(n):
            record, tx = self._record(self.persons[i % len(self.persons)], station.station_id, size)
            built = build_package(
                record,
                tx,
                signer=station.signer,
                recipient=self.recipient,
                package_id=new_package_id(),
                extra_parts=self._extras(size),
            )
            out.append(Upload(built.package_id, built.data, content_digest(built.data)))
        return out


def split_count(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one timed point produced."""

    latencies_ms: list[float] = field(default_factory=list)
    waits_ms: list[float] = field(default_factory=list)  # first attempt to receipt
    ack_times: list[float] = field(default_factory=list)
    receipts: dict[str, str] = field(default_factory=dict)  # package id -> receipt number
    created: int = 0
    refusals: int = 0
    transport_errors: int = 0
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    api_cpu: float = 0.0
    db_cpu: float = 0.0
    client_cpu: float = 0.0


def percentile(samples: Sequence[float], q: float) -> float:
    if not samples:
        return float("nan")
    return float(np.percentile(np.asarray(samples), q))


def window_rate(ack_times: Sequence[float]) -> float:
    """Receipts per second between the 10th and 90th percentile receipt: the sustained
    rate, without the ramp-up and the last stragglers."""
    times = sorted(ack_times)
    if len(times) < 10:
        return float("nan")
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    span = times[hi] - times[lo]
    return (hi - lo) / span if span > 0 else float("nan")


async def upload_station(
    client: httpx.AsyncClient, station: StationKey, uploads: Sequence[Upload], out: Outcome
) -> None:
    """One station's uploader: one package at a time; a 503 is retried after its
    Retry-After (with up to 50 % jitter, so that refused stations do not return in step)."""
    for upload in uploads:
        first = time.perf_counter()
        while True:
            start = time.perf_counter()
            try:
                r = await client.put(
                    f"/v1/packages/{upload.package_id}",
                    content=upload.data,
                    headers={"Content-Digest": upload.digest},
                    auth=station.auth,
                )
            except httpx.TransportError as exc:  # counted, then retried like a refusal
                out.transport_errors += 1
                if out.transport_errors > 1000:
                    raise RuntimeError(f"the registry keeps dropping connections: {exc}") from exc
                await asyncio.sleep(random.uniform(0.5, 1.0))
                continue
            if r.status_code == 503:
                out.refusals += 1
                delay = float(r.headers.get("retry-after", "1"))
                await asyncio.sleep(delay * random.uniform(1.0, 1.5))
                continue
            done = time.perf_counter()
            if r.status_code not in (200, 201):
                out.failures.append(f"{upload.package_id}: {r.status_code} {r.text[:200]}")
                break
            receipt = r.json()
            if receipt["package_id"] != upload.package_id:
                out.failures.append(f"{upload.package_id}: receipt for {receipt['package_id']}")
                break
            out.receipts[upload.package_id] = receipt["receipt_number"]
            out.created += r.status_code == 201
            out.latencies_ms.append((done - start) * 1000)
            out.waits_ms.append((done - first) * 1000)
            out.ack_times.append(done)
            break


async def _ticker(label: str, out: Outcome, total: int) -> None:
    while True:
        await asyncio.sleep(2.0)
        progress(f"{label}: {len(out.receipts)}/{total} acknowledged, {out.refusals} refusals")


def client_for(url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(300.0))


@dataclass
class Meters:
    """The processes whose CPU a point reports."""

    api: RegistryProcess
    db_pid: int | None
    others: list[RegistryProcess] = field(default_factory=list)

    def read(self) -> tuple[float, float, float]:
        db = tree_cpu(self.db_pid) if self.db_pid is not None else 0.0
        return self.api.cpu() + sum(p.cpu() for p in self.others), db, client_cpu()


async def run_uploads(
    label: str,
    url: str,
    work: Sequence[tuple[StationKey, list[Upload]]],
    meters: Meters,
) -> Outcome:
    out = Outcome()
    total = sum(len(u) for _, u in work)
    async with client_for(url, len(work) + 4) as client:
        api0, db0, cl0 = meters.read()
        started = time.perf_counter()
        ticker = asyncio.create_task(_ticker(label, out, total))
        try:
            await asyncio.gather(*(upload_station(client, s, u, out) for s, u in work))
        finally:
            ticker.cancel()
        out.elapsed = time.perf_counter() - started
        api1, db1, cl1 = meters.read()
    out.api_cpu, out.db_cpu, out.client_cpu = api1 - api0, db1 - db0, cl1 - cl0
    return out


async def run_healthz(url: str, concurrency: int, count: int) -> tuple[list[float], float]:
    """The HTTP floor: ``count`` GET /healthz from ``concurrency`` clients; (ms, per s)."""
    latencies: list[float] = []
    async with client_for(url, concurrency + 4) as client:

        async def one_client(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                r = await client.get("/healthz")
                r.raise_for_status()
                latencies.append((time.perf_counter() - start) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in split_count(count, concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, count / elapsed


def run_core(values: dict[str, Any], station: StationKey, uploads: Sequence[Upload]) -> list[float]:
    """The ingest core in this process, one package after another, no HTTP: ms each."""
    registry = open_registry(RegistrySettings(**values))
    try:
        out = []
        for upload in uploads:
            # The HTTP layer hands over the digest the station signed, checked as the body
            # streamed in: computed here before the clock starts.
            sha = hashlib.sha256(upload.data).hexdigest()
            start = time.perf_counter()
            receipt, created = registry.ingest.accept(
                station.station_id, uuid.UUID(upload.package_id), upload.data, sha
            )
            out.append((time.perf_counter() - start) * 1000)
            if not created or receipt.package_id != upload.package_id:
                raise RuntimeError(f"the ingest core did not take {upload.package_id}")
        return out
    finally:
        registry.close()


def held_in_database(url: str) -> tuple[int, int, int]:
    """Packages, first jobs and package.received audit entries the database holds."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            packages = session.scalar(select(func.count()).select_from(Package)) or 0
            jobs = session.scalar(select(func.count()).where(Job.kind == FIRST_JOB)) or 0
            audits = (
                session.scalar(select(func.count()).where(AuditEntry.action == "package.received"))
                or 0
            )
        return packages, jobs, audits
    finally:
        engine.dispose()


# --- the run ------------------------------------------------------------------------------


@dataclass
class Point:
    backend: str
    kind: str  # "stations", "size" or "surge"
    stations: int
    size: str
    size_kb: float
    outcome: Outcome
    healthz_ms: list[float] = field(default_factory=list)
    healthz_rate: float = float("nan")

    @property
    def rate(self) -> float:
        return len(self.outcome.receipts) / self.outcome.elapsed

    def cores(self, seconds: float) -> float:
        return seconds / self.outcome.elapsed


@dataclass
class BackendRun:
    backend: str
    api_workers: int
    points: list[Point]
    core_ms: list[float]
    held: tuple[int, int, int]
    receipts: int


def plan(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(kind, stations, size) of each timed point: the concurrency curve on typical
    packages, then the size curve at ``--size-stations``."""
    points = [("stations", s, "typical") for s in args.stations]
    for size in args.sizes:
        if size != "typical" or args.size_stations not in args.stations:
            points.append(("size", args.size_stations, size))
    return points


def point_count(args: argparse.Namespace, stations: int, size: str) -> int:
    count = args.packages if stations > 1 else max(args.packages // 4, 8)
    if size == "large":  # keep the pre-built bodies within a few hundred MB
        count = min(count, 200)
    return max(int(count), 2 * stations)


async def drive(
    backend: str, api: RegistryProcess, meters: Meters, values: dict[str, Any], args: Any
) -> BackendRun:
    async with client_for(api.url, 16) as client:
        r = await client.post("/v1/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]})
        r.raise_for_status()
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await client.post(
            "/v1/offices", json={"name": "Bench office", "commune_code": COMMUNE}, headers=admin
        )
        r.raise_for_status()
        n = max(*args.stations, args.size_stations, args.surge, 1)
        progress(f"{backend}: onboarding {n} stations through the API")
        stations, recipient = await onboard(
            client, admin, [f"BN-{i:05d}" for i in range(n)], r.json()["id"]
        )
    factory = PackageFactory(recipient, args.persons)
    progress(f"{backend}: rendering prints and faces of persons {args.persons}")
    factory.warm(sorted({size for _, _, size in plan(args)} | {"typical"}))

    progress(f"{backend}: ingest core in-process, {args.core} packages")
    core_ms = run_core(values, stations[0], factory.build(stations[0], "typical", args.core))
    receipts = len(core_ms)

    points: list[Point] = []
    for kind, count_stations, size in plan(args):
        count = point_count(args, count_stations, size)
        started = time.perf_counter()
        work = [
            (station, factory.build(station, size, k))
            for station, k in zip(stations, split_count(count, count_stations), strict=False)
        ]
        size_kb = statistics.mean(len(u.data) for _, ups in work for u in ups) / 1024
        progress(
            f"{backend}: {count_stations} stations x {size} ({size_kb:.0f} KB): built {count} "
            f"packages in {time.perf_counter() - started:.1f} s; GET /healthz baseline"
        )
        health_ms, health_rate = await run_healthz(api.url, count_stations, count)
        label = f"{backend} {count_stations} stations {size}"
        outcome = await run_uploads(label, api.url, work, meters)
        check_outcome(label, outcome, count)
        receipts += len(outcome.receipts)
        point = Point(backend, kind, count_stations, size, size_kb, outcome, health_ms, health_rate)
        points.append(point)
        progress(
            f"{label}: {point.rate:.1f} packages/s, p99 {percentile(outcome.latencies_ms, 99):.0f}"
            f" ms, {outcome.refusals} refusals"
        )

    if args.surge:
        work = [(s, factory.build(s, "typical", 1)) for s in stations[: args.surge]]
        size_kb = statistics.mean(len(u.data) for _, ups in work for u in ups) / 1024
        label = f"{backend} surge of {args.surge} stations"
        progress(f"{label}: all at once")
        outcome = await run_uploads(label, api.url, work, meters)
        check_outcome(label, outcome, args.surge)
        receipts += len(outcome.receipts)
        points.append(Point(backend, "surge", args.surge, "typical", size_kb, outcome))
    url = values["database"]["url"]
    return BackendRun(backend, 0, points, core_ms, held_in_database(url), receipts)


def check_outcome(label: str, outcome: Outcome, expected: int) -> None:
    if outcome.failures:
        raise RuntimeError(f"{label}: uploads failed:\n" + "\n".join(outcome.failures[:10]))
    if len(outcome.receipts) != expected or outcome.created != expected:
        raise RuntimeError(
            f"{label}: {len(outcome.receipts)} receipts ({outcome.created} new) for "
            f"{expected} packages"
        )


def run_backend(backend: str, args: argparse.Namespace) -> BackendRun:
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
        db_pid: int | None = None
        if backend == "postgresql":
            progress("postgresql: starting a private server (fsync on)")
            url, db_pid = stack.enter_context(durable_postgres())
            workers = args.api_workers
        else:
            url, workers = f"sqlite:///{base / 'registry.db'}", args.sqlite_workers
        ingest = {} if args.admission is None else {"max_concurrent_uploads": args.admission}
        values = settings_values(base, url, **ingest)
        prepare_registry(values)
        progress(f"{backend}: starting python -m central serve --workers {workers}")
        api = RegistryProcess(values, base, ["serve", "--workers", str(workers)])
        stack.callback(api.stop)
        try:
            api.wait_ready()
        except RuntimeError:
            print(api.tail(), file=sys.stderr)
            raise
        meters = Meters(api, db_pid)
        if args.pipeline_worker:
            worker = RegistryProcess(values, base, ["worker"])
            stack.callback(worker.stop)
            meters.others.append(worker)
        try:
            run = asyncio.run(drive(backend, api, meters, values, args))
        except BaseException:
            print(api.tail(), file=sys.stderr)
            raise
        run.api_workers = workers
        return run


# --- reporting ----------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def report(runs: Sequence[BackendRun], args: argparse.Namespace) -> bool:
    """Print the tables; False when anything was lost."""
    load = os.getloadavg()
    worker = ", a pipeline worker running" if args.pipeline_worker else ", pipeline worker off"
    print(
        f"\n# bench/ingest.py  {datetime.now(UTC):%Y-%m-%d}  {platform.machine()} "
        f"{os.cpu_count()} CPUs  {platform.python_implementation()} {platform.python_version()}"
        f"  load {load[0]:.1f}{worker}\n"
    )
    rows: list[tuple[str, ...]] = []
    for run in runs:
        for p in run.points:
            if p.kind == "surge":
                continue
            o = p.outcome
            lat = o.latencies_ms
            health = statistics.median(p.healthz_ms)
            rows.append(
                (
                    f"{run.backend} ({run.api_workers} API)",
                    f"{p.stations}",
                    f"{p.size} {p.size_kb:.0f} KB",
                    f"{len(o.receipts)}",
                    f"{p.rate:.1f}",
                    f"{window_rate(o.ack_times):.1f}",
                    ms(percentile(lat, 50)),
                    ms(percentile(lat, 95)),
                    ms(percentile(lat, 99)),
                    ms(max(lat)),
                    f"{o.refusals}",
                    f"{p.cores(o.api_cpu):.2f}",
                    f"{p.cores(o.db_cpu):.2f}",
                    f"{p.cores(o.client_cpu):.2f}",
                    f"{health:.1f} ms, {p.healthz_rate:.0f}/s",
                    f"{percentile(lat, 50) / health:.0f}x",
                )
            )
    table(
        (
            "backend", "stations", "package", "acked", "pkg/s", "sustained/s", "p50 ms",
            "p95 ms", "p99 ms", "max ms", "503s", "API cores", "DB cores", "client cores",
            "healthz p50, rate", "p50 vs healthz",
        ),
        rows,
    )  # fmt: skip
    print()
    rows = []
    for run in runs:
        core = run.core_ms
        single = [p for p in run.points if p.kind == "stations" and p.stations == 1]
        http = percentile(single[0].outcome.latencies_ms, 50) if single else float("nan")
        rows.append(
            (
                run.backend,
                f"{len(core)}",
                ms(statistics.median(core)),
                ms(percentile(core, 99)),
                f"{1000 / statistics.mean(core):.0f}",
                ms(http),
                f"{http / statistics.median(core):.2f}x",
            )
        )
    print("Ingest core in-process (central.ingest.Ingest.accept, one thread, no HTTP):\n")
    table(
        ("backend", "packages", "median ms", "p99 ms", "pkg/s one thread", "HTTP p50 ms at 1 "
         "station", "HTTP vs core"),
        rows,
    )  # fmt: skip
    surges = [(run, p) for run in runs for p in run.points if p.kind == "surge"]
    if surges:
        print("\nSurge (every station uploads at once; refused ones retry after Retry-After):\n")
        rows = []
        for run, p in surges:
            o = p.outcome
            rows.append(
                (
                    run.backend,
                    f"{p.stations}",
                    f"{len(o.receipts)}",
                    f"{o.elapsed:.1f}",
                    f"{p.rate:.1f}",
                    f"{o.refusals}",
                    f"{o.transport_errors}",
                    ms(percentile(o.latencies_ms, 50)),
                    ms(percentile(o.latencies_ms, 99)),
                    ms(percentile(o.waits_ms, 50)),
                    ms(percentile(o.waits_ms, 99)),
                    ms(max(o.waits_ms)),
                )
            )
        table(
            ("backend", "stations", "acked", "drained in s", "pkg/s", "503s retried",
             "dropped connections", "ack p50 ms", "ack p99 ms", "receipt p50 ms (with waits)",
             "receipt p99 ms", "receipt max ms"),
            rows,
        )  # fmt: skip
    print()
    intact = True
    for run in runs:
        packages, jobs, audits = run.held
        same = packages == jobs == audits == run.receipts
        intact &= same
        verdict = "nothing lost" if same else "MISMATCH"
        print(
            f"{run.backend}: {verdict}: {run.receipts} receipts; the database holds {packages} "
            f"packages, {jobs} first jobs, {audits} package.received audit entries"
        )
    for run in runs:
        if run.backend != "postgresql":
            continue
        best = max((p for p in run.points if p.kind != "surge"), key=lambda p: p.rate)
        p99 = percentile(best.outcome.latencies_ms, 99)
        met = best.rate >= 100 and p99 < 500
        print(
            f"target on PostgreSQL (>= 100 packages/s acknowledged, p99 < 500 ms): "
            f"{'met' if met else 'NOT met'}: best {best.rate:.1f} packages/s at "
            f"{best.stations} stations ({best.size}), p99 {p99:.0f} ms"
        )
    return intact


def plot(runs: Sequence[BackendRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, lat_ax, hist_ax) = plt.subplots(1, 3, figsize=(15, 4.4))
    colours = {"sqlite": "tab:blue", "postgresql": "tab:orange"}
    for run in runs:
        curve = sorted((p for p in run.points if p.kind == "stations"), key=lambda p: p.stations)
        if not curve:
            continue
        c = colours.get(run.backend, "tab:gray")
        xs = [p.stations for p in curve]
        name = f"{run.backend} ({run.api_workers} API)"
        rate_ax.plot(xs, [p.rate for p in curve], "o-", color=c, label=name)
        for q, style in ((50, "o-"), (99, "s--")):
            ys = [percentile(p.outcome.latencies_ms, q) for p in curve]
            lat_ax.plot(xs, ys, style, color=c, label=f"{name} p{q}")
        widest = curve[-1]
        hist_ax.hist(
            widest.outcome.latencies_ms,
            bins=40,
            alpha=0.5,
            color=c,
            label=f"{name}, {widest.stations} stations",
        )
    rate_ax.axhline(100, color="k", lw=0.8, ls=":", label="target 100/s")
    lat_ax.axhline(500, color="k", lw=0.8, ls=":", label="p99 target 500 ms")
    ticks = sorted({p.stations for run in runs for p in run.points if p.kind == "stations"})
    for ax in (rate_ax, lat_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrent stations")
    rate_ax.set_ylabel("acknowledged packages/s")
    lat_ax.set_ylabel("acknowledgement latency, ms")
    lat_ax.set_yscale("log")
    hist_ax.set_xlabel("acknowledgement latency, ms")
    hist_ax.set_ylabel("packages")
    rate_ax.set_title("Throughput (typical ~400 KB packages)")
    lat_ax.set_title("Latency percentiles")
    hist_ax.set_title("Latency distribution at the widest point")
    for ax in (rate_ax, lat_ax, hist_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--stations", type=_ints, default=[1, 8, 32, 128])
    parser.add_argument("--sizes", default="small,typical,large", help=", ".join(SIZES))
    parser.add_argument("--size-stations", type=int, default=32, help="stations of the size curve")
    parser.add_argument("--packages", type=int, default=400, help="uploads per point")
    parser.add_argument("--core", type=int, default=60, help="packages through the bare core")
    parser.add_argument("--surge", type=int, default=1000, help="stations syncing at once (0: no)")
    parser.add_argument("--api-workers", type=int, default=2, help="API processes on PostgreSQL")
    parser.add_argument("--sqlite-workers", type=int, default=1, help="API processes on SQLite")
    parser.add_argument(
        "--admission", type=int, help="uploads one API process takes at once (default: config)"
    )
    parser.add_argument("--persons", type=_ints, default=list(PERSONS))
    parser.add_argument("--pipeline-worker", action="store_true", help="run a worker beside")
    parser.add_argument("--plot", type=Path, help="draw the curves to this PNG")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: SQLite, 1 and 4 stations, small surge"
    )
    args = parser.parse_args(argv)
    if args.quick:
        given = set(argv or sys.argv[1:])
        if not any(a.startswith("--backends") for a in given):
            args.backends = "sqlite"
        args.stations, args.sizes, args.size_stations = [1, 4], "typical", 4
        args.packages, args.core, args.surge, args.persons = 24, 8, 12, [1]
        args.admission = 4  # so that the surge of 12 meets admission control
    args.sizes = [s for s in args.sizes.split(",") if s]
    unknown = set(args.sizes) - set(SIZES)
    if unknown:
        parser.error(f"unknown sizes {sorted(unknown)}: choose from {', '.join(SIZES)}")
    return args


def write_json(runs: Sequence[BackendRun], path: Path) -> None:
    out = []
    for run in runs:
        for p in run.points:
            o = p.outcome
            out.append(
                {
                    "backend": run.backend,
                    "kind": p.kind,
                    "stations": p.stations,
                    "size": p.size,
                    "size_kb": p.size_kb,
                    "acked": len(o.receipts),
                    "elapsed_s": o.elapsed,
                    "rate": p.rate,
                    "latencies_ms": o.latencies_ms,
                    "refusals": o.refusals,
                    "api_cpu_s": o.api_cpu,
                    "db_cpu_s": o.db_cpu,
                    "client_cpu_s": o.client_cpu,
                }
            )
    path.write_text(json.dumps(out))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a thousand stations' sockets
    runs = [run_backend(b, args) for b in args.backends.split(",") if b]
    intact = report(runs, args)
    if args.plot is not None:
        plot(runs, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json is not None:
        write_json(runs, args.json)
    del soft
    return 0 if intact else 1


if __name__ == "__main__":
    sys.exit(main())
