"""Pattern class and loop direction from the ridge orientation field, and what a hand's
loops say about which hand was rolled.

Why: a ten-print card with the hands swapped (the right hand rolled in the left hand's
boxes) files every finger under the wrong position, and the registry's per-finger dedup
then compares the wrong fingers. Loops are the tell: on the print, an ulnar loop opens
toward the little finger, which is a right loop on the right hand and a left loop on the
left hand (the convention of :mod:`.synth_master`; a left loop's ridges enter and leave
on the left, so its delta lies to the right of its core). Two thirds of fingers carry a
loop and most loops are ulnar, so a hand whose loops mostly open the wrong way was most
likely the other hand. Radial loops exist (14 % of index fingers), so one wrong-way loop
means little: :func:`hand_vote` weighs the whole hand with the class frequencies per
finger and this module's measured error rates, and only a strong likelihood ratio counts.

The method is the classical one (Kawagoe & Tojo 1984; Karu & Jain, "Fingerprint
classification", Pattern Recognition 1996):

1. orientation field: squared gradients (Kass & Witkin; Bazen & Gerez 2002) averaged over
   blocks, as the doubled-angle vector, then smoothed; coherence says how clearly the
   ridges run one way;
2. singular points by the Poincare index: the orientation's turn along a closed ring
   around each block is +pi around a core, -pi around a delta (and +2pi around the centre
   of a whorl whose two cores merged at this scale);
3. class from the singular points: none is an arch; one core is a loop or a tented arch,
   told apart by where the loop opens; two cores (or two deltas) a whorl. The opening of a
   core is the direction in which the ridges run radially away from it: around a core the
   orientation turns as theta(phi) = phi / 2 + c, and the radial direction phi0 with
   theta(phi0) = phi0 is 2c, estimated as arg sum exp(i (2 theta - phi)) over a ring. The
   delta, when it was rolled too, lies on the other side.

Coordinates are image pixels, x right and y down; angles follow atan2(dy, dx) in those
coordinates, and ridge orientations are radians mod pi with 0 horizontal (as in
:mod:`.synth_master`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.synth_master import CLASS_BY_FINGER, FingerClass

F32 = NDArray[np.float32]

STEP = 8
"""Pixels between orientation samples (about one ridge period at 500 ppi)."""
GRADIENT_SIGMA = 1.0
"""Pre-smoothing of the image before the gradients (px): pores and noise out."""
FIELD_SIGMA = 1.5
"""Smoothing of the doubled-angle field, in samples (12 px): keeps the flow around
singular points, removes the odd wrong block in scarred or dry skin."""
FOREGROUND_STD = 10.0
"""Grey-level spread of a 16 x 16 block above which it is skin (bare glass is flat; see
station.drivers.fingerprint.band.CONTACT_STD, the same measure)."""
FILL_SIGMA = 4.0
"""Wider smoothing (samples) that fills the field across blotches and gaps in the skin."""
MIN_SUPPORT = 0.3
"""Share of ridged samples in the narrow window below which the wide one is used."""
EDGE = 5
"""Samples kept clear between a Poincare ring and the edge of the skin: the flow bends
and breaks up along the nail-side edges of a rolled print."""
RING = 2
"""Radius of the Poincare ring in samples (16 px)."""
OPENING_RING = 4
"""Radius of the ring that measures where a core's loop opens, in samples (32 px)."""
TENTED_SIDE = 0.35
"""|side| (see :func:`loop_side`) below which a single-core print counts as a tented arch:
its loop opens straight down."""
MIN_ARCH_AREA = 150_000
"""Skin (px^2) a print needs before "no singular point" reads as an arch rather than as
too little print to tell (a rolled print covers 250,000-350,000 px^2)."""


class Pattern(StrEnum):
    """Henry-Galton classes as NIST SD4 names them, plus "unknown" (nothing readable)."""

    ARCH = "arch"
    TENTED_ARCH = "tented_arch"
    LEFT_LOOP = "left_loop"
    RIGHT_LOOP = "right_loop"
    WHORL = "whorl"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class OrientationField:
    """Ridge orientation on a grid of samples ``step`` px apart (sample (i, j) centred at
    pixel (j * step + step / 2, i * step + step / 2))."""

    theta: F32
    """Radians mod pi, 0 horizontal, y down."""
    coherence: F32
    """0 (no direction) .. 1 (parallel ridges), from the smoothed field."""
    foreground: NDArray[np.bool_]
    step: int

    def pixel(self, i: float, j: float) -> tuple[float, float]:
        """(x, y) in image pixels of sample (row i, column j)."""
        return (j + 0.5) * self.step, (i + 0.5) * self.step


@dataclass(frozen=True)
class SingularPoint:
    """A core or delta in image pixels; ``coherence`` is the mean field coherence on its
    ring (a guess at how trustworthy it is)."""

    kind: Literal["core", "delta"]
    x: float
    y: float
    coherence: float


@dataclass(frozen=True)
class PatternReading:
    """What the orientation field says about one print."""

    pattern: Pattern
    confidence: float
    """0-1: how clearly the evidence points to this class (see :func:`classify`)."""
    cores: tuple[SingularPoint, ...]
    deltas: tuple[SingularPoint, ...]
    opening: float | None
    """Direction (radians, atan2 in image coordinates) in which the loop of the main core
    opens; None without a core."""

    @property
    def loop_direction(self) -> Literal["left", "right"] | None:
        """Which side a loop opens to on the print (None for other classes)."""
        if self.pattern is Pattern.LEFT_LOOP:
            return "left"
        if self.pattern is Pattern.RIGHT_LOOP:
            return "right"
        return None


# --------------------------------------------------------------------------- the field


def _check(image: NDArray[np.uint8]) -> None:
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 grey image, got {image.dtype} {image.shape}")
    if min(image.shape) < 8 * STEP:
        raise ValueError(f"the image is too small for an orientation field: {image.shape}")


def _block_mean(values: F32, step: int) -> F32:
    """Mean over step x step blocks (the grid's samples); the ragged edge is dropped.
    (An area resize by a whole factor is exactly that, and ten times numpy's speed.)"""
    h, w = values.shape
    rows, cols = h // step, w // step
    cut = np.ascontiguousarray(values[: rows * step, : cols * step], np.float32)
    return np.asarray(cv2.resize(cut, (cols, rows), interpolation=cv2.INTER_AREA), np.float32)


def _skin(image: NDArray[np.uint8], step: int) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(ridged, skin) samples. Ridged: blocks whose grey-level spread shows ridges. Skin:
    the largest ridged region, closed and with its holes filled (a rolled print is one
    piece of skin; wet blotches and dry gaps inside it are skin without readable ridges)."""
    g = image.astype(np.float32)
    mean = _block_mean(g, step)
    mean2 = _block_mean(g * g, step)
    spread = np.sqrt(np.maximum(mean2 - mean * mean, 0.0))
    # Two samples wide: 16 px, the contact segmentation's block.
    spread = np.asarray(cv2.blur(spread, (2, 2)), np.float32)
    ridged = spread > FOREGROUND_STD
    kernel = np.ones((3, 3), np.uint8)
    closed = cv2.morphologyEx(ridged.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    mask = np.asarray(cv2.morphologyEx(closed, cv2.MORPH_OPEN, kernel), np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return ridged, np.zeros(mask.shape, bool)
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # Fill holes: flood the glass from a border frame, what it cannot reach is skin.
    h, w = largest.shape
    framed = np.zeros((h + 2, w + 2), np.uint8)
    framed[1:-1, 1:-1] = largest
    flood = framed.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
    skin: NDArray[np.bool_] = flood[1:-1, 1:-1] != 2
    return ridged & skin, skin


def _smooth(values: F32, weight: F32, sigma: float) -> tuple[F32, F32]:
    """Normalised convolution of (rows, cols, channels) ``values``: the weighted Gaussian
    mean and the local weight (how much of the window had data)."""
    k = (0, 0)
    den = np.asarray(cv2.GaussianBlur(weight, k, sigma), np.float32)
    num = np.asarray(cv2.GaussianBlur(values * weight[..., None], k, sigma), np.float32)
    mean: F32 = (num / np.maximum(den, 1e-6)[..., None]).astype(np.float32)
    return mean, den


def orientation_field(image: NDArray[np.uint8], step: int = STEP) -> OrientationField:
    """The smoothed ridge orientation of a 500 ppi grey print (dark ridges on light ground)."""
    _check(image)
    g = np.asarray(cv2.GaussianBlur(image.astype(np.float32), (0, 0), GRADIENT_SIGMA), np.float32)
    gx = np.asarray(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), np.float32)
    gy = np.asarray(cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3), np.float32)
    # Doubled-angle gradient vector: parallel ridges add up whichever way each gradient
    # points; its angle is twice the gradient's, the ridges run across it.
    a = _block_mean(gx * gx - gy * gy, step)
    b = _block_mean(2.0 * gx * gy, step)
    energy = _block_mean(gx * gx + gy * gy, step)
    ridged, skin = _skin(image, step)
    # Smooth over ridged blocks only (glass, blotches and gaps carry no direction); where
    # the window saw too few of them, take the field from a wider window instead.
    weight = ridged.astype(np.float32)
    stack = np.ascontiguousarray(np.stack([a, b, energy], axis=-1))
    near, support = _smooth(stack, weight, FIELD_SIGMA)
    far, _ = _smooth(stack, weight, FILL_SIGMA)
    use = (support >= MIN_SUPPORT)[..., None]
    a_s, b_s, e_s = np.moveaxis(np.where(use, near, far), -1, 0)
    theta = np.mod(0.5 * np.arctan2(b_s, a_s) + math.pi / 2, math.pi).astype(np.float32)
    coherence = (np.hypot(a_s, b_s) / np.maximum(e_s, 1e-6)).astype(np.float32)
    return OrientationField(theta, coherence, skin, step)


# --------------------------------------------------------------------------- singular points


def _ring(radius: int) -> list[tuple[int, int]]:
    """(di, dj) offsets of the square ring of ``radius`` samples, in increasing
    atan2(di, dj) order (the direction of increasing phi in image coordinates)."""
    cells = [
        (di, dj)
        for di in range(-radius, radius + 1)
        for dj in range(-radius, radius + 1)
        if max(abs(di), abs(dj)) == radius
    ]
    return sorted(cells, key=lambda c: math.atan2(c[0], c[1]))


def _wrap(d: F32) -> F32:
    """Orientation differences into (-pi/2, pi/2]."""
    out: F32 = (np.mod(d + math.pi / 2, math.pi) - math.pi / 2).astype(np.float32)
    return out


def poincare(field: OrientationField, radius: int = RING) -> F32:
    """The orientation's total turn (radians) along the ring around each sample; NaN where
    the ring leaves the grid or the skin."""
    theta = field.theta
    h, w = theta.shape
    out = np.full((h, w), np.nan, np.float32)
    if h <= 2 * radius or w <= 2 * radius:
        return out
    ring = _ring(radius)
    inner = (slice(radius, h - radius), slice(radius, w - radius))

    def shifted(di: int, dj: int) -> F32:
        return theta[radius + di : h - radius + di, radius + dj : w - radius + dj]

    total = np.zeros((h - 2 * radius, w - 2 * radius), np.float32)
    for (di0, dj0), (di1, dj1) in zip(ring, ring[1:] + ring[:1], strict=True):
        total += _wrap(shifted(di1, dj1) - shifted(di0, dj0))
    # The whole ring, and a margin around it, must lie on skin.
    size = 2 * (radius + EDGE) + 1
    solid = cv2.erode(field.foreground.astype(np.uint8), np.ones((size, size), np.uint8))
    total[~solid[inner].astype(bool)] = np.nan
    out[inner] = total
    return out


_TARGETS: tuple[tuple[Literal["core", "delta"], float, int], ...] = (
    ("core", math.pi, 1),
    ("delta", -math.pi, 1),
    ("core", 2 * math.pi, 2),
)
"""(kind, ring turn, how many points) of the singularities :func:`singular_points` finds."""


def singular_points(field: OrientationField, radius: int = RING) -> list[SingularPoint]:
    """Cores and deltas: connected regions where the ring's turn is +pi (core), -pi
    (delta) or +2pi (a whorl's two cores too close to part at this scale: two cores),
    each within pi/2."""
    turn = poincare(field, radius)
    valid = ~np.isnan(turn)
    safe = np.where(valid, turn, 0.0)
    found: list[SingularPoint] = []
    for kind, target, copies in _TARGETS:
        mask = (valid & (np.abs(safe - target) < math.pi / 2)).astype(np.uint8)
        count, _, _, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for label in range(1, count):
            cj, ci = (float(v) for v in centroids[label])
            x, y = field.pixel(ci, cj)
            coherence = _ring_coherence(field, ci, cj, radius + 1)
            found.extend(SingularPoint(kind, x, y, coherence) for _ in range(copies))
    return found


def _ring_samples(
    field: OrientationField, ci: float, cj: float, radius: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]] | None:
    """(phi, theta, coherence) on the ring of ``radius`` samples around (ci, cj) (rounded),
    skin samples only; None when fewer than half of the ring is skin."""
    h, w = field.theta.shape
    i0, j0 = round(ci), round(cj)
    phis, thetas, cohs = [], [], []
    ring = _ring(radius)
    for di, dj in ring:
        i, j = i0 + di, j0 + dj
        if 0 <= i < h and 0 <= j < w and field.foreground[i, j]:
            phis.append(math.atan2(di, dj))
            thetas.append(float(field.theta[i, j]))
            cohs.append(float(field.coherence[i, j]))
    if len(phis) < len(ring) // 2:
        return None
    return np.array(phis), np.array(thetas), np.array(cohs)


def _ring_coherence(field: OrientationField, ci: float, cj: float, radius: int) -> float:
    samples = _ring_samples(field, ci, cj, radius)
    return 0.0 if samples is None else float(np.mean(samples[2]))


def opening_direction(
    field: OrientationField, core: SingularPoint, radius: int = OPENING_RING
) -> tuple[float, float] | None:
    """(direction, strength) in which the loop of ``core`` opens: phi0 = arg sum
    exp(i (2 theta - phi)) over a ring (see the module docstring); strength is the
    length of that mean vector (1: the field turns exactly as around an ideal core)."""
    ci = core.y / field.step - 0.5
    cj = core.x / field.step - 0.5
    samples = _ring_samples(field, ci, cj, radius)
    if samples is None:
        return None
    phi, theta, _ = samples
    vector = np.mean(np.exp(1j * (2.0 * theta - phi)))
    return float(np.angle(vector)), float(abs(vector))


# --------------------------------------------------------------------------- classes


def loop_side(
    field: OrientationField, core: SingularPoint, delta: SingularPoint | None
) -> tuple[float, float] | None:
    """(side, opening): which way the loop of ``core`` opens, from -1 (right) to +1
    (left), and the opening direction; None when the core's ring is not on skin.

    Three cues, averaged when the delta was found: the opening itself (-cos phi0: +1 for
    a loop opening straight left); the delta's side of the core (its horizontal offset
    over its distance: the delta lies opposite the opening); and the turn from the
    core-to-delta direction to the opening (its sine: + for a left loop, whichever way
    the finger was tilted on the glass). A tented arch opens straight down, toward its
    delta: all three are near 0."""
    measured = opening_direction(field, core)
    if measured is None:
        return None
    opening, _ = measured
    cues = [-math.cos(opening)]
    if delta is not None:
        dx, dy = delta.x - core.x, delta.y - core.y
        distance = math.hypot(dx, dy)
        if distance > 0:
            cues.append(dx / distance)
            cues.append(math.sin(opening - math.atan2(dy, dx)))
    return float(np.mean(cues)), opening


def classify(image: NDArray[np.uint8]) -> PatternReading:
    """The pattern class of one print, with a confidence in 0-1.

    Rules: two or more cores, or two or more deltas -> whorl. One core -> a loop
    opening left or right by :func:`loop_side`, or a tented arch when it opens down
    (|side| below :data:`TENTED_SIDE`); the confidence grows with |side| (a loop) or its
    smallness (a tented arch). No singular point on enough skin -> arch (confidence: the
    field's coherence); on too little skin (a partial print) or a delta alone -> unknown.
    """
    field = orientation_field(image)
    points = singular_points(field)
    cores = tuple(p for p in points if p.kind == "core")
    deltas = tuple(p for p in points if p.kind == "delta")
    if len(cores) >= 2 or len(deltas) >= 2:
        confidence = min(1.0, 0.5 + 0.25 * (len(cores) + len(deltas) - 2))
        return PatternReading(Pattern.WHORL, confidence, cores, deltas, None)
    skin_area = int(field.foreground.sum()) * field.step**2
    if not cores:
        if deltas or skin_area < MIN_ARCH_AREA:
            return PatternReading(Pattern.UNKNOWN, 0.0, cores, deltas, None)
        coherence = float(np.mean(field.coherence[field.foreground]))
        return PatternReading(Pattern.ARCH, coherence, cores, deltas, None)
    core = cores[0]
    measured = loop_side(field, core, deltas[0] if deltas else None)
    if measured is None:
        return PatternReading(Pattern.UNKNOWN, 0.0, cores, deltas, None)
    side, opening = measured
    if abs(side) < TENTED_SIDE:
        pattern = Pattern.TENTED_ARCH
        confidence = 1.0 - abs(side) / TENTED_SIDE
    else:
        pattern = Pattern.LEFT_LOOP if side > 0 else Pattern.RIGHT_LOOP
        confidence = min(1.0, (abs(side) - TENTED_SIDE) / TENTED_SIDE)
    return PatternReading(pattern, float(confidence), cores, deltas, opening)


# --------------------------------------------------------------------------- hands


HAND_FINGERS: dict[str, tuple[int, ...]] = {"right": (1, 2, 3, 4, 5), "left": (6, 7, 8, 9, 10)}

_TRUE_CLASSES = (
    FingerClass.ARCH,
    FingerClass.TENTED_ARCH,
    FingerClass.LEFT_LOOP,
    FingerClass.RIGHT_LOOP,
    FingerClass.WHORL,
)


MEASURED_COUNTS: dict[FingerClass, dict[Pattern, int]] = {
    FingerClass.ARCH: {Pattern.ARCH: 99, Pattern.UNKNOWN: 1},
    FingerClass.TENTED_ARCH: {
        Pattern.TENTED_ARCH: 83,
        Pattern.LEFT_LOOP: 11,
        Pattern.RIGHT_LOOP: 3,
        Pattern.ARCH: 2,
        Pattern.UNKNOWN: 1,
    },
    FingerClass.LEFT_LOOP: {Pattern.LEFT_LOOP: 94, Pattern.TENTED_ARCH: 3, Pattern.UNKNOWN: 3},
    FingerClass.RIGHT_LOOP: {
        Pattern.RIGHT_LOOP: 94,
        Pattern.TENTED_ARCH: 3,
        Pattern.UNKNOWN: 2,
        Pattern.WHORL: 1,
    },
    FingerClass.WHORL: {Pattern.WHORL: 98, Pattern.RIGHT_LOOP: 1, Pattern.UNKNOWN: 1},
}
"""What :func:`classify` read on 100 synthetic rolled impressions of each class (seed 8000;
``bench/station.py --pattern 100 --pattern-seed 8000``, docs/station-capture.md). Synthetic
prints are kinder than real ones: re-measure on real ten-print cards before relying on
the figures."""

SWAP_LOG_RATIO = math.log(20.0)
"""A hand is called swapped when its prints are 20 times likelier from the other hand
(docs/station-capture.md: on synthetic persons no correct hand came near it)."""


@dataclass(frozen=True)
class HandVote:
    """What the loops of one hand's prints say about which hand it was."""

    hand: Literal["right", "left"]
    """The hand that was asked for."""
    log_ratio: float
    """Natural log of P(prints | the other hand was rolled) / P(prints | this hand)."""
    fingers: int
    """Prints that took part (readable ones)."""
    swapped: bool
    """The evidence says the other hand, beyond ``threshold``."""


def observation_likelihood(
    observed: Pattern, position: int, confusion: Mapping[FingerClass, Mapping[Pattern, float]]
) -> float:
    """P(the reader says ``observed`` | a print of finger ``position``): the class
    frequencies of that finger (:data:`.synth_master.CLASS_BY_FINGER`) through the
    reader's measured confusion."""
    prior = CLASS_BY_FINGER[position]
    return sum(prior[c] * confusion[c].get(observed, 0.0) for c in _TRUE_CLASSES)


def hand_vote(
    hand: Literal["right", "left"],
    readings: Mapping[int, Pattern],
    confusion: Mapping[FingerClass, Mapping[Pattern, float]] | None = None,
    threshold: float = SWAP_LOG_RATIO,
) -> HandVote:
    """Weigh the readings of one hand's positions (FGP -> reading): is it the other hand?

    The log likelihood ratio adds, per print, log P(reading | the same finger of the
    other hand) - log P(reading | this finger) (fingers are independent given the hand;
    the index finger of one hand stands for the index finger of the other). Unknown
    readings carry nothing. ``swapped`` when it exceeds ``threshold`` (natural log).
    ``confusion`` defaults to :data:`CONFUSION`."""
    confusion = CONFUSION if confusion is None else confusion
    positions = HAND_FINGERS[hand]
    llr = 0.0
    used = 0
    for position in positions:
        observed = readings.get(position)
        if observed is None or observed is Pattern.UNKNOWN:
            continue
        other = position + 5 if hand == "right" else position - 5
        mine = observation_likelihood(observed, position, confusion)
        theirs = observation_likelihood(observed, other, confusion)
        if mine <= 0 or theirs <= 0:
            continue
        llr += math.log(theirs / mine)
        used += 1
    return HandVote(hand, llr, used, llr > threshold)


def confusion_from_counts(
    counts: Mapping[FingerClass, Mapping[Pattern, int]], smoothing: float = 1.0
) -> dict[FingerClass, dict[Pattern, float]]:
    """Row-normalised confusion with add-``smoothing`` counts (no reading is impossible:
    a zero would let one print veto the whole hand)."""
    out: dict[FingerClass, dict[Pattern, float]] = {}
    for true in _TRUE_CLASSES:
        row = counts.get(true, {})
        total = sum(row.values()) + smoothing * len(Pattern)
        out[true] = {p: (row.get(p, 0) + smoothing) / total for p in Pattern}
    return out


CONFUSION: dict[FingerClass, dict[Pattern, float]] = confusion_from_counts(MEASURED_COUNTS)
"""P(reading | true class) from :data:`MEASURED_COUNTS`."""
