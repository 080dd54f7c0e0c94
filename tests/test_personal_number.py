"""The 12-digit personal number: composed from the person's facts and a sequence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enrollment.personal_number import (
    PersonalNumber,
    PersonalNumberError,
    compose,
    number_prefix,
    parse,
)
from enrollment.record import Sex


@pytest.mark.parametrize(
    ("province", "sex", "year", "prefix"),
    [
        ("01", Sex.male, 1990, "001090"),  # Ha Noi, a man born in 1990
        ("79", Sex.female, 1985, "079185"),  # Ho Chi Minh City, a woman born in 1985
        ("079", Sex.male, 2007, "079207"),  # a boy born in 2007
        ("048", Sex.female, 2010, "048310"),  # Da Nang, a girl born in 2010
        ("001", Sex.female, 1900, "001100"),
        ("001", Sex.male, 2399, "001899"),
    ],
)
def test_prefix_from_the_persons_facts(province: str, sex: Sex, year: int, prefix: str) -> None:
    assert number_prefix(province, sex, year) == prefix


def test_the_sample_cards_numbers_read_back() -> None:
    # the number on the chip of tests/icaokit.py and the TD1 tests
    n = parse("001090012345")
    assert n == PersonalNumber("001", Sex.male, 1990, 12345)
    assert str(n) == "001090012345"


@given(
    st.integers(1, 99).map(lambda p: f"{p:03d}"),
    st.sampled_from(list(Sex)),
    st.integers(1900, 2399),
    st.integers(0, 999_999),
)
def test_compose_and_parse_round_trip(province: str, sex: Sex, year: int, seq: int) -> None:
    text = compose(number_prefix(province, sex, year), seq)
    assert len(text) == 12
    assert parse(text) == PersonalNumber(province, sex, year, seq)


@pytest.mark.parametrize(
    "text", ["", "00109001234", "0010900123456", "00109001234X", "000090012345", " 01090012345"]
)
def test_what_is_not_a_number_is_refused(text: str) -> None:
    with pytest.raises(PersonalNumberError):
        parse(text)


def test_facts_that_cannot_make_a_number_are_refused() -> None:
    with pytest.raises(PersonalNumberError, match="1900-2399"):
        number_prefix("001", Sex.male, 1899)
    with pytest.raises(PersonalNumberError, match="three digits"):
        number_prefix("1", Sex.male, 1990)
    with pytest.raises(PersonalNumberError, match="0-999999"):
        compose("001090", 1_000_000)
    with pytest.raises(PersonalNumberError, match="six digits"):
        compose("00109", 1)
