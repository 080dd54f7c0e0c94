"""Faces: detection, landmarks, ICAO-style quality checks, portrait crop, embeddings.

- ``detect``: BlazeFace short/full range (TFLite): boxes and 6 keypoints.
- ``landmarks``: 468-point mesh and iris landmarks on rotation-normalised crops.
- ``quality``: ICAO 9303 / ISO/IEC 29794-5-style checks, each a number with a threshold,
  and officer hints in Vietnamese and English.
- ``crop``: the ISO/IEC 19794-5 token portrait (eyes level, 0.25 W apart, 0.6 W down).
- ``embed``: pluggable embedders (SFace), templates labelled with their model, cosine.
- ``pipeline``: one frame through all of it, with tracking for the live loop.
- ``variations``: capture defects (tilt, blur, light...) for tests and synthetic data.

Models come from pinned packages, checked by sha256 (``biometrics.models``).
"""

from biometrics.face.crop import TOKEN_480, TOKEN_600, Portrait, PortraitGeometry, crop_portrait
from biometrics.face.detect import Detection, FaceDetector
from biometrics.face.embed import FaceEmbedder, SFaceEmbedder, Template, cosine_similarity
from biometrics.face.landmarks import FaceLandmarker, FaceMesh, Irises
from biometrics.face.pipeline import FaceAnalysis, FaceAnalyzer
from biometrics.face.quality import Criterion, FaceAssessment, Thresholds, assess

__all__ = [
    "TOKEN_480",
    "TOKEN_600",
    "Criterion",
    "Detection",
    "FaceAnalysis",
    "FaceAnalyzer",
    "FaceAssessment",
    "FaceDetector",
    "FaceEmbedder",
    "FaceLandmarker",
    "FaceMesh",
    "Irises",
    "Portrait",
    "PortraitGeometry",
    "SFaceEmbedder",
    "Template",
    "Thresholds",
    "assess",
    "cosine_similarity",
    "crop_portrait",
]
