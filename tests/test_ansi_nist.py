"""ANSI/NIST-ITL 1-2011 codec and enrollment profile (enrollment.ansi_nist).

The interop acceptance point is nistitl, an independent parser/writer: it must read what we
write (and write back the same bytes), and we must read what it writes.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import nistitl
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrollment.ansi_nist import (
    FACE_QUALITY_QAP,
    FACE_QUALITY_QAV,
    NFIQ2_QAP,
    NFIQ2_QAV,
    EnrollmentTransaction,
    FaceImage,
    FingerprintImage,
    Record,
    Transaction,
    TransactionHeader,
    build_transaction,
    decode,
    encode,
    parse_transaction,
    text_value,
)
from enrollment.errors import MalformedTransactionError, SizeLimitError
from enrollment.images import decode_wsq, encode_jpeg, encode_wsq
from tests.imagekit import ridge_image

FS, GS, RS, US = b"\x1c", b"\x1d", b"\x1e", b"\x1f"
CAPTURED = date(2021, 3, 15)


# --------------------------------------------------------------------------- test data


def face_jpeg(width: int = 240, height: int = 320) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    skin = np.array([200, 160, 130], dtype=np.float32)
    inside = ((x - width / 2) / (0.35 * width)) ** 2 + ((y - height / 2) / (0.4 * height)) ** 2
    rgb = np.where((inside <= 1)[..., None], skin, np.array([230, 230, 235], np.float32))
    rgb = rgb + (y[..., None] / height * 20)
    return encode_jpeg(np.clip(rgb, 0, 255).astype(np.uint8), quality=85)


def header(**changes: Any) -> TransactionHeader:
    base = TransactionHeader(
        tot="ENR",
        dat=CAPTURED,
        dai="VN-EID-REGISTRY",
        ori="ST-0001",
        tcn="0f3c2a9e-6d1b-4c55-9a43-2f6e1c7b8d90",
        gmt=datetime(2021, 3, 15, 2, 30, 5, tzinfo=UTC),
    )
    return replace(base, **changes)


def fingerprint(
    position: int, data: bytes, size: tuple[int, int], **changes: Any
) -> FingerprintImage:
    base = FingerprintImage(
        idc=position,
        position=position,
        impression=1,
        width=size[0],
        height=size[1],
        data=data,
        quality=50 + position,
        capture_date=CAPTURED,
        source="ST-0001",
    )
    return replace(base, **changes)


def iris_record(idc: int = 30) -> Record:
    # Binary data holding every separator: it must travel as-is, found through LEN.
    return Record(
        17,
        {
            2: text_value(str(idc)),
            3: text_value("1"),  # eye label
            20: [["a", "b"], ["c"]],  # subfields and items survive
            999: b"IRIS\x1c\x1d\x1e\x1f\x00\xff" * 50,
        },
    )


@pytest.fixture(scope="module")
def ten_wsq() -> list[bytes]:
    return [encode_wsq(ridge_image(800, 750, seed)) for seed in range(10)]


@pytest.fixture(scope="module")
def face() -> bytes:
    return face_jpeg()


@pytest.fixture(scope="module")
def enrollment(ten_wsq: list[bytes], face: bytes) -> EnrollmentTransaction:
    return EnrollmentTransaction(
        header=header(),
        type2={3: "VN-EID enrollment", 10: "Nguyễn Văn An"},
        fingerprints=[fingerprint(i + 1, ten_wsq[i], (800, 750)) for i in range(10)],
        faces=[
            FaceImage(
                idc=11,
                width=240,
                height=320,
                data=face,
                capture_date=CAPTURED,
                source="ST-0001",
                quality=82,
            )
        ],
        other_records=[iris_record()],
    )


@pytest.fixture(scope="module")
def encoded(enrollment: EnrollmentTransaction) -> bytes:
    return build_transaction(enrollment)


def small_enrollment() -> EnrollmentTransaction:
    """A transaction small enough to fuzz quickly: two fingers, a face, an iris record."""
    fingers = [
        fingerprint(p, encode_wsq(ridge_image(160, 150, p)), (160, 150), idc=p) for p in (2, 7)
    ]
    return EnrollmentTransaction(
        header=header(tcn="T1"),
        type2={3: "x"},
        fingerprints=fingers,
        faces=[
            FaceImage(
                idc=3,
                width=48,
                height=64,
                data=face_jpeg(48, 64),
                capture_date=CAPTURED,
                source="S",
            )
        ],
        other_records=[iris_record(4)],
    )


SMALL = build_transaction(small_enrollment())


def records_by_len(data: bytes) -> list[tuple[int, int, int]]:
    """Independent record walk: (type, start, end) from each record's LEN."""
    out = []
    pos = 0
    while pos < len(data):
        match = re.match(rb"(\d+)\.001:(\d+)\x1d", data[pos:])
        assert match, f"no LEN at {pos}"
        end = pos + int(match[2])
        out.append((int(match[1]), pos, end))
        pos = end
    assert pos == len(data)
    return out


def len_field(record: bytes) -> int:
    match = re.match(rb"\d+\.001:(\d+)\x1d", record)
    assert match is not None
    return int(match[1])


def edit(data: bytes, change: Callable[[Transaction], None]) -> bytes:
    """Decode, change the generic records, re-encode (LEN and CNT stay right)."""
    tx = decode(data)
    change(tx)
    return encode(tx)


def records_of(tx: Transaction, rtype: int) -> list[Record]:
    return [r for r in tx.records if r.type == rtype]


# --------------------------------------------------------------------------- round trips


def test_round_trip(enrollment: EnrollmentTransaction, encoded: bytes) -> None:
    parsed = parse_transaction(encoded)
    assert parsed == enrollment
    assert build_transaction(parsed) == encoded


def test_layout_len_and_cnt(enrollment: EnrollmentTransaction, encoded: bytes) -> None:
    walk = records_by_len(encoded)
    assert [t for t, _, _ in walk] == [1, 2] + [14] * 10 + [10, 17]
    for _rtype, start, end in walk:
        assert encoded[end - 1 : end] == FS
        # LEN counts the whole record, its own digits and the FS included.
        assert len_field(encoded[start:end]) == end - start
    type1 = encoded[: walk[0][2]]
    cnt = re.search(rb"\x1d1\.003:([^\x1d]*)\x1d", type1)
    assert cnt is not None
    expected = [b"1\x1f13", b"2\x1f0"] + [b"14\x1f%d" % i for i in range(1, 11)]
    assert cnt[1].split(RS) == [*expected, b"10\x1f11", b"17\x1f30"]
    # Fields in ascending order, the binary field last.
    face_record = encoded[walk[12][1] : walk[12][2]]
    tags = re.findall(rb"(?:^|\x1d)10\.(\d{3}):", face_record[: face_record.index(b"10.999:")])
    assert tags == sorted(tags)
    assert face_record[face_record.index(b"10.999:") + 7 : -1] == enrollment.faces[0].data


def test_low_level_round_trip_keeps_structure() -> None:
    tx = Transaction(
        [
            Record(1, {2: [["0500"]], 4: [["ENR"]], 5: [["20210315"]], 9: [["X"]]}),
            Record(2, {2: [["0"]], 3: [["a", "b", ""], ["c"]], 4: [[""]], 998: [["z"]]}),
            iris_record(7),
            Record(99, {2: [["1"]], 999: b""}),
        ]
    )
    data = encode(tx)
    assert decode(data) == tx
    assert encode(decode(data)) == data


def test_utf8_text_sets_dcs(encoded: bytes) -> None:
    tx = decode(encoded)
    # Type-2 holds Vietnamese text: DCS 1.015 says UTF-8 (Table 4, index 3).
    assert tx.records[0].fields[15] == [["3", "UTF-8"]]
    assert tx.records[1].get_text(10) == "Nguyễn Văn An"
    # encode() adds DCS itself when the text needs it.
    del tx.records[0].fields[15]
    assert encode(tx) == encoded

    type1 = Record(1, {2: [["0500"]]})
    ascii_only = encode(Transaction([type1, Record(2, {2: [["0"]], 3: [["ab"]]})]))
    assert b"1.015" not in ascii_only
    # Without DCS the text is 7-bit ASCII: UTF-8 bytes are refused, naming the field.
    with pytest.raises(MalformedTransactionError, match=r"2\.003: byte 0xC3 is not valid ascii"):
        decode(ascii_only.replace(b"2.003:ab", "2.003:é".encode(), 1))
    declared_ascii = Record(1, {2: [["0500"]], 15: [["0", "ASCII"]]})
    with pytest.raises(MalformedTransactionError, match="declares 7-bit ASCII"):
        encode(Transaction([declared_ascii, Record(2, {2: [["0"]], 3: [["é"]]})]))
    utf16 = Record(1, {2: [["0500"]], 15: [["2", "UTF-16"]]})
    with pytest.raises(MalformedTransactionError, match="encoding 2 is not supported"):
        encode(Transaction([utf16]))


def test_type1_text_must_be_ascii() -> None:
    tx = Transaction([Record(1, {2: [["0500"]], 9: [["Nguyễn"]]})])
    with pytest.raises(MalformedTransactionError, match=r"1\.009"):
        encode(tx)


def test_header_gmt_is_kept_in_utc_to_the_second() -> None:
    local = datetime(2021, 3, 15, 9, 30, 5, 123456, tzinfo=timezone(timedelta(hours=7)))
    assert header(gmt=local).gmt == datetime(2021, 3, 15, 2, 30, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        header(gmt=datetime(2021, 3, 15))


def test_type17_record_is_carried_through(encoded: bytes) -> None:
    parsed = parse_transaction(encoded)
    assert parsed.other_records == [iris_record()]
    assert parsed.other_records[0].idc == 30
    assert parsed.other_records[0].binary == iris_record().binary


def test_quality_metrics_are_written_with_algorithm_ids(encoded: bytes) -> None:
    tx = decode(encoded)
    finger = records_of(tx, 14)[2]
    assert finger.fields[24] == [["3", "53", NFIQ2_QAV, NFIQ2_QAP]]
    face_record = records_of(tx, 10)[0]
    assert face_record.fields[24] == [["82", FACE_QUALITY_QAV, FACE_QUALITY_QAP]]


def test_quality_from_another_algorithm_is_not_taken_for_nfiq2(encoded: bytes) -> None:
    def other_vendor(tx: Transaction) -> None:
        records_of(tx, 14)[0].fields[24] = [["1", "99", "000F", "14205"]]

    parsed = parse_transaction(edit(encoded, other_vendor))
    assert parsed.fingerprints[0].quality is None

    def not_computed(tx: Transaction) -> None:
        records_of(tx, 14)[0].fields[24] = [["1", "254", NFIQ2_QAV, NFIQ2_QAP]]

    assert parse_transaction(edit(encoded, not_computed)).fingerprints[0].quality is None


def test_wsq_from_parsed_transaction_decodes_to_declared_size(encoded: bytes) -> None:
    parsed = parse_transaction(encoded)
    for finger in parsed.fingerprints:
        pixels = decode_wsq(finger.data)
        assert pixels.shape == (finger.height, finger.width) == (750, 800)


def test_performance_ten_fingers(enrollment: EnrollmentTransaction, encoded: bytes) -> None:
    assert len(encoded) > 350_000

    def median_ms(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(30):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    assert median_ms(lambda: build_transaction(enrollment)) < 5
    assert median_ms(lambda: parse_transaction(encoded)) < 5
    assert median_ms(lambda: decode(encoded)) < 5


# --------------------------------------------------------------------------- nistitl interop


def test_nistitl_reads_what_we_write(enrollment: EnrollmentTransaction, encoded: bytes) -> None:
    msg = nistitl.Message()
    msg.parse(encoded)
    assert len(msg) == 14
    assert [r.type for r in msg] == [1, 2] + [14] * 10 + [10, 17]
    assert nist(msg[0], "TOT", "VER", "DAT", "DAI", "ORI", "TCN", "GMT", "DOM") == {
        "TOT": "ENR",
        "VER": "0500",
        "DAT": "20210315",
        "DAI": "VN-EID-REGISTRY",
        "ORI": "ST-0001",
        "TCN": enrollment.header.tcn,
        "GMT": "20210315023005Z",
        "DOM": [["VN-EID", "1"]],
    }
    # The CNT as nistitl reads it: count, then type and IDC of every record in order.
    expected_cnt = [["1", "13"], ["2", "0"]]
    expected_cnt += [["14", str(i)] for i in range(1, 11)] + [["10", "11"], ["17", "30"]]
    assert nist(msg[0], "CNT") == {"CNT": expected_cnt}

    fingers = list(msg.iter(14))
    assert len(fingers) == 10
    for record, finger in zip(fingers, enrollment.fingerprints, strict=True):
        assert nist(record, "IDC", "FGP", "IMP", "HLL", "VLL", "SLC", "THPS", "TVPS") == {
            "IDC": finger.idc,
            "FGP": str(finger.position),
            "IMP": "1",
            "HLL": "800",
            "VLL": "750",
            "SLC": "1",
            "THPS": "500",
            "TVPS": "500",
        }
        assert nist(record, "CGA", "BPX", "FCD", "SRC", "FQM") == {
            "CGA": "WSQ20",
            "BPX": "8",
            "FCD": "20210315",
            "SRC": "ST-0001",
            "FQM": [[str(finger.position), str(finger.quality), NFIQ2_QAV, NFIQ2_QAP]],
        }
        image = record.DATA
        assert image == finger.data  # the image bytes, identical
        # nistitl's copy of the image decodes to the declared size too.
        assert decode_wsq(image).shape == (750, 800)

    (face_record,) = msg.iter(10)
    assert nist(face_record, "IDC", "IMT", "HLL", "VLL", "CGA", "CSP", "SAP", "POS") == {
        "IDC": 11,
        "IMT": "FACE",
        "HLL": "240",
        "VLL": "320",
        "CGA": "JPEGB",
        "CSP": "SRGB",
        "SAP": "13",
        "POS": "F",
    }
    face_data = face_record.DATA
    assert face_data == enrollment.faces[0].data

    (iris,) = msg.iter(17)
    iris_data = iris.DATA
    assert iris_data == iris_record().binary
    # nistitl does not tell a one-item subfield from a plain value: ["c"] reads as "c".
    assert nist(iris, "IDC", "_20") == {"IDC": 30, "_20": [["a", "b"], "c"]}

    # nistitl decodes text as Latin-1 whatever 1.015 says: the UTF-8 bytes survive as-is.
    (type2,) = msg.iter(2)
    assert type2._10.encode("latin-1").decode("utf-8") == "Nguyễn Văn An"
    # Written back by nistitl, the transaction is byte for byte the same.
    rewritten = msg.NIST
    assert rewritten == encoded


def nist(record: Any, *mnemonics: str) -> dict[str, Any]:
    """Fields of a nistitl record by mnemonic (nistitl exposes them as attributes)."""
    return {mnemonic: getattr(record, mnemonic) for mnemonic in mnemonics}


def nistitl_message(fingers: list[tuple[int, bytes]], face: bytes | None) -> Any:
    msg = nistitl.Message()
    msg.TOT = "ENR"
    type1 = msg[0]
    type1.VER = "0500"
    type1.DAT = "20210315"
    type1.DAI = "VN-EID-REGISTRY"
    type1.ORI = "ST-0001"
    type1.TCN = "T-42"
    type1.DOM = [["VN-EID", "1"]]
    type1.GMT = "20210315023005Z"
    type2 = nistitl.AsciiRecord(2)
    type2.IDC = 0
    type2._3 = "from nistitl"
    msg += type2
    for idc, (position, data) in enumerate(fingers, start=1):
        record = nistitl.AsciiRecord(14)
        record.IDC = idc
        values = {
            "IMP": 1,
            "SRC": "ST-0001",
            "FCD": "20210315",
            "HLL": 800,
            "VLL": 750,
            "SLC": 1,
            "THPS": 500,
            "TVPS": 500,
            "CGA": "WSQ20",
            "BPX": 8,
            "FGP": position,
        }
        for name, value in values.items():
            setattr(record, name, value)
        record.FQM = [[str(position), "61", NFIQ2_QAV, NFIQ2_QAP]]
        record.DATA = data
        msg += record
    if face is not None:
        record = nistitl.AsciiRecord(10)
        record.IDC = len(fingers) + 1
        values = {
            "IMT": "FACE",
            "SRC": "ST-0001",
            "PHD": "20210315",
            "HLL": 240,
            "VLL": 320,
            "SLC": 0,
            "THPS": 1,
            "TVPS": 1,
            "CGA": "JPEGB",
            "CSP": "SRGB",
            "SAP": 13,
            "POS": "F",
        }
        for name, value in values.items():
            setattr(record, name, value)
        record.DATA = face
        msg += record
    return msg


def test_we_read_what_nistitl_writes(ten_wsq: list[bytes], face: bytes) -> None:
    data = nistitl_message([(p, ten_wsq[p - 1]) for p in (1, 2, 6, 7)], face).NIST
    parsed = parse_transaction(data)
    assert parsed.header == header(dai="VN-EID-REGISTRY", tcn="T-42")
    assert parsed.type2 == {3: "from nistitl"}
    assert [f.position for f in parsed.fingerprints] == [1, 2, 6, 7]
    assert [f.idc for f in parsed.fingerprints] == [1, 2, 3, 4]
    for finger in parsed.fingerprints:
        assert finger.data == ten_wsq[finger.position - 1]
        assert finger.quality == 61
        assert decode_wsq(finger.data).shape == (750, 800)
    assert parsed.faces[0].data == face
    assert parsed.faces[0].idc == 5
    # And the generic codec writes nistitl's bytes back unchanged.
    assert encode(decode(data)) == data


def test_we_read_a_nistitl_type1_type2_transaction() -> None:
    msg = nistitl_message([], None)
    data = msg.NIST
    tx = decode(data)
    assert [r.type for r in tx.records] == [1, 2]
    assert tx.records[1].get_text(3) == "from nistitl"
    parsed = parse_transaction(data)
    assert (parsed.fingerprints, parsed.faces, parsed.other_records) == ([], [], [])
    # nistitl's own defaults (VER 0400, no DOM/GMT) break our profile, and we say which field.
    bare = nistitl.Message()
    bare.TOT = "ENR"
    with pytest.raises(MalformedTransactionError, match=r"1\.002 VER"):
        parse_transaction(bare.NIST)


# --------------------------------------------------------------------------- structure errors


def test_wrong_len(encoded: bytes) -> None:
    walk = records_by_len(encoded)
    _, start, end = walk[3]  # the second Type-14
    length = end - start
    for wrong in (length - 1, length + 1, length + 100):
        old = b"14.001:%d\x1d" % length
        new = b"14.001:%d\x1d" % wrong
        data = encoded[:start] + encoded[start:end].replace(old, new, 1) + encoded[end:]
        with pytest.raises(MalformedTransactionError, match=r"record 4 \(Type-14, IDC 2\)"):
            decode(data)
    _, start, end = walk[1]  # Type-2, text only
    data = encoded[:start] + encoded[start:end].replace(b"2.001:", b"2.001:1", 1) + encoded[end:]
    with pytest.raises(MalformedTransactionError, match=r"LEN \(2\.001\)"):
        decode(data)


def test_len_swallowing_the_next_record_is_caught() -> None:
    walk = records_by_len(SMALL)
    _, start, end = walk[1]  # Type-2
    next_length = walk[2][2] - walk[2][1]
    old = len_field(SMALL[start:end])
    new = old + next_length
    new += len(str(new)) - len(str(old))
    # LEN now ends exactly at the next record's FS: Type-2's own FS sits inside a field.
    bad = SMALL.replace(b"2.001:%d\x1d" % old, b"2.001:%d\x1d" % new, 1)
    with pytest.raises(MalformedTransactionError, match=r"2\.003 contains an FS"):
        decode(bad)


def test_cnt_mismatch(encoded: bytes) -> None:
    cnt_count = b"1.003:1\x1f13"
    with pytest.raises(MalformedTransactionError, match="says 12 records"):
        decode(encoded.replace(cnt_count, b"1.003:1\x1f12", 1))
    # CNT lists a Type-14 where the data holds Type-10 (same length, so LEN still holds).
    with pytest.raises(MalformedTransactionError, match="record 13 is Type-10 but CNT"):
        decode(encoded.replace(b"\x1e10\x1f11\x1e", b"\x1e14\x1f11\x1e", 1))
    # CNT names another IDC than the record carries.
    with pytest.raises(MalformedTransactionError, match=r"IDC \(14\.002\) is '10' .* lists 12"):
        decode(encoded.replace(b"\x1e14\x1f10\x1e", b"\x1e14\x1f12\x1e", 1))
    # A record missing at the end.
    last_start = records_by_len(encoded)[-1][1]
    with pytest.raises(MalformedTransactionError, match="missing from record 14"):
        decode(encoded[:last_start])
    # Malformed CNT items.
    with pytest.raises(MalformedTransactionError, match=r"CNT \(1\.003\) subfield 2"):
        decode(encoded.replace(b"\x1e2\x1f0\x1e", b"\x1e2\x1fX\x1e", 1))


def test_duplicate_idc(encoded: bytes) -> None:
    # Two Type-14 records with IDC 1: change record 4's IDC and its CNT entry (same length).
    walk = records_by_len(encoded)
    _, start, end = walk[3]
    record = encoded[start:end].replace(b"\x1d14.002:2\x1d", b"\x1d14.002:1\x1d", 1)
    data = encoded[:start] + record + encoded[end:]
    data = data.replace(b"\x1e14\x1f1\x1e14\x1f2\x1e", b"\x1e14\x1f1\x1e14\x1f1\x1e", 1)
    with pytest.raises(MalformedTransactionError, match="Type-14 IDC 1 twice"):
        decode(data)
    # The encoder refuses it as well.
    tx = decode(encoded)
    records_of(tx, 14)[1].set_text(2, "1")
    with pytest.raises(MalformedTransactionError, match="duplicate IDC 1 for Type-14"):
        encode(tx)


def test_same_idc_in_two_record_types_breaks_the_profile(encoded: bytes) -> None:
    def clash(tx: Transaction) -> None:
        records_of(tx, 17)[0].set_text(2, "11")  # the face's IDC

    data = edit(encoded, clash)
    decode(data)  # the standard allows it (unique per record type) ...
    with pytest.raises(MalformedTransactionError, match="IDC 11 is already used by record 13"):
        parse_transaction(data)  # ... but samples link to images by IDC alone


def test_trailing_bytes(encoded: bytes) -> None:
    with pytest.raises(MalformedTransactionError, match="1 bytes after the last record"):
        decode(encoded + b"x")
    # Even a whole well-formed record is refused when CNT does not list it.
    extra = encode(Transaction([Record(1, {2: [["0500"]]}), Record(2, {2: [["5"]]})]))
    record = extra[records_by_len(extra)[1][1] :]
    with pytest.raises(MalformedTransactionError, match="after the last record listed in CNT"):
        decode(encoded + record)


def test_type1_must_come_first(encoded: bytes) -> None:
    walk = records_by_len(encoded)
    swapped = encoded[walk[1][1] : walk[1][2]] + encoded[: walk[0][2]] + encoded[walk[1][2] :]
    with pytest.raises(MalformedTransactionError, match="first record is Type-2"):
        decode(swapped)


def test_binary_record_types_are_refused(encoded: bytes) -> None:
    with pytest.raises(MalformedTransactionError, match="lists Type-4; only tagged"):
        decode(encoded.replace(b"\x1e17\x1f30", b"\x1e04\x1f30", 1))


def test_limits(encoded: bytes) -> None:
    with pytest.raises(SizeLimitError, match="14 records; the limit is 10"):
        decode(encoded, max_records=10)
    with pytest.raises(SizeLimitError, match="bytes; the limit is 1000"):
        decode(encoded, max_bytes=1000)
    decode(encoded, max_records=14)


def test_oversized_declared_dimensions(enrollment: EnrollmentTransaction, encoded: bytes) -> None:
    with pytest.raises(SizeLimitError, match=r"800x750 exceeds the limit 799x4096"):
        parse_transaction(encoded, max_image_width=799)
    face_only = build_transaction(replace(enrollment, fingerprints=[]))
    with pytest.raises(SizeLimitError, match=r"Type-10, IDC 11\).*240x320 exceeds"):
        parse_transaction(face_only, max_image_height=319)

    def huge(tx: Transaction) -> None:
        records_of(tx, 14)[4].set_text(7, "99999")

    # Checked before the image header: a declared size is refused on its face.
    with pytest.raises(SizeLimitError, match=r"record 7 \(Type-14, IDC 5\).*800x99999"):
        parse_transaction(edit(encoded, huge))


def test_header_and_image_dimension_mismatch(encoded: bytes) -> None:
    def wider(tx: Transaction) -> None:
        records_of(tx, 14)[2].set_text(6, "801")

    with pytest.raises(
        MalformedTransactionError, match=r"IDC 3\): HLL x VLL declare 801x750 but the WSQ20"
    ):
        parse_transaction(edit(encoded, wider))

    def taller_face(tx: Transaction) -> None:
        records_of(tx, 10)[0].set_text(7, "321")

    with pytest.raises(MalformedTransactionError, match="240x321 but the JPEGB image header"):
        parse_transaction(edit(encoded, taller_face))

    def not_wsq(tx: Transaction) -> None:
        records_of(tx, 14)[0].fields[999] = b"GIF89a"

    with pytest.raises(MalformedTransactionError, match=r"14\.999 DATA: WSQ image"):
        parse_transaction(edit(encoded, not_wsq))


def test_duplicate_finger_position(encoded: bytes) -> None:
    def twice(tx: Transaction) -> None:
        record = records_of(tx, 14)[5]
        record.set_text(13, "3")
        record.fields[24] = [["3", "50", NFIQ2_QAV, NFIQ2_QAP]]

    with pytest.raises(
        MalformedTransactionError, match=r"IDC 6\): finger position .* 3 already in record 5"
    ):
        parse_transaction(edit(encoded, twice))


@pytest.mark.parametrize(
    ("rtype", "tag", "value", "message"),
    [
        (14, 13, "11", r"14\.013 FGP is 11; finger positions are 1-10"),
        (14, 13, "0", "finger positions are 1-10"),
        (14, 6, "8OO", r"14\.006 HLL is '8OO'; expected 1-5 digits"),
        (14, 3, "7", r"14\.003 IMP is 7"),
        (14, 5, "20210230", r"14\.005 FCD is '20210230'; expected a date"),
        (14, 11, "PNG", r"14\.011 CGA is 'PNG'"),
        (14, 12, "16", r"14\.012 BPX must be 8"),
        (14, 9, "1000", r"THPS \(14\.009\) and TVPS \(14\.010\) must be equal"),
        (14, 24, "x", r"14\.024 FQM subfield 1"),
        (10, 3, "IRIS", r"10\.003 IMT is 'IRIS'"),
        (10, 12, "CMYK", r"10\.012 CSP"),
        (10, 20, "Q", r"10\.020 POS"),
        (1, 14, "2021-03-15T02:30:05Z", r"1\.014 GMT"),
        (1, 4, "ENR1", r"1\.004 TOT"),
        (1, 11, "19.69ppmm", r"1\.011 NSR"),
    ],
)
def test_bad_field_values_are_named(
    encoded: bytes, rtype: int, tag: int, value: str, message: str
) -> None:
    def change(tx: Transaction) -> None:
        records_of(tx, rtype)[0].set_text(tag, value)

    with pytest.raises(MalformedTransactionError, match=message):
        parse_transaction(edit(encoded, change))


@pytest.mark.parametrize(
    ("rtype", "tag", "message"),
    [
        (14, 13, r"record 3 \(Type-14, IDC 1\): field 14\.013 FGP is mandatory and missing"),
        (14, 999, r"14\.999 DATA \(the image\) is mandatory"),
        (10, 20, r"record 13 \(Type-10, IDC 11\): field 10\.020 POS is mandatory"),
        (1, 13, r"record 1 \(Type-1\): field 1\.013 DOM is mandatory"),
        (1, 14, r"1\.014 GMT is mandatory"),
    ],
)
def test_missing_mandatory_fields_are_named(
    encoded: bytes, rtype: int, tag: int, message: str
) -> None:
    def drop(tx: Transaction) -> None:
        del records_of(tx, rtype)[0].fields[tag]

    with pytest.raises(MalformedTransactionError, match=message):
        parse_transaction(edit(encoded, drop))


def test_wsq_must_be_500_ppi(encoded: bytes) -> None:
    def thousand(tx: Transaction) -> None:
        records_of(tx, 14)[0].set_text(9, "1000")
        records_of(tx, 14)[0].set_text(10, "1000")

    with pytest.raises(MalformedTransactionError, match="WSQ20 images must be 500 ppi"):
        parse_transaction(edit(encoded, thousand))


def test_structured_value_where_a_single_one_belongs(encoded: bytes) -> None:
    def structured(tx: Transaction) -> None:
        records_of(tx, 14)[0].fields[6] = [["800"], ["800"]]

    with pytest.raises(MalformedTransactionError, match=r"14\.006 HLL holds subfields"):
        parse_transaction(edit(encoded, structured))


def test_field_syntax_errors() -> None:
    base = encode(Transaction([Record(1, {2: [["0500"]]}), Record(2, {2: [["0"]], 3: [["a"]]})]))
    # Same-length replacements, so that LEN still holds and the field error shows.
    cases = [
        (b"2.003:a\x1c", b"3.003:a\x1c", "field tag 3.003 belongs to Type-3"),
        (b"2.003:a\x1c", b"2.002:a\x1c", "field 2.002 appears twice"),
        (b"2.003:a\x1c", b"2.03:ab\x1c", "expected a field tag '2.NNN:'"),
        (b"2.003:a\x1c", b"2.003:\x02\x1c", "field 2.003: control character 0x02"),
        (b"2.003:a\x1c", b"2.003:\x1d\x1c", "GS separator right before FS"),
        (b"2.002:0\x1d2.003:a", b"2.003:a\x1d2.002:0", "LEN must be followed by IDC (2.002)"),
        (b"1.002:0500", b"1.999:0500", "Type-1 has no binary field 999"),
    ]
    for old, new, message in cases:
        assert len(old) == len(new)
        with pytest.raises(MalformedTransactionError, match=re.escape(message)):
            decode(base.replace(old, new, 1))


def test_encoder_refuses_what_it_cannot_write() -> None:
    type1 = Record(1, {2: [["0500"]]})
    bad_records = [
        (Record(2, {3: [["a"]]}), "IDC"),
        (Record(2, {2: [["0"]], 3: [["a\x1fb"]]}), "control character 0x1F"),
        (Record(2, {2: [["0"]], 3: []}), "at least one subfield"),
        (Record(2, {2: [["0"]], 5: b"bytes"}), "only field 999 holds bytes"),
        (Record(2, {2: [["0"]], 999: [["text"]]}), "must be bytes"),
        (Record(5, {2: [["0"]]}), "only tagged record types"),
        (Record(2, {2: [["0"]], 1000: [["x"]]}), "field numbers run from 1 to 999"),
    ]
    for record, message in bad_records:
        with pytest.raises(MalformedTransactionError, match=message):
            encode(Transaction([type1, record]))
    with pytest.raises(MalformedTransactionError, match="first record must be Type-1"):
        encode(Transaction([Record(2, {2: [["0"]]})]))


def test_record_helpers() -> None:
    record = iris_record(7)
    assert record.idc == 7
    assert record.get_text(3) == "1"
    assert record.get_text(4) is None
    with pytest.raises(MalformedTransactionError, match=r"17\.020 holds subfields"):
        record.text(20)
    with pytest.raises(MalformedTransactionError, match=r"17\.005 is missing"):
        record.text(5)
    with pytest.raises(MalformedTransactionError, match="no IDC"):
        _ = Record(1, {}).idc


# --------------------------------------------------------------------------- builder checks


def test_builder_refuses_what_the_parser_would(
    enrollment: EnrollmentTransaction, ten_wsq: list[bytes]
) -> None:
    fingers = enrollment.fingerprints
    cases: list[tuple[EnrollmentTransaction, str]] = [
        (
            replace(enrollment, fingerprints=[*fingers[:2], replace(fingers[0], idc=12)]),
            "finger position 1 appears twice",
        ),
        (
            replace(enrollment, fingerprints=[replace(fingers[0], width=801)]),
            "declared 801x750 but the WSQ20 image header says 800x750",
        ),
        (replace(enrollment, fingerprints=[replace(fingers[0], position=11)]), "1-10"),
        (replace(enrollment, fingerprints=[replace(fingers[0], quality=101)]), "quality 101"),
        (replace(enrollment, fingerprints=[replace(fingers[0], ppi=1000)]), "500 ppi"),
        (replace(enrollment, fingerprints=[replace(fingers[0], idc=0)]), "IDC must be 1-99"),
        (
            replace(enrollment, fingerprints=[replace(fingers[0], idc=11)]),
            "IDC 11 is already used by record 3",
        ),
        (replace(enrollment, type2={999: "x"}), "numbered 3-998"),
        (replace(enrollment, header=header(tot="EN R")), "TOT"),
        (replace(enrollment, header=header(ver="0400")), "VER"),
        (replace(enrollment, other_records=[Record(14, {2: [["40"]]})]), "Type-14 record"),
        (
            replace(enrollment, faces=[replace(enrollment.faces[0], compression="JP2")]),
            "JPEG 2000 image",
        ),
    ]
    for tx, message in cases:
        with pytest.raises(MalformedTransactionError, match=message):
            build_transaction(tx)


def test_empty_enrollment_round_trips() -> None:
    tx = EnrollmentTransaction(header=header())
    assert parse_transaction(build_transaction(tx)) == tx


# --------------------------------------------------------------------------- fuzzing


def _only_our_errors(data: bytes) -> None:
    """decode and parse_transaction raise our errors or succeed: nothing else escapes."""
    for call in (
        lambda: decode(data),
        lambda: parse_transaction(data, max_image_width=1000, max_image_height=1000),
    ):
        with contextlib.suppress(MalformedTransactionError, SizeLimitError):
            call()


# Offsets where a mutation hits structure rather than image data: each record's text
# fields and image header.
_INTERESTING = sorted(
    {
        offset
        for _, start, end in records_by_len(SMALL)
        for offset in range(start, min(end, start + 400))
    }
)
_FUZZ = settings(
    max_examples=500,
    deadline=2000,  # a hang would show as a deadline failure, not a stuck run
    suppress_health_check=[HealthCheck.too_slow],
)


@_FUZZ
@given(data=st.binary(max_size=2000))
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_our_errors(data)


@_FUZZ
@given(prefix=st.integers(min_value=0, max_value=len(SMALL)), tail=st.binary(max_size=64))
def test_fuzz_valid_prefix_then_garbage(prefix: int, tail: bytes) -> None:
    _only_our_errors(SMALL[:prefix] + tail)


@_FUZZ
@given(length=st.integers(min_value=0, max_value=len(SMALL) - 1))
def test_fuzz_truncations(length: int) -> None:
    with pytest.raises((MalformedTransactionError, SizeLimitError)):
        decode(SMALL[:length])
    _only_our_errors(SMALL[:length])


@_FUZZ
@given(
    offset=st.one_of(
        st.sampled_from(_INTERESTING), st.integers(min_value=0, max_value=len(SMALL) - 1)
    ),
    value=st.integers(min_value=0, max_value=255),
)
def test_fuzz_single_byte_mutations(offset: int, value: int) -> None:
    data = bytearray(SMALL)
    data[offset] = value
    _only_our_errors(bytes(data))


@_FUZZ
@given(
    offset=st.sampled_from(_INTERESTING),
    insert=st.binary(min_size=0, max_size=4),
    delete=st.integers(min_value=0, max_value=4),
)
def test_fuzz_insertions_and_deletions(offset: int, insert: bytes, delete: int) -> None:
    _only_our_errors(SMALL[:offset] + insert + SMALL[offset + delete :])


@_FUZZ
@given(
    separator=st.sampled_from([FS, GS, RS, US, b":", b".", b"0", b"9"]),
    offset=st.sampled_from(_INTERESTING),
)
def test_fuzz_separator_injection(separator: bytes, offset: int) -> None:
    data = bytearray(SMALL)
    data[offset : offset + 1] = separator
    _only_our_errors(bytes(data))


def test_small_transaction_is_valid() -> None:
    assert parse_transaction(SMALL) == small_enrollment()
