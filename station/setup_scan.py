"""Reading the station setup code (the QR code on the registry's token sheet) with the
station's camera, at first boot.

The camera streams anyway (the device layer owns it); a scan only reads its newest frames
for up to ``timeout_s`` seconds and stops at the first QR code it reads: a setup code
answers the registry address and token; any other code (a receipt slip's, say) answers at
once that it is not one, so the technician learns what is wrong without waiting out the
time. Two OpenCV detectors, as the slip tests use: the classic one, then the ArUco-based
one on the frames the classic one cannot read (each misses codes the other reads).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from enrollment.setup_token import SetupCode, parse_setup_code
from station.drivers.camera.base import Camera
from station.drivers.camera.errors import CameraTimeout

GreyImage = NDArray[np.uint8]

FRAME_WAIT_S = 1.0
"""How long one read waits for a frame (the scan's own deadline still holds)."""


class ScanBusyError(RuntimeError):
    """Another scan is reading the camera now."""


class NoCodeSeenError(Exception):
    """No QR code could be read within the time. ``glimpsed``: a code was in view in some
    frame but could not be read (too far, tilted, blurred, glare)."""

    def __init__(self, seconds: float, frames: int, glimpsed: bool) -> None:
        what = "a QR code was in view but could not be read" if glimpsed else "no QR code seen"
        super().__init__(f"{what} in {seconds:.1f} s ({frames} frames)")
        self.seconds, self.frames, self.glimpsed = seconds, frames, glimpsed


@dataclass(frozen=True)
class ScanResult:
    code: SetupCode
    seconds: float
    frames: int

    def as_json(self) -> dict[str, Any]:
        return {
            "registry_url": self.code.registry_url,
            "token": self.code.token,
            "seconds": round(self.seconds, 2),
            "frames": self.frames,
        }


def read_qr(grey: GreyImage, detectors: list[Any]) -> tuple[str | None, bool]:
    """The text of the QR code in a greyscale image (None: none read), and whether any
    detector found one there at all."""
    found = False
    for detector in detectors:
        text, points, _ = detector.detectAndDecode(grey)
        found = found or points is not None
        if text:
            return str(text), True
    return None, found


class SetupCodeScanner:
    """One scan at a time (one camera); the detectors are made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._detectors: list[Any] | None = None

    def scan(self, camera: Camera, timeout_s: float) -> ScanResult:
        """Read the camera's frames until one holds a QR code, for up to ``timeout_s``.
        Raises :class:`~enrollment.setup_token.SetupCodeError` (a QR code that is not a
        usable setup code), :class:`NoCodeSeenError`, :class:`ScanBusyError`, or the camera's own
        error (it stopped, or was unplugged)."""
        if not self._lock.acquire(blocking=False):
            raise ScanBusyError("the camera is already reading a QR code")
        try:
            if self._detectors is None:
                self._detectors = [cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()]
            return self._scan(camera, timeout_s, self._detectors)
        finally:
            self._lock.release()

    def _scan(self, camera: Camera, timeout_s: float, detectors: list[Any]) -> ScanResult:
        start = time.monotonic()
        deadline = start + timeout_s
        frames, glimpsed = 0, False
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = camera.read(timeout=min(left, FRAME_WAIT_S))
            except CameraTimeout:
                continue  # a slow frame: the deadline decides
            if frame.timestamp < start:
                continue  # captured before the scan began (a camera's buffered frame)
            frames += 1
            grey = np.asarray(cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY), np.uint8)
            text, found = read_qr(grey, detectors)
            glimpsed = glimpsed or found
            if text is not None:
                code = parse_setup_code(text)  # not a setup code: raised, the scan is over
                return ScanResult(code, time.monotonic() - start, frames)
        raise NoCodeSeenError(time.monotonic() - start, frames, glimpsed)


__all__ = ["NoCodeSeenError", "ScanBusyError", "ScanResult", "SetupCodeScanner", "read_qr"]
