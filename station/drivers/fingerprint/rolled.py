"""Rolled-print composition: one nail-to-nail image from the frames of a roll.

A rolled scanner streams the contact window of each frame (:class:`.frames.RollFrame`)
while the officer rolls the finger. :class:`RollComposer` builds the rolled image as the
frames arrive, the way rolled scanners do:

1. segment each frame: 16 x 16 px blocks whose grey-level spread shows ridges are contact
   (bare glass is flat, dry ridges are faint but still far above the sensor noise);
2. track the contact band: its centre on each block row (the band tilts with the finger
   and bows at the fingertip), its width and extent;
3. stitch with a seam rule: every platen pixel keeps the value of the frame in which it
   was nearest the centre of contact. Nothing is averaged across frames: near the band
   edges the skin stretches a few pixels differently in every frame, and an average of
   such frames ghosts (doubled, blurred ridges);
4. check the roll: consecutive frames must overlap (else gaps: :class:`RollTooFast`), show
   the same skin where they overlap (phase correlation on the shared region; a jump means
   the finger slid: :class:`SmearedRoll`), and the print must be several band widths wide
   (else the finger was pressed, not rolled nail to nail: :class:`RollTooShort`).

The composite does not depend on the order in which frames arrive: a pixel's owner is the
frame nearest its centre, ties going to the lower frame index; duplicates of a frame index
are ignored; the checks between consecutive frames run in frame-index order.

Per frame the work is one block-statistics pass over the window, a masked copy into the
canvas and one small phase correlation: about 1.3 ms per frame on one x86-64 core
(docs/protocols/rolled-capture.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from station.drivers.fingerprint.frames import PLATEN_HEIGHT, PLATEN_WIDTH, RollFrame

__all__ = [
    "BLOCK",
    "NoContact",
    "RollComposer",
    "RollError",
    "RollTooFast",
    "RollTooShort",
    "RolledCapture",
    "SmearedRoll",
    "compose",
]

PPI = 500

BLOCK = 16
"""Block side (px) of the contact segmentation: about two ridge periods at 500 ppi."""
CONTACT_STD = 10.0
"""Grey-level standard deviation (after a 3 x 3 box) above which a block is skin. Bare
glass with the synthetic scanner's noise measures at most 0.9 with 8-bit pixels and 3.6
with 4-bit ones (noise flickering across a level); a roll's skin blocks a median of 29-49
for normal skin and 16-34 for dry skin (lighter, broken ridges, but still ridges)."""
MIN_ROW_BLOCKS = 2
"""Contact blocks a block row needs to count (one stray block is dirt, not a finger)."""
MIN_FRAME_BLOCKS = 8
"""Contact blocks a frame needs to count as a frame of the roll (8 blocks = 2,048 px^2)."""
MAX_STEP_FRACTION = 0.5
"""Largest advance of the band between consecutive frames, as a fraction of the roll's
median (detected) band width. Normal and dry synthetic rolls (1-1.5 s at 25 fps, 60 rolls)
advance at most 0.22 of a band per frame, so a dropped frame still passes; ``too_fast``
rolls advance 1.4-1.8. Above a half, the seam falls where the pressure has faded and the
skin stretches, and the overlap left to check for slips is thin."""
SLIP_PX = 3.0
"""Displacement (px) of the skin between consecutive frames that makes a roll smeared.
Normal and dry synthetic rolls measure at most 0.7 px; ``smeared`` rolls 5.6-10 px."""
SLIP_WARN_PX = 1.5
"""Displacement that is reported as a warning, not an error."""
MIN_RESPONSE = 0.4
"""Phase-correlation peak below which two frames do not show the same skin where they
overlap (the finger slid further than the patch can tell). Pairs of a synthetic roll, with
or without a slip, peak at 0.78 or more; patches of unrelated skin at 0.23 at most. A real
scanner's pairs peak lower (pressure and moisture change): re-measure there."""
PATCH = 128
"""Side (px) of the patch compared between consecutive frames: about 14 ridges."""
MIN_ROLL_RATIO = 2.8
"""Rolled width over the (detected) contact band width below which the finger was not
rolled nail to nail. A flat press is 1; full synthetic rolls (normal and dry, 8- and 4-bit
pixels, 120 rolls) measure 3.4-4.9 (the band is a third of the finger; its faded edges do
not count), ``partial`` rolls (a quarter of the way) 1.6-2.3. The band's share of the
finger differs on real fingers and scanners: re-measure there."""
MIN_FRAMES = 3
"""Frames with contact a roll needs at the very least."""
FAINT_CONTRAST = 27.0
"""Median contact-block spread below which the print is reported as faint (dry skin or
light pressure). Normal synthetic rolls measure 29-51, dry ones 16-37 (median 25)."""


class RollError(Exception):
    """A roll that cannot make a rolled print. ``code`` is stable (for logs, the UI and the
    wire); the message tells the officer what to do."""

    code = "roll_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoContact(RollError):  # noqa: N818 (names the driver interface fixes)
    """No finger on the glass, or nothing rolled."""

    code = "no_contact"


class SmearedRoll(RollError):  # noqa: N818 (names the driver interface fixes)
    """The finger slid on the glass during the roll."""

    code = "smeared"


class RollTooFast(RollError):  # noqa: N818 (names the driver interface fixes)
    """The band moved too far between frames: gaps in the print."""

    code = "too_fast"


class RollTooShort(RollError):  # noqa: N818 (names the driver interface fixes)
    """Not rolled nail to nail: the print is too narrow."""

    code = "too_short"


@dataclass
class RolledCapture:
    """A composed rolled print and how the roll went."""

    image: NDArray[np.uint8] = field(repr=False)
    """(platen height, platen width), dark ridges on light ground; bare glass elsewhere."""
    frames_used: int
    """Frames that gave at least one pixel of the image."""
    frames_received: int
    """Distinct frames added (duplicates not counted), with or without contact."""
    duration_ms: int
    """From the first to the last frame with contact."""
    width_px: int
    """Rolled width: the extent of contact across the roll."""
    band_px: int
    """Median width of the contact band in one frame."""
    left_px: int
    right_px: int
    """Platen columns where the rolled contact starts and ends."""
    direction: int
    """+1 rolled left to right on the platen, -1 right to left."""
    max_step_px: float
    """Largest advance of the band between consecutive frames."""
    max_slip_px: float
    """Largest skin displacement measured between consecutive frames."""
    contrast: float
    """Median grey-level spread of the contact blocks (faint prints are low)."""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Band:
    """What segmentation found in one frame, in platen coordinates."""

    frame: RollFrame
    rows: NDArray[np.float64]
    """Centres (y) of the block rows with contact."""
    centres: NDArray[np.float64]
    """Band centre (x) on each of those rows."""
    left: float
    right: float
    top: float
    bottom: float
    width: float
    """Median band width over the rows, px."""
    contrast: float
    background: float
    """Median grey of the glass blocks (nan when the window has none)."""

    def centre_at(self, y: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = np.interp(y, self.rows, self.centres)
        return out


def _block_stats(pixels: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Mean and standard deviation of every ``BLOCK`` x ``BLOCK`` block of the lightly
    smoothed window (edge blocks padded by replication)."""
    h, w = pixels.shape
    bh, bw = -(-h // BLOCK), -(-w // BLOCK)
    # A 3 x 3 box first: it cuts pixel noise (and the flicker of 4-bit pixels between two
    # levels on bare glass) by 3, and ridges, 9 px apart, by much less.
    img = np.asarray(cv2.blur(pixels.astype(np.float32), (3, 3)), np.float32)
    if (bh * BLOCK, bw * BLOCK) != (h, w):
        pad = (0, bh * BLOCK - h, 0, bw * BLOCK - w)
        img = np.asarray(cv2.copyMakeBorder(img, *pad, cv2.BORDER_REPLICATE), np.float32)
    # INTER_AREA by an integer factor is the exact block mean, and fast.
    mean = np.asarray(cv2.resize(img, (bw, bh), interpolation=cv2.INTER_AREA), np.float32)
    sq = np.asarray(cv2.resize(img * img, (bw, bh), interpolation=cv2.INTER_AREA), np.float32)
    std = np.sqrt(np.maximum(sq - mean * mean, np.float32(0.0)))
    return mean, std


def _median3(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Running median of three (keeps a tilt, drops a one-row outlier)."""
    if a.size < 3:
        return a
    out = a.copy()
    out[1:-1] = np.median(np.stack([a[:-2], a[1:-1], a[2:]]), axis=0)
    return out


def _segment(frame: RollFrame) -> _Band | None:
    if frame.pixels.size == 0:
        return None
    mean, std = _block_stats(frame.pixels)
    skin = std > CONTACT_STD
    if int(skin.sum()) < MIN_FRAME_BLOCKS:
        return None
    counts = skin.sum(axis=1)
    keep = np.nonzero(counts >= MIN_ROW_BLOCKS)[0]
    if keep.size == 0:
        return None
    sub = skin[keep]
    # First and last contact block of each row (dry skin leaves holes between them).
    first = np.argmax(sub, axis=1)
    last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    lo = frame.x + first * BLOCK
    hi = frame.x + (last + 1) * BLOCK
    glass = mean[~skin]
    return _Band(
        frame=frame,
        rows=(frame.y + (keep + 0.5) * BLOCK).astype(np.float64),
        centres=_median3((lo + hi) / 2.0),
        left=float(lo.min()),
        right=float(hi.max()),
        top=float(frame.y + keep[0] * BLOCK),
        bottom=float(frame.y + (keep[-1] + 1) * BLOCK),
        width=float(np.median(hi - lo)),
        contrast=float(np.median(std[skin])),
        background=float(np.median(glass)) if glass.size else math.nan,
    )


_HANN: dict[tuple[int, int], NDArray[np.float32]] = {}


def _hann(w: int, h: int) -> NDArray[np.float32]:
    if (w, h) not in _HANN:
        _HANN[(w, h)] = np.asarray(cv2.createHanningWindow((w, h), cv2.CV_32F), np.float32)
    return _HANN[(w, h)]


@dataclass(frozen=True)
class _Shift:
    """Skin displacement between two frames (px) and how well their patches agree."""

    dx: float
    dy: float
    response: float
    """Phase-correlation peak: near 1 for the same skin, low for different skin."""


def _displacement(a: _Band, b: _Band) -> _Shift | None:
    """How far the skin moved from frame ``a`` to frame ``b`` (phase correlation), on a
    patch midway between their band centres, where both pressed fully and neither
    stretched; None when they share too small a region to compare."""
    top, bottom = max(a.top, b.top), min(a.bottom, b.bottom)
    side_y = min(PATCH, int(bottom - top))
    if side_y < PATCH // 2:
        return None
    mid = np.array([(top + bottom) / 2.0])
    cx = float((a.centre_at(mid)[0] + b.centre_at(mid)[0]) / 2.0)
    fa, fb = a.frame, b.frame
    # The patch must lie inside both windows and both bands.
    x_lo = max(fa.x, fb.x, a.left, b.left)
    x_hi = min(fa.x + fa.width, fb.x + fb.width, a.right, b.right)
    side_x = min(PATCH, int(x_hi - x_lo))
    if side_x < PATCH // 4:
        return None
    x0 = int(min(max(cx - side_x / 2, x_lo), x_hi - side_x))
    y0 = int(mid[0] - side_y / 2)
    pa = fa.pixels[y0 - fa.y : y0 - fa.y + side_y, x0 - fa.x : x0 - fa.x + side_x]
    pb = fb.pixels[y0 - fb.y : y0 - fb.y + side_y, x0 - fb.x : x0 - fb.x + side_x]
    if pa.shape != (side_y, side_x) or pb.shape != (side_y, side_x):
        return None
    (dx, dy), response = cv2.phaseCorrelate(
        pa.astype(np.float32), pb.astype(np.float32), _hann(side_x, side_y)
    )
    return _Shift(float(dx), float(dy), float(response))


class RollComposer:
    """Composes a rolled print from frames as they arrive (see the module docstring).

    >>> composer = RollComposer()
    >>> for frame in frames:          # from the scanner, in order or not
    ...     composer.add(frame)
    >>> capture = composer.finish()   # or a RollError saying what to do
    """

    def __init__(self, platen: tuple[int, int] = (PLATEN_WIDTH, PLATEN_HEIGHT)) -> None:
        width, height = platen
        if width <= 0 or height <= 0:
            raise ValueError("platen size must be positive")
        self.platen = (width, height)
        self._canvas = np.zeros((height, width), np.uint8)
        self._dist = np.full((height, width), np.inf, np.float32)
        self._owner = np.full((height, width), np.iinfo(np.int32).max, np.int32)
        self._bands: dict[int, _Band] = {}
        self._seen: set[int] = set()
        self._last = -1
        self._duplicates = 0
        self._out_of_order = 0
        self._pairs: dict[tuple[int, int], _Shift | None] = {}

    def add(self, frame: RollFrame) -> None:
        """Take one frame: segment it, stitch it into the canvas, compare it with the frame
        before it. A frame index seen before is ignored (first copy wins)."""
        width, height = self.platen
        if frame.pixels.ndim != 2 or frame.pixels.dtype != np.uint8:
            raise ValueError("frame pixels must be a 2-D uint8 array")
        if frame.x < 0 or frame.y < 0 or frame.x + frame.width > width:
            raise ValueError(f"frame {frame.index} window lies outside the platen")
        if frame.y + frame.height > height:
            raise ValueError(f"frame {frame.index} window lies outside the platen")
        if frame.index in self._seen:
            self._duplicates += 1
            return
        self._seen.add(frame.index)
        if frame.index < self._last:
            self._out_of_order += 1
        band = _segment(frame)
        if band is not None:
            self._bands[frame.index] = band
            self._stitch(band)
            # In-order arrival (the normal case): check against the previous frame now, so
            # that finish() has little left to do.
            if frame.index > self._last and self._last in self._bands:
                self._pair(self._bands[self._last], band)
        self._last = max(self._last, frame.index)

    def _stitch(self, band: _Band) -> None:
        f = band.frame
        ys = np.arange(f.y, f.y + f.height, dtype=np.float64) + 0.5
        xs = np.arange(f.x, f.x + f.width, dtype=np.float32) + np.float32(0.5)
        centre = band.centre_at(ys).astype(np.float32)
        dist = np.abs(xs[None, :] - centre[:, None])
        region = np.s_[f.y : f.y + f.height, f.x : f.x + f.width]
        best, owner = self._dist[region], self._owner[region]
        win = dist < best
        win |= (dist == best) & (owner > f.index)
        np.copyto(self._canvas[region], f.pixels, where=win)
        np.copyto(best, dist, where=win)
        owner[win] = f.index

    def _pair(self, a: _Band, b: _Band) -> _Shift | None:
        key = (a.frame.index, b.frame.index)
        if key not in self._pairs:
            self._pairs[key] = _displacement(a, b)
        return self._pairs[key]

    def finish(self) -> RolledCapture:
        """The rolled print, or the :class:`RollError` that says why there is none. Leaves
        the composer as it was (frames can still be added)."""
        bands = [self._bands[i] for i in sorted(self._bands)]
        if not bands:
            raise NoContact(
                "No finger was seen on the glass. Place the finger on its side, nail edge "
                "down, and roll it to the other nail edge."
            )
        warnings: list[str] = []
        direction = 1 if bands[-1].centres.mean() >= bands[0].centres.mean() else -1

        band_px = float(np.median([b.width for b in bands]))
        steps = self._check_steps(bands, band_px, direction, warnings)
        self._check_gaps(bands)
        slip = self._check_slips(bands, warnings)

        left = min(b.left for b in bands)
        right = max(b.right for b in bands)
        width = right - left
        if len(bands) < MIN_FRAMES or width < MIN_ROLL_RATIO * band_px:
            raise RollTooShort(
                f"The print is only {width / PPI * 25.4:.0f} mm wide ({len(bands)} frames): "
                "the finger was pressed, not rolled. Roll it fully from one nail edge to "
                "the other."
            )

        contrast = float(np.median([b.contrast for b in bands]))
        if contrast < FAINT_CONTRAST:
            warnings.append(
                f"faint ridges (contrast {contrast:.0f}): dry skin or light pressure; "
                "moisten the finger or press a little harder if quality is low"
            )
        if self._duplicates:
            warnings.append(f"{self._duplicates} duplicate frames ignored")
        if self._out_of_order:
            warnings.append(f"{self._out_of_order} frames arrived out of order")
        indices = sorted(self._seen)
        missing = indices[-1] - indices[0] + 1 - len(indices)
        if missing:
            warnings.append(f"{missing} frames missing from the stream")

        glass = [b.background for b in bands if not math.isnan(b.background)]
        background = round(float(np.median(glass))) if glass else 255
        written = self._owner != np.iinfo(np.int32).max
        image = np.where(written, self._canvas, np.uint8(background)).astype(np.uint8)
        # Owners are frame indices of this roll (a few dozen): count them with a bincount.
        first = bands[0].frame.index
        owned = np.bincount((self._owner[written] - first).ravel())
        return RolledCapture(
            image=image,
            frames_used=int(np.count_nonzero(owned)),
            frames_received=len(self._seen),
            duration_ms=bands[-1].frame.t_ms - bands[0].frame.t_ms,
            width_px=round(width),
            band_px=round(band_px),
            left_px=int(left),
            right_px=int(right),
            direction=direction,
            max_step_px=steps,
            max_slip_px=slip,
            contrast=contrast,
            warnings=warnings,
        )

    def _check_steps(
        self, bands: list[_Band], band_px: float, direction: int, warnings: list[str]
    ) -> float:
        """Band advance between consecutive frames: RollTooFast when it is a large part of
        the roll's typical band (gaps, or seams where the skin stretches). The typical band,
        not the pair's, so that one frame's scant contact does not move the bar."""
        worst = 0.0
        back = 0.0
        for a, b in itertools.pairwise(bands):
            top, bottom = max(a.top, b.top), min(a.bottom, b.bottom)
            if bottom <= top:
                raise RollTooFast(
                    f"Frames {a.frame.index} and {b.frame.index} do not overlap: the finger "
                    "left the glass or moved too fast. Roll again, slowly (1-2 s), keeping "
                    "the finger on the glass."
                )
            ys = np.linspace(top, bottom, 8)
            step = float(np.median(b.centre_at(ys) - a.centre_at(ys)))
            worst = max(worst, abs(step))
            back = max(back, -step * direction)
            if abs(step) > MAX_STEP_FRACTION * band_px:
                raise RollTooFast(
                    f"The finger moved {abs(step):.0f} px between frames {a.frame.index} and "
                    f"{b.frame.index}, leaving gaps. Roll again more slowly (1-2 s from nail "
                    "to nail)."
                )
        if back > BLOCK:
            warnings.append(f"the roll went back {back:.0f} px: roll in one direction")
        return worst

    def _check_gaps(self, bands: list[_Band]) -> None:
        """Columns inside the rolled extent that no frame's band covered."""
        spans = sorted((b.left, b.right) for b in bands)
        reach = spans[0][1]
        for lo, hi in spans[1:]:
            if lo > reach:
                raise RollTooFast(
                    f"Columns {reach:.0f}-{lo:.0f} were never in contact: gaps in the roll. "
                    "Roll again more slowly, keeping the finger on the glass."
                )
            reach = max(reach, hi)

    def _check_slips(self, bands: list[_Band], warnings: list[str]) -> float:
        worst = 0.0
        unmeasured = 0
        for a, b in itertools.pairwise(bands):
            shift = self._pair(a, b)
            if shift is None:
                unmeasured += 1
                continue
            size = math.hypot(shift.dx, shift.dy)
            if shift.response < MIN_RESPONSE:
                how = "so far that the skin no longer matches"
            elif size > SLIP_PX:
                how = f"{size:.0f} px"
            else:
                worst = max(worst, size)
                continue
            raise SmearedRoll(
                f"The finger slid {how} on the glass between frames {a.frame.index} and "
                f"{b.frame.index}: the print is smeared. Roll again with light, steady "
                "pressure, turning the finger without sliding it."
            )
        if worst > SLIP_WARN_PX:
            warnings.append(f"the skin moved up to {worst:.1f} px between frames")
        if unmeasured:
            warnings.append(f"{unmeasured} frame pairs overlap too little to check for slips")
        return worst


def compose(frames: Sequence[RollFrame]) -> RolledCapture:
    """Compose the rolled print of a whole roll at once (see :class:`RollComposer`)."""
    composer = RollComposer()
    for frame in frames:
        composer.add(frame)
    return composer.finish()
