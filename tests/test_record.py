"""The enrollment record: what real Vietnamese records look like, and what they must not."""

from __future__ import annotations

import unicodedata
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from enrollment import modalities
from enrollment.record import (
    AdministrativeArea,
    BiometricSample,
    Demographics,
    EnrollmentRecord,
    parse_partial_date,
    youngest_age_on,
)
from tests.pkgkit import example


@pytest.fixture(scope="module")
def record_json() -> dict[str, Any]:
    record, _ = example(21)
    return record.model_dump(mode="json")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1975", (1975, None, None)), ("1975-04", (1975, 4, None)), ("2000-02-29", (2000, 2, 29))],
)
def test_partial_dates(text: str, parsed: tuple[int, int | None, int | None]) -> None:
    assert parse_partial_date(text) == parsed


@pytest.mark.parametrize("text", ["1975-13", "2021-02-29", "75", "1975-4", "1700", "1975-00"])
def test_bad_dates(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by pydantic tests
        parse_partial_date(text)


def test_youngest_age_is_conservative() -> None:
    # Someone known only as "born 2007" may have been born on 31 December 2007.
    assert youngest_age_on("2007", date(2021, 12, 30)) == 13
    assert youngest_age_on("2007", date(2021, 12, 31)) == 14
    assert youngest_age_on("2007-02", date(2021, 2, 27)) == 13
    assert youngest_age_on("2007-02", date(2021, 2, 28)) == 14
    assert youngest_age_on("2007-06-15", date(2021, 6, 15)) == 14


def test_names_are_normalised(record_json: dict[str, Any]) -> None:
    nfd = unicodedata.normalize("NFD", "  Đặng   Thị  Ngọc Ánh ")
    demo = Demographics.model_validate({**record_json["demographics"], "full_name": nfd})
    assert demo.full_name == "Đặng Thị Ngọc Ánh"
    assert unicodedata.is_normalized("NFC", demo.full_name)


def test_ethnicity_and_old_id(record_json: dict[str, Any]) -> None:
    base = record_json["demographics"]
    for bad in ({"ethnicity": "55"}, {"old_id_number": "12345678"}, {"sex": "X"},
                {"nationality": "vn"}):  # fmt: skip
        with pytest.raises(ValidationError):
            Demographics.model_validate({**base, **bad})


def test_administrative_schemes() -> None:
    AdministrativeArea(province_code="01", district_code="001", commune_code="00001")
    AdministrativeArea(scheme="2025", province_code="01", commune_code="00004")
    with pytest.raises(ValidationError, match="district"):
        AdministrativeArea(province_code="01", commune_code="00001")
    with pytest.raises(ValidationError, match="no district"):
        AdministrativeArea(scheme="2025", province_code="01", district_code="001",
                           commune_code="00004")  # fmt: skip


def test_naive_times_are_refused(record_json: dict[str, Any]) -> None:
    capture = {**record_json["capture"], "started_at": "2026-11-21T08:00:00"}
    with pytest.raises(ValidationError, match="timezone"):
        EnrollmentRecord.model_validate({**record_json, "capture": capture})


def test_every_finger_accounted_for(record_json: dict[str, Any]) -> None:
    samples = [s for s in record_json["samples"] if s["position"] != 7]
    with pytest.raises(ValidationError, match=r"finger positions \[7\]"):
        EnrollmentRecord.model_validate({**record_json, "samples": samples})


def test_sample_rules() -> None:
    with pytest.raises(ValidationError, match="needs an exception"):
        BiometricSample(modality="finger", position=3)
    with pytest.raises(ValidationError, match="no image"):
        BiometricSample(modality="finger", position=3, idc=4,
                        exception={"code": "amputated"})  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(ValidationError, match="not one of"):
        BiometricSample(modality="finger", position=3,
                        exception={"code": "eyes_not_visible"})  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(ValidationError, match="not valid for finger"):
        BiometricSample(modality="finger", position=11, idc=1)
    # A face that cannot meet a criterion still has its image.
    BiometricSample(modality="face", position=0, idc=1,
                    exception={"code": "eyes_not_visible"})  # type: ignore[arg-type]  # fmt: skip


def test_duplicate_positions_and_idcs(record_json: dict[str, Any]) -> None:
    samples = record_json["samples"]
    with pytest.raises(ValidationError, match="two samples"):
        EnrollmentRecord.model_validate({**record_json, "samples": [*samples, samples[0]]})
    clash = [{**samples[1], "idc": samples[0]["idc"]}, samples[0], *samples[2:]]
    with pytest.raises(ValidationError, match="IDC"):
        EnrollmentRecord.model_validate({**record_json, "samples": clash})


def test_unknown_modality_is_carried(record_json: dict[str, Any]) -> None:
    """A reader that does not know iris still accepts a record that has it."""
    iris = {"modality": "iris", "position": 1, "idc": 50}
    record = EnrollmentRecord.model_validate(
        {**record_json, "samples": [*record_json["samples"], iris]}
    )
    assert record.samples[-1].modality == "iris"


def test_registered_modality_rules_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modalities, "_REGISTRY", dict(modalities._REGISTRY))
    iris = modalities.Modality("iris_test", 17, frozenset({1, 2}), frozenset())
    modalities.register(iris)
    with pytest.raises(ValidationError, match="not valid for iris_test"):
        BiometricSample(modality="iris_test", position=3, idc=1)
    with pytest.raises(ValueError, match="already registered"):
        modalities.register(modalities.Modality("iris_test", 18, frozenset(), frozenset()))
