"""The fingerprint scanner driver: ZFM/R30x packets over a serial port (pyserial).

>>> with FingerprintScanner("/dev/ttyACM0", board=board) as scanner:
...     info = scanner.device_info()
...     capture = scanner.capture_roll(finger_hint=2, timeout=15.0)

The protocol lives in :mod:`.protocol` (sans-I/O); this module adds the port, the clock
and the recovery policy: every read has a deadline; a corrupted reply to an idempotent
command is retried after the line settles; an unplugged scanner raises
:class:`ScannerDisconnected` and :meth:`FingerprintScanner.reconnect` waits for it to come
back. The driver owns a :class:`HealthCell` and keeps it current.
"""

from __future__ import annotations

import contextlib
import os
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import serial
from numpy.typing import NDArray

from station.drivers.fingerprint import protocol as p
from station.drivers.fingerprint.band import place_sent
from station.drivers.fingerprint.errors import (
    CaptureCancelled,
    DeviceRejected,
    NoFinger,
    ProtocolFault,
    ScannerDisconnected,
    ScannerError,
    ScannerNotFound,
    ScannerTimeout,
    WrongPassword,
)
from station.drivers.fingerprint.frames import BandReport, RollFrame
from station.drivers.fingerprint.pixels import pack4 as pack_pixels
from station.drivers.fingerprint.pixels import unpack4
from station.drivers.fingerprint.rolled import RollComposer, RolledCapture
from station.drivers.health import DeviceHealthBoard, DeviceKind, HealthCell

LED_MODES = {
    "breathing": p.LED_BREATHING,
    "flashing": p.LED_FLASHING,
    "on": p.LED_ON,
    "off": p.LED_OFF,
    "gradual_on": p.LED_GRADUAL_ON,
    "gradual_off": p.LED_GRADUAL_OFF,
}
LED_COLOURS = {
    "red": p.LED_RED,
    "blue": p.LED_BLUE,
    "purple": p.LED_PURPLE,
    "green": p.LED_GREEN,
    "yellow": p.LED_YELLOW,
    "cyan": p.LED_CYAN,
    "white": p.LED_WHITE,
}
POLL_S = 0.05
"""Longest single blocking read: bounds how late a cancel or a deadline is noticed."""
IDLE_S = 0.2
"""A partial packet with no new byte for this long was cut short (resync past it)."""
GEN_IMG_INTERVAL_S = 0.05
LINE_ERRORS = (serial.SerialException, OSError, termios.error)
"""What a vanished port raises (pyserial wraps some; termios.error is not an OSError)."""


@dataclass(frozen=True, slots=True)
class TransferStats:
    """The last image transfer: what crossed the link and how long it took."""

    command: str
    bytes: int
    packets: int
    seconds: float
    frames: int = 0
    dropped_frames: int = 0
    wait_seconds: float = 0.0
    """From the command to the first image packet (the finger's arrival, for a capture);
    not part of ``seconds``."""

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


class _Corrupt(Exception):  # noqa: N818 (internal signal, never escapes)
    """A damaged packet was seen while a reply was awaited."""


class FingerprintScanner:
    """One scanner on one serial port. Not thread-safe, except :meth:`cancel`."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 57600,
        address: int = p.DEFAULT_ADDRESS,
        password: int = 0,
        timeout: float = 2.0,
        retries: int = 2,
        stream_packet_size: int | None = None,
        name: str = "fingerprint",
        board: DeviceHealthBoard | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.address = address
        self.password = password
        self.timeout = timeout
        """Longest wait for a reply, or between two packets of a transfer (seconds)."""
        self.retries = retries
        self.stream_packet_size = stream_packet_size
        self.health = HealthCell(name, DeviceKind.FINGERPRINT, "zfm-serial")
        if board is not None:
            board.register(self.health)
        self.info: p.DeviceInfo | None = None
        self.last_transfer: TransferStats | None = None
        self.corrupt_packets = 0
        """Damaged packets seen since this object was made (line quality, for telemetry)."""
        self._serial: serial.Serial | None = None
        self._decoder = p.PacketDecoder()
        self._cancel = threading.Event()
        self._last_byte = 0.0

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> FingerprintScanner:
        """Open the port, verify the password and identify the scanner."""
        if self._serial is not None:
            return self
        if not os.path.exists(self.port):
            reason = f"no fingerprint scanner at {self.port}: plug it in or check the port setting"
            self.health.absent(reason)
            raise ScannerNotFound(reason)
        try:
            self._serial = serial.Serial(
                self.port, self.baudrate, timeout=POLL_S, write_timeout=self.timeout
            )
        except LINE_ERRORS as exc:
            reason = f"cannot open the fingerprint scanner port {self.port}: {exc}"
            self.health.absent(reason)
            raise ScannerNotFound(reason) from exc
        self._decoder = p.PacketDecoder()
        try:
            self.handshake()
            self._identify()
        except ScannerError:
            self.close()
            raise
        return self

    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(*LINE_ERRORS):
                ser.close()  # the port may already be gone

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def __enter__(self) -> FingerprintScanner:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def reconnect(self, timeout: float = 10.0) -> None:
        """Wait for the port to come back (a replugged scanner) and open it again."""
        self.close()
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(self.port):
                try:
                    self.open()
                    return
                except (ScannerNotFound, ScannerDisconnected, ScannerTimeout):
                    pass  # enumerating: the port node appears before the device answers
            if time.monotonic() >= deadline:
                reason = f"the fingerprint scanner did not come back on {self.port} in {timeout} s"
                self.health.absent(reason)
                raise ScannerDisconnected(reason + ": check the USB cable")
            time.sleep(0.05)

    def _identify(self) -> None:
        sysp = self.read_system_parameters()
        try:
            info = self.device_info()
        except DeviceRejected:
            # A plain R30x module: no vendor extensions, no serial number to report.
            self.info = None
            self.health.present(model="R30x (base protocol)", port=self.port)
            return
        if self.stream_packet_size is not None:
            self.set_stream_packet_size(self.stream_packet_size)
        self.health.present(
            serial=info.serial,
            firmware=info.firmware,
            model=info.model,
            port=self.port,
            baud=str(sysp.baudrate),
            calibration=f"{info.calibration_date} crc {info.calibration_crc:08x}",
        )

    # --- line --------------------------------------------------------------------------

    def _port(self) -> serial.Serial:
        if self._serial is None:
            raise ScannerError("the fingerprint scanner is not open", code="not_open")
        return self._serial

    def _gone(self, exc: BaseException) -> ScannerDisconnected:
        self.close()
        reason = f"fingerprint scanner on {self.port} disconnected ({exc})"
        self.health.absent(reason)
        return ScannerDisconnected(
            f"The fingerprint scanner on {self.port} was disconnected: check the USB cable, "
            "then retry (the station reconnects when it is plugged back in)."
        )

    def _write(self, data: bytes) -> None:
        try:
            self._port().write(data)
        except LINE_ERRORS as exc:
            raise self._gone(exc) from exc

    def _discard_input(self) -> None:
        """Forget stale bytes (the tail of an aborted transfer) before a new command."""
        ser = self._port()
        try:
            ser.reset_input_buffer()
        except LINE_ERRORS as exc:
            raise self._gone(exc) from exc
        self._decoder.reset()

    def _poll(self, until: float) -> p.Packet | p.Discarded | None:
        """The next decoder event, or None once ``until`` (monotonic) has passed."""
        while True:
            event = self._decoder.next_event()
            if event is not None:
                if isinstance(event, p.Discarded) and event.reason != p.NOISE:
                    self.corrupt_packets += 1
                return event
            now = time.monotonic()
            if now >= until:
                return None
            ser = self._port()
            try:
                waiting = ser.in_waiting
                data = ser.read(max(1, min(waiting, 65536)))
            except LINE_ERRORS as exc:
                raise self._gone(exc) from exc
            if data:
                self._last_byte = time.monotonic()
                self._decoder.feed(data)
            elif self._decoder.pending and time.monotonic() - self._last_byte > IDLE_S:
                self._decoder.flush()

    def _packet(self, timeout: float, *, strict: bool) -> p.Packet:
        """The next intact packet within ``timeout``; with ``strict`` a damaged packet
        raises :class:`_Corrupt` at once instead of waiting for the timeout."""
        until = time.monotonic() + timeout
        while True:
            event = self._poll(until)
            if event is None:
                raise self._timed_out()
            if isinstance(event, p.Packet):
                return event
            if strict and event.reason != p.NOISE:
                raise _Corrupt

    def _timed_out(self, what: str = "answer") -> ScannerTimeout:
        message = (
            f"The fingerprint scanner did not {what} within {self.timeout} s: "
            "check the cable and the baud rate setting."
        )
        self.health.error(message)
        return ScannerTimeout(message)

    def _transact(self, packet: bytes, name: str, timeout: float | None = None) -> p.Packet:
        """Send an idempotent command and return its acknowledgement; a damaged or
        missing reply is retried ``retries`` times before it counts as a fault."""
        wait = self.timeout if timeout is None else timeout
        silent = 0
        for _attempt in range(self.retries + 1):
            self._discard_input()
            self._write(packet)
            try:
                reply = self._packet(wait, strict=True)
            except _Corrupt:
                self._settle()
                continue
            except ScannerTimeout:
                silent += 1
                continue
            if reply.pid == p.PID_ACK and reply.payload:
                return reply
            self._settle()  # out of turn (e.g. the tail of an old transfer): ask again
        if silent == self.retries + 1:
            raise self._timed_out()
        message = (
            f"The fingerprint scanner gave no clean answer to {name} after "
            f"{self.retries + 1} tries: check the cable (noise or a loose connector)."
        )
        self.health.error(message)
        raise ProtocolFault(message)

    def _settle(self, quiet: float = 0.1) -> None:
        """Read and drop bytes until the line has been quiet for ``quiet`` seconds."""
        until = time.monotonic() + self.timeout
        last = time.monotonic()
        ser = self._port()
        while time.monotonic() < until and time.monotonic() - last < quiet:
            try:
                if ser.read(max(1, ser.in_waiting)):
                    last = time.monotonic()
            except LINE_ERRORS as exc:
                raise self._gone(exc) from exc
        self._decoder.reset()

    def _check(self, reply: p.Packet, name: str) -> None:
        code = reply.payload[0]
        if code == p.OK:
            return
        if code == p.ERR_WRONG_PASSWORD:
            message = "The fingerprint scanner rejected the password: check the station setting."
            self.health.error(message)
            raise WrongPassword(message)
        raise DeviceRejected(
            f"The fingerprint scanner refused {name}: {p.confirmation_message(code)} "
            f"(code 0x{code:02X}).",
            code,
        )

    def _command(self, packet: bytes, name: str) -> p.Packet:
        reply = self._transact(packet, name)
        self._check(reply, name)
        return reply

    # --- base commands -----------------------------------------------------------------

    def handshake(self) -> None:
        """VfyPwd with the configured password (the modules' session start)."""
        self._command(p.vfy_pwd(self.password, self.address), "VfyPwd")

    def read_system_parameters(self) -> p.SystemParameters:
        reply = self._command(p.read_sys_para(self.address), "ReadSysPara")
        return p.SystemParameters.decode(reply.payload[1:])

    def set_baudrate(self, baudrate: int) -> None:
        """Switch the UART rate (9600-115200 in steps of 9600) on both ends."""
        if baudrate % 9600 or not 1 <= baudrate // 9600 <= 12:
            raise ValueError("baud rate must be a multiple of 9600 up to 115200")
        self._command(p.set_sys_para(p.PARAM_BAUD, baudrate // 9600, self.address), "SetSysPara")
        self._port().baudrate = baudrate
        self.baudrate = baudrate

    def set_packet_size(self, size: int) -> None:
        """Base data packet size for UpImage (32, 64, 128 or 256)."""
        code = p.BASE_PACKET_SIZES.index(size)
        self._command(p.set_sys_para(p.PARAM_PACKET_SIZE, code, self.address), "SetSysPara")

    def set_led(
        self, mode: str = "on", colour: str = "blue", *, speed: int = 0, cycles: int = 0
    ) -> None:
        """Ring LED (R503 AuraLedConfig): mode in :data:`LED_MODES`, colour in
        :data:`LED_COLOURS`; ``speed`` and ``cycles`` (0 = forever) for breathing/flashing."""
        if mode not in LED_MODES or colour not in LED_COLOURS:
            raise ValueError(
                f"LED mode one of {list(LED_MODES)}, colour one of {list(LED_COLOURS)}"
            )
        packet = p.aura_led_config(
            LED_MODES[mode], speed & 0xFF, LED_COLOURS[colour], cycles & 0xFF, self.address
        )
        self._command(packet, "AuraLedConfig")

    def generate_image(self) -> bool:
        """GenImg once: True when a finger was imaged into the module's buffer."""
        reply = self._transact(p.gen_img(self.address), "GenImg")
        if reply.payload[0] == p.ERR_NO_FINGER:
            return False
        self._check(reply, "GenImg")
        return True

    def upload_image(self) -> NDArray[np.uint8]:
        """UpImage: the 288 x 256 image in the module's buffer (16 grey levels scaled to
        0-255). A damaged packet restarts the upload; :attr:`last_transfer` times it."""
        expected = p.BASE_IMAGE_WIDTH * p.BASE_IMAGE_HEIGHT // 2
        for _attempt in range(self.retries + 1):
            started = time.monotonic()
            self._command(p.up_image(self.address), "UpImage")
            data = bytearray()
            packets = 0
            damaged = False
            while True:
                try:
                    packet = self._packet(self.timeout, strict=True)
                except _Corrupt:
                    damaged = True
                    continue
                packets += 1
                if packet.pid in (p.PID_DATA, p.PID_END):
                    data.extend(packet.payload)
                if packet.pid == p.PID_END:
                    break
            self.last_transfer = TransferStats(
                "UpImage", len(data) + 12 * packets, packets, time.monotonic() - started
            )
            if not damaged and len(data) == expected:
                pixels = unpack4(bytes(data), 2 * expected)
                return pixels.reshape(p.BASE_IMAGE_HEIGHT, p.BASE_IMAGE_WIDTH)
        message = "The fingerprint image kept arriving damaged: check the cable."
        self.health.error(message)
        raise ProtocolFault(message)

    def download_image(self, image: NDArray[np.uint8]) -> None:
        """DownImage: put a 288 x 256 image into the module's buffer (16 grey levels kept;
        a service check that the link carries an image both ways unchanged)."""
        if image.shape != (p.BASE_IMAGE_HEIGHT, p.BASE_IMAGE_WIDTH):
            raise ValueError(f"image must be {p.BASE_IMAGE_HEIGHT} x {p.BASE_IMAGE_WIDTH}")
        size = self.read_system_parameters().packet_size
        self._command(p.down_image(self.address), "DownImage")
        for packet in p.data_packets(pack_pixels(image), size, self.address):
            self._write(packet)

    def capture_image(self, timeout: float = 10.0) -> NDArray[np.uint8]:
        """Base-protocol capture: GenImg until a finger is there (or ``timeout``), then
        UpImage. Raises :class:`NoFinger` when nobody put a finger down in time."""
        deadline = time.monotonic() + timeout
        while not self.generate_image():
            if time.monotonic() >= deadline:
                raise NoFinger(
                    f"No finger on the scanner within {timeout:g} s: ask the person to place "
                    "the finger flat on the glass, then retry."
                )
            time.sleep(GEN_IMG_INTERVAL_S)
        return self.upload_image()

    # --- vendor extensions -------------------------------------------------------------

    def device_info(self) -> p.DeviceInfo:
        """Model, serial, firmware, platen geometry and calibration (vendor 0xA0)."""
        reply = self._command(p.device_info_cmd(self.address), "DeviceInfo")
        try:
            info = p.DeviceInfo.decode(reply.payload[1:])
        except ValueError as exc:
            raise ProtocolFault(f"The scanner's device information is malformed: {exc}") from exc
        self.info = info
        return info

    def set_stream_packet_size(self, size: int) -> None:
        """Data packet size of vendor streams (32-4096; bigger suits USB CDC-ACM)."""
        self._command(p.set_packet_size(size, self.address), "SetPacketSize")
        self.stream_packet_size = size

    def cancel(self) -> None:
        """Ask a running :meth:`capture_roll` / :meth:`capture_flat` to stop (any thread)."""
        self._cancel.set()

    def capture_flat(
        self, finger_hint: int = 0, timeout: float = 10.0, *, pack4: bool = False
    ) -> NDArray[np.uint8]:
        """A 500 x 400 flat impression at 500 ppi (vendor 0xA4)."""
        self._cancel.clear()
        frames: list[RollFrame] = []
        self._stream(p.CMD_CAPTURE_FLAT, finger_hint, timeout, pack4, frames.append, None)
        if len(frames) != 1:
            raise ProtocolFault("The scanner sent no intact flat image: retry the capture.")
        return frames[0].pixels

    def capture_roll(
        self,
        finger_hint: int,
        timeout: float = 15.0,
        on_frame: Callable[[RollFrame], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        pack4: bool = False,
        trim: bool = True,
    ) -> RolledCapture:
        """Roll one finger (vendor 0xA2): the scanner streams contact windows while the
        finger rolls; each goes to the composer (and ``on_frame``) as it arrives.

        With ``trim`` (the default) the scanner reports each frame's contact band and sends
        only the pixels around the band centre that the composer uses (a third of the
        bytes or less); a scanner that cannot ignores the request and sends whole windows,
        which the composer takes as well. ``pack4`` halves the bytes again (16 grey levels).

        Raises :class:`NoFinger`, :class:`CaptureCancelled` (``cancel`` set, or
        :meth:`cancel` called), or the composer's ``RollError`` for a bad roll.
        """
        self._cancel.clear()
        composer = RollComposer()

        def take(frame: RollFrame) -> None:
            try:
                composer.add(frame)
            except ValueError as exc:  # a window off the platen: the scanner's fault
                raise ProtocolFault(
                    f"The scanner sent a frame the composer cannot place ({exc}); retry the "
                    "capture, and report the scanner if it repeats."
                ) from None
            if on_frame is not None:
                on_frame(frame)

        flags = p.FLAG_TRIM if trim else 0
        self._stream(p.CMD_CAPTURE_ROLL, finger_hint, timeout, pack4, take, cancel, flags)
        return composer.finish()

    def _stream(
        self,
        instruction: int,
        finger: int,
        timeout: float,
        pack4: bool,
        take: Callable[[RollFrame], None],
        cancel: threading.Event | None,
        flags: int = 0,
    ) -> None:
        name = "CaptureRoll" if instruction == p.CMD_CAPTURE_ROLL else "CaptureFlat"
        if pack4:
            flags |= p.FLAG_PACK4
        encode = p.capture_roll if instruction == p.CMD_CAPTURE_ROLL else p.capture_flat
        self._discard_input()
        started = time.monotonic()
        self._write(encode(finger & 0xFF, int(timeout * 1000), flags, self.address))
        assembler = p.StreamAssembler()
        # Until the finger lands the scanner is silent for up to `timeout`; after that
        # packets follow each other within `self.timeout`.
        quiet_until = started + timeout + self.timeout
        cancel_sent = 0.0
        acked = False
        cancel_acked = False
        end: p.StreamEnd | None = None
        nbytes = packets = frames = 0
        first_data: float | None = None
        failure: Exception | None = None
        while end is None or (cancel_sent and not cancel_acked):
            wanted = failure is not None or (cancel is not None and cancel.is_set())
            if not cancel_sent and (wanted or self._cancel.is_set()):
                self._write(p.cancel(self.address))
                cancel_sent = time.monotonic()
                quiet_until = min(quiet_until, cancel_sent + self.timeout)
            event = self._poll(min(quiet_until, time.monotonic() + POLL_S))
            if event is None:
                if time.monotonic() >= quiet_until:
                    if end is not None:
                        break  # the stream ended; only the cancel's ack went missing
                    raise self._timed_out("send the image")
                continue
            if not isinstance(event, p.Packet):
                continue  # a damaged packet: the assembler drops its frame
            packets += 1
            nbytes += len(event.payload) + 11
            quiet_until = max(quiet_until, time.monotonic() + self.timeout)
            if event.pid == p.PID_ACK:
                # Cancel's acknowledgement carries one data byte; the capture's none.
                if cancel_sent and not cancel_acked and len(event.payload) == 2:
                    cancel_acked = True
                elif not acked:
                    acked = True
                    if event.payload[0] == p.ERR_CANCELLED:
                        end = p.StreamEnd(p.ERR_CANCELLED, 0, 0)  # a flat cancelled early
                    elif event.payload[0] != p.OK:
                        self._check_stream_ack(event, name)
                continue
            acked = True  # data means the (maybe damaged) ack was OK
            if first_data is None:
                first_data = time.monotonic()
            result = self._assemble(assembler, event)
            if isinstance(result, p.StreamEnd):
                end = result
            elif result is not None and failure is None:
                frames += 1
                try:
                    take(result)
                except Exception as exc:  # the consumer failed: stop the scanner, then raise
                    failure = exc
        now = time.monotonic()
        self.last_transfer = TransferStats(
            name,
            nbytes,
            packets,
            now - (first_data or now),
            frames,
            assembler.dropped_frames,
            (first_data or now) - started,
        )
        if failure is not None:
            raise failure
        if cancel_sent:
            raise CaptureCancelled("The capture was cancelled.")
        assert end is not None
        self._check_end(end, timeout)

    def _check_stream_ack(self, reply: p.Packet, name: str) -> None:
        code = reply.payload[0]
        if code == p.ERR_NO_FINGER:
            raise NoFinger(
                "No finger on the scanner in time: ask the person to place the finger on "
                "the glass, then retry."
            )
        self._check(reply, name)

    def _check_end(self, end: p.StreamEnd, timeout: float) -> None:
        if end.status == p.OK:
            return
        if end.status == p.ERR_NO_FINGER:
            raise NoFinger(
                f"No finger on the scanner within {timeout:g} s: ask the person to place the "
                "finger on the glass, then retry."
            )
        if end.status == p.ERR_CANCELLED:
            raise CaptureCancelled("The capture was cancelled.")
        if end.status == p.ERR_CAPTURE_TIMEOUT:
            raise ScannerTimeout(
                "The roll did not finish in time: roll the finger from nail to nail in about "
                "one second, then retry."
            )
        raise DeviceRejected(
            f"The scanner ended the capture: {p.confirmation_message(end.status)}.", end.status
        )

    @staticmethod
    def _assemble(assembler: p.StreamAssembler, packet: p.Packet) -> RollFrame | p.StreamEnd | None:
        result = assembler.feed(packet)
        if result is None or isinstance(result, p.StreamEnd):
            return result
        return roll_frame(result)


def roll_frame(record: p.FrameRecord) -> RollFrame:
    """A frame off the wire as the composer takes it: 4-bit pixels scaled to 0-255; a
    format-1 frame's sent columns put in place (the rest of its window glass) and its band
    report attached."""
    count = record.pixel_count
    if record.bits == 4:
        flat = unpack4(record.pixels, count)
    else:
        flat = np.frombuffer(record.pixels, np.uint8, count)
    info = record.band
    if info is None:
        pixels = flat.reshape(record.height, record.width)
        return RollFrame(
            index=record.index, t_ms=record.t_ms, x=record.x, y=record.y, pixels=pixels
        )
    records = np.array(info.records, np.int32).reshape(-1, 4)
    columns = [np.ascontiguousarray(records[:, i]) for i in range(4)]
    for column in columns:
        column.setflags(write=False)
    report = BandReport(
        block=info.block,
        left=columns[0],
        right=columns[1],
        sent_left=columns[2],
        sent_right=columns[3],
        glass=info.glass or None,
        contrast=info.contrast16 / 16,
    )
    pixels = place_sent(flat, report, record.x, record.height, record.width)
    return RollFrame(record.index, record.t_ms, record.x, record.y, pixels, report)
