"""Rolled-print composition from a frame stream (station.drivers.fingerprint.rolled) and the
roll model that feeds the scanner simulator (station.drivers.fingerprint.roll_sim).

The composed print is judged against the rolled impression the roll was made from, by
correlation inside its contact silhouette and by the project's matcher; each fault the
model plays must raise the error that tells the officer what to do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from biometrics.fingerprint.synth import contact_mask
from station.drivers.fingerprint import rolled
from station.drivers.fingerprint.frames import PLATEN_HEIGHT, PLATEN_WIDTH, RollFrame
from station.drivers.fingerprint.roll_sim import (
    SCRIPTS,
    ground_truth,
    roll_direction,
    roll_frames,
)
from station.drivers.fingerprint.rolled import (
    NoContact,
    RollComposer,
    RolledCapture,
    RollError,
    RollTooFast,
    RollTooShort,
    SmearedRoll,
    compose,
)

SEED = 3
# (person, finger): a right index (rolled left to right), a left index (right to left), a
# right thumb (right to left).
FINGERS = [(0, 2), (1, 7), (2, 1)]


@lru_cache(maxsize=32)
def frames_of(
    person: int, finger: int, script: str = "normal", seed: int = SEED
) -> tuple[RollFrame, ...]:
    return tuple(roll_frames(seed, person, finger, script))


@lru_cache(maxsize=16)
def composed(person: int, finger: int, script: str = "normal", seed: int = SEED) -> RolledCapture:
    return compose(frames_of(person, finger, script, seed))


def ncc(a: NDArray[np.generic], b: NDArray[np.generic], mask: NDArray[np.bool_]) -> float:
    x = a[mask].astype(np.float64)
    y = b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def naive(frames: Sequence[RollFrame], background: float) -> tuple[NDArray[np.float64], ...]:
    """What a composer without a seam rule makes: the mean of every frame's skin at each
    pixel, and the darkest value any frame showed there."""
    total = np.zeros((PLATEN_HEIGHT, PLATEN_WIDTH))
    count = np.zeros_like(total)
    darkest = np.full_like(total, background)
    for f in frames:
        # Skin: where the local grey-level spread shows ridges (bare glass is flat).
        x = f.pixels.astype(np.float32)
        mean = cv2.blur(x, (15, 15))
        spread = np.sqrt(np.maximum(cv2.blur(x * x, (15, 15)) - mean * mean, 0.0))
        skin = spread > rolled.CONTACT_STD
        region = np.s_[f.y : f.y + f.height, f.x : f.x + f.width]
        total[region] += np.where(skin, x, 0.0)
        count[region] += skin
        darkest[region] = np.minimum(darkest[region], np.where(skin, x, 255.0))
    mean_img = np.where(count > 0, total / np.maximum(count, 1), background)
    return mean_img, darkest


# --- The roll model -----------------------------------------------------------------------


def test_normal_roll_streams_contact_windows_at_the_frame_rate() -> None:
    frames = frames_of(0, 2)
    # 1-1.5 s at 25 fps.
    assert 26 <= len(frames) <= 39
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.t_ms for f in frames] == [round(k * 40.0) for k in range(len(frames))]
    for f in frames:
        assert f.pixels.dtype == np.uint8
        assert f.x >= 0
        assert f.y >= 0
        assert f.x + f.width <= PLATEN_WIDTH
        assert f.y + f.height <= PLATEN_HEIGHT
        # A band of the finger, not the whole platen.
        assert f.width < PLATEN_WIDTH / 2
    # The band sweeps across the platen in the finger's roll direction.
    centres = [f.x + f.width / 2 for f in frames]
    assert (centres[-1] - centres[0]) * roll_direction(2) > 300
    # Outside the band the window shows bare glass: light and flat.
    edge = frames[len(frames) // 2].pixels[:, :4]
    assert edge.mean() > 200
    assert edge.std() < 6


def test_roll_model_is_deterministic() -> None:
    a = roll_frames(SEED, 4, 3)
    b = roll_frames(SEED, 4, 3)
    assert len(a) == len(b)
    for fa, fb in zip(a, b, strict=True):
        assert (fa.x, fa.y, fa.t_ms) == (fb.x, fb.y, fb.t_ms)
        assert np.array_equal(fa.pixels, fb.pixels)
    other = roll_frames(SEED, 4, 3, "smeared")
    assert not all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a, other, strict=False))


def test_roll_model_rejects_unknown_scripts() -> None:
    with pytest.raises(ValueError, match="unknown roll script"):
        roll_frames(SEED, 0, 2, "wobbly")
    with pytest.raises(ValueError, match="fps"):
        roll_frames(SEED, 0, 2, fps=0.0)
    assert set(SCRIPTS) == {"normal", "dry", "partial", "smeared", "too_fast"}


def test_frame_rate_sets_the_frame_count() -> None:
    slow = roll_frames(SEED, 0, 2, fps=12.5)
    assert 13 <= len(slow) <= 20
    assert slow[1].t_ms == 80
    # The same finger, half the frames: the same nail-to-nail width (the band is drawn
    # afresh, so to within two blocks).
    assert abs(compose(slow).width_px - composed(0, 2).width_px) <= 2 * rolled.BLOCK


# --- Composition ----------------------------------------------------------------------------


@pytest.mark.parametrize(("person", "finger"), FINGERS)
def test_composed_print_is_the_rolled_impression(person: int, finger: int) -> None:
    cap = composed(person, finger)
    truth = ground_truth(SEED, person, finger)
    mask = contact_mask(truth.params)
    assert cap.image.shape == (PLATEN_HEIGHT, PLATEN_WIDTH)
    assert cap.image.dtype == np.uint8
    assert ncc(cap.image, truth.image, mask) > 0.99  # measured 0.993-0.998
    # Away from the nail edges (where only a faded band edge ever touched) the print is
    # the impression to within the sensor noise. Without a seam rule the same frames
    # ghost: stretched skin near the band edges lands a few pixels off in every frame, and
    # the mean or the darkest value blurs and doubles the ridges. Measured residuals
    # (1 - NCC): seam 0.001-0.002, mean 0.013-0.018, darkest 0.011-0.056.
    inner = mask.copy()
    inner[:, : cap.left_px + cap.band_px // 2] = False
    inner[:, cap.right_px - cap.band_px // 2 :] = False
    seam = 1.0 - ncc(cap.image, truth.image, inner)
    assert seam < 0.003
    mean, darkest = naive(frames_of(person, finger), truth.params.background)
    assert 1.0 - ncc(mean, truth.image, inner) > 4 * seam
    assert 1.0 - ncc(darkest, truth.image, inner) > 4 * seam
    # The print is nail to nail: as wide as the finger on the platen.
    cols = np.nonzero(mask.any(axis=0))[0]
    assert abs(cap.width_px - (cols[-1] - cols[0])) < 40
    assert cap.direction == roll_direction(finger)
    assert cap.warnings == []
    assert cap.frames_used >= len(frames_of(person, finger)) - 2
    assert 1000 <= cap.duration_ms <= 1500
    # Bare glass stays light.
    assert cap.image[~mask].mean() > 200


def test_composed_prints_match_their_impressions() -> None:
    from biometrics.fingerprint.matcher import make_template, verify
    from biometrics.fingerprint.minutiae import extract_minutiae

    pytest.importorskip("nbis", reason="mindtct (nbis-py) is x86_64 only")
    rolled_t = [make_template(extract_minutiae(composed(p, f).image)) for p, f in FINGERS]
    truth_t = [make_template(extract_minutiae(ground_truth(SEED, p, f).image)) for p, f in FINGERS]
    scores = np.array([[verify(a, b) for b in truth_t] for a in rolled_t])
    genuine = np.diag(scores)
    impostor = scores[~np.eye(len(FINGERS), dtype=bool)]
    # Measured: genuine 0.77-1.0, impostor at most 0.07.
    assert genuine.min() > 0.5
    assert impostor.max() < 0.2
    assert genuine.min() > 3 * impostor.max()


@pytest.mark.parametrize(
    ("seed", "person", "finger", "script"),
    [
        (11, 0, 1, "normal"),
        (11, 1, 5, "normal"),
        (12, 2, 9, "normal"),
        (11, 0, 3, "dry"),
        (12, 1, 6, "dry"),
        (12, 2, 10, "dry"),
    ],
)
def test_good_rolls_compose(seed: int, person: int, finger: int, script: str) -> None:
    cap = composed(person, finger, script, seed)
    truth = ground_truth(seed, person, finger, script)
    assert ncc(cap.image, truth.image, contact_mask(truth.params)) > 0.98
    assert cap.max_slip_px < rolled.SLIP_WARN_PX
    assert cap.width_px >= rolled.MIN_ROLL_RATIO * cap.band_px
    if script == "normal":
        assert cap.warnings == []
    # Dry skin prints fainter ridges than the same finger's normal skin.
    if script == "dry":
        assert cap.contrast < composed(person, finger, "normal", seed).contrast


def test_faint_dry_roll_composes_with_a_warning() -> None:
    cap = composed(0, 2, "dry", 1)
    assert cap.contrast < rolled.FAINT_CONTRAST
    assert any("faint" in w for w in cap.warnings)


# --- Faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "error", "code"),
    [
        ("partial", RollTooShort, "too_short"),
        ("smeared", SmearedRoll, "smeared"),
        ("too_fast", RollTooFast, "too_fast"),
    ],
)
@pytest.mark.parametrize(("person", "finger"), FINGERS)
def test_faulty_rolls_raise_what_to_do(
    script: str, error: type[RollError], code: str, person: int, finger: int
) -> None:
    with pytest.raises(error) as info:
        compose(frames_of(person, finger, script))
    assert info.value.code == code
    assert isinstance(info.value, RollError)
    # The message is for the officer: it says what to do next.
    assert "roll" in info.value.message.lower()
    assert str(info.value) == info.value.message


def test_no_frames_or_bare_glass_is_no_contact() -> None:
    with pytest.raises(NoContact) as info:
        RollComposer().finish()
    assert info.value.code == "no_contact"
    rng = np.random.default_rng(0)
    glass = [
        RollFrame(k, 40 * k, 100, 50, (230 + rng.normal(0, 2, (600, 300))).astype(np.uint8))
        for k in range(20)
    ]
    with pytest.raises(NoContact):
        compose(glass)


def test_a_single_press_is_too_short() -> None:
    frames = frames_of(0, 2)
    middle = frames[len(frames) // 2]
    with pytest.raises(RollTooShort):
        compose([middle])
    # Pressing without rolling: the same window again and again.
    with pytest.raises(RollTooShort):
        compose([replace(middle, index=k, t_ms=40 * k) for k in range(20)])


def test_finger_lifted_mid_roll_leaves_a_gap() -> None:
    frames = list(frames_of(0, 2))
    n = len(frames)
    with pytest.raises(RollTooFast):
        compose(frames[: n // 3] + frames[2 * n // 3 :])


def test_large_slip_beyond_the_patch_is_smeared() -> None:
    # The second half of the roll printed 60 px lower: the skin no longer matches at all.
    frames = list(frames_of(0, 2))
    half = len(frames) // 2
    moved = [
        replace(f, y=f.y + 60, pixels=f.pixels[: PLATEN_HEIGHT - f.y - 60]) for f in frames[half:]
    ]
    with pytest.raises(SmearedRoll):
        compose(frames[:half] + moved)


# --- Streaming ------------------------------------------------------------------------------


def same_capture(a: RolledCapture, b: RolledCapture) -> None:
    assert np.array_equal(a.image, b.image)
    assert (a.width_px, a.band_px, a.left_px, a.right_px) == (
        b.width_px,
        b.band_px,
        b.left_px,
        b.right_px,
    )
    assert (a.frames_used, a.duration_ms, a.direction) == (
        b.frames_used,
        b.duration_ms,
        b.direction,
    )
    assert a.max_slip_px == pytest.approx(b.max_slip_px)


def test_incremental_add_then_finish_equals_compose() -> None:
    frames = frames_of(1, 7)
    composer = RollComposer()
    for f in frames:
        composer.add(f)
    first = composer.finish()
    same_capture(first, composed(1, 7))
    # finish() leaves the composer as it was.
    same_capture(composer.finish(), first)


def test_duplicates_are_ignored_and_out_of_order_frames_sorted() -> None:
    frames = list(frames_of(0, 2))
    shuffled = frames + frames[5:9]  # retransmitted copies
    random.Random(7).shuffle(shuffled)
    cap = compose(shuffled)
    same_capture(cap, composed(0, 2))
    assert any("4 duplicate frames ignored" in w for w in cap.warnings)
    assert any("out of order" in w for w in cap.warnings)
    assert cap.frames_received == len(frames)
    # A corrupted retransmission of a frame already taken changes nothing: first copy wins.
    junk = replace(frames[10], pixels=np.zeros_like(frames[10].pixels))
    same_capture(compose([*frames, junk]), composed(0, 2))


@settings(max_examples=8, deadline=None)
@given(st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_print(rnd: random.Random) -> None:
    frames = list(frames_of(2, 1))
    rnd.shuffle(frames)
    same_capture(compose(frames), composed(2, 1))


def test_a_dropped_frame_still_composes_with_a_warning() -> None:
    frames = list(frames_of(1, 7))
    cap = compose(frames[:12] + frames[13:])
    truth = ground_truth(SEED, 1, 7)
    assert ncc(cap.image, truth.image, contact_mask(truth.params)) > 0.99
    assert any("1 frames missing" in w for w in cap.warnings)


def test_empty_windows_count_as_no_contact() -> None:
    frames = list(frames_of(1, 7))
    empty = RollFrame(len(frames), 40 * len(frames), 0, 0, np.zeros((0, 0), np.uint8))
    cap = compose([*frames, empty])
    assert cap.frames_received == len(frames) + 1
    assert np.array_equal(cap.image, composed(1, 7).image)


def test_windows_outside_the_platen_are_refused() -> None:
    composer = RollComposer()
    with pytest.raises(ValueError, match="outside the platen"):
        composer.add(RollFrame(0, 0, 700, 0, np.zeros((100, 200), np.uint8)))
    with pytest.raises(ValueError, match="uint8"):
        composer.add(RollFrame(0, 0, 0, 0, np.zeros((100, 200), np.float32)))
    with pytest.raises(ValueError, match="positive"):
        RollComposer(platen=(0, 750))


def four_bit(frames: Sequence[RollFrame]) -> list[RollFrame]:
    """The frames as the scanner sends them with 4-bit pixels (each nibble scaled by 17)."""
    return [replace(f, pixels=((f.pixels >> 4) * 17).astype(np.uint8)) for f in frames]


def test_four_bit_frames_compose_and_faults_still_show() -> None:
    # On bare glass 4-bit pixels flicker between two levels; segmentation must not take
    # that for skin, and the checks must still see the faults.
    cap = compose(four_bit(frames_of(1, 7)))
    truth = ground_truth(SEED, 1, 7)
    assert ncc(cap.image, truth.image, contact_mask(truth.params)) > 0.98
    assert cap.warnings == []
    for script, error in [
        ("partial", RollTooShort),
        ("smeared", SmearedRoll),
        ("too_fast", RollTooFast),
    ]:
        with pytest.raises(error):
            compose(four_bit(frames_of(1, 7, script)))
