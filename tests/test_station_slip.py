"""The acknowledgement slip: read back with independent tools (pdfium renders and extracts
the text, OpenCV decodes the QR code)."""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pypdfium2 as pdfium  # type: ignore[import-untyped]
import pytest

from enrollment.ids import new_package_id
from station.slip import (
    PAYLOAD_TAG,
    SlipData,
    SlipError,
    parse_slip_payload,
    render_slip,
    slip_payload,
)

MM = 72 / 25.4  # PDF points per millimetre
PACKAGE_ID = new_package_id(unix_ms=1_614_564_300_000)
DATA = SlipData(
    office="Công an phường Phúc Xá, quận Ba Đình, Hà Nội",
    station_id="HN-0001",
    at=datetime(2021, 3, 1, 2, 5, tzinfo=UTC),  # 09:05 in Viet Nam
    citizen_name="Nguyễn Thị Ánh Tuyết",
    date_of_birth="1990-04-12",
    package_id=PACKAGE_ID,
    operator="Trần Văn Đức",
    receipt_number="210301-ABCDEFGH2345",
    ticket="A-007",
)


def read(pdf: bytes) -> tuple[str, np.ndarray, tuple[float, float]]:
    """(text, greyscale raster at 300 dpi, page size in points) of a one-page PDF."""
    doc = pdfium.PdfDocument(pdf)
    try:
        assert len(doc) == 1
        page = doc[0]
        text = page.get_textpage().get_text_range()
        raster = page.render(scale=300 / 72, grayscale=True).to_numpy()
        size = page.get_size()
    finally:
        doc.close()
    grey = raster if raster.ndim == 2 else cv2.cvtColor(raster, cv2.COLOR_BGR2GRAY)
    return unicodedata.normalize("NFC", text), grey, size


def decode_qr(grey: np.ndarray) -> str:
    """The slip's QR text. OpenCV's classic detector misses about one code in a hundred
    (CI met one: the package id is random); its ArUco-based detector reads those, so a
    code counts as unreadable only when both fail."""
    for detector in (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()):
        payload, points, _ = detector.detectAndDecode(grey)
        if points is not None and payload:
            return str(payload)
    raise AssertionError("no QR code found on the slip")


def test_vietnamese_slip_text_and_qr() -> None:
    text, grey, (width, height) = read(render_slip(DATA))
    assert width == pytest.approx(80 * MM, abs=0.1)
    assert height > width
    assert "NGUYỄN THỊ ÁNH TUYẾT" in text  # the name, upper case, with every diacritic
    assert "Trần Văn Đức" in text
    assert "Công an phường Phúc Xá" in text
    assert "01/03/2021 09:05" in text
    assert "12/04/1990" in text
    assert PACKAGE_ID in text
    assert "210301-ABCDEFGH2345" in text
    assert "A-007" in text
    assert "Bước tiếp theo" in text
    payload = decode_qr(grey)
    assert payload == f"{PAYLOAD_TAG}:{PACKAGE_ID.upper()}:210301-ABCDEFGH2345"
    assert parse_slip_payload(payload) == (PACKAGE_ID, "210301-ABCDEFGH2345")


def test_offline_slip_says_pending_sync_in_either_language() -> None:
    offline = dataclasses.replace(DATA, receipt_number=None, ticket=None)
    text_vi, grey, _ = read(render_slip(offline, "vi"))
    assert "chờ đồng bộ" in text_vi
    assert "Số thứ tự" not in text_vi
    assert parse_slip_payload(decode_qr(grey)) == (PACKAGE_ID, None)
    text_en, grey_en, _ = read(render_slip(offline, "en"))
    assert "pending sync" in text_en
    assert "Receipt number" in text_en
    assert "What happens next" in text_en
    assert "NGUYỄN THỊ ÁNH TUYẾT" in text_en
    assert parse_slip_payload(decode_qr(grey_en)) == (PACKAGE_ID, None)


def test_decomposed_input_and_partial_dates() -> None:
    data = dataclasses.replace(
        DATA,
        citizen_name=unicodedata.normalize("NFD", "Đặng Văn Hưởng"),
        date_of_birth="1958",
        pickup="Công an phường Phúc Xá, từ 15/04/2021",
    )
    text, _, (_, height) = read(render_slip(data))
    assert "ĐẶNG VĂN HƯỞNG" in text
    assert "Ngày sinh\r\n1958" in text or "Ngày sinh\n1958" in text
    assert "từ 15/04/2021" in text
    _, _, (_, shorter) = read(render_slip(DATA))
    assert height > shorter  # the page grows with its content
    month_only = dataclasses.replace(DATA, date_of_birth="1990-04")
    assert "04/1990" in read(render_slip(month_only))[0]


def test_payload_round_trip_and_refusals() -> None:
    assert slip_payload(PACKAGE_ID, None) == f"VNEID1:{PACKAGE_ID.upper()}:"
    assert parse_slip_payload(slip_payload(PACKAGE_ID, "210301-ABCDEFGH2345")) == (
        PACKAGE_ID,
        "210301-ABCDEFGH2345",
    )
    with pytest.raises(SlipError, match="UUIDv7"):
        slip_payload("not-a-package", None)
    with pytest.raises(SlipError, match="YYMMDD"):
        slip_payload(PACKAGE_ID, "12345")
    for bad in ("hello", f"VNEID2:{PACKAGE_ID}:", "VNEID1:1234:", f"VNEID1:{PACKAGE_ID}:XX"):
        with pytest.raises(SlipError):
            parse_slip_payload(bad)


def test_bad_slip_data_is_refused() -> None:
    with pytest.raises(SlipError, match="timezone"):
        render_slip(dataclasses.replace(DATA, at=datetime(2021, 3, 1, 9, 5)))
    with pytest.raises(SlipError, match="date of birth"):
        render_slip(dataclasses.replace(DATA, date_of_birth="12/04/1990"))
    with pytest.raises(SlipError, match="citizen name"):
        render_slip(dataclasses.replace(DATA, citizen_name="  "))
    with pytest.raises(SlipError, match="language"):
        render_slip(DATA, "fr")  # type: ignore[arg-type]


def test_a_missing_font_says_which_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(SlipError, match="fonts-dejavu-core"):
        render_slip(DATA, font_dir=tmp_path)
