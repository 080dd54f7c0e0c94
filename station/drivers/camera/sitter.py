"""The simulated camera's sitter: a studio source made ready to stand in front of it.

The source photos are press photos, not passport captures: people smile or talk with
their teeth showing, turn their heads by up to ten degrees and tip their chins, and one
(the astronaut's) has its face at a third of the resolution the station's camera gives
it. A citizen at the station is asked for a neutral, frontal pose, so the camera's
scenes start from a prepared sitter:

- sharpened if soft: a source whose face measures soft (an upscaled photo) gets an
  unsharp mask, as a camera's image processor sharpens; a sharp source is left alone.
- turned to frontal: the synth's mesh warp (``faces.turn_warp``) counter-rotates the
  photo's own yaw and pitch. The warp moves the measured pose by about half the angle
  asked for (the face outline, hair and ears do not turn), and closing the mouth moves
  the measured pitch too, so the angles are found by measuring the closed face: a few
  rounds of Broyden's method on the face models' pose. The backdrop is painted again
  around the head where the turn left it.
- the mouth closed (``mouth.close_mouth``) on the turned face, with the landmarks the
  face models find there; the ``smile`` scene keeps the photo's own expression.

Preparing runs the face models a few times (0.2-0.7 s); it is cached per source.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from dataclasses import dataclass, replace

import cv2
import numpy as np

from biometrics.face import variations as var
from biometrics.face.landmarks import eye_centres
from biometrics.face.pipeline import FaceAnalyzer
from biometrics.face.quality import (
    LEFT_EYE_CONTOUR,
    RIGHT_EYE_CONTOUR,
    Criterion,
    background_mask,
    luma,
    sharpness,
)
from biometrics.synth import faces
from station.drivers.camera.mouth import close_mouth

SOFT_BELOW = 5.0  # studio sharpness (quality.sharpness) under which a source is soft
SHARP_TARGET = 5.5  # what sharpening aims for (the sharp photos measure 7-8)
UNSHARP_SIGMA = 1.5  # px at the studio size: the detail an upscaled photo lacks
UNSHARP_STEP, UNSHARP_MAX = 0.25, 2.0
FRONTAL_TOLERANCE = 1.0  # degrees of yaw and of pitch left after turning
FRONTAL_ROUNDS = 6
FIRST_GAIN = 0.55  # measured pose change per degree of warp, until measured
MAX_STEP = 20.0  # degrees per round
MAX_TURN = 20.0  # degrees of warp at most: past that the warp distorts the face


@dataclass(frozen=True)
class Sitter:
    """A source prepared for the camera: frontal with a neutral (closed) mouth, and
    frontal with the photo's own expression."""

    neutral: faces.SourceFace
    smiling: faces.SourceFace
    turn: tuple[float, float]  # the warp's (yaw, pitch) that made it frontal, degrees
    pose: tuple[float, float]  # measured (yaw, pitch) of the source photo's portrait
    frontal: tuple[float, float]  # measured (yaw, pitch) of the neutral sitter
    unsharp: float  # unsharp-mask amount applied (0: a sharp source)


@functools.lru_cache(maxsize=1)
def face_analyzer() -> FaceAnalyzer:
    """The face models, loaded once per process."""
    return FaceAnalyzer()


_lock = threading.Lock()
_prepared: dict[int, tuple[weakref.ref[faces.SourceFace], Sitter]] = {}


def sitter_for(source: faces.SourceFace) -> Sitter:
    """``source`` prepared (once per source object; the models are not thread-safe, so
    one preparation runs at a time)."""
    with _lock:
        hit = _prepared.get(id(source))
        if hit is not None and hit[0]() is source:
            return hit[1]
        sitter = prepare(source, face_analyzer())
        for key in [k for k, (ref, _) in _prepared.items() if ref() is None]:
            del _prepared[key]
        _prepared[id(source)] = (weakref.ref(source), sitter)
        return sitter


def prepare(source: faces.SourceFace, analyzer: FaceAnalyzer) -> Sitter:
    """Sharpen if soft, turn to frontal, close the mouth (see the module docstring)."""
    first = analyzer.analyze(source.image).assessment
    if first is None:
        raise ValueError(f"{source.name}: no face found in the studio source")
    amount = 0.0
    if first.check(Criterion.SHARPNESS).value < SOFT_BELOW:
        while amount < UNSHARP_MAX:
            amount += UNSHARP_STEP
            if sharpness(luma(unsharp(source.image, amount)), first.geometry) >= SHARP_TARGET:
                break
        source = replace(source, image=unsharp(source.image, amount))

    # Closing the mouth moves the measured pose too (a closed jaw reads as chin down
    # by up to 6 degrees), so the turn is found for the closed face: Broyden's method
    # on its measured pose against the warp's angles. The two are coupled (a yaw warp
    # also tips the measured pitch on some faces) and far from linear, so the Jacobian
    # starts as FIRST_GAIN on the diagonal and learns from each round; the best round
    # is kept.
    trial = _sitting(source, (0.0, 0.0), analyzer)
    x = np.zeros(2)
    f = np.array(trial.frontal)
    jacobian = np.eye(2) * FIRST_GAIN
    best = trial
    for _ in range(FRONTAL_ROUNDS):
        if max(abs(a) for a in best.frontal) <= FRONTAL_TOLERANCE:
            break
        step = -np.linalg.solve(jacobian, f)
        step *= min(1.0, MAX_STEP / max(float(np.abs(step).max()), 1e-9))
        step = np.clip(x + step, -MAX_TURN, MAX_TURN) - x
        if not step.any():
            break
        trial = _sitting(source, (float(x[0] + step[0]), float(x[1] + step[1])), analyzer)
        again = np.array(trial.frontal)
        jacobian += np.outer(again - f - jacobian @ step, step) / float(step @ step)
        x, f = x + step, again
        if max(abs(a) for a in trial.frontal) < max(abs(a) for a in best.frontal):
            best = trial
    return replace(best, pose=(first.pose.yaw, first.pose.pitch), unsharp=amount)


def _sitting(source: faces.SourceFace, turn: tuple[float, float], analyzer: FaceAnalyzer) -> Sitter:
    """``source`` turned by ``turn``, with its own expression and with the mouth closed
    (found on the turned face by the face models, so the lips are closed where they
    are after the turn), on the backdrop painted again around the head where it is
    now; ``frontal`` is the closed face's measured pose (nan when no face is found)."""
    smiling = turned(source, *turn)
    found = analyzer.analyze(smiling.image)
    if found.mesh is None or found.assessment is None:
        return Sitter(source, source, turn, (math.nan, math.nan), (math.inf, math.inf), 0.0)
    right, left = eye_centres(found.mesh, found.irises)
    smiling = replace(smiling, points=found.mesh.points.copy(), right_eye=right, left_eye=left)
    neutral = close_mouth(smiling)
    after = analyzer.analyze(neutral.image).assessment
    if after is None:
        return Sitter(source, source, turn, (math.nan, math.nan), (math.inf, math.inf), 0.0)
    # The turn moves the head against what was left of the photo's own background.
    backdrop = background_mask(source.image.shape[:2], after.geometry, margin=0.0)
    frontal = (after.pose.yaw, after.pose.pitch)

    def sit(face: faces.SourceFace) -> faces.SourceFace:
        image = var.replace_background(face.image, backdrop, faces.BACKDROP)
        return replace(face, image=image, yaw=frontal[0])

    return Sitter(sit(neutral), sit(smiling), turn, (math.nan, math.nan), frontal, 0.0)


def unsharp(image: faces.RGBImage, amount: float) -> faces.RGBImage:
    """``image`` + ``amount`` x (``image`` - its Gaussian blur of ``UNSHARP_SIGMA``)."""
    img = image.astype(np.float32)
    detail = img - cv2.GaussianBlur(img, (0, 0), UNSHARP_SIGMA)
    out: faces.RGBImage = np.clip(img + amount * detail + 0.5, 0, 255).astype(np.uint8)
    return out


def turned(source: faces.SourceFace, yaw: float, pitch: float) -> faces.SourceFace:
    """``source`` turned by the synth's mesh warp; the landmarks move with it."""
    if not yaw and not pitch:
        return source
    image, moved = faces.turn_warp(source.image, source.points, yaw, pitch)
    shift = moved[:, :2] - source.points[:, :2]
    right = source.right_eye + shift[list(RIGHT_EYE_CONTOUR)].mean(axis=0)
    left = source.left_eye + shift[list(LEFT_EYE_CONTOUR)].mean(axis=0)
    return replace(source, image=image, points=moved, right_eye=right, left_eye=left)
