"""Tools for the offline-week test (tests/test_station_offline.py): many distinct
enrollments from a few pre-computed captures, a resident list to search, and the
instruments that watch the station while it works offline and while it drains.

- :func:`captures`: one synthetic person's portrait and ten rolled prints (WSQ + ISO
  19794-2 template), as the capture loops would hand them to the workflow; computed once
  per person and reused by every case (the registry's dedup is not what is tested).
- :class:`People`: seeded names, dates of birth and addresses, so each case is a
  different citizen (a resident list row or a walk-in) with its own package.
- :class:`Wire`: every HTTP request the process sends through httpx's network transport,
  counted by path and outcome (is the uploader probing, or hammering a dead registry?).
- :class:`Prober`: a thread that calls the station's API the way the kiosk does and keeps
  each call's latency, tagged with the phase of the test.
- :func:`thread_cpu_s`: CPU seconds a named thread has used (a spinning loop shows here
  even when it sends nothing).
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from biometrics.fingerprint.iso19794 import encode_minutiae
from biometrics.fingerprint.minutiae import extract_minutiae
from enrollment import images
from station.cases import FaceEntry, FingerEntry
from tests import registrykit

# --- captures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captures:
    """What the capture loops deliver for one citizen: a portrait and ten fingers."""

    face: FaceEntry
    fingers: tuple[FingerEntry, ...]


@functools.cache
def captures(person: int) -> Captures:
    """Person ``person``'s captures (registrykit's synthetic prints and portrait, first
    sitting), each finger with the template the tenprint loop would have extracted."""
    fingers: list[FingerEntry] = []
    for position in range(1, 11):
        data, width, height = registrykit.finger_wsq(person, position, 0)
        template = encode_minutiae(extract_minutiae(images.decode_wsq(data)), position=position)
        fingers.append(
            FingerEntry(
                position=position,
                wsq=data,
                width=width,
                height=height,
                quality=70,
                attempts=1,
                template=template,
            )
        )
    jpeg, width, height = registrykit.portrait_jpeg(person, 0)
    face = FaceEntry(jpeg=jpeg, width=width, height=height, quality=80, frames=20, seconds=2.0)
    return Captures(face, tuple(fingers))


# --- people -----------------------------------------------------------------------------------

FAMILY = (
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi",
    "Đỗ", "Hồ", "Ngô", "Dương", "Lý",
)  # fmt: skip
MIDDLE = {"M": ("Văn", "Hữu", "Đức", "Minh", "Quang", "Công"),
          "F": ("Thị", "Ngọc", "Thu", "Thanh", "Minh", "Kim")}  # fmt: skip
GIVEN = {
    "M": ("An", "Bình", "Cường", "Dũng", "Hải", "Hiếu", "Hùng", "Khánh", "Long", "Nam",
          "Phúc", "Quân", "Sơn", "Tâm", "Tuấn", "Việt"),
    "F": ("Anh", "Giang", "Hà", "Hạnh", "Hoa", "Hương", "Lan", "Linh", "Mai", "Nga",
          "Phương", "Thảo", "Trang", "Vy", "Yến", "Ngân"),
}  # fmt: skip
RESIDENTS_HEADER = (
    "ref,full_name,date_of_birth,sex,old_id_number,household_number,father_name,"
    "mother_name,residence_detail,origin_commune,origin_detail"
)


def fold(text: str) -> str:
    """Lower case without diacritics (what an officer types in a hurry)."""
    decomposed = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


@dataclass(frozen=True)
class Resident:
    ref: str
    full_name: str
    date_of_birth: str
    sex: str


@dataclass
class People:
    """Seeded citizens of commune ``area``: resident list rows and walk-ins."""

    seed: int
    area: dict[str, str]
    residents: list[Resident] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _name(self, sex: str) -> str:
        rng = self._rng
        return f"{rng.choice(FAMILY)} {rng.choice(MIDDLE[sex])} {rng.choice(GIVEN[sex])}"

    def _birth(self) -> str:
        """A date of birth of someone aged 16 to 80 today."""
        today = date.today()
        days = self._rng.randint(16 * 366, 80 * 365)
        return (today - timedelta(days=days)).isoformat()

    def resident_list(self, count: int) -> str:
        """The commune's resident list (CSV for ``POST /v1/offices/{id}/residents``) with
        ``count`` adults; remembered in :attr:`residents`."""
        lines = [RESIDENTS_HEADER]
        for i in range(count):
            sex = self._rng.choice("MF")
            resident = Resident(f"DC01-{i + 1:05d}", self._name(sex), self._birth(), sex)
            self.residents.append(resident)
            old_id = f"{self._rng.randrange(10**8, 10**9)}"
            lines.append(
                f"{resident.ref},{resident.full_name},{resident.date_of_birth},"
                f"{'male' if sex == 'M' else 'female'},{old_id},HK-{i // 4 + 1:05d},,,"
                f"Số {self._rng.randint(1, 400)} phố Phúc Xá,00001,"
            )
        return "\n".join(lines) + "\n"

    def walk_in(self) -> dict[str, Any]:
        """The form of a citizen who is not on the list."""
        sex = self._rng.choice("MF")
        return {
            "full_name": self._name(sex),
            "date_of_birth": self._birth(),
            "sex": sex,
            "ethnicity": "01",
            "religion": "Không",
            "place_of_origin": {"areas": [self.area]},
            "permanent_residence": {
                "detail": f"Số {self._rng.randint(1, 400)} ngõ {self._rng.randint(1, 90)} "
                "phố Phúc Xá",
                "areas": [self.area],
            },
        }

    def queries(self, seed: int) -> Callable[[], str]:
        """Name searches as an officer types them (a listed person's name, folded or not,
        sometimes only the family and given names), from a generator of their own: the
        prober's thread draws them while the test's thread draws citizens."""
        rng = random.Random(seed)
        names = [r.full_name for r in self.residents]

        def query() -> str:
            words = rng.choice(names).split()
            if rng.random() < 0.3:
                words = [words[0], words[-1]]
            text = " ".join(words)
            return fold(text) if rng.random() < 0.5 else text

        return query


# --- the wire ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    at: float
    """time.monotonic() when the request was sent."""
    method: str
    path: str
    outcome: str
    """The status code, or the transport error's class name."""


class Wire:
    """Records every request that goes through :class:`httpx.HTTPTransport` (the network;
    in-process ASGI clients are not seen)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[Request] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Wire:
        original = httpx.HTTPTransport.handle_request
        wire = self

        def handle(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            at = time.monotonic()
            try:
                response = original(transport, request)
            except httpx.TransportError as exc:
                wire._add(Request(at, request.method, request.url.path, type(exc).__name__))
                raise
            wire._add(Request(at, request.method, request.url.path, str(response.status_code)))
            return response

        monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle)
        return self

    def _add(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def between(
        self, start: float, end: float, match: Callable[[Request], bool] = lambda r: True
    ) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if start <= r.at < end and match(r)]


def is_upload(request: Request) -> bool:
    return request.method == "PUT" and request.path.startswith("/v1/packages/")


# --- the API as the kiosk uses it -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    phase: str
    name: str
    seconds: float
    status: int


class Prober:
    """Calls ``calls`` (name -> a function of an httpx-like client returning the
    response) round-robin from its own thread every ``interval_s``, until :meth:`stop`.
    :attr:`phase` tags the samples (set it as the test moves on)."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        calls: dict[str, Callable[[Any], Any]],
        interval_s: float = 0.1,
    ) -> None:
        self._factory = client_factory
        self._calls = calls
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.samples: list[Sample] = []
        self.phase = "start"
        self.error: BaseException | None = None

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, name="api-prober", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(60)

    def _run(self) -> None:
        try:
            with self._factory() as client:
                while not self._stop.is_set():
                    for name, call in self._calls.items():
                        phase = self.phase
                        t0 = time.perf_counter()
                        response = call(client)
                        seconds = time.perf_counter() - t0
                        with self._lock:
                            self.samples.append(
                                Sample(phase, name, seconds, int(response.status_code))
                            )
                        if self._stop.wait(self._interval):
                            return
        except BaseException as exc:  # the test reports it; a silent prober measures nothing
            self.error = exc

    def of(self, phase: str, name: str) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.phase == phase and s.name == name]


def percentiles(values: list[float]) -> dict[str, float]:
    """n, p50, p95, p99 and max (seconds), for the record."""
    if not values:
        return {"n": 0}
    array = np.asarray(values)
    return {
        "n": len(values),
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
    }


# --- the process ------------------------------------------------------------------------------


def thread_cpu_s(name: str) -> float | None:
    """CPU seconds (user + system) used so far by this process's live thread ``name``;
    None where /proc does not say (not Linux) or no such thread runs."""
    for thread in threading.enumerate():
        if thread.name != name or thread.native_id is None:
            continue
        stat = Path(f"/proc/self/task/{thread.native_id}/stat")
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # After the command name: state is field 3; utime and stime are fields 14 and 15.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    return None


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in _files(path))


def _files(folder: Path) -> Iterator[Path]:
    for entry in folder.rglob("*"):
        if entry.is_file():
            yield entry


__all__ = [
    "Captures",
    "People",
    "Prober",
    "Request",
    "Resident",
    "Sample",
    "Wire",
    "captures",
    "fold",
    "is_upload",
    "percentiles",
    "thread_cpu_s",
    "tree_bytes",
]
