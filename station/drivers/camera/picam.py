"""CSI cameras on the Pi through picamera2 (libcamera).

picamera2 exists only on Raspberry Pi OS (``apt install python3-picamera2``, a venv with
``--system-site-packages``): it is imported in :meth:`Picamera2Camera._open_device`, never
at module import, so this module loads anywhere. The control mapping is a pure function
(:func:`libcamera_controls`) so it can be checked off the Pi.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np

from station.drivers.camera.base import Camera
from station.drivers.camera.controls import Control, Exposure, WhiteBalance
from station.drivers.camera.errors import CameraDisconnected, CameraNotFound, UnsupportedControl
from station.drivers.camera.frame import Frame
from station.drivers.health import HealthCell

# libcamera names the formats by their 32-bit word: "BGR888" is stored R, G, B in
# memory, which is the RGB array order we hand out ("RGB888" would come out as BGR).
RGB_ARRAY_FORMAT = "BGR888"

# No colour temperature: libcamera's AWB takes a mode or ColourGains, not kelvin.
LIBCAMERA_CONTROLS = frozenset(
    {
        Control.AUTO_EXPOSURE,
        Control.EXPOSURE_TIME,
        Control.AUTO_WHITE_BALANCE,
        Control.WHITE_BALANCE_GAINS,
        Control.GAIN,
    }
)


def libcamera_controls(
    exposure: Exposure | None = None,
    white_balance: WhiteBalance | None = None,
    gain: float | None = None,
) -> dict[str, object]:
    """The ``Picamera2.set_controls`` dict for our controls (None: leave as is)."""
    out: dict[str, object] = {}
    if exposure == "auto":
        out["AeEnable"] = True
    elif exposure is not None:
        # A fixed exposure time only holds with the AE algorithm off.
        out |= {"AeEnable": False, "ExposureTime": int(exposure)}
    if white_balance == "auto":
        out["AwbEnable"] = True
    elif isinstance(white_balance, tuple):
        red, blue = white_balance
        out |= {"AwbEnable": False, "ColourGains": (float(red), float(blue))}
    elif white_balance is not None:
        raise UnsupportedControl("libcamera sets white balance by gains, not by kelvin")
    if gain is not None:
        out["AnalogueGain"] = float(gain)
    return out


class Picamera2Camera(Camera):
    backend = "picamera2"

    def __init__(
        self,
        camera_num: int = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        name: str = "camera",
        health: HealthCell | None = None,
    ) -> None:
        super().__init__(width, height, fps, name, health)
        self.camera_num = camera_num
        self._cam: Any = None
        self._sequence = 0

    def controls(self) -> frozenset[Control]:
        return LIBCAMERA_CONTROLS

    def _open_device(self) -> None:
        try:
            module = importlib.import_module("picamera2")
        except ImportError as exc:
            raise CameraNotFound(
                "picamera2 is not installed: on Raspberry Pi OS `apt install python3-picamera2` "
                "and use a venv with --system-site-packages; elsewhere use the opencv or "
                "simulated camera backend"
            ) from exc
        cameras = module.Picamera2.global_camera_info()
        if self.camera_num >= len(cameras):
            raise CameraNotFound(
                f"no CSI camera {self.camera_num} ({len(cameras)} found): check the ribbon "
                "cable and `rpicam-hello --list-cameras`"
            )
        cam = module.Picamera2(self.camera_num)
        config = cam.create_video_configuration(
            main={"size": (self._width, self._height), "format": RGB_ARRAY_FORMAT},
            controls={"FrameRate": self._fps},
        )
        cam.configure(config)
        cam.start()
        self._cam = cam
        self._sequence = 0
        info = cameras[self.camera_num]
        props = cam.camera_properties
        self.health.present(
            model=str(props.get("Model", info.get("Model", "CSI camera"))),
            serial=str(info["Id"]) if "Id" in info else None,
            mode=f"{self._width}x{self._height}@{self._fps:g}",
            location=str(info.get("Location", "")),
        )

    def _close_device(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.stop()
            cam.close()

    def _grab(self) -> Frame | None:
        cam = self._cam
        if cam is None:
            return None
        try:
            array = cam.capture_array("main")
        except RuntimeError as exc:  # libcamera reports a lost camera this way
            raise CameraDisconnected(f"the CSI camera stopped: {exc}; reopen it") from exc
        image = np.ascontiguousarray(array[..., :3], dtype=np.uint8)
        frame = Frame(image, time.monotonic(), self._sequence)
        self._sequence += 1
        return frame

    def _apply_exposure(self, value: Exposure) -> None:
        self._cam.set_controls(libcamera_controls(exposure=value))

    def _apply_white_balance(self, value: WhiteBalance) -> None:
        self._cam.set_controls(libcamera_controls(white_balance=value))

    def _apply_gain(self, value: float) -> None:
        self._cam.set_controls(libcamera_controls(gain=value))
