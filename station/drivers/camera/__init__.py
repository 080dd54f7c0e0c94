"""Cameras: one interface, three backends chosen by configuration.

- :class:`Picamera2Camera`: a CSI camera on the Pi (libcamera, through picamera2).
- :class:`OpenCvCamera`: a USB (UVC) camera through V4L2, or a video file.
- :class:`SimulatedCamera`: scripted scenes with a synthetic person, in real time.

>>> from station.drivers.camera import CameraSettings, make_camera
>>> with make_camera(CameraSettings(backend="simulated", seed=7)) as camera:  # doctest: +SKIP
...     frame = camera.read(timeout=1.0)
...     frame.image.shape, frame.sequence
((480, 640, 3), 0)

See docs/protocols/camera.md.
"""

from __future__ import annotations

from station.drivers.camera.base import Camera
from station.drivers.camera.controls import Control, Exposure, WhiteBalance
from station.drivers.camera.errors import (
    CameraDisconnected,
    CameraError,
    CameraNotFound,
    CameraTimeout,
    EndOfStream,
    UnsupportedControl,
)
from station.drivers.camera.frame import Frame
from station.drivers.camera.opencv import OpenCvCamera
from station.drivers.camera.picam import Picamera2Camera, libcamera_controls
from station.drivers.camera.scenes import JOURNEY, Scene, SceneScript, Segment, parse_script
from station.drivers.camera.settings import CameraSettings
from station.drivers.camera.simulated import DEFAULT_ASSETS, SimulatedCamera
from station.drivers.health import DeviceHealthBoard, DeviceKind, HealthCell


def make_camera(
    settings: CameraSettings, board: DeviceHealthBoard | None = None, name: str = "camera"
) -> Camera:
    """The camera the settings describe (not yet open), its health cell on ``board``."""
    cell = HealthCell(name, DeviceKind.CAMERA, settings.backend)
    if board is not None:
        board.register(cell)
    s = settings
    if s.backend == "picamera2":
        if isinstance(s.device, str) and not s.device.isdigit():
            raise ValueError("the picamera2 backend takes a camera number as its device")
        return Picamera2Camera(int(s.device), s.width, s.height, s.fps, name, cell)
    if s.backend == "opencv":
        return OpenCvCamera(s.device, s.width, s.height, s.fps, s.fourcc, None, name, cell)
    return SimulatedCamera(
        s.scene_script,
        s.seed,
        s.width,
        s.height,
        s.fps,
        s.loop,
        s.assets or DEFAULT_ASSETS,
        None,
        name,
        cell,
    )


__all__ = [
    "JOURNEY",
    "Camera",
    "CameraDisconnected",
    "CameraError",
    "CameraNotFound",
    "CameraSettings",
    "CameraTimeout",
    "Control",
    "EndOfStream",
    "Exposure",
    "Frame",
    "OpenCvCamera",
    "Picamera2Camera",
    "Scene",
    "SceneScript",
    "Segment",
    "SimulatedCamera",
    "UnsupportedControl",
    "WhiteBalance",
    "libcamera_controls",
    "make_camera",
    "parse_script",
]
