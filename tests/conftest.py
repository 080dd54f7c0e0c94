"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pkcs11
import pytest

# The PostgreSQL fixtures (postgres_url, postgres_db) and the kiosk's browser world (kiosk,
# browser: one per test session, whichever UI test files run) for every test module.
pytest_plugins = ["tests.pgkit", "tests.dbkit", "tests.uikit"]

# --- Slow suites: run in CI only when RUN_SLOW=1 (make test-all) -------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow suite: set RUN_SLOW=1 (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --- Keys: SoftHSM2 token and swtpm (markers hsm / tpm) ----------------------------------

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class SoftHsmToken(NamedTuple):
    """An initialised SoftHSM2 token: what a Pkcs11Signer needs to find and log in to it."""

    module_path: str
    label: str
    pin: str
    so_pin: str
    conf: Path


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    """A fresh SoftHSM2 token in a private token directory, for the whole test session.

    Session scope because SoftHSM2 reads SOFTHSM2_CONF and scans its token directory once,
    at C_Initialize, and python-pkcs11 initialises a module once per process: a token made
    later (or under another SOFTHSM2_CONF) is invisible to this process until the module is
    re-initialised, which would break every open session. Tests share the token, so each
    should use its own key labels.
    """
    util = shutil.which("softhsm2-util")
    if util is None or not os.path.exists(SOFTHSM_MODULE):
        pytest.skip("SoftHSM2 is not installed (apt install softhsm2)")
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    token = SoftHsmToken(SOFTHSM_MODULE, "enrollment-test", "123456", "65432109", conf)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        subprocess.run(
            [
                util,
                "--init-token",
                "--free",
                "--label",
                token.label,
                "--pin",
                token.pin,
                "--so-pin",
                token.so_pin,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        # If something in this process initialised SoftHSM2 already, it did so with another
        # (or no) configuration: re-initialise so that the module reads ours.
        pkcs11.lib(os.path.realpath(SOFTHSM_MODULE)).reinitialize()
        yield token
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def _free_port_pair() -> int:
    """A loopback port P such that P and P + 1 are free now (swtpm wants both)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no two consecutive free loopback ports")


class Swtpm:
    """A swtpm process on loopback; stop and start it again on the same state directory."""

    def __init__(self, binary: str, state_dir: Path) -> None:
        self.binary = binary
        self.state_dir = state_dir
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        state_dir.mkdir(parents=True, exist_ok=True)

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-pytss (ESAPI) to reach this TPM."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start swtpm and wait until its command port accepts connections.

        Keeps the port across restarts (so ``tcti`` stays valid); picks a new pair only
        the first time, and again if another process took it meanwhile.
        """
        if self._process is not None:
            raise RuntimeError("swtpm is already running")
        for attempt in range(5):
            if self.port == 0 or attempt > 0:
                self.port = _free_port_pair()
            if self._try_start(timeout):
                return
        raise RuntimeError(f"swtpm did not start; see {self._log_path()}")

    def _log_path(self) -> Path:
        return self.state_dir.with_name(self.state_dir.name + ".log")

    def _try_start(self, timeout: float) -> bool:
        log = self._log_path().open("ab")
        try:
            process = subprocess.Popen(
                [
                    self.binary,
                    "socket",
                    "--tpm2",
                    "--server",
                    f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                    "--ctrl",
                    f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                    "--flags",
                    "not-need-init,startup-clear",
                    "--tpmstate",
                    f"dir={self.state_dir}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()  # the child keeps its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False  # most likely the port was taken between probing and binding
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self._process = process
                    return True
            except OSError:
                time.sleep(0.02)
        process.kill()
        process.wait()
        raise RuntimeError(f"swtpm did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Terminate swtpm (it saves its state on SIGTERM) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same state directory and port."""
        self.stop()
        self.start()


@pytest.fixture
def swtpm_factory(tmp_path: Path) -> Iterator[Callable[[], Swtpm]]:
    """Starts swtpm instances, each with a fresh state directory; all stopped at teardown."""
    binary = shutil.which("swtpm")
    if binary is None:
        pytest.skip("swtpm is not installed (apt install swtpm swtpm-tools)")
    started: list[Swtpm] = []

    def start() -> Swtpm:
        tpm = Swtpm(binary, tmp_path / f"swtpm{len(started)}")
        started.append(tpm)
        tpm.start()
        return tpm

    try:
        yield start
    finally:
        for tpm in started:
            tpm.stop()


@pytest.fixture
def swtpm(swtpm_factory: Callable[[], Swtpm]) -> Swtpm:
    """A running swtpm with a fresh TPM (``.tcti``, ``.state_dir``, ``.restart()``)."""
    return swtpm_factory()
