"""The contact band of a roll frame: where the finger touches the glass, block row by block row.

Both ends of the link use it. The scanner's firmware (here: the simulator) measures the band
of every frame it captures and, when the host asks for trimmed frames (CaptureRoll flag
``trim``), reports the band and sends only the pixels the composer will use. The composer
(:mod:`.rolled`) measures full windows the same way when the scanner reports nothing, so
the seams fall in the same places whichever stream it gets.

**Measuring** (:func:`measure`): 16 x 16 px blocks whose grey-level spread, after a 3 x 3
box filter, exceeds 10 are skin. A block row needs two skin blocks, a frame eight. On each
block row the band runs from the first to the last skin block (dry skin leaves holes).

**Centre line** (:func:`centre_line`): the midpoint of the band on each block row with
contact, smoothed by a running median of three; between block rows it is interpolated.

**Trimming** (:func:`trim_roll`): the composer keeps, for every platen pixel, the frame in
which it lay nearest the band centre, so frame ``k`` only ever supplies the pixels between
the midpoints to its neighbours' centres; and it checks for slips on a patch centred on
those midpoints. A trimmed frame therefore keeps, on each block row, the columns from the
midpoint with the previous frame's centre to the midpoint with the next one's, widened by
``SEAM_OVERLAP / 2`` on each side (so consecutive frames share ``SEAM_OVERLAP`` columns
around their seam), and cut to the band plus one block. The first frame also keeps its
band out to the trailing edge, and the last one out to the leading edge (the nail edges of
the print). The firmware needs the next frame's band to trim a frame, so a trimmed frame
leaves one exposure (40 ms) later than a full one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from station.drivers.fingerprint.frames import BandReport, RollFrame

__all__ = [
    "BLOCK",
    "CONTACT_STD",
    "SEAM_OVERLAP",
    "block_stats",
    "centre_line",
    "measure",
    "place_sent",
    "sent_pixels",
    "trim_roll",
]

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
SEAM_OVERLAP = 52
"""Columns consecutive trimmed frames share around the midpoint of their band centres: the
composer's slip check compares a 48 px wide patch there (``rolled.PATCH_W``), plus 2 px
each side for rounding."""
MARGIN = BLOCK
"""How far past the measured band a trimmed frame may reach (the band's faded edge)."""
ROW_MARGIN = BLOCK
"""Rows above and below its band a trimmed frame keeps. The contact rows change from frame
to frame at the fingertip: where one frame has none, its neighbours may, and a whole
window would have supplied those pixels from its margin."""


def block_stats(pixels: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
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


def _int32(values: NDArray[np.generic] | list[int]) -> NDArray[np.int32]:
    out = np.asarray(values, np.int32)
    out.setflags(write=False)
    return out


def measure(frame: RollFrame) -> BandReport:
    """The contact band of a full window, per block row (all of the window counts as sent)."""
    h, w = frame.pixels.shape if frame.pixels.size else (0, 0)
    n = -(-h // BLOCK)
    left = np.full(n, frame.x, np.int32)
    right = left.copy()
    glass: int | None = None
    contrast = 0.0
    if frame.pixels.size:
        mean, std = block_stats(frame.pixels)
        skin = std > CONTACT_STD
        rows = skin.sum(axis=1) >= MIN_ROW_BLOCKS
        if int(skin.sum()) >= MIN_FRAME_BLOCKS and rows.any():
            sub = skin[rows]
            # First and last contact block of each row (dry skin leaves holes between them).
            first = np.argmax(sub, axis=1)
            last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
            left[rows] = frame.x + first * BLOCK
            right[rows] = frame.x + (last + 1) * BLOCK
            contrast = float(np.median(std[skin]))
        bare = mean[~skin]
        if bare.size:
            glass = round(float(np.median(bare)))
    return BandReport(
        block=BLOCK,
        left=_int32(left),
        right=_int32(right),
        sent_left=_int32(np.full(n, frame.x)),
        sent_right=_int32(np.full(n, frame.x + w)),
        glass=glass,
        contrast=contrast,
    )


def _median3(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Running median of three (keeps a tilt, drops a one-row outlier)."""
    if a.size < 3:
        return a
    out = a.copy()
    out[1:-1] = np.median(np.stack([a[:-2], a[1:-1], a[2:]]), axis=0)
    return out


def centre_line(
    y: int, report: BandReport
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """(rows, centres): the band centre (x) at the middle (y) of each block row with
    contact, for a window whose top row is ``y``; None without contact."""
    keep = np.nonzero(report.right > report.left)[0]
    if keep.size == 0:
        return None
    lo = report.left[keep].astype(np.float64)
    hi = report.right[keep].astype(np.float64)
    rows = y + (keep + 0.5) * report.block
    return rows.astype(np.float64), _median3((lo + hi) / 2.0)


def sent_pixels(frame: RollFrame) -> NDArray[np.uint8]:
    """The pixels a frame's report says were sent, row by row, as one run (the wire order)."""
    if frame.band is None:
        return np.ascontiguousarray(frame.pixels).reshape(-1)
    mask = frame.band.sent_mask(frame.height, frame.width, frame.x)
    out: NDArray[np.uint8] = frame.pixels[mask]
    return out


def place_sent(
    run: NDArray[np.uint8], report: BandReport, x: int, height: int, width: int
) -> NDArray[np.uint8]:
    """The window a trimmed frame's pixel run fills: sent pixels in place, the rest glass."""
    fill = report.glass if report.glass is not None else 255
    out = np.full((height, width), fill, np.uint8)
    mask = report.sent_mask(height, width, x)
    out[mask] = run[: int(mask.sum())]
    return out


def _trim_one(
    frame: RollFrame,
    report: BandReport,
    line: tuple[NDArray[np.float64], NDArray[np.float64]],
    prev: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
    nxt: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
    start: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
) -> RollFrame:
    h, w = frame.pixels.shape
    ys = frame.y + np.arange(h, dtype=np.float64) + 0.5
    centre = np.interp(ys, *line)
    lo = centre.copy()
    hi = centre.copy()
    for other in (prev, nxt):
        if other is not None:
            mid = (np.interp(ys, *other) + centre) / 2.0
            lo = np.minimum(lo, mid)
            hi = np.maximum(hi, mid)
    lo -= SEAM_OVERLAP / 2
    hi += SEAM_OVERLAP / 2
    # The first and last frames keep their band out to the nail edges of the print. The
    # first does not know yet which way the finger will roll: it keeps both sides; the
    # last keeps the side it rolled toward (from the first frame's centre).
    outer_left = outer_right = prev is None
    if nxt is None and prev is not None:
        travel = float(np.median(centre - np.interp(ys, *start))) if start else 0.0
        outer_left = travel < BLOCK
        outer_right = travel > -BLOCK
    n = len(report.left)
    band_rows = np.nonzero(report.right > report.left)[0]
    sent_left = np.zeros(n, np.int32)
    sent_right = np.zeros(n, np.int32)
    for i in range(n):
        # Block rows without contact between ones with it (a crease, dry skin), or within
        # ROW_MARGIN of them, keep the nearest one's band.
        near = band_rows[np.argmin(np.abs(band_rows - i))]
        inside = band_rows[0] <= i <= band_rows[-1]
        if not inside and abs(int(near) - i) * BLOCK > ROW_MARGIN:
            continue
        r0, r1 = i * BLOCK, min(h, (i + 1) * BLOCK)
        a = math.floor(float(lo[r0:r1].min()))
        b = math.ceil(float(hi[r0:r1].max()))
        band_lo = int(report.left[band_rows].min()) - MARGIN
        band_hi = int(report.right[band_rows].max()) + MARGIN
        if outer_left:
            a = band_lo
        if outer_right:
            b = band_hi
        a = max(a, band_lo, frame.x)
        b = min(b, band_hi, frame.x + w)
        if b > a:
            sent_left[i], sent_right[i] = a, b
    rows = np.nonzero(sent_right > sent_left)[0]
    i0, i1 = int(rows[0]), int(rows[-1]) + 1
    x0 = int(sent_left[rows].min())
    x1 = int(sent_right[rows].max())
    y0, y1 = i0 * BLOCK, min(h, i1 * BLOCK)
    trimmed = BandReport(
        block=BLOCK,
        left=_int32(report.left[i0:i1]),
        right=_int32(report.right[i0:i1]),
        sent_left=_int32(sent_left[i0:i1]),
        sent_right=_int32(sent_right[i0:i1]),
        glass=report.glass,
        contrast=report.contrast,
    )
    window = frame.pixels[y0:y1, x0 - frame.x : x1 - frame.x]
    mask = trimmed.sent_mask(y1 - y0, x1 - x0, x0)
    fill = report.glass if report.glass is not None else 255
    pixels = np.where(mask, window, np.uint8(fill)).astype(np.uint8)
    pixels.setflags(write=False)
    return RollFrame(frame.index, frame.t_ms, x0, frame.y + y0, pixels, trimmed)


def trim_roll(frames: Sequence[RollFrame]) -> list[RollFrame]:
    """What a scanner that trims sends for a roll's full frames (in capture order): each
    frame cut to the columns the composer uses, with its band report. Trimming frame ``k``
    looks at frames ``k - 1`` and ``k + 1`` only. A frame without contact becomes an empty
    window (the frame counter stays continuous)."""
    reports = [measure(f) for f in frames]
    lines = [centre_line(f.y, r) for f, r in zip(frames, reports, strict=True)]
    out: list[RollFrame] = []
    start: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
    for k, (frame, report, line) in enumerate(zip(frames, reports, lines, strict=True)):
        if line is None:
            empty = BandReport(
                BLOCK, _int32([]), _int32([]), _int32([]), _int32([]), report.glass, 0.0
            )
            out.append(RollFrame(frame.index, frame.t_ms, 0, 0, np.zeros((0, 0), np.uint8), empty))
            continue
        prev = lines[k - 1] if k > 0 else None
        nxt = lines[k + 1] if k + 1 < len(lines) else None
        if prev is None:
            start = line  # the finger (re)lands: a new run of contact starts here
        out.append(_trim_one(frame, report, line, prev, nxt, start))
    return out
