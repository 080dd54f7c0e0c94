"""Placeholder biometrics for the demo and the package benchmark: fingerprint-like ridge
images and a drawn portrait. They have realistic sizes and statistics for codecs and
packaging, but no identity: dedup and quality work needs the synthetic generator.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

# 500 ppi ridge period is 8-11 px on real fingers.
RIDGE_PERIOD_PX = 9.5


def finger_image(seed: int, width: int = 800, height: int = 750) -> NDArray[np.uint8]:
    """A rolled-print-like grey image: dark ridges around a core, an elliptic contact area,
    uneven pressure and sensor noise, on a white background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width * rng.uniform(0.42, 0.58)
    cy = height * rng.uniform(0.38, 0.55)
    dx, dy = x - cx, y - cy
    r = np.hypot(dx, dy)
    # Concentric ridges near the core, flattening into arches below and at the sides.
    blend = np.clip((dy + 0.15 * height) / (0.5 * height), 0.0, 1.0)
    phase = (1 - blend) * r + blend * (dy * 0.9 + 0.002 * dx**2)
    phase += rng.uniform(3, 8) * np.sin(x / rng.uniform(60, 120)) * np.cos(y / 90)
    ridges = 0.5 + 0.5 * np.cos(2 * np.pi * phase / (RIDGE_PERIOD_PX * rng.uniform(0.9, 1.1)))
    # Rolled contact: a wide ellipse, soft at the edges, nail-to-nail across the frame.
    ax, ay = width * rng.uniform(0.36, 0.44), height * rng.uniform(0.40, 0.47)
    ell = (dx / ax) ** 2 + ((y - height * 0.5) / ay) ** 2
    contact = np.clip((1.0 - ell) * 4.0, 0.0, 1.0)
    pressure = 0.75 + 0.25 * np.cos(dx / width * np.pi) * contact
    ink = ridges * contact * pressure
    ink += rng.normal(0.0, 0.06, size=ink.shape).astype(np.float32) * contact
    img = 245.0 - 200.0 * np.clip(ink, 0.0, 1.0)
    out: NDArray[np.uint8] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def face_image(seed: int, width: int = 600, height: int = 800) -> Image.Image:
    """An ICAO-proportioned placeholder portrait: head centred, plain light background."""
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(215, 240, size=3))
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    skin = tuple(int(v) for v in (rng.integers(170, 225), rng.integers(130, 175), 110))
    cx, top, bottom = width // 2, int(height * 0.18), int(height * 0.78)
    half = int(width * 0.27)
    draw.ellipse((cx - half - 30, height * 0.72, cx + half + 30, height * 1.3), fill=(40, 50, 70))
    draw.ellipse((cx - half, top, cx + half, bottom), fill=skin)
    draw.chord((cx - half, top - 10, cx + half, top + 190), 180, 360, fill=(25, 20, 20))
    eye_y = int(top + (bottom - top) * 0.45)
    for ex in (cx - half // 2, cx + half // 2):
        draw.ellipse((ex - 22, eye_y - 10, ex + 22, eye_y + 10), fill=(250, 250, 250))
        draw.ellipse((ex - 9, eye_y - 9, ex + 9, eye_y + 9), fill=(50, 35, 25))
    draw.line(
        (cx, eye_y + 20, cx - 10, eye_y + 80, cx + 8, eye_y + 85), fill=(140, 90, 70), width=4
    )
    draw.arc((cx - 50, eye_y + 100, cx + 50, eye_y + 150), 20, 160, fill=(150, 60, 60), width=5)
    noise = rng.normal(0, 4, size=(height, width, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.8))
