"""The station's heartbeat: every few minutes it tells the registry it is alive and how it
is doing (software and image version, device health, outbox depth, disk, last sync), and
learns from the answer whether the registry has newer data for it.

The payload is built from what the station already keeps (the health board, the outbox
counts, the sync state); sending is best effort: a station offline for days simply does
not beat, and the registry's station list shows since when.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeartbeatSources:
    """Where each part of the heartbeat comes from (callables: read at each beat)."""

    software_version: str
    image_version: Callable[[], str | None]
    devices: Callable[[], list[dict[str, object]]]
    queue: Callable[[], Mapping[str, Any]]
    """{"pending": int, "oldest_pending_s": float | None, "refused": int}"""
    disk_path: Path
    last_sync_at: Callable[[], datetime | None]


def read_image_version(path: Path) -> str | None:
    """The image's version file (written by the image build), or None off the device."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text[:100] or None


def payload(sources: HeartbeatSources, now: datetime) -> dict[str, Any]:
    """The JSON body of ``POST /v1/station/heartbeat``."""
    usage = shutil.disk_usage(sources.disk_path)
    last = sources.last_sync_at()
    queue = dict(sources.queue())
    return {
        "sent_at": now.isoformat(),
        "software_version": sources.software_version,
        "image_version": sources.image_version(),
        "devices": sources.devices(),
        "queue": {
            "pending": int(queue.get("pending", 0)),
            "oldest_pending_s": queue.get("oldest_pending_s"),
            "refused": int(queue.get("refused", 0)),
        },
        "disk": {"free_bytes": usage.free, "total_bytes": usage.total},
        "last_sync_at": last.isoformat() if last else None,
    }


class Heartbeat:
    """Beats every ``interval()`` seconds in a thread; ``on_answer`` gets the registry's
    answer (the service starts a sync when it announces newer data)."""

    def __init__(
        self,
        client: httpx.Client,
        sources: HeartbeatSources,
        interval: Callable[[], float],
        *,
        on_answer: Callable[[Mapping[str, Any]], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.sources = sources
        self.interval = interval
        self.on_answer = on_answer
        self.clock = clock
        self.last_beat_at: datetime | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> Mapping[str, Any] | None:
        """Send one heartbeat now; returns the answer, or None when it could not be sent."""
        try:
            response = self.client.post(
                "/v1/station/heartbeat", json=payload(self.sources, self.clock())
            )
        except httpx.HTTPError as exc:
            self.last_error = f"registry unreachable: {exc}"
            return None
        if response.status_code != 200:
            self.last_error = f"{response.status_code} {response.text[:200]}"
            log.warning("heartbeat refused: %s", self.last_error)
            return None
        try:
            answer: Mapping[str, Any] = response.json()
            if not isinstance(answer, Mapping):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # a captive portal or a proxy answering with HTML
            self.last_error = f"the answer is not the registry's ({exc})"
            return None
        self.last_beat_at = self.clock()
        self.last_error = None
        if self.on_answer is not None:
            try:
                self.on_answer(answer)
            except Exception:  # a failing reaction must not stop the beats
                log.exception("reacting to the heartbeat answer failed")
        return answer

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            interval = 300.0
            try:
                self.beat()
                interval = self.interval()
            except Exception as exc:  # building the body failed: report it, keep beating
                log.exception("heartbeat failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._wake.wait(max(1.0, interval))
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)


__all__ = ["Heartbeat", "HeartbeatSources", "payload", "read_image_version"]
