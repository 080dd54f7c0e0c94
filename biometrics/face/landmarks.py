"""468-point face mesh and iris landmarks (MediaPipe TFLite models).

Both models look at a square, rotation-normalised crop: the mesh at 192x192 around the
face (rotated so the eyes are level), the iris model at 64x64 around each eye. A ``Roi``
holds such a crop's placement; its affine matrix maps crop pixels to image pixels, so the
model outputs are mapped back exactly by the transform that produced the crop.

"Right" and "left" are the subject's: the right eye is on the image's left side in an
unmirrored photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.face.detect import Detection, Keypoint
from biometrics.models import load_tflite

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

FloatArray = NDArray[np.float32]
RGBImage = NDArray[np.uint8]

MESH_INPUT = 192
IRIS_INPUT = 64
NUM_MESH_POINTS = 468

# Mesh indices (MediaPipe face mesh topology).
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (362, 263)  # inner, outer: both pairs run left-to-right in the image
# Eye-aspect-ratio contours: corner, two upper lid points, corner, two lower lid points.
RIGHT_EYE_EAR = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR = (263, 387, 385, 362, 380, 373)
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14
MOUTH_RIGHT = 61
MOUTH_LEFT = 291
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

# Crop scales around the detection box / eye, as in MediaPipe's face and iris graphs:
# generous enough that a face moving between frames stays inside.
FACE_ROI_SCALE = 1.5
EYE_ROI_SCALE = 2.3


@dataclass(frozen=True)
class Roi:
    """A square crop: centre and side in image pixels, rotation in radians (y down)."""

    cx: float
    cy: float
    size: float
    angle: float

    def matrix(self, n: int) -> NDArray[np.float64]:
        """2x3 affine matrix mapping n x n crop pixels to image pixels."""
        s = self.size / n
        c, si = math.cos(self.angle) * s, math.sin(self.angle) * s
        half = n / 2
        return np.array(
            [
                [c, -si, self.cx - c * half + si * half],
                [si, c, self.cy - si * half - c * half],
            ]
        )

    def crop(self, image: RGBImage, n: int, flip: bool = False) -> RGBImage:
        """The n x n crop, sampled bilinearly; outside the image is black."""
        m = self.matrix(n)
        if flip:  # mirror the crop: crop x' = n - x
            m = m @ np.array([[-1.0, 0.0, n], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        # The matrix is in continuous coordinates (pixel i spans [i, i+1]), as the model
        # outputs are; OpenCV samples at pixel indices, half a pixel off.
        m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
        out: RGBImage = np.asarray(
            cv2.warpAffine(
                image,
                m,
                (n, n),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
            ),
            dtype=np.uint8,
        )
        return out

    def to_image(self, points: FloatArray, n: int, flip: bool = False) -> FloatArray:
        """Map crop-pixel points (K x 2 or K x 3) to image pixels; z scales like x."""
        pts = points.astype(np.float64).copy()
        if flip:
            pts[:, 0] = n - pts[:, 0]
        m = self.matrix(n)
        xy = pts[:, :2] @ m[:, :2].T + m[:, 2]
        if pts.shape[1] == 2:
            return xy.astype(np.float32)
        z = pts[:, 2:3] * (self.size / n)
        return np.hstack([xy, z]).astype(np.float32)


def roi_from_detection(detection: Detection) -> Roi:
    """The mesh crop for a detection: box centre, 1.5x its longer side, eyes levelled."""
    right = detection.keypoints[Keypoint.RIGHT_EYE]
    left = detection.keypoints[Keypoint.LEFT_EYE]
    angle = math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))
    cx, cy = detection.center
    size = max(detection.width, detection.height) * FACE_ROI_SCALE
    return Roi(cx, cy, size, angle)


def roi_from_mesh(points: FloatArray) -> Roi:
    """The next mesh crop from a mesh (tracking, or a second refining pass).

    The box is taken in the face's own rotated frame so that roll does not inflate it.
    """
    right, left = points[RIGHT_EYE_CORNERS[0], :2], points[LEFT_EYE_CORNERS[1], :2]
    angle = math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # image -> face frame
    local = points[:, :2].astype(np.float64) @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre = ((lo + hi) / 2) @ rot  # back to image coordinates
    size = float(max(hi - lo)) * FACE_ROI_SCALE
    return Roi(float(centre[0]), float(centre[1]), size, angle)


def eye_roi(points: FloatArray, corners: tuple[int, int]) -> Roi:
    """The iris-model crop for one eye, from its two corners (left-to-right in the image)."""
    a, b = points[corners[0], :2], points[corners[1], :2]
    angle = math.atan2(float(b[1] - a[1]), float(b[0] - a[0]))
    size = float(np.hypot(*(b - a))) * EYE_ROI_SCALE
    return Roi(float(a[0] + b[0]) / 2, float(a[1] + b[1]) / 2, size, angle)


@dataclass(frozen=True)
class FaceMesh:
    """468 points (x, y in image pixels; z relative depth, same scale, smaller = nearer)."""

    points: FloatArray
    presence: float  # the model's face-present probability for this crop
    roi: Roi


@dataclass(frozen=True)
class Eye:
    """Iris (5 x 2: centre, then 4 points on its edge) and eye contour (71 x 2)."""

    iris: FloatArray
    contour: FloatArray

    @property
    def center(self) -> FloatArray:
        c: FloatArray = self.iris[0]
        return c

    @property
    def iris_diameter(self) -> float:
        """Mean of the horizontal and vertical iris diameters, in image pixels."""
        edge = self.iris[1:]
        return float((np.hypot(*(edge[0] - edge[2])) + np.hypot(*(edge[1] - edge[3]))) / 2)


@dataclass(frozen=True)
class Irises:
    """Both eyes, subject's right and left."""

    right: Eye
    left: Eye


class FaceLandmarker:
    """Runs the face mesh and iris models. Not thread-safe: one per thread."""

    def __init__(self, num_threads: int = 1, min_presence: float = 0.5) -> None:
        self.min_presence = min_presence
        self._mesh: Interpreter = load_tflite("face_landmark", num_threads)
        self._iris: Interpreter = load_tflite("iris_landmark", num_threads)
        self._mesh_in = self._mesh.get_input_details()[0]["index"]
        # Outputs: 1404 mesh values and a 1-value face flag; tell them apart by size.
        mesh_out = {int(np.prod(o["shape"])): o["index"] for o in self._mesh.get_output_details()}
        self._mesh_points, self._mesh_flag = mesh_out[NUM_MESH_POINTS * 3], mesh_out[1]
        self._iris_in = self._iris.get_input_details()[0]["index"]
        iris_out = {int(np.prod(o["shape"])): o["index"] for o in self._iris.get_output_details()}
        self._iris_contour, self._iris_points = iris_out[71 * 3], iris_out[5 * 3]

    def mesh(self, image: RGBImage, roi: Roi) -> FaceMesh:
        """The mesh for the face in ``roi`` (from ``roi_from_detection`` or a previous mesh)."""
        crop = roi.crop(image, MESH_INPUT)
        self._mesh.set_tensor(self._mesh_in, crop[None].astype(np.float32) * (1.0 / 255.0))
        self._mesh.invoke()
        raw = self._mesh.get_tensor(self._mesh_points).reshape(NUM_MESH_POINTS, 3)
        logit = float(self._mesh.get_tensor(self._mesh_flag).reshape(-1)[0])
        presence = 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))
        return FaceMesh(roi.to_image(raw, MESH_INPUT), presence, roi)

    def mesh_from_detection(self, image: RGBImage, detection: Detection) -> FaceMesh:
        """Mesh from a detection, refined once: the second crop is framed on the first mesh.

        The detector's box is loose and its eye keypoints coarse; one more pass on a crop
        centred and levelled by the mesh itself tightens the landmarks (what MediaPipe
        gets across video frames by tracking).
        """
        first = self.mesh(image, roi_from_detection(detection))
        return self.mesh(image, roi_from_mesh(first.points))

    def eye(self, image: RGBImage, roi: Roi, flip: bool) -> Eye:
        """Iris landmarks for one eye crop. The model is trained on one eye side: the
        other eye is mirrored in and the results mirrored back."""
        crop = roi.crop(image, IRIS_INPUT, flip=flip)
        self._iris.set_tensor(self._iris_in, crop[None].astype(np.float32) * (1.0 / 255.0))
        self._iris.invoke()
        iris = self._iris.get_tensor(self._iris_points).reshape(5, 3)[:, :2]
        contour = self._iris.get_tensor(self._iris_contour).reshape(71, 3)[:, :2]
        return Eye(roi.to_image(iris, IRIS_INPUT, flip), roi.to_image(contour, IRIS_INPUT, flip))

    def irises(self, image: RGBImage, mesh: FaceMesh) -> Irises:
        """Both eyes' iris landmarks, in image pixels."""
        pts = mesh.points
        right = self.eye(image, eye_roi(pts, RIGHT_EYE_CORNERS), flip=False)
        left = self.eye(image, eye_roi(pts, LEFT_EYE_CORNERS), flip=True)
        return Irises(right, left)


# Eyelid points of the iris model's 71-point contour: the first 16 follow the eye's
# outline (outer corner, lower lid, inner corner, upper lid) as MediaPipe maps them
# onto the mesh; corners at 0 and 8.
CONTOUR_EAR = (0, 11, 13, 8, 5, 3)


def eye_centres(mesh: FaceMesh, irises: Irises | None = None) -> tuple[FloatArray, FloatArray]:
    """(right, left) eye centres in image pixels: iris centres when available, else the
    midpoint of each eye's corners (a pupil is near it when looking ahead)."""
    if irises is not None:
        return irises.right.center.copy(), irises.left.center.copy()
    p = mesh.points[:, :2]
    right = (p[RIGHT_EYE_CORNERS[0]] + p[RIGHT_EYE_CORNERS[1]]) / 2
    left = (p[LEFT_EYE_CORNERS[0]] + p[LEFT_EYE_CORNERS[1]]) / 2
    return right.astype(np.float32), left.astype(np.float32)
