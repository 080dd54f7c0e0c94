"""Capture defects applied to a real face photo: tilt, off-centre, too small or large,
too dark or bright, side light, blur, background clutter, occlusion.

The quality checks are tested and benchmarked on these (each should flag its own
defect), and a synthetic population can use them to vary the few real photos we have.
All functions take and return RGB uint8 arrays and leave the input untouched.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

RGBImage = NDArray[np.uint8]
Fill = tuple[int, int, int]
GREY: Fill = (200, 200, 200)


def _affine(image: RGBImage, m: NDArray[np.float64], fill: Fill) -> RGBImage:
    h, w = image.shape[:2]
    out: RGBImage = np.asarray(
        cv2.warpAffine(
            image,
            m,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=fill,
        ),
        dtype=np.uint8,
    )
    return out


def rotate(image: RGBImage, degrees: float, fill: Fill = GREY) -> RGBImage:
    """Rotate about the image centre; positive is clockwise on screen (head rolls to the
    subject's left)."""
    h, w = image.shape[:2]
    m = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), -degrees, 1.0), dtype=np.float64)
    return _affine(image, m, fill)


def shift(image: RGBImage, dx: float, dy: float = 0.0, fill: Fill = GREY) -> RGBImage:
    """Translate by (dx, dy) shares of the width and height."""
    h, w = image.shape[:2]
    m = np.array([[1.0, 0.0, dx * w], [0.0, 1.0, dy * h]])
    return _affine(image, m, fill)


def zoom(image: RGBImage, factor: float, fill: Fill = GREY) -> RGBImage:
    """Scale about the image centre (< 1: the face gets smaller, the frame is padded)."""
    h, w = image.shape[:2]
    m = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, factor), dtype=np.float64)
    return _affine(image, m, fill)


def gamma(image: RGBImage, g: float) -> RGBImage:
    """Tone curve out = in ** g (g > 1 darkens mid-tones, g < 1 brightens)."""
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
    out: RGBImage = np.asarray(cv2.LUT(image, lut), dtype=np.uint8)
    return out


def gain(image: RGBImage, factor: float) -> RGBImage:
    """Multiply every pixel (exposure change; > 1 clips highlights)."""
    out: RGBImage = np.clip(image.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)
    return out


def side_light(
    image: RGBImage, left: float, right: float, span: tuple[float, float] | None = None
) -> RGBImage:
    """Light falling off sideways: gain ``left`` on the image's left, ``right`` on its
    right, ramping linearly across ``span`` (x0, x1 in pixels; default the whole width)
    and constant beyond. A span over the face gives one lit cheek and one in shade."""
    w = image.shape[1]
    x0, x1 = span if span is not None else (0.0, float(w - 1))
    t = np.clip((np.arange(w, dtype=np.float32) - x0) / max(x1 - x0, 1.0), 0.0, 1.0)
    ramp = (left + (right - left) * t)[None, :, None]
    out: RGBImage = np.clip(image.astype(np.float32) * ramp + 0.5, 0, 255).astype(np.uint8)
    return out


def blur(image: RGBImage, sigma: float) -> RGBImage:
    """Gaussian blur (defocus or motion-free shake) of ``sigma`` pixels."""
    out: RGBImage = np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), dtype=np.uint8)
    return out


def mirror(image: RGBImage) -> RGBImage:
    """Left-right mirror (a selfie preview): flips the sign of yaw and roll."""
    out: RGBImage = np.ascontiguousarray(image[:, ::-1])
    return out


def replace_background(
    image: RGBImage, background: NDArray[np.bool_], colour: Fill = (225, 225, 220)
) -> RGBImage:
    """Paint ``background`` pixels a plain colour, with a soft seam (a studio backdrop)."""
    soft = cv2.GaussianBlur(background.astype(np.float32), (0, 0), 2.0)[..., None]
    plain = np.empty_like(image)
    plain[:] = colour
    out: RGBImage = (image * (1 - soft) + plain * soft + 0.5).astype(np.uint8)
    return out


def clutter(
    image: RGBImage, box: tuple[int, int, int, int], seed: int = 0, cell: int = 12
) -> RGBImage:
    """Paste a high-contrast random block pattern (posters, shelves) into box x0, y0, x1, y1."""
    x0, y0, x1, y1 = box
    rng = np.random.default_rng(seed)
    gh, gw = -(-(y1 - y0) // cell), -(-(x1 - x0) // cell)
    blocks = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
    pattern = np.kron(blocks, np.ones((cell, cell, 1), dtype=np.uint8))[: y1 - y0, : x1 - x0]
    out = image.copy()
    out[y0:y1, x0:x1] = pattern
    return out


def occlude(
    image: RGBImage, box: tuple[int, int, int, int], colour: Fill = (20, 20, 20)
) -> RGBImage:
    """Cover box x0, y0, x1, y1 with a solid colour (dark glasses, a hand)."""
    x0, y0, x1, y1 = box
    out = image.copy()
    out[y0:y1, x0:x1] = colour
    return out
