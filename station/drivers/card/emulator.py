"""Our eMRTD card emulator behind pcscd: a vpcd client that plays a contactless card.

Insertion is a TCP connection to vpcd (the reader driver inside pcscd); removal is the
disconnection. The card's persistent state (files, life cycle, keys, BAC failure count,
its CPLC identity) lives in a JSON file, saved at insertion and after every command that
changes it, so a card keeps its data and its serial across removal, reinsertion and
processes, as a chip's EEPROM does.

Run one from the command line::

    python -m station.drivers.card.emulator --vpcd-port 35963 --state card.json \\
        [--card-type emrtd|wrong] [--fault pull_after_writes=N]

or from Python with :class:`CardEmulator` (``insert()``, ``remove()``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from .applet import Card, EmrtdApplet, ForeignApplet
from .hostcrypto import HostCrypto
from .vpcd import CardSlot, Deframer, VpcdError, frame

log = logging.getLogger(__name__)

CARD_TYPES = ("emrtd", "wrong")
STATE_FORMAT = 1


class Faults:
    """Faults a real encoder meets, injected by the emulator.

    ``pull_after_writes``: the card is pulled from the field right after its N-th
    state-changing command (CREATE FILE, UPDATE BINARY, DELETE FILE, PUT DATA, ACTIVATE
    FILE) of this insertion: the change is kept, the response is never sent.
    """

    def __init__(self, pull_after_writes: int | None = None) -> None:
        self.pull_after_writes = pull_after_writes

    @staticmethod
    def parse(specs: list[str]) -> Faults:
        faults = Faults()
        for spec in specs:
            name, _, value = spec.partition("=")
            if name != "pull_after_writes" or not value.isdigit() or int(value) < 1:
                raise ValueError(f"unknown fault {spec!r}; try pull_after_writes=N (N >= 1)")
            faults.pull_after_writes = int(value)
        return faults


def _encode_state(card_type: str, state: dict[str, object]) -> dict[str, object]:
    def enc(value: object) -> object:
        if isinstance(value, bytes):
            return {"b64": base64.b64encode(value).decode()}
        if isinstance(value, dict):
            return {str(k): enc(v) for k, v in value.items()}
        return value

    return {"format": STATE_FORMAT, "card_type": card_type, "state": enc(state)}


def _decode_state(doc: dict[str, object]) -> dict[str, object]:
    def dec(value: object) -> object:
        if isinstance(value, dict):
            if set(value) == {"b64"}:
                return base64.b64decode(str(value["b64"]))
            return {(int(k) if k.isdigit() else k): dec(v) for k, v in value.items()}
        return value

    state = dec(doc["state"])
    if not isinstance(state, dict):
        raise ValueError("malformed card state file")
    return state


class CardEmulator:
    """One emulated card for one vpcd slot; ``insert()`` and ``remove()`` it at will."""

    def __init__(
        self,
        vpcd_port: int,
        state_path: Path,
        card_type: str = "emrtd",
        faults: Faults | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if card_type not in CARD_TYPES:
            raise ValueError(f"card type must be one of {CARD_TYPES}, not {card_type!r}")
        self.vpcd_port = vpcd_port
        self.state_path = Path(state_path)
        self.card_type = card_type
        self.faults = faults or Faults()
        self.host = host
        self.pulled = threading.Event()
        """Set when a fault pulled the card (the link was dropped mid-command)."""
        self.apdus = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- state file ---------------------------------------------------------------------

    def load_card(self) -> Card:
        card: Card = EmrtdApplet(HostCrypto()) if self.card_type == "emrtd" else ForeignApplet()
        if self.state_path.exists():
            doc = json.loads(self.state_path.read_text())
            if doc.get("format") != STATE_FORMAT or doc.get("card_type") != self.card_type:
                raise ValueError(f"{self.state_path} holds another kind of card")
            card.restore(_decode_state(doc))
        return card

    def _save(self, card: Card) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(_encode_state(self.card_type, card.export())))
        os.replace(tmp, self.state_path)  # atomic: a crash leaves the old or the new state

    # --- insertion and removal ----------------------------------------------------------

    @property
    def inserted(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def insert(self, timeout: float = 5.0) -> None:
        """Connect to vpcd (retrying while pcscd starts) and serve the card in a thread."""
        if self.inserted:
            raise RuntimeError("the card is already inserted")
        card = self.load_card()
        # Saved at once: a blank card's identity (its CPLC serial) is fixed from its first
        # insertion on, as a chip's is at manufacture, whether or not it is ever written.
        self._save(card)
        sock = self._connect(timeout)
        self.pulled.clear()
        self._sock = sock
        self._thread = threading.Thread(
            target=self._serve, args=(sock, card), name="card-emulator", daemon=True
        )
        self._thread.start()

    def remove(self, timeout: float = 5.0) -> None:
        """Take the card out of the field: close the link and wait for the server thread."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by a fault
                sock.shutdown(socket.SHUT_RDWR)
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError("card emulator thread did not stop")
        self._thread = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the link ends (removal, fault, vpcd gone); False on timeout."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.vpcd_port), timeout=1.0)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"vpcd is not listening on {self.host}:{self.vpcd_port} "
                        "(is pcscd running with the vpcd driver?)"
                    ) from exc
                time.sleep(0.05)
        sock.settimeout(None)
        # Without these every APDU waits ~40 ms for a delayed ACK (STACK.md).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _serve(self, sock: socket.socket, card: Card) -> None:
        slot = CardSlot(card)
        deframer = Deframer()
        limit = self.faults.pull_after_writes
        try:
            while True:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for payload in deframer.feed(data):
                    before = card.writes
                    try:
                        reply = slot.handle(payload)
                    except VpcdError as exc:  # a control byte we do not know: skip it
                        log.warning("vpcd sent %s: %s; ignored", payload.hex(), exc)
                        continue
                    self.apdus = slot.apdus
                    if card.writes != before:
                        self._save(card)
                    if limit is not None and card.writes >= limit:
                        self.pulled.set()
                        return  # pulled mid-command: the change is kept, no answer
                    if reply is not None:
                        sock.sendall(frame(reply))
        finally:
            with self._lock:
                if self._sock is sock:
                    self._sock = None
            sock.close()

    def __enter__(self) -> CardEmulator:
        self.insert()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m station.drivers.card.emulator",
        description="An eMRTD card behind pcscd's vpcd reader; Ctrl-C removes it.",
    )
    parser.add_argument("--vpcd-port", type=int, default=0x8C7B, help="vpcd slot port")
    parser.add_argument("--vpcd-host", default="127.0.0.1")
    parser.add_argument("--state", type=Path, required=True, help="card state file (JSON)")
    parser.add_argument("--card-type", choices=CARD_TYPES, default="emrtd")
    parser.add_argument("--fault", action="append", default=[], help="pull_after_writes=N")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        faults = Faults.parse(args.fault)
    except ValueError as exc:
        parser.error(str(exc))
    emulator = CardEmulator(args.vpcd_port, args.state, args.card_type, faults, args.vpcd_host)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emulator.insert(args.connect_timeout)
    print(f"card inserted on {args.vpcd_host}:{args.vpcd_port}", flush=True)
    while not stop.is_set() and emulator.inserted:
        stop.wait(0.1)
    emulator.remove()
    if emulator.pulled.is_set():
        print(f"card pulled after {faults.pull_after_writes} writes (fault)", flush=True)
        return 3
    print("card removed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
