"""Registry processes for tests that need the real thing: ``python -m central serve`` and
``python -m central worker`` as subprocesses, configured only through ``REGISTRY_*``
variables (as an operator would), killable with SIGKILL and restartable on the same state.

Each process starts in its own session (``start_new_session``), so its session id is its
pid: :meth:`RegistryProcess.kill` SIGKILLs the whole session (anything the process started,
such as ABIS shard processes, dies with it) and :func:`leftovers` asks ``pgrep -s`` whether
anything of a session survived. :class:`ProcessSet` kills every process it started on exit,
whatever happened in between.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def registry_env(
    tmp: Path, database_url: str, admin: tuple[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a registry living under ``tmp`` (blobs, keys, JWT secret) on
    ``database_url``, with the pipeline left to separate worker processes and cheap password
    hashing. The caller's own ``REGISTRY_*`` variables are dropped so that nothing of the
    developer's configuration leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "REGISTRY_DATABASE__URL": database_url,
            "REGISTRY_BLOBS__BACKEND": "local",
            "REGISTRY_BLOBS__PATH": str(tmp / "blobs"),
            "REGISTRY_KEYS__PATH": str(tmp / "keys"),
            "REGISTRY_AUTH__JWT_SECRET_FILE": str(tmp / "jwt-secret"),
            "REGISTRY_AUTH__ARGON2_TIME_COST": "1",
            "REGISTRY_AUTH__ARGON2_MEMORY_KIB": "1024",
            "REGISTRY_AUTH__ARGON2_PARALLELISM": "1",
            "REGISTRY_WORKER__IN_PROCESS": "false",
            "REGISTRY_BOOTSTRAP_ADMIN": f"{admin[0]}:{admin[1]}",
        }
    )
    env.update(extra or {})
    return env


class RegistryProcess:
    """One ``python -m central <args>`` process at a time, its output appended to ``log``."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.started: list[int] = []
        """Every pid this object started (for the leftover check)."""

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.name} {' '.join(self.args)}\n".encode())
            out.flush()
            # The child keeps its own copy of the descriptor.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "central", *self.args],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the process and everything in its session; wait for it (no zombie)."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def tail(self, chars: int = 4000) -> str:
        if not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    def wait_http(self, url: str, timeout: float = 120.0) -> None:
        """Wait until ``url`` answers 200 (the service is up and ready)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while starting:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready at {url} in {timeout} s:\n{self.tail()}")
            time.sleep(0.05)


def leftovers(pids: list[int]) -> list[str]:
    """``pgrep -s`` for each session started: what is still running, as "pid command"."""
    found: list[str] = []
    for sid in pids:
        result = subprocess.run(
            ["pgrep", "-a", "-s", str(sid)], capture_output=True, text=True, check=False
        )
        found.extend(line for line in result.stdout.splitlines() if line.strip())
    return found


class ProcessSet:
    """The processes of one test; on exit every one of them is SIGKILLed."""

    def __init__(self) -> None:
        self.members: list[RegistryProcess] = []

    def add(self, process: RegistryProcess) -> RegistryProcess:
        self.members.append(process)
        return process

    def pids(self) -> list[int]:
        return [pid for member in self.members for pid in member.started]

    def kill_all(self) -> None:
        for member in self.members:
            member.kill()

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_all()
