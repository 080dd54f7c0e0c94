"""Synthetic rolls: the frames a rolled scanner streams while a finger rolls nail to nail.

The ground truth is a rolled impression from :mod:`biometrics.fingerprint.synth`. Its
master is the finger's skin unrolled, so a master column is one angle around the finger:
at each instant of the roll the skin touching the glass is a band of master columns
(about a third of the finger's width), and the platen shows that band where the rolled
impression has it. Sweeping the band's centre from one nail edge to the other is the roll.

Each frame is the contact window around the band:

- inside the band the rolled impression's ridges, their contrast falling with the
  pressure toward the band edges;
- near the leading and trailing edges a little lateral skin stretch, drawn afresh for each
  frame: the same skin lands a few pixels apart in different frames, which is what makes
  a naive per-pixel average of the frames ghost;
- outside the band bare glass, and sensor noise everywhere.

Scripts: ``normal``; ``dry`` (dry skin); ``partial`` (the finger is lifted after a quarter
of the roll: the print is too narrow); ``smeared`` (the finger slips: from a frame on, the
same skin is printed several pixels from where it was); ``too_fast`` (the band advances
more than its own width between frames, leaving gaps).

Everything is a pure function of the arguments. The ground-truth render (~0.25 s) is
cached; a frame is a slice of it, one remap and noise (a few ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.synth import (
    Impression,
    SkinCondition,
    contact_mask,
    impression,
    master_finger,
)
from biometrics.fingerprint.synth_impression import image_to_master
from station.drivers.fingerprint.frames import PLATEN_HEIGHT, PLATEN_WIDTH, RollFrame

__all__ = ["SCRIPTS", "ground_truth", "roll_direction", "roll_frames"]

SCRIPTS = ("normal", "dry", "partial", "smeared", "too_fast")
"""What :func:`roll_frames` can play."""

BAND_FRACTION = (0.30, 0.37)
"""Contact band width as a fraction of the nail-to-nail width (drawn per roll)."""
ROLL_MS = (1000.0, 1500.0)
"""Duration of a normal roll."""
PLATEAU = 0.4
"""Full pressure where |u| <= PLATEAU (u: -1..1 across the band); it falls to zero at the
band edge along a half cosine."""
STRETCH_PX = 8.0
"""Largest lateral skin stretch at a band edge, px; each frame draws its own in +-this."""
SHEAR_PX = 2.0
"""Largest vertical skin shift at a band edge, px (per frame, like the stretch)."""
NOISE_SIGMA = 2.0
"""Sensor noise per frame, grey levels."""
SLIP_PX = (5.0, 10.0)
"""How far the skin jumps when a ``smeared`` roll slips."""
PARTIAL_TRAVEL = 0.25
"""Fraction of the nail-to-nail travel a ``partial`` roll completes."""
TOO_FAST_STEP = 1.25
"""Band advance per frame of a ``too_fast`` roll, in band widths."""
_MARGIN = 16  # px of bare glass around the band in each window
_GRID = 8  # px between the samples of the master-column map
_SCRIPT_CODE = {name: i for i, name in enumerate(SCRIPTS)}


def roll_direction(finger: int) -> int:
    """+1 when the band sweeps left to right on the platen, -1 right to left.

    Fingers are rolled away from the body and thumbs toward it (the FBI card rule): on a
    platen in front of the citizen that is left to right for the right fingers and the left
    thumb, right to left for the left fingers and the right thumb."""
    return -1 if finger in (1, 7, 8, 9, 10) else 1


@dataclass(frozen=True)
class _Truth:
    shot: Impression
    master_x: NDArray[np.float32]
    """Master column (the angle around the finger) each platen pixel shows, (h, w)."""
    coarse_x: NDArray[np.float32]
    coarse_mask: NDArray[np.bool_]
    """The master-column map and the contact silhouette every ``_GRID`` px (cell centres)."""
    skin: tuple[float, float]
    """Master columns of the two nail edges, as far as the platen shows them."""


def _master_columns(shot: Impression) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The master column of every platen pixel and of every ``_GRID`` cell centre: the
    mapping is smooth, so it is evaluated on the cells and upsampled."""
    p = shot.params
    ny, nx = -(-p.height // _GRID), -(-p.width // _GRID)
    # cv2.resize by k maps output pixel x to input (x + 0.5) / k - 0.5: input sample j sits
    # at pixel k * j + (k - 1) / 2, the centre of its cell.
    centre = (_GRID - 1) / 2
    gy, gx = np.meshgrid(
        np.arange(ny) * _GRID + centre, np.arange(nx) * _GRID + centre, indexing="ij"
    )
    mx, _ = image_to_master(p, gx.astype(np.float64), gy.astype(np.float64))
    coarse = mx.astype(np.float32)
    fine = cv2.resize(coarse, (nx * _GRID, ny * _GRID), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(fine[: p.height, : p.width]), coarse


@lru_cache(maxsize=8)
def _truth(seed: int, person: int, finger: int, condition: SkinCondition) -> _Truth:
    master = master_finger(seed, person, finger)
    shot = impression(master, seed, person, finger, 0, condition=condition, partial=False)
    if shot.image.shape != (PLATEN_HEIGHT, PLATEN_WIDTH):
        raise ValueError("the rolled impression does not fill the platen")
    master_x, coarse = _master_columns(shot)
    mask = contact_mask(shot.params)
    coarse_mask = mask[_GRID // 2 :: _GRID, _GRID // 2 :: _GRID]
    inside = master_x[mask]
    # Percentiles, not min/max: the silhouette's ragged edge leaves a few stray pixels.
    lo, hi = np.percentile(inside, [0.5, 99.5])
    return _Truth(shot, master_x, coarse, coarse_mask, (float(lo), float(hi)))


def _condition(script: str) -> SkinCondition:
    return SkinCondition.DRY if script == "dry" else SkinCondition.NORMAL


def ground_truth(seed: int, person: int, finger: int, script: str = "normal") -> Impression:
    """The rolled impression a roll of ``script`` prints (what a perfect composer returns)."""
    _check_script(script)
    return _truth(seed, person, finger, _condition(script)).shot


def _check_script(script: str) -> None:
    if script not in SCRIPTS:
        raise ValueError(f"unknown roll script {script!r}; known: {', '.join(SCRIPTS)}")


def _pressure(u: NDArray[np.float32]) -> NDArray[np.float32]:
    """1 on the plateau, a half cosine down to 0 at |u| = 1, 0 beyond."""
    edge = np.clip((np.abs(u) - PLATEAU) * (1.0 / (1.0 - PLATEAU)), 0.0, 1.0)
    out: NDArray[np.float32] = (0.5 + 0.5 * np.cos(np.pi * edge)).astype(np.float32)
    return out


def _centres(
    rng: np.random.Generator, script: str, start: float, end: float, band: float, fps: float
) -> NDArray[np.float64]:
    """Master column of the band centre in each frame."""
    sign = 1.0 if end >= start else -1.0
    if script == "too_fast":
        step = TOO_FAST_STEP * band
        n = math.ceil(abs(end - start) / step) + 1
        return start + sign * step * np.arange(n, dtype=np.float64)
    n = max(2, round(rng.uniform(*ROLL_MS) * fps / 1000.0) + 1)
    if script == "partial":
        end = start + (end - start) * PARTIAL_TRAVEL
        n = max(2, round(n * PARTIAL_TRAVEL * 1.5))  # lifted early, after a slower start
    t = np.linspace(0.0, 1.0, n)
    # A roll starts and ends slowly (the finger tips over, stops at the nail): half cosine.
    ease = 0.5 - 0.5 * np.cos(np.pi * t)
    out: NDArray[np.float64] = start + (end - start) * ease + rng.normal(0.0, 1.0, n)
    return out


def _frame(
    truth: _Truth,
    rng: np.random.Generator,
    index: int,
    t_ms: int,
    centre: float,
    half: float,
    direction: int,
    slip: tuple[int, int],
) -> RollFrame:
    img = truth.shot.image
    h, w = img.shape
    # Window: the coarse cells where the band meets the skin, plus a margin of glass.
    cells = (np.abs(truth.coarse_x - centre) <= half) & truth.coarse_mask
    rows, cols = np.nonzero(cells.any(axis=1))[0], np.nonzero(cells.any(axis=0))[0]
    if rows.size == 0:  # band off the skin: a window of bare glass
        rows = cols = np.array([0])
    y0 = max(0, int(rows[0]) * _GRID - _MARGIN)
    y1 = min(h, (int(rows[-1]) + 1) * _GRID + _MARGIN)
    x0 = max(0, int(cols[0]) * _GRID - _MARGIN)
    x1 = min(w, (int(cols[-1]) + 1) * _GRID + _MARGIN)

    u = (truth.master_x[y0:y1, x0:x1] - np.float32(centre)) * np.float32(1.0 / half)
    pressure = _pressure(u)
    # Skin stretch: zero on the plateau, growing to the edge; leading and trailing edges
    # each draw their own amount for this frame.
    ramp = np.clip((np.abs(u) - PLATEAU) * (1.0 / (1.0 - PLATEAU)), 0.0, 1.0)
    lead, trail = rng.uniform(-STRETCH_PX, STRETCH_PX, 2)
    shear = rng.uniform(-SHEAR_PX, SHEAR_PX)
    ahead = (u * direction) > 0
    dx = np.where(ahead, np.float32(lead), np.float32(trail)) * ramp
    dy = np.float32(shear) * ramp * np.sign(u)
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    map_x = (dx + xs[None, :]).astype(np.float32)
    map_y = (dy + ys[:, None]).astype(np.float32)
    skin = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    glass = np.float32(truth.shot.params.background)
    out = (skin.astype(np.float32) - glass) * pressure + glass
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(NOISE_SIGMA)
    pixels = np.clip(out + 0.5, 0.0, 255.0).astype(np.uint8)

    # A slip prints this frame's skin (sx, sy) px from where it was: move the window.
    sx, sy = slip
    if sx or sy:
        nx0, ny0 = max(0, x0 + sx), max(0, y0 + sy)
        nx1, ny1 = min(w, x1 + sx), min(h, y1 + sy)
        pixels = pixels[ny0 - sy - y0 : ny1 - sy - y0, nx0 - sx - x0 : nx1 - sx - x0]
        x0, y0 = nx0, ny0
    pixels = np.ascontiguousarray(pixels)
    pixels.setflags(write=False)
    return RollFrame(index=index, t_ms=t_ms, x=x0, y=y0, pixels=pixels)


def roll_frames(
    seed: int, person: int, finger: int, script: str = "normal", *, fps: float = 25.0
) -> list[RollFrame]:
    """The frames a scanner streams for one roll of finger ``finger`` (ANSI/NIST position)
    of person ``person``, playing ``script`` (one of :data:`SCRIPTS`) at ``fps`` frames per
    second. The print rolled is :func:`ground_truth` with the same arguments."""
    _check_script(script)
    if not fps > 0:
        raise ValueError("fps must be positive")
    truth = _truth(seed, person, finger, _condition(script))
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(person, finger, 7, _SCRIPT_CODE[script]))
    )
    lo, hi = truth.skin
    band = (hi - lo) * rng.uniform(*BAND_FRACTION)
    # The band starts and ends hanging a little over the nail edge (finger on its side).
    start, end = lo + 0.3 * band, hi - 0.3 * band
    direction = roll_direction(finger)
    if direction < 0:
        start, end = end, start
    centres = _centres(rng, script, start, end, band, fps)
    slip_at = len(centres) // 2 if script == "smeared" else len(centres)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    size = rng.uniform(*SLIP_PX)
    slip = (round(size * math.cos(angle)), round(size * math.sin(angle)))
    period = 1000.0 / fps
    return [
        _frame(
            truth,
            rng,
            k,
            round(k * period),
            float(c),
            band / 2,
            direction,
            slip if k >= slip_at else (0, 0),
        )
        for k, c in enumerate(centres)
    ]
