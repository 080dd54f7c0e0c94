"""Frames a rolling finger produces, as they cross the wire and reach the composer.

A rolled scanner streams the *contact window* of each frame, not the whole 800 x 750
platen: the window is where the finger touches, so the link carries only what changes.
The composer (:mod:`.rolled`) places each window at ``(x, y)`` on the platen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PLATEN_WIDTH = 800
PLATEN_HEIGHT = 750
"""Rolled platen at 500 ppi: 1.6 x 1.5 inch, the FBI ten-print card box."""


@dataclass(frozen=True, slots=True)
class RollFrame:
    """One frame of a roll: a window of the platen image, dark ridges on light ground."""

    index: int
    """Frame counter from the scanner, from 0 at the start of the roll."""
    t_ms: int
    """Scanner time of the exposure, milliseconds since the roll started."""
    x: int
    y: int
    """Top-left corner of the window on the platen, pixels."""
    pixels: NDArray[np.uint8]
    """Window image, shape (height, width)."""

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])
