"""ISO/IEC 19794-2:2005 finger minutiae records (biometrics.fingerprint.iso19794).

Three independent checks of the layout: records assembled here field by field with
``struct`` from the published layout (as NIST biomdi's fmr.h and FingerprintIO's
Iso19794p2v2005Template read it), the minutia blocks nbis-py writes for mindtct's
minutiae, and round trips. Plus fuzzing: malformed bytes raise TemplateFormatError only.
"""

from __future__ import annotations

import contextlib
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biometrics.errors import TemplateFormatError
from biometrics.fingerprint.iso19794 import (
    IsoFingerView,
    IsoMinutia,
    IsoRecord,
    decode_minutiae,
    decode_record,
    encode_minutiae,
    encode_record,
)
from biometrics.fingerprint.matcher import FingerTemplate, make_template
from biometrics.fingerprint.minutiae import MindtctExtractor, MinutiaSet
from biometrics.fingerprint.simulate import random_minutiae
from tests.fpkit import dislocations


def hand_built(
    width: int, height: int, views: list[tuple[int, int, int, int, list[tuple[int, ...]], bytes]]
) -> bytes:
    """A record assembled directly from the standard's field list, without the codec."""
    body = b""
    for position, view, impression, quality, minutiae, ext in views:
        body += bytes([position, (view << 4) | impression, quality, len(minutiae)])
        for kind, x, y, angle, q in minutiae:
            body += struct.pack(">HHBB", (kind << 14) | x, y, angle, q)
        body += struct.pack(">H", len(ext)) + ext
    header = b"FMR\x00" + b" 20\x00" + struct.pack(">I", 24 + len(body))
    header += struct.pack(">HHHHH", 0, width, height, 197, 197) + bytes([len(views), 0])
    return header + body


SAMPLE = hand_built(
    400,
    500,
    [
        (2, 0, 1, 77, [(1, 10, 20, 0, 100), (2, 399, 499, 255, 0), (0, 200, 300, 64, 50)], b""),
        (7, 1, 0, 0, [], bytes.fromhex("0001 0006 abcd")),
    ],
)


def test_decode_hand_built_record() -> None:
    rec = decode_record(SAMPLE)
    assert (rec.width, rec.height, rec.x_resolution, rec.y_resolution) == (400, 500, 197, 197)
    assert len(rec.views) == 2
    v0, v1 = rec.views
    assert (v0.position, v0.view, v0.impression, v0.quality) == (2, 0, 1, 77)
    assert v0.minutiae == (
        IsoMinutia(1, 10, 20, 0, 100),
        IsoMinutia(2, 399, 499, 255, 0),
        IsoMinutia(0, 200, 300, 64, 50),
    )
    assert (v1.position, v1.view, v1.impression, v1.minutiae) == (7, 1, 0, ())
    assert v1.extended == bytes.fromhex("0001 0006 abcd")


def test_encode_matches_hand_built_byte_for_byte() -> None:
    assert encode_record(decode_record(SAMPLE)) == SAMPLE
    rec = IsoRecord(
        400, 500, (IsoFingerView(2, 0, 1, 77, (IsoMinutia(1, 10, 20, 0, 100),)),), 197, 197
    )
    assert encode_record(rec) == hand_built(400, 500, [(2, 0, 1, 77, [(1, 10, 20, 0, 100)], b"")])


def test_minutiae_round_trip_within_quantisation() -> None:
    ms = random_minutiae(np.random.default_rng(3))
    back = decode_minutiae(encode_minutiae(ms, position=3, impression=1, finger_quality=60))
    assert len(back) == len(ms)
    assert np.max(np.abs(back.x - ms.x)) <= 0.5
    assert np.max(np.abs(back.y - ms.y)) <= 0.5
    turn = np.abs((back.angle - ms.angle + math.pi) % (2 * math.pi) - math.pi)
    assert np.max(turn) <= math.radians(360 / 256 / 2) + 1e-9
    assert np.array_equal(back.kind, ms.kind)
    assert np.array_equal(back.quality, ms.quality)
    # The ISO direction unit: 90 degrees is code 64, counter-clockwise from x.
    one = MinutiaSet.from_arrays([5], [6], [math.pi / 2], width=10, height=10)
    assert encode_minutiae(one)[24 + 4 + 4] == 64


def test_nbis_minutia_blocks_agree() -> None:
    """nbis-py exports mindtct minutiae in its own "FMR" variant (26-byte header, quality
    on 0-63, no extended data length) but with the standard 6-byte minutia blocks: type,
    x, y and direction must match ours byte for byte."""
    nbis = pytest.importorskip("nbis")
    image = dislocations(width=480, height=400)
    settings_ = nbis.NbisExtractorSettings(
        min_quality=0.0, get_center=False, check_fingerprint=False, compute_nfiq2=False, ppi=None
    )
    extractor = nbis.new_nbis_extractor(settings_)
    h, w = image.shape
    found = extractor.extract_minutiae(b"P5\n%d %d\n255\n" % (w, h) + image.tobytes())
    theirs = found.to_iso_19794_2_2005()
    ours = MindtctExtractor().extract(image)
    assert 5 <= len(ours) <= 255
    assert theirs[:8] == b"FMR\x00 20\x00"
    assert struct.unpack(">HH", theirs[14:18]) == (w, h)
    n = len(ours)
    assert len(theirs) == 26 + 6 * n  # their layout, which our strict decoder refuses
    with pytest.raises(TemplateFormatError):
        decode_record(theirs)
    record = encode_minutiae(ours)
    assert struct.unpack(">HH", record[14:18]) == (w, h)
    our_blocks = record[28 : 28 + 6 * n]
    their_blocks = theirs[26:]
    for i in range(n):
        mine, other = our_blocks[6 * i : 6 * i + 6], their_blocks[6 * i : 6 * i + 6]
        assert mine[:5] == other[:5], f"minutia {i}: {mine.hex()} != {other.hex()}"
        # Quality: ours round(100 r), theirs floor(63 r), from the same reliability r.
        assert abs(other[5] - mine[5] * 63 / 100) <= 1.0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b"FMX\x00" + b[4:], "format identifier"),
        (lambda b: b[:4] + b" 30\x00" + b[8:], "version"),
        (lambda b: b[:8] + struct.pack(">I", len(b) + 1) + b[12:], "record length"),
        (lambda b: b[:14] + b"\x00\x00" + b[16:], "width"),
        (lambda b: b[:18] + b"\x00\x00" + b[20:], "resolution"),
        (lambda b: b[:22] + b"\x00" + b[23:], "views is 0"),
        (lambda b: b[:23] + b"\x01" + b[24:], "reserved byte"),
        (lambda b: b[:24] + b"\x0b" + b[25:], "finger position"),
        (lambda b: b[:25] + b"\x04" + b[26:], "impression type"),
        (lambda b: b[:26] + b"\x65" + b[27:], "finger quality"),
        (lambda b: b[:28] + b"\xc0" + b[29:], "type 3"),
        (lambda b: b[:30] + b"\x40" + b[31:], "reserved bits"),
        (lambda b: b[:28] + b"\x41\x90" + b[30:], "outside"),
        (lambda b: b[:33] + b"\x65" + b[34:], "minutia quality"),
    ],
)
def test_specific_errors(mutate: object, field: str) -> None:
    assert callable(mutate)
    bad = mutate(SAMPLE)
    with pytest.raises(TemplateFormatError) as info:
        decode_record(bad)
    assert field in str(info.value)
    assert info.value.code == "malformed-template"


def test_structural_errors() -> None:
    with pytest.raises(TemplateFormatError, match="truncated"):
        decode_record(SAMPLE[:20])
    # A trailing byte, with the length field kept consistent: the views end early.
    longer = SAMPLE[:8] + struct.pack(">I", len(SAMPLE) + 1) + SAMPLE[12:] + b"\x00"
    with pytest.raises(TemplateFormatError, match="after the last finger view"):
        decode_record(longer)
    # Extended data whose area length overruns its block.
    bad_area = SAMPLE[:-4] + bytes.fromhex("0009 abcd")
    with pytest.raises(TemplateFormatError, match="extended data area"):
        decode_record(bad_area)
    with pytest.raises(TemplateFormatError, match="views"):
        decode_minutiae(SAMPLE, view=5)


minutia_st = st.builds(
    IsoMinutia,
    kind=st.integers(0, 2),
    x=st.integers(0, 299),
    y=st.integers(0, 399),
    angle=st.integers(0, 255),
    quality=st.integers(0, 100),
)
view_st = st.builds(
    IsoFingerView,
    position=st.integers(0, 10),
    view=st.integers(0, 15),
    impression=st.sampled_from([0, 1, 2, 3, 8]),
    quality=st.integers(0, 100),
    minutiae=st.lists(minutia_st, max_size=40).map(tuple),
    extended=st.lists(st.binary(max_size=6), max_size=3).map(
        lambda areas: b"".join(struct.pack(">HH", 1, 4 + len(a)) + a for a in areas)
    ),
)
record_st = st.builds(
    IsoRecord,
    width=st.just(300),
    height=st.just(400),
    views=st.lists(view_st, min_size=1, max_size=3).map(tuple),
    x_resolution=st.integers(1, 0xFFFF),
    y_resolution=st.integers(1, 0xFFFF),
    capture_equipment=st.integers(0, 0xFFFF),
)


@settings(max_examples=150, deadline=None)
@given(record_st)
def test_round_trip(record: IsoRecord) -> None:
    data = encode_record(record)
    assert decode_record(data) == record
    assert encode_record(decode_record(data)) == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_st, st.data())
def test_mutations_raise_only_template_format_error(record: IsoRecord, data: st.DataObject) -> None:
    good = encode_record(record)
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(TemplateFormatError):
        decode_record(good[:cut])
    pos = data.draw(st.integers(0, len(good) - 1))
    flipped = bytearray(good)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    try:
        rec = decode_record(bytes(flipped))
    except TemplateFormatError:
        return
    # What still parses must be exactly what it says: re-encoding gives the same bytes.
    assert encode_record(rec) == bytes(flipped)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_template_format_error(blob: bytes) -> None:
    for data in (blob, b"FMR\x00 20\x00" + struct.pack(">I", len(blob) + 12) + blob):
        with contextlib.suppress(TemplateFormatError):
            decode_record(data)


# --- the matcher's own template bytes (biometrics.fingerprint.matcher) ---------------------


def test_finger_template_bytes_round_trip_and_size() -> None:
    rng = np.random.default_rng(8)
    t = make_template(random_minutiae(rng, n=70))
    data = t.to_bytes()
    assert len(data) == t.nbytes <= 2048
    back = FingerTemplate.from_bytes(data)
    for name in ("values", "masks", "x", "y", "angle"):
        assert np.array_equal(getattr(back.cylinders, name), getattr(t.cylinders, name))
    assert np.array_equal(back.signature, t.signature)
    assert back.to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_finger_template_fuzz(data: st.DataObject) -> None:
    good = make_template(random_minutiae(np.random.default_rng(1), n=40)).to_bytes()
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(TemplateFormatError):
        FingerTemplate.from_bytes(good[:cut])
    pos = data.draw(st.integers(0, len(good) - 1))
    flipped = bytearray(good)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(TemplateFormatError):
        FingerTemplate.from_bytes(bytes(flipped))
