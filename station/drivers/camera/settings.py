"""Configuration of the camera section: which backend, which device, what mode, and for
the simulated camera what happens in front of it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from station.drivers.camera.scenes import JOURNEY, Segment


class CameraSettings(BaseModel):
    """``picamera2``: a CSI camera on the Pi; ``opencv``: a USB (UVC) camera through
    V4L2, or a video file; ``simulated``: scripted scenes with a synthetic person."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["picamera2", "opencv", "simulated"] = "simulated"
    device: int | str = 0
    """picamera2: camera number; opencv: V4L2 index, /dev/videoN, or a video file path."""
    width: int = Field(640, gt=0, le=4096)
    height: int = Field(480, gt=0, le=4096)
    fps: float = Field(15.0, gt=0, le=120)
    fourcc: str = Field("MJPG", min_length=4, max_length=4)
    """opencv only: the pixel format asked of the device."""
    scene_script: tuple[Segment, ...] = JOURNEY
    """simulated only: segments as {scene, seconds} or "scene:seconds" strings."""
    loop: bool = True
    """simulated only: repeat the script (False: end of stream after it)."""
    seed: int = Field(0, ge=0)
    """simulated only: which synthetic person (and the camera's serial number)."""
    assets: Path | None = None
    """simulated only: folder with the source photos (default: data/assets)."""
