"""ICAO 9303-11 secure messaging, both sides: 3DES session keys (BAC) and AES (PACE).

Commands: DO'87' (even INS) or DO'85' (odd INS) carry the encrypted data, DO'97' the
expected length, DO'8E' the MAC over SSC || padded header || DOs. Responses carry
DO'87'/'85', DO'99' (status word) and DO'8E'. The send sequence counter is incremented
before each command and each response; with AES it also gives the IV, E(KSenc, SSC).
Sans-I/O and MicroPython-compatible; crypto is injected.
"""

from .apdu import SW_SM_INCORRECT, SW_SM_MISSING, Command, Response, describe_sw
from .cardcrypto import CardCrypto, constant_time_equal, pad, unpad
from .tlv import TlvError, encode_length, parse, tlv

# The only status words a chip may answer in plain during a session (ICAO 9303-11 9.8).
PLAIN_SM_ERRORS = (SW_SM_MISSING, SW_SM_INCORRECT)


class SmError(Exception):
    """A secure-messaging object is missing, malformed or fails its MAC."""


def _le_bytes(le: int, extended: bool) -> bytes:
    if extended:
        le = le % 65536
        return bytes([le >> 8, le & 0xFF])
    return bytes([le % 256])


class SecureMessaging:
    """One SM session with 3DES keys (BAC): session keys and the SSC."""

    block = 8

    def __init__(self, crypto: CardCrypto, ks_enc: bytes, ks_mac: bytes, ssc: bytes) -> None:
        if len(ks_enc) != 16 or len(ks_mac) != 16 or len(ssc) != self.block:
            raise ValueError("session keys are 16 bytes, the SSC one block")
        self.crypto = crypto
        self.ks_enc = bytes(ks_enc)
        self.ks_mac = bytes(ks_mac)
        self.ssc = int.from_bytes(ssc, "big")

    # --- the cipher suite (overridden for AES) ------------------------------------------

    def _encrypt(self, ssc: bytes, data: bytes) -> bytes:
        return self.crypto.tdes_cbc_encrypt(self.ks_enc, data)

    def _decrypt(self, ssc: bytes, data: bytes) -> bytes:
        return self.crypto.tdes_cbc_decrypt(self.ks_enc, data)

    def _mac(self, data: bytes) -> bytes:
        return self.crypto.retail_mac(self.ks_mac, pad(data, 8))

    # --- shared -------------------------------------------------------------------------

    def ssc_bytes(self) -> bytes:
        return self.ssc.to_bytes(self.block, "big")

    def _next_ssc(self) -> bytes:
        self.ssc = (self.ssc + 1) % (1 << (8 * self.block))
        return self.ssc_bytes()

    def _encrypted_do(self, ssc: bytes, ins: int, data: bytes) -> bytes:
        cipher = self._encrypt(ssc, pad(data, self.block))
        if ins & 1:  # odd INS: BER-TLV data, no padding-content indicator
            return tlv(0x85, cipher)
        return tlv(0x87, b"\x01" + cipher)

    def _decrypt_do(self, ssc: bytes, tag: int, value: bytes) -> bytes:
        if tag == 0x87:
            if not value or value[0] != 0x01:
                raise SmError("DO'87' without padding-content indicator 01")
            value = value[1:]
        if not value or len(value) % self.block:
            raise SmError("encrypted data object is not a whole number of blocks")
        try:
            return unpad(self._decrypt(ssc, value), self.block)
        except ValueError as exc:
            raise SmError("bad padding in the decrypted data object") from exc

    # --- terminal side ------------------------------------------------------------------

    def protect(self, command: Command) -> Command:
        """Wrap a plain command for the chip (increments the SSC)."""
        ssc = self._next_ssc()
        cla = command.cla | 0x0C
        header = pad(bytes([cla, command.ins, command.p1, command.p2]), self.block)
        body = b""
        if command.data:
            body += self._encrypted_do(ssc, command.ins, command.data)
        extended = command.needs_extended()
        if command.le is not None:
            body += tlv(0x97, _le_bytes(command.le, extended))
        body += tlv(0x8E, self._mac(ssc + header + body))
        # Le of the protected APDU: "all available", extended when the plain one was.
        le = 65536 if extended or len(body) > 255 else 256
        return Command(cla, command.ins, command.p1, command.p2, body, le)

    def unprotect(self, response: Response) -> Response:
        """Check and unwrap the chip's response (increments the SSC).

        Only 6987 and 6988 (the chip reporting an SM error, ICAO 9303-11 9.8) may come
        back plain; they are returned as is, and the session is then over. Any other
        status word without SM objects raises SmError: nothing vouches for it, so a faulty
        link or a man in the middle could have put it there.
        """
        if not response.data:
            if response.sw in PLAIN_SM_ERRORS:
                return response
            raise SmError(f"{describe_sw(response.sw)} without secure messaging")
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
        ssc = self._next_ssc()
        if not constant_time_equal(self._mac(ssc + covered), mac):
            raise SmError("response MAC does not verify")
        data = b""
        if encrypted is not None:
            data = self._decrypt_do(ssc, enc_tag, encrypted)
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
        header = pad(bytes([command.cla, command.ins, command.p1, command.p2]), self.block)
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
        ssc = self._next_ssc()
        if not constant_time_equal(self._mac(ssc + header + covered), mac):
            raise SmError("command MAC does not verify")
        data = b""
        if encrypted is not None:
            data = self._decrypt_do(ssc, enc_tag, encrypted)
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
        ssc = self._next_ssc()
        body = b""
        if response.data:
            body += self._encrypted_do(ssc, ins, response.data)
        body += tlv(0x99, bytes([response.sw >> 8, response.sw & 0xFF]))
        return Response(body + tlv(0x8E, self._mac(ssc + body)), response.sw)


class AesSecureMessaging(SecureMessaging):
    """SM after PACE with AES keys: 16-byte SSC (from 0), IV = E(KSenc, SSC), AES-CMAC
    truncated to 8 bytes."""

    block = 16

    def _encrypt(self, ssc: bytes, data: bytes) -> bytes:
        iv = self.crypto.aes_cbc_encrypt(self.ks_enc, ssc, bytes(16))
        return self.crypto.aes_cbc_encrypt(self.ks_enc, data, iv)

    def _decrypt(self, ssc: bytes, data: bytes) -> bytes:
        iv = self.crypto.aes_cbc_encrypt(self.ks_enc, ssc, bytes(16))
        return self.crypto.aes_cbc_decrypt(self.ks_enc, data, iv)

    def _mac(self, data: bytes) -> bytes:
        return self.crypto.aes_cmac(self.ks_mac, pad(data, 16))[:8]


def protected_overhead(data_length: int, block: int = 8) -> int:
    """Bytes a response of ``data_length`` plain bytes takes once wrapped (for chunking)."""
    enc = (data_length // block + 1) * block + 1
    return 1 + len(encode_length(enc)) + enc + 4 + 10
