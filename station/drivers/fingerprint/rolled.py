"""Rolled-print composition: one nail-to-nail image from the frames of a roll.

A rolled scanner streams the contact window of each frame (:class:`.frames.RollFrame`)
while the officer rolls the finger. :class:`RollComposer` builds the rolled image as the
frames arrive, the way rolled scanners do:

1. segment each frame: 16 x 16 px blocks whose grey-level spread shows ridges are contact
   (bare glass is flat, dry ridges are faint but still far above the sensor noise). A
   scanner that trims (:mod:`.band`) has done this itself and reports the band with the
   frame (``RollFrame.band``), sending only the columns around its centre; a whole window
   is measured here, with the same code;
2. track the contact band: its centre on each block row (the band tilts with the finger
   and bows at the fingertip), its width and extent;
3. stitch with a seam rule: every platen pixel keeps the value of the frame in which it
   was nearest the centre of contact. Nothing is averaged across frames: near the band
   edges the skin stretches a few pixels differently in every frame, and an average of
   such frames ghosts (doubled, blurred ridges);
4. check the roll: consecutive frames must overlap (else gaps: :class:`RollTooFast`; with
   trimmed frames, also no hole between the band centres that no frame sent), show the
   same skin where they overlap (phase correlation on a patch that follows the seam; a
   jump means the finger slid: :class:`SmearedRoll`), and the print must be several band
   widths wide (else the finger was pressed, not rolled nail to nail:
   :class:`RollTooShort`). The band widths come from the scanner's report when there is
   one: a trimmed frame no longer shows its whole band.

The composite does not depend on the order in which frames arrive: a pixel's owner is the
frame nearest its centre, ties going to the lower frame index; duplicates of a frame index
are ignored; the checks between consecutive frames run in frame-index order.

Per frame the work is one block-statistics pass over the window (none for a trimmed
frame), a masked copy into the canvas and one small phase correlation: about 1.3 ms per
whole window and 0.8 ms per trimmed frame on one x86-64 core
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

from station.drivers.fingerprint.band import (
    BLOCK,
    CONTACT_STD,
    SEAM_OVERLAP,
    centre_line,
    measure,
)
from station.drivers.fingerprint.frames import PLATEN_HEIGHT, PLATEN_WIDTH, RollFrame

__all__ = [
    "BLOCK",
    "CONTACT_STD",
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

MAX_STEP_FRACTION = 0.5
"""Largest advance of the band between consecutive frames, as a fraction of the roll's
median (detected) band width. Normal and dry synthetic rolls (1-1.5 s at 25 fps, 60 rolls)
advance at most 0.22 of a band per frame, so a dropped frame still passes; ``too_fast``
rolls advance 1.4-1.8. Above a half, the seam falls where the pressure has faded and the
skin stretches, and the overlap left to check for slips is thin."""
SLIP_PX = 3.0
"""Displacement (px) of the skin between consecutive frames that makes a roll smeared.
Normal and dry synthetic rolls measure at most 0.3 px (48 x 128 patch, whole or trimmed
frames, 8- or 4-bit pixels); ``smeared`` rolls 5.5-10 px."""
SLIP_WARN_PX = 1.5
"""Displacement that is reported as a warning, not an error."""
MIN_RESPONSE = 0.6
"""Phase-correlation peak below which two frames do not show the same skin where they
overlap (the finger slid further than the patch can tell). Consecutive frames of good
synthetic rolls peak at 0.93 or more with the 48 x 128 patch; patches of unrelated skin at
0.43 at most (the narrower patch lets chance agree more than the old 128 x 128 one did).
A real scanner's pairs peak lower (pressure and moisture change): re-measure there."""
PATCH_W = 48
"""Width (px) of the patch compared between consecutive frames (about 5 ridges): it must
fit in the columns consecutive trimmed frames share (``band.SEAM_OVERLAP``)."""
PATCH_H = 128
"""Height (px) of that patch: about 14 ridges along the finger."""
if PATCH_W > SEAM_OVERLAP - 4:
    raise ImportError("the slip-check patch must fit in the overlap of trimmed frames")
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


class FramesLost(RollTooFast):
    """Frames went missing on the link and left gaps: not the officer's doing. Counted
    apart so that a cable or port going bad shows up in the logs and the health board."""

    code = "frames_lost"


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
    """The contact band of one frame, in platen coordinates: from the scanner's report, or
    measured by the composer (the same rule, :func:`.band.measure`)."""

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
    """Grey of the bare glass (nan when the scanner saw none)."""
    sent: tuple[NDArray[np.int32], NDArray[np.int32]] | None
    """Per window row, the platen columns ``[start, end)`` the scanner sent (trimmed
    frames); None: the whole window."""

    def centre_at(self, y: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = np.interp(y, self.rows, self.centres)
        return out

    def columns(self, ys: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The platen columns ``[start, end)`` with pixels on platen rows ``ys`` (all in
        the window)."""
        f = self.frame
        if self.sent is None:
            return np.full(ys.size, f.x, np.int64), np.full(ys.size, f.x + f.width, np.int64)
        lo, hi = self.sent
        return lo[ys - f.y].astype(np.int64), hi[ys - f.y].astype(np.int64)


def _segment(frame: RollFrame) -> _Band | None:
    if frame.pixels.size == 0:
        return None
    report = frame.band
    sent: tuple[NDArray[np.int32], NDArray[np.int32]] | None = None
    if report is None:
        report = measure(frame)
    else:
        n = -(-frame.height // report.block)
        arrays = (report.left, report.right, report.sent_left, report.sent_right)
        if {len(a) for a in arrays} != {n}:
            raise ValueError(f"frame {frame.index} band report does not cover its window")
        sent = (
            np.repeat(report.sent_left, report.block)[: frame.height],
            np.repeat(report.sent_right, report.block)[: frame.height],
        )
    line = centre_line(frame.y, report)
    if line is None:
        return None
    rows, centres = line
    has = np.nonzero(report.right > report.left)[0]
    lo, hi = report.left[has], report.right[has]
    return _Band(
        frame=frame,
        rows=rows,
        centres=centres,
        left=float(lo.min()),
        right=float(hi.max()),
        top=float(frame.y + has[0] * report.block),
        bottom=float(frame.y + (has[-1] + 1) * report.block),
        width=float(np.median(hi - lo)),
        contrast=report.contrast,
        background=math.nan if report.glass is None else float(report.glass),
        sent=sent,
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
    patch centred, row by row, midway between their band centres, where both pressed fully
    and neither stretched (and where both trimmed frames have pixels); None when they
    share too small a region to compare. The patch follows the band's tilt: each of its
    rows is shifted to the midpoint on that row, the same in both frames."""
    fa, fb = a.frame, b.frame
    top = max(a.top, b.top, fa.y, fb.y)
    bottom = min(a.bottom, b.bottom, fa.y + fa.height, fb.y + fb.height)
    side_y = min(PATCH_H, int(bottom - top))
    if side_y < PATCH_H // 2:
        return None
    y0 = int((top + bottom) / 2 - side_y / 2)
    ys = np.arange(y0, y0 + side_y, dtype=np.int64)
    yc = ys.astype(np.float64) + 0.5
    mid = (a.centre_at(yc) + b.centre_at(yc)) / 2.0
    lo_a, hi_a = a.columns(ys)
    lo_b, hi_b = b.columns(ys)
    lo = np.maximum(np.maximum(lo_a, lo_b), math.ceil(max(a.left, b.left)))
    hi = np.minimum(np.minimum(hi_a, hi_b), math.floor(min(a.right, b.right)))
    room = float(np.min(np.minimum(mid - lo, hi - mid)))
    side_x = min(PATCH_W, 2 * math.floor(room) - 2)
    if side_x < PATCH_W // 2:
        return None
    x0 = np.clip(np.round(mid - side_x / 2).astype(np.int64), lo, hi - side_x)
    cols = x0[:, None] + np.arange(side_x)[None, :]
    rows = ys[:, None]
    pa = fa.pixels[rows - fa.y, cols - fa.x]
    pb = fb.pixels[rows - fb.y, cols - fb.x]
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
        if band.sent is not None:
            # A trimmed frame: only the pixels the scanner sent can win.
            lo, hi = band.sent
            cols = np.arange(f.x, f.x + f.width)
            win &= (cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None])
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
        self._check_coverage(bands)
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
                lost = b.frame.index - a.frame.index - 1
                if lost > 0 and abs(step) <= (lost + 1) * MAX_STEP_FRACTION * band_px:
                    raise FramesLost(
                        f"{lost} frames between frames {a.frame.index} and {b.frame.index} "
                        "were lost on the link, leaving gaps in the print. Roll again; if "
                        "this repeats, check the scanner's cable."
                    )
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

    def _check_coverage(self, bands: list[_Band]) -> None:
        """Pixels between the first and the last band centre of a platen row that no frame
        sent: trimmed frames carry only the columns around their seams, so a lost frame
        or a sudden jerk of the finger can leave a hole that the bands do not show."""
        if all(b.sent is None for b in bands):
            return  # full windows cover their whole band: _check_gaps has seen the holes
        height, width = self._canvas.shape
        lo = np.full(height, np.inf)
        hi = np.full(height, -np.inf)
        count = np.zeros(height, np.int32)
        for b in bands:
            f = b.frame
            ys = np.arange(max(int(b.top), f.y), min(int(b.bottom), f.y + f.height))
            c = b.centre_at(ys.astype(np.float64) + 0.5)
            np.minimum.at(lo, ys, c)
            np.maximum.at(hi, ys, c)
            count[ys] += 1
        rows = np.nonzero(count >= 2)[0]
        if rows.size == 0:
            return
        cols = np.arange(width) + 0.5
        inside = (cols[None, :] >= lo[rows, None]) & (cols[None, :] <= hi[rows, None])
        hole = inside & (self._owner[rows] == np.iinfo(np.int32).max)
        if not hole.any():
            return
        holes = np.nonzero(hole.any(axis=0))[0]
        indices = sorted(self._seen)
        lost = indices[-1] - indices[0] + 1 - len(indices)
        span = f"Columns {holes[0]}-{holes[-1]} of the print were never captured"
        if lost:
            raise FramesLost(
                f"{span} ({lost} frames were lost on the link). Roll again; if this "
                "repeats, check the scanner's cable."
            )
        raise RollTooFast(
            f"{span} (the finger moved too far between two frames). Roll again, slowly and "
            "steadily (1-2 s from nail to nail)."
        )

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
