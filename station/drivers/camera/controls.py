"""Camera controls: exposure, white balance and gain, and which a backend supports.

Values cross backends in physical units: exposure time in microseconds, white balance
as a colour temperature in kelvin or as red and blue gains (green = 1), analogue gain as
a multiplier. A backend maps them to its own (libcamera's ExposureTime, V4L2's 100 us
steps) and says in :meth:`Camera.controls` which it can honour.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Auto = Literal["auto"]
Exposure = Auto | int
"""``"auto"`` or an exposure time in microseconds."""
WhiteBalance = Auto | int | tuple[float, float]
"""``"auto"``, a colour temperature in kelvin, or (red gain, blue gain)."""


class Control(StrEnum):
    AUTO_EXPOSURE = "auto_exposure"
    EXPOSURE_TIME = "exposure_time"
    AUTO_WHITE_BALANCE = "auto_white_balance"
    WHITE_BALANCE_KELVIN = "white_balance_kelvin"
    WHITE_BALANCE_GAINS = "white_balance_gains"
    GAIN = "gain"


ALL_CONTROLS = frozenset(Control)
KELVIN_RANGE = (1500, 15000)


def exposure_control(value: Exposure) -> Control:
    """The control a ``set_exposure`` value needs (and a check of the value)."""
    if value == "auto":
        return Control.AUTO_EXPOSURE
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"exposure must be 'auto' or a positive number of microseconds: {value!r}")
    return Control.EXPOSURE_TIME


def white_balance_control(value: WhiteBalance) -> Control:
    if value == "auto":
        return Control.AUTO_WHITE_BALANCE
    if isinstance(value, tuple):
        if len(value) != 2 or not all(g > 0 for g in value):
            raise ValueError(f"white balance gains are (red, blue), both > 0: {value!r}")
        return Control.WHITE_BALANCE_GAINS
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"white balance must be 'auto', kelvin or (red, blue): {value!r}")
    lo, hi = KELVIN_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"colour temperature {value} K is outside {lo}-{hi} K")
    return Control.WHITE_BALANCE_KELVIN


def check_gain(value: float) -> float:
    if not value > 0:
        raise ValueError(f"gain must be > 0: {value!r}")
    return float(value)
