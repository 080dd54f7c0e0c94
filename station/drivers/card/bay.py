"""A simulated card bay: a private pcscd with a vpcd reader, and our eMRTD emulator on it.

Used by the demo, the benchmarks and the tests: the station's real encoder code talks to
the real pcscd, which talks to our card emulator through vpcd, exactly as on a desk with a
reader. On a station in the field the system pcscd and a real reader replace all of this.

pcscd 1.9.9 hard-codes its socket and pid file under /run/pcscd (only the *client*
library honours PCSCLITE_CSOCK_NAME), so a second pcscd cannot run beside the system one
or beside another run's. Ours runs in a private mount namespace (``unshare -m``, root
only) with a temporary directory bound over /run/pcscd: its socket then lies in that
directory, and this process points pyscard at it with PCSCLITE_CSOCK_NAME. The vpcd
reader listens on a free port pair (vpcd opens one port per slot, two slots).

pcsc-lite's client caches the socket path at the first PC/SC call of a process, so one
pcscd serves a whole process: enter :func:`private_pcscd` before any PC/SC call::

    with private_pcscd(run_dir / "pcscd") as daemon:
        bay = CardBay(daemon, run_dir)
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from station.drivers.card.emulator import CardEmulator, Faults
from station.drivers.card.encoder import CardEncoder, EncoderSettings

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")


def _port_listening(port: int) -> bool:
    """True when something LISTENs on ``port`` (read from /proc: connecting to vpcd would
    count as inserting a card)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


# Run by ``unshare --mount sh -c``: $1 the directory to bind over /run/pcscd, $2 the
# reader configuration. pcscd runs in the background and the shell waits for it, so the
# shell's exit says pcscd ended. A watcher reads the shell's stdin, a pipe whose write end
# only the starting process holds: end of file comes when that process closes it (stop())
# or ends in any way, SIGKILL included, and the watcher then sends SIGTERM to the whole
# process group (the session start_new_session gave it). The shell ignores SIGTERM (set
# after pcscd started, so pcscd does not inherit it) and reaps pcscd before it exits: no
# orphan is left for init. A background job's stdin is /dev/null in a non-interactive
# shell, hence the pipe moves to fd 3.
_SCRIPT = """
mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd || exit 1
exec 3<&0 </dev/null
pcscd --foreground --config "$2" 3<&- &
pcscd=$!
trap '' TERM
(cat <&3 >/dev/null; kill -TERM 0) &
exec 3<&-
wait "$pcscd"
"""


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


class PcscDaemon:
    """A private pcscd with one vpcd reader driver (slots on ``port`` and ``port + 1``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_dir = workdir / "run"
        self.conf_dir = workdir / "reader.conf.d"
        self.log_path = workdir / "pcscd.log"
        self.socket_path = self.run_dir / "pcscd.comm"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None  # write end of the watcher's pipe

    @property
    def running(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    def reader_name(self, slot: int = 0) -> str:
        return f"Virtual PCD 00 {slot:02d}"

    def slot_port(self, slot: int = 0) -> int:
        return self.port + slot

    def start(self, timeout: float = 15.0) -> None:
        """Start pcscd and wait until its socket and both vpcd ports are up.

        From any thread: pcscd lives until :meth:`stop`, the interpreter's exit (an
        atexit hook), or the end of this process however it ends (SIGKILL included).
        """
        if self._process is not None:
            raise RuntimeError("this pcscd is already started")
        for _attempt in range(3):
            self.port = _free_port_pair()
            if self._try_start(timeout):
                atexit.register(self.stop)
                return
        raise RuntimeError(f"pcscd did not start; see {self.log_path}")

    def _try_start(self, timeout: float) -> bool:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "vpcd").write_text(
            f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{self.port}\n'
            f"LIBPATH {VPCD_DRIVER}\nCHANNELID {self.port}\n"
        )
        # Not prctl(PR_SET_PDEATHSIG): it fires when the THREAD that started the child
        # exits (prctl(2)), so a pcscd started from a worker thread died with it.
        lifeline_in, lifeline = os.pipe()
        try:
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    [
                        *("unshare", "--mount", "sh", "-c", _SCRIPT, "pcscd"),
                        *(str(self.run_dir), str(self.conf_dir)),
                    ],
                    stdin=lifeline_in,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except BaseException:
            os.close(lifeline)
            raise
        finally:
            os.close(lifeline_in)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if self.socket_path.exists() and all(
                _port_listening(self.slot_port(s)) for s in (0, 1)
            ):
                self._process = process
                self._lifeline = lifeline
                return True
            time.sleep(0.02)
        _end(process, lifeline, 5.0)
        return False

    def stop(self) -> None:
        """Stop pcscd and wait for it (idempotent)."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        lifeline, self._lifeline = self._lifeline, None
        if process is not None and lifeline is not None:
            _end(process, lifeline, 10.0)


def _end(process: subprocess.Popen[bytes], lifeline: int, timeout: float) -> None:
    """Close the lifeline (the watcher then stops the group) and reap the shell; kill the
    group if that takes longer than ``timeout`` seconds."""
    os.close(lifeline)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def pcscd_unavailable() -> str | None:
    """Why this machine cannot run the PC/SC tests, or None."""
    if shutil.which("pcscd") is None or not VPCD_DRIVER.exists():
        return "pcscd or the vpcd driver is not installed (apt install pcscd vsmartcard-vpcd)"
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "a private pcscd needs root and unshare (pcscd 1.9 hard-codes /run/pcscd)"
    return None


class CardBay:
    """One slot of a private pcscd's vpcd reader: emulated cards and encoders on it."""

    def __init__(self, daemon: PcscDaemon, workdir: Path, slot: int = 0) -> None:
        self.daemon = daemon
        self.workdir = workdir
        self.slot = slot
        self.reader = daemon.reader_name(slot)
        self._cards: list[CardEmulator] = []
        self._encoders: list[CardEncoder] = []

    def card(
        self, name: str = "card", card_type: str = "emrtd", faults: Faults | None = None
    ) -> CardEmulator:
        """An emulated card whose state lives in ``<tmp>/<name>.json`` (not inserted yet)."""
        card = CardEmulator(
            self.daemon.slot_port(self.slot), self.workdir / f"{name}.json", card_type, faults
        )
        self._cards.append(card)
        return card

    def encoder(self, **settings: object) -> CardEncoder:
        merged: dict[str, object] = {"reader_pattern": f"^{self.reader}$", "card_timeout_s": 5}
        merged.update(settings)
        encoder = CardEncoder(EncoderSettings.model_validate(merged))
        self._encoders.append(encoder)
        return encoder

    def close(self) -> None:
        """Remove every card and wait until pcscd has seen the reader empty, so the next
        test does not meet the last card's ghost (vpcd notices removal on its next poll)."""
        cards, self._cards = self._cards, []
        for card in cards:
            card.remove()
        encoders, self._encoders = self._encoders, []
        try:
            if cards:
                watcher = encoders[0] if encoders else self.encoder()
                encoders.extend(self._encoders)
                self._encoders = []
                watcher.link.disconnect(reset=False)
                watcher.link.wait_for(False, 5.0)
        finally:
            for encoder in encoders:
                encoder.close()


def use_pcscd(daemon: PcscDaemon) -> None:
    """Point this process's PC/SC client at ``daemon`` (before its first PC/SC call)."""
    previous = os.environ.get("PCSCLITE_CSOCK_NAME")
    if previous and previous != str(daemon.socket_path):
        raise RuntimeError("this process already talks to another pcscd")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(daemon.socket_path)


@contextlib.contextmanager
def private_pcscd(workdir: Path | None = None, timeout: float = 15.0) -> Iterator[PcscDaemon]:
    """Start a private pcscd, point this process's PC/SC client at it, and stop it on the
    way out whatever happens (``PCSCLITE_CSOCK_NAME`` is put back as it was).

    ``workdir`` holds its socket, configuration and log; without one, a temporary
    directory removed afterwards. RuntimeError when pcscd does not start or this process
    already talks to another pcscd (nothing is left running then either).
    """
    path = Path(tempfile.mkdtemp(prefix="pcscd-")) if workdir is None else workdir
    daemon = PcscDaemon(path)
    previous = os.environ.get("PCSCLITE_CSOCK_NAME")
    try:
        daemon.start(timeout)
        use_pcscd(daemon)
        yield daemon
    finally:
        daemon.stop()
        if previous is None:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
        else:
            os.environ["PCSCLITE_CSOCK_NAME"] = previous
        if workdir is None:
            shutil.rmtree(path, ignore_errors=True)
