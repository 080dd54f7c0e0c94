"""The registry's quality stage: every finger re-scored with the real NFIQ 2, the portrait
re-checked with the face checks. What fails goes back to the station as "recapture needed"
with one reason per finger or face criterion, in words the officer can act on.

The station already gated its captures with its own predictor; the registry re-checks
because stations run old software, clocks and models drift, and a package is evidence.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from biometrics.face.pipeline import FaceAnalyzer
from biometrics.face.quality import Criterion, hint_text
from biometrics.fingerprint.quality import Nfiq2, QualityScorer, StationQuality
from enrollment import images
from enrollment.package import VerifiedPackage
from enrollment.reference import FINGER_POSITIONS

# A declared face exception (enrollment.modalities.FACE) excuses the criteria it explains:
# a citizen who cannot meet them must not be sent back to recapture every time.
EXCUSED: dict[str, frozenset[Criterion]] = {
    "eyes_not_visible": frozenset(
        {Criterion.OCCLUSION, Criterion.EYE_LINE, Criterion.EYE_DISTANCE}
    ),
    "religious_head_covering": frozenset(
        {
            Criterion.OCCLUSION,
            Criterion.HEAD_HEIGHT,
            Criterion.HEAD_WIDTH,
            Criterion.BACKGROUND_CLUTTER,
        }
    ),
    "medical_device": frozenset({Criterion.OCCLUSION}),
    "facial_condition": frozenset({Criterion.ROLL, Criterion.CENTRE_X, Criterion.EYE_LINE}),
}


class QualitySettings(BaseModel):
    """Thresholds of the registry's quality stage."""

    min_finger_nfiq2: int = Field(20, ge=0, le=100)
    """Below this NFIQ 2 a finger needs recapturing (rolled prints score lower than the
    flats NFIQ 2 was trained on; the station's own gate is stricter)."""
    min_fingers: int = Field(6, ge=0, le=10)
    """Fewer usable fingers than this (exceptions included) and dedup is not reliable."""
    finger_scorer: Literal["nfiq2", "station-model"] = "nfiq2"
    """``nfiq2``: the real NIST NFIQ 2 (x86_64 only, ~0.3-0.7 s a rolled print).
    ``station-model``: the station's NFIQ 2 predictor (a few ms; for registries on arm64,
    where nbis does not run, and for load tests)."""
    check_face: bool = True
    face_criteria: frozenset[Criterion] = frozenset(
        {
            Criterion.ROLL,
            Criterion.CENTRE_X,
            Criterion.EYE_LINE,
            Criterion.HEAD_HEIGHT,
            Criterion.HEAD_WIDTH,
            Criterion.EYE_DISTANCE,
            Criterion.LIGHTING,
            Criterion.EXPOSURE,
            Criterion.CLIPPING,
            Criterion.SHARPNESS,
            Criterion.OCCLUSION,
            Criterion.BACKGROUND_UNIFORMITY,
            Criterion.BACKGROUND_CLUTTER,
        }
    )
    """What sends a portrait back: what the stored image itself shows (framing, light,
    focus, background, occlusion). Pose, eyes and expression are judged live at the
    station with the citizen in front of the camera; here they are recorded as warnings."""


@dataclass(frozen=True)
class Reason:
    """One thing to recapture: ``what`` is "finger" or "face", ``position`` the finger
    position (0 for the face), ``code`` stable, ``text`` for the officer."""

    what: str
    position: int
    code: str
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "position": self.position, "code": self.code, "text": self.text}


@dataclass(frozen=True)
class QualityReport:
    finger_scores: dict[int, int] = field(default_factory=dict)
    face_passed: bool | None = None
    reasons: list[Reason] = field(default_factory=list)
    face_warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def as_json(self) -> dict[str, Any]:
        return {
            "finger_nfiq2": {str(k): v for k, v in sorted(self.finger_scores.items())},
            "face_passed": self.face_passed,
            "face_warnings": self.face_warnings,
            "reasons": [r.as_json() for r in self.reasons],
        }


def finger_images(verified: VerifiedPackage) -> dict[int, np.ndarray[Any, Any]]:
    """Position -> decoded 8-bit image of every finger the package carries."""
    out: dict[int, np.ndarray[Any, Any]] = {}
    for fp in verified.transaction.fingerprints:
        out[fp.position] = images.decode_wsq(fp.data)
    return out


def face_image(verified: VerifiedPackage) -> np.ndarray[Any, Any] | None:
    """The first portrait as an RGB array, or None when the package has no face."""
    if not verified.transaction.faces:
        return None
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(verified.transaction.faces[0].data)) as img:
        return np.asarray(img.convert("RGB"))


def face_exceptions(verified: VerifiedPackage) -> frozenset[Criterion]:
    """The criteria the face sample's declared exception excuses."""
    excused: set[Criterion] = set()
    for sample in verified.record.samples:
        if sample.modality == "face" and sample.exception is not None:
            excused |= EXCUSED.get(sample.exception.code, frozenset())
    return frozenset(excused)


class QualityChecker:
    """Scores one package. The NFIQ 2 and face models are loaded once per process; calls
    are serialised (neither backend is thread-safe per instance)."""

    def __init__(
        self,
        settings: QualitySettings,
        scorer: QualityScorer | None = None,
        analyzer: FaceAnalyzer | None = None,
    ) -> None:
        self.settings = settings
        self._scorer = scorer
        self._analyzer = analyzer
        self._lock = threading.Lock()

    def _nfiq2(self) -> QualityScorer:
        if self._scorer is None:
            if self.settings.finger_scorer == "nfiq2":
                self._scorer = Nfiq2()
            else:
                self._scorer = StationQuality()
        return self._scorer

    def _faces(self) -> FaceAnalyzer:
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer()
        return self._analyzer

    def check(self, verified: VerifiedPackage) -> QualityReport:
        with self._lock:
            return self._check(verified)

    def _check(self, verified: VerifiedPackage) -> QualityReport:
        s = self.settings
        reasons: list[Reason] = []
        scores: dict[int, int] = {}
        for position, image in sorted(finger_images(verified).items()):
            score = self._nfiq2().score(image)
            scores[position] = score
            if score < s.min_finger_nfiq2:
                name = FINGER_POSITIONS.get(position, f"finger {position}")
                reasons.append(
                    Reason(
                        "finger",
                        position,
                        "low-quality",
                        f"{name}: NFIQ 2 {score} below {s.min_finger_nfiq2}; clean the "
                        "platen and the finger and roll it again",
                    )
                )
        excused = sum(
            1
            for sample in verified.record.samples
            if sample.modality == "finger" and sample.exception is not None
        )
        if len(scores) + excused >= 10 and len(scores) < s.min_fingers:
            reasons.append(
                Reason(
                    "finger",
                    0,
                    "too-few-fingers",
                    f"only {len(scores)} fingers carry an image; dedup needs {s.min_fingers}",
                )
            )
        face_passed: bool | None = None
        warnings: list[str] = []
        if s.check_face:
            face = face_image(verified)
            if face is None:
                face_passed = False
                reasons.append(Reason("face", 0, "no-face", "the package carries no portrait"))
            else:
                analysis = self._faces().analyze(face)
                if analysis.assessment is None:
                    face_passed = False
                    reasons.append(
                        Reason("face", 0, "no-face-found", "no face found in the portrait")
                    )
                else:
                    face_passed = True
                    face_excused = face_exceptions(verified)
                    for check in analysis.assessment.checks:
                        if check.passed or check.hint is None:
                            continue
                        if (
                            check.criterion in s.face_criteria
                            and check.criterion not in face_excused
                        ):
                            face_passed = False
                            text = hint_text(check.hint, "en")
                            reasons.append(Reason("face", 0, check.hint, text))
                        else:
                            warnings.append(check.criterion.value)
        return QualityReport(scores, face_passed, reasons, warnings)
