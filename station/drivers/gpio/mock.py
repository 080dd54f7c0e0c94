"""In-memory pins for tests and for a station without a header (the desk demo).

Outputs record every level change with its time, so a test can check a blink pattern;
inputs are driven by the test (``drive_low`` / ``drive_high``), which fires the edge
callbacks synchronously in the driving thread, as gpiozero's mock pins do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from station.drivers.gpio.pins import Edge, EdgeCallback, GpioError, Pin, PinFactory, Pull


@dataclass(frozen=True, slots=True)
class LevelChange:
    """An output pin went to ``level`` at ``t`` (the factory's monotonic clock)."""

    t: float
    level: bool


class MockPin(Pin):
    def __init__(self, factory: MockFactory, number: int) -> None:
        super().__init__(factory, number)
        self._mock_lock = threading.Lock()
        self._level = False
        self._pull = Pull.NONE
        self._callback: EdgeCallback | None = None
        self._edge = Edge.BOTH
        self.history: list[LevelChange] = []
        """Output level changes, oldest first (the initial level is the first entry)."""

    def output(self, initial: bool = False) -> None:
        with self._mock_lock:
            self.mode = "output"
            self._level = initial
            self.history.append(LevelChange(self.factory.ticks(), initial))

    def input(self, pull: Pull = Pull.NONE) -> None:
        with self._mock_lock:
            self.mode = "input"
            self._pull = pull
            # An idle input rests where its bias resistor holds it.
            self._level = pull is Pull.UP

    def write(self, level: bool) -> None:
        with self._mock_lock:
            self._require("output")
            if level != self._level:
                self._level = level
                self.history.append(LevelChange(self.factory.ticks(), level))

    def read(self) -> bool:
        with self._mock_lock:
            return self._level

    def on_edge(self, callback: EdgeCallback | None, edge: Edge = Edge.BOTH) -> None:
        with self._mock_lock:
            self._require("input")
            self._callback, self._edge = callback, edge

    def close(self) -> None:
        with self._mock_lock:
            self._callback = None
            self.mode = None
        self.factory.release(self)

    # --- test side -----------------------------------------------------------------

    def drive(self, level: bool) -> None:
        """Set an input's level from outside, as a switch or sensor would."""
        with self._mock_lock:
            self._require("input")
            changed = level != self._level
            self._level = level
            callback, edge = self._callback, self._edge
        heard = edge is Edge.BOTH or (edge is Edge.RISING) == level
        if changed and heard and callback is not None:
            callback(level, self.factory.ticks())

    def drive_low(self) -> None:
        self.drive(False)

    def drive_high(self) -> None:
        self.drive(True)

    def levels(self) -> list[bool]:
        """The output levels in order, without their times."""
        with self._mock_lock:
            return [c.level for c in self.history]

    def changes(self) -> list[LevelChange]:
        with self._mock_lock:
            return list(self.history)


class MockFactory(PinFactory):
    """Pins that live in memory; ``pin(n)`` returns a :class:`MockPin`."""

    name = "mock"

    def __init__(self) -> None:
        super().__init__()
        self._all: dict[int, MockPin] = {}

    def _make_pin(self, number: int) -> Pin:
        pin = MockPin(self, number)
        self._all[number] = pin
        return pin

    def mock_pin(self, number: int) -> MockPin:
        """The mock pin behind GPIO ``number`` (for tests to drive and inspect)."""
        try:
            return self._all[number]
        except KeyError:
            raise GpioError(f"GPIO{number} was never reserved") from None
