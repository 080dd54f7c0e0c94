"""How long a chip ID card is valid (Law on Citizen Identification 2014, Article 21, in force
for the 2021 rollout): the card is renewed at 25, 40 and 60 years of age; a card issued
within the two years before one of those birthdays runs to the next one; from the last
renewal at 60 it has no expiry ("Không thời hạn").
"""

from __future__ import annotations

from datetime import date

__all__ = ["RENEWAL_AGES", "cccd_expiry"]

RENEWAL_AGES = (25, 40, 60)
_GRACE_YEARS = 2


def _birthday(born: date, age: int) -> date:
    try:
        return born.replace(year=born.year + age)
    except ValueError:  # born on 29 February: the birthday falls on 28 February
        return born.replace(year=born.year + age, day=28)


def cccd_expiry(date_of_birth: date, issued: date) -> date | None:
    """The expiry date printed on (and written in the MRZ of) a card issued on ``issued``;
    None for a card valid for life."""
    for age in RENEWAL_AGES:
        due = _birthday(date_of_birth, age)
        if issued < _birthday(date_of_birth, age - _GRACE_YEARS):
            return due
    return None
