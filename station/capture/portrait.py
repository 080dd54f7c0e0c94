"""The first camera frame whose ICAO portrait crop passes the face quality gate.

The gate's geometry (head width, eye distance) is that of the portrait, not of the wider
camera frame, so each frame with a face is cropped first and the crop is judged. The
full auto-capture (live hints to the citizen, best of several) grows from this.
"""

from __future__ import annotations

import time

from biometrics.face.crop import Portrait
from biometrics.face.pipeline import FaceAnalyzer
from station.drivers.camera import Camera


def first_good_portrait(
    camera: Camera, analyzer: FaceAnalyzer, timeout: float, read_timeout: float = 2.0
) -> Portrait | None:
    """The first passing portrait within ``timeout`` seconds, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = camera.read(timeout=read_timeout)
        analysis = analyzer.analyze(frame.image)
        if not analysis.found:
            continue
        portrait = analyzer.portrait(frame.image, analysis)
        if analyzer.analyze(portrait.image).passed:
            return portrait
    return None
