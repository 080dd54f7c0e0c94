"""A one-slot mailbox between a camera's reader thread and its consumer.

The consumer always gets the newest frame: a frame not taken before the next arrives is
dropped (counted), so a slow quality loop never works on a backlog of old frames and a
person in front of the camera never waits for the machine to catch up.
"""

from __future__ import annotations

import threading

from station.drivers.camera.errors import CameraError, CameraTimeout, EndOfStream
from station.drivers.camera.frame import Frame


class LatestFrame:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._ended = False
        self._error: CameraError | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def finish(self, error: CameraError | None = None) -> None:
        """No more frames: the stream ended (``error`` None) or failed."""
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame:
        """The newest frame not yet taken; waits up to ``timeout`` seconds for one."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._frame is not None or self._ended, timeout=timeout
            ):
                raise CameraTimeout(f"no frame within {timeout:.3g} s")
            frame, self._frame = self._frame, None
            if frame is not None:
                return frame
            if self._error is not None:
                # A fresh exception per read: every caller sees the cause, no shared traceback.
                raise type(self._error)(str(self._error)) from self._error
            raise EndOfStream("the camera's stream has ended")
