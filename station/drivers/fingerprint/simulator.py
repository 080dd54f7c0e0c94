"""A ZFM/R30x fingerprint scanner emulator on a pty, with the ten-print vendor extensions.

Run it as a process (``python -m station.drivers.fingerprint.simulator --link PATH``) or a
thread (:class:`ScannerSimulator`). It opens a pseudo-terminal, symlinks ``PATH`` to the
slave side and answers on the master side exactly as a scanner on a USB-serial cable
would: the real driver (and pyfingerprint) open ``PATH`` and cannot tell the difference.
Output is paced at the link's byte rate (UART baud / 10, or ~1 MB/s for USB CDC-ACM).

What the "person" does is a script of presentations: which finger arrives on the platen
next, and what goes wrong with it (see :data:`.sim_fingers.FAULTS`). A control socket
(JSON lines) queues presentations and line faults while it runs; see
docs/protocols/fingerprint.md for the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import queue
import select
import signal
import socket
import struct
import sys
import threading
import time
import tty
import zlib
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from station.drivers.fingerprint import protocol as p
from station.drivers.fingerprint.band import sent_pixels
from station.drivers.fingerprint.frames import PLATEN_HEIGHT, PLATEN_WIDTH, RollFrame
from station.drivers.fingerprint.pixels import pack4
from station.drivers.fingerprint.sim_fingers import (
    FAULTS,
    base_image,
    flat_image,
    roll_sequence,
    trimmed_roll_sequence,
)

CDC_RATE = 1_000_000
"""Bytes per second a full-speed USB CDC-ACM link carries in practice (~8 Mbit/s)."""
ARRIVE_S = 0.15
"""How long after the host starts asking a (normal) finger lands on the platen."""
NO_FINGER_S = 1.0
"""Default length of a no_finger presentation (nobody puts a finger down)."""
REPLUG_S = 1.0
"""Default time an unplugged scanner stays away before it enumerates again."""
STALL_S = 5.0
"""Give up a transfer when the host has not read for this long."""
FLAT_SIZE = (400, 500)


class Presentation:
    """One finger put on the platen (or not), and its fault."""

    def __init__(self, person: int, finger: int, fault: str = "none", ms: int | None = None):
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        if not 1 <= finger <= 10:
            raise ValueError(f"finger must be 1-10, got {finger}")
        self.person = person
        self.finger = finger
        self.fault = fault
        self.ms = ms
        self.started: float | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any], default_person: int) -> Presentation:
        return cls(
            int(obj.get("person", default_person)),
            int(obj["finger"]),
            str(obj.get("fault", "none")),
            None if obj.get("ms") is None else int(obj["ms"]),
        )

    def as_json(self) -> dict[str, Any]:
        return {"person": self.person, "finger": self.finger, "fault": self.fault, "ms": self.ms}


class SimConfig:
    """Everything that makes one simulated scanner (all settable from the command line)."""

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
        password: int = 0,
        address: int = p.DEFAULT_ADDRESS,
        fps: float = 25.0,
        control: Path | None = None,
        script: Sequence[Presentation] | None = None,
        serial: str | None = None,
        model: str = "VN-TP500 R1",
        firmware: str = "2.4.1",
    ) -> None:
        if baud % 9600 or not 1 <= baud // 9600 <= 12:
            raise ValueError("baud must be a multiple of 9600 up to 115200")
        if packet_size not in p.BASE_PACKET_SIZES:
            raise ValueError(f"packet size must be one of {p.BASE_PACKET_SIZES}")
        if transport not in ("uart", "cdc"):
            raise ValueError("transport is uart or cdc")
        self.link = Path(link)
        self.seed = seed
        self.person = person
        self.baud = baud
        self.transport = transport
        self.pace = pace
        self.packet_size = packet_size
        self.stream_packet_size = stream_packet_size
        self.password = password
        self.address = address
        self.fps = fps
        self.control = control
        self.script = list(script) if script is not None else None
        self.serial = serial or f"SIM{seed:04d}{person:06d}"[:16]
        self.model = model
        self.firmware = firmware


class _Unplugged(Exception):  # noqa: N818 (internal control flow)
    """The transfer in progress was cut by an unplug (ours or the host's)."""


class _Cancelled(Exception):  # noqa: N818 (internal control flow)
    pass


def _crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def band_info(frame: RollFrame) -> p.BandInfo | None:
    """The wire form of a frame's band report (None for a whole window)."""
    report = frame.band
    if report is None:
        return None
    records: list[tuple[int, ...]] = [
        (int(a), int(b), int(c), int(d))
        for a, b, c, d in zip(
            report.left, report.right, report.sent_left, report.sent_right, strict=True
        )
    ]
    glass = min(255, max(1, report.glass)) if report.glass is not None else 0
    contrast16 = min(0xFFFF, round(report.contrast * 16))
    return p.BandInfo(glass, report.block, contrast16, records)


class ScannerSimulator:
    """The emulator. :meth:`start` runs it in a thread; :meth:`serve` in the caller's."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.address = config.address
        self.password = config.password
        self.verified = config.password == 0
        self.baud_multiple = config.baud // 9600
        self.packet_code = p.BASE_PACKET_SIZES.index(config.packet_size)
        self.stream_packet_size = config.stream_packet_size
        self.security = 3
        self.led = (p.LED_OFF, 0, 0, 0)
        self.decoder = p.PacketDecoder()
        self.served: list[dict[str, Any]] = []
        self._queue: deque[Presentation] = deque(config.script or self._default_script())
        self._image: tuple[Presentation, int] | None = None
        self._downloaded: bytes | None = None
        self._impressions: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self._actions: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._corrupt = 0
        self._corrupt_after = 0
        self._stop = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self._replug_at: float | None = None
        self._next_free = 0.0
        self._thread: threading.Thread | None = None
        self._control_thread: threading.Thread | None = None
        self._control_sock: socket.socket | None = None
        # A per-device white reference: its CRC goes into DeviceInfo as calibration data.
        white = np.random.default_rng(config.seed).integers(230, 256, PLATEN_WIDTH, np.uint8)
        self.calibration_crc = _crc32(white.tobytes())

    # --- script ------------------------------------------------------------------------

    def _default_script(self) -> list[Presentation]:
        return [Presentation(self.config.person, f) for f in range(1, 11)]

    def _current(self) -> Presentation:
        with self._lock:
            if not self._queue:
                self._queue.extend(self._default_script())
            return self._queue[0]

    def _consume(self, pres: Presentation) -> None:
        with self._lock:
            if self._queue and self._queue[0] is pres:
                self._queue.popleft()

    def _finger_on(self, now: float) -> Presentation | None:
        """The presentation on the platen now, or None while nobody has put a finger down."""
        while True:
            pres = self._current()
            if pres.started is None:
                pres.started = now
            if pres.fault == "no_finger":
                span = (pres.ms if pres.ms is not None else NO_FINGER_S * 1000) / 1000
                if now - pres.started >= span:
                    self._consume(pres)  # the person gave up; the next one steps up
                    continue
                return None
            return pres if now - pres.started >= ARRIVE_S else None

    def _impression_index(self, pres: Presentation) -> int:
        key = (pres.person, pres.finger)
        index = self._impressions.get(key, 0)
        self._impressions[key] = index + 1
        return index

    def _log(self, kind: str, pres: Presentation, index: int, image: bytes) -> None:
        self.served.append(
            {
                "kind": kind,
                "person": pres.person,
                "finger": pres.finger,
                "impression": index,
                "fault": pres.fault,
                "sha256": hashlib.sha256(image).hexdigest(),
            }
        )

    def _replace_front(self, pres: Presentation) -> None:
        """After an unplug the same finger is still there: present it again, fault-free."""
        again = Presentation(pres.person, pres.finger)
        with self._lock:
            if self._queue and self._queue[0] is pres:
                self._queue[0] = again
            else:
                self._queue.appendleft(again)

    # --- link --------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Bytes per second the link carries (0: unpaced)."""
        if not self.config.pace:
            return 0.0
        if self.config.transport == "cdc":
            return float(CDC_RATE)
        return self.baud_multiple * 9600 / 10

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        link = self.config.link
        tmp = link.with_name(link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, link)
        self._master, self._slave = master, slave
        self._replug_at = None
        self.decoder.reset()
        self.verified = self.password == 0

    def _unplug(self, replug_s: float | None) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.config.link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._replug_at = None if replug_s is None else time.monotonic() + replug_s

    def _write(self, data: bytes) -> None:
        rate = self.rate
        view = memoryview(data)
        step = max(64, int(rate / 200)) if rate else len(view)
        while view:
            if self._master is None:
                raise _Unplugged
            chunk = view[:step]
            if rate:
                now = time.monotonic()
                if self._next_free > now:
                    time.sleep(self._next_free - now)
                self._next_free = max(now, self._next_free) + len(chunk) / rate
            while chunk:
                _, ready, _ = select.select([], [self._master], [], STALL_S)
                if not ready:
                    raise _Unplugged  # nobody reads: the host is gone
                try:
                    n = os.write(self._master, chunk)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise _Unplugged from exc
                chunk = chunk[n:]
            view = view[step:]

    def _send(self, packet: bytes) -> None:
        if self._corrupt_after:
            self._corrupt_after -= 1
        elif self._corrupt:
            self._corrupt -= 1
            packet = packet[:-1] + bytes((packet[-1] ^ 0x5A,))
        self._write(packet)

    def _ack(self, code: int, data: bytes = b"") -> None:
        self._send(p.ack(code, data, self.address))

    def _read_packets(self, timeout: float) -> list[p.Packet]:
        if self._master is None:
            time.sleep(min(timeout, 0.02))
            return []
        ready, _, _ = select.select([self._master], [], [], timeout)
        if ready:
            try:
                data = os.read(self._master, 65536)
            except BlockingIOError:
                data = b""
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return []  # no slave open right now
                raise
            self.decoder.feed(data)
        return [e for e in self.decoder.events() if isinstance(e, p.Packet)]

    # --- main loop ---------------------------------------------------------------------

    def start(self) -> ScannerSimulator:
        """Plug in and serve on a daemon thread (returns once the link exists)."""
        self._plug()
        self._start_control()
        self._thread = threading.Thread(target=self._loop, name="fp-sim", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the serving loop to end (safe from signal handlers and other threads)."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._control_sock is not None:
            with contextlib.suppress(OSError):
                self._control_sock.close()
            if self.config.control is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.config.control.unlink()
        self._unplug(None)

    def serve(self) -> None:
        """Plug in and serve in this thread until :meth:`stop` (or SIGTERM in a process)."""
        self._plug()
        self._start_control()
        try:
            self._loop()
        finally:
            self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._run_actions()
            if self._master is None:
                if self._replug_at is not None and time.monotonic() >= self._replug_at:
                    self._plug()
                else:
                    time.sleep(0.02)
                continue
            try:
                for packet in self._read_packets(0.05):
                    self._dispatch(packet)
            except _Unplugged:
                continue

    def _run_actions(self) -> None:
        while True:
            try:
                name, arg = self._actions.get_nowait()
            except queue.Empty:
                return
            if name == "noise" and self._master is not None:
                with contextlib.suppress(_Unplugged):
                    self._write(arg)
            elif name == "unplug" and self._master is not None:
                self._unplug(arg)

    # --- commands ----------------------------------------------------------------------

    def _dispatch(self, packet: p.Packet) -> None:
        if packet.pid != p.PID_COMMAND or packet.address != self.address:
            return  # modules ignore what is not a command addressed to them
        try:
            instruction, params = p.parse_command(packet.payload)
        except ValueError:
            self._ack(p.ERR_PACKET)
            return
        if instruction == p.CMD_VFY_PWD:
            ok = len(params) == 4 and struct.unpack(">I", params)[0] == self.password
            self.verified = ok
            self._ack(p.OK if ok else p.ERR_WRONG_PASSWORD)
            return
        if not self.verified:
            self._ack(p.ERR_MUST_VERIFY)
            return
        handler = self._handlers().get(instruction)
        if handler is None:
            self._ack(p.ERR_PACKET)  # what R30x modules answer to unknown instructions
            return
        handler(params)

    def _handlers(self) -> dict[int, Any]:
        return {
            p.CMD_SET_PWD: self._set_pwd,
            p.CMD_READ_SYS_PARA: self._read_sys_para,
            p.CMD_SET_SYS_PARA: self._set_sys_para,
            p.CMD_GEN_IMG: self._gen_img,
            p.CMD_UP_IMAGE: self._up_image,
            p.CMD_DOWN_IMAGE: self._down_image,
            p.CMD_TEMPLATE_NUM: lambda _: self._ack(p.OK, b"\x00\x00"),
            p.CMD_AURA_LED_CONFIG: self._aura,
            p.CMD_OPEN_LED: lambda _: self._led((p.LED_ON, 0, p.LED_WHITE, 0)),
            p.CMD_CLOSE_LED: lambda _: self._led((p.LED_OFF, 0, 0, 0)),
            p.CMD_DEVICE_INFO: self._device_info,
            p.CMD_SET_PACKET_SIZE: self._set_packet_size,
            p.CMD_CAPTURE_ROLL: self._capture_roll,
            p.CMD_CAPTURE_FLAT: self._capture_flat,
            p.CMD_CANCEL: lambda _: self._ack(p.OK, b"\x00"),
        }

    def _set_pwd(self, params: bytes) -> None:
        if len(params) != 4:
            self._ack(p.ERR_PACKET)
            return
        self.password = struct.unpack(">I", params)[0]
        self._ack(p.OK)

    def _read_sys_para(self, params: bytes) -> None:
        sysp = p.SystemParameters(
            0, 0x0009, 1000, self.security, self.address, self.packet_code, self.baud_multiple
        )
        self._ack(p.OK, sysp.encode())

    def _set_sys_para(self, params: bytes) -> None:
        if len(params) != 2:
            self._ack(p.ERR_PACKET)
            return
        number, value = params[0], params[1]
        if number == p.PARAM_BAUD and 1 <= value <= 12:
            self._ack(p.OK)  # at the old rate; the new one applies from the next byte
            self.baud_multiple = value
        elif number == p.PARAM_SECURITY and 1 <= value <= 5:
            self.security = value
            self._ack(p.OK)
        elif number == p.PARAM_PACKET_SIZE and 0 <= value <= 3:
            self.packet_code = value
            self._ack(p.OK)
        else:
            self._ack(p.ERR_BAD_REGISTER)

    def _led(self, state: tuple[int, int, int, int]) -> None:
        self.led = state
        self._ack(p.OK)

    def _aura(self, params: bytes) -> None:
        if len(params) != 4 or not 1 <= params[0] <= 6:
            self._ack(p.ERR_BAD_ARGUMENT)
            return
        self._led((params[0], params[1], params[2], params[3]))

    def _device_info(self, params: bytes) -> None:
        info = p.DeviceInfo(
            model=self.config.model,
            serial=self.config.serial,
            firmware=self.config.firmware,
            platen_width=PLATEN_WIDTH,
            platen_height=PLATEN_HEIGHT,
            resolution_ppi=500,
            flat_width=FLAT_SIZE[0],
            flat_height=FLAT_SIZE[1],
            max_packet_size=p.MAX_PACKET_SIZE,
            calibration_crc=self.calibration_crc,
            calibration_date="20260915",
        )
        self._ack(p.OK, info.encode())

    def _set_packet_size(self, params: bytes) -> None:
        size = struct.unpack(">H", params)[0] if len(params) == 2 else 0
        if not 32 <= size <= p.MAX_PACKET_SIZE:
            self._ack(p.ERR_BAD_ARGUMENT)
            return
        self._ack(p.OK)
        self.stream_packet_size = size

    def _gen_img(self, params: bytes) -> None:
        pres = self._finger_on(time.monotonic())
        if pres is None:
            self._ack(p.ERR_NO_FINGER)
            return
        # The finger stays on the glass until its image has been uploaded: a repeated
        # GenImg images the same finger again (a new impression).
        self._image = (pres, self._impression_index(pres))
        self._downloaded = None
        self._ack(p.OK)

    def _down_image(self, params: bytes) -> None:
        """DownImage: the host sends an image (4-bit, as UpImage's) into the buffer."""
        self._ack(p.OK)
        data = bytearray()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for packet in self._read_packets(0.05):
                if packet.pid in (p.PID_DATA, p.PID_END):
                    data.extend(packet.payload)
                    deadline = time.monotonic() + 2.0
                if packet.pid == p.PID_END:
                    if len(data) == p.BASE_IMAGE_WIDTH * p.BASE_IMAGE_HEIGHT // 2:
                        self._downloaded = bytes(data)
                    return
        # The host stopped sending: keep the old buffer, as a module does.

    def _up_image(self, params: bytes) -> None:
        if self._downloaded is not None:
            packed = self._downloaded
            self.served.append({"kind": "downloaded", "sha256": hashlib.sha256(packed).hexdigest()})
            self._ack(p.OK)
            for packet in p.data_packets(packed, 32 << self.packet_code, self.address):
                self._send(packet)
            return
        if self._image is None:
            self._ack(p.ERR_NO_VALID_IMAGE)
            return
        pres, index = self._image
        image = base_image(self.config.seed, pres.person, pres.finger, index, pres.fault)
        self._log("base", pres, index, image.tobytes())
        packed = pack4(image)
        packets = p.data_packets(packed, 32 << self.packet_code, self.address)
        self._ack(p.OK)
        for i, packet in enumerate(packets):
            if pres.fault == "unplug_mid_transfer" and i == len(packets) // 2:
                self._image = None  # a replugged module starts with an empty buffer
                self._replace_front(pres)
                self._unplug(self._replug_s(pres))
                raise _Unplugged
            self._send(packet)
        self._consume(pres)

    @staticmethod
    def _replug_s(pres: Presentation) -> float:
        return pres.ms / 1000 if pres.ms is not None else REPLUG_S

    def _cancel_requested(self) -> bool:
        """Between frames: did the host send Cancel? (Other commands wait: we are busy.)"""
        cancelled = False
        for packet in self._read_packets(0):
            if packet.pid == p.PID_COMMAND and packet.payload[:1] == bytes((p.CMD_CANCEL,)):
                self._ack(p.OK, b"\x01")
                cancelled = True
        return cancelled

    def _wait_finger(self, timeout_s: float) -> Presentation | None:
        """Wait for a finger (watching for Cancel); a no_finger person misses this capture."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            pres = self._finger_on(now)
            if pres is not None:
                return pres
            if now >= deadline:
                cur = self._current()
                if cur.fault == "no_finger":
                    self._consume(cur)
                return None
            if self._cancel_requested():
                raise _Cancelled
            time.sleep(min(0.02, max(0.0, deadline - now)))

    def _capture_roll(self, params: bytes) -> None:
        if len(params) != 6:
            self._ack(p.ERR_PACKET)
            return
        _hint, timeout_ms, flags = struct.unpack(">BIB", params)
        self._ack(p.OK)
        started = time.monotonic()
        sent = 0

        def end(status: int) -> None:
            duration = int((time.monotonic() - started) * 1000)
            self._send(p.end_packet(status, sent, duration, self.address))

        try:
            pres = self._wait_finger(timeout_ms / 1000)
            if pres is None:
                end(p.ERR_NO_FINGER)
                return
            index = self._impression_index(pres)
            trim = bool(flags & p.FLAG_TRIM)
            sequence = trimmed_roll_sequence if trim else roll_sequence
            frames = sequence(
                self.config.seed, pres.person, pres.finger, pres.fault, self.config.fps
            )
            # Trimming a frame needs the next frame's band: it leaves one exposure later.
            delay_ms = 1000.0 / self.config.fps if trim else 0.0
            t0 = time.monotonic()
            bits = 4 if flags & p.FLAG_PACK4 else 8
            for i, frame in enumerate(frames):
                if self._cancel_requested():
                    raise _Cancelled
                if pres.fault == "unplug_mid_transfer" and i == len(frames) // 2:
                    self._replace_front(pres)
                    self._unplug(self._replug_s(pres))
                    raise _Unplugged
                # The camera makes frames at its own rate; a slow link only delays them.
                due = t0 + (frame.t_ms + delay_ms) / 1000
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                run = sent_pixels(frame)
                data = pack4(run) if bits == 4 else run.tobytes()
                for packet in p.frame_packets(
                    frame.index,
                    frame.t_ms,
                    frame.x,
                    frame.y,
                    frame.width,
                    frame.height,
                    data,
                    self.stream_packet_size,
                    bits,
                    self.address,
                    band_info(frame),
                ):
                    self._send(packet)
                sent += 1
            self._consume(pres)
            self.served.append(
                {
                    "kind": "roll",
                    "person": pres.person,
                    "finger": pres.finger,
                    "impression": index,
                    "fault": pres.fault,
                    "frames": sent,
                }
            )
            end(p.OK)
        except _Cancelled:
            end(p.ERR_CANCELLED)

    def _capture_flat(self, params: bytes) -> None:
        if len(params) != 6:
            self._ack(p.ERR_PACKET)
            return
        _hint, timeout_ms, flags = struct.unpack(">BIB", params)
        started = time.monotonic()
        try:
            pres = self._wait_finger(timeout_ms / 1000)
        except _Cancelled:
            self._ack(p.ERR_CANCELLED)
            return
        if pres is None:
            self._ack(p.ERR_NO_FINGER)
            return
        index = self._impression_index(pres)
        image = flat_image(self.config.seed, pres.person, pres.finger, index, pres.fault)
        raw = image.tobytes()
        self._log("flat", pres, index, raw)
        bits = 4 if flags & p.FLAG_PACK4 else 8
        data = pack4(image) if bits == 4 else raw
        h, w = image.shape
        self._ack(p.OK)
        packets = p.frame_packets(
            0, 0, 0, 0, w, h, data, self.stream_packet_size, bits, self.address
        )
        for i, packet in enumerate(packets):
            if pres.fault == "unplug_mid_transfer" and i == len(packets) // 2:
                self._replace_front(pres)
                self._unplug(self._replug_s(pres))
                raise _Unplugged
            self._send(packet)
        self._consume(pres)
        duration = int((time.monotonic() - started) * 1000)
        self._send(p.end_packet(p.OK, 1, duration, self.address))

    # --- control socket ----------------------------------------------------------------

    def _start_control(self) -> None:
        path = self.config.control
        if path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(4)
        sock.settimeout(0.2)
        self._control_sock = sock
        self._control_thread = threading.Thread(
            target=self._control_loop, args=(sock,), name="fp-sim-control", daemon=True
        )
        self._control_thread.start()

    def _control_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._control_conn, args=(conn,), daemon=True).start()

    def _control_conn(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                try:
                    reply = self.control(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()

    def control(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Apply one control command (the socket's JSON objects); returns the reply."""
        name = cmd.get("cmd")
        if name == "ping":
            return {"ok": True}
        if name == "present":
            pres = Presentation.from_json(cmd, self.config.person)
            with self._lock:
                if cmd.get("at", "next") == "end":
                    self._queue.append(pres)
                else:
                    # Ahead of the queue, but after a finger that is already arriving.
                    head = self._queue[0] if self._queue else None
                    if head is not None and head.started is not None:
                        self._queue.insert(1, pres)
                    else:
                        self._queue.appendleft(pres)
            return {"ok": True}
        if name == "clear":
            with self._lock:
                self._queue.clear()
            return {"ok": True}
        if name == "corrupt":
            # Damage the checksum of `count` packets, after letting `after` pass intact.
            self._corrupt_after = int(cmd.get("after", 0))
            self._corrupt = int(cmd.get("count", 1))
            return {"ok": True}
        if name == "reset":
            with self._lock:
                self._queue.clear()
            self._corrupt = self._corrupt_after = 0
            self._image = None
            self._downloaded = None
            return {"ok": True}
        if name == "noise":
            self._actions.put(("noise", bytes.fromhex(cmd["hex"])))
            return {"ok": True}
        if name == "unplug":
            self._actions.put(("unplug", float(cmd.get("ms", REPLUG_S * 1000)) / 1000))
            return {"ok": True}
        if name == "served":
            return {"ok": True, "served": list(self.served)}
        if name == "state":
            with self._lock:
                q = [x.as_json() for x in self._queue]
            return {
                "ok": True,
                "queue": q,
                "led": list(self.led),
                "baud": self.baud_multiple * 9600,
                "packet_size": 32 << self.packet_code,
                "stream_packet_size": self.stream_packet_size,
                "plugged": self._master is not None,
            }
        raise ValueError(f"unknown control command {name!r}")


def load_script(path: Path, person: int) -> list[Presentation]:
    """A script file: a JSON list of presentations, or one JSON object per line."""
    text = path.read_text()
    items = (
        json.loads(text)
        if text.lstrip().startswith("[")
        else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    return [Presentation.from_json(item, person) for item in items]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--link", type=Path, required=True, help="symlink to create to the pty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--person", type=int, default=0)
    parser.add_argument("--baud", type=int, default=57600, help="UART rate (x 9600)")
    parser.add_argument("--transport", choices=("uart", "cdc"), default="uart")
    parser.add_argument("--no-pace", action="store_true", help="send as fast as the pty takes")
    parser.add_argument("--packet-size", type=int, default=128, help="base data packets")
    parser.add_argument("--stream-packet-size", type=int, default=256, help="vendor streams")
    parser.add_argument("--password", type=lambda s: int(s, 0), default=0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--script", type=Path, help="presentations (JSON)")
    parser.add_argument("--control", type=Path, help="Unix socket for control commands")
    parser.add_argument(
        "--parent-pid", type=int, help="stop when this process is gone (the one that started us)"
    )
    args = parser.parse_args(argv)
    config = SimConfig(
        args.link,
        seed=args.seed,
        person=args.person,
        baud=args.baud,
        transport=args.transport,
        pace=not args.no_pace,
        packet_size=args.packet_size,
        stream_packet_size=args.stream_packet_size,
        password=args.password,
        fps=args.fps,
        control=args.control,
        script=load_script(args.script, args.person) if args.script else None,
    )
    sim = ScannerSimulator(config)
    signal.signal(signal.SIGTERM, lambda *_: sim.request_stop())
    signal.signal(signal.SIGINT, lambda *_: sim.request_stop())
    if args.parent_pid:
        _stop_when_orphaned(args.parent_pid, sim)
    print(f"fingerprint scanner on {config.link}", file=sys.stderr, flush=True)
    sim.serve()
    return 0


def _stop_when_orphaned(parent: int, sim: ScannerSimulator) -> None:
    """A test run or station killed with SIGKILL cannot stop its simulator: notice that
    our parent is gone (we are re-parented) and stop, so no stray pty server lingers."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        sim.request_stop()

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
