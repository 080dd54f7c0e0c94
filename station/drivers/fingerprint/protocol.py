"""ZFM / R30x fingerprint module packets: a sans-I/O codec (bytes in, packets out).

Wire format of every packet (big-endian)::

    EF 01 | address (4) | PID (1) | length (2) | payload (length - 2) | checksum (2)

``checksum`` is the low 16 bits of PID + both length bytes + every payload byte; the
address is not covered. PIDs: 0x01 command, 0x02 data, 0x07 acknowledge, 0x08 end of data.

This module is shared by the station driver, the simulator and (some day) the scanner's
own microcontroller firmware, so it keeps to the Python that MicroPython also has: plain
classes, bytes, ints, lists, dicts, tuples, ``struct``; no dataclasses, enums, typing at
runtime or self-documenting f-strings (``tests/test_fingerprint_protocol.py`` checks this
with an AST scan, ``tests/test_micropython_cores.py`` runs the module on MicroPython).
Vendor extensions for ten-print enrollment (0xA0-0xAF) are specified in
``docs/protocols/fingerprint.md``.
"""

import struct

HEADER = b"\xef\x01"
DEFAULT_ADDRESS = 0xFFFFFFFF
HEADER_SIZE = 9
"""Start code (2) + address (4) + PID (1) + length (2)."""

PID_COMMAND = 0x01
PID_DATA = 0x02
PID_ACK = 0x07
PID_END = 0x08
PIDS = (PID_COMMAND, PID_DATA, PID_ACK, PID_END)

# --- Base instruction codes (R307 / R503 / AS608 user manuals) ------------------------
CMD_GEN_IMG = 0x01
CMD_UP_IMAGE = 0x0A
CMD_DOWN_IMAGE = 0x0B
CMD_SET_SYS_PARA = 0x0E
CMD_READ_SYS_PARA = 0x0F
CMD_SET_PWD = 0x12
CMD_VFY_PWD = 0x13
CMD_TEMPLATE_NUM = 0x1D
CMD_AURA_LED_CONFIG = 0x35
CMD_OPEN_LED = 0x50
CMD_CLOSE_LED = 0x51

# --- Vendor extensions (unused by the base family) ------------------------------------
CMD_DEVICE_INFO = 0xA0
CMD_SET_PACKET_SIZE = 0xA1
CMD_CAPTURE_ROLL = 0xA2
CMD_CANCEL = 0xA3
CMD_CAPTURE_FLAT = 0xA4

# SetSysPara parameter numbers.
PARAM_BAUD = 4
PARAM_SECURITY = 5
PARAM_PACKET_SIZE = 6

BASE_PACKET_SIZES = (32, 64, 128, 256)
"""Data packet payload sizes the base family supports, by SetSysPara code 0-3."""
MAX_PACKET_SIZE = 4096
"""Largest data payload the vendor SetPacketSize accepts (USB CDC-ACM throughput)."""

# Base image: 256 x 288, two 4-bit pixels per byte, high nibble first.
BASE_IMAGE_WIDTH = 256
BASE_IMAGE_HEIGHT = 288

# --- Confirmation codes ---------------------------------------------------------------
OK = 0x00
ERR_PACKET = 0x01
ERR_NO_FINGER = 0x02
ERR_ENROLL = 0x03
ERR_DISORDERLY = 0x06
ERR_FEW_FEATURES = 0x07
ERR_UPLOAD_IMAGE = 0x0F
ERR_PACKET_RESPONSE = 0x0E
ERR_WRONG_PASSWORD = 0x13
ERR_NO_VALID_IMAGE = 0x15
ERR_BAD_REGISTER = 0x1A
ERR_ADDRESS = 0x20
ERR_MUST_VERIFY = 0x21
ERR_CANCELLED = 0xA1
ERR_CAPTURE_TIMEOUT = 0xA2
ERR_BUSY = 0xA3
ERR_BAD_ARGUMENT = 0xA4

CONFIRMATION_MESSAGES = {
    OK: "command executed",
    ERR_PACKET: "error receiving the packet",
    ERR_NO_FINGER: "no finger on the sensor",
    ERR_ENROLL: "failed to enroll the finger",
    ERR_DISORDERLY: "image too disorderly to generate a character file",
    ERR_FEW_FEATURES: "too few features to generate a character file",
    ERR_PACKET_RESPONSE: "error receiving the following data packets",
    ERR_UPLOAD_IMAGE: "failed to upload the image",
    ERR_WRONG_PASSWORD: "wrong password",
    ERR_NO_VALID_IMAGE: "no valid image in the image buffer",
    ERR_BAD_REGISTER: "invalid register number",
    ERR_ADDRESS: "wrong address",
    ERR_MUST_VERIFY: "password must be verified first",
    ERR_CANCELLED: "capture cancelled by the host",
    ERR_CAPTURE_TIMEOUT: "capture timed out",
    ERR_BUSY: "a capture is already running",
    ERR_BAD_ARGUMENT: "invalid argument",
}


def confirmation_message(code: int) -> str:
    """A technician-readable text for a confirmation code (unknown codes in hex)."""
    text = CONFIRMATION_MESSAGES.get(code)
    if text is None:
        return f"unknown confirmation code 0x{code:02X}"
    return text


# --- Framing --------------------------------------------------------------------------


def checksum(pid: int, payload: bytes) -> int:
    """Low 16 bits of PID + length bytes + payload bytes."""
    length = len(payload) + 2
    return (pid + (length >> 8) + (length & 0xFF) + sum(payload)) & 0xFFFF


def encode_packet(pid: int, payload: bytes, address: int = DEFAULT_ADDRESS) -> bytes:
    """One complete packet on the wire."""
    if len(payload) > 0xFFFD:
        raise ValueError("payload too long for one packet")
    return (
        HEADER
        + struct.pack(">IBH", address, pid, len(payload) + 2)
        + bytes(payload)
        + struct.pack(">H", checksum(pid, payload))
    )


class Packet:
    """A packet that arrived intact."""

    def __init__(self, address: int, pid: int, payload: bytes) -> None:
        self.address = address
        self.pid = pid
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Packet):
            return NotImplemented
        return (self.address, self.pid, self.payload) == (other.address, other.pid, other.payload)

    def __hash__(self) -> int:
        return hash((self.address, self.pid, self.payload))

    def __repr__(self) -> str:
        return (
            f"Packet(address=0x{self.address:08X}, pid=0x{self.pid:02X}, {len(self.payload)} bytes)"
        )


# Reasons a run of bytes was thrown away.
NOISE = "noise"
"""Bytes before any start code."""
BAD_HEADER = "bad_header"
"""A start code followed by an unknown PID or an impossible length."""
BAD_CHECKSUM = "bad_checksum"
TRUNCATED = "truncated"
"""A packet cut short: the line went idle (see :meth:`PacketDecoder.flush`)."""


class Discarded:
    """Bytes the decoder skipped while resynchronising, and why."""

    def __init__(self, reason: str, size: int) -> None:
        self.reason = reason
        self.size = size

    def __repr__(self) -> str:
        return f"Discarded({self.reason}, {self.size} bytes)"


class PacketDecoder:
    """Feed it bytes as they arrive; take :class:`Packet` and :class:`Discarded` events.

    Never raises on bad input. On a bad header or checksum it drops the start code of the
    candidate packet and searches again from the next byte, so a valid packet that a
    corrupt or truncated one swallowed is still found. A packet cut short can only be told
    from a slow one by the clock, which this class has not got: call :meth:`flush` when
    the line has gone idle.
    """

    def __init__(self, max_payload: int = MAX_PACKET_SIZE + 16) -> None:
        self.max_payload = max_payload
        # bytes, not bytearray: MicroPython's bytearray lacks find() and slice deletion.
        self._buf = b""
        self._pos = 0
        self._events: list[Packet | Discarded] = []
        self.packets = 0
        self.bad_checksums = 0
        self.bad_headers = 0
        self.truncated = 0
        self.discarded_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet turned into an event."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        self._buf = self._buf[self._pos :] + bytes(data)
        self._pos = 0
        self._parse()

    def next_event(self) -> "Packet | Discarded | None":
        if self._events:
            return self._events.pop(0)
        return None

    def events(self) -> "list[Packet | Discarded]":
        out = self._events
        self._events = []
        return out

    def flush(self) -> None:
        """The line went idle: a partial packet at the front will never complete."""
        while self.pending:
            if self._buf[self._pos : self._pos + 2] == HEADER:
                self._skip(TRUNCATED, 1)
                self.truncated += 1
            self._parse()
            if self.pending and self._buf[self._pos : self._pos + 2] != HEADER:
                self._skip(TRUNCATED, self.pending)
        self._compact()

    def reset(self) -> None:
        """Forget buffered bytes and queued events (counters are kept)."""
        self._buf = b""
        self._pos = 0
        self._events = []

    def _skip(self, reason: str, size: int) -> None:
        """Drop ``size`` bytes and then up to the next start code; report it as one event."""
        buf = self._buf
        start = self._pos + size
        nxt = buf.find(HEADER, start)
        if nxt < 0:
            # Keep a trailing 0xEF: it may be the first half of the next start code.
            nxt = len(buf) - 1 if buf and buf[-1] == 0xEF and len(buf) - 1 >= start else len(buf)
        dropped = nxt - self._pos
        self._pos = nxt
        self.discarded_bytes += dropped
        self._events.append(Discarded(reason, dropped))

    def _parse(self) -> None:
        buf = self._buf
        while True:
            avail = len(buf) - self._pos
            if avail <= 0:
                break
            if buf[self._pos : self._pos + 2] != HEADER:
                if avail == 1 and buf[self._pos] == 0xEF:
                    break  # maybe the first half of a start code
                self._skip(NOISE, 1)
                continue
            if avail < HEADER_SIZE:
                break
            address, pid, length = struct.unpack_from(">IBH", buf, self._pos + 2)
            if pid not in PIDS or length < 2 or length - 2 > self.max_payload:
                self.bad_headers += 1
                self._skip(BAD_HEADER, 1)
                continue
            end = self._pos + HEADER_SIZE + length
            if len(buf) < end:
                break
            payload = bytes(buf[self._pos + HEADER_SIZE : end - 2])
            got = (buf[end - 2] << 8) | buf[end - 1]
            if got != checksum(pid, payload):
                self.bad_checksums += 1
                self._skip(BAD_CHECKSUM, 1)
                continue
            self._pos = end
            self.packets += 1
            self._events.append(Packet(address, pid, payload))
        self._compact()

    def _compact(self) -> None:
        if self._pos == len(self._buf):
            self._buf = b""
            self._pos = 0


# --- Commands (host -> module) --------------------------------------------------------


def command(instruction: int, params: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    return encode_packet(PID_COMMAND, bytes((instruction,)) + params, address)


def vfy_pwd(password: int, address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_VFY_PWD, struct.pack(">I", password), address)


def set_pwd(password: int, address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_SET_PWD, struct.pack(">I", password), address)


def read_sys_para(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_READ_SYS_PARA, b"", address)


def set_sys_para(param: int, value: int, address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_SET_SYS_PARA, bytes((param, value)), address)


def gen_img(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_GEN_IMG, b"", address)


def up_image(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_UP_IMAGE, b"", address)


def down_image(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_DOWN_IMAGE, b"", address)


def template_num(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_TEMPLATE_NUM, b"", address)


# AuraLedConfig (R503) control codes and colours.
LED_BREATHING = 0x01
LED_FLASHING = 0x02
LED_ON = 0x03
LED_OFF = 0x04
LED_GRADUAL_ON = 0x05
LED_GRADUAL_OFF = 0x06
LED_RED = 0x01
LED_BLUE = 0x02
LED_PURPLE = 0x03
LED_GREEN = 0x04
LED_YELLOW = 0x05
LED_CYAN = 0x06
LED_WHITE = 0x07


def aura_led_config(
    control: int, speed: int, colour: int, times: int, address: int = DEFAULT_ADDRESS
) -> bytes:
    return command(CMD_AURA_LED_CONFIG, bytes((control, speed, colour, times)), address)


def open_led(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_OPEN_LED, b"", address)


def close_led(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_CLOSE_LED, b"", address)


def device_info_cmd(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_DEVICE_INFO, b"", address)


def set_packet_size(size: int, address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_SET_PACKET_SIZE, struct.pack(">H", size), address)


# CaptureRoll / CaptureFlat flags.
FLAG_PACK4 = 0x01
"""Send pixels as 4-bit values, two per byte, high nibble first."""
FLAG_TRIM = 0x02
"""CaptureRoll: report each frame's contact band and send only the pixels around the band
centre that the composer uses (format-1 frames). A scanner without band reports ignores
the bit and sends format-0 frames."""


def capture_roll(
    finger: int, timeout_ms: int, flags: int = 0, address: int = DEFAULT_ADDRESS
) -> bytes:
    return command(CMD_CAPTURE_ROLL, struct.pack(">BIB", finger, timeout_ms, flags), address)


def capture_flat(
    finger: int, timeout_ms: int, flags: int = 0, address: int = DEFAULT_ADDRESS
) -> bytes:
    return command(CMD_CAPTURE_FLAT, struct.pack(">BIB", finger, timeout_ms, flags), address)


def cancel(address: int = DEFAULT_ADDRESS) -> bytes:
    return command(CMD_CANCEL, b"", address)


def parse_command(payload: bytes) -> "tuple[int, bytes]":
    """(instruction, parameters) of a command packet's payload; ValueError if empty."""
    if not payload:
        raise ValueError("empty command packet")
    return payload[0], bytes(payload[1:])


# --- Replies (module -> host) ---------------------------------------------------------


def ack(code: int, data: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    return encode_packet(PID_ACK, bytes((code,)) + data, address)


def data_packets(
    data: bytes, packet_size: int, address: int = DEFAULT_ADDRESS, end: bool = True
) -> "list[bytes]":
    """Split ``data`` into data packets; the last is an end packet when ``end``."""
    out = []
    n = len(data)
    for start in range(0, n, packet_size):
        last = start + packet_size >= n
        pid = PID_END if (last and end) else PID_DATA
        out.append(encode_packet(pid, data[start : start + packet_size], address))
    if not out and end:
        out.append(encode_packet(PID_END, b"", address))
    return out


class SystemParameters:
    """ReadSysPara's 16 bytes."""

    def __init__(
        self,
        status: int,
        system_id: int,
        library_size: int,
        security_level: int,
        address: int,
        packet_size_code: int,
        baud_multiple: int,
    ) -> None:
        self.status = status
        self.system_id = system_id
        self.library_size = library_size
        self.security_level = security_level
        self.address = address
        self.packet_size_code = packet_size_code
        self.baud_multiple = baud_multiple

    @property
    def packet_size(self) -> int:
        """Data packet payload size in bytes (32 << code)."""
        return 32 << self.packet_size_code

    @property
    def baudrate(self) -> int:
        return 9600 * self.baud_multiple

    def encode(self) -> bytes:
        return struct.pack(
            ">HHHHIHH",
            self.status,
            self.system_id,
            self.library_size,
            self.security_level,
            self.address,
            self.packet_size_code,
            self.baud_multiple,
        )

    @classmethod
    def decode(cls, data: bytes) -> "SystemParameters":
        if len(data) < 16:
            raise ValueError(f"system parameters need 16 bytes, got {len(data)}")
        return cls(*struct.unpack(">HHHHIHH", bytes(data[:16])))


def _text(raw: bytes) -> str:
    return bytes(raw).split(b"\x00")[0].decode()


def _field(text: str, size: int) -> bytes:
    raw = text.encode()
    if len(raw) > size:
        raise ValueError(f"{text!r} longer than {size} bytes")
    return raw + bytes(size - len(raw))


DEVICE_INFO_FORMAT = ">B16s16s8sHHHHHHI8s"
DEVICE_INFO_SIZE = struct.calcsize(DEVICE_INFO_FORMAT)
DEVICE_INFO_VERSION = 1


class DeviceInfo:
    """The vendor DeviceInfo reply (layout in docs/protocols/fingerprint.md)."""

    def __init__(
        self,
        model: str,
        serial: str,
        firmware: str,
        platen_width: int,
        platen_height: int,
        resolution_ppi: int,
        flat_width: int,
        flat_height: int,
        max_packet_size: int,
        calibration_crc: int,
        calibration_date: str,
    ) -> None:
        self.model = model
        self.serial = serial
        self.firmware = firmware
        self.platen_width = platen_width
        self.platen_height = platen_height
        self.resolution_ppi = resolution_ppi
        self.flat_width = flat_width
        self.flat_height = flat_height
        self.max_packet_size = max_packet_size
        self.calibration_crc = calibration_crc
        """CRC-32 of the flat-field (white reference) image stored at calibration."""
        self.calibration_date = calibration_date
        """YYYYMMDD of the last calibration."""

    def encode(self) -> bytes:
        return struct.pack(
            DEVICE_INFO_FORMAT,
            DEVICE_INFO_VERSION,
            _field(self.model, 16),
            _field(self.serial, 16),
            _field(self.firmware, 8),
            self.platen_width,
            self.platen_height,
            self.resolution_ppi,
            self.flat_width,
            self.flat_height,
            self.max_packet_size,
            self.calibration_crc,
            _field(self.calibration_date, 8),
        )

    @classmethod
    def decode(cls, data: bytes) -> "DeviceInfo":
        if len(data) < DEVICE_INFO_SIZE:
            raise ValueError(f"device info needs {DEVICE_INFO_SIZE} bytes, got {len(data)}")
        f = struct.unpack(DEVICE_INFO_FORMAT, bytes(data[:DEVICE_INFO_SIZE]))
        if f[0] != DEVICE_INFO_VERSION:
            raise ValueError(f"unknown device info version {f[0]}")
        return cls(
            _text(f[1]),
            _text(f[2]),
            _text(f[3]),
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            f[10],
            _text(f[11]),
        )


# --- Pixels ---------------------------------------------------------------------------


def pack4(pixels: bytes) -> bytes:
    """8-bit pixels -> 4-bit pairs (high nibble first); an odd count is padded."""
    n = len(pixels)
    out = bytearray((n + 1) // 2)
    for i in range(0, n - 1, 2):
        out[i >> 1] = (pixels[i] & 0xF0) | (pixels[i + 1] >> 4)
    if n & 1:
        out[n >> 1] = pixels[n - 1] & 0xF0
    return bytes(out)


def unpack4(packed: bytes, count: int) -> bytes:
    """4-bit pairs -> ``count`` 8-bit pixels, scaled by 17 (0x0 -> 0, 0xF -> 255)."""
    out = bytearray(count)
    for i in range(count):
        b = packed[i >> 1]
        nib = (b >> 4) if (i & 1) == 0 else (b & 0x0F)
        out[i] = nib * 17
    return bytes(out)


# --- Streams (vendor CaptureRoll / CaptureFlat) ---------------------------------------
#
# A stream is a run of data packets, each starting with a 4-byte chunk header
# (frame index u16, chunk number u16), closed by one end packet carrying the status.
# A frame's body (frame header, band report when its format is 1, pixels) runs on from
# chunk 0 through as many chunks as it needs.

CHUNK_HEADER = ">HH"
CHUNK_HEADER_SIZE = 4
FRAME_HEADER = ">IHHHHBB"
"""t_ms u32, x u16, y u16, width u16, height u16, bits per pixel u8, format u8."""
FRAME_HEADER_SIZE = struct.calcsize(FRAME_HEADER)
FORMAT_WINDOW = 0
"""Frame format 0: every pixel of the window, row by row (scanners before band reports)."""
FORMAT_BANDED = 1
"""Frame format 1: a band report, then only the pixels it says were sent."""
BAND_HEADER = ">BBHH"
"""glass grey u8 (0: no glass seen), rows per record u8, contrast u16 (1/16 grey level),
records u16."""
BAND_HEADER_SIZE = struct.calcsize(BAND_HEADER)
BAND_RECORD = ">HHHH"
"""contact left, contact right, sent left, sent right: platen columns, [left, right)."""
BAND_RECORD_SIZE = struct.calcsize(BAND_RECORD)
END_RECORD = ">BHI"
"""status u8, frames sent u16, duration ms u32."""
END_RECORD_SIZE = struct.calcsize(END_RECORD)


def frame_pixel_bytes(width: int, height: int, bits: int) -> int:
    n = width * height
    return (n + 1) // 2 if bits == 4 else n


class BandInfo:
    """The band report of a format-1 frame (layout in docs/protocols/fingerprint.md).

    ``records`` is a list of ``(left, right, sent_left, sent_right)`` tuples, one per
    ``block`` rows of the window from its top: where the finger touches the glass on
    those rows, and which columns' pixels follow for them (``left == right``: none)."""

    def __init__(
        self, glass: int, block: int, contrast16: int, records: "list[tuple[int, ...]]"
    ) -> None:
        self.glass = glass
        self.block = block
        self.contrast16 = contrast16
        self.records = records

    def encode(self) -> bytes:
        out = struct.pack(BAND_HEADER, self.glass, self.block, self.contrast16, len(self.records))
        for rec in self.records:
            out += struct.pack(BAND_RECORD, rec[0], rec[1], rec[2], rec[3])
        return out

    def sent_count(self, height: int) -> int:
        """Pixels sent for a window ``height`` rows tall."""
        n = 0
        for i in range(len(self.records)):
            rows = min(self.block, height - i * self.block)
            rec = self.records[i]
            n += rows * (rec[3] - rec[2])
        return n

    def check(self, x: int, width: int, height: int) -> bool:
        """Does the report fit its window? (One record per ``block`` rows, spans in order,
        sent columns inside the window.)"""
        if self.block < 1 or len(self.records) != (height + self.block - 1) // self.block:
            return False
        for rec in self.records:
            if rec[0] > rec[1] or rec[2] > rec[3]:
                return False
            if rec[3] > rec[2] and (rec[2] < x or rec[3] > x + width):
                return False
        return True


def frame_packets(
    index: int,
    t_ms: int,
    x: int,
    y: int,
    width: int,
    height: int,
    pixels: bytes,
    packet_size: int,
    bits: int = 8,
    address: int = DEFAULT_ADDRESS,
    band: "BandInfo | None" = None,
) -> "list[bytes]":
    """The data packets that carry one frame (``pixels`` already packed when bits=4).
    With ``band`` the frame is format 1 and ``pixels`` holds only the sent columns."""
    if band is None:
        count = frame_pixel_bytes(width, height, bits)
        body = struct.pack(FRAME_HEADER, t_ms, x, y, width, height, bits, FORMAT_WINDOW)
    else:
        if not band.check(x, width, height):
            raise ValueError("band report does not fit the window")
        count = frame_pixel_bytes(band.sent_count(height), 1, bits)
        body = struct.pack(FRAME_HEADER, t_ms, x, y, width, height, bits, FORMAT_BANDED)
        body += band.encode()
    if len(pixels) != count:
        raise ValueError("pixel count does not match the window size")
    body += bytes(pixels)
    room = packet_size - CHUNK_HEADER_SIZE
    if room <= FRAME_HEADER_SIZE:
        raise ValueError(f"packet size {packet_size} too small for streaming")
    out = []
    for chunk, start in enumerate(range(0, len(body), room)):
        head = struct.pack(CHUNK_HEADER, index & 0xFFFF, chunk)
        out.append(encode_packet(PID_DATA, head + body[start : start + room], address))
    return out


def end_packet(status: int, frames: int, duration_ms: int, address: int = DEFAULT_ADDRESS) -> bytes:
    return encode_packet(PID_END, struct.pack(END_RECORD, status, frames, duration_ms), address)


class FrameRecord:
    """One reassembled frame; ``pixels`` as sent (4-bit pairs when bits=4, see
    :func:`unpack4`): the whole window row-major (format 0), or with ``band`` (format 1)
    the sent columns of each row, row after row."""

    def __init__(
        self,
        index: int,
        t_ms: int,
        x: int,
        y: int,
        width: int,
        height: int,
        bits: int,
        pixels: bytes,
        band: "BandInfo | None" = None,
    ) -> None:
        self.index = index
        self.t_ms = t_ms
        self.x = x
        self.y = y
        self.width = width
        self.height = height
        self.bits = bits
        self.pixels = pixels
        self.band = band

    @property
    def pixel_count(self) -> int:
        """Pixels the frame carries (before 4-bit packing)."""
        if self.band is None:
            return self.width * self.height
        return self.band.sent_count(self.height)


class StreamEnd:
    def __init__(self, status: int, frames: int, duration_ms: int) -> None:
        self.status = status
        self.frames = frames
        self.duration_ms = duration_ms


class StreamAssembler:
    """Turns a stream's data and end packets into :class:`FrameRecord` / :class:`StreamEnd`.

    A frame with a lost or damaged chunk, or a header that makes no sense, is dropped
    whole (counted in ``dropped_frames``) rather than aborting the stream: a roll survives
    a missing frame, not a torn one.
    """

    def __init__(self) -> None:
        self.dropped_frames = 0
        self._index = -1
        self._next_chunk = 0
        self._header: tuple[int, ...] = ()
        self._band: BandInfo | None = None
        self._stage = 0
        self._need = 0
        self._body = bytearray()

    def _drop(self) -> None:
        if self._index >= 0:
            self.dropped_frames += 1
        self._index = -1
        self._body = bytearray()

    def feed(self, packet: Packet) -> "FrameRecord | StreamEnd | None":
        if packet.pid == PID_END:
            if self._index >= 0:
                self._drop()
            if len(packet.payload) < END_RECORD_SIZE:
                return StreamEnd(ERR_PACKET, 0, 0)
            status, frames, duration = struct.unpack(
                END_RECORD, bytes(packet.payload[:END_RECORD_SIZE])
            )
            return StreamEnd(status, frames, duration)
        if packet.pid != PID_DATA or len(packet.payload) < CHUNK_HEADER_SIZE:
            return None
        index, chunk = struct.unpack(CHUNK_HEADER, bytes(packet.payload[:CHUNK_HEADER_SIZE]))
        data = packet.payload[CHUNK_HEADER_SIZE:]
        if chunk == 0:
            if self._index >= 0:
                self._drop()
            self._index = index
            self._body = bytearray(data)
            self._next_chunk = 1
            self._stage = 0
            self._need = FRAME_HEADER_SIZE
            self._band = None
        elif index == self._index and chunk == self._next_chunk:
            self._body.extend(data)
            self._next_chunk += 1
        else:
            # A chunk went missing (or belongs to a frame whose start was lost).
            if self._index >= 0:
                self._drop()
            return None
        return self._advance()

    def _advance(self) -> "FrameRecord | None":
        """Parse as far as the bytes received allow; the frame once it is complete."""
        while len(self._body) >= self._need:
            body = self._body
            if self._stage == 0:
                header = struct.unpack_from(FRAME_HEADER, body, 0)
                width, height, bits, fmt = header[3], header[4], header[5], header[6]
                if bits not in (4, 8) or fmt not in (FORMAT_WINDOW, FORMAT_BANDED):
                    self._drop()
                    return None
                self._header = header
                if fmt == FORMAT_WINDOW:
                    self._need = FRAME_HEADER_SIZE + frame_pixel_bytes(width, height, bits)
                    self._stage = 3
                else:
                    self._need = FRAME_HEADER_SIZE + BAND_HEADER_SIZE
                    self._stage = 1
            elif self._stage == 1:
                glass, block, contrast16, count = struct.unpack_from(
                    BAND_HEADER, body, FRAME_HEADER_SIZE
                )
                self._band = BandInfo(glass, block, contrast16, [])
                self._need += count * BAND_RECORD_SIZE
                self._stage = 2
            elif self._stage == 2:
                band = self._band
                if band is None:  # not reached: stage 2 follows stage 1
                    self._drop()
                    return None
                start = FRAME_HEADER_SIZE + BAND_HEADER_SIZE
                count = (self._need - start) // BAND_RECORD_SIZE
                records = []
                for i in range(count):
                    records.append(
                        struct.unpack_from(BAND_RECORD, body, start + i * BAND_RECORD_SIZE)
                    )
                band.records = records
                x, width, height, bits = (
                    self._header[1],
                    self._header[3],
                    self._header[4],
                    self._header[5],
                )
                if not band.check(x, width, height):
                    self._drop()
                    return None
                self._need += frame_pixel_bytes(band.sent_count(height), 1, bits)
                self._stage = 3
            else:
                t_ms, x, y, width, height, bits, _ = self._header
                start = self._need - (
                    frame_pixel_bytes(width, height, bits)
                    if self._band is None
                    else frame_pixel_bytes(self._band.sent_count(height), 1, bits)
                )
                pixels = bytes(body[start : self._need])
                record = FrameRecord(
                    self._index, t_ms, x, y, width, height, bits, pixels, self._band
                )
                self._index = -1
                self._body = bytearray()
                self._band = None
                return record
        return None
