"""The acknowledgement slip the citizen takes home: a PDF for an 80 mm receipt printer.

    pdf = render_slip(SlipData(office="Công an phường Phúc Xá", station_id="HN-0001",
                               at=now, citizen_name="Nguyễn Văn An", date_of_birth="1990-04-12",
                               package_id=built.package_id, receipt_number=None,
                               ticket="A-007", operator="Trần Thị Bình"), lang="vi")

Why 80 mm: the station travels with mobile teams to villages with a generator and no
office printer; an 80 mm thermal receipt printer (ESC/POS, USB, battery-powered models
exist) needs no toner, prints a slip in a second and is what the team can carry. The page
is 80 mm wide (72 mm printable, the usual print width of those printers) and exactly as
long as its content, so the printer cuts it there. An office with a laser printer prints
the same PDF unscaled (any viewer's "actual size").

What it carries: the office and station, the date and time (dd/mm/yyyy HH:MM, Viet Nam
time), the citizen's name with its diacritics and date of birth, the package id, the
registry's receipt number or "chờ đồng bộ" / "pending sync" when the station had no link
yet, the queue ticket, the officer, what happens next, and a QR code.

The QR code holds ``VNEID1:<PACKAGE-ID>:<RECEIPT>`` (see :func:`slip_payload`): the
version tag, the package id (a UUID) and the receipt number (``YYMMDD-`` and 12 base32
characters), upper-cased, so that the whole string is in the QR alphanumeric alphabet
(5.5 bits a character instead of 8: a version 4 symbol, ~1.1 mm modules at 37 mm, which a
phone or a counter scanner reads easily off thermal paper). The receipt part is empty
while the slip says "pending sync": whoever scans it then looks the package id up. The QR
is drawn as vector squares, crisp at any printer resolution.

Font: DejaVu Sans (Debian ``fonts-dejavu-core``, on the device image) covers every
Vietnamese precomposed letter; text is NFC-normalised before it is set.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from enrollment.ids import is_package_id
from enrollment.record import parse_partial_date

#: Where Debian's fonts-dejavu-core puts the fonts.
DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
PAYLOAD_TAG = "VNEID1"
PAGE_WIDTH_MM = 80.0
MARGIN_MM = 4.0
QR_SIZE_MM = 37.0
_VIETNAM = timezone(timedelta(hours=7), "ICT")
_RECEIPT = re.compile(r"^\d{6}-[A-Z2-7]{12}$")

Lang = Literal["vi", "en"]

_TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "country": "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "motto": "Độc lập - Tự do - Hạnh phúc",
        "title": "GIẤY BIÊN NHẬN HỒ SƠ CẤP THẺ CĂN CƯỚC",
        "office": "Nơi tiếp nhận",
        "station": "Máy thu nhận",
        "at": "Thời gian",
        "name": "Họ và tên",
        "dob": "Ngày sinh",
        "package": "Mã hồ sơ",
        "receipt": "Số biên nhận",
        "pending": "chờ đồng bộ",
        "ticket": "Số thứ tự",
        "operator": "Cán bộ tiếp nhận",
        "pickup": "Nhận thẻ",
        "next_title": "Bước tiếp theo",
        "next": (
            "Hồ sơ được gửi về Cơ sở dữ liệu quốc gia về dân cư để kiểm tra và cấp số định "
            "danh. Khi thẻ được in, cơ quan Công an sẽ báo thời gian, địa điểm nhận thẻ. "
            "Vui lòng giữ giấy này và mang theo khi nhận thẻ."
        ),
        "qr": "Mã QR: mã hồ sơ và số biên nhận",
    },
    "en": {
        "country": "SOCIALIST REPUBLIC OF VIET NAM",
        "motto": "Independence - Freedom - Happiness",
        "title": "ENROLLMENT RECEIPT - CHIP IDENTITY CARD",
        "office": "Office",
        "station": "Station",
        "at": "Date and time",
        "name": "Full name",
        "dob": "Date of birth",
        "package": "Package ID",
        "receipt": "Receipt number",
        "pending": "pending sync",
        "ticket": "Ticket",
        "operator": "Officer",
        "pickup": "Card pickup",
        "next_title": "What happens next",
        "next": (
            "Your record goes to the national population database to be checked and given "
            "a personal number. When the card is printed, the police will tell you when "
            "and where to collect it. Keep this slip and bring it when you collect the card."
        ),
        "qr": "QR code: package ID and receipt number",
    },
}


class SlipError(RuntimeError):
    """The slip cannot be rendered (a font is missing, or the data is not valid)."""


@dataclass(frozen=True)
class SlipData:
    """What the slip shows (the workflow fills it in when the package is queued)."""

    office: str
    station_id: str
    at: datetime
    """When the enrollment was completed (aware; shown in Viet Nam time)."""
    citizen_name: str
    date_of_birth: str
    """YYYY, YYYY-MM or YYYY-MM-DD, as in the record."""
    package_id: str
    operator: str
    receipt_number: str | None = None
    """The registry's number; None while the package has not been acknowledged."""
    ticket: str | None = None
    pickup: str | None = None
    """Where or when to collect the card, if the office already knows."""


def slip_payload(package_id: str, receipt_number: str | None) -> str:
    """The QR text: ``VNEID1:<PACKAGE-ID>:<RECEIPT>`` upper case, receipt empty when
    pending, e.g. ``VNEID1:0190F3A2-...-5C1D:210301-ABCDEFGH2345``."""
    if not is_package_id(package_id.lower()):
        raise SlipError(f"package id {package_id!r} is not a UUIDv7")
    receipt = (receipt_number or "").upper()
    if receipt and not _RECEIPT.match(receipt):
        raise SlipError(f"receipt number {receipt_number!r} is not YYMMDD-XXXXXXXXXXXX")
    return f"{PAYLOAD_TAG}:{package_id.upper()}:{receipt}"


def parse_slip_payload(text: str) -> tuple[str, str | None]:
    """(package id in canonical lower case, receipt number or None) from a scanned QR."""
    parts = text.strip().split(":")
    if len(parts) != 3 or parts[0] != PAYLOAD_TAG:
        raise SlipError(f"not a slip QR code: {text[:40]!r}")
    package_id, receipt = parts[1].lower(), parts[2] or None
    if not is_package_id(package_id):
        raise SlipError(f"the slip QR code's package id {parts[1]!r} is not a UUIDv7")
    if receipt is not None and not _RECEIPT.match(receipt):
        raise SlipError(f"the slip QR code's receipt number {receipt!r} is malformed")
    return package_id, receipt


def _date_of_birth(text: str) -> str:
    try:
        year, month, day = parse_partial_date(text)
    except ValueError as exc:
        raise SlipError(f"date of birth {text!r}: {exc}") from exc
    if day is not None:
        return f"{day:02d}/{month:02d}/{year:04d}"
    if month is not None:
        return f"{month:02d}/{year:04d}"
    return f"{year:04d}"


def _nfc(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def render_slip(data: SlipData, lang: Lang = "vi", *, font_dir: Path = DEJAVU_DIR) -> bytes:
    """The slip as PDF bytes (80 mm wide, as long as its content). Raises
    :class:`SlipError` for a missing font or invalid data."""
    if lang not in _TEXT:
        raise SlipError(f"slip language {lang!r}: choose one of {sorted(_TEXT)}")
    if data.at.tzinfo is None:
        raise SlipError("the slip time must be timezone-aware")
    for name in ("office", "station_id", "citizen_name", "operator"):
        if not _nfc(getattr(data, name)):
            raise SlipError(f"the slip needs the {name.replace('_', ' ')}")
    # fpdf (and its font tools) only now: a second and more of the service's start on a Pi.
    from station.slip_pdf import layout as _layout

    # Lay out once on a long page to learn the height, then again on a page that fits.
    probe = _layout(data, lang, 1000.0, font_dir)
    height = probe.get_y() + MARGIN_MM
    return bytes(_layout(data, lang, height, font_dir).output())


__all__ = [
    "DEJAVU_DIR",
    "PAYLOAD_TAG",
    "SlipData",
    "SlipError",
    "parse_slip_payload",
    "render_slip",
    "slip_payload",
]
