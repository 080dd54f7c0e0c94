"""A push button or foot switch: active-low on a pull-up, debounced in software.

The switch closes to ground, so the pin reads low while pressed and the internal pull-up
holds it high otherwise: no external resistor, and a broken wire reads "not pressed".
Contacts bounce for a few milliseconds; the first edge counts at once (no added latency)
and further edges inside ``bounce_time`` are ignored, then the level is read again so a
release hidden in the bounce is not lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from station.drivers.gpio.pins import Edge, PinFactory, Pull

Handler = Callable[[], None]


class Button:
    def __init__(
        self,
        factory: PinFactory,
        pin: int,
        pull_up: bool = True,
        bounce_time: float = 0.02,
    ) -> None:
        if bounce_time < 0:
            raise ValueError("bounce_time must be >= 0")
        self.bounce_time = bounce_time
        self._pressed_level = not pull_up  # active-low on a pull-up
        self._pin = factory.pin(pin)
        self._pin.input(Pull.UP if pull_up else Pull.DOWN)
        self._cond = threading.Condition()
        self._pressed = self._pin.read() == self._pressed_level
        self._presses = 0
        self._last_change = float("-inf")
        self._recheck: threading.Timer | None = None
        self._closed = False
        self.when_pressed: Handler | None = None
        """Called (on the GPIO thread) at each debounced press; keep it short."""
        self.when_released: Handler | None = None
        self._pin.on_edge(self._edge, Edge.BOTH)

    @property
    def is_pressed(self) -> bool:
        with self._cond:
            return self._pressed

    @property
    def presses(self) -> int:
        """Debounced presses since the button was set up."""
        with self._cond:
            return self._presses

    def _edge(self, level: bool, t: float) -> None:
        with self._cond:
            if self._closed:
                return
            since = t - self._last_change
            if since < self.bounce_time:
                # Bounce: ignore, but look again when the window closes.
                if self._recheck is None:
                    self._recheck = threading.Timer(self.bounce_time - since, self._settle)
                    self._recheck.daemon = True
                    self._recheck.start()
                return
            handler = self._change(level == self._pressed_level, t)
        if handler is not None:
            handler()

    def _settle(self) -> None:
        level = self._pin.read()
        with self._cond:
            self._recheck = None
            if self._closed:
                return
            handler = self._change(level == self._pressed_level, self._pin.factory.ticks())
        if handler is not None:
            handler()

    def _change(self, pressed: bool, t: float) -> Handler | None:
        """Apply a debounced level (lock held); the handler to call after unlocking."""
        if pressed == self._pressed:
            return None
        self._pressed = pressed
        self._last_change = t
        if pressed:
            self._presses += 1
        self._cond.notify_all()
        return self.when_pressed if pressed else self.when_released

    def wait_for_press(self, timeout: float) -> bool:
        """True as soon as the button is pressed (at once if it is held now), False if
        ``timeout`` seconds pass first."""
        with self._cond:
            start = self._presses
            return self._cond.wait_for(
                lambda: self._pressed or self._presses != start, timeout=timeout
            )

    def wait_for_release(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pressed, timeout=timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            timer, self._recheck = self._recheck, None
            self._cond.notify_all()
        if timer is not None:
            timer.cancel()
        self._pin.on_edge(None)
        self._pin.close()
