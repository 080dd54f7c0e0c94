"""The slip's PDF layout (fpdf2): kept apart from :mod:`station.slip` so that the
service imports fpdf and its font tools only when it first prints a slip."""

from __future__ import annotations

from pathlib import Path

import segno
from fpdf import FPDF

from station.slip import (
    _TEXT,
    _VIETNAM,
    MARGIN_MM,
    PAGE_WIDTH_MM,
    QR_SIZE_MM,
    Lang,
    SlipData,
    SlipError,
    _date_of_birth,
    _nfc,
    slip_payload,
)


class _Slip(FPDF):
    def __init__(self, height: float, font_dir: Path) -> None:
        super().__init__(unit="mm", format=(PAGE_WIDTH_MM, height))
        self.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
        self.set_auto_page_break(False)
        regular, bold = font_dir / "DejaVuSans.ttf", font_dir / "DejaVuSans-Bold.ttf"
        for path in (regular, bold):
            if not path.is_file():
                raise SlipError(
                    f"font {path} is missing: install Debian's fonts-dejavu-core "
                    "(apt install fonts-dejavu-core) or set the font folder"
                )
        self.add_font("DejaVu", "", str(regular))
        self.add_font("DejaVu", "B", str(bold))
        self.add_page()

    @property
    def width(self) -> float:
        return PAGE_WIDTH_MM - 2 * MARGIN_MM

    def centred(self, text: str, size: float, style: str = "") -> None:
        self.set_font("DejaVu", style, size)
        self.multi_cell(self.width, size * 0.45, text, align="C", new_x="LMARGIN", new_y="NEXT")

    def field(self, label: str, value: str, *, bold: bool = False, size: float = 9) -> None:
        self.set_font("DejaVu", "", 7.5)
        self.set_text_color(70)
        self.cell(self.width, 3.6, label, new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0)
        self.set_font("DejaVu", "B" if bold else "", size)
        self.multi_cell(self.width, size * 0.46, value, new_x="LMARGIN", new_y="NEXT")
        self.ln(0.8)

    def rule(self) -> None:
        self.ln(1)
        self.set_draw_color(0)
        self.set_line_width(0.2)
        self.line(MARGIN_MM, self.get_y(), PAGE_WIDTH_MM - MARGIN_MM, self.get_y())
        self.ln(2)

    def qr(self, payload: str, size: float) -> None:
        code = segno.make(payload, error="m", micro=False)
        rows = [list(r) for r in code.matrix_iter(scale=1, border=0)]
        n = len(rows)
        module = size / n
        left = (PAGE_WIDTH_MM - size) / 2
        top = self.get_y() + 4 * module  # the quiet zone above
        self.set_fill_color(0)
        for y, row in enumerate(rows):
            x = 0
            while x < n:  # one rectangle per run of dark modules: fewer, seamless shapes
                if row[x]:
                    start = x
                    while x < n and row[x]:
                        x += 1
                    self.rect(
                        left + start * module, top + y * module, (x - start) * module, module, "F"
                    )
                else:
                    x += 1
        self.set_y(top + size + 4 * module)


def layout(data: SlipData, lang: Lang, height: float, font_dir: Path) -> _Slip:
    t = _TEXT[lang]
    pdf = _Slip(height, font_dir)
    pdf.set_title(t["title"])
    pdf.set_creation_date(data.at)
    pdf.centred(t["country"], 7.5, "B")
    pdf.centred(t["motto"], 7.5)
    pdf.ln(2)
    pdf.centred(t["title"], 10, "B")
    pdf.rule()
    pdf.field(t["office"], _nfc(data.office))
    pdf.field(t["station"], _nfc(data.station_id))
    pdf.field(t["at"], f"{data.at.astimezone(_VIETNAM):%d/%m/%Y %H:%M}")
    pdf.rule()
    pdf.field(t["name"], _nfc(data.citizen_name).upper(), bold=True, size=11)
    pdf.field(t["dob"], _date_of_birth(data.date_of_birth))
    pdf.field(t["package"], data.package_id.lower(), size=8.5)
    pdf.field(t["receipt"], data.receipt_number or t["pending"], bold=True)
    if data.ticket:
        pdf.field(t["ticket"], data.ticket)
    pdf.field(t["operator"], _nfc(data.operator))
    if data.pickup:
        pdf.field(t["pickup"], _nfc(data.pickup))
    pdf.rule()
    pdf.set_font("DejaVu", "B", 8.5)
    pdf.cell(pdf.width, 4, t["next_title"], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 8)
    pdf.multi_cell(pdf.width, 3.6, t["next"], new_x="LMARGIN", new_y="NEXT")
    pdf.qr(slip_payload(data.package_id, data.receipt_number), QR_SIZE_MM)
    pdf.centred(t["qr"], 7)
    return pdf
