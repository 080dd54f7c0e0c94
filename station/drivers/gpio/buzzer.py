"""An active buzzer (it sounds while its pin is driven): short beep patterns.

Three patterns the station uses, distinct by ear without looking: *ok* a single short
beep (capture taken), *error* three quick beeps (retry), *attention* two long beeps
(the officer is needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from station.drivers.gpio.pattern import PatternPlayer, Step
from station.drivers.gpio.pins import PinFactory


class BeepPattern(StrEnum):
    OK = "ok"
    ERROR = "error"
    ATTENTION = "attention"


Beeps = tuple[tuple[float, float], ...]
"""(on seconds, off seconds) per beep."""

PATTERNS: dict[BeepPattern, Beeps] = {
    BeepPattern.OK: ((0.08, 0.0),),
    BeepPattern.ERROR: ((0.12, 0.08),) * 3,
    BeepPattern.ATTENTION: ((0.4, 0.2),) * 2,
}


class Buzzer:
    def __init__(self, factory: PinFactory, pin: int, active_high: bool = True) -> None:
        self._active_high = active_high
        self._pin = factory.pin(pin)
        self._pin.output(not active_high)
        self._player = PatternPlayer(self._sound, f"buzzer-{pin}")

    def _sound(self, levels: tuple[bool, ...]) -> None:
        self._pin.write(levels[0] == self._active_high)

    @property
    def is_active(self) -> bool:
        return self._pin.read() == self._active_high

    def play_beeps(self, beeps: Sequence[tuple[float, float]], background: bool = True) -> None:
        """Sound each (on, off) beep in turn; interrupts whatever was playing."""
        steps: list[Step] = []
        for on, off in beeps:
            steps += [((True,), on), ((False,), off)]
        self._player.play(steps, 1, (False,), background)

    def play(self, pattern: BeepPattern, background: bool = True) -> None:
        self.play_beeps(PATTERNS[pattern], background)

    def beep(
        self,
        on_time: float = 0.1,
        off_time: float = 0.1,
        n: int | None = 1,
        background: bool = True,
    ) -> None:
        """``n`` equal beeps (None: until :meth:`off`)."""
        self._player.play([((True,), on_time), ((False,), off_time)], n, (False,), background)

    def ok(self) -> None:
        self.play(BeepPattern.OK)

    def error(self) -> None:
        self.play(BeepPattern.ERROR)

    def attention(self) -> None:
        self.play(BeepPattern.ATTENTION)

    def on(self) -> None:
        self._player.stop()
        self._sound((True,))

    def off(self) -> None:
        self._player.stop()
        self._sound((False,))

    def wait(self, timeout: float) -> bool:
        """Wait for the pattern to finish (True) or ``timeout`` to pass."""
        return self._player.wait(timeout)

    def close(self) -> None:
        self.off()
        self._pin.close()
