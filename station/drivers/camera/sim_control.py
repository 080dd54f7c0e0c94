"""Steering a simulated camera from outside the station process: who sits in front of it.

The station service owns its devices; tests and the demo play the citizens. For the
scanner that is the simulator's own control socket (it is a separate process); the
simulated camera lives inside the station process, so the station opens this small
control socket next to it (``run_dir/camera-control``), one JSON object per line each way:

    {"cmd": "sit", "seed": 6, "script": ["walk_in:1", "good:30"]}  -> {"ok": true}
    {"cmd": "show", "png": "<base64 of a PNG or JPEG>"}             -> {"ok": true}
    {"cmd": "show", "png": null}                                    -> {"ok": true}
    {"cmd": "state"}                                                -> {"ok": true, "seed": 6, ...}

``show`` holds a sheet of paper up in front of the lens (the image: a token sheet's QR
code, say) until another ``show`` replaces it or takes it away (``null``).

Only the simulated backend has it: a real camera films whoever is there.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from station.drivers.camera.simulated import MAX_SHEET_BYTES, SimulatedCamera, load_sheet
from station.drivers.control_socket import send_command

log = logging.getLogger(__name__)
MAX_COMMAND_BYTES = MAX_SHEET_BYTES * 4 // 3 + 4096
"""A ``show`` with the largest sheet, in base64, and the rest of its line."""


class CameraControlServer:
    """Serves the control socket of one simulated camera (a daemon thread)."""

    def __init__(self, camera: SimulatedCamera, path: Path) -> None:
        self.camera = camera
        self.path = Path(path)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CameraControlServer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        self.path.chmod(0o600)
        sock.listen(4)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="camera-control", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(30)
                try:
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                        if len(data) > MAX_COMMAND_BYTES:
                            raise ValueError(f"a command is at most {MAX_COMMAND_BYTES} bytes")
                    reply = self._handle(json.loads(data or b"{}"))
                except (OSError, ValueError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def _handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "sit":
            try:
                seed = int(cmd["seed"])
                script = cmd.get("script")
                self.camera.sit(seed, list(script) if script is not None else None)
            except Exception as exc:  # tell the caller; the camera keeps the old person
                log.warning("camera control refused %s: %s", cmd, exc)
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return {"ok": True}
        if name == "show":
            png = cmd.get("png")
            try:
                if png is None:
                    self.camera.show(None)
                elif not isinstance(png, str):
                    raise ValueError("png is the image file in base64, or null")
                else:
                    self.camera.show(load_sheet(base64.b64decode(png, validate=True)))
            except (ValueError, binascii.Error) as exc:  # the camera keeps what it showed
                return {"ok": False, "error": f"show: {exc}"}
            return {"ok": True}
        if name == "state":
            return {
                "ok": True,
                "seed": self.camera.seed,
                "script": str(self.camera.script),
                "sheet": self.camera.showing,
            }
        return {"ok": False, "error": f"unknown command {name!r}"}

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class CameraControl:
    """Client of a simulated camera's control socket."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def send(self, **cmd: Any) -> dict[str, Any]:
        return send_command(self.path, cmd, self.timeout, "simulated camera")

    def sit(self, seed: int, script: list[str] | None = None) -> None:
        """Another person sits down (``seed``), playing ``script`` from its start."""
        self.send(cmd="sit", seed=seed, script=script)

    def show(self, image: bytes | None) -> None:
        """Hold a sheet up in front of the camera: ``image`` is its PNG (or JPEG) file;
        None takes the sheet away."""
        if image is not None:
            load_sheet(image)  # a bad file is refused here, with the reason, not sent
        self.send(cmd="show", png=base64.b64encode(image).decode() if image is not None else None)

    def state(self) -> dict[str, Any]:
        return self.send(cmd="state")


__all__ = ["CameraControl", "CameraControlServer"]
