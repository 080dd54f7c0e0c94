"""ANSI/NIST-ITL 1-2011 transactions in the traditional encoding, and our enrollment profile.

Two layers:

- A generic codec: :class:`Record` / :class:`Transaction`, :func:`encode` and a strict
  :func:`decode`. Any tagged-field record type (Type-2 and Types 9-99) passes through it,
  so a new modality (Type-17 iris, Type-11 voice, Type-18 DNA, ...) needs no codec change.
- The VN-EID enrollment profile on top: :class:`EnrollmentTransaction` with Type-1, one
  Type-2, Type-14 fingerprints and Type-10 faces; :func:`build_transaction` and
  :func:`parse_transaction`, which checks everything a receiving registry relies on.

References are to NIST Special Publication 500-290, ANSI/NIST-ITL 1-2011 ("the standard"):
Annex B (traditional encoding: separators, date and GMT formats), Section 7.3.1 (IDC),
7.7.7 (quality metric items), Table 4 (character encoding), Table 7 (impression codes),
Table 8 (friction ridge positions), Table 15 (compression codes), 8.1 (Type-1),
8.2 (Type-2), 8.10 (Type-10) and 8.14 (Type-14).

Traditional encoding in one paragraph: a transaction is a sequence of records; a record is
fields ``T.NNN:value`` separated by GS (0x1D) and ended by FS (0x1C); a value's subfields
are separated by RS (0x1E) and a subfield's information items by US (0x1F). The first field
of every record is LEN (its length in bytes, FS included), the second of every record but
Type-1 is IDC. Field 999 holds binary data, comes last, and runs to the FS that LEN points
at, so binary data never has to be scanned for separators. Type-1 comes first and its CNT
field (1.003) lists every following record's type and IDC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TypeAlias

from .errors import MalformedTransactionError, SizeLimitError
from .images import read_image_header

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_IMAGE_SIDE",
    "DEFAULT_MAX_RECORDS",
    "FACE_QUALITY_QAP",
    "FACE_QUALITY_QAV",
    "NFIQ2_QAP",
    "NFIQ2_QAV",
    "SUPPORTED_VERSIONS",
    "EnrollmentTransaction",
    "FaceImage",
    "FieldValue",
    "FingerprintImage",
    "Record",
    "Transaction",
    "TransactionHeader",
    "build_transaction",
    "decode",
    "encode",
    "parse_transaction",
    "text_value",
]

FS = b"\x1c"  # end of record
GS = b"\x1d"  # between fields
RS = "\x1e"  # between subfields
US = "\x1f"  # between information items

#: A field value: bytes for the binary field 999, otherwise subfields of information items.
FieldValue: TypeAlias = bytes | list[list[str]]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_RECORDS = 64
DEFAULT_MAX_IMAGE_SIDE = 4096

# Record types with tagged fields (Annex B); 3-8 are the binary legacy records.
_TAGGED_TYPES = frozenset({2, *range(9, 100)})

# The standard's VER values that share this encoding: 2011, Update:2013, Update:2015.
SUPPORTED_VERSIONS = frozenset({"0500", "0501", "0502"})

# Quality metric algorithm identifiers (Section 7.7.7: QAV is a 4-hex-digit CBEFF
# organisation id registered with IBIA, QAP a product code 1-65535). NFIQ 2 reports itself
# as owner 0x0101 (ISO/IEC JTC 1/SC 37) and product 0x39 = 57 for NFIQ 2.3, the ISO/IEC
# 29794-4:2024 unified quality score (usnistgov/NFIQ2, nfiq2_constants.cpp).
NFIQ2_QAV = "0101"
NFIQ2_QAP = "57"
# Our face quality (ICAO-style checks) has no IBIA-registered algorithm id: vendor 0000,
# product 1 is a placeholder to replace once one is registered.
FACE_QUALITY_QAV = "0000"
FACE_QUALITY_QAP = "1"

# Quality values with a meaning other than a score (Section 7.7.7).
_QVU_FAILED = 255
_QVU_NOT_COMPUTED = 254

_FINGER_COMPRESSIONS = frozenset({"WSQ20", "JP2", "JP2L"})
_FACE_COMPRESSIONS = frozenset({"JPEGB", "JP2", "JP2L"})
# Table 7: live-scan plain/rolled, nonlive-scan plain/rolled.
_IMPRESSION_CODES = frozenset({0, 1, 2, 3})
# Field 10.012 colour space codes and 10.013 subject acquisition profiles (face).
_COLOR_SPACES = frozenset({"GRAY", "RGB", "SRGB", "YCC", "SYCC"})
_FACE_SAP_CODES = frozenset({0, 1, 10, 11, 12, 13, 14, 15, 20, 30, 32, 40, 42, 50, 51, 52})
_POSES = frozenset({"F", "R", "L", "A", "D"})

# Character encodings of Table 4 we implement (Field 1.015 DCS, first item).
_DCS_ASCII = 0
_DCS_UTF8 = 3

_LEN_RE = re.compile(rb"([1-9][0-9]?)\.001:([0-9]{1,10})\x1d")
_TAG_RE = re.compile(rb"([1-9][0-9]?)\.([0-9]{3}):")
# C0 controls other than TAB, LF, CR: STX/ETX are reserved by the standard, the rest are
# never meaningful in a text field and would only hide data from a reader.
_BAD_ITEM_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The same on a whole field's text, where RS and US are structure.
_BAD_TEXT_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1d\x7f]")
_DIGITS_RE = re.compile("[0-9]+")
_HEX4_RE = re.compile("[0-9A-Fa-f]{4}")
_TOT_RE = re.compile("[A-Za-z]{1,16}")
_RES_RE = re.compile("[0-9]{2}\\.[0-9]{2}")
_DATE_RE = re.compile("[0-9]{8}")
_GMT_RE = re.compile("[0-9]{14}Z")


# =========================================================================== generic model


def text_value(value: str) -> list[list[str]]:
    """A simple field value (one subfield, one item) in the :data:`FieldValue` form."""
    return [[value]]


@dataclass
class Record:
    """One tagged-field record: ``fields`` maps field number to value.

    LEN (field 1) is not kept: :func:`encode` computes it and :func:`decode` checks it.
    Records other than Type-1 carry their IDC in field 2. Field 999, when present, is bytes;
    every other field is a list of subfields, each a list of information items.
    """

    type: int
    fields: dict[int, FieldValue] = field(default_factory=dict)

    @property
    def idc(self) -> int:
        """The record's IDC (field 2, an integer 0-99; Section 7.3.1).

        Raises MalformedTransactionError for Type-1 (which has none) or when field 2 is
        absent or not such a number; records from :func:`decode` always have one.
        """
        idc = _idc_or_none(self)
        if idc is None:
            raise MalformedTransactionError(
                f"Type-{self.type} record has no IDC (field {_tag(self.type, 2)}, 0-99)"
            )
        return idc

    @property
    def binary(self) -> bytes | None:
        """The binary data field (999), or None."""
        value = self.fields.get(999)
        return value if isinstance(value, bytes) else None

    def get_text(self, tag: int) -> str | None:
        """Field ``tag`` as a simple string; None when absent.

        Raises MalformedTransactionError if the field has several subfields or items.
        """
        value = self.fields.get(tag)
        if value is None:
            return None
        if isinstance(value, bytes) or len(value) != 1 or len(value[0]) != 1:
            raise MalformedTransactionError(
                f"Type-{self.type} field {_tag(self.type, tag)} holds subfields or items "
                "where a single value is expected"
            )
        return value[0][0]

    def text(self, tag: int) -> str:
        """Field ``tag`` as a simple string; raises MalformedTransactionError when absent."""
        value = self.get_text(tag)
        if value is None:
            raise MalformedTransactionError(
                f"Type-{self.type} field {_tag(self.type, tag)} is missing"
            )
        return value

    def set_text(self, tag: int, value: str) -> None:
        """Set field ``tag`` to a simple string value."""
        self.fields[tag] = [[value]]


@dataclass
class Transaction:
    """A decoded transaction: ``records[0]`` is Type-1 (without LEN and CNT, both derived)."""

    records: list[Record]


def _idc_or_none(record: Record) -> int | None:
    if record.type == 1:
        return None
    value = record.fields.get(2)
    if isinstance(value, list) and len(value) == 1 and len(value[0]) == 1:
        text = value[0][0]
        if _is_number(text, 2):
            return int(text)
    return None


def _joined(value: FieldValue | None) -> str:
    """A text field as it appears on the wire (for error messages)."""
    if not isinstance(value, list):
        return "" if value is None else "<binary>"
    return RS.join(US.join(subfield) for subfield in value)


def _tag(rtype: int, tag: int) -> str:
    return f"{rtype}.{tag:03d}"


def _where(index: int, rtype: int, idc: int | None = None) -> str:
    if idc is None:
        return f"record {index} (Type-{rtype})"
    return f"record {index} (Type-{rtype}, IDC {idc})"


# =========================================================================== encoder


def encode(tx: Transaction) -> bytes:
    """Encode a transaction; LEN of every record and CNT (1.003) are computed here.

    When a record after Type-1 holds non-ASCII text and Type-1 has no DCS field (1.015),
    DCS is set to UTF-8 (Table 4, index 3); Type-1 itself must be 7-bit ASCII.
    Raises MalformedTransactionError for anything that cannot be encoded faithfully.
    """
    records = tx.records
    if not records or records[0].type != 1:
        raise MalformedTransactionError("the first record must be Type-1")
    if len(records) - 1 > 999:
        raise MalformedTransactionError(
            f"{len(records) - 1} records after Type-1; CNT (1.003) allows at most 999"
        )
    cnt: list[list[str]] = [["1", str(len(records) - 1)]]
    seen: set[tuple[int, int]] = set()
    for index, record in enumerate(records[1:], start=2):
        if record.type not in _TAGGED_TYPES:
            raise MalformedTransactionError(
                f"{_where(index, record.type)}: only tagged record types (2, 9-99) can be "
                "encoded after Type-1"
            )
        idc = _idc_or_none(record)
        if idc is None:
            raise MalformedTransactionError(
                f"{_where(index, record.type)}: field {_tag(record.type, 2)} IDC must be "
                "an integer 0-99"
            )
        if (record.type, idc) in seen:
            raise MalformedTransactionError(
                f"{_where(index, record.type, idc)}: duplicate IDC {idc} for Type-{record.type}"
            )
        seen.add((record.type, idc))
        cnt.append([str(record.type), str(idc)])

    type1 = dict(records[0].fields)
    type1[3] = cnt
    needs_utf8 = any(_has_non_ascii(r.fields.values()) for r in records[1:])
    dcs = type1.get(15)
    if dcs is None:
        codec = "ascii"
        if needs_utf8:
            type1[15] = [[str(_DCS_UTF8), "UTF-8"]]
            codec = "utf-8"
    else:
        codec = _codec_from_dcs(dcs, "Type-1")
        if codec == "ascii" and needs_utf8:
            raise MalformedTransactionError(
                "DCS (1.015) declares 7-bit ASCII but a record holds non-ASCII text"
            )

    # Collect every piece and join once: the image data is copied a single time.
    pieces: list[bytes] = []
    _encode_record(pieces, Record(1, type1), "ascii", 1)
    for index, record in enumerate(records[1:], start=2):
        _encode_record(pieces, record, codec, index)
    return b"".join(pieces)


def _has_non_ascii(values: Iterable[FieldValue]) -> bool:
    for value in values:
        if isinstance(value, list):
            for subfield in value:
                for item in subfield:
                    if not item.isascii():
                        return True
    return False


def _encode_record(pieces: list[bytes], record: Record, codec: str, index: int) -> None:
    rtype = record.type
    # One tuple of byte strings per field; 999 keeps its data as a separate piece so that
    # the image is not copied here.
    encoded: list[tuple[bytes, ...]] = []
    # Ascending tags: puts IDC (or VER, CNT in Type-1) right after LEN and 999 last.
    for tag in sorted(record.fields):
        if tag == 1:
            continue  # LEN is computed below
        value = record.fields[tag]
        where = f"{_where(index, rtype)} field {_tag(rtype, tag)}"
        if not 2 <= tag <= 999:
            raise MalformedTransactionError(f"{where}: field numbers run from 1 to 999")
        prefix = f"{rtype}.{tag:03d}:".encode("ascii")
        if tag == 999:
            if rtype == 1 or not isinstance(value, bytes):
                raise MalformedTransactionError(f"{where}: must be bytes (binary data)")
            encoded.append((prefix, value))
        else:
            if not isinstance(value, list):
                raise MalformedTransactionError(
                    f"{where}: only field 999 holds bytes; text fields are lists of subfields"
                )
            encoded.append((prefix + _encode_text(value, codec, where),))
    if 2 not in record.fields:
        name = "VER (1.002)" if rtype == 1 else f"IDC ({_tag(rtype, 2)})"
        raise MalformedTransactionError(f"{_where(index, rtype)}: field {name} is missing")
    len_prefix = f"{rtype}.001:".encode("ascii")
    body = sum(len(piece) for pieces_ in encoded for piece in pieces_) + len(encoded) - 1
    fixed = len(len_prefix) + 1 + body + 1  # LEN tag, its GS, the other fields, FS
    # LEN counts its own digits: one carry at most (e.g. 98 + 2 digits -> 101).
    length = fixed + len(str(fixed))
    if len(str(length)) != len(str(fixed)):
        length = fixed + len(str(length))
    pieces.append(len_prefix + str(length).encode("ascii") + GS)
    for number, field_pieces in enumerate(encoded):
        if number:
            pieces.append(GS)
        pieces.extend(field_pieces)
    pieces.append(FS)


def _encode_text(value: list[list[str]], codec: str, where: str) -> bytes:
    if not value or any(not subfield for subfield in value):
        raise MalformedTransactionError(
            f"{where}: a field needs at least one subfield of at least one item"
        )
    for subfield in value:
        for item in subfield:
            if not isinstance(item, str):
                raise MalformedTransactionError(f"{where}: item {item!r} is not a string")
            bad = _BAD_ITEM_RE.search(item)
            if bad:
                raise MalformedTransactionError(
                    f"{where}: control character 0x{ord(bad.group()):02X} in text "
                    "(separators and STX/ETX are reserved)"
                )
    text = RS.join(US.join(subfield) for subfield in value)
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise MalformedTransactionError(f"{where}: text is not {codec}: {exc}") from exc


def _codec_from_dcs(dcs: FieldValue, where: str) -> str:
    if isinstance(dcs, bytes) or not dcs or not dcs[0]:
        raise MalformedTransactionError(f"{where}: DCS (1.015) is malformed")
    index = dcs[0][0]
    if not _DIGITS_RE.fullmatch(index) or len(index) > 3:
        raise MalformedTransactionError(
            f"{where}: DCS (1.015) character encoding index {index!r} is not a number"
        )
    if int(index) == _DCS_ASCII:
        return "ascii"
    if int(index) == _DCS_UTF8:
        return "utf-8"
    raise MalformedTransactionError(
        f"{where}: DCS (1.015) character encoding {int(index)} is not supported "
        "(only 0 = 7-bit ASCII and 3 = UTF-8)"
    )


# =========================================================================== decoder


def decode(
    data: bytes,
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Transaction:
    """Decode a transaction, checking its structure strictly.

    Checks: Type-1 first; every record's LEN exact and ending at FS; tags well-formed,
    of the record's type and not repeated; IDC second in every record after Type-1;
    CNT (1.003) listing exactly the records present, in order, with IDCs unique per
    record type; only tagged record types; text in the declared character encoding;
    nothing after the last record. ``max_records`` counts Type-1 too.
    Raises MalformedTransactionError, or SizeLimitError past ``max_bytes``/``max_records``.
    """
    data = bytes(data)
    size = len(data)
    if size > max_bytes:
        raise SizeLimitError(f"transaction is {size} bytes; the limit is {max_bytes}")
    if size == 0:
        raise MalformedTransactionError("empty transaction")

    records: list[Record] = []
    expected: list[tuple[int, int]] = []
    codec = "ascii"
    pos = 0
    while pos < size:
        index = len(records) + 1
        if index > 1 and index > len(expected) + 1:
            raise MalformedTransactionError(
                f"{size - pos} bytes after the last record listed in CNT (1.003), "
                f"starting at byte {pos}"
            )
        match = _LEN_RE.match(data, pos)
        if match is None:
            raise MalformedTransactionError(
                f"record {index} at byte {pos}: does not start with a LEN field "
                "'<type>.001:<length>' followed by GS"
            )
        rtype = int(match[1])
        length = int(match[2])
        if index == 1 and rtype != 1:
            raise MalformedTransactionError(
                f"the first record is Type-{rtype}; a transaction starts with Type-1"
            )
        idc: int | None = None
        if index > 1:
            exp_type, idc = expected[index - 2]
            if rtype != exp_type:
                raise MalformedTransactionError(
                    f"record {index} is Type-{rtype} but CNT (1.003) lists Type-{exp_type} "
                    f"(IDC {idc}) in that place"
                )
        where = _where(index, rtype, idc)
        if length > max_bytes:
            raise SizeLimitError(
                f"{where}: LEN ({_tag(rtype, 1)}) declares {length} bytes; the limit is {max_bytes}"
            )
        end = pos + length
        if length < match.end() - pos + 1:
            raise MalformedTransactionError(
                f"{where}: LEN ({_tag(rtype, 1)}) = {length} is shorter than the LEN field"
            )
        if end > size:
            raise MalformedTransactionError(
                f"{where}: LEN ({_tag(rtype, 1)}) = {length} runs past the end of the data "
                f"({size - pos} bytes left): truncated or wrong LEN"
            )
        if data[end - 1] != FS[0]:
            raise MalformedTransactionError(
                f"{where}: LEN ({_tag(rtype, 1)}) = {length} does not end at the record's "
                "FS separator"
            )
        record = _decode_fields(data, match.end(), end - 1, rtype, where, codec)
        if index == 1:
            expected = _check_type1(record, max_records)
            codec = _codec_from_dcs(record.fields[15], "Type-1") if 15 in record.fields else "ascii"
        elif _idc_or_none(record) != idc:
            raise MalformedTransactionError(
                f"{where}: IDC ({_tag(rtype, 2)}) is "
                f"{_joined(record.fields.get(2))!r} but CNT (1.003) lists {idc}"
            )
        records.append(record)
        pos = end

    if len(records) - 1 < len(expected):
        missing_type, missing_idc = expected[len(records) - 1]
        raise MalformedTransactionError(
            f"CNT (1.003) lists {len(expected)} records after Type-1 but the data holds "
            f"{len(records) - 1}; missing from record {len(records) + 1} on "
            f"(Type-{missing_type}, IDC {missing_idc}): truncated?"
        )
    return Transaction(records)


def _decode_fields(data: bytes, pos: int, last: int, rtype: int, where: str, codec: str) -> Record:
    """Parse the fields after LEN in ``data[pos:last]`` (``last`` is the record's FS).

    The hot loop of every ingest (a ten-print transaction has ~200 fields): the field's
    label and the error context are only formatted when a field is refused.
    """
    fields: dict[int, FieldValue] = {}
    head: list[int] = []  # the first two tags, for the order check
    text_codec = "ascii" if rtype == 1 else codec
    rtype_digits = str(rtype).encode("ascii")
    match_tag = _TAG_RE.match
    find = data.find
    while pos < last:
        match = match_tag(data, pos, last)
        if match is None:
            raise MalformedTransactionError(
                f"{where}: expected a field tag '{rtype}.NNN:' at byte {pos}"
            )
        tag = int(match[2])
        # The tag's regex admits no leading zero in the type: comparing bytes is exact.
        if match[1] != rtype_digits or tag < 2 or tag in fields:
            _refuse_tag(match, int(match[1]), tag, rtype, where)
        if len(head) < 2:
            head.append(tag)
        start = match.end()
        if tag == 999:
            if rtype == 1:
                raise MalformedTransactionError(f"{where}: Type-1 has no binary field 999")
            # The binary field is last and runs to the FS found through LEN.
            fields[tag] = data[start:last]
            pos = last
            break
        gs = find(GS, start, last)
        stop = last if gs < 0 else gs
        raw = data[start:stop]
        if _FS_BYTE in raw:
            raise MalformedTransactionError(
                f"{where}: field {_label(match)} contains an FS separator before the end of "
                "the record (LEN wrong?)"
            )
        fields[tag] = _decode_text(raw, text_codec, where, match)
        pos = stop + 1 if gs >= 0 else last
        if gs >= 0 and pos == last:
            raise MalformedTransactionError(f"{where}: GS separator right before FS")
    wanted = [2, 3] if rtype == 1 else [2]
    if head[: len(wanted)] != wanted:
        what = "VER (1.002) then CNT (1.003)" if rtype == 1 else f"IDC ({_tag(rtype, 2)})"
        raise MalformedTransactionError(f"{where}: LEN must be followed by {what}")
    return Record(rtype, fields)


_FS_BYTE = FS[0]


def _label(match: re.Match[bytes]) -> str:
    """A field's tag as written (e.g. ``14.013``), for error messages."""
    return f"{match[1].decode()}.{match[2].decode()}"


def _refuse_tag(match: re.Match[bytes], tag_type: int, tag: int, rtype: int, where: str) -> None:
    label = _label(match)
    if tag_type != rtype:
        raise MalformedTransactionError(
            f"{where}: field tag {label} belongs to Type-{tag_type}, not Type-{rtype}"
        )
    if tag in (0, 1):
        raise MalformedTransactionError(
            f"{where}: field {label} is not allowed here (LEN comes once, first)"
        )
    raise MalformedTransactionError(f"{where}: field {label} appears twice")


def _decode_text(raw: bytes, codec: str, where: str, match: re.Match[bytes]) -> list[list[str]]:
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise MalformedTransactionError(
            f"{where} field {_label(match)}: byte 0x{raw[exc.start]:02X} is not valid "
            f"{codec} (see DCS, field 1.015)"
        ) from exc
    bad = _BAD_TEXT_RE.search(text)
    if bad:
        raise MalformedTransactionError(
            f"{where} field {_label(match)}: control character 0x{ord(bad.group()):02X} in text"
        )
    if RS not in text:  # the common case: one subfield
        return [text.split(US)]
    return [subfield.split(US) for subfield in text.split(RS)]


def _check_type1(record: Record, max_records: int) -> list[tuple[int, int]]:
    """Check CNT (1.003) and return the (type, IDC) list of the records that follow."""
    cnt = record.fields.pop(3)  # derived data: checked here, recomputed by encode
    assert isinstance(cnt, list)  # only field 999 is bytes, and Type-1 has none
    first = cnt[0]
    if len(first) != 2 or first[0] != "1" or not _is_number(first[1], 3):
        raise MalformedTransactionError(
            f"CNT (1.003): first subfield must be '1' US <record count>, got {US.join(first)!r}"
        )
    count = int(first[1])
    if count + 1 > max_records:
        raise SizeLimitError(
            f"CNT (1.003) declares {count + 1} records; the limit is {max_records}"
        )
    if count != len(cnt) - 1:
        raise MalformedTransactionError(
            f"CNT (1.003) says {count} records follow Type-1 but lists {len(cnt) - 1}"
        )
    expected: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for number, subfield in enumerate(cnt[1:], start=2):
        if len(subfield) != 2 or not _is_number(subfield[0], 2) or not _is_number(subfield[1], 2):
            raise MalformedTransactionError(
                f"CNT (1.003) subfield {number}: expected '<record type>' US '<IDC 0-99>', "
                f"got {US.join(subfield)!r}"
            )
        rtype, idc = int(subfield[0]), int(subfield[1])
        if rtype not in _TAGGED_TYPES:
            kind = "a second Type-1" if rtype == 1 else f"Type-{rtype}"
            raise MalformedTransactionError(
                f"CNT (1.003) subfield {number} lists {kind}; only tagged record types "
                "(2, 9-99) may follow Type-1 (binary Types 3-8 are not supported)"
            )
        if (rtype, idc) in seen:
            raise MalformedTransactionError(
                f"CNT (1.003) lists Type-{rtype} IDC {idc} twice: IDC must be unique per "
                "record type"
            )
        seen.add((rtype, idc))
        expected.append((rtype, idc))
    return expected


def _is_number(text: str, max_digits: int) -> bool:
    # ASCII digits only (str.isdigit alone admits other scripts' digits): [0-9]{1,max}.
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


# =========================================================================== the profile


@dataclass(frozen=True, kw_only=True)
class TransactionHeader:
    """The Type-1 fields of an enrollment transaction (Section 8.1).

    ``gmt`` must be timezone-aware; it is kept in UTC to the second, as 1.014 holds it.
    """

    tot: str
    dat: date
    dai: str
    ori: str
    tcn: str
    gmt: datetime
    dom_name: str = "VN-EID"
    dom_version: str = "1"
    ver: str = "0500"

    def __post_init__(self) -> None:
        if self.gmt.tzinfo is None or self.gmt.utcoffset() is None:
            raise ValueError("TransactionHeader.gmt must be timezone-aware")
        # Normalise once here so that a parsed header compares equal to the built one.
        object.__setattr__(self, "gmt", self.gmt.astimezone(UTC).replace(microsecond=0))


@dataclass(frozen=True, kw_only=True)
class FingerprintImage:
    """One finger in a Type-14 record (Section 8.14).

    ``idc`` is the record's IDC, which the enrollment record's samples point at.
    ``position`` is the FGP code 1-10 (Table 8), ``impression`` the IMP code (Table 7:
    0 live-scan plain, 1 live-scan rolled), ``quality`` an NFIQ 2 score 0-100 written to
    14.024 FQM, or None.
    """

    idc: int
    position: int
    impression: int
    width: int
    height: int
    ppi: int = 500
    compression: str = "WSQ20"
    data: bytes = field(repr=False)
    quality: int | None = None
    capture_date: date
    source: str


@dataclass(frozen=True, kw_only=True)
class FaceImage:
    """One face image in a Type-10 record (Section 8.10).

    ``idc`` is the record's IDC, ``pose`` the 10.020 POS code, ``sap`` the subject
    acquisition profile (10.013; 13 = ISO/IEC 19794-5 full frontal), ``quality`` a 0-100
    score written to 10.024 SQS.
    """

    idc: int
    width: int
    height: int
    compression: str = "JPEGB"
    data: bytes = field(repr=False)
    capture_date: date
    source: str
    pose: str = "F"
    quality: int | None = None
    sap: int = 13


@dataclass(frozen=True, kw_only=True)
class EnrollmentTransaction:
    """An enrollment: Type-1 header, one Type-2, fingerprints, faces and other records.

    ``type2`` holds the user-defined Type-2 fields (numbers 3-998) as simple strings.
    ``other_records`` carries any other tagged record type (e.g. Type-17 iris) unchanged;
    each must hold its IDC in field 2.
    """

    header: TransactionHeader
    type2: dict[int, str] = field(default_factory=dict)
    fingerprints: list[FingerprintImage] = field(default_factory=list)
    faces: list[FaceImage] = field(default_factory=list)
    other_records: list[Record] = field(default_factory=list)


def build_transaction(tx: EnrollmentTransaction) -> bytes:
    """Encode an enrollment transaction.

    Type-1, Type-2 (IDC 0), the Type-14 records, the Type-10 records, then
    ``other_records``, each with its own IDC. Everything :func:`parse_transaction` checks about
    the content (positions, codes, image header against declared size) is checked here
    too, so a station never sends what the registry would refuse: raises
    MalformedTransactionError.
    """
    h = tx.header
    _check_header(h)
    type1 = Record(
        1,
        {
            2: [[h.ver]],
            4: [[h.tot]],
            5: [[h.dat.strftime("%Y%m%d")]],
            7: [[h.dai]],
            8: [[h.ori]],
            9: [[h.tcn]],
            # No Type-3..7 records: native scanning / nominal transmitting resolution are
            # "00.00" (Section 8.1.11 and 8.1.12).
            11: [["00.00"]],
            12: [["00.00"]],
            13: [[h.dom_name, h.dom_version]],
            14: [[h.gmt.strftime("%Y%m%d%H%M%SZ")]],
        },
    )
    type2 = Record(2, {2: [["0"]]})
    for tag, value in sorted(tx.type2.items()):
        # 999 would be read back as binary data; 1 and 2 are LEN and IDC.
        if not 3 <= tag <= 998:
            raise MalformedTransactionError(
                f"Type-2 field {tag}: user-defined fields are numbered 3-998"
            )
        type2.fields[tag] = [[value]]
    records = [type1, type2]
    positions: set[int] = set()
    for finger in tx.fingerprints:
        what = f"fingerprint IDC {finger.idc} (FGP {finger.position})"
        _check_fingerprint(finger, what)
        if finger.position in positions:
            raise MalformedTransactionError(
                f"{what}: finger position {finger.position} appears twice: one image per finger"
            )
        positions.add(finger.position)
        records.append(_fingerprint_record(finger))
    for face in tx.faces:
        _check_face(face, f"face IDC {face.idc}")
        records.append(_face_record(face))
    for record in tx.other_records:
        if record.type in (1, 2, 10, 14):
            raise MalformedTransactionError(
                f"other_records holds a Type-{record.type} record; Type-1/2 come from the "
                "header and type2, Type-10/14 from faces and fingerprints"
            )
        records.append(record)
    _check_unique_idcs(records[1:])
    return encode(Transaction(records))


def _check_unique_idcs(records: list[Record]) -> None:
    """Profile rule: IDCs are unique across the records after Type-1, not just per type.

    The enrollment record's samples name their image by IDC alone, so two records with
    one IDC (allowed by the standard when their types differ) would be ambiguous.
    """
    owners: dict[int, int] = {}
    for number, record in enumerate(records, start=2):
        idc = _idc_or_none(record)
        if idc is None:
            continue  # encode() reports it with the record's place
        if idc in owners:
            raise MalformedTransactionError(
                f"record {number} (Type-{record.type}): IDC {idc} is already used by "
                f"record {owners[idc]} (Type-{records[owners[idc] - 2].type}); this profile "
                "links samples by IDC, so IDCs must be unique across the transaction"
            )
        owners[idc] = number


def _fingerprint_record(finger: FingerprintImage) -> Record:
    fields: dict[int, FieldValue] = {
        2: [[str(finger.idc)]],
        3: [[str(finger.impression)]],
        4: [[finger.source]],
        5: [[finger.capture_date.strftime("%Y%m%d")]],
        6: [[str(finger.width)]],
        7: [[str(finger.height)]],
        8: [["1"]],  # SLC 1: THPS/TVPS are pixels per inch
        9: [[str(finger.ppi)]],
        10: [[str(finger.ppi)]],
        11: [[finger.compression]],
        12: [["8"]],  # BPX: 8-bit grayscale
        13: [[str(finger.position)]],
        999: finger.data,
    }
    if finger.quality is not None:
        fields[24] = [[str(finger.position), str(finger.quality), NFIQ2_QAV, NFIQ2_QAP]]
    return Record(14, fields)


def _face_record(face: FaceImage) -> Record:
    header = read_image_header(face.data, face.compression)
    fields: dict[int, FieldValue] = {
        2: [[str(face.idc)]],
        3: [["FACE"]],
        4: [[face.source]],
        5: [[face.capture_date.strftime("%Y%m%d")]],
        6: [[str(face.width)]],
        7: [[str(face.height)]],
        # SLC 0: no scale, THPS/TVPS give the pixel aspect ratio (square pixels).
        8: [["0"]],
        9: [["1"]],
        10: [["1"]],
        11: [[face.compression]],
        12: [["GRAY" if header.components == 1 else "SRGB"]],
        13: [[str(face.sap)]],
        20: [[face.pose]],
        999: face.data,
    }
    if face.quality is not None:
        fields[24] = [[str(face.quality), FACE_QUALITY_QAV, FACE_QUALITY_QAP]]
    return Record(10, fields)


def _check_header(h: TransactionHeader) -> None:
    if h.ver not in SUPPORTED_VERSIONS:
        raise MalformedTransactionError(
            f"Type-1 VER (1.002) {h.ver!r}: expected one of {sorted(SUPPORTED_VERSIONS)}"
        )
    if not _TOT_RE.fullmatch(h.tot):
        raise MalformedTransactionError(
            f"Type-1 TOT (1.004) {h.tot!r}: 1-16 letters (Section 8.1.4)"
        )
    for name, tag, value in (
        ("DAI", 7, h.dai),
        ("ORI", 8, h.ori),
        ("TCN", 9, h.tcn),
        ("DOM name", 13, h.dom_name),
        ("DOM version", 13, h.dom_version),
    ):
        if not value or not value.isascii() or not value.isprintable():
            raise MalformedTransactionError(
                f"Type-1 {name} (1.{tag:03d}) {value!r}: must be printable 7-bit ASCII, not empty"
            )


def _check_common(
    what: str,
    width: int,
    height: int,
    compression: str,
    allowed: frozenset[str],
    data: bytes,
    quality: int | None,
    source: str,
) -> None:
    if compression not in allowed:
        raise MalformedTransactionError(
            f"{what}: compression {compression!r} not in {sorted(allowed)}"
        )
    if not 1 <= width <= 99999 or not 1 <= height <= 99999:
        raise MalformedTransactionError(f"{what}: size {width}x{height} out of range")
    if quality is not None and not 0 <= quality <= 100:
        raise MalformedTransactionError(f"{what}: quality {quality} not in 0-100")
    if not source:
        raise MalformedTransactionError(f"{what}: source agency (SRC) is empty")
    actual = read_image_header(data, compression)
    if (actual.width, actual.height) != (width, height):
        raise MalformedTransactionError(
            f"{what}: declared {width}x{height} but the {compression} image header says "
            f"{actual.width}x{actual.height}"
        )


def _check_idc(idc: int, what: str) -> None:
    # Type-2 holds IDC 0 in this profile; image records take 1-99 (Section 7.3.1).
    if not 1 <= idc <= 99:
        raise MalformedTransactionError(f"{what}: IDC must be 1-99")


def _check_fingerprint(finger: FingerprintImage, what: str) -> None:
    _check_idc(finger.idc, what)
    if not 1 <= finger.position <= 10:
        raise MalformedTransactionError(f"{what}: finger position must be 1-10 (Table 8)")
    if finger.impression not in _IMPRESSION_CODES:
        raise MalformedTransactionError(
            f"{what}: impression {finger.impression} not in {sorted(_IMPRESSION_CODES)}"
        )
    if not 1 <= finger.ppi <= 99999:
        raise MalformedTransactionError(f"{what}: ppi {finger.ppi} out of range")
    if finger.compression == "WSQ20" and finger.ppi != 500:
        raise MalformedTransactionError(f"{what}: WSQ is defined for 500 ppi, not {finger.ppi}")
    _check_common(
        what,
        finger.width,
        finger.height,
        finger.compression,
        _FINGER_COMPRESSIONS,
        finger.data,
        finger.quality,
        finger.source,
    )


def _check_face(face: FaceImage, what: str) -> None:
    _check_idc(face.idc, what)
    if face.pose not in _POSES:
        raise MalformedTransactionError(f"{what}: pose {face.pose!r} not in {sorted(_POSES)}")
    if face.sap not in _FACE_SAP_CODES:
        raise MalformedTransactionError(f"{what}: SAP {face.sap} is not a face profile code")
    _check_common(
        what,
        face.width,
        face.height,
        face.compression,
        _FACE_COMPRESSIONS,
        face.data,
        face.quality,
        face.source,
    )


# --------------------------------------------------------------------------- parsing


def parse_transaction(
    data: bytes,
    *,
    max_image_width: int = DEFAULT_MAX_IMAGE_SIDE,
    max_image_height: int = DEFAULT_MAX_IMAGE_SIDE,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> EnrollmentTransaction:
    """Decode and validate an enrollment transaction against the VN-EID profile.

    On top of :func:`decode`'s structural checks: Type-1 mandatory fields present and
    well-formed (1.013 DOM and 1.014 GMT are mandatory in this profile); exactly one
    Type-2 of simple fields; every Type-14 and Type-10 with its mandatory fields, FGP 1-10
    and one image per finger position, HLL/VLL within the limits (SizeLimitError) and equal
    to what the embedded image header says (pixels are not decoded). Other record types
    are returned in ``other_records`` as they are. Optional standard fields that the
    dataclasses do not model (e.g. 14.020 COM) are accepted and not returned.
    """
    tx = decode(data, max_records=max_records, max_bytes=max_bytes)
    header = _parse_header(tx.records[0])
    _check_unique_idcs(tx.records[1:])
    limits = (max_image_width, max_image_height)
    type2: dict[int, str] | None = None
    fingerprints: list[FingerprintImage] = []
    faces: list[FaceImage] = []
    others: list[Record] = []
    positions: dict[int, int] = {}
    for index, record in enumerate(tx.records[1:], start=2):
        view = _View(record, index)
        if record.type == 2:
            if type2 is not None:
                raise MalformedTransactionError(
                    f"{view.where}: a second Type-2 record; the profile has exactly one"
                )
            type2 = {tag: view.text(tag, "user-defined") for tag in record.fields if tag != 2}
        elif record.type == 14:
            finger = _parse_fingerprint(view, limits)
            if finger.position in positions:
                raise MalformedTransactionError(
                    f"{view.where}: finger position (FGP 14.013) {finger.position} already "
                    f"in record {positions[finger.position]}: one image per finger"
                )
            positions[finger.position] = index
            fingerprints.append(finger)
        elif record.type == 10:
            faces.append(_parse_face(view, limits))
        else:
            others.append(record)
    if type2 is None:
        raise MalformedTransactionError("no Type-2 record; the profile requires one")
    return EnrollmentTransaction(
        header=header, type2=type2, fingerprints=fingerprints, faces=faces, other_records=others
    )


class _View:
    """Typed field access to one record, with error messages that say where."""

    def __init__(self, record: Record, index: int) -> None:
        self.record = record
        self.where = _where(index, record.type, record.idc if index > 1 else None)

    def label(self, tag: int, name: str) -> str:
        return f"{self.where}: field {_tag(self.record.type, tag)} {name}"

    def optional(self, tag: int, name: str) -> str | None:
        try:
            return self.record.get_text(tag)
        except MalformedTransactionError:
            raise MalformedTransactionError(
                f"{self.label(tag, name)} holds subfields or items where one value is expected"
            ) from None

    def text(self, tag: int, name: str) -> str:
        value = self.optional(tag, name)
        if value is None:
            raise MalformedTransactionError(f"{self.label(tag, name)} is mandatory and missing")
        if not value:
            raise MalformedTransactionError(f"{self.label(tag, name)} is empty")
        return value

    def number(self, tag: int, name: str, max_digits: int) -> int:
        value = self.text(tag, name)
        if not _is_number(value, max_digits):
            raise MalformedTransactionError(
                f"{self.label(tag, name)} is {value!r}; expected 1-{max_digits} digits"
            )
        return int(value)

    def choice(self, tag: int, name: str, allowed: frozenset[str]) -> str:
        value = self.text(tag, name)
        if value not in allowed:
            raise MalformedTransactionError(
                f"{self.label(tag, name)} is {value!r}; expected one of {sorted(allowed)}"
            )
        return value

    def date(self, tag: int, name: str) -> date:
        value = self.text(tag, name)
        parsed = _parse_date(value)
        if parsed is None:
            raise MalformedTransactionError(
                f"{self.label(tag, name)} is {value!r}; expected a date YYYYMMDD"
            )
        return parsed

    def items(self, tag: int) -> list[list[str]] | None:
        value = self.record.fields.get(tag)
        return value if isinstance(value, list) else None


def _parse_date(value: str) -> date | None:
    if not _DATE_RE.fullmatch(value):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _parse_header(record: Record) -> TransactionHeader:
    view = _View(record, 1)
    ver = view.choice(2, "VER", SUPPORTED_VERSIONS)
    tot = view.text(4, "TOT")
    if not _TOT_RE.fullmatch(tot):
        raise MalformedTransactionError(f"{view.label(4, 'TOT')} is {tot!r}; 1-16 letters")
    dat = view.date(5, "DAT")
    dai = view.text(7, "DAI")
    ori = view.text(8, "ORI")
    tcn = view.text(9, "TCN")
    for tag, name in ((11, "NSR"), (12, "NTR")):
        value = view.text(tag, name)
        if not _RES_RE.fullmatch(value):
            raise MalformedTransactionError(
                f"{view.label(tag, name)} is {value!r}; expected 'NN.NN' pixels per mm"
            )
    dom = view.items(13)
    if dom is None:
        raise MalformedTransactionError(f"{view.label(13, 'DOM')} is mandatory and missing")
    if len(dom) != 1 or len(dom[0]) != 2 or not dom[0][0] or not dom[0][1]:
        raise MalformedTransactionError(
            f"{view.label(13, 'DOM')}: expected one subfield of domain name US version"
        )
    gmt_text = view.text(14, "GMT")
    gmt = _parse_gmt(gmt_text)
    if gmt is None:
        raise MalformedTransactionError(
            f"{view.label(14, 'GMT')} is {gmt_text!r}; expected YYYYMMDDhhmmssZ"
        )
    return TransactionHeader(
        tot=tot,
        dat=dat,
        dai=dai,
        ori=ori,
        tcn=tcn,
        gmt=gmt,
        dom_name=dom[0][0],
        dom_version=dom[0][1],
        ver=ver,
    )


def _parse_gmt(value: str) -> datetime | None:
    if not _GMT_RE.fullmatch(value):
        return None
    try:
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[8:10]),
            int(value[10:12]),
            int(value[12:14]),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def _image_size(view: _View, limits: tuple[int, int]) -> tuple[int, int]:
    width = view.number(6, "HLL", 5)
    height = view.number(7, "VLL", 5)
    if width == 0 or height == 0:
        raise MalformedTransactionError(f"{view.where}: image size {width}x{height}")
    if width > limits[0] or height > limits[1]:
        raise SizeLimitError(
            f"{view.where}: declared image size HLL x VLL = {width}x{height} exceeds the "
            f"limit {limits[0]}x{limits[1]}"
        )
    return width, height


def _image_data(view: _View, compression: str, width: int, height: int) -> bytes:
    data = view.record.binary
    if data is None:
        raise MalformedTransactionError(
            f"{view.label(999, 'DATA')} (the image) is mandatory and missing"
        )
    try:
        actual = read_image_header(data, compression)
    except MalformedTransactionError as exc:
        raise MalformedTransactionError(f"{view.label(999, 'DATA')}: {exc.message}") from None
    if (actual.width, actual.height) != (width, height):
        raise MalformedTransactionError(
            f"{view.where}: HLL x VLL declare {width}x{height} but the {compression} image "
            f"header in field {_tag(view.record.type, 999)} says {actual.width}x{actual.height}"
        )
    return data


def _quality_items(view: _View, tag: int, name: str, size: int) -> list[list[str]]:
    """Check a quality metric field (Section 7.7.7) and return its subfields."""
    items = view.items(tag)
    if items is None:
        return []
    for number, subfield in enumerate(items, start=1):
        qvu, qav, qap = subfield[-3:] if len(subfield) == size else ("", "", "")
        if (
            len(subfield) != size
            or not _is_number(qvu, 3)
            or not (int(qvu) <= 100 or int(qvu) in (_QVU_NOT_COMPUTED, _QVU_FAILED))
            or not _HEX4_RE.fullmatch(qav)
            or not _is_number(qap, 5)
            or not 1 <= int(qap) <= 65535
        ):
            raise MalformedTransactionError(
                f"{view.label(tag, name)} subfield {number} is {US.join(subfield)!r}; "
                "expected quality 0-100/254/255, vendor (4 hex digits), product 1-65535"
            )
    return items


def _score(qvu: str) -> int | None:
    value = int(qvu)
    return value if value <= 100 else None


def _parse_fingerprint(view: _View, limits: tuple[int, int]) -> FingerprintImage:
    impression = view.number(3, "IMP", 2)
    if impression not in _IMPRESSION_CODES:
        raise MalformedTransactionError(
            f"{view.label(3, 'IMP')} is {impression}; expected one of {sorted(_IMPRESSION_CODES)}"
        )
    source = view.text(4, "SRC")
    capture_date = view.date(5, "FCD")
    width, height = _image_size(view, limits)
    if view.number(8, "SLC", 1) != 1:
        raise MalformedTransactionError(
            f"{view.label(8, 'SLC')} must be 1 (pixels per inch) in this profile"
        )
    ppi = view.number(9, "THPS", 5)
    if view.number(10, "TVPS", 5) != ppi or ppi == 0:
        raise MalformedTransactionError(
            f"{view.where}: THPS (14.009) and TVPS (14.010) must be equal and non-zero"
        )
    compression = view.choice(11, "CGA", _FINGER_COMPRESSIONS)
    if compression == "WSQ20" and ppi != 500:
        raise MalformedTransactionError(
            f"{view.where}: WSQ20 images must be 500 ppi, THPS/TVPS say {ppi}"
        )
    if view.number(12, "BPX", 2) != 8:
        raise MalformedTransactionError(f"{view.label(12, 'BPX')} must be 8 (grayscale)")
    fgp = view.items(13)
    if fgp is None:
        raise MalformedTransactionError(f"{view.label(13, 'FGP')} is mandatory and missing")
    if len(fgp) != 1 or len(fgp[0]) != 1 or not _is_number(fgp[0][0], 2):
        raise MalformedTransactionError(
            f"{view.label(13, 'FGP')} is {RS.join(US.join(s) for s in fgp)!r}; "
            "this profile expects one finger position"
        )
    position = int(fgp[0][0])
    if not 1 <= position <= 10:
        raise MalformedTransactionError(
            f"{view.label(13, 'FGP')} is {position}; finger positions are 1-10"
        )
    quality: int | None = None
    for frmp, qvu, qav, qap in _quality_items(view, 24, "FQM", 4):
        if not _is_number(frmp, 2) or int(frmp) != position:
            raise MalformedTransactionError(
                f"{view.label(24, 'FQM')} names position {frmp!r}, the record holds {position}"
            )
        if quality is None and qav.upper() == NFIQ2_QAV and int(qap) == int(NFIQ2_QAP):
            quality = _score(qvu)
    data = _image_data(view, compression, width, height)
    return FingerprintImage(
        idc=view.record.idc,
        position=position,
        impression=impression,
        width=width,
        height=height,
        ppi=ppi,
        compression=compression,
        data=data,
        quality=quality,
        capture_date=capture_date,
        source=source,
    )


def _parse_face(view: _View, limits: tuple[int, int]) -> FaceImage:
    view.choice(3, "IMT", frozenset({"FACE"}))
    source = view.text(4, "SRC")
    capture_date = view.date(5, "PHD")
    width, height = _image_size(view, limits)
    if view.number(8, "SLC", 1) not in (0, 1, 2):
        raise MalformedTransactionError(f"{view.label(8, 'SLC')} must be 0, 1 or 2")
    view.number(9, "THPS", 5)
    view.number(10, "TVPS", 5)
    compression = view.choice(11, "CGA", _FACE_COMPRESSIONS)
    view.choice(12, "CSP", _COLOR_SPACES)
    sap = view.number(13, "SAP", 2)
    if sap not in _FACE_SAP_CODES:
        raise MalformedTransactionError(f"{view.label(13, 'SAP')} {sap} is not a face profile")
    pose = view.choice(20, "POS", _POSES)
    quality: int | None = None
    for qvu, qav, qap in _quality_items(view, 24, "SQS", 3):
        if (
            quality is None
            and qav.upper() == FACE_QUALITY_QAV
            and int(qap) == int(FACE_QUALITY_QAP)
        ):
            quality = _score(qvu)
    data = _image_data(view, compression, width, height)
    return FaceImage(
        idc=view.record.idc,
        width=width,
        height=height,
        compression=compression,
        data=data,
        capture_date=capture_date,
        source=source,
        pose=pose,
        quality=quality,
        sap=sap,
    )
