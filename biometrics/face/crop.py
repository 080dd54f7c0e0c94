"""Crop a face to the ICAO / ISO/IEC 19794-5 portrait geometry.

The default is the ISO/IEC 19794-5 Token Face Image: for an image W wide and 4W/3 high,
the eyes are level, 0.25 W apart, centred horizontally, on a line 0.6 W from the top.
A similarity transform (rotation, uniform scale, shift) built from the two eye centres
puts them exactly there, so roll is removed and the face is neither stretched nor
sheared. With a typical face this puts the chin-to-crown height at about 70% of the
image height, inside the ICAO 9303 part 3 range for a 35 x 45 mm photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
RGBImage = NDArray[np.uint8]


@dataclass(frozen=True)
class PortraitGeometry:
    """Output size in pixels and where the eyes go, as fractions of the width."""

    width: int = 480
    height: int = 640
    eye_distance: float = 0.25  # between the eye centres, share of the width
    eye_line: float = 0.6  # from the top edge, share of the width

    @property
    def right_eye(self) -> tuple[float, float]:
        """Target of the subject's right eye (image left)."""
        return self.width * (0.5 - self.eye_distance / 2), self.width * self.eye_line

    @property
    def left_eye(self) -> tuple[float, float]:
        return self.width * (0.5 + self.eye_distance / 2), self.width * self.eye_line


TOKEN_480 = PortraitGeometry(480, 640)  # ISO Token, eyes 120 px apart (ISO minimum 60)
TOKEN_600 = PortraitGeometry(600, 800)  # the same at 150 px between the eyes


@dataclass(frozen=True)
class Portrait:
    """The cropped image, the image-to-portrait transform, and how much of the portrait
    came from inside the source frame (1.0: no padding was needed)."""

    image: RGBImage
    matrix: NDArray[np.float64]  # 2x3, source pixels -> portrait pixels
    coverage: float

    def map_points(self, points: FloatArray) -> FloatArray:
        """Source-image points (K x 2) in portrait pixels."""
        pts = points[:, :2].astype(np.float64)
        out: FloatArray = (pts @ self.matrix[:, :2].T + self.matrix[:, 2]).astype(np.float32)
        return out


def portrait_matrix(
    right_eye: FloatArray, left_eye: FloatArray, geometry: PortraitGeometry = TOKEN_480
) -> NDArray[np.float64]:
    """2x3 similarity transform taking the two eye centres to their portrait positions."""
    src = np.asarray(left_eye, np.float64) - np.asarray(right_eye, np.float64)
    dst = np.subtract(geometry.left_eye, geometry.right_eye)
    scale = float(np.hypot(*dst) / max(np.hypot(*src), 1e-9))
    angle = math.atan2(dst[1], dst[0]) - math.atan2(src[1], src[0])
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    a = np.array([[c, -s], [s, c]])
    t = np.asarray(geometry.right_eye, np.float64) - a @ np.asarray(right_eye, np.float64)
    return np.hstack([a, t[:, None]])


def crop_portrait(
    image: RGBImage,
    right_eye: FloatArray,
    left_eye: FloatArray,
    geometry: PortraitGeometry = TOKEN_480,
    fill: tuple[int, int, int] = (255, 255, 255),
) -> Portrait:
    """Crop ``image`` (RGB uint8) to ``geometry`` around the given eye centres.

    Eye centres are the subject's right (image left) and left, in image pixels; pass the
    iris centres for best results. Parts of the portrait outside the frame are filled
    with ``fill``; ``coverage`` tells how much was real, so the caller can refuse a
    capture that needed padding.
    """
    matrix = portrait_matrix(right_eye, left_eye, geometry)
    scale = float(np.hypot(*matrix[:, 0]))
    src, pre = image, 1.0
    if scale < 0.5:
        # Big reduction: average pixels down first (a bilinear warp alone would alias).
        pre = 0.5 / scale
        h, w = image.shape[:2]
        src = np.asarray(
            cv2.resize(
                image,
                (max(1, round(w / pre)), max(1, round(h / pre))),
                interpolation=cv2.INTER_AREA,
            ),
            dtype=np.uint8,
        )
        # Pixel centres of the reduced image sit at (i + 0.5) * pre - 0.5 in the original.
        to_orig = np.array([[pre, 0.0, 0.5 * pre - 0.5], [0.0, pre, 0.5 * pre - 0.5], [0, 0, 1]])
    size = (geometry.width, geometry.height)
    m = matrix.copy()
    # OpenCV maps pixel indices; the transform is in continuous coordinates (pixel i
    # spans [i, i + 1]), so shift by half a pixel on both sides.
    m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    if pre != 1.0:
        m = m @ to_orig
    out: RGBImage = np.asarray(
        cv2.warpAffine(
            src, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
        ),
        dtype=np.uint8,
    )
    inside = np.asarray(
        cv2.warpAffine(
            np.ones(src.shape[:2], np.uint8), m, size, flags=cv2.INTER_NEAREST, borderValue=0
        ),
        dtype=np.uint8,
    )
    return Portrait(out, matrix, float(inside.mean()))
