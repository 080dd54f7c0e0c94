"""The camera interface every backend implements, and the reader thread they share.

A backend supplies four hooks: open and close the device, grab one frame (blocking, for
as long as the device takes), and apply a control. The base class runs the grab loop on
its own thread, hands frames to the consumer through a one-slot mailbox (the newest
frame wins), keeps the health cell current and turns unsupported controls into a clear
:class:`UnsupportedControl` before the backend is asked.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar, Self

from station.drivers.camera.controls import (
    Control,
    Exposure,
    WhiteBalance,
    check_gain,
    exposure_control,
    white_balance_control,
)
from station.drivers.camera.errors import (
    CameraDisconnected,
    CameraError,
    CameraNotFound,
    EndOfStream,
    UnsupportedControl,
)
from station.drivers.camera.frame import Frame
from station.drivers.camera.latest import LatestFrame
from station.drivers.health import DeviceKind, HealthCell

DEFAULT_READ_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 3.0


class Camera(ABC):
    """A source of RGB frames. Use as a context manager, or ``open()`` / ``close()``::

    with make_camera(settings) as camera:
        for frame in camera.frames(timeout=1.0):
            ...
    """

    backend: ClassVar[str] = "abstract"

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        name: str = "camera",
        health: HealthCell | None = None,
    ) -> None:
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"bad camera mode {width}x{height} at {fps} fps")
        self._width, self._height, self._fps = width, height, float(fps)
        self.health = health or HealthCell(name, DeviceKind.CAMERA, self.backend)
        self._slot = LatestFrame()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stuck: threading.Thread | None = None
        """A reader that did not stop at close(): the device stays with it, no reopen."""
        self._lifecycle = threading.Lock()
        # Controls set so far, re-applied on every open (they may be set before it).
        self._exposure: Exposure | None = None
        self._white_balance: WhiteBalance | None = None
        self._gain: float | None = None

    # --- what the camera is -------------------------------------------------------

    @property
    def resolution(self) -> tuple[int, int]:
        """(width, height) of the frames; after open, what the device actually gives."""
        return self._width, self._height

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def is_open(self) -> bool:
        """Open and streaming: False again once the stream ended or the device vanished."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def dropped(self) -> int:
        """Frames the consumer never took because a newer one arrived first."""
        return self._slot.dropped

    @abstractmethod
    def controls(self) -> frozenset[Control]:
        """The controls this backend (and, once open, this device) can set."""

    # --- lifecycle ----------------------------------------------------------------

    def open(self) -> None:
        """Open the device and start capturing; raises :class:`CameraNotFound`."""
        with self._lifecycle:
            if self._thread is not None:
                if self._thread.is_alive():
                    return
                # The stream ended or the device vanished: release it, then open afresh.
                self._thread = None
                self._close_device()
            if self._stuck is not None and self._stuck.is_alive():
                raise CameraError(
                    "the camera's previous reader is still stuck in the device; "
                    "unplug and replug the camera, or restart the station"
                )
            try:
                self._open_device()
            except CameraNotFound as exc:
                self.health.absent(str(exc))
                raise
            except Exception as exc:
                self.health.error(f"could not start the camera: {exc}")
                raise
            self._slot = LatestFrame()
            self._stop = threading.Event()
            try:
                self._apply_controls()
            except CameraError:
                self._close_device()
                raise
            self._thread = threading.Thread(
                target=self._read_loop, name=f"{self.backend}-camera", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the reader thread (within a few seconds) and release the device."""
        with self._lifecycle:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stop.set()  # a backend's _grab waits on it, so it wakes at once
            thread.join(timeout=STOP_TIMEOUT_S)
            if thread.is_alive():
                # Releasing a device a thread is blocked in can crash the library: leak it.
                self._stuck = thread
                self.health.error("the camera did not stop within 3 s; not released")
                return
            self._close_device()
            self._slot.finish()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- frames -------------------------------------------------------------------

    def read(self, timeout: float = DEFAULT_READ_TIMEOUT_S) -> Frame:
        """The newest frame, waiting up to ``timeout`` seconds for one. Raises
        :class:`CameraTimeout`, :class:`EndOfStream` or :class:`CameraDisconnected`."""
        if self._thread is None:
            raise CameraError("the camera is not open: call open() or use it in a with block")
        return self._slot.take(timeout)

    def frames(self, timeout: float = DEFAULT_READ_TIMEOUT_S) -> Iterator[Frame]:
        """Frames until the stream ends (other errors propagate)."""
        while True:
            try:
                yield self.read(timeout)
            except EndOfStream:
                return

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._grab()
            except CameraDisconnected as exc:
                self.health.absent(str(exc))
                self._slot.finish(exc)
                return
            except CameraError as exc:
                self.health.error(str(exc))
                self._slot.finish(exc)
                return
            except Exception as exc:  # a library error: the reader must say so, not hang
                failure = CameraError(f"the {self.backend} camera failed: {exc!r}")
                self.health.error(str(failure))
                self._slot.finish(failure)
                return
            if self._stop.is_set():
                return
            if frame is None:
                self._slot.finish()
                return
            self._slot.put(frame)

    # --- controls -----------------------------------------------------------------

    def _require(self, control: Control, what: str) -> None:
        supported = self.controls()
        if control not in supported:
            have = ", ".join(sorted(supported)) or "none"
            raise UnsupportedControl(
                f"the {self.backend} camera cannot set {what}; it supports: {have}"
            )

    def set_exposure(self, value: Exposure) -> None:
        """``"auto"`` or a fixed exposure time in microseconds."""
        control = exposure_control(value)
        self._require(control, "auto exposure" if value == "auto" else "an exposure time")
        self._exposure = value
        if self.is_open:
            self._apply_exposure(value)

    def set_white_balance(self, value: WhiteBalance) -> None:
        """``"auto"``, a colour temperature in kelvin, or (red gain, blue gain)."""
        control = white_balance_control(value)
        self._require(control, f"white balance as {control.value.removeprefix('white_balance_')}")
        self._white_balance = value
        if self.is_open:
            self._apply_white_balance(value)

    def set_gain(self, value: float) -> None:
        """Analogue gain as a multiplier (1.0: none)."""
        gain = check_gain(value)
        self._require(Control.GAIN, "the gain")
        self._gain = gain
        if self.is_open:
            self._apply_gain(gain)

    def _apply_controls(self) -> None:
        if self._exposure is not None:
            self._apply_exposure(self._exposure)
        if self._white_balance is not None:
            self._apply_white_balance(self._white_balance)
        if self._gain is not None:
            self._apply_gain(self._gain)

    # --- backend hooks ------------------------------------------------------------

    @abstractmethod
    def _open_device(self) -> None:
        """Open and configure the device, update ``self._width/_height/_fps`` to what it
        gives, mark the health cell present. Raise :class:`CameraNotFound`."""

    @abstractmethod
    def _close_device(self) -> None: ...

    @abstractmethod
    def _grab(self) -> Frame | None:
        """Block until the next frame; None at the end of a finite stream. Called only
        from the reader thread."""

    @abstractmethod
    def _apply_exposure(self, value: Exposure) -> None: ...

    @abstractmethod
    def _apply_white_balance(self, value: WhiteBalance) -> None: ...

    @abstractmethod
    def _apply_gain(self, value: float) -> None: ...
