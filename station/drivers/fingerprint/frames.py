"""Frames a rolling finger produces, as they cross the wire and reach the composer.

A rolled scanner streams the *contact window* of each frame, not the whole 800 x 750
platen: the window is where the finger touches, so the link carries only what changes.
The composer (:mod:`.rolled`) places each window at ``(x, y)`` on the platen.

A scanner that measures the contact band itself (:mod:`.band`; CaptureRoll flag ``trim``)
also reports the band, block row by block row (:class:`BandReport`), and may send only
the pixels near the band centre that the composer uses; the rest of the window is then
filled with the glass level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PLATEN_WIDTH = 800
PLATEN_HEIGHT = 750
"""Rolled platen at 500 ppi: 1.6 x 1.5 inch, the FBI ten-print card box."""


@dataclass(frozen=True, slots=True)
class BandReport:
    """The contact band a scanner measured in one frame, and which pixels it sent.

    Record ``i`` covers the window rows ``[i * block, (i + 1) * block)``; all columns are
    platen columns, half-open ``[start, end)``.
    """

    block: int
    """Rows per record (16: the contact segmentation's block)."""
    left: NDArray[np.int32]
    right: NDArray[np.int32]
    """Where contact starts and ends on each record's rows; ``left == right``: none."""
    sent_left: NDArray[np.int32]
    sent_right: NDArray[np.int32]
    """The columns whose pixels the scanner sent on each record's rows (the whole window
    for a full frame); ``sent_left == sent_right``: none."""
    glass: int | None
    """Grey level of the bare glass the scanner saw around the band (None: no glass in
    the window)."""
    contrast: float
    """Median grey-level spread of the frame's contact blocks (0 without contact)."""

    @property
    def has_contact(self) -> bool:
        return bool(np.any(self.right > self.left))

    def sent_mask(self, height: int, width: int, x: int) -> NDArray[np.bool_]:
        """Which pixels of a ``height x width`` window at column ``x`` were sent."""
        lo = np.repeat(self.sent_left - x, self.block)[:height]
        hi = np.repeat(self.sent_right - x, self.block)[:height]
        cols = np.arange(width)
        out: NDArray[np.bool_] = (cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None])
        return out


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
    band: BandReport | None = None
    """The contact band as the scanner measured it (trimmed streams), or None: the
    composer segments the window itself."""

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])
