"""EF.COM and the data groups of the chip (ICAO 9303-10 4.6-4.7), built from plain values
and parsed back to them.

Biometric data groups (DG2 face, DG3 fingers) wrap ISO/IEC 19794 records in the CBEFF
templates of 9303-10 4.7.2: 7F61 group template -> 02 count, then per instance 7F60 ->
A1 biometric header template + 5F2E biometric data block.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from asn1crypto import core, keys
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment.errors import MalformedTransactionError
from enrollment.icao import asn1
from enrollment.icao.errors import LdsError
from enrollment.icao.tlv import Tlv, expect, iter_tlv, tlv
from enrollment.images import read_image_header

__all__ = [
    "DG_TAGS",
    "FaceImage",
    "FingerImage",
    "NationalData",
    "SecurityInfos",
    "build_com",
    "build_dg1",
    "build_dg2",
    "build_dg3",
    "build_dg13",
    "build_dg14",
    "build_dg15",
    "parse_com",
    "parse_dg1",
    "parse_dg2",
    "parse_dg3",
    "parse_dg13",
    "parse_dg14",
    "parse_dg15",
]

# 9303-10 4.6: the tag each data group file starts with.
DG_TAGS: dict[int, int] = {
    1: 0x61, 2: 0x75, 3: 0x63, 4: 0x76, 5: 0x65, 6: 0x66, 7: 0x67, 8: 0x68,
    9: 0x69, 10: 0x6A, 11: 0x6B, 12: 0x6C, 13: 0x6D, 14: 0x6E, 15: 0x6F, 16: 0x70,
}  # fmt: skip
COM_TAG = 0x60
LDS_VERSION = "0107"
UNICODE_VERSION = "040000"


def _dg_value(data: bytes, dg: int) -> bytes:
    return expect(data, DG_TAGS[dg])


def _only(objs: Sequence[Tlv], tag: int, where: str) -> bytes:
    found = [o.value for o in objs if o.tag == tag]
    if len(found) != 1:
        raise LdsError(f"{where}: expected one {tag:X}, found {len(found)}")
    return found[0]


# --------------------------------------------------------------------------- EF.COM


def build_com(data_groups: Sequence[int]) -> bytes:
    """EF.COM: LDS 1.7, Unicode 4.0.0, and the tags of the data groups present."""
    tags = bytes(DG_TAGS[dg] for dg in sorted(set(data_groups)))
    body = (
        tlv(0x5F01, LDS_VERSION.encode()) + tlv(0x5F36, UNICODE_VERSION.encode()) + tlv(0x5C, tags)
    )
    return tlv(COM_TAG, body)


def parse_com(data: bytes) -> list[int]:
    """The data group numbers EF.COM lists, in file order."""
    objs = list(iter_tlv(expect(data, COM_TAG)))
    tag_list = _only(objs, 0x5C, "EF.COM")
    by_tag = {t: dg for dg, t in DG_TAGS.items()}
    try:
        return [by_tag[t] for t in tag_list]
    except KeyError as exc:
        raise LdsError(f"EF.COM lists unknown data group tag {exc.args[0]:X}") from exc


# --------------------------------------------------------------------------- DG1


def build_dg1(mrz: str) -> bytes:
    """DG1: 61 -> 5F1F the MRZ characters (90 for TD1), no line breaks."""
    if len(mrz) not in (72, 88, 90):
        raise LdsError(f"MRZ of {len(mrz)} characters is not TD1, TD2 or TD3")
    return tlv(DG_TAGS[1], tlv(0x5F1F, mrz.encode("ascii")))


def parse_dg1(data: bytes) -> str:
    objs = list(iter_tlv(_dg_value(data, 1)))
    try:
        return _only(objs, 0x5F1F, "DG1").decode("ascii")
    except UnicodeDecodeError as exc:
        raise LdsError("DG1: the MRZ is not ASCII") from exc


# --------------------------------------------------------------------------- biometrics

_ICAO_HEADER_VERSION = b"\x01\x01"  # ICAO header version 1.1 in the BHT
_FORMAT_OWNER_SC37 = b"\x01\x01"  # ISO/IEC JTC 1/SC 37
_FORMAT_FACE = b"\x00\x08"  # ISO/IEC 19794-5 face image
_FORMAT_FINGER = b"\x00\x07"  # ISO/IEC 19794-4 finger image
_TYPE_FACE = b"\x02"  # CBEFF biometric type: facial features
_TYPE_FINGER = b"\x08"  # CBEFF biometric type: finger


def _group(instances: Sequence[tuple[bytes, bytes]]) -> bytes:
    """7F61 with the count and one 7F60 (A1 header, 5F2E data) per (header, record)."""
    body = tlv(0x02, bytes([len(instances)]))
    for header, record in instances:
        body += tlv(0x7F60, tlv(0xA1, header) + tlv(0x5F2E, record))
    return tlv(0x7F61, body)


def _ungroup(value: bytes, where: str) -> list[tuple[dict[int, bytes], bytes]]:
    """(header elements, biometric data block) of each instance in a 7F61 group."""
    objs = list(iter_tlv(expect(value, 0x7F61)))
    count = _only(objs, 0x02, where)
    instances = [o for o in objs if o.tag == 0x7F60]
    if len(count) != 1 or count[0] != len(instances):
        raise LdsError(f"{where}: count {count.hex()} but {len(instances)} templates")
    out = []
    for inst in instances:
        parts = list(iter_tlv(inst.value))
        header = {o.tag: o.value for o in iter_tlv(_only(parts, 0xA1, where))}
        block = [o.value for o in parts if o.tag in (0x5F2E, 0x7F2E)]
        if len(block) != 1:
            raise LdsError(f"{where}: a biometric template without one data block")
        out.append((header, block[0]))
    return out


@dataclass(frozen=True)
class FaceImage:
    """One portrait for DG2: the JPEG and what ISO/IEC 19794-5 says about it."""

    jpeg: bytes
    width: int
    height: int
    gender: int = 0  # 19794-5: 0 unspecified, 1 male, 2 female, 3 unknown
    image_type: int = 1  # 1 full frontal, 2 token frontal


_FACE_INFO_LEN = 20 + 12  # facial information block + image information, no feature points


def _face_record(face: FaceImage) -> bytes:
    block_len = _FACE_INFO_LEN + len(face.jpeg)
    header = b"FAC\x00" + b"010\x00" + struct.pack(">IH", 14 + block_len, 1)
    info = struct.pack(
        ">IHBBB3sH3s3s",
        block_len,
        0,  # feature points
        face.gender,
        0,  # eye colour unspecified
        0,  # hair colour unspecified
        b"\x00\x00\x00",  # property mask
        0,  # expression unspecified
        b"\x00\x00\x00",  # pose angle
        b"\x00\x00\x00",  # pose angle uncertainty
    )
    image_info = struct.pack(
        ">BBHHBBHH",
        face.image_type,
        0,  # image data type 0: JPEG
        face.width,
        face.height,
        1,  # colour space: 24-bit RGB
        2,  # source: static photograph from a digital still camera
        0,  # device type
        0,  # quality unspecified
    )
    return header + info + image_info + face.jpeg


def _parse_face_record(record: bytes) -> FaceImage:
    if len(record) < 14 + _FACE_INFO_LEN or record[:8] != b"FAC\x00010\x00":
        raise LdsError("DG2: the data block is not an ISO/IEC 19794-5:2005 face record")
    total, count = struct.unpack(">IH", record[8:14])
    if total != len(record) or count != 1:
        raise LdsError(f"DG2: face record length {total} / {len(record)}, {count} images")
    block_len, points, gender = struct.unpack(">IHB", record[14:21])
    if block_len != len(record) - 14:
        raise LdsError("DG2: facial record block length disagrees with the record")
    at = 14 + 20 + 8 * points
    if at + 12 > len(record):
        raise LdsError("DG2: face record truncated in its feature points")
    image_type, data_type, width, height = struct.unpack(">BBHH", record[at : at + 6])
    if data_type != 0:
        raise LdsError(f"DG2: image data type {data_type} (only JPEG, 0, is supported)")
    return FaceImage(record[at + 12 :], width, height, gender, image_type)


def build_dg2(faces: Sequence[FaceImage]) -> bytes:
    """DG2: the portrait(s) as ISO/IEC 19794-5:2005 records in CBEFF templates."""
    if not faces:
        raise LdsError("DG2 needs at least one face image")
    header = (
        tlv(0x80, _ICAO_HEADER_VERSION)
        + tlv(0x81, _TYPE_FACE)
        + tlv(0x87, _FORMAT_OWNER_SC37)
        + tlv(0x88, _FORMAT_FACE)
    )
    return tlv(DG_TAGS[2], _group([(header, _face_record(f)) for f in faces]))


def parse_dg2(data: bytes) -> list[FaceImage]:
    out = []
    for header, block in _ungroup(_dg_value(data, 2), "DG2"):
        if header.get(0x88) != _FORMAT_FACE:
            raise LdsError("DG2: a biometric header without format type 0008 (face)")
        out.append(_parse_face_record(block))
    return out


@dataclass(frozen=True)
class FingerImage:
    """One finger for DG3: WSQ at 500 ppi and its ANSI/NIST / ISO finger position."""

    wsq: bytes
    position: int  # 1 right thumb ... 10 left little (ISO/IEC 19794-4 Table 2)
    width: int = 0  # 0: read from the WSQ header
    height: int = 0
    quality: int = 254  # 19794-4: 0-100, 254 not computed
    impression: int = 1  # 0 live-scan plain, 1 live-scan rolled
    ppi: int = 500


def _cbeff_finger_subtype(position: int) -> bytes:
    """CBEFF subtype bits: 01 right / 02 left, 04 thumb 08 index 0C middle 10 ring 14 little."""
    side = 0x01 if position <= 5 else 0x02
    finger = (position - 1) % 5
    return bytes([side | (finger + 1) * 0x04])


_FIR_HEADER = struct.Struct(">4s4s6sHHBBHHHHBBH")  # 32 bytes, 19794-4:2005 8.1
_FINGER_HEADER = struct.Struct(">IBBBBBHHB")  # 14 bytes, 19794-4:2005 8.2


def _finger_record(finger: FingerImage) -> bytes:
    width, height = finger.width, finger.height
    if not (width and height):
        try:
            hdr = read_image_header(finger.wsq, "WSQ20")
        except MalformedTransactionError as exc:
            raise LdsError(f"DG3: finger {finger.position} is not WSQ: {exc.message}") from exc
        width, height = hdr.width, hdr.height
    block = _FINGER_HEADER.size + len(finger.wsq)
    total = _FIR_HEADER.size + block
    header = _FIR_HEADER.pack(
        b"FIR\x00",
        b"010\x00",
        total.to_bytes(6, "big"),
        0,  # capture device id
        31,  # image acquisition level 31: 500 ppi, 8-bit grey
        1,  # one finger per record
        1,  # scale units: pixels per inch
        finger.ppi,
        finger.ppi,
        finger.ppi,
        finger.ppi,
        8,  # bits per pixel
        2,  # compression: WSQ
        0,
    )
    view = _FINGER_HEADER.pack(
        block, finger.position, 1, 1, finger.quality, finger.impression, width, height, 0
    )
    return header + view + finger.wsq


def _parse_finger_record(record: bytes) -> FingerImage:
    if len(record) < _FIR_HEADER.size + _FINGER_HEADER.size:
        raise LdsError("DG3: finger record shorter than its headers")
    fmt, ver, total6, _, _, count, _, ppi, _, _, _, _, comp, _ = _FIR_HEADER.unpack_from(record)
    if fmt != b"FIR\x00" or ver != b"010\x00":
        raise LdsError("DG3: the data block is not an ISO/IEC 19794-4:2005 finger record")
    if int.from_bytes(total6, "big") != len(record) or count != 1:
        raise LdsError("DG3: finger record length or finger count is wrong")
    if comp != 2:
        raise LdsError(f"DG3: compression {comp} (only WSQ, 2, is supported)")
    block, pos, _, _, quality, impression, width, height, _ = _FINGER_HEADER.unpack_from(
        record, _FIR_HEADER.size
    )
    if block != len(record) - _FIR_HEADER.size:
        raise LdsError("DG3: finger image block length disagrees with the record")
    wsq = record[_FIR_HEADER.size + _FINGER_HEADER.size :]
    return FingerImage(wsq, pos, width, height, quality, impression, ppi)


def build_dg3(fingers: Sequence[FingerImage]) -> bytes:
    """DG3: one CBEFF template per finger, each an ISO/IEC 19794-4:2005 WSQ record."""
    if not fingers:
        raise LdsError("DG3 needs at least one finger")
    instances = []
    for f in fingers:
        if not 1 <= f.position <= 10:
            raise LdsError(f"DG3: finger position {f.position} is not 1-10")
        header = (
            tlv(0x80, _ICAO_HEADER_VERSION)
            + tlv(0x81, _TYPE_FINGER)
            + tlv(0x82, _cbeff_finger_subtype(f.position))
            + tlv(0x87, _FORMAT_OWNER_SC37)
            + tlv(0x88, _FORMAT_FINGER)
        )
        instances.append((header, _finger_record(f)))
    return tlv(DG_TAGS[3], _group(instances))


def parse_dg3(data: bytes) -> list[FingerImage]:
    out = []
    for header, block in _ungroup(_dg_value(data, 3), "DG3"):
        if header.get(0x88) != _FORMAT_FINGER:
            raise LdsError("DG3: a biometric header without format type 0007 (finger)")
        out.append(_parse_finger_record(block))
    return out


# --------------------------------------------------------------------------- DG13

DG13_LAYOUT_VERSION = 1


@dataclass(frozen=True)
class NationalData:
    """DG13 for Viet Nam: what the card prints, in Vietnamese (UTF-8, NFC).

    Dates are digits only: YYYYMMDD, or YYYY / YYYYMM for a partly known date of birth.
    """

    personal_number: str
    full_name: str
    date_of_birth: str
    sex: str  # "M" / "F"
    nationality: str  # ISO 3166-1 alpha-3 as in the MRZ, e.g. "VNM"
    ethnicity: str  # as printed, e.g. "Kinh"
    religion: str  # as printed, e.g. "Không"
    place_of_origin: str
    place_of_residence: str
    date_of_issue: str
    date_of_expiry: str | None = None  # None: valid for life
    identifying_marks: tuple[str, ...] = ()
    father_name: str | None = None
    mother_name: str | None = None
    spouse_name: str | None = None
    old_id_number: str | None = None


# Context-specific primitive tags inside 6D; each value UTF-8. Documented in the report
# (docs/protocols/card.md). 8A may repeat (one per identifying mark, in order).
_DG13_FIELDS: tuple[tuple[int, str], ...] = (
    (0x81, "personal_number"),
    (0x82, "full_name"),
    (0x83, "date_of_birth"),
    (0x84, "sex"),
    (0x85, "nationality"),
    (0x86, "ethnicity"),
    (0x87, "religion"),
    (0x88, "place_of_origin"),
    (0x89, "place_of_residence"),
    (0x8B, "date_of_issue"),
    (0x8C, "date_of_expiry"),
    (0x8D, "father_name"),
    (0x8E, "mother_name"),
    (0x8F, "spouse_name"),
    (0x90, "old_id_number"),
)
_DG13_MARK = 0x8A
_DG13_VERSION_TAG = 0x80


def build_dg13(data: NationalData) -> bytes:
    body = tlv(_DG13_VERSION_TAG, bytes([DG13_LAYOUT_VERSION]))
    for tag, name in _DG13_FIELDS:
        value = getattr(data, name)
        if value is not None:
            body += tlv(tag, str(value).encode("utf-8"))
        if tag == 0x89:  # marks sit between residence and issue date, in tag order
            for mark in data.identifying_marks:
                body += tlv(_DG13_MARK, mark.encode("utf-8"))
    return tlv(DG_TAGS[13], body)


def parse_dg13(data: bytes) -> NationalData:
    objs = list(iter_tlv(_dg_value(data, 13)))
    version = _only(objs, _DG13_VERSION_TAG, "DG13")
    if version != bytes([DG13_LAYOUT_VERSION]):
        raise LdsError(f"DG13 layout version {version.hex()} is not supported")
    values: dict[str, str] = {}
    known = dict(_DG13_FIELDS)
    for o in objs:
        if o.tag in known:
            if known[o.tag] in values:
                raise LdsError(f"DG13: tag {o.tag:X} appears twice")
            try:
                values[known[o.tag]] = o.value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LdsError(f"DG13: tag {o.tag:X} is not UTF-8") from exc
    try:
        marks = tuple(o.value.decode("utf-8") for o in objs if o.tag == _DG13_MARK)
    except UnicodeDecodeError as exc:
        raise LdsError("DG13: an identifying mark is not UTF-8") from exc
    required = [n for _, n in _DG13_FIELDS[:10] if n != "date_of_expiry"]
    missing = [n for n in required if n not in values]
    if missing:
        raise LdsError(f"DG13 lacks {', '.join(missing)}")
    return NationalData(**values, identifying_marks=marks)


# --------------------------------------------------------------------------- DG14

# BSI TR-03110 / ICAO 9303-11 object identifiers.
ID_PK_ECDH = "0.4.0.127.0.7.2.2.1.2"
ID_CA_ECDH_AES_CBC_CMAC_128 = "0.4.0.127.0.7.2.2.3.2.2"
ID_PACE_ECDH_GM_AES_CBC_CMAC_128 = "0.4.0.127.0.7.2.2.4.2.2"
ID_AA = "2.23.136.1.1.5"
ECDSA_PLAIN_SHA256 = "0.4.0.127.0.7.1.1.4.1.3"
PACE_PARAM_P256 = 12  # 9303-11 Table 6: standardized domain parameters, NIST P-256


@dataclass(frozen=True)
class SecurityInfos:
    """What DG14 declares: PACE, Chip Authentication (with its key), the AA algorithm."""

    pace_protocols: tuple[str, ...] = (ID_PACE_ECDH_GM_AES_CBC_CMAC_128,)
    chip_auth_key: ec.EllipticCurvePublicKey | None = None
    chip_auth_protocol: str = ID_CA_ECDH_AES_CBC_CMAC_128
    aa_signature_algorithm: str | None = None  # set when DG15 holds an EC key
    other_protocols: tuple[str, ...] = field(default=(), compare=False)


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def build_dg14(infos: SecurityInfos) -> bytes:
    items = []
    for oid in infos.pace_protocols:
        items.append(
            {
                "protocol": oid,
                "required_data": core.Integer(2),
                "optional_data": core.Integer(PACE_PARAM_P256),
            }
        )
    if infos.chip_auth_key is not None:
        items.append({"protocol": infos.chip_auth_protocol, "required_data": core.Integer(1)})
        items.append(
            {
                "protocol": ID_PK_ECDH,
                "required_data": keys.PublicKeyInfo.load(_spki(infos.chip_auth_key)),
            }
        )
    if infos.aa_signature_algorithm is not None:
        items.append(
            {
                "protocol": ID_AA,
                "required_data": core.Integer(1),
                "optional_data": core.ObjectIdentifier(infos.aa_signature_algorithm),
            }
        )
    return tlv(DG_TAGS[14], asn1.SecurityInfos(items).dump())


def parse_dg14(data: bytes) -> SecurityInfos:
    try:
        parsed = asn1.SecurityInfos.load(_dg_value(data, 14), strict=True)
        pace: list[str] = []
        other: list[str] = []
        ca_key: ec.EllipticCurvePublicKey | None = None
        aa: str | None = None
        ca_protocol = ID_CA_ECDH_AES_CBC_CMAC_128
        for info in parsed:
            oid = info["protocol"].dotted
            if oid.startswith("0.4.0.127.0.7.2.2.4."):
                pace.append(oid)
            elif oid.startswith("0.4.0.127.0.7.2.2.3."):
                ca_protocol = oid
            elif oid == ID_PK_ECDH:
                spki = info["required_data"].dump()
                key = serialization.load_der_public_key(spki)
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    raise LdsError("DG14: the chip authentication key is not an EC key")
                ca_key = key
            elif oid == ID_AA:
                opt = info["optional_data"]
                aa = core.ObjectIdentifier.load(opt.dump()).dotted if opt.native else None
            else:
                other.append(oid)
    except LdsError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, UnsupportedAlgorithm) as exc:
        raise LdsError(f"DG14 is not a SecurityInfos SET: {exc}") from exc
    return SecurityInfos(tuple(pace), ca_key, ca_protocol, aa, tuple(other))


# --------------------------------------------------------------------------- DG15


def build_dg15(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """DG15: the Active Authentication public key as a SubjectPublicKeyInfo."""
    return tlv(DG_TAGS[15], _spki(public_key))


def parse_dg15(data: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_der_public_key(_dg_value(data, 15))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise LdsError(f"DG15 is not a SubjectPublicKeyInfo: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise LdsError("DG15 holds a key that is not EC (only ECDSA AA is supported)")
    return key
