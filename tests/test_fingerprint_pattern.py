"""Pattern class from the orientation field: drawn ridges, synthetic prints of known class
(with known cores and deltas), mirrored loops, and the per-hand vote.

The seeded set here (seed 1234) is not the one the confusion in
``biometrics.fingerprint.pattern.MEASURED_COUNTS`` was measured on (seed 8000).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from biometrics.fingerprint.pattern import (
    CONFUSION,
    SWAP_LOG_RATIO,
    Pattern,
    classify,
    confusion_from_counts,
    hand_vote,
    orientation_field,
    singular_points,
)
from biometrics.fingerprint.synth import FingerClass, impression, master_finger
from biometrics.fingerprint.synth_master import CLASS_BY_FINGER

SEED = 1234
PER_CLASS = 4


def parallel_ridges(theta: float, size: int = 320, period: float = 10.0) -> np.ndarray:
    """Straight ridges running at ``theta`` (radians, y down) over a disc of skin."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    across = -(x - size / 2) * math.sin(theta) + (y - size / 2) * math.cos(theta)
    ridges = 128 - 100 * np.cos(2 * math.pi * across / period)
    inside = np.hypot(x - size / 2, y - size / 2) < 0.45 * size
    return np.where(inside, ridges, 230).astype(np.uint8)


@pytest.mark.parametrize("degrees", [0, 30, 75, 120, 160])
def test_orientation_follows_drawn_ridges(degrees: int) -> None:
    theta = math.radians(degrees)
    field = orientation_field(parallel_ridges(theta))
    # Away from the disc's rim (where the smoothing window sees the glass).
    rows, cols = np.indices(field.theta.shape)
    x, y = field.pixel(rows, cols)  # type: ignore[arg-type]
    inner = field.foreground & (np.hypot(x - 160, y - 160) < 100)
    assert inner.sum() > 400
    # Doubled-angle error, so that 179 and 1 degrees are 2 apart.
    error = np.angle(np.exp(2j * (field.theta[inner].astype(np.float64) - theta))) / 2
    assert np.degrees(np.abs(error)).max() < 3
    assert float(field.coherence[inner].mean()) > 0.9
    assert singular_points(field) == []
    assert classify(parallel_ridges(theta)).pattern in (Pattern.ARCH, Pattern.UNKNOWN)


def prints(seed: int, per_class: int) -> list[tuple[FingerClass, np.ndarray, tuple[object, ...]]]:
    out = []
    for finger_class in FingerClass:
        for i in range(per_class):
            finger = 1 + i % 10
            master = master_finger(seed, i, finger, finger_class=finger_class)
            # Full contact: a roll that misses part of the finger is refused by the
            # scanner's composer (too short); partial prints are in the measured figures.
            shot = impression(master, seed, i, finger, 0, partial=False)
            out.append((finger_class, shot.image, shot.singularities))
    return out


@pytest.fixture(scope="module")
def seeded() -> list[tuple[FingerClass, np.ndarray, tuple[object, ...]]]:
    return prints(SEED, PER_CLASS)


def test_classes_of_synthetic_prints_well_above_chance(
    seeded: list[tuple[FingerClass, np.ndarray, tuple[object, ...]]],
) -> None:
    """Five classes: chance is 20 %; measured on 500 prints (partial ones included): 94 %."""
    confusion: Counter[tuple[str, str]] = Counter()
    for finger_class, image, _ in seeded:
        confusion[finger_class.value, classify(image).pattern.value] += 1
    correct = sum(n for (truth, read), n in confusion.items() if truth == read)
    assert correct / len(seeded) >= 0.8, confusion
    # The error that would matter for the hand check never happens: a loop read as
    # the opposite loop.
    assert confusion["left_loop", "right_loop"] == 0
    assert confusion["right_loop", "left_loop"] == 0


def test_singular_points_land_on_the_generators(
    seeded: list[tuple[FingerClass, np.ndarray, tuple[object, ...]]],
) -> None:
    """Where a loop's core is found, it is within 24 px (three ridges) of the master's."""
    found = 0
    for finger_class, image, truth in seeded:
        if finger_class not in (FingerClass.LEFT_LOOP, FingerClass.RIGHT_LOOP):
            continue
        cores = [p for p in singular_points(orientation_field(image)) if p.kind == "core"]
        true_core = next(s for s in truth if getattr(s, "kind", None) == "core")
        if cores:
            found += 1
            nearest = min(math.hypot(c.x - true_core.x, c.y - true_core.y) for c in cores)  # type: ignore[attr-defined]
            assert nearest < 24
    assert found >= PER_CLASS  # most loops show their core


def test_a_mirrored_loop_opens_the_other_way(
    seeded: list[tuple[FingerClass, np.ndarray, tuple[object, ...]]],
) -> None:
    checked = 0
    for finger_class, image, _ in seeded:
        if finger_class is not FingerClass.LEFT_LOOP:
            continue
        reading = classify(image)
        if reading.pattern is not Pattern.LEFT_LOOP:
            continue
        mirrored = classify(np.ascontiguousarray(image[:, ::-1]))
        assert reading.loop_direction == "left"
        assert mirrored.pattern is Pattern.RIGHT_LOOP
        assert mirrored.loop_direction == "right"
        assert reading.opening is not None
        assert mirrored.opening is not None
        assert math.cos(reading.opening) < 0 < math.cos(mirrored.opening)
        checked += 1
    assert checked >= PER_CLASS - 1


RIGHT = (1, 2, 3, 4, 5)
LEFT = (6, 7, 8, 9, 10)


def test_hand_vote_weighs_the_loops() -> None:
    ulnar_right = dict.fromkeys(RIGHT, Pattern.RIGHT_LOOP)
    assert not hand_vote("right", ulnar_right).swapped
    assert hand_vote("right", ulnar_right).log_ratio < -SWAP_LOG_RATIO
    # The left hand's ulnar loops (left loops) in the right hand's boxes.
    swapped = dict.fromkeys(RIGHT, Pattern.LEFT_LOOP)
    vote = hand_vote("right", swapped)
    assert vote.swapped
    assert vote.fingers == 5
    assert vote.log_ratio > 2 * SWAP_LOG_RATIO
    # Symmetric for the left hand.
    assert hand_vote("left", dict.fromkeys(LEFT, Pattern.RIGHT_LOOP)).swapped
    assert not hand_vote("left", dict.fromkeys(LEFT, Pattern.LEFT_LOOP)).swapped


def test_one_radial_loop_is_not_evidence() -> None:
    """A left loop on the right index (radial: 14 % of right index fingers) among ulnar
    loops, or two radial-looking loops among whorls, do not make a warning."""
    readings = dict.fromkeys(RIGHT, Pattern.RIGHT_LOOP) | {2: Pattern.LEFT_LOOP}
    assert not hand_vote("right", readings).swapped
    only_index = {2: Pattern.LEFT_LOOP}
    vote = hand_vote("right", only_index)
    assert 0 < vote.log_ratio < SWAP_LOG_RATIO
    assert not vote.swapped
    mixed = {1: Pattern.WHORL, 2: Pattern.LEFT_LOOP, 3: Pattern.WHORL, 5: Pattern.WHORL}
    assert not hand_vote("right", mixed).swapped
    # Two left loops where radial loops are rare (middle and ring) are strong evidence.
    rare = {2: Pattern.WHORL, 3: Pattern.LEFT_LOOP, 4: Pattern.LEFT_LOOP, 5: Pattern.WHORL}
    assert hand_vote("right", rare).swapped
    # Whorls, arches and unreadable prints say almost nothing about the hand.
    neutral = {1: Pattern.WHORL, 2: Pattern.ARCH, 3: Pattern.UNKNOWN, 4: Pattern.WHORL}
    assert abs(hand_vote("right", neutral).log_ratio) < 1.0
    assert hand_vote("right", neutral).fingers == 3


def test_confusion_rows_are_probabilities() -> None:
    for finger_class in FingerClass:
        row = CONFUSION[finger_class]
        assert set(row) == set(Pattern)
        assert sum(row.values()) == pytest.approx(1.0)
        assert min(row.values()) > 0  # smoothed: no single reading can veto a hand
    flat = confusion_from_counts({})
    assert flat[FingerClass.ARCH][Pattern.WHORL] == pytest.approx(1 / len(Pattern))
    # The class table the vote leans on: ulnar loops are the other hand's radial ones.
    assert (
        CLASS_BY_FINGER[3][FingerClass.RIGHT_LOOP] > 10 * CLASS_BY_FINGER[8][FingerClass.RIGHT_LOOP]
    )


def test_bad_images_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        classify(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        classify(np.zeros((40, 400), np.uint8))
    blank = np.full((400, 400), 230, np.uint8)
    assert classify(blank).pattern is Pattern.UNKNOWN
