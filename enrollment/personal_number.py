"""The 12-digit personal number (số định danh cá nhân), Decree 137/2015 and Circular
07/2016 of the Ministry of Public Security:

    PPP G YY SSSSSS
    │   │ │  └── 6-digit sequence within the prefix, allocated by the registry
    │   │ └───── last two digits of the birth year
    │   └─────── century and sex: 1900s 0 male / 1 female, 2000s 2 / 3, 2100s 4 / 5,
    │            2200s 6 / 7, 2300s 8 / 9
    └─────────── 3-digit province code of the place of birth registration (the 2-digit
                 GSO province code, zero-padded: 001 Ha Noi, 079 Ho Chi Minh City)

The first six digits (the prefix) follow from facts about the person; only the sequence
is allocated, so it is the registry's job to keep it unique per prefix and never reuse
it. Both sides use this module: the registry to compose numbers, the station and the
chip code to check them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from enrollment.divisions import personal_number_province
from enrollment.record import Sex

SEQUENCE_LIMIT = 1_000_000
"""Sequences run 000000-999999 within one prefix."""

_FIRST_CENTURY = 1900
_NUMBER = re.compile(r"^\d{12}$")


class PersonalNumberError(ValueError):
    """Text that is not a personal number, or facts that cannot make one."""


@dataclass(frozen=True)
class PersonalNumber:
    province: str
    """3 digits, e.g. "001"."""
    sex: Sex
    birth_year: int
    sequence: int

    @property
    def prefix(self) -> str:
        return number_prefix(self.province, self.sex, self.birth_year)

    def __str__(self) -> str:
        return f"{self.prefix}{self.sequence:06d}"


def _century_sex_digit(sex: Sex, birth_year: int) -> int:
    century = (birth_year - _FIRST_CENTURY) // 100
    if not 0 <= century <= 4:
        raise PersonalNumberError(f"birth year {birth_year} is outside 1900-2399")
    return 2 * century + (1 if sex is Sex.female else 0)


def number_prefix(province: str, sex: Sex, birth_year: int) -> str:
    """The six digits the person's facts determine. ``province`` is the 3-digit code,
    or the 2-digit GSO code (zero-padded here)."""
    if len(province) == 2:
        province = personal_number_province(province)
    if len(province) != 3 or not province.isdigit() or province == "000":
        raise PersonalNumberError(f"province code {province!r} is not three digits")
    return f"{province}{_century_sex_digit(sex, birth_year)}{birth_year % 100:02d}"


def compose(prefix: str, sequence: int) -> str:
    """The full number for an allocated ``sequence`` within ``prefix``."""
    if len(prefix) != 6 or not prefix.isdigit():
        raise PersonalNumberError(f"prefix {prefix!r} is not six digits")
    if not 0 <= sequence < SEQUENCE_LIMIT:
        raise PersonalNumberError(f"sequence {sequence} is outside 0-{SEQUENCE_LIMIT - 1}")
    return f"{prefix}{sequence:06d}"


def parse(text: str) -> PersonalNumber:
    """Read a number back into its facts; PersonalNumberError when it cannot be one."""
    if not _NUMBER.match(text):
        raise PersonalNumberError("a personal number is exactly 12 digits")
    province, digit, yy, sequence = text[:3], int(text[3]), int(text[4:6]), int(text[6:])
    if province == "000":
        raise PersonalNumberError("province code 000 does not exist")
    sex = Sex.female if digit % 2 else Sex.male
    return PersonalNumber(province, sex, _FIRST_CENTURY + 100 * (digit // 2) + yy, sequence)
