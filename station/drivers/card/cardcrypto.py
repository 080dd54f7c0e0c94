"""The crypto primitives the card cores need and MicroPython's stdlib lacks.

The cores (BAC, secure messaging, the applet) receive an object of this shape; the host
passes :class:`station.drivers.card.hostcrypto.HostCrypto`, a microcontroller would pass
one backed by its own DES/SHA-1 code. Keys are 16-byte two-key 3DES keys (K1 || K2).
"""


class CardCrypto:
    """Interface: subclass and implement every method."""

    def sha1(self, data: bytes) -> bytes:
        raise NotImplementedError

    def tdes_cbc_encrypt(self, key: bytes, data: bytes) -> bytes:
        """Two-key 3DES in CBC mode with a zero IV; ``data`` is already padded."""
        raise NotImplementedError

    def tdes_cbc_decrypt(self, key: bytes, data: bytes) -> bytes:
        raise NotImplementedError

    def retail_mac(self, key: bytes, data: bytes) -> bytes:
        """ISO/IEC 9797-1 MAC algorithm 3 (DES, 3DES output transform), 8 bytes.

        ``data`` is already padded (method 2) to a multiple of 8 bytes.
        """
        raise NotImplementedError

    def random(self, length: int) -> bytes:
        raise NotImplementedError

    # AES, for PACE and its secure messaging (ICAO 9303-11 9.8.6.3)

    def aes_cbc_encrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        raise NotImplementedError

    def aes_cbc_decrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        raise NotImplementedError

    def aes_cmac(self, key: bytes, data: bytes) -> bytes:
        """AES-CMAC (NIST SP 800-38B), the full 16 bytes."""
        raise NotImplementedError

    # ECDSA, for Active Authentication (the chip signs the terminal's challenge)

    def ecdsa_p256_sign(self, private_key: bytes, message: bytes) -> bytes:
        """ECDSA with SHA-256 on NIST P-256, 32-byte private scalar; the signature in the
        plain format r || s (BSI TR-03111), 64 bytes."""
        raise NotImplementedError


def pad(data: bytes, block: int = 8) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 0x80, then zeros to a multiple of ``block`` bytes."""
    n = len(data) + 1
    return bytes(data) + b"\x80" + bytes((block - n % block) % block)


def unpad(data: bytes, block: int = 8) -> bytes:
    """Undo :func:`pad`; raises ValueError when the padding is malformed."""
    i = len(data) - 1
    while i >= 0 and data[i] == 0:
        i -= 1
    if i < 0 or data[i] != 0x80 or len(data) - i > block:
        raise ValueError("bad ISO 9797-1 method 2 padding")
    return bytes(data[:i])


def xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("xor of unequal lengths")
    return bytes([a[i] ^ b[i] for i in range(len(a))])


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """``a == b`` in a time that does not depend on where they differ, for MACs,
    authentication tokens and nonces (``==`` stops at the first difference: a timing
    oracle for a forger). MicroPython has no ``hmac.compare_digest``, hence this loop.
    Lengths are not secret: unequal lengths are unequal at once."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
