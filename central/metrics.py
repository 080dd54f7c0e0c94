"""Prometheus metrics of one registry process, in a registry object of its own.

Two kinds of numbers:

- events this process saw (packages received or refused, bytes, acknowledgement latency,
  stage and dedup latencies, gallery size): counters, histograms and gauges that the ingest
  API and the pipeline workers record through :class:`Metrics`;
- the state of the whole registry (queue depth per job state, packages per pipeline
  state, seconds since each active station's latest heartbeat): read from the database
  at scrape time by :class:`DatabaseCollector`, one query each, so every process reports
  the same truth however many there are.

Each :class:`Metrics` owns a fresh ``CollectorRegistry`` rather than prometheus_client's
global one: several apps in one process (tests, an API with an embedded worker) must not
collide on metric names. Serve it with :func:`metrics_router` (``GET /metrics``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from central.db.models import Job, JobState, Package, PackageState, Station, StationStatus

log = logging.getLogger(__name__)

# Pipeline states a package passes through; the finished ones (issued, card_encoded,
# rejected) grow without bound and are counted by the reports, not at every scrape.
IN_FLIGHT_STATES = (
    PackageState.received,
    PackageState.verified,
    PackageState.quality_checked,
    PackageState.deduplicating,
    PackageState.adjudication,
)
# Job states that make up the queue; "done" is history (it would make every scrape scan
# every job ever run).
QUEUE_STATES = (JobState.pending, JobState.running, JobState.failed)

ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DEDUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_LABEL = re.compile(r"^[a-z0-9_]{1,48}$")


def _label(value: str) -> str:
    """A label value from a bounded vocabulary: anything unexpected becomes "other", so a
    bug or a hostile client cannot create unbounded time series."""
    value = value.strip().lower().replace("-", "_").replace(".", "_")
    return value if _LABEL.match(value) else "other"


class DatabaseCollector(Collector):
    """Queue depth and packages in flight, read from the database at each scrape.

    Uses ``job(state, not_before)`` and ``package(state)``: both queries touch only
    unfinished rows. A database error does not fail the scrape: ``registry_database_up``
    drops to 0 (alert on it) and the other gauges are left out.
    """

    def __init__(self, engine: Engine, namespace: str = "registry") -> None:
        # Read-only scrapes must not take SQLite's write lock (the engine's default BEGIN
        # IMMEDIATE): a scrape would then queue behind ingest.
        self.engine = engine.execution_options(sqlite_begin="DEFERRED")
        self.namespace = namespace

    def describe(self) -> Iterable[Metric]:
        return []  # collected live; describing would run the queries at registration

    def collect(self) -> Iterator[Metric]:
        ns = self.namespace
        up = GaugeMetricFamily(f"{ns}_database_up", "1 when the last scrape read the database")
        started = time.perf_counter()
        try:
            with self.engine.connect() as connection:
                jobs = connection.execute(
                    select(Job.kind, Job.state, func.count())
                    .where(Job.state.in_(QUEUE_STATES))
                    .group_by(Job.kind, Job.state)
                ).all()
                packages = connection.execute(
                    select(Package.state, func.count())
                    .where(Package.state.in_(IN_FLIGHT_STATES))
                    .group_by(Package.state)
                ).all()
                heartbeats = connection.execute(
                    select(Station.id, Station.last_heartbeat_at).where(
                        Station.status == StationStatus.active,
                        Station.last_heartbeat_at.is_not(None),
                    )
                ).all()
        except SQLAlchemyError as exc:
            log.warning("metrics scrape could not read the database: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        scrape = GaugeMetricFamily(
            f"{ns}_database_scrape_seconds", "Time the database gauges took to read"
        )
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape
        depth = GaugeMetricFamily(
            f"{ns}_jobs", "Jobs in the work queue by kind and state", labels=["kind", "state"]
        )
        counts = {(str(kind), JobState(state)): int(n) for kind, state, n in jobs}
        for kind in sorted({kind for kind, _ in counts}):
            for state in QUEUE_STATES:  # zeros too: an alert compares against a number
                depth.add_metric([kind, state.value], counts.get((kind, state), 0))
        yield depth
        in_flight = GaugeMetricFamily(
            f"{ns}_packages_in_flight",
            "Packages in each unfinished pipeline state",
            labels=["state"],
        )
        by_state = {PackageState(state): int(n) for state, n in packages}
        for package_state in IN_FLIGHT_STATES:
            in_flight.add_metric([package_state.value], by_state.get(package_state, 0))
        yield in_flight
        # One series per active station that ever sent a heartbeat (stations are a bounded,
        # administered set): alert when one stays silent past a few heartbeat periods.
        age = GaugeMetricFamily(
            f"{ns}_station_heartbeat_age_seconds",
            "Seconds since the station's latest heartbeat",
            labels=["station"],
        )
        now = datetime.now(UTC)
        for station_id, at in heartbeats:
            age.add_metric([str(station_id)], max((now - at).total_seconds(), 0.0))
        yield age


class Metrics:
    """The registry's metrics, in their own ``CollectorRegistry`` (``self.registry``).

    Ingest calls :meth:`package_received` / :meth:`package_refused`; pipeline workers
    :meth:`observe_stage` (or ``with metrics.stage_timer("dedup"):``), dedup
    :meth:`observe_dedup` and :meth:`set_gallery_size`. With an ``engine``, the scrape also
    reads queue depth and packages in flight from the database.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        namespace: str = "registry",
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.packages_received = Counter(
            "packages_received", "Packages stored and acknowledged", namespace=ns, registry=r
        )
        self.packages_refused = Counter(
            "packages_refused",
            "Packages refused at ingest, by reason code",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.package_bytes = Counter(
            "package_bytes_received", "Bytes of packages acknowledged", namespace=ns, registry=r
        )
        self.ack_seconds = Histogram(
            "package_ack_seconds",
            "From the upload's last byte to the acknowledgement (verify, store durably)",
            namespace=ns,
            registry=r,
            buckets=ACK_BUCKETS,
        )
        self.stage_seconds = Histogram(
            "stage_seconds",
            "Time a pipeline stage took for one package",
            ["stage"],
            namespace=ns,
            registry=r,
            buckets=STAGE_BUCKETS,
        )
        self.dedup_seconds = Histogram(
            "dedup_identify_seconds",
            "Time of one 1:N identification (all modalities, fusion included)",
            namespace=ns,
            registry=r,
            buckets=DEDUP_BUCKETS,
        )
        self.gallery_entries = Gauge(
            "gallery_entries",
            "Entries in the dedup gallery this process holds",
            namespace=ns,
            registry=r,
        )
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.database: DatabaseCollector | None = None
        if engine is not None:
            self.database = DatabaseCollector(engine, ns)
            r.register(self.database)

    def package_received(self, size_bytes: int, ack_seconds: float) -> None:
        self.packages_received.inc()
        self.package_bytes.inc(size_bytes)
        self.ack_seconds.observe(ack_seconds)

    def package_refused(self, reason: str) -> None:
        """``reason``: the refusal's code (e.g. "bad_signature"), not free text."""
        self.packages_refused.labels(reason=_label(reason)).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=_label(stage)).observe(seconds)

    @contextmanager
    def stage_timer(self, stage: str) -> Iterator[None]:
        """Time the block as one run of ``stage`` (recorded even when it raises: a slow
        failure is still time spent)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_stage(stage, time.perf_counter() - started)

    def observe_dedup(self, seconds: float) -> None:
        self.dedup_seconds.observe(seconds)

    def set_gallery_size(self, entries: int) -> None:
        self.gallery_entries.set(entries)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything in this registry."""
        return generate_latest(self.registry)


def metrics_response(metrics: Metrics, accept: str | None = None) -> Response:
    """The ``/metrics`` response in the format the scraper's ``Accept`` header asks for
    (OpenMetrics or the Prometheus text format), as prometheus_client negotiates it."""
    encoder, content_type = choose_encoder(accept or "")
    return Response(encoder(metrics.registry), media_type=content_type)


def metrics_router(metrics: Metrics | None = None) -> APIRouter:
    """``GET /metrics`` serving ``metrics``, or ``request.app.state.metrics`` when None
    (the app creates its :class:`Metrics` at start-up, once the engine exists)."""
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        target: Any = metrics if metrics is not None else request.app.state.metrics
        return metrics_response(target, request.headers.get("accept"))

    return router
