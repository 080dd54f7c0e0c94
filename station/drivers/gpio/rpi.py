"""Pins through the ``RPi.GPIO`` API, BCM numbering.

On a Pi 5 the classic RPi.GPIO cannot reach the GPIO chip (it sits behind the RP1);
``rpi-lgpio`` provides the same ``RPi.GPIO`` module on top of lgpio and works on the
Pi 4 and 5 alike (STACK.md). It is installed on aarch64 only, so the import happens when
a factory is made, never at module import.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any

from station.drivers.gpio.pins import Edge, EdgeCallback, GpioError, Pin, PinFactory, Pull

POLL_INTERVAL_S = 0.002
"""Used only where the kernel refuses edge detection: fast enough for a push button."""


def _load_gpio() -> ModuleType:
    try:
        return importlib.import_module("RPi.GPIO")
    except (ImportError, RuntimeError) as exc:  # RuntimeError: not on a Pi / no access
        raise GpioError(
            "RPi.GPIO is not usable here (" + str(exc) + "): on the station install "
            "rpi-lgpio (it provides RPi.GPIO on the Pi 4 and 5); elsewhere set the GPIO "
            "backend to 'mock'"
        ) from exc


class RPiGpioPin(Pin):
    def __init__(self, factory: RPiGpioFactory, number: int) -> None:
        super().__init__(factory, number)
        self._gpio: Any = factory.gpio
        self._detecting = False
        self._poller: threading.Thread | None = None
        self._stop_poll = threading.Event()

    def output(self, initial: bool = False) -> None:
        g = self._gpio
        g.setup(self.number, g.OUT, initial=g.HIGH if initial else g.LOW)
        self.mode = "output"

    def input(self, pull: Pull = Pull.NONE) -> None:
        g = self._gpio
        bias = {Pull.UP: g.PUD_UP, Pull.DOWN: g.PUD_DOWN, Pull.NONE: g.PUD_OFF}[pull]
        g.setup(self.number, g.IN, pull_up_down=bias)
        self.mode = "input"

    def write(self, level: bool) -> None:
        self._require("output")
        g = self._gpio
        g.output(self.number, g.HIGH if level else g.LOW)

    def read(self) -> bool:
        return bool(self._gpio.input(self.number))

    def on_edge(self, callback: EdgeCallback | None, edge: Edge = Edge.BOTH) -> None:
        self._require("input")
        self._stop_listening()
        if callback is None:
            return
        g = self._gpio
        ticks = self.factory.ticks

        def heard(_channel: int) -> None:
            callback(bool(g.input(self.number)), ticks())

        kind = {Edge.RISING: g.RISING, Edge.FALLING: g.FALLING, Edge.BOTH: g.BOTH}[edge]
        try:
            g.add_event_detect(self.number, kind, callback=heard)
            self._detecting = True
        except RuntimeError:
            # "Failed to add edge detection": some kernels refuse it; poll instead.
            self._start_polling(callback, edge)

    def _start_polling(self, callback: EdgeCallback, edge: Edge) -> None:
        self._stop_poll.clear()
        last = self.read()

        def poll() -> None:
            nonlocal last
            while not self._stop_poll.wait(POLL_INTERVAL_S):
                level = self.read()
                if level != last:
                    last = level
                    if edge is Edge.BOTH or (edge is Edge.RISING) == level:
                        callback(level, self.factory.ticks())

        self._poller = threading.Thread(target=poll, name=f"gpio{self.number}-poll", daemon=True)
        self._poller.start()

    def _stop_listening(self) -> None:
        if self._detecting:
            self._gpio.remove_event_detect(self.number)
            self._detecting = False
        if self._poller is not None:
            self._stop_poll.set()
            self._poller.join(timeout=1.0)
            self._poller = None

    def close(self) -> None:
        if self.mode == "input":
            self._stop_listening()
        if self.mode is not None:
            # Back to an input without pull: only this pin, as another process (or the
            # kernel) may own the rest of the header.
            self._gpio.cleanup(self.number)
        self.mode = None
        self.factory.release(self)


class RPiGpioFactory(PinFactory):
    """The Pi's header through RPi.GPIO (rpi-lgpio), BCM numbers."""

    name = "rpi"

    def __init__(self) -> None:
        super().__init__()
        self.gpio: Any = _load_gpio()
        self.gpio.setwarnings(False)  # a previous run's pins: we set them up again anyway
        self.gpio.setmode(self.gpio.BCM)

    def _make_pin(self, number: int) -> Pin:
        return RPiGpioPin(self, number)

    def board_info(self) -> dict[str, str]:
        """What the library says about the board and itself, for the health page."""
        info: dict[str, str] = {"library": f"RPi.GPIO {getattr(self.gpio, 'VERSION', '?')}"}
        rpi = getattr(self.gpio, "RPI_INFO", None)
        if isinstance(rpi, dict):
            info |= {f"board_{k.lower()}": str(v) for k, v in rpi.items() if v is not None}
        return info
