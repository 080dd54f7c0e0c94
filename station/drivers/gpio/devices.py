"""The station's GPIO devices as one unit: status light, buzzer, capture button.

Built from :class:`~.settings.GpioSettings`; owns the pin factory and the GPIO health cell
(present with the backend and the pin map, or absent with the reason the backend failed).
"""

from __future__ import annotations

from typing import Self

from station.drivers.gpio.button import Button
from station.drivers.gpio.buzzer import Buzzer
from station.drivers.gpio.light import StatusLight
from station.drivers.gpio.mock import MockFactory
from station.drivers.gpio.pins import GpioError, PinFactory
from station.drivers.gpio.rpi import RPiGpioFactory
from station.drivers.gpio.settings import GpioSettings
from station.drivers.health import DeviceHealthBoard, DeviceKind, HealthCell


def make_pin_factory(settings: GpioSettings) -> PinFactory:
    """The backend the settings name."""
    if settings.backend == "rpi":
        return RPiGpioFactory()
    return MockFactory()


class GpioDevices:
    """Light, buzzer and button on one pin factory; close() releases every pin."""

    def __init__(self, factory: PinFactory, settings: GpioSettings, cell: HealthCell) -> None:
        self.factory = factory
        self.health = cell
        p = settings.pins
        self.light = StatusLight(factory, p.red, p.green, p.blue, settings.led_active_high)
        try:
            self.buzzer = Buzzer(factory, p.buzzer, settings.buzzer_active_high)
            self.button = Button(factory, p.button, bounce_time=settings.button_bounce_s)
        except Exception:
            factory.close()
            raise
        info = factory.board_info() if isinstance(factory, RPiGpioFactory) else {}
        pin_map = {f"pin_{name}": f"GPIO{n}" for name, n in p.as_map().items()}
        cell.present(model=factory.name, **pin_map, **info)

    def close(self) -> None:
        self.button.close()
        self.buzzer.close()
        self.light.close()
        self.factory.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_gpio(
    settings: GpioSettings,
    board: DeviceHealthBoard | None = None,
    factory: PinFactory | None = None,
) -> GpioDevices:
    """Build the GPIO devices from ``settings`` (or on a given ``factory``), registering
    their health cell on ``board``. A backend that cannot start marks the cell absent and
    raises :class:`GpioError`."""
    cell = HealthCell("gpio", DeviceKind.GPIO, settings.backend)
    if board is not None:
        board.register(cell)
    try:
        return GpioDevices(factory or make_pin_factory(settings), settings, cell)
    except GpioError as exc:
        cell.absent(str(exc))
        raise
