"""Basic Access Control (ICAO 9303-11 section 4.3): key derivation and mutual
authentication, for the terminal (the encoder) and for the chip (our emulator).

Sans-I/O and MicroPython-compatible; crypto is injected (:class:`CardCrypto`).
"""

from .cardcrypto import CardCrypto, constant_time_equal, xor
from .sm import SecureMessaging

ENC = 1
MAC = 2
_WEIGHTS = (7, 3, 1)


class BacError(Exception):
    """Mutual authentication failed: wrong keys (wrong MRZ) or a tampered exchange."""


def check_digit(text: str) -> str:
    """ICAO 9303-3 check digit: weights 7-3-1, digits, A=10.., '<'=0."""
    total = 0
    for i, ch in enumerate(text):
        if "0" <= ch <= "9":
            value = ord(ch) - 48
        elif "A" <= ch <= "Z":
            value = ord(ch) - 55
        elif ch == "<":
            value = 0
        else:
            raise ValueError(f"not an MRZ character: {ch!r} (MRZ text is A-Z, 0-9 and <)")
        total += value * _WEIGHTS[i % 3]
    return str(total % 10)


def mrz_information(document_number: str, birth_date: str, expiry_date: str) -> str:
    """The BAC seed string: document number (padded to 9), birth and expiry dates (YYMMDD),
    each followed by its check digit.

    The fields are MRZ text as printed: anything else, lower case included, raises
    ValueError (as :func:`enrollment.icao.mrz.mrz_information` raises LdsError). Quietly
    upper-casing would accept an MRZ other than the one the chip's keys came from.
    """
    number = document_number
    if len(number) < 9:
        number = number + "<" * (9 - len(number))
    out = ""
    for field in (number, birth_date, expiry_date):
        out += field + check_digit(field)
    return out


def _adjust_parity(key: bytes) -> bytes:
    out = bytearray(key)
    for i in range(len(out)):
        b = out[i] & 0xFE
        ones = 0
        v = b
        while v:
            ones += v & 1
            v >>= 1
        out[i] = b | (0 if ones % 2 else 1)  # odd parity per DES byte
    return bytes(out)


def derive_key(crypto: CardCrypto, seed: bytes, counter: int) -> bytes:
    """ICAO 9303-11 9.7.1: SHA-1(seed || counter), 16 bytes, DES parity adjusted."""
    return _adjust_parity(crypto.sha1(seed + counter.to_bytes(4, "big"))[:16])


def key_seed(crypto: CardCrypto, mrz_info: str) -> bytes:
    return crypto.sha1(mrz_info.encode())[:16]


def document_keys(crypto: CardCrypto, mrz_info: str) -> tuple[bytes, bytes]:
    """(K_enc, K_mac): the document basic access keys for an MRZ information string."""
    seed = key_seed(crypto, mrz_info)
    return derive_key(crypto, seed, ENC), derive_key(crypto, seed, MAC)


def _session(
    crypto: CardCrypto, k_ifd: bytes, k_ic: bytes, rnd_ic: bytes, rnd_ifd: bytes
) -> SecureMessaging:
    seed = xor(k_ifd, k_ic)
    ssc = rnd_ic[4:] + rnd_ifd[4:]
    return SecureMessaging(
        crypto, derive_key(crypto, seed, ENC), derive_key(crypto, seed, MAC), ssc
    )


class BacTerminal:
    """The inspection system's side: GET CHALLENGE's answer in, MUTUAL AUTHENTICATE out."""

    def __init__(self, crypto: CardCrypto, k_enc: bytes, k_mac: bytes) -> None:
        self.crypto = crypto
        self.k_enc = k_enc
        self.k_mac = k_mac
        self._rnd_ic = b""
        self._rnd_ifd = b""
        self._k_ifd = b""

    def authenticate_data(self, rnd_ic: bytes, rnd_ifd: bytes = b"", k_ifd: bytes = b"") -> bytes:
        """E_IFD || M_IFD for MUTUAL AUTHENTICATE (randoms drawn unless given, for tests)."""
        if len(rnd_ic) != 8:
            raise BacError("the chip's challenge must be 8 bytes")
        self._rnd_ic = bytes(rnd_ic)
        self._rnd_ifd = bytes(rnd_ifd) or self.crypto.random(8)
        self._k_ifd = bytes(k_ifd) or self.crypto.random(16)
        e_ifd = self.crypto.tdes_cbc_encrypt(self.k_enc, self._rnd_ifd + self._rnd_ic + self._k_ifd)
        return e_ifd + self.crypto.retail_mac(self.k_mac, _pad32(e_ifd))

    def finish(self, response_data: bytes) -> SecureMessaging:
        """Check the chip's E_IC || M_IC and open the secure-messaging session."""
        if len(response_data) != 40:
            raise BacError("MUTUAL AUTHENTICATE answer must be 40 bytes")
        e_ic = response_data[:32]
        if not constant_time_equal(
            self.crypto.retail_mac(self.k_mac, _pad32(e_ic)), response_data[32:]
        ):
            raise BacError("the chip's MAC does not verify")
        r = self.crypto.tdes_cbc_decrypt(self.k_enc, e_ic)
        if not constant_time_equal(r[:16], self._rnd_ic + self._rnd_ifd):
            raise BacError("the chip did not return our nonces")
        return _session(self.crypto, self._k_ifd, r[16:], self._rnd_ic, self._rnd_ifd)


class BacChip:
    """The chip's side: GET CHALLENGE, then MUTUAL AUTHENTICATE's check and answer."""

    def __init__(self, crypto: CardCrypto, k_enc: bytes, k_mac: bytes) -> None:
        self.crypto = crypto
        self.k_enc = k_enc
        self.k_mac = k_mac
        self.rnd_ic = b""

    def challenge(self, rnd_ic: bytes = b"") -> bytes:
        self.rnd_ic = bytes(rnd_ic) or self.crypto.random(8)
        return self.rnd_ic

    def respond(self, command_data: bytes, k_ic: bytes = b"") -> tuple[bytes, SecureMessaging]:
        """(E_IC || M_IC, session) or BacError; the challenge is single-use either way."""
        rnd_ic, self.rnd_ic = self.rnd_ic, b""
        if not rnd_ic:
            raise BacError("no challenge outstanding")
        if len(command_data) != 40:
            raise BacError("MUTUAL AUTHENTICATE data must be 40 bytes")
        e_ifd = command_data[:32]
        if not constant_time_equal(
            self.crypto.retail_mac(self.k_mac, _pad32(e_ifd)), command_data[32:]
        ):
            raise BacError("the terminal's MAC does not verify")
        s = self.crypto.tdes_cbc_decrypt(self.k_enc, e_ifd)
        if not constant_time_equal(s[8:16], rnd_ic):
            raise BacError("the terminal did not return our challenge")
        rnd_ifd = s[:8]
        k_ic = bytes(k_ic) or self.crypto.random(16)
        e_ic = self.crypto.tdes_cbc_encrypt(self.k_enc, rnd_ic + rnd_ifd + k_ic)
        answer = e_ic + self.crypto.retail_mac(self.k_mac, _pad32(e_ic))
        return answer, _session(self.crypto, s[16:32], k_ic, rnd_ic, rnd_ifd)


def _pad32(data: bytes) -> bytes:
    return data + b"\x80" + bytes(7)
