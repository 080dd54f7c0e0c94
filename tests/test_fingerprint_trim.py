"""Trimmed roll streams: the scanner measures each frame's contact band, reports it and sends
only the columns around the band centre that the composer uses (station.drivers.fingerprint
.band; CaptureRoll flag trim). The composer must make the same print of them as of the full
windows, see the same faults, and the link must carry a third of the bytes or less."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biometrics.fingerprint.synth import contact_mask
from station.drivers.fingerprint import band, rolled
from station.drivers.fingerprint.frames import RollFrame
from station.drivers.fingerprint.roll_sim import ground_truth, roll_frames
from station.drivers.fingerprint.rolled import (
    FramesLost,
    RolledCapture,
    RollError,
    RollTooFast,
    RollTooShort,
    SmearedRoll,
    compose,
)
from tests.scannerkit import four_bit, over_the_wire

SEED = 3
# Left to right and right to left, fingers and thumbs; (11, 3, f) are the bench's rolls.
ROLLS = [(SEED, 0, 2), (SEED, 1, 7), (SEED, 2, 1), (11, 3, 1), (11, 3, 2), (11, 3, 3)]


@lru_cache(maxsize=32)
def full(seed: int, person: int, finger: int, script: str = "normal") -> tuple[RollFrame, ...]:
    return tuple(roll_frames(seed, person, finger, script))


@lru_cache(maxsize=32)
def trimmed(seed: int, person: int, finger: int, script: str = "normal") -> tuple[RollFrame, ...]:
    return tuple(band.trim_roll(full(seed, person, finger, script)))


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask].astype(np.float64)
    y = b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def same_roll(a: RolledCapture, b: RolledCapture) -> None:
    """Two captures of one roll from different streams: the same checks' inputs."""
    assert (a.width_px, a.band_px, a.left_px, a.right_px) == (
        b.width_px,
        b.band_px,
        b.left_px,
        b.right_px,
    )
    assert (a.direction, a.duration_ms) == (b.direction, b.duration_ms)
    assert a.max_step_px == b.max_step_px
    assert a.contrast == pytest.approx(b.contrast, abs=0.1)


@pytest.mark.parametrize(("seed", "person", "finger"), ROLLS)
def test_trimmed_and_full_streams_compose_the_same_print(
    seed: int, person: int, finger: int
) -> None:
    whole = compose(full(seed, person, finger))
    cut = compose(trimmed(seed, person, finger))
    truth = ground_truth(seed, person, finger)
    mask = contact_mask(truth.params)
    # Measured 0.9978-0.9997: the seams fall in the same places; only the outermost
    # band edges (the nail edges, where one frame's faded skin is all there is) differ.
    assert ncc(cut.image, whole.image, mask) > 0.99
    assert ncc(cut.image, truth.image, mask) > 0.99
    same_roll(whole, cut)
    assert cut.warnings == whole.warnings == []
    assert cut.max_slip_px == pytest.approx(whole.max_slip_px, abs=0.05)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(("seed", "person", "finger"), ROLLS)
def test_trimmed_stream_is_at_least_three_times_smaller(
    seed: int, person: int, finger: int, bits: int
) -> None:
    frames = full(seed, person, finger)
    whole = over_the_wire(frames, bits)
    cut = over_the_wire(frames, bits, trim=True)
    assert (whole.dropped, cut.dropped) == (0, 0)
    assert len(cut.frames) == len(whole.frames) == len(frames)
    # Measured 3.2-4.5 on these rolls (headers and band reports included).
    assert whole.bytes >= 3 * cut.bytes, whole.bytes / cut.bytes
    image = compose(cut.frames).image
    mask = contact_mask(ground_truth(seed, person, finger).params)
    assert ncc(image, compose(whole.frames).image, mask) > 0.99


def test_trimmed_frames_cross_the_wire_unchanged() -> None:
    frames = trimmed(SEED, 1, 7)
    got = over_the_wire(full(SEED, 1, 7), trim=True).frames
    for sent, came in zip(frames, got, strict=True):
        assert (came.index, came.t_ms, came.x, came.y) == (sent.index, sent.t_ms, sent.x, sent.y)
        assert np.array_equal(came.pixels, sent.pixels)
        assert sent.band is not None
        assert came.band is not None
        for name in ("left", "right", "sent_left", "sent_right"):
            assert np.array_equal(getattr(came.band, name), getattr(sent.band, name))
        assert came.band.glass == sent.band.glass
        assert came.band.contrast == pytest.approx(sent.band.contrast, abs=1 / 32)
    # 4-bit pixels: the same frames cut to 16 levels.
    got4 = over_the_wire(full(SEED, 1, 7), 4, trim=True).frames
    for sent, came in zip(four_bit(frames), got4, strict=True):
        report = sent.band
        assert report is not None
        mask = report.sent_mask(sent.height, sent.width, sent.x)
        assert np.array_equal(came.pixels[mask], sent.pixels[mask])


def test_trimmed_frames_keep_the_seams_and_the_overlap() -> None:
    frames = trimmed(SEED, 0, 2)
    originals = full(SEED, 0, 2)
    for f, o in zip(frames, originals, strict=True):
        assert f.band is not None
        # A trimmed frame is a part of its window, and the band is the one measured there.
        assert o.x <= f.x
        assert f.x + f.width <= o.x + o.width
        whole = band.measure(o)
        rows = slice((f.y - o.y) // band.BLOCK, (f.y - o.y) // band.BLOCK + len(f.band.left))
        assert np.array_equal(f.band.left, whole.left[rows])
        assert np.array_equal(f.band.right, whole.right[rows])
    # In the middle of the roll a frame is a narrow strip: its seams plus the overlap.
    middle = frames[len(frames) // 2].band
    assert middle is not None
    sent = middle.sent_right - middle.sent_left
    width = middle.right - middle.left
    has = width > 0
    assert np.median(sent[has]) < 0.6 * np.median(width[has])
    assert np.min(sent[has]) >= band.SEAM_OVERLAP


def test_trimming_looks_one_frame_ahead_only() -> None:
    """The firmware trims frame k once it has seen frame k + 1: nothing later matters."""
    frames = full(SEED, 2, 1)
    every = band.trim_roll(frames)
    for k in (0, 5, 17):
        early = band.trim_roll(frames[: k + 2])[k]
        assert (early.x, early.y) == (every[k].x, every[k].y)
        assert np.array_equal(early.pixels, every[k].pixels)


# --- Faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "error"),
    [("partial", RollTooShort), ("smeared", SmearedRoll), ("too_fast", RollTooFast)],
)
@pytest.mark.parametrize(("seed", "person", "finger"), ROLLS[:3])
@pytest.mark.parametrize("bits", [8, 4])
def test_faults_show_in_trimmed_streams(
    script: str, error: type[RollError], seed: int, person: int, finger: int, bits: int
) -> None:
    frames = trimmed(seed, person, finger, script)
    if bits == 4:
        frames = tuple(four_bit(frames))
    with pytest.raises(error):
        compose(frames)


def test_too_fast_trimmed_roll_leaves_gaps_in_the_band_reports() -> None:
    frames = trimmed(SEED, 0, 2, "too_fast")
    spans = sorted(
        (int(f.band.left[f.band.right > f.band.left].min()), int(f.band.right.max()))
        for f in frames
        if f.band is not None and f.band.has_contact
    )
    assert any(b[0] > a[1] for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize(("seed", "person", "finger"), [(11, 0, 3), (12, 1, 6), (1, 0, 2)])
def test_dry_trimmed_rolls_compose_like_full_ones(seed: int, person: int, finger: int) -> None:
    whole = compose(full(seed, person, finger, "dry"))
    cut = compose(trimmed(seed, person, finger, "dry"))
    same_roll(whole, cut)
    assert cut.warnings == whole.warnings
    mask = contact_mask(ground_truth(seed, person, finger, "dry").params)
    assert ncc(cut.image, whole.image, mask) > 0.99


# --- Lost frames, order ------------------------------------------------------------------------


@pytest.mark.parametrize("lost", [1, 2])
def test_a_lost_trimmed_frame_or_two_leave_no_hole(lost: int) -> None:
    """Neighbours overlap by SEAM_OVERLAP around their seam: that covers a lost frame or
    two at the roll's usual speed (the slip check then has a narrower patch, or none)."""
    frames = list(trimmed(SEED, 1, 7))
    cap = compose(frames[:15] + frames[15 + lost :])
    assert any(f"{lost} frames missing" in w for w in cap.warnings)
    truth = ground_truth(SEED, 1, 7)
    assert ncc(cap.image, truth.image, contact_mask(truth.params)) > 0.99


@pytest.mark.parametrize("lost", [3, 4])
def test_lost_trimmed_frames_that_leave_a_hole_are_reported(lost: int) -> None:
    frames = list(trimmed(SEED, 1, 7))
    with pytest.raises(FramesLost, match="lost on the link") as info:
        compose(frames[:14] + frames[14 + lost :])
    assert "roll again" in info.value.message.lower()
    # a link fault, told apart from the officer's too-fast roll (still a RollTooFast)
    assert info.value.code == "frames_lost"
    assert isinstance(info.value, RollTooFast)


@settings(max_examples=5, deadline=None)
@given(st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_trimmed_print(rnd: random.Random) -> None:
    frames = list(trimmed(SEED, 2, 1))
    reference = compose(frames)
    rnd.shuffle(frames)
    assert np.array_equal(compose(frames).image, reference.image)


def test_a_band_report_must_cover_its_window() -> None:
    frame = trimmed(SEED, 0, 2)[10]
    assert frame.band is not None
    short = replace(frame.band, left=frame.band.left[:-1])
    with pytest.raises(ValueError, match="band report"):
        rolled.RollComposer().add(replace(frame, band=short))
