"""BER-TLV as ICAO 9303-10 uses it: tags of one to three bytes (61, 5F1F, 7F61), definite
lengths in short form or long form with up to four length bytes (81 xx, 82 xxxx, ...).

Decoding is strict: a truncated tag, length or value, an indefinite length (80) or bytes
left over where exactly one object is expected raise :class:`LdsError` saying where.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from enrollment.icao.errors import LdsError

__all__ = [
    "Tlv",
    "decode_tlv",
    "encode_length",
    "encode_tag",
    "expect",
    "is_constructed",
    "iter_tlv",
    "object_length",
    "tlv",
]

_MAX_LENGTH_BYTES = 4


@dataclass(frozen=True)
class Tlv:
    """One data object: ``tag`` as the integer of its bytes (0x5F1F), and its value."""

    tag: int
    value: bytes


def encode_tag(tag: int) -> bytes:
    if tag < 0:
        raise ValueError(f"negative tag {tag}")
    raw = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    if len(raw) > 3:
        raise ValueError(f"tag {tag:#x} is longer than three bytes")
    # A multi-byte tag must start with the 'more bytes follow' marker (low five bits set)
    # and set bit 8 on every subsequent byte except the last.
    if len(raw) > 1:
        if raw[0] & 0x1F != 0x1F or any(b & 0x80 == 0 for b in raw[1:-1]) or raw[-1] & 0x80:
            raise ValueError(f"{tag:#x} is not a valid BER tag")
    elif raw[0] & 0x1F == 0x1F:
        raise ValueError(f"one-byte tag {tag:#x} announces further tag bytes")
    return raw


def encode_length(length: int) -> bytes:
    if length < 0:
        raise ValueError(f"negative length {length}")
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(raw) > _MAX_LENGTH_BYTES:
        raise ValueError(f"length {length} needs more than {_MAX_LENGTH_BYTES} bytes")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    """The encoding of one data object (minimal length form)."""
    return encode_tag(tag) + encode_length(len(value)) + value


def is_constructed(tag: int) -> bool:
    """Bit 6 of the first tag byte: the value is itself a series of data objects."""
    first = encode_tag(tag)[0]
    return bool(first & 0x20)


def _read_header(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, value length, value offset) of the object at ``offset``."""
    end = len(data)
    if offset >= end:
        raise LdsError(f"TLV truncated: no tag at offset {offset}")
    start = offset
    tag = data[offset]
    offset += 1
    if tag & 0x1F == 0x1F:
        while True:
            if offset >= end:
                raise LdsError(f"TLV truncated: tag at offset {start} is cut short")
            b = data[offset]
            tag = tag << 8 | b
            offset += 1
            if not b & 0x80:
                break
            if offset - start >= 3:
                raise LdsError(f"TLV tag at offset {start} is longer than three bytes")
    if offset >= end:
        raise LdsError(f"TLV truncated: no length after tag {tag:X} at offset {start}")
    first = data[offset]
    offset += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise LdsError(f"indefinite length (80) for tag {tag:X} at offset {start}")
    else:
        n = first & 0x7F
        if n > _MAX_LENGTH_BYTES:
            raise LdsError(f"length of tag {tag:X} at offset {start} uses {n} bytes")
        if offset + n > end:
            raise LdsError(f"TLV truncated: length of tag {tag:X} at offset {start} cut short")
        length = int.from_bytes(data[offset : offset + n], "big")
        offset += n
    return tag, length, offset


def decode_tlv(data: bytes, offset: int = 0) -> tuple[Tlv, int]:
    """The object starting at ``offset`` and the offset just after it."""
    tag, length, value_at = _read_header(data, offset)
    if value_at + length > len(data):
        raise LdsError(
            f"TLV truncated: tag {tag:X} at offset {offset} declares {length} bytes, "
            f"{len(data) - value_at} present"
        )
    return Tlv(tag, bytes(data[value_at : value_at + length])), value_at + length


def iter_tlv(data: bytes) -> Iterator[Tlv]:
    """The consecutive objects that make up ``data`` exactly (the value of a template)."""
    offset = 0
    while offset < len(data):
        obj, offset = decode_tlv(data, offset)
        yield obj


def expect(data: bytes, tag: int) -> bytes:
    """The value of the single object ``data`` must consist of, which must carry ``tag``."""
    obj, end = decode_tlv(data)
    if obj.tag != tag:
        raise LdsError(f"expected tag {tag:X}, found {obj.tag:X}")
    if end != len(data):
        raise LdsError(f"{len(data) - end} bytes follow the object with tag {tag:X}")
    return obj.value


def object_length(head: bytes) -> int:
    """Total encoded size of the object whose first bytes are ``head``.

    A card reader reads the first few bytes of an EF (six are always enough) to learn how
    many to READ BINARY in all.
    """
    _, length, value_at = _read_header(head, 0)
    return value_at + length
