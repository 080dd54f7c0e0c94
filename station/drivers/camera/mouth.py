"""Closing the mouth of a synthetic face (the source photos smile or talk, teeth showing).

A landmark-driven warp, in the spirit of ``eyelids``: the upper lip comes down and the
lower lip up until they meet on a seam between the mesh's inner lip lines, so the teeth
(and, for an open mouth, the lips' wet inner faces) between those lines drop out of the
image. The pull fades out over a couple of lip thicknesses, never past the nose or the
chin, so the lips fill out a little, as relaxed lips are fuller than smiling ones. A
talking mouth also has its jaw lifted (a rotation of the lower face's mesh about a hinge
at ear height, applied by the synth's mesh warp), so the face does not come out long.
Then what is left of the open mouth along the seam (a dark corner, a glint of teeth) is
inpainted, the lips are softened a touch (the stretch leaves the open lips' rims as fine
lines) and a soft dark line is drawn where the lips meet. The mouth keeps its width and
the lift of its corners: a broad smile becomes a closed-mouth smile. Only the mouth and,
for a talking mouth, the lower face are touched.

The face models read the whole face, not the lips alone: on the closed results they
report an inner lip gap of 0.02-0.06 of the mouth width (0.005 on the one photo with a
closed mouth), and more on the talking photo turned to frontal (see
docs/protocols/camera.md).
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
from numpy.typing import NDArray

from biometrics.face.landmarks import CHIN, FACE_OVAL, MOUTH_LEFT, MOUTH_RIGHT
from biometrics.face.quality import LIPS_OUTER
from biometrics.synth.faces import RGBImage, SourceFace, mesh_warp

FloatArray = NDArray[np.float64]

# MediaPipe mesh: the inner lip lines, from one inner mouth corner to the other.
# Each runs out to the outer mouth corners, so an open mouth's dark corners close too.
UPPER_LIP_INNER_LINE = (61, 78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 291)
LOWER_LIP_INNER_LINE = (61, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 291)
SUBNASALE = 2
UPPER_LIP_TOP, LOWER_LIP_BOTTOM = 0, 17  # outer lip line, mid-mouth

FACE_RIGHT, FACE_LEFT = 234, 454  # face outline at ear level: the jaw's hinge height
CLOSED = 0.05  # inner lip gap / mouth width under which a mouth is left as it is
JAW_FROM = 0.2  # a gap wider than this share of the mouth width is an open jaw
JAW_FOLLOW = 0.2  # past JAW_FROM by this much, the chin follows the lower lip all the way
UPPER_SHARE = 0.4  # of the gap closed by the upper lip coming down; the jaw does the rest
MAX_STRETCH = 0.6  # steepest pull per pixel of fade (1 would fold the image over)
FADE_LIPS = 1.5  # the pull fades over this many lip thicknesses
INNER_FACES = 0.3  # share of a lip's thickness that rolls in as an open mouth closes
OVERLAP = 0.01  # of the mouth width: also drop the teeth's edge along the lip lines
SEAM_WIDTH = 0.015  # of the mouth width
SEAM_SHADE = 0.75  # the seam's colour: the lips' own, this much darker
SEAM_BLUR = 0.8  # px
SOFTEN, SOFTEN_GROW = 0.03, 1.15  # lip blur (share of mouth width), lip outline grown
CORNER_REACH = 0.08  # of the mouth width: how far past the corners cavities are mended
BAND = 0.08  # of the mouth width: the band along the seam that is mended
CAVITY, TEETH = 0.55, 1.35  # luma against the lips' median: mouth cavity, teeth


def _fall(t: FloatArray) -> FloatArray:
    """1 at t = 0, easing to 0 at t >= 1 (half a cosine)."""
    out: FloatArray = 0.5 * (1.0 + np.cos(np.pi * np.clip(t, 0.0, 1.0)))
    return out


def _line(points: FloatArray, line: tuple[int, ...], xs: FloatArray) -> FloatArray:
    """The y of a mesh line at ``xs`` (linear between its points)."""
    c = points[list(line)]
    order = np.argsort(c[:, 0])
    out: FloatArray = np.interp(xs, c[order, 0], c[order, 1])
    return out


def mouth_gap(source: SourceFace) -> float:
    """Inner lip gap over mouth width on the source's mesh (quality.mouth_open_ratio)."""
    p = source.points[:, :2].astype(np.float64)
    width = float(np.linalg.norm(p[MOUTH_RIGHT] - p[MOUTH_LEFT]))
    gap = _line(p, LOWER_LIP_INNER_LINE, p[[13], 0]) - _line(p, UPPER_LIP_INNER_LINE, p[[13], 0])
    return float(gap[0]) / max(width, 1e-9)


def close_mouth(source: SourceFace) -> SourceFace:
    """``source`` with its lips together; its mesh points follow the warps.

    Lips alone close a smile over the teeth. A talking mouth, open wider than
    ``JAW_FROM``, is the jaw's doing: the jaw is lifted by the excess before the lips
    close (the teeth come together) and the chin then follows the lower lip's pull
    (lips stretched shut over a dropped jaw would make the face long), both by how far
    past ``JAW_FROM`` the mouth is open. A mouth open less than ``CLOSED`` is left as
    it is.
    """
    ratio = mouth_gap(source)
    if ratio < CLOSED:
        return source
    p = source.points.astype(np.float64)
    width = float(np.linalg.norm(p[MOUTH_RIGHT, :2] - p[MOUTH_LEFT, :2]))
    # An open mouth shows the lips' wet inner faces, which roll in as the lips close.
    rolled = INNER_FACES * min(max((ratio - CLOSED) / (JAW_FROM - CLOSED), 0.0), 1.0)
    talking = max(ratio - JAW_FROM, 0.0)
    if talking > 0:
        source = _lift_jaw(source, talking * width)
    source, pull = _close_lips(source, rolled)
    follow = min(talking / JAW_FOLLOW, 1.0)
    if follow * pull >= 1.0:
        source = _lift_jaw(source, follow * pull)
    return source


def _lift_jaw(source: SourceFace, lift: float) -> SourceFace:
    """Rotate the lower face about a hinge at ear height behind the face until the lower
    lip rises by ``lift`` pixels; the image follows by the synth's mesh warp."""
    p = source.points.astype(np.float64)
    oval = p[list(FACE_OVAL)]
    face_width = float(oval[:, 0].max() - oval[:, 0].min())
    hinge = np.array(
        [
            float(p[:, 0].mean()),
            float((p[FACE_RIGHT, 1] + p[FACE_LEFT, 1]) / 2),
            float(p[:, 2].mean()) + 0.3 * face_width,
        ]
    )
    # What moves with the jaw: everything under the lower lip line in the mouth, the
    # lower cheeks and chin below the mouth corners (blending in over a lip's height).
    xs = p[:, 0]
    corners_y = float((p[MOUTH_RIGHT, 1] + p[MOUTH_LEFT, 1]) / 2)
    lower = _line(p, LOWER_LIP_INNER_LINE, xs)
    upper = _line(p, UPPER_LIP_INNER_LINE, xs)
    in_mouth = (xs > p[MOUTH_RIGHT, 0]) & (xs < p[MOUTH_LEFT, 0])
    share = np.clip((p[:, 1] - corners_y) / (0.2 * face_width) + 0.5, 0.0, 1.0)
    share = np.where(in_mouth & (p[:, 1] >= lower - 0.5), 1.0, share)
    share = np.where(in_mouth & (p[:, 1] <= upper + 0.5), 0.0, share)
    # The angle that lifts the lower lip's middle by ``lift`` (y grows down: a closing
    # jaw turns the chin up and forward about the hinge), by bisection.
    ry, rz = (p[14, 1:] - hinge[1:]).tolist()
    lo, hi = -math.pi / 4, 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        rise = ry - (math.cos(mid) * ry - math.sin(mid) * rz)
        lo, hi = (mid, hi) if rise > lift else (lo, mid)
    angle = (lo + hi) / 2
    c, s = math.cos(angle), math.sin(angle)
    rel = p[:, 1:] - hinge[1:]
    turned = np.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]], axis=1)
    moved = p.copy()
    moved[:, 1:] += share[:, None] * (turned - rel)
    image = mesh_warp(source.image, source.points, moved)
    return replace(source, image=image, points=moved.astype(np.float32))


def _close_lips(source: SourceFace, rolled: float) -> tuple[SourceFace, float]:
    """The lips brought together over what gap is left, by a vertical warp; ``rolled``
    of each lip's thickness along the gap drops out with the teeth. Also returns how
    far the lower lip was pulled up in the middle (pixels)."""
    p = source.points.astype(np.float64)
    h, w = source.image.shape[:2]
    width = float(np.linalg.norm(p[MOUTH_RIGHT, :2] - p[MOUTH_LEFT, :2]))
    corners = p[[UPPER_LIP_INNER_LINE[0], UPPER_LIP_INNER_LINE[-1]], :2]
    x0 = max(0, math.floor(corners[:, 0].min()))
    x1 = min(w, math.ceil(corners[:, 0].max()) + 1)
    xs = np.arange(x0, x1, dtype=np.float64)
    upper = _line(p, UPPER_LIP_INNER_LINE, xs)
    lower = _line(p, LOWER_LIP_INNER_LINE, xs)
    gap = np.maximum(lower - upper, 0.0)
    if x1 - x0 < 3 or float(gap.max()) < 0.5:
        return source, 0.0  # closed already
    inside = (xs > corners[:, 0].min()) & (xs < corners[:, 0].max())
    upper_at = float(np.interp(p[13, 0], xs, upper))
    lower_at = float(np.interp(p[14, 0], xs, lower))
    lip_up = max(upper_at - float(p[UPPER_LIP_TOP, 1]), 1.0)
    lip_down = max(float(p[LOWER_LIP_BOTTOM, 1]) - lower_at, 1.0)
    # What drops out besides the teeth: the lips' inner faces (tapering to the corners,
    # where the gap does) and a pixel or so of the teeth's edge along the lip lines.
    taper = np.sqrt(gap / float(gap.max()))
    skip_up = np.where(inside, OVERLAP * width + rolled * lip_up * taper, 0.0)
    skip_down = np.where(inside, OVERLAP * width + rolled * lip_down * taper, 0.0)
    gap = np.convolve(gap + skip_up + skip_down, np.ones(3) / 3, mode="same")  # no kinks
    lip_up *= 1 - rolled
    lip_down *= 1 - rolled
    # Each side may pull at most MAX_STRETCH of its fade per pixel (the cosine's slope is
    # pi/2 at its steepest); what the upper lip cannot close, the lower one does. The
    # pull fades over a few lip thicknesses, so the lips fill out more than the skin
    # around them stretches; never past the nose or the chin, which stay put.
    limit = MAX_STRETCH * 2 / math.pi
    most = float(gap.max())
    room_up = max(upper_at - float(p[SUBNASALE, 1]), 2.0)
    room_down = max(float(p[CHIN, 1]) - lower_at, 2.0)
    reach_up = min(room_up, max(FADE_LIPS * lip_up, UPPER_SHARE * most / limit))
    top = np.minimum(UPPER_SHARE * gap, limit * reach_up)
    reach_down = min(room_down, max(FADE_LIPS * lip_down, float((gap - top).max()) / limit))
    bottom = np.minimum(gap - top, limit * reach_down)
    seam = upper - skip_up + top

    # Backward map over the box the fades reach.
    y0 = max(0, math.floor(float(seam.min() - reach_up)))
    y1 = min(h, math.ceil(float(seam.max() + reach_down)) + 1)
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    above = ys < seam[None, :]
    pull_up = top[None, :] * _fall((seam[None, :] - ys) / reach_up)
    pull_down = bottom[None, :] * _fall((ys - seam[None, :]) / reach_down)
    map_y = np.where(above, ys - pull_up, ys + pull_down).astype(np.float32)
    map_x = np.broadcast_to(xs[None, :], map_y.shape).astype(np.float32)
    image = source.image.copy()
    image[y0:y1, x0:x1] = cv2.remap(
        source.image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )

    moved = _moved(
        p, xs, upper - skip_up, lower + skip_down, seam, top, bottom, reach_up, reach_down
    )
    image = _mend_corners(image, moved.astype(np.float64), xs, seam, width)
    image = _soften_lips(image, moved.astype(np.float64), width)
    image = _shade_seam(image, xs[inside], seam[inside], width)
    return replace(source, image=image, points=moved), float(np.interp(p[14, 0], xs, bottom))


def _mend_corners(
    image: RGBImage, points: FloatArray, xs: FloatArray, seam: FloatArray, width: float
) -> RGBImage:
    """Inpaint what is left of an open mouth along the seam and past its corners: the
    dark cavity at the corners of a wide-open mouth, a glint of teeth."""
    h, w = image.shape[:2]
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(lips, [np.round(points[list(LIPS_OUTER), :2]).astype(np.int32)], 1)
    grey = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), np.float32)
    if lips.sum() < 20:
        return image
    level = float(np.median(grey[lips.astype(bool)]))
    # The seam, run on past each corner.
    reach = CORNER_REACH * width
    left = np.array([xs[0] - reach, seam[0]])
    right = np.array([xs[-1] + reach, seam[-1]])
    line = np.vstack([left, np.stack([xs, seam], axis=1), right])
    band = np.zeros((h, w), np.uint8)
    cv2.polylines(band, [np.round(line).astype(np.int32)], False, 1, max(3, round(BAND * width)))
    hsv = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    dark = grey < CAVITY * level
    teeth = (grey > TEETH * level) & (hsv[..., 1] < 90)
    mask = (band.astype(bool) & (dark | teeth)).astype(np.uint8)
    if not mask.any():
        return image
    mask = np.asarray(cv2.dilate(mask, np.ones((3, 3), np.uint8)), np.uint8)
    out: RGBImage = np.asarray(cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA), np.uint8)
    return out


def _soften_lips(image: RGBImage, points: FloatArray, width: float) -> RGBImage:
    """Blur the lips a little (feathered): the warp stretched them and left the rims of
    the open lips as fine lines, which read as lips apart to the face models."""
    if SOFTEN <= 0:
        return image
    h, w = image.shape[:2]
    lips = np.zeros((h, w), np.float32)
    outline = points[list(LIPS_OUTER), :2]
    centre = outline.mean(axis=0)
    grown = (outline - centre) * SOFTEN_GROW + centre
    cv2.fillPoly(lips, [np.round(grown).astype(np.int32)], 1.0)
    weight = np.asarray(cv2.GaussianBlur(lips, (0, 0), 0.05 * width), np.float32)[..., None]
    soft = np.asarray(cv2.GaussianBlur(image.astype(np.float32), (0, 0), SOFTEN * width))
    mixed = image.astype(np.float32) * (1 - weight) + soft * weight
    out: RGBImage = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return out


def _shade_seam(image: RGBImage, xs: FloatArray, ys: FloatArray, width: float) -> RGBImage:
    """The line where the lips meet: the lips' own colour, darker."""
    h, w = image.shape[:2]
    strip = np.zeros((h, w), np.float32)
    line = np.round(np.stack([xs, ys], axis=1)).astype(np.int32)
    thickness = max(1, round(SEAM_WIDTH * width))
    cv2.polylines(strip, [line], False, 1.0, thickness, cv2.LINE_AA)
    soft = np.asarray(cv2.GaussianBlur(strip, (0, 0), SEAM_BLUR), np.float32)
    dim = 1 - soft[..., None] * (1 - SEAM_SHADE)
    out: RGBImage = np.clip(image.astype(np.float32) * dim + 0.5, 0, 255).astype(np.uint8)
    return out


def _moved(
    p: FloatArray,
    xs: FloatArray,
    cut_top: FloatArray,
    cut_bottom: FloatArray,
    seam: FloatArray,
    top: FloatArray,
    bottom: FloatArray,
    reach_up: float,
    reach_down: float,
) -> NDArray[np.float32]:
    """The mesh points where the warp takes them (the backward map inverted per point);
    points between the cut lines (teeth, the lips' inner faces) go onto the seam."""
    out = p.copy()
    x = p[:, 0]
    near = (x >= xs[0]) & (x <= xs[-1])
    for i in np.flatnonzero(near):
        s = float(np.interp(x[i], xs, seam))
        up = float(np.interp(x[i], xs, top))
        down = float(np.interp(x[i], xs, bottom))
        y = float(p[i, 1])
        if y < float(np.interp(x[i], xs, cut_top)):
            # Solve y = y' - up * fall((s - y') / reach_up) for y' (a contraction).
            target = y
            for _ in range(8):
                target = y + up * float(_fall(np.array((s - target) / reach_up)))
            out[i, 1] = min(target, s)
        elif y > float(np.interp(x[i], xs, cut_bottom)):
            target = y
            for _ in range(8):
                target = y - down * float(_fall(np.array((target - s) / reach_down)))
            out[i, 1] = max(target, s)
        else:
            out[i, 1] = s
    result: NDArray[np.float32] = out.astype(np.float32)
    return result
