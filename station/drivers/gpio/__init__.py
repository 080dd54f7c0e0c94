"""GPIO devices in the gpiozero style: small device classes over swappable pin factories.

>>> from station.drivers.gpio import GpioSettings, open_gpio
>>> with open_gpio(GpioSettings(backend="mock")) as gpio:
...     gpio.light.ready()
...     gpio.buzzer.ok()
...     gpio.button.wait_for_press(timeout=0.01)
False

See docs/protocols/gpio.md for the wiring.
"""

from station.drivers.gpio.button import Button
from station.drivers.gpio.buzzer import PATTERNS, BeepPattern, Buzzer
from station.drivers.gpio.devices import GpioDevices, make_pin_factory, open_gpio
from station.drivers.gpio.light import (
    AMBER,
    BLUE,
    GREEN,
    LOOKS,
    OFF,
    RED,
    WHITE,
    Colour,
    LightState,
    Look,
    StatusLight,
)
from station.drivers.gpio.mock import LevelChange, MockFactory, MockPin
from station.drivers.gpio.pins import Edge, GpioError, Pin, PinFactory, Pull
from station.drivers.gpio.rpi import RPiGpioFactory
from station.drivers.gpio.settings import GpioPins, GpioSettings

__all__ = [
    "AMBER",
    "BLUE",
    "GREEN",
    "LOOKS",
    "OFF",
    "PATTERNS",
    "RED",
    "WHITE",
    "BeepPattern",
    "Button",
    "Buzzer",
    "Colour",
    "Edge",
    "GpioDevices",
    "GpioError",
    "GpioPins",
    "GpioSettings",
    "LevelChange",
    "LightState",
    "Look",
    "MockFactory",
    "MockPin",
    "Pin",
    "PinFactory",
    "Pull",
    "RPiGpioFactory",
    "StatusLight",
    "make_pin_factory",
    "open_gpio",
]
