"""Faces for the synthetic population: a few real photos, many capture variations.

No face data set is available offline, only seven real photos of three people (see
STACK.md and scripts/fetch_assets.py). Each synthetic person is therefore given one of
the independent photos (``SOURCE_PHOTOS``, chosen by ``face_seed``) and each of their
enrollments a capture variation of it, as two sittings of the same person would differ:
pose (roll, a yaw turn of the head, a mirrored preview), lighting (under/over exposure,
side light), blur, occlusion (sunglasses, a mask, a hand), or -- mostly -- a good capture
with small natural jitter. Many different people share a source photo, so a face-dedup
evaluation must treat matches between them as expected: the ground truth records the
source and its real identity (``face_source``, ``face_identity``).

Everything is deterministic from the seeds. Preparing a source (``studio_source``) runs
the face models once; after that ``render`` is pure numpy/OpenCV. Every written image is
marked as synthetic: a visible "SYNTHETIC" label in a bottom corner (on the clothes,
outside the face and the backdrop the background checks read) and a JPEG comment and
EXIF ImageDescription (``encode_jpeg``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from biometrics.face import variations as var
from biometrics.face.crop import TOKEN_480, PortraitGeometry
from biometrics.face.landmarks import FACE_OVAL, eye_centres
from biometrics.face.pipeline import FaceAnalyzer
from biometrics.face.quality import Criterion, background_mask, skin_polygon

RGBImage = NDArray[np.uint8]
FloatArray = NDArray[np.float32]
Param = float | str

# The independent photos among the fetched assets (file name -> who is in it). The two
# "partial face" files are crops of obama.jpg cut at the frame edge: not used.
# tests/test_population.py checks this table against scripts/fetch_assets.py.
SOURCE_PHOTOS: dict[str, str] = {
    "astronaut.png": "collins",
    "biden.jpg": "biden",
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
}
BACKDROP = (225, 225, 220)  # the station's plain backdrop
SYNTHETIC_NOTE = "SYNTHETIC face image for testing (variation of a public photo); not a person"

# Share of enrollments per capture kind: most captures at a staffed station are good.
CAPTURE_MIX: dict[str, float] = {
    "good": 0.70,
    "roll": 0.04,
    "yaw": 0.04,
    "underexposed": 0.03,
    "overexposed": 0.03,
    "side_light": 0.04,
    "blur": 0.04,
    "sunglasses": 0.03,
    "mask": 0.03,
    "hand": 0.02,
}
MIRROR_RATE = 0.1  # a selfie-style preview left mirrored: invisible to the checks

# The check each kind exists to trip (overexposure also clips, the target is exposure).
TARGETS: dict[str, Criterion | None] = {
    "good": None,
    "roll": Criterion.ROLL,
    "yaw": Criterion.YAW,
    "underexposed": Criterion.EXPOSURE,
    "overexposed": Criterion.EXPOSURE,
    "side_light": Criterion.LIGHTING,
    "blur": Criterion.SHARPNESS,
    "sunglasses": Criterion.OCCLUSION,
    "mask": Criterion.OCCLUSION,
    "hand": Criterion.OCCLUSION,
}

# Mesh indices used to place occluders (MediaPipe topology).
NOSE_TIP = 1
MOUTH_CENTRE = 13
FACE_RIGHT, FACE_LEFT = 234, 454  # face outline at ear level (image left, right)


@dataclass(frozen=True)
class SourceFace:
    """A real photo made into a studio portrait (token crop on the plain backdrop), with
    the landmarks the variations need, in portrait pixels."""

    name: str
    identity: str
    image: RGBImage
    points: FloatArray  # 468 x 3 mesh points (x, y, relative depth)
    right_eye: FloatArray
    left_eye: FloatArray
    skin: tuple[int, int, int]  # median skin colour (RGB)
    yaw: float = 0.0  # the photo's own head turn (degrees; quality.head_pose convention)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.left_eye - self.right_eye))


def studio_source(
    name: str,
    identity: str,
    photo: RGBImage,
    analyzer: FaceAnalyzer,
    geometry: PortraitGeometry = TOKEN_480,
) -> SourceFace:
    """Crop ``photo`` to the portrait geometry, paint its background the backdrop colour
    and find the landmarks again on the result."""
    found = analyzer.analyze(photo)
    if found.mesh is None:
        raise ValueError(f"{name}: no face found")
    portrait = analyzer.portrait(photo, found, geometry).image
    first = analyzer.analyze(portrait)
    if first.assessment is None:
        raise ValueError(f"{name}: no face found in its portrait")
    mask = background_mask(portrait.shape[:2], first.assessment.geometry, margin=0.0)
    plain = var.replace_background(portrait, mask, BACKDROP)
    again = analyzer.analyze(plain)
    if again.mesh is None:
        raise ValueError(f"{name}: no face found on the backdrop")
    right, left = eye_centres(again.mesh, again.irises)
    polygon = np.round(skin_polygon(again.mesh.points)).astype(np.int32)
    inside = np.zeros(plain.shape[:2], np.uint8)
    cv2.fillPoly(inside, [polygon], 1)
    skin = np.median(plain[inside.astype(bool)], axis=0)
    return SourceFace(
        name,
        identity,
        plain,
        again.mesh.points.copy(),
        right,
        left,
        (int(skin[0]), int(skin[1]), int(skin[2])),
        again.assessment.pose.yaw if again.assessment is not None else 0.0,
    )


def source_for(face_seed: int, names: Sequence[str] = tuple(SOURCE_PHOTOS)) -> str:
    """The source photo of the person with ``face_seed`` (uniform over ``names``)."""
    rng = np.random.default_rng(np.random.SeedSequence([face_seed, 0xFACE]))
    return names[int(rng.integers(len(names)))]


# --------------------------------------------------------------------------- captures


@dataclass(frozen=True)
class Capture:
    """One sitting: the variation kind, its parameters, the jitter every capture has."""

    kind: str
    params: tuple[tuple[str, Param], ...]
    mirror: bool = False
    # Natural jitter between sittings, small enough to pass every check.
    roll: float = 0.0  # degrees
    dx: float = 0.0  # share of the width
    dy: float = 0.0
    gain: float = 1.0

    @property
    def target(self) -> Criterion | None:
        """The check this capture should fail (None: a good capture)."""
        return TARGETS[self.kind]

    def param(self, key: str) -> Param:
        return dict(self.params)[key]

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "params": dict(self.params),
            "mirror": self.mirror,
            "jitter": {"roll": self.roll, "dx": self.dx, "dy": self.dy, "gain": self.gain},
            "target": None if self.target is None else self.target.value,
        }


def _r(rng: np.random.Generator, lo: float, hi: float, digits: int = 3) -> float:
    return round(float(rng.uniform(lo, hi)), digits)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _side(rng: np.random.Generator) -> str:
    return "left" if rng.random() < 0.5 else "right"


def capture_for(face_seed: int, sitting: int, kind: str | None = None) -> Capture:
    """The capture of a person's ``sitting``-th enrollment (1, 2, ...). ``kind`` forces
    the variation kind (tests, benchmarks); by default it is drawn from ``CAPTURE_MIX``."""
    rng = np.random.default_rng(np.random.SeedSequence([face_seed, sitting, 0xCA97]))
    kinds = list(CAPTURE_MIX)
    weights = np.array([CAPTURE_MIX[k] for k in kinds])
    drawn = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    kind = kind or drawn
    if kind not in CAPTURE_MIX:
        raise ValueError(f"unknown capture kind {kind!r}; known: {', '.join(kinds)}")
    mirror = bool(rng.random() < MIRROR_RATE)
    jitter = {
        "roll": _r(rng, -2.5, 2.5),
        "dx": _r(rng, -0.01, 0.01),
        "dy": _r(rng, -0.01, 0.01),
        "gain": _r(rng, 0.9, 1.0),  # above 1 the palest skin starts to clip
    }
    params: dict[str, Param] = {}
    if kind == "roll":
        params["degrees"] = _sign(rng) * _r(rng, 13.0, 22.0)
    elif kind == "yaw":
        params |= {
            "degrees": _r(rng, 15.0, 25.0),
            "toward": "left" if rng.random() < 0.5 else "right",
        }
    elif kind == "underexposed":
        params |= {"gain": _r(rng, 0.22, 0.34), "gamma": _r(rng, 1.0, 1.5)}
    elif kind == "overexposed":
        params |= {"gain": _r(rng, 2.2, 2.6), "gamma": _r(rng, 0.8, 1.0)}
    elif kind == "side_light":
        params |= {"dark": _r(rng, 0.12, 0.28), "side": _side(rng)}
    elif kind == "blur":
        params["sigma"] = _r(rng, 2.3, 3.5)
    elif kind == "sunglasses":
        params |= {"tint": _r(rng, 10, 45, 0), "size": _r(rng, 0.95, 1.15)}
    elif kind == "mask":
        colours = ("light_blue", "white", "black", "grey")
        params |= {"colour": colours[int(rng.integers(len(colours)))], "top": _r(rng, 0.3, 0.45)}
    elif kind == "hand":
        params |= {
            "side": _side(rng),
            "tone": _r(rng, 0.85, 1.1),
            "angle": _r(rng, -25.0, 25.0, 1),
        }
    return Capture(kind, tuple(params.items()), mirror, **jitter)


# --------------------------------------------------------------------------- rendering


def _mirrored(source: SourceFace) -> SourceFace:
    """The source seen in a mirror: image flipped, landmarks flipped and re-labelled."""
    w = source.image.shape[1]
    pts = source.points.copy()
    pts[:, 0] = w - pts[:, 0]
    # The subject's right eye is now on the image's left: the eye centres swap. Mesh
    # indices keep their anatomical meaning, so occluders pick sides by image position.
    right = np.array([w - source.left_eye[0], source.left_eye[1]], np.float32)
    left = np.array([w - source.right_eye[0], source.right_eye[1]], np.float32)
    return SourceFace(
        source.name,
        source.identity,
        var.mirror(source.image),
        pts,
        right,
        left,
        source.skin,
        -source.yaw,
    )


def _yaw_warp(image: RGBImage, points: FloatArray, degrees: float) -> RGBImage:
    """Turn the head by ``degrees`` of yaw (> 0: nose toward the subject's left); see
    ``turn_warp``."""
    return turn_warp(image, points, degrees)[0]


def turn_warp(
    image: RGBImage, points: FloatArray, yaw: float, pitch: float = 0.0
) -> tuple[RGBImage, FloatArray]:
    """Turn the head by ``yaw`` degrees (> 0: nose toward the subject's left), then tip
    it by ``pitch`` (> 0: chin up; quality.head_pose conventions); returns the image and
    the mesh points moved with it.

    The mesh is rotated in 3D about axes through a point behind the face and projected
    back; the image follows by a piecewise-linear warp from the mesh points (the frame
    border stays put), so the nose moves across the face while the far cheek narrows, as
    in a real turn. Hair and ears are stretched, not rotated: fine for quality checks and
    embeddings, not a photo-realistic render. The image's measured pose changes by less
    than the angle asked for (about half on the test photos: the outline does not turn).
    Yaw and pitch together are two warps, one after the other: one warp of both folds
    the far eye over from about 15 degrees each.
    """
    if yaw and pitch:
        image, points = turn_warp(image, points, yaw)
        return turn_warp(image, points, 0.0, pitch)
    p = points.astype(np.float64)
    oval = p[list(FACE_OVAL)]
    width = float(oval[:, 0].max() - oval[:, 0].min())
    centre = p.mean(axis=0)
    centre[2] += 0.15 * width  # the turn's axis is a little behind the face
    a = math.radians(yaw)
    rot = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    if pitch:
        # Depth grows away from the camera: chin up brings the chin forward, the nose up.
        b = math.radians(pitch)
        tip = np.array([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
        rot = rot @ tip
    moved = (p - centre) @ rot.T + centre
    return mesh_warp(image, points, moved), moved.astype(np.float32)


def mesh_warp(image: RGBImage, points: FloatArray, moved: NDArray[np.floating]) -> RGBImage:
    """``image`` warped so that the mesh ``points`` go to ``moved`` (only x and y count),
    by a smooth displacement field that fades out away from the mesh (the frame border
    stays put)."""
    h, w = image.shape[:2]
    p = points.astype(np.float64)
    oval = p[list(FACE_OVAL)]
    width = float(oval[:, 0].max() - oval[:, 0].min())
    # The forward displacement of the mesh points, spread over a coarse grid by
    # normalised convolution (a Gaussian-weighted average of nearby points) and faded
    # out where there are no points; the backward map is then x - D(x), exact to first
    # order, which is plenty for a displacement this smooth.
    step = 4
    gh, gw = h // step + 2, w // step + 2
    cells = np.clip(np.round(p[:, :2] / step).astype(int), 0, [gw - 1, gh - 1])
    shift = (moved[:, :2] - p[:, :2]).astype(np.float32)
    num = np.zeros((gh, gw, 2), np.float32)
    den = np.zeros((gh, gw), np.float32)
    np.add.at(num, (cells[:, 1], cells[:, 0]), shift)
    np.add.at(den, (cells[:, 1], cells[:, 0]), 1.0)
    sigma = 0.04 * width / step
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)
    full = float(np.median(den[cells[:, 1], cells[:, 0]]))
    field = num / np.maximum(den, 1e-6)[..., None]
    fade = cv2.GaussianBlur(np.clip(den / (0.5 * full), 0.0, 1.0), (0, 0), 2 * sigma)
    field *= fade[..., None]
    gy, gx = np.mgrid[0:gh, 0:gw].astype(np.float32) * step
    size = (gw * step, gh * step)
    full_x = cv2.resize(gx - field[..., 0], size)[:h, :w]
    full_y = cv2.resize(gy - field[..., 1], size)[:h, :w]
    out: RGBImage = np.asarray(
        cv2.remap(
            image,
            full_x,
            full_y,
            cv2.INTER_CUBIC,  # bilinear resampling would soften the whole portrait
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=BACKDROP,
        ),
        dtype=np.uint8,
    )
    return out


def _pt(xy: NDArray[np.floating]) -> tuple[int, int]:
    """A point for OpenCV's drawing functions."""
    return round(float(xy[0])), round(float(xy[1]))


def _sunglasses(source: SourceFace, image: RGBImage, tint: float, size: float) -> RGBImage:
    """Two dark lenses over the eyes, a bridge and the temples to the face outline."""
    out = image.copy()
    d = source.eye_distance * size
    right, left = source.right_eye.astype(np.float64), source.left_eye.astype(np.float64)
    angle = math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))
    lens = np.zeros(image.shape[:2], np.uint8)
    for eye in (right, left):
        centre = (round(eye[0]), round(eye[1] + 0.05 * d))
        cv2.ellipse(lens, centre, (round(0.40 * d), round(0.30 * d)), angle, 0, 360, 1, -1)
    frame = np.zeros(image.shape[:2], np.uint8)
    p = source.points[:, :2]
    thick = max(2, round(0.04 * d))
    cv2.line(frame, _pt(right), _pt(left), 1, thick)
    ears = sorted((p[FACE_RIGHT], p[FACE_LEFT]), key=lambda e: float(e[0]))  # image order
    for eye, ear in zip((right, left), ears, strict=True):
        cv2.line(frame, _pt(eye), _pt(ear), 1, thick)
    # Lenses darken to the tint from top to bottom a little (a gradient lens).
    ys = np.arange(image.shape[0], dtype=np.float32)[:, None, None]
    top = float(min(right[1], left[1]) - 0.3 * d)
    shade = tint * (1.0 + 0.25 * np.clip((ys - top) / (0.6 * d), 0, 1))
    glass = np.broadcast_to(np.clip(shade, 0, 255), image.shape).astype(np.uint8)
    out[lens.astype(bool)] = glass[lens.astype(bool)]
    out[frame.astype(bool)] = (30, 30, 30)
    return out


MASK_COLOURS: dict[str, tuple[int, int, int]] = {
    "light_blue": (168, 202, 228),
    "white": (236, 236, 232),
    "black": (34, 34, 38),
    "grey": (128, 130, 134),
}


def _mask(source: SourceFace, image: RGBImage, colour: str, top: float) -> RGBImage:
    """A surgical mask over nose, mouth and chin, with pleats and ear loops. Its top edge
    lies 0.4 + ``top`` of the way from the eye line to the nose tip (0.3-0.45: on the
    nose bridge)."""
    p = source.points[:, :2].astype(np.float64)
    eye_mid = (source.right_eye + source.left_eye).astype(np.float64) / 2
    upper = eye_mid + (p[NOSE_TIP] - eye_mid) * (0.4 + top)
    oval = p[list(FACE_OVAL)]
    below = oval[oval[:, 1] > upper[1]]
    # The mask spans the face outline below its top edge, a little wider than the skin.
    centre = below.mean(axis=0)
    outline = (below - centre) * 1.04 + centre
    outline = outline[np.argsort(np.arctan2(outline[:, 1] - centre[1], outline[:, 0] - centre[0]))]
    xs = outline[:, 0]
    top_edge = np.array(
        [
            [xs.min(), upper[1] + 0.05 * source.eye_distance],
            upper,
            [xs.max(), upper[1] + 0.05 * source.eye_distance],
        ]
    )
    polygon = np.vstack([top_edge, outline[outline[:, 1] > upper[1] + 1]])
    hull = cv2.convexHull(np.round(polygon).astype(np.int32))
    area = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(area, hull, 1)
    base = np.array(MASK_COLOURS[colour], np.float32)
    ys = np.arange(image.shape[0], dtype=np.float32)[:, None, None]
    pleat = 1.0 - 0.06 * (np.sin(ys / (0.09 * source.eye_distance)) > 0.6)
    cloth = np.broadcast_to(np.clip(base * pleat, 0, 255), image.shape).astype(np.uint8)
    out = image.copy()
    inside = area.astype(bool)
    out[inside] = cloth[inside]
    loop = max(1, round(0.02 * source.eye_distance))
    for side in (FACE_RIGHT, FACE_LEFT):
        near = polygon[np.argmin(np.abs(polygon[:, 0] - p[side][0]))]
        cv2.line(out, _pt(near), _pt(p[side]), tuple(int(c) for c in base), loop)
    return out


def _hand(source: SourceFace, image: RGBImage, side: str, tone: float, angle: float) -> RGBImage:
    """A hand over mouth and chin: palm and four fingers in a skin tone, softly shaded,
    with darker creases between the fingers, raised from ``side`` (subject's)."""
    p = source.points[:, :2].astype(np.float64)
    d = source.eye_distance
    mouth = p[MOUTH_CENTRE]
    direction = -1.0 if side == "right" else 1.0  # subject's right is image left
    shape = np.zeros(image.shape[:2], np.uint8)
    creases = np.zeros(image.shape[:2], np.uint8)
    # Hand frame: fingers point across the face toward the other side, tilted by angle.
    a = math.radians(angle)
    along = np.array([-direction * math.cos(a), math.sin(a)])
    across = np.array([-along[1], along[0]])
    palm = mouth - along * 0.75 * d + np.array([0.0, 0.2 * d])
    cv2.ellipse(
        shape,
        _pt(palm),
        (round(0.6 * d), round(0.55 * d)),
        math.degrees(math.atan2(along[1], along[0])),
        0,
        360,
        1,
        -1,
    )
    for i, offset in enumerate((-0.36, -0.12, 0.12, 0.36)):
        start = palm + across * offset * d
        length = (1.25, 1.45, 1.4, 1.15)[i] * d
        end = start + along * length
        cv2.line(shape, _pt(start), _pt(end), 1, round(0.24 * d))
        if i:
            gap = palm + across * (offset - 0.12) * d
            cv2.line(
                creases,
                _pt(gap + along * 0.4 * d),
                _pt(gap + along * 1.1 * d),
                1,
                max(1, round(0.02 * d)),
            )
    skin = np.array(source.skin, np.float32) * tone * np.array([1.04, 0.97, 0.95], np.float32)
    ys = np.arange(image.shape[0], dtype=np.float32)[:, None, None]
    light = 1.0 - 0.12 * np.clip((ys - mouth[1]) / d, -1, 1)  # lit from above
    colour = np.clip(skin * light, 0, 255)
    colour = np.broadcast_to(colour, image.shape).copy()
    colour[creases.astype(bool)] *= 0.8
    soft = cv2.GaussianBlur(shape.astype(np.float32), (0, 0), 1.0)[..., None]
    out: RGBImage = (image * (1 - soft) + colour * soft + 0.5).astype(np.uint8)
    return out


def yaw_turn(source: SourceFace, capture: Capture) -> float:
    """The signed turn a "yaw" capture applies: ``degrees`` toward the subject's
    ``toward`` side, or, on a photo already turned more than 3 degrees, further the way
    it faces (turning it back would make a frontal face: a good capture)."""
    degrees = float(capture.param("degrees"))
    if abs(source.yaw) > 3.0:
        return math.copysign(degrees, source.yaw)
    return degrees if capture.param("toward") == "left" else -degrees


def _face_span(source: SourceFace) -> tuple[float, float]:
    oval = source.points[list(FACE_OVAL), 0]
    return float(oval.min()), float(oval.max())


def render(source: SourceFace, capture: Capture) -> RGBImage:
    """The portrait of ``source`` as captured at this sitting (RGB, source size).

    Order as in front of a camera: the scene (mirror, occluder), the head's pose, the
    light on it, then the camera's framing, exposure and focus.
    """
    src = _mirrored(source) if capture.mirror else source
    image = src.image
    kind = capture.kind
    if kind == "sunglasses":
        image = _sunglasses(src, image, float(capture.param("tint")), float(capture.param("size")))
    elif kind == "mask":
        image = _mask(src, image, str(capture.param("colour")), float(capture.param("top")))
    elif kind == "hand":
        image = _hand(
            src,
            image,
            str(capture.param("side")),
            float(capture.param("tone")),
            float(capture.param("angle")),
        )
    if kind == "yaw":
        image = _yaw_warp(image, src.points, yaw_turn(src, capture))
    roll = capture.roll + (float(capture.param("degrees")) if kind == "roll" else 0.0)
    if kind == "side_light":
        dark = float(capture.param("dark"))
        # The subject's right is the image's left (unmirrored view).
        left, right = (dark, 1.0) if capture.param("side") == "right" else (1.0, dark)
        image = var.side_light(image, left, right, _face_span(src))
    image = var.rotate(image, roll, BACKDROP)
    image = var.shift(image, capture.dx, capture.dy, BACKDROP)
    exposure = capture.gain
    if kind in ("underexposed", "overexposed"):
        exposure *= float(capture.param("gain"))
        image = var.gamma(image, float(capture.param("gamma")))
    image = var.gain(image, exposure)
    if kind == "blur":
        image = var.blur(image, float(capture.param("sigma")))
    return image


# --------------------------------------------------------------------------- marking


MARK_TEXT = "SYNTHETIC"
MARK_BOX = (6, 24)  # left and bottom margins of the label, in pixels


def mark_region(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the visible label: the bottom-left corner, on the clothes."""
    h = shape[0]
    (tw, th), _ = cv2.getTextSize(MARK_TEXT, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    x0, y1 = MARK_BOX[0], h - MARK_BOX[0]
    return x0, y1 - th - 10, x0 + tw + 8, y1


def mark_synthetic(image: RGBImage) -> RGBImage:
    """White "SYNTHETIC" on a black box in the bottom-left corner."""
    out = image.copy()
    x0, y0, x1, y1 = mark_region(image.shape)
    out[y0:y1, x0:x1] = 0
    cv2.putText(
        out,
        MARK_TEXT,
        (x0 + 4, y1 - 5),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return out


EXIF_IMAGE_DESCRIPTION = 0x010E


def encode_jpeg(image: RGBImage, description: str = SYNTHETIC_NOTE, quality: int = 92) -> bytes:
    """JPEG bytes carrying ``description`` twice: as a COM segment and as EXIF
    ImageDescription, so tools that show either one see that the face is synthetic."""
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = description
    buf = io.BytesIO()
    Image.fromarray(image).save(
        buf, "JPEG", quality=quality, comment=description.encode(), exif=exif.tobytes()
    )
    return buf.getvalue()


def synthetic_face(source: SourceFace, capture: Capture) -> RGBImage:
    """The rendered capture with the visible synthetic mark."""
    return mark_synthetic(render(source, capture))


def prepare_sources(
    photos: Mapping[str, RGBImage], analyzer: FaceAnalyzer
) -> dict[str, SourceFace]:
    """Studio sources for the ``SOURCE_PHOTOS`` found in ``photos`` (name -> RGB)."""
    missing = [n for n in SOURCE_PHOTOS if n not in photos]
    if missing:
        raise ValueError(f"missing source photos: {', '.join(missing)}")
    return {n: studio_source(n, who, photos[n], analyzer) for n, who in SOURCE_PHOTOS.items()}
