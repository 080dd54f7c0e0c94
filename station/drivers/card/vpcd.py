"""vpcd's card-side wire protocol (vsmartcard), sans-I/O.

vpcd (the PC/SC reader driver inside pcscd) listens on TCP; a card emulator connects to
it (card inserted) and disconnects (card removed). Every message in either direction is
a 2-byte big-endian length and a payload. A 1-byte payload from vpcd is a control
message: 00 power off, 01 power on, 02 reset, 04 send the ATR (answered with the ATR);
a longer payload is a command APDU, answered with the response APDU. Power on/off and
reset get no answer. MicroPython-compatible.
"""

from .applet import Card

CTRL_POWER_OFF = 0x00
CTRL_POWER_ON = 0x01
CTRL_RESET = 0x02
CTRL_ATR = 0x04


class VpcdError(ValueError):
    """A message that breaks the framing (unknown control byte, oversize frame)."""


def frame(payload: bytes) -> bytes:
    if len(payload) > 0xFFFF:
        raise VpcdError("payload longer than a vpcd frame")
    return bytes([len(payload) >> 8, len(payload) & 0xFF]) + payload


class Deframer:
    """Bytes from the socket in, whole payloads out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 2:
            n = (self._buf[0] << 8) | self._buf[1]
            if len(self._buf) < 2 + n:
                break
            out.append(bytes(self._buf[2 : 2 + n]))
            self._buf = self._buf[2 + n :]
        return out


class CardSlot:
    """Routes vpcd payloads to a card: ``handle(payload) -> reply payload or None``."""

    def __init__(self, card: Card) -> None:
        self.card = card
        self.powered = False
        self.apdus = 0

    def handle(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            ctrl = payload[0]
            if ctrl == CTRL_ATR:
                return self.card.atr
            if ctrl in (CTRL_POWER_ON, CTRL_RESET):
                self.powered = True
                self.card.power_on()
                return None
            if ctrl == CTRL_POWER_OFF:
                self.powered = False
                self.card.power_on()  # transient state is lost with the field
                return None
            raise VpcdError("unknown vpcd control byte")
        self.apdus += 1
        return self.card.process(payload)
