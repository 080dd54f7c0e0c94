"""The demographic pre-check: same name, date of birth and place.

An extra signal, never a verdict: a candidate whose demographics agree with the probe's
is verified on every finger even if the 1:N search did not rank it, and it goes to review
at a lower biometric score (``AbisThresholds.with_demographics``); it never goes to review
on demographics alone. Namesakes born the same day in one commune exist, and a person
enrolling twice on purpose changes the name first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Demographics:
    """What the pre-check compares, as the ``package`` row holds it.

    ``name_key``: the name without diacritics, upper-case, single spaces;
    ``date_of_birth``: ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` as in the record;
    ``place_code``: the place-of-birth or registration area code.
    """

    name_key: str | None = None
    date_of_birth: str | None = None
    place_code: str | None = None

    @property
    def complete(self) -> bool:
        return bool(self.name_key and self.date_of_birth and self.place_code)

    @property
    def index_key(self) -> tuple[str, str] | None:
        """What the in-memory index groups entries by (the date is compared after)."""
        if not self.complete:
            return None
        return str(self.name_key), str(self.place_code)


def dates_agree(a: str, b: str) -> bool:
    """Whether two record dates can name the same day: equal, or one a coarser form of the
    other (``1985`` agrees with ``1985-03-02``; records of the old paper register often
    hold only the year)."""
    shorter, longer = sorted((a, b), key=len)
    return longer.startswith(shorter) and (
        len(shorter) == len(longer) or longer[len(shorter)] == "-"
    )


def agree(a: Demographics, b: Demographics) -> bool:
    """Same name, compatible date of birth and same place; False when either side lacks
    one of them (an absent field is no evidence)."""
    if not (a.complete and b.complete):
        return False
    return (
        a.name_key == b.name_key
        and a.place_code == b.place_code
        and dates_agree(str(a.date_of_birth), str(b.date_of_birth))
    )
