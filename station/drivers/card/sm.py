"""ICAO 9303-11 secure messaging with 3DES session keys (BAC), both sides.

Commands: DO'87' (even INS) or DO'85' (odd INS) carry the encrypted data, DO'97' the
expected length, DO'8E' the retail MAC over SSC || padded header || DOs. Responses carry
DO'87'/'85', DO'99' (status word) and DO'8E'. The SSC is incremented before every MAC.
Sans-I/O and MicroPython-compatible; crypto is injected.
"""

from .apdu import Command, Response
from .cardcrypto import CardCrypto, pad, unpad
from .tlv import TlvError, encode_length, parse, tlv


class SmError(Exception):
    """A secure-messaging object is missing, malformed or fails its MAC."""


def _mask_cla(cla: int) -> int:
    return cla | 0x0C


def _encrypted_do(crypto: CardCrypto, key: bytes, ins: int, data: bytes) -> bytes:
    cipher = crypto.tdes_cbc_encrypt(key, pad(data))
    if ins & 1:  # odd INS: BER-TLV data, no padding-content indicator
        return tlv(0x85, cipher)
    return tlv(0x87, b"\x01" + cipher)


def _decrypt_do(crypto: CardCrypto, key: bytes, tag: int, value: bytes) -> bytes:
    if tag == 0x87:
        if not value or value[0] != 0x01:
            raise SmError("DO'87' without padding-content indicator 01")
        value = value[1:]
    if not value or len(value) % 8:
        raise SmError("encrypted data object is not a whole number of blocks")
    try:
        return unpad(crypto.tdes_cbc_decrypt(key, value))
    except ValueError as exc:
        raise SmError("bad padding in the decrypted data object") from exc


def _le_bytes(le: int, extended: bool) -> bytes:
    if extended:
        le = le % 65536
        return bytes([le >> 8, le & 0xFF])
    return bytes([le % 256])


class SecureMessaging:
    """One SM session: session keys and the send sequence counter (SSC)."""

    def __init__(self, crypto: CardCrypto, ks_enc: bytes, ks_mac: bytes, ssc: bytes) -> None:
        if len(ks_enc) != 16 or len(ks_mac) != 16 or len(ssc) != 8:
            raise ValueError("session keys are 16 bytes, the SSC 8")
        self.crypto = crypto
        self.ks_enc = bytes(ks_enc)
        self.ks_mac = bytes(ks_mac)
        self.ssc = int.from_bytes(ssc, "big")

    def ssc_bytes(self) -> bytes:
        return self.ssc.to_bytes(8, "big")

    def _next_ssc(self) -> bytes:
        self.ssc = (self.ssc + 1) % (1 << 64)
        return self.ssc_bytes()

    def _mac(self, data: bytes) -> bytes:
        return self.crypto.retail_mac(self.ks_mac, pad(data))

    # --- terminal side ------------------------------------------------------------------

    def protect(self, command: Command) -> Command:
        """Wrap a plain command for the chip (increments the SSC)."""
        cla = _mask_cla(command.cla)
        header = pad(bytes([cla, command.ins, command.p1, command.p2]))
        body = b""
        if command.data:
            body += _encrypted_do(self.crypto, self.ks_enc, command.ins, command.data)
        extended = command.needs_extended()
        if command.le is not None:
            body += tlv(0x97, _le_bytes(command.le, extended))
        mac = self._mac(self._next_ssc() + header + body)
        body += tlv(0x8E, mac)
        # Le of the protected APDU: "all available", extended when the plain one was.
        le = 65536 if extended or len(body) > 255 else 256
        return Command(cla, command.ins, command.p1, command.p2, body, le)

    def unprotect(self, response: Response) -> Response:
        """Check and unwrap the chip's response (increments the SSC).

        A response without SM objects (the chip reporting an SM error such as 6987/6988
        in plain) is returned as is: the session is then over.
        """
        if not response.data:
            if response.ok:
                raise SmError("9000 without secure-messaging objects")
            return response
        try:
            objects = parse(response.data)
        except TlvError as exc:
            raise SmError("malformed secure-messaging response") from exc
        covered = b""
        encrypted = None
        enc_tag = 0
        status = None
        mac = None
        for tag, value in objects:
            if tag in (0x85, 0x87):
                encrypted = value
                enc_tag = tag
                covered += tlv(tag, value)
            elif tag == 0x99:
                status = value
                covered += tlv(tag, value)
            elif tag == 0x8E:
                mac = value
        if mac is None or status is None or len(status) != 2:
            raise SmError("response lacks DO'99' or DO'8E'")
        if self._mac(self._next_ssc() + covered) != mac:
            raise SmError("response MAC does not verify")
        data = b""
        if encrypted is not None:
            data = _decrypt_do(self.crypto, self.ks_enc, enc_tag, encrypted)
        return Response(data, (status[0] << 8) | status[1])

    # --- chip side ----------------------------------------------------------------------

    def unprotect_command(self, command: Command) -> Command:
        """Check and unwrap a terminal's protected command (increments the SSC)."""
        if command.cla & 0x0C != 0x0C:
            raise SmError("command is not secure-messaging protected")
        try:
            objects = parse(command.data)
        except TlvError as exc:
            raise SmError("malformed secure-messaging command") from exc
        header = pad(bytes([command.cla, command.ins, command.p1, command.p2]))
        covered = b""
        encrypted = None
        enc_tag = 0
        le_value = None
        mac = None
        for tag, value in objects:
            if tag in (0x85, 0x87):
                encrypted = value
                enc_tag = tag
                covered += tlv(tag, value)
            elif tag == 0x97:
                le_value = value
                covered += tlv(tag, value)
            elif tag == 0x8E:
                mac = value
            else:
                raise SmError(f"unexpected data object {tag:02X}")
        if mac is None:
            raise SmError("command lacks DO'8E'")
        if self._mac(self._next_ssc() + header + covered) != mac:
            raise SmError("command MAC does not verify")
        data = b""
        if encrypted is not None:
            data = _decrypt_do(self.crypto, self.ks_enc, enc_tag, encrypted)
        le = None
        if le_value is not None:
            if len(le_value) == 1:
                le = le_value[0] or 256
            elif len(le_value) == 2:
                le = ((le_value[0] << 8) | le_value[1]) or 65536
            else:
                raise SmError("DO'97' must hold one or two bytes")
        return Command(command.cla & ~0x0C & 0xFF, command.ins, command.p1, command.p2, data, le)

    def protect_response(self, response: Response, ins: int) -> Response:
        """Wrap the chip's plain response to a command with instruction ``ins``."""
        body = b""
        if response.data:
            body += _encrypted_do(self.crypto, self.ks_enc, ins, response.data)
        body += tlv(0x99, bytes([response.sw >> 8, response.sw & 0xFF]))
        mac = self._mac(self._next_ssc() + body)
        return Response(body + tlv(0x8E, mac), response.sw)


def protected_overhead(data_length: int) -> int:
    """Bytes a response of ``data_length`` plain bytes takes once wrapped (for chunking)."""
    enc = (data_length // 8 + 1) * 8 + 1
    return 1 + len(encode_length(enc)) + enc + 4 + 10
