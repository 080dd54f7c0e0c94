"""A varied synthetic set for fitting and checking the station's quality model.

The station predicts NFIQ 2 with a small model; to fit it the scores must cover the whole
0-100 range, which plain impressions do not (NFIQ 2 puts most of them at 40-75). Each
sample here is a synthetic impression (rolled or flat, any skin condition, partial contact
or not) with, on top, a capture defect drawn at random: optical blur, a washed-out or dark
image, sensor noise, or (rarely) an empty platen. Everything is a pure function of
``(seed, sample)``, so a set is regenerated rather than stored; only its NFIQ 2 labels
are worth caching (they cost ~0.25 s each).

Splits are by master finger, never by impression: held-out images come from fingers the
model never saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.synth import (
    ImpressionKind,
    MasterFinger,
    SkinCondition,
    impression,
    master_finger,
)


class Defect(StrEnum):
    """The capture defect added on top of the impression's own skin condition."""

    NONE = "none"
    BLUR = "blur"
    WASHED = "washed"  # low contrast toward white: light pressure, overexposed sensor
    DARK = "dark"  # low contrast toward black with a grey cast: dirty platen, underexposed
    NOISE = "noise"
    BLANK = "blank"  # nothing on the platen (or a smudge): must score near zero


_DEFECT_P = {
    Defect.NONE: 0.34,
    Defect.BLUR: 0.2,
    Defect.WASHED: 0.18,
    Defect.DARK: 0.08,
    Defect.NOISE: 0.17,
    Defect.BLANK: 0.03,
}
_CONDITION_P = {SkinCondition.NORMAL: 0.5, SkinCondition.DRY: 0.25, SkinCondition.WET: 0.25}
_PARTIAL_P = 0.25
_TEST_EVERY = 5  # every fifth master finger is held out


@dataclass(frozen=True)
class Sample:
    """One image of the set: which impression, and what was done to it."""

    person: int
    finger: int
    index: int
    kind: ImpressionKind
    condition: SkinCondition
    partial: bool
    defect: Defect
    strength: float  # 0..1, how severe the defect is
    test: bool  # from a held-out master

    @property
    def key(self) -> str:
        """Stable identifier of the sample (the label cache is keyed on it)."""
        return (
            f"{self.person}-{self.finger}-{self.index}-{self.kind}-{self.condition}-"
            f"{int(self.partial)}-{self.defect}-{self.strength:.4f}"
        )

    @property
    def group(self) -> str:
        """What the per-condition breakdowns group by."""
        if self.defect is not Defect.NONE:
            return f"defect:{self.defect}"
        return "partial" if self.partial else f"skin:{self.condition}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(kind=str(self.kind), condition=str(self.condition), defect=str(self.defect))
        return out


def plan(seed: int, masters: int, per_master: int) -> list[Sample]:
    """The samples of a set: ``masters`` master fingers with ``per_master`` images each."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x51,)))
    out = []
    conditions, cond_p = list(_CONDITION_P), list(_CONDITION_P.values())
    defects, defect_p = list(_DEFECT_P), list(_DEFECT_P.values())
    for person in range(masters):
        finger = 1 + person % 10
        for index in range(per_master):
            kind = ImpressionKind.ROLLED if rng.random() < 0.5 else ImpressionKind.FLAT
            out.append(
                Sample(
                    person=person,
                    finger=finger,
                    index=index,
                    kind=kind,
                    condition=SkinCondition(conditions[rng.choice(len(conditions), p=cond_p)]),
                    partial=bool(rng.random() < _PARTIAL_P),
                    defect=Defect(defects[rng.choice(len(defects), p=defect_p)]),
                    strength=float(rng.random()),
                    test=person % _TEST_EVERY == 0,
                )
            )
    return out


def master_for(seed: int, sample: Sample) -> MasterFinger:
    return master_finger(seed, sample.person, sample.finger)


def render(seed: int, sample: Sample, master: MasterFinger | None = None) -> NDArray[np.uint8]:
    """The 8-bit image of ``sample`` (500 ppi, dark ridges on light ground)."""
    if master is None:
        master = master_for(seed, sample)
    shot = impression(
        master,
        seed,
        sample.person,
        sample.finger,
        sample.index,
        sample.kind,
        condition=sample.condition,
        partial=sample.partial,
    )
    flat = int(sample.kind is ImpressionKind.FLAT)
    key = (sample.person, sample.finger, 0x52, flat, sample.index)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    return apply_defect(shot.image, sample.defect, sample.strength, rng)


def apply_defect(
    image: NDArray[np.uint8], defect: Defect, strength: float, rng: np.random.Generator
) -> NDArray[np.uint8]:
    """``image`` with ``defect`` at ``strength`` (0 mild .. 1 severe)."""
    img: NDArray[Any] = image.astype(np.float32)
    s = float(np.clip(strength, 0.0, 1.0))
    if defect is Defect.BLUR:
        sigma = 0.6 + 2.6 * s
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    elif defect is Defect.WASHED:
        contrast = 1.0 - 0.93 * s  # down to 7 % of the ridge-valley contrast
        img = 255.0 - contrast * (255.0 - img)
    elif defect is Defect.DARK:
        contrast = 1.0 - 0.8 * s
        level = 60.0 + 80.0 * rng.random()
        img = level + contrast * (img - img.mean())
    elif defect is Defect.NOISE:
        sigma = 6.0 + 44.0 * s
        img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    elif defect is Defect.BLANK:
        # An empty platen: the background with sensor noise and a faint smudge.
        background = float(np.percentile(img, 90))
        h, w = img.shape
        smudge: NDArray[Any] = cv2.GaussianBlur(
            rng.normal(0.0, 1.0, (h, w)).astype(np.float32), (0, 0), 25
        )
        smudge *= 40.0 * s / max(float(np.abs(smudge).max()), 1e-6)
        img = background - np.abs(smudge) + rng.normal(0.0, 3.0, (h, w)).astype(np.float32)
    out: NDArray[np.uint8] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out
