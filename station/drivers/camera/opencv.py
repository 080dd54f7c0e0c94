"""USB (UVC) cameras through V4L2 with OpenCV; a video file stands in for one in tests.

``cv2.VideoCapture`` is not thread-safe: the reader thread and the control setters share
one lock, so a control change waits at most one frame. V4L2 specifics OpenCV passes
through: CAP_PROP_AUTO_EXPOSURE takes 3 (aperture priority, i.e. auto) or 1 (manual),
CAP_PROP_EXPOSURE is V4L2's exposure_time_absolute in 100 us units, CAP_PROP_GAIN is in
the driver's own units (often 0-255). MJPG is asked for because most UVC cameras give
their larger modes at full rate only compressed.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from station.drivers.camera.base import Camera
from station.drivers.camera.controls import Control, Exposure, WhiteBalance
from station.drivers.camera.errors import (
    CameraDisconnected,
    CameraNotFound,
    UnsupportedControl,
)
from station.drivers.camera.frame import Frame
from station.drivers.health import HealthCell

V4L2_AUTO_EXPOSURE_ON = 3  # V4L2_EXPOSURE_APERTURE_PRIORITY
V4L2_AUTO_EXPOSURE_OFF = 1  # V4L2_EXPOSURE_MANUAL
V4L2_EXPOSURE_UNIT_US = 100
FAILED_READS_BEFORE_DISCONNECT = 5
SYSFS_VIDEO = Path("/sys/class/video4linux")

V4L2_CONTROLS = frozenset(
    {
        Control.AUTO_EXPOSURE,
        Control.EXPOSURE_TIME,
        Control.AUTO_WHITE_BALANCE,
        Control.WHITE_BALANCE_KELVIN,
        Control.GAIN,
    }
)


def device_path(device: int | str) -> str:
    """``0`` or ``"0"`` (from the environment) -> ``/dev/video0``; a path stays a path."""
    if isinstance(device, int) or device.isdigit():
        return f"/dev/video{int(device)}"
    return device


def is_v4l2_device(path: str) -> bool:
    return path.startswith("/dev/")


def card_name(path: str) -> str | None:
    """The V4L2 card name (what ``v4l2-ctl --list-devices`` shows), from sysfs."""
    match = re.fullmatch(r"/dev/(video\d+)", os.path.realpath(path))
    if match is None:
        return None
    try:
        return (SYSFS_VIDEO / match.group(1) / "name").read_text().strip() or None
    except OSError:
        return None


def fourcc_text(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\0")


class OpenCvCamera(Camera):
    """``device``: a V4L2 index or /dev path (live camera), or a video file (played at
    its own frame rate, then end of stream; no controls)."""

    backend = "opencv"

    def __init__(
        self,
        device: int | str = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        fourcc: str = "MJPG",
        api: int | None = None,
        name: str = "camera",
        health: HealthCell | None = None,
    ) -> None:
        super().__init__(width, height, fps, name, health)
        self.path = device_path(device)
        self.live = is_v4l2_device(self.path)
        self.fourcc = fourcc
        self.api = api if api is not None else (cv2.CAP_V4L2 if self.live else cv2.CAP_ANY)
        self._cap: cv2.VideoCapture | None = None
        self._cap_lock = threading.Lock()
        self._sequence = 0
        self._failures = 0
        self._next_due = 0.0

    def controls(self) -> frozenset[Control]:
        return V4L2_CONTROLS if self.live else frozenset()

    # --- device -------------------------------------------------------------------

    def _open_device(self) -> None:
        if not os.path.exists(self.path):
            hint = (
                "is the camera plugged in? `v4l2-ctl --list-devices` lists cameras"
                if self.live
                else "check the camera device setting"
            )
            raise CameraNotFound(f"no {self.path}: {hint}")
        cap = cv2.VideoCapture(self.path, self.api)
        if not cap.isOpened():
            cap.release()
            raise CameraNotFound(
                f"OpenCV could not open {self.path} (in use by another program, or not a "
                "camera: `v4l2-ctl -d DEVICE --all` shows what it is)"
            )
        if self.live:
            # Order matters for V4L2: format, then size, then rate.
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
            cap.set(cv2.CAP_PROP_FPS, self._fps)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if width > 0 and height > 0:
            self._width, self._height = width, height
        if fps > 0:
            self._fps = fps
        self._cap = cap
        self._sequence = 0
        self._failures = 0
        self._next_due = time.monotonic()
        details = {
            "device": self.path,
            "api": cap.getBackendName(),
            "mode": f"{self._width}x{self._height}@{self._fps:g}",
        }
        if self.live:
            details["fourcc"] = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
            self.health.present(model=card_name(self.path) or "V4L2 camera", **details)
        else:
            self.health.present(model="video file", **details)

    def _close_device(self) -> None:
        with self._cap_lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def _grab(self) -> Frame | None:
        if not self.live:
            # A file reads as fast as the disk: pace it like the camera it stands in for.
            self._next_due += 1.0 / self._fps
            if self._stop.wait(max(0.0, self._next_due - time.monotonic())):
                return None
        while True:
            with self._cap_lock:
                if self._cap is None:
                    return None
                ok, bgr = self._cap.read()
            if ok and bgr is not None:
                self._failures = 0
                break
            if not self.live:
                return None  # end of the file
            self._failures += 1
            if not os.path.exists(self.path) or self._failures >= FAILED_READS_BEFORE_DISCONNECT:
                raise CameraDisconnected(
                    f"{self.path} stopped delivering frames: check the USB cable and "
                    "reopen the camera"
                )
            if self._stop.wait(0.05):
                return None
        image = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        frame = Frame(image, time.monotonic(), self._sequence)
        self._sequence += 1
        return frame

    # --- controls -----------------------------------------------------------------

    def _set(self, prop: int, value: float, what: str) -> None:
        with self._cap_lock:
            if self._cap is None:
                return
            if not self._cap.set(prop, value):
                raise UnsupportedControl(
                    f"{self.path} refused {what} = {value:g} (`v4l2-ctl -d {self.path} "
                    "--list-ctrls` shows what it offers)"
                )

    def _apply_exposure(self, value: Exposure) -> None:
        if value == "auto":
            self._set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_AUTO_EXPOSURE_ON, "auto exposure")
            return
        self._set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_AUTO_EXPOSURE_OFF, "manual exposure")
        steps = max(1, round(value / V4L2_EXPOSURE_UNIT_US))
        self._set(cv2.CAP_PROP_EXPOSURE, steps, "exposure (100 us steps)")

    def _apply_white_balance(self, value: WhiteBalance) -> None:
        if value == "auto":
            self._set(cv2.CAP_PROP_AUTO_WB, 1, "auto white balance")
        elif isinstance(value, int):
            self._set(cv2.CAP_PROP_AUTO_WB, 0, "manual white balance")
            self._set(cv2.CAP_PROP_WB_TEMPERATURE, value, "white balance temperature (K)")
        else:  # controls() excludes gains: set_white_balance has refused them already
            raise UnsupportedControl("V4L2 has no red/blue gain controls")

    def _apply_gain(self, value: float) -> None:
        self._set(cv2.CAP_PROP_GAIN, value, "gain")
