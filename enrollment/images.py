"""Image codecs and header readers for the biometric images in a transaction.

The encoders and decoders wrap Pillow (and the ``wsq`` Pillow plugin for WSQ). The header
readers never decode pixels: the registry checks the dimensions declared in an ANSI/NIST-ITL
record against the embedded image before anything hands the bytes to a C decoder, and they
cost microseconds instead of the tens of milliseconds a decode takes.

References:
- WSQ: FBI "WSQ Gray-scale Fingerprint Image Compression Specification" (IAFIS-IC-0110,
  v3.1), markers as in NBIS ``wsq.h``: SOI 0xFFA0, EOI 0xFFA1, SOF 0xFFA2, SOB 0xFFA3,
  DTT 0xFFA4, DQT 0xFFA5, DHT 0xFFA6, DRT 0xFFA7, COM 0xFFA8. The frame header (SOF) holds
  Lf(2) A(1) B(1) Y(2) X(2) ...: black and white calibration, then height and width.
- JPEG: ITU-T T.81 (ISO/IEC 10918-1) B.2.2 frame header SOFn: Lf(2) P(1) Y(2) X(2) Nf(1).
- JPEG 2000: ITU-T T.800 (ISO/IEC 15444-1) A.5.1 SIZ marker segment and I.5.3.1 the JP2
  'ihdr' box (HEIGHT(4) WIDTH(4) NC(2) BPC(1) C(1) UnkC(1) IPR(1)).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import wsq  # noqa: F401  (importing registers the WSQ codec with Pillow)
from PIL import Image

from .errors import MalformedTransactionError

__all__ = [
    "ImageHeader",
    "decode_wsq",
    "encode_jpeg",
    "encode_wsq",
    "image_dimensions",
    "read_image_header",
]

# ANSI/NIST-ITL compression codes (Table 15 of ANSI/NIST-ITL 1-2011) we can read headers of.
# JP2L (lossless JPEG 2000) has the same container as JP2, so one reader serves both.
SUPPORTED_COMPRESSIONS = frozenset({"WSQ20", "JPEGB", "JP2", "JP2L"})


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: size in pixels and number of colour components."""

    width: int
    height: int
    components: int


# --------------------------------------------------------------------------- encoders


def encode_wsq(pixels: npt.NDArray[np.uint8]) -> bytes:
    """Compress an 8-bit grayscale image (2-D uint8 array, rows x columns) to WSQ."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"WSQ needs a 2-D uint8 array, got {pixels.ndim}-D {pixels.dtype}")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "WSQ")  # 2-D uint8 -> mode "L"
    return buf.getvalue()


def decode_wsq(data: bytes) -> npt.NDArray[np.uint8]:
    """Decompress a WSQ image to a 2-D uint8 array (rows x columns).

    The header is checked first with :func:`read_image_header` so that garbage never
    reaches the C decoder's frame parser.
    """
    header = read_image_header(data, "WSQ20")
    try:
        with Image.open(io.BytesIO(data), formats=["WSQ"]) as im:
            im.load()
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, IndexError) as exc:
        raise MalformedTransactionError(f"WSQ image cannot be decoded: {exc}") from exc
    if arr.shape != (header.height, header.width):
        raise MalformedTransactionError(
            f"WSQ image decoded to {arr.shape[1]}x{arr.shape[0]}, "
            f"header says {header.width}x{header.height}"
        )
    return arr


def encode_jpeg(image: npt.NDArray[np.uint8] | Image.Image, quality: int = 90) -> bytes:
    """Encode an RGB (H x W x 3) or grayscale (H x W) image as baseline JPEG (JFIF)."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be 1-95, got {quality}")
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    # progressive=False: ANSI/NIST-ITL's JPEGB is baseline sequential JPEG.
    im.save(buf, "JPEG", quality=quality, progressive=False, optimize=False)
    return buf.getvalue()


# --------------------------------------------------------------------------- header readers


def image_dimensions(data: bytes, compression: str) -> tuple[int, int]:
    """Return (width, height) from the header of an image, without decoding pixels.

    ``compression`` is the ANSI/NIST-ITL CGA code: "WSQ20", "JPEGB", "JP2" or "JP2L".
    Truncated or garbage data raises :class:`MalformedTransactionError`.
    """
    header = read_image_header(data, compression)
    return header.width, header.height


def read_image_header(data: bytes, compression: str) -> ImageHeader:
    """Read size and component count from an image header (see :func:`image_dimensions`)."""
    if compression == "WSQ20":
        return _wsq_header(data)
    if compression == "JPEGB":
        return _jpeg_header(data)
    if compression in ("JP2", "JP2L"):
        return _jp2_header(data)
    raise MalformedTransactionError(
        f"unsupported compression {compression!r}; expected one of "
        f"{', '.join(sorted(SUPPORTED_COMPRESSIONS))}"
    )


def _u16(data: bytes, pos: int, what: str) -> int:
    if pos + 2 > len(data):
        raise MalformedTransactionError(f"{what}: truncated at byte {pos}")
    return (data[pos] << 8) | data[pos + 1]


def _wsq_header(data: bytes) -> ImageHeader:
    if data[:2] != b"\xff\xa0":
        raise MalformedTransactionError("WSQ image: does not start with SOI marker 0xFFA0")
    pos = 2
    while True:
        marker = _u16(data, pos, "WSQ image")
        if marker == 0xFFA2:  # SOF: Lf A B Y X ...
            length = _u16(data, pos + 2, "WSQ image")
            if length < 8 or pos + 2 + length > len(data):
                raise MalformedTransactionError(
                    f"WSQ image: frame header at byte {pos} truncated or too short"
                )
            height = _u16(data, pos + 6, "WSQ image")
            width = _u16(data, pos + 8, "WSQ image")
            if width == 0 or height == 0:
                raise MalformedTransactionError(
                    f"WSQ image: frame header declares {width}x{height}"
                )
            return ImageHeader(width, height, 1)
        # Tables and comments (DTT, DQT, DHT, DRT, COM) may precede the frame header;
        # anything else (EOI, SOB, an unknown marker) before it means a broken file.
        if marker not in (0xFFA4, 0xFFA5, 0xFFA6, 0xFFA7, 0xFFA8):
            raise MalformedTransactionError(
                f"WSQ image: unexpected marker 0x{marker:04X} at byte {pos} before the "
                "frame header (SOF 0xFFA2)"
            )
        length = _u16(data, pos + 2, "WSQ image")
        if length < 2:
            raise MalformedTransactionError(
                f"WSQ image: marker 0x{marker:04X} at byte {pos} has length {length}"
            )
        pos += 2 + length


# SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_header(data: bytes) -> ImageHeader:
    if data[:2] != b"\xff\xd8":
        raise MalformedTransactionError("JPEG image: does not start with SOI marker 0xFFD8")
    pos = 2
    while True:
        if pos >= len(data):
            raise MalformedTransactionError("JPEG image: no frame header (SOFn) found")
        if data[pos] != 0xFF:
            raise MalformedTransactionError(f"JPEG image: expected a marker at byte {pos}")
        # Any number of 0xFF fill bytes may precede a marker code (T.81 B.1.1.2).
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            raise MalformedTransactionError("JPEG image: truncated in a marker")
        code = data[pos]
        pos += 1
        if code in _JPEG_SOF:
            length = _u16(data, pos, "JPEG image")
            if length < 8 or pos + length > len(data):
                raise MalformedTransactionError(
                    f"JPEG image: frame header at byte {pos - 2} truncated or too short"
                )
            height = _u16(data, pos + 3, "JPEG image")
            width = _u16(data, pos + 5, "JPEG image")
            components = data[pos + 7]
            # Height 0 defers the height to a DNL marker after the first scan: no
            # encoder for ID images does that, and the size must be known up front.
            if width == 0 or height == 0 or components == 0:
                raise MalformedTransactionError(
                    f"JPEG image: frame header declares {width}x{height}, {components} components"
                )
            return ImageHeader(width, height, components)
        if code in (0xD8, 0xD9, 0xDA) or code == 0x00:
            raise MalformedTransactionError(
                f"JPEG image: marker 0xFF{code:02X} before the frame header"
            )
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # standalone markers, no length
            continue
        length = _u16(data, pos, "JPEG image")
        if length < 2:
            raise MalformedTransactionError(
                f"JPEG image: marker 0xFF{code:02X} at byte {pos - 2} has length {length}"
            )
        pos += length


_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _jp2_header(data: bytes) -> ImageHeader:
    if data[:4] == b"\xff\x4f\xff\x51":  # raw codestream: SOC then SIZ
        return _j2k_siz(data, 4)
    if data[:12] != _JP2_SIGNATURE:
        raise MalformedTransactionError(
            "JPEG 2000 image: neither a JP2 file signature nor a codestream (SOC+SIZ)"
        )
    jp2h = _find_box(data, 12, len(data), b"jp2h")
    ihdr = _find_box(data, jp2h[0], jp2h[1], b"ihdr")
    start, end = ihdr
    if end - start < 14:
        raise MalformedTransactionError("JPEG 2000 image: 'ihdr' box too short")
    height, width, components = struct.unpack_from(">IIH", data, start)
    if width == 0 or height == 0 or components == 0:
        raise MalformedTransactionError(
            f"JPEG 2000 image: 'ihdr' declares {width}x{height}, {components} components"
        )
    return ImageHeader(width, height, components)


def _find_box(data: bytes, pos: int, end: int, box_type: bytes) -> tuple[int, int]:
    """Return (payload start, payload end) of the first box of ``box_type`` in [pos, end)."""
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:  # 64-bit extended length follows the type
            if pos + 16 > end:
                break
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif length == 0:  # box runs to the end of its container
            length = end - pos
        if length < header or pos + length > end:
            raise MalformedTransactionError(
                f"JPEG 2000 image: box {kind!r} at byte {pos} has bad length {length}"
            )
        if kind == box_type:
            return pos + header, pos + length
        pos += length
    raise MalformedTransactionError(f"JPEG 2000 image: no {box_type.decode()!r} box")


def _j2k_siz(data: bytes, pos: int) -> ImageHeader:
    # SIZ: Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2)
    if pos + 40 > len(data):
        raise MalformedTransactionError("JPEG 2000 image: SIZ marker segment truncated")
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, pos + 4)
    (components,) = struct.unpack_from(">H", data, pos + 36)
    if xsiz <= xosiz or ysiz <= yosiz or components == 0:
        raise MalformedTransactionError(
            f"JPEG 2000 image: SIZ declares image area {xsiz}x{ysiz} at offset "
            f"{xosiz},{yosiz}, {components} components"
        )
    return ImageHeader(xsiz - xosiz, ysiz - yosiz, components)
