"""The TD1 machine readable zone (ICAO 9303-5) of the Vietnamese chip ID card (CCCD).

Conventions (checked against a real CCCD's MRZ):

- line 1: ``ID`` + ``VNM`` + document number (the LAST 9 digits of the 12-digit personal
  number) + its check digit + optional data 1 = the full 12-digit personal number, ``<<``
  and the check digit of the personal number (position 30);
- line 2: date of birth YYMMDD + check, sex M/F/<, date of expiry YYMMDD + check, ``VNM``,
  optional data 2 empty (``<`` x 11), composite check digit;
- line 3: the name without diacritics, upper case, ``SURNAME<<GIVEN<NAMES``: the Vietnamese
  family name (họ) is the first word, the middle and given names (tên đệm, tên) follow;
  đ/Đ -> D, other letters lose their marks (NFD, combining marks dropped).

Unknown parts of a date of birth are ``<`` (9303-3 4.2.4: "YY<<<<" when only the year is
known); the check digit counts ``<`` as zero. A card without expiry (citizens over 60
receive one valid for life) is written with expiry ``<<<<<<``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from enrollment.icao.errors import LdsError

__all__ = [
    "Td1",
    "cccd_td1",
    "check_digit",
    "mrz_date",
    "mrz_information",
    "name_field",
    "parse_td1",
    "transliterate",
]

LINE = 30
_VALUES = {**{str(d): d for d in range(10)}, "<": 0}
_VALUES.update({chr(ord("A") + i): 10 + i for i in range(26)})
_FIELD = re.compile(r"^[A-Z0-9<]*$")
_PERSONAL_NUMBER = re.compile(r"^\d{12}$")


def check_digit(field: str) -> str:
    """ICAO 9303-3 4.9: weights 7, 3, 1 over the character values, modulo 10."""
    try:
        total = sum(_VALUES[c] * (7, 3, 1)[i % 3] for i, c in enumerate(field))
    except KeyError as exc:
        raise LdsError(f"{exc.args[0]!r} is not an MRZ character") from exc
    return str(total % 10)


def transliterate(text: str) -> str:
    """Vietnamese text -> MRZ characters: no diacritics, upper case, separators -> ``<``."""
    text = text.replace("đ", "d").replace("Đ", "D")
    stripped = "".join(
        c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)
    )
    out = []
    for c in stripped.upper():
        if "A" <= c <= "Z":
            out.append(c)
        elif c in "'’":  # 9303-3 6.A: apostrophes are omitted
            continue
        else:
            out.append("<")
    return "<".join(part for part in "".join(out).split("<") if part)


def name_field(full_name: str, width: int = LINE) -> str:
    """``SURNAME<<GIVEN<NAMES`` padded to ``width``; given names are cut first if too long."""
    words = transliterate(full_name).split("<")
    if not words or not words[0]:
        raise LdsError(f"no MRZ characters in the name {full_name!r}")
    surname, given = words[0], words[1:]

    def join() -> str:
        return f"{surname}<<{'<'.join(given)}" if given else surname

    # 9303-3 4.6.5: shorten the secondary identifier first, reducing given names to
    # initials from the last one backwards, then cut what still overflows.
    for i in reversed(range(len(given))):
        if len(join()) <= width:
            break
        given[i] = given[i][0]
    field = join()[:width]
    return field.ljust(width, "<")


def mrz_date(value: date | str) -> str:
    """A date, or a partial date 'YYYY' / 'YYYY-MM' / 'YYYY-MM-DD', as MRZ YYMMDD."""
    if isinstance(value, date):
        return value.strftime("%y%m%d")
    parts = value.split("-")
    if not 1 <= len(parts) <= 3 or len(parts[0]) != 4 or not all(p.isdigit() for p in parts):
        raise LdsError(f"{value!r} is not YYYY, YYYY-MM or YYYY-MM-DD")
    yy = parts[0][2:]
    mm = parts[1] if len(parts) > 1 else "<<"
    dd = parts[2] if len(parts) > 2 else "<<"
    return yy + mm + dd


def mrz_information(document_number: str, birth_date: str, expiry_date: str) -> str:
    """The BAC key seed (9303-11 9.7.2): number, DOB and expiry, each with its check digit.

    ``birth_date`` and ``expiry_date`` are the six MRZ characters (YYMMDD).
    """
    number = document_number.ljust(9, "<")
    return "".join(f + check_digit(f) for f in (number, birth_date, expiry_date))


@dataclass(frozen=True)
class Td1:
    """The fields of a TD1 MRZ, as the characters written in it."""

    document_number: str  # 9 characters
    birth_date: str  # YYMMDD, '<' for unknown parts
    sex: str  # 'M', 'F' or '<'
    expiry_date: str  # YYMMDD or '<<<<<<'
    name: str  # the 30-character line 3
    optional_data1: str = ""
    optional_data2: str = ""
    document_code: str = "ID"
    issuing_state: str = "VNM"
    nationality: str = "VNM"

    def __post_init__(self) -> None:
        fields = {
            "document number": (self.document_number, 9),
            "date of birth": (self.birth_date, 6),
            "sex": (self.sex, 1),
            "date of expiry": (self.expiry_date, 6),
            "name": (self.name, LINE),
            "optional data 1": (self.optional_data1, 15),
            "optional data 2": (self.optional_data2, 11),
            "document code": (self.document_code, 2),
            "issuing state": (self.issuing_state, 3),
            "nationality": (self.nationality, 3),
        }
        for label, (value, width) in fields.items():
            if len(value) > width or not _FIELD.match(value):
                raise LdsError(f"MRZ {label} {value!r}: at most {width} of A-Z 0-9 <")
        if self.sex not in ("M", "F", "<"):
            raise LdsError(f"MRZ sex must be M, F or <, not {self.sex!r}")

    def lines(self) -> tuple[str, str, str]:
        number = self.document_number.ljust(9, "<")
        opt1 = self.optional_data1.ljust(15, "<")
        opt2 = self.optional_data2.ljust(11, "<")
        upper = number + check_digit(number) + opt1
        middle = (
            self.birth_date
            + check_digit(self.birth_date)
            + self.sex
            + self.expiry_date
            + check_digit(self.expiry_date)
            + self.nationality
            + opt2
        )
        # Composite: line 1 from position 6, line 2 positions 1-7, 9-15 and 19-29.
        composite = check_digit(upper + middle[0:7] + middle[8:15] + middle[18:29])
        line1 = (self.document_code.ljust(2, "<") + self.issuing_state + upper).ljust(LINE, "<")
        return line1, middle + composite, self.name.ljust(LINE, "<")

    def text(self) -> str:
        """The 90 characters, lines concatenated without separators (as in DG1)."""
        return "".join(self.lines())

    def mrz_information(self) -> str:
        return mrz_information(self.document_number, self.birth_date, self.expiry_date)

    @property
    def personal_number(self) -> str | None:
        """The CCCD's 12-digit number from optional data 1, if it holds one with its check."""
        candidate, rest = self.optional_data1[:12], self.optional_data1[12:]
        if _PERSONAL_NUMBER.match(candidate) and rest == "<<" + check_digit(candidate):
            return candidate
        return None


def cccd_td1(
    *,
    personal_number: str,
    full_name: str,
    birth_date: date | str,
    sex: str,
    expiry: date | None,
) -> Td1:
    """The MRZ of a chip ID card for ``personal_number`` (12 digits)."""
    if not _PERSONAL_NUMBER.match(personal_number):
        raise LdsError(f"personal number {personal_number!r} is not 12 digits")
    return Td1(
        document_number=personal_number[3:],
        birth_date=mrz_date(birth_date),
        sex=sex,
        expiry_date=mrz_date(expiry) if expiry is not None else "<" * 6,
        name=name_field(full_name),
        optional_data1=personal_number + "<<" + check_digit(personal_number),
    )


def parse_td1(text: str) -> Td1:
    """Read a TD1 (90 characters, with or without line breaks), checking every check digit."""
    flat = "".join(text.split())
    if len(flat) != 3 * LINE or not _FIELD.match(flat):
        raise LdsError(f"a TD1 MRZ is 90 characters of A-Z 0-9 <, got {len(flat)}")
    l1, l2, l3 = flat[:LINE], flat[LINE : 2 * LINE], flat[2 * LINE :]
    checks = {
        "document number": (l1[5:14], l1[14]),
        "date of birth": (l2[0:6], l2[6]),
        "date of expiry": (l2[8:14], l2[14]),
        "composite": (l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29], l2[29]),
    }
    for label, (field, digit) in checks.items():
        if check_digit(field) != digit:
            raise LdsError(f"MRZ check digit for {label} is {digit}, expected {check_digit(field)}")
    td1 = Td1(
        document_number=l1[5:14].rstrip("<"),
        birth_date=l2[0:6],
        sex=l2[7],
        expiry_date=l2[8:14],
        name=l3,
        optional_data1=l1[15:30].rstrip("<"),
        optional_data2=l2[18:29].rstrip("<"),
        document_code=l1[0:2].rstrip("<"),
        issuing_state=l1[2:5],
        nationality=l2[15:18],
    )
    if td1.text() != flat:
        raise LdsError("TD1 MRZ does not re-encode to itself")
    return td1
