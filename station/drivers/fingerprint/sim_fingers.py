"""The synthetic fingers the scanner simulator puts on its platen.

Rendering a finger costs tens of milliseconds (flat) to seconds (a rolled sequence), so
every image is cached per (seed, person, finger, impression, fault) and rendered only
when a capture asks for it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.synth import (
    ImpressionKind,
    SkinCondition,
    impression,
    master_finger,
)
from station.drivers.fingerprint.frames import RollFrame
from station.drivers.fingerprint.protocol import BASE_IMAGE_HEIGHT, BASE_IMAGE_WIDTH

FAULTS = ("none", "no_finger", "dry", "partial", "smeared", "too_fast", "unplug_mid_transfer")
"""What can happen to a presentation (see docs/protocols/fingerprint.md, simulator)."""

ROLL_SCRIPTS = {
    "none": "normal",
    "no_finger": "normal",
    "unplug_mid_transfer": "normal",
    "dry": "dry",
    "partial": "partial",
    "smeared": "smeared",
    "too_fast": "too_fast",
}
"""Fault -> roll_sim script of the rolled frames."""


def _flat_options(fault: str) -> tuple[SkinCondition | None, bool | None]:
    if fault == "dry":
        return SkinCondition.DRY, False
    if fault == "partial":
        return SkinCondition.NORMAL, True
    # A flat print has no roll to smear or rush: those faults leave it normal.
    return SkinCondition.NORMAL, False


@lru_cache(maxsize=64)
def flat_image(seed: int, person: int, finger: int, index: int, fault: str) -> NDArray[np.uint8]:
    """A 400 x 500 flat impression at 500 ppi (height 500, width 400), read-only."""
    condition, partial = _flat_options(fault)
    master = master_finger(seed, person, finger)
    shot = impression(
        master,
        seed,
        person,
        finger,
        index,
        ImpressionKind.FLAT,
        condition=condition,
        partial=partial,
    )
    return shot.image


@lru_cache(maxsize=64)
def base_image(seed: int, person: int, finger: int, index: int, fault: str) -> NDArray[np.uint8]:
    """The 256 x 288 image a base-protocol UpImage sends: the flat impression cropped
    around the finger (same 500 ppi, as the R30x sensors have) and cut to 16 grey levels,
    stored as 8-bit values ``nibble * 17`` (what a host gets back from the 4-bit wire)."""
    flat = flat_image(seed, person, finger, index, fault)
    h, w = flat.shape
    ink = 255.0 - flat.astype(np.float64)
    total = float(ink.sum())
    if total > 0:
        cy = float((ink.sum(axis=1) * np.arange(h)).sum() / total)
        cx = float((ink.sum(axis=0) * np.arange(w)).sum() / total)
    else:
        cy, cx = h / 2, w / 2
    top = int(np.clip(round(cy - BASE_IMAGE_HEIGHT / 2), 0, h - BASE_IMAGE_HEIGHT))
    left = int(np.clip(round(cx - BASE_IMAGE_WIDTH / 2), 0, w - BASE_IMAGE_WIDTH))
    crop = flat[top : top + BASE_IMAGE_HEIGHT, left : left + BASE_IMAGE_WIDTH]
    out = ((crop >> 4) * 17).astype(np.uint8)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=32)
def roll_sequence(seed: int, person: int, finger: int, fault: str, fps: float) -> list[RollFrame]:
    """The frames of one roll, from the roll model (station.drivers.fingerprint.roll_sim)."""
    from station.drivers.fingerprint.roll_sim import roll_frames

    return roll_frames(seed, person, finger, ROLL_SCRIPTS.get(fault, "normal"), fps=fps)


@lru_cache(maxsize=32)
def trimmed_roll_sequence(
    seed: int, person: int, finger: int, fault: str, fps: float
) -> list[RollFrame]:
    """The frames of one roll as a scanner that trims sends them (CaptureRoll flag trim):
    its firmware measures each frame's contact band and keeps the columns the composer
    uses (station.drivers.fingerprint.band.trim_roll)."""
    from station.drivers.fingerprint.band import trim_roll

    return trim_roll(roll_sequence(seed, person, finger, fault, fps))
