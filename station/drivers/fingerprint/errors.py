"""What can go wrong with the fingerprint scanner, as errors an officer or technician can act on.

Each class has a stable ``code`` (for logs, telemetry and the UI's translated text) and an
English message that says what to do. Roll-quality problems (smeared, too fast, no
contact) are not here: they come from the composer as ``rolled.RollError``.
"""


class ScannerError(Exception):
    """Base of every scanner failure."""

    code = "scanner_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ScannerNotFound(ScannerError):  # noqa: N818 (names the station and UI already use)
    """The serial port does not exist (scanner not plugged in, or wrong port configured)."""

    code = "not_found"


class ScannerDisconnected(ScannerError):  # noqa: N818 (names the station and UI already use)
    """The port vanished while in use: the cable was pulled or the scanner reset."""

    code = "disconnected"


class ScannerTimeout(ScannerError):  # noqa: N818 (names the station and UI already use)
    """The scanner did not answer in time."""

    code = "timeout"


class NoFinger(ScannerTimeout):
    """No finger was put on the platen before the capture timed out."""

    code = "no_finger"


class CaptureCancelled(ScannerError):  # noqa: N818 (names the station and UI already use)
    """The capture was cancelled by the host (officer pressed cancel, or the app stopped)."""

    code = "cancelled"


class ProtocolFault(ScannerError):  # noqa: N818 (names the station and UI already use)
    """The link keeps corrupting packets or the scanner answered out of turn."""

    code = "protocol"


class WrongPassword(ScannerError):  # noqa: N818 (names the station and UI already use)
    """The scanner rejected the configured password (VfyPwd)."""

    code = "wrong_password"


class DeviceRejected(ScannerError):  # noqa: N818 (names the station and UI already use)
    """The scanner answered a command with an error confirmation code."""

    code = "rejected"

    def __init__(self, message: str, confirmation: int) -> None:
        super().__init__(message)
        self.confirmation = confirmation
