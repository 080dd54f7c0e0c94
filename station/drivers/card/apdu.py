"""ISO/IEC 7816-4 command and response APDUs: short and extended length, status words.

Sans-I/O and MicroPython-compatible: bytes in, objects out.
"""

SW_OK = 0x9000
SW_WARNING_EOF = 0x6282  # end of file reached before Le bytes
SW_VERIFICATION_FAILED = 0x6300
SW_MEMORY_FAILURE = 0x6581
SW_WRONG_LENGTH = 0x6700
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_AUTH_BLOCKED = 0x6983
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_COMMAND_NOT_ALLOWED = 0x6986  # no current EF
SW_SM_MISSING = 0x6987
SW_SM_INCORRECT = 0x6988
SW_WRONG_DATA = 0x6A80
SW_FILE_NOT_FOUND = 0x6A82
SW_NOT_ENOUGH_MEMORY = 0x6A84
SW_WRONG_P1P2 = 0x6A86
SW_REFERENCED_DATA_NOT_FOUND = 0x6A88
SW_FILE_EXISTS = 0x6A89
SW_WRONG_OFFSET = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_UNKNOWN = 0x6F00

_MEANINGS = {
    SW_OK: "success",
    SW_WARNING_EOF: "end of file reached before Le bytes were read",
    SW_VERIFICATION_FAILED: "authentication failed",
    SW_MEMORY_FAILURE: "memory failure (write did not complete)",
    SW_WRONG_LENGTH: "wrong length",
    SW_SECURITY_NOT_SATISFIED: "security status not satisfied",
    SW_AUTH_BLOCKED: "authentication method blocked",
    SW_CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW_COMMAND_NOT_ALLOWED: "command not allowed (no current EF)",
    SW_SM_MISSING: "expected secure messaging data objects missing",
    SW_SM_INCORRECT: "incorrect secure messaging data objects",
    SW_WRONG_DATA: "incorrect parameters in the data field",
    SW_FILE_NOT_FOUND: "file or application not found",
    SW_NOT_ENOUGH_MEMORY: "not enough memory space in the file",
    SW_WRONG_P1P2: "incorrect parameters P1-P2",
    SW_REFERENCED_DATA_NOT_FOUND: "referenced data not found",
    SW_FILE_EXISTS: "file already exists",
    SW_WRONG_OFFSET: "wrong parameters (offset outside the EF)",
    SW_INS_NOT_SUPPORTED: "instruction not supported",
    SW_CLA_NOT_SUPPORTED: "class not supported",
    SW_UNKNOWN: "no precise diagnosis",
}


def describe_sw(sw: int) -> str:
    """'6A82 file or application not found' style text for logs and error messages."""
    meaning = _MEANINGS.get(sw)
    if meaning is None:
        if sw >> 8 == 0x61:
            meaning = f"{sw & 0xFF} more bytes available"
        elif sw >> 8 == 0x6C:
            meaning = f"wrong Le; exact length is {sw & 0xFF}"
        elif sw & 0xFFF0 == 0x63C0:
            meaning = f"verification failed, {sw & 0x0F} tries left"
        else:
            meaning = "unknown status"
    return f"{sw:04X} {meaning}"


def hex_text(data: bytes) -> str:
    """``data.hex()``, also on MicroPython, whose ``b"".hex()`` gives b'' instead of ''."""
    return bytes(data).hex() if data else ""


class ApduError(ValueError):
    """Bytes that are not a well-formed APDU."""


class Command:
    """A command APDU. ``le`` is None when absent; 256 (short) or 65536 (extended) mean
    "as many as available"."""

    def __init__(
        self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None
    ) -> None:
        if not (0 <= cla <= 255 and 0 <= ins <= 255 and 0 <= p1 <= 255 and 0 <= p2 <= 255):
            raise ApduError("header bytes must be 0..255")
        if len(data) > 65535:
            raise ApduError("command data longer than 65535 bytes")
        if le is not None and not 1 <= le <= 65536:
            raise ApduError("Le must be 1..65536")
        self.cla = cla
        self.ins = ins
        self.p1 = p1
        self.p2 = p2
        self.data = bytes(data)
        self.le = le

    def needs_extended(self) -> bool:
        return len(self.data) > 255 or (self.le is not None and self.le > 256)

    def encode(self, extended: bool = False) -> bytes:
        """Serialise; extended length when asked or when the sizes need it."""
        out = bytearray([self.cla, self.ins, self.p1, self.p2])
        ext = extended or self.needs_extended()
        n = len(self.data)
        if ext:
            if n:
                out += bytes([0, n >> 8, n & 0xFF]) + self.data
            if self.le is not None:
                le = self.le % 65536  # 65536 -> 0000
                if not n:
                    out.append(0)
                out += bytes([le >> 8, le & 0xFF])
        else:
            if n:
                out.append(n)
                out += self.data
            if self.le is not None:
                out.append(self.le % 256)  # 256 -> 00
        return bytes(out)

    @staticmethod
    def decode(raw: bytes) -> "Command":
        """Parse any of the ISO 7816-3 cases 1, 2S/E, 3S/E, 4S/E."""
        n = len(raw)
        if n < 4:
            raise ApduError("APDU shorter than its header")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return Command(cla, ins, p1, p2)
        if n == 5:
            return Command(cla, ins, p1, p2, b"", raw[4] or 256)
        if raw[4] != 0:  # short, with data
            lc = raw[4]
            if n == 5 + lc:
                return Command(cla, ins, p1, p2, raw[5:])
            if n == 6 + lc:
                return Command(cla, ins, p1, p2, raw[5 : 5 + lc], raw[5 + lc] or 256)
            raise ApduError("Lc does not match the APDU length")
        # extended: 00, then Le (2 bytes) or Lc (2 bytes) data [Le (2 bytes)]
        if n < 7:
            raise ApduError("extended-length APDU shorter than 7 bytes")
        if n == 7:
            le = (raw[5] << 8) | raw[6]
            return Command(cla, ins, p1, p2, b"", le or 65536)
        lc = (raw[5] << 8) | raw[6]
        if lc == 0:
            raise ApduError("extended Lc of zero")
        if n == 7 + lc:
            return Command(cla, ins, p1, p2, raw[7:])
        if n == 9 + lc:
            le = (raw[7 + lc] << 8) | raw[8 + lc]
            return Command(cla, ins, p1, p2, raw[7 : 7 + lc], le or 65536)
        raise ApduError("extended Lc does not match the APDU length")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return (self.cla, self.ins, self.p1, self.p2, self.data, self.le) == (
            other.cla,
            other.ins,
            other.p1,
            other.p2,
            other.data,
            other.le,
        )

    def __hash__(self) -> int:
        return hash((self.cla, self.ins, self.p1, self.p2, self.data, self.le))

    def __repr__(self) -> str:
        header = f"{self.cla:02X} {self.ins:02X} {self.p1:02X} {self.p2:02X}"
        return f"Command({header}, data={hex_text(self.data)}, le={self.le!r})"


class Response:
    """A response APDU: data and the two status bytes."""

    def __init__(self, data: bytes, sw: int) -> None:
        if not 0 <= sw <= 0xFFFF:
            raise ApduError("status word must be 16 bits")
        self.data = bytes(data)
        self.sw = sw

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def encode(self) -> bytes:
        return self.data + bytes([self.sw >> 8, self.sw & 0xFF])

    @staticmethod
    def decode(raw: bytes) -> "Response":
        if len(raw) < 2:
            raise ApduError("response APDU shorter than its status word")
        return Response(raw[:-2], (raw[-2] << 8) | raw[-1])

    def describe(self) -> str:
        return describe_sw(self.sw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return self.data == other.data and self.sw == other.sw

    def __hash__(self) -> int:
        return hash((self.data, self.sw))

    def __repr__(self) -> str:
        return f"Response({hex_text(self.data)}, {self.sw:04X})"
