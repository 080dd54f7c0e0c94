"""Image codecs and header readers (enrollment.images), checked against Pillow."""

from __future__ import annotations

import contextlib
import io
import struct

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from enrollment.errors import MalformedTransactionError
from enrollment.images import (
    decode_wsq,
    encode_jpeg,
    encode_wsq,
    image_dimensions,
    read_image_header,
)
from tests.imagekit import ridge_image

needs_jp2 = pytest.mark.skipif(
    not features.check("jpg_2000"), reason="Pillow built without OpenJPEG"
)


def rgb_image(width: int, height: int) -> npt.NDArray[np.uint8]:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1
    ).astype(np.uint8)


def pillow_info(data: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size[0], im.size[1], len(im.getbands())


def pillow_save(array: npt.NDArray[np.uint8], fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **options)
    return buf.getvalue()


# --------------------------------------------------------------------------- WSQ


@pytest.mark.parametrize(("width", "height"), [(800, 750), (417, 333), (256, 300), (64, 80)])
def test_wsq_round_trip_and_header_match_pillow(width: int, height: int) -> None:
    pixels = ridge_image(width, height)
    data = encode_wsq(pixels)
    assert data[:2] == b"\xff\xa0"
    assert image_dimensions(data, "WSQ20") == (width, height)
    assert pillow_info(data) == (width, height, 1)
    assert read_image_header(data, "WSQ20").components == 1
    decoded = decode_wsq(data)
    assert decoded.shape == (height, width)
    assert decoded.dtype == np.uint8
    # WSQ is lossy (bitrate 0.75): close, not equal. Tiny images lose more (the wavelet
    # decomposition runs out of room), so only check the realistic sizes.
    if min(width, height) >= 128:
        assert np.abs(decoded.astype(int) - pixels.astype(int)).mean() < 8
        assert np.corrcoef(decoded.ravel(), pixels.ravel())[0, 1] > 0.98


def test_wsq_compresses_a_rolled_finger_well() -> None:
    data = encode_wsq(ridge_image(800, 750))
    assert len(data) < 800 * 750 // 8


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10, 3), dtype=np.uint8),
        np.zeros((10, 10), dtype=np.uint16),
        np.zeros(100, dtype=np.uint8),
    ],
)
def test_encode_wsq_rejects_non_grayscale(bad: npt.NDArray[np.uint8]) -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_wsq(bad)


def test_decode_wsq_rejects_garbage_before_the_c_decoder() -> None:
    with pytest.raises(MalformedTransactionError, match="SOI"):
        decode_wsq(b"\x00" * 100)
    with pytest.raises(MalformedTransactionError):
        decode_wsq(b"\xff\xa0\xff\xa8\x00")


def test_wsq_reader_skips_tables_and_comments_before_the_frame() -> None:
    data = encode_wsq(ridge_image(300, 200))
    # The encoder writes a NISTCOM comment first; a reader must walk past it.
    assert data[2:4] == b"\xff\xa8"
    # Insert an extra comment segment after SOI: the size is still found.
    comment = b"\xff\xa8" + struct.pack(">H", 7) + b"hello"
    assert image_dimensions(data[:2] + comment + data[2:], "WSQ20") == (300, 200)


def _wsq_frame_offset(data: bytes) -> int:
    pos = 2
    while data[pos : pos + 2] != b"\xff\xa2":
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return pos


def test_wsq_reader_rejects_zero_size_and_early_block() -> None:
    data = bytearray(encode_wsq(ridge_image(120, 100)))
    sof = _wsq_frame_offset(bytes(data))
    zero_width = bytearray(data)
    zero_width[sof + 8 : sof + 10] = b"\x00\x00"
    with pytest.raises(MalformedTransactionError, match="0x100"):
        image_dimensions(bytes(zero_width), "WSQ20")
    # A start-of-block (0xFFA3) before the frame header means a broken file.
    early = bytes(data[:2]) + b"\xff\xa3\x00\x02" + bytes(data[2:])
    with pytest.raises(MalformedTransactionError, match="0xFFA3"):
        image_dimensions(early, "WSQ20")
    zero_length = bytes(data[:2]) + b"\xff\xa8\x00\x00" + bytes(data[2:])
    with pytest.raises(MalformedTransactionError, match="length 0"):
        image_dimensions(zero_length, "WSQ20")


# --------------------------------------------------------------------------- JPEG


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("gray", [False, True])
def test_jpeg_header_matches_pillow(progressive: bool, gray: bool) -> None:
    array = rgb_image(360, 480)
    if gray:
        array = array[:, :, 0].copy()
    data = pillow_save(array, "JPEG", quality=85, progressive=progressive)
    width, height, bands = pillow_info(data)
    header = read_image_header(data, "JPEGB")
    assert (header.width, header.height, header.components) == (width, height, bands)
    assert image_dimensions(data, "JPEGB") == (360, 480)


def test_encode_jpeg_makes_baseline_jfif() -> None:
    data = encode_jpeg(rgb_image(240, 320), quality=80)
    assert data[:2] == b"\xff\xd8"
    assert b"JFIF" in data[:32]
    # SOF0 (baseline) and no SOF2 (progressive) frame header.
    assert b"\xff\xc0" in data
    assert b"\xff\xc2" not in data
    assert pillow_info(data) == (240, 320, 3)
    assert image_dimensions(data, "JPEGB") == (240, 320)


def test_encode_jpeg_accepts_a_pil_image_and_checks_quality() -> None:
    image = Image.fromarray(rgb_image(64, 48)).convert("RGBA")
    assert image_dimensions(encode_jpeg(image), "JPEGB") == (64, 48)
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(rgb_image(8, 8), quality=0)


def test_jpeg_reader_rejects_deferred_height_and_scan_before_frame() -> None:
    data = bytearray(encode_jpeg(rgb_image(32, 16)))
    sof = data.index(b"\xff\xc0")
    deferred = bytearray(data)
    deferred[sof + 5 : sof + 7] = b"\x00\x00"  # height 0: DNL-defined height
    with pytest.raises(MalformedTransactionError, match="32x0"):
        image_dimensions(bytes(deferred), "JPEGB")
    with pytest.raises(MalformedTransactionError, match="0xFFDA"):
        image_dimensions(b"\xff\xd8\xff\xda\x00\x02", "JPEGB")


# --------------------------------------------------------------------------- JPEG 2000


@needs_jp2
@pytest.mark.parametrize("codestream", [False, True])
@pytest.mark.parametrize("code", ["JP2", "JP2L"])
def test_jp2_header_matches_pillow(codestream: bool, code: str) -> None:
    data = pillow_save(rgb_image(300, 200), "JPEG2000", no_jp2=codestream)
    assert data[:4] == (b"\xff\x4f\xff\x51" if codestream else b"\x00\x00\x00\x0c")
    width, height, bands = pillow_info(data)
    header = read_image_header(data, code)
    assert (header.width, header.height, header.components) == (width, height, bands)
    assert (width, height) == (300, 200)


@needs_jp2
def test_jp2_reader_rejects_bad_box_lengths() -> None:
    data = bytearray(pillow_save(rgb_image(40, 30), "JPEG2000"))
    bad = bytearray(data)
    bad[12:16] = struct.pack(">I", 4)  # 'ftyp' box shorter than its own header
    with pytest.raises(MalformedTransactionError, match="bad length"):
        image_dimensions(bytes(bad), "JP2")
    with pytest.raises(MalformedTransactionError, match="jp2h"):
        image_dimensions(bytes(data[:12]), "JP2")


# --------------------------------------------------------------------------- robustness


def _samples() -> dict[str, bytes]:
    samples = {
        "WSQ20": encode_wsq(ridge_image(200, 150)),
        "JPEGB": encode_jpeg(rgb_image(200, 150)),
    }
    if features.check("jpg_2000"):
        samples["JP2"] = pillow_save(rgb_image(200, 150), "JPEG2000")
        samples["JP2L"] = pillow_save(rgb_image(200, 150), "JPEG2000", no_jp2=True)
    return samples


SAMPLES = _samples()


@pytest.mark.parametrize("code", sorted(SAMPLES))
def test_every_truncation_fails_cleanly_until_the_frame_header(code: str) -> None:
    data = SAMPLES[code]
    needed = None
    for n in range(len(data) + 1):
        try:
            size = image_dimensions(data[:n], code)
        except MalformedTransactionError:
            assert needed is None, f"prefix {n} failed after prefix {needed} succeeded"
            continue
        assert size == (200, 150)
        needed = n if needed is None else needed
    assert needed is not None
    # The readers only need the header: far less than the whole image.
    assert needed < 1200


@pytest.mark.parametrize("code", ["WSQ20", "JPEGB", "JP2", "JP2L"])
def test_empty_and_wrong_magic(code: str) -> None:
    for data in (b"", b"\x00", b"GIF89a" + b"\x00" * 40):
        with pytest.raises(MalformedTransactionError):
            image_dimensions(data, code)


def test_unknown_compression_code() -> None:
    with pytest.raises(MalformedTransactionError, match="unsupported compression 'PNG'"):
        image_dimensions(SAMPLES["JPEGB"], "PNG")


_MAGIC = {
    "WSQ20": b"\xff\xa0",
    "JPEGB": b"\xff\xd8",
    "JP2": b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    "JP2L": b"\xff\x4f\xff\x51",
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from(sorted(_MAGIC)),
    with_magic=st.booleans(),
    body=st.binary(max_size=300),
)
def test_garbage_only_raises_malformed(code: str, with_magic: bool, body: bytes) -> None:
    data = (_MAGIC[code] + body) if with_magic else body
    try:
        width, height = image_dimensions(data, code)
    except MalformedTransactionError:
        return
    assert width > 0
    assert height > 0


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from(sorted(SAMPLES)),
    position=st.integers(min_value=0, max_value=400),
    value=st.integers(min_value=0, max_value=255),
)
def test_header_byte_mutations_only_raise_malformed(code: str, position: int, value: int) -> None:
    data = bytearray(SAMPLES[code])
    data[position % len(data)] = value
    with contextlib.suppress(MalformedTransactionError):
        image_dimensions(bytes(data), code)
