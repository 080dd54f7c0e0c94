"""ISO/IEC 19794-2:2005 finger minutiae records ("FMR\\0", record format, not card format).

Layout, all integers big-endian (cross-checked against NIST biomdi ``fmr.h`` and
FingerprintIO's ``Iso19794p2v2005Template``; the tests build records field by field
independently of this module):

Record header, 24 bytes::

    0  4  format identifier  b"FMR\\0"
    4  4  version            b" 20\\0"
    8  4  record length      whole record, header included
    12 2  capture equipment  4 bits certification + 12 bits device type id
    14 2  image width        pixels
    16 2  image height       pixels
    18 2  x resolution       pixels per centimetre (500 ppi -> 197)
    20 2  y resolution       pixels per centimetre
    22 1  number of finger views
    23 1  reserved           0

Each finger view: a 4-byte header (finger position 0-10; view number << 4 | impression
type; finger quality 0-100; number of minutiae), then 6 bytes per minutia::

    type << 14 | x   (type 0 other, 1 ridge ending, 2 bifurcation; x < 2**14)
    0    << 14 | y   (2 reserved bits, must be 0)
    angle            1 unit = 360/256 = 1.40625 degrees, counter-clockwise from x
    quality          0-100

then the extended data block: a 2-byte length (0 when absent) and that many bytes, made of
areas of (type id: 2, area length including these 4 bytes: 2, data).

``nbis-py`` 0.1.3 also writes "FMR\\0 20\\0" records, but not in this layout: its header
is 26 bytes (no resolution, no view count, finger view header squeezed to 2 bytes), minutia
quality is on 0-63 and there is no extended data length; :func:`decode_record` rejects them.
Its 6-byte minutia blocks do follow the layout (the tests compare them byte for byte).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from biometrics.errors import TemplateFormatError
from biometrics.fingerprint.minutiae import PPI, MinutiaSet

MAGIC = b"FMR\x00"
VERSION = b" 20\x00"
HEADER = struct.Struct(">4s4sIHHHHHBB")  # 24 bytes
VIEW = struct.Struct(">BBBB")
MINUTIA = struct.Struct(">HHBB")
ANGLE_UNIT = 2.0 * math.pi / 256.0
#: 500 ppi in pixels per centimetre, as ISO 19794-2:2005 records resolution.
PPCM_500 = round(PPI / 2.54)
IMPRESSION_TYPES = frozenset({0, 1, 2, 3, 8})  # live/non-live plain/rolled, swipe
MAX_MINUTIAE = 255


@dataclass(frozen=True, slots=True)
class IsoMinutia:
    """One minutia as stored: integer fields exactly as in the record."""

    kind: int  # 0 other, 1 ridge ending, 2 bifurcation
    x: int
    y: int
    angle: int  # 0-255, units of 1.40625 degrees
    quality: int  # 0-100


@dataclass(frozen=True, slots=True)
class IsoFingerView:
    """One finger view: position (0 unknown, 1-10 right thumb .. left little)."""

    position: int = 0
    view: int = 0
    impression: int = 0  # 0 live plain, 1 live rolled, 2 non-live plain, 3 non-live rolled
    quality: int = 0  # finger quality 0-100 (0 = not computed)
    minutiae: tuple[IsoMinutia, ...] = ()
    extended: bytes = b""  # the extended data block's content, areas kept as bytes


@dataclass(frozen=True, slots=True)
class IsoRecord:
    """A whole finger minutiae record."""

    width: int
    height: int
    views: tuple[IsoFingerView, ...]
    x_resolution: int = PPCM_500
    y_resolution: int = PPCM_500
    capture_equipment: int = 0  # 4 bits certification flags + 12 bits device type


def _fail(offset: int, what: str) -> TemplateFormatError:
    return TemplateFormatError(f"ISO 19794-2 record, byte {offset}: {what}")


def _check_extended(data: bytes, base: int) -> None:
    """Extended data areas must tile the block exactly (type, length >= 4, data)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise _fail(base + pos, "extended data area header truncated")
        _type, length = struct.unpack_from(">HH", data, pos)
        if length < 4 or pos + length > len(data):
            raise _fail(base + pos + 2, f"extended data area length {length} does not fit")
        pos += length


def encode_record(record: IsoRecord) -> bytes:
    """Serialise ``record``; raises ``ValueError`` for a field out of range."""
    if not (0 < record.width < 0x10000 and 0 < record.height < 0x10000):
        raise ValueError("image width and height must be 1-65535")
    if not (0 < record.x_resolution < 0x10000 and 0 < record.y_resolution < 0x10000):
        raise ValueError("resolution must be 1-65535 pixels per centimetre")
    if not 0 < len(record.views) <= 255:
        raise ValueError("a record holds 1-255 finger views")
    if not 0 <= record.capture_equipment < 0x10000:
        raise ValueError("capture equipment is a 16-bit field")
    body = bytearray()
    for v in record.views:
        if not 0 <= v.position <= 10:
            raise ValueError(f"finger position {v.position} outside 0-10")
        if not 0 <= v.view <= 15 or v.impression not in IMPRESSION_TYPES:
            raise ValueError("view number is 0-15; impression type 0-3 or 8")
        if not 0 <= v.quality <= 100:
            raise ValueError("finger quality must be 0-100")
        if len(v.minutiae) > MAX_MINUTIAE:
            raise ValueError(f"{len(v.minutiae)} minutiae: a view holds at most 255")
        if len(v.extended) > 0xFFFF:
            raise ValueError("extended data longer than 65535 bytes")
        _check_extended(v.extended, 0)
        body += VIEW.pack(v.position, v.view << 4 | v.impression, v.quality, len(v.minutiae))
        for m in v.minutiae:
            if m.kind not in (0, 1, 2):
                raise ValueError(f"minutia type {m.kind} is not 0, 1 or 2")
            if not (0 <= m.x < record.width and 0 <= m.y < record.height):
                raise ValueError(f"minutia ({m.x}, {m.y}) outside the image")
            if m.x > 0x3FFF or m.y > 0x3FFF:
                raise ValueError("minutia coordinates are 14-bit")
            if not (0 <= m.angle <= 255 and 0 <= m.quality <= 100):
                raise ValueError("minutia angle is 0-255 and quality 0-100")
            body += MINUTIA.pack(m.kind << 14 | m.x, m.y, m.angle, m.quality)
        body += struct.pack(">H", len(v.extended)) + v.extended
    length = HEADER.size + len(body)
    head = HEADER.pack(
        MAGIC,
        VERSION,
        length,
        record.capture_equipment,
        record.width,
        record.height,
        record.x_resolution,
        record.y_resolution,
        len(record.views),
        0,
    )
    return head + bytes(body)


def decode_record(data: bytes) -> IsoRecord:
    """Parse a record strictly: every field checked, no trailing or missing bytes.

    Raises :class:`TemplateFormatError` (naming the byte offset and field) on any
    deviation; never another exception for bytes input.
    """
    buf = bytes(data)
    if len(buf) < HEADER.size:
        raise _fail(len(buf), f"truncated: {len(buf)} bytes, the header alone is 24")
    magic, version, length, equipment, width, height, xres, yres, nviews, reserved = (
        HEADER.unpack_from(buf, 0)
    )
    if magic != MAGIC:
        raise _fail(0, f"format identifier {magic!r}, expected b'FMR\\x00'")
    if version != VERSION:
        raise _fail(4, f"version {version!r}, expected b' 20\\x00' (ISO 19794-2:2005)")
    if length != len(buf):
        raise _fail(8, f"record length field says {length}, the record has {len(buf)} bytes")
    if width == 0 or height == 0:
        raise _fail(14, "image width and height must be non-zero")
    if xres == 0 or yres == 0:
        raise _fail(18, "resolution must be non-zero")
    if nviews == 0:
        raise _fail(22, "number of finger views is 0")
    if reserved != 0:
        raise _fail(23, f"reserved byte is {reserved}, must be 0")
    pos = HEADER.size
    views = []
    for vi in range(nviews):
        if len(buf) - pos < VIEW.size:
            raise _fail(pos, f"finger view {vi} header truncated")
        position, view_imp, quality, count = VIEW.unpack_from(buf, pos)
        if position > 10:
            raise _fail(pos, f"finger position {position} outside 0-10")
        if view_imp & 0x0F not in IMPRESSION_TYPES:
            raise _fail(pos + 1, f"impression type {view_imp & 0x0F} is not 0-3 or 8")
        if quality > 100:
            raise _fail(pos + 2, f"finger quality {quality} over 100")
        pos += VIEW.size
        if len(buf) - pos < MINUTIA.size * count + 2:
            raise _fail(pos, f"finger view {vi}: {count} minutiae do not fit in the record")
        minutiae = []
        for _ in range(count):
            tx, ry, angle, mq = MINUTIA.unpack_from(buf, pos)
            kind, x, y = tx >> 14, tx & 0x3FFF, ry & 0x3FFF
            if kind == 3:
                raise _fail(pos, "minutia type 3 is reserved")
            if ry >> 14:
                raise _fail(pos + 2, "reserved bits above the minutia y coordinate are set")
            if x >= width or y >= height:
                raise _fail(pos, f"minutia ({x}, {y}) outside the {width}x{height} image")
            if mq > 100:
                raise _fail(pos + 5, f"minutia quality {mq} over 100")
            minutiae.append(IsoMinutia(kind, x, y, angle, mq))
            pos += MINUTIA.size
        (ext_len,) = struct.unpack_from(">H", buf, pos)
        pos += 2
        if len(buf) - pos < ext_len:
            raise _fail(pos - 2, f"extended data length {ext_len} runs past the record")
        extended = buf[pos : pos + ext_len]
        _check_extended(extended, pos)
        pos += ext_len
        views.append(
            IsoFingerView(
                position, view_imp >> 4, view_imp & 0x0F, quality, tuple(minutiae), extended
            )
        )
    if pos != len(buf):
        raise _fail(pos, f"{len(buf) - pos} bytes after the last finger view")
    return IsoRecord(width, height, tuple(views), xres, yres, equipment)


def view_from_minutiae(
    minutiae: MinutiaSet,
    *,
    position: int = 0,
    impression: int = 0,
    finger_quality: int = 0,
    view: int = 0,
) -> IsoFingerView:
    """Quantise a :class:`MinutiaSet` into an ISO finger view.

    Coordinates are rounded and clipped into the image, angles rounded to 1.40625 degree
    units. Over 255 minutiae, the best 255 by quality are kept (the format's limit).
    """
    ms = minutiae.best(MAX_MINUTIAE) if len(minutiae) > MAX_MINUTIAE else minutiae
    xs = np.clip(np.rint(ms.x), 0, min(ms.width - 1, 0x3FFF)).astype(int)
    ys = np.clip(np.rint(ms.y), 0, min(ms.height - 1, 0x3FFF)).astype(int)
    codes = np.rint(ms.angle / ANGLE_UNIT).astype(int) % 256
    mins = tuple(
        IsoMinutia(int(k), int(x), int(y), int(a), int(q))
        for k, x, y, a, q in zip(ms.kind, xs, ys, codes, ms.quality, strict=True)
    )
    return IsoFingerView(position, view, impression, finger_quality, mins)


def minutiae_from_view(view: IsoFingerView, width: int, height: int) -> MinutiaSet:
    """The :class:`MinutiaSet` a finger view stores (angles at the centre of their unit)."""
    m = view.minutiae
    return MinutiaSet.from_arrays(
        [v.x for v in m],
        [v.y for v in m],
        [v.angle * ANGLE_UNIT for v in m],
        kind=[v.kind for v in m],
        quality=[v.quality for v in m],
        width=width,
        height=height,
    )


def encode_minutiae(
    minutiae: MinutiaSet,
    *,
    position: int = 0,
    impression: int = 0,
    finger_quality: int = 0,
    ppi: int = PPI,
) -> bytes:
    """One-view record for ``minutiae`` (500 ppi coordinates, see :mod:`.minutiae`)."""
    ppcm = round(ppi / 2.54)
    view = view_from_minutiae(
        minutiae, position=position, impression=impression, finger_quality=finger_quality
    )
    record = IsoRecord(minutiae.width, minutiae.height, (view,), ppcm, ppcm)
    return encode_record(record)


def decode_minutiae(data: bytes, view: int = 0) -> MinutiaSet:
    """The minutiae of finger view ``view`` of a record (coordinates as stored).

    Raises :class:`TemplateFormatError` for a malformed record or a missing view.
    """
    record = decode_record(data)
    if not 0 <= view < len(record.views):
        raise TemplateFormatError(f"the record has {len(record.views)} views, not {view + 1}")
    return minutiae_from_view(record.views[view], record.width, record.height)
