"""One frame through detection, mesh, iris and the quality checks.

The station's live feedback loop calls ``FaceAnalyzer.analyze`` per camera frame,
passing the previous result to track the face (one mesh pass, no detector) while the
mesh still finds it; the capture step then crops the best frame with ``portrait``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from biometrics.face.crop import TOKEN_480, Portrait, PortraitGeometry, crop_portrait
from biometrics.face.detect import Detection, FaceDetector
from biometrics.face.landmarks import (
    FaceLandmarker,
    FaceMesh,
    Irises,
    eye_centres,
    roi_from_detection,
    roi_from_mesh,
)
from biometrics.face.quality import (
    Criterion,
    FaceAssessment,
    Lang,
    Thresholds,
    assess,
    hint_text,
    luma,
)
from biometrics.face.quality import RGBImage as RGBImage


@dataclass(frozen=True)
class FaceAnalysis:
    """What one frame showed. ``faces`` counts detections (0 when tracked)."""

    faces: int
    detection: Detection | None = None
    mesh: FaceMesh | None = None
    irises: Irises | None = None
    assessment: FaceAssessment | None = None

    @property
    def found(self) -> bool:
        return self.assessment is not None

    @property
    def passed(self) -> bool:
        return self.assessment is not None and self.assessment.passed and self.faces <= 1

    @property
    def failed(self) -> list[Criterion]:
        return [] if self.assessment is None else self.assessment.failed

    def hint_keys(self) -> list[str]:
        if self.assessment is None:
            return ["no_face"]
        keys = self.assessment.hint_keys()
        return ["many_faces", *keys] if self.faces > 1 else keys

    def hints(self, lang: Lang = "vi") -> list[str]:
        return [hint_text(k, lang) for k in self.hint_keys()]


class FaceAnalyzer:
    """Detector + landmarker + checks, each model on ``num_threads`` threads."""

    def __init__(
        self,
        num_threads: int = 1,
        thresholds: Thresholds | None = None,
        range_: Literal["short", "full"] = "short",
        min_presence: float = 0.5,
    ) -> None:
        self.detector = FaceDetector(range_, num_threads)
        self.landmarker = FaceLandmarker(num_threads, min_presence)
        self.thresholds = thresholds or Thresholds()
        self.min_presence = min_presence

    def analyze(self, frame: RGBImage, previous: FaceAnalysis | None = None) -> FaceAnalysis:
        """Analyse one RGB frame; with ``previous`` (the last frame's result) the face is
        tracked from its mesh and the detector runs only when tracking loses it."""
        faces, detection, mesh = 0, None, None
        if previous is not None and previous.mesh is not None:
            mesh = self.landmarker.mesh(frame, roi_from_mesh(previous.mesh.points))
            if mesh.presence < self.min_presence:
                mesh = None
            else:
                faces = previous.faces
        if mesh is None:
            found = self.detector.detect(frame)
            if not found:
                return FaceAnalysis(0)
            faces, detection = len(found), found[0]
            first = self.landmarker.mesh(frame, roi_from_detection(detection))
            # Second pass framed on the first mesh: tighter than the detector's box.
            mesh = self.landmarker.mesh(frame, roi_from_mesh(first.points))
            if mesh.presence < self.min_presence:
                return FaceAnalysis(faces, detection)
        irises = self.landmarker.irises(frame, mesh)
        assessment = assess(frame, mesh, irises, self.thresholds, grey=luma(frame))
        return FaceAnalysis(faces, detection, mesh, irises, assessment)

    def portrait(
        self, frame: RGBImage, analysis: FaceAnalysis, geometry: PortraitGeometry = TOKEN_480
    ) -> Portrait:
        """The ICAO portrait crop of an analysed frame."""
        if analysis.mesh is None:
            raise ValueError("no face in this analysis")
        right, left = eye_centres(analysis.mesh, analysis.irises)
        return crop_portrait(frame, right, left, geometry)
