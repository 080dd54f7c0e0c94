"""ICAO 9303 / ISO/IEC 29794-5-style face image checks.

Each check is a number with a documented pass range (``Thresholds``), computed from the
face mesh (and iris landmarks) of one image. ``assess`` runs them all and returns a
``FaceAssessment``: which criteria failed and what to tell the citizen, in Vietnamese and
English (``HINTS``).

Conventions: right/left are the subject's (image left/right in an unmirrored photo).
Angles in degrees. Yaw > 0: the nose points to the subject's left (image right).
Pitch > 0: chin up (the forehead leans away from the camera). Roll > 0: the head leans
toward the subject's left shoulder (clockwise in the image).

Limits (see ``background_mask``): there is no segmentation model in our pinned
packages, so the head, hair and shoulders are an envelope drawn around the mesh from
average proportions. Big hair, hats or unusual posture push real pixels of the person
into the "background" and make the background checks stricter than they should be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.face.detect import area_resize
from biometrics.face.landmarks import (
    CHIN,
    CONTOUR_EAR,
    FACE_OVAL,
    LEFT_EYE_EAR,
    LOWER_LIP_INNER,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    RIGHT_EYE_EAR,
    UPPER_LIP_INNER,
    FaceMesh,
    Irises,
    eye_centres,
)

FloatArray = NDArray[np.float32]
RGBImage = NDArray[np.uint8]
Lang = Literal["vi", "en"]

# Symmetric mesh pairs (subject's right, left) on rigid parts of the face: eye corners,
# brows, cheekbones and the face outline at ear level. Mouth corners are left out: a
# lopsided smile would read as head yaw.
SYMMETRIC_PAIRS = (
    (33, 263), (133, 362), (70, 300), (105, 334), (116, 345), (50, 280), (234, 454),
    (127, 356), (93, 323),
)  # fmt: skip
GLABELLA = 9
SUBNASALE = 2
NASION = 168
# With the head level (Frankfurt plane horizontal) soft-tissue glabella sits several mm
# behind the true vertical through subnasale (soft-tissue cephalometric norms put it near
# 8 mm, some 63 mm higher): that line leans back by about 7 degrees on a level head. The
# three eye-level portraits among the test photos read within 0.3 degrees of level with
# this offset; it is an anthropometric average, so expect a few degrees between people.
NEUTRAL_PITCH = 7.0


class Criterion(StrEnum):
    """The checks, in the order they are reported."""

    YAW = "yaw"
    PITCH = "pitch"
    ROLL = "roll"
    EYES_OPEN = "eyes_open"
    MOUTH_CLOSED = "mouth_closed"
    CENTRE_X = "centre_x"
    EYE_LINE = "eye_line"
    HEAD_HEIGHT = "head_height"
    HEAD_WIDTH = "head_width"
    EYE_DISTANCE = "eye_distance"
    LIGHTING = "lighting"
    EXPOSURE = "exposure"
    CLIPPING = "clipping"
    SHARPNESS = "sharpness"
    OCCLUSION = "occlusion"
    BACKGROUND_UNIFORMITY = "background_uniformity"
    BACKGROUND_CLUTTER = "background_clutter"


@dataclass(frozen=True)
class Thresholds:
    """Pass ranges. Geometry follows ISO/IEC 19794-5 (full frontal) and ICAO 9303 part 3.
    The other limits were set from what the real test photos and their synthetic defects
    measure (bench/face.py --checks; figures in the comments) and should be re-tuned on
    station captures."""

    max_yaw: float = 5.0  # ISO/IEC 19794-5: frontal within +-5 deg yaw and pitch
    max_pitch: float = 5.0
    max_roll: float = 8.0  # ... and +-8 deg roll
    # Eyelid aperture / eye width on the iris model's contour: open eyes 0.18-0.36 on the
    # photos (0.18 in a broad smile). Not validated on real closed eyes (none offline).
    min_eye_aspect: float = 0.12
    # Inner-lip gap / mouth width: closed 0.01, smiling with teeth 0.12-0.28, talking 0.40.
    max_mouth_open: float = 0.08
    max_centre_offset: float = 0.05  # ISO: face centre within 0.45-0.55 of the width
    eye_line: tuple[float, float] = (0.30, 0.50)  # from the top; ISO: 50-70% from bottom
    head_height: tuple[float, float] = (0.60, 0.90)  # chin-crown / height (ISO "DD")
    head_width: tuple[float, float] = (0.50, 0.75)  # head width / width (ISO "CC")
    min_eye_distance: float = 90.0  # pixels between eye centres (ISO full frontal)
    # Median luma, darker face half / brighter: photos 0.85-1.0, strong side light 0.52-0.71.
    min_lighting_ratio: float = 0.80
    # Median skin luma (0-255): photos 100-185; x0.3 exposure 30-55, x2.2 205-255.
    exposure: tuple[float, float] = (70.0, 200.0)
    # Share of skin pixels burnt out (a channel >= 250) or black (luma <= 8): photos
    # <= 0.017, x2.2 exposure 0.81-0.95.
    max_clipped: float = 0.03
    # Laplacian energy over that after a 1 px re-blur (see ``sharpness``): photos 3.7-11.8,
    # Gaussian blur of 2 px at 120 px between the eyes 1.9-2.1.
    min_sharpness: float = 3.0
    # Background luma std (0-255): plain backdrop ~0, a left-right light gradient 40-43,
    # the photos' offices and flags 36-80.
    max_background_std: float = 20.0
    # Share of background pixels on an edge: plain 0, a 120 x 200 px clutter patch in a
    # 480 x 640 portrait 0.19-0.21, the photos 0.28-0.76.
    max_background_edges: float = 0.03
    # Smallest feature contrast (see ``occlusion``): the photos and their good captures
    # 0.39-1.1, blurred (2-3.5 px) or side-lit 0.28 and up; sunglasses 0.03-0.16, a mask
    # over nose and mouth 0.00-0.10, a hand over the mouth 0.10-0.18.
    min_feature_contrast: float = 0.22


@dataclass(frozen=True)
class Check:
    """One criterion's measurement: the value, the pass range, and a hint key if failed."""

    criterion: Criterion
    value: float
    low: float | None
    high: float | None
    hint: str | None = None

    @property
    def passed(self) -> bool:
        return self.hint is None


def _range_check(
    criterion: Criterion,
    value: float,
    low: float | None,
    high: float | None,
    hint_low: str,
    hint_high: str,
) -> Check:
    """A check failing below ``low`` (hint_low) or above ``high`` (hint_high); a value
    that could not be measured (NaN) fails too."""
    hint = None
    if math.isnan(value):
        hint = hint_low or hint_high
    elif low is not None and value < low:
        hint = hint_low
    elif high is not None and value > high:
        hint = hint_high
    return Check(criterion, value, low, high, hint)


# --------------------------------------------------------------------------- hints

# (Vietnamese, English), addressed to the citizen; the officer reads them out or the
# kiosk shows them. Directions are the citizen's own left/right.
HINTS: dict[str, tuple[str, str]] = {
    "no_face": ("Không tìm thấy khuôn mặt", "No face found"),
    "many_faces": ("Có nhiều hơn một khuôn mặt trong khung hình", "More than one face in view"),
    "yaw_to_right": ("Quay mặt sang phải một chút", "Turn your head slightly to your right"),
    "yaw_to_left": ("Quay mặt sang trái một chút", "Turn your head slightly to your left"),
    "pitch_down": ("Hạ cằm xuống một chút", "Lower your chin slightly"),
    "pitch_up": ("Nâng cằm lên một chút", "Raise your chin slightly"),
    "roll_to_right": (
        "Giữ đầu thẳng: nghiêng sang phải một chút",
        "Straighten your head: tilt it slightly to your right",
    ),
    "roll_to_left": (
        "Giữ đầu thẳng: nghiêng sang trái một chút",
        "Straighten your head: tilt it slightly to your left",
    ),
    "open_eyes": ("Mở mắt to, nhìn thẳng vào máy ảnh", "Open your eyes and look at the camera"),
    "close_mouth": ("Ngậm miệng lại, giữ nét mặt tự nhiên", "Close your mouth, neutral expression"),
    "move_to_left": ("Dịch sang trái một chút", "Move slightly to your left"),
    "move_to_right": ("Dịch sang phải một chút", "Move slightly to your right"),
    "face_too_high": (
        "Khuôn mặt quá cao trong khung hình: hạ máy ảnh hoặc nâng ghế",
        "Face too high in the frame: lower the camera or raise the seat",
    ),
    "face_too_low": (
        "Khuôn mặt quá thấp trong khung hình: nâng máy ảnh hoặc hạ ghế",
        "Face too low in the frame: raise the camera or lower the seat",
    ),
    "move_closer": ("Tiến lại gần máy ảnh hơn", "Move closer to the camera"),
    "move_back": ("Lùi ra xa máy ảnh một chút", "Move back from the camera a little"),
    "too_dark": ("Ảnh quá tối: tăng ánh sáng", "Too dark: add light"),
    "too_bright": ("Ảnh quá sáng: giảm ánh sáng", "Too bright: reduce the light"),
    "light_right_dark": (
        "Ánh sáng không đều: nửa mặt bên phải tối hơn",
        "Uneven light: your right side is darker",
    ),
    "light_left_dark": (
        "Ánh sáng không đều: nửa mặt bên trái tối hơn",
        "Uneven light: your left side is darker",
    ),
    "glare": (
        "Mặt bị lóa hoặc cháy sáng: giảm đèn, tránh phản chiếu",
        "Glare or burnt-out spots on the face: soften the light",
    ),
    "deep_shadow": (
        "Có vùng quá tối trên mặt: tránh bóng đổ",
        "Deep shadows on the face: light it more evenly",
    ),
    "blurred": ("Ảnh bị mờ: giữ yên và lấy nét lại", "Blurred: hold still and refocus"),
    "uncover_eyes": (
        "Tháo kính râm, không để gì che mắt",
        "Take off sunglasses; keep your eyes uncovered",
    ),
    "uncover_mouth": (
        "Tháo khẩu trang, bỏ tay xuống: không che mũi và miệng",
        "Remove the mask or hand: keep your nose and mouth uncovered",
    ),
    "background_uneven": (
        "Phông nền không đều màu hoặc ánh sáng",
        "Background unevenly coloured or lit",
    ),
    "background_cluttered": (
        "Phông nền không trơn: dùng phông nền một màu",
        "Background not plain: use the plain backdrop",
    ),
}


def hint_text(key: str, lang: Lang = "vi") -> str:
    """The hint ``key`` in Vietnamese ("vi") or English ("en")."""
    vi, en = HINTS[key]
    return vi if lang == "vi" else en


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees (conventions in the module docstring)."""

    yaw: float
    pitch: float
    roll: float


def head_pose(points: FloatArray) -> HeadPose:
    """Yaw, pitch and roll from the mesh's 3D points, without a 3D face model.

    The lateral axis is the mean of right-to-left vectors over symmetric points: roll is
    its slope in the image, yaw its depth slope. Pitch is the lean of the glabella-to-
    subnasale line (the soft-tissue vertical that stays near plumb when the Frankfurt
    plane is level) out of the image plane, taken perpendicular to the lateral axis.
    Yaw and roll have a natural zero (symmetry); pitch depends on the mesh's depth
    estimate and face shape, so expect a few degrees of bias between people.
    """
    p = points.astype(np.float64)
    lateral = np.mean([p[left] - p[right] for right, left in SYMMETRIC_PAIRS], axis=0)
    lateral /= np.linalg.norm(lateral)
    roll = math.degrees(math.atan2(lateral[1], lateral[0]))
    yaw = math.degrees(math.atan2(lateral[2], math.hypot(lateral[0], lateral[1])))
    up = p[GLABELLA] - p[SUBNASALE]
    up -= np.dot(up, lateral) * lateral
    # In-plane length of the face's up vector, so roll does not change the pitch.
    pitch = math.degrees(math.atan2(up[2], math.hypot(up[0], up[1]))) - NEUTRAL_PITCH
    return HeadPose(yaw, pitch, roll)


def eye_aspect_ratio(six: FloatArray) -> float:
    """(|p1-p5| + |p2-p4|) / (2 |p0-p3|) for six eye points: corner, two upper-lid
    points, other corner, two lower-lid points (Soukupová & Čech's EAR)."""
    p = six[:, :2].astype(np.float64)
    vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(vertical / (2 * max(float(np.linalg.norm(p[0] - p[3])), 1e-9)))


def eyes_aspect(mesh: FaceMesh, irises: Irises | None = None) -> float:
    """The smaller eye's aspect ratio: from the iris model's eyelid contour when given
    (it follows the lids more closely than the mesh), else from the mesh."""
    if irises is not None:
        idx = list(CONTOUR_EAR)
        return min(
            eye_aspect_ratio(irises.right.contour[idx]), eye_aspect_ratio(irises.left.contour[idx])
        )
    p = mesh.points
    return min(eye_aspect_ratio(p[list(RIGHT_EYE_EAR)]), eye_aspect_ratio(p[list(LEFT_EYE_EAR)]))


def mouth_open_ratio(points: FloatArray) -> float:
    """Gap between the inner lips over the mouth width (0 for closed lips)."""
    p = points[:, :2].astype(np.float64)
    gap = np.linalg.norm(p[UPPER_LIP_INNER] - p[LOWER_LIP_INNER])
    width = np.linalg.norm(p[MOUTH_RIGHT] - p[MOUTH_LEFT])
    return float(gap / max(float(width), 1e-9))


@dataclass(frozen=True)
class FaceGeometry:
    """Where the head is, in image pixels.

    The crown is not visible to the mesh (it stops at the upper forehead): it is placed
    as far above the eye line as the chin is below it, the classical proportion (eyes
    at half the head height; ISO/IEC 19794-5 Annex on head proportions).
    """

    right_eye: FloatArray
    left_eye: FloatArray
    eye_mid: FloatArray
    eye_distance: float
    chin: FloatArray
    crown: FloatArray
    centre: FloatArray  # ISO's M: midway between the eye midpoint and the mouth centre
    head_width: float  # across the face outline at ear level
    up: FloatArray  # unit vector from chin toward crown (image coordinates)

    @property
    def head_height(self) -> float:
        return float(np.linalg.norm(self.crown - self.chin))


def face_geometry(mesh: FaceMesh, irises: Irises | None = None) -> FaceGeometry:
    """Eye centres, chin, estimated crown, face centre and head width from the mesh."""
    p = mesh.points[:, :2].astype(np.float64)
    right, left = (e.astype(np.float64) for e in eye_centres(mesh, irises))
    eye_mid = (right + left) / 2
    eye_vec = left - right
    # "Up" is perpendicular to the eye line, so roll does not shorten the head.
    up = np.array([eye_vec[1], -eye_vec[0]]) / max(float(np.linalg.norm(eye_vec)), 1e-9)
    chin_drop = float(np.dot(eye_mid - p[CHIN], up))
    crown = eye_mid + up * chin_drop
    mouth = (p[UPPER_LIP_INNER] + p[LOWER_LIP_INNER] + p[MOUTH_RIGHT] + p[MOUTH_LEFT]) / 4
    lateral = eye_vec / max(float(np.linalg.norm(eye_vec)), 1e-9)
    oval = p[list(FACE_OVAL)]
    across = oval @ lateral
    return FaceGeometry(
        right_eye=right.astype(np.float32),
        left_eye=left.astype(np.float32),
        eye_mid=eye_mid.astype(np.float32),
        eye_distance=float(np.linalg.norm(eye_vec)),
        chin=p[CHIN].astype(np.float32),
        crown=crown.astype(np.float32),
        centre=((eye_mid + mouth) / 2).astype(np.float32),
        head_width=float(across.max() - across.min()),
        up=up.astype(np.float32),
    )


# --------------------------------------------------------------------------- image statistics


def luma(image: RGBImage) -> NDArray[np.uint8]:
    """BT.601 luma, the grey every image statistic here is computed on."""
    grey: NDArray[np.uint8] = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    return grey


def skin_polygon(points: FloatArray, shrink: float = 0.85) -> FloatArray:
    """The face outline pulled toward the nose: mostly skin, without hairline and jaw edge."""
    oval = points[list(FACE_OVAL), :2].astype(np.float64)
    centre = points[NASION, :2].astype(np.float64) * 0.5 + oval.mean(axis=0) * 0.5
    polygon: FloatArray = ((oval - centre) * shrink + centre).astype(np.float32)
    return polygon


# Skin statistics need a few thousand pixels, not a full-resolution face: sample the
# face box on a grid at most this many pixels across (every k-th pixel, not averaged, so
# burnt-out and black pixels keep their values).
STATS_SIDE = 128


def _polygon_pixels(
    grey: NDArray[np.uint8], polygon: FloatArray
) -> tuple[NDArray[np.bool_], int, int, int]:
    """Mask of ``polygon`` over its bounding box sampled every ``k`` pixels: (mask, x0,
    y0, k); mask[i, j] is image pixel (x0 + j k, y0 + i k)."""
    h, w = grey.shape[:2]
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=bool), 0, 0, 1
    k = max(1, -(-max(x1 - x0, y1 - y0) // STATS_SIDE))
    mask = np.zeros((-(-(y1 - y0) // k), -(-(x1 - x0) // k)), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round((polygon - [x0, y0]) / k).astype(np.int32)], 1)
    return mask.astype(bool), int(x0), int(y0), int(k)


def _sample(
    array: NDArray[np.uint8], mask: NDArray[np.bool_], x0: int, y0: int, k: int
) -> NDArray[np.uint8]:
    """The pixels of ``array`` under a mask from ``_polygon_pixels``."""
    grid = array[y0 : y0 + mask.shape[0] * k : k, x0 : x0 + mask.shape[1] * k : k]
    values: NDArray[np.uint8] = grid[mask[: grid.shape[0], : grid.shape[1]]]
    return values


def lighting_balance(grey: NDArray[np.uint8], points: FloatArray) -> tuple[float, str | None]:
    """Median luma of the darker face half over the brighter one, and which half is
    darker ("right"/"left", the subject's). Medians ignore eyes, brows and beard."""
    mask, x0, y0, k = _polygon_pixels(grey, skin_polygon(points))
    if not mask.any():
        return float("nan"), None
    values = _sample(grey, mask, x0, y0, k)
    ys, xs = np.nonzero(mask)
    ys, xs = ys[: len(values)] * k + y0, xs[: len(values)] * k + x0
    a = points[GLABELLA, :2].astype(np.float64)
    b = points[SUBNASALE, :2].astype(np.float64)
    # Sign of the cross product: which side of the glabella-subnasale line a pixel is on.
    # With y down and the line pointing down, positive is image left: the subject's right.
    side = (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])
    right, left = values[side > 0], values[side < 0]
    if len(right) < 20 or len(left) < 20:
        return float("nan"), None
    mr, ml = float(np.median(right)), float(np.median(left))
    ratio = min(mr, ml) / max(mr, ml, 1.0)
    return ratio, ("right" if mr < ml else "left")


def exposure_stats(
    image: RGBImage, grey: NDArray[np.uint8], points: FloatArray
) -> tuple[float, float, float]:
    """(median skin luma, share of burnt-out skin pixels, share of black skin pixels)."""
    mask, x0, y0, k = _polygon_pixels(grey, skin_polygon(points))
    if not mask.any():
        return float("nan"), float("nan"), float("nan")
    values = _sample(grey, mask, x0, y0, k)
    rgb = _sample(image, mask, x0, y0, k)
    burnt = float(np.mean(rgb.max(axis=1) >= 250))  # any channel clipped: a hot spot
    black = float(np.mean(values <= 8))
    return float(np.median(values)), burnt, black


SHARPNESS_EYE_DISTANCE = 64.0  # pixels between the eyes in the normalised face


def normalised_face(
    grey: NDArray[np.uint8], geometry: FaceGeometry, eye_distance: float = SHARPNESS_EYE_DISTANCE
) -> NDArray[np.uint8]:
    """The face resampled so the eyes are level and ``eye_distance`` px apart (2x that
    square, eyes at 3/8 height): measurements on it no longer depend on face size."""
    size = round(eye_distance * 2)
    scale = eye_distance / max(geometry.eye_distance, 1e-6)
    # Only the face's neighbourhood is needed: cut it out before any resizing.
    h, w = grey.shape[:2]
    reach = size / scale  # covers the output square at any rotation
    mid = geometry.eye_mid.astype(np.float64)
    x0, y0 = max(0, int(mid[0] - reach)), max(0, int(mid[1] - reach))
    x1, y1 = min(w, int(mid[0] + reach) + 1), min(h, int(mid[1] + reach) + 1)
    src = grey[y0:y1, x0:x1]
    if src.size == 0:  # the eyes are outside the frame
        return np.zeros((size, size), dtype=np.uint8)
    centre = mid - [x0, y0]
    if scale < 0.5:
        # Shrink with area averaging first: a bilinear warp by a large factor would alias
        # and so invent high frequencies (false sharpness).
        pre = 0.5 / scale
        src = np.asarray(
            cv2.resize(src, None, fx=1 / pre, fy=1 / pre, interpolation=cv2.INTER_AREA),
            dtype=np.uint8,
        )
        centre, scale = centre / pre, scale * pre
    dx, dy = (geometry.left_eye - geometry.right_eye).astype(np.float64)
    angle = math.degrees(math.atan2(dy, dx))
    m = np.asarray(
        cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale),
        dtype=np.float64,
    )
    m[:, 2] += np.array([size / 2, size * 3 / 8]) - centre
    out: NDArray[np.uint8] = np.asarray(
        cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR), dtype=np.uint8
    )
    return out


REBLUR_SIGMA = 1.0  # pixels of the normalised face


def sharpness(grey: NDArray[np.uint8], geometry: FaceGeometry) -> float:
    """How much detail a further blur would destroy, at a fixed face scale.

    The variance of the Laplacian over the central face (eyes to mouth, no hair or
    background) of the face resampled to 64 px between the eyes, divided by the same
    after a Gaussian re-blur of 1 px. The raw variance scales with contrast (skin tone,
    exposure) by a factor of ten between our test photos; the ratio does not: a sharp
    face loses most of its Laplacian energy to the re-blur (ratio 3.6-7.9 measured),
    an already blurred one little (about 2 after a 1 px blur, 1.5 after 2 px).
    """
    face = normalised_face(grey, geometry).astype(np.float32)
    n = face.shape[0]
    core = (slice(n // 4, n * 7 // 8), slice(n // 8, n * 7 // 8))
    detail = cv2.Laplacian(face, cv2.CV_32F, ksize=3)[core].var()
    reblurred = cv2.GaussianBlur(face, (0, 0), REBLUR_SIGMA)
    residual = cv2.Laplacian(reblurred, cv2.CV_32F, ksize=3)[core].var()
    return float(detail / max(residual, 1e-6))


def background_mask(
    shape: tuple[int, int], geometry: FaceGeometry, margin: float = 0.15
) -> NDArray[np.bool_]:
    """True where the image is taken to be background: outside an envelope of head, hair,
    neck and shoulders drawn from the face geometry (no segmentation model: see the
    module docstring). ``margin`` widens the envelope by that share of head width."""
    h, w = shape
    person = np.zeros((h, w), dtype=np.uint8)
    up = geometry.up.astype(np.float64)
    side = np.array([-up[1], up[0]])  # image-right direction in the face frame
    head_w = geometry.head_width * (1.25 + margin)  # hair at the sides
    head_h = geometry.head_height * (1.10 + margin)  # hair above the crown
    centre = (
        geometry.crown.astype(np.float64) + geometry.chin
    ) / 2 + up * geometry.head_height * 0.05
    angle = math.degrees(math.atan2(side[1], side[0]))
    cv2.ellipse(
        person,
        (round(centre[0]), round(centre[1])),
        (max(1, round(head_w / 2)), max(1, round(head_h / 2))),
        angle,
        0,
        360,
        1,
        -1,
    )
    chin = geometry.chin.astype(np.float64)
    hw = geometry.head_width
    neck_top = chin + up * hw * 0.2
    shoulders = chin - up * hw * 0.6
    far = chin - up * (h + w)  # the body runs off the bottom of the frame
    body = np.array(
        [
            neck_top - side * hw * (0.35 + margin),
            neck_top + side * hw * (0.35 + margin),
            shoulders + side * hw * (1.6 + margin),
            far + side * hw * (1.6 + margin),
            far - side * hw * (1.6 + margin),
            shoulders - side * hw * (1.6 + margin),
        ]
    )
    cv2.fillPoly(person, [np.round(body).astype(np.int32)], 1)
    result: NDArray[np.bool_] = person == 0
    return result


BACKGROUND_WIDTH = 160  # background statistics are taken on a frame this wide
EDGE_THRESHOLD = 6.0  # grey levels per pixel (at that width) that count as an edge


def background_stats(grey: NDArray[np.uint8], geometry: FaceGeometry) -> tuple[float, float, float]:
    """(luma std, edge share, background share of the frame), on a small copy of the
    frame: texture finer than a few pixels there is sensor noise, not clutter."""
    h, w = grey.shape[:2]
    f = BACKGROUND_WIDTH / w
    small = area_resize(grey, BACKGROUND_WIDTH, max(1, round(h * f)))
    scaled = FaceGeometry(
        right_eye=geometry.right_eye * f,
        left_eye=geometry.left_eye * f,
        eye_mid=geometry.eye_mid * f,
        eye_distance=geometry.eye_distance * f,
        chin=geometry.chin * f,
        crown=geometry.crown * f,
        centre=geometry.centre * f,
        head_width=geometry.head_width * f,
        up=geometry.up,
    )
    mask = background_mask(small.shape[:2], scaled)
    # Erode: pixels next to the envelope's edge see the person in the Sobel kernel.
    mask = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    share = float(mask.mean())
    if mask.sum() < 50:
        return float("nan"), float("nan"), share
    values = small.astype(np.float32)
    gx = cv2.Sobel(values, cv2.CV_32F, 1, 0, ksize=3) / 8.0  # grey levels per pixel
    gy = cv2.Sobel(values, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    magnitude = np.hypot(gx, gy)
    return float(values[mask].std()), float(np.mean(magnitude[mask] > EDGE_THRESHOLD)), share


# Eye openings and the outer lip line (MediaPipe mesh), and where the reference skin is:
# mid forehead and both upper cheeks.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
LIPS_OUTER = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)  # fmt: skip
FOREHEAD_MID = 151
CHEEKS = (50, 280)


def _disc(centre: FloatArray, radius: float, sides: int = 16) -> FloatArray:
    t = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring = np.stack([np.cos(t), np.sin(t)], axis=1) * radius + centre[:2]
    out: FloatArray = ring.astype(np.float32)
    return out


def _region(grey: NDArray[np.uint8], polygon: FloatArray) -> NDArray[np.uint8]:
    mask, x0, y0, k = _polygon_pixels(grey, polygon)
    return _sample(grey, mask, x0, y0, k)


def occlusion(grey: NDArray[np.uint8], points: FloatArray) -> tuple[float, str | None]:
    """Smallest feature contrast among the two eyes and the mouth, and which it was
    ("eyes" or "mouth").

    A visible eye holds a dark iris against the white of the eye, a visible mouth the
    dark line (or teeth) between the lips against their colour and the skin: the spread
    of luma inside the mesh's eye and lip outlines (95th minus 5th percentile) is large.
    Sunglasses, a mask or a hand put one even surface there: the spread collapses,
    though the mesh still places the features (it infers them from the rest of the
    face). Dividing by the luma of the uncovered skin (forehead or cheeks, whichever is
    brighter, so a dark mask cannot pull it down) makes it independent of exposure.
    Without a face-parsing model this is a heuristic: glasses with strong reflections,
    a patterned mask, or a beard over the lips will fool it.
    """
    p = points[:, :2].astype(np.float32)
    eye_distance = float(np.linalg.norm(p[LEFT_EYE_CONTOUR[0]] - p[RIGHT_EYE_CONTOUR[0]]))
    r = max(2.0, 0.08 * eye_distance)
    forehead = _region(grey, _disc(p[FOREHEAD_MID], 1.2 * r))
    cheeks = np.concatenate([_region(grey, _disc(p[i], r)) for i in CHEEKS])
    levels = [float(np.median(v)) for v in (forehead, cheeks) if len(v) >= 10]
    if not levels:
        return float("nan"), None
    skin = max(max(levels), 1.0)
    spreads: list[tuple[float, str]] = []
    for contour, name in (
        (RIGHT_EYE_CONTOUR, "eyes"),
        (LEFT_EYE_CONTOUR, "eyes"),
        (LIPS_OUTER, "mouth"),
    ):
        values = _region(grey, p[list(contour)])
        if len(values) < 10:
            return float("nan"), name  # a closed or tiny feature: unmeasurable
        lo, hi = np.percentile(values, [5, 95])
        spreads.append((float(hi - lo) / skin, name))
    value, which = min(spreads)
    return value, which


# --------------------------------------------------------------------------- assessment


@dataclass(frozen=True)
class FaceAssessment:
    """All checks for one face image."""

    checks: tuple[Check, ...]
    pose: HeadPose
    geometry: FaceGeometry
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Criterion]:
        return [c.criterion for c in self.checks if not c.passed]

    @property
    def score(self) -> float:
        """Share of checks passed (0-1): ranks frames for auto-capture."""
        return sum(c.passed for c in self.checks) / max(len(self.checks), 1)

    def check(self, criterion: Criterion) -> Check:
        return next(c for c in self.checks if c.criterion == criterion)

    def hint_keys(self) -> list[str]:
        """Hint keys of the failed checks, most actionable first (pose before light)."""
        seen: list[str] = []
        for c in self.checks:
            if c.hint is not None and c.hint not in seen:
                seen.append(c.hint)
        return seen

    def hints(self, lang: Lang = "vi") -> list[str]:
        return [hint_text(k, lang) for k in self.hint_keys()]


def assess(
    image: RGBImage,
    mesh: FaceMesh,
    irises: Irises | None = None,
    thresholds: Thresholds | None = None,
    grey: NDArray[np.uint8] | None = None,
) -> FaceAssessment:
    """Run every check on ``image`` (RGB uint8) for the face described by ``mesh``.

    Pass ``grey`` (``luma(image)``) when it is already computed for this frame.
    """
    t = thresholds or Thresholds()
    g = luma(image) if grey is None else grey
    h, w = g.shape[:2]
    pts = mesh.points
    pose = head_pose(pts)
    geo = face_geometry(mesh, irises)
    ratio, darker = lighting_balance(g, pts)
    median, burnt, black = exposure_stats(image, g, pts)
    bg_std, bg_edges, bg_share = background_stats(g, geo)
    contrast, covered = occlusion(g, pts)
    if bg_share < 0.05 or math.isnan(bg_std):
        bg_std, bg_edges = 0.0, 0.0  # too little background in view to judge: a tight crop
    c = Criterion
    # (criterion, value, low, high, hint below low, hint above high). Hints say what the
    # citizen should do to undo the deviation: a face left of centre in the image is off
    # toward the subject's right, so they move to their left.
    rows: list[tuple[Criterion, float, float | None, float | None, str, str]] = [
        (c.YAW, pose.yaw, -t.max_yaw, t.max_yaw, "yaw_to_left", "yaw_to_right"),
        (c.PITCH, pose.pitch, -t.max_pitch, t.max_pitch, "pitch_up", "pitch_down"),
        (c.ROLL, pose.roll, -t.max_roll, t.max_roll, "roll_to_left", "roll_to_right"),
        (c.EYES_OPEN, eyes_aspect(mesh, irises), t.min_eye_aspect, None, "open_eyes", ""),
        (c.MOUTH_CLOSED, mouth_open_ratio(pts), None, t.max_mouth_open, "", "close_mouth"),
        (c.CENTRE_X, float(geo.centre[0] / w - 0.5), -t.max_centre_offset,
         t.max_centre_offset, "move_to_left", "move_to_right"),
        (c.EYE_LINE, float(geo.eye_mid[1] / h), *t.eye_line, "face_too_high", "face_too_low"),
        (c.HEAD_HEIGHT, geo.head_height / h, *t.head_height, "move_closer", "move_back"),
        (c.HEAD_WIDTH, geo.head_width / w, *t.head_width, "move_closer", "move_back"),
        (c.EYE_DISTANCE, geo.eye_distance, t.min_eye_distance, None, "move_closer", ""),
        (c.LIGHTING, ratio, t.min_lighting_ratio, None, f"light_{darker or 'right'}_dark", ""),
        (c.EXPOSURE, median, *t.exposure, "too_dark", "too_bright"),
        (c.CLIPPING, burnt + black, None, t.max_clipped, "",
         "glare" if burnt >= black else "deep_shadow"),
        (c.SHARPNESS, sharpness(g, geo), t.min_sharpness, None, "blurred", ""),
        (c.OCCLUSION, contrast, t.min_feature_contrast, None, f"uncover_{covered or 'eyes'}",
         ""),
        (c.BACKGROUND_UNIFORMITY, bg_std, None, t.max_background_std, "", "background_uneven"),
        (c.BACKGROUND_CLUTTER, bg_edges, None, t.max_background_edges, "",
         "background_cluttered"),
    ]  # fmt: skip
    checks = tuple(_range_check(*row) for row in rows)
    extras = {
        "burnt": burnt,
        "black": black,
        "background_share": bg_share,
        "presence": mesh.presence,
    }
    return FaceAssessment(checks, pose, geo, extras)
