"""Synthetic fingerprints in the SFinGe tradition: master fingers and their impressions.

No real fingerprint set can be had and no package generates realistic fingers, yet dedup,
quality gates and the scanner simulator need thousands of distinct fingers with several
impressions each. This module is the entry point:

>>> master = master_finger(seed=7, person=0, finger=2)       # right index
>>> shot = impression(master, seed=7, person=0, finger=2, index=0)
>>> shot.image.shape, shot.image.dtype                        # rolled, 500 ppi
((750, 800), dtype('uint8'))

Everything is a pure function of ``(seed, person, finger[, kind, index])``: each finger
(and each impression) draws from its own ``numpy`` generator, seeded through
``SeedSequence(seed, spawn_key=...)``, so any one finger can be regenerated on its own and
the output does not depend on the order, the process or the number of workers.

The methods live in :mod:`.synth_master` (class, orientation, frequency, ridge growth) and
:mod:`.synth_impression` (placement, Cappelli distortion, contact, skin condition, noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.synth_impression import (
    IMAGE_SIZE,
    Distortion,
    ImpressionKind,
    ImpressionParams,
    SkinCondition,
    contact_mask,
    master_to_image,
    points_to_image,
    render_impression,
    sample_impression,
)
from biometrics.fingerprint.synth_master import (
    CLASS_BY_FINGER,
    CLASS_FREQUENCIES,
    FingerClass,
    MasterConfig,
    MasterFinger,
    Singularity,
    class_probabilities,
    draw_class,
    generate_master,
)
from enrollment.reference import FINGER_POSITIONS

__all__ = [
    "CLASS_BY_FINGER",
    "CLASS_FREQUENCIES",
    "FINGER_NAMES",
    "IMAGE_SIZE",
    "Distortion",
    "FingerClass",
    "Impression",
    "ImpressionKind",
    "ImpressionParams",
    "MasterConfig",
    "MasterFinger",
    "Singularity",
    "SkinCondition",
    "class_probabilities",
    "contact_mask",
    "finger_rng",
    "impression",
    "impression_rng",
    "master_finger",
    "master_to_image",
    "points_to_image",
]

FINGER_NAMES: dict[int, str] = {0: "unknown", **FINGER_POSITIONS}
"""ANSI/NIST-ITL finger positions (FGP)."""

_KIND_CODE = {ImpressionKind.ROLLED: 0, ImpressionKind.FLAT: 1}


def _check(seed: int, person: int, finger: int) -> None:
    if seed < 0 or person < 0:
        raise ValueError("seed and person must be non-negative integers")
    if not 0 <= finger <= 10:
        raise ValueError(f"finger must be an ANSI/NIST position 1-10 (0 = unknown), got {finger}")


def finger_rng(seed: int, person: int, finger: int) -> np.random.Generator:
    """The generator a master finger is drawn from: one independent stream per finger."""
    _check(seed, person, finger)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(person, finger, 0)))


def impression_rng(
    seed: int, person: int, finger: int, kind: ImpressionKind, index: int
) -> np.random.Generator:
    """The generator of one impression: independent of the master's stream and of the
    other impressions, so impression 3 can be rendered without rendering 0-2."""
    _check(seed, person, finger)
    if index < 0:
        raise ValueError("impression index must be non-negative")
    key = (person, finger, 1, _KIND_CODE[kind], index)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def master_finger(
    seed: int,
    person: int,
    finger: int,
    *,
    finger_class: FingerClass | None = None,
    config: MasterConfig | None = None,
) -> MasterFinger:
    """The master of finger ``finger`` (ANSI/NIST position 1-10, 0 = unknown) of person
    ``person``. The class is drawn for the finger position unless given (see
    :data:`CLASS_BY_FINGER`); the same arguments always give the same master."""
    rng = finger_rng(seed, person, finger)
    # The class is drawn first, and always, so that forcing it changes nothing else.
    drawn = draw_class(rng, finger)
    return generate_master(rng, finger_class or drawn, config)


@dataclass(frozen=True)
class Impression:
    """One rendered impression and what produced it."""

    image: NDArray[np.uint8] = field(repr=False)
    """(height, width) 8-bit grey, dark ridges on light ground, 500 ppi."""
    params: ImpressionParams
    singularities: tuple[Singularity, ...]
    """The master's cores and deltas in this image's pixel coordinates (may fall outside
    the image or the contact region)."""

    def ground_truth(self) -> dict[str, Any]:
        """JSON-ready transform parameters and singular points."""
        return {
            "params": self.params.to_dict(),
            "singularities": [
                {"kind": s.kind, "x": round(s.x, 1), "y": round(s.y, 1)} for s in self.singularities
            ],
        }


def impression(
    master: MasterFinger,
    seed: int,
    person: int,
    finger: int,
    index: int,
    kind: ImpressionKind = ImpressionKind.ROLLED,
    *,
    condition: SkinCondition | None = None,
    partial: bool | None = None,
    max_rotation: float | None = None,
) -> Impression:
    """Impression number ``index`` of ``master`` (which should be
    ``master_finger(seed, person, finger)``). ``condition`` and ``partial`` force the skin
    condition and partial contact; ``max_rotation`` (degrees) overrides the kind's
    default (see :data:`.synth_impression.MAX_ROTATION`)."""
    rng = impression_rng(seed, person, finger, kind, index)
    params = sample_impression(
        rng, master, kind, condition=condition, partial=partial, max_rotation=max_rotation
    )
    image = render_impression(master, params, rng)
    image.setflags(write=False)
    xs = np.array([s.x for s in master.singularities])
    ys = np.array([s.y for s in master.singularities])
    u, v = points_to_image(params, xs, ys)
    sing = tuple(
        Singularity(s.kind, float(x), float(y))
        for s, x, y in zip(master.singularities, u, v, strict=True)
    )
    return Impression(image=image, params=params, singularities=sing)
