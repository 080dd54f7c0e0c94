"""One camera frame as every backend delivers it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

RGBImage = NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Frame:
    image: RGBImage
    """H x W x 3, RGB order (not OpenCV's BGR), uint8."""
    timestamp: float
    """``time.monotonic()`` when the frame was captured."""
    sequence: int
    """The camera's frame counter from 0; a gap means frames were dropped (the consumer
    was slower than the camera and only ever gets the newest frame)."""
    metadata: Mapping[str, object] = field(default_factory=dict)
    """Backend facts about this frame (libcamera metadata, the simulated scene)."""

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])
