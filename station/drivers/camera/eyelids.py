"""Closing the eyes of a synthetic face (the synth renderer has no eyelid control).

The upper lid comes down over the eye opening: the area between the open upper-lid line
and the lowered lid edge is painted in the person's skin tone (a touch darker, as a lid
is) with a dark lash line along its edge. Eye outlines come from the studio source's
mesh (MediaPipe topology), so the lids land where the eyes are.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.face.quality import LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR
from biometrics.synth.faces import RGBImage, SourceFace

SAMPLES = 24
LID_SHADE = 0.95  # a lid is a little darker than the cheek
LASH = (45, 32, 30)


def _lid_lines(
    points: NDArray[np.float32], contour: tuple[int, ...]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Upper and lower lid as ``SAMPLES`` points each, from one corner to the other."""
    c = points[list(contour), :2].astype(np.float64)
    lower = c[0:9]  # corner, lower lid, other corner
    upper = np.vstack([c[0:1], c[15:7:-1]])  # corner, upper lid, other corner
    xs = np.linspace(lower[0, 0], lower[-1, 0], SAMPLES)

    def along(line: NDArray[np.float64]) -> NDArray[np.float64]:
        order = np.argsort(line[:, 0])
        ys = np.interp(xs, line[order, 0], line[order, 1])
        return np.stack([xs, ys], axis=1)

    return along(upper), along(lower)


def close_eyes(source: SourceFace, closure: float) -> RGBImage:
    """``source.image`` with both eyes ``closure`` closed (0 open, 1 shut)."""
    if closure <= 0.0:
        return source.image
    closure = min(closure, 1.0)
    image = source.image.copy()
    lid = np.zeros(image.shape[:2], np.uint8)
    edges = []
    for contour in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR):
        upper, lower = _lid_lines(source.points, contour)
        height = float(np.max(lower[:, 1] - upper[:, 1]))
        # Start a little above the lid line so the open eye's lashes are covered too.
        top = upper - np.array([0.0, 0.15 * height])
        edge = upper + closure * (lower - upper) + np.array([0.0, 0.05 * height * closure])
        polygon = np.vstack([top, edge[::-1]])
        cv2.fillPoly(lid, [np.round(polygon).astype(np.int32)], 255)
        edges.append(edge)
    soft = cv2.GaussianBlur(lid.astype(np.float32) / 255.0, (0, 0), 1.2)[..., None]
    skin = np.array(source.skin, np.float32) * LID_SHADE
    painted = image.astype(np.float32) * (1 - soft) + skin * soft
    image = np.clip(painted + 0.5, 0, 255).astype(np.uint8)
    thickness = max(1, round(0.02 * source.eye_distance))
    for edge in edges:
        cv2.polylines(image, [np.round(edge).astype(np.int32)], False, LASH, thickness, cv2.LINE_AA)
    return image
