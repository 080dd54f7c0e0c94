"""GPIO devices on the mock pin factory, and the RPi.GPIO backend against a fake module.

Timings are measured on the mock pins' recorded histories; tolerances are wide because
the test machine is shared (a pattern thread may wake a few ms late, never early).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import ValidationError

from station.drivers.gpio import (
    BLUE,
    GREEN,
    OFF,
    PATTERNS,
    RED,
    BeepPattern,
    Button,
    Buzzer,
    GpioError,
    GpioPins,
    GpioSettings,
    LevelChange,
    LightState,
    MockFactory,
    StatusLight,
    open_gpio,
)
from station.drivers.gpio.rpi import RPiGpioFactory
from station.drivers.health import DeviceHealthBoard

SLACK = 0.05  # late wake-ups on a busy machine (a late edge shortens its pulse)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    with MockFactory() as f:
        yield f


def pulses(changes: list[LevelChange]) -> list[tuple[float, float]]:
    """(high duration, following low duration or nan) for each high pulse."""
    out = []
    for i, c in enumerate(changes):
        if c.level and i + 1 < len(changes):
            low = changes[i + 2].t - changes[i + 1].t if i + 2 < len(changes) else float("nan")
            out.append((changes[i + 1].t - c.t, low))
    return out


# --------------------------------------------------------------------------- status light


def state_of(light: StatusLight) -> LightState:
    return light.state  # (a call: mypy would keep an earlier narrowing of the property)


def test_light_states_set_the_colour(factory: MockFactory) -> None:
    light = StatusLight(factory, red=17, green=27, blue=22)
    assert state_of(light) is LightState.OFF
    assert light.colour == OFF
    light.ready()
    assert state_of(light) is LightState.READY
    assert light.colour == GREEN
    light.error()
    assert state_of(light) is LightState.ERROR
    deadline = time.monotonic() + 1.0
    seen: set[tuple[bool, ...]] = set()
    while time.monotonic() < deadline and len(seen) < 2:
        seen.add(light.colour)
        time.sleep(0.01)
    assert seen == {RED, OFF}  # blinking red, green went out
    light.off()
    assert light.colour == OFF
    assert state_of(light) is LightState.OFF
    light.close()
    assert factory.reserved == []


def test_light_blink_timing_and_count(factory: MockFactory) -> None:
    light = StatusLight(factory, 17, 27, 22)
    light.blink(on_time=0.12, off_time=0.05, n=5, colour=RED)
    assert light.wait(timeout=5.0)
    red = factory.mock_pin(17).changes()
    assert [c.level for c in red] == [False] + [True, False] * 5
    ons, offs = zip(*pulses(red)[:-1], strict=True)
    for on, off in zip(ons, offs, strict=True):
        assert on == pytest.approx(0.12, abs=SLACK)
        assert off == pytest.approx(0.05, abs=SLACK)
    # One late wake-up may skew a pulse; the typical one is on time.
    assert float(np.median(ons)) == pytest.approx(0.12, abs=0.015)
    assert float(np.median(offs)) == pytest.approx(0.05, abs=0.015)
    # Absolute deadlines: five periods take five periods, not five periods plus drift.
    assert red[-1].t - red[1].t == pytest.approx(5 * 0.17 - 0.05, abs=SLACK)
    assert factory.mock_pin(27).levels() == [False]  # green never lit
    light.close()


def test_endless_blink_stops_cleanly_on_a_new_state(factory: MockFactory) -> None:
    light = StatusLight(factory, 17, 27, 22)
    light.busy()
    time.sleep(0.05)
    assert light.colour == BLUE
    before = {t.name for t in threading.enumerate()}
    assert any(name.startswith("status-light") for name in before)
    light.ready()  # stops the blink thread before lighting green
    assert not any(t.name.startswith("status-light") for t in threading.enumerate())
    n = len(factory.mock_pin(22).changes())
    time.sleep(0.6)  # longer than a busy half-period: nothing may change any more
    assert len(factory.mock_pin(22).changes()) == n
    assert light.colour == GREEN
    light.close()


def test_common_anode_light_drives_low_to_light(factory: MockFactory) -> None:
    light = StatusLight(factory, 17, 27, 22, active_high=False)
    assert [factory.mock_pin(n).read() for n in (17, 27, 22)] == [True, True, True]
    light.ready()
    assert factory.mock_pin(27).read() is False
    assert light.colour == GREEN
    light.close()


# --------------------------------------------------------------------------- buzzer


def test_buzzer_patterns_sound_as_specified(factory: MockFactory) -> None:
    buzzer = Buzzer(factory, 18)
    pin = factory.mock_pin(18)
    buzzer.play(BeepPattern.ERROR)
    assert buzzer.wait(timeout=3.0)
    beeps = pulses(pin.changes())
    assert len(beeps) == 3
    for (on, _), (want_on, _) in zip(beeps, PATTERNS[BeepPattern.ERROR], strict=True):
        assert on == pytest.approx(want_on, abs=SLACK)
    assert not buzzer.is_active

    start = time.monotonic()
    buzzer.play(BeepPattern.OK, background=False)  # blocks for the beep
    assert time.monotonic() - start >= PATTERNS[BeepPattern.OK][0][0] - 1e-3
    assert len(pulses(pin.changes())) == 4

    buzzer.beep(0.02, 0.02, n=None)  # endless until off()
    time.sleep(0.15)
    buzzer.off()
    n = len(pin.changes())
    assert n >= 4 + 4 * 2
    time.sleep(0.1)
    assert len(pin.changes()) == n
    assert not buzzer.is_active
    buzzer.close()


def test_attention_is_longer_than_error(factory: MockFactory) -> None:
    total = {p: sum(on + off for on, off in PATTERNS[p]) for p in BeepPattern}
    assert total[BeepPattern.OK] < total[BeepPattern.ERROR] < total[BeepPattern.ATTENTION]
    assert len({len(PATTERNS[p]) for p in BeepPattern}) == 3  # told apart by count, too


# --------------------------------------------------------------------------- button


def test_button_debounce_counts_a_bouncy_press_once(factory: MockFactory) -> None:
    button = Button(factory, 23, bounce_time=0.05)
    pin = factory.mock_pin(23)
    assert pin.read() is True
    assert not button.is_pressed
    pressed: list[float] = []
    released: list[float] = []
    button.when_pressed = lambda: pressed.append(time.monotonic())
    button.when_released = lambda: released.append(time.monotonic())
    for level in (False, True, False, True, False):  # contact bounce, all within ~1 ms
        pin.drive(level)
    assert button.is_pressed
    assert button.presses == 1
    assert len(pressed) == 1
    time.sleep(0.1)
    assert button.is_pressed
    assert not released
    pin.drive_high()
    assert released
    assert not button.is_pressed
    time.sleep(0.1)
    pin.drive_low()
    assert button.presses == 2
    assert len(pressed) == 2
    button.close()


def test_button_release_hidden_in_bounce_is_noticed(factory: MockFactory) -> None:
    button = Button(factory, 23, bounce_time=0.04)
    pin = factory.mock_pin(23)
    released = threading.Event()
    button.when_released = released.set
    pin.drive_low()
    pin.drive_high()  # a tap shorter than the bounce window
    assert button.is_pressed  # ignored for now...
    assert released.wait(timeout=1.0)  # ...and read again when the window closed
    assert not button.is_pressed
    assert button.presses == 1
    button.close()


def test_wait_for_press_times_out_and_wakes(factory: MockFactory) -> None:
    button = Button(factory, 23)
    start = time.monotonic()
    assert button.wait_for_press(timeout=0.1) is False
    assert 0.1 - 1e-3 <= time.monotonic() - start < 1.0
    timer = threading.Timer(0.05, factory.mock_pin(23).drive_low)
    timer.start()
    start = time.monotonic()
    assert button.wait_for_press(timeout=5.0) is True
    assert time.monotonic() - start < 1.0
    timer.join()
    assert button.wait_for_press(timeout=0.0) is True  # held down: true at once
    button.close()


def test_pins_are_reserved_once(factory: MockFactory) -> None:
    Button(factory, 23)
    with pytest.raises(GpioError, match="already in use"):
        Buzzer(factory, 23)
    with pytest.raises(GpioError, match="BCM 0-27"):
        Buzzer(factory, 40)
    with pytest.raises(GpioError, match="not set up as an output"):
        factory.mock_pin(23).write(True)


# --------------------------------------------------------------------------- settings, health


def test_open_gpio_mock_fills_health_with_the_pin_map() -> None:
    board = DeviceHealthBoard()
    with open_gpio(GpioSettings(backend="mock"), board) as gpio:
        h = board.get("gpio")
        assert h.ok
        assert h.kind == "gpio"
        assert h.model == "mock"
        assert h.backend == "mock"
        assert h.details["pin_red"] == "GPIO17"
        assert h.details["pin_button"] == "GPIO23"
        gpio.light.ready()
        assert gpio.light.colour == GREEN
        factory = gpio.factory
    assert factory.reserved == []


def test_settings_reject_shared_pins() -> None:
    with pytest.raises(ValidationError, match="share a GPIO pin"):
        GpioPins(red=18)
    with pytest.raises(ValidationError):
        GpioSettings.model_validate({"backend": "pigpio"})


# --------------------------------------------------------------------------- RPi.GPIO backend


class FakeGpio(ModuleType):
    """Just enough of RPi.GPIO's surface to record the calls the backend makes."""

    BCM, OUT, IN, HIGH, LOW = 11, 0, 1, 1, 0
    PUD_OFF, PUD_DOWN, PUD_UP = 20, 21, 22
    RISING, FALLING, BOTH = 31, 32, 33
    VERSION = "0.6"
    RPI_INFO: ClassVar[dict[str, object]] = {"TYPE": "Pi 5 Model B", "P1_REVISION": 3}

    def __init__(self, edge_detection: bool = True) -> None:
        super().__init__("RPi.GPIO")
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.levels: dict[int, int] = {}
        self.callbacks: dict[int, Callable[[int], None]] = {}
        self.edge_detection = edge_detection
        for name in ("setwarnings", "setmode", "setup", "output", "remove_event_detect"):
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))
            if name == "setup" and args[1] == self.IN:
                self.levels[args[0]] = 1 if kwargs.get("pull_up_down") == self.PUD_UP else 0

        return record

    def input(self, channel: int) -> int:
        return self.levels[channel]

    def add_event_detect(self, channel: int, edge: int, callback: Callable[[int], None]) -> None:
        self.calls.append(("add_event_detect", (channel, edge), {}))
        if not self.edge_detection:
            raise RuntimeError("Failed to add edge detection")
        self.callbacks[channel] = callback

    def cleanup(self, channel: int) -> None:
        self.calls.append(("cleanup", (channel,), {}))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args + tuple(kw.items()) for n, args, kw in self.calls if n == name]


def install(monkeypatch: pytest.MonkeyPatch, fake: ModuleType | None) -> None:
    package = ModuleType("RPi")
    if fake is not None:
        package.GPIO = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "RPi", package)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", fake)  # None: "import RPi.GPIO" fails


def test_rpi_backend_sets_up_bcm_pins_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    g = FakeGpio()
    install(monkeypatch, g)
    board = DeviceHealthBoard()
    gpio = open_gpio(GpioSettings(backend="rpi"), board)
    assert g.calls[:2] == [("setwarnings", (False,), {}), ("setmode", (g.BCM,), {})]
    assert g.named("setup") == [
        (17, g.OUT, ("initial", g.LOW)),
        (27, g.OUT, ("initial", g.LOW)),
        (22, g.OUT, ("initial", g.LOW)),
        (18, g.OUT, ("initial", g.LOW)),
        (23, g.IN, ("pull_up_down", g.PUD_UP)),
    ]
    assert g.named("add_event_detect") == [(23, g.BOTH)]
    h = board.get("gpio")
    assert h.ok
    assert h.model == "rpi"
    assert h.details["board_type"] == "Pi 5 Model B"
    assert h.details["library"] == "RPi.GPIO 0.6"

    gpio.light.ready()
    assert g.named("output")[-3:] == [(17, g.LOW), (27, g.HIGH), (22, g.LOW)]
    gpio.buzzer.on()
    assert g.named("output")[-1] == (18, g.HIGH)

    g.levels[23] = g.LOW  # the switch closes to ground; lgpio calls back on its thread
    g.callbacks[23](23)
    assert gpio.button.is_pressed
    assert gpio.button.presses == 1

    gpio.close()
    assert g.named("remove_event_detect") == [(23,)]
    assert sorted(g.named("cleanup")) == [(17,), (18,), (22,), (23,), (27,)]
    assert [o for o in g.named("output") if o[0] == 18][-1] == (18, g.LOW)  # silenced


def test_rpi_backend_polls_where_edge_detection_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = FakeGpio(edge_detection=False)
    install(monkeypatch, g)
    factory = RPiGpioFactory()
    button = Button(factory, 23, bounce_time=0.0)
    g.levels[23] = g.LOW
    assert button.wait_for_press(timeout=2.0)
    g.levels[23] = g.HIGH
    assert button.wait_for_release(timeout=2.0)
    button.close()
    assert not any(t.name == "gpio23-poll" for t in threading.enumerate())
    assert g.named("cleanup") == [(23,)]
    factory.close()


def test_rpi_backend_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)
    board = DeviceHealthBoard()
    with pytest.raises(GpioError, match="rpi-lgpio"):
        open_gpio(GpioSettings(backend="rpi"), board)
    h = board.get("gpio")
    assert not h.present
    assert h.last_error is not None
    assert "mock" in h.last_error
