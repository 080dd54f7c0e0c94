"""The simulators' control line: one JSON object per line each way over a UNIX socket
(the scanner simulator's ``--control`` socket, the simulated camera's)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def send_command(path: Path, cmd: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
    """Send ``cmd``, return the reply; RuntimeError when ``what`` refuses it,
    ConnectionError when it closed the socket without answering (it stopped)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(cmd).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ConnectionError(f"the {what} closed its control socket (stopped?)")
    reply: dict[str, Any] = json.loads(data)
    if not reply.get("ok"):
        raise RuntimeError(f"the {what} refused {cmd}: {reply.get('error')}")
    return reply


__all__ = ["send_command"]
