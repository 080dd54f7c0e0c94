"""systemd's service notification protocol (sd_notify(3)), without libsystemd.

On the device the station service runs as ``Type=notify`` with ``WatchdogSec=``: it says
READY=1 once it answers HTTP, then WATCHDOG=1 from its event loop, so a loop that hangs
(a stuck device call, a deadlock) stops the pings and systemd restarts the service. Off
systemd (tests, a developer's shell) NOTIFY_SOCKET is unset and every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends state lines to the service manager's notification socket."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written "@name"; the kernel wants a leading NUL instead.
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process meant to ping (not a child that inherited it).
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self._watchdog_s = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_s(self) -> float | None:
        """The watchdog timeout systemd set for this service, or None."""
        return self._watchdog_s

    def ping_interval_s(self) -> float:
        """How often to say WATCHDOG=1: half the timeout, as sd_watchdog_enabled(3) advises."""
        return self._watchdog_s / 2 if self._watchdog_s else 5.0

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines; False when there is no manager to tell (or it is gone)."""
        if not self._address:
            return False
        message = "\n".join(fields).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(message)
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


__all__ = ["Notifier"]
