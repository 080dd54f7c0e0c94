"""Minimal BER-TLV for the card protocol: secure-messaging data objects and FCPs.

Only what the APDU layer needs (one level at a time, definite lengths); the LDS files
themselves are built by :mod:`enrollment.icao`. MicroPython-compatible.
"""


class TlvError(ValueError):
    """Malformed BER-TLV."""


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    if n < 0x10000:
        return bytes([0x82, n >> 8, n & 0xFF])
    raise TlvError("length too large")


def encode_tag(tag: int) -> bytes:
    if tag < 0x100:
        return bytes([tag])
    if tag < 0x10000:
        return bytes([tag >> 8, tag & 0xFF])
    raise TlvError("tags longer than two bytes are not used here")


def tlv(tag: int, value: bytes) -> bytes:
    return encode_tag(tag) + encode_length(len(value)) + bytes(value)


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """Split a concatenation of TLVs into (tag, value) pairs, in order."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        if data[i] in (0x00, 0xFF):  # padding between objects (ISO 7816-4 5.2.2)
            i += 1
            continue
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            if i >= n:
                raise TlvError("truncated tag")
            tag = (tag << 8) | data[i]
            if data[i] & 0x80:
                raise TlvError("tags longer than two bytes are not used here")
            i += 1
        if i >= n:
            raise TlvError("truncated length")
        first = data[i]
        i += 1
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 3 or i + count > n:
                raise TlvError("bad length field")
            length = 0
            for _ in range(count):
                length = (length << 8) | data[i]
                i += 1
        if i + length > n:
            raise TlvError("value runs past the end")
        out.append((tag, bytes(data[i : i + length])))
        i += length
    return out


def find(pairs: list[tuple[int, bytes]], tag: int) -> bytes | None:
    for t, v in pairs:
        if t == tag:
            return v
    return None


def total_length(data: bytes) -> int:
    """Length of the first TLV in ``data`` (header + value), from its first bytes only.

    Lets a reader size an EF from its first few bytes (the LDS files are one TLV each).
    """
    if len(data) < 2:
        raise TlvError("need at least two bytes")
    i = 1
    if data[0] & 0x1F == 0x1F:
        i = 2
    if i >= len(data):
        raise TlvError("truncated")
    first = data[i]
    i += 1
    if first < 0x80:
        return i + first
    count = first & 0x7F
    if count == 0 or count > 3 or i + count > len(data):
        raise TlvError("bad or truncated length field")
    length = 0
    for _ in range(count):
        length = (length << 8) | data[i]
        i += 1
    return i + length
