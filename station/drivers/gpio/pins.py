"""The pin-factory abstraction: what a device class needs from one GPIO pin.

As in gpiozero, devices (:mod:`.light`, :mod:`.buzzer`, :mod:`.button`) never touch a
GPIO library: they ask a :class:`PinFactory` for numbered pins (BCM numbering) and drive
or read them. A factory is the backend: :class:`~.rpi.RPiGpioFactory` on the Pi,
:class:`~.mock.MockFactory` in tests and on a desk.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import StrEnum
from typing import Self


class Pull(StrEnum):
    """Input bias resistor."""

    UP = "up"
    DOWN = "down"
    NONE = "none"


class Edge(StrEnum):
    """Which level changes an edge callback hears."""

    RISING = "rising"
    FALLING = "falling"
    BOTH = "both"


EdgeCallback = Callable[[bool, float], None]
"""Called with the new level and the factory's monotonic time of the change."""


class GpioError(RuntimeError):
    """A pin cannot be used as asked (reserved twice, wrong direction, factory closed)."""


class Pin(ABC):
    """One GPIO pin, set up as an output or an input."""

    def __init__(self, factory: PinFactory, number: int) -> None:
        self.factory = factory
        self.number = number
        self.mode: str | None = None  # "output" / "input" once set up

    def _require(self, mode: str) -> None:
        if self.mode != mode:
            raise GpioError(f"GPIO{self.number} is not set up as an {mode}")

    @abstractmethod
    def output(self, initial: bool = False) -> None:
        """Make this pin an output at ``initial`` level."""

    @abstractmethod
    def input(self, pull: Pull = Pull.NONE) -> None:
        """Make this pin an input with the given bias."""

    @abstractmethod
    def write(self, level: bool) -> None:
        """Drive an output pin high (True) or low."""

    @abstractmethod
    def read(self) -> bool:
        """The pin's level now (an output reads back what it drives)."""

    @abstractmethod
    def on_edge(self, callback: EdgeCallback | None, edge: Edge = Edge.BOTH) -> None:
        """Call ``callback`` on level changes of an input (None: stop listening). The
        callback runs on the backend's thread, or the caller's for the mock: keep it short."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening, return the pin to a safe input and release it."""


class PinFactory(ABC):
    """A GPIO backend: hands out each pin once and releases all of them on close."""

    name: str = "abstract"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pins: dict[int, Pin] = {}
        self._closed = False

    def ticks(self) -> float:
        """The clock edge times and output histories are measured on."""
        return time.monotonic()

    def pin(self, number: int) -> Pin:
        """Reserve GPIO ``number`` (BCM); a pin serves one device at a time."""
        if not 0 <= number <= 27:
            raise GpioError(f"GPIO{number} is not on the 40-pin header (BCM 0-27)")
        with self._lock:
            if self._closed:
                raise GpioError(f"the {self.name} pin factory is closed")
            if number in self._pins:
                raise GpioError(f"GPIO{number} is already in use by another device")
            pin = self._make_pin(number)
            self._pins[number] = pin
            return pin

    def release(self, pin: Pin) -> None:
        with self._lock:
            if self._pins.get(pin.number) is pin:
                del self._pins[pin.number]

    @property
    def reserved(self) -> list[int]:
        with self._lock:
            return sorted(self._pins)

    def close(self) -> None:
        """Close every pin still reserved (each returns itself to a safe state)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pins = list(self._pins.values())
        for pin in pins:
            pin.close()

    @abstractmethod
    def _make_pin(self, number: int) -> Pin: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
