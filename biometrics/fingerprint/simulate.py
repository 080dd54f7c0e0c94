"""Minutia-level simulation for matcher tests and benchmarks (no images).

A "master" is a random minutia set inside a finger-shaped area, its directions following a
smooth loop-like orientation field (so impostors share the field's statistics, as real
fingers do, instead of being uniform noise). An "impression" of a master applies what a new
capture does: rotation, translation, smooth elastic distortion, positional and angular
jitter, missed and spurious minutiae, flipped types, cropping by the image frame and,
optionally, mindtct's 11.25-degree direction quantisation.

Image-level synthesis (ridges, pressure, noise) is the generator's job; this module only
feeds the matchers with known ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.minutiae import TWO_PI, MinutiaKind, MinutiaSet


@dataclass(frozen=True)
class Distortion:
    """How far an impression departs from its master (defaults: a hard but matchable set)."""

    max_rotation: float = math.radians(25.0)
    max_translation: float = 40.0  # pixels, each axis
    elastic: float = 4.0  # amplitude of the smooth displacement field, pixels
    jitter: float = 2.0  # per-minutia position noise (sd), pixels
    angle_jitter: float = math.radians(5.0)  # per-minutia direction noise (sd)
    drop: float = 0.15  # probability that a true minutia is missed
    spurious: float = 0.1  # spurious minutiae, as a fraction of the master's count
    type_flip: float = 0.1  # ending <-> bifurcation confusions
    angle_step: float | None = math.radians(11.25)  # mindtct's quantisation; None: off


#: A careful capture (an officer re-rolling until the print is good): less of everything.
MILD = Distortion(
    max_rotation=math.radians(10.0),
    max_translation=20.0,
    elastic=2.0,
    jitter=1.0,
    angle_jitter=math.radians(3.0),
    drop=0.08,
    spurious=0.05,
    type_flip=0.05,
)


def _finger_area(width: int, height: int) -> tuple[float, float, float, float]:
    return width / 2, height / 2, 0.42 * width, 0.46 * height


def _inside(
    x: NDArray[np.float64], y: NDArray[np.float64], area: tuple[float, ...]
) -> NDArray[np.bool_]:
    cx, cy, ax, ay = area
    return np.asarray(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0)


def _field(
    x: NDArray[np.float64], y: NDArray[np.float64], params: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Ridge orientation (mod pi) of a loop: half the core angle minus half the delta
    angle (the Sherlock-Monro zero-pole model), plus a global rotation."""
    cx, cy, dx, dy, rot = params
    return np.asarray(0.5 * (np.arctan2(cy - y, x - cx) - np.arctan2(dy - y, x - dx)) + rot)


def random_minutiae(
    rng: np.random.Generator,
    *,
    n: int | None = None,
    width: int = 500,
    height: int = 560,
    min_distance: float = 10.0,
) -> MinutiaSet:
    """A random master minutia set (default 35-70 minutiae, a rolled-size finger)."""
    count = int(rng.integers(35, 71)) if n is None else n
    area = _finger_area(width, height)
    cx, cy, ax, ay = area
    xs: list[float] = []
    ys: list[float] = []
    while len(xs) < count:
        px = rng.uniform(cx - ax, cx + ax, 4 * count)
        py = rng.uniform(cy - ay, cy + ay, 4 * count)
        for x, y in zip(px[_inside(px, py, area)], py[_inside(px, py, area)], strict=True):
            if len(xs) >= count:
                break
            if not xs or np.min(np.hypot(np.asarray(xs) - x, np.asarray(ys) - y)) >= min_distance:
                xs.append(float(x))
                ys.append(float(y))
    x, y = np.asarray(xs), np.asarray(ys)
    core = (cx + rng.normal(0, 0.1 * ax), cy - rng.uniform(0.0, 0.3) * ay)
    delta = (core[0] + rng.normal(0, 0.5 * ax), core[1] + rng.uniform(0.4, 0.8) * ay)
    params = np.array([*core, *delta, rng.normal(0, 0.2)])
    angle = _field(x, y, params) + math.pi * rng.integers(0, 2, count) + rng.normal(0, 0.15, count)
    kind = np.where(rng.random(count) < 0.55, MinutiaKind.ENDING, MinutiaKind.BIFURCATION)
    quality = rng.integers(30, 101, count)
    return MinutiaSet.from_arrays(
        x, y, angle, kind=kind, quality=quality, width=width, height=height
    )


def impression(
    master: MinutiaSet, rng: np.random.Generator, distortion: Distortion | None = None
) -> MinutiaSet:
    """A new capture of ``master`` under ``distortion`` (same image size)."""
    return impression_with_truth(master, rng, distortion)[0]


def impression_with_truth(
    master: MinutiaSet, rng: np.random.Generator, distortion: Distortion | None = None
) -> tuple[MinutiaSet, NDArray[np.int64]]:
    """:func:`impression`, plus for each minutia its index in ``master`` (-1: spurious)."""
    d = distortion or Distortion()
    n = len(master)
    w, h = master.width, master.height
    keep = rng.random(n) >= d.drop
    truth = np.flatnonzero(keep)
    x, y, angle = master.x[keep], master.y[keep], master.angle[keep]
    kind, quality = master.kind[keep].copy(), master.quality[keep]
    flip = rng.random(len(x)) < d.type_flip
    kind[flip] = 3 - kind[flip]
    # Spurious minutiae appear anywhere on the finger, with arbitrary direction.
    area = _finger_area(w, h)
    ns = int(rng.poisson(d.spurious * n))
    sx = rng.uniform(area[0] - area[2], area[0] + area[2], 4 * ns + 4)
    sy = rng.uniform(area[1] - area[3], area[1] + area[3], 4 * ns + 4)
    inside = _inside(sx, sy, area)
    sx, sy = sx[inside][:ns], sy[inside][:ns]
    k = len(sx)
    truth = np.concatenate([truth, np.full(k, -1, np.int64)])
    x, y = np.concatenate([x, sx]), np.concatenate([y, sy])
    angle = np.concatenate([angle, rng.uniform(0, TWO_PI, k)])
    kind = np.concatenate([kind, rng.integers(1, 3, k).astype(np.uint8)])
    quality = np.concatenate([quality, rng.integers(15, 86, k).astype(np.uint8)])
    # Elastic skin: a smooth random displacement field (two low-frequency waves per axis).
    wave = rng.uniform(200.0, 400.0, 4)
    phase = rng.uniform(0, TWO_PI, 4)
    x = x + d.elastic * np.sin(TWO_PI * y / wave[0] + phase[0]) * np.cos(
        TWO_PI * x / wave[1] + phase[1]
    )
    y = y + d.elastic * np.sin(TWO_PI * x / wave[2] + phase[2]) * np.cos(
        TWO_PI * y / wave[3] + phase[3]
    )
    # Rigid motion about the image centre: positions and directions turn together
    # (counter-clockwise on screen, y pointing down).
    rot = rng.uniform(-d.max_rotation, d.max_rotation)
    tx, ty = rng.uniform(-d.max_translation, d.max_translation, 2)
    u, v = x - w / 2, -(y - h / 2)
    c, s = math.cos(rot), math.sin(rot)
    x = w / 2 + c * u - s * v + tx
    y = h / 2 - (s * u + c * v) + ty
    angle = angle + rot
    m = len(x)
    x = x + rng.normal(0, d.jitter, m)
    y = y + rng.normal(0, d.jitter, m)
    angle = angle + rng.normal(0, d.angle_jitter, m)
    if d.angle_step:
        angle = np.round(angle / d.angle_step) * d.angle_step
    inside_frame = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    out = MinutiaSet.from_arrays(
        x[inside_frame],
        y[inside_frame],
        angle[inside_frame],
        kind=kind[inside_frame],
        quality=quality[inside_frame],
        width=w,
        height=h,
    )
    return out, truth[inside_frame]
