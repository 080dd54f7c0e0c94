"""Device health: the one place the station asks "is each device there, and what is it?".

Every driver owns a :class:`HealthCell` and updates it as it works (opened, identified,
failed, recovered); the station's status bar, the technician page and the upload of
station telemetry all read the same :class:`DeviceHealthBoard`. Cells are thread-safe
because drivers run in their own capture threads while the UI polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum


class DeviceKind(StrEnum):
    """The kinds of device a station has; one cell per device."""

    FINGERPRINT = "fingerprint"
    CAMERA = "camera"
    CARD_ENCODER = "card_encoder"
    GPIO = "gpio"


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """A snapshot of one device's state, safe to hand to another thread or serialise."""

    name: str
    kind: DeviceKind
    backend: str
    present: bool = False
    serial: str | None = None
    firmware: str | None = None
    model: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    """Wall-clock time (``time.time()``) of the last error; None when there was none."""
    updated_at: float = 0.0
    details: dict[str, str] = field(default_factory=dict)
    """Backend-specific facts worth showing a technician (baud rate, reader name, ...)."""

    @property
    def ok(self) -> bool:
        """Present, and no error since the device was last seen working."""
        return self.present and self.last_error is None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "backend": self.backend,
            "present": self.present,
            "ok": self.ok,
            "serial": self.serial,
            "firmware": self.firmware,
            "model": self.model,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "updated_at": self.updated_at,
            "details": dict(self.details),
        }


class HealthCell:
    """A driver's mutable health record; readers take :meth:`snapshot` copies."""

    def __init__(
        self, name: str, kind: DeviceKind, backend: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._state = DeviceHealth(name=name, kind=kind, backend=backend, updated_at=clock())

    def snapshot(self) -> DeviceHealth:
        with self._lock:
            return self._state

    def present(
        self,
        *,
        serial: str | None = None,
        firmware: str | None = None,
        model: str | None = None,
        **details: str,
    ) -> None:
        """The device answered: mark it present and clear the last error."""
        with self._lock:
            s = self._state
            self._state = replace(
                s,
                present=True,
                serial=serial if serial is not None else s.serial,
                firmware=firmware if firmware is not None else s.firmware,
                model=model if model is not None else s.model,
                last_error=None,
                last_error_at=None,
                updated_at=self._clock(),
                details={**s.details, **details},
            )

    def absent(self, reason: str) -> None:
        """The device is gone (unplugged, no reader, port missing)."""
        with self._lock:
            now = self._clock()
            self._state = replace(
                self._state, present=False, last_error=reason, last_error_at=now, updated_at=now
            )

    def error(self, message: str) -> None:
        """An operation failed but the device may still be there (bad checksum, timeout)."""
        with self._lock:
            now = self._clock()
            self._state = replace(
                self._state, last_error=message, last_error_at=now, updated_at=now
            )


class DeviceHealthBoard:
    """All the station's devices, by name. Drivers register their cell when built."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cells: dict[str, HealthCell] = {}

    def register(self, cell: HealthCell) -> HealthCell:
        name = cell.snapshot().name
        with self._lock:
            if name in self._cells and self._cells[name] is not cell:
                raise ValueError(f"a device named {name!r} is already registered")
            self._cells[name] = cell
        return cell

    def unregister(self, name: str) -> None:
        with self._lock:
            self._cells.pop(name, None)

    def cell(self, name: str) -> HealthCell:
        """The live cell of ``name`` (to record a fault its driver could not)."""
        with self._lock:
            cell = self._cells.get(name)
        if cell is None:
            raise KeyError(f"no device named {name!r}")
        return cell

    def get(self, name: str) -> DeviceHealth:
        with self._lock:
            cell = self._cells.get(name)
        if cell is None:
            raise KeyError(f"no device named {name!r}")
        return cell.snapshot()

    def __iter__(self) -> Iterator[DeviceHealth]:
        with self._lock:
            cells = list(self._cells.values())
        return iter([c.snapshot() for c in cells])

    def all_ok(self) -> bool:
        return all(h.ok for h in self)

    def as_json(self) -> list[dict[str, object]]:
        return [h.as_json() for h in self]
