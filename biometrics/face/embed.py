"""Face embeddings for dedup: a pluggable embedder, SFace as the first one, templates
that carry the embedder's name and version, cosine similarity.

No face embedder we can ship offline is state of the art (STACK.md), so templates are
tied to the model that made them: comparing templates of different embedders or model
versions raises instead of returning a meaningless score, and a model upgrade means
re-embedding the gallery from the stored portraits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.errors import BiometricsError
from biometrics.face.landmarks import MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP, FaceMesh, Irises
from biometrics.face.landmarks import eye_centres as _eye_centres
from biometrics.models import load_onnx, model_path, spec

FloatArray = NDArray[np.float32]
RGBImage = NDArray[np.uint8]

ALIGNED_SIZE = 112
# Where the five points go in a 112 x 112 aligned face: the template the ArcFace family
# (SFace included) was trained on. Order: right eye, left eye, nose tip, right and left
# mouth corners (subject's right = image left).
ALIGNMENT_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


class TemplateMismatchError(BiometricsError, ValueError):
    """Two templates come from different embedders or model versions."""

    code = "template-mismatch"


@runtime_checkable
class FaceEmbedder(Protocol):
    """Turns an aligned face into an L2-normalised float32 vector."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, aligned: RGBImage) -> FloatArray:
        """``aligned``: ALIGNED_SIZE x ALIGNED_SIZE x 3 RGB uint8 from ``align_face``."""
        ...


@dataclass(frozen=True, eq=False)
class Template:
    """An embedding with the embedder that made it."""

    embedder: str
    version: str
    vector: FloatArray

    def __post_init__(self) -> None:
        v = np.asarray(self.vector)
        if v.ndim != 1 or v.dtype != np.float32:
            raise ValueError(f"template vector must be 1-D float32, got {v.dtype} {v.shape}")
        norm = float(np.linalg.norm(v))
        if abs(norm - 1.0) > 1e-3:
            raise ValueError(f"template vector must be L2-normalised (norm {norm:.4f})")

    @property
    def model(self) -> tuple[str, str]:
        return self.embedder, self.version


def five_points(mesh: FaceMesh, irises: Irises | None = None) -> FloatArray:
    """The alignment points (5 x 2, template order) from the mesh: iris centres (or eye
    corner midpoints), nose tip and mouth corners, as YuNet would report them."""
    right, left = _eye_centres(mesh, irises)
    p = mesh.points[:, :2]
    return np.stack([right, left, p[NOSE_TIP], p[MOUTH_RIGHT], p[MOUTH_LEFT]]).astype(np.float32)


def similarity_transform(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    """Least-squares rotation + uniform scale + shift taking ``src`` onto ``dst`` (Umeyama,
    without reflection): 2x3 matrix."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix) / max(s.var(axis=0).sum(), 1e-12))
    a = scale * rot
    return np.hstack([a, (mu_d - a @ mu_s)[:, None]])


def align_face(image: RGBImage, points: FloatArray) -> RGBImage:
    """The 112 x 112 aligned face for an embedder, from the five points in ``image``."""
    m = similarity_transform(points.astype(np.float64), ALIGNMENT_TEMPLATE)
    out: RGBImage = np.asarray(
        cv2.warpAffine(
            image, m, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)
        ),
        dtype=np.uint8,
    )
    return out


def _l2(v: NDArray[np.floating]) -> FloatArray:
    v = v.astype(np.float32).reshape(-1)
    out: FloatArray = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def _sface_version() -> str:
    # The model file's identity, not the runtime's: both SFace backends below share it.
    return f"2021dec-int8bq/{spec('sface').sha256[:12]}"


class SFaceEmbedder:
    """SFace (OpenCV Zoo, int8) via onnxruntime: 128-D, CPU.

    Input as OpenCV's FaceRecognizerSF feeds it: RGB, 0-255, NCHW, no normalisation.
    """

    name = "sface"
    dim = 128

    def __init__(self, num_threads: int = 1) -> None:
        self.version = _sface_version()
        self._session = load_onnx("sface", num_threads)
        self._input = self._session.get_inputs()[0].name

    def embed(self, aligned: RGBImage) -> FloatArray:
        if aligned.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
            raise ValueError(
                f"expected a {ALIGNED_SIZE}x{ALIGNED_SIZE} RGB face, got {aligned.shape}"
            )
        blob = aligned.astype(np.float32).transpose(2, 0, 1)[None]
        (out,) = self._session.run(None, {self._input: blob})
        return _l2(np.asarray(out))


class SFaceOpenCV:
    """The same SFace model through OpenCV's FaceRecognizerSF (no onnxruntime needed)."""

    name = "sface"
    dim = 128

    def __init__(self) -> None:
        self.version = _sface_version()
        self._recognizer = cv2.FaceRecognizerSF.create(str(model_path("sface")), "")

    def embed(self, aligned: RGBImage) -> FloatArray:
        if aligned.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
            raise ValueError(
                f"expected a {ALIGNED_SIZE}x{ALIGNED_SIZE} RGB face, got {aligned.shape}"
            )
        # FaceRecognizerSF takes BGR and swaps to RGB itself.
        feature = self._recognizer.feature(np.ascontiguousarray(aligned[..., ::-1]))
        return _l2(np.asarray(feature))


def make_template(embedder: FaceEmbedder, aligned: RGBImage) -> Template:
    """Embed ``aligned`` and label the vector with the embedder's name and version."""
    return Template(embedder.name, embedder.version, embedder.embed(aligned))


def cosine_similarity(a: Template, b: Template) -> float:
    """Cosine similarity in [-1, 1]; raises TemplateMismatchError across models."""
    if a.model != b.model:
        raise TemplateMismatchError(
            f"cannot compare {a.embedder} {a.version} with {b.embedder} {b.version}: "
            "re-embed one side with the other's model"
        )
    return float(np.dot(a.vector, b.vector))


def cosine_similarities(probe: Template, gallery: list[Template]) -> FloatArray:
    """Similarity of ``probe`` to each gallery template (one matrix product)."""
    if not gallery:
        return np.zeros(0, dtype=np.float32)
    for t in gallery:
        if t.model != probe.model:
            raise TemplateMismatchError(
                f"gallery holds {t.embedder} {t.version}, probe is {probe.embedder} {probe.version}"
            )
    matrix = np.stack([t.vector for t in gallery])
    out: FloatArray = matrix @ probe.vector
    return out
