"""What can go wrong with a camera, each with what to do about it in the message.

Named for the event (``except CameraNotFound``), as the station's other drivers read.
"""

from __future__ import annotations


class CameraError(RuntimeError):
    """Base of all camera failures."""


class CameraNotFound(CameraError):  # noqa: N818
    """No such camera (not plugged in, wrong device, backend not installed)."""


class CameraDisconnected(CameraError):  # noqa: N818
    """The camera was there and went away (cable pulled, USB reset, driver error)."""


class CameraTimeout(CameraError, TimeoutError):  # noqa: N818
    """No frame arrived within the read timeout."""


class EndOfStream(CameraError):  # noqa: N818
    """A finite source (a video file, a scene script that does not loop) has ended."""


class UnsupportedControl(CameraError):  # noqa: N818
    """The backend (or the device) cannot set this control; ``Camera.controls()`` lists
    what it can."""
