"""Drawn ridge patterns with known minutiae, for the extractor tests.

Coordinates: origin top-left, y down; directions counter-clockwise on screen (ISO).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

PERIOD = 10.0  # ridge period in pixels (500 ppi fingers: 8-11)


def _frame(size: int, theta: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(along, across) coordinates about the centre for direction ``theta``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    ux, uy = math.cos(theta), -math.sin(theta)  # screen vector of direction theta
    dx, dy = x - size / 2, y - size / 2
    return dx * ux + dy * uy, -dx * uy + dy * ux


def _finish(ridge: NDArray[np.float64], size: int) -> NDArray[np.uint8]:
    y, x = np.mgrid[0:size, 0:size]
    inside = np.hypot(x - size / 2, y - size / 2) < 0.43 * size
    return np.where(inside, np.clip(128 - 100 * ridge, 0, 255), 255).astype(np.uint8)


def cut_ridge(theta: float, size: int = 400) -> NDArray[np.uint8]:
    """Parallel ridges along ``theta``; the one through the centre stops there, its body
    on the side opposite to ``theta`` (so the ending's direction is ``theta + pi``)."""
    along, across = _frame(size, theta)
    ridge = np.cos(2 * math.pi * across / PERIOD)
    gap = (np.abs(across) < PERIOD / 2) & (along > 0)
    return _finish(np.where(gap, -1.0, ridge), size)


def dislocation(theta: float, ridge_ending: bool = True, size: int = 400) -> NDArray[np.uint8]:
    """One phase dislocation at the centre: a ridge ending or, in inverted contrast, a
    bifurcation at the same point with the same direction."""
    along, across = _frame(size, theta)
    phase = 2 * math.pi * across / PERIOD + np.arctan2(across, along)
    sign = 1.0 if ridge_ending else -1.0
    return _finish(sign * np.cos(phase), size)


def dislocations(width: int = 480, height: int = 400, seed: int = 0) -> NDArray[np.uint8]:
    """A ridge field with a dozen dislocations of either sign: many clean minutiae."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    theta = 0.6
    across = -(x * math.sin(theta)) + y * math.cos(theta)
    phase = 2 * math.pi * across / PERIOD
    for cx in np.linspace(70, width - 70, 4):
        for cy in np.linspace(70, height - 70, 3):
            jx, jy = rng.uniform(-15, 15, 2)
            phase += rng.choice([-1.0, 1.0]) * np.arctan2(y - cy - jy, x - cx - jx)
    return np.clip(128 - 100 * np.cos(phase), 0, 255).astype(np.uint8)
