"""The simulated camera's exposure and colour: a small physical model, so controls act.

The scene has radiance (the rendered face is its own radiance; a backlit window is
several times brighter); the camera multiplies it by an exposure (time x gain) and
clips at white. Auto exposure meters the whole frame, as a simple AE does, so a bright
window behind someone darkens their face, and a fixed exposure set by the caller brings
it back (the window clips). The scene is lit by warm indoor light; auto white balance
neutralises it, a set colour temperature or red/blue gains tint it as a real camera would.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from station.drivers.camera.controls import Exposure, WhiteBalance

NOMINAL_EXPOSURE_US = 10_000
"""The exposure time at which the rendered face comes out as rendered (gain 1)."""
SCENE_KELVIN = 4200
AE_LIMITS = (1 / 16, 16.0)


def kelvin_rgb(kelvin: float) -> NDArray[np.float32]:
    """Relative R, G, B of a black body at ``kelvin`` (Tanner Helland's fit), G = 1."""
    t = kelvin / 100.0
    if t <= 66:
        r = 255.0
        g = 99.4708025861 * math.log(t) - 161.1195681661
        b = 0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307
    else:
        r = 329.698727446 * (t - 60) ** -0.1332047592
        g = 288.1221695283 * (t - 60) ** -0.0755148492
        b = 255.0
    rgb = np.clip(np.array([r, g, b], np.float32), 1.0, 255.0)
    out: NDArray[np.float32] = rgb / rgb[1]
    return out


def white_balance_factors(value: WhiteBalance) -> NDArray[np.float32]:
    """Per-channel factors from a rendered (neutral) image to the camera's output."""
    cast = kelvin_rgb(SCENE_KELVIN)  # what the sensor sees under the scene's light
    if value == "auto":
        return np.ones(3, np.float32)
    if isinstance(value, tuple):
        red, blue = value
        out: NDArray[np.float32] = cast * np.array([red, 1.0, blue], np.float32)
        return out
    out = cast / kelvin_rgb(value)
    return out


def exposure_factor(value: Exposure, metered: float, target: float) -> float:
    """Radiance multiplier: auto meters the frame toward ``target`` mean luminance."""
    if value == "auto":
        lo, hi = AE_LIMITS
        return min(max(target / max(metered, 1e-3), lo), hi)
    return value / NOMINAL_EXPOSURE_US


def luts(factors: NDArray[np.float32]) -> NDArray[np.uint8]:
    """A 256 x 1 x 3 table for cv2.LUT: out = clip(in x factor) per channel."""
    levels = np.arange(256, dtype=np.float32)[:, None] * factors[None, :]
    out: NDArray[np.uint8] = np.clip(levels + 0.5, 0, 255).astype(np.uint8)[:, None, :]
    return out
