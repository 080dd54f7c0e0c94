"""The station's status light: an RGB LED (or three LEDs) showing ready, busy or error.

The citizen and the officer read the light from a metre away: green steady means
"ready, step up", blue blinking "working, wait", red fast blink "something needs the
officer". Colours and rhythms live in :data:`LOOKS` so a site can change them in one place.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from station.drivers.gpio.pattern import Levels, PatternPlayer
from station.drivers.gpio.pins import PinFactory


class Colour(tuple[bool, bool, bool]):
    """Which of the red, green and blue channels are lit."""

    __slots__ = ()

    def __new__(cls, red: bool, green: bool, blue: bool) -> Colour:
        return super().__new__(cls, (red, green, blue))


OFF = Colour(False, False, False)
RED = Colour(True, False, False)
GREEN = Colour(False, True, False)
BLUE = Colour(False, False, True)
AMBER = Colour(True, True, False)
WHITE = Colour(True, True, True)


class LightState(StrEnum):
    OFF = "off"
    READY = "ready"
    BUSY = "busy"
    ERROR = "error"
    CUSTOM = "custom"  # set directly with on() or blink()


@dataclass(frozen=True)
class Look:
    """A colour, steady (``blink`` None) or blinking (on seconds, off seconds)."""

    colour: Colour
    blink: tuple[float, float] | None = None


LOOKS: dict[LightState, Look] = {
    LightState.READY: Look(GREEN),
    LightState.BUSY: Look(BLUE, (0.5, 0.5)),
    LightState.ERROR: Look(RED, (0.2, 0.2)),
}


class StatusLight:
    """Three output pins (BCM) driving red, green and blue; ``active_high`` False for a
    common-anode LED (a channel lights when its pin is low)."""

    def __init__(
        self, factory: PinFactory, red: int, green: int, blue: int, active_high: bool = True
    ) -> None:
        self._active_high = active_high
        self._pins = []
        try:
            for number in (red, green, blue):
                pin = factory.pin(number)
                pin.output(not active_high)  # off
                self._pins.append(pin)
        except Exception:
            for pin in self._pins:
                pin.close()
            raise
        self._lock = threading.Lock()
        self._state = LightState.OFF
        self._player = PatternPlayer(self._show, f"status-light-{red}-{green}-{blue}")

    def _show(self, levels: Levels) -> None:
        for pin, lit in zip(self._pins, levels, strict=True):
            pin.write(lit == self._active_high)

    @property
    def state(self) -> LightState:
        with self._lock:
            return self._state

    @property
    def colour(self) -> Colour:
        """What is lit right now (mid-blink this flips between the colour and off)."""
        return Colour(*(pin.read() == self._active_high for pin in self._pins))

    def _set(self, state: LightState, look: Look, n: int | None = None) -> None:
        with self._lock:
            self._player.stop()
            self._state = state
            if look.blink is None:
                self._show(look.colour)
            else:
                on, off = look.blink
                self._player.play([(look.colour, on), (OFF, off)], n, OFF)

    def ready(self) -> None:
        self._set(LightState.READY, LOOKS[LightState.READY])

    def busy(self) -> None:
        self._set(LightState.BUSY, LOOKS[LightState.BUSY])

    def error(self) -> None:
        self._set(LightState.ERROR, LOOKS[LightState.ERROR])

    def off(self) -> None:
        self._set(LightState.OFF, Look(OFF))

    def on(self, colour: Colour = WHITE) -> None:
        """Light ``colour`` steadily."""
        self._set(LightState.CUSTOM, Look(colour))

    def blink(
        self,
        on_time: float = 0.5,
        off_time: float = 0.5,
        n: int | None = None,
        colour: Colour = WHITE,
    ) -> None:
        """Blink ``colour`` in the background, ``n`` times (None: until told otherwise),
        then stay off."""
        self._set(LightState.CUSTOM, Look(colour, (on_time, off_time)), n)

    def wait(self, timeout: float) -> bool:
        """Wait until a counted blink has finished (True) or ``timeout`` passed."""
        return self._player.wait(timeout)

    def close(self) -> None:
        self._player.stop()
        self._show(OFF)
        for pin in self._pins:
            pin.close()
