"""Start, steer and stop a scanner simulator process (for tests, benches and the demo)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from station.drivers.control_socket import send_command


class SimulatorControl:
    """Client of a simulator's control socket: one JSON object per line each way."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def send(self, **cmd: Any) -> dict[str, Any]:
        """Send ``{"cmd": ..., ...}``; raise RuntimeError when the simulator refuses it."""
        return send_command(self.path, cmd, self.timeout, "scanner simulator")

    def present(self, finger: int, fault: str = "none", **extra: Any) -> None:
        """Queue the next presentation (ahead of the default script)."""
        self.send(cmd="present", finger=finger, fault=fault, **extra)

    def corrupt(self, count: int = 1, after: int = 0) -> None:
        """Damage the checksum of ``count`` packets the scanner sends, after ``after``
        intact ones."""
        self.send(cmd="corrupt", count=count, after=after)

    def reset(self) -> None:
        """Empty the presentation queue (back to the default script) and line faults."""
        self.send(cmd="reset")

    def noise(self, data: bytes) -> None:
        self.send(cmd="noise", hex=data.hex())

    def unplug(self, ms: int = 1000) -> None:
        self.send(cmd="unplug", ms=ms)

    def served(self) -> list[dict[str, Any]]:
        served: list[dict[str, Any]] = self.send(cmd="served")["served"]
        return served

    def state(self) -> dict[str, Any]:
        return self.send(cmd="state")


class SimulatorProcess:
    """``python -m station.drivers.fingerprint.simulator`` as a child process.

    >>> with SimulatorProcess(tmp / "fp0", seed=1, pace=False) as sim:
    ...     sim.control.present(finger=2, fault="no_finger")
    ...     scanner = FingerprintScanner(str(sim.link))
    """

    def __init__(
        self,
        link: Path,
        *,
        seed: int = 0,
        person: int = 0,
        baud: int = 57600,
        transport: str = "uart",
        pace: bool = True,
        packet_size: int = 128,
        stream_packet_size: int = 256,
        fps: float = 25.0,
        script: Path | None = None,
        control: Path | None = None,
        startup_timeout: float = 30.0,
        log: Path | None = None,
    ) -> None:
        self.link = Path(link)
        self.control_path = control or self.link.with_name(self.link.name + ".ctl")
        self.control = SimulatorControl(self.control_path)
        self.startup_timeout = startup_timeout
        self.log = log or self.link.with_name(self.link.name + ".log")
        args = [
            sys.executable,
            "-m",
            "station.drivers.fingerprint.simulator",
            "--link",
            str(self.link),
            "--control",
            str(self.control_path),
            "--seed",
            str(seed),
            "--person",
            str(person),
            "--baud",
            str(baud),
            "--transport",
            transport,
            "--packet-size",
            str(packet_size),
            "--stream-packet-size",
            str(stream_packet_size),
            "--fps",
            str(fps),
            "--parent-pid",
            str(os.getpid()),
        ]
        if not pace:
            args.append("--no-pace")
        if script is not None:
            args += ["--script", str(script)]
        self.args = args
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> SimulatorProcess:
        root = Path(__file__).resolve().parents[3]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # never leave a half-started simulator behind
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"simulator exited at start; see {self.log}")
            if self.link.exists() and self.control_path.exists():
                try:
                    self.control.send(cmd="ping")
                    return
                except (OSError, ValueError):  # not listening yet, or closed mid-reply
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"simulator did not come up in {self.startup_timeout} s; see {self.log}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
